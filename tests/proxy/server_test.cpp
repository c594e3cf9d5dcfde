// The proxy in-process on port 0, a recording plain-HTTP upstream on port 0, raw sockets as
// the agent. Proves what is forwarded (exactly, canonically) and what never reaches upstream.

#include "certs/authority.hpp"
#include "proxy/server.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <gtest/gtest.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

void set_timeouts(tcp::socket& s) {
  timeval tv{5, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

struct Seen {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool has(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (beast::iequals(n, name)) {
        return true;
      }
    }
    return false;
  }
};

/// Plain HTTP/1.1 upstream that records every request and answers 200 "hello".
class Upstream {
public:
  Upstream() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~Upstream() {
    stop_ = true;
    {
      net::io_context ioc;
      tcp::socket poke(ioc);
      boost::system::error_code ec;
      poke.connect(acceptor_.local_endpoint(), ec);
    }
    thread_.join();
    std::lock_guard lock(mutex_);
    for (int fd : fds_) {
      ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : workers_) {
      t.join();
    }
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int accepted() {
    std::lock_guard lock(mutex_);
    return static_cast<int>(workers_.size());
  }
  std::vector<Seen> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

private:
  void serve() {
    for (int i = 0; i < 64 && !stop_; ++i) {
      auto socket = std::make_shared<tcp::socket>(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stop_) {
        return;
      }
      set_timeouts(*socket);
      std::lock_guard lock(mutex_);
      fds_.push_back(socket->native_handle());
      workers_.emplace_back([this, socket] { connection(*socket); });
    }
  }
  void connection(tcp::socket& socket) {
    beast::flat_buffer buffer;
    for (int i = 0; i < 100; ++i) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) {
        return;
      }
      Seen s{std::string(req.method_string()), std::string(req.target()), {}, req.body()};
      for (const auto& f : req) {
        s.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      }
      {
        std::lock_guard lock(mutex_);
        seen_.push_back(std::move(s));
      }
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "text/plain");
      res.body() = "hello";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec || !req.keep_alive()) {
        return;
      }
    }
  }

  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<Seen> seen_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
};

/// In-memory audit sink: completes at once and keeps every record.
class FakeAudit final : public audit::AuditLog {
public:
  void record(const audit::Exchange& exchange, bool final, audit::Completion done) override {
    {
      std::lock_guard lock(mutex_);
      records_.push_back({exchange, final});
    }
    done(fail_ ? std::make_error_code(std::errc::io_error) : std::error_code{});
  }
  void event(std::string_view, const nlohmann::json&, audit::Completion done) override { done({}); }
  bool healthy() const override { return !fail_; }
  std::string failure() const override { return fail_ ? "disk full" : ""; }
  std::error_code sync() override { return {}; }

  std::vector<std::pair<audit::Exchange, bool>> records() {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::atomic<bool> fail_{false};

private:
  std::mutex mutex_;
  std::vector<std::pair<audit::Exchange, bool>> records_;
};

policy::Matcher matcher(std::string method, std::string path, std::uint16_t port) {
  policy::Matcher m;
  std::string err;
  m.methods = {std::move(method)};
  m.hosts = {*policy::HostPattern::parse("127.0.0.1", &err)};
  m.path = policy::Glob::compile(path, policy::Glob::Kind::path, &err);
  m.ports = {port};
  return m;
}

std::shared_ptr<const config::Config> make_config(std::uint16_t upstream_port) {
  auto cfg = std::make_shared<config::Config>();
  cfg->listen.proxy = {"127.0.0.1", 0};
  cfg->listen.admin = {"127.0.0.1", 0};
  cfg->agent_id = "test-agent";
  cfg->active_runbook = "rb";
  cfg->limits.header_bytes = 2048;
  cfg->limits.inspect_body_bytes = 64;
  auto catalogue = std::make_shared<policy::Catalogue>();
  auto add = [&](std::string name, std::string method, std::string path) {
    policy::Action a;
    a.name = name;
    a.matchers.push_back(matcher(std::move(method), std::move(path), upstream_port));
    catalogue->actions.emplace(name, std::move(a));
  };
  add("read_things", "GET", "/allowed/**");
  add("post_things", "POST", "/post");
  add("forbidden_thing", "GET", "/denied/**");
  add("needs_human", "POST", "/restart");
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = "rb";
  rb->sha256 = "abc";
  auto cls = [&](std::string name, policy::ActionClass c) {
    policy::RunbookAction ra;
    ra.name = name;
    ra.cls = c;
    rb->actions.emplace(name, ra);
  };
  cls("read_things", policy::ActionClass::read_only);
  cls("post_things", policy::ActionClass::allowed);
  cls("forbidden_thing", policy::ActionClass::denied);
  cls("needs_human", policy::ActionClass::approval_required);
  cfg->catalogue = catalogue;
  cfg->runbooks = {rb};
  cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
  return cfg;
}

class ProxyTest : public ::testing::Test {
protected:
  void SetUp() override { start(nullptr); }
  void TearDown() override { stop(); }

  void start(std::shared_ptr<certs::Authority> authority) {
    audit_ = std::make_shared<FakeAudit>();
    server_ = std::make_unique<Server>(
        ioc_, ServerOptions{make_config(upstream_.port()), audit_, std::move(authority), nullptr});
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void stop() {
    if (thread_.joinable()) {
      ioc_.stop();
      thread_.join();
    }
    server_.reset();
  }

  tcp::socket connect() {
    tcp::socket s(client_ioc_);
    s.connect(server_->proxy_endpoint());
    set_timeouts(s);
    return s;
  }
  std::string up() const { return "127.0.0.1:" + std::to_string(upstream_.port()); }

  static http::response<http::string_body> read_response(tcp::socket& s,
                                                         beast::flat_buffer& buffer) {
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(s, buffer, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }
  static http::response<http::string_body> exchange(tcp::socket& s, const std::string& raw) {
    net::write(s, net::buffer(raw));
    beast::flat_buffer buffer;
    return read_response(s, buffer);
  }
  static nlohmann::json json(const http::response<http::string_body>& res) {
    return nlohmann::json::parse(res.body(), nullptr, false);
  }

  Upstream upstream_;
  net::io_context ioc_;
  net::io_context client_ioc_;
  std::shared_ptr<FakeAudit> audit_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

TEST_F(ProxyTest, AllowedRequestIsForwardedCanonicallyWithoutProxyHeaders) {
  auto s = connect();
  auto res = exchange(s, "GET http://127.0.0.1:" + std::to_string(upstream_.port()) +
                             "/allowed/./a/../b?x=1 HTTP/1.1\r\nHost: " + up() +
                             "\r\nRunwarden-Run: run-42\r\nProxy-Connection: keep-alive\r\n"
                             "Proxy-Authorization: Basic c2VjcmV0\r\nX-Keep: 1\r\n"
                             "Connection: X-Drop\r\nX-Drop: gone\r\n\r\n");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "hello");
  auto seen = upstream_.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].target, "/allowed/b?x=1");
  EXPECT_TRUE(seen[0].has("x-keep"));
  EXPECT_FALSE(seen[0].has("runwarden-run"));
  EXPECT_FALSE(seen[0].has("proxy-connection"));
  EXPECT_FALSE(seen[0].has("proxy-authorization"));
  EXPECT_FALSE(seen[0].has("x-drop"));
  // The final record follows the last byte of the streamed response: wait for it (bounded).
  auto records = audit_->records();
  for (int i = 0; i < 500 && records.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    records = audit_->records();
  }
  ASSERT_EQ(records.size(), 2u);
  EXPECT_FALSE(records[0].second);
  EXPECT_TRUE(records[1].second);
  EXPECT_EQ(records[1].first.outcome, "forwarded");
  EXPECT_EQ(records[1].first.run, "run-42");
  EXPECT_EQ(records[1].first.action, "read_things");
  ASSERT_TRUE(records[1].first.response.has_value());
  EXPECT_EQ(records[1].first.response->status, 200);
  EXPECT_EQ(records[1].first.response->body, "hello");
}

TEST_F(ProxyTest, KeepAliveReusesOneUpstreamConnectionForAllowedPost) {
  auto s = connect();
  beast::flat_buffer buffer;
  for (int i = 0; i < 3; ++i) {
    std::string raw = "POST http://" + up() + "/post HTTP/1.1\r\nHost: " + up() +
                      "\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    net::write(s, net::buffer(raw));
    auto res = read_response(s, buffer);
    EXPECT_EQ(res.result_int(), 200u);
  }
  auto seen = upstream_.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(upstream_.accepted(), 1);
  EXPECT_EQ(seen[2].body, "{\"a\":1}");
}

TEST_F(ProxyTest, DeniedRequestGets403JsonAndNeverReachesUpstream) {
  auto s = connect();
  auto res = exchange(s, "GET http://" + up() + "/denied/x HTTP/1.1\r\nHost: " + up() + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_EQ(res[http::field::content_type], "application/json");
  auto j = json(res);
  EXPECT_EQ(j.value("error", ""), "denied_by_runbook");
  EXPECT_EQ(j.value("runbook", ""), "rb");
  EXPECT_EQ(j.value("action", ""), "forbidden_thing");
  EXPECT_EQ(j.value("request_id", "").rfind("req_", 0), 0u);
  EXPECT_FALSE(j.value("reason", "").empty());
  EXPECT_TRUE(upstream_.seen().empty());
  auto records = audit_->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].second);
  EXPECT_EQ(records[0].first.outcome, "denied");
}

TEST_F(ProxyTest, UnmatchedRequestIsDenied) {
  auto s = connect();
  auto res = exchange(s, "GET http://" + up() + "/other HTTP/1.1\r\nHost: " + up() + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, ApprovalRequiredIsRefusedUntilHoldsExist) {
  auto s = connect();
  auto res = exchange(s, "POST http://" + up() + "/restart HTTP/1.1\r\nHost: " + up() +
                             "\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_EQ(json(res).value("error", ""), "approval_required");
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, ContentLengthWithTransferEncodingIsRefused) {
  auto s = connect();
  auto res = exchange(s, "POST http://" + up() + "/post HTTP/1.1\r\nHost: " + up() +
                             "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "0\r\n\r\n");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, MalformedChunkingIsRefused) {
  auto s = connect();
  auto res = exchange(s, "POST http://" + up() + "/post HTTP/1.1\r\nHost: " + up() +
                             "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, PipelinedAllowedThenDeniedForwardsOnlyTheAllowedOne) {
  auto s = connect();
  std::string raw = "GET http://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() + "\r\n\r\n" +
                    "GET http://" + up() + "/denied/2 HTTP/1.1\r\nHost: " + up() + "\r\n\r\n";
  net::write(s, net::buffer(raw));
  beast::flat_buffer buffer;
  auto first = read_response(s, buffer);
  auto second = read_response(s, buffer);
  EXPECT_EQ(first.result_int(), 200u);
  EXPECT_EQ(second.result_int(), 403u);
  auto seen = upstream_.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/allowed/1");
}

TEST_F(ProxyTest, MissingOrDuplicateHostIsRefused) {
  {
    auto s = connect();
    auto res = exchange(s, "GET http://" + up() + "/allowed/1 HTTP/1.1\r\n\r\n");
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(json(res).value("error", ""), "missing_host");
  }
  {
    auto s = connect();
    auto res = exchange(s, "GET http://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() +
                               "\r\nHost: " + up() + "\r\n\r\n");
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(json(res).value("error", ""), "duplicate_host");
  }
  {
    auto s = connect();
    auto res = exchange(s, "GET http://" + up() +
                               "/allowed/1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n");
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(json(res).value("error", ""), "host_mismatch");
  }
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, HeaderTooLargeGets431) {
  auto s = connect();
  auto res = exchange(s, "GET http://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() +
                             "\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 431u);
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, BodyOverInspectLimitGets413WithJsonReason) {
  auto s = connect();
  auto res = exchange(s, "POST http://" + up() + "/post HTTP/1.1\r\nHost: " + up() +
                             "\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b'));
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_EQ(json(res).value("error", ""), "body_too_large");
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, UpgradeAndOriginFormAndHttpsOverPlainAreRefused) {
  {
    auto s = connect();
    auto res = exchange(s, "GET http://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() +
                               "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_EQ(json(res).value("error", ""), "upgrade_refused");
  }
  {
    auto s = connect();
    auto res = exchange(s, "GET /allowed/1 HTTP/1.1\r\nHost: " + up() + "\r\n\r\n");
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(json(res).value("error", ""), "origin_form_to_proxy");
  }
  {
    auto s = connect();
    auto res =
        exchange(s, "GET https://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() + "\r\n\r\n");
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(json(res).value("error", ""), "https_over_plain");
  }
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, RequestsToOwnListenerAreRefusedAsLoops) {
  auto s = connect();
  std::string self = "127.0.0.1:" + std::to_string(server_->proxy_endpoint().port());
  auto res =
      exchange(s, "GET http://" + self + "/allowed/1 HTTP/1.1\r\nHost: " + self + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_EQ(json(res).value("error", ""), "loop_refused");
}

TEST_F(ProxyTest, AuditFailureRefusesWith503AndForwardsNothing) {
  audit_->fail_ = true;
  auto s = connect();
  auto res =
      exchange(s, "GET http://" + up() + "/allowed/1 HTTP/1.1\r\nHost: " + up() + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(json(res).value("error", ""), "audit_unavailable");
  EXPECT_TRUE(upstream_.seen().empty());
}

TEST_F(ProxyTest, ConnectToPortNoMatcherNamesIsRefused) {
  auto s = connect();
  auto res = exchange(s, "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n");
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_EQ(json(res).value("error", ""), "connect_port_refused");
}

TEST_F(ProxyTest, AdminHealthAndStatus) {
  tcp::socket s(client_ioc_);
  s.connect(server_->admin_endpoint());
  set_timeouts(s);
  auto res = exchange(s, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "ok");
  res = exchange(s, "GET /v1/status HTTP/1.1\r\nHost: admin\r\n\r\n");
  EXPECT_EQ(res.result_int(), 200u);
  auto j = json(res);
  EXPECT_EQ(j.value("mode", ""), "normal");
  EXPECT_EQ(j.value("active_runbook", ""), "rb");
  res = exchange(s, "GET /readyz HTTP/1.1\r\nHost: admin\r\n\r\n");
  EXPECT_EQ(res.result_int(), 503u); // no CA in this fixture
  EXPECT_TRUE(json(res)["failing"].contains("ca"));
}

class InterceptTest : public ProxyTest {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("runwarden-proxy-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(upstream_.port()));
    std::filesystem::remove_all(dir_);
    certs::Authority::create(dir_, "runwarden test CA");
    start(certs::Authority::load(dir_ / "ca.pem", dir_ / "ca.key"));
  }
  void TearDown() override {
    stop();
    std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
};

TEST_F(InterceptTest, ConnectThenTlsWithLeafVerifiedByCaAndInnerRequestJudged) {
  auto s = connect();
  std::string connect_req = "CONNECT " + up() + " HTTP/1.1\r\nHost: " + up() + "\r\n\r\n";
  net::write(s, net::buffer(connect_req));
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> head;
  head.skip(true); // a 2xx to CONNECT has no body
  boost::system::error_code ec;
  http::read_header(s, buffer, head, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(head.get().result_int(), 200u);
  ASSERT_EQ(buffer.size(), 0u);

  net::ssl::context tls(net::ssl::context::tls_client);
  tls.load_verify_file((dir_ / "ca.pem").string());
  tls.set_verify_mode(net::ssl::verify_peer);
  net::ssl::stream<tcp::socket&> stream(s, tls);
  stream.set_verify_callback(net::ssl::host_name_verification("127.0.0.1"));
  stream.handshake(net::ssl::stream_base::client, ec);
  ASSERT_FALSE(ec) << ec.message();

  std::string inner = "GET /denied/x HTTP/1.1\r\nHost: " + up() + "\r\n\r\n";
  net::write(stream, net::buffer(inner));
  http::response<http::string_body> res;
  http::read(stream, buffer, res, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_EQ(json(res).value("error", ""), "denied_by_runbook");

  std::string wrong_host = "GET /allowed/1 HTTP/1.1\r\nHost: other.example\r\n\r\n";
  net::write(stream, net::buffer(wrong_host));
  http::response<http::string_body> res2;
  http::read(stream, buffer, res2, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res2.result_int(), 400u);
  EXPECT_EQ(json(res2).value("error", ""), "host_mismatch");
  EXPECT_TRUE(upstream_.seen().empty());
}

} // namespace
} // namespace runwarden::proxy
