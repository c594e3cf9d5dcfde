#include "approval/webhook_notifier.hpp"

#include "approval/crypto.hpp"
#include "approval/signature.hpp"

namespace runwarden::approval {

WebhookNotifier::WebhookNotifier(std::vector<WebhookEndpoint> endpoints, WebhookSender& sender,
                                 const Clock& clock, RetryPolicy policy)
    : endpoints_(std::move(endpoints)), sender_(sender), clock_(clock), policy_(policy) {
  if (policy_.max_attempts == 0) {
    policy_.max_attempts = 1;
  }
}

std::chrono::milliseconds WebhookNotifier::backoff(unsigned attempt) const {
  std::chrono::milliseconds delay = policy_.initial;
  for (unsigned i = 1; i < attempt && delay < policy_.max_delay; ++i) {
    delay *= policy_.factor;
  }
  return delay < policy_.max_delay ? delay : policy_.max_delay;
}

bool WebhookNotifier::publish(std::string_view event, const nlohmann::json& data) {
  if (endpoints_.empty()) {
    return true;
  }
  const std::string id = random_id("evt_");
  const nlohmann::json body = {
      {"type", event}, {"id", id}, {"created", format_time(clock_.wall())}, {"data", data}};
  const std::string text = body.dump();
  bool all = true;
  std::lock_guard lock(mutex_);
  const SteadyTime now = clock_.steady();
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    if (stats_.queued + stats_.in_flight >= policy_.max_queued) {
      ++stats_.overflow;
      all = false;
      continue;
    }
    Delivery d;
    d.endpoint = i;
    d.event = std::string(event);
    d.delivery_id = random_id("whd_");
    d.body = text;
    due_.emplace(now, std::move(d));
    ++stats_.queued;
    ++stats_.published;
  }
  return all;
}

nlohmann::json WebhookNotifier::requested_data(const HoldView& hold) {
  return hold.to_json(true);
}

nlohmann::json WebhookNotifier::resolved_data(const HoldView& hold) {
  nlohmann::json j = {
      {"id", hold.id},         {"outcome", to_string(hold.state)}, {"by", hold.by},
      {"reason", hold.reason}, {"wait_ms", hold.wait.count()},     {"deferred", hold.deferred}};
  if (hold.packet) {
    j["run"] = hold.packet->run;
    j["action"] = hold.packet->action;
    j["request_id"] = hold.packet->request_id;
  }
  return j;
}

void WebhookNotifier::on_hold_event(const HoldEvent& event) {
  if (endpoints_.empty()) {
    // Nothing to deliver: skip rendering the packet. This runs in the registry's listener
    // on a proxy I/O thread, right after an approval was released.
    return;
  }
  switch (event.kind) {
  case HoldEvent::Kind::created:
    publish("approval.requested", requested_data(event.hold));
    break;
  case HoldEvent::Kind::resolved:
    publish("approval.resolved", resolved_data(event.hold));
    break;
  case HoldEvent::Kind::deferred:
    break;
  }
}

EventListener WebhookNotifier::listener() {
  return [this](const HoldEvent& e) { on_hold_event(e); };
}

void WebhookNotifier::tick() {
  std::vector<std::pair<WebhookRequest, Delivery>> ready;
  {
    std::lock_guard lock(mutex_);
    const SteadyTime now = clock_.steady();
    const std::int64_t t = unix_seconds(clock_.wall());
    while (!due_.empty() && due_.begin()->first <= now) {
      Delivery d = std::move(due_.begin()->second);
      due_.erase(due_.begin());
      --stats_.queued;
      ++stats_.in_flight;
      ++d.attempt;
      const WebhookEndpoint& ep = endpoints_[d.endpoint];
      WebhookRequest req{ep.url,   d.event, d.delivery_id, d.body, sign(ep.secret, t, d.body),
                         d.attempt};
      if (signed_) {
        signed_(req.signature, t); // spent before anyone can see it
      }
      ready.emplace_back(std::move(req), std::move(d));
    }
  }
  for (auto& [req, d] : ready) { // outside the lock: a sender may complete inline
    sender_.send(req, [this, delivery = std::move(d)](bool ok, const std::string&) mutable {
      completed(std::move(delivery), ok);
    });
  }
}

void WebhookNotifier::completed(Delivery delivery, bool ok) {
  std::lock_guard lock(mutex_);
  --stats_.in_flight;
  if (ok) {
    ++stats_.delivered;
    return;
  }
  ++stats_.failed_attempts;
  if (delivery.attempt >= policy_.max_attempts) {
    ++stats_.gave_up;
    return;
  }
  const SteadyTime when = clock_.steady() + backoff(delivery.attempt);
  due_.emplace(when, std::move(delivery));
  ++stats_.queued;
}

std::optional<SteadyTime> WebhookNotifier::next_due() const {
  std::lock_guard lock(mutex_);
  if (due_.empty()) {
    return std::nullopt;
  }
  return due_.begin()->first;
}

WebhookStats WebhookNotifier::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

} // namespace runwarden::approval
