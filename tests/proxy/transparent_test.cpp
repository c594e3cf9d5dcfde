// The transparent listener's pure pieces: how addresses are written (IPv6 bracketed,
// v4-mapped unmapped), which names are IP literals, and Host authority parsing.

#include "proxy/transparent_session.hpp"

#include <boost/asio/ip/address.hpp>
#include <gtest/gtest.h>
#include <string>

namespace runwarden::proxy {
namespace {

namespace ip = boost::asio::ip;

TEST(TransparentAddressText, Ipv4IsDotted) {
  EXPECT_EQ(address_text(ip::make_address("10.233.100.2")), "10.233.100.2");
  EXPECT_EQ(endpoint_text({ip::make_address("10.233.100.2"), 80}), "10.233.100.2:80");
}

TEST(TransparentAddressText, Ipv6IsBracketedAndCanonical) {
  EXPECT_EQ(address_text(ip::make_address("FD00:233:100:0:0:0:0:2")), "[fd00:233:100::2]");
  EXPECT_EQ(endpoint_text({ip::make_address("fd00:233:100::1"), 54321}), "[fd00:233:100::1]:54321");
  EXPECT_EQ(endpoint_text({ip::make_address("::1"), 15006}), "[::1]:15006");
}

TEST(TransparentAddressText, V4MappedIsWrittenAsIpv4) {
  // What a dual-stack [::] listener sees for an IPv4 peer: logged as explicit mode logs it.
  EXPECT_EQ(address_text(ip::make_address("::ffff:10.233.100.1")), "10.233.100.1");
  EXPECT_EQ(endpoint_text({ip::make_address("::ffff:127.0.0.1"), 15006}), "127.0.0.1:15006");
}

TEST(TransparentIpLiteral, NamesAreNotLiterals) {
  EXPECT_FALSE(ip_literal("api.tools.test"));
  EXPECT_FALSE(ip_literal("localhost"));
  EXPECT_FALSE(ip_literal(""));
  EXPECT_FALSE(ip_literal("[]"));
  EXPECT_FALSE(ip_literal("[not-an-address]"));
  EXPECT_FALSE(ip_literal("1.2.3")); // not a dotted quad
}

TEST(TransparentIpLiteral, Ipv4AndBracketedIpv6) {
  auto v4 = ip_literal("10.233.100.2");
  ASSERT_TRUE(v4);
  EXPECT_EQ(*v4, ip::make_address("10.233.100.2"));
  auto v6 = ip_literal("[fd00:233:100::2]");
  ASSERT_TRUE(v6);
  EXPECT_EQ(*v6, ip::make_address("fd00:233:100::2"));
  EXPECT_NE(*v6, ip::make_address("fd00:233:100::9"));
}

TEST(TransparentIpLiteral, V4MappedLiteralEqualsTheIpv4Destination) {
  auto mapped = ip_literal("[::ffff:10.233.100.2]");
  ASSERT_TRUE(mapped);
  EXPECT_TRUE(mapped->is_v4());
  EXPECT_EQ(*mapped, ip::make_address("10.233.100.2"));
}

TEST(TransparentAuthority, Ipv6HostFields) {
  std::string host;
  std::uint16_t port = 0;
  ASSERT_TRUE(split_authority("[FD00:233:100:0::2]", 80, host, port));
  EXPECT_EQ(host, "[fd00:233:100::2]"); // canonical, as policy and the audit URL see it
  EXPECT_EQ(port, 80);
  ASSERT_TRUE(split_authority("[fd00:233:100::2]:8443", 80, host, port));
  EXPECT_EQ(host, "[fd00:233:100::2]");
  EXPECT_EQ(port, 8443);
  EXPECT_FALSE(split_authority("[fd00:233:100::2", 80, host, port)); // no ']'
  EXPECT_FALSE(split_authority("[fd00::2]x", 80, host, port));       // junk after ']'
  EXPECT_FALSE(split_authority("[fd00::2]:", 80, host, port));       // empty port
  EXPECT_FALSE(split_authority("[fd00::2]:70000", 80, host, port));  // port range
  EXPECT_FALSE(split_authority("fd00::2", 80, host, port));          // unbracketed
  EXPECT_FALSE(split_authority("[fe80::1%25eth0]", 80, host, port)); // zone id
}

TEST(TransparentAuthority, Ipv4AndNames) {
  std::string host;
  std::uint16_t port = 0;
  ASSERT_TRUE(split_authority("API.Tools.Test:443", 80, host, port));
  EXPECT_EQ(host, "api.tools.test");
  EXPECT_EQ(port, 443);
  ASSERT_TRUE(split_authority("10.233.100.2", 80, host, port));
  EXPECT_EQ(host, "10.233.100.2");
  EXPECT_EQ(port, 80);
  EXPECT_FALSE(split_authority("10.233.100.2:0", 80, host, port));
}

TEST(TransparentHostField, FindsTheOneHostField) {
  auto h = find_host_field("GET / HTTP/1.1\r\nhOsT:  [fd00::2]:80 \r\nAccept: */*\r\n\r\n");
  ASSERT_EQ(h.status, HostField::Status::ok);
  EXPECT_EQ(h.value, "[fd00::2]:80");
  EXPECT_EQ(find_host_field("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status,
            HostField::Status::duplicate);
  EXPECT_EQ(find_host_field("GET / HTTP/1.1\r\nHosts: a\r\n\r\n").status,
            HostField::Status::missing);
  EXPECT_EQ(find_host_field("GET / HTTP/1.1\r\nHost: a\r\n").status, HostField::Status::incomplete);
}

} // namespace
} // namespace runwarden::proxy
