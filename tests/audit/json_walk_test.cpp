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

} // namespace
} // namespace runwarden::audit
