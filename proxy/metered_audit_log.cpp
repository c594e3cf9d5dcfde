#include "proxy/metered_audit_log.hpp"

#include <chrono>

namespace runwarden::proxy {

MeteredAuditLog::MeteredAuditLog(std::shared_ptr<audit::AuditLog> inner,
                                 std::shared_ptr<ProxyMetrics> metrics)
    : inner_(std::move(inner)), metrics_(std::move(metrics)) {}

audit::Completion MeteredAuditLog::wrap(const MetricFamily::Handle& seconds,
                                        audit::Completion done) {
  const auto started = std::chrono::steady_clock::now();
  // The handles point into *metrics_, which the capture keeps alive.
  return [metrics = metrics_, &seconds, started, done = std::move(done)](std::error_code ec) {
    seconds.observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (ec) {
      metrics->audit_failures.inc();
    }
    if (done) {
      done(ec);
    }
  };
}

void MeteredAuditLog::record(const audit::Exchange& exchange, bool final, audit::Completion done) {
  inner_->record(exchange, final, wrap(metrics_->audit_record_seconds, std::move(done)));
}

void MeteredAuditLog::event(std::string_view type, const nlohmann::json& fields,
                            audit::Completion done) {
  inner_->event(type, fields, wrap(metrics_->audit_event_seconds, std::move(done)));
}

} // namespace runwarden::proxy
