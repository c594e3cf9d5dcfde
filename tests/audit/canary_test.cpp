// The canary corpus: secrets planted in every place a request or response can carry them.
// After writing, every byte of every file the audit module created is scanned; any canary
// found fails the test.

#include "audit/audit_log.hpp"
#include "test_support.hpp"

#include <filesystem>
#include <gtest/gtest.h>

namespace runwarden::audit {
namespace {

using testing::TempDir;

const std::vector<std::string>& canaries() {
  static const std::vector<std::string> list = {
      "CANARY-authz-7f3a",
      "CANARY-cookie-1",
      "CANARY-xapikey",
      "CANARY-proxyauth",
      "CANARY-setcookie",
      "CANARY-resp-token-hdr",
      "CANARYuser",
      "CANARYpass",
      "CANARYquerytok",
      "CANARYqkey",
      "CANARY-json-deep",
      "CANARY-json-pw",
      "CANARY-form-pw",
      "AKIACANARY0000000000",
      "ghp_CANARYSPLIT",
      "CANARY-resp-body",
      "CANARY-reason-bearer",
      "CANARY-event-pw",
      "CANARYPEMBODY",
      "4111 1111 1111",
      "xoxb-CANARY-slack",
      "sk_live_CANARYstripe",
      "CANARY-approver-token",
      "CANARY-resp-cvv",
      "eyJhbGciOiJIUzI1NiJ9.eyJDQU5BUlkiOjF9",
  };
  return list;
}

Exchange canary_exchange(std::size_t body_bytes) {
  Exchange ex = testing::sample_exchange(7, "run-canary");
  ex.reason = "upstream said: Authorization: Bearer CANARY-reason-bearer";
  ex.request.method = "POST";
  ex.request.url =
      "https://CANARYuser:CANARYpass@api.example.com/v1/pay?access_token=CANARYquerytok"
      "&api_key=CANARYqkey&page=2";
  ex.request.headers = {{"Authorization", "Bearer CANARY-authz-7f3a"},
                        {"Cookie", "session=CANARY-cookie-1"},
                        {"X-Api-Key", "CANARY-xapikey"},
                        {"Proxy-Authorization", "Basic CANARY-proxyauth"},
                        {"Content-Type", "application/json"}};
  // JSON at depth, a key-named secret, and a token straddling the excerpt cut.
  std::string body = R"({"a":{"b":[{"c":{"client_secret":"CANARY-json-deep"}}]},)"
                     R"("user":{"Password":"CANARY-json-pw"},"note":")";
  body += std::string(body_bytes - body.size() - 10, 'x');
  body += " ghp_CANARYSPLIT0123456789abcdefghijklmnop card 4111 1111 1111 1111 end\"}";
  ex.request.body = body;
  ex.request.body_bytes = body.size();
  ResponseInfo resp;
  resp.status = 200;
  resp.headers = {{"Set-Cookie", "sid=CANARY-setcookie; HttpOnly"},
                  {"X-Upstream-Token", "CANARY-resp-token-hdr"},
                  {"Content-Type", "application/json"}};
  resp.body = R"({"data":{"token":"CANARY-resp-body","cvv":"CANARY-resp-cvv"},)"
              R"("jwt":"eyJhbGciOiJIUzI1NiJ9.eyJDQU5BUlkiOjF9.c2lnbmF0dXJl"})";
  resp.bytes = resp.body.size();
  ex.response = resp;
  ex.approval = ApprovalInfo{"ap_1", "alice via Bearer CANARY-approver-token", 5};
  return ex;
}

Exchange form_and_text_exchange() {
  Exchange ex = testing::sample_exchange(8, "run-canary");
  ex.request.method = "POST";
  ex.request.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  ex.request.body = "user=bob&password=CANARY-form-pw&remember=1";
  ResponseInfo resp;
  resp.status = 200;
  resp.headers = {{"Content-Type", "text/plain"}};
  resp.body = "creds AKIACANARY0000000000 and xoxb-CANARY-slack-000000 and sk_live_CANARYstripe0"
              "\n-----BEGIN EC PRIVATE KEY-----\nCANARYPEMBODY\n-----END EC PRIVATE KEY-----\n";
  ex.response = resp;
  return ex;
}

void run_corpus(Durability durability) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit/audit.jsonl");
  o.durability = durability;
  o.body_bytes = 256;
  o.rotate_bytes = 4096; // rotated files are scanned too
  {
    auto log = AuditLog::open(o);
    testing::Completions c;
    int n = 0;
    for (int round = 0; round < 4; ++round) {
      const Exchange ex = canary_exchange(o.body_bytes + static_cast<std::size_t>(round) * 3);
      log->record(ex, false, c.make());
      log->record(ex, true, c.make());
      log->record(form_and_text_exchange(), true, c.make());
      log->event("approval_resolved",
                 {{"by", "alice"}, {"credentials", {{"password", "CANARY-event-pw"}}}}, c.make());
      n += 4;
    }
    ASSERT_TRUE(c.wait(n));
    ASSERT_EQ(c.errors(), 0);
  }
  std::size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    if (!e.is_regular_file()) {
      continue;
    }
    ++files;
    const std::string data = testing::read_all(e.path().string());
    for (const auto& canary : canaries()) {
      EXPECT_EQ(data.find(canary), std::string::npos)
          << "canary " << canary << " leaked into " << e.path();
    }
    if (!data.empty()) {
      EXPECT_NE(data.find("[REDACTED:"), std::string::npos) << e.path();
    }
  }
  EXPECT_GE(files, 2u);
}

TEST(Canary, NoPlantedSecretReachesDiskWritten) {
  run_corpus(Durability::written);
}
TEST(Canary, NoPlantedSecretReachesDiskSynced) {
  run_corpus(Durability::synced);
}

} // namespace
} // namespace runwarden::audit
