// The transparent listener's first-bytes phase under limits (loopback only): connections
// are counted from accept and refused beyond limits.max_connections like explicit ones, the
// first bytes get one header_timeout in all (a trickle does not extend it), and a
// connection handed to the request machinery is counted exactly once. A max_connections
// lowered by a reload applies to the listener's next accept.
//
// Nothing is REDIRECTed here, so the sessions that must get past the original-destination
// lookup are started with a known destination (start_transparent_session's overload) on a
// socket accepted by the test; the refusals go through the server's own listener.

#include "proxy/transparent_session.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <boost/asio/post.hpp>
#include <gtest/gtest.h>
#include <sys/socket.h>

namespace runwarden::proxy {
namespace {

using namespace testing;
namespace net = boost::asio;
using tcp = net::ip::tcp;

class TransparentLimitsTest : public ::testing::Test {
protected:
  void start(std::size_t max_connections, std::chrono::milliseconds header_timeout) {
    auto cfg = ops_config(upstream_.port(), dir_);
    cfg->approvals.operator_tokens_file.clear();
    cfg->listen.transparent = {{"127.0.0.1", 0}};
    cfg->limits.max_connections = max_connections;
    cfg->limits.header_timeout = header_timeout;
    audit_ = std::make_shared<MemoryAudit>();
    cfg_ = cfg;
    server_ = std::make_unique<OpsServer>(cfg, audit_);
  }
  ProxyContext& ctx() { return *server_->server().context(); }

  /// A client connection whose server side runs the transparent session as if it had been
  /// redirected from `original`.
  tcp::socket connect_known(const tcp::endpoint& original) {
    tcp::acceptor acceptor(server_->ioc(), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket client(client_ioc_);
    client.connect(acceptor.local_endpoint());
    set_timeouts(client);
    tcp::socket accepted(server_->ioc());
    acceptor.accept(accepted);
    net::post(server_->ioc(),
              [ctx = server_->server().context(), s = std::move(accepted), original]() mutable {
                start_transparent_session(std::move(ctx), std::move(s), original);
              });
    return client;
  }
  tcp::endpoint upstream_endpoint() const {
    return {net::ip::make_address("127.0.0.1"), upstream_.port()};
  }

  /// Waits (bounded: 5 s) until open_connections is `n`; returns the last value seen.
  std::uint64_t wait_open(std::uint64_t n) {
    std::uint64_t v = ctx().open_connections.load();
    for (int i = 0; i < 500 && v != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      v = ctx().open_connections.load();
    }
    return v;
  }

  /// Sends `raw` on a fresh connection to `where` and reads until the server closes.
  std::string poke(const tcp::endpoint& where, const std::string& raw) {
    tcp::socket s(client_ioc_);
    s.connect(where);
    set_timeouts(s);
    net::write(s, net::buffer(raw));
    std::string answer;
    std::array<char, 4096> buf{};
    boost::system::error_code ec;
    for (int i = 0; i < 64 && !ec; ++i) { // bounded: until close or error
      std::size_t n = s.read_some(net::buffer(buf), ec);
      answer.append(buf.data(), n);
    }
    return answer;
  }

  /// True once the peer closed (EOF or reset), without blocking.
  static bool peer_closed(tcp::socket& s) {
    char c = 0;
    const auto n = ::recv(s.native_handle(), &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }

  HelloUpstream upstream_;
  TempDir dir_;
  net::io_context client_ioc_;
  std::shared_ptr<MemoryAudit> audit_;
  std::shared_ptr<const config::Config> cfg_; // as started
  std::unique_ptr<OpsServer> server_;
};

TEST_F(TransparentLimitsTest, TrickledFirstBytesAreCutOffAtOneDeadlineForTheWholeRead) {
  start(100, std::chrono::milliseconds(400));
  tcp::socket client = connect_known(upstream_endpoint());
  const std::string head =
      "GET /allowed/x HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(upstream_.port()) +
      "\r\nX-Slow: ";
  net::write(client, net::buffer(head));
  // One byte every 50 ms, each well inside header_timeout: re-armed per read, the deadline
  // would never fire while the trickle lasts (120 bytes, 6 s).
  int sent = 0;
  bool closed = false;
  for (; sent < 120 && !closed; ++sent) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    closed = peer_closed(client);
    if (!closed) {
      const char a = 'a';
      closed = ::send(client.native_handle(), &a, 1, MSG_NOSIGNAL) != 1;
    }
  }
  EXPECT_TRUE(closed) << "still open after the whole trickle";
  EXPECT_LT(sent, 120);
  EXPECT_EQ(wait_open(0), 0u);
  EXPECT_EQ(upstream_.requests(), 0);
}

TEST_F(TransparentLimitsTest, FirstBytesPhaseCountsAndTheListenerRefusesOverTheLimit) {
  start(2, std::chrono::seconds(30));
  // Two connections still waiting for their first bytes fill the limit.
  tcp::socket a = connect_known(upstream_endpoint());
  tcp::socket b = connect_known(upstream_endpoint());
  ASSERT_EQ(wait_open(2), 2u);

  const std::string get = "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n";
  std::string answer = poke(server_->server().transparent_endpoint(), get);
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"overloaded\""), std::string::npos) << answer;
  EXPECT_NE(answer.find("\r\nRetry-After: 1\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("limits.max_connections"), std::string::npos) << answer;
  // The explicit listener shares the count.
  answer = poke(server_->server().proxy_endpoint(), get);
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_EQ(ctx().rejected_connections.load(), 2u);
  EXPECT_EQ(wait_open(2), 2u); // the refused ones are gone again

  // Once the waiting clients go, their sessions end and free the room.
  a.close();
  b.close();
  ASSERT_EQ(wait_open(0), 0u);
  answer = poke(server_->server().transparent_endpoint(), get);
  EXPECT_EQ(answer.find("503"), std::string::npos) << answer; // refused for what it is
  EXPECT_EQ(ctx().rejected_connections.load(), 2u);
}

// What a valid reload swaps in (Reloader::reload): the listener reads max_connections from
// the live config at each accept, so a lowered one refuses the next connection over it.
TEST_F(TransparentLimitsTest, MaxConnectionsLoweredByAReloadAppliesToTheNextAccept) {
  start(100, std::chrono::seconds(30));
  tcp::socket a = connect_known(upstream_endpoint());
  tcp::socket b = connect_known(upstream_endpoint());
  ASSERT_EQ(wait_open(2), 2u);
  const std::string get = "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n";
  std::string answer = poke(server_->server().transparent_endpoint(), get);
  EXPECT_EQ(answer.find("503"), std::string::npos) << answer;

  auto lowered = std::make_shared<config::Config>(*cfg_);
  lowered->limits.max_connections = 1;
  ctx().runtime->swap_config(lowered);
  ASSERT_EQ(wait_open(2), 2u);
  answer = poke(server_->server().transparent_endpoint(), get);
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"overloaded\""), std::string::npos) << answer;
  EXPECT_EQ(ctx().rejected_connections.load(), 1u);
  EXPECT_FALSE(peer_closed(a)); // the two already open, over the new cap, stay
  EXPECT_FALSE(peer_closed(b));
}

TEST_F(TransparentLimitsTest, HandedOverConnectionIsCountedOnce) {
  start(100, std::chrono::seconds(30));
  tcp::socket client = connect_known(upstream_endpoint());
  const std::string authority = "127.0.0.1:" + std::to_string(upstream_.port());
  net::write(client, net::buffer("GET /allowed/x HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"));
  boost::beast::flat_buffer buffer;
  boost::beast::http::response<boost::beast::http::string_body> res;
  boost::system::error_code ec;
  boost::beast::http::read(client, buffer, res, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(upstream_.requests(), 1);
  // Kept alive: one connection, counted once (not by both phases, not by neither).
  EXPECT_EQ(wait_open(1), 1u);
  client.close();
  EXPECT_EQ(wait_open(0), 0u);
}

} // namespace
} // namespace runwarden::proxy
