// The per-thread memos of key and header-name verdicts are keyed on the raw name bytes
// (size up to 16, read as overlapping words): names that differ in any one byte, at any
// length, must never share a verdict, however the calls interleave, and a verdict never
// carries over to a redactor with other configured names.

#include "audit/digest.hpp"
#include "audit/redactor.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <vector>

namespace runwarden::audit {
namespace {

/// Plain names of every size the memo reads (1-16 bytes), in pairs that differ only in
/// their middle byte: none is sensitive, and no two may share a verdict.
std::vector<std::string> middle_byte_pairs() {
  std::vector<std::string> out;
  for (std::size_t size = 1; size <= 16; ++size) {
    std::string a(size, 'm');
    std::string b = a;
    b[size / 2] = 'n';
    out.push_back(std::move(a));
    out.push_back(std::move(b));
  }
  return out;
}

TEST(KeyMemo, OneByteApartNeverShareAVerdict) {
  const Redactor redactor;
  struct Case {
    std::string key;
    bool sensitive;
  };
  std::vector<Case> cases;
  // Sensitive words padded to every length up to 20 (past the memo's 16), each next to a
  // near miss that differs in exactly one byte of the word.
  for (const std::string word :
       {"token", "credential", "secret", "apikey", "passw", "refreshtoken"}) {
    for (std::size_t left = 0; left + word.size() <= 20; ++left) {
      const std::string pad(left, 'q');
      const std::string key = pad + word;
      // The near miss changes the word's last letter: no rule matches what is left.
      std::string miss = key;
      miss[left + word.size() - 1] = 'z';
      const bool expected = redactor.is_sensitive_key(key);
      cases.push_back({key, expected});
      cases.push_back({miss, false});
      EXPECT_TRUE(expected) << key;
      EXPECT_FALSE(redactor.is_sensitive_key(miss)) << miss;
    }
  }
  for (const std::string& plain : middle_byte_pairs()) {
    cases.push_back({plain, false});
    EXPECT_FALSE(redactor.is_sensitive_key(plain)) << plain;
  }
  EXPECT_TRUE(redactor.is_sensitive_key("pwd"));
  EXPECT_FALSE(redactor.is_sensitive_key("zwd"));
  EXPECT_TRUE(redactor.is_sensitive_key("Client-Secret"));
  EXPECT_FALSE(redactor.is_sensitive_key("Client-Zecret"));
  // Interleaved and repeated: every verdict now comes from the memo or is recomputed, and
  // must equal the expected one.
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[(i * 7 + static_cast<std::size_t>(round)) % cases.size()];
      ASSERT_EQ(redactor.is_sensitive_key(c.key), c.sensitive) << c.key;
    }
  }
  // A fresh redactor (fresh memo tag) gives the same answers.
  const Redactor other;
  for (const Case& c : cases) {
    ASSERT_EQ(other.is_sensitive_key(c.key), c.sensitive) << c.key;
  }
}

TEST(HeaderMemo, OneByteApartNeverShareAVerdict) {
  const Redactor redactor;
  struct Case {
    std::string name;
    bool sensitive;
  };
  std::vector<Case> cases;
  // Every rule of a header name, padded on both sides to every length up to 20 (past the
  // memo's 16), next to a near miss that differs in exactly one byte, in mixed case.
  for (const std::string word : {"Token", "Secret", "Session", "Key", "Auth", "Password", "Passwd",
                                 "Cookie", "Credential"}) {
    for (std::size_t left = 0; left + word.size() <= 20; ++left) {
      const std::string name = std::string(left, 'X') + word;
      std::string miss = name;
      miss[left] = 'Q'; // the word loses its first letter: no rule matches what is left
      cases.push_back({name, true});
      cases.push_back({miss, false});
      EXPECT_TRUE(redactor.is_sensitive_header(name)) << name;
      EXPECT_FALSE(redactor.is_sensitive_header(miss)) << miss;
    }
  }
  for (const std::string name : {"Authorization", "PROXY-AUTHORIZATION", "cookie", "Set-Cookie",
                                 "X-Api-Key", "X-Auth-Token"}) {
    cases.push_back({name, true});
    EXPECT_TRUE(redactor.is_sensitive_header(name)) << name;
  }
  for (const std::string name : {"Host", "Content-Type", "User-Agent", "Accept", "traceparent",
                                 "Content-Length", "Request-Id", "a", "ab", "abc"}) {
    cases.push_back({name, false});
    EXPECT_FALSE(redactor.is_sensitive_header(name)) << name;
  }
  for (const std::string& plain : middle_byte_pairs()) {
    cases.push_back({plain, false});
    EXPECT_FALSE(redactor.is_sensitive_header(plain)) << plain;
  }
  EXPECT_TRUE(redactor.is_sensitive_header("key"));
  EXPECT_FALSE(redactor.is_sensitive_header("kez"));
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[(i * 7 + static_cast<std::size_t>(round)) % cases.size()];
      ASSERT_EQ(redactor.is_sensitive_header(c.name), c.sensitive) << c.name;
      // The key memo is a separate table: the same bytes asked as a key do not disturb it.
      (void)redactor.is_sensitive_key(c.name);
    }
  }
}

TEST(HeaderMemo, VerdictsStayWithTheirRedactor) {
  const Redactor plain;
  const Redactor with_extra(RedactionRules{{"X-Tenant"}, {}, {}});
  for (int round = 0; round < 3; ++round) {
    EXPECT_FALSE(plain.is_sensitive_header("X-Tenant"));
    EXPECT_TRUE(with_extra.is_sensitive_header("X-Tenant"));
    EXPECT_TRUE(with_extra.is_sensitive_header("x-tenant"));
    EXPECT_FALSE(plain.is_sensitive_header("x-tenant"));
    EXPECT_EQ(plain.redact_header("X-Tenant", "acme"), "acme");
    EXPECT_NE(with_extra.redact_header("X-Tenant", "acme"), "acme");
  }
  // Built and destroyed in turn, so a new redactor may live where the last one did.
  for (int round = 0; round < 4; ++round) {
    const bool extra = round % 2 == 0;
    const auto r = extra ? std::make_unique<Redactor>(RedactionRules{{"X-Nick"}, {}, {}})
                         : std::make_unique<Redactor>();
    EXPECT_EQ(r->is_sensitive_header("X-Nick"), extra) << round;
    EXPECT_EQ(r->redact_header("x-nick", "zed") == "zed", !extra) << round;
  }
  // A credential's marker is written into reused storage: each equals the defined marker
  // of its own value, an empty value stays empty.
  for (const std::string value : {"a much longer secret value than the others", "s1", "",
                                  "Bearer sk_live_abcdefghijklmnopqrstuvwx", "s1"}) {
    EXPECT_EQ(plain.redact_header("Authorization", value),
              value.empty() ? std::string() : redaction_marker(value))
        << value;
  }
  // Names longer than the memo's slots take the direct path with the same verdicts.
  EXPECT_TRUE(plain.is_sensitive_header("X-Very-Long-Vendor-Session-Name"));
  EXPECT_FALSE(plain.is_sensitive_header("X-Very-Long-Vendor-Header-Name"));
  const Redactor long_extra(RedactionRules{{"X-Very-Long-Vendor-Header-Name"}, {}, {}});
  EXPECT_TRUE(long_extra.is_sensitive_header("x-very-long-vendor-header-name"));
}

} // namespace
} // namespace runwarden::audit
