#include "audit/digest.hpp"
#include "audit/redactor.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <string>

namespace runwarden::audit {
namespace {

bool contains(const std::string& hay, std::string_view needle) {
  return hay.find(needle) != std::string::npos;
}

TEST(Redactor, MarkerIsFirstEightHexOfSha256) {
  EXPECT_EQ(redaction_marker("abc"), "[REDACTED:ba7816bf]");
}

TEST(Redactor, CredentialHeadersLoseTheirWholeValue) {
  const Redactor r;
  for (const char* name :
       {"Authorization", "proxy-authorization", "Cookie", "Set-Cookie", "X-Api-Key", "X-Auth-Token",
        "X-Session-Id", "X-Client-Secret", "X-Db-Password"}) {
    EXPECT_EQ(r.redact_header(name, "hunter2-value"), redaction_marker("hunter2-value")) << name;
  }
  EXPECT_EQ(r.redact_header("Accept", "application/json"), "application/json");
  EXPECT_EQ(r.redact_header("X-Trace", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            redaction_marker("ghp_abcdefghijklmnopqrstuvwxyz0123456789"));
}

TEST(Redactor, ConfiguredHeadersKeysAndPatternsAreAdded) {
  RedactionRules rules;
  rules.headers = {"X-Tenant"};
  rules.json_keys = {"employee_id"};
  rules.patterns = {R"(ACME-([0-9]{6}))"};
  const Redactor r{rules};
  EXPECT_TRUE(contains(r.redact_header("x-tenant", "t1"), "[REDACTED:"));
  const auto body = r.redact_body(R"({"a":{"EmployeeId":"E42"}})", "application/json", 1000);
  EXPECT_FALSE(contains(body.text, "E42"));
  EXPECT_EQ(r.redact_text("id ACME-123456 ok"), "id ACME-" + redaction_marker("123456") + " ok");
  EXPECT_THROW(Redactor(RedactionRules{{}, {}, {"(unclosed"}}), std::invalid_argument);
}

TEST(Redactor, JsonKeysAtAnyDepthCaseInsensitive) {
  const Redactor r;
  const std::string body =
      R"({"user":"bob","nested":[{"deep":{"PassWord":"s3cr3t-one","x":1}}],)"
      R"("Client_Secret":"cs-two","api-key":12345,"cvv":"999","token":{"a":"obj-three"},)"
      R"("max_tokens":100,"note":null})";
  const auto out = r.redact_body(body, "application/json", 100000);
  for (const char* secret : {"s3cr3t-one", "cs-two", "12345", "999", "obj-three"}) {
    EXPECT_FALSE(contains(out.text, secret)) << secret << " in " << out.text;
  }
  EXPECT_TRUE(contains(out.text, R"("user":"bob")"));
  EXPECT_TRUE(contains(out.text, R"("max_tokens":100)"));
  EXPECT_TRUE(contains(out.text, R"("PassWord":")" + redaction_marker("s3cr3t-one") + "\""));
  EXPECT_TRUE(contains(out.text, R"("api-key":")" + redaction_marker("12345") + "\""));
  EXPECT_FALSE(out.truncated);
  EXPECT_EQ(out.sha256, sha256_hex(body));
}

TEST(Redactor, EscapedJsonKeyAndTruncatedPrefixAreStillRedacted) {
  const Redactor r;
  EXPECT_FALSE(
      contains(r.redact_body(R"({"pass\u0077ord":"esc-secret"})", "", 1000).text, "esc-secret"));
  EXPECT_FALSE(
      contains(r.redact_body(R"({"a":1,"password":"cut-off-sec)", "", 1000).text, "cut-off-sec"));
  // JSON embedded as a string in JSON.
  EXPECT_FALSE(
      contains(r.redact_body(R"({"payload":"{\"password\":\"inner-secret\"}"})", "", 1000).text,
               "inner-secret"));
}

TEST(Redactor, QueryFormAndUserinfo) {
  const Redactor r;
  const std::string url = "https://alice:pa55@api.example.com/v1/x?user=bob&access_token=tok123&"
                          "api%5Fkey=k9#frag";
  const std::string out = r.redact_url(url);
  EXPECT_FALSE(contains(out, "pa55"));
  EXPECT_FALSE(contains(out, "alice"));
  EXPECT_FALSE(contains(out, "tok123"));
  EXPECT_FALSE(contains(out, "k9"));
  EXPECT_TRUE(contains(out, "user=bob"));
  EXPECT_TRUE(contains(out, "@api.example.com/v1/x?"));
  const auto form = r.redact_body("name=x&password=p%40ss&client_secret=abc",
                                  "application/x-www-form-urlencoded", 1000);
  EXPECT_EQ(form.text, "name=x&password=" + redaction_marker("p%40ss") +
                           "&client_secret=" + redaction_marker("abc"));
}

TEST(Redactor, ValuePatternsInText) {
  const Redactor r;
  const char* secrets[] = {
      "AKIAIOSFODNN7EXAMPLE",
      "ASIAY34FZKBOKMUTVV7A",
      "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
      "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
      "xoxb-1234567890-abcdefghij",
      "sk_live_abcdefghij0123456789",
      "rk_live_abcdefghij0123456789",
      "sk_test_abcdefghij0123456789",
      "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
      "AIzaSyA1234567890abcdefghijklmnopqrstuv",
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_"
      "XgL0n3I9PlFUP0THsR8U",
  };
  for (const char* s : secrets) {
    const std::string out = r.redact_text(std::string("see ") + s + " here");
    EXPECT_EQ(out, "see " + redaction_marker(s) + " here") << s;
  }
  EXPECT_EQ(r.redact_text("Authorization: Bearer abc.def-123_xyz"),
            "Authorization: Bearer " + redaction_marker("abc.def-123_xyz"));
  const std::string pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nxyz\n-----END RSA PRIVATE "
                          "KEY-----";
  EXPECT_EQ(r.redact_text("k=" + pem + "\nrest"), "k=" + redaction_marker(pem) + "\nrest");
  EXPECT_FALSE(contains(r.redact_text("-----BEGIN PRIVATE KEY-----\nMIIcut"), "MIIcut"));
}

TEST(Redactor, CardNumbersNeedLuhnAndKeepLastFour) {
  const Redactor r;
  EXPECT_EQ(r.redact_text("card 4111 1111 1111 1111 ok"),
            "card " + redaction_marker("4111 1111 1111 1111") + "1111 ok");
  EXPECT_EQ(r.redact_text("c=5500-0000-0000-0004"),
            "c=" + redaction_marker("5500-0000-0000-0004") + "0004");
  // Fails Luhn: an order number stays readable.
  EXPECT_EQ(r.redact_text("order 4111111111111112"), "order 4111111111111112");
  EXPECT_EQ(r.redact_text("ts 1700000000123"), "ts 1700000000123");
}

TEST(Redactor, BinaryBodiesKeepOnlyDigest) {
  const Redactor r;
  const std::string png("\x89PNG\r\n\x1a\n\x00\x01secret", 16);
  const auto a = r.redact_body(png, "image/png", 1000);
  EXPECT_TRUE(a.binary);
  EXPECT_TRUE(a.text.empty());
  EXPECT_EQ(a.sha256, sha256_hex(png));
  const auto b = r.redact_body("ok \xff\xfe not utf8", "text/plain", 1000);
  EXPECT_TRUE(b.binary);
  EXPECT_TRUE(b.text.empty());
}

TEST(Redactor, CutHappensAfterRedactionAndNeverInsideAMarker) {
  const Redactor r;
  const std::string secret = "AKIAIOSFODNN7EXAMPLE";
  const std::string body = std::string(30, 'a') + secret + std::string(30, 'b');
  for (std::size_t limit = 25; limit < 70; ++limit) {
    const auto out = r.redact_body(body, "text/plain", limit);
    EXPECT_TRUE(out.truncated);
    EXPECT_LE(out.text.size(), limit);
    EXPECT_FALSE(contains(out.text, secret.substr(0, 4) + "IOS"));
    const auto m = out.text.find("[REDACTED");
    if (m != std::string::npos) {
      EXPECT_TRUE(contains(out.text, redaction_marker(secret))) << limit;
    }
  }
  // Never splits a UTF-8 sequence.
  const auto u = r.redact_body("\xc3\xa9\xc3\xa9\xc3\xa9", "text/plain", 3);
  EXPECT_EQ(u.text, "\xc3\xa9");
}

// Key verdicts are memoized per thread; a verdict must never carry over to a redactor
// with other configured keys, including one built where a destroyed one lived.
TEST(Redactor, MemoizedKeyVerdictsStayWithTheirRedactor) {
  const Redactor plain;
  const Redactor with_extra(RedactionRules{{}, {"order_ref"}, {}});
  for (int round = 0; round < 3; ++round) {
    EXPECT_FALSE(plain.is_sensitive_key("orderRef"));
    EXPECT_TRUE(with_extra.is_sensitive_key("orderRef"));
    EXPECT_TRUE(with_extra.is_sensitive_key("order-ref"));
    EXPECT_FALSE(plain.is_sensitive_key("order_ref"));
  }
  for (int round = 0; round < 4; ++round) {
    const bool extra = round % 2 == 0;
    const auto r = extra ? std::make_unique<Redactor>(RedactionRules{{}, {"nickname"}, {}})
                         : std::make_unique<Redactor>();
    EXPECT_EQ(r->is_sensitive_key("nickname"), extra) << round;
    EXPECT_EQ(r->is_sensitive_key("NickName"), extra) << round;
    const std::string body = R"({"nickname":"zed","password":"pw"})";
    const std::string out = r->redact_body(body, "application/json", 1024).text;
    EXPECT_EQ(contains(out, "zed"), !extra) << out;
    EXPECT_FALSE(contains(out, "\"pw\"")) << out;
  }
  // Keys longer than the memo's slots take the direct path with the same verdicts.
  const std::string long_key = std::string(40, 'x') + "_client_secret";
  EXPECT_TRUE(plain.is_sensitive_key(long_key));
  EXPECT_FALSE(plain.is_sensitive_key(std::string(40, 'x')));
}

} // namespace
} // namespace runwarden::audit
