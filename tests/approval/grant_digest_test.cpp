// The approval digest covers the forwarded headers (DESIGN §5: an approval releases exactly
// the payload that was approved). The hold side (build_packet) and the retry side
// (proxy/approval_gate.cpp: request_digest over the request that came back) must agree on
// an identical retry and disagree on anything the upstream would see differently.

#include "approval/approval_packet.hpp"
#include "approval/crypto.hpp"
#include "approval/hold_registry.hpp"
#include "tests/approval/fake_clock.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;

class NoRedaction final : public PacketRedactor {
public:
  HeaderList redact_headers(const HeaderList& headers) const override { return headers; }
  std::string redact_body(std::string_view body, std::string_view) const override {
    return std::string(body);
  }
  std::string redact_url(std::string_view url) const override { return std::string(url); }
};

// The reviewer's request: a deferred POST /deferred with a read-only service token.
policy::Request deferred_post() {
  policy::Request r;
  r.scheme = "http";
  r.host = "upstream.internal";
  r.port = 8080;
  r.method = "POST";
  r.path = "/deferred";
  r.headers = {{"Authorization", "Bearer svc-readonly"},
               {"Content-Type", "application/json"},
               {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
               {"Accept", "application/json"},
               {"Accept", "text/plain"}};
  r.body = R"({"op":"drain"})";
  return r;
}

std::string digest_of(const policy::Request& r) {
  return request_digest(r, sha256_hex(r.body));
}

void set_header(policy::Request& r, std::string_view name, std::string value) {
  for (auto& h : r.headers) {
    if (h.name == name) {
      h.value = std::move(value);
      return;
    }
  }
  r.headers.push_back({std::string(name), std::move(value)});
}

// What approval_gate does: build the packet at hold time, defer, approve; then a retry
// takes the grant under its own digest.
struct ApprovedDeferredHold {
  test::FakeClock clock;
  HoldRegistry registry{{.grant_ttl = 60s}, clock};
  std::string id;

  explicit ApprovedDeferredHold(const policy::Request& held) {
    policy::RunbookAction action;
    action.name = "drain";
    action.cls = policy::ActionClass::approval_required;
    policy::Decision decision;
    decision.verdict = policy::Verdict::hold;
    decision.code = "approval_required";
    decision.action = "drain";
    decision.approval = &action;
    PacketInput in;
    in.run = "run-1";
    in.decision = &decision;
    in.request = &held;
    in.body_sha256 = sha256_hex(held.body);
    ApprovalPacket packet = build_packet(in, NoRedaction{}, {}, clock);
    id = registry.create(std::move(packet), {.timeout = 10min, .wait = 1s}, [](auto&) {}).id;
    clock.advance(1s);
    registry.tick();
    registry.decide(id, Choice::approve, Principal{"alice", {}}, "ok");
  }
};

TEST(GrantDigest, ADifferentAuthorizationDoesNotUseTheGrant) {
  ApprovedDeferredHold hold(deferred_post());
  policy::Request admin = deferred_post();
  set_header(admin, "Authorization", "Bearer ADMIN-TOKEN");
  EXPECT_FALSE(hold.registry.take_grant("run-1", digest_of(admin)));
  // The approved payload itself still passes, once.
  EXPECT_TRUE(hold.registry.take_grant("run-1", digest_of(deferred_post())));
  EXPECT_FALSE(hold.registry.take_grant("run-1", digest_of(deferred_post())));
}

TEST(GrantDigest, AnAddedMethodOverrideDoesNotUseTheGrant) {
  ApprovedDeferredHold hold(deferred_post());
  policy::Request overridden = deferred_post();
  overridden.headers.push_back({"X-HTTP-Method-Override", "DELETE"});
  EXPECT_FALSE(hold.registry.take_grant("run-1", digest_of(overridden)));
  policy::Request both = overridden;
  set_header(both, "Authorization", "Bearer ADMIN-TOKEN");
  EXPECT_FALSE(hold.registry.take_grant("run-1", digest_of(both)));
  EXPECT_TRUE(hold.registry.take_grant("run-1", digest_of(deferred_post())));
}

TEST(GrantDigest, AnIdenticalRetryWithNewTraceContextUsesTheGrant) {
  ApprovedDeferredHold hold(deferred_post());
  policy::Request retry = deferred_post();
  set_header(retry, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  retry.headers.push_back({"tracestate", "vendor=attempt-2"});
  const auto grant = hold.registry.take_grant("run-1", digest_of(retry));
  ASSERT_TRUE(grant);
  EXPECT_EQ(grant->approval_id, hold.id);
}

TEST(GrantDigest, NamesAreCaseInsensitiveAndOrderOfDifferentNamesIsIrrelevant) {
  const policy::Request base = deferred_post();
  policy::Request shuffled;
  shuffled = base;
  shuffled.headers = {{"accept", "application/json"},
                      {"CONTENT-TYPE", "application/json"},
                      {"accept", "text/plain"},
                      {"authorization", "Bearer svc-readonly"}};
  EXPECT_EQ(digest_of(base), digest_of(shuffled));
}

TEST(GrantDigest, RepeatedValuesKeepTheirOrderAndValuesAreExact) {
  const policy::Request base = deferred_post();
  policy::Request swapped = base;
  std::swap(swapped.headers[3].value, swapped.headers[4].value);
  EXPECT_NE(digest_of(base), digest_of(swapped));
  policy::Request dropped = base;
  dropped.headers.pop_back();
  EXPECT_NE(digest_of(base), digest_of(dropped));
  policy::Request value_case = base;
  set_header(value_case, "Content-Type", "Application/JSON");
  EXPECT_NE(digest_of(base), digest_of(value_case));
  // A field boundary cannot be moved between name and value.
  policy::Request a = base;
  a.headers = {{"X-A", "b:c"}};
  policy::Request b = base;
  b.headers = {{"X-A:b", "c"}};
  EXPECT_NE(digest_of(a), digest_of(b));
}

TEST(GrantDigest, FieldsNotForwardedOrPerAttemptAreLeftOut) {
  const policy::Request base = deferred_post();
  policy::Request noisy = base;
  noisy.headers.insert(noisy.headers.begin(), {"Connection", "keep-alive, X-Hop"});
  noisy.headers.push_back({"X-Hop", "per-connection"});
  noisy.headers.push_back({"Keep-Alive", "timeout=5"});
  noisy.headers.push_back({"Proxy-Authorization", "Basic cHJveHk6cHc="});
  noisy.headers.push_back({"Proxy-Connection", "X-Other"});
  noisy.headers.push_back({"x-other", "1"});
  noisy.headers.push_back({"TE", "trailers"});
  noisy.headers.push_back({"Transfer-Encoding", "chunked"});
  noisy.headers.push_back({"Upgrade", "h2c"});
  noisy.headers.push_back({"Trailer", "X-Checksum"});
  noisy.headers.push_back({"Host", "upstream.internal:8080"});
  noisy.headers.push_back({"Content-Length", "14"});
  noisy.headers.push_back({"Expect", "100-continue"});
  noisy.headers.push_back({"Runwarden-Run", "run-1"});
  noisy.headers.push_back({"tracestate", "a=b"});
  EXPECT_EQ(digest_of(base), digest_of(noisy));
  EXPECT_FALSE(digest_covers_header("RUNWARDEN-runbook", {}));
  EXPECT_FALSE(digest_covers_header("X-Hop", {"x-hop"}));
  EXPECT_TRUE(digest_covers_header("X-Hop", {}));
  EXPECT_TRUE(digest_covers_header("Cookie", {}));
  EXPECT_TRUE(digest_covers_header("X-HTTP-Method-Override", {}));
}

TEST(GrantDigest, IsKeyedSoItIsNotAPlainHashOfTheRequest) {
  // Published in the packet, audit log and webhooks, it must not be a guessing oracle for
  // the redacted Authorization: no unkeyed SHA-256 of the obvious encodings matches it.
  const policy::Request r = deferred_post();
  const std::string d = digest_of(r);
  EXPECT_NE(d, sha256_hex("POST " + r.url() + "\n" + sha256_hex(r.body)));
  EXPECT_NE(d, sha256_hex(r.body));
}

TEST(GrantDigest, AnEmptyDigestNeverMatches) {
  test::FakeClock clock;
  HoldRegistry registry({.grant_ttl = 60s}, clock);
  ApprovalPacket p;
  p.run = "run-1";
  p.digest = "";
  const auto c = registry.create(std::move(p), {.timeout = 10min, .wait = 1s}, [](auto&) {});
  clock.advance(1s);
  registry.tick();
  EXPECT_FALSE(registry.find_deferred("run-1", ""));
  registry.decide(c.id, Choice::approve, Principal{"alice", {}}, "ok");
  EXPECT_FALSE(registry.take_grant("run-1", ""));
}

} // namespace
} // namespace runwarden::approval
