#include "approval/approval_packet.hpp"
#include "approval/audit_packet_redactor.hpp"
#include "approval/crypto.hpp"
#include "tests/approval/fake_clock.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

TEST(AuditPacketRedactor, PacketHidesWhatTheAuditLogHides) {
  auto redactor = std::make_shared<const audit::Redactor>();
  const AuditPacketRedactor adapter(redactor);
  policy::Decision decision;
  decision.action = "login";
  policy::Request request;
  request.scheme = "https";
  request.host = "api.example";
  request.port = 443;
  request.method = "POST";
  request.path = "/login";
  request.headers = {{"Authorization", "Bearer sk_live_abcdef123456"},
                     {"Content-Type", "application/json"}};
  request.body = R"({"user":"bob","password":"hunter2-very-secret"})";
  PacketInput in;
  in.decision = &decision;
  in.request = &request;
  test::FakeClock clock;
  const auto p = build_packet(in, adapter, {}, clock);
  const std::string shown = p.to_json().dump();
  EXPECT_EQ(shown.find("sk_live_abcdef123456"), std::string::npos);
  EXPECT_EQ(shown.find("hunter2-very-secret"), std::string::npos);
  EXPECT_NE(p.request.headers[0].second.find("[REDACTED:"), std::string::npos);
  EXPECT_NE(p.request.body.find("\"user\":\"bob\""), std::string::npos);
  EXPECT_EQ(p.request.body_sha256, sha256_hex(request.body)); // digest of the real bytes
}

} // namespace
} // namespace runwarden::approval
