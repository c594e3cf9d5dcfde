#include "approval/hold_registry.hpp"
#include "tests/approval/fake_clock.hpp"
#include "tests/approval/test_packets.hpp"

#include <atomic>
#include <gtest/gtest.h>
#include <mutex>
#include <thread>
#include <vector>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;
using test::FakeClock;
using test::packet;

struct Recorder {
  std::mutex mutex;
  std::vector<HoldOutcome> outcomes;
  OutcomeCallback callback() {
    return [this](const HoldOutcome& o) {
      std::lock_guard lock(mutex);
      outcomes.push_back(o);
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return outcomes.size();
  }
};

TEST(HoldRegistry, IdIsPrefixedAnd128RandomBits) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto a = reg.create(packet("r1"), {}, rec.callback());
  const auto b = reg.create(packet("r1"), {}, rec.callback());
  ASSERT_EQ(a.error, CreateError::ok);
  EXPECT_EQ(a.id.rfind("apr_", 0), 0u);
  EXPECT_EQ(a.id.size(), 4u + 32u);
  EXPECT_NE(a.id, b.id);
  EXPECT_EQ(rec.size(), 0u);
}

TEST(HoldRegistry, ApproveFiresCallbackOnceAndRepeatIsIdempotent) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {}, rec.callback());
  clock.advance(1500ms);
  const auto first = reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "looks right");
  EXPECT_EQ(first.error, DecideError::ok);
  EXPECT_TRUE(first.changed);
  ASSERT_TRUE(first.hold);
  EXPECT_EQ(first.hold->state, HoldState::approved);
  EXPECT_EQ(first.hold->by, "alice");
  EXPECT_EQ(first.hold->wait, 1500ms);

  const auto again = reg.decide(c.id, Choice::approve, Principal{"bob", {}}, "me too");
  EXPECT_EQ(again.error, DecideError::ok);
  EXPECT_FALSE(again.changed);
  EXPECT_EQ(again.hold->by, "alice"); // the first decision stands

  const auto conflict = reg.decide(c.id, Choice::deny, Principal{"bob", {}}, "no");
  EXPECT_EQ(conflict.error, DecideError::conflict);
  EXPECT_EQ(conflict.hold->state, HoldState::approved);

  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].state, HoldState::approved);
  EXPECT_EQ(rec.outcomes[0].code(), "approved");
  EXPECT_EQ(rec.outcomes[0].by, "alice");
  EXPECT_EQ(rec.outcomes[0].wait, 1500ms);
}

TEST(HoldRegistry, OldestPendingAgeFollowsTheQueue) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  EXPECT_EQ(reg.oldest_pending_age(), 0ms);
  const auto first = reg.create(packet("r1"), {}, rec.callback());
  clock.advance(2000ms);
  const auto second = reg.create(packet("r2"), {}, rec.callback());
  clock.advance(500ms);
  EXPECT_EQ(reg.oldest_pending_age(), 2500ms);
  reg.decide(first.id, Choice::deny, Principal{"alice", {}}, "no");
  EXPECT_EQ(reg.oldest_pending_age(), 500ms); // resolved holds leave the queue
  reg.abandon(second.id);
  EXPECT_EQ(reg.oldest_pending_age(), 0ms);
}

TEST(HoldRegistry, UnknownIdIsNotFound) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  EXPECT_EQ(reg.decide("apr_nope", Choice::approve, Principal{"alice", {}}, "").error,
            DecideError::not_found);
  EXPECT_FALSE(reg.get("apr_nope"));
}

TEST(HoldRegistry, DenyThenApproveIsConflict) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {}, rec.callback());
  EXPECT_EQ(reg.decide(c.id, Choice::deny, Principal{"alice", {}}, "risky").error, DecideError::ok);
  EXPECT_EQ(reg.decide(c.id, Choice::approve, Principal{"bob", {}}, "").error,
            DecideError::conflict);
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].code(), "approval_denied");
  EXPECT_EQ(rec.outcomes[0].reason, "risky");
}

TEST(HoldRegistry, RacingDecisionsHaveOneWinnerAndOneCallback) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  constexpr int rounds = 50;
  constexpr int threads = 8;
  for (int round = 0; round < rounds; ++round) {
    std::atomic<int> callbacks{0};
    HoldState seen = HoldState::pending;
    const auto c = reg.create(packet("r1"), {}, [&](const HoldOutcome& o) {
      seen = o.state;
      callbacks.fetch_add(1);
    });
    std::atomic<int> changed{0};
    std::atomic<int> ok{0};
    std::atomic<int> conflicts{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        while (!go.load()) {
          std::this_thread::yield();
        }
        const Choice choice = t % 2 == 0 ? Choice::approve : Choice::deny;
        const auto r = reg.decide(c.id, choice, Principal{"op" + std::to_string(t), {}}, "");
        if (r.changed) {
          changed.fetch_add(1);
        }
        if (r.error == DecideError::ok) {
          ok.fetch_add(1);
          // Every success agrees with the final state.
          EXPECT_EQ(r.hold->state,
                    choice == Choice::approve ? HoldState::approved : HoldState::denied);
        } else {
          EXPECT_EQ(r.error, DecideError::conflict);
          conflicts.fetch_add(1);
        }
      });
    }
    go.store(true);
    for (auto& th : pool) {
      th.join();
    }
    EXPECT_EQ(changed.load(), 1);
    EXPECT_EQ(callbacks.load(), 1);
    // Half the threads asked for the winning decision, half for the other one.
    EXPECT_EQ(ok.load(), threads / 2);
    EXPECT_EQ(conflicts.load(), threads / 2);
    EXPECT_EQ(reg.get(c.id)->state, seen);
  }
}

TEST(HoldRegistry, TimeoutExpiresAndFailsClosed) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {.timeout = 10s, .wait = std::nullopt}, rec.callback());
  ASSERT_EQ(reg.next_deadline(), clock.steady() + 10s);
  clock.advance(9999ms);
  reg.tick();
  EXPECT_EQ(rec.size(), 0u);
  clock.advance(1ms);
  reg.tick();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].state, HoldState::expired);
  EXPECT_EQ(rec.outcomes[0].code(), "approval_timeout");
  EXPECT_FALSE(reg.next_deadline());
  // A late approval cannot release it.
  EXPECT_EQ(reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "").error,
            DecideError::conflict);
  EXPECT_EQ(rec.size(), 1u);
}

TEST(HoldRegistry, KillRunDeniesOnlyThatRunsHolds) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder a;
  Recorder b;
  const auto ha = reg.create(packet("run-a"), {}, a.callback());
  reg.create(packet("run-a"), {}, a.callback());
  const auto hb = reg.create(packet("run-b"), {}, b.callback());
  EXPECT_EQ(reg.kill_run("run-a", "ctl"), 2u);
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(a.outcomes[0].state, HoldState::killed);
  EXPECT_EQ(a.outcomes[0].code(), "approval_denied");
  EXPECT_EQ(reg.get(hb.id)->state, HoldState::pending);
  EXPECT_EQ(reg.decide(ha.id, Choice::approve, Principal{"alice", {}}, "").error,
            DecideError::conflict);
  EXPECT_EQ(reg.kill_run("run-a", "ctl"), 0u);
}

TEST(HoldRegistry, PauseDeniesEveryPendingHold) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  reg.create(packet("r1"), {}, rec.callback());
  reg.create(packet("r2"), {}, rec.callback());
  EXPECT_EQ(reg.pause_all("ctl"), 2u);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec.outcomes[1].state, HoldState::paused);
  EXPECT_EQ(reg.list(HoldState::pending).size(), 0u);
  EXPECT_EQ(reg.stats().paused, 2u);
}

TEST(HoldRegistry, AbandonReleasesNothingEver) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {}, rec.callback());
  EXPECT_TRUE(reg.abandon(c.id));
  EXPECT_FALSE(reg.abandon(c.id));
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].state, HoldState::abandoned);
  EXPECT_EQ(rec.outcomes[0].code(), "client_gone");
  EXPECT_EQ(reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "").error,
            DecideError::conflict);
  EXPECT_FALSE(reg.take_grant("r1", "d1"));
  EXPECT_EQ(rec.size(), 1u);
}

TEST(HoldRegistry, CapacityRefusesWithReasonAndNoCallback) {
  FakeClock clock;
  HoldRegistry reg({.max_pending = 2}, clock);
  Recorder rec;
  const auto a = reg.create(packet("r1"), {}, rec.callback());
  reg.create(packet("r1"), {}, rec.callback());
  const auto refused = reg.create(packet("r1"), {}, rec.callback());
  EXPECT_EQ(refused.error, CreateError::capacity);
  EXPECT_TRUE(refused.id.empty());
  EXPECT_NE(refused.reason.find("max_pending 2"), std::string::npos);
  EXPECT_EQ(reg.stats().refused_capacity, 1u);
  // Resolving one frees a slot.
  reg.decide(a.id, Choice::deny, Principal{"alice", {}}, "");
  EXPECT_EQ(reg.create(packet("r1"), {}, rec.callback()).error, CreateError::ok);
  EXPECT_EQ(rec.size(), 1u);
}

TEST(HoldRegistry, DeferThenApproveIssuesSingleUseGrantForSameRunAndDigest) {
  FakeClock clock;
  HoldRegistry reg({.grant_ttl = 60s}, clock);
  Recorder rec;
  const auto c =
      reg.create(packet("r1", "digest-x"), {.timeout = 10min, .wait = 20s}, rec.callback());
  clock.advance(20s);
  reg.tick();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].state, HoldState::pending);
  EXPECT_TRUE(rec.outcomes[0].deferred);
  EXPECT_EQ(rec.outcomes[0].code(), "approval_pending");
  // The retried request finds the same hold, and there is no grant before approval.
  ASSERT_TRUE(reg.find_deferred("r1", "digest-x"));
  EXPECT_EQ(reg.find_deferred("r1", "digest-x")->id, c.id);
  EXPECT_FALSE(reg.take_grant("r1", "digest-x"));
  // A deferred hold has no client to abandon.
  EXPECT_FALSE(reg.abandon(c.id));

  EXPECT_TRUE(reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "ok").changed);
  EXPECT_EQ(rec.size(), 1u); // the creator was already answered
  EXPECT_FALSE(reg.find_deferred("r1", "digest-x"));
  EXPECT_FALSE(reg.take_grant("r2", "digest-x")); // other run
  EXPECT_FALSE(reg.take_grant("r1", "digest-y")); // other payload
  const auto grant = reg.take_grant("r1", "digest-x");
  ASSERT_TRUE(grant);
  EXPECT_EQ(grant->approval_id, c.id);
  EXPECT_EQ(grant->by, "alice");
  EXPECT_FALSE(reg.take_grant("r1", "digest-x")); // single use
}

TEST(HoldRegistry, GrantExpiresAfterTtl) {
  FakeClock clock;
  HoldRegistry reg({.grant_ttl = 60s}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {.timeout = 10min, .wait = 1s}, rec.callback());
  clock.advance(1s);
  reg.tick();
  reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "");
  clock.advance(60s);
  EXPECT_FALSE(reg.take_grant("r1", "d1"));
}

TEST(HoldRegistry, DeferredHoldStillTimesOutWithoutGrant) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {.timeout = 30s, .wait = 5s}, rec.callback());
  clock.advance(5s);
  reg.tick();
  clock.advance(25s);
  reg.tick();
  EXPECT_EQ(rec.size(), 1u);
  EXPECT_EQ(reg.get(c.id)->state, HoldState::expired);
  EXPECT_FALSE(reg.take_grant("r1", "d1"));
}

TEST(HoldRegistry, DenyOfDeferredHoldIssuesNoGrant) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {.timeout = 30s, .wait = 5s}, rec.callback());
  clock.advance(5s);
  reg.tick();
  reg.decide(c.id, Choice::deny, Principal{"alice", {}}, "");
  EXPECT_FALSE(reg.take_grant("r1", "d1"));
}

TEST(HoldRegistry, ApprovingAnUndeferredHoldIssuesNoGrant) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet("r1"), {}, rec.callback());
  reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "");
  EXPECT_FALSE(reg.take_grant("r1", "d1")); // the held connection itself is released
}

TEST(HoldRegistry, ListenerSeesEveryTransitionInOrder) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  std::vector<std::pair<HoldEvent::Kind, HoldState>> seen;
  std::vector<std::uint64_t> seqs;
  reg.set_listener([&](const HoldEvent& e) {
    seen.emplace_back(e.kind, e.hold.state);
    seqs.push_back(e.seq);
  });
  Recorder rec;
  const auto c = reg.create(packet("r1"), {.timeout = 1min, .wait = 1s}, rec.callback());
  clock.advance(1s);
  reg.tick();
  reg.decide(c.id, Choice::deny, Principal{"alice", {}}, "");
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].first, HoldEvent::Kind::created);
  EXPECT_EQ(seen[1].first, HoldEvent::Kind::deferred);
  EXPECT_EQ(seen[2].first, HoldEvent::Kind::resolved);
  EXPECT_EQ(seen[2].second, HoldState::denied);
  EXPECT_LT(seqs[0], seqs[1]);
  EXPECT_LT(seqs[1], seqs[2]);
}

TEST(HoldRegistry, CallbackMayReenterRegistry) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  std::optional<HoldView> inside;
  std::string id;
  const auto c =
      reg.create(packet("r1"), {}, [&](const HoldOutcome& o) { inside = reg.get(o.id); });
  reg.decide(c.id, Choice::approve, Principal{"alice", {}}, "");
  ASSERT_TRUE(inside); // no deadlock: callbacks run outside the lock
  EXPECT_EQ(inside->state, HoldState::approved);
}

TEST(HoldRegistry, ListIsNewestFirstAndFiltersByState) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto a = reg.create(packet("r1"), {}, rec.callback());
  const auto b = reg.create(packet("r1"), {}, rec.callback());
  reg.decide(a.id, Choice::deny, Principal{"alice", {}}, "");
  const auto pending = reg.list(HoldState::pending);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id, b.id);
  const auto all = reg.list(std::nullopt);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, b.id);
  const auto j = all[1].to_json(false);
  EXPECT_EQ(j["state"], "denied");
  EXPECT_EQ(j["by"], "alice");
  EXPECT_FALSE(j["packet"]["request"].contains("body"));
}

TEST(HoldRegistry, ResolvedHoldsAreBounded) {
  FakeClock clock;
  HoldRegistry reg({.max_resolved = 3}, clock);
  Recorder rec;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(reg.create(packet("r1"), {}, rec.callback()).id);
    reg.decide(ids.back(), Choice::deny, Principal{"alice", {}}, "");
  }
  EXPECT_EQ(reg.list(std::nullopt).size(), 3u);
  EXPECT_FALSE(reg.get(ids[0]));
  EXPECT_TRUE(reg.get(ids[4]));
}

ApprovalPacket packet_for(std::vector<std::string> approvers, std::string digest = "d1") {
  ApprovalPacket p = packet("r1", std::move(digest));
  p.approvers = std::move(approvers);
  return p;
}

TEST(HoldRegistry, NonApproverCanNeitherApproveNorDenyAndNothingChanges) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  std::vector<HoldEvent> events;
  reg.set_listener([&](const HoldEvent& e) { events.push_back(e); });
  Recorder rec;
  const auto c = reg.create(packet_for({"payments-on-call"}), {}, rec.callback());
  ASSERT_EQ(events.size(), 1u); // created
  const Principal mallory{"mallory", {"sre", "payments"}};
  for (const Choice choice : {Choice::approve, Choice::deny}) {
    const auto r = reg.decide(c.id, choice, mallory, "let me");
    EXPECT_EQ(r.error, DecideError::forbidden);
    EXPECT_FALSE(r.changed);
    ASSERT_TRUE(r.hold);
    EXPECT_EQ(r.hold->state, HoldState::pending);
    EXPECT_EQ(r.hold->packet->approvers, std::vector<std::string>{"payments-on-call"});
  }
  EXPECT_EQ(rec.size(), 0u);
  EXPECT_EQ(events.size(), 1u); // no transition, nothing journaled
  EXPECT_EQ(reg.get(c.id)->state, HoldState::pending);
  EXPECT_EQ(reg.stats().forbidden, 2u);
  EXPECT_EQ(reg.stats().pending, 1u);

  // A group member decides; a named operator is an approver too.
  const auto ok =
      reg.decide(c.id, Choice::approve, Principal{"alice", {"sre", "payments-on-call"}}, "checked");
  EXPECT_EQ(ok.error, DecideError::ok);
  EXPECT_TRUE(ok.changed);
  EXPECT_EQ(ok.hold->by, "alice");
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].state, HoldState::approved);
  EXPECT_EQ(rec.outcomes[0].by, "alice");
  // After the decision a non-approver still gets forbidden, not 409 or 200.
  EXPECT_EQ(reg.decide(c.id, Choice::deny, mallory, "").error, DecideError::forbidden);
  EXPECT_EQ(reg.decide(c.id, Choice::approve, mallory, "").error, DecideError::forbidden);
}

TEST(HoldRegistry, ApproverByNameAndEmptyListMeansAnyOperator) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto named = reg.create(packet_for({"bob"}), {}, rec.callback());
  EXPECT_EQ(reg.decide(named.id, Choice::deny, Principal{"alice", {"bob"}}, "").error,
            DecideError::ok); // a group called "bob" matches the entry "bob" too
  const auto by_name = reg.create(packet_for({"bob"}), {}, rec.callback());
  EXPECT_EQ(reg.decide(by_name.id, Choice::approve, Principal{"bob", {}}, "").error,
            DecideError::ok);
  const auto anyone = reg.create(packet_for({}), {}, rec.callback());
  EXPECT_EQ(reg.decide(anyone.id, Choice::approve, Principal{"carol", {}}, "").error,
            DecideError::ok);
  EXPECT_EQ(reg.decide("apr_nope", Choice::approve, Principal{"carol", {}}, "").error,
            DecideError::not_found);
}

TEST(HoldRegistry, DeferredHoldApprovedByGroupMemberLeavesOneGrant) {
  FakeClock clock;
  HoldRegistry reg({}, clock);
  Recorder rec;
  const auto c = reg.create(packet_for({"payments-on-call"}, "dg"), {.timeout = 10min, .wait = 1s},
                            rec.callback());
  clock.advance(1s);
  reg.tick();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_TRUE(rec.outcomes[0].deferred);
  EXPECT_EQ(reg.decide(c.id, Choice::approve, Principal{"mallory", {}}, "").error,
            DecideError::forbidden);
  EXPECT_FALSE(reg.take_grant("r1", "dg")); // a refused approval leaves no grant
  EXPECT_EQ(reg.decide(c.id, Choice::approve, Principal{"alice", {"payments-on-call"}}, "").error,
            DecideError::ok);
  const auto g = reg.take_grant("r1", "dg");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->by, "alice");
  EXPECT_FALSE(reg.take_grant("r1", "dg"));
}

} // namespace
} // namespace runwarden::approval
