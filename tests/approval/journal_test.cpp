#include "approval/journal.hpp"
#include "tests/approval/fake_clock.hpp"
#include "tests/approval/test_packets.hpp"

#include <cstdio>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;
using test::FakeClock;
using test::packet;

class JournalTest : public ::testing::Test {
protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "runwarden_journal_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl";
    std::remove(path_.c_str());
    std::remove((path_ + ".prev").c_str());
  }
  void TearDown() override {
    std::remove(path_.c_str());
    std::remove((path_ + ".prev").c_str());
  }
  static std::string read(const std::string& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string path_;
};

TEST_F(JournalTest, RestartExpiresPendingHoldsAndReleasesNothing) {
  FakeClock clock;
  std::string pending_id;
  std::string approved_id;
  {
    std::vector<RecoveredHold> recovered;
    auto journal = Journal::open(path_, clock, recovered);
    EXPECT_TRUE(recovered.empty());
    HoldRegistry reg({}, clock);
    reg.set_listener(journal->listener());
    int released = 0;
    pending_id = reg.create(packet("run-p"), {}, [&](const HoldOutcome&) { ++released; }).id;
    approved_id = reg.create(packet("run-a"), {}, [&](const HoldOutcome&) { ++released; }).id;
    reg.decide(approved_id, Choice::approve, Principal{"alice", {}}, "");
    EXPECT_EQ(released, 1);
    EXPECT_TRUE(journal->healthy());
    // The process "stops" here with one hold pending.
  }
  std::vector<RecoveredHold> recovered;
  auto journal = Journal::open(path_, clock, recovered);
  ASSERT_EQ(recovered.size(), 1u);
  EXPECT_EQ(recovered[0].id, pending_id);
  EXPECT_EQ(recovered[0].run, "run-p");
  EXPECT_EQ(recovered[0].action, "restart_payment_workers");
  // The expiry is durable: the old journal says so, and a second restart finds nothing.
  const std::string prev = read(path_ + ".prev");
  EXPECT_NE(prev.find("\"event\":\"expired_on_restart\",\"id\":\"" + pending_id),
            std::string::npos);
  journal.reset();
  std::vector<RecoveredHold> again;
  Journal::open(path_, clock, again);
  EXPECT_TRUE(again.empty());
}

TEST_F(JournalTest, TornLastLineIsSkippedAndOrderDoesNotMatter) {
  FakeClock clock;
  {
    std::ofstream out(path_);
    // resolved before created (listener races are tolerated), then a pending one, then a tear.
    out << R"({"v":1,"event":"resolved","id":"apr_a","state":"denied"})"
        << "\n";
    out << R"({"v":1,"event":"created","id":"apr_a","run":"r"})"
        << "\n";
    out << R"({"v":1,"event":"created","id":"apr_b","run":"r2","ts":"T"})"
        << "\n";
    out << R"({"v":1,"event":"resolved","id":"apr_b","sta)";
  }
  std::vector<RecoveredHold> recovered;
  auto journal = Journal::open(path_, clock, recovered);
  ASSERT_EQ(recovered.size(), 1u);
  EXPECT_EQ(recovered[0].id, "apr_b");
  EXPECT_EQ(recovered[0].created, "T");
  EXPECT_EQ(journal->skipped_lines(), 1u);
}

TEST_F(JournalTest, EveryTransitionIsALine) {
  FakeClock clock;
  std::vector<RecoveredHold> recovered;
  auto journal = Journal::open(path_, clock, recovered);
  HoldRegistry reg({}, clock);
  reg.set_listener(journal->listener());
  const auto c =
      reg.create(packet("r1"), {.timeout = 10s, .wait = std::nullopt}, [](const HoldOutcome&) {});
  clock.advance(10s);
  reg.tick();
  ASSERT_FALSE(journal->flush()); // the writer thread has written and synced both lines
  const std::string text = read(path_);
  std::istringstream lines(text);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(lines, line)) {
    rows.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["event"], "created");
  EXPECT_EQ(rows[0]["id"], c.id);
  EXPECT_EQ(rows[1]["event"], "resolved");
  EXPECT_EQ(rows[1]["state"], "expired");
  EXPECT_EQ(rows[1]["wait_ms"], 10000);
}

TEST_F(JournalTest, GroupCommitKeepsEveryLineInOrder) {
  FakeClock clock;
  std::vector<std::string> ids;
  {
    std::vector<RecoveredHold> recovered;
    auto journal = Journal::open(path_, clock, recovered);
    HoldRegistry reg({}, clock);
    reg.set_listener(journal->listener());
    for (int i = 0; i < 500; ++i) {
      ids.push_back(reg.create(packet("r" + std::to_string(i)), {}, [](const HoldOutcome&) {}).id);
    }
    for (int i = 0; i < 500; i += 2) {
      reg.decide(ids[static_cast<std::size_t>(i)], Choice::deny, Principal{"alice", {}}, "");
    }
    EXPECT_FALSE(journal->flush());
    EXPECT_TRUE(journal->healthy());
    std::istringstream lines(read(path_));
    std::string line;
    std::uint64_t last_seq = 0;
    std::size_t n = 0;
    while (std::getline(lines, line)) {
      const auto row = nlohmann::json::parse(line);
      EXPECT_GT(row["seq"].get<std::uint64_t>(), last_seq);
      last_seq = row["seq"].get<std::uint64_t>();
      ++n;
    }
    EXPECT_EQ(n, 750u);
    // Lines queued after a flush are still written when the journal closes.
    reg.decide(ids[1], Choice::deny, Principal{"alice", {}}, "");
  }
  std::vector<RecoveredHold> recovered;
  Journal::open(path_, clock, recovered);
  EXPECT_EQ(recovered.size(), 249u); // 500 created, 251 resolved
}

TEST_F(JournalTest, UnwritableLocationFailsAtStartUp) {
  FakeClock clock;
  std::vector<RecoveredHold> recovered;
  EXPECT_THROW(Journal::open("/nonexistent-dir/journal.jsonl", clock, recovered),
               std::runtime_error);
}

} // namespace
} // namespace runwarden::approval
