// POST /v1/runs/{run}/kill through the real admin listener: the run id travels
// percent-encoded (as `runwarden ctl kill` sends it) and the server kills exactly the run it
// decodes to, ':' and '/' included; a malformed escape is refused, not killed as text.

#include "approval/admin_client.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <gtest/gtest.h>

namespace runwarden::proxy {
namespace {

using namespace testing;

constexpr const char* kToken = "s3cret-operator-token";

class AdminKillTest : public ::testing::Test {
protected:
  void SetUp() override {
    write_file(dir_.file("tokens"), token_line("alice", kToken));
    audit_ = std::make_shared<MemoryAudit>();
    server_ = std::make_unique<OpsServer>(ops_config(upstream_.port(), dir_), audit_);
  }

  boost::beast::http::response<boost::beast::http::string_body> get(const std::string& run) {
    return raw_exchange(server_->server().proxy_endpoint(),
                        proxy_get(upstream_.port(), "/allowed/x", run));
  }
  boost::beast::http::response<boost::beast::http::string_body> admin(const std::string& method,
                                                                      const std::string& target) {
    return raw_exchange(server_->server().admin_endpoint(), admin_request(method, target, kToken));
  }

  HelloUpstream upstream_;
  TempDir dir_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
};

TEST_F(AdminKillTest, RunIdWithColonAndSlashIsKilledAndItsNextRequestRefused) {
  const std::string run = "incident-42:attempt-1/step 2";
  ASSERT_EQ(get(run).result_int(), 200);
  ASSERT_EQ(get("incident-42").result_int(), 200);
  ASSERT_EQ(upstream_.requests(), 2);

  // The path `runwarden ctl kill` builds.
  const std::string target = "/v1/runs/" + approval::encode_path_segment(run) + "/kill";
  ASSERT_NE(target.find("%3A"), std::string::npos) << target;
  ASSERT_NE(target.find("%2F"), std::string::npos) << target;
  auto res = admin("POST", target);
  ASSERT_EQ(res.result_int(), 200) << res.body();
  auto j = body_json(res);
  EXPECT_EQ(j.value("run", ""), run);
  EXPECT_EQ(j.value("killed", false), true);
  EXPECT_EQ(j.value("already_killed", true), false);

  res = get(run);
  EXPECT_EQ(res.result_int(), 403) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "run_killed") << res.body();
  EXPECT_EQ(upstream_.requests(), 2); // never forwarded
  // Another run sharing the prefix goes on.
  EXPECT_EQ(get("incident-42").result_int(), 200);
  EXPECT_EQ(upstream_.requests(), 3);

  // The run table names the decoded id, killed; the undecoded text never became a run.
  res = raw_exchange(server_->server().admin_endpoint(), admin_request("GET", "/v1/runs", ""));
  ASSERT_EQ(res.result_int(), 200);
  EXPECT_NE(res.body().find("incident-42:attempt-1/step 2"), std::string::npos) << res.body();
  EXPECT_EQ(res.body().find("%3A"), std::string::npos) << res.body();

  // Killing it again answers already_killed for the same decoded id.
  j = body_json(admin("POST", target));
  EXPECT_EQ(j.value("run", ""), run);
  EXPECT_EQ(j.value("already_killed", false), true);
}

TEST_F(AdminKillTest, MalformedEscapeIs400WithAReasonAndKillsNothing) {
  for (const std::string segment : {"abc%3", "abc%zz", "abc%", "%00x"}) {
    auto res = admin("POST", "/v1/runs/" + segment + "/kill");
    EXPECT_EQ(res.result_int(), 400) << segment << ": " << res.body();
    auto j = body_json(res);
    EXPECT_EQ(j.value("error", ""), "bad_run_id") << res.body();
    EXPECT_FALSE(j.value("reason", "").empty()) << res.body();
  }
  auto res = admin("POST", "/v1/runs/abc%3/kill");
  EXPECT_NE(body_json(res).value("reason", "").find("percent-escape"), std::string::npos)
      << res.body();
  // A raw '/' splits the path: not this route's shape, and the answer says how to send it.
  res = admin("POST", "/v1/runs/a/b/kill");
  EXPECT_EQ(res.result_int(), 404);
  EXPECT_NE(body_json(res).value("reason", "").find("%2F"), std::string::npos) << res.body();
  res = raw_exchange(server_->server().admin_endpoint(), admin_request("GET", "/v1/runs", ""));
  EXPECT_EQ(res.body().find("\"killed\":true"), std::string::npos) << res.body();
  EXPECT_EQ(get("abc").result_int(), 200);
}

TEST_F(AdminKillTest, KillWithoutTokenIs401AndKillsNothing) {
  auto res = raw_exchange(server_->server().admin_endpoint(),
                          admin_request("POST", "/v1/runs/r1/kill", ""));
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_EQ(get("r1").result_int(), 200);
}

} // namespace
} // namespace runwarden::proxy
