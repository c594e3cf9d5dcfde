// The admin listener's HTTP over real sockets: its connection cap (the port is reachable by
// anything in the pod), 405 with Allow, HEAD, 413, strict bodies (unknown and duplicate keys
// refused), and a kill that says whether runwarden had seen the run.

#include "tests/proxy/ops_fixture.hpp"
#include "tests/proxy/stderr_capture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace runwarden::proxy {
namespace {

using namespace testing;

constexpr const char* kToken = "s3cret-operator-token";

class AdminHttpTest : public ::testing::Test {
protected:
  void SetUp() override {
    write_file(dir_.file("tokens"), token_line("alice", kToken));
    audit_ = std::make_shared<MemoryAudit>();
    server_ = std::make_unique<OpsServer>(ops_config(upstream_.port(), dir_), audit_);
  }

  boost::beast::http::response<boost::beast::http::string_body>
  admin(const std::string& method, const std::string& target, const std::string& body = "{}") {
    return raw_exchange(server_->server().admin_endpoint(),
                        admin_request(method, target, kToken, body));
  }

  HelloUpstream upstream_;
  TempDir dir_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
};

TEST_F(AdminHttpTest, WrongMethodIs405WithAllowAndHeadAnswersLikeGet) {
  auto res = admin("DELETE", "/v1/status");
  EXPECT_EQ(res.result_int(), 405) << res.body();
  EXPECT_EQ(res[boost::beast::http::field::allow], "GET, HEAD");
  // A prefix route (POST /v1/runs/{run}/kill) with another method: 405, not 404.
  res = admin("GET", "/v1/runs/r1/kill");
  EXPECT_EQ(res.result_int(), 405) << res.body();
  EXPECT_EQ(res[boost::beast::http::field::allow], "POST");
  EXPECT_EQ(admin("GET", "/v1/nothing").result_int(), 404);

  // HEAD: the GET's status and Content-Length, no body (the parser is told it is a HEAD).
  const auto get = admin("GET", "/healthz", "");
  ASSERT_EQ(get.result_int(), 200);
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect(server_->server().admin_endpoint());
  set_timeouts(s);
  boost::asio::write(s, boost::asio::buffer(admin_request("HEAD", "/healthz", "", "")));
  boost::beast::flat_buffer buffer;
  boost::beast::http::response_parser<boost::beast::http::string_body> parser;
  parser.skip(true);
  boost::system::error_code ec;
  boost::beast::http::read(s, buffer, parser, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(parser.get().result_int(), 200);
  EXPECT_EQ(parser.get()[boost::beast::http::field::content_length],
            std::to_string(get.body().size()));
  EXPECT_TRUE(parser.get().body().empty());
}

TEST_F(AdminHttpTest, OversizeBodyIs413AndStrictBodiesRefuseUnknownAndDuplicateKeys) {
  // The head alone: the length is refused before any body is read.
  auto res = raw_exchange(server_->server().admin_endpoint(),
                          "POST /v1/mode HTTP/1.1\r\nHost: admin\r\nContent-Length: " +
                              std::to_string(1024 * 1024 + 1) + "\r\n\r\n");
  EXPECT_EQ(res.result_int(), 413) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "body_too_large");

  res = admin("POST", "/v1/mode", R"({"mode":"paused","mode":"normal"})");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  EXPECT_NE(body_json(res).value("reason", "").find("duplicate"), std::string::npos) << res.body();
  res = admin("POST", "/v1/mode", R"({"mode":"paused","type":"approval.requested"})");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  EXPECT_NE(body_json(res).value("reason", "").find("unknown key \"type\""), std::string::npos)
      << res.body();
  res = admin("POST", "/v1/mode", R"({"mode":7})");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  // Nothing above changed the mode.
  EXPECT_EQ(body_json(admin("GET", "/v1/status", "")).value("mode", ""), "normal");
  EXPECT_EQ(admin("POST", "/v1/mode", R"({"mode":"read_only"})").result_int(), 200);
  EXPECT_EQ(body_json(admin("GET", "/v1/status", "")).value("mode", ""), "read_only");

  res = admin("POST", "/v1/runs/r1/kill", R"({"reason":")" + std::string(4097, 'x') + R"("})");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  res = admin("POST", "/v1/runs/r1/kill", R"({"why":"typo"})");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  const auto events = audit_->events();
  EXPECT_TRUE(std::none_of(events.begin(), events.end(),
                           [](const auto& e) { return e.first == "run_killed"; }));
}

// A mistyped run id must not look like the running run was stopped: the answer says whether
// runwarden had seen it (the run is killed all the same: its first call may be to come).
TEST_F(AdminHttpTest, KillSaysWhetherTheRunWasKnownAndRefusesIdsNoCallCanCarry) {
  ASSERT_EQ(raw_exchange(server_->server().proxy_endpoint(),
                         proxy_get(upstream_.port(), "/allowed/x", "run-seen"))
                .result_int(),
            200);
  auto res = admin("POST", "/v1/runs/run-seen/kill", R"({"reason":"incident 42"})");
  ASSERT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(body_json(res).value("known", false), true);
  res = admin("POST", "/v1/runs/run-sene/kill", "");
  ASSERT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(body_json(res).value("known", true), false);
  EXPECT_EQ(body_json(res).value("killed", false), true);
  res = admin("POST", "/v1/runs/" + std::string(129, 'r') + "/kill");
  EXPECT_EQ(res.result_int(), 400) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "bad_run_id");
  bool reason_recorded = false;
  for (const auto& [type, fields] : audit_->events()) {
    reason_recorded |= type == "run_killed" && fields.value("run", "") == "run-seen" &&
                       fields.value("reason", "") == "incident 42";
  }
  EXPECT_TRUE(reason_recorded);
}

// Idle admin connections beyond the cap (64) are answered 503 admin_busy at once instead of
// holding descriptors the proxy needs; once they close, the admin API answers again.
TEST_F(AdminHttpTest, ConnectionsOverTheCapAreRefusedAndTheCapFreesUp) {
  boost::asio::io_context ioc;
  std::vector<boost::asio::ip::tcp::socket> idle;
  for (int i = 0; i < 64; ++i) {
    idle.emplace_back(ioc).connect(server_->server().admin_endpoint());
  }
  // Accepted in order on one thread: the next connection is the 65th.
  boost::beast::http::response<boost::beast::http::string_body> res;
  for (int tries = 0; tries < 50; ++tries) {
    res = admin("GET", "/v1/status", "");
    if (res.result_int() == 503) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // the 64 not all accepted yet
  }
  EXPECT_EQ(res.result_int(), 503) << res.body();
  EXPECT_EQ(body_json(res).value("error", ""), "admin_busy");
  for (auto& s : idle) {
    s.close();
  }
  idle.clear();
  for (int tries = 0; tries < 100; ++tries) {
    res = admin("GET", "/v1/status", "");
    if (res.result_int() == 200) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(res.result_int(), 200) << res.body();
  // The proxy served throughout.
  EXPECT_EQ(raw_exchange(server_->server().proxy_endpoint(),
                         proxy_get(upstream_.port(), "/allowed/x", "r"))
                .result_int(),
            200);
}

// A failed accept (EMFILE: out of descriptors) leaves the connection queued, so accepting
// again at once fails again: it was a busy loop (a core, ~140 MB of accept_failed lines a
// second). Now each listener waits 100 ms between attempts and logs once a second, and
// accepts again once it can. The failure is made by putting /dev/null under the admin
// listener's descriptor (accept: ENOTSOCK), not by exhausting descriptors: the sanitizers
// need some of their own (UBSan's vptr check opens a pipe).
TEST_F(AdminHttpTest, FailingAcceptBacksOffAndRecovers) {
  const auto admin_ep = server_->server().admin_endpoint(); // unreadable while replaced
  const auto admin_port = admin_ep.port();
  int listen_fd = -1;
  for (int fd = 0; fd < 4096 && listen_fd < 0; ++fd) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int accepting = 0;
    socklen_t alen = sizeof accepting;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
        addr.ss_family == AF_INET &&
        ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port) == admin_port &&
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &alen) == 0 && accepting != 0) {
      listen_fd = fd;
    }
  }
  ASSERT_GE(listen_fd, 0);
  const int saved = ::dup(listen_fd); // keeps the listening socket (and its epoll entry)
  const int devnull = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(saved, 0);
  ASSERT_GE(devnull, 0);
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket client(ioc);
  std::string text;
  {
    StderrCapture capture("admin_http_accept");
    ASSERT_EQ(::dup2(devnull, listen_fd), listen_fd);
    client.connect(admin_ep); // queued; wakes the pending accept
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    ASSERT_EQ(::dup2(saved, listen_fd), listen_fd); // the listener is back
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    flush_log();
    text = capture.text();
  }
  ::close(saved);
  ::close(devnull);
  std::size_t failures = 0;
  for (std::size_t at = text.find("accept_failed"); at != std::string::npos;
       at = text.find("accept_failed", at + 1)) {
    ++failures;
  }
  EXPECT_GE(failures, 1u) << "no accept failed";
  EXPECT_LE(failures, 2u) << text.substr(0, 2000); // once a second, not per attempt
  EXPECT_NE(text.find("retry_in_ms=100"), std::string::npos) << text.substr(0, 2000);
  // The queued connection was taken once the listener was back, and the API answers.
  set_timeouts(client);
  boost::asio::write(client, boost::asio::buffer(admin_request("GET", "/healthz", "", "")));
  boost::beast::flat_buffer buffer;
  boost::beast::http::response<boost::beast::http::string_body> res;
  boost::system::error_code ec;
  boost::beast::http::read(client, buffer, res, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 200) << res.body();
}

} // namespace
} // namespace runwarden::proxy
