#include "audit/record_builder.hpp"

#include "audit/body_scan_simd.hpp"
#include "audit/digest.hpp"
#include "policy/ascii.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace runwarden::audit {
namespace {

using policy::ascii_lower;
using policy::iequals;

std::string_view content_type(const HeaderList& headers) {
  for (const auto& [name, value] : headers) {
    if (iequals(name, "content-type")) {
      return value;
    }
  }
  return {};
}

// The members of an object dump: "{...}" without its braces.
std::string members_of(const nlohmann::ordered_json& object) {
  std::string s = RecordBuilder::dump(object);
  return s.substr(1, s.size() - 2);
}

} // namespace

RecordBuilder::RecordBuilder(const RedactionRules& rules, std::size_t body_bytes)
    : redactor_(rules), body_bytes_(body_bytes) {}

namespace {

constexpr std::uint64_t kOnes = 0x0101010101010101ull;
constexpr std::uint64_t kHighs = 0x8080808080808080ull;

constexpr std::uint64_t has_byte(std::uint64_t w, unsigned char b) {
  const std::uint64_t x = w ^ (kOnes * b);
  return (x - kOnes) & ~x & kHighs;
}

// High bit set in each byte of the word that is a control character, DEL, non-ASCII, '"'
// or '\\'. The lowest flagged byte is always exact (borrows only run upwards).
constexpr std::uint64_t escape_mask(std::uint64_t w) {
  return (w & kHighs) | ((w - kOnes * 0x20) & ~w & kHighs) | has_byte(w, 0x7f) | has_byte(w, '"') |
         has_byte(w, '\\');
}

// True when no byte of `s` needs escaping, the common case for the short strings of a
// record: overlapping loads of its first and last bytes cover it with no byte loop (the
// masks above flag every such byte, so a zero mask is exact).
bool all_plain(std::string_view s) {
  const std::size_t n = s.size();
  const char* d = s.data();
#if defined(__SSE2__)
  const auto flagged = [](const char* at) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                                       _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))),
                                          _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                       _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))));
  };
  if (n >= 16) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      if (flagged(d + i) != 0) {
        return false;
      }
    }
    return i == n || flagged(d + n - 16) == 0;
  }
#endif
  if (n >= 8) {
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    std::memcpy(&a, d, 8);
    std::memcpy(&b, d + n - 8, 8);
    return (escape_mask(a) | escape_mask(b)) == 0;
  }
  if (n >= 4) {
    std::uint32_t a = 0;
    std::uint32_t b = 0;
    std::memcpy(&a, d, 4);
    std::memcpy(&b, d + n - 4, 4);
    return escape_mask(std::uint64_t{a} | (std::uint64_t{b} << 32)) == 0;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(d[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      return false;
    }
  }
  return true;
}

// Length of the leading run of `s` that needs no escaping (printable ASCII other than
// '"' and '\\').
std::size_t plain_prefix(std::string_view s) {
  const std::size_t n = s.size();
  std::size_t i = 0;
#if defined(__SSE2__)
  while (i + 16 <= n) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
    const __m128i flagged = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                                      _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))),
                                         _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                      _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(flagged));
    if (mask != 0) {
      return i + static_cast<std::size_t>(std::countr_zero(mask));
    }
    i += 16;
  }
#endif
  while (i + 8 <= n) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, 8);
    const std::uint64_t mask = escape_mask(w);
    if (mask != 0) {
      return i + static_cast<std::size_t>(std::countr_zero(mask)) / 8;
    }
    i += 8;
  }
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      return i;
    }
    ++i;
  }
  return n;
}

} // namespace

// A raw cursor over a per-thread buffer that is reused from record to record and never
// zero-filled: each piece checks the room once and is copied inline (fixed pieces with
// constant sizes, short strings with overlapping word moves), instead of one
// std::string::append, a capacity check and a libc memcpy call per piece.
struct RawBuffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
};

class RawWriter {
public:
  /// Writes from `headroom` bytes into the buffer (bytes the caller fills in later).
  explicit RawWriter(RawBuffer& buffer, std::size_t headroom = 0) : buffer_(buffer) {
    if (buffer_.size == 0) {
      buffer_.data = std::make_unique_for_overwrite<char[]>(kInitial);
      buffer_.size = kInitial;
    }
    base_ = buffer_.data.get();
    p_ = base_ + headroom;
    start_ = p_;
    end_ = base_ + buffer_.size;
  }
  RawWriter(const RawWriter&) = delete;
  RawWriter& operator=(const RawWriter&) = delete;

  /// At least `n` writable bytes at the cursor.
  void room(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n) {
      grow(n);
    }
  }
  char* cursor() { return p_; }
  /// After writing through cursor() (within the room asked for).
  void advance_to(char* p) { p_ = p; }

  void put(char c) {
    room(1);
    char* const p = p_;
    *p = c;
    p_ = p + 1;
  }
  /// A string literal: its size is a constant, so the copy is a few moves.
  // The cursor is read into a local before each write and stored after it: a store
  // through a char pointer may alias p_ itself, which would otherwise be reloaded.
  template <std::size_t N> void lit(const char (&s)[N]) {
    room(N - 1);
    char* const p = p_;
    std::memcpy(p, s, N - 1);
    p_ = p + (N - 1);
  }
  void copy(std::string_view s) {
    room(s.size());
    p_ = copy_to(p_, s);
  }
  /// `s` at `p`, which has room for it; returns its end.
  static char* copy_to(char* p, std::string_view s) {
    const std::size_t n = s.size();
    const char* src = s.data();
    // Overlapping moves of the first and last bytes: exact, no read past the source.
    if (n >= 8 && n <= 16) {
      std::uint64_t a = 0;
      std::uint64_t b = 0;
      std::memcpy(&a, src, 8);
      std::memcpy(&b, src + n - 8, 8);
      std::memcpy(p, &a, 8);
      std::memcpy(p + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
      std::uint32_t a = 0;
      std::uint32_t b = 0;
      std::memcpy(&a, src, 4);
      std::memcpy(&b, src + n - 4, 4);
      std::memcpy(p, &a, 4);
      std::memcpy(p + n - 4, &b, 4);
    } else if (n > 0 && n < 4) {
      p[0] = src[0];
      p[n / 2] = src[n / 2];
      p[n - 1] = src[n - 1];
#if defined(__SSE2__)
    } else if (n > 16 && n <= 32) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + n - 16));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), a);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p + n - 16), b);
#endif
    } else if (n > 0) {
      std::memcpy(p, src, n);
    }
    return p + n;
  }
  std::string_view view() const {
    return std::string_view(start_, static_cast<std::size_t>(p_ - start_));
  }
  /// The written bytes, writable (a slot the writer seals in place).
  char* start() {
    return start_;
  }

private:
  static constexpr std::size_t kInitial = 8 * 1024;

  void grow(std::size_t n) {
    const auto used = static_cast<std::size_t>(p_ - base_);
    const std::size_t size = std::max(2 * buffer_.size, used + n + 1024);
    auto bigger = std::make_unique_for_overwrite<char[]>(size);
    if (used != 0) {
      std::memcpy(bigger.get(), base_, used);
    }
    buffer_.data = std::move(bigger);
    buffer_.size = size;
    start_ = buffer_.data.get() + (start_ - base_);
    base_ = buffer_.data.get();
    p_ = base_ + used;
    end_ = base_ + size;
  }

  RawBuffer& buffer_;
  char* base_ = nullptr;
  char* start_ = nullptr; // where view() begins: base_ + headroom
  char* p_ = nullptr;
  char* end_ = nullptr;
};

namespace {

// A buffer that grew past this for one large record is released after it.
constexpr std::size_t kKeptBufferBytes = std::size_t{1} << 20;

void release_if_large(RawBuffer& buffer) {
  if (buffer.size > kKeptBufferBytes) {
    buffer.data.reset();
    buffer.size = 0;
  }
}

// JSON string escaper with the guarantees of dump(ensure_ascii, replace): the output is
// printable ASCII only; valid UTF-8 becomes \uXXXX (surrogate pairs above U+FFFF); each
// byte of an invalid sequence becomes \ufffd. Runs of plain ASCII are copied in bulk.
void append_escaped(RawWriter& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  // The leading plain run goes straight to the cursor: most strings of a record (ids,
  // names, header values, URLs) are plain throughout and need nothing else, and a JSON
  // body's run ends at its first quote.
  if (s.empty()) { // an empty view may hold no pointer at all: nothing to copy from it
    out.lit("\"\"");
    return;
  }
  if (all_plain(s)) {
    out.room(s.size() + 2);
    char* const p = out.cursor();
    *p = '"';
    char* const end = RawWriter::copy_to(p + 1, s);
    *end = '"';
    out.advance_to(end + 1);
    return;
  }
  const std::size_t lead = plain_prefix(s);
  // The rest is written through the raw cursor with room for the worst case (6 output
  // bytes per input byte): no capacity check per byte.
  out.room(6 * s.size() + 2);
  char* p = out.cursor();
  *p++ = '"';
  std::memcpy(p, s.data(), lead);
  p += lead;
  auto put = [&p](char c) { *p++ = c; };
  auto put2 = [&p](char a, char b) {
    p[0] = a;
    p[1] = b;
    p += 2;
  };
  auto u_escape = [&](std::uint32_t cp) {
    put2('\\', 'u');
    put(hex[(cp >> 12) & 0xf]);
    put(hex[(cp >> 8) & 0xf]);
    put(hex[(cp >> 4) & 0xf]);
    put(hex[cp & 0xf]);
  };
  std::size_t i = lead;
  const std::size_t n = s.size();
  // Strings this long take the AVX2 chunk loop first where the CPU has it.
  const bool wide = n >= 64 && simd::best_level() == simd::Level::avx2;
  while (i < n) {
    bool at_flagged = false; // s[i] is known to need escaping
    if (wide) {
      // Output bound: at most six bytes per consumed byte plus a 32-byte store, within the
      // 6n + 2 reserved bytes while 64 input bytes remain.
      i = simd::escape_quote_chunks_avx2(s.data(), i, n, p);
    }
#if defined(__SSE2__)
    // Chunks of sixteen whose only bytes to escape are quotes and backslashes, the common
    // case in JSON bodies: each piece between two of them is copied with one 16-byte load
    // and store taken at its start, so the quotes of a chunk cost no serial reload. The
    // loads read at most 16 bytes past the chunk, hence i + 32 <= n; the stores stay
    // within the 6n + 2 reserved bytes since at least 16 input bytes remain after each.
    while (i + 32 <= n) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
      const __m128i quotes = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
      const __m128i flagged =
          _mm_or_si128(quotes, _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))));
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(flagged));
      if (mask == 0) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
        i += 16;
        p += 16;
        continue;
      }
      auto q = static_cast<unsigned>(_mm_movemask_epi8(quotes));
      if (q != mask) {
        break; // a byte other than a quote or backslash: the loops below take it
      }
      std::size_t pos = 0;
      while (q != 0) {
        const auto k = static_cast<std::size_t>(std::countr_zero(q));
        q &= q - 1;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i + pos)));
        p += k - pos;
        p[0] = '\\';
        p[1] = s[i + k];
        p += 2;
        pos = k + 1;
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i + pos)));
      p += 16 - pos;
      i += 16;
    }
    // Sixteen bytes at a time (SSE2 is part of x86-64): the chunk is stored whole before
    // its mask is known, which the 6n + 2 reserved bytes allow while 16 input bytes
    // remain. A signed compare with 0x20 flags control characters and every byte >= 0x80.
    while (i + 16 <= n) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
      const __m128i flagged = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                                        _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))),
                                           _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                        _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(flagged));
      if (mask == 0) {
        i += 16;
        p += 16;
        continue;
      }
      const auto plain = static_cast<std::size_t>(std::countr_zero(mask));
      const char c = s[i + plain];
      if (c == '"' || c == '\\') {
        // The common case in JSON bodies, handled without leaving the loop.
        p[plain] = '\\';
        p[plain + 1] = c;
        p += plain + 2;
        i += plain + 1;
        continue;
      }
      i += plain;
      p += plain;
      at_flagged = true;
      break;
    }
#endif
    // Eight bytes at a time up to the first byte that needs escaping (SWAR). Each word is
    // stored whole before its mask is known: with at most 6 output bytes per consumed
    // byte, p + 8 stays within the 6n + 2 reserved bytes while 8 input bytes remain.
    while (!at_flagged && i + 8 <= n) {
      std::uint64_t w = 0;
      std::memcpy(&w, s.data() + i, 8);
      std::memcpy(p, &w, 8);
      const std::uint64_t mask = escape_mask(w);
      if (mask != 0) {
        const auto plain = static_cast<std::size_t>(std::countr_zero(mask)) / 8;
        i += plain;
        p += plain;
        break;
      }
      i += 8;
      p += 8;
    }
    while (!at_flagged && i < n) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
        break;
      }
      *p++ = static_cast<char>(c);
      ++i;
    }
    if (i >= n) {
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      put2('\\', static_cast<char>(c));
      ++i;
      continue;
    }
    if (c < 0x80) {
      switch (c) {
      case '\n':
        put2('\\', 'n');
        break;
      case '\r':
        put2('\\', 'r');
        break;
      case '\t':
        put2('\\', 't');
        break;
      default:
        u_escape(c);
      }
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07u;
    }
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    ok = ok && !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                 (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF));
    if (!ok) {
      u_escape(0xFFFD);
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u_escape(0xD800 + (cp >> 10));
      u_escape(0xDC00 + (cp & 0x3FF));
    } else {
      u_escape(cp);
    }
    i += len;
  }
  put('"');
  out.advance_to(p);
}

void append_json(RawWriter& w, const nlohmann::ordered_json& v) {
  switch (v.type()) {
  case nlohmann::json::value_t::object: {
    w.put('{');
    bool first = true;
    for (const auto& [key, member] : v.items()) {
      if (!first) {
        w.put(',');
      }
      first = false;
      append_escaped(w, key);
      w.put(':');
      append_json(w, member);
    }
    w.put('}');
    break;
  }
  case nlohmann::json::value_t::array: {
    w.put('[');
    bool first = true;
    for (const auto& element : v) {
      if (!first) {
        w.put(',');
      }
      first = false;
      append_json(w, element);
    }
    w.put(']');
    break;
  }
  case nlohmann::json::value_t::string:
    append_escaped(w, v.get_ref<const std::string&>());
    break;
  default:
    w.copy(v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
  }
}

} // namespace

std::string RecordBuilder::dump(const nlohmann::ordered_json& value) {
  thread_local RawBuffer buffer;
  std::string out;
  {
    RawWriter w(buffer);
    append_json(w, value);
    out.assign(w.view());
  }
  release_if_large(buffer);
  return out;
}

namespace {

void append_uint(RawWriter& w, std::uint64_t v) {
  w.room(24);
  w.advance_to(std::to_chars(w.cursor(), w.cursor() + 24, v).ptr);
}

void append_int(RawWriter& w, std::int64_t v) {
  w.room(24);
  w.advance_to(std::to_chars(w.cursor(), w.cursor() + 24, v).ptr);
}

// nlohmann's number format (shortest round trip, "0.0", null for non-finite) is part of
// the pinned line bytes, so doubles keep going through its formatter: the same call its
// serializer makes (dump_float), without a json value and a string per number.
void append_double(RawWriter& w, double v) {
  if (!std::isfinite(v)) {
    w.lit("null");
    return;
  }
  constexpr std::size_t kRoom = 64;
  w.room(kRoom);
  w.advance_to(nlohmann::detail::to_chars(w.cursor(), w.cursor() + kRoom, v));
}

} // namespace

void RecordBuilder::append_headers(RawWriter& w, const HeaderList& list) const {
  w.lit("\"headers\":{");
  thread_local std::string storage; // a credential's marker: its capacity is kept
  std::string lowered_long;
  bool first = true;
  for (std::size_t k = 0; k < list.size(); ++k) {
    const auto& [name, value] = list[k];
    bool seen = false; // an earlier field of the same name already wrote this one
    for (std::size_t e = 0; e < k && !seen; ++e) {
      seen = iequals(list[e].first, name);
    }
    if (seen) {
      continue;
    }
    // Lower-cased on the stack (a heap string for the rare name over 64 bytes).
    char lowered_buf[64];
    std::string_view lowered;
    if (name.size() <= sizeof lowered_buf) {
      for (std::size_t c = 0; c < name.size(); ++c) {
        lowered_buf[c] = ascii_lower(name[c]);
      }
      lowered = std::string_view(lowered_buf, name.size());
    } else {
      lowered_long.assign(name);
      for (char& c : lowered_long) {
        c = ascii_lower(c);
      }
      lowered = lowered_long;
    }
    if (!first) {
      w.put(',');
    }
    first = false;
    append_escaped(w, lowered);
    w.put(':');
    bool repeated = false;
    for (std::size_t e = k + 1; e < list.size() && !repeated; ++e) {
      repeated = iequals(list[e].first, name);
    }
    if (!repeated) {
      append_escaped(w, redactor_.redact_header_view(name, value, storage));
      continue;
    }
    // Repeated fields are combined as RFC 9110 section 5.3 allows, each value redacted
    // on its own, in order.
    std::string combined(redactor_.redact_header_view(name, value, storage));
    for (std::size_t e = k + 1; e < list.size(); ++e) {
      if (iequals(list[e].first, name)) {
        combined += ", ";
        combined += redactor_.redact_header_view(list[e].first, list[e].second, storage);
      }
    }
    append_escaped(w, combined);
  }
  w.lit("},");
}

void RecordBuilder::append_body(RawWriter& w, std::string_view text, const HeaderList& hdrs,
                                bool complete, std::string_view whole_sha256) const {
  thread_local RedactedBody meta;
  thread_local std::string storage;
  const std::string_view excerpt =
      redactor_.redact_body_view(text, content_type(hdrs), body_bytes_, meta, storage);
  w.lit("\"body\":");
  append_escaped(w, excerpt);
  w.lit(",\"body_sha256\":");
  append_escaped(w, whole_sha256.empty() ? std::string_view(meta.sha256) : whole_sha256);
  w.lit(",\"truncated\":");
  if (meta.truncated || !complete) {
    w.lit("true,");
  } else {
    w.lit("false,");
  }
  if (meta.binary) {
    w.lit("\"binary\":true,");
  }
}

std::string RecordBuilder::exchange_members(const Exchange& ex, bool final) const {
  std::string out;
  exchange_members(ex, final, out);
  return out;
}

void RecordBuilder::exchange_members(const Exchange& ex, bool final, std::string& out) const {
  // Written in the member order of the format (docs/audit.md), no JSON tree, through a
  // raw cursor over a per-thread buffer, then appended to `out` in one copy.
  thread_local RawBuffer buffer;
  {
    RawWriter w(buffer);
    write_exchange(w, ex, final);
    out.append(w.view());
  }
  release_if_large(buffer);
}

RecordBuilder::Slot RecordBuilder::exchange_slot(const Exchange& ex, bool final) const {
  thread_local RawBuffer buffer;
  // The previous slot is no longer used: a buffer one large record left oversized goes now.
  release_if_large(buffer);
  RawWriter w(buffer, kSlotHeadroom);
  write_exchange(w, ex, final);
  const std::size_t size = w.view().size();
  w.room(kSlotTailroom);
  return Slot{w.start(), size};
}

void RecordBuilder::write_exchange(RawWriter& w, const Exchange& ex, bool final) const {
  std::string storage;
  if (final) {
    w.lit("\"type\":\"exchange\",\"id\":");
  } else {
    w.lit("\"type\":\"decision\",\"id\":");
  }
  append_escaped(w, ex.id);
  w.lit(",\"run\":");
  append_escaped(w, ex.run);
  w.lit(",\"agent\":");
  append_escaped(w, ex.agent);
  w.lit(",\"runbook\":");
  append_escaped(w, ex.runbook);
  w.lit(",\"runbook_sha256\":");
  append_escaped(w, ex.runbook_sha256);
  w.lit(",\"action\":");
  append_escaped(w, ex.action);
  w.lit(",\"class\":");
  append_escaped(w, ex.cls);
  w.lit(",\"outcome\":");
  append_escaped(w, ex.outcome);
  w.lit(",\"code\":");
  append_escaped(w, ex.code);
  w.lit(",\"reason\":");
  append_escaped(w, redactor_.redact_text_view(ex.reason, storage));
  w.put(',');
  if (ex.approval) {
    w.lit("\"approval\":{\"id\":");
    append_escaped(w, ex.approval->id);
    w.lit(",\"by\":");
    append_escaped(w, redactor_.redact_text_view(ex.approval->by, storage));
    w.lit(",\"wait_ms\":");
    append_int(w, ex.approval->wait_ms);
    w.lit("},");
  }
  w.lit("\"request\":{\"method\":");
  append_escaped(w, ex.request.method);
  w.lit(",\"url\":");
  append_escaped(w, redactor_.redact_url_view(ex.request.url, storage));
  w.put(',');
  append_headers(w, ex.request.headers);
  append_body(w, ex.request.body, ex.request.headers, ex.request.body_complete,
              ex.request.body_sha256);
  w.lit("\"bytes\":");
  append_uint(w, ex.request.body_bytes);
  w.lit("},");
  if (final && ex.response) {
    w.lit("\"response\":{\"status\":");
    append_int(w, ex.response->status);
    w.put(',');
    append_headers(w, ex.response->headers);
    append_body(w, ex.response->body, ex.response->headers, ex.response->body_complete,
                ex.response->body_sha256);
    w.lit("\"bytes\":");
    append_uint(w, ex.response->bytes);
    w.lit("},");
  }
  w.lit("\"timing\":{\"total_ms\":");
  append_double(w, ex.timing.total_ms);
  w.lit(",\"upstream_ms\":");
  append_double(w, ex.timing.upstream_ms);
  w.lit(",\"hold_ms\":");
  append_double(w, ex.timing.hold_ms);
  w.lit("},\"traceparent\":");
  append_escaped(w, redactor_.redact_text_view(ex.traceparent, storage));
  w.lit(",\"client\":");
  append_escaped(w, ex.client);
}

nlohmann::json RecordBuilder::redact_json(const nlohmann::json& value) const {
  if (value.is_string()) {
    return redactor_.redact_text(value.get_ref<const std::string&>());
  }
  if (value.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : value) {
      out.push_back(redact_json(v));
    }
    return out;
  }
  if (value.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : value.items()) {
      if (redactor_.is_sensitive_key(k) && !v.is_null()) {
        out[k] = redaction_marker(
            v.is_string() ? v.get<std::string>()
                          : v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
      } else {
        out[k] = redact_json(v);
      }
    }
    return out;
  }
  return value;
}

std::string RecordBuilder::event_members(std::string_view type,
                                         const nlohmann::json& fields) const {
  nlohmann::ordered_json rec;
  rec["type"] = "event";
  rec["event"] = std::string(type);
  rec["data"] = redact_json(fields.is_null() ? nlohmann::json::object() : fields);
  return members_of(rec);
}

} // namespace runwarden::audit
