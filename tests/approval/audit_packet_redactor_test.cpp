#include "approval/approval_packet.hpp"
#include "approval/audit_packet_redactor.hpp"
#include "approval/crypto.hpp"
#include "tests/approval/fake_clock.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

policy::Request post_to_api_example(std::string path) {
  policy::Request request;
  request.scheme = "https";
  request.host = "api.example";
  request.port = 443;
  request.method = "POST";
  request.path = std::move(path);
  return request;
}

/// The packet of `request` for action `action`, with `history`, shown through the audit's
/// redactor as the gate shows it.
ApprovalPacket packet_for(const AuditPacketRedactor& adapter, const policy::Request& request,
                          std::string action, std::vector<CallRecord> history = {}) {
  policy::Decision decision;
  decision.action = std::move(action);
  PacketInput in;
  in.decision = &decision;
  in.request = &request;
  in.history = std::move(history);
  test::FakeClock clock;
  return build_packet(in, adapter, {}, clock);
}

TEST(AuditPacketRedactor, PacketHidesWhatTheAuditLogHides) {
  auto redactor = std::make_shared<const audit::Redactor>();
  const AuditPacketRedactor adapter(redactor);
  policy::Request request = post_to_api_example("/login");
  request.headers = {{"Authorization", "Bearer sk_live_abcdef123456"},
                     {"Content-Type", "application/json"}};
  request.body = R"({"user":"bob","password":"hunter2-very-secret"})";
  const auto p = packet_for(adapter, request, "login");
  const std::string shown = p.to_json().dump();
  EXPECT_EQ(shown.find("sk_live_abcdef123456"), std::string::npos);
  EXPECT_EQ(shown.find("hunter2-very-secret"), std::string::npos);
  EXPECT_NE(p.request.headers[0].second.find("[REDACTED:"), std::string::npos);
  EXPECT_NE(p.request.body.find("\"user\":\"bob\""), std::string::npos);
  EXPECT_EQ(p.request.body_sha256, sha256_hex(request.body)); // digest of the real bytes
}

// A credential in the query string (the held request's URL, and an earlier call of the run
// in the packet's history) is hidden as the audit record hides it; the digest an approval
// releases still covers the real URL. Before, both URLs reached the packet as sent.
TEST(AuditPacketRedactor, PacketHidesSecretsInUrls) {
  auto redactor = std::make_shared<const audit::Redactor>();
  const AuditPacketRedactor adapter(redactor);
  policy::Request request = post_to_api_example("/export");
  request.query = "format=csv&access_token=tok-held-0123456789";
  test::FakeClock clock;
  const auto p =
      packet_for(adapter, request, "export",
                 {{"req_0", "list", "forwarded", "GET",
                   "https://api.example/list?api_key=key-earlier-0123456789", clock.wall()}});
  const std::string shown = p.to_json().dump();
  EXPECT_EQ(shown.find("tok-held-0123456789"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("key-earlier-0123456789"), std::string::npos) << shown;
  EXPECT_NE(p.request.url.find("format=csv"), std::string::npos) << p.request.url;
  EXPECT_NE(p.request.url.find("[REDACTED:"), std::string::npos) << p.request.url;
  EXPECT_EQ(p.request.url, redactor->redact_url(request.url())); // as the audit record shows it
  EXPECT_EQ(p.digest, request_digest(request, sha256_hex(request.body)));
}

// Without a full redactor (fail closed), a URL keeps its path and loses its query.
TEST(HeaderOnlyRedactor, WithholdsAQueryItCannotJudge) {
  const HeaderOnlyRedactor fallback;
  EXPECT_EQ(fallback.redact_url("https://a.example/p?token=x"),
            "https://a.example/p?[WITHHELD: no URL redactor]");
  EXPECT_EQ(fallback.redact_url("https://a.example/p"), "https://a.example/p");
}

} // namespace
} // namespace runwarden::approval
