// A request held for approval when the drain begins (SIGTERM/SIGINT): over a real Server on
// loopback, the waiting agent is answered (503 approval_shutdown with its approval id, or a
// JSON-RPC error for an MCP call), the request gets exactly one audit record, the approval's
// end is recorded and sent by webhook, nothing reaches the upstream, the drain waits for all
// of it and ends within its grace, and a later operator decision is a 409. A hold asked for
// after the drain began is refused the same way and still counted until it is answered.

#include "approval/hold_state.hpp"
#include "proxy/approval_gate.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <boost/asio/post.hpp>
#include <cstdlib>
#include <future>
#include <optional>

namespace runwarden::proxy::testing {
namespace {

namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

constexpr auto kGrace = std::chrono::seconds(10);

/// Records every webhook delivery's body and answers 200.
class WebhookSink {
public:
  WebhookSink() : server_(*this, nullptr, 16) {}
  std::uint16_t port() const { return server_.port(); }
  std::vector<nlohmann::json> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }
  template <class Stream> void serve_on(Stream& stream, const Accepted&) {
    serve_requests(stream, 100, [&](const http::request<http::string_body>& req) {
      {
        std::lock_guard lock(mutex_);
        bodies_.push_back(nlohmann::json::parse(req.body(), nullptr, false));
      }
      http::response<http::string_body> res{http::status::ok, 11};
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      boost::system::error_code ec;
      http::write(stream, res, ec);
      return !ec && req.keep_alive();
    });
  }

private:
  std::mutex mutex_;
  std::vector<nlohmann::json> bodies_;
  LoopbackUpstream<WebhookSink> server_; // last: stops before the state above
};

/// ops_config plus two approval_required actions on the upstream: POST /change/** and the
/// MCP tool "deploy" (POST /mcp), and one webhook to `hook_port`.
std::shared_ptr<config::Config> hold_config(std::uint16_t upstream_port, std::uint16_t hook_port,
                                            const TempDir& dir) {
  auto cfg = ops_config(upstream_port, dir);
  std::string err;
  auto catalogue = std::make_shared<policy::Catalogue>(*cfg->catalogue);
  auto rb = std::make_shared<policy::Runbook>(*cfg->runbooks.front());
  auto add = [&](const std::string& name, const std::string& path,
                 std::optional<policy::McpMatch> mcp) {
    policy::Matcher m;
    m.methods = {"POST"};
    m.hosts = {*policy::HostPattern::parse("127.0.0.1", &err)};
    m.path = policy::Glob::compile(path, policy::Glob::Kind::path, &err);
    m.ports = {upstream_port};
    m.mcp = std::move(mcp);
    policy::Action a;
    a.name = name;
    a.matchers.push_back(std::move(m));
    catalogue->actions.emplace(name, std::move(a));
    policy::RunbookAction ra;
    ra.name = name;
    ra.cls = policy::ActionClass::approval_required;
    ra.risk = "high";
    rb->actions.emplace(name, ra);
  };
  add("change_things", "/change/**", std::nullopt);
  add("deploy", "/mcp", policy::McpMatch{"deploy", {}});
  cfg->catalogue = catalogue;
  cfg->runbooks = {rb};
  cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
  ::setenv("RW_HOLD_DRAIN_HOOK_SECRET", "hook-secret", 1);
  cfg->approvals.webhooks.push_back(
      {"http://127.0.0.1:" + std::to_string(hook_port) + "/hook", "RW_HOLD_DRAIN_HOOK_SECRET"});
  write_file(dir.file("tokens"), token_line("alice", "alice-token"));
  return cfg;
}

/// Reads one response from `s` (whose io_context is `ioc`), giving up after `limit`: a
/// blocking read would wait forever on a connection nobody answers (asio polls without the
/// socket's SO_RCVTIMEO).
boost::system::error_code read_within(boost::asio::io_context& ioc, tcp::socket& s,
                                      http::response<http::string_body>& res,
                                      std::chrono::seconds limit) {
  boost::beast::flat_buffer buffer;
  boost::system::error_code ec = boost::asio::error::timed_out;
  http::async_read(s, buffer, res, [&ec](boost::system::error_code e, std::size_t) { ec = e; });
  ioc.restart();
  ioc.run_for(limit);
  if (!ioc.stopped()) { // the limit passed first
    boost::system::error_code ignored;
    s.close(ignored);
    ioc.restart();
    ioc.run_for(std::chrono::seconds(1)); // lets the cancelled read finish
    ec = boost::asio::error::timed_out;
  }
  return ec;
}

class HoldDrain : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    audit_ = std::make_shared<MemoryAudit>();
    server_ =
        std::make_unique<OpsServer>(hold_config(upstream_.port(), hooks_.port(), dir_), audit_, 1);
    gate_ = std::dynamic_pointer_cast<ApprovalGate>(server_->server().context()->gate);
    ASSERT_TRUE(gate_);
  }

  /// Sends `raw` on a new proxy connection from a thread of its own; the answer (or the
  /// error, when the connection ends without one) arrives in the future.
  std::future<std::pair<boost::system::error_code, http::response<http::string_body>>>
  send_held(std::string raw) {
    return std::async(std::launch::async,
                      [where = server_->server().proxy_endpoint(), raw = std::move(raw)] {
                        boost::asio::io_context ioc;
                        tcp::socket s(ioc);
                        s.connect(where);
                        boost::asio::write(s, boost::asio::buffer(raw));
                        http::response<http::string_body> res;
                        // The hold lasts until the drain, which ends within its grace.
                        const auto ec = read_within(ioc, s, res, kGrace + std::chrono::seconds(5));
                        return std::make_pair(ec, res);
                      });
  }

  /// The approval id of the one pending hold, once it exists (5 s bound).
  std::string wait_for_hold() {
    for (int i = 0; i < 500; ++i) {
      auto pending = gate_->registry().list(approval::HoldState::pending);
      if (!pending.empty()) {
        return pending.front().id;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
  }

  /// Starts the drain as serve does on SIGTERM and waits for its end (grace + 3 s bound).
  bool drain() {
    // Shared: should the wait below time out, a late end of the drain still has its promise.
    auto drained = std::make_shared<std::promise<void>>();
    auto done = drained->get_future();
    boost::asio::post(server_->ioc(), [this, drained] {
      server_->server().drain(kGrace, [drained] { drained->set_value(); });
    });
    const bool ended = done.wait_for(kGrace + std::chrono::seconds(3)) == std::future_status::ready;
    if (ended) {
      server_->server().stop_io_threads(); // what serve does next: nothing answers after this
    }
    return ended;
  }

  std::vector<audit::Exchange> records_for(const std::string& request_id) {
    std::vector<audit::Exchange> out;
    for (const auto& r : audit_->records()) {
      if (r.id == request_id) {
        out.push_back(r);
      }
    }
    return out;
  }

  std::vector<nlohmann::json> events(const std::string& type) {
    std::vector<nlohmann::json> out;
    for (const auto& [t, fields] : audit_->events()) {
      if (t == type) {
        out.push_back(fields);
      }
    }
    return out;
  }

  /// The approval.resolved deliveries the webhook received for `id`.
  std::vector<nlohmann::json> resolved_hooks(const std::string& id) {
    std::vector<nlohmann::json> out;
    for (const auto& b : hooks_.bodies()) {
      if (b.is_object() && b.value("type", "") == "approval.resolved" &&
          b["data"].value("id", "") == id) {
        out.push_back(b["data"]);
      }
    }
    return out;
  }

  /// The audit and webhook traces every hold ended by the drain leaves.
  void expect_ended_by_shutdown(const std::string& approval_id, const std::string& request_id) {
    auto records = records_for(request_id);
    ASSERT_EQ(records.size(), 1u) << "exactly one audit record for the held request";
    EXPECT_EQ(records[0].outcome, "approval_shutdown");
    EXPECT_EQ(records[0].code, "approval_shutdown");
    ASSERT_TRUE(records[0].approval);
    EXPECT_EQ(records[0].approval->id, approval_id);
    ASSERT_TRUE(records[0].response);

    auto resolved = events("approval.resolved");
    ASSERT_EQ(resolved.size(), 1u);
    EXPECT_EQ(resolved[0].value("approval_id", ""), approval_id);
    EXPECT_EQ(resolved[0].value("state", ""), "expired");
    EXPECT_EQ(resolved[0].value("by", ""), "shutdown");
    EXPECT_EQ(resolved[0].value("outcome", ""), "approval_shutdown");
    EXPECT_EQ(resolved[0].value("request_id", ""), request_id);

    auto hooks = resolved_hooks(approval_id);
    ASSERT_EQ(hooks.size(), 1u) << "the drain waits for the approval.resolved webhook";
    EXPECT_EQ(hooks[0].value("outcome", ""), "expired");
    EXPECT_EQ(hooks[0].value("by", ""), "shutdown");

    EXPECT_EQ(upstream_.requests(), 0) << "nothing held may reach the upstream";
    EXPECT_EQ(gate_->registry().stats().pending, 0u);
  }

  TempDir dir_;
  HelloUpstream upstream_;
  WebhookSink hooks_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
  std::shared_ptr<ApprovalGate> gate_;
};

TEST_F(HoldDrain, HeldRequestIsAnsweredRecordedAndAnnouncedBeforeTheServerStops) {
  const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
  const std::string body = R"({"replicas":3})";
  auto answer =
      send_held("POST http://" + authority + "/change/workers HTTP/1.1\r\nHost: " + authority +
                "\r\nRunwarden-Run: run-1\r\nContent-Type: application/json\r\n"
                "Content-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
  const std::string id = wait_for_hold();
  ASSERT_FALSE(id.empty()) << "the request was never held";
  // An operator connection opened before the drain (the admin listener closes when it
  // starts), and known to be accepted: one answered request on it first.
  boost::asio::io_context ioc;
  tcp::socket admin(ioc);
  admin.connect(server_->server().admin_endpoint());
  boost::asio::write(admin, boost::asio::buffer("GET /v1/approvals/" + id +
                                                " HTTP/1.1\r\nHost: admin\r\n"
                                                "Authorization: Bearer alice-token\r\n\r\n"));
  http::response<http::string_body> shown;
  const auto shown_ec = read_within(ioc, admin, shown, std::chrono::seconds(5));
  ASSERT_FALSE(shown_ec) << shown_ec.message();
  ASSERT_EQ(shown.result_int(), 200) << shown.body();

  ASSERT_TRUE(drain()) << "the drain did not end within its grace";
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto [ec, res] = answer.get();
  ASSERT_FALSE(ec) << "no answer for the held request: " << ec.message();
  EXPECT_EQ(res.result_int(), 503);
  EXPECT_EQ(res[http::field::content_type], "application/json");
  EXPECT_EQ(res[http::field::retry_after], "1");
  auto j = body_json(res);
  ASSERT_TRUE(j.is_object()) << res.body();
  EXPECT_EQ(j.value("error", ""), "approval_shutdown");
  EXPECT_EQ(j.value("approval_id", ""), id);
  EXPECT_EQ(j.value("action", ""), "change_things");
  const std::string reason = j.value("reason", "");
  EXPECT_NE(reason.find("shutting down"), std::string::npos) << reason;
  EXPECT_NE(reason.find(id), std::string::npos) << reason;
  const std::string request_id = j.value("request_id", "");
  ASSERT_FALSE(request_id.empty());
  expect_ended_by_shutdown(id, request_id);
  EXPECT_EQ(records_for(request_id)[0].response->status, 503);

  // A decision arriving afterwards is the usual 409: the hold already ended.
  boost::asio::write(admin,
                     boost::asio::buffer(admin_request("POST", "/v1/approvals/" + id + "/approve",
                                                       "alice-token", R"({"reason":"too late"})")));
  http::response<http::string_body> late;
  const auto late_ec = read_within(ioc, admin, late, std::chrono::seconds(5));
  ASSERT_FALSE(late_ec) << late_ec.message();
  EXPECT_EQ(late.result_int(), 409) << late.body();
  EXPECT_EQ(body_json(late).value("error", ""), "conflict");
  EXPECT_EQ(upstream_.requests(), 0);
}

TEST_F(HoldDrain, HeldMcpCallGetsAJsonRpcErrorWithTheApprovalId) {
  const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
  const std::string body =
      R"({"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"deploy"}})";
  auto answer = send_held("POST http://" + authority + "/mcp HTTP/1.1\r\nHost: " + authority +
                          "\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body);
  const std::string id = wait_for_hold();
  ASSERT_FALSE(id.empty()) << "the MCP call was never held";

  ASSERT_TRUE(drain()) << "the drain did not end within its grace";
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto [ec, res] = answer.get();
  ASSERT_FALSE(ec) << "no answer for the held MCP call: " << ec.message();
  EXPECT_EQ(res.result_int(), 200); // JSON-RPC: the error rides in the body, like refusals
  EXPECT_EQ(res[http::field::retry_after], "1"); // the client may try again elsewhere, later
  auto j = body_json(res);
  ASSERT_TRUE(j.is_object()) << res.body();
  EXPECT_EQ(j.value("jsonrpc", ""), "2.0");
  EXPECT_EQ(j.value("id", 0), 41);
  ASSERT_TRUE(j.contains("error")) << res.body();
  const auto& data = j["error"]["data"];
  EXPECT_EQ(data.value("error", ""), "approval_shutdown");
  EXPECT_EQ(data.value("approval_id", ""), id);
  EXPECT_NE(j["error"].value("message", "").find("shutting down"), std::string::npos);
  const std::string request_id = data.value("request_id", "");
  ASSERT_FALSE(request_id.empty());
  expect_ended_by_shutdown(id, request_id);
}

TEST_F(HoldDrain, AHoldAskedForAfterTheDrainBeganIsRefusedAndCountedUntilAnswered) {
  EXPECT_EQ(gate_->shut_down(), 0u);
  HoldRequest req;
  req.request_id = "req_late";
  req.run = "run-late";
  req.decision.action = "change_things";
  std::optional<HoldResult> got;
  gate_->hold(req, [&got](HoldResult r) { got = std::move(r); });
  ASSERT_TRUE(got) << "answered at once";
  EXPECT_FALSE(got->approved);
  EXPECT_EQ(got->code, "approval_shutdown");
  EXPECT_EQ(got->outcome, "approval_shutdown");
  EXPECT_TRUE(got->approval_id.empty()) << "no approval was opened";
  EXPECT_NE(got->reason.find("shutting down"), std::string::npos) << got->reason;
  EXPECT_EQ(gate_->registry().stats().created, 0u);
  EXPECT_EQ(gate_->unanswered(), 1u) << "the drain waits until the session answers";
  got.reset();
  EXPECT_EQ(gate_->unanswered(), 0u);
}

} // namespace
} // namespace runwarden::proxy::testing
