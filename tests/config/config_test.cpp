// Config loader tests: every error kind, with its exact file:line:col message.

#include "config/config.hpp"
#include "config/runbook_loader.hpp"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::config {
namespace {

namespace fs = std::filesystem;

constexpr const char* kConfig = R"(listen:
  proxy: 127.0.0.1:15001
  admin: 127.0.0.1:15000
agent: {id: test-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: rb
)";

constexpr const char* kActions = R"(actions:
  read_logs:
    - {method: GET, host: logs.internal, path: "/logs/**"}
  refund:
    - method: POST
      host: api.stripe.com
      path: /v1/refunds
      body: {/amount: {lte: 5000}}
  delete_all:
    - {method: DELETE, host: api.stripe.com, path: "/**"}
)";

constexpr const char* kRunbook = R"(runbook: rb
allowed_actions:
  read_only: [read_logs]
  allowed: [refund]
  denied: [delete_all]
)";

class ConfigTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "runwarden-config-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "runbooks");
    write("runwarden.yaml", kConfig);
    write("actions.yaml", kActions);
    write("runbooks/rb.yaml", kRunbook);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void write(const std::string& name, const std::string& text) {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream out(dir_ / name, std::ios::binary | std::ios::trunc);
    out << text;
  }

  /// The errors load_config reports (empty when it loads).
  std::vector<std::string> errors() {
    try {
      config_ = load_config(dir_ / "runwarden.yaml");
      return {};
    } catch (const ConfigError& e) {
      return e.errors();
    }
  }

  /// "<dir>/name:" so expectations read like the messages an operator sees.
  std::string at(const std::string& name) const { return (dir_ / name).string() + ":"; }

  std::vector<std::string> one(const std::string& file, const std::string& rest) const {
    return {at(file) + rest};
  }

  fs::path dir_;
  std::shared_ptr<const Config> config_;
};

TEST_F(ConfigTest, ValidConfigLoadsIntoTypedObjects) {
  ASSERT_EQ(errors(), std::vector<std::string>{});
  ASSERT_TRUE(config_);
  EXPECT_EQ(config_->listen.proxy.to_string(), "127.0.0.1:15001");
  EXPECT_EQ(config_->listen.admin.port, 15000);
  EXPECT_TRUE(config_->listen.transparent.empty());
  EXPECT_EQ(config_->agent_id, "test-agent");
  EXPECT_EQ(config_->catalogue_file, dir_ / "actions.yaml");
  EXPECT_EQ(config_->catalogue->actions.size(), 3u);
  ASSERT_EQ(config_->runbooks.size(), 1u);
  const auto& rb = *config_->runbooks[0];
  EXPECT_EQ(rb.name, "rb");
  EXPECT_EQ(rb.file, (dir_ / "runbooks/rb.yaml").string());
  EXPECT_EQ(rb.sha256, sha256_hex(kRunbook));
  EXPECT_EQ(rb.unmatched, policy::Unmatched::deny);
  EXPECT_EQ(rb.actions.at("read_logs").cls, policy::ActionClass::read_only);
  EXPECT_EQ(rb.actions.at("refund").cls, policy::ActionClass::allowed);
  EXPECT_EQ(rb.actions.at("delete_all").cls, policy::ActionClass::denied);
  EXPECT_EQ(rb.actions.at("refund").mark.line, 4);
  ASSERT_TRUE(config_->engine);
  EXPECT_NE(config_->engine->runbook("rb"), nullptr);
  // Defaults.
  EXPECT_EQ(config_->approvals.hold_timeout, std::chrono::minutes(10));
  EXPECT_EQ(config_->audit.path, dir_ / "audit/audit.jsonl");
  EXPECT_EQ(config_->limits.inspect_body_bytes, 1024u * 1024);
}

TEST_F(ConfigTest, Sha256IsOverTheFileBytes) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(ConfigTest, EveryKnownSectionParses) {
  write("runwarden.yaml", std::string(R"(listen:
  proxy: "[::1]:15001"
  transparent: 0.0.0.0:15006
  admin: 127.0.0.1:0
agent: {id: a}
catalogue: actions.yaml
runbooks: runbooks
active_runbook: rb
selectable_runbooks: [rb]
tls:
  ca_cert: certs/ca.pem
  ca_key: /etc/runwarden/ca.key
  upstream_trust: trust/bundle.pem
  passthrough: ["*.bank.example", pinned.example.com]
approvals:
  hold_timeout: 15m
  on_timeout: deny
  max_pending: 50
  webhooks: [{url: "https://ops.example/hook", secret_env: HOOK_SECRET}]
  operator_tokens_file: tokens.txt
audit:
  path: /var/log/runwarden/audit.jsonl
  fsync: 50ms
  body_bytes: 4KiB
  rotate_bytes: 1GiB
  signing_key: keys/audit.pem
  checkpoint_records: 500
  checkpoint_interval: 30s
redaction:
  headers: [X-Session]
  json_keys: [IBAN]
  patterns: ["tok_[a-z0-9]+"]
limits:
  header_bytes: 32KiB
  header_count: 64
  inspect_body_bytes: 2MiB
  header_timeout: 5s
  idle_timeout: 2m
  upstream_connect_timeout: 3s
  upstream_response_timeout: 1h
  max_connections: 20
  max_json_depth: 32
kill_switch_file: run/PAUSE
threads: 2
)"));
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const Config& c = *config_;
  EXPECT_EQ(c.listen.proxy.host, "::1");
  EXPECT_EQ(c.listen.proxy.to_string(), "[::1]:15001");
  ASSERT_EQ(c.listen.transparent.size(), 1u);
  EXPECT_EQ(c.listen.transparent[0].to_string(), "0.0.0.0:15006");
  EXPECT_EQ(c.listen.admin.port, 0);
  EXPECT_EQ(c.selectable_runbooks, std::vector<std::string>{"rb"});
  EXPECT_EQ(c.tls.ca_cert, dir_ / "certs/ca.pem");
  EXPECT_EQ(c.tls.ca_key, fs::path("/etc/runwarden/ca.key"));
  EXPECT_EQ(c.tls.upstream_trust, (dir_ / "trust/bundle.pem").string());
  ASSERT_EQ(c.tls.passthrough.size(), 2u);
  EXPECT_TRUE(c.tls.passthrough[0].is_wildcard());
  EXPECT_EQ(c.approvals.hold_timeout, std::chrono::minutes(15));
  EXPECT_EQ(c.approvals.max_pending, 50u);
  ASSERT_EQ(c.approvals.webhooks.size(), 1u);
  EXPECT_EQ(c.approvals.webhooks[0].secret_env, "HOOK_SECRET");
  EXPECT_EQ(c.approvals.operator_tokens_file, dir_ / "tokens.txt");
  EXPECT_FALSE(c.audit.fsync_always);
  EXPECT_EQ(c.audit.fsync_interval, std::chrono::milliseconds(50));
  EXPECT_EQ(c.audit.body_bytes, 4096u);
  EXPECT_EQ(c.audit.rotate_bytes, 1024u * 1024 * 1024);
  EXPECT_EQ(c.audit.checkpoint_records, 500u);
  EXPECT_EQ(c.redaction.headers, std::vector<std::string>{"x-session"});
  EXPECT_EQ(c.redaction.json_keys, std::vector<std::string>{"iban"});
  EXPECT_EQ(c.limits.header_count, 64u);
  EXPECT_EQ(c.limits.inspect_body_bytes, 2u * 1024 * 1024);
  EXPECT_EQ(c.limits.idle_timeout, std::chrono::minutes(2));
  EXPECT_EQ(c.limits.max_json_depth, 32u);
  EXPECT_EQ(c.kill_switch_file, dir_ / "run/PAUSE");
  EXPECT_EQ(c.threads, 2u);
}

TEST_F(ConfigTest, AgentRunsSaysWhatACallWithoutARunBelongsTo) {
  ASSERT_TRUE(errors().empty());
  EXPECT_EQ(config_->run_ids, RunIds::per_connection); // the default
  const std::string base(kConfig);
  const auto with_runs = [&](const std::string& value) {
    std::string text = base;
    text.replace(text.find("agent: {id: test-agent}"), 23,
                 "agent: {id: test-agent, runs: " + value + "}");
    write("runwarden.yaml", text);
  };
  with_runs("shared");
  ASSERT_TRUE(errors().empty());
  EXPECT_EQ(config_->run_ids, RunIds::shared);
  with_runs("required");
  ASSERT_TRUE(errors().empty());
  EXPECT_EQ(config_->run_ids, RunIds::required);
  with_runs("per_run");
  auto errs = errors();
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].find("agent.runs must be per_connection, shared or required, not "
                         "\"per_run\""),
            std::string::npos)
      << errs[0];
}

TEST_F(ConfigTest, UnknownKeyInConfigSuggestsTheClosest) {
  write("runwarden.yaml", std::string(kConfig) + "limits: {idle_timout: 10s}\n");
  EXPECT_EQ(errors(), one("runwarden.yaml",
                          "8:10: limits.idle_timout: unknown key \"idle_timout\" (did you mean "
                          "\"idle_timeout\"?)"));
}

TEST_F(ConfigTest, UnknownKeyWithNothingCloseHasNoSuggestion) {
  write("runwarden.yaml", std::string(kConfig) + "frobnicate: 1\n");
  EXPECT_EQ(errors(), one("runwarden.yaml", "8:1: frobnicate: unknown key \"frobnicate\""));
}

TEST_F(ConfigTest, UnknownMatcherKey) {
  write("actions.yaml", R"(actions:
  read_logs:
    - method: GET
      pathh: /logs
  refund: [{method: POST}]
  delete_all: [{method: DELETE}]
)");
  EXPECT_EQ(errors(), one("actions.yaml", "4:7: actions.read_logs[0].pathh: unknown key \"pathh\" "
                                          "(did you mean \"path\"?)"));
}

TEST_F(ConfigTest, DuplicateYamlKeysAreErrors) {
  write("actions.yaml", R"(actions:
  read_logs:
    - {method: GET, host: logs.internal, method: POST}
  refund: [{method: POST}]
  delete_all: [{method: DELETE}]
  refund: [{method: PUT}]
)");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("actions.yaml") + "3:42: actions.read_logs[0].method: duplicate key "
                                               "\"method\" (first defined at line 3)",
                          at("actions.yaml") + "6:3: actions.refund: duplicate key \"refund\" "
                                               "(first defined at line 4)",
                      }));
}

TEST_F(ConfigTest, UnknownActionInRunbook) {
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  read_only: [read_logs]
  denied:
    - delete_all
    - refnud
    - rotate_keys
)");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("runbooks/rb.yaml") + "6:7: allowed_actions.denied[1]: unknown action "
                                                   "\"refnud\" (did you mean \"refund\"?)",
                          at("runbooks/rb.yaml") +
                              "7:7: allowed_actions.denied[2]: unknown action "
                              "\"rotate_keys\" (not in the catalogue " +
                              (dir_ / "actions.yaml").string() + ")",
                      }));
}

TEST_F(ConfigTest, DiagnosticsMustNameCatalogueActions) {
  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: [read_logs, no_such_action_at_all, read_log]
allowed_actions:
  read_only: [read_logs]
)");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("runbooks/rb.yaml") +
                              "2:26: diagnostics[1]: unknown action "
                              "\"no_such_action_at_all\" (not in the catalogue " +
                              (dir_ / "actions.yaml").string() + ")",
                          at("runbooks/rb.yaml") + "2:49: diagnostics[2]: unknown action "
                                                   "\"read_log\" (did you mean \"read_logs\"?)",
                      }));
  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: read_logs
allowed_actions:
  read_only: [read_logs]
)");
  EXPECT_EQ(errors(), one("runbooks/rb.yaml", "2:14: diagnostics: expected a list, got a scalar"));
  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: [read_logs]
allowed_actions:
  read_only: [read_logs]
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  EXPECT_EQ(config_->runbooks.at(0)->diagnostics, nlohmann::json::array({"read_logs"}));
}

TEST_F(ConfigTest, DiagnosticsActionsAreReadOnlyUnlessListedElsewhere) {
  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: [read_logs, delete_all]
allowed_actions:
  allowed: [refund]
  denied: [delete_all]
budgets: {actions: {read_logs: 50}}
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const policy::Runbook& rb = *config_->runbooks.at(0);
  ASSERT_EQ(rb.diagnostic_actions.size(), 2U);
  EXPECT_EQ(rb.diagnostic_actions.at("read_logs").line, 2);
  EXPECT_EQ(rb.diagnostic_actions.at("read_logs").col, 15);
  EXPECT_EQ(rb.actions.count("read_logs"), 0U); // not copied into allowed_actions
  EXPECT_EQ(rb.budgets.actions.at("read_logs"), 50U);

  policy::Request logs;
  ASSERT_EQ(policy::normalize_absolute_url("https://logs.internal/logs/today", logs),
            policy::NormalizeError::ok);
  logs.method = "GET";
  const policy::Decision d = config_->engine->decide(logs, "rb", policy::Mode::read_only);
  EXPECT_EQ(d.verdict, policy::Verdict::allow) << d.reason;
  EXPECT_EQ(d.cls, policy::ActionClass::read_only);
  EXPECT_NE(d.reason.find("as a diagnostics action (" + at("runbooks/rb.yaml") + "2)"),
            std::string::npos)
      << d.reason;

  policy::Request del;
  ASSERT_EQ(policy::normalize_absolute_url("https://api.stripe.com/v1/customers/cus_1", del),
            policy::NormalizeError::ok);
  del.method = "DELETE";
  const policy::Decision denied = config_->engine->decide(del, "rb", policy::Mode::normal);
  EXPECT_EQ(denied.code, "denied_by_runbook") << denied.reason;
}

TEST_F(ConfigTest, CheckWarnsWhenADiagnosticsActionCanHaveSideEffects) {
  write("actions.yaml", std::string(kActions) + R"(  search_logs:
    - {method: [GET, POST], host: logs.internal, path: /search}
  head_logs:
    - {method: [HEAD, OPTIONS], host: logs.internal, path: /logs}
  anything_logs:
    - {host: logs.internal, path: /any}
  mcp_pods:
    - {method: GET, host: mcp.internal, path: /mcp, mcp: {tool: list_pods}}
)");
  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: [read_logs, search_logs, head_logs, anything_logs, mcp_pods, refund, delete_all]
allowed_actions:
  allowed: [refund]
  read_only: [delete_all]
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const std::string rb = at("runbooks/rb.yaml");
  const std::string actions = at("actions.yaml");
  const std::string tail = "); listing it under diagnostics makes it read_only, so it passes even "
                           "in read_only mode. If it can change anything, list it under "
                           "allowed_actions (allowed or approval_required) instead";
  // Name order. read_logs and head_logs only read; refund and delete_all are listed under
  // allowed_actions, whose class decides, so diagnostics grants them nothing.
  EXPECT_EQ(runbook_warnings(*config_->runbooks.at(0), *config_->catalogue),
            (std::vector<std::string>{
                rb + "2:50: diagnostics: warning: action \"anything_logs\" can match any method (" +
                    actions + "16" + tail,
                rb +
                    "2:65: diagnostics: warning: action \"mcp_pods\" can match an MCP tools/call "
                    "of \"list_pods\", which may have side effects (" +
                    actions + "18" + tail,
                rb + "2:26: diagnostics: warning: action \"search_logs\" can match POST (" +
                    actions + "12" + tail,
            }));

  write("runbooks/rb.yaml", R"(runbook: rb
diagnostics: [read_logs, head_logs]
allowed_actions:
  read_only: [search_logs]
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  EXPECT_EQ(runbook_warnings(*config_->runbooks.at(0), *config_->catalogue),
            std::vector<std::string>{});
}

TEST_F(ConfigTest, RollbackRequiredBeforeExecutionNeedsARollbackOnEveryApproval) {
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  read_only: [read_logs]
  approval_required:
    - refund
    - action: delete_all
      rollback: "restore from the nightly snapshot"
rollback: {owner: payments-on-call, required_before_execution: true}
)");
  EXPECT_EQ(errors(),
            one("runbooks/rb.yaml",
                "5:7: allowed_actions.approval_required[0]: approval_required action \"refund\" "
                "states no rollback, but this runbook requires one before execution "
                "(rollback.required_before_execution: true, line 8); add `rollback: \"...\"` to "
                "the entry"));
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  approval_required:
    - {action: refund, rollback: "refund the refund"}
unmatched: approval
rollback: {required_before_execution: true}
)");
  EXPECT_EQ(errors(),
            one("runbooks/rb.yaml",
                "5:12: unmatched: unmatched: approval would let an approver release a request no "
                "action describes, with no rollback, but this runbook requires one before "
                "execution (rollback.required_before_execution: true, line 6); use unmatched: "
                "deny"));
  // Satisfied: every approval states its rollback.
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  allowed: [read_logs]
  approval_required:
    - {action: refund, rollback: "refund the refund"}
rollback: {owner: payments-on-call, required_before_execution: true}
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  EXPECT_EQ(config_->runbooks.at(0)->rollback,
            (nlohmann::json{{"owner", "payments-on-call"}, {"required_before_execution", true}}));
  // false asks for nothing; unknown keys and wrong types are errors, not ignored.
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  approval_required: [refund]
rollback: {owner: x, required_before_execution: false}
)");
  EXPECT_EQ(errors(), std::vector<std::string>{});
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  approval_required: [refund]
rollback: {owner: x, required_before_exec: true, required_before_execution: "yes"}
)");
  const auto errs = errors();
  ASSERT_EQ(errs.size(), 2u) << ::testing::PrintToString(errs);
  EXPECT_NE(errs[0].find("unknown key \"required_before_exec\""), std::string::npos) << errs[0];
  EXPECT_NE(errs[1].find("rollback.required_before_execution"), std::string::npos) << errs[1];
}

TEST_F(ConfigTest, ServeRequirementsNameTheMissingTlsKeys) {
  // kConfig has no tls: it loads (explain and tools need no CA), but serve could not start,
  // and check says so by key.
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const auto missing = serve_requirements(*config_);
  ASSERT_EQ(missing.size(), 2u);
  EXPECT_EQ(missing[0].rfind((dir_ / "runwarden.yaml").string() + ": tls.ca_cert: not set; ", 0),
            0u)
      << missing[0];
  EXPECT_EQ(missing[1].rfind((dir_ / "runwarden.yaml").string() + ": tls.ca_key: not set; ", 0), 0u)
      << missing[1];
  write("runwarden.yaml",
        std::string(kConfig) + "tls: {ca_cert: certs/ca.pem, ca_key: certs/ca.key}\n");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  EXPECT_EQ(serve_requirements(*config_), std::vector<std::string>{});
}

TEST_F(ConfigTest, ActionInTwoClasses) {
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  allowed: [refund]
  approval_required:
    - action: refund
      risk: high
)");
  EXPECT_EQ(errors(),
            one("runbooks/rb.yaml",
                "5:15: allowed_actions.approval_required[0]: action \"refund\" is already listed "
                "at allowed_actions.allowed[0] (line 3); an action belongs to exactly one class"));
}

TEST_F(ConfigTest, RunbookEntryDetailsAreKept) {
  write("runbooks/rb.yaml", R"(runbook: rb
owner: payments-on-call
trigger: {alert: latency_high, threshold: "400", page: true, runbook_url: null}
allowed_actions:
  approval_required:
    - action: refund
      risk: medium
      effect: "money moves"
      rollback: "none"
      approvers: [alice, bob]
      timeout: 15m
      wait: 30s
unmatched: approval
budgets: {calls: 200, denied: 0, per_minute: 60}
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const auto& rb = *config_->runbooks[0];
  EXPECT_EQ(rb.owner, "payments-on-call");
  EXPECT_EQ(rb.trigger,
            nlohmann::json::parse(
                R"({"alert":"latency_high","threshold":"400","page":true,"runbook_url":null})"));
  const auto& a = rb.actions.at("refund");
  EXPECT_EQ(a.cls, policy::ActionClass::approval_required);
  EXPECT_EQ(a.risk, "medium");
  EXPECT_EQ(a.effect, "money moves");
  EXPECT_EQ(a.approvers, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(a.timeout, std::chrono::minutes(15));
  EXPECT_EQ(a.wait, std::chrono::seconds(30));
  EXPECT_EQ(rb.unmatched, policy::Unmatched::approval);
  EXPECT_EQ(rb.budgets.calls, 200u);
  EXPECT_EQ(rb.budgets.denied, 0u);
  EXPECT_EQ(rb.budgets.per_minute, 60u);
}

TEST_F(ConfigTest, InvalidRegex) {
  write("actions.yaml",
        std::string(kActions) + "  bad:\n    - {method: GET, path_regex: \"/a(b\"}\n");
  EXPECT_EQ(errors(), one("actions.yaml", "12:33: actions.bad[0].path_regex: invalid regular "
                                          "expression \"/a(b\": missing ): /a(b"));
}

TEST_F(ConfigTest, PathAndPathRegexAreMutuallyExclusive) {
  write("actions.yaml", std::string(kActions) +
                            "  bad:\n    - method: GET\n      path: /a\n      path_regex: /a\n");
  EXPECT_EQ(errors(), one("actions.yaml", "14:7: actions.bad[0].path_regex: path and path_regex "
                                          "are mutually exclusive (path is at line 13)"));
}

TEST_F(ConfigTest, InvalidJsonPointer) {
  write("actions.yaml",
        std::string(kActions) + "  bad:\n    - method: POST\n      body: {amount: 1, /a~2b: 2}\n");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("actions.yaml") + "13:14: actions.bad[0].body.amount: invalid JSON Pointer "
                                     "\"amount\": JSON pointer must be empty or start with '/'",
                at("actions.yaml") + "13:25: actions.bad[0].body[\"/a~2b\"]: invalid JSON Pointer "
                                     "\"/a~2b\": JSON pointer has '~' not followed by '0' or '1'",
            }));
}

TEST_F(ConfigTest, InvalidGlobs) {
  write("actions.yaml", std::string(kActions) + R"(  bad:
    - {method: GET, path: "/a/**b"}
    - {method: GET, path: "logs/*"}
)");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("actions.yaml") + "12:27: actions.bad[0].path: invalid path glob "
                                               "\"/a/**b\": '**' must be a whole path segment",
                          at("actions.yaml") + "13:27: actions.bad[1].path: path glob \"logs/*\" "
                                               "must start with \"/\"",
                      }));
}

TEST_F(ConfigTest, BadHostPattern) {
  write("actions.yaml",
        std::string(kActions) + "  bad:\n    - {method: GET, host: \"api.*.com\"}\n");
  EXPECT_EQ(errors(), one("actions.yaml",
                          "12:27: actions.bad[0].host: invalid host pattern \"api.*.com\": host "
                          "pattern may only use '*' as a leading \"*.\" label"));
}

TEST_F(ConfigTest, MethodsMustBeUpperCase) {
  write("actions.yaml", std::string(kActions) + "  bad:\n    - {method: [GET, post]}\n");
  EXPECT_EQ(errors(),
            one("actions.yaml", "12:22: actions.bad[0].method[1]: method \"post\" must be "
                                "upper case: HTTP methods are case-sensitive (write "
                                "\"POST\")"));
}

TEST_F(ConfigTest, WrongTypes) {
  write("actions.yaml", std::string(kActions) + R"(  bad:
    - {method: GET, port: "443"}
    - {method: GET, port: 70000}
    - {method: GET, scheme: ftp}
    - {method: POST, body: {/amount: {lte: "5000"}}}
    - {method: POST, body: {/amount: [1, 2]}}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("actions.yaml") + "12:27: actions.bad[0].port: expected an integer between 1 "
                                     "and 65535, got a string",
                at("actions.yaml") + "13:27: actions.bad[1].port: expected an integer between 1 "
                                     "and 65535, got 70000",
                at("actions.yaml") + "14:29: actions.bad[2].scheme: scheme must be \"http\" or "
                                     "\"https\", got \"ftp\"",
                at("actions.yaml") + "15:44: actions.bad[3].body[\"/amount\"].lte: lte needs a "
                                     "number, got \"5000\"",
                at("actions.yaml") + "16:38: actions.bad[4].body[\"/amount\"]: a list is ambiguous "
                                     "here: write {in: [...]} to accept any of these values, or "
                                     "{eq: [...]} to compare with the whole list",
            }));
}

TEST_F(ConfigTest, BadDurationsAndSizes) {
  write("runwarden.yaml", std::string(kConfig) + R"(approvals: {hold_timeout: 10}
audit: {path: a.jsonl, fsync: sometimes, body_bytes: 16KB}
limits: {idle_timeout: 1.5s}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("runwarden.yaml") + "8:27: approvals.hold_timeout: invalid duration \"10\": a "
                                       "unit is required: use a whole number followed by ms, s, m "
                                       "or h (e.g. 50ms, 10s, 15m, 1h)",
                at("runwarden.yaml") + "9:31: audit.fsync: invalid duration \"sometimes\": use a "
                                       "whole number followed by ms, s, m or h (e.g. 50ms, 10s, "
                                       "15m, 1h)",
                at("runwarden.yaml") + "9:54: audit.body_bytes: invalid size \"16KB\": use a whole "
                                       "number of bytes, optionally followed by B, KiB, MiB or GiB "
                                       "(e.g. 512, 16KiB, 1MiB); decimal units such as KB or MB "
                                       "are not accepted",
                at("runwarden.yaml") + "10:24: limits.idle_timeout: invalid duration \"1.5s\": use "
                                       "a whole number followed by ms, s, m or h (e.g. 50ms, 10s, "
                                       "15m, 1h)",
            }));
}

TEST_F(ConfigTest, OnTimeoutOnlyDeny) {
  write("runwarden.yaml", std::string(kConfig) + "approvals: {on_timeout: allow}\n");
  EXPECT_EQ(errors(), one("runwarden.yaml",
                          "8:25: approvals.on_timeout: on_timeout must be \"deny\" (a hold that "
                          "times out is never forwarded), got \"allow\""));
}

TEST_F(ConfigTest, BadListenAddresses) {
  write("runwarden.yaml", R"(listen:
  proxy: localhost:15001
  admin: ::1:15000
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: rb
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("runwarden.yaml") + "2:10: listen.proxy: invalid listen address "
                                       "\"localhost:15001\": \"localhost\" is not an IP address "
                                       "(listen addresses are literal, e.g. 127.0.0.1 or [::1]; "
                                       "host names are not resolved)",
                at("runwarden.yaml") + "3:10: listen.admin: invalid listen address "
                                       "\"::1:15000\": an IPv6 address must be in brackets, e.g. "
                                       "[::1]:15001",
            }));
}

TEST_F(ConfigTest, MissingRequiredKeys) {
  write("runwarden.yaml", "listen: {proxy: 127.0.0.1:1}\ncatalogue: actions.yaml\n");
  EXPECT_EQ(
      errors(),
      (std::vector<std::string>{
          at("runwarden.yaml") + "1:9: listen.admin: missing required key \"admin\"",
          at("runwarden.yaml") + "1:1: runbooks: missing required key \"runbooks\"",
          at("runwarden.yaml") + "1:1: active_runbook: missing required key \"active_runbook\"",
      }));
}

TEST_F(ConfigTest, MissingFiles) {
  write("runwarden.yaml", R"(listen: {proxy: 127.0.0.1:1, admin: 127.0.0.1:2}
catalogue: nope.yaml
runbooks: [runbooks/rb.yaml, runbooks/gone.yaml]
active_runbook: rb
)");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("runwarden.yaml") + "2:12: catalogue: cannot read \"" +
                              (dir_ / "nope.yaml").string() + "\": no such file",
                          at("runwarden.yaml") + "3:30: runbooks[1]: cannot read \"" +
                              (dir_ / "runbooks/gone.yaml").string() + "\": no such file",
                      }));
}

TEST_F(ConfigTest, ActiveRunbookMustExist) {
  write("runwarden.yaml", std::string(kConfig) + "selectable_runbooks: [rb, other]\n");
  write("runwarden.yaml",
        std::string(kConfig).replace(std::string(kConfig).find("rb\n"), 2, "rbb") +
            "selectable_runbooks: [rb, other]\n");
  EXPECT_EQ(errors(), (std::vector<std::string>{
                          at("runwarden.yaml") + "7:17: active_runbook: no runbook named \"rbb\" "
                                                 "(did you mean \"rb\"?)",
                          at("runwarden.yaml") + "8:27: selectable_runbooks[1]: no runbook named "
                                                 "\"other\"; loaded: rb",
                      }));
}

TEST_F(ConfigTest, DuplicateRunbookNames) {
  write("runbooks/zz.yaml", "# same name, different file\nrunbook: rb\nallowed_actions: {}\n");
  EXPECT_EQ(errors(),
            one("runbooks/zz.yaml", "2:10: runbook: runbook \"rb\" is already defined in " +
                                        (dir_ / "runbooks/rb.yaml").string() + ":1:10"));
}

TEST_F(ConfigTest, FoldersLoadYamlFilesInNameOrder) {
  write("runbooks/b.yml", "runbook: b\nallowed_actions: {allowed: [refund]}\n");
  write("runbooks/a.yaml", "runbook: a\nallowed_actions: {}\n");
  write("runbooks/notes.txt", "not a runbook");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  std::vector<std::string> names;
  for (const auto& rb : config_->runbooks) {
    names.push_back(rb->name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "rb"}));
}

TEST_F(ConfigTest, YamlSyntaxErrorHasItsMark) {
  write("runbooks/rb.yaml", "runbook: rb\nallowed_actions:\n  allowed: [refund\n");
  EXPECT_EQ(errors(),
            one("runbooks/rb.yaml", "4:1: YAML syntax error: end of sequence flow not found"));
}

TEST_F(ConfigTest, AllErrorsAcrossFilesAreCollected) {
  write("runwarden.yaml", std::string(kConfig) + "threads: many\n");
  write("actions.yaml", std::string(kActions) + "  bad:\n    - {methd: GET}\n");
  write("runbooks/rb.yaml", std::string(kRunbook) + "unmatched: allow\n");
  const auto e = errors();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0], at("runwarden.yaml") +
                      "8:10: threads: expected an integer between 0 and 1024, got a string");
  EXPECT_EQ(e[1],
            at("actions.yaml") +
                "12:8: actions.bad[0].methd: unknown key \"methd\" (did you mean \"method\"?)");
  EXPECT_EQ(e[2], at("runbooks/rb.yaml") +
                      "6:12: unmatched: unmatched must be \"deny\" or \"approval\", got \"allow\"");
}

TEST_F(ConfigTest, YamlScalarsBecomeJsonFaithfully) {
  write("actions.yaml", std::string(kActions) + R"(  typed:
    - method: POST
      body:
        /quoted: "5000"
        /number: 5000
        /negative: -3
        /float: 2.5
        /flag: true
        /nothing: null
        /word: yes
        /list: {in: [1, "1", x]}
      headers: {X-Version: 2}
      query: {limit: {in: [10, "20"]}}
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const auto& m = config_->catalogue->actions.at("typed").matchers.at(0);
  ASSERT_EQ(m.body.size(), 8u);
  EXPECT_EQ(m.body[0].predicates[0].operand, nlohmann::json("5000"));
  EXPECT_EQ(m.body[1].predicates[0].operand, nlohmann::json(5000));
  EXPECT_EQ(m.body[2].predicates[0].operand, nlohmann::json(-3));
  EXPECT_EQ(m.body[3].predicates[0].operand, nlohmann::json(2.5));
  EXPECT_EQ(m.body[4].predicates[0].operand, nlohmann::json(true));
  EXPECT_EQ(m.body[5].predicates[0].operand, nlohmann::json(nullptr));
  EXPECT_EQ(m.body[6].predicates[0].operand, nlohmann::json("yes")); // YAML 1.2: not a boolean
  EXPECT_EQ(m.body[7].predicates[0].op, policy::PredicateOp::in);
  EXPECT_EQ(m.body[7].predicates[0].operand, nlohmann::json::parse(R"([1, "1", "x"])"));
  EXPECT_EQ(m.body[0].pointer.text(), "/quoted");
  // Headers and query parameters are text: names lower-cased (headers), values as strings.
  ASSERT_EQ(m.headers.size(), 1u);
  EXPECT_EQ(m.headers[0].name, "x-version");
  EXPECT_EQ(m.headers[0].predicates[0].operand, nlohmann::json("2"));
  EXPECT_EQ(m.query[0].predicates[0].operand, nlohmann::json::parse(R"(["10", "20"])"));
}

TEST_F(ConfigTest, McpAndJsonRpcMatchers) {
  write("actions.yaml", std::string(kActions) + R"(  restart:
    - host: mcp.internal
      mcp: {tool: restart_deployment, arguments: {/namespace: payments, /replicas: {gte: 1}}}
  session:
    - {host: mcp.internal, jsonrpc: {method: [initialize, tools/list]}}
  both:
    - {mcp: {tool: x}, jsonrpc: {method: ping}}
  no_tool:
    - {mcp: {arguments: {/a: 1}}}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("actions.yaml") + "17:24: actions.both[0].jsonrpc: mcp and jsonrpc are mutually "
                                     "exclusive: mcp matches tools/call, jsonrpc other methods",
                at("actions.yaml") + "19:13: actions.no_tool[0].mcp.tool: missing required key "
                                     "\"tool\"",
            }));
  write("actions.yaml", std::string(kActions) + R"(  restart:
    - host: mcp.internal
      mcp: {tool: restart_deployment, arguments: {/namespace: payments, /replicas: {gte: 1}}}
  session:
    - {host: mcp.internal, jsonrpc: {method: [initialize, tools/list]}}
)");
  ASSERT_EQ(errors(), std::vector<std::string>{});
  const auto& restart = config_->catalogue->actions.at("restart").matchers.at(0);
  ASSERT_TRUE(restart.mcp);
  EXPECT_EQ(restart.mcp->tool, "restart_deployment");
  ASSERT_EQ(restart.mcp->arguments.size(), 2u);
  EXPECT_EQ(restart.mcp->arguments[1].predicates[0].op, policy::PredicateOp::gte);
  const auto& session = config_->catalogue->actions.at("session").matchers.at(0);
  ASSERT_TRUE(session.jsonrpc);
  EXPECT_EQ(session.jsonrpc->methods, (std::vector<std::string>{"initialize", "tools/list"}));
}

TEST_F(ConfigTest, EmptyMatcherIsRefused) {
  write("actions.yaml", std::string(kActions) + "  everything:\n    - {}\n");
  EXPECT_EQ(errors(), one("actions.yaml", "12:7: actions.everything[0]: a matcher needs at least "
                                          "one condition (an empty matcher would match every "
                                          "request)"));
}

TEST_F(ConfigTest, ConfigFileItselfMissing) {
  fs::remove(dir_ / "runwarden.yaml");
  EXPECT_EQ(errors(),
            one("runwarden.yaml",
                "1:1: cannot read \"" + (dir_ / "runwarden.yaml").string() + "\": no such file"));
}

TEST_F(ConfigTest, RunbookKeysAndEntryFieldsAreChecked) {
  write("runbooks/rb.yaml", R"(runbook: rb
alowed_actions: {}
allowed_actions:
  aproval_required:
    - {action: refund, risk: severe, timeout: soon}
    - {risk: low}
  allowed: read_logs
budgets: {calls: 0}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("runbooks/rb.yaml") + "2:1: alowed_actions: unknown key \"alowed_actions\" (did "
                                         "you mean \"allowed_actions\"?)",
                at("runbooks/rb.yaml") + "4:3: allowed_actions.aproval_required: unknown key "
                                         "\"aproval_required\" (did you mean "
                                         "\"approval_required\"?)",
                at("runbooks/rb.yaml") + "7:12: allowed_actions.allowed: expected a list, got a "
                                         "scalar",
                at("runbooks/rb.yaml") + "8:18: budgets.calls: expected an integer between 1 and "
                                         "1000000000000, got 0",
            }));
  write("runbooks/rb.yaml", R"(runbook: rb
allowed_actions:
  approval_required:
    - {action: refund, risk: severe, timeout: soon}
    - {risk: low}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("runbooks/rb.yaml") + "4:30: allowed_actions.approval_required[0].risk: risk "
                                         "must be low, medium, high or critical, got \"severe\"",
                at("runbooks/rb.yaml") + "4:47: allowed_actions.approval_required[0].timeout: "
                                         "invalid duration \"soon\": use a whole number followed "
                                         "by ms, s, m or h (e.g. 50ms, 10s, 15m, 1h)",
                at("runbooks/rb.yaml") + "5:7: allowed_actions.approval_required[1].action: "
                                         "missing required key \"action\"",
            }));
}

TEST_F(ConfigTest, PredicateErrors) {
  write("actions.yaml", std::string(kActions) + R"(  bad:
    - method: POST
      body:
        /a: {regex: "x++("}
        /b: {glob: "ch_*", exists: maybe}
        /c: {in: []}
        /d: {}
        /e: {lt: 1, between: 2}
      headers: {"bad header": x}
)");
  const auto e = errors();
  ASSERT_EQ(e.size(), 6u);
  EXPECT_EQ(e[0], at("actions.yaml") + "14:21: actions.bad[0].body[\"/a\"].regex: invalid regular "
                                       "expression \"x++(\": bad repetition operator: ++");
  EXPECT_EQ(e[1], at("actions.yaml") +
                      "15:36: actions.bad[0].body[\"/b\"].exists: expected true or "
                      "false, got a string");
  EXPECT_EQ(e[2], at("actions.yaml") +
                      "16:18: actions.bad[0].body[\"/c\"].in: expected at least one "
                      "value (an empty list matches nothing)");
  EXPECT_EQ(e[3], at("actions.yaml") +
                      "17:13: actions.bad[0].body[\"/d\"]: expected at least one "
                      "predicate: eq, in, glob, regex, lt, lte, gt, gte or exists");
  EXPECT_EQ(e[4], at("actions.yaml") + "18:21: actions.bad[0].body[\"/e\"].between: unknown key "
                                       "\"between\"");
  EXPECT_EQ(e[5], at("actions.yaml") + "19:17: actions.bad[0].headers[\"bad header\"]: invalid "
                                       "header name \"bad header\"");
}

TEST_F(ConfigTest, WebhooksAndRedactionAreValidated) {
  write("runwarden.yaml", std::string(kConfig) + R"(approvals:
  webhooks:
    - {url: "ftp://x", secret_env: "my secret"}
    - {url: "https://ops.example/hook"}
redaction: {patterns: ["(unclosed"]}
)");
  EXPECT_EQ(errors(),
            (std::vector<std::string>{
                at("runwarden.yaml") + "10:13: approvals.webhooks[0].url: webhook url must start "
                                       "with https:// or http://, got \"ftp://x\"",
                at("runwarden.yaml") + "10:36: approvals.webhooks[0].secret_env: \"my secret\" is "
                                       "not an environment variable name (the secret itself never "
                                       "goes in the config)",
                at("runwarden.yaml") + "11:7: approvals.webhooks[1].secret_env: missing required "
                                       "key \"secret_env\"",
                at("runwarden.yaml") + "12:24: redaction.patterns[0]: invalid regular expression "
                                       "\"(unclosed\": missing ): (unclosed",
            }));
}

TEST_F(ConfigTest, ConfigErrorWhatJoinsAllLines) {
  const ConfigError e({"a:1:1: x: one", "b:2:2: y: two"});
  EXPECT_STREQ(e.what(), "a:1:1: x: one\nb:2:2: y: two");
}

} // namespace
} // namespace runwarden::config
