// The record escaper (RecordBuilder::dump of a string) against a byte-at-a-time reference
// of the same rules, on seeded random strings long enough to reach every fast path (the
// 16-byte quote chunks, the 16- and 8-byte scans, the byte tail) and every kind of byte
// that needs escaping at every offset of a chunk. Every test runs at each SIMD level the
// CPU has (the AVX2 32-byte chunk loop and the portable SSE2/SWAR loops).

#include "audit/body_scan_simd.hpp"
#include "audit/record_builder.hpp"
#include "tests/audit/simd_levels.hpp"

#include <cstdint>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace runwarden::audit {
namespace {

// The rules, one byte at a time: printable ASCII stays, '"' and '\\' get a backslash,
// \n \r \t their short forms, other control characters and DEL \u00XX, valid UTF-8 its
// code point as \uXXXX (surrogate pairs above U+FFFF), each byte of an invalid sequence
// \ufffd.
std::string reference(const std::string& s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  auto u = [&](std::uint32_t cp) {
    out += "\\u";
    out += hex[(cp >> 12) & 0xf];
    out += hex[(cp >> 8) & 0xf];
    out += hex[(cp >> 4) & 0xf];
    out += hex[cp & 0xf];
  };
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c == '\r') {
      out += "\\r";
      ++i;
    } else if (c == '\t') {
      out += "\\t";
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      u(c);
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      const int lead = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
      const auto len = static_cast<std::size_t>(lead);
      std::uint32_t cp = len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
      bool ok = len != 0 && i + len <= s.size();
      for (std::size_t k = 1; ok && k < len; ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        ok = (cc & 0xC0) == 0x80;
        cp = (cp << 6) | (cc & 0x3Fu);
      }
      ok = ok && !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF));
      if (!ok) {
        u(0xFFFD);
        ++i;
      } else if (cp >= 0x10000) {
        u(0xD800 + ((cp - 0x10000) >> 10));
        u(0xDC00 + ((cp - 0x10000) & 0x3FF));
        i += len;
      } else {
        u(cp);
        i += len;
      }
    }
  }
  out += '"';
  return out;
}

std::string dump_string(const std::string& s) {
  return RecordBuilder::dump(nlohmann::ordered_json(s));
}

std::vector<simd::Level> levels() {
  return testing::simd_levels();
}
using Pinned = testing::PinnedLevel;

TEST(Escape, MatchesTheReferenceOnRandomStrings) {
  std::mt19937 rng(20261121);
  // Mostly plain text with quotes and backslashes (JSON bodies), plus every other class.
  const std::string pieces[] = {"a",
                                "Z",
                                "0",
                                " ",
                                "\"",
                                "\\",
                                "\n",
                                "\r",
                                "\t",
                                "\x01",
                                "\x1f",
                                "\x7f",
                                "\xc3\xa9",
                                "\xe2\x80\xa8",
                                "\xf0\x9f\x98\x80",
                                "\xff",
                                "\xc3",
                                "\xe2\x80",
                                "\xed\xa0\x80",
                                "\xc0\xaf",
                                "~"};
  constexpr std::size_t kPieces = sizeof pieces / sizeof pieces[0];
  std::size_t checked = 0;
  for (int round = 0; round < 6000; ++round) {
    const Pinned pinned(levels()[static_cast<std::size_t>(round) % levels().size()]);
    const std::size_t length = rng() % (round % 2 == 0 ? 120 : 400);
    const unsigned plain_bias = rng() % 4; // 0: anything goes; 3: almost only plain text
    std::string s;
    while (s.size() < length) {
      const std::size_t pick = rng() % kPieces;
      if (plain_bias > 0 && pick > 5 && rng() % 4 < plain_bias) {
        s += static_cast<char>('a' + rng() % 26);
      } else {
        s += pieces[pick];
      }
    }
    const std::string got = dump_string(s);
    ASSERT_EQ(got, reference(s)) << "round " << round;
    for (char c : got) {
      ASSERT_TRUE(c >= 0x20 && c < 0x7f) << "round " << round;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6000u);
}

TEST(Escape, EveryOffsetOfEveryChunk) {
  // One special byte (or sequence) at each offset of a 64-byte plain run, and two quotes at
  // every pair of offsets: the chunk loops cut at every position.
  const std::string specials[] = {"\"", "\\", "\n", "\x02", "\x7f", "\xc3\xa9", "\xff"};
  for (simd::Level level : levels()) {
    const Pinned pinned(level);
    for (const std::string& special : specials) {
      // Runs of 0-40 bytes (the overlapping-word plain check of short strings, each side
      // of 4, 8, 16 and 32), 64 (one wide chunk at most) and 160 bytes (several, then the
      // tails).
      std::vector<std::size_t> sizes;
      for (std::size_t size = 0; size <= 40; ++size) {
        sizes.push_back(size);
      }
      sizes.push_back(64);
      sizes.push_back(160);
      for (std::size_t size : sizes) {
        for (std::size_t at = 0; at <= size; ++at) {
          std::string s(size, 'x');
          s.insert(at, special);
          ASSERT_EQ(dump_string(s), reference(s)) << "offset " << at;
        }
      }
    }
    for (std::size_t size : {std::size_t{48}, std::size_t{100}}) {
      for (std::size_t a = 0; a < size; ++a) {
        for (std::size_t b = a; b < size; ++b) {
          std::string s(size, 'y');
          s[a] = '"';
          s[b] = '\\';
          ASSERT_EQ(dump_string(s), reference(s)) << a << "," << b;
        }
      }
    }
  }
}

TEST(Escape, EveryQuotePatternOfEveryEightByteGroup) {
  // The AVX2 loop expands each 8-byte group of a 32-byte chunk by a shuffle picked by its
  // quote and backslash bits: every one of the 256 patterns in each of the four groups of
  // the second chunk (the leading quote starts the chunks at offset 0), aligned and 5
  // bytes later (straddling two chunks), with the other groups plain or full of quotes.
  for (simd::Level level : levels()) {
    const Pinned pinned(level);
    for (std::size_t lead : {std::size_t{0}, std::size_t{5}}) {
      for (char filler : {'x', '"'}) {
        for (std::size_t group = 0; group < 4; ++group) {
          for (unsigned bits = 0; bits < 256; ++bits) {
            std::string s(32 + lead, 'a');
            s[0] = '"';
            s.append(32, filler == '"' ? '"' : 'z');
            for (std::size_t k = 0; k < 8; ++k) {
              const std::size_t at = 32 + lead + 8 * group + k;
              s[at] = ((bits >> k) & 1u) == 0 ? static_cast<char>('A' + k)
                      : k % 2 == 0            ? '"'
                                              : '\\';
            }
            s.append(70, filler);
            ASSERT_EQ(dump_string(s), reference(s))
                << "lead " << lead << " group " << group << " bits " << bits;
          }
        }
      }
    }
  }
}

TEST(Escape, ValidUtf8RoundTripsThroughAJsonParser) {
  const std::string s = "{\"note\":\"caf\xc3\xa9 \\\"quoted\\\" \xe2\x80\xa8 line\\nbreak "
                        "\xf0\x9f\x98\x80\",\"path\":\"C:\\\\tmp\\\\x\"}" +
                        std::string(40, 'p') + "\"\"\"\\\\\\";
  const auto parsed = nlohmann::json::parse(dump_string(s));
  EXPECT_EQ(parsed.get<std::string>(), s);
}

} // namespace
} // namespace runwarden::audit
