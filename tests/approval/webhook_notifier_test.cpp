#include "approval/signature.hpp"
#include "approval/webhook_notifier.hpp"
#include "tests/approval/fake_clock.hpp"
#include "tests/approval/test_packets.hpp"

#include <gtest/gtest.h>
#include <vector>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;
using test::FakeClock;

// Answers inline with a scripted result and remembers what it was asked to send.
class FakeSender final : public WebhookSender {
public:
  explicit FakeSender(const FakeClock& clock) : clock_(clock) {}
  void send(const WebhookRequest& request, WebhookDone done) override {
    sent.push_back(request);
    times.push_back(clock_.steady());
    const bool ok = succeed_after != 0 && sent.size() >= succeed_after;
    done(ok, ok ? "" : "HTTP 503");
  }
  std::size_t succeed_after = 0; // 0: always fail
  std::vector<WebhookRequest> sent;
  std::vector<SteadyTime> times;

private:
  const FakeClock& clock_;
};

// Ticks at each due time until nothing is left (bounded).
void run_until_idle(WebhookNotifier& n, FakeClock& clock) {
  for (int i = 0; i < 100; ++i) {
    n.tick();
    const auto due = n.next_due();
    if (!due) {
      return;
    }
    clock.advance(std::chrono::duration_cast<std::chrono::milliseconds>(*due - clock.steady()));
  }
  FAIL() << "notifier did not go idle";
}

TEST(WebhookNotifier, FailingSenderIsRetriedOnTheBackoffScheduleThenGivenUp) {
  FakeClock clock;
  FakeSender sender(clock);
  WebhookNotifier n({{"https://ops.example/hook", "whsec"}}, sender, clock,
                    {.initial = 1s, .factor = 2, .max_delay = 60s, .max_attempts = 5});
  const SteadyTime t0 = clock.steady();
  ASSERT_TRUE(n.publish("approval.requested", {{"id", "apr_1"}}));
  run_until_idle(n, clock);
  ASSERT_EQ(sender.sent.size(), 5u);
  const std::vector<std::chrono::milliseconds> expected = {0s, 1s, 3s, 7s, 15s};
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(sender.times[i] - t0, expected[i]) << "attempt " << i + 1;
    EXPECT_EQ(sender.sent[i].attempt, i + 1);
    EXPECT_EQ(sender.sent[i].delivery_id, sender.sent[0].delivery_id);
    EXPECT_EQ(sender.sent[i].body, sender.sent[0].body);
  }
  const auto s = n.stats();
  EXPECT_EQ(s.failed_attempts, 5u);
  EXPECT_EQ(s.gave_up, 1u);
  EXPECT_EQ(s.delivered, 0u);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.in_flight, 0u);
}

TEST(WebhookNotifier, StopsRetryingOnSuccess) {
  FakeClock clock;
  FakeSender sender(clock);
  sender.succeed_after = 3;
  WebhookNotifier n({{"https://a", "s"}}, sender, clock);
  n.publish("approval.resolved", {{"id", "apr_1"}});
  run_until_idle(n, clock);
  EXPECT_EQ(sender.sent.size(), 3u);
  EXPECT_EQ(n.stats().delivered, 1u);
  EXPECT_EQ(n.stats().failed_attempts, 2u);
  EXPECT_EQ(n.stats().gave_up, 0u);
}

TEST(WebhookNotifier, BackoffIsCapped) {
  FakeClock clock;
  FakeSender sender(clock);
  WebhookNotifier n({}, sender, clock, {.initial = 1s, .factor = 2, .max_delay = 5s});
  EXPECT_EQ(n.backoff(1), 1s);
  EXPECT_EQ(n.backoff(3), 4s);
  EXPECT_EQ(n.backoff(4), 5s);
  EXPECT_EQ(n.backoff(40), 5s);
}

TEST(WebhookNotifier, EveryAttemptIsFreshlySignedAndVerifies) {
  FakeClock clock;
  FakeSender sender(clock);
  WebhookNotifier n({{"https://a", "whsec"}}, sender, clock, {.max_attempts = 2});
  n.publish("approval.requested", {{"id", "apr_1"}});
  run_until_idle(n, clock);
  ASSERT_EQ(sender.sent.size(), 2u);
  EXPECT_NE(sender.sent[0].signature, sender.sent[1].signature); // a second later
  SignatureVerifier receiver(std::vector<SignatureKey>{{"ops", "whsec"}});
  const std::int64_t now = unix_seconds(clock.wall());
  for (const auto& req : sender.sent) {
    EXPECT_EQ(receiver.verify(req.signature, req.body, now).error, SignatureError::ok);
  }
  const auto body = nlohmann::json::parse(sender.sent[0].body);
  EXPECT_EQ(body["type"], "approval.requested");
  EXPECT_EQ(body["data"]["id"], "apr_1");
  EXPECT_EQ(body["id"].get<std::string>().rfind("evt_", 0), 0u);
}

// The sink (the admin API's replay cache) gets every attempt's signature before it is sent:
// a delivery then never verifies as an inbound call.
TEST(WebhookNotifier, EverySignatureReachesTheSinkBeforeItsDelivery) {
  FakeClock clock;
  FakeSender sender(clock);
  SignatureVerifier admin(std::vector<SignatureKey>{{"webhook:a", "whsec"}});
  WebhookNotifier n({{"https://a", "whsec"}}, sender, clock, {.max_attempts = 2});
  std::vector<std::string> spent;
  n.set_signature_sink([&](std::string_view header, std::int64_t t) {
    EXPECT_EQ(sender.sent.size(), spent.size()); // before the send
    spent.emplace_back(header);
    admin.spend(header, t);
  });
  n.publish("approval.requested", {{"id", "apr_1"}});
  run_until_idle(n, clock);
  ASSERT_EQ(sender.sent.size(), 2u);
  ASSERT_EQ(spent.size(), 2u);
  const std::int64_t now = unix_seconds(clock.wall());
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(spent[i], sender.sent[i].signature);
    EXPECT_EQ(admin.verify(sender.sent[i].signature, sender.sent[i].body, now).error,
              SignatureError::replayed);
  }
}

TEST(WebhookNotifier, EachEndpointGetsItsOwnSignedDelivery) {
  FakeClock clock;
  FakeSender sender(clock);
  sender.succeed_after = 1;
  WebhookNotifier n({{"https://a", "sa"}, {"https://b", "sb"}}, sender, clock);
  n.publish("approval.requested", {{"id", "apr_1"}});
  n.tick();
  ASSERT_EQ(sender.sent.size(), 2u);
  const auto now = unix_seconds(clock.wall());
  SignatureVerifier va(std::vector<SignatureKey>{{"a", "sa"}});
  SignatureVerifier vb(std::vector<SignatureKey>{{"b", "sb"}});
  const auto& to_a = sender.sent[0].url == "https://a" ? sender.sent[0] : sender.sent[1];
  const auto& to_b = sender.sent[0].url == "https://a" ? sender.sent[1] : sender.sent[0];
  EXPECT_EQ(va.verify(to_a.signature, to_a.body, now).error, SignatureError::ok);
  EXPECT_EQ(vb.verify(to_b.signature, to_b.body, now).error, SignatureError::ok);
  EXPECT_EQ(va.verify(to_b.signature, to_b.body, now).error, SignatureError::mismatch);
}

TEST(WebhookNotifier, QueueIsBounded) {
  FakeClock clock;
  FakeSender sender(clock);
  WebhookNotifier n({{"https://a", "s"}}, sender, clock, {.max_queued = 2});
  EXPECT_TRUE(n.publish("approval.requested", {}));
  EXPECT_TRUE(n.publish("approval.requested", {}));
  EXPECT_FALSE(n.publish("approval.requested", {}));
  EXPECT_EQ(n.stats().overflow, 1u);
  EXPECT_EQ(n.stats().queued, 2u);
}

TEST(WebhookNotifier, NoEndpointsMeansNothingIsQueued) {
  FakeClock clock;
  FakeSender sender(clock);
  WebhookNotifier n({}, sender, clock);
  HoldRegistry reg({}, clock);
  reg.set_listener(n.listener());
  const auto c = reg.create(test::packet("r1"), {}, [](const HoldOutcome&) {});
  reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "");
  EXPECT_TRUE(n.publish("mode_changed", {{"to", "paused"}}));
  n.tick();
  EXPECT_TRUE(sender.sent.empty());
  EXPECT_EQ(n.stats().published, 0u);
  EXPECT_EQ(n.stats().queued, 0u);
  EXPECT_FALSE(n.next_due());
}

TEST(WebhookNotifier, RegistryEventsBecomeRequestedAndResolved) {
  FakeClock clock;
  FakeSender sender(clock);
  sender.succeed_after = 1;
  WebhookNotifier n({{"https://a", "s"}}, sender, clock);
  HoldRegistry reg({}, clock);
  reg.set_listener(n.listener());
  const auto c = reg.create(test::packet("r1"), {}, [](const HoldOutcome&) {});
  clock.advance(2500ms);
  reg.decide(c.id, Choice::deny, Principal{"alice", {}}, "not now");
  n.tick();
  ASSERT_EQ(sender.sent.size(), 2u);
  const auto requested = nlohmann::json::parse(sender.sent[0].body);
  const auto resolved = nlohmann::json::parse(sender.sent[1].body);
  EXPECT_EQ(requested["type"], "approval.requested");
  EXPECT_EQ(requested["data"]["packet"]["run"], "r1");
  EXPECT_EQ(resolved["type"], "approval.resolved");
  EXPECT_EQ(resolved["data"]["id"], c.id);
  EXPECT_EQ(resolved["data"]["outcome"], "denied");
  EXPECT_EQ(resolved["data"]["by"], "alice");
  EXPECT_EQ(resolved["data"]["reason"], "not now");
  EXPECT_EQ(resolved["data"]["wait_ms"], 2500);
}

} // namespace
} // namespace runwarden::approval
