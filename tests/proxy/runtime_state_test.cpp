// RuntimeState::config_here: the per-request path's copy of the live config, one per thread,
// refreshed after each swap_config and never confused between two states. The run table:
// kills seen by every thread (asked without the lock until the first), times listed as
// RFC 3339, newest first.

#include "proxy/runtime_state.hpp"

#include <chrono>
#include <gtest/gtest.h>
#include <memory>
#include <new>
#include <regex>
#include <set>
#include <string>
#include <thread>

namespace runwarden::proxy {
namespace {

std::shared_ptr<const config::Config> config_for(std::string agent) {
  auto c = std::make_shared<config::Config>();
  c->agent_id = std::move(agent);
  return c;
}

TEST(RuntimeStateConfigHere, FollowsEverySwapOnEveryThread) {
  RuntimeState state(config_for("first"));
  EXPECT_EQ(state.config_here()->agent_id, "first");
  EXPECT_EQ(state.config_here().get(), state.config().get());
  state.swap_config(config_for("second"));
  EXPECT_EQ(state.config_here()->agent_id, "second") << "this thread kept its stale copy";
  std::string seen_elsewhere;
  std::thread([&] { seen_elsewhere = state.config_here()->agent_id; }).join();
  EXPECT_EQ(seen_elsewhere, "second");
  // A copy taken before a swap keeps its snapshot alive (an exchange in flight).
  const std::shared_ptr<const config::Config> held = state.config_here();
  state.swap_config(config_for("third"));
  EXPECT_EQ(state.config_here()->agent_id, "third");
  EXPECT_EQ(held->agent_id, "second");
}

TEST(RuntimeStateConfigHere, TwoStatesOnOneThreadEachGetTheirOwn) {
  RuntimeState a(config_for("a"));
  RuntimeState b(config_for("b"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.config_here()->agent_id, "a");
    EXPECT_EQ(b.config_here()->agent_id, "b");
  }
  b.swap_config(config_for("b2"));
  EXPECT_EQ(a.config_here()->agent_id, "a");
  EXPECT_EQ(b.config_here()->agent_id, "b2");
}

// A state made where an earlier one lived (same address, same swap count) is not taken for
// it: its config is its own.
TEST(RuntimeStateConfigHere, ALaterStateAtTheSameAddressIsNotTheEarlierOne) {
  alignas(RuntimeState) unsigned char storage[sizeof(RuntimeState)];
  auto* first = new (storage) RuntimeState(config_for("earlier"));
  EXPECT_EQ(first->config_here()->agent_id, "earlier");
  first->~RuntimeState();
  auto* second = new (storage) RuntimeState(config_for("later"));
  ASSERT_EQ(static_cast<void*>(first), static_cast<void*>(second));
  EXPECT_EQ(second->config_here()->agent_id, "later");
  second->~RuntimeState();
}

TEST(RuntimeStateRuns, AKillIsSeenForThatRunOnlyAndFromEveryThread) {
  RuntimeState state(config_for("a"));
  state.note_call("run-a", "rb", CallKind::allowed_read);
  state.note_call("run-b", "rb", CallKind::allowed_read);
  EXPECT_FALSE(state.run_killed("run-a"));
  EXPECT_FALSE(state.run_killed("never-seen"));
  EXPECT_TRUE(state.kill_run("run-a", "alice", "looping"));
  EXPECT_FALSE(state.kill_run("run-a", "bob", "again")) << "a second kill is no change";
  EXPECT_TRUE(state.run_killed("run-a"));
  EXPECT_FALSE(state.run_killed("run-b"));
  EXPECT_FALSE(state.run_killed("never-seen"));
  bool seen_elsewhere = false;
  std::thread([&] { seen_elsewhere = state.run_killed("run-a"); }).join();
  EXPECT_TRUE(seen_elsewhere);
  // A run killed before it made a call is refused too.
  EXPECT_TRUE(state.kill_run("run-c", "alice", "pre-emptive"));
  EXPECT_TRUE(state.run_killed("run-c"));
}

TEST(RuntimeStateRuns, ListsTimesAsRfc3339NewestFirstWithCounts) {
  RuntimeState state(config_for("a"));
  state.note_call("older", "rb-1", CallKind::allowed_write);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  state.note_call("newer", "rb-2", CallKind::denied);
  std::this_thread::sleep_for(std::chrono::milliseconds(2)); // last_seen moves visibly
  state.note_call("newer", "", CallKind::held);              // no runbook name: the last one stays
  const nlohmann::json runs = state.runs_json()["runs"];
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0]["run"], "newer");
  EXPECT_EQ(runs[0]["runbook"], "rb-2");
  EXPECT_EQ(runs[0]["calls"], 2);
  EXPECT_EQ(runs[0]["denials"], 1);
  EXPECT_EQ(runs[0]["holds"], 1);
  EXPECT_EQ(runs[1]["run"], "older");
  EXPECT_EQ(runs[1]["writes"], 1);
  const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");
  for (const auto& r : runs) {
    const std::string first = r["first_seen"], last = r["last_seen"];
    EXPECT_TRUE(std::regex_match(first, rfc3339)) << first;
    EXPECT_TRUE(std::regex_match(last, rfc3339)) << last;
    EXPECT_LE(first, last);
  }
  EXPECT_GT(runs[0]["last_seen"].get<std::string>(), runs[1]["last_seen"].get<std::string>());
  EXPECT_LT(runs[0]["first_seen"].get<std::string>(), runs[0]["last_seen"].get<std::string>())
      << "the second call did not move last_seen";
}

// The table keeps at most 10,000 runs: a new one evicts the least recently seen live run.
// A killed run is never evicted (it stays killed), and a run seen again moves to the back.
TEST(RuntimeStateRuns, AFullTableEvictsTheLeastRecentlySeenLiveRun) {
  RuntimeState state(config_for("a"));
  constexpr int kFull = 10000;
  for (int i = 0; i < kFull; ++i) {
    state.note_call("r" + std::to_string(i), "rb", CallKind::allowed_read);
  }
  ASSERT_EQ(state.run_count(), static_cast<std::size_t>(kFull));
  EXPECT_TRUE(state.kill_run("r0", "alice", "stop"));  // the oldest, but killed
  state.note_call("r1", "rb", CallKind::allowed_read); // the next oldest, seen again
  state.note_call("new-1", "rb", CallKind::allowed_read);
  state.note_call("new-2", "rb", CallKind::allowed_read);
  EXPECT_EQ(state.run_count(), static_cast<std::size_t>(kFull));
  std::set<std::string> present;
  nlohmann::json listed = state.runs_json(); // kept: the loops below read into it
  for (const auto& r : listed["runs"]) {
    present.insert(r["run"].get<std::string>());
  }
  EXPECT_TRUE(present.count("r0")) << "a killed run was evicted";
  EXPECT_TRUE(state.run_killed("r0"));
  EXPECT_TRUE(present.count("r1")) << "a run seen again was evicted";
  EXPECT_FALSE(present.count("r2"));
  EXPECT_FALSE(present.count("r3"));
  EXPECT_TRUE(present.count("r4"));
  EXPECT_TRUE(present.count("new-1"));
  EXPECT_TRUE(present.count("new-2"));
  // An evicted run seen again starts afresh; r4, now the least recent, makes room.
  state.note_call("r2", "rb", CallKind::denied);
  present.clear();
  listed = state.runs_json();
  for (const auto& r : listed["runs"]) {
    present.insert(r["run"].get<std::string>());
    if (r["run"] == "r2") {
      EXPECT_EQ(r["calls"], 1);
    }
  }
  EXPECT_TRUE(present.count("r2"));
  EXPECT_FALSE(present.count("r4"));
  EXPECT_EQ(state.run_count(), static_cast<std::size_t>(kFull));
}

} // namespace
} // namespace runwarden::proxy
