#pragma once
// Outbound approval webhooks (DESIGN §5): approval.requested carries the packet,
// approval.resolved the outcome. Each delivery is signed per attempt and retried with
// bounded exponential back-off; failures are counted. Thread-safe.

#include "approval/clock.hpp"
#include "approval/hold_registry.hpp"
#include "approval/webhook_sender.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::approval {

struct WebhookEndpoint {
  std::string url;
  std::string secret;
};

struct RetryPolicy {
  std::chrono::milliseconds initial{1000}; // delay before the 2nd attempt
  unsigned factor = 2;                     // each further delay is this many times longer
  std::chrono::milliseconds max_delay{std::chrono::minutes(1)};
  unsigned max_attempts = 6;      // 1s, 2s, 4s, 8s, 16s between attempts, then give up
  std::size_t max_queued = 10000; // waiting + in flight; beyond it new events are dropped
};

struct WebhookStats {
  std::uint64_t published = 0;       // events x endpoints accepted into the queue
  std::uint64_t delivered = 0;       // got a 2xx
  std::uint64_t failed_attempts = 0; // attempts that did not
  std::uint64_t gave_up = 0;         // deliveries dropped after max_attempts
  std::uint64_t overflow = 0;        // deliveries refused because the queue was full
  std::size_t queued = 0;            // waiting for their time
  std::size_t in_flight = 0;
};

class WebhookNotifier {
public:
  /// `sender` must outlive the notifier, and the notifier must outlive every pending
  /// `done` callback (stop the sender's I/O before destroying it).
  WebhookNotifier(std::vector<WebhookEndpoint> endpoints, WebhookSender& sender, const Clock& clock,
                  RetryPolicy policy = {});

  /// Queues `event` for every endpoint, due now. Returns false if the queue was full for
  /// any endpoint (counted in overflow).
  bool publish(std::string_view event, const nlohmann::json& data);
  /// Translates registry events: created -> approval.requested, resolved ->
  /// approval.resolved (deferrals are not announced).
  void on_hold_event(const HoldEvent& event);
  /// A listener for HoldRegistry::set_listener.
  EventListener listener();

  /// Called with every signature header the notifier makes, before the delivery is sent
  /// (the admin API's SignatureVerifier::spend). Set before the first publish.
  using SignatureSink = std::function<void(std::string_view header, std::int64_t t)>;
  void set_signature_sink(SignatureSink sink) { signed_ = std::move(sink); }

  /// Sends every delivery whose time has come. The proxy calls it from a timer at
  /// next_due() (and right after publish).
  void tick();
  std::optional<SteadyTime> next_due() const;
  WebhookStats stats() const;

  /// Delay after failed attempt `attempt` (1-based): initial * factor^(attempt-1), capped.
  std::chrono::milliseconds backoff(unsigned attempt) const;

  /// Event bodies: {"type","id","created","data"}; data of approval.resolved is
  /// {"id","outcome","by","reason","wait_ms","run","action"}.
  static nlohmann::json requested_data(const HoldView& hold);
  static nlohmann::json resolved_data(const HoldView& hold);

private:
  struct Delivery {
    std::size_t endpoint = 0;
    std::string event;
    std::string delivery_id;
    std::string body;
    unsigned attempt = 0; // attempts made so far
  };
  void completed(Delivery delivery, bool ok);

  std::vector<WebhookEndpoint> endpoints_;
  WebhookSender& sender_;
  const Clock& clock_;
  RetryPolicy policy_;
  SignatureSink signed_;
  mutable std::mutex mutex_;
  std::multimap<SteadyTime, Delivery> due_;
  WebhookStats stats_;
};

} // namespace runwarden::approval
