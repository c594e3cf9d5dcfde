// listen.transparent as a list: one acceptor per endpoint, IPv4 and IPv6 loopback, each
// serving the transparent session (a direct connection, not redirected, is refused and
// audited, the client written as an unambiguous endpoint: IPv6 bracketed).

#include "audit/audit_log.hpp"
#include "proxy/server.hpp"
#include "proxy/transparent_session.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <gtest/gtest.h>
#include <mutex>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

class RecordingAudit final : public audit::AuditLog {
public:
  void record(const audit::Exchange& exchange, bool, audit::Completion done) override {
    {
      std::lock_guard lock(mutex_);
      records_.push_back(exchange);
    }
    done({});
  }
  void event(std::string_view, const nlohmann::json&, audit::Completion done) override { done({}); }
  bool healthy() const override { return true; }
  std::string failure() const override { return {}; }
  std::error_code sync() override { return {}; }

  /// The records so far, after waiting (bounded: 5 s) until there are at least `n`.
  std::vector<audit::Exchange> wait_for(std::size_t n) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard lock(mutex_);
        if (records_.size() >= n) {
          return records_;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(mutex_);
    return records_;
  }

private:
  std::mutex mutex_;
  std::vector<audit::Exchange> records_;
};

std::shared_ptr<config::Config> make_config(std::vector<config::Endpoint> transparent) {
  auto cfg = std::make_shared<config::Config>();
  cfg->listen.proxy = {"127.0.0.1", 0};
  cfg->listen.admin = {"127.0.0.1", 0};
  cfg->listen.transparent = std::move(transparent);
  cfg->agent_id = "test-agent";
  cfg->active_runbook = "rb";
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = "rb";
  cfg->catalogue = std::make_shared<policy::Catalogue>();
  cfg->runbooks = {rb};
  cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
  return cfg;
}

class TransparentListenerTest : public ::testing::Test {
protected:
  void start(std::vector<config::Endpoint> transparent) {
    audit_ = std::make_shared<RecordingAudit>();
    server_ = std::make_unique<Server>(
        ioc_, ServerOptions{make_config(std::move(transparent)), audit_, nullptr, nullptr});
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      ioc_.stop();
      thread_.join();
    }
    server_.reset();
  }

  /// Connects to `where`, sends a plain HTTP request and reads until the server closes;
  /// returns the client's own endpoint (what the server sees as the peer).
  tcp::endpoint poke(const tcp::endpoint& where, std::string& answer) {
    tcp::socket s(client_ioc_);
    s.connect(where);
    timeval tv{5, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    net::write(s, net::buffer(std::string("GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")));
    std::array<char, 4096> buf{};
    boost::system::error_code ec;
    for (int i = 0; i < 64 && !ec; ++i) { // bounded: until close or error
      std::size_t n = s.read_some(net::buffer(buf), ec);
      answer.append(buf.data(), n);
    }
    return s.local_endpoint();
  }

  net::io_context ioc_;
  net::io_context client_ioc_;
  std::shared_ptr<RecordingAudit> audit_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

TEST_F(TransparentListenerTest, NoTransparentListenerByDefault) {
  start({});
  EXPECT_TRUE(server_->transparent_endpoints().empty());
  EXPECT_EQ(server_->transparent_endpoint().port(), 0);
}

TEST_F(TransparentListenerTest, OneAcceptorPerEndpointForBothFamilies) {
  start({{"127.0.0.1", 0}, {"::1", 0}});
  auto bound = server_->transparent_endpoints();
  ASSERT_EQ(bound.size(), 2u);
  EXPECT_EQ(bound[0].address(), net::ip::make_address("127.0.0.1"));
  EXPECT_EQ(bound[1].address(), net::ip::make_address("::1"));
  EXPECT_NE(bound[0].port(), 0);
  EXPECT_NE(bound[1].port(), 0);
  EXPECT_EQ(server_->transparent_endpoint(), bound[0]);

  // Neither connection was redirected: each is refused (no original destination, or the
  // original destination is the listener itself) and never forwarded.
  std::string answer4;
  std::string answer6;
  auto peer4 = poke(bound[0], answer4);
  auto peer6 = poke(bound[1], answer6);
  auto records = audit_->wait_for(2);
  ASSERT_EQ(records.size(), 2u);
  for (const auto& r : records) {
    EXPECT_EQ(r.outcome, "refused");
    EXPECT_TRUE(r.code == "no_original_destination" || r.code == "loop_refused") << r.code;
  }
  EXPECT_EQ(answer4.find("200 OK"), std::string::npos);
  EXPECT_EQ(answer6.find("200 OK"), std::string::npos);
  std::vector<std::string> clients{records[0].client, records[1].client};
  std::sort(clients.begin(), clients.end());
  std::vector<std::string> want{endpoint_text(peer4), endpoint_text(peer6)};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(clients, want);
  EXPECT_EQ(endpoint_text(peer6).rfind("[::1]:", 0), 0u) << endpoint_text(peer6);
}

} // namespace
} // namespace runwarden::proxy
