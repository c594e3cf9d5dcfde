// The decision engine (DESIGN §3, §7). Candidates come from an index keyed by
// host (exact map, then a walk up the wildcard suffixes, then the any-host
// bucket) and method, so the cost of a decision depends on how many matchers
// share the request's host and method, not on the size of the catalogue.
//
// Each candidate matcher is checked cheapest condition first; the body is parsed
// at most once per decision, and only when a candidate whose other conditions
// held needs it. A condition that cannot be evaluated denies the request.

#include "policy/engine.hpp"

#include "policy/ascii.hpp"
#include "policy/normalize.hpp"
#include "policy/predicate.hpp"
#include "policy/strict_json.hpp"

#include <algorithm>
#include <charconv>
#include <functional>
#include <iterator>
#include <re2/re2.h>
#include <unordered_map>
#include <utility>

namespace runwarden::policy {
namespace {

using json = nlohmann::json;

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <class T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

struct MatcherRef {
  const Action* action = nullptr;
  const Matcher* matcher = nullptr;
};

struct Bucket {
  StringMap<std::vector<MatcherRef>> by_method;
  std::vector<MatcherRef> any_method;

  void add(const MatcherRef& ref) {
    if (ref.matcher->methods.empty()) {
      any_method.push_back(ref);
      return;
    }
    for (const std::string& m : ref.matcher->methods) {
      by_method[m].push_back(ref);
    }
  }

  void collect(std::string_view method, std::vector<MatcherRef>& out) const {
    if (auto it = by_method.find(method); it != by_method.end()) {
      for (const MatcherRef& r : it->second) {
        push_unique(r, out);
      }
    }
    for (const MatcherRef& r : any_method) {
      push_unique(r, out);
    }
  }

  static void push_unique(const MatcherRef& r, std::vector<MatcherRef>& out) {
    for (const MatcherRef& o : out) {
      if (o.matcher == r.matcher) {
        return;
      }
    }
    out.push_back(r);
  }
};

bool needs_body(const Matcher& m) {
  return !m.body.empty() || m.mcp || m.jsonrpc;
}
bool is_rpc_matcher(const Matcher& m) {
  return m.mcp.has_value() || m.jsonrpc.has_value();
}

void append_where(std::string& out, const SourceMark& mark) {
  out.append(mark.file.empty() ? std::string_view("<unknown>") : std::string_view(mark.file));
  out.push_back(':');
  char digits[12];
  const auto [end, ec] = std::to_chars(std::begin(digits), std::end(digits), mark.line);
  out.append(digits, end);
}

std::string where(const SourceMark& mark) {
  std::string out;
  append_where(out, mark);
  return out;
}

/// One JSON-RPC call found in the body.
struct RpcCall {
  const json* element = nullptr;
  std::string method; // "" when the element is not a call
  std::string tool;
  const json* arguments = nullptr;
};

/// Outcome of one matcher on one request (or one JSON-RPC element).
struct Outcome {
  enum class Kind : std::uint8_t { no, yes, error };
  Kind kind = Kind::no;
  std::string code;   // error code when kind == error
  std::string detail; // error sentence when kind == error
};

/// Per-decision lazily computed views of the request.
class Context {
public:
  Context(const Request& req, const EngineLimits& limits, const JsonWant& want)
      : req_(req), limits_(limits), want_(want) {}

  const Request& req() const { return req_; }

  /// The parsed body, or nullptr with code/detail set.
  const json* body(std::string& code, std::string& detail) {
    if (body_state_ == 0) {
      if (!req_.body_complete || req_.body.size() > limits_.inspect_body_bytes) {
        body_state_ = 2;
        body_code_ = "body_too_large";
        body_detail_ = "the body is larger than the inspect limit (" +
                       std::to_string(limits_.inspect_body_bytes) + " bytes)";
      } else {
        StrictJsonResult r = parse_strict_json(req_.body, limits_.max_json_depth, want_);
        if (r.error == JsonError::ok) {
          body_state_ = 1;
          doc_ = std::move(r.value);
        } else {
          body_state_ = 2;
          body_code_ = std::string(to_code(r.error));
          body_detail_ = std::move(r.detail);
        }
      }
    }
    if (body_state_ == 1) {
      return &doc_;
    }
    code = body_code_;
    detail = body_detail_;
    return nullptr;
  }

  bool body_parsed_ok() const { return body_state_ == 1; }

  /// JSON-RPC calls in the (already parsed) body; empty when the body is not JSON-RPC.
  const std::vector<RpcCall>& rpc_calls() {
    if (!rpc_scanned_) {
      rpc_scanned_ = true;
      if (body_state_ == 1) {
        scan_rpc();
      }
    }
    return calls_;
  }
  bool rpc_batch() const { return batch_; }

  /// Values of a query parameter (decoded, form rules). Returns false when the query
  /// cannot be decoded.
  bool query_values(std::string_view name, std::vector<const std::string*>& out) {
    if (!query_parsed_) {
      parse_query();
    }
    if (query_bad_) {
      return false;
    }
    out.clear();
    for (const auto& [k, v] : params_) {
      if (k == name) {
        out.push_back(&v);
      }
    }
    return true;
  }

private:
  void scan_rpc() {
    auto make_call = [](const json& e) {
      RpcCall c;
      c.element = &e;
      if (!e.is_object()) {
        return c;
      }
      auto m = e.find("method");
      if (m == e.end() || !m->is_string()) {
        return c;
      }
      c.method = m->get<std::string>();
      auto params = e.find("params");
      if (params != e.end() && params->is_object()) {
        auto name = params->find("name");
        if (c.method == "tools/call" && name != params->end() && name->is_string()) {
          c.tool = name->get<std::string>();
        }
        auto args = params->find("arguments");
        if (args != params->end()) {
          c.arguments = &*args;
        }
      }
      return c;
    };
    if (doc_.is_object()) {
      RpcCall c = make_call(doc_);
      if (!c.method.empty()) {
        calls_.push_back(std::move(c));
      }
      return;
    }
    if (doc_.is_array() && !doc_.empty()) {
      bool any = false;
      std::vector<RpcCall> calls;
      for (const json& e : doc_) {
        calls.push_back(make_call(e));
        any = any || !calls.back().method.empty();
      }
      if (any) {
        calls_ = std::move(calls);
        batch_ = true;
      }
    }
  }

  void parse_query() {
    query_parsed_ = true;
    std::string_view q = req_.query;
    while (!q.empty()) {
      std::size_t amp = q.find('&');
      std::string_view pair = q.substr(0, amp);
      q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
      if (pair.empty()) {
        continue;
      }
      std::size_t eq = pair.find('=');
      std::string k;
      std::string v;
      if (!percent_decode(pair.substr(0, eq), true, k) ||
          !percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1),
                          true, v)) {
        query_bad_ = true;
        return;
      }
      params_.emplace_back(std::move(k), std::move(v));
    }
  }

  const Request& req_;
  const EngineLimits& limits_;
  const JsonWant& want_;
  int body_state_ = 0; // 0 not tried, 1 parsed, 2 failed
  std::string body_code_;
  std::string body_detail_;
  json doc_;
  bool rpc_scanned_ = false;
  bool batch_ = false;
  std::vector<RpcCall> calls_;
  bool query_parsed_ = false;
  bool query_bad_ = false;
  std::vector<std::pair<std::string, std::string>> params_;
};

/// Records conditions for `explain` (trace != nullptr) or stops at the first failure.
class Checker {
public:
  explicit Checker(std::vector<ConditionResult>* trace) : trace_(trace) {}

  /// Returns false when evaluation should stop (a failure without tracing).
  template <class Name, class Detail> bool check(bool held, Name&& name, Detail&& detail) {
    if (trace_ != nullptr) {
      trace_->push_back(ConditionResult{name(), held, held ? std::string() : detail()});
    }
    if (!held) {
      all_ = false;
    }
    return held || trace_ != nullptr;
  }

  /// A condition that cannot be evaluated: the matcher's outcome becomes an error.
  template <class Name> bool error(Name&& name, std::string code, std::string detail) {
    if (trace_ != nullptr) {
      trace_->push_back(ConditionResult{name(), false, "cannot evaluate: " + code + ": " + detail});
    }
    if (!error_) {
      error_ = true;
      code_ = std::move(code);
      detail_ = std::move(detail);
    }
    all_ = false;
    return trace_ != nullptr;
  }

  Outcome outcome() {
    Outcome o;
    if (error_) {
      o.kind = Outcome::Kind::error;
      o.code = std::move(code_);
      o.detail = std::move(detail_);
    } else {
      o.kind = all_ ? Outcome::Kind::yes : Outcome::Kind::no;
    }
    return o;
  }

private:
  std::vector<ConditionResult>* trace_;
  bool all_ = true;
  bool error_ = false;
  std::string code_;
  std::string detail_;
};

std::string join(const std::vector<std::string>& v, char sep) {
  std::string s;
  for (const std::string& x : v) {
    if (!s.empty()) {
      s.push_back(sep);
    }
    s.append(x);
  }
  return s;
}

bool check_named(Checker& ck, std::string_view kind, const NamedPredicates& np,
                 const std::vector<const std::string*>& values) {
  if (values.size() > 1) {
    return ck.error([&] { return std::string(kind) + " " + np.name; },
                    std::string(kind) + "_duplicate",
                    std::string(kind) + " \"" + np.name + "\" appears " +
                        std::to_string(values.size()) + " times, so its value is ambiguous");
  }
  const std::string* v = values.empty() ? nullptr : values.front();
  for (const Predicate& p : np.predicates) {
    bool held = predicate_holds(p, v);
    if (!ck.check(
            held, [&] { return std::string(kind) + " " + np.name + " " + describe(p); },
            [&] { return v == nullptr ? std::string("absent") : "value is \"" + *v + "\""; })) {
      return false;
    }
  }
  return true;
}

bool check_pointers(Checker& ck, std::string_view label, const std::vector<PointerPredicates>& pps,
                    const json* root) {
  for (const PointerPredicates& pp : pps) {
    const json* v = root == nullptr ? nullptr : pp.pointer.resolve(*root);
    for (const Predicate& p : pp.predicates) {
      bool held = predicate_holds(p, v);
      if (!ck.check(
              held,
              [&] { return std::string(label) + " " + pp.pointer.text() + " " + describe(p); },
              [&] {
                return v == nullptr ? std::string("no value at pointer")
                                    : "value is " + short_dump(*v);
              })) {
        return false;
      }
    }
  }
  return true;
}

/// Every condition except the per-call JSON-RPC ones.
Outcome eval_base(const Matcher& m, Context& ctx, std::vector<ConditionResult>* trace) {
  Checker ck(trace);
  const Request& req = ctx.req();
  auto run = [&]() {
    if (!m.schemes.empty()) {
      bool held = false;
      for (const std::string& s : m.schemes) {
        held = held || s == req.scheme;
      }
      if (!ck.check(
              held, [&] { return "scheme " + join(m.schemes, '|'); },
              [&] { return "scheme is " + req.scheme; })) {
        return;
      }
    }
    if (!m.hosts.empty()) {
      bool held = false;
      for (const HostPattern& h : m.hosts) {
        held = held || h.matches(req.host);
      }
      if (!ck.check(
              held,
              [&] {
                std::string s = "host ";
                for (std::size_t i = 0; i < m.hosts.size(); ++i) {
                  s += (i ? "|" : "") + m.hosts[i].to_string();
                }
                return s;
              },
              [&] { return "host is " + req.host; })) {
        return;
      }
    }
    if (!m.ports.empty()) {
      bool held = false;
      for (std::uint16_t p : m.ports) {
        held = held || p == req.port;
      }
      if (!ck.check(
              held,
              [&] {
                std::string s = "port";
                for (std::uint16_t p : m.ports) {
                  s += " " + std::to_string(p);
                }
                return s;
              },
              [&] { return "port is " + std::to_string(req.port); })) {
        return;
      }
    }
    if (!m.methods.empty()) {
      bool held = false;
      for (const std::string& s : m.methods) {
        held = held || s == req.method;
      }
      if (!ck.check(
              held, [&] { return "method " + join(m.methods, '|'); },
              [&] { return "method is " + req.method; })) {
        return;
      }
    }
    if (m.path) {
      if (!ck.check(
              m.path->matches(req.path), [&] { return "path " + m.path->pattern(); },
              [&] { return "path is " + req.path; })) {
        return;
      }
    }
    if (m.path_regex) {
      if (!ck.check(
              re2::RE2::FullMatch(req.path, *m.path_regex),
              [&] { return "path_regex " + m.path_regex->pattern(); },
              [&] { return "path is " + req.path; })) {
        return;
      }
    }
    std::vector<const std::string*> values;
    for (const NamedPredicates& np : m.query) {
      if (!ctx.query_values(np.name, values)) {
        if (!ck.error([&] { return "query " + np.name; }, "query_bad_escape",
                      "the query string has a malformed percent-escape")) {
          return;
        }
        continue;
      }
      if (!check_named(ck, "query", np, values)) {
        return;
      }
    }
    for (const NamedPredicates& np : m.headers) {
      values.clear();
      for (const Header& h : req.headers) {
        if (iequals(h.name, np.name)) {
          values.push_back(&h.value);
        }
      }
      if (!check_named(ck, "header", np, values)) {
        return;
      }
    }
    if (needs_body(m)) {
      std::string code;
      std::string detail;
      const json* doc = ctx.body(code, detail);
      if (doc == nullptr) {
        ck.error([] { return std::string("body"); }, std::move(code), std::move(detail));
        return;
      }
      if (!check_pointers(ck, "body", m.body, doc)) {
        return;
      }
    }
  };
  run();
  return ck.outcome();
}

/// The JSON-RPC part of a matcher, on one call.
bool eval_rpc(const Matcher& m, const RpcCall& call, std::vector<ConditionResult>* trace) {
  Checker ck(trace);
  auto run = [&]() {
    if (m.jsonrpc) {
      bool held = false;
      for (const std::string& meth : m.jsonrpc->methods) {
        held = held || meth == call.method;
      }
      if (!ck.check(
              held, [&] { return "jsonrpc method " + join(m.jsonrpc->methods, '|'); },
              [&] {
                return call.method.empty() ? std::string("not a JSON-RPC call")
                                           : "method is " + call.method;
              })) {
        return;
      }
    }
    if (m.mcp) {
      if (!ck.check(
              call.method == "tools/call" && call.tool == m.mcp->tool,
              [&] { return "mcp tool " + m.mcp->tool; },
              [&] {
                return call.method == "tools/call" ? "tool is " + call.tool
                                                   : "not a tools/call (" + call.method + ")";
              })) {
        return;
      }
      check_pointers(ck, "mcp argument", m.mcp->arguments, call.arguments);
    }
  };
  run();
  return ck.outcome().kind == Outcome::Kind::yes;
}

/// The verdict for one unit (the request, or one JSON-RPC call) from the actions that matched.
struct UnitDecision {
  Verdict verdict = Verdict::deny;
  int rank = 0; // restrictiveness for combining units: deny 3 > hold 2 > allow 1
  std::string code;
  std::string reason;
  std::string action;
  std::optional<ActionClass> cls;
  const RunbookAction* approval = nullptr;
};

/// How a runbook lists an action: an entry under allowed_actions (whose class decides), else
/// a `diagnostics` name (class read_only), else not at all.
struct Listing {
  const RunbookAction* entry = nullptr;
  const SourceMark* diagnostics = nullptr;
};

Listing listing(const Runbook& rb, std::string_view action) {
  Listing l;
  if (auto it = rb.actions.find(action); it != rb.actions.end()) {
    l.entry = &it->second;
  } else if (auto dit = rb.diagnostic_actions.find(action); dit != rb.diagnostic_actions.end()) {
    l.diagnostics = &dit->second;
  }
  return l;
}

int verdict_rank(Verdict v) {
  switch (v) {
  case Verdict::allow:
    return 1;
  case Verdict::hold:
    return 2;
  case Verdict::deny:
  case Verdict::paused:
    return 3;
  }
  return 3;
}

UnitDecision judge(const std::vector<MatcherRef>& matched, const Runbook& rb, Mode mode,
                   const Request& req) {
  UnitDecision d;
  if (matched.empty()) {
    if (rb.unmatched == Unmatched::approval && mode != Mode::read_only) {
      d.verdict = Verdict::hold;
      d.code = "unmatched";
      d.reason = "no catalogue action matches " + req.method + " " + req.url() + "; runbook " +
                 rb.name + " escalates unmatched requests for approval";
    } else if (rb.unmatched == Unmatched::approval) {
      d.verdict = Verdict::deny;
      d.code = "read_only_mode";
      d.reason = "no catalogue action matches " + req.method + " " + req.url() +
                 " and read_only mode refuses anything but read_only actions";
    } else {
      d.verdict = Verdict::deny;
      d.code = "unmatched";
      d.reason = "no catalogue action matches " + req.method + " " + req.url() + "; runbook " +
                 rb.name + " denies unmatched requests";
    }
    d.rank = verdict_rank(d.verdict);
    return d;
  }
  // Restrictiveness: read_only 0 < allowed 1 < approval_required 2 < not in runbook 3 < denied 4.
  // A diagnostics-only action is read_only (0).
  int best = -1;
  const MatcherRef* best_ref = nullptr;
  Listing best_l;
  for (const MatcherRef& ref : matched) {
    const Listing l = listing(rb, ref.action->name);
    int r = 3;
    if (l.entry != nullptr) {
      r = l.entry->cls == ActionClass::denied ? 4 : static_cast<int>(l.entry->cls);
    } else if (l.diagnostics != nullptr) {
      r = static_cast<int>(ActionClass::read_only);
    }
    if (r > best) {
      best = r;
      best_ref = &ref;
      best_l = l;
    }
  }
  const std::string& name = best_ref->action->name;
  // The reason is built in place, in one allocation: every request that matches pays for it.
  std::string& reason = d.reason;
  reason.reserve(160 + name.size() + rb.name.size() + best_ref->matcher->mark.file.size() * 2);
  reason.append("action ").append(name).append(" (");
  append_where(reason, best_ref->matcher->mark);
  reason.push_back(')');
  d.action = name;
  if (best_l.entry == nullptr && best_l.diagnostics == nullptr) {
    d.verdict = Verdict::deny;
    d.code = "not_in_runbook";
    reason.append(" matched but is not listed in runbook ").append(rb.name);
    d.rank = verdict_rank(d.verdict);
    return d;
  }
  const ActionClass cls = best_l.entry != nullptr ? best_l.entry->cls : ActionClass::read_only;
  d.cls = cls;
  reason.append(" is ").append(to_string(cls)).append(" in runbook ").append(rb.name);
  if (best_l.entry != nullptr) {
    reason.append(" (");
    append_where(reason, best_l.entry->mark);
  } else {
    reason.append(" as a diagnostics action (");
    append_where(reason, *best_l.diagnostics);
  }
  reason.push_back(')');
  switch (cls) {
  case ActionClass::denied:
    d.verdict = Verdict::deny;
    d.code = "denied_by_runbook";
    break;
  case ActionClass::approval_required:
    d.verdict = Verdict::hold;
    d.code = "approval_required";
    d.approval = best_l.entry;
    break;
  case ActionClass::allowed:
  case ActionClass::read_only:
    d.verdict = Verdict::allow;
    d.code = "allowed";
    break;
  }
  if (mode == Mode::read_only && d.verdict != Verdict::deny && cls != ActionClass::read_only) {
    d.verdict = Verdict::deny;
    d.code = "read_only_mode";
    reason.append(", and read_only mode lets only read_only actions pass");
    d.approval = nullptr;
  }
  d.rank = verdict_rank(d.verdict);
  return d;
}

struct Scratch {
  std::vector<MatcherRef> cands;
  std::vector<MatcherRef> matched;
  std::vector<MatcherRef> rpc_matched;
};

} // namespace

struct Engine::Index {
  StringMap<Bucket> exact;
  StringMap<Bucket> wildcard; // keyed by the suffix after "*."
  Bucket any_host;
  StringMap<const Runbook*> runbooks;
  JsonWant body_want; // every body path some matcher reads

  void candidates(const Request& req, std::vector<MatcherRef>& out) const {
    if (auto it = exact.find(req.host); it != exact.end()) {
      it->second.collect(req.method, out);
    }
    if (!wildcard.empty()) {
      std::string_view h = req.host;
      for (std::size_t dot = h.find('.'); dot != std::string_view::npos;
           dot = h.find('.', dot + 1)) {
        if (auto it = wildcard.find(h.substr(dot + 1)); it != wildcard.end()) {
          it->second.collect(req.method, out);
        }
      }
    }
    any_host.collect(req.method, out);
  }
};

Engine::Engine(std::shared_ptr<const Catalogue> catalogue,
               std::vector<std::shared_ptr<const Runbook>> runbooks, EngineLimits limits)
    : catalogue_(std::move(catalogue)), runbooks_(std::move(runbooks)), limits_(limits),
      index_(std::make_unique<Index>()) {
  if (!catalogue_) {
    catalogue_ = std::make_shared<const Catalogue>();
  }
  for (const auto& [name, action] : catalogue_->actions) {
    for (const Matcher& m : action.matchers) {
      MatcherRef ref{&action, &m};
      for (const PointerPredicates& pp : m.body) {
        index_->body_want.add(pp.pointer.tokens());
      }
      if (is_rpc_matcher(m)) {
        index_->body_want.add({}); // JSON-RPC calls are read whole
      }
      if (m.hosts.empty()) {
        index_->any_host.add(ref);
        continue;
      }
      for (const HostPattern& h : m.hosts) {
        (h.is_wildcard() ? index_->wildcard[h.host()] : index_->exact[h.host()]).add(ref);
      }
    }
  }
  for (const auto& rb : runbooks_) {
    if (rb) {
      index_->runbooks.emplace(rb->name, rb.get());
    }
  }
}

Engine::~Engine() = default;

const Runbook* Engine::runbook(std::string_view name) const {
  auto it = index_->runbooks.find(name);
  return it == index_->runbooks.end() ? nullptr : it->second;
}

const Catalogue& Engine::catalogue() const {
  return *catalogue_;
}

const std::vector<std::shared_ptr<const Runbook>>& Engine::runbooks() const {
  return runbooks_;
}

namespace {

/// The path as a server that drops path parameters routes it: each segment cut at its first
/// ';', empty segments then collapsed as normalization does ("/a;x/b;y" -> "/a/b").
std::string without_path_parameters(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  std::size_t i = 0;
  while (i < path.size()) {
    const std::size_t end = std::min(path.find('/', i + 1), path.size()); // i is at a '/'
    std::string_view segment = path.substr(i + 1, end - i - 1);
    segment = segment.substr(0, segment.find(';'));
    if (!segment.empty() || end == path.size()) {
      out += '/';
      out += segment;
    }
    i = end;
  }
  return out.empty() ? std::string("/") : out;
}

std::string said(const Decision& d) {
  std::string out(to_string(d.verdict));
  if (!d.action.empty()) {
    out += " (action " + d.action + ")";
  } else {
    out += " (" + d.code + ")";
  }
  return out;
}

} // namespace

Decision Engine::decide(const Request& req, std::string_view runbook_name, Mode mode) const {
  Decision d = decide_as_read(req, runbook_name, mode);
  if (req.path.find(';') == std::string::npos || d.verdict == Verdict::paused) {
    return d;
  }
  Request dropped = req;
  dropped.path = without_path_parameters(req.path);
  const Decision other = decide_as_read(dropped, runbook_name, mode);
  // Refused either way: the request as sent is denied for its own reason.
  if (other.verdict == d.verdict && (other.action == d.action || d.verdict == Verdict::deny)) {
    return d;
  }
  Decision refused;
  refused.verdict = Verdict::deny;
  refused.code = "ambiguous_path_parameters";
  refused.reason = "path " + req.path + " has ;parameters, which a server such as Tomcat, " +
                   "Spring or Jetty drops before routing (reading " + dropped.path +
                   "); judged as sent it is " + said(d) + ", as such a server reads it " +
                   said(other) + ": refused as ambiguous";
  refused.runbook = std::move(d.runbook);
  refused.runbook_sha256 = std::move(d.runbook_sha256);
  refused.action = std::move(d.action); // as sent: the reason names the other
  refused.cls = d.cls;
  // An MCP call is answered with JSON-RPC errors (its calls, from whichever reading parsed the
  // body): every call is refused, for the path's reason.
  const bool calls_as_sent = !d.jsonrpc.empty();
  refused.jsonrpc_batch = calls_as_sent ? d.jsonrpc_batch : other.jsonrpc_batch;
  refused.jsonrpc = calls_as_sent ? std::move(d.jsonrpc) : other.jsonrpc;
  for (JsonRpcCall& call : refused.jsonrpc) {
    call.verdict = Verdict::deny;
    call.reason = refused.reason;
  }
  refused.matched_actions = std::move(d.matched_actions);
  for (auto& a : other.matched_actions) {
    if (std::find(refused.matched_actions.begin(), refused.matched_actions.end(), a) ==
        refused.matched_actions.end()) {
      refused.matched_actions.push_back(a);
    }
  }
  return refused;
}

Decision Engine::decide_as_read(const Request& req, std::string_view runbook_name,
                                Mode mode) const {
  Decision d;
  const Runbook* rb = runbook(runbook_name);
  if (rb != nullptr) {
    d.runbook = rb->name;
    d.runbook_sha256 = rb->sha256;
  } else {
    d.runbook = std::string(runbook_name);
  }
  if (mode == Mode::paused) {
    d.verdict = Verdict::paused;
    d.code = "runwarden_paused";
    d.reason = "runwarden is paused: every request is refused";
    return d;
  }
  if (rb == nullptr) {
    d.verdict = Verdict::deny;
    d.code = "unknown_runbook";
    d.reason = "runbook \"" + std::string(runbook_name) + "\" is not loaded";
    return d;
  }

  // Per-thread scratch lists, emptied here and keeping their capacity: three vectors grown
  // element by element were a third of the engine's allocations per request. decide() never
  // runs inside itself, so one set per thread serves.
  thread_local Scratch scratch;
  std::vector<MatcherRef>& cands = scratch.cands;
  std::vector<MatcherRef>& matched = scratch.matched;         // request-level matches
  std::vector<MatcherRef>& rpc_matched = scratch.rpc_matched; // matched but per-call conditions
  cands.clear();
  matched.clear();
  rpc_matched.clear();
  index_->candidates(req, cands);
  Context ctx(req, limits_, index_->body_want);
  for (const MatcherRef& ref : cands) {
    Outcome o = eval_base(*ref.matcher, ctx, nullptr);
    if (o.kind == Outcome::Kind::error) {
      d.verdict = Verdict::deny;
      d.code = std::move(o.code);
      d.reason = "cannot evaluate action " + ref.action->name + " (" + where(ref.matcher->mark) +
                 "): " + o.detail;
      return d;
    }
    if (o.kind == Outcome::Kind::yes) {
      (is_rpc_matcher(*ref.matcher) ? rpc_matched : matched).push_back(ref);
    }
  }

  auto note_matched = [&d](const MatcherRef& r) {
    for (const std::string& n : d.matched_actions) {
      if (n == r.action->name) {
        return;
      }
    }
    d.matched_actions.push_back(r.action->name);
  };
  auto apply = [&d](UnitDecision&& u) {
    d.verdict = u.verdict;
    d.code = std::move(u.code);
    d.reason = std::move(u.reason);
    d.action = std::move(u.action);
    d.cls = u.cls;
    d.approval = u.approval;
  };

  const std::vector<RpcCall>* calls = nullptr;
  if (ctx.body_parsed_ok()) {
    calls = &ctx.rpc_calls();
  }
  if (calls == nullptr || calls->empty()) {
    for (const MatcherRef& r : matched) {
      note_matched(r);
    }
    apply(judge(matched, *rb, mode, req));
    return d;
  }

  // JSON-RPC: every call is judged on its own; the most restrictive call decides.
  d.jsonrpc_batch = ctx.rpc_batch();
  UnitDecision worst;
  bool have_worst = false;
  std::vector<MatcherRef> unit;
  for (const RpcCall& call : *calls) {
    unit = matched;
    for (const MatcherRef& r : rpc_matched) {
      if (eval_rpc(*r.matcher, call, nullptr)) {
        unit.push_back(r);
      }
    }
    for (const MatcherRef& r : unit) {
      note_matched(r);
    }
    UnitDecision u = judge(unit, *rb, mode, req);
    JsonRpcCall entry;
    if (call.element->is_object()) {
      auto id = call.element->find("id");
      if (id != call.element->end()) {
        entry.id = *id;
      }
    }
    entry.method = call.method;
    entry.tool = call.tool;
    entry.action = u.action;
    entry.cls = u.cls;
    entry.verdict = u.verdict;
    entry.reason = u.reason;
    d.jsonrpc.push_back(std::move(entry));
    if (!have_worst || u.rank > worst.rank) {
      worst = std::move(u);
      have_worst = true;
    }
  }
  apply(std::move(worst));
  if (d.jsonrpc_batch && d.jsonrpc.size() > 1) {
    d.reason = "JSON-RPC batch of " + std::to_string(d.jsonrpc.size()) +
               " calls, decided by its most restrictive call: " + d.reason;
  }
  return d;
}

std::vector<MatcherExplanation> Engine::explain(const Request& req,
                                                std::string_view runbook_name) const {
  std::vector<MatcherExplanation> out;
  const Runbook* rb = runbook(runbook_name);
  std::vector<MatcherRef> cands;
  index_->candidates(req, cands);
  Context ctx(req, limits_, index_->body_want);
  for (const MatcherRef& ref : cands) {
    MatcherExplanation e;
    e.action = ref.action->name;
    e.mark = ref.matcher->mark;
    if (rb != nullptr) {
      const Listing l = listing(*rb, ref.action->name);
      if (l.entry != nullptr) {
        e.cls = l.entry->cls;
      } else if (l.diagnostics != nullptr) {
        e.cls = ActionClass::read_only;
        e.diagnostics = true;
      }
    }
    Outcome o = eval_base(*ref.matcher, ctx, &e.conditions);
    bool matched = o.kind == Outcome::Kind::yes;
    if (is_rpc_matcher(*ref.matcher) && o.kind != Outcome::Kind::error) {
      const std::vector<RpcCall>& calls = ctx.rpc_calls();
      bool any = false;
      if (calls.empty()) {
        e.conditions.push_back(
            ConditionResult{"jsonrpc call", false, "the body is not a JSON-RPC call"});
      }
      for (std::size_t i = 0; i < calls.size(); ++i) {
        std::vector<ConditionResult> sub;
        bool held = eval_rpc(*ref.matcher, calls[i], &sub);
        any = any || held;
        for (ConditionResult& c : sub) {
          if (calls.size() > 1) {
            c.condition = "call[" + std::to_string(i) + "] " + c.condition;
          }
          e.conditions.push_back(std::move(c));
        }
      }
      matched = matched && any;
    }
    e.matched = matched;
    out.push_back(std::move(e));
  }
  return out;
}

} // namespace runwarden::policy
