#include "proxy/client_hello.hpp"

#include <cstdint>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <string>
#include <vector>

namespace runwarden::proxy {
namespace {

void put(std::string& out, std::size_t width, std::size_t value) {
  for (std::size_t i = width; i > 0; --i) {
    out.push_back(static_cast<char>((value >> ((i - 1) * 8)) & 0xFF));
  }
}

std::string with_len(std::size_t width, const std::string& body) {
  std::string out;
  put(out, width, body.size());
  return out + body;
}

struct Ext {
  std::uint16_t type;
  std::string body;
};

std::string sni_ext_body(const std::vector<std::pair<std::uint8_t, std::string>>& names) {
  std::string list;
  for (const auto& [type, name] : names) {
    put(list, 1, type);
    list += with_len(2, name);
  }
  return with_len(2, list);
}

/// A ClientHello handshake message (type, 3-byte length, body).
std::string hello_message(const std::vector<Ext>& exts, bool with_extensions = true) {
  std::string body;
  put(body, 2, 0x0303);
  body += std::string(32, 'r');
  body += with_len(1, std::string(32, 's'));
  body += with_len(2, std::string("\x13\x01\x13\x02", 4));
  body += with_len(1, std::string(1, '\0'));
  if (with_extensions) {
    std::string all;
    for (const auto& e : exts) {
      put(all, 2, e.type);
      all += with_len(2, e.body);
    }
    body += with_len(2, all);
  }
  std::string msg;
  put(msg, 1, 0x01);
  msg += with_len(3, body);
  return msg;
}

/// The message split into TLS handshake records of at most `chunk` payload bytes.
std::string records(const std::string& msg, std::size_t chunk = 16384) {
  std::string out;
  for (std::size_t i = 0; i < msg.size(); i += chunk) {
    std::string part = msg.substr(i, chunk);
    put(out, 1, 0x16);
    put(out, 2, 0x0301);
    out += with_len(2, part);
  }
  return out;
}

std::string hello_for(const std::string& name) {
  return records(hello_message({{0x000a, "xx"}, {0x0000, sni_ext_body({{0, name}})}}));
}

TEST(ClientHello, ReadsTheServerName) {
  auto r = parse_client_hello(hello_for("api.example.com"));
  ASSERT_EQ(r.status, HelloStatus::ok) << r.error;
  EXPECT_TRUE(r.has_sni);
  EXPECT_EQ(r.sni, "api.example.com");
}

TEST(ClientHello, EveryStrictPrefixNeedsMore) {
  std::string full = hello_for("logs.internal");
  for (std::size_t n = 0; n < full.size(); ++n) {
    auto r = parse_client_hello(std::string_view(full).substr(0, n));
    ASSERT_EQ(r.status, HelloStatus::need_more) << "prefix " << n;
  }
  EXPECT_EQ(parse_client_hello(full).status, HelloStatus::ok);
}

TEST(ClientHello, ReassemblesAcrossRecords) {
  std::string msg = hello_message({{0x0000, sni_ext_body({{0, "split.example"}})}});
  auto r = parse_client_hello(records(msg, 7));
  ASSERT_EQ(r.status, HelloStatus::ok) << r.error;
  EXPECT_EQ(r.sni, "split.example");
}

TEST(ClientHello, TrailingApplicationBytesAreIgnored) {
  auto r = parse_client_hello(hello_for("a.example") + "\x17\x03\x03junk");
  ASSERT_EQ(r.status, HelloStatus::ok);
  EXPECT_EQ(r.sni, "a.example");
}

TEST(ClientHello, NoExtensionsOrNoServerNameMeansNoSni) {
  auto bare = parse_client_hello(records(hello_message({}, false)));
  ASSERT_EQ(bare.status, HelloStatus::ok);
  EXPECT_FALSE(bare.has_sni);
  auto other = parse_client_hello(records(hello_message({{0x000a, "xx"}})));
  ASSERT_EQ(other.status, HelloStatus::ok);
  EXPECT_FALSE(other.has_sni);
}

TEST(ClientHello, UnknownNameTypesAreSkipped) {
  auto r = parse_client_hello(
      records(hello_message({{0x0000, sni_ext_body({{7, "ignored"}, {0, "b.example"}})}})));
  ASSERT_EQ(r.status, HelloStatus::ok);
  EXPECT_EQ(r.sni, "b.example");
}

struct BadCase {
  const char* name;
  std::string bytes;
};

TEST(ClientHello, RefusesAmbiguousOrBrokenHellos) {
  std::string good_msg = hello_message({{0x0000, sni_ext_body({{0, "ok.example"}})}});
  std::string wrong_type = good_msg;
  wrong_type[0] = 0x02; // ServerHello
  std::vector<BadCase> cases = {
      {"two host_names",
       records(hello_message({{0x0000, sni_ext_body({{0, "a.example"}, {0, "b.example"}})}}))},
      {"two server_name extensions",
       records(hello_message({{0x0000, sni_ext_body({{0, "a.example"}})},
                              {0x0000, sni_ext_body({{0, "b.example"}})}}))},
      {"NUL in name",
       records(hello_message({{0x0000, sni_ext_body({{0, std::string("a\0.example", 10)}})}}))},
      {"space in name", records(hello_message({{0x0000, sni_ext_body({{0, "a b.example"}})}}))},
      {"empty name", records(hello_message({{0x0000, sni_ext_body({{0, ""}})}}))},
      {"name too long",
       records(hello_message({{0x0000, sni_ext_body({{0, std::string(256, 'a')}})}}))},
      {"empty name list", records(hello_message({{0x0000, with_len(2, "")}}))},
      {"list length lies",
       records(hello_message({{0x0000, std::string("\x00\x09\x00\x00\x01z", 6)}}))},
      {"not a ClientHello", records(wrong_type)},
      {"alert record first", std::string("\x16\x03\x01\x00\x00", 5)},
      {"record too long", std::string("\x16\x03\x01\xff\xff", 5)},
      {"bad record version", std::string("\x16\x09\x01\x00\x04\x01\x00\x00\x00", 9)},
      {"application data mid-hello",
       records(good_msg.substr(0, 10)) + std::string("\x17\x03\x03\x00\x01x", 6)},
  };
  for (const auto& c : cases) {
    auto r = parse_client_hello(c.bytes);
    EXPECT_EQ(r.status, HelloStatus::malformed) << c.name;
    EXPECT_FALSE(r.error.empty()) << c.name;
  }
}

TEST(ClientHello, TruncatedInnerFieldsAreMalformedNotOverread) {
  std::string msg = hello_message({{0x0000, sni_ext_body({{0, "ok.example"}})}});
  // Shrink the declared handshake length so the body ends mid-field, at every cut.
  for (std::size_t cut = 4; cut < msg.size(); ++cut) {
    std::string m = msg.substr(0, cut);
    std::size_t body = cut - 4;
    m[1] = static_cast<char>((body >> 16) & 0xFF);
    m[2] = static_cast<char>((body >> 8) & 0xFF);
    m[3] = static_cast<char>(body & 0xFF);
    auto r = parse_client_hello(records(m));
    EXPECT_NE(r.status, HelloStatus::need_more) << cut;
    if (r.status == HelloStatus::ok) {
      EXPECT_FALSE(r.has_sni) << cut; // only "no extensions at all" can be complete
    }
  }
}

TEST(ClientHello, OversizedHelloIsRefused) {
  std::string msg = hello_message({{0x0015, std::string(kMaxClientHelloBytes, 'p')}});
  auto r = parse_client_hello(records(msg));
  EXPECT_EQ(r.status, HelloStatus::malformed);
}

TEST(ClientHello, NonTlsBytes) {
  EXPECT_EQ(parse_client_hello("GET / HTTP/1.1\r\n").status, HelloStatus::not_tls);
  EXPECT_EQ(parse_client_hello("").status, HelloStatus::need_more);
}

/// A real ClientHello from OpenSSL, written into a memory BIO.
std::string openssl_client_hello(const char* sni) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  if (sni != nullptr) {
    SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(sni));
  }
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl); // wants to read: the hello is in `out`
  char* data = nullptr;
  long n = BIO_get_mem_data(out, &data);
  std::string hello(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return hello;
}

TEST(ClientHello, ParsesOpenSslHellos) {
  auto with = parse_client_hello(openssl_client_hello("tools.example.org"));
  ASSERT_EQ(with.status, HelloStatus::ok) << with.error;
  EXPECT_EQ(with.sni, "tools.example.org");
  auto without = parse_client_hello(openssl_client_hello(nullptr));
  ASSERT_EQ(without.status, HelloStatus::ok) << without.error;
  EXPECT_FALSE(without.has_sni);
}

TEST(FirstBytes, ClassifiesTlsHttpAndJunk) {
  EXPECT_EQ(classify_first_bytes(""), FirstBytes::need_more);
  EXPECT_EQ(classify_first_bytes("\x16"), FirstBytes::tls);
  EXPECT_EQ(classify_first_bytes("GE"), FirstBytes::need_more);
  EXPECT_EQ(classify_first_bytes("GET /"), FirstBytes::http);
  EXPECT_EQ(classify_first_bytes("PROPFIND /x"), FirstBytes::http);
  EXPECT_EQ(classify_first_bytes(" GET"), FirstBytes::unknown);
  EXPECT_EQ(classify_first_bytes("get /"), FirstBytes::unknown);
  EXPECT_EQ(classify_first_bytes("SSH-2.0-OpenSSH"), FirstBytes::unknown);
  EXPECT_EQ(classify_first_bytes(std::string(17, 'A')), FirstBytes::unknown);
  EXPECT_EQ(classify_first_bytes(std::string(16, 'A')), FirstBytes::need_more);
}

} // namespace
} // namespace runwarden::proxy
