// Decision engine: table-driven decisions over a small catalogue shaped like the
// DESIGN §3 examples, including the bypass attempts the engine must not fall for.

#include "policy/engine.hpp"

#include <gtest/gtest.h>
#include <re2/re2.h>

namespace runwarden::policy {
namespace {

using json = nlohmann::json;

int next_line = 1;

SourceMark mark() {
  return SourceMark{"actions.yaml", next_line++, 5};
}

Predicate pred(PredicateOp op, json operand) {
  Predicate p;
  p.op = op;
  p.operand = std::move(operand);
  p.mark = mark();
  return p;
}

PointerPredicates at(const char* pointer, std::vector<Predicate> preds) {
  PointerPredicates pp;
  pp.pointer = *JsonPointer::parse(pointer, nullptr);
  pp.predicates = std::move(preds);
  return pp;
}

NamedPredicates named(const char* name, std::vector<Predicate> preds) {
  return NamedPredicates{name, std::move(preds), mark()};
}

Matcher http(const char* method, const char* host, const char* path) {
  Matcher m;
  if (method != nullptr) {
    m.methods.emplace_back(method);
  }
  if (host != nullptr) {
    m.hosts.push_back(*HostPattern::parse(host, nullptr));
  }
  if (path != nullptr) {
    m.path = Glob::compile(path, Glob::Kind::path, nullptr);
  }
  m.mark = mark();
  return m;
}

Matcher mcp_tool(const char* tool, std::vector<PointerPredicates> args = {}) {
  Matcher m = http("POST", "mcp.k8s.internal", nullptr);
  m.mcp = McpMatch{tool, std::move(args)};
  return m;
}

void add(Catalogue& c, const char* name, std::vector<Matcher> matchers) {
  Action a;
  a.name = name;
  a.matchers = std::move(matchers);
  a.mark = mark();
  c.actions.emplace(name, std::move(a));
}

void list(Runbook& rb, const char* name, ActionClass cls) {
  RunbookAction ra;
  ra.name = name;
  ra.cls = cls;
  ra.risk = "medium";
  ra.effect = "effect of " + std::string(name);
  ra.rollback = "undo " + std::string(name);
  ra.approvers = {"payments-on-call"};
  ra.mark = SourceMark{"runbooks/pay.yaml", next_line++, 7};
  rb.actions.emplace(name, std::move(ra));
}

std::shared_ptr<const Catalogue> make_catalogue() {
  auto c = std::make_shared<Catalogue>();
  c->file = "actions.yaml";
  add(*c, "fetch_logs", {http("GET", "logs.internal", "/api/v1/query/**")});
  add(*c, "shadow_logs", {http("GET", "logs.internal", "/api/v1/query/secret/**")});
  add(*c, "fetch_metrics", {http("GET", "*.metrics.internal", "/api/**")});
  {
    Matcher small = http("POST", "api.stripe.com", "/v1/refunds");
    small.body.push_back(at("/amount", {pred(PredicateOp::lte, 5000)}));
    Matcher large = http("POST", "api.stripe.com", "/v1/refunds");
    large.body.push_back(at("/amount", {pred(PredicateOp::gt, 5000)}));
    Matcher changed = http("POST", "api.stripe.com", "/v1/refunds");
    changed.body.push_back(at("/destination/changed", {pred(PredicateOp::eq, true)}));
    add(*c, "issue_small_refund", {small});
    add(*c, "issue_large_refund", {large});
    add(*c, "refund_to_changed_bank", {changed});
  }
  add(*c, "restart_payment_workers",
      {mcp_tool("restart_deployment", {at("/namespace", {pred(PredicateOp::eq, "payments")})})});
  add(*c, "mcp_read", {mcp_tool("get_pods")});
  add(*c, "delete_deployment", {mcp_tool("delete_deployment")});
  {
    Matcher session = http("POST", "mcp.k8s.internal", nullptr);
    session.jsonrpc = JsonRpcMatch{{"initialize", "tools/list", "notifications/initialized"}};
    add(*c, "mcp_session", {session});
  }
  add(*c, "run_database_migration", {http("POST", "db.internal", "/migrate")});
  {
    Matcher search = http("GET", "crm.example.com", "/search");
    search.query.push_back(named("q", {pred(PredicateOp::exists, true)}));
    search.query.push_back(named("limit", {pred(PredicateOp::lte, 100)}));
    add(*c, "search_crm", {search});
  }
  {
    Matcher hook = http("POST", "hooks.internal", "/deliver");
    hook.headers.push_back(named("x-env", {pred(PredicateOp::eq, "prod")}));
    Predicate re = pred(PredicateOp::regex, nullptr);
    re.regex = std::make_shared<const re2::RE2>("evt_[0-9]+");
    hook.body.push_back(at("/id", {re}));
    add(*c, "deliver_webhook", {hook});
  }
  {
    Matcher wide = http(nullptr, "*.example.org", nullptr);
    wide.schemes = {"https"};
    wide.ports = {8443};
    add(*c, "example_org_tls", {wide});
  }
  return c;
}

std::shared_ptr<const Runbook> make_pay_runbook() {
  auto rb = std::make_shared<Runbook>();
  rb->name = "pay";
  rb->file = "runbooks/pay.yaml";
  rb->sha256 = "abc123";
  for (const char* n : {"fetch_logs", "fetch_metrics", "mcp_read", "mcp_session"}) {
    list(*rb, n, ActionClass::read_only);
  }
  for (const char* n : {"issue_small_refund", "search_crm", "deliver_webhook", "example_org_tls"}) {
    list(*rb, n, ActionClass::allowed);
  }
  for (const char* n : {"issue_large_refund", "restart_payment_workers"}) {
    list(*rb, n, ActionClass::approval_required);
  }
  for (const char* n : {"refund_to_changed_bank", "run_database_migration", "delete_deployment"}) {
    list(*rb, n, ActionClass::denied);
  }
  return rb;
}

std::shared_ptr<const Runbook> make_escalate_runbook() {
  auto rb = std::make_shared<Runbook>();
  rb->name = "escalate";
  rb->unmatched = Unmatched::approval;
  list(*rb, "fetch_logs", ActionClass::read_only);
  return rb;
}

class EngineTest : public ::testing::Test {
protected:
  EngineTest()
      : engine_(make_catalogue(), {make_pay_runbook(), make_escalate_runbook()},
                EngineLimits{16, 1 << 20}) {}
  Engine engine_;
};

Request make_request(const std::string& method, const std::string& url, std::string body = "",
                     std::vector<Header> headers = {}) {
  Request r;
  EXPECT_EQ(normalize_absolute_url(url, r), NormalizeError::ok) << url;
  r.method = method;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

std::string rpc(const char* tool, const char* args = "{}", int id = 1) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
         R"(,"method":"tools/call","params":{"name":")" + tool + R"(","arguments":)" + args + "}}";
}

struct Case {
  const char* name;
  std::string method;
  std::string url;
  std::string body;
  std::vector<Header> headers;
  std::string runbook;
  Mode mode;
  Verdict verdict;
  const char* code;
  const char* action;
};

const std::string kLogs = "https://logs.internal/api/v1/query/errors";
const std::string kRefunds = "https://api.stripe.com/v1/refunds";
const std::string kMcp = "https://mcp.k8s.internal/mcp";

std::vector<Case> cases() {
  const Mode N = Mode::normal;
  return {
      {"read_only_action", "GET", kLogs, "", {}, "pay", N, Verdict::allow, "allowed", "fetch_logs"},
      {"host_case_and_trailing_dot",
       "GET",
       "https://LOGS.Internal./api/v1/query/x",
       "",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "fetch_logs"},
      {"lower_case_method_is_another_method",
       "get",
       kLogs,
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"dot_dot_leaves_the_glob",
       "GET",
       "https://logs.internal/api/v1/query/../../admin",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"encoded_dot_dot_leaves_the_glob",
       "GET",
       "https://logs.internal/api/v1/query/%2e%2e/%2E%2E/admin",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"catalogue_action_not_in_runbook_wins_over_read_only",
       "GET",
       "https://logs.internal/api/v1/query/secret/keys",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "not_in_runbook",
       "shadow_logs"},
      {"wildcard_host",
       "GET",
       "https://eu.metrics.internal/api/q",
       "",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "fetch_metrics"},
      {"wildcard_does_not_match_apex",
       "GET",
       "https://metrics.internal/api/q",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"body_not_parsed_when_not_needed",
       "GET",
       kLogs,
       "not json {",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "fetch_logs"},
      {"small_refund",
       "POST",
       kRefunds,
       R"({"amount":100})",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "issue_small_refund"},
      {"small_refund_boundary",
       "POST",
       kRefunds,
       R"({"amount":5000})",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "issue_small_refund"},
      {"large_refund_is_held",
       "POST",
       kRefunds,
       R"({"amount":5000.5})",
       {},
       "pay",
       N,
       Verdict::hold,
       "approval_required",
       "issue_large_refund"},
      {"string_amount_is_not_a_number",
       "POST",
       kRefunds,
       R"({"amount":"100"})",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"denied_beats_allowed",
       "POST",
       kRefunds,
       R"({"amount":100,"destination":{"changed":true}})",
       {},
       "pay",
       N,
       Verdict::deny,
       "denied_by_runbook",
       "refund_to_changed_bank"},
      {"duplicate_key",
       "POST",
       kRefunds,
       R"({"amount":100,"amount":9000})",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_duplicate_key",
       ""},
      {"escaped_duplicate_key",
       "POST",
       kRefunds,
       R"({"amount":100,"\u0061mount":9000})",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_duplicate_key",
       ""},
      {"number_out_of_range",
       "POST",
       kRefunds,
       R"({"amount":1e400})",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_number_out_of_range",
       ""},
      {"lone_surrogate",
       "POST",
       kRefunds,
       R"({"amount":1,"memo":"\ud800"})",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_invalid_utf8",
       ""},
      {"invalid_utf8",
       "POST",
       kRefunds,
       "{\"amount\":1,\"memo\":\"\xC3\x28\"}",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_invalid_utf8",
       ""},
      {"too_deep",
       "POST",
       kRefunds,
       R"({"amount":1,"x":)" + std::string(20, '[') + std::string(20, ']') + "}",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_too_deep",
       ""},
      {"not_json",
       "POST",
       kRefunds,
       "amount=100",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_not_json",
       ""},
      {"path_parameter_that_changes_the_match", // unmatched as sent, a refund without ";x"
       "POST",
       "https://api.stripe.com/v1/refunds;x",
       R"({"amount":100})",
       {},
       "pay",
       N,
       Verdict::deny,
       "ambiguous_path_parameters",
       ""},
      {"double_slash_collapsed",
       "POST",
       "https://api.stripe.com//v1//refunds",
       R"({"amount":9000})",
       {},
       "pay",
       N,
       Verdict::hold,
       "approval_required",
       "issue_large_refund"},
      {"explicit_deny",
       "POST",
       "https://db.internal/migrate",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "denied_by_runbook",
       "run_database_migration"},
      {"mcp_read_tool",
       "POST",
       kMcp,
       rpc("get_pods"),
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "mcp_read"},
      {"mcp_restart_held",
       "POST",
       kMcp,
       rpc("restart_deployment", R"({"namespace":"payments"})"),
       {},
       "pay",
       N,
       Verdict::hold,
       "approval_required",
       "restart_payment_workers"},
      {"mcp_restart_other_namespace_unmatched",
       "POST",
       kMcp,
       rpc("restart_deployment", R"({"namespace":"kube-system"})"),
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"mcp_session_methods",
       "POST",
       kMcp,
       R"([{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}])",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "mcp_session"},
      {"batch_hiding_denied_call",
       "POST",
       kMcp,
       "[" + rpc("get_pods", "{}", 1) + "," + rpc("delete_deployment", "{}", 2) + "," +
           rpc("get_pods", "{}", 3) + "]",
       {},
       "pay",
       N,
       Verdict::deny,
       "denied_by_runbook",
       "delete_deployment"},
      {"batch_hiding_unknown_call",
       "POST",
       kMcp,
       "[" + rpc("get_pods", "{}", 1) + "," + rpc("drop_cluster", "{}", 2) + "]",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"batch_with_held_call_is_held",
       "POST",
       kMcp,
       "[" + rpc("get_pods", "{}", 1) + "," +
           rpc("restart_deployment", R"({"namespace":"payments"})", 2) + "]",
       {},
       "pay",
       N,
       Verdict::hold,
       "approval_required",
       "restart_payment_workers"},
      {"batch_with_duplicate_key_is_refused",
       "POST",
       kMcp,
       R"([{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_pods","name":"delete_deployment"}}])",
       {},
       "pay",
       N,
       Verdict::deny,
       "body_duplicate_key",
       ""},
      {"query_ok",
       "GET",
       "https://crm.example.com/search?q=acme+corp&limit=50",
       "",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "search_crm"},
      {"query_over_limit",
       "GET",
       "https://crm.example.com/search?q=acme&limit=500",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"query_not_a_number",
       "GET",
       "https://crm.example.com/search?q=acme&limit=abc",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"query_missing_required",
       "GET",
       "https://crm.example.com/search?limit=5",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"query_duplicate_param",
       "GET",
       "https://crm.example.com/search?q=a&limit=5&limit=5000",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "query_duplicate",
       ""},
      {"header_ok",
       "POST",
       "https://hooks.internal/deliver",
       R"({"id":"evt_42"})",
       {{"X-Env", "prod"}},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "deliver_webhook"},
      {"header_case_of_value_matters",
       "POST",
       "https://hooks.internal/deliver",
       R"({"id":"evt_42"})",
       {{"X-Env", "PROD"}},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"header_duplicate",
       "POST",
       "https://hooks.internal/deliver",
       R"({"id":"evt_42"})",
       {{"x-env", "prod"}, {"X-ENV", "dev"}},
       "pay",
       N,
       Verdict::deny,
       "header_duplicate",
       ""},
      {"regex_is_full_match",
       "POST",
       "https://hooks.internal/deliver",
       R"({"id":"evt_42x"})",
       {{"X-Env", "prod"}},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"scheme_and_port",
       "GET",
       "https://a.example.org:8443/x",
       "",
       {},
       "pay",
       N,
       Verdict::allow,
       "allowed",
       "example_org_tls"},
      {"wrong_scheme",
       "GET",
       "http://a.example.org:8443/x",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"wrong_port",
       "GET",
       "https://a.example.org/x",
       "",
       {},
       "pay",
       N,
       Verdict::deny,
       "unmatched",
       ""},
      {"read_only_mode_passes_read_only",
       "GET",
       kLogs,
       "",
       {},
       "pay",
       Mode::read_only,
       Verdict::allow,
       "allowed",
       "fetch_logs"},
      {"read_only_mode_refuses_allowed",
       "POST",
       kRefunds,
       R"({"amount":100})",
       {},
       "pay",
       Mode::read_only,
       Verdict::deny,
       "read_only_mode",
       "issue_small_refund"},
      {"read_only_mode_refuses_holds",
       "POST",
       kRefunds,
       R"({"amount":9000})",
       {},
       "pay",
       Mode::read_only,
       Verdict::deny,
       "read_only_mode",
       "issue_large_refund"},
      {"read_only_mode_keeps_explicit_deny",
       "POST",
       "https://db.internal/migrate",
       "",
       {},
       "pay",
       Mode::read_only,
       Verdict::deny,
       "denied_by_runbook",
       "run_database_migration"},
      {"paused",
       "GET",
       kLogs,
       "",
       {},
       "pay",
       Mode::paused,
       Verdict::paused,
       "runwarden_paused",
       ""},
      {"unknown_runbook", "GET", kLogs, "", {}, "nope", N, Verdict::deny, "unknown_runbook", ""},
      {"unmatched_escalates",
       "GET",
       "https://other.internal/",
       "",
       {},
       "escalate",
       N,
       Verdict::hold,
       "unmatched",
       ""},
      {"unmatched_escalation_refused_in_read_only",
       "GET",
       "https://other.internal/",
       "",
       {},
       "escalate",
       Mode::read_only,
       Verdict::deny,
       "read_only_mode",
       ""},
      {"catalogue_action_not_in_this_runbook",
       "POST",
       kRefunds,
       R"({"amount":100})",
       {},
       "escalate",
       N,
       Verdict::deny,
       "not_in_runbook",
       "issue_small_refund"},
  };
}

class DecisionTable : public EngineTest, public ::testing::WithParamInterface<Case> {};

TEST_P(DecisionTable, Decides) {
  const Case& c = GetParam();
  Request req = make_request(c.method, c.url, c.body, c.headers);
  Decision d = engine_.decide(req, c.runbook, c.mode);
  EXPECT_EQ(to_string(d.verdict), to_string(c.verdict)) << d.code << ": " << d.reason;
  EXPECT_EQ(d.code, c.code) << d.reason;
  EXPECT_EQ(d.action, c.action) << d.reason;
  EXPECT_FALSE(d.reason.empty());
}

INSTANTIATE_TEST_SUITE_P(Table, DecisionTable, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return std::string(p.param.name); });

// ";parameters": Tomcat, Spring and Jetty drop them before routing, so "/query/secret;x/keys"
// reaches the handler of "/query/secret/keys". A path whose parameters change the decision
// is refused; one whose parameters change nothing is judged as sent.
TEST_F(EngineTest, PathParametersThatChangeTheDecisionAreRefused) {
  // As sent, only fetch_logs (/api/v1/query/**) matches; without the parameter,
  // shadow_logs (/api/v1/query/secret/**, not in the runbook) matches too.
  const Decision plain = engine_.decide(
      make_request("GET", "https://logs.internal/api/v1/query/secret/keys"), "pay", Mode::normal);
  ASSERT_EQ(to_string(plain.verdict), "deny") << plain.reason;
  Decision d =
      engine_.decide(make_request("GET", "https://logs.internal/api/v1/query/secret;x=1/keys"),
                     "pay", Mode::normal);
  EXPECT_EQ(to_string(d.verdict), "deny") << d.reason;
  EXPECT_EQ(d.code, "ambiguous_path_parameters") << d.reason;
  EXPECT_NE(d.reason.find("/api/v1/query/secret/keys"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("fetch_logs"), std::string::npos) << d.reason;
  EXPECT_EQ(d.runbook, "pay");
  // Empty and trailing parameters, several segments.
  d = engine_.decide(make_request("GET", "https://logs.internal/api/v1/query/secret;/keys;v=2"),
                     "pay", Mode::normal);
  EXPECT_EQ(d.code, "ambiguous_path_parameters") << d.reason;
  // Parameters that change nothing: judged as sent.
  d = engine_.decide(make_request("GET", "https://logs.internal/api/v1/query/errors;v=2"), "pay",
                     Mode::normal);
  EXPECT_EQ(to_string(d.verdict), "allow") << d.reason;
  EXPECT_EQ(d.action, "fetch_logs");
  d = engine_.decide(make_request("POST", kRefunds + ";x", R"({"amount":100})"), "pay",
                     Mode::normal);
  EXPECT_EQ(d.code, "ambiguous_path_parameters") << d.reason; // unmatched as sent, allowed without
  // Denied either way (unmatched as sent, run_database_migration without ";x"): the denial
  // as sent stands, with its own reason.
  d = engine_.decide(make_request("POST", "https://db.internal/migrate;x"), "pay", Mode::normal);
  EXPECT_EQ(d.code, "unmatched") << d.reason;
  // An encoded ';' is not a parameter (such servers split before decoding): judged as sent.
  d = engine_.decide(make_request("GET", "https://logs.internal/api/v1/query/secret%3Bx/keys"),
                     "pay", Mode::normal);
  EXPECT_EQ(d.action, "fetch_logs") << d.reason;
}

// A JSON-RPC body whose path is refused as ambiguous: each call carries the refusal, so the
// proxy answers with JSON-RPC errors (the MCP client reads why), not a plain 403. Unmatched as
// sent (the body not read), the calls come from the other reading. Batches: server_test.
TEST_F(EngineTest, AmbiguousPathParametersRefuseEachJsonRpcCall) {
  const std::string call = R"({"jsonrpc":"2.0","id":7,"method":"tools/call","amount":100})";
  Decision d = engine_.decide(make_request("POST", kRefunds + ";x", call), "pay", Mode::normal);
  ASSERT_EQ(d.code, "ambiguous_path_parameters") << d.reason;
  ASSERT_EQ(d.jsonrpc.size(), 1U);
  EXPECT_EQ(d.jsonrpc[0].id, 7);
  EXPECT_EQ(to_string(d.jsonrpc[0].verdict), "deny");
  EXPECT_EQ(d.jsonrpc[0].reason, d.reason);
  EXPECT_FALSE(d.jsonrpc_batch);
}

TEST_F(EngineTest, HoldCarriesApprovalPacketAndRuleLocation) {
  Decision d =
      engine_.decide(make_request("POST", kRefunds, R"({"amount":9000})"), "pay", Mode::normal);
  ASSERT_EQ(d.verdict, Verdict::hold);
  ASSERT_NE(d.approval, nullptr);
  EXPECT_EQ(d.approval->name, "issue_large_refund");
  EXPECT_EQ(d.approval->effect, "effect of issue_large_refund");
  EXPECT_EQ(d.cls, ActionClass::approval_required);
  EXPECT_EQ(d.runbook, "pay");
  EXPECT_EQ(d.runbook_sha256, "abc123");
  EXPECT_NE(d.reason.find("actions.yaml:"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("runbooks/pay.yaml:"), std::string::npos) << d.reason;
}

TEST_F(EngineTest, BodyOverInspectLimitDeniesOnlyWhenABodyMatcherIsACandidate) {
  Request refund = make_request("POST", kRefunds, R"({"amount":1)");
  refund.body_complete = false;
  Decision d = engine_.decide(refund, "pay", Mode::normal);
  EXPECT_EQ(d.verdict, Verdict::deny);
  EXPECT_EQ(d.code, "body_too_large");

  Request logs = make_request("GET", kLogs, "xxxx");
  logs.body_complete = false;
  EXPECT_EQ(engine_.decide(logs, "pay", Mode::normal).code, "allowed");
}

TEST_F(EngineTest, BatchReportsEveryCall) {
  std::string body = "[" + rpc("get_pods", "{}", 7) + "," + rpc("delete_deployment", "{}", 8) + "]";
  Decision d = engine_.decide(make_request("POST", kMcp, body), "pay", Mode::normal);
  EXPECT_TRUE(d.jsonrpc_batch);
  ASSERT_EQ(d.jsonrpc.size(), 2U);
  EXPECT_EQ(d.jsonrpc[0].id, 7);
  EXPECT_EQ(d.jsonrpc[0].tool, "get_pods");
  EXPECT_EQ(d.jsonrpc[0].verdict, Verdict::allow);
  EXPECT_EQ(d.jsonrpc[1].id, 8);
  EXPECT_EQ(d.jsonrpc[1].action, "delete_deployment");
  EXPECT_EQ(d.jsonrpc[1].verdict, Verdict::deny);
  EXPECT_EQ(d.verdict, Verdict::deny);
  EXPECT_EQ(d.matched_actions, (std::vector<std::string>{"mcp_read", "delete_deployment"}));
}

TEST_F(EngineTest, ExplainShowsMatchedAndNearMisses) {
  Request req = make_request("POST", kRefunds, R"({"amount":9000})");
  std::vector<MatcherExplanation> ex = engine_.explain(req, "pay");
  ASSERT_EQ(ex.size(), 3U); // small, large, changed-bank: same host and method
  int matched = 0;
  for (const MatcherExplanation& e : ex) {
    EXPECT_TRUE(e.cls.has_value());
    if (e.matched) {
      ++matched;
      EXPECT_EQ(e.action, "issue_large_refund");
    }
    if (e.action == "issue_small_refund") {
      ASSERT_FALSE(e.conditions.empty());
      const ConditionResult& last = e.conditions.back();
      EXPECT_EQ(last.condition, "body /amount lte 5000");
      EXPECT_FALSE(last.held);
      EXPECT_EQ(last.detail, "value is 9000");
      // Host, method and path held and were reported too.
      EXPECT_TRUE(e.conditions.front().held);
    }
  }
  EXPECT_EQ(matched, 1);
}

TEST_F(EngineTest, ExplainReportsUnevaluableBody) {
  Request req = make_request("POST", kRefunds, R"({"amount":1,"amount":2})");
  std::vector<MatcherExplanation> ex = engine_.explain(req, "pay");
  ASSERT_FALSE(ex.empty());
  EXPECT_FALSE(ex[0].matched);
  EXPECT_NE(ex[0].conditions.back().detail.find("body_duplicate_key"), std::string::npos);
}

// `diagnostics:` names (DESIGN §3): read_only unless allowed_actions lists them too.
std::shared_ptr<const Runbook> make_diag_runbook() {
  auto rb = std::make_shared<Runbook>();
  rb->name = "diag";
  rb->file = "runbooks/diag.yaml";
  int line = 3;
  for (const char* n : {"fetch_logs", "mcp_read", "run_database_migration", "issue_small_refund",
                        "fetch_metrics"}) {
    rb->diagnostic_actions.emplace(n, SourceMark{"runbooks/diag.yaml", line++, 15});
  }
  list(*rb, "run_database_migration", ActionClass::denied);
  list(*rb, "issue_small_refund", ActionClass::allowed);
  list(*rb, "fetch_metrics", ActionClass::approval_required);
  return rb;
}

class DiagnosticsTest : public ::testing::Test {
protected:
  DiagnosticsTest() : engine_(make_catalogue(), {make_diag_runbook()}) {}
  Engine engine_;
};

TEST_F(DiagnosticsTest, DiagnosticsOnlyActionIsAllowedAsReadOnly) {
  for (Mode mode : {Mode::normal, Mode::read_only}) {
    Decision d = engine_.decide(make_request("GET", kLogs), "diag", mode);
    EXPECT_EQ(d.verdict, Verdict::allow) << to_string(mode) << ": " << d.reason;
    EXPECT_EQ(d.code, "allowed");
    EXPECT_EQ(d.action, "fetch_logs");
    EXPECT_EQ(d.cls, ActionClass::read_only);
    // The reason names where the action is listed: under diagnostics, line 3.
    EXPECT_NE(d.reason.find("is read_only in runbook diag as a diagnostics action "
                            "(runbooks/diag.yaml:3)"),
              std::string::npos)
        << d.reason;
    EXPECT_EQ(d.reason.find("not listed"), std::string::npos) << d.reason;
  }
}

TEST_F(DiagnosticsTest, DiagnosticsOnlyMcpCallIsReadOnlyPerCall) {
  Decision d = engine_.decide(make_request("POST", kMcp, rpc("get_pods")), "diag", Mode::read_only);
  EXPECT_EQ(d.verdict, Verdict::allow) << d.reason;
  ASSERT_EQ(d.jsonrpc.size(), 1U);
  EXPECT_EQ(d.jsonrpc[0].action, "mcp_read");
  EXPECT_EQ(d.jsonrpc[0].cls, ActionClass::read_only);
}

TEST_F(DiagnosticsTest, DeniedWinsOverDiagnostics) {
  Decision d =
      engine_.decide(make_request("POST", "https://db.internal/migrate"), "diag", Mode::normal);
  EXPECT_EQ(d.verdict, Verdict::deny);
  EXPECT_EQ(d.code, "denied_by_runbook");
  EXPECT_EQ(d.cls, ActionClass::denied);
  EXPECT_EQ(d.reason.find("diagnostics"), std::string::npos) << d.reason;
}

TEST_F(DiagnosticsTest, AllowedActionsClassWinsOverDiagnostics) {
  // Listed under allowed too: its side effects keep it out of read_only mode.
  const Request refund = make_request("POST", kRefunds, R"({"amount":100})");
  EXPECT_EQ(engine_.decide(refund, "diag", Mode::normal).code, "allowed");
  Decision ro = engine_.decide(refund, "diag", Mode::read_only);
  EXPECT_EQ(ro.verdict, Verdict::deny);
  EXPECT_EQ(ro.code, "read_only_mode");
  EXPECT_EQ(ro.cls, ActionClass::allowed);
  // Listed under approval_required too: held, not passed as read_only.
  Decision held = engine_.decide(make_request("GET", "https://eu.metrics.internal/api/cpu"), "diag",
                                 Mode::normal);
  EXPECT_EQ(held.verdict, Verdict::hold);
  ASSERT_NE(held.approval, nullptr);
  EXPECT_EQ(held.approval->name, "fetch_metrics");
}

TEST_F(DiagnosticsTest, UnlistedActionMatchingTooStillWins) {
  // shadow_logs matches as well and is listed nowhere: more restrictive than read_only.
  Decision d = engine_.decide(make_request("GET", "https://logs.internal/api/v1/query/secret/x"),
                              "diag", Mode::normal);
  EXPECT_EQ(d.verdict, Verdict::deny);
  EXPECT_EQ(d.code, "not_in_runbook");
  EXPECT_EQ(d.action, "shadow_logs");
}

TEST_F(DiagnosticsTest, ExplainNamesTheDiagnosticsListing) {
  std::vector<MatcherExplanation> ex = engine_.explain(make_request("GET", kLogs), "diag");
  ASSERT_EQ(ex.size(), 2U); // fetch_logs matches; shadow_logs nearly does
  for (const MatcherExplanation& e : ex) {
    if (e.action == "fetch_logs") {
      EXPECT_TRUE(e.matched);
      EXPECT_EQ(e.cls, ActionClass::read_only);
      EXPECT_TRUE(e.diagnostics);
    } else {
      EXPECT_EQ(e.action, "shadow_logs");
      EXPECT_FALSE(e.cls.has_value());
      EXPECT_FALSE(e.diagnostics);
    }
  }
  std::vector<MatcherExplanation> refund =
      engine_.explain(make_request("POST", kRefunds, R"({"amount":100})"), "diag");
  for (const MatcherExplanation& e : refund) {
    EXPECT_FALSE(e.diagnostics) << e.action; // allowed_actions decides, not diagnostics
  }
}

TEST(EngineIndex, LargeCatalogueDecidesLikeSmall) {
  auto c = std::make_shared<Catalogue>();
  auto rb = std::make_shared<Runbook>();
  rb->name = "big";
  for (int i = 0; i < 1000; ++i) {
    std::string name = "act_" + std::to_string(i);
    std::string host = (i % 10 == 0) ? "*.zone" + std::to_string(i) + ".example.com"
                                     : "svc" + std::to_string(i) + ".internal";
    Action a;
    a.name = name;
    for (int j = 0; j < 5; ++j) {
      Matcher m = http(j % 2 == 0 ? "GET" : "POST", host.c_str(),
                       ("/v" + std::to_string(j) + "/**").c_str());
      a.matchers.push_back(std::move(m));
    }
    c->actions.emplace(name, std::move(a));
    list(*rb, name.c_str(), i % 3 == 0 ? ActionClass::denied : ActionClass::allowed);
  }
  Engine engine(c, {rb});
  EXPECT_EQ(
      engine.decide(make_request("GET", "https://svc7.internal/v2/x"), "big", Mode::normal).action,
      "act_7");
  EXPECT_EQ(
      engine.decide(make_request("POST", "https://svc7.internal/v2/x"), "big", Mode::normal).code,
      "unmatched");
  Decision w =
      engine.decide(make_request("GET", "https://a.b.zone30.example.com/v4"), "big", Mode::normal);
  EXPECT_EQ(w.action, "act_30");
  EXPECT_EQ(w.code, "denied_by_runbook");
  EXPECT_EQ(
      engine.decide(make_request("GET", "https://svc8.internal/v1/x"), "big", Mode::normal).code,
      "unmatched");
}

} // namespace
} // namespace runwarden::policy
