// The per-I/O-thread upstream keep-alive pool: what is shared between agent connections of one
// thread, what never is, and what is never returned. The proxy runs in-process on port 0 with
// one I/O thread; the upstream is a real loopback server that counts its accepted connections.

#include "certs/authority.hpp"
#include "proxy/server.hpp"
#include "proxy/upstream_pool.hpp"

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
#include <memory>
#include <mutex>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>
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

/// Counts accepted connections. GET /allowed/close answers "Connection: close" and closes;
/// GET /allowed/cut promises 100 bytes, sends 5 and closes; anything else answers 200 "hello"
/// and keeps the connection.
class CountingUpstream {
public:
  explicit CountingUpstream(std::shared_ptr<const certs::Leaf> leaf = nullptr)
      : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    if (leaf) {
      tls_ = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
      SSL_CTX_use_certificate(tls_->native_handle(), leaf->cert);
      SSL_CTX_use_PrivateKey(tls_->native_handle(), leaf->key);
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~CountingUpstream() {
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
  int requests() const { return requests_.load(); }

private:
  void serve() {
    for (int i = 0; i < 32 && !stop_; ++i) {
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
    if (!tls_) {
      serve_on(socket);
      return;
    }
    net::ssl::stream<tcp::socket&> stream(socket, *tls_);
    boost::system::error_code ec;
    stream.handshake(net::ssl::stream_base::server, ec);
    if (!ec) {
      serve_on(stream);
    }
  }
  template <class Stream> void serve_on(Stream& stream) {
    beast::flat_buffer buffer;
    for (int i = 0; i < 32; ++i) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(stream, buffer, req, ec);
      if (ec) {
        return;
      }
      requests_.fetch_add(1);
      if (req.target() == "/allowed/cut") {
        net::write(
            stream,
            net::buffer(std::string_view("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")),
            ec);
        return;
      }
      bool close = req.target() == "/allowed/close";
      http::response<http::string_body> res{http::status::ok, 11};
      res.body() = "hello";
      res.keep_alive(!close);
      res.prepare_payload();
      http::write(stream, res, ec);
      if (ec || close) {
        return;
      }
    }
  }

  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::unique_ptr<net::ssl::context> tls_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
};

class NullAudit final : public audit::AuditLog {
public:
  void record(const audit::Exchange&, bool, audit::Completion done) override { done({}); }
  void event(std::string_view, const nlohmann::json&, audit::Completion done) override { done({}); }
  bool healthy() const override { return true; }
  std::string failure() const override { return ""; }
  std::error_code sync() override { return {}; }
};

/// GET /allowed/** and CONNECT to 127.0.0.1 or localhost on the given ports.
std::shared_ptr<config::Config> make_config(std::vector<std::uint16_t> ports,
                                            std::string upstream_trust) {
  auto cfg = std::make_shared<config::Config>();
  cfg->tls.upstream_trust = std::move(upstream_trust);
  cfg->listen.proxy = {"127.0.0.1", 0};
  cfg->listen.admin = {"127.0.0.1", 0};
  cfg->agent_id = "test-agent";
  cfg->active_runbook = "rb";
  auto catalogue = std::make_shared<policy::Catalogue>();
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = "rb";
  rb->sha256 = "abc";
  auto add = [&](std::string name, std::string method, std::string path) {
    policy::Action a;
    a.name = name;
    policy::Matcher m;
    std::string err;
    m.methods = {std::move(method)};
    m.hosts = {*policy::HostPattern::parse("127.0.0.1", &err),
               *policy::HostPattern::parse("localhost", &err)};
    m.path = policy::Glob::compile(path, policy::Glob::Kind::path, &err);
    m.ports = {ports.begin(), ports.end()};
    a.matchers.push_back(std::move(m));
    catalogue->actions.emplace(name, std::move(a));
    policy::RunbookAction ra;
    ra.name = name;
    ra.cls = policy::ActionClass::allowed;
    rb->actions.emplace(name, ra);
  };
  add("read_things", "GET", "/allowed/**");
  add("tunnel_upstream", "CONNECT", "/");
  cfg->catalogue = catalogue;
  cfg->runbooks = {rb};
  cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
  return cfg;
}

class PoolTest : public ::testing::Test {
protected:
  void TearDown() override {
    if (thread_.joinable()) {
      ioc_.stop();
      thread_.join();
    }
    server_.reset();
    if (!dir_.empty()) {
      std::filesystem::remove_all(dir_);
    }
  }
  void start(std::vector<std::uint16_t> ports, std::shared_ptr<certs::Authority> authority = {},
             std::string trust = "system") {
    ServerOptions options{make_config(std::move(ports), std::move(trust)),
                          std::make_shared<NullAudit>(), std::move(authority), nullptr};
    options.io_threads = 1; // every agent connection on the same I/O thread
    server_ = std::make_unique<Server>(ioc_, std::move(options));
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }

  /// One request on a new agent connection (absolute-form), answered and then closed.
  http::response<http::string_body> get(const std::string& host, std::uint16_t port,
                                        const std::string& path) {
    tcp::socket s(client_ioc_);
    s.connect(server_->proxy_endpoint());
    set_timeouts(s);
    std::string authority = host + ":" + std::to_string(port);
    net::write(s, net::buffer("GET http://" + authority + path + " HTTP/1.1\r\nHost: " + authority +
                              "\r\n\r\n"));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(s, buffer, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }

  std::shared_ptr<certs::Authority> make_authority() {
    dir_ = std::filesystem::temp_directory_path() /
           ("runwarden-pool-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    certs::Authority::create(dir_, "runwarden test CA");
    return certs::Authority::load(dir_ / "ca.pem", dir_ / "ca.key");
  }

  /// One intercepted request on a new agent connection: CONNECT, TLS verified by the test
  /// CA, one inner request.
  http::response<http::string_body> intercepted_get(std::uint16_t port, const std::string& path) {
    tcp::socket s(client_ioc_);
    s.connect(server_->proxy_endpoint());
    set_timeouts(s);
    std::string up = "127.0.0.1:" + std::to_string(port);
    net::write(s, net::buffer("CONNECT " + up + " HTTP/1.1\r\nHost: " + up + "\r\n\r\n"));
    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> head;
    head.skip(true);
    boost::system::error_code ec;
    http::read_header(s, buffer, head, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(head.get().result_int(), 200u);
    net::ssl::context client_tls{net::ssl::context::tls_client};
    client_tls.load_verify_file((dir_ / "ca.pem").string());
    client_tls.set_verify_mode(net::ssl::verify_peer);
    net::ssl::stream<tcp::socket&> tls(s, client_tls);
    tls.set_verify_callback(net::ssl::host_name_verification("127.0.0.1"));
    tls.handshake(net::ssl::stream_base::client, ec);
    EXPECT_FALSE(ec) << ec.message();
    net::write(tls, net::buffer("GET " + path + " HTTP/1.1\r\nHost: " + up + "\r\n\r\n"), ec);
    http::response<http::string_body> res;
    http::read(tls, buffer, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }

  net::io_context ioc_;
  net::io_context client_ioc_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::filesystem::path dir_;
};

TEST_F(PoolTest, TwoAgentConnectionsInTurnShareOneUpstreamConnection) {
  CountingUpstream upstream;
  start({upstream.port()});
  EXPECT_EQ(get("127.0.0.1", upstream.port(), "/allowed/a").body(), "hello");
  EXPECT_EQ(get("127.0.0.1", upstream.port(), "/allowed/b").body(), "hello");
  EXPECT_EQ(upstream.requests(), 2);
  EXPECT_EQ(upstream.accepted(), 1);
}

TEST_F(PoolTest, TwoInterceptedConnectionsShareOneVerifiedUpstreamTlsConnection) {
  auto authority = make_authority();
  std::string err;
  CountingUpstream upstream(authority->leaf("127.0.0.1", &err));
  start({upstream.port()}, authority, (dir_ / "ca.pem").string());
  EXPECT_EQ(intercepted_get(upstream.port(), "/allowed/a").body(), "hello");
  EXPECT_EQ(intercepted_get(upstream.port(), "/allowed/b").body(), "hello");
  EXPECT_EQ(upstream.requests(), 2);
  EXPECT_EQ(upstream.accepted(), 1);
}

TEST_F(PoolTest, DifferentHostsOrPortsNeverShare) {
  CountingUpstream first;
  CountingUpstream second;
  start({first.port(), second.port()});
  EXPECT_EQ(get("127.0.0.1", first.port(), "/allowed/a").result_int(), 200u);
  // Same address, another host name: another key, so another connection.
  EXPECT_EQ(get("localhost", first.port(), "/allowed/a").result_int(), 200u);
  EXPECT_EQ(get("127.0.0.1", second.port(), "/allowed/a").result_int(), 200u);
  EXPECT_EQ(first.accepted(), 2);
  EXPECT_EQ(second.accepted(), 1);
  // Each key still reuses its own connection.
  EXPECT_EQ(get("localhost", first.port(), "/allowed/b").result_int(), 200u);
  EXPECT_EQ(get("127.0.0.1", second.port(), "/allowed/b").result_int(), 200u);
  EXPECT_EQ(first.accepted(), 2);
  EXPECT_EQ(second.accepted(), 1);
}

TEST_F(PoolTest, UpstreamThatSaidCloseIsNotReused) {
  CountingUpstream upstream;
  start({upstream.port()});
  EXPECT_EQ(get("127.0.0.1", upstream.port(), "/allowed/close").body(), "hello");
  EXPECT_EQ(get("127.0.0.1", upstream.port(), "/allowed/a").body(), "hello");
  EXPECT_EQ(upstream.accepted(), 2);
}

TEST_F(PoolTest, ConnectionWhoseResponseWasCutOffIsNotReused) {
  CountingUpstream upstream;
  start({upstream.port()});
  {
    tcp::socket s(client_ioc_);
    s.connect(server_->proxy_endpoint());
    set_timeouts(s);
    std::string up = "127.0.0.1:" + std::to_string(upstream.port());
    net::write(
        s, net::buffer("GET http://" + up + "/allowed/cut HTTP/1.1\r\nHost: " + up + "\r\n\r\n"));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(s, buffer, res, ec);
    EXPECT_TRUE(ec); // the agent sees the cut: the connection closes mid-body
  }
  EXPECT_EQ(get("127.0.0.1", upstream.port(), "/allowed/a").body(), "hello");
  EXPECT_EQ(upstream.accepted(), 2);
}

// The pool itself, on loopback sockets: caps, idle expiry and dead connections.
class PoolUnitTest : public ::testing::Test {
protected:
  PoolUnitTest() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {}

  /// A connected pooled connection for key; its server end is kept in peers_.
  std::unique_ptr<PlainUpstreamPool::Conn> conn(const std::string& key) {
    auto c = std::make_unique<PlainUpstreamPool::Conn>(ioc_);
    c->stream.socket().connect(acceptor_.local_endpoint());
    peers_.push_back(std::make_unique<tcp::socket>(acceptor_.accept()));
    c->key = key;
    return c;
  }

  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::unique_ptr<tcp::socket>> peers_;
};

TEST_F(PoolUnitTest, TakesOnlyItsOwnKeyAndCapsIdlePerKey) {
  PlainUpstreamPool pool;
  const std::chrono::milliseconds idle(60000);
  for (std::size_t i = 0; i < kPoolMaxIdlePerKey + 2; ++i) {
    pool.put(conn("http://a:80"), idle);
  }
  EXPECT_EQ(pool.size(), kPoolMaxIdlePerKey);
  EXPECT_EQ(pool.take("http://b:80"), nullptr);
  EXPECT_NE(pool.take("http://a:80"), nullptr);
  EXPECT_EQ(pool.size(), kPoolMaxIdlePerKey - 1);
}

TEST_F(PoolUnitTest, CapsIdlePerPool) {
  PlainUpstreamPool pool;
  for (std::size_t i = 0; i < kPoolMaxIdleTotal + 3; ++i) {
    pool.put(conn("http://h" + std::to_string(i) + ":80"), std::chrono::milliseconds(60000));
  }
  EXPECT_EQ(pool.size(), kPoolMaxIdleTotal);
  EXPECT_EQ(pool.take("http://h0:80"), nullptr); // the oldest went first
  EXPECT_NE(pool.take("http://h3:80"), nullptr);
}

TEST_F(PoolUnitTest, ExpiredAndClosedConnectionsAreNeverHandedOut) {
  PlainUpstreamPool pool;
  pool.put(conn("http://old:80"), std::chrono::milliseconds(0)); // idle time already over
  EXPECT_EQ(pool.take("http://old:80"), nullptr);
  auto closed = conn("http://closed:80");
  peers_.back()->close(); // the upstream closed it while idle
  auto chatty = conn("http://chatty:80");
  net::write(*peers_.back(), net::buffer(std::string_view("x"))); // unsolicited bytes
  // Bounded wait until the FIN and the byte have reached the pooled ends.
  for (int i = 0; i < 500 && (upstream_idle_and_open(closed->stream.socket()) ||
                              upstream_idle_and_open(chatty->stream.socket()));
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  pool.put(std::move(closed), std::chrono::milliseconds(60000));
  pool.put(std::move(chatty), std::chrono::milliseconds(60000));
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_EQ(pool.take("http://closed:80"), nullptr);
  EXPECT_EQ(pool.take("http://chatty:80"), nullptr);
  EXPECT_EQ(pool.size(), 0u);
}

} // namespace
} // namespace runwarden::proxy
