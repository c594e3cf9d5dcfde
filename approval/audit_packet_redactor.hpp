#pragma once
// PacketRedactor backed by audit's Redactor, so an approval packet hides exactly what the
// audit record hides (same rules, same [REDACTED:<sha8>] markers).

#include "approval/packet_redactor.hpp"
#include "audit/redactor.hpp"

#include <cstddef>
#include <memory>

namespace runwarden::approval {

class AuditPacketRedactor final : public PacketRedactor {
public:
  /// `max_body_bytes` bounds the redacted excerpt kept for display.
  explicit AuditPacketRedactor(std::shared_ptr<const audit::Redactor> redactor,
                               std::size_t max_body_bytes = 16 * 1024);
  HeaderList redact_headers(const HeaderList& headers) const override;
  std::string redact_body(std::string_view body, std::string_view content_type) const override;
  std::string redact_url(std::string_view url) const override;

private:
  std::shared_ptr<const audit::Redactor> redactor_;
  std::size_t max_body_bytes_;
};

} // namespace runwarden::approval
