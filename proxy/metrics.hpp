#pragma once
// A small Prometheus text-format registry (exposition format 0.0.4): counters, gauges and
// fixed-bucket histograms with labels, plus gauges read at scrape time. Lock-light: a label
// set is looked up under a shared lock and then updated with atomics.

#include "policy/model.hpp"

#include <atomic>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::proxy {

/// One metric name with its label names; each distinct set of label values is one series.
class MetricFamily {
public:
  enum class Type : std::uint8_t { counter, gauge, histogram };

  MetricFamily(std::string name, std::string help, Type type, std::vector<std::string> labels,
               std::vector<double> buckets);

  /// Label values in the order of the family's label names (missing ones are "").
  void inc(std::initializer_list<std::string_view> values, double by = 1);
  void set(std::initializer_list<std::string_view> values, double value);
  void observe(std::initializer_list<std::string_view> values, double value);
  /// The current value of a counter or gauge series (0 when absent), for tests and status.
  double value(std::initializer_list<std::string_view> values) const;

  struct Series;
  /// One series, looked up (and created) once: updating it through the handle takes no lock
  /// and no lookup, for the series every request updates. Valid as long as its family.
  class Handle {
  public:
    void inc(double by = 1) const;
    void observe(double value) const;

  private:
    friend class MetricFamily;
    Handle(const MetricFamily& family, Series& series) : family_(&family), series_(&series) {}
    const MetricFamily* family_;
    Series* series_;
  };
  Handle handle(std::initializer_list<std::string_view> values) { return {*this, series(values)}; }

  void render(std::string& out) const;
  const std::string& name() const { return name_; }

  struct Series {
    explicit Series(std::size_t buckets) : counts(buckets) {}
    std::atomic<double> value{0};
    std::vector<std::atomic<std::uint64_t>> counts; // histogram: per bucket (not cumulative)
    std::atomic<std::uint64_t> count{0};
  };

private:
  Series& series(std::initializer_list<std::string_view> values);
  void observe(Series& s, double value) const;

  std::string name_;
  std::string help_;
  Type type_;
  std::vector<std::string> labels_;
  std::vector<double> buckets_;
  mutable std::shared_mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_;
};

class MetricsRegistry {
public:
  MetricFamily& counter(std::string name, std::string help, std::vector<std::string> labels = {});
  MetricFamily& gauge(std::string name, std::string help, std::vector<std::string> labels = {});
  MetricFamily& histogram(std::string name, std::string help, std::vector<double> buckets,
                          std::vector<std::string> labels = {});
  /// A series computed at scrape time (open connections, pending holds, cache counters).
  void computed(std::string name, std::string help, MetricFamily::Type type,
                std::function<double()> read);

  /// The whole registry in Prometheus text format.
  std::string render() const;

private:
  struct Computed {
    std::string name;
    std::string help;
    MetricFamily::Type type;
    std::function<double()> read;
  };
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<MetricFamily>> families_;
  std::vector<Computed> computed_;
};

/// Latency buckets in seconds, 0.5 ms .. 60 s.
std::vector<double> latency_buckets();

/// The families runwarden exports; one instance per proxy.
struct ProxyMetrics {
  MetricsRegistry registry;
  MetricFamily& requests;         // {decision, action, runbook}
  MetricFamily& request_seconds;  // {outcome}
  MetricFamily& upstream_seconds; // {}
  MetricFamily& upstream_errors;  // {code}
  MetricFamily& tls_errors;       // {side}
  MetricFamily& approvals;        // {outcome}
  MetricFamily& budget_trips;     // {runbook, budget, on_exceed}
  MetricFamily& audit_seconds;    // {kind}
  MetricFamily& audit_errors;     // {}
  MetricFamily& reloads;          // {result}
  MetricFamily& mode_changes;     // {to, via}
  MetricFamily& runs_killed;      // {via}: admin_api, budget
  // Series every forwarded request updates, resolved once.
  MetricFamily::Handle audit_record_seconds; // audit_seconds{kind="record"}
  MetricFamily::Handle audit_event_seconds;  // audit_seconds{kind="event"}
  MetricFamily::Handle audit_failures;       // audit_errors{}
  MetricFamily::Handle upstream_time;        // upstream_seconds{}
  ProxyMetrics();

  /// The counters alerts watch with increase() start at 0 instead of appearing with their
  /// first event (increase() cannot see a series' first sample, so the first audit error
  /// or budget trip would never alert): every fixed label value now, and one series per
  /// budget of `runbooks` (again on reload, for new ones).
  void prime(const std::vector<std::shared_ptr<const policy::Runbook>>& runbooks);
};

} // namespace runwarden::proxy
