#include "audit/redactor.hpp"

#include "audit/body_scan_simd.hpp"
#include "audit/digest.hpp"
#include "policy/ascii.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <re2/re2.h>
#include <stdexcept>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace runwarden::audit {
namespace {

using policy::ascii_lower;

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = ascii_lower(c);
  }
  return out;
}

// Lower-case with separators dropped: "Client-Secret", "client_secret", "clientSecret" agree.
std::string normalize_key(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '_' || c == '-' || c == '.' || c == ' ') {
      continue;
    }
    out += ascii_lower(c);
  }
  return out;
}

constexpr std::array<std::string_view, 5> kCredentialHeaders = {
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"};

constexpr std::array<std::string_view, 24> kExactKeys = {
    "password",   "passwd",      "pwd",           "pass",       "secret",       "token",
    "apikey",     "accesstoken", "refreshtoken",  "idtoken",    "clientsecret", "privatekey",
    "cardnumber", "cardno",      "ccnumber",      "creditcard", "cvv",          "cvc",
    "cvv2",       "ssn",         "authorization", "auth",       "sessionid",    "cookie"};
struct BuiltinPattern {
  std::string_view regex;
  bool value_group; // group 1 is the secret, the rest is context
  bool card;
};

// Each is one alternative of a single combined RE2 (one pass over the text).
constexpr std::array<BuiltinPattern, 13> kBuiltinPatterns = {{
    {R"(-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z))",
     false, false},
    {R"(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)", false, false},
    {R"((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16})", false, false},
    {R"(\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{20,255}))", false, false},
    {R"(\bxox[abposr]-[A-Za-z0-9-]{10,})", false, false},
    {R"(hooks\.slack\.com/services/[A-Za-z0-9/]+)", false, false},
    {R"(\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|\bwhsec_[A-Za-z0-9]{20,})", false, false},
    {R"(\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,})", false, false},
    {R"(\bAIza[0-9A-Za-z_-]{35})", false, false},
    {R"((?i:bearer)\s+([A-Za-z0-9._~+/=-]{8,}))", true, false},
    {R"(Basic\s+([A-Za-z0-9+/]{12,}={0,2}))", true, false},
    {R"((?i)(?:^|[^a-z0-9])(?:password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|access[_-]?token|refresh[_-]?token|auth[_-]?token|id[_-]?token|private[_-]?key|token)\\?["']?\s*[:=]\s*\\?["']?([^\s"'\\&,;}<>]+))",
     true, false},
    {R"(\b(?:\d[ -]?){12,18}\d\b)", false, true},
}};

bool luhn_ok(std::string_view digits) {
  int sum = 0;
  bool twice = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = *it - '0';
    if (twice) {
      d *= 2;
      if (d > 9) {
        d -= 9;
      }
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

// Accepts an incomplete sequence at the very end: bodies may be prefixes.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
#if defined(__SSE2__)
    if (i + 16 <= n &&
        _mm_movemask_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i))) == 0) {
      i += 16; // sixteen ASCII bytes at once
      continue;
    }
#endif
    if (i + 8 <= n) {
      std::uint64_t word = 0;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8; // eight ASCII bytes at once
        continue;
      }
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
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
    } else {
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      if (i + k >= n) {
        return true; // truncated tail
      }
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  c = ascii_lower(c);
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

std::string form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() + 0 && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Index just past the closing quote of the string starting at `i` (s[i] == '"'),
// or s.size() when the text ends first. `escaped` is set when the string holds a '\\'.
std::size_t skip_string(std::string_view s, std::size_t i, bool& escaped) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kHighs = 0x8080808080808080ull;
  ++i;
  // Each round advances at least one byte: bounded by the text length.
  while (i < s.size()) {
    bool found = false; // s[i] is '"' or '\\'
#if defined(__SSE2__)
    // Sixteen bytes at a time to the first '"' or '\\' (SSE2 is part of x86-64).
    while (i + 16 <= s.size()) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(
          _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))));
      if (mask != 0) {
        i += static_cast<std::size_t>(std::countr_zero(mask));
        found = true;
        break;
      }
      i += 16;
    }
#endif
    // Eight bytes at a time to the first '"' or '\\' (SWAR; the lowest flagged byte is exact).
    while (!found && i + 8 <= s.size()) {
      std::uint64_t w = 0;
      std::memcpy(&w, s.data() + i, 8);
      const std::uint64_t q = w ^ (kOnes * '"');
      const std::uint64_t b = w ^ (kOnes * '\\');
      const std::uint64_t mask = ((q - kOnes) & ~q & kHighs) | ((b - kOnes) & ~b & kHighs);
      if (mask != 0) {
        i += static_cast<std::size_t>(std::countr_zero(mask)) / 8;
        break;
      }
      i += 8;
    }
    while (!found && i < s.size() && s[i] != '"' && s[i] != '\\') {
      ++i;
    }
    if (i >= s.size()) {
      break;
    }
    if (s[i] == '"') {
      return i + 1;
    }
    escaped = true;
    i += 2; // the escape and the escaped byte
  }
  return s.size();
}

std::size_t skip_string(std::string_view s, std::size_t i) {
  bool escaped = false;
  return skip_string(s, i, escaped);
}

// Index just past the JSON value starting at `i` (tolerant: stops at the end of the text).
std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) {
    return s.size();
  }
  if (s[i] == '"') {
    return skip_string(s, i);
  }
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    for (; i < s.size(); ++i) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i) - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          return i + 1;
        }
      }
    }
    return s.size();
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_ws(s[i])) {
    ++i;
  }
  return i;
}

std::string decode_json_key(std::string_view raw) {
  if (raw.find('\\') == std::string_view::npos) {
    return std::string(raw);
  }
  std::string out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\' || i + 1 >= raw.size()) {
      out += raw[i];
      continue;
    }
    const char e = raw[++i];
    if (e == 'u' && i + 4 < raw.size()) {
      int cp = 0;
      bool ok = true;
      for (std::size_t k = 1; k <= 4; ++k) {
        const int h = hex_value(raw[i + k]);
        ok = ok && h >= 0;
        cp = cp * 16 + (h < 0 ? 0 : h);
      }
      out += (ok && cp < 0x80) ? static_cast<char>(cp) : '?';
      i += 4;
    } else {
      out += e;
    }
  }
  return out;
}

} // namespace

Redactor::Redactor(const RedactionRules& extra, Scan scan) : scan_(scan) {
  static std::atomic<std::uint64_t> next_id{1};
  id_ = next_id.fetch_add(1);
  struct Builder {
    std::string pattern;
    int next_group = 1;
    Compiled* out;
    void add(std::string_view regex, bool value_group, bool card) {
      const re2::RE2 single{re2::StringPiece(regex.data(), regex.size()), RE2::Quiet};
      if (!single.ok()) {
        throw std::invalid_argument("redaction pattern \"" + std::string(regex) +
                                    "\": " + single.error());
      }
      if (!pattern.empty()) {
        pattern += '|';
      }
      pattern += '(';
      pattern += regex;
      pattern += ')';
      Alternative alt;
      alt.group = next_group;
      alt.value_group = (value_group && single.NumberOfCapturingGroups() >= 1) ? next_group + 1 : 0;
      alt.card = card;
      out->alternatives.push_back(alt);
      next_group += 1 + single.NumberOfCapturingGroups();
    }
    void compile() {
      RE2::Options options;
      options.set_encoding(RE2::Options::EncodingLatin1);
      options.set_max_mem(64 << 20);
      options.set_log_errors(false);
      out->regex = std::make_unique<re2::RE2>(pattern, options);
      if (!out->regex->ok()) {
        throw std::invalid_argument("redaction patterns: " + out->regex->error());
      }
      out->submatches = next_group;
    }
  };
  Builder all{{}, 1, &combined_};
  Builder extras{{}, 1, &extras_};
  for (const auto& p : kBuiltinPatterns) {
    all.add(p.regex, p.value_group, p.card);
  }
  for (const auto& p : extra.patterns) {
    all.add(p, true, false);
    extras.add(p, true, false);
  }
  all.compile();
  if (!extra.patterns.empty()) {
    extras.compile();
  }
  for (const auto& h : extra.headers) {
    extra_headers_.push_back(to_lower(h));
  }
  for (const auto& k : extra.json_keys) {
    extra_keys_.push_back(normalize_key(k));
  }
}

Redactor::~Redactor() = default;

namespace {

// Per-thread direct-mapped memo of name verdicts (JSON keys, header names), tagged with
// the redactor's unique id (ids are never reused, so a verdict can not leak between
// redactors with different configured names) and the whole raw name: the verdict is a
// function of the raw bytes, so a hit is exact.
constexpr std::size_t kMemoMaxSize = 16;

struct MemoEntry {
  std::uint64_t owner = 0; // 0: empty
  std::uint64_t w0 = 0;
  std::uint64_t w1 = 0;
  std::uint32_t size = 0;
  bool sensitive = false;
};
using VerdictMemo = std::array<MemoEntry, 256>;

// The entry holding `name`'s verdict for `owner`, or null. Inlined into the JSON walk, so
// that a hit (nearly every key of a body) costs no call.
[[gnu::always_inline]] inline const MemoEntry*
memo_find(const VerdictMemo& memo, std::uint64_t owner, std::string_view name,
          std::size_t& first_slot, std::size_t& second_slot, std::uint64_t& w0, std::uint64_t& w1) {
  // The name as two words with its size: overlapping loads of the first and last bytes
  // cover every byte, so (size, w0, w1) identifies a name of up to 16 bytes exactly.
  const char* k = name.data();
  const std::size_t size = name.size();
  const auto load64 = [](const char* at) {
    std::uint64_t v = 0;
    std::memcpy(&v, at, 8);
    return v;
  };
  const auto load32 = [](const char* at) {
    std::uint32_t v = 0;
    std::memcpy(&v, at, 4);
    return std::uint64_t{v};
  };
  w0 = 0;
  w1 = 0;
  if (size >= 8) {
    w0 = load64(k);
    w1 = load64(k + size - 8);
  } else if (size >= 4) {
    w0 = load32(k) | (load32(k + size - 4) << 32);
  } else if (size > 0) {
    w0 = static_cast<unsigned char>(k[0]) |
         (std::uint64_t{static_cast<unsigned char>(k[size / 2])} << 8) |
         (std::uint64_t{static_cast<unsigned char>(k[size - 1])} << 16);
  }
  // One multiply: the slots only spread the names, the entry's words make a hit exact.
  const std::uint64_t h = (w0 ^ std::rotl(w1, 29) ^ size) * 0x9E3779B97F4A7C15ull;
  // Two candidate slots per name, so that two hot names rarely evict each other.
  first_slot = static_cast<std::size_t>(h >> 56);
  second_slot = static_cast<std::size_t>((h >> 40) & 255u);
  // One test for the four fields (a branch per field was a chain of four per key).
  const auto holds = [&](const MemoEntry& e) {
    return ((e.owner ^ owner) | (e.w0 ^ w0) | (e.w1 ^ w1) | (e.size ^ size)) == 0;
  };
  if (holds(memo[first_slot])) {
    return &memo[first_slot];
  }
  if (holds(memo[second_slot])) {
    return &memo[second_slot];
  }
  return nullptr;
}

template <typename Compute>
bool memoized_verdict(VerdictMemo& memo, std::uint64_t owner, std::string_view name,
                      const Compute& compute) {
  std::size_t first_slot = 0;
  std::size_t second_slot = 0;
  std::uint64_t w0 = 0;
  std::uint64_t w1 = 0;
  if (const MemoEntry* hit = memo_find(memo, owner, name, first_slot, second_slot, w0, w1)) {
    return hit->sensitive;
  }
  MemoEntry& first = memo[first_slot];
  MemoEntry& second = memo[second_slot];
  MemoEntry& e = first.owner != owner ? first : second.owner != owner ? second : first;
  const bool sensitive = compute(name);
  e.owner = owner;
  e.size = static_cast<std::uint32_t>(name.size());
  e.w0 = w0;
  e.w1 = w1;
  e.sensitive = sensitive;
  return sensitive;
}

// The key memo of this thread (the header memo lives in is_sensitive_header).
thread_local VerdictMemo key_memo;

} // namespace

bool Redactor::is_sensitive_header(std::string_view name) const {
  // A record repeats the same few header names (Host, Content-Type, User-Agent, ...), and
  // so does every record after it: a hit costs no lower-casing and no name scan.
  if (name.size() <= kMemoMaxSize) {
    thread_local VerdictMemo memo;
    return memoized_verdict(memo, id_, name,
                            [this](std::string_view n) { return sensitive_header_uncached(n); });
  }
  return sensitive_header_uncached(name);
}

bool Redactor::sensitive_header_uncached(std::string_view name) const {
  char buf[64];
  std::string long_name;
  std::string_view n;
  if (name.size() <= sizeof buf) {
    for (std::size_t k = 0; k < name.size(); ++k) {
      buf[k] = ascii_lower(name[k]);
    }
    n = std::string_view(buf, name.size());
  } else {
    long_name = to_lower(name);
    n = long_name;
  }
  if (std::find(kCredentialHeaders.begin(), kCredentialHeaders.end(), n) !=
          kCredentialHeaders.end() ||
      std::find(extra_headers_.begin(), extra_headers_.end(), n) != extra_headers_.end()) {
    return true;
  }
  // A name containing token, secret, session, key, auth, password, passwd, cookie or
  // credential: one pass over the name, keyed on the first letter of each word.
  for (std::size_t i = 0; i < n.size(); ++i) {
    const std::string_view rest = n.substr(i);
    switch (n[i]) {
    case 't':
      if (rest.starts_with("token")) {
        return true;
      }
      break;
    case 's':
      if (rest.starts_with("secret") || rest.starts_with("session")) {
        return true;
      }
      break;
    case 'k':
      if (rest.starts_with("key")) {
        return true;
      }
      break;
    case 'a':
      if (rest.starts_with("auth")) {
        return true;
      }
      break;
    case 'p':
      if (rest.starts_with("password") || rest.starts_with("passwd")) {
        return true;
      }
      break;
    case 'c':
      if (rest.starts_with("cookie") || rest.starts_with("credential")) {
        return true;
      }
      break;
    default:
      break;
    }
  }
  return false;
}

namespace {

// Inline byte compare: keys are short, and a libc memcmp call per candidate was the
// largest single cost of the key scan.
bool same_bytes(const char* a, const char* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) {
      return false;
    }
  }
  return true;
}

bool equals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && same_bytes(a.data(), b.data(), a.size());
}

} // namespace

bool Redactor::is_sensitive_key(std::string_view name) const {
  // JSON bodies repeat the same few keys: a hit costs no normalization at all.
  if (name.size() <= kMemoMaxSize) {
    return memoized_verdict(key_memo, id_, name, [this](std::string_view key) {
      char buf[kMemoMaxSize];
      std::size_t n = 0;
      for (char c : key) {
        if (c != '_' && c != '-' && c != '.' && c != ' ') {
          buf[n++] = ascii_lower(c);
        }
      }
      return sensitive_normalized(std::string_view(buf, n));
    });
  }
  return sensitive_normalized(normalize_key(name));
}

bool Redactor::sensitive_normalized(std::string_view k) const {
  if (k.empty()) {
    return false;
  }
  // The exact keys grouped by length: a key is compared only with those of its size.
  static const auto by_size = [] {
    std::array<std::vector<std::string_view>, 16> t;
    for (std::string_view e : kExactKeys) {
      t[e.size()].push_back(e);
    }
    return t;
  }();
  if (k.size() < by_size.size()) {
    for (std::string_view e : by_size[k.size()]) {
      if (e[0] == k[0] && same_bytes(e.data(), k.data(), k.size())) {
        return true;
      }
    }
  }
  for (const std::string& e : extra_keys_) {
    if (equals(e, k)) {
      return true;
    }
  }
  if (k.size() > 5 && equals(k.substr(k.size() - 5), "token")) {
    return true;
  }
  // One pass over the key instead of a substring search per word.
  auto at = [&k](std::size_t i, std::string_view w) {
    return k.size() - i >= w.size() && same_bytes(k.data() + i, w.data(), w.size());
  };
  for (std::size_t i = 0; i < k.size(); ++i) {
    switch (k[i]) {
    case 'p':
      if (at(i, "passw") || at(i, "privatekey")) {
        return true;
      }
      break;
    case 's':
      if (at(i, "secret") || at(i, "sessiontoken")) {
        return true;
      }
      break;
    case 'a':
      if (at(i, "apikey") || at(i, "accesstoken") || at(i, "authtoken")) {
        return true;
      }
      break;
    case 'r':
      if (at(i, "refreshtoken")) {
        return true;
      }
      break;
    case 'c':
      if (at(i, "credential") || at(i, "cardnumber")) {
        return true;
      }
      break;
    default:
      break;
    }
  }
  return false;
}

// Every built-in alternative (kBuiltinPatterns) contains a fixed literal at the start of
// its match or, for cards, 13 digits each followed by at most one space or dash:
//   PEM "-----BEGIN", JWT "eyJ", AWS key prefixes, "gh?_"/"github_pat_", "xox",
//   "hooks.slack.com/services/", "sk_"/"rk_"/"whsec_", "sk-", "AIza", (?i)"bearer",
//   "Basic", and (?i) "passw"/"pwd"/"secret"/"api[_-]?key"/"private"/"token" for the
//   key=value pattern. Any match therefore starts one of these triggers in the text
//   (audit/body_scan_simd.cpp holds the trigger checks and the byte-pair classifiers).
bool Redactor::may_match_builtin(std::string_view t) {
  return simd::may_match_builtin(t, simd::best_level());
}

void Redactor::pattern_spans(std::string_view text, std::vector<Span>& spans,
                             const simd::BodyScan* scan) const {
  // With no built-in candidate, no built-in alternative matches at any position, so the
  // combined regex finds exactly what the configured alternatives alone find.
  const bool candidate = scan != nullptr ? scan->builtin : may_match_builtin(text);
  if (scan_ == Scan::exhaustive || candidate) {
    run(combined_, text, spans);
  } else if (extras_.regex != nullptr) {
    run(extras_, text, spans);
  }
}

void Redactor::run(const Compiled& compiled, std::string_view text, std::vector<Span>& spans) {
  const re2::StringPiece input(text.data(), text.size());
  std::vector<re2::StringPiece> m(static_cast<std::size_t>(compiled.submatches));
  std::size_t pos = 0;
  // Each iteration consumes at least one byte: bounded by the text length.
  while (pos <= text.size() && compiled.regex->Match(input, pos, text.size(), RE2::UNANCHORED,
                                                     m.data(), compiled.submatches)) {
    const std::size_t match_end = static_cast<std::size_t>(m[0].data() - text.data()) + m[0].size();
    for (const Alternative& alt : compiled.alternatives) {
      const auto& whole = m[static_cast<std::size_t>(alt.group)];
      if (whole.data() == nullptr) {
        continue;
      }
      const auto& value =
          alt.value_group != 0 ? m[static_cast<std::size_t>(alt.value_group)] : whole;
      if (value.data() == nullptr || value.empty()) {
        break;
      }
      const auto begin = static_cast<std::size_t>(value.data() - text.data());
      Span span{begin, begin + value.size()};
      if (alt.card) {
        std::string digits;
        for (char c : std::string_view(value.data(), value.size())) {
          if (c >= '0' && c <= '9') {
            digits += c;
          }
        }
        if (digits.size() < 13 || digits.size() > 19 || !luhn_ok(digits)) {
          break;
        }
        span.keep_last4 = true;
      }
      spans.push_back(span);
      break;
    }
    pos = match_end > pos ? match_end : pos + 1;
  }
}

void Redactor::json_spans(std::string_view s, std::vector<Span>& spans,
                          const simd::BodyScan* scan) const {
  // With the body's quote bitmap a string is skipped in one jump; strings holding a
  // backslash (or no bitmap) take the byte loop, which also learns about escapes.
  const auto string_end = [&](std::size_t at, bool& escaped) {
    if (scan != nullptr) {
      const std::size_t end = simd::indexed_string_end(*scan, s.size(), at);
      if (end != static_cast<std::size_t>(-1)) {
        return end;
      }
    }
    return skip_string(s, at, escaped);
  };
  // Per thread and reused (a local one allocated on the first '{' of every body).
  thread_local std::vector<char> stack;
  stack.clear();
  bool expect_key = false;
  std::size_t i = 0;
  // Every branch advances i or returns: bounded by the text length.
  while (i < s.size()) {
    if (is_ws(s[i])) {
      ++i;
      continue;
    }
    const char c = s[i];
    if (!stack.empty() && stack.back() == '{' && expect_key) {
      if (c == '}') {
        stack.pop_back();
        expect_key = false;
        ++i;
        continue;
      }
      if (c != '"') {
        return; // not JSON after all: the text patterns still apply
      }
      bool escaped = false;
      const std::size_t key_end = string_end(i, escaped);
      if (key_end >= s.size()) {
        return;
      }
      const std::string_view raw_key = s.substr(i + 1, key_end - i - 2);
      std::string decoded;
      if (escaped) {
        decoded = decode_json_key(raw_key);
      }
      const std::string_view key = decoded.empty() ? raw_key : std::string_view(decoded);
      i = key_end;
      while (i < s.size() && is_ws(s[i])) {
        ++i;
      }
      if (i >= s.size() || s[i] != ':') {
        return;
      }
      ++i;
      while (i < s.size() && is_ws(s[i])) {
        ++i;
      }
      expect_key = false;
      if (i < s.size() && is_sensitive_key(key)) {
        const std::size_t end = skip_value(s, i);
        if (s[i] == '"') {
          const std::size_t content_end =
              (end > i + 1 && end <= s.size() && s[end - 1] == '"' && end != i + 1) ? end - 1 : end;
          if (content_end > i + 1) {
            spans.push_back(Span{i + 1, content_end});
          }
        } else if (s.compare(i, 4, "null") != 0) {
          spans.push_back(Span{i, end, true});
        }
        i = end;
      }
      continue;
    }
    switch (c) {
    case ',':
      expect_key = !stack.empty() && stack.back() == '{';
      ++i;
      break;
    case '}':
    case ']':
      if (!stack.empty()) {
        stack.pop_back();
      }
      ++i;
      break;
    case '{':
      stack.push_back('{');
      expect_key = true;
      ++i;
      break;
    case '[':
      stack.push_back('[');
      ++i;
      break;
    case '"': {
      bool escaped = false;
      i = string_end(i, escaped);
      break;
    }
    default: {
      const std::size_t end = skip_value(s, i);
      if (end == i) {
        return;
      }
      i = end;
    }
    }
  }
}

void Redactor::json_spans_indexed(std::string_view s, std::vector<Span>& spans,
                                  const simd::BodyScan& scan) const {
  const std::size_t n = s.size();
  const std::size_t spans_at_start = spans.size();
  // The bitmap's words, count and backslash flag in locals: through `scan` they were
  // reloaded for every string (the compiler can not tell that the span pushes leave them).
  const std::uint64_t* const quotes = scan.quotes.data();
  const std::size_t words = scan.quotes.size();
  const bool any_backslash = scan.any_backslash;
  // Without backslashes a string's end is the next quote bit after its opening quote. The
  // walk reads the quote bits in order through a cursor (word `qword`, its bits not yet
  // passed in `qbits`): a string's opening quote is the cursor's lowest bit and its
  // closing quote the next, so each end takes a bit-clear and a count from the cursor
  // instead of a chain computed from the position (load, shift, mask, count per string,
  // which made the walk wait on every string). Where the cursor's lowest bit is not the
  // opening quote (a quote inside a scalar), it is re-seated from the position.
  std::size_t qword = 0;
  std::uint64_t qbits = words > 0 ? quotes[0] : 0;
  const auto next_quote = [&]() -> std::size_t { // the cursor's lowest quote, or n
    while (qbits == 0) {                         // bounded by the number of bitmap words
      if (++qword >= words) {
        qword = words;
        return n;
      }
      qbits = quotes[qword];
    }
    return qword * 64 + static_cast<std::size_t>(std::countr_zero(qbits));
  };
  const auto string_end = [&](std::size_t at, bool& escaped) {
    if (!any_backslash) {
      if (next_quote() != at) {
        const std::size_t from = at + 1;
        qword = from / 64;
        if (qword >= words) {
          qword = words;
          qbits = 0;
          return n;
        }
        qbits = quotes[qword] & (~std::uint64_t{0} << (from % 64));
      } else {
        qbits &= qbits - 1; // the opening quote
      }
      const std::size_t close = next_quote();
      if (close >= n) {
        return n;
      }
      qbits &= qbits - 1;
      return close + 1;
    }
    const std::size_t end = simd::indexed_string_end(scan, n, at);
    return end != static_cast<std::size_t>(-1) ? end : skip_string(s, at, escaped);
  };
  // Bit d of `objects`: level d (0-based) is an object; depth counts open levels.
  constexpr std::size_t kMaxDepth = 64;
  std::uint64_t objects = 0;
  std::size_t depth = 0;
  const auto top_is_object = [&] { return depth > 0 && ((objects >> (depth - 1)) & 1u) != 0; };
  const auto push = [&](bool object) {
    const std::uint64_t bit = std::uint64_t{1} << depth;
    objects = object ? (objects | bit) : (objects & ~bit);
    ++depth;
  };
  // Only set while the top level is an object (set on '{' and on ',' in an object, cleared
  // on its '}' and by every key), so it alone says "a key or '}' comes next".
  bool expect_key = false;
  std::size_t i = 0;
  // Every branch advances i or returns: bounded by the text length.
  while (i < n) {
    if (depth == kMaxDepth) {
      // Deeper than the bit stack: the reference walk redoes the body from the start.
      spans.resize(spans_at_start);
      json_spans(s, spans, &scan);
      return;
    }
    const char c = s[i];
    if (is_ws(c)) {
      ++i;
      continue;
    }
    if (expect_key) {
      if (c == '}') {
        --depth;
        expect_key = false;
        ++i;
        continue;
      }
      if (c != '"') {
        return; // not JSON after all: the text patterns still apply
      }
      bool escaped = false;
      const std::size_t key_end = string_end(i, escaped);
      if (key_end >= n) {
        return;
      }
      // key_end < n and key_end >= i + 2 (the string has both quotes): no bounds check.
      const std::string_view raw_key(s.data() + i + 1, key_end - i - 2);
      i = key_end;
      while (i < n && is_ws(s[i])) {
        ++i;
      }
      if (i >= n || s[i] != ':') {
        return;
      }
      ++i;
      while (i < n && is_ws(s[i])) {
        ++i;
      }
      expect_key = false;
      if (i >= n) {
        continue;
      }
      // A memo hit is read here; a miss (and an escaped key) takes the call.
      const MemoEntry* hit = nullptr;
      if (!escaped && raw_key.size() <= kMemoMaxSize) {
        std::size_t first_slot = 0;
        std::size_t second_slot = 0;
        std::uint64_t w0 = 0;
        std::uint64_t w1 = 0;
        hit = memo_find(key_memo, id_, raw_key, first_slot, second_slot, w0, w1);
      }
      const bool sensitive = hit != nullptr ? hit->sensitive
                             : escaped      ? is_sensitive_key(decode_json_key(raw_key))
                                            : is_sensitive_key(raw_key);
      if (sensitive) {
        const std::size_t end = skip_value(s, i);
        if (s[i] == '"') {
          const std::size_t content_end =
              (end > i + 1 && end <= n && s[end - 1] == '"' && end != i + 1) ? end - 1 : end;
          if (content_end > i + 1) {
            spans.push_back(Span{i + 1, content_end});
          }
        } else if (s.compare(i, 4, "null") != 0) {
          spans.push_back(Span{i, end, true});
        }
        i = end;
        continue;
      }
      // The value's first token, as the switch below would take it on the next round.
      const char v = s[i];
      if (v == '"') {
        bool value_escaped = false;
        i = string_end(i, value_escaped);
      } else if (v == '{') {
        push(true);
        expect_key = true;
        ++i;
        continue;
      } else if (v == '[') {
        push(false);
        ++i;
        continue;
      } else if (v != ',' && v != '}' && v != ']' && !is_ws(v)) {
        // A scalar (number, true, false, null or stray bytes), as skip_value ends it.
        while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_ws(s[i])) {
          ++i;
        }
      } else {
        continue;
      }
      // The member's end, as the next round would take it: still in the object whose key
      // was just read (depth unchanged), so ',' expects the next key.
      if (i < n) {
        if (s[i] == ',') {
          expect_key = true;
          ++i;
        } else if (s[i] == '}') {
          --depth;
          ++i;
        }
      }
      continue;
    }
    switch (c) {
    case ',':
      expect_key = top_is_object();
      ++i;
      break;
    case '}':
    case ']':
      if (depth > 0) {
        --depth;
      }
      ++i;
      break;
    case '{':
      push(true);
      expect_key = true;
      ++i;
      break;
    case '[':
      push(false);
      ++i;
      break;
    case '"': {
      bool escaped = false;
      i = string_end(i, escaped);
      break;
    }
    default: {
      const std::size_t end = skip_value(s, i);
      if (end == i) {
        return;
      }
      i = end;
    }
    }
  }
}

bool Redactor::json_may_have_sensitive_key(std::string_view s, const simd::BodyScan& scan) const {
  // Each quote paired with the one before it: a pair whose second quote is followed (after
  // white space) by a colon is a candidate key. The scan marked the quotes followed by ':'
  // or a byte <= ' ' (key_ends), so only those are visited, and the quote before each is
  // found in the bitmap. Unlike the walk, the candidates do not depend on one another, and a
  // body repeats few keys, so nearly every candidate is a memo hit.
  const std::size_t n = s.size();
  const std::uint64_t* const quotes = scan.quotes.data();
  const std::uint64_t* const key_ends = scan.key_ends.data();
  const std::size_t words = scan.key_ends.size();
  for (std::size_t w = 0; w < words; ++w) { // bounded by the bitmap's words and bits
    std::uint64_t bits = key_ends[w];
    while (bits != 0) {
      const auto bit = static_cast<unsigned>(std::countr_zero(bits));
      bits &= bits - 1;
      const std::size_t q = w * 64 + bit;
      std::size_t j = q + 1;
      if (s[j] != ':') {
        while (j < n && is_ws(s[j])) {
          ++j;
        }
        if (j >= n || s[j] != ':') {
          continue;
        }
      }
      // The quote before q: in q's word below it, else in the nearest earlier word.
      std::size_t pw = w;
      std::uint64_t before = quotes[w] & ((std::uint64_t{1} << bit) - 1);
      while (before == 0 && pw > 0) { // bounded by w
        before = quotes[--pw];
      }
      if (before == 0) {
        continue; // q is the first quote
      }
      const std::size_t open = pw * 64 + 63 - static_cast<std::size_t>(std::countl_zero(before));
      const std::string_view key(s.data() + open + 1, q - open - 1);
      const MemoEntry* hit = nullptr;
      if (key.size() <= kMemoMaxSize) {
        std::size_t first_slot = 0;
        std::size_t second_slot = 0;
        std::uint64_t w0 = 0;
        std::uint64_t w1 = 0;
        hit = memo_find(key_memo, id_, key, first_slot, second_slot, w0, w1);
      }
      if (hit != nullptr ? hit->sensitive : is_sensitive_key(key)) {
        return true;
      }
    }
  }
  return false;
}

void Redactor::form_spans(std::string_view text, std::size_t offset,
                          std::vector<Span>& spans) const {
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('&', start);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view part = text.substr(start, end - start);
    const std::size_t eq = part.find('=');
    if (eq != std::string_view::npos && eq + 1 < part.size() &&
        is_sensitive_key(form_decode(part.substr(0, eq)))) {
      spans.push_back(Span{offset + start + eq + 1, offset + end});
    }
    start = end + 1;
  }
}

std::string Redactor::apply(std::string_view text, std::vector<Span>& spans) {
  if (spans.empty()) {
    return std::string(text);
  }
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const Span& s : spans) {
    if (!merged.empty() && s.begin < merged.back().end) {
      Span& last = merged.back();
      last.end = std::max(last.end, s.end);
      last.quote = last.quote || s.quote;
      last.keep_last4 = false;
    } else {
      merged.push_back(s);
    }
  }
  std::string out;
  out.reserve(text.size() + 24 * merged.size());
  std::size_t pos = 0;
  for (const Span& s : merged) {
    out.append(text.substr(pos, s.begin - pos));
    const std::string_view value = text.substr(s.begin, s.end - s.begin);
    if (s.quote) {
      out += '"';
    }
    out += redaction_marker(value);
    if (s.keep_last4) {
      std::string last4;
      for (auto it = value.rbegin(); it != value.rend() && last4.size() < 4; ++it) {
        if (*it >= '0' && *it <= '9') {
          last4.insert(last4.begin(), *it);
        }
      }
      out += last4;
    }
    if (s.quote) {
      out += '"';
    }
    pos = s.end;
  }
  out.append(text.substr(pos));
  return out;
}

std::string Redactor::redact_text(std::string_view text) const {
  std::vector<Span> spans;
  pattern_spans(text, spans);
  return apply(text, spans);
}

std::string_view Redactor::redact_text_view(std::string_view text, std::string& storage) const {
  thread_local std::vector<Span> spans;
  spans.clear();
  pattern_spans(text, spans);
  if (spans.empty()) {
    return text;
  }
  storage = apply(text, spans);
  return storage;
}

std::string Redactor::redact_header(std::string_view name, std::string_view value) const {
  std::string storage;
  const std::string_view out = redact_header_view(name, value, storage);
  return out.data() == storage.data() ? std::move(storage) : std::string(out);
}

std::string_view Redactor::redact_header_view(std::string_view name, std::string_view value,
                                              std::string& storage) const {
  if (is_sensitive_header(name)) {
    storage.clear();
    if (!value.empty()) {
      // redaction_marker(value) written into the caller's reused storage (no allocation).
      static constexpr char kDigits[] = "0123456789abcdef";
      const Sha256 digest = sha256(value);
      storage.append("[REDACTED:", 10);
      for (std::size_t k = 0; k < 4; ++k) {
        storage += kDigits[digest[k] >> 4];
        storage += kDigits[digest[k] & 0x0f];
      }
      storage += ']';
    }
    return storage;
  }
  return redact_text_view(value, storage);
}

std::string Redactor::redact_url(std::string_view url) const {
  std::string storage;
  const std::string_view out = redact_url_view(url, storage);
  return out.data() == storage.data() ? std::move(storage) : std::string(out);
}

std::string_view Redactor::redact_url_view(std::string_view url, std::string& storage) const {
  thread_local std::vector<Span> spans;
  spans.clear();
  std::size_t authority_end = 0;
  const std::size_t scheme = url.find("://");
  if (scheme != std::string_view::npos) {
    const std::size_t authority = scheme + 3;
    // One pass (find_first_of runs a memchr over the set for every byte).
    authority_end = authority;
    while (authority_end < url.size() && url[authority_end] != '/' && url[authority_end] != '?' &&
           url[authority_end] != '#') {
      ++authority_end;
    }
    const std::size_t at = url.substr(authority, authority_end - authority).rfind('@');
    if (at != std::string_view::npos && at > 0) {
      spans.push_back(Span{authority, authority + at});
    }
  }
  const std::size_t q = url.find('?', authority_end);
  if (q != std::string_view::npos) {
    std::size_t q_end = url.find('#', q);
    if (q_end == std::string_view::npos) {
      q_end = url.size();
    }
    form_spans(url.substr(q + 1, q_end - q - 1), q + 1, spans);
  }
  pattern_spans(url, spans);
  if (spans.empty()) {
    return url;
  }
  storage = apply(url, spans);
  return storage;
}

RedactedBody Redactor::redact_body(std::string_view body, std::string_view content_type,
                                   std::size_t max_bytes) const {
  RedactedBody out;
  std::string storage;
  const std::string_view text = redact_body_view(body, content_type, max_bytes, out, storage);
  if (!text.empty() && text.data() == storage.data()) {
    storage.resize(text.size());
    out.text = std::move(storage);
  } else {
    out.text = std::string(text);
  }
  return out;
}

std::string_view Redactor::redact_body_view(std::string_view body, std::string_view content_type,
                                            std::size_t max_bytes, RedactedBody& out,
                                            std::string& storage) const {
  out.text.clear();
  out.binary = false;
  out.truncated = false;
  // SHA-256 of the empty string: the common body-less request needs no digest call.
  static constexpr std::string_view kEmptySha256 =
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  if (body.empty()) {
    out.sha256 = kEmptySha256;
  } else {
    sha256_hex(body, out.sha256); // into the reused string: no allocation per body
  }
  char ct_buf[64];
  std::string ct_long;
  std::string_view ct = content_type.substr(0, content_type.find(';'));
  if (ct.size() <= sizeof ct_buf) {
    for (std::size_t k = 0; k < ct.size(); ++k) {
      ct_buf[k] = ascii_lower(ct[k]);
    }
    ct = std::string_view(ct_buf, ct.size());
  } else {
    ct_long = to_lower(ct);
    ct = ct_long;
  }
  while (!ct.empty() && is_ws(ct.back())) {
    ct.remove_suffix(1);
  }
  const bool json = ct.find("json") != std::string_view::npos;
  const bool form = ct == "application/x-www-form-urlencoded";
  const bool texty =
      ct.empty() || ct.substr(0, 5) == "text/" || json || form ||
      ct.find("xml") != std::string_view::npos || ct.find("javascript") != std::string_view::npos ||
      ct.find("graphql") != std::string_view::npos || ct.find("yaml") != std::string_view::npos;
  if (!texty) {
    out.binary = !body.empty();
    return {};
  }
  // One pass for the quote bitmap, the ASCII check and the pre-filter; only a body with
  // bytes >= 0x80 needs the UTF-8 decoder.
  // The exhaustive (reference) mode keeps the byte-at-a-time steps the scan replaces.
  const bool reference = scan_ == Scan::exhaustive;
  thread_local simd::BodyScan scan;
  if (!reference) {
    simd::scan_body(body, simd::best_level(), scan);
  }
  if ((reference || !scan.ascii) && !valid_utf8(body)) {
    out.binary = !body.empty();
    return {};
  }
  thread_local std::vector<Span> spans;
  spans.clear();
  std::size_t first = 0;
  while (first < body.size() && is_ws(body[first])) {
    ++first;
  }
  if (json || (first < body.size() && (body[first] == '{' || body[first] == '['))) {
    if (reference) {
      json_spans(body, spans);
    } else if (scan.any_backslash || json_may_have_sensitive_key(body, scan)) {
      json_spans_indexed(body, spans, scan);
    }
  }
  if (form) {
    form_spans(body, 0, spans);
  }
  pattern_spans(body, spans, reference ? nullptr : &scan);
  std::string_view text = body;
  if (!spans.empty()) {
    storage = apply(body, spans);
    text = storage;
  }
  if (text.size() > max_bytes) {
    std::size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    static constexpr std::string_view kMarker = "[REDACTED:";
    static constexpr std::size_t kMarkerSize = kMarker.size() + 8 + 1;
    const std::size_t from = cut > kMarkerSize ? cut - kMarkerSize : 0;
    for (std::size_t m = text.find(kMarker, from); m != std::string_view::npos && m < cut;
         m = text.find(kMarker, m + 1)) {
      if (m + kMarkerSize > cut) {
        cut = m; // the marker straddles the cut: drop it whole
        break;
      }
    }
    text = text.substr(0, cut);
    out.truncated = true;
  }
  return text;
}

} // namespace runwarden::audit
