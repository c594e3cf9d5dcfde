// The per-thread memo of key verdicts is keyed on the raw key bytes (size up to 16, read
// as overlapping words): keys that differ in any one byte, at any length, must never
// share a verdict, however the calls interleave.

#include "audit/redactor.hpp"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::audit {
namespace {

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
  // Short keys of every size that differ only in their middle byte.
  for (std::size_t size = 1; size <= 16; ++size) {
    std::string a(size, 'm');
    std::string b = a;
    b[size / 2] = 'n';
    cases.push_back({a, false});
    cases.push_back({b, false});
    EXPECT_FALSE(redactor.is_sensitive_key(a)) << a;
    EXPECT_FALSE(redactor.is_sensitive_key(b)) << b;
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

} // namespace
} // namespace runwarden::audit
