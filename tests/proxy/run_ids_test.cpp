// agent.runs: what a call that names no run (no Runwarden-Run) belongs to, over a real
// Server and loopback sockets. Budgets count per run, so this decides whether reconnecting
// gives an agent a fresh budget.

#include "tests/proxy/ops_fixture.hpp"

#include <gtest/gtest.h>
#include <set>

namespace runwarden::proxy {
namespace {

using namespace testing;

class RunIdsTest : public ::testing::Test {
protected:
  /// A server whose runbook allows `calls` judged calls per run, with agent.runs = `runs`.
  void start(config::RunIds runs, std::uint64_t calls = 100) {
    write_file(dir_.file("tokens"), token_line("alice", "operator-token"));
    auto cfg = ops_config(upstream_.port(), dir_);
    cfg->run_ids = runs;
    std::string err; // CONNECTs to the upstream are judged as tunnels (and denied: no action)
    cfg->tls.passthrough.push_back(*policy::HostPattern::parse("127.0.0.1", &err));
    auto rb = std::make_shared<policy::Runbook>(*cfg->runbooks.front());
    rb->budgets.calls = calls;
    cfg->runbooks = {rb};
    cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
    audit_ = std::make_shared<MemoryAudit>();
    server_ = std::make_unique<OpsServer>(cfg, audit_);
  }

  /// One GET on a connection of its own, naming `run` unless empty.
  boost::beast::http::response<boost::beast::http::string_body> get(const std::string& run) {
    return raw_exchange(server_->server().proxy_endpoint(),
                        proxy_get(upstream_.port(), "/allowed/x", run));
  }
  /// One GET with a raw Runwarden-Run line (the value exactly as given).
  boost::beast::http::response<boost::beast::http::string_body>
  get_with_run_line(const std::string& value) {
    const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
    return raw_exchange(server_->server().proxy_endpoint(),
                        "GET http://" + authority + "/allowed/x HTTP/1.1\r\nHost: " + authority +
                            "\r\nConnection: close\r\nRunwarden-Run:" + value + "\r\n\r\n");
  }

  HelloUpstream upstream_;
  TempDir dir_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
};

TEST_F(RunIdsTest, PerConnectionByDefaultGivesEachConnectionItsOwnRun) {
  start(config::RunIds::per_connection);
  ASSERT_EQ(get("").result_int(), 200);
  ASSERT_EQ(get("").result_int(), 200);
  std::set<std::string> runs; // a forwarded call has a decision and an exchange record
  for (const auto& r : audit_->records()) {
    EXPECT_EQ(r.run.rfind("run_", 0), 0u) << r.run;
    runs.insert(r.run);
  }
  EXPECT_EQ(runs.size(), 2u);
}

TEST_F(RunIdsTest, SharedPutsEveryConnectionInTheAgentsRunSoItsBudgetHolds) {
  start(config::RunIds::shared, 2);
  ASSERT_EQ(get("").result_int(), 200);
  ASSERT_EQ(get("").result_int(), 200);
  // A third connection is no way around the budget: it is the same run.
  auto res = get("");
  EXPECT_EQ(res.result_int(), 403) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "budget_exceeded") << res.body();
  EXPECT_EQ(upstream_.requests(), 2);
  for (const auto& r : audit_->records()) {
    EXPECT_EQ(r.run, "test-agent");
  }
  // A call that names its run still gets that run (and its own budget).
  EXPECT_EQ(get("incident-7").result_int(), 200);
  EXPECT_EQ(audit_->records().back().run, "incident-7");
}

TEST_F(RunIdsTest, RequiredRefusesACallWithoutARunAndForwardsNothing) {
  start(config::RunIds::required);
  auto res = get("");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "run_id_required") << res.body();
  EXPECT_EQ(upstream_.requests(), 0);
  auto records = audit_->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].code, "run_id_required");
  EXPECT_NE(records[0].outcome, "forwarded");

  EXPECT_EQ(get("incident-8").result_int(), 200);
  EXPECT_EQ(upstream_.requests(), 1);
}

TEST_F(RunIdsTest, AnEmptyOrOversizeRunIdIsRefusedNotReplaced) {
  start(config::RunIds::per_connection);
  for (const std::string& value : {std::string(" "), " " + std::string(129, 'r')}) {
    auto res = get_with_run_line(value);
    EXPECT_EQ(res.result_int(), 400) << res.body();
    EXPECT_EQ(body_json(res).value("error", ""), "bad_run_id") << res.body();
  }
  EXPECT_EQ(upstream_.requests(), 0);
  // 128 bytes is a run id.
  EXPECT_EQ(get_with_run_line(" " + std::string(128, 'r')).result_int(), 200);
  EXPECT_EQ(audit_->records().back().run, std::string(128, 'r'));
}

// A refused CONNECT that named a run does not leave that run on the connection: under
// `required`, the connection's next request without the header is still refused.
TEST_F(RunIdsTest, ARefusedConnectDoesNotNameTheConnectionsRun) {
  start(config::RunIds::required);
  const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect(server_->server().proxy_endpoint());
  set_timeouts(s);
  boost::beast::flat_buffer buffer;
  auto read_one = [&] {
    boost::beast::http::response<boost::beast::http::string_body> res;
    boost::system::error_code ec;
    boost::beast::http::read(s, buffer, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  };
  boost::asio::write(s, boost::asio::buffer("CONNECT " + authority + " HTTP/1.1\r\nHost: " +
                                            authority + "\r\nRunwarden-Run: A\r\n\r\n"));
  auto refused = read_one();
  ASSERT_EQ(refused.result_int(), 403) << refused.body();
  ASSERT_TRUE(refused.keep_alive());
  EXPECT_EQ(audit_->records().back().run, "A"); // the CONNECT was judged in the run it named
  boost::asio::write(s,
                     boost::asio::buffer("GET http://" + authority +
                                         "/allowed/x HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"));
  auto res = read_one();
  EXPECT_EQ(res.result_int(), 400) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "run_id_required") << res.body();
  EXPECT_EQ(upstream_.requests(), 0);
}

} // namespace
} // namespace runwarden::proxy
