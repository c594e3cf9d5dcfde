#pragma once
// One pass over a body that serves the redactor's later steps: where its quotes and
// backslashes are (the JSON key scan jumps from quote to quote instead of searching each
// string), whether it is pure ASCII (then it is valid UTF-8 without a decoder pass), and
// whether any built-in pattern can match (the pre-filter). An AVX2 kernel, picked at run
// time, classifies byte pairs 32 at a time; the portable path (SSE2, the x86-64 baseline)
// finds the same bitmaps and runs the scalar pre-filter. Both give identical results
// (tests/audit/body_scan_test.cpp).

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace runwarden::audit::simd {

enum class Level : std::uint8_t { portable, avx2 };

/// The widest level this CPU runs (checked once), unless pinned for a test.
Level best_level();

/// Tests only: every later best_level() returns `level` (avx2 only where the CPU has it),
/// so one process can check both paths. unpin_level() restores the CPU's level.
void pin_level(Level level);
void unpin_level();

/// The JSON escaper's wide loop (audit/record_builder.cpp): from `i`, 32-byte chunks whose
/// only bytes to escape are '"' and '\\' are copied to `out` with a backslash before each;
/// stops at the first other byte to escape or when fewer than 64 bytes remain. Returns the
/// new input index and advances `out`. `out` must have room for 2 * (consumed) + 32 bytes.
/// AVX2 only: call it when best_level() is avx2.
std::size_t escape_quote_chunks_avx2(const char* s, std::size_t i, std::size_t n, char*& out);

/// Exact check of the pre-filter's triggers at `i` (PEM, JWT, key prefixes, key words,
/// 13-digit chains). For a digit chain that is too short, `resume` receives the index of
/// its last digit: no chain starting inside it is long enough either.
bool trigger_at(std::string_view text, std::size_t i, std::size_t& resume);

/// False only when no built-in pattern can match anywhere in `text`.
bool may_match_builtin(std::string_view text, Level level);

struct BodyScan {
  std::vector<std::uint64_t> quotes;      // bit (i % 64) of word i / 64: text[i] == '"'
  std::vector<std::uint64_t> backslashes; // the same for '\\'
  /// Quotes whose next byte is ':' or any byte <= ' ' (white space among them): a superset
  /// of the quotes that close a JSON key, so the key pre-check visits these instead of every
  /// quote. A quote at the text's last byte is not in it.
  std::vector<std::uint64_t> key_ends;
  bool ascii = true; // no byte >= 0x80
  bool any_backslash = false;
  bool builtin = true; // may_match_builtin(text)
};

/// Fills `out` for `text` (the vectors are reused between calls).
void scan_body(std::string_view text, Level level, BodyScan& out);

/// Index just past the closing quote of the JSON string opening at `i` (text[i] == '"'),
/// from the bitmaps; `size` (the text's) when the text ends first. A string holding a
/// backslash returns npos: the caller's byte loop decodes it. Inline: it runs once per
/// JSON string and is a handful of instructions when the body has no backslash.
inline std::size_t indexed_string_end(const BodyScan& scan, std::size_t size, std::size_t i) {
  const std::size_t from = i + 1;
  std::size_t word = from / 64;
  const std::size_t words = scan.quotes.size();
  if (word >= words) {
    return size;
  }
  std::uint64_t bits = scan.quotes[word] & (~std::uint64_t{0} << (from % 64));
  while (bits == 0) { // bounded by the number of bitmap words
    if (++word >= words) {
      return size;
    }
    bits = scan.quotes[word];
  }
  const std::size_t q = word * 64 + static_cast<std::size_t>(std::countr_zero(bits));
  if (scan.any_backslash) {
    // Any backslash in [from, q) may escape the quote.
    for (std::size_t w = from / 64; w <= q / 64; ++w) {
      std::uint64_t b = scan.backslashes[w];
      if (w == from / 64) {
        b &= ~std::uint64_t{0} << (from % 64);
      }
      if (w == q / 64) {
        b &= (std::uint64_t{1} << (q % 64)) - 1;
      }
      if (b != 0) {
        return static_cast<std::size_t>(-1);
      }
    }
  }
  return q + 1;
}

} // namespace runwarden::audit::simd
