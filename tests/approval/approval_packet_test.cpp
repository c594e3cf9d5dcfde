#include "approval/approval_packet.hpp"
#include "approval/crypto.hpp"
#include "tests/approval/fake_clock.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;

// Redacts the "card" value and the authorization header, like audit's Redactor would.
class TestRedactor final : public PacketRedactor {
public:
  HeaderList redact_headers(const HeaderList& headers) const override {
    HeaderList out = headers;
    for (auto& [name, value] : out) {
      if (name == "Authorization") {
        value = "[REDACTED:abcd1234]";
      }
    }
    return out;
  }
  std::string redact_body(std::string_view body, std::string_view) const override {
    std::string out(body);
    const auto at = out.find("4111111111111111");
    if (at != std::string::npos) {
      out.replace(at, 16, "[REDACTED:card]");
    }
    return out;
  }
  std::string redact_url(std::string_view url) const override { return std::string(url); }
};

struct Fixture {
  policy::RunbookAction action;
  policy::Decision decision;
  policy::Request request;
  Fixture() {
    action.name = "issue_refund";
    action.cls = policy::ActionClass::approval_required;
    action.risk = "high";
    action.effect = "refunds the customer";
    action.rollback = "none: money leaves";
    action.approvers = {"payments-on-call"};
    action.timeout = 15min;
    action.wait = 30s;
    decision.verdict = policy::Verdict::hold;
    decision.code = "approval_required";
    decision.reason = "runbooks/pay.yaml:12:7: issue_refund requires approval";
    decision.runbook = "payment-api";
    decision.runbook_sha256 = std::string(64, 'e');
    decision.action = "issue_refund";
    decision.cls = policy::ActionClass::approval_required;
    decision.approval = &action;
    request.scheme = "https";
    request.host = "api.xn--strpe-9ua.com";
    request.port = 443;
    request.method = "POST";
    request.path = "/v1/refunds";
    request.headers = {{"Authorization", "Bearer sk_live_secret"},
                       {"Content-Type", "application/json"},
                       {"X-Note", "a\x1b[31mred\x1b[0m"}};
    request.body = R"({"amount":500,"card":"4111111111111111"})";
  }
};

TEST(ApprovalPacket, CarriesEverythingTheApproverMustSee) {
  Fixture f;
  test::FakeClock clock;
  PacketInput in;
  in.run = "run-7";
  in.agent = "payments-agent";
  in.request_id = "req_1";
  in.decision = &f.decision;
  in.request = &f.request;
  in.history = {
      {"req_0", "fetch_logs", "forwarded", "GET", "https://logs.internal/q", clock.wall()}};
  const auto p = build_packet(in, TestRedactor{}, {}, clock);
  EXPECT_EQ(p.run, "run-7");
  EXPECT_EQ(p.agent, "payments-agent");
  EXPECT_EQ(p.runbook, "payment-api");
  EXPECT_EQ(p.runbook_sha256, std::string(64, 'e'));
  EXPECT_EQ(p.action, "issue_refund");
  EXPECT_EQ(p.cls, "approval_required");
  EXPECT_EQ(p.risk, "high");
  EXPECT_EQ(p.effect, "refunds the customer");
  EXPECT_EQ(p.rollback, "none: money leaves");
  EXPECT_EQ(p.approvers, std::vector<std::string>{"payments-on-call"});
  EXPECT_EQ(p.timeout, 15min);
  EXPECT_EQ(p.wait, 30s);
  EXPECT_EQ(p.request.method, "POST");
  EXPECT_EQ(p.request.url, "https://api.xn--strpe-9ua.com/v1/refunds");
  EXPECT_TRUE(p.request.host_punycode);
  // The digest is over the exact, unredacted bytes that an approval releases.
  EXPECT_EQ(p.request.body_sha256, sha256_hex(f.request.body));
  EXPECT_EQ(p.digest, request_digest(f.request, sha256_hex(f.request.body)));
  // ... including the headers the packet shows redacted.
  policy::Request other_token = f.request;
  other_token.headers[0].value = "Bearer sk_live_other";
  EXPECT_NE(p.digest, request_digest(other_token, sha256_hex(f.request.body)));
  EXPECT_EQ(p.request.body, R"({"amount":500,"card":"[REDACTED:card]"})");
  EXPECT_FALSE(p.request.body_truncated);
  ASSERT_EQ(p.request.headers.size(), 3u);
  EXPECT_EQ(p.request.headers[0].second, "[REDACTED:abcd1234]");
  EXPECT_EQ(p.request.headers[2].second, "a\\x1b[31mred\\x1b[0m");
  ASSERT_EQ(p.history.size(), 1u);
  EXPECT_EQ(p.history[0].action, "fetch_logs");

  const auto j = p.to_json();
  EXPECT_EQ(j["runbook"]["sha256"], std::string(64, 'e'));
  EXPECT_EQ(j["request"]["headers"][0][0], "Authorization");
  EXPECT_EQ(j["history"][0]["outcome"], "forwarded");
  EXPECT_EQ(j["timeout_ms"], 900000);
  EXPECT_EQ(j["approvers"], nlohmann::json::array({"payments-on-call"}));
  EXPECT_EQ(j["who_may_approve"], "payments-on-call");
  EXPECT_EQ(j.dump().find("sk_live_secret"), std::string::npos);
  EXPECT_EQ(j.dump().find("4111111111111111"), std::string::npos);
}

TEST(ApprovalPacket, FallbackRedactorWithholdsBodyAndCredentials) {
  Fixture f;
  test::FakeClock clock;
  PacketInput in;
  in.decision = &f.decision;
  in.request = &f.request;
  const auto p = build_packet(in, HeaderOnlyRedactor{}, {}, clock);
  EXPECT_EQ(p.request.body, "[WITHHELD: no body redactor]");
  EXPECT_EQ(p.to_json()["who_may_approve"], "payments-on-call");
  EXPECT_EQ(p.request.headers[0].second,
            "[REDACTED:" + sha256_hex("Bearer sk_live_secret").substr(0, 8) + "]");
  EXPECT_EQ(p.request.headers[1].second, "application/json");
}

TEST(ApprovalPacket, LongBodyIsCutForDisplayButAuthorityNever) {
  Fixture f;
  f.request.host = std::string(200, 'a') + ".example";
  f.request.body = std::string(100, 'x');
  test::FakeClock clock;
  PacketInput in;
  in.decision = &f.decision;
  in.request = &f.request;
  in.body_bytes = 5000; // the proxy buffered more than was inspected
  in.body_sha256 = sha256_hex("the full body");
  const auto p = build_packet(in, TestRedactor{}, {.body_bytes = 10}, clock);
  EXPECT_EQ(p.request.body, std::string(10, 'x'));
  EXPECT_TRUE(p.request.body_truncated);
  EXPECT_EQ(p.request.body_bytes, 5000u);
  EXPECT_EQ(p.request.body_sha256, sha256_hex("the full body"));
  EXPECT_NE(p.request.url.find(std::string(200, 'a') + ".example/v1/refunds"), std::string::npos);
}

TEST(ApprovalPacket, UnmatchedEscalationHasNoActionButAReason) {
  Fixture f;
  f.decision.action.clear();
  f.decision.cls.reset();
  f.decision.approval = nullptr;
  f.decision.code = "unmatched";
  test::FakeClock clock;
  PacketInput in;
  in.decision = &f.decision;
  in.request = &f.request;
  const auto p = build_packet(in, TestRedactor{}, {.default_timeout = 7min}, clock);
  EXPECT_EQ(p.action, "");
  EXPECT_EQ(p.cls, "");
  EXPECT_EQ(p.code, "unmatched");
  EXPECT_EQ(p.timeout, 7min);
  EXPECT_FALSE(p.wait);
}

TEST(ApprovalPacket, DigestSeparatesMethodUrlAndBody) {
  policy::Request r;
  r.scheme = "https";
  r.host = "h";
  r.port = 443;
  r.method = "POST";
  r.path = "/p";
  const auto a = request_digest(r, sha256_hex("x"));
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a, request_digest(r, sha256_hex("x")));
  EXPECT_NE(a, request_digest(r, sha256_hex("y")));
  policy::Request put = r;
  put.method = "PUT";
  EXPECT_NE(a, request_digest(put, sha256_hex("x")));
  policy::Request q = r;
  q.path = "/q";
  EXPECT_NE(a, request_digest(q, sha256_hex("x")));
  policy::Request query = r;
  query.query = "a=1";
  EXPECT_NE(a, request_digest(query, sha256_hex("x")));
}

} // namespace
} // namespace runwarden::approval
