// Pins the intended decisions of every bundled example runbook (examples/), so an
// edit to the catalogue or a runbook that changes what an agent may do fails here.

#include "config/config.hpp"
#include "config/runbook_loader.hpp"
#include "policy/engine.hpp"
#include "policy/request.hpp"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::config {
namespace {

using policy::Mode;
using policy::Verdict;

struct Case {
  const char* runbook;
  const char* method;
  const char* url;
  const char* body; // nullptr: none
  Verdict verdict;
  const char* code;   // Decision::code
  const char* action; // deciding action; "" when nothing matched; nullptr: not checked
  Mode mode = Mode::normal;
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << c.runbook << ": " << c.method << " " << c.url << (c.body ? " " : "")
            << (c.body ? c.body : "");
}

class Examples : public ::testing::TestWithParam<Case> {
public:
  static void SetUpTestSuite() {
    config_ = load_config(std::filesystem::path(RUNWARDEN_SOURCE_DIR) / "examples/runwarden.yaml");
  }
  static void TearDownTestSuite() { config_.reset(); }

protected:
  static std::shared_ptr<const Config> config_;
};
std::shared_ptr<const Config> Examples::config_;

std::string mcp_call(const std::string& tool, const std::string& args) {
  return R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":")" + tool +
         R"(","arguments":)" + args + "}}";
}

TEST(ExamplesConfig, LoadsWithTheDemoActiveAndTheRealRunbooksSelectable) {
  const auto config =
      load_config(std::filesystem::path(RUNWARDEN_SOURCE_DIR) / "examples/runwarden.yaml");
  EXPECT_EQ(config->active_runbook, "demo");
  EXPECT_EQ(config->listen.proxy.to_string(), "127.0.0.1:15001");
  EXPECT_EQ(config->listen.admin.to_string(), "127.0.0.1:15000");
  EXPECT_EQ(config->selectable_runbooks,
            (std::vector<std::string>{"payment-api-latency", "support-refunds",
                                      "sales-crm-enrichment", "mcp-operations"}));
  std::vector<std::string> names;
  for (const auto& rb : config->runbooks) {
    names.push_back(rb->name);
    EXPECT_EQ(rb->sha256.size(), 64u);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"demo", "mcp-operations", "payment-api-latency",
                                             "sales-crm-enrichment", "support-refunds"}));
  EXPECT_TRUE(config->approvals.on_timeout == "deny");
  EXPECT_TRUE(config->audit.fsync_always);
  // Every catalogue action is used by at least one runbook (under allowed_actions or
  // diagnostics): no dead policy.
  for (const auto& [name, action] : config->catalogue->actions) {
    bool used = false;
    for (const auto& rb : config->runbooks) {
      used = used || rb->actions.count(name) != 0 || rb->diagnostic_actions.count(name) != 0;
    }
    EXPECT_TRUE(used) << name;
  }
  // `runwarden check` passes them without warnings: every diagnostics-only action only reads.
  for (const auto& rb : config->runbooks) {
    EXPECT_EQ(runbook_warnings(*rb, *config->catalogue), std::vector<std::string>{}) << rb->name;
  }
}

TEST_P(Examples, Decides) {
  const Case& c = GetParam();
  ASSERT_TRUE(config_);
  policy::Request req;
  ASSERT_EQ(policy::normalize_absolute_url(c.url, req), policy::NormalizeError::ok) << c;
  req.method = c.method;
  if (c.body != nullptr) {
    req.body = c.body;
    req.headers.push_back({"Content-Type", "application/json"});
  }
  const policy::Decision d = config_->engine->decide(req, c.runbook, c.mode);
  EXPECT_EQ(d.verdict, c.verdict) << c << "\n  reason: " << d.reason;
  EXPECT_EQ(d.code, c.code) << c << "\n  reason: " << d.reason;
  if (c.action != nullptr) {
    EXPECT_EQ(d.action, c.action) << c << "\n  reason: " << d.reason;
  }
  EXPECT_EQ(d.runbook, c.runbook);
  EXPECT_EQ(d.runbook_sha256, config_->engine->runbook(c.runbook)->sha256);
}

// clang-format off
const Case kDemo[] = {
  {"demo", "GET", "http://127.0.0.1:18080/status", nullptr, Verdict::allow, "allowed", "demo_status"},
  {"demo", "GET", "http://127.0.0.1:18080/logs/app/today", nullptr, Verdict::allow, "allowed", "demo_read_logs"},
  {"demo", "GET", "http://127.0.0.1:18080/logs/../status", nullptr, Verdict::allow, "allowed", "demo_status"},
  {"demo", "POST", "http://127.0.0.1:18080/tickets", R"({"subject":"late order"})", Verdict::allow, "allowed", "demo_open_ticket"},
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({"amount":1200})", Verdict::allow, "allowed", "demo_small_refund"},
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({"amount":5000})", Verdict::allow, "allowed", "demo_small_refund"},
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({"amount":5001})", Verdict::hold, "approval_required", "demo_large_refund"},
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({"amount":90000})", Verdict::hold, "approval_required", "demo_large_refund"},
  // A string amount or no amount satisfies neither threshold: unmatched, denied.
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({"amount":"1200"})", Verdict::deny, "unmatched", ""},
  {"demo", "POST", "http://127.0.0.1:18080/refunds", R"({})", Verdict::deny, "unmatched", ""},
  {"demo", "DELETE", "http://127.0.0.1:18080/customers/42", nullptr, Verdict::deny, "denied_by_runbook", "demo_delete_anything"},
  {"demo", "DELETE", "http://127.0.0.1:18080/", nullptr, Verdict::deny, "denied_by_runbook", "demo_delete_anything"},
  {"demo", "GET", "http://127.0.0.1:18080/admin", nullptr, Verdict::deny, "unmatched", ""},
  {"demo", "GET", "http://127.0.0.1:18081/status", nullptr, Verdict::deny, "unmatched", ""},
  {"demo", "GET", "https://127.0.0.1:18080/status", nullptr, Verdict::deny, "unmatched", ""},
  {"demo", "get", "http://127.0.0.1:18080/status", nullptr, Verdict::deny, "unmatched", ""},
  {"demo", "GET", "http://127.0.0.1:18080/status", nullptr, Verdict::allow, "allowed", "demo_status", Mode::read_only},
  {"demo", "POST", "http://127.0.0.1:18080/tickets", R"({})", Verdict::deny, "read_only_mode", "demo_open_ticket", Mode::read_only},
  {"demo", "GET", "http://127.0.0.1:18080/status", nullptr, Verdict::paused, "runwarden_paused", nullptr, Mode::paused},
};

const Case kPayments[] = {
  {"payment-api-latency", "GET", "https://logs.internal/api/v1/query/payments?since=1h", nullptr, Verdict::allow, "allowed", "fetch_logs"},
  {"payment-api-latency", "GET", "https://metrics.internal/api/v1/query_range?query=p95", nullptr, Verdict::allow, "allowed", "fetch_metrics"},
  {"payment-api-latency", "GET", "https://deploy.internal/api/v1/deployments?service=payment-api", nullptr, Verdict::allow, "allowed", "query_recent_deploys"},
  {"payment-api-latency", "GET", "https://deploy.internal/api/v1/deployments?service=checkout", nullptr, Verdict::deny, "unmatched", ""},
  {"payment-api-latency", "GET", "https://traces.internal/api/traces/abc123", nullptr, Verdict::allow, "allowed", "inspect_payment_api_traces"},
  {"payment-api-latency", "POST", "https://incidents.internal/api/v1/incidents/INC-42/summary", R"({"text":"p95 up"})", Verdict::allow, "allowed", "open_incident_summary"},
  {"payment-api-latency", "POST", "https://mcp.k8s.internal/mcp", R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})", Verdict::allow, "allowed", "mcp_session"},
  {"payment-api-latency", "POST", "https://mcp.k8s.internal/mcp", R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"restart_deployment","arguments":{"namespace":"payments","name":"payment-workers"}}})", Verdict::hold, "approval_required", "restart_payment_workers"},
  {"payment-api-latency", "POST", "https://mcp.k8s.internal/mcp", R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"restart_deployment","arguments":{"namespace":"checkout","name":"payment-workers"}}})", Verdict::deny, "unmatched", nullptr},
  {"payment-api-latency", "PATCH", "https://flags.internal/api/v1/flags/webhook_retries", R"({"enabled":false})", Verdict::hold, "approval_required", "disable_noncritical_webhook_retries"},
  {"payment-api-latency", "POST", "https://deploy.internal/api/v1/migrations/2024_11_add_index", R"({})", Verdict::deny, "denied_by_runbook", "run_database_migration"},
  {"payment-api-latency", "POST", "https://vault.internal/v1/transit/keys/stripe/rotate", nullptr, Verdict::deny, "denied_by_runbook", "rotate_payment_provider_keys"},
  // A catalogue action this runbook does not list is not allowed.
  {"payment-api-latency", "POST", "https://api.stripe.com/v1/refunds", R"({"amount":100,"charge":"ch_1"})", Verdict::deny, "not_in_runbook", "issue_small_refund"},
  {"payment-api-latency", "POST", "https://incidents.internal/api/v1/incidents/INC-42/summary", R"({})", Verdict::deny, "read_only_mode", "open_incident_summary", Mode::read_only},
  // Diagnostics actions are read_only: they pass in read_only mode too.
  {"payment-api-latency", "GET", "https://deploy.internal/api/v1/deployments?service=payment-api", nullptr, Verdict::allow, "allowed", "query_recent_deploys", Mode::read_only},
  {"payment-api-latency", "GET", "https://traces.internal/api/traces/abc123", nullptr, Verdict::allow, "allowed", "inspect_payment_api_traces", Mode::read_only},
};

const Case kRefunds[] = {
  {"support-refunds", "GET", "https://api.stripe.com/v1/charges/ch_123", nullptr, Verdict::allow, "allowed", "stripe_read"},
  {"support-refunds", "GET", "https://acme.zendesk.com/api/v2/tickets/991.json", nullptr, Verdict::allow, "allowed", "zendesk_read_ticket"},
  {"support-refunds", "PUT", "https://acme.zendesk.com/api/v2/tickets/991.json", R"({"ticket":{"comment":{"body":"Refunded."}}})", Verdict::allow, "allowed", "zendesk_reply"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":1200})", Verdict::allow, "allowed", "issue_small_refund"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":5000})", Verdict::allow, "allowed", "issue_small_refund"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":90000})", Verdict::hold, "approval_required", "issue_large_refund"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1"})", Verdict::hold, "approval_required", "issue_full_refund"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"payment_intent":"pi_1","amount":100})", Verdict::deny, "unmatched", ""},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":1200,"destination":"ba_9"})", Verdict::deny, "denied_by_runbook", "refund_to_other_destination"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":90000,"bank_account":{"iban":"DE89"}})", Verdict::deny, "denied_by_runbook", "refund_to_other_destination"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/disputes/dp_1/close", nullptr, Verdict::deny, "denied_by_runbook", "respond_to_dispute"},
  {"support-refunds", "POST", "https://api.stripe.com/v1/customers/cus_1/sources", R"({"source":"btok_1"})", Verdict::deny, "denied_by_runbook", "change_customer_bank_details"},
  {"support-refunds", "DELETE", "https://api.stripe.com/v1/customers/cus_1/sources/ba_1", nullptr, Verdict::deny, "denied_by_runbook", "change_customer_bank_details"},
  {"support-refunds", "GET", "https://api.stripe.com/v1/charges/ch_123", nullptr, Verdict::allow, "allowed", "stripe_read", Mode::read_only},
  {"support-refunds", "POST", "https://api.stripe.com/v1/refunds", R"({"charge":"ch_1","amount":1200})", Verdict::deny, "read_only_mode", "issue_small_refund", Mode::read_only},
};

const Case kCrm[] = {
  {"sales-crm-enrichment", "GET", "https://acme.my.salesforce.com/services/data/v59.0/sobjects/Account/001xx", nullptr, Verdict::allow, "allowed", "crm_read"},
  {"sales-crm-enrichment", "GET", "https://acme.my.salesforce.com/services/data/v59.0/query?q=SELECT+Id+FROM+Account", nullptr, Verdict::allow, "allowed", "crm_read"},
  {"sales-crm-enrichment", "GET", "https://company.clearbit.com/v2/companies/find?domain=example.com", nullptr, Verdict::allow, "allowed", "enrichment_lookup"},
  {"sales-crm-enrichment", "POST", "https://acme.my.salesforce.com/services/data/v59.0/sobjects/Note", R"({"Title":"Enriched","ParentId":"001xx"})", Verdict::allow, "allowed", "crm_draft_note"},
  {"sales-crm-enrichment", "PATCH", "https://acme.my.salesforce.com/services/data/v59.0/sobjects/Account/001xx", R"({"Industry":"Retail"})", Verdict::hold, "approval_required", "crm_overwrite_record"},
  {"sales-crm-enrichment", "DELETE", "https://acme.my.salesforce.com/services/data/v59.0/sobjects/Account/001xx", nullptr, Verdict::deny, "denied_by_runbook", "crm_delete_record"},
  {"sales-crm-enrichment", "POST", "https://acme.my.salesforce.com/services/data/v59.0/composite/batch", R"({"batchRequests":[]})", Verdict::deny, "denied_by_runbook", "crm_composite_batch"},
  {"sales-crm-enrichment", "POST", "https://acme.my.salesforce.com/services/data/v59.0/sobjects/Account", R"({"Name":"New"})", Verdict::deny, "unmatched", ""},
  {"sales-crm-enrichment", "GET", "https://evil.example/services/data/v59.0/sobjects/Account/1", nullptr, Verdict::deny, "unmatched", ""},
  {"sales-crm-enrichment", "GET", "https://company.clearbit.com/v2/companies/find?domain=example.com", nullptr, Verdict::allow, "allowed", "enrichment_lookup", Mode::read_only},
};

const std::string kRestart = mcp_call("restart_deployment", R"({"namespace":"search","name":"api"})");
const std::string kDelete = mcp_call("delete_namespace", R"({"namespace":"search"})");
const std::string kScaleZero = mcp_call("scale_deployment", R"({"namespace":"search","name":"api","replicas":0})");
const std::string kScaleThree = mcp_call("scale_deployment", R"({"namespace":"search","name":"api","replicas":3})");
const std::string kListPods = mcp_call("list_pods", R"({"namespace":"search"})");
const std::string kBatch = "[" + kListPods + "," + kDelete + "]";

const Case kMcp[] = {
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})", Verdict::allow, "allowed", "mcp_session"},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", R"({"jsonrpc":"2.0","id":2,"method":"tools/list"})", Verdict::allow, "allowed", "mcp_session"},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kListPods.c_str(), Verdict::allow, "allowed", "mcp_k8s_read"},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kRestart.c_str(), Verdict::hold, "approval_required", "mcp_k8s_restart"},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kDelete.c_str(), Verdict::deny, "denied_by_runbook", "mcp_k8s_destructive"},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kScaleZero.c_str(), Verdict::deny, "denied_by_runbook", "mcp_k8s_destructive"},
  // Unknown tool use is escalated to a human (unmatched: approval), not silently allowed.
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kScaleThree.c_str(), Verdict::hold, "unmatched", ""},
  // A batch hiding one destructive call among reads is denied as a whole.
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kBatch.c_str(), Verdict::deny, "denied_by_runbook", nullptr},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kRestart.c_str(), Verdict::deny, "read_only_mode", nullptr, Mode::read_only},
  {"mcp-operations", "POST", "https://mcp.platform.internal/mcp", kListPods.c_str(), Verdict::allow, "allowed", "mcp_k8s_read", Mode::read_only},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Demo, Examples, ::testing::ValuesIn(kDemo));
INSTANTIATE_TEST_SUITE_P(PaymentApiLatency, Examples, ::testing::ValuesIn(kPayments));
INSTANTIATE_TEST_SUITE_P(SupportRefunds, Examples, ::testing::ValuesIn(kRefunds));
INSTANTIATE_TEST_SUITE_P(SalesCrmEnrichment, Examples, ::testing::ValuesIn(kCrm));
INSTANTIATE_TEST_SUITE_P(McpOperations, Examples, ::testing::ValuesIn(kMcp));

} // namespace
} // namespace runwarden::config
