#include "approval/audit_packet_redactor.hpp"

namespace runwarden::approval {

AuditPacketRedactor::AuditPacketRedactor(std::shared_ptr<const audit::Redactor> redactor,
                                         std::size_t max_body_bytes)
    : redactor_(std::move(redactor)), max_body_bytes_(max_body_bytes) {}

HeaderList AuditPacketRedactor::redact_headers(const HeaderList& headers) const {
  HeaderList out;
  out.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    out.emplace_back(name, redactor_->redact_header(name, value));
  }
  return out;
}

std::string AuditPacketRedactor::redact_body(std::string_view body,
                                             std::string_view content_type) const {
  const audit::RedactedBody r = redactor_->redact_body(body, content_type, max_body_bytes_);
  if (r.binary) {
    return "[binary body: " + std::to_string(body.size()) + " bytes, sha256 " + r.sha256 + "]";
  }
  return r.text;
}

std::string AuditPacketRedactor::redact_url(std::string_view url) const {
  return redactor_->redact_url(url);
}

} // namespace runwarden::approval
