#pragma once
// The typed, immutable policy that config/ builds and the engine reads:
// action catalogue (what an action looks like on the wire) and runbooks
// (which actions a run may take, in which class). No I/O here.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace runwarden::policy {

/// Where a config value came from (1-based), so a decision can name its rule.
struct SourceMark {
  std::string file;
  int line = 0;
  int col = 0;
};

/// Ordered by restrictiveness: a larger value wins when several actions match.
enum class ActionClass : std::uint8_t {
  read_only = 0,
  allowed = 1,
  approval_required = 2,
  denied = 3
};
std::string_view to_string(ActionClass c);
std::optional<ActionClass> parse_action_class(std::string_view s);

/// Glob pattern. Kind::path: '*' matches within one '/'-separated segment,
/// '**' across segments. Kind::text: '*' matches any run of characters.
class Glob {
public:
  enum class Kind : std::uint8_t { path, text };
  /// Returns nullopt and sets *error when the pattern is invalid.
  static std::optional<Glob> compile(std::string_view pattern, Kind kind, std::string* error);
  bool matches(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }
  Kind kind() const { return kind_; }

private:
  enum class Fast : std::uint8_t { exact, prefix, any, regex };
  std::string pattern_;
  Kind kind_ = Kind::path;
  // Most catalogue globs are a literal or "literal/**": those skip the regex.
  Fast fast_ = Fast::exact;
  std::string literal_;                // exact text, or the prefix before "/**"
  std::shared_ptr<const re2::RE2> re_; // full-match program for everything else
};

/// Host pattern: an exact canonical host ("logs.internal", "10.0.0.1", "[::1]")
/// or a suffix wildcard ("*.example.com": any name strictly below example.com).
class HostPattern {
public:
  static std::optional<HostPattern> parse(std::string_view pattern, std::string* error);
  bool matches(std::string_view canonical_host) const;
  bool is_wildcard() const { return wildcard_; }
  /// Exact host, or the suffix without "*." for a wildcard.
  const std::string& host() const { return host_; }
  std::string to_string() const;

private:
  std::string host_;
  bool wildcard_ = false;
};

/// RFC 6901 JSON Pointer, parsed into reference tokens ("~0"/"~1" decoded).
class JsonPointer {
public:
  static std::optional<JsonPointer> parse(std::string_view text, std::string* error);
  const std::string& text() const { return text_; }
  const std::vector<std::string>& tokens() const { return tokens_; }
  /// The referenced value or nullptr. Never throws.
  const nlohmann::json* resolve(const nlohmann::json& doc) const;

private:
  std::string text_;
  std::vector<std::string> tokens_;
};

enum class PredicateOp : std::uint8_t { eq, in, glob, regex, lt, lte, gt, gte, exists };
std::string_view to_string(PredicateOp op);

/// One test on a value (JSON body value, query parameter, header value).
/// For query parameters and headers the value tested is a string.
struct Predicate {
  PredicateOp op = PredicateOp::eq;
  nlohmann::json operand;                // eq: any; in: array; lt..gte: number; exists: bool
  std::optional<Glob> glob;              // op == glob (Kind::text)
  std::shared_ptr<const re2::RE2> regex; // op == regex (full match)
  SourceMark mark;
};

/// All predicates must hold on the value the pointer names.
struct PointerPredicates {
  JsonPointer pointer;
  std::vector<Predicate> predicates;
  SourceMark mark;
};

/// All predicates must hold on the named query parameter or header.
struct NamedPredicates {
  std::string name; // header names lower-cased; query names exact
  std::vector<Predicate> predicates;
  SourceMark mark;
};

/// An MCP `tools/call` (params.name == tool; arguments tested under params.arguments).
struct McpMatch {
  std::string tool;
  std::vector<PointerPredicates> arguments;
};

/// Any JSON-RPC call whose method is one of these (e.g. initialize, tools/list).
struct JsonRpcMatch {
  std::vector<std::string> methods;
};

/// One wire shape of an action. Every present dimension must hold.
/// Empty vectors / nullopt mean "any".
struct Matcher {
  std::vector<std::string> schemes; // "http", "https"
  std::vector<HostPattern> hosts;
  std::vector<std::uint16_t> ports;
  std::vector<std::string> methods; // upper-case
  std::optional<Glob> path;         // Kind::path
  std::shared_ptr<const re2::RE2> path_regex;
  std::vector<NamedPredicates> query;
  std::vector<NamedPredicates> headers;
  std::vector<PointerPredicates> body; // JSON body
  std::optional<McpMatch> mcp;         // implies a JSON-RPC body
  std::optional<JsonRpcMatch> jsonrpc; // implies a JSON-RPC body
  SourceMark mark;
};

struct Action {
  std::string name;
  std::vector<Matcher> matchers; // any one matching means the action matches
  SourceMark mark;
};

struct Catalogue {
  std::map<std::string, Action, std::less<>> actions;
  std::string file;
};

/// An action as a runbook lists it, with what an approver must see.
struct RunbookAction {
  std::string name;
  ActionClass cls = ActionClass::denied;
  std::string risk; // "low" | "medium" | "high" | "critical" | ""
  std::string effect;
  std::string rollback;
  std::vector<std::string> approvers;
  std::optional<std::chrono::milliseconds> timeout; // approval hold timeout override
  std::optional<std::chrono::milliseconds>
      wait; // hold-then-defer: answer approval_pending after this
  SourceMark mark;
};

enum class Unmatched : std::uint8_t { deny, approval };

/// A value-aware budget: the sum of the number at `pointer` in the JSON bodies of `action`
/// calls over a sliding `window` may not exceed `max` (e.g. /amount of refunds per 24h).
struct SumBudget {
  std::string action;
  JsonPointer pointer;
  double max = 0;
  std::chrono::milliseconds window{std::chrono::hours(24)};
  SourceMark mark;
};

/// What crossing a budget does: refuse that call, or kill the whole run (circuit breaker).
enum class OnExceed : std::uint8_t { refuse, kill_run };
std::string_view to_string(OnExceed e);

/// Per-run budgets (DESIGN §7). Absent means unlimited.
struct Budgets {
  std::optional<std::uint64_t> calls;
  std::optional<std::uint64_t> denied;
  std::optional<std::uint64_t> per_minute;
  std::map<std::string, std::uint64_t, std::less<>> actions; // per-action call counts
  std::vector<SumBudget> sums;
  OnExceed on_exceed = OnExceed::kill_run; // DESIGN §7: crossing one kills the run
  /// True when no budget is set (the tracker can be skipped).
  bool empty() const { return !calls && !denied && !per_minute && actions.empty() && sums.empty(); }
};

struct Runbook {
  std::string name;
  std::string file;
  std::string sha256; // hex SHA-256 of the file's bytes: the version recorded in audit records
  std::string owner;
  // Sections operators write, kept verbatim (as JSON) for approval packets and audit.
  nlohmann::json trigger;
  nlohmann::json diagnostics;
  nlohmann::json verification;
  nlohmann::json escalation;
  nlohmann::json rollback;
  std::map<std::string, RunbookAction, std::less<>> actions;
  /// `diagnostics:` names (with where each is written): what the agent runs first. An action
  /// listed here counts as read_only (investigations, no side effects), so it passes in
  /// read_only mode too; listed under allowed_actions as well, its class there decides (it is
  /// never less restrictive than read_only, so the most restrictive class still wins).
  std::map<std::string, SourceMark, std::less<>> diagnostic_actions;
  Unmatched unmatched = Unmatched::deny;
  Budgets budgets;
  SourceMark mark;
};

} // namespace runwarden::policy
