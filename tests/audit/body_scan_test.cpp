// The one-pass body scan (audit/body_scan_simd.hpp): the AVX2 kernel and the portable path
// (SSE2 bitmaps, scalar pair-table pre-filter) must agree with each other and with
// byte-at-a-time references on seeded random inputs and at every offset and length near
// the 32- and 64-byte chunk boundaries; and the redactor's fast body path (scan, quote
// bitmap key scan) must give the exhaustive path's bytes on random JSON.

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

// Byte-at-a-time reference of the pre-filter: some position holds an exact trigger.
bool reference_may_match(std::string_view t) {
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::size_t resume = i;
    if (simd::trigger_at(t, i, resume)) {
      return true;
    }
  }
  return false;
}

void expect_scan_matches_reference(const std::string& text, Level level) {
  simd::BodyScan scan;
  simd::scan_body(text, level, scan);
  const std::size_t words = (text.size() + 63) / 64;
  ASSERT_EQ(scan.quotes.size(), words);
  ASSERT_EQ(scan.backslashes.size(), words);
  std::vector<std::uint64_t> quotes(words, 0);
  std::vector<std::uint64_t> backslashes(words, 0);
  std::vector<std::uint64_t> key_ends(words, 0);
  bool ascii = true;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    ascii = ascii && c < 0x80;
    if (c == '"') {
      quotes[i / 64] |= std::uint64_t{1} << (i % 64);
      // Followed by ':' or a byte <= ' '; a quote at the last byte has no successor.
      if (i + 1 < text.size() &&
          (text[i + 1] == ':' || static_cast<unsigned char>(text[i + 1]) <= ' ')) {
        key_ends[i / 64] |= std::uint64_t{1} << (i % 64);
      }
    }
    if (c == '\\') {
      backslashes[i / 64] |= std::uint64_t{1} << (i % 64);
    }
  }
  const int lvl = static_cast<int>(level);
  EXPECT_EQ(scan.quotes, quotes) << "level " << lvl << " text: " << text;
  EXPECT_EQ(scan.backslashes, backslashes) << "level " << lvl << " text: " << text;
  EXPECT_EQ(scan.key_ends, key_ends) << "level " << lvl << " text: " << text;
  EXPECT_EQ(scan.ascii, ascii) << "level " << lvl << " text: " << text;
  EXPECT_EQ(scan.any_backslash, text.find('\\') != std::string::npos);
  const bool expected = reference_may_match(text);
  EXPECT_EQ(scan.builtin, expected) << "level " << lvl << " text: " << text;
  EXPECT_EQ(simd::may_match_builtin(text, level), expected) << "level " << lvl << " " << text;
}

const std::vector<std::string>& triggers() {
  static const std::vector<std::string> list = {"-----BEGIN",
                                                "eyJ",
                                                "AKIA",
                                                "ASIA",
                                                "AGPA",
                                                "AIDA",
                                                "AROA",
                                                "AIPA",
                                                "ANPA",
                                                "ANVA",
                                                "ABIA",
                                                "ACCA",
                                                "AIza",
                                                "ghp_",
                                                "gho_",
                                                "ghu_",
                                                "ghs_",
                                                "ghr_",
                                                "github_pat_",
                                                "xox",
                                                "hooks.slack.com/services/",
                                                "sk_",
                                                "rk_",
                                                "whsec_",
                                                "sk-",
                                                "Bearer",
                                                "bEARER",
                                                "Basic",
                                                "password",
                                                "PASSW",
                                                "pWd",
                                                "secret",
                                                "SECRET",
                                                "api_key",
                                                "API-KEY",
                                                "apikey",
                                                "Apikey",
                                                "private",
                                                "PRIVATE",
                                                "token",
                                                "TOKEN",
                                                "1234567890123",
                                                "4111 1111 1111 1",
                                                "1-2-3-4-5-6-7-8-9-0-1-2-3"};
  return list;
}

// Near misses: each trigger cut one byte short, which shares its leading pairs.
std::string near_miss(const std::string& trigger) {
  return trigger.substr(0, trigger.size() - 1);
}

TEST(BodyScan, EveryTriggerAtEveryOffsetAndLength) {
  const std::string filler = "The quick brown fox; \"quoted\" {x:[1,2]} \\ done.";
  for (Level level : levels()) {
    for (const std::string& trigger : triggers()) {
      for (std::size_t at = 0; at < 140; ++at) {
        std::string text;
        while (text.size() < at) {
          text += filler[text.size() % filler.size()];
        }
        const std::string with = text + trigger;
        expect_scan_matches_reference(with, level);
        EXPECT_TRUE(simd::may_match_builtin(with, level)) << with;
        expect_scan_matches_reference(with + "!", level);
        expect_scan_matches_reference(text + near_miss(trigger), level);
        expect_scan_matches_reference(text + near_miss(trigger) + " ", level);
      }
    }
  }
}

TEST(BodyScan, SpecialBytesAtEveryOffsetOfEveryLength) {
  const std::vector<std::string> specials = {"\"",  "\\",   "\xc3\xa9", "\x80",   "\xff", "\x7f",
                                             "\n",  "5",    "-",        " ",      "s",    "k",
                                             "\":", "\"\t", "\" :",     "\"\x01", "\"!"};
  for (Level level : levels()) {
    for (std::size_t size = 0; size <= 200; ++size) {
      for (const std::string& special : specials) {
        for (std::size_t at = 0; at < size; at += (size > 70 && at + 3 < size - 3) ? 7 : 1) {
          std::string text(size, 'a');
          text.replace(at, std::min(special.size(), size - at), special.substr(0, size - at));
          expect_scan_matches_reference(text, level);
        }
      }
    }
  }
}

// Random texts over a small alphabet that makes many candidate pairs, quotes, backslashes
// and non-ASCII bytes.
std::string random_bytes(std::mt19937& rng, std::size_t size) {
  static const std::string alphabet =
      "\"\\ -0123456789aAbBeEgGhHkKoOpPrRsStTwWxXyYzZ_:,{}\t\x01\xc3\xa9\xff";
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string out;
  for (std::size_t k = 0; k < size; ++k) {
    out += alphabet[pick(rng)];
  }
  return out;
}

TEST(BodyScan, SeededRandomTextsAgreeAcrossLevels) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::size_t> size(0, 300);
  for (int round = 0; round < 6000; ++round) {
    const std::string text = random_bytes(rng, size(rng));
    for (Level level : levels()) {
      expect_scan_matches_reference(text, level);
    }
  }
}

TEST(BodyScan, IndexedStringEndMatchesTheByteLoop) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<std::size_t> size(1, 260);
  for (int round = 0; round < 2000; ++round) {
    const std::string text = random_bytes(rng, size(rng));
    for (Level level : levels()) {
      simd::BodyScan scan;
      simd::scan_body(text, level, scan);
      for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '"') {
          continue;
        }
        const std::size_t q = text.find('"', i + 1);
        const std::size_t b = text.find('\\', i + 1);
        const std::size_t got = simd::indexed_string_end(scan, text.size(), i);
        if (q == std::string::npos) {
          EXPECT_EQ(got, text.size()) << text << " at " << i;
        } else if (b < q) {
          EXPECT_EQ(got, static_cast<std::size_t>(-1)) << text << " at " << i;
        } else {
          EXPECT_EQ(got, q + 1) << text << " at " << i;
        }
      }
    }
  }
}

// Random JSON with sensitive keys at depth, escapes, non-ASCII and triggers: the fast body
// path redacts to exactly the exhaustive path's bytes.
std::string random_json(std::mt19937& rng, int depth) {
  static const std::vector<std::string> keys = {"id",      "password",      "na\\\"me",   "token",
                                                "api_key", "Client-Secret", "x\\u0070wd", "note",
                                                "items",   "card_number",   "é",          "ssn"};
  static const std::vector<std::string> scalars = {"1",
                                                   "-2.5e3",
                                                   "true",
                                                   "null",
                                                   "\"plain\"",
                                                   "\"a \\\" b\"",
                                                   "\"\\\\\"",
                                                   "\"ord_100000\"",
                                                   "\"sk_live_abcdefghijklmnop\"",
                                                   "\"4111 1111 1111 1111\"",
                                                   "\"caf\xc3\xa9\"",
                                                   "\"token=abc\"",
                                                   "\"\"",
                                                   "\"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln\""};
  std::uniform_int_distribution<std::size_t> kpick(0, keys.size() - 1);
  std::uniform_int_distribution<std::size_t> spick(0, scalars.size() - 1);
  std::uniform_int_distribution<int> kind(0, depth > 3 ? 0 : 3);
  std::uniform_int_distribution<int> members(0, 5);
  switch (kind(rng)) {
  case 1: {
    std::string out = "{";
    const int n = members(rng);
    for (int k = 0; k < n; ++k) {
      out += (k > 0 ? ",\"" : "\"") + keys[kpick(rng)] + "\":" + random_json(rng, depth + 1);
    }
    return out + "}";
  }
  case 2: {
    std::string out = "[";
    const int n = members(rng);
    for (int k = 0; k < n; ++k) {
      out += (k > 0 ? ", " : "") + random_json(rng, depth + 1);
    }
    return out + "]";
  }
  default:
    return scalars[spick(rng)];
  }
}

TEST(BodyScan, RedactorFastBodyPathMatchesTheExhaustivePath) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  std::mt19937 rng(7);
  std::size_t redacted = 0;
  for (int round = 0; round < 3000; ++round) {
    // Alternate the levels: the redactor's own calls use the pinned one.
    simd::pin_level(levels()[static_cast<std::size_t>(round) % levels().size()]);
    std::string json = "{\"a\":" + random_json(rng, 0) + ",\"b\":" + random_json(rng, 0) + "}";
    if (round % 4 == 1) {
      json.resize(json.size() / 2); // a truncated prefix
    }
    const RedactedBody a = fast.redact_body(json, "application/json", 1 << 16);
    const RedactedBody b = slow.redact_body(json, "application/json", 1 << 16);
    EXPECT_EQ(a.text, b.text) << json;
    EXPECT_EQ(a.binary, b.binary) << json;
    EXPECT_EQ(a.sha256, b.sha256);
    redacted += a.text != json ? 1u : 0u;
  }
  simd::unpin_level();
  // The corpus exercised both outcomes.
  EXPECT_GT(redacted, 300u);
  EXPECT_LT(redacted, 3000u);
}

} // namespace
} // namespace runwarden::audit
