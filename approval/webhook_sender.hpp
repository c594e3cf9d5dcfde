#pragma once
// The seam for delivering a webhook: the proxy implements it with Beast (HTTPS POST,
// deadlines, upstream trust); tests implement it with a fake. approval/ only decides
// what to send, when, and how often to retry.

#include <functional>
#include <string>

namespace runwarden::approval {

struct WebhookRequest {
  std::string url;
  std::string event;       // "approval.requested" | "approval.resolved"
  std::string delivery_id; // "whd_...": the same on every retry, for receiver de-duplication
  std::string body;        // JSON
  std::string signature;   // Runwarden-Signature header value, fresh per attempt
  unsigned attempt = 1;    // 1-based
};

/// `ok` true for a 2xx answer; `error` says why not (status, timeout, TLS...).
using WebhookDone = std::function<void(bool ok, std::string error)>;

class WebhookSender {
public:
  virtual ~WebhookSender() = default;
  /// POST `request.body` with Content-Type: application/json, Runwarden-Signature,
  /// Runwarden-Event and Runwarden-Delivery headers. Must call `done` exactly once,
  /// on any thread.
  virtual void send(const WebhookRequest& request, WebhookDone done) = 0;
};

} // namespace runwarden::approval
