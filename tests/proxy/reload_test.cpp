// Reload (SIGHUP, file watch) against a real Server and real files: the operator tokens
// file is re-read (a revoked token stops working on every admin route), a broken one fails
// the reload and keeps the last good tokens, and every changed setting that only applies at
// start-up is named, one by one, while policy, redaction and limits changes are applied
// without that warning (reload_live_test.cpp shows them in effect).

#include "proxy/reload.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <algorithm>
#include <future>
#include <gtest/gtest.h>

namespace runwarden::proxy {
namespace {

using namespace testing;

constexpr const char* kAlice = "alice-token-0123456789";
constexpr const char* kBob = "bob-token-0123456789";

std::string runwarden_yaml(const std::string& extra) {
  return files_runwarden_yaml("reload-agent", extra);
}

std::string actions_yaml(std::uint16_t port, const std::string& path) {
  return "actions:\n"
         "  read_things:\n"
         "    - {scheme: http, host: 127.0.0.1, port: " +
         std::to_string(port) + ", method: GET, path: \"" + path + "\"}\n";
}

constexpr const char* kRunbook = "runbook: rb\n"
                                 "owner: test\n"
                                 "trigger: {manual: test}\n"
                                 "allowed_actions:\n"
                                 "  read_only: [read_things]\n"
                                 "unmatched: deny\n";

class ReloadTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.file("runbooks"));
    std::filesystem::create_directories(dir_.file("audit"));
    write_file(dir_.file("runwarden.yaml"), runwarden_yaml(""));
    write_file(dir_.file("actions.yaml"), actions_yaml(upstream_.port(), "/allowed/**"));
    write_file(dir_.file("runbooks") / "rb.yaml", kRunbook);
    write_file(dir_.file("tokens"), token_line("alice", kAlice) + token_line("bob", kBob));
    auto cfg = config::load_config(dir_.file("runwarden.yaml"));
    audit_ = std::make_shared<MemoryAudit>();
    server_ = std::make_unique<OpsServer>(cfg, audit_);
    reloader_ = std::make_shared<Reloader>(server_->ioc(), server_->server().context());
    reloader_->reload_operator_tokens(server_->server().operator_tokens());
  }

  int admin_status(const std::string& method, const std::string& target, const std::string& token,
                   const std::string& body = "{}") {
    return static_cast<int>(
        raw_exchange(server_->server().admin_endpoint(), admin_request(method, target, token, body))
            .result_int());
  }
  int set_mode(const std::string& token) {
    return admin_status("POST", "/v1/mode", token, R"({"mode":"normal"})");
  }

  /// The last "reload" audit event's fields (null: none).
  nlohmann::json last_reload() {
    nlohmann::json out;
    for (const auto& [type, fields] : audit_->events()) {
      if (type == "reload") {
        out = fields;
      }
    }
    return out;
  }

  /// restart_required of the last "reload" audit event.
  std::vector<std::string> last_restart_required() {
    std::vector<std::string> out;
    for (const auto& [type, fields] : audit_->events()) {
      if (type == "reload") {
        out.clear();
        for (const auto& s : fields.at("restart_required")) {
          out.push_back(s.get<std::string>());
        }
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Reloads into a policy that allows CONNECT to the upstream, with 127.0.0.1 listed in
  /// tls.passthrough.
  bool reload_with_passthrough() {
    const std::string port = std::to_string(upstream_.port());
    write_file(dir_.file("actions.yaml"), actions_yaml(upstream_.port(), "/allowed/**") +
                                              "  tunnel_things:\n    - {host: 127.0.0.1, port: " +
                                              port + ", method: CONNECT, path: /}\n");
    write_file(dir_.file("runbooks") / "rb.yaml", "runbook: rb\n"
                                                  "owner: test\n"
                                                  "trigger: {manual: test}\n"
                                                  "allowed_actions:\n"
                                                  "  read_only: [read_things]\n"
                                                  "  allowed: [tunnel_things]\n"
                                                  "unmatched: deny\n");
    write_file(dir_.file("runwarden.yaml"), runwarden_yaml("tls:\n  passthrough: [127.0.0.1]\n"));
    return reloader_->reload("signal");
  }

  /// CONNECTs `s` to the upstream through the proxy: the answer's status, 0 on error.
  int open_tunnel(boost::asio::ip::tcp::socket& s, boost::beast::flat_buffer& buffer) {
    s.connect(server_->server().proxy_endpoint());
    set_timeouts(s);
    const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
    boost::asio::write(s, boost::asio::buffer("CONNECT " + authority +
                                              " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"));
    boost::beast::http::response_parser<boost::beast::http::empty_body> head;
    head.skip(true); // a CONNECT answer has no body
    boost::system::error_code ec;
    boost::beast::http::read_header(s, buffer, head, ec);
    return ec ? 0 : static_cast<int>(head.get().result_int());
  }

  HelloUpstream upstream_;
  TempDir dir_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
  std::shared_ptr<Reloader> reloader_;
};

TEST_F(ReloadTest, RevokedTokenStopsWorkingOnEveryAdminRouteAfterReload) {
  ASSERT_EQ(set_mode(kBob), 200);
  ASSERT_EQ(admin_status("GET", "/v1/approvals", kBob), 200);
  ASSERT_EQ(admin_status("POST", "/v1/runs/r1/kill", kBob), 200);

  write_file(dir_.file("tokens"), token_line("alice", kAlice)); // bob revoked
  ASSERT_TRUE(reloader_->reload("signal"));

  EXPECT_EQ(set_mode(kBob), 401);
  EXPECT_EQ(admin_status("GET", "/v1/approvals", kBob), 401);
  EXPECT_EQ(admin_status("POST", "/v1/runs/r2/kill", kBob), 401);
  EXPECT_EQ(set_mode(kAlice), 200);
  EXPECT_EQ(admin_status("GET", "/v1/approvals", kAlice), 200);
  // A token added by the same reload works at once.
  write_file(dir_.file("tokens"),
             token_line("alice", kAlice) + token_line("carol", "carol-token-0123456789"));
  ASSERT_TRUE(reloader_->reload("signal"));
  EXPECT_EQ(set_mode("carol-token-0123456789"), 200);
  EXPECT_TRUE(last_restart_required().empty());
}

TEST_F(ReloadTest, BrokenTokensFileFailsTheReloadAndKeepsTheLastGoodTokens) {
  write_file(dir_.file("tokens"), "alice not-a-hash\n");
  EXPECT_FALSE(reloader_->reload("signal"));
  EXPECT_EQ(set_mode(kAlice), 200);
  EXPECT_EQ(set_mode(kBob), 200);
  bool failed = false;
  for (const auto& [type, fields] : audit_->events()) {
    if (type == "reload_failed") {
      failed = true;
      EXPECT_NE(fields.dump().find("64 hex digits"), std::string::npos) << fields.dump();
    }
  }
  EXPECT_TRUE(failed);
}

TEST_F(ReloadTest, EveryChangedStartUpOnlySettingIsNamedAndStaysNamedUntilRestart) {
  write_file(dir_.file("runwarden.yaml"),
             runwarden_yaml("redaction:\n  headers: [x-new-secret]\n"
                            "limits:\n  max_connections: 7\n  header_timeout: 3s\n"
                            "kill_switch_file: KILL\n"
                            "threads: 3\n"));
  ASSERT_TRUE(reloader_->reload("signal"));
  // kill_switch_file, redaction and limits are not among them: they apply live
  // (KillSwitchFileMovesOnReload, reload_live_test.cpp). The record says they were applied.
  const std::vector<std::string> want{"threads"};
  EXPECT_EQ(last_restart_required(), want);
  EXPECT_EQ(last_reload().value("redaction", ""), "applied");
  EXPECT_FALSE(last_reload().value("redaction_narrowed", true)); // a rule added, none removed
  EXPECT_EQ(last_reload().value("limits", ""), "applied");
  EXPECT_EQ(audit_->redaction_rules().headers, std::vector<std::string>{"x-new-secret"});

  // A later policy-only reload still names it: it is compared with the start-up config,
  // which the process still runs with. Redaction and limits did not change since the last
  // reload.
  write_file(dir_.file("actions.yaml"), actions_yaml(upstream_.port(), "/other/**"));
  ASSERT_TRUE(reloader_->reload("file_watch"));
  EXPECT_EQ(last_restart_required(), want);
  EXPECT_EQ(last_reload().value("redaction", ""), "unchanged");
  EXPECT_EQ(last_reload().value("limits", ""), "unchanged");

  // Removing the rule narrows the redaction, and the record says so: records built from now
  // on, the final ones of requests judged before this reload too, use the new rules.
  write_file(dir_.file("runwarden.yaml"),
             runwarden_yaml("limits:\n  max_connections: 7\n  header_timeout: 3s\n"
                            "kill_switch_file: KILL\n"
                            "threads: 3\n"));
  ASSERT_TRUE(reloader_->reload("signal"));
  EXPECT_EQ(last_reload().value("redaction", ""), "applied");
  EXPECT_TRUE(last_reload().value("redaction_narrowed", false));
  EXPECT_TRUE(audit_->redaction_rules().headers.empty());
}

TEST_F(ReloadTest, PolicyChangeAppliesLiveWithoutARestartWarning) {
  auto get = [this] {
    return static_cast<int>(raw_exchange(server_->server().proxy_endpoint(),
                                         proxy_get(upstream_.port(), "/allowed/x", ""))
                                .result_int());
  };
  ASSERT_EQ(get(), 200);
  write_file(dir_.file("actions.yaml"), actions_yaml(upstream_.port(), "/other/**"));
  ASSERT_TRUE(reloader_->reload("signal"));
  EXPECT_EQ(get(), 403);
  EXPECT_TRUE(last_restart_required().empty());
}

// tls.passthrough applies live: a host taken out of it on reload is no longer tunnelled
// unjudged (each CONNECT reads the reloaded config). Without a CA the fixture cannot
// intercept, so a CONNECT that is not passthrough is refused.
TEST_F(ReloadTest, PassthroughChangeAppliesLive) {
  const std::string port = std::to_string(upstream_.port());
  ASSERT_TRUE(reload_with_passthrough());
  // CONNECT, then a plain GET inside: it reaches the upstream only through a tunnel.
  auto tunnel_get = [&] {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::socket s(ioc);
    boost::beast::flat_buffer buffer;
    if (const int status = open_tunnel(s, buffer); status != 200) {
      return status;
    }
    const std::string authority = "127.0.0.1:" + port;
    boost::system::error_code ec;
    boost::asio::write(s, boost::asio::buffer("GET /allowed/t HTTP/1.1\r\nHost: " + authority +
                                              "\r\nConnection: close\r\n\r\n"));
    boost::beast::http::response<boost::beast::http::string_body> res;
    boost::beast::http::read(s, buffer, res, ec);
    return ec ? -1 : static_cast<int>(res.result_int()) * 1000 + (res.body() == "hello" ? 1 : 0);
  };
  const int before = upstream_.requests();
  EXPECT_EQ(tunnel_get(), 200001); // tunnelled, answered "hello"
  EXPECT_EQ(upstream_.requests(), before + 1);

  write_file(dir_.file("runwarden.yaml"), runwarden_yaml(""));
  ASSERT_TRUE(reloader_->reload("signal"));
  EXPECT_NE(tunnel_get(), 200001);
  EXPECT_EQ(upstream_.requests(), before + 1); // nothing more reached the upstream
}

// A tunnel already open to a host that a reload takes out of tls.passthrough does not carry
// on unjudged: the reload closes it, with its record (aborted, passthrough_changed).
TEST_F(ReloadTest, AHostTakenOutOfPassthroughClosesItsOpenTunnel) {
  const std::string port = std::to_string(upstream_.port());
  ASSERT_TRUE(reload_with_passthrough());
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  boost::beast::flat_buffer buffer;
  ASSERT_EQ(open_tunnel(s, buffer), 200);
  const std::string authority = "127.0.0.1:" + port;
  boost::system::error_code ec;
  // One keep-alive call through the tunnel: it is open and relaying.
  boost::asio::write(
      s, boost::asio::buffer("GET /allowed/t HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"));
  boost::beast::http::response<boost::beast::http::string_body> res;
  boost::beast::http::read(s, buffer, res, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.body(), "hello");
  const int before = upstream_.requests();

  write_file(dir_.file("runwarden.yaml"), runwarden_yaml(""));
  ASSERT_TRUE(reloader_->reload("signal"));
  // The agent's side ends (bounded by the socket's receive timeout), not on the timeout.
  char byte = 0;
  const auto started = std::chrono::steady_clock::now();
  s.read_some(boost::asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset)
      << ec.message();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
  boost::asio::write(
      s, boost::asio::buffer("GET /allowed/u HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"), ec);
  EXPECT_EQ(upstream_.requests(), before); // nothing more reached the upstream
  bool recorded = false;
  for (int i = 0; i < 200 && !recorded; ++i) {
    for (const auto& r : audit_->records()) {
      recorded = recorded || (r.request.method == "CONNECT" && r.outcome == "aborted" &&
                              r.code == "passthrough_changed");
    }
    if (!recorded) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_TRUE(recorded) << "no closing record with code passthrough_changed";
}

TEST(RestartRequired, NamesEachStartUpOnlySettingThatDiffers) {
  config::Config a;
  config::Config b;
  EXPECT_TRUE(restart_required(a, b).empty());
  b.listen.transparent = {{"127.0.0.1", 15001}};
  b.agent_id = "other";
  b.tls.upstream_trust = "/etc/bundle.pem";
  b.approvals.hold_timeout = std::chrono::seconds(5);
  b.approvals.max_pending = 3;
  b.approvals.operator_tokens_file = "elsewhere"; // live: not named
  b.audit.body_bytes = 1;
  // Live on reload, never named: Reloader::reload applies them.
  b.redaction.headers = {"x-secret"};
  b.redaction.json_keys = {"iban"};
  b.redaction.patterns = {"sk_[a-z]+"};
  b.limits.header_bytes = 10;
  b.limits.header_count = 1;
  b.limits.idle_timeout = std::chrono::seconds(1);
  b.limits.header_timeout = std::chrono::seconds(1);
  b.limits.upstream_connect_timeout = std::chrono::seconds(1);
  b.limits.upstream_response_timeout = std::chrono::seconds(1);
  b.limits.inspect_body_bytes = 10;
  b.limits.max_connections = 1;
  b.limits.max_json_depth = 1;
  auto catalogue = std::make_shared<policy::Catalogue>();
  policy::Action action;
  action.name = "tunnel";
  policy::Matcher m;
  m.ports = {8443};
  action.matchers.push_back(m);
  catalogue->actions.emplace(action.name, action);
  b.catalogue = catalogue;
  std::vector<std::string> got;
  for (const auto& r : restart_required(a, b)) {
    EXPECT_FALSE(r.why.empty()) << r.setting;
    got.push_back(r.setting);
  }
  std::sort(got.begin(), got.end());
  const std::vector<std::string> want{
      "agent.id",          "approvals.hold_timeout",  "approvals.max_pending",
      "audit.body_bytes",  "catalogue CONNECT ports", "listen.transparent",
      "tls.upstream_trust"};
  EXPECT_EQ(got, want);
}

/// The status of one GET through the proxy (a fresh connection).
int proxy_status(OpsServer& server, std::uint16_t upstream_port) {
  return static_cast<int>(
      raw_exchange(server.server().proxy_endpoint(), proxy_get(upstream_port, "/allowed/x", ""))
          .result_int());
}

/// Polls (bounded: 40 x 50 ms) until a GET through the proxy answers `status`.
bool proxy_answers(OpsServer& server, std::uint16_t upstream_port, int status) {
  for (int i = 0; i < 40; ++i) {
    if (proxy_status(server, upstream_port) == status) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// A reload that names another kill-switch file moves the switch: the new file pauses, and the
// start-up one no longer does (before, every request also looked at the start-up file).
TEST_F(ReloadTest, KillSwitchFileMovesOnReload) {
  reloader_.reset();
  server_.reset();
  write_file(dir_.file("runwarden.yaml"), runwarden_yaml("kill_switch_file: KILL1\n"));
  server_ = std::make_unique<OpsServer>(config::load_config(dir_.file("runwarden.yaml")), audit_);
  reloader_ = std::make_shared<Reloader>(server_->ioc(), server_->server().context(),
                                         std::chrono::milliseconds(20));
  boost::asio::post(server_->ioc(), [r = reloader_] { r->start(false); });
  ASSERT_EQ(proxy_status(*server_, upstream_.port()), 200);
  write_file(dir_.file("KILL1"), "");
  ASSERT_TRUE(proxy_answers(*server_, upstream_.port(), 503)); // the start-up file works

  std::filesystem::remove(dir_.file("KILL1"));
  write_file(dir_.file("runwarden.yaml"), runwarden_yaml("kill_switch_file: KILL2\n"));
  ASSERT_TRUE(reloader_->reload("signal"));
  ASSERT_TRUE(proxy_answers(*server_, upstream_.port(), 200));
  write_file(dir_.file("KILL1"), "");
  // Several polls later the old file still does not pause anything.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(proxy_status(*server_, upstream_.port()), 200);
  write_file(dir_.file("KILL2"), "");
  EXPECT_TRUE(proxy_answers(*server_, upstream_.port(), 503));
  std::filesystem::remove(dir_.file("KILL2"));
  EXPECT_TRUE(proxy_answers(*server_, upstream_.port(), 200));
  std::promise<void> stopped;
  boost::asio::post(server_->ioc(), [&] {
    reloader_->stop();
    stopped.set_value();
  });
  EXPECT_EQ(stopped.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

// While the kill-switch file exists an operator's `mode normal` cannot resume traffic: the
// answer says so and names the file (it used to answer mode paused, changed true, and
// nothing else), and the agent's 503 says the file paused it.
TEST_F(ReloadTest, ModeChangeUnderTheKillSwitchFileSaysTheFileKeepsItPaused) {
  reloader_.reset();
  server_.reset();
  write_file(dir_.file("runwarden.yaml"), runwarden_yaml("kill_switch_file: KILL\n"));
  server_ = std::make_unique<OpsServer>(config::load_config(dir_.file("runwarden.yaml")), audit_);
  reloader_ = std::make_shared<Reloader>(server_->ioc(), server_->server().context(),
                                         std::chrono::milliseconds(20));
  reloader_->reload_operator_tokens(server_->server().operator_tokens());
  boost::asio::post(server_->ioc(), [r = reloader_] { r->start(false); });
  write_file(dir_.file("KILL"), "");
  ASSERT_TRUE(proxy_answers(*server_, upstream_.port(), 503));
  auto res = raw_exchange(server_->server().admin_endpoint(),
                          admin_request("POST", "/v1/mode", kAlice, R"({"mode":"normal"})"));
  ASSERT_EQ(res.result_int(), 200u);
  auto j = nlohmann::json::parse(res.body());
  EXPECT_EQ(j.value("mode", ""), "paused");
  EXPECT_EQ(j.value("kill_switch_file", ""), dir_.file("KILL").string());
  EXPECT_NE(j.value("note", "").find("remove it to resume"), std::string::npos) << j.dump();
  auto refused = raw_exchange(server_->server().proxy_endpoint(),
                              proxy_get(upstream_.port(), "/allowed/x", ""));
  EXPECT_EQ(refused.result_int(), 503u);
  EXPECT_NE(refused.body().find("kill-switch file"), std::string::npos) << refused.body();
  EXPECT_EQ(refused[boost::beast::http::field::retry_after], "30"); // waits on an operator
  std::filesystem::remove(dir_.file("KILL"));
  EXPECT_TRUE(proxy_answers(*server_, upstream_.port(), 200)); // the mode set meanwhile
  auto status = nlohmann::json::parse(
      raw_exchange(server_->server().admin_endpoint(), admin_request("GET", "/v1/status", "", ""))
          .body());
  EXPECT_FALSE(status.contains("note"));
  std::promise<void> stopped;
  boost::asio::post(server_->ioc(), [&] {
    reloader_->stop();
    stopped.set_value();
  });
  EXPECT_EQ(stopped.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

} // namespace
} // namespace runwarden::proxy
