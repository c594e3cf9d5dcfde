#pragma once
// The seam through which approval packets are redacted before they leave the process
// (admin API, webhooks, CLI). The proxy adapts audit's Redactor to it so a packet and
// the audit record hide exactly the same values.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace runwarden::approval {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

class PacketRedactor {
public:
  virtual ~PacketRedactor() = default;
  /// Same order and names; secret values replaced.
  virtual HeaderList redact_headers(const HeaderList& headers) const = 0;
  /// The body with secrets replaced (JSON keys, patterns), given its Content-Type.
  virtual std::string redact_body(std::string_view body, std::string_view content_type) const = 0;
  /// A request URL (the held request's, and those of the run's earlier calls) with secrets
  /// in its query (access_token=..., key patterns) replaced.
  virtual std::string redact_url(std::string_view url) const = 0;
};

/// Fail-closed fallback for when no full redactor is wired: credential headers
/// (authorization, proxy-authorization, cookie, set-cookie, x-api-key, api-key,
/// x-auth-token) become "[REDACTED:<first 8 hex of SHA-256>]" and the body is withheld
/// entirely ("[WITHHELD: no body redactor]"); the body SHA-256 still identifies it. A URL
/// keeps its path and loses its query ("?[WITHHELD: no URL redactor]").
class HeaderOnlyRedactor final : public PacketRedactor {
public:
  HeaderList redact_headers(const HeaderList& headers) const override;
  std::string redact_body(std::string_view body, std::string_view content_type) const override;
  std::string redact_url(std::string_view url) const override;
};

} // namespace runwarden::approval
