// Normalization: every bypass spelling either becomes the one canonical form or is refused.

#include "policy/request.hpp"

#include <gtest/gtest.h>

namespace runwarden::policy {
namespace {

struct UrlCase {
  const char* url;
  NormalizeError error;
  const char* host; // expected canonical host when ok
  std::uint16_t port;
  const char* path;
  const char* query;
};

class NormalizeUrl : public ::testing::TestWithParam<UrlCase> {};

TEST_P(NormalizeUrl, CanonicalOrRefused) {
  const UrlCase& c = GetParam();
  Request r;
  NormalizeError e = normalize_absolute_url(c.url, r);
  EXPECT_EQ(to_string(e), to_string(c.error)) << c.url;
  if (c.error == NormalizeError::ok && e == NormalizeError::ok) {
    EXPECT_EQ(r.host, c.host) << c.url;
    EXPECT_EQ(r.port, c.port) << c.url;
    EXPECT_EQ(r.path, c.path) << c.url;
    EXPECT_EQ(r.query, c.query) << c.url;
  }
}

using E = NormalizeError;
INSTANTIATE_TEST_SUITE_P(
    Table, NormalizeUrl,
    ::testing::Values(UrlCase{"https://api.stripe.com/v1/refunds", E::ok, "api.stripe.com", 443,
                              "/v1/refunds", ""},
                      UrlCase{"HTTP://Logs.Internal/api", E::ok, "logs.internal", 80, "/api", ""},
                      UrlCase{"http://logs.internal./api", E::ok, "logs.internal", 80, "/api", ""},
                      UrlCase{"http://logs.internal..", E::bad_host, "", 0, "", ""},
                      UrlCase{"http://h:8080", E::ok, "h", 8080, "/", ""},
                      UrlCase{"http://h?x=1", E::ok, "h", 80, "/", "x=1"},
                      UrlCase{"http://h/a/b/../c/./d", E::ok, "h", 80, "/a/c/d", ""},
                      UrlCase{"http://h/v1/%2e%2e/admin", E::ok, "h", 80, "/admin", ""},
                      UrlCase{"http://h/v1/%2E%2e/%2e/admin", E::ok, "h", 80, "/admin", ""},
                      UrlCase{"http://h/..", E::path_above_root, "", 0, "", ""},
                      UrlCase{"http://h/a/../../etc", E::path_above_root, "", 0, "", ""},
                      UrlCase{"http://h/%2e%2e/etc", E::path_above_root, "", 0, "", ""},
                      UrlCase{"http://h/v1/refunds%2F..%2Fadmin", E::encoded_slash, "", 0, "", ""},
                      UrlCase{"http://h/v1/refunds%2f", E::encoded_slash, "", 0, "", ""},
                      UrlCase{"http://h/v1%5C..%5Cadmin", E::encoded_slash, "", 0, "", ""},
                      UrlCase{"http://h/v1\\admin", E::bad_path, "", 0, "", ""},
                      UrlCase{"http://h/v1/%00", E::encoded_nul, "", 0, "", ""},
                      UrlCase{"http://h/v1?a=%00", E::encoded_nul, "", 0, "", ""},
                      UrlCase{"http://h/v1/%zz", E::bad_percent_escape, "", 0, "", ""},
                      UrlCase{"http://h/v1/%4", E::bad_percent_escape, "", 0, "", ""},
                      UrlCase{"http://h/v1//refunds", E::ok, "h", 80, "/v1/refunds", ""},
                      UrlCase{"http://h//v1///refunds/", E::ok, "h", 80, "/v1/refunds/", ""},
                      UrlCase{"http://h/v1/refunds;x", E::ok, "h", 80, "/v1/refunds;x", ""},
                      UrlCase{"http://h/v1/..;/admin", E::bad_path, "", 0, "", ""},
                      UrlCase{"http://h/v1/.;x/admin", E::bad_path, "", 0, "", ""},
                      UrlCase{"http://h/%7euser/%41", E::ok, "h", 80, "/~user/A", ""},
                      UrlCase{"http://h/a%3a%3Fb", E::ok, "h", 80, "/a%3A%3Fb", ""},
                      UrlCase{"http://h/a/.", E::ok, "h", 80, "/a/", ""},
                      UrlCase{"http://h/a/..", E::ok, "h", 80, "/", ""},
                      UrlCase{"http://user:pw@h/", E::userinfo, "", 0, "", ""},
                      UrlCase{"http://evil.com@h/", E::userinfo, "", 0, "", ""},
                      UrlCase{"http://h/a#frag", E::bad_target, "", 0, "", ""},
                      UrlCase{"ftp://h/", E::bad_scheme, "", 0, "", ""},
                      UrlCase{"http:///x", E::empty_host, "", 0, "", ""},
                      UrlCase{"http://h:0/", E::bad_port, "", 0, "", ""},
                      UrlCase{"http://h:65536/", E::bad_port, "", 0, "", ""},
                      UrlCase{"http://h:/", E::bad_port, "", 0, "", ""},
                      UrlCase{"http://h:8x/", E::bad_port, "", 0, "", ""},
                      UrlCase{"http://127.0.0.1:8080/", E::ok, "127.0.0.1", 8080, "/", ""},
                      UrlCase{"http://0x7f.1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://0x7f.0.0.1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://017.0.0.1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://2130706433/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://127.1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://256.0.0.1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://1.2.3.4.5/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://[::1]:8080/x", E::ok, "[::1]", 8080, "/x", ""},
                      UrlCase{"http://[0:0:0:0:0:0:0:1]/", E::ok, "[::1]", 80, "/", ""},
                      UrlCase{"http://[2001:DB8:0:0:1:0:0:1]/", E::ok, "[2001:db8::1:0:0:1]", 80,
                              "/", ""},
                      UrlCase{"http://[fe80::1%25eth0]/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://[::1/", E::bad_ip_literal, "", 0, "", ""},
                      UrlCase{"http://b\xC3\xBC"
                              "cher.example/",
                              E::non_ascii_host, "", 0, "", ""},
                      UrlCase{"http://a b/", E::bad_host, "", 0, "", ""},
                      UrlCase{"http://h/a b", E::bad_path, "", 0, "", ""},
                      UrlCase{"http://h/caf\xC3\xA9", E::bad_path, "", 0, "", ""}));

TEST(NormalizeHost, LowerCasesAndStripsOneTrailingDot) {
  std::string out;
  ASSERT_EQ(normalize_host("Logs.INTERNAL.", out), NormalizeError::ok);
  EXPECT_EQ(out, "logs.internal");
  EXPECT_EQ(normalize_host("", out), NormalizeError::empty_host);
  EXPECT_EQ(normalize_host(".", out), NormalizeError::empty_host);
  EXPECT_EQ(normalize_host("a%2eb", out), NormalizeError::bad_host);
  EXPECT_EQ(normalize_host(std::string(64, 'a') + ".com", out), NormalizeError::bad_host);
}

TEST(NormalizeHost, NumericLookingLabelsThatAreNotDottedQuadAreRefused) {
  std::string out;
  // A name whose last label is not numeric is a name, even if others are.
  ASSERT_EQ(normalize_host("0x7f.example.com", out), NormalizeError::ok);
  EXPECT_EQ(normalize_host("example.0x1f", out), NormalizeError::bad_ip_literal);
  EXPECT_EQ(normalize_host("10.0.0.01", out), NormalizeError::bad_ip_literal);
  EXPECT_EQ(normalize_host("10.0.0.1.", out), NormalizeError::ok);
  EXPECT_EQ(out, "10.0.0.1");
}

TEST(NormalizeTarget, OriginForm) {
  std::string path;
  std::string query;
  ASSERT_EQ(normalize_target("/a/./b/../c?x=1&y=%41", path, query), NormalizeError::ok);
  EXPECT_EQ(path, "/a/c");
  EXPECT_EQ(query, "x=1&y=%41");
  EXPECT_EQ(normalize_target("a/b", path, query), NormalizeError::bad_target);
  EXPECT_EQ(normalize_target("*", path, query), NormalizeError::bad_target);
  EXPECT_EQ(normalize_target("/a?b=%G1", path, query), NormalizeError::bad_percent_escape);
  EXPECT_EQ(normalize_target("/a?b=\x01", path, query), NormalizeError::bad_target);
}

TEST(Request, UrlAndTargetOmitDefaultPort) {
  Request r;
  ASSERT_EQ(normalize_absolute_url("https://Api.Example.com:443/v1/x?y=1", r), NormalizeError::ok);
  EXPECT_EQ(r.url(), "https://api.example.com/v1/x?y=1");
  EXPECT_EQ(r.target(), "/v1/x?y=1");
  ASSERT_EQ(normalize_absolute_url("http://h:8080/", r), NormalizeError::ok);
  EXPECT_EQ(r.url(), "http://h:8080/");
  r.headers = {{"Content-Type", "application/json"}};
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(r.header("content-type")->value, "application/json");
  EXPECT_EQ(r.header("accept"), nullptr);
}

} // namespace
} // namespace runwarden::policy
