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

// The proxy's form: views of its own strings, copied into the ring's slots; the order stays
// oldest first however often the ring has wrapped, and runs do not share slots.
TEST(RunHistory, RecordsViewsOldestFirstAcrossWraps) {
  RunHistory h(3, 10);
  for (int i = 0; i < 8; ++i) {
    std::string id = "req_" + std::to_string(i);
    std::string url = "http://api.test/items/" + std::to_string(i) + "?long=query-string-text";
    h.record("run_0123456789abcdef", CallView{id, "read", "forwarded", "GET", url, {}});
    if (i == 4) {
      h.record("other", CallView{"req_x", "write", "denied", "POST", "http://x/", {}});
    }
  }
  const auto calls = h.calls("run_0123456789abcdef");
  ASSERT_EQ(calls.size(), 3u);
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(calls[k].request_id, "req_" + std::to_string(5 + k));
    EXPECT_EQ(calls[k].url,
              "http://api.test/items/" + std::to_string(5 + k) + "?long=query-string-text");
    EXPECT_EQ(calls[k].outcome, "forwarded");
    EXPECT_EQ(calls[k].method, "GET");
  }
  const auto other = h.calls("other");
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0].request_id, "req_x");
  EXPECT_EQ(other[0].outcome, "denied");
}

} // namespace
} // namespace runwarden::approval
