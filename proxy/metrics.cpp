#include "proxy/metrics.hpp"

#include <array>
#include <cmath>
#include <cstdio>

namespace runwarden::proxy {
namespace {

std::string_view type_name(MetricFamily::Type t) {
  switch (t) {
  case MetricFamily::Type::counter:
    return "counter";
  case MetricFamily::Type::gauge:
    return "gauge";
  case MetricFamily::Type::histogram:
    return "histogram";
  }
  return "untyped";
}

std::string format_number(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.15g", v);
  }
  return buf;
}

void escape_label(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void escape_help(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void header(std::string& out, const std::string& name, const std::string& help,
            MetricFamily::Type type) {
  out += "# HELP " + name + " ";
  escape_help(out, help);
  out += "\n# TYPE " + name + " ";
  out += type_name(type);
  out += "\n";
}

std::string label_text(const std::vector<std::string>& names,
                       const std::vector<std::string>& values, std::string_view extra_name = {},
                       std::string_view extra_value = {}) {
  std::string out;
  bool any = false;
  for (std::size_t i = 0; i < names.size(); ++i) {
    out += any ? "," : "{";
    any = true;
    out += names[i] + "=\"";
    escape_label(out, values[i]);
    out += "\"";
  }
  if (!extra_name.empty()) {
    out += any ? "," : "{";
    any = true;
    out += std::string(extra_name) + "=\"";
    escape_label(out, extra_value);
    out += "\"";
  }
  if (any) {
    out += "}";
  }
  return out;
}

} // namespace

MetricFamily::MetricFamily(std::string name, std::string help, Type type,
                           std::vector<std::string> labels, std::vector<double> buckets)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)),
      buckets_(std::move(buckets)) {}

MetricFamily::Series& MetricFamily::series(std::initializer_list<std::string_view> values) {
  // The lookup key is rebuilt in a per-thread vector whose strings keep their capacity:
  // counting a request allocates nothing once its series exists.
  thread_local std::array<std::vector<std::string>, 8> scratch;
  std::vector<std::string> owned;
  std::vector<std::string>& key = labels_.size() < scratch.size() ? scratch[labels_.size()] : owned;
  key.resize(labels_.size());
  std::size_t i = 0;
  for (auto v : values) {
    if (i < key.size()) {
      key[i++].assign(v);
    }
  }
  for (; i < key.size(); ++i) {
    key[i].clear();
  }
  {
    std::shared_lock lock(mutex_);
    auto it = series_.find(key);
    if (it != series_.end()) {
      return *it->second;
    }
  }
  std::unique_lock lock(mutex_);
  auto& slot = series_[key];
  if (!slot) {
    slot = std::make_unique<Series>(buckets_.size());
  }
  return *slot;
}

void MetricFamily::inc(std::initializer_list<std::string_view> values, double by) {
  series(values).value.fetch_add(by, std::memory_order_relaxed);
}

void MetricFamily::set(std::initializer_list<std::string_view> values, double value) {
  series(values).value.store(value, std::memory_order_relaxed);
}

void MetricFamily::observe(std::initializer_list<std::string_view> values, double value) {
  observe(series(values), value);
}

void MetricFamily::Handle::inc(double by) const {
  series_->value.fetch_add(by, std::memory_order_relaxed);
}

void MetricFamily::Handle::observe(double value) const {
  family_->observe(*series_, value);
}

void MetricFamily::observe(Series& s, double value) const {
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    if (value <= buckets_[i]) {
      s.counts[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  s.value.fetch_add(value, std::memory_order_relaxed); // the sum
  s.count.fetch_add(1, std::memory_order_relaxed);
}

double MetricFamily::value(std::initializer_list<std::string_view> values) const {
  std::vector<std::string> key(labels_.size());
  std::size_t i = 0;
  for (auto v : values) {
    if (i < key.size()) {
      key[i++] = std::string(v);
    }
  }
  std::shared_lock lock(mutex_);
  auto it = series_.find(key);
  return it == series_.end() ? 0 : it->second->value.load();
}

void MetricFamily::render(std::string& out) const {
  header(out, name_, help_, type_);
  std::shared_lock lock(mutex_);
  for (const auto& [values, s] : series_) {
    if (type_ != Type::histogram) {
      out += name_ + label_text(labels_, values) + " " + format_number(s->value.load()) + "\n";
      continue;
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      cumulative += s->counts[i].load();
      out += name_ + "_bucket" + label_text(labels_, values, "le", format_number(buckets_[i])) +
             " " + std::to_string(cumulative) + "\n";
    }
    const auto count = s->count.load();
    out += name_ + "_bucket" + label_text(labels_, values, "le", "+Inf") + " " +
           std::to_string(count) + "\n";
    out +=
        name_ + "_sum" + label_text(labels_, values) + " " + format_number(s->value.load()) + "\n";
    out += name_ + "_count" + label_text(labels_, values) + " " + std::to_string(count) + "\n";
  }
}

MetricFamily& MetricsRegistry::counter(std::string name, std::string help,
                                       std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  families_.push_back(std::make_unique<MetricFamily>(std::move(name), std::move(help),
                                                     MetricFamily::Type::counter, std::move(labels),
                                                     std::vector<double>{}));
  return *families_.back();
}

MetricFamily& MetricsRegistry::gauge(std::string name, std::string help,
                                     std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  families_.push_back(std::make_unique<MetricFamily>(std::move(name), std::move(help),
                                                     MetricFamily::Type::gauge, std::move(labels),
                                                     std::vector<double>{}));
  return *families_.back();
}

MetricFamily& MetricsRegistry::histogram(std::string name, std::string help,
                                         std::vector<double> buckets,
                                         std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  families_.push_back(std::make_unique<MetricFamily>(std::move(name), std::move(help),
                                                     MetricFamily::Type::histogram,
                                                     std::move(labels), std::move(buckets)));
  return *families_.back();
}

void MetricsRegistry::computed(std::string name, std::string help, MetricFamily::Type type,
                               std::function<double()> read) {
  std::lock_guard lock(mutex_);
  computed_.push_back(Computed{std::move(name), std::move(help), type, std::move(read)});
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  out.reserve(8192);
  for (const auto& f : families_) {
    f->render(out);
  }
  for (const auto& c : computed_) {
    header(out, c.name, c.help, c.type);
    out += c.name + " " + format_number(c.read ? c.read() : 0) + "\n";
  }
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

ProxyMetrics::ProxyMetrics()
    : requests(registry.counter("runwarden_requests_total",
                                "Judged requests by decision, deciding action and runbook.",
                                {"decision", "action", "runbook"})),
      request_seconds(registry.histogram("runwarden_request_duration_seconds",
                                         "Time from request head to the end of the answer.",
                                         latency_buckets(), {"outcome"})),
      upstream_seconds(registry.histogram("runwarden_upstream_duration_seconds",
                                          "Time spent waiting on and relaying from upstreams.",
                                          latency_buckets())),
      upstream_errors(registry.counter("runwarden_upstream_errors_total",
                                       "Upstream connect, TLS, timeout and relay failures.",
                                       {"code"})),
      tls_errors(registry.counter("runwarden_tls_errors_total",
                                  "TLS handshake failures, agent side or upstream side.",
                                  {"side"})),
      approvals(
          registry.counter("runwarden_approvals_total", "Ended holds by outcome.", {"outcome"})),
      budget_trips(registry.counter("runwarden_budget_trips_total",
                                    "Calls that crossed a runbook budget.",
                                    {"runbook", "budget", "on_exceed"})),
      audit_seconds(registry.histogram("runwarden_audit_write_duration_seconds",
                                       "Audit record write latency (to the durability asked).",
                                       latency_buckets(), {"kind"})),
      audit_errors(registry.counter("runwarden_audit_errors_total", "Failed audit writes.")),
      reloads(registry.counter("runwarden_reloads_total", "Policy reloads by result.", {"result"})),
      mode_changes(
          registry.counter("runwarden_mode_changes_total", "Mode changes.", {"to", "via"})),
      runs_killed(registry.counter("runwarden_runs_killed_total",
                                   "Runs killed, by how: admin_api or budget.", {"via"})),
      audit_record_seconds(audit_seconds.handle({"record"})),
      audit_event_seconds(audit_seconds.handle({"event"})), audit_failures(audit_errors.handle({})),
      upstream_time(upstream_seconds.handle({})) {
  prime({});
}

void ProxyMetrics::prime(const std::vector<std::shared_ptr<const policy::Runbook>>& runbooks) {
  audit_errors.inc({}, 0);
  for (std::string_view result : {"ok", "failed"}) {
    reloads.inc({result}, 0);
  }
  for (std::string_view via : {"admin_api", "budget"}) {
    runs_killed.inc({via}, 0);
  }
  for (std::string_view side : {"agent", "upstream"}) {
    tls_errors.inc({side}, 0);
  }
  for (std::string_view code :
       {"upstream_unavailable", "upstream_timeout", "upstream_error", "client_gone"}) {
    upstream_errors.inc({code}, 0);
  }
  for (const auto& rb : runbooks) {
    if (!rb) {
      continue;
    }
    const auto& b = rb->budgets;
    const std::string on_exceed(policy::to_string(b.on_exceed));
    auto budget = [&](const std::string& name, std::string_view how) {
      budget_trips.inc({rb->name, name, how}, 0);
    };
    if (b.denied) {
      budget("denied", on_exceed);
    }
    if (b.calls) {
      budget("calls", on_exceed);
    }
    if (b.per_minute) {
      budget("per_minute", on_exceed);
    }
    for (const auto& [action, limit] : b.actions) {
      budget("actions." + action, on_exceed);
    }
    for (std::size_t i = 0; i < b.sums.size(); ++i) {
      budget("sums[" + std::to_string(i) + "]", on_exceed);
      budget("sums[" + std::to_string(i) + "]", "refuse"); // a body it cannot account for
    }
  }
}

} // namespace runwarden::proxy
