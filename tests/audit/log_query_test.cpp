#include "audit/audit_log.hpp"
#include "audit/log_query.hpp"
#include "audit/record_codec.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

namespace runwarden::audit {
namespace {

using testing::TempDir;

// run-A: a read, a write approved by alice, a denied write, a refused call; run-B: one read.
std::vector<nlohmann::json> incident_log(const TempDir& dir) {
  Options o;
  o.path = dir.file("audit.jsonl");
  {
    auto log = AuditLog::open(o);
    testing::Completions c;
    Exchange read = testing::sample_exchange(2, "run-A");
    read.request.url = "https://logs.internal/api/v1/query?q=x";
    read.outcome = "forwarded";
    log->record(read, false, c.make());
    log->record(read, true, c.make());

    Exchange restart = testing::sample_exchange(1, "run-A");
    restart.id = "req_restart";
    restart.request.method = "POST";
    restart.request.url = "https://mcp.k8s.internal/mcp";
    restart.action = "restart_payment_workers";
    restart.outcome = "approved_forwarded";
    restart.approval = ApprovalInfo{"ap_123", "alice", 91000};
    restart.response->status = 202;
    log->record(restart, true, c.make());

    Exchange migrate = testing::sample_exchange(3, "run-A");
    migrate.id = "req_migrate";
    migrate.request.method = "POST";
    migrate.request.url = "https://db.internal/migrate";
    migrate.action = "run_database_migration";
    migrate.outcome = "denied";
    migrate.response.reset();
    log->record(migrate, true, c.make());

    Exchange other = testing::sample_exchange(4, "run-B");
    other.id = "req_b";
    other.outcome = "forwarded";
    log->record(other, true, c.make());
    log->event("run_killed", {{"run", "run-A"}}, c.make());
    EXPECT_TRUE(c.wait(6));
  }
  std::vector<nlohmann::json> records;
  std::string error;
  EXPECT_TRUE(LogQuery::load({dir.path()}, records, error)) << error;
  return records;
}

TEST(LogQuery, OneRowPerRequestAndEventsOnRequest) {
  TempDir dir;
  const auto records = incident_log(dir);
  ASSERT_EQ(records.size(), 6u);
  QueryFilter f;
  auto rows = LogQuery::run(records, f);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0]["type"], "exchange"); // the decision record was superseded
  f.events = true;
  EXPECT_EQ(LogQuery::run(records, f).size(), 5u);
}

TEST(LogQuery, FiltersCombine) {
  TempDir dir;
  const auto records = incident_log(dir);
  QueryFilter f;
  f.run = "run-A";
  EXPECT_EQ(LogQuery::run(records, f).size(), 3u);
  f.outcome = "denied";
  auto rows = LogQuery::run(records, f);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["id"], "req_migrate");
  f = {};
  f.host = "MCP.k8s.internal";
  EXPECT_EQ(LogQuery::run(records, f).size(), 1u);
  f = {};
  f.approval = "alice";
  EXPECT_EQ(LogQuery::run(records, f).size(), 1u);
  f.approval = "ap_123";
  EXPECT_EQ(LogQuery::run(records, f).size(), 1u);
  f = {};
  f.action = "run_database_migration";
  EXPECT_EQ(LogQuery::run(records, f).size(), 1u);
  f = {};
  f.since_us = RecordCodec::parse_rfc3339("2020-01-01T00:00:00+01:00");
  EXPECT_EQ(LogQuery::run(records, f).size(), 4u);
  f.since_us = std::int64_t{4102444800} * 1000000; // 2100-01-01
  EXPECT_EQ(LogQuery::run(records, f).size(), 0u);
  f = {};
  f.until_us = 0;
  EXPECT_EQ(LogQuery::run(records, f).size(), 0u);
}

TEST(LogQuery, BlastRadiusListsSystemsWritesApprovalsAndDenials) {
  TempDir dir;
  const auto records = incident_log(dir);
  const auto b = LogQuery::blast_radius(records, "run-A");
  EXPECT_EQ(b["calls"], 3);
  ASSERT_EQ(b["hosts"].size(), 3u);
  EXPECT_EQ(b["hosts"][0]["host"], "db.internal");
  EXPECT_EQ(b["hosts"][0]["denied"], 1);
  ASSERT_EQ(b["writes"].size(), 1u);
  EXPECT_EQ(b["writes"][0]["url"], "https://mcp.k8s.internal/mcp");
  EXPECT_EQ(b["writes"][0]["status"], 202);
  ASSERT_EQ(b["approvals"].size(), 1u);
  EXPECT_EQ(b["approvals"][0]["by"], "alice");
  EXPECT_EQ(b["approvals"][0]["approval_id"], "ap_123");
  ASSERT_EQ(b["denied"].size(), 1u);
  EXPECT_EQ(b["denied"][0]["action"], "run_database_migration");
  const std::string text = LogQuery::blast_radius_text(b);
  EXPECT_NE(text.find("mcp.k8s.internal"), std::string::npos);
  EXPECT_NE(text.find("by alice"), std::string::npos);
}

TEST(LogQuery, HostOfAndTableAreSafe) {
  EXPECT_EQ(LogQuery::host_of("https://u:p@API.Example.com:8443/x?y"), "api.example.com");
  EXPECT_EQ(LogQuery::host_of("http://[::1]:80/"), "[::1]");
  nlohmann::json r = {{"seq", 1}, {"type", "exchange"}, {"run", "a\x1b[2Jb"}};
  const std::string t = LogQuery::table({r});
  EXPECT_EQ(t.find('\x1b'), std::string::npos);
  EXPECT_NE(t.find("a\\x1b[2Jb"), std::string::npos);
}

TEST(LogQuery, TableShowsRunIdsWhole) {
  // The id an operator copies into `blast-radius --run`: never cut, however long.
  const std::string long_run = "run_637ff480a1b2c3d4e5f60718293a4b5c";
  nlohmann::json a = {{"seq", 1}, {"type", "exchange"}, {"run", long_run}, {"outcome", "denied"}};
  nlohmann::json b = {{"seq", 2}, {"type", "exchange"}, {"run", "r2"}, {"outcome", "forwarded"}};
  const std::string t = LogQuery::table({a, b});
  EXPECT_NE(t.find(long_run + " "), std::string::npos) << t;
  EXPECT_EQ(t.find('~'), std::string::npos) << t;
  // Columns stay aligned: OUTCOME starts at the same offset on every line.
  std::vector<std::size_t> at;
  std::size_t line = 0;
  for (const char* word : {"OUTCOME", "denied", "forwarded"}) {
    const std::size_t pos = t.find(word);
    ASSERT_NE(pos, std::string::npos) << word;
    line = t.rfind('\n', pos);
    at.push_back(line == std::string::npos ? pos : pos - line - 1);
  }
  EXPECT_EQ(at[0], at[1]);
  EXPECT_EQ(at[0], at[2]);
}

TEST(LogQuery, BlastRadiusOfACutRunIdNamesTheCandidates) {
  TempDir dir;
  const auto records = incident_log(dir);
  // An exact id has no candidates: the report is the run's.
  EXPECT_FALSE(LogQuery::blast_radius(records, "run-A").contains("candidates"));
  // "run" is the start of both ids; "-B" is inside one; a '~' from a cut table is dropped.
  auto b = LogQuery::blast_radius(records, "run");
  EXPECT_EQ(b["calls"], 0);
  EXPECT_EQ(b["candidates"], nlohmann::json({"run-A", "run-B"}));
  EXPECT_EQ(LogQuery::blast_radius(records, "-B")["candidates"], nlohmann::json({"run-B"}));
  EXPECT_EQ(LogQuery::blast_radius(records, "run-~")["candidates"],
            nlohmann::json({"run-A", "run-B"}));
  EXPECT_EQ(LogQuery::blast_radius(records, "nothing-like-it")["candidates"],
            nlohmann::json::array());
  const std::string text = LogQuery::blast_radius_text(b);
  EXPECT_NE(text.find("no records"), std::string::npos) << text;
  EXPECT_NE(text.find("  run-A\n  run-B\n"), std::string::npos) << text;
}

TEST(LogQuery, RunCandidatesPutPrefixesFirstAndStopAtFive) {
  std::vector<nlohmann::json> records;
  for (const char* run :
       {"x-run_7", "run_70", "run_71", "run_70", "run_72", "run_73", "run_74", "run_75"}) {
    records.push_back({{"type", "exchange"}, {"run", run}});
  }
  const auto c = LogQuery::run_candidates(records, "run_7");
  ASSERT_EQ(c.size(), LogQuery::kMaxRunCandidates);
  EXPECT_EQ(c, (std::vector<std::string>{"run_70", "run_71", "run_72", "run_73", "run_74"}));
  EXPECT_EQ(LogQuery::run_candidates(records, "-run_7"), std::vector<std::string>{"x-run_7"});
  EXPECT_TRUE(LogQuery::run_candidates(records, "~").empty());
}

} // namespace
} // namespace runwarden::audit
