#include "approval/run_history.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

CallRecord call(std::string action) {
  CallRecord c;
  c.action = std::move(action);
  c.outcome = "forwarded";
  return c;
}

TEST(RunHistory, KeepsTheLastCallsPerRunOldestFirst) {
  RunHistory h(3, 10);
  for (int i = 0; i < 5; ++i) {
    h.record("r1", call("a" + std::to_string(i)));
  }
  h.record("r2", call("b"));
  const auto calls = h.calls("r1");
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].action, "a2");
  EXPECT_EQ(calls[2].action, "a4");
  EXPECT_EQ(h.calls("r2").size(), 1u);
  EXPECT_TRUE(h.calls("r3").empty());
}

TEST(RunHistory, ForgetsTheLeastRecentlyActiveRun) {
  RunHistory h(3, 2);
  h.record("r1", call("x"));
  h.record("r2", call("x"));
  h.record("r1", call("y")); // r1 is now the most recent
  h.record("r3", call("x")); // evicts r2
  EXPECT_EQ(h.runs(), 2u);
  EXPECT_TRUE(h.calls("r2").empty());
  EXPECT_EQ(h.calls("r1").size(), 2u);
  h.forget("r1");
  EXPECT_TRUE(h.calls("r1").empty());
  EXPECT_EQ(h.runs(), 1u);
}

} // namespace
} // namespace runwarden::approval
