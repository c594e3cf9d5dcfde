#include "audit/body_scan_simd.hpp"

#include "policy/ascii.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <string_view>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace runwarden::audit::simd {
namespace {

using policy::ascii_lower;

// Inline byte compare: the words are short and most candidates differ in their first
// bytes, where a libc memcmp call (what string_view::compare makes) cost more than the test.
bool at(std::string_view t, std::size_t i, std::string_view word) {
  if (t.size() - i < word.size()) {
    return false;
  }
  for (std::size_t k = 0; k < word.size(); ++k) {
    if (t[i + k] != word[k]) {
      return false;
    }
  }
  return true;
}

// ASCII case-insensitive `at`; `word` is lower case. RE2's (?i) in Latin-1 folds no other
// byte onto an ASCII letter, so this is exactly what the patterns' (?i) accepts.
bool ci_at(std::string_view t, std::size_t i, std::string_view word) {
  if (t.size() - i < word.size()) {
    return false;
  }
  for (std::size_t k = 0; k < word.size(); ++k) {
    if (ascii_lower(t[i + k]) != word[k]) {
      return false;
    }
  }
  return true;
}

bool aws_prefix(std::string_view t, std::size_t i) {
  static constexpr std::array<std::string_view, 10> kPrefixes = {
      "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA"};
  return std::any_of(kPrefixes.begin(), kPrefixes.end(),
                     [&](std::string_view p) { return at(t, i, p); });
}

bool api_key_at(std::string_view t, std::size_t i) {
  if (!ci_at(t, i, "api")) {
    return false;
  }
  const std::size_t k = i + 3 < t.size() && (t[i + 3] == '_' || t[i + 3] == '-') ? i + 4 : i + 3;
  return ci_at(t, k, "key");
}

// Two-byte pairs that can begin a trigger, as a 64 KiB byte table indexed by the pair
// read as one little-endian 16-bit load: the byte loop is one load and one test per
// position, and the exact checks run only at the few positions that hit.
static_assert(std::endian::native == std::endian::little, "pair table is indexed little-endian");
struct PairSet {
  std::array<std::uint8_t, 65536> hit{};
  void add(unsigned char a, unsigned char b) { hit[a | (unsigned{b} << 8)] = 1; }
  void add_ci(char a, char b) { // a, b lower-case letters
    const auto up = [](char c) { return static_cast<unsigned char>(c - 'a' + 'A'); };
    add(static_cast<unsigned char>(a), static_cast<unsigned char>(b));
    add(up(a), static_cast<unsigned char>(b));
    add(static_cast<unsigned char>(a), up(b));
    add(up(a), up(b));
  }
  bool has(unsigned char a, unsigned char b) const { return hit[a | (unsigned{b} << 8)] != 0; }
};

PairSet make_trigger_pairs() {
  PairSet set;
  for (std::string_view p : {"--", "ey", "AK", "AS", "AG", "AI", "AR", "AN", "AB", "AC", "gh", "gi",
                             "xo", "ho", "sk", "rk", "wh", "Ba"}) {
    set.add(static_cast<unsigned char>(p[0]), static_cast<unsigned char>(p[1]));
  }
  for (std::string_view p : {"be", "pa", "pw", "pr", "se", "ap", "to"}) {
    set.add_ci(p[0], p[1]);
  }
  for (unsigned char d = '0'; d <= '9'; ++d) {
    for (unsigned char e = '0'; e <= '9'; ++e) {
      set.add(d, e);
    }
    set.add(d, ' ');
    set.add(d, '-');
  }
  return set;
}

const PairSet& trigger_pairs() {
  static const PairSet pairs = make_trigger_pairs();
  return pairs;
}

// The pair classes of the AVX2 kernel: each bucket is (first bytes) x (second bytes), and
// the union of the buckets covers every pair of make_trigger_pairs(). A byte's bucket bits
// are looked up by its low and its high nibble and the two lookups ANDed, so a bucket
// really holds (high nibbles x low nibbles) of its bytes: a few more pairs than listed,
// which only cost an exact check.
struct Bucket {
  std::string_view first;
  std::string_view second;
};
constexpr std::array<Bucket, 13> kBuckets = {{
    {"0123456789", "0123456789 -"},
    {"-", "-"},
    {"e", "y"},
    {"A", "KSGIRNBC"},
    {"aA", "pP"},
    {"g", "hi"},
    {"xh", "o"},
    {"sr", "k"},
    {"w", "h"},
    {"bB", "eEa"},
    {"pP", "aAwWrR"},
    {"sS", "eE"},
    {"tT", "oO"},
}};

struct NibbleTables {
  // [set][first lo, first hi, second lo, second hi][nibble]: two sets of eight buckets.
  alignas(32) std::array<std::array<std::array<std::uint8_t, 16>, 4>, 2> t{};
};

constexpr NibbleTables make_nibble_tables() {
  NibbleTables n{};
  for (std::size_t b = 0; b < kBuckets.size(); ++b) {
    const std::size_t set = b / 8;
    const auto bit = static_cast<std::uint8_t>(1u << (b % 8));
    for (char c : kBuckets[b].first) {
      const auto u = static_cast<unsigned char>(c);
      n.t[set][0][u & 15u] = static_cast<std::uint8_t>(n.t[set][0][u & 15u] | bit);
      n.t[set][1][u >> 4] = static_cast<std::uint8_t>(n.t[set][1][u >> 4] | bit);
    }
    for (char c : kBuckets[b].second) {
      const auto u = static_cast<unsigned char>(c);
      n.t[set][2][u & 15u] = static_cast<std::uint8_t>(n.t[set][2][u & 15u] | bit);
      n.t[set][3][u >> 4] = static_cast<std::uint8_t>(n.t[set][3][u >> 4] | bit);
    }
  }
  return n;
}

constexpr NibbleTables kNibbles = make_nibble_tables();

void resize_bitmaps(std::size_t size, BodyScan& out) {
  const std::size_t words = (size + 63) / 64;
  out.quotes.assign(words, 0);
  out.backslashes.assign(words, 0);
  out.key_ends.assign(words, 0);
}

// key_ends from the quote bitmap, one quote at a time (the portable paths).
void mark_key_ends(std::string_view t, BodyScan& out) {
  const std::size_t n = t.size();
  for (std::size_t w = 0; w < out.quotes.size(); ++w) { // bounded by the bitmap's words
    std::uint64_t bits = out.quotes[w];
    while (bits != 0) {
      const std::size_t q = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      bits &= bits - 1;
      if (q + 1 < n && (t[q + 1] == ':' || static_cast<unsigned char>(t[q + 1]) <= ' ')) {
        out.key_ends[w] |= std::uint64_t{1} << (q % 64);
      }
    }
  }
}

#if defined(__x86_64__)
// Quote and backslash bitmaps and the ASCII flag, sixteen bytes at a time (SSE2).
void scan_bitmaps_sse2(std::string_view t, BodyScan& out) {
  const std::size_t n = t.size();
  const auto* p = reinterpret_cast<const unsigned char*>(t.data());
  unsigned high = 0;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const auto q = static_cast<std::uint64_t>(
        static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')))));
    const auto b = static_cast<std::uint64_t>(
        static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))));
    high |= static_cast<unsigned>(_mm_movemask_epi8(v));
    out.quotes[i / 64] |= q << (i % 64);
    out.backslashes[i / 64] |= b << (i % 64);
  }
  for (; i < n; ++i) {
    const auto c = p[i];
    high |= c & 0x80u;
    if (c == '"') {
      out.quotes[i / 64] |= std::uint64_t{1} << (i % 64);
    } else if (c == '\\') {
      out.backslashes[i / 64] |= std::uint64_t{1} << (i % 64);
    }
  }
  out.ascii = high == 0;
  mark_key_ends(t, out);
}

// 32 bytes at `at` and their successors at `at + 1`: quote, backslash, high-bit and
// candidate masks, one bit per byte.
struct Masks {
  std::uint32_t quotes, backslashes, high, candidates, key_ends;
};

__attribute__((target("avx2"))) inline std::uint32_t bits(const __m256i& m) {
  return static_cast<std::uint32_t>(_mm256_movemask_epi8(m));
}

__attribute__((target("avx2"))) inline void load_table(std::size_t set, std::size_t which,
                                                       __m256i& out) {
  out = _mm256_broadcastsi128_si256(
      _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbles.t[set][which].data())));
}

// Each position's pair (byte, next byte) is classified with four nibble lookups per set of
// eight buckets.
__attribute__((target("avx2"))) inline Masks classify(const unsigned char* at) {
  __m256i t[2][4];
  for (std::size_t set = 0; set < 2; ++set) {
    for (std::size_t which = 0; which < 4; ++which) {
      load_table(set, which, t[set][which]); // hoisted out of the caller's loop when inlined
    }
  }
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at));
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + 1));
  const __m256i v_lo = _mm256_and_si256(v, nibble);
  const __m256i v_hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
  const __m256i w_lo = _mm256_and_si256(w, nibble);
  const __m256i w_hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);
  __m256i any = _mm256_setzero_si256();
  for (std::size_t set = 0; set < 2; ++set) {
    const __m256i first = _mm256_and_si256(_mm256_shuffle_epi8(t[set][0], v_lo),
                                           _mm256_shuffle_epi8(t[set][1], v_hi));
    const __m256i second = _mm256_and_si256(_mm256_shuffle_epi8(t[set][2], w_lo),
                                            _mm256_shuffle_epi8(t[set][3], w_hi));
    any = _mm256_or_si256(any, _mm256_and_si256(first, second));
  }
  const __m256i quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8('"'));
  // The successor is ':' or a byte <= ' ' (unsigned: max(w, ' ') == ' ').
  const __m256i space = _mm256_set1_epi8(' ');
  const __m256i after = _mm256_or_si256(_mm256_cmpeq_epi8(w, _mm256_set1_epi8(':')),
                                        _mm256_cmpeq_epi8(_mm256_max_epu8(w, space), space));
  return Masks{bits(quote), bits(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('\\'))), bits(v),
               ~bits(_mm256_cmpeq_epi8(any, _mm256_setzero_si256())),
               bits(_mm256_and_si256(quote, after))};
}

struct Avx2State {
  bool found = false;
  std::size_t resume = 0; // candidates before this index lie inside a checked digit chain
  std::uint32_t high = 0;
};

// 64 bytes of `t` from `base`, read at `at` (the text itself or a zero-padded copy). The
// bitmaps are stored only when `out` is given (the pre-filter alone needs none).
__attribute__((target("avx2"))) inline void
block(std::string_view t, std::size_t base, const unsigned char* at, BodyScan* out, Avx2State& st) {
  const Masks a = classify(at);
  const Masks b = classify(at + 32);
  if (out != nullptr) {
    const std::size_t word = base / 64;
    out->quotes[word] = a.quotes | (std::uint64_t{b.quotes} << 32);
    out->backslashes[word] = a.backslashes | (std::uint64_t{b.backslashes} << 32);
    out->key_ends[word] = a.key_ends | (std::uint64_t{b.key_ends} << 32);
  }
  st.high |= a.high | b.high;
  std::uint64_t candidates = a.candidates | (std::uint64_t{b.candidates} << 32);
  while (!st.found && candidates != 0) {
    const std::size_t i = base + static_cast<std::size_t>(std::countr_zero(candidates));
    candidates &= candidates - 1;
    if (i < st.resume) {
      continue;
    }
    std::size_t last = i;
    st.found = trigger_at(t, i, last);
    st.resume = last + 1;
    // A short digit chain flags nearly every one of its digits; drop the rest of them here
    // instead of one loop round each (a data-dependent branch that often mispredicted).
    const std::size_t skip = st.resume - base;
    candidates &= skip >= 64 ? 0 : ~std::uint64_t{0} << skip;
  }
}

// One pass, 64 bytes per round: the bitmaps, the ASCII flag and the pre-filter; a
// candidate pair gets the exact trigger check until one is found.
__attribute__((target("avx2"))) bool scan_avx2(std::string_view t, BodyScan* out) {
  const std::size_t n = t.size();
  const auto* p = reinterpret_cast<const unsigned char*>(t.data());
  Avx2State st;
  std::size_t base = 0;
  // The successor load reads one byte past the 64: full rounds while 65 bytes remain.
  for (; base + 65 <= n && (out != nullptr || !st.found); base += 64) {
    block(t, base, p + base, out, st);
  }
  if (base < n && (out != nullptr || !st.found)) {
    // The rest, at most 64 bytes, from a zero-padded copy: a zero byte is in no bucket,
    // no quote and no backslash, so the padding adds nothing.
    alignas(32) unsigned char tail[128] = {};
    std::memcpy(tail, p + base, n - base);
    block(t, base, tail, out, st);
  }
  if (out != nullptr) {
    out->ascii = st.high == 0;
    out->builtin = st.found;
    if (n > 0) { // the last byte's successor was the padding's zero, no byte of the text
      out->key_ends[(n - 1) / 64] &= ~(std::uint64_t{1} << ((n - 1) % 64));
    }
  }
  return st.found;
}
#endif

} // namespace

namespace {

Level cpu_level() {
#if defined(__x86_64__)
  static const Level level = __builtin_cpu_supports("avx2") ? Level::avx2 : Level::portable;
  return level;
#else
  return Level::portable;
#endif
}

std::atomic<int> pinned_level{-1};

} // namespace

Level best_level() {
  const int pinned = pinned_level.load(std::memory_order_relaxed);
  return pinned < 0 ? cpu_level() : static_cast<Level>(pinned);
}

void pin_level(Level level) {
  if (level == Level::avx2 && cpu_level() != Level::avx2) {
    level = Level::portable;
  }
  pinned_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

void unpin_level() {
  pinned_level.store(-1, std::memory_order_relaxed);
}

#if defined(__x86_64__)
namespace {

// The escaper's expansion of eight input bytes whose quotes and backslashes (bit k of the
// index: byte k) each get a backslash before them: output byte j is input byte shuffle[j]
// of a register holding the eight bytes and a backslash at index 8. Index 0x80 (past the
// output) yields a zero byte that the next group overwrites.
struct QuoteExpansion {
  alignas(16) std::array<std::array<std::uint8_t, 16>, 256> shuffle{};
  std::array<std::uint8_t, 256> size{}; // 8 + the number of bits of the index
};

constexpr QuoteExpansion make_quote_expansion() {
  QuoteExpansion e{};
  for (std::size_t m = 0; m < 256; ++m) {
    std::size_t j = 0;
    for (std::size_t k = 0; k < 8; ++k) {
      if (((m >> k) & 1u) != 0) {
        e.shuffle[m][j++] = 8;
      }
      e.shuffle[m][j++] = static_cast<std::uint8_t>(k);
    }
    e.size[m] = static_cast<std::uint8_t>(j);
    for (; j < 16; ++j) {
      e.shuffle[m][j] = 0x80;
    }
  }
  return e;
}

constexpr QuoteExpansion kQuoteExpansion = make_quote_expansion();

} // namespace

__attribute__((target("avx2"))) std::size_t escape_quote_chunks_avx2(const char* s, std::size_t i,
                                                                     std::size_t n, char*& out) {
  char* p = out;
  const __m128i backslash_at_8 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0, 0, 0, 0, 0);
  // Stops while 64 bytes remain, as the caller's room bound (2 * consumed + 32) expects.
  while (i + 64 <= n) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i quotes = _mm256_or_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi8('"')),
                                           _mm256_cmpeq_epi8(v, _mm256_set1_epi8('\\')));
    // A signed compare with 0x20 flags control characters and every byte >= 0x80.
    const __m256i flagged =
        _mm256_or_si256(quotes, _mm256_or_si256(_mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), v),
                                                _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x7f))));
    const auto mask = static_cast<std::uint32_t>(_mm256_movemask_epi8(flagged));
    if (mask == 0) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
      i += 32;
      p += 32;
      continue;
    }
    const auto q = static_cast<std::uint32_t>(_mm256_movemask_epi8(quotes));
    if (q != mask) {
      break; // another byte to escape: the caller's loops take it
    }
    // Eight bytes at a time through a shuffle picked by their quote bits: no branch per
    // quote (a loop over the quotes mispredicted its exit on nearly every chunk). Each
    // group stores 16 bytes and advances by its real size, at most 16.
    for (std::size_t g = 0; g < 4; ++g) {
      const std::uint32_t group = (q >> (8 * g)) & 0xffu;
      const __m128i bytes = _mm_or_si128(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i + 8 * g)), backslash_at_8);
      const __m128i order =
          _mm_load_si128(reinterpret_cast<const __m128i*>(kQuoteExpansion.shuffle[group].data()));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_shuffle_epi8(bytes, order));
      p += kQuoteExpansion.size[group];
    }
    i += 32;
  }
  out = p;
  return i;
}
#else
std::size_t escape_quote_chunks_avx2(const char*, std::size_t i, std::size_t, char*&) {
  return i;
}
#endif

bool trigger_at(std::string_view t, std::size_t i, std::size_t& resume) {
  const std::size_t n = t.size();
  const char c = t[i];
  resume = i;
  if (c >= '0' && c <= '9') {
    // The digit chain from here: digits, one space or dash allowed between two digits.
    std::size_t j = i;
    int digits = 0;
    while (j < n) {
      if (t[j] >= '0' && t[j] <= '9') {
        if (++digits >= 13) {
          return true;
        }
        resume = j++;
      } else if ((t[j] == ' ' || t[j] == '-') && j + 1 < n && t[j + 1] >= '0' && t[j + 1] <= '9') {
        ++j;
      } else {
        break;
      }
    }
    return false;
  }
  switch (c) {
  case '-':
    return at(t, i, "-----BEGIN");
  case 'e':
    return at(t, i, "eyJ");
  case 'A':
    return aws_prefix(t, i) || at(t, i, "AIza") || api_key_at(t, i);
  case 'a':
    return api_key_at(t, i);
  case 'g':
    return (i + 3 < n && t[i + 1] == 'h' && t[i + 3] == '_' &&
            std::string_view("pousr").find(t[i + 2]) != std::string_view::npos) ||
           at(t, i, "github_pat_");
  case 'x':
    return at(t, i, "xox");
  case 'h':
    return at(t, i, "hooks.slack.com/services/");
  case 's':
    return at(t, i, "sk_") || at(t, i, "sk-") || ci_at(t, i, "secret");
  case 'S':
    return ci_at(t, i, "secret");
  case 'r':
    return at(t, i, "rk_");
  case 'w':
    return at(t, i, "whsec_");
  case 'B':
    return at(t, i, "Basic") || ci_at(t, i, "bearer");
  case 'b':
    return ci_at(t, i, "bearer");
  case 'p':
  case 'P':
    return ci_at(t, i, "passw") || ci_at(t, i, "pwd") || ci_at(t, i, "private");
  case 't':
  case 'T':
    return ci_at(t, i, "token");
  default:
    return false;
  }
}

namespace {

bool may_match_builtin_portable(std::string_view t) {
  const PairSet& pairs = trigger_pairs();
  const std::size_t n = t.size();
  const std::uint8_t* table = pairs.hit.data();
  for (std::size_t i = 0; i < n; ++i) {
    // Seven positions per 8-byte load: the seven lookups are independent, so they overlap
    // instead of forming one load-test-branch chain per byte. A hit falls through to the
    // byte loop below, which finds the exact position within the word.
    while (i + 8 <= n) {
      std::uint64_t w = 0;
      std::memcpy(&w, t.data() + i, 8);
      if ((table[w & 0xffff] | table[(w >> 8) & 0xffff] | table[(w >> 16) & 0xffff] |
           table[(w >> 24) & 0xffff] | table[(w >> 32) & 0xffff] | table[(w >> 40) & 0xffff] |
           table[(w >> 48) & 0xffff]) != 0) {
        break;
      }
      i += 7;
    }
    while (i + 1 < n) { // positions without a trigger pair, one at a time
      std::uint16_t pair = 0;
      std::memcpy(&pair, t.data() + i, 2);
      if (table[pair] != 0) {
        break;
      }
      ++i;
    }
    if (!pairs.has(static_cast<unsigned char>(t[i]),
                   i + 1 < n ? static_cast<unsigned char>(t[i + 1]) : 0)) {
      continue;
    }
    std::size_t last = i;
    if (trigger_at(t, i, last)) {
      return true;
    }
    i = last; // a chain starting inside a short digit chain is shorter still
  }
  return false;
}

} // namespace

bool may_match_builtin(std::string_view text, Level level) {
#if defined(__x86_64__)
  // Short texts (header values, URLs) are cheaper through the pair table than through
  // the padded copy the kernel needs for its last round.
  if (level == Level::avx2 && text.size() >= 64) {
    return scan_avx2(text, nullptr);
  }
#else
  (void)level;
#endif
  return may_match_builtin_portable(text);
}

namespace {

void scan_bitmaps(std::string_view text, Level level, BodyScan& out) {
#if defined(__x86_64__)
  if (level == Level::avx2) {
    scan_avx2(text, &out);
    return;
  }
  scan_bitmaps_sse2(text, out);
#else
  (void)level;
  bool high = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    high = high || c >= 0x80;
    if (c == '"') {
      out.quotes[i / 64] |= std::uint64_t{1} << (i % 64);
    } else if (c == '\\') {
      out.backslashes[i / 64] |= std::uint64_t{1} << (i % 64);
    }
  }
  out.ascii = !high;
  mark_key_ends(text, out);
#endif
  out.builtin = may_match_builtin_portable(text);
}

} // namespace

void scan_body(std::string_view text, Level level, BodyScan& out) {
  resize_bitmaps(text.size(), out);
  scan_bitmaps(text, level, out);
  std::uint64_t any = 0;
  for (const std::uint64_t w : out.backslashes) {
    any |= w;
  }
  out.any_backslash = any != 0;
}

} // namespace runwarden::audit::simd
