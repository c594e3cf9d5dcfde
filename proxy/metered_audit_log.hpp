#pragma once
// An AuditLog decorator that times every write to its completion and counts failures, so
// /metrics shows audit latency and errors without touching the sessions that write.

#include "audit/audit_log.hpp"
#include "proxy/metrics.hpp"

#include <memory>

namespace runwarden::proxy {

class MeteredAuditLog final : public audit::AuditLog {
public:
  MeteredAuditLog(std::shared_ptr<audit::AuditLog> inner, std::shared_ptr<ProxyMetrics> metrics);
  void record(const audit::Exchange& exchange, bool final, audit::Completion done) override;
  void event(std::string_view type, const nlohmann::json& fields, audit::Completion done) override;
  bool healthy() const override { return inner_->healthy(); }
  std::string failure() const override { return inner_->failure(); }
  std::error_code sync() override { return inner_->sync(); }
  void close() override { inner_->close(); }
  bool set_redaction(const audit::RedactionRules& rules) override {
    return inner_->set_redaction(rules);
  }

private:
  audit::Completion wrap(const MetricFamily::Handle& seconds, audit::Completion done);
  std::shared_ptr<audit::AuditLog> inner_;
  std::shared_ptr<ProxyMetrics> metrics_;
};

} // namespace runwarden::proxy
