// ProxyMetrics::prime: the counters alerts watch with increase() exist at 0 from the start
// (increase() cannot see a series' first sample: a counter that appears at 1 never alerts).

#include "proxy/metrics.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <string>

namespace runwarden::proxy {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(ProxyMetrics, AlertedCountersStartAtZero) {
  ProxyMetrics m;
  const std::string text = m.registry.render();
  EXPECT_TRUE(has_line(text, "runwarden_audit_errors_total 0")) << text;
  EXPECT_TRUE(has_line(text, "runwarden_reloads_total{result=\"failed\"} 0"));
  EXPECT_TRUE(has_line(text, "runwarden_runs_killed_total{via=\"budget\"} 0"));
  EXPECT_TRUE(has_line(text, "runwarden_upstream_errors_total{code=\"upstream_unavailable\"} 0"));
}

TEST(ProxyMetrics, EachBudgetOfEachRunbookStartsAtZeroAndCountsOnFromThere) {
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = "payments";
  rb->budgets.denied = 3;
  rb->budgets.actions.emplace("refund", 2);
  policy::SumBudget sum;
  sum.action = "refund";
  rb->budgets.sums.push_back(sum);
  ProxyMetrics m;
  m.prime({rb});
  const std::string series =
      "runwarden_budget_trips_total{runbook=\"payments\",budget=\"denied\",on_exceed=\"kill_run\"}";
  std::string text = m.registry.render();
  EXPECT_TRUE(has_line(text, series + " 0")) << text;
  EXPECT_TRUE(
      has_line(text, "runwarden_budget_trips_total{runbook=\"payments\",budget=\"actions.refund\","
                     "on_exceed=\"kill_run\"} 0"));
  EXPECT_TRUE(has_line(text, "runwarden_budget_trips_total{runbook=\"payments\",budget=\"sums[0]\","
                             "on_exceed=\"refuse\"} 0"));
  EXPECT_EQ(text.find("budget=\"calls\""), std::string::npos); // not set: no series
  m.budget_trips.inc({"payments", "denied", "kill_run"});
  m.prime({rb}); // a reload primes again: the count stays
  text = m.registry.render();
  EXPECT_TRUE(has_line(text, series + " 1")) << text;
}

// A handle updates the same series as a lookup by its label values does, and the series it
// names is listed from the start (a histogram at count 0), not from its first sample.
TEST(MetricFamilyHandle, UpdatesTheSeriesItNamesAndNoOther) {
  ProxyMetrics m;
  std::string text = m.registry.render();
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_count{kind=\"record\"} 0"))
      << text;
  EXPECT_TRUE(has_line(text, "runwarden_upstream_duration_seconds_count 0"));

  m.audit_record_seconds.observe(0.002);
  m.audit_record_seconds.observe(0.004);
  m.audit_seconds.observe({"record"}, 0.001); // the same series, by lookup
  m.audit_event_seconds.observe(0.25);
  m.audit_failures.inc();
  m.audit_failures.inc(2);
  text = m.registry.render();
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_count{kind=\"record\"} 3"))
      << text;
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_sum{kind=\"record\"} 0.007"));
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_count{kind=\"event\"} 1"));
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_bucket{kind=\"event\","
                             "le=\"0.1\"} 0"));
  EXPECT_TRUE(has_line(text, "runwarden_audit_write_duration_seconds_bucket{kind=\"event\","
                             "le=\"0.25\"} 1"));
  EXPECT_EQ(m.audit_errors.value({}), 3);
  EXPECT_TRUE(has_line(text, "runwarden_upstream_duration_seconds_count 0"));
}

} // namespace
} // namespace runwarden::proxy
