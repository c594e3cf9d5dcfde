// Runbook `budgets:` parsing: every key, and exact file:line:col errors.

#include "config/config.hpp"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::config {
namespace {

namespace fs = std::filesystem;

class BudgetConfigTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "runwarden-budget-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("runwarden.yaml", R"(listen:
  proxy: 127.0.0.1:15001
  admin: 127.0.0.1:15000
agent: {id: test-agent}
catalogue: actions.yaml
runbooks: [rb.yaml]
active_runbook: rb
)");
    write("actions.yaml", R"(actions:
  read_logs:
    - {method: GET, host: logs.internal, path: "/logs/**"}
  refund:
    - {method: POST, host: api.stripe.com, path: /v1/refunds}
)");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream out(dir_ / name, std::ios::binary | std::ios::trunc);
    out << text;
  }
  std::vector<std::string> load(const std::string& budgets) {
    write("rb.yaml", "runbook: rb\nallowed_actions:\n  read_only: [read_logs]\n  allowed: "
                     "[refund]\nbudgets:\n" +
                         budgets);
    try {
      config_ = load_config(dir_ / "runwarden.yaml");
      return {};
    } catch (const ConfigError& e) {
      return e.errors();
    }
  }
  std::string at() const { return (dir_ / "rb.yaml").string() + ":"; }

  fs::path dir_;
  std::shared_ptr<const Config> config_;
};

TEST_F(BudgetConfigTest, EveryKeyIsRead) {
  ASSERT_EQ(load(R"(  calls: 200
  denied: 5
  per_minute: 60
  actions: {refund: 3, read_logs: 0}
  sums:
    - {action: refund, pointer: /amount, max: 10000.5, window: 24h}
  on_exceed: refuse
)"),
            std::vector<std::string>{});
  const auto& b = config_->runbooks[0]->budgets;
  EXPECT_EQ(b.calls, 200u);
  EXPECT_EQ(b.denied, 5u);
  EXPECT_EQ(b.per_minute, 60u);
  EXPECT_EQ(b.actions.at("refund"), 3u);
  EXPECT_EQ(b.actions.at("read_logs"), 0u);
  ASSERT_EQ(b.sums.size(), 1u);
  EXPECT_EQ(b.sums[0].action, "refund");
  EXPECT_EQ(b.sums[0].pointer.text(), "/amount");
  EXPECT_EQ(b.sums[0].max, 10000.5);
  EXPECT_EQ(b.sums[0].window, std::chrono::hours(24));
  EXPECT_EQ(b.sums[0].mark.line, 11);
  EXPECT_EQ(b.on_exceed, policy::OnExceed::refuse);
  EXPECT_FALSE(b.empty());
}

TEST_F(BudgetConfigTest, DefaultIsKillRun) {
  ASSERT_EQ(load("  calls: 1\n"), std::vector<std::string>{});
  EXPECT_EQ(config_->runbooks[0]->budgets.on_exceed, policy::OnExceed::kill_run);
}

TEST_F(BudgetConfigTest, ErrorsNameTheirPlace) {
  EXPECT_EQ(load(R"(  actions: {refnd: 3, refund: -1}
  sums:
    - {action: read_log, pointer: amount, max: -2, window: 0s}
    - {action: refund}
    - 7
  on_exceed: explode
  cals: 3
)"),
            (std::vector<std::string>{
                at() + "6:31: budgets.actions.refund: expected an integer between 0 and "
                       "1000000000000, got -1",
                at() + "8:35: budgets.sums[0].pointer: invalid JSON pointer \"amount\": JSON "
                       "pointer must be empty or start with '/'",
                at() + "8:48: budgets.sums[0].max: expected a non-negative number",
                at() + "8:60: budgets.sums[0].window: invalid duration \"0s\": must be greater "
                       "than zero",
                at() + "9:7: budgets.sums[1].pointer: missing required key \"pointer\"",
                at() + "9:7: budgets.sums[1].max: missing required key \"max\"",
                at() + "9:7: budgets.sums[1].window: missing required key \"window\"",
                at() + "10:7: budgets.sums[2]: expected a map, got a scalar",
                at() + "11:14: budgets.on_exceed: on_exceed must be \"refuse\" or \"kill_run\", "
                       "got \"explode\"",
                at() + "12:3: budgets.cals: unknown key \"cals\" (did you mean \"calls\"?)",
                at() + "6:13: budgets.actions.refnd: budget names action \"refnd\", which this "
                       "runbook does not list",
                at() + "8:16: budgets.sums[0].action: budget names action \"read_log\", which "
                       "this runbook does not list",
            }));
}

} // namespace
} // namespace runwarden::config
