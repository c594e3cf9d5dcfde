// redaction.* and limits.* applied by a reload, without a restart, against a real Server, a
// real audit log on disk and real config files: a canary only a newly added rule matches is
// in the audit file before the reload and hidden (a [REDACTED: marker) in every record
// after it, and in approval packets built after it; a reload whose rules do not compile
// keeps the rules in force; a lowered header_bytes refuses the next request of a new and of
// an open connection; a lowered max_connections refuses new connections and keeps the
// open ones.

#include "audit/audit_log.hpp"
#include "proxy/reload.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <algorithm>
#include <future>
#include <thread>

namespace runwarden::proxy {
namespace {

using namespace testing;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

constexpr const char* kAlice = "alice-token-0123456789";
// No built-in rule matches either canary: only the rules a reload adds do.
constexpr const char* kPatternCanary = "acme_live_Zq8Xw3Rt5Yp0";
constexpr const char* kPattern = "redaction:\n  patterns: [\"acme_live_[A-Za-z0-9]{8,}\"]\n";
constexpr const char* kKeyCanary = "Zq8Xw3Rt5Yp-ref";
constexpr const char* kKey = "redaction:\n  json_keys: [acme_ref]\n";

std::string runwarden_yaml(const std::string& extra) {
  return files_runwarden_yaml("live-agent", extra);
}

std::string actions_yaml(std::uint16_t port) {
  const std::string at = "{scheme: http, host: 127.0.0.1, port: " + std::to_string(port);
  return "actions:\n"
         "  read_things:\n"
         "    - " +
         at +
         ", method: GET, path: \"/allowed/**\"}\n"
         "  post_things:\n"
         "    - " +
         at +
         ", method: POST, path: \"/allowed/**\"}\n"
         "  change_things:\n"
         "    - " +
         at + ", method: POST, path: \"/change/**\"}\n";
}

// The hold's own timeout bounds a test that fails to decide it.
constexpr const char* kRunbook = "runbook: rb\n"
                                 "owner: test\n"
                                 "trigger: {manual: test}\n"
                                 "allowed_actions:\n"
                                 "  read_only: [read_things]\n"
                                 "  allowed: [post_things]\n"
                                 "  approval_required:\n"
                                 "    - action: change_things\n"
                                 "      approvers: [alice]\n"
                                 "      timeout: 20s\n"
                                 "unmatched: deny\n";

std::string request(const std::string& method, std::uint16_t port, const std::string& path,
                    const std::string& headers, const std::string& body, bool close = true) {
  const std::string authority = "127.0.0.1:" + std::to_string(port);
  std::string raw = method + " http://" + authority + path + " HTTP/1.1\r\nHost: " + authority +
                    "\r\n" + (close ? "Connection: close\r\n" : "") + headers;
  if (!body.empty()) {
    raw +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return raw + "\r\n" + body;
}

/// Writes `raw` on `s` and reads one answer within `limit` (asio's blocking read would poll
/// past SO_RCVTIMEO): its status, or 0.
int exchange_within(boost::asio::io_context& ioc, tcp::socket& s, const std::string& raw,
                    std::chrono::seconds limit = std::chrono::seconds(10)) {
  boost::system::error_code wec;
  boost::asio::write(s, boost::asio::buffer(raw), wec);
  if (wec) {
    return 0;
  }
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  boost::system::error_code ec = boost::asio::error::timed_out;
  http::async_read(s, buffer, res, [&ec](boost::system::error_code e, std::size_t) { ec = e; });
  ioc.restart();
  ioc.run_for(limit);
  if (!ioc.stopped()) {
    boost::system::error_code ignored;
    s.close(ignored);
    ioc.restart();
    ioc.run_for(std::chrono::seconds(1));
    return 0;
  }
  return ec ? 0 : static_cast<int>(res.result_int());
}

/// One client connection to the proxy that may carry several requests.
struct Client {
  explicit Client(const tcp::endpoint& where) : socket(ioc) {
    socket.connect(where);
    set_timeouts(socket);
  }
  int send(const std::string& raw, std::chrono::seconds limit = std::chrono::seconds(10)) {
    return exchange_within(ioc, socket, raw, limit);
  }
  boost::asio::io_context ioc;
  tcp::socket socket;
};

class ReloadLiveTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::filesystem::create_directories(dir_.file("runbooks"));
    std::filesystem::create_directories(dir_.file("audit"));
    write_file(dir_.file("runwarden.yaml"), runwarden_yaml(""));
    write_file(dir_.file("actions.yaml"), actions_yaml(upstream_.port()));
    write_file(dir_.file("runbooks") / "rb.yaml", kRunbook);
    write_file(dir_.file("tokens"), token_line("alice", kAlice));
    auto cfg = config::load_config(dir_.file("runwarden.yaml"));
    audit::Options o; // as `runwarden serve` opens it (cmd_serve.cpp)
    o.path = cfg->audit.path.string();
    o.redact_headers = cfg->redaction.headers;
    o.redact_json_keys = cfg->redaction.json_keys;
    o.redact_patterns = cfg->redaction.patterns;
    audit_path_ = o.path;
    audit_ = audit::AuditLog::open(o);
    server_ = std::make_unique<OpsServer>(cfg, audit_, 2); // two I/O threads append at once
    reloader_ = std::make_shared<Reloader>(server_->ioc(), server_->server().context());
    reloader_->reload_operator_tokens(server_->server().operator_tokens());
  }
  void TearDown() override {
    reloader_.reset();
    server_.reset();
    if (audit_) {
      audit_->close();
    }
  }

  bool reload_with(const std::string& extra) {
    write_file(dir_.file("runwarden.yaml"), runwarden_yaml(extra));
    return reloader_->reload("signal");
  }

  int send(const std::string& raw) {
    Client c(server_->server().proxy_endpoint());
    return c.send(raw);
  }

  std::vector<std::string> audit_lines() {
    std::ifstream in(audit_path_, std::ios::binary);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
      out.push_back(line);
    }
    return out;
  }

  /// Waits (bounded: 100 x 50 ms) for the final record of the request to `path`: the
  /// answer may reach the client before its record is written.
  bool wait_final_record(const std::string& path) {
    for (int i = 0; i < 100; ++i) {
      for (const auto& line : audit_lines()) {
        if (line.find("\"type\":\"exchange\"") != std::string::npos &&
            line.find(path) != std::string::npos) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  /// The audit lines after the last `reload` event (all of them when there is none).
  std::vector<std::string> lines_after_reload() {
    auto lines = audit_lines();
    std::size_t from = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find("\"event\":\"reload\"") != std::string::npos) {
        from = i + 1;
      }
    }
    return {lines.begin() + static_cast<std::ptrdiff_t>(from), lines.end()};
  }

  /// The last `name` event record, waiting for one (bounded: 100 x 50 ms; another thread
  /// may be writing the batch that holds it). Null when none came.
  nlohmann::json last_event(const std::string& name) {
    nlohmann::json out;
    for (int i = 0; i < 100 && out.is_null(); ++i) {
      for (const auto& line : audit_lines()) {
        if (line.find("\"event\":\"" + name + "\"") != std::string::npos) {
          out = nlohmann::json::parse(line, nullptr, false);
        }
      }
      if (out.is_null()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    return out;
  }

  static bool has(const std::vector<std::string>& lines, std::string_view what) {
    return std::any_of(lines.begin(), lines.end(),
                       [what](const std::string& l) { return l.find(what) != std::string::npos; });
  }

  /// Sends a POST /change/<name> carrying both canaries (a header and a JSON body), waits
  /// for its hold, returns the hold's full JSON (GET /v1/approvals/{id}) and denies it. Null
  /// when no hold appeared or the held request was not answered 403.
  nlohmann::json held_packet(const std::string& name) {
    const std::string raw = request("POST", upstream_.port(), "/change/" + name,
                                    "X-Note: " + std::string(kPatternCanary) + "\r\n",
                                    R"({"acme_ref":")" + std::string(kKeyCanary) + R"("})");
    const tcp::endpoint proxy = server_->server().proxy_endpoint();
    std::promise<int> answered;
    auto status = answered.get_future();
    std::thread agent([&answered, proxy, raw] {
      Client c(proxy);
      answered.set_value(c.send(raw, std::chrono::seconds(30)));
    });
    nlohmann::json packet;
    std::string id;
    for (int i = 0; i < 100 && id.empty(); ++i) {
      const auto list = body_json(raw_exchange(server_->server().admin_endpoint(),
                                               admin_request("GET", "/v1/approvals", kAlice)));
      for (const auto& h : list.value("approvals", nlohmann::json::array())) {
        if (h.value("state", "") == "pending") {
          id = h.value("id", "");
        }
      }
      if (id.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    if (!id.empty()) {
      packet = body_json(raw_exchange(server_->server().admin_endpoint(),
                                      admin_request("GET", "/v1/approvals/" + id, kAlice)));
      const auto denied = raw_exchange(
          server_->server().admin_endpoint(),
          admin_request("POST", "/v1/approvals/" + id + "/deny", kAlice, R"({"reason":"test"})"));
      EXPECT_EQ(denied.result_int(), 200u) << denied.body();
    }
    agent.join();
    const int got = status.get();
    EXPECT_EQ(got, 403);
    return id.empty() || got != 403 ? nlohmann::json() : packet;
  }

  HelloUpstream upstream_;
  TempDir dir_;
  std::string audit_path_;
  std::shared_ptr<audit::AuditLog> audit_;
  std::unique_ptr<OpsServer> server_;
  std::shared_ptr<Reloader> reloader_;
};

// A pattern added by reload hides a canary that no rule matched before: the same request's
// record holds the canary before the reload and a [REDACTED: marker after it, and the
// reload's record says the rules were applied.
TEST_F(ReloadLiveTest, PatternAddedByReloadRedactsEveryLaterRecord) {
  const std::string header = "X-Note: " + std::string(kPatternCanary) + "\r\n";
  ASSERT_EQ(send(request("GET", upstream_.port(), "/allowed/before", header, "")), 200);
  ASSERT_TRUE(wait_final_record("/allowed/before"));
  ASSERT_TRUE(has(audit_lines(), kPatternCanary)) << "the canary must be there without the rule";

  ASSERT_TRUE(reload_with(kPattern));
  ASSERT_EQ(send(request("GET", upstream_.port(), "/allowed/after", header, "")), 200);
  ASSERT_TRUE(wait_final_record("/allowed/after"));
  const auto after = lines_after_reload();
  EXPECT_FALSE(has(after, kPatternCanary));
  EXPECT_TRUE(has(after, "[REDACTED:"));
  const auto reload = last_event("reload");
  ASSERT_FALSE(reload.is_null());
  EXPECT_EQ(reload["data"].value("redaction", ""), "applied") << reload.dump();
  EXPECT_TRUE(reload["data"]["restart_required"].empty()) << reload.dump();
}

// The same for a JSON key added by reload: the value of "acme_ref" in a JSON body.
TEST_F(ReloadLiveTest, JsonKeyAddedByReloadRedactsEveryLaterRecord) {
  const std::string body = R"({"acme_ref":")" + std::string(kKeyCanary) + R"(","n":1})";
  ASSERT_EQ(send(request("POST", upstream_.port(), "/allowed/before", "", body)), 200);
  ASSERT_TRUE(wait_final_record("/allowed/before"));
  ASSERT_TRUE(has(audit_lines(), kKeyCanary)) << "the canary must be there without the rule";

  ASSERT_TRUE(reload_with(kKey));
  ASSERT_EQ(send(request("POST", upstream_.port(), "/allowed/after", "", body)), 200);
  ASSERT_TRUE(wait_final_record("/allowed/after"));
  const auto after = lines_after_reload();
  EXPECT_FALSE(has(after, kKeyCanary));
  EXPECT_TRUE(has(after, "[REDACTED:"));
}

// Validation refuses a pattern that does not compile: the reload fails, is recorded, and
// the rules in force (the previous reload's) keep redacting.
TEST_F(ReloadLiveTest, ReloadWithABadPatternKeepsTheRulesInForce) {
  ASSERT_TRUE(reload_with(kPattern));
  ASSERT_FALSE(reload_with("redaction:\n  patterns: [\"acme_live_(\"]\n"));
  EXPECT_FALSE(last_event("reload_failed").is_null());
  const std::string header = "X-Note: " + std::string(kPatternCanary) + "\r\n";
  ASSERT_EQ(send(request("GET", upstream_.port(), "/allowed/kept", header, "")), 200);
  ASSERT_TRUE(wait_final_record("/allowed/kept"));
  EXPECT_FALSE(has(audit_lines(), kPatternCanary));
}

// Approval packets (admin API, webhooks) built after the reload hide what the new rules
// match, in headers and in the body; before it they showed it.
TEST_F(ReloadLiveTest, ApprovalPacketBuiltAfterReloadHidesTheCanary) {
  const nlohmann::json before = held_packet("before");
  ASSERT_FALSE(before.is_null());
  ASSERT_NE(before.dump().find(kPatternCanary), std::string::npos) << before.dump();
  ASSERT_NE(before.dump().find(kKeyCanary), std::string::npos) << before.dump();
  ASSERT_TRUE(wait_final_record("/change/before")); // before the reload's record

  ASSERT_TRUE(reload_with(std::string(kPattern) + "  json_keys: [acme_ref]\n"));
  const nlohmann::json after = held_packet("after");
  ASSERT_FALSE(after.is_null());
  const std::string text = after.dump();
  EXPECT_EQ(text.find(kPatternCanary), std::string::npos) << text;
  EXPECT_EQ(text.find(kKeyCanary), std::string::npos) << text;
  EXPECT_NE(text.find("[REDACTED:"), std::string::npos) << text;
  // The held requests' records on disk too.
  ASSERT_TRUE(wait_final_record("/change/after"));
  const auto lines = lines_after_reload();
  EXPECT_FALSE(has(lines, kPatternCanary));
  EXPECT_FALSE(has(lines, kKeyCanary));
}

// A lowered limits.header_bytes refuses (431) a request head it allowed before, on a new
// connection and as the next request of a connection opened before the reload.
TEST_F(ReloadLiveTest, LoweredHeaderBytesAppliesToNewConnectionsAndTheNextRequest) {
  const std::string pad = "X-Pad: " + std::string(3000, 'a') + "\r\n";
  Client open(server_->server().proxy_endpoint());
  ASSERT_EQ(open.send(request("GET", upstream_.port(), "/allowed/k1", "", "", false)), 200);
  ASSERT_EQ(send(request("GET", upstream_.port(), "/allowed/big", pad, "")), 200);

  ASSERT_TRUE(reload_with("limits:\n  header_bytes: 1024\n"));
  const auto reload = last_event("reload");
  ASSERT_FALSE(reload.is_null());
  EXPECT_EQ(reload["data"].value("limits", ""), "applied") << reload.dump();
  EXPECT_EQ(send(request("GET", upstream_.port(), "/allowed/big", pad, "")), 431);
  EXPECT_EQ(send(request("GET", upstream_.port(), "/allowed/small", "", "")), 200);
  EXPECT_EQ(open.send(request("GET", upstream_.port(), "/allowed/k2", pad, "", false)), 431);
}

// A raised limits.header_bytes applies from the next wait for a request on: a connection that
// was already waiting reads its next head under the old limit, and its 431 names that limit
// (the one that refused it), not the new one. The connection waits once its answer is out
// and its exchange released; a reload that still beats that (a slow machine) makes the head
// pass under the new limit, so the case is retried, a bounded number of times.
TEST_F(ReloadLiveTest, RaisedHeaderBytesIsNotQuotedForAHeadTheOldLimitRefused) {
  const std::string pad = "X-Pad: " + std::string(3000, 'a') + "\r\n";
  int refused = 0;
  for (int attempt = 0; attempt < 20 && refused == 0; ++attempt) {
    ASSERT_TRUE(reload_with("limits:\n  header_bytes: 1024\n"));
    Client waiting(server_->server().proxy_endpoint());
    ASSERT_EQ(waiting.send(request("GET", upstream_.port(), "/allowed/k1", "", "", false)), 200);
    for (int i = 0; i < 200 && server_->server().context()->in_flight.load() != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // the handler's last steps
    ASSERT_TRUE(reload_with("limits:\n  header_bytes: 8192\n"));
    const std::string path = "/allowed/under-old-" + std::to_string(attempt);
    const int status = waiting.send(request("GET", upstream_.port(), path, pad, ""));
    ASSERT_TRUE(status == 431 || status == 200) << status;
    if (status != 431) {
      continue; // the wait began after the raise: nothing to check this time
    }
    ++refused;
    ASSERT_TRUE(wait_final_record(path));
    std::string reason;
    for (const auto& line : audit_lines()) {
      if (line.find(path) != std::string::npos) {
        reason = nlohmann::json::parse(line).value("reason", "");
      }
    }
    EXPECT_NE(reason.find("(1024 bytes)"), std::string::npos) << reason;
  }
  EXPECT_EQ(refused, 1) << "no attempt read a head under the old limit";
  // A new connection waits under the raised limit.
  EXPECT_EQ(send(request("GET", upstream_.port(), "/allowed/new", pad, "")), 200);
}

// A lowered limits.max_connections refuses new connections over it (503 overloaded) and
// leaves those already open, above it, serving.
TEST_F(ReloadLiveTest, LoweredMaxConnectionsAppliesToNewAcceptsOnly) {
  Client first(server_->server().proxy_endpoint());
  Client second(server_->server().proxy_endpoint());
  ASSERT_EQ(first.send(request("GET", upstream_.port(), "/allowed/1", "", "", false)), 200);
  ASSERT_EQ(second.send(request("GET", upstream_.port(), "/allowed/2", "", "", false)), 200);
  ASSERT_EQ(send(request("GET", upstream_.port(), "/allowed/3", "", "")), 200);

  ASSERT_TRUE(reload_with("limits:\n  max_connections: 1\n"));
  EXPECT_EQ(send(request("GET", upstream_.port(), "/allowed/4", "", "")), 503);
  EXPECT_EQ(first.send(request("GET", upstream_.port(), "/allowed/5", "", "", false)), 200);
  EXPECT_EQ(second.send(request("GET", upstream_.port(), "/allowed/6", "", "", false)), 200);
}

} // namespace
} // namespace runwarden::proxy
