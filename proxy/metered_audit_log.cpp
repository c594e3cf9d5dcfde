#include "proxy/metered_audit_log.hpp"

#include <chrono>

namespace runwarden::proxy {

MeteredAuditLog::MeteredAuditLog(std::shared_ptr<audit::AuditLog> inner,
                                 std::shared_ptr<ProxyMetrics> metrics)
    : inner_(std::move(inner)), metrics_(std::move(metrics)) {}

audit::Completion MeteredAuditLog::wrap(std::string_view kind, audit::Completion done) {
  const auto started = std::chrono::steady_clock::now();
  return [metrics = metrics_, kind = std::string(kind), started,
          done = std::move(done)](std::error_code ec) {
    metrics->audit_seconds.observe(
        {kind}, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (ec) {
      metrics->audit_errors.inc({});
    }
    if (done) {
      done(ec);
    }
  };
}

void MeteredAuditLog::record(const audit::Exchange& exchange, bool final, audit::Completion done) {
  inner_->record(exchange, final, wrap("record", std::move(done)));
}

void MeteredAuditLog::event(std::string_view type, const nlohmann::json& fields,
                            audit::Completion done) {
  inner_->event(type, fields, wrap("event", std::move(done)));
}

} // namespace runwarden::proxy
