#pragma once
// Redaction before anything touches disk (DESIGN §6). Usable on its own: the approvals
// module shows operators redacted packets with it. Immutable after construction and
// therefore safe to share between threads.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace re2 {
class RE2;
}

namespace runwarden::audit {
namespace simd {
struct BodyScan;
}

/// Additions to the built-in rules (DESIGN §2 `redaction:`).
struct RedactionRules {
  std::vector<std::string> headers;   // header names, case-insensitive
  std::vector<std::string> json_keys; // also applied to query and form field names
  std::vector<std::string> patterns;  // RE2; group 1 is redacted when present, else the match
};

/// A body as it may be kept: redacted text cut to the excerpt limit, or only its digest.
struct RedactedBody {
  std::string text;       // redacted excerpt ("" for binary bodies)
  std::string sha256;     // hex SHA-256 of the original inspected body
  bool binary = false;    // not text: only length and digest are kept
  bool truncated = false; // the excerpt is shorter than the redacted body
};

class Redactor {
public:
  /// How free text reaches the patterns. `prefiltered` (the default) first runs a one-pass
  /// byte classifier for the fixed prefixes and digit runs every built-in pattern needs and
  /// skips the built-in RE2 when none occurs, and bodies get one scan (bitmaps of quotes for
  /// the JSON key scan, an ASCII check before UTF-8 decoding); `exhaustive` runs the
  /// combined RE2 on every text and the byte-at-a-time body steps, and is the reference the
  /// tests hold the fast path to.
  enum class Scan : std::uint8_t { prefiltered, exhaustive };

  /// Throws std::invalid_argument (start-up only) when an added pattern does not compile.
  explicit Redactor(const RedactionRules& extra = {}, Scan scan = Scan::prefiltered);
  ~Redactor();
  Redactor(const Redactor&) = delete;
  Redactor& operator=(const Redactor&) = delete;

  /// Secret patterns anywhere in free text (tokens, keys, JWTs, PEM blocks, cards...).
  std::string redact_text(std::string_view text) const;
  /// Credential headers lose their whole value; other values get the text patterns.
  std::string redact_header(std::string_view name, std::string_view value) const;
  /// Userinfo, sensitive query parameters, then text patterns.
  std::string redact_url(std::string_view url) const;
  /// JSON (sensitive keys at any depth, tolerant of a truncated prefix), form bodies
  /// (sensitive fields) and text, by content type and shape; binary bodies keep only
  /// their digest. The excerpt is cut at `max_bytes` after redaction of the whole body,
  /// never inside a marker or a UTF-8 sequence.
  RedactedBody redact_body(std::string_view body, std::string_view content_type,
                           std::size_t max_bytes) const;

  /// The record path's forms of the calls above: the result is a view of the input when
  /// nothing was redacted (or cut), else of `storage`, so the common case copies nothing.
  /// For the body, `meta` receives sha256/binary/truncated and its `text` stays empty.
  std::string_view redact_text_view(std::string_view text, std::string& storage) const;
  std::string_view redact_header_view(std::string_view name, std::string_view value,
                                      std::string& storage) const;
  std::string_view redact_url_view(std::string_view url, std::string& storage) const;
  std::string_view redact_body_view(std::string_view body, std::string_view content_type,
                                    std::size_t max_bytes, RedactedBody& meta,
                                    std::string& storage) const;

  /// True for a header whose whole value is a credential.
  bool is_sensitive_header(std::string_view name) const;
  /// True for a JSON key / query / form field name whose value is a secret.
  bool is_sensitive_key(std::string_view name) const;
  /// False only when no built-in pattern can match anywhere in `text` (the pre-filter).
  static bool may_match_builtin(std::string_view text);

private:
  struct Span {
    std::size_t begin;
    std::size_t end;
    bool quote = false;      // replacement must be a JSON string (non-string JSON value)
    bool keep_last4 = false; // card number: keep the last four digits
  };
  /// `scan`, when given, is the body's one-pass scan (its pre-filter verdict and bitmaps).
  void pattern_spans(std::string_view text, std::vector<Span>& spans,
                     const simd::BodyScan* scan = nullptr) const;
  void json_spans(std::string_view text, std::vector<Span>& spans,
                  const simd::BodyScan* scan = nullptr) const;
  /// The same walk for the prefiltered path: strings end from the scan's quote bitmap, the
  /// nesting is a bit stack in a register (the reference walk above, with a byte stack,
  /// takes over past 64 levels), and a non-sensitive member's string or object value is
  /// entered directly. Tests hold it to json_spans through Scan::exhaustive.
  void json_spans_indexed(std::string_view text, std::vector<Span>& spans,
                          const simd::BodyScan& scan) const;
  /// False only when the walk above can find no sensitive key in `text`, a body without
  /// backslashes: every key it reads is the text between two consecutive quotes, the
  /// second followed by a colon (after white space), so checking every such pair is a
  /// superset of its keys that needs no walk.
  bool json_may_have_sensitive_key(std::string_view text, const simd::BodyScan& scan) const;
  void form_spans(std::string_view text, std::size_t offset, std::vector<Span>& spans) const;
  static std::string apply(std::string_view text, std::vector<Span>& spans);
  bool sensitive_normalized(std::string_view normalized) const;
  bool sensitive_header_uncached(std::string_view name) const;

  struct Alternative {
    int group = 0;       // submatch index of the alternative
    int value_group = 0; // submatch index of the part to redact (0: whole alternative)
    bool card = false;
  };
  struct Compiled {
    std::unique_ptr<re2::RE2> regex;
    std::vector<Alternative> alternatives;
    int submatches = 0;
  };
  static void run(const Compiled& compiled, std::string_view text, std::vector<Span>& spans);
  Compiled combined_; // built-in alternatives first, then the configured ones
  Compiled extras_;   // the configured ones alone (regex null when there are none)
  Scan scan_;
  std::uint64_t id_ = 0; // unique per redactor in the process: tags memoized verdicts
  std::vector<std::string> extra_headers_; // lower-case
  std::vector<std::string> extra_keys_;    // normalized
};

} // namespace runwarden::audit
