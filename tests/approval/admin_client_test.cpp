#include "approval/admin_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace runwarden::approval {
namespace {

// Accepts one loopback connection on port 0, records the request, sends a canned answer.
class OneShotServer {
public:
  explicit OneShotServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~OneShotServer() {
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  const std::string& request() const { return request_; } // valid after the client returns

private:
  void serve() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) {
      return;
    }
    const int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) {
      return;
    }
    char buf[4096];
    // Read until the head and the announced body have arrived (bounded).
    for (int i = 0; i < 100; ++i) {
      pollfd q{c, POLLIN, 0};
      if (::poll(&q, 1, 5000) != 1) {
        break;
      }
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) {
        break;
      }
      request_.append(buf, static_cast<std::size_t>(n));
      const auto head_end = request_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const auto cl = request_.find("Content-Length: ");
        const std::size_t want = cl == std::string::npos ? 0 : std::stoul(request_.substr(cl + 16));
        if (request_.size() >= head_end + 4 + want) {
          break;
        }
      }
    }
    if (!answer_.empty()) {
      ::send(c, answer_.data(), answer_.size(), MSG_NOSIGNAL);
    } else {
      pollfd q{c, POLLIN, 0};
      ::poll(&q, 1, 2000); // say nothing until the client gives up
    }
    ::close(c);
  }
  std::string answer_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::string request_;
  std::thread thread_;
};

AdminUrl local(std::uint16_t port) {
  return AdminUrl{"127.0.0.1", port, ""};
}

TEST(AdminClient, SendsBearerAndJsonAndReadsContentLength) {
  OneShotServer server("HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
                       "Content-Length: 20\r\n\r\n{\"error\":\"conflict\"}");
  AdminClient client(local(server.port()), "tok-123");
  HttpResponse resp;
  std::string error;
  ASSERT_TRUE(client.request("POST", "/v1/approvals/apr_1/deny", R"({"reason":"no"})", resp, error))
      << error;
  EXPECT_EQ(resp.status, 409);
  EXPECT_EQ(resp.content_type, "application/json");
  EXPECT_EQ(resp.body, R"({"error":"conflict"})");
  const std::string& req = server.request();
  EXPECT_EQ(req.rfind("POST /v1/approvals/apr_1/deny HTTP/1.1\r\n", 0), 0u);
  EXPECT_NE(req.find("\r\nAuthorization: Bearer tok-123\r\n"), std::string::npos);
  EXPECT_NE(req.find("\r\nContent-Length: 15\r\n"), std::string::npos);
  EXPECT_EQ(req.substr(req.size() - 15), R"({"reason":"no"})");
}

TEST(AdminClient, ReadsChunkedBodies) {
  OneShotServer server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\n[1,2,\r\n2;ext=1\r\n3]\r\n0\r\n\r\n");
  AdminClient client(local(server.port()), "");
  HttpResponse resp;
  std::string error;
  ASSERT_TRUE(client.request("GET", "/v1/approvals?state=pending", "", resp, error)) << error;
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, "[1,2,3]");
  EXPECT_EQ(server.request().find("Authorization"), std::string::npos);
}

TEST(AdminClient, TruncatedAnswerIsAnError) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort");
  AdminClient client(local(server.port()), "");
  HttpResponse resp;
  std::string error;
  EXPECT_FALSE(client.request("GET", "/v1/status", "", resp, error));
  EXPECT_EQ(error, "truncated response body");
}

TEST(AdminClient, SilentServerHitsTheDeadline) {
  OneShotServer server("");
  // 1 s: the deadline covers connect and send too, which a slow run must finish first.
  AdminClient client(local(server.port()), "", std::chrono::seconds(1));
  HttpResponse resp;
  std::string error;
  EXPECT_FALSE(client.request("GET", "/v1/status", "", resp, error));
  EXPECT_EQ(error, "timed out waiting for the admin API");
}

TEST(AdminClient, ParsesAdminUrls) {
  std::string error;
  auto u = parse_admin_url("http://127.0.0.1:15000", &error);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 15000);
  u = parse_admin_url("http://[::1]:9/base/", &error);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 9);
  EXPECT_EQ(u->base, "/base");
  u = parse_admin_url("http://localhost", &error);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 15000);
  for (const char* bad :
       {"https://127.0.0.1", "http://user:pw@127.0.0.1", "http://:80", "http://h:0",
        "http://h:70000", "http://h:", "http://[::1", "127.0.0.1"}) {
    EXPECT_FALSE(parse_admin_url(bad, &error)) << bad;
  }
}

TEST(AdminClient, PathSegmentsCannotChangeThePath) {
  EXPECT_EQ(encode_path_segment("apr_0f"), "apr_0f");
  EXPECT_EQ(encode_path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
  EXPECT_EQ(encode_path_segment(".."), "%2E%2E");
  EXPECT_EQ(encode_path_segment("."), "%2E");
}

} // namespace
} // namespace runwarden::approval
