// The prefiltered JSON key walk (Redactor::json_spans_indexed: bit-stack nesting, strings
// ended from the quote bitmap, a non-sensitive member's value entered directly) against the
// reference walk that Redactor::Scan::exhaustive keeps, on inputs the random well-formed
// documents of body_scan_test.cpp do not reach: nesting around and past the bit stack's
// 64 levels, and seeded token soup (malformed JSON, stray quotes and backslashes, scalars
// glued to strings), at each SIMD level the CPU has.

#include "audit/body_scan_simd.hpp"
#include "audit/redactor.hpp"
#include "tests/audit/simd_levels.hpp"

#include <gtest/gtest.h>
#include <random>
#include <string>
#include <vector>

namespace runwarden::audit {
namespace {

using simd::Level;

std::vector<Level> levels() {
  return testing::simd_levels();
}

// Redacts `json` on both paths at every level; returns whether anything was redacted.
bool expect_same(const Redactor& fast, const Redactor& slow, const std::string& json) {
  const RedactedBody b = slow.redact_body(json, "application/json", 1 << 20);
  for (const Level level : levels()) {
    simd::pin_level(level);
    const RedactedBody a = fast.redact_body(json, "application/json", 1 << 20);
    EXPECT_EQ(a.text, b.text) << "level " << static_cast<int>(level) << ": " << json;
  }
  simd::unpin_level();
  return b.text != json;
}

// Objects and arrays nested `depth` deep with a secret at every level, before and after
// the inner value; cut anywhere when `cut` is set.
std::string nested(std::size_t depth, bool arrays) {
  std::string open;
  std::string close;
  for (std::size_t d = 0; d < depth; ++d) {
    if (arrays && d % 3 == 2) {
      open += "[1,";
      close = "]" + close;
    } else {
      open += "{\"password\":\"p" + std::to_string(d) + "\",\"k\":";
      close = ",\"token\":\"t" + std::to_string(d) + "\"}" + close;
    }
  }
  return open + "{\"secret\":\"inner\"}" + close + " {\"ssn\":\"after\"}";
}

TEST(JsonWalk, NestingAroundAndPastTheBitStack) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  for (std::size_t depth = 0; depth <= 140; ++depth) {
    for (const bool arrays : {false, true}) {
      const std::string json = nested(depth, arrays);
      EXPECT_TRUE(expect_same(fast, slow, json));
      // Truncated prefixes: the walk stops inside the nesting.
      for (const std::size_t cut : {json.size() / 3, json.size() / 2, json.size() - 20}) {
        expect_same(fast, slow, json.substr(0, cut));
      }
    }
  }
  // The deepest secret is redacted on the fast path too (the fallback past 64 levels).
  const std::string deep = nested(100, false);
  const RedactedBody out = fast.redact_body(deep, "application/json", 1 << 20);
  EXPECT_EQ(out.text.find("\"inner\""), std::string::npos);
  EXPECT_EQ(out.text.find("\"p99\""), std::string::npos);
  EXPECT_EQ(out.text.find("\"after\""), std::string::npos);
}

TEST(JsonWalk, SeededTokenSoupAgreesWithTheReference) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  static const std::vector<std::string> tokens = {
      "{",           "}",           "[",           "]",
      ",",           ":",           " ",           "\n",
      "\"",          "\\",          "1",           "null",
      "true",        "\"id\"",      "\"v\"",       "\"password\"",
      "a",           "\"a\\\"b\"",  "\"api_key\"", "\"x\\u0070wd\"",
      "{\"token\":", "\"s\":\"x\"", "-2",          "\"é\"",
      "\"\""};
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::size_t> pick(0, tokens.size() - 1);
  std::uniform_int_distribution<int> count(0, 40);
  std::size_t redacted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string json = round % 2 == 0 ? "{" : "";
    const int n = count(rng);
    for (int k = 0; k < n; ++k) {
      json += tokens[pick(rng)];
    }
    redacted += expect_same(fast, slow, json) ? 1u : 0u;
  }
  // Both outcomes occurred.
  EXPECT_GT(redacted, 1000u);
  EXPECT_LT(redacted, 19000u);
}

// A body without backslashes is walked only when some pair of consecutive quotes followed
// by a colon holds a sensitive key (Redactor::json_may_have_sensitive_key): each way a walk
// key can be written, alone in an otherwise harmless body, must still be redacted, and
// look-alikes that the walk does not take as keys must stay as the walk leaves them.
TEST(JsonWalk, KeyPrecheckFindsEveryKeyTheWalkReads) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  RedactionRules rules;
  rules.json_keys = {"customer-note", "a_very_long_custom_field_name"};
  const Redactor fast_configured(rules);
  const Redactor slow_configured(rules, Redactor::Scan::exhaustive);
  // Mostly keys that no text pattern covers (ssn, cvv, card numbers, session ids, configured
  // keys), so that only the key walk can redact their values.
  const std::vector<std::string> keys = {R"("ssn":"p1")",
                                         R"("ssn" : "p2")",
                                         "\"cvv\"\n:\t\"t3\"",
                                         R"("Card_Number": 42)",
                                         R"("sessionid":[1,2])",
                                         R"("cookie":{"a":"b"})",
                                         R"("cvc":null)",
                                         R"("":"e","cvv":"123")",
                                         R"("cvv":)",
                                         R"("ssn")",
                                         R"("customer-note" :"c")",
                                         R"("a_very_long_custom_field_name"  :  "l")",
                                         R"("id":"x","sessionId" :"w")",
                                         R"("k":"v":"ssn":"t4")",
                                         R"("password":"p5")"};
  const std::vector<std::string> contexts = {"{@}",
                                             "{\"id\":\"ord_1\",\"items\":[{\"name\":\"n\"},{@}]}",
                                             "[{\"a\":1},{@}]",
                                             "{\"id\":1,\"v\":\"plain text\",@",
                                             "{\"deep\":{\"deeper\":{@}}}",
                                             "{\"a\":abc\"def\",@}",
                                             "{\"url\":\"https://h/x\",@}"};
  std::size_t redacted = 0;
  for (const std::string& key : keys) {
    for (const std::string& context : contexts) {
      std::string json = context;
      json.replace(json.find('@'), 1, key);
      redacted += expect_same(fast, slow, json) ? 1u : 0u;
      EXPECT_EQ(fast_configured.redact_body(json, "application/json", 1 << 20).text,
                slow_configured.redact_body(json, "application/json", 1 << 20).text)
          << json;
      // Every prefix: a key cut anywhere (before its colon it is no key).
      for (std::size_t cut = 0; cut < json.size(); ++cut) {
        expect_same(fast, slow, json.substr(0, cut));
      }
    }
  }
  // Most of the placements redact something (all but the stray-quote context and the key
  // with no value or no colon).
  EXPECT_GT(redacted, keys.size() * contexts.size() / 2);
}

} // namespace
} // namespace runwarden::audit
