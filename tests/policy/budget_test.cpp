// Budget tracker: every budget at its exact boundary, windows sliding, value-aware sums.

#include "policy/budget.hpp"

#include <gtest/gtest.h>

namespace runwarden::policy {
namespace {

using std::chrono::milliseconds;

SumBudget refunds(double max, milliseconds window) {
  SumBudget s;
  s.action = "refund";
  std::string err;
  s.pointer = *JsonPointer::parse("/amount", &err);
  s.max = max;
  s.window = window;
  return s;
}

nlohmann::json amount(double v) {
  return nlohmann::json{{"amount", v}};
}

TEST(BudgetTest, NoBudgetsNeverTrip) {
  Budgets b;
  EXPECT_TRUE(b.empty());
  BudgetTracker t;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(t.admit(b, {"fetch_logs", nullptr}, milliseconds(i)));
  }
  EXPECT_EQ(t.calls(), 1000u);
}

TEST(BudgetTest, CallsBudgetLetsExactlyNThrough) {
  Budgets b;
  b.calls = 3;
  b.on_exceed = OnExceed::refuse;
  BudgetTracker t;
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(0))) << i;
  }
  auto trip = t.admit(b, {"a", nullptr}, milliseconds(0));
  ASSERT_TRUE(trip);
  EXPECT_EQ(trip->budget, "calls");
  EXPECT_EQ(trip->on_exceed, OnExceed::refuse);
  EXPECT_EQ(trip->limit, 3);
  EXPECT_EQ(trip->value, 4);
  EXPECT_EQ(trip->reason, "calls budget 3 exhausted (this would be call 4)");
  // A refused call is not counted: still exactly 3.
  EXPECT_EQ(t.calls(), 3u);
  EXPECT_TRUE(t.admit(b, {"a", nullptr}, milliseconds(0)));
}

TEST(BudgetTest, DeniedBudgetTripsOnTheAttemptAfterTheLimit) {
  Budgets b;
  b.denied = 2;
  BudgetTracker t;
  EXPECT_FALSE(t.record_denial(b));
  EXPECT_FALSE(t.record_denial(b));
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(0))); // 2 denials: at, not over
  auto trip = t.record_denial(b);
  ASSERT_TRUE(trip);
  EXPECT_EQ(trip->budget, "denied");
  EXPECT_EQ(trip->on_exceed, OnExceed::kill_run); // the default: circuit breaker
  EXPECT_EQ(trip->value, 3);
  // Once over, allowed calls are refused too.
  auto next = t.admit(b, {"a", nullptr}, milliseconds(0));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->budget, "denied");
}

TEST(BudgetTest, DeniedZeroTripsOnTheFirstDenial) {
  Budgets b;
  b.denied = 0;
  BudgetTracker t;
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(0)));
  EXPECT_TRUE(t.record_denial(b));
}

TEST(BudgetTest, PerMinuteIsASlidingWindow) {
  Budgets b;
  b.per_minute = 2;
  BudgetTracker t;
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(1000)));
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(30'000)));
  auto trip = t.admit(b, {"a", nullptr}, milliseconds(60'999)); // first call still inside
  ASSERT_TRUE(trip);
  EXPECT_EQ(trip->budget, "per_minute");
  EXPECT_EQ(trip->value, 3);
  // At exactly 60s after the first call it has left the window.
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(61'000)));
  EXPECT_TRUE(t.admit(b, {"a", nullptr}, milliseconds(61'000)));
  EXPECT_FALSE(t.admit(b, {"a", nullptr}, milliseconds(90'000)));
}

TEST(BudgetTest, PerActionCountsOnlyThatAction) {
  Budgets b;
  b.actions["restart"] = 1;
  BudgetTracker t;
  EXPECT_FALSE(t.admit(b, {"restart", nullptr}, milliseconds(0)));
  EXPECT_FALSE(t.admit(b, {"fetch_logs", nullptr}, milliseconds(0)));
  EXPECT_FALSE(t.admit(b, {"fetch_logs", nullptr}, milliseconds(0)));
  auto trip = t.admit(b, {"restart", nullptr}, milliseconds(0));
  ASSERT_TRUE(trip);
  EXPECT_EQ(trip->budget, "actions.restart");
  EXPECT_EQ(t.action_calls("restart"), 1u);
  EXPECT_EQ(t.action_calls("fetch_logs"), 2u);
}

TEST(BudgetTest, PerActionZeroRefusesTheFirstCall) {
  Budgets b;
  b.actions["restart"] = 0;
  BudgetTracker t;
  EXPECT_TRUE(t.admit(b, {"restart", nullptr}, milliseconds(0)));
}

TEST(BudgetTest, ValueAwareSumReachingTheLimitPassesCrossingItTrips) {
  Budgets b;
  b.sums.push_back(refunds(10000, std::chrono::hours(24)));
  BudgetTracker t;
  const auto a = amount(4000);
  const auto c = amount(6000);
  const auto one = amount(1);
  EXPECT_FALSE(t.admit(b, {"refund", &a}, milliseconds(0)));
  EXPECT_FALSE(t.admit(b, {"refund", &c}, milliseconds(1))); // exactly 10000: allowed
  EXPECT_EQ(t.sum(b.sums[0], milliseconds(1)), 10000);
  auto trip = t.admit(b, {"refund", &one}, milliseconds(2)); // 10001: over
  ASSERT_TRUE(trip);
  EXPECT_EQ(trip->budget, "sums[0]");
  EXPECT_EQ(trip->limit, 10000);
  EXPECT_EQ(trip->value, 10001);
  EXPECT_EQ(trip->reason,
            "budget sums[0]: sum of /amount over \"refund\" would reach 10001, above 10000");
  EXPECT_EQ(t.sum(b.sums[0], milliseconds(2)), 10000); // the refused refund is not counted
  // Other actions are not summed.
  EXPECT_FALSE(t.admit(b, {"fetch_logs", &one}, milliseconds(3)));
}

TEST(BudgetTest, ValueAwareSumWindowSlides) {
  Budgets b;
  b.sums.push_back(refunds(100, milliseconds(1000)));
  BudgetTracker t;
  const auto sixty = amount(60);
  EXPECT_FALSE(t.admit(b, {"refund", &sixty}, milliseconds(0)));
  EXPECT_TRUE(t.admit(b, {"refund", &sixty}, milliseconds(999)));
  EXPECT_FALSE(t.admit(b, {"refund", &sixty}, milliseconds(1000))); // first one expired
  EXPECT_EQ(t.sum(b.sums[0], milliseconds(1000)), 60);
}

TEST(BudgetTest, SumWithoutANumberFailsClosedByRefusing) {
  Budgets b;
  b.sums.push_back(refunds(100, milliseconds(1000)));
  BudgetTracker t;
  const nlohmann::json text{{"amount", "50"}};
  const nlohmann::json negative{{"amount", -5}};
  const nlohmann::json none = nlohmann::json::object();
  for (const auto* body : {&text, &negative, &none}) {
    auto trip = t.admit(b, {"refund", body}, milliseconds(0));
    ASSERT_TRUE(trip);
    EXPECT_EQ(trip->budget, "sums[0]");
    EXPECT_EQ(trip->on_exceed, OnExceed::refuse);
  }
  auto trip = t.admit(b, {"refund", nullptr}, milliseconds(0));
  ASSERT_TRUE(trip);
  EXPECT_EQ(t.calls(), 0u);
}

TEST(BudgetTest, NothingIsCountedWhenALaterBudgetTrips) {
  Budgets b;
  b.calls = 10;
  b.per_minute = 10;
  b.actions["refund"] = 10;
  b.sums.push_back(refunds(100, milliseconds(60'000)));
  BudgetTracker t;
  const auto big = amount(101);
  EXPECT_TRUE(t.admit(b, {"refund", &big}, milliseconds(0)));
  EXPECT_EQ(t.calls(), 0u);
  EXPECT_EQ(t.action_calls("refund"), 0u);
  const auto ok = amount(100);
  EXPECT_FALSE(t.admit(b, {"refund", &ok}, milliseconds(0)));
  EXPECT_EQ(t.calls(), 1u);
}

TEST(BudgetTest, OnExceedNames) {
  EXPECT_EQ(to_string(OnExceed::refuse), "refuse");
  EXPECT_EQ(to_string(OnExceed::kill_run), "kill_run");
}

} // namespace
} // namespace runwarden::policy
