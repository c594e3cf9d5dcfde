// The per-I/O-thread upstream keep-alive pool: what is shared between agent connections of one
// thread, what never is, and what is never returned. The proxy runs in-process on port 0 with
// one I/O thread; the upstream is a real loopback server (tests/proxy/test_upstream.hpp) that
// counts its accepted connections, or records the TLS name and requests of each.

#include "certs/authority.hpp"
#include "proxy/server.hpp"
#include "proxy/upstream_pool.hpp"
#include "tests/proxy/test_upstream.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

using testing::set_timeouts;

/// Counts accepted connections. GET /allowed/close answers "Connection: close" and closes;
/// GET /allowed/cut promises 100 bytes, sends 5 and closes; GET /allowed/big answers
/// kBigBody bytes of big_byte(i) and keeps the connection; anything else answers 200 "hello"
/// and keeps the connection.
constexpr std::size_t kBigBody = 8u << 20; // far more than loopback socket buffers hold

char big_byte(std::size_t i) {
  return static_cast<char>('a' + (i * 7 + i / 4096) % 26);
}

class CountingUpstream {
public:
  explicit CountingUpstream(std::shared_ptr<const certs::Leaf> leaf = nullptr)
      : server_(*this, std::move(leaf), 32) {}
  std::uint16_t port() const { return server_.port(); }
  int accepted() { return server_.accepted(); }
  int requests() const { return requests_.load(); }

  template <class Stream> void serve_on(Stream& stream, const testing::Accepted&) {
    testing::serve_requests(stream, 32, [&](const http::request<http::string_body>& req) {
      requests_.fetch_add(1);
      if (req.target() == "/allowed/cut") {
        boost::system::error_code ec;
        net::write(
            stream,
            net::buffer(std::string_view("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")),
            ec);
        return false;
      }
      if (req.target() == "/allowed/big") {
        std::string body(kBigBody, '\0');
        for (std::size_t i = 0; i < body.size(); ++i) {
          body[i] = big_byte(i);
        }
        std::string head =
            "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
        boost::system::error_code ec;
        net::write(stream, std::array{net::buffer(head), net::buffer(body)}, ec);
        return !ec;
      }
      bool close = req.target() == "/allowed/close";
      return testing::write_hello(stream, !close) && !close;
    });
  }

private:
  std::atomic<int> requests_{0};
  testing::LoopbackUpstream<CountingUpstream> server_; // last: stops before the state above
};

/// Records, per accepted connection, the TLS server name it was opened for and the Host of
/// every request that arrived on it; answers each 200 "hello" and keeps the connection.
class NameRecordingUpstream {
public:
  struct Conn {
    std::string sni;
    std::vector<std::string> hosts; // Host header of each request, in order
  };
  explicit NameRecordingUpstream(std::shared_ptr<const certs::Leaf> leaf)
      : server_(*this, std::move(leaf), 32) {}
  std::uint16_t port() const { return server_.port(); }
  int accepted() { return server_.accepted(); }
  std::map<int, Conn> conns() {
    std::lock_guard lock(mutex_);
    return conns_;
  }
  int requests() {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (const auto& [index, conn] : conns_) {
      n += static_cast<int>(conn.hosts.size());
    }
    return n;
  }

  template <class Stream> void serve_on(Stream& stream, const testing::Accepted& accepted) {
    {
      std::lock_guard lock(mutex_);
      conns_[accepted.index].sni = accepted.sni;
    }
    testing::serve_requests(stream, 32, [&](const http::request<http::string_body>& req) {
      {
        std::lock_guard lock(mutex_);
        conns_[accepted.index].hosts.emplace_back(req[http::field::host]);
      }
      return testing::write_hello(stream, true);
    });
  }

private:
  std::mutex mutex_;
  std::map<int, Conn> conns_;
  testing::LoopbackUpstream<NameRecordingUpstream> server_; // last: stops before the state above
};

/// A leaf signed by the test CA in dir and valid for every name in sans at once (OpenSSL
/// syntax, "DNS:a,IP:b"): Authority mints exactly one name per leaf, and a server that is
/// several names on one address is the case where only the pool key keeps them apart.
std::shared_ptr<const certs::Leaf> multi_name_leaf(const std::filesystem::path& dir,
                                                   const char* sans) {
  auto read_pem = [](const std::filesystem::path& file, auto reader) {
    std::FILE* f = std::fopen(file.c_str(), "r");
    auto* value = f != nullptr ? reader(f, nullptr, nullptr, nullptr) : nullptr;
    if (f != nullptr) {
      std::fclose(f);
    }
    return value;
  };
  X509* ca = read_pem(dir / "ca.pem", PEM_read_X509);
  EVP_PKEY* ca_key = read_pem(dir / "ca.key", PEM_read_PrivateKey);
  auto leaf = std::make_shared<certs::Leaf>();
  leaf->key = EVP_EC_gen("P-256");
  leaf->cert = X509_new();
  X509* cert = leaf->cert;
  bool ok = ca != nullptr && ca_key != nullptr && leaf->key != nullptr && cert != nullptr;
  ok = ok && X509_set_version(cert, X509_VERSION_3) == 1 &&
       ASN1_INTEGER_set(X509_get_serialNumber(cert), 2) == 1 &&
       X509_gmtime_adj(X509_getm_notBefore(cert), -60) != nullptr &&
       X509_gmtime_adj(X509_getm_notAfter(cert), 3600) != nullptr &&
       X509_set_issuer_name(cert, X509_get_subject_name(ca)) == 1 &&
       X509_set_pubkey(cert, leaf->key) == 1;
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca, cert, nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    bool added = ext != nullptr && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return added;
  };
  ok = ok && add(NID_subject_alt_name, sans) && add(NID_basic_constraints, "critical,CA:FALSE") &&
       add(NID_authority_key_identifier, "keyid:always") &&
       X509_sign(cert, ca_key, EVP_sha256()) > 0;
  X509_free(ca);
  EVP_PKEY_free(ca_key);
  EXPECT_TRUE(ok) << "cannot mint a leaf for " << sans;
  return leaf;
}

/// The host part of a Host header value ("name:port").
std::string host_of(const std::string& authority) {
  return authority.substr(0, authority.rfind(':'));
}

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
  /// An agent connection to the proxy, with read/write timeouts so a hang fails the test.
  tcp::socket agent() {
    tcp::socket s(client_ioc_);
    s.connect(server_->proxy_endpoint());
    set_timeouts(s);
    return s;
  }

  http::response<http::string_body> get(const std::string& host, std::uint16_t port,
                                        const std::string& path) {
    tcp::socket s = agent();
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

  /// The test CA, created in dir_ on first use.
  std::shared_ptr<certs::Authority> authority() {
    if (!authority_) {
      dir_ = std::filesystem::temp_directory_path() /
             ("runwarden-pool-test-" + std::to_string(::getpid()));
      std::filesystem::remove_all(dir_);
      certs::Authority::create(dir_, "runwarden test CA");
      authority_ = certs::Authority::load(dir_ / "ca.pem", dir_ / "ca.key");
    }
    return authority_;
  }
  /// The test CA's leaf for exactly one name, as the proxy mints them.
  std::shared_ptr<const certs::Leaf> ca_leaf(const std::string& name) {
    std::string err;
    auto leaf = authority()->leaf(name, &err);
    EXPECT_TRUE(leaf) << err;
    return leaf;
  }
  /// Starts the proxy intercepting with the test CA and trusting only it upstream.
  void start_intercepting(std::uint16_t port) {
    start({port}, authority(), (dir_ / "ca.pem").string());
  }

  /// An agent's intercepted keep-alive connection: CONNECT host:port, then TLS verified by
  /// the test CA for host.
  struct Tunnel {
    explicit Tunnel(net::io_context& ioc) : socket(ioc) {}
    tcp::socket socket;
    net::ssl::context client_tls{net::ssl::context::tls_client};
    std::unique_ptr<net::ssl::stream<tcp::socket&>> tls;
    beast::flat_buffer buffer;
    std::string authority;
  };
  std::unique_ptr<Tunnel> open_tunnel(const std::string& host, std::uint16_t port) {
    auto t = std::make_unique<Tunnel>(client_ioc_);
    t->socket.connect(server_->proxy_endpoint());
    set_timeouts(t->socket);
    t->authority = host + ":" + std::to_string(port);
    net::write(t->socket, net::buffer("CONNECT " + t->authority +
                                      " HTTP/1.1\r\nHost: " + t->authority + "\r\n\r\n"));
    http::response_parser<http::empty_body> head;
    head.skip(true);
    boost::system::error_code ec;
    http::read_header(t->socket, t->buffer, head, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(head.get().result_int(), 200u);
    t->client_tls.load_verify_file((dir_ / "ca.pem").string());
    t->client_tls.set_verify_mode(net::ssl::verify_peer);
    t->tls = std::make_unique<net::ssl::stream<tcp::socket&>>(t->socket, t->client_tls);
    t->tls->set_verify_callback(net::ssl::host_name_verification(host));
    t->tls->handshake(net::ssl::stream_base::client, ec);
    EXPECT_FALSE(ec) << ec.message();
    return t;
  }
  /// One request inside an open tunnel; the tunnel stays open for the next.
  http::response<http::string_body> inner_get(Tunnel& t, const std::string& path) {
    boost::system::error_code ec;
    net::write(*t.tls,
               net::buffer("GET " + path + " HTTP/1.1\r\nHost: " + t.authority + "\r\n\r\n"), ec);
    http::response<http::string_body> res;
    http::read(*t.tls, t.buffer, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }
  /// One intercepted request on a new agent connection to 127.0.0.1, then closed.
  http::response<http::string_body> intercepted_get(std::uint16_t port, const std::string& path) {
    auto t = open_tunnel("127.0.0.1", port);
    return inner_get(*t, path);
  }

  net::io_context ioc_;
  net::io_context client_ioc_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::shared_ptr<certs::Authority> authority_;
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
  CountingUpstream upstream(ca_leaf("127.0.0.1"));
  start_intercepting(upstream.port());
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

// One TLS upstream that is two names on one address and port, with one certificate valid for
// both: only the pool key (which holds the verified name) keeps their connections apart.
// localhost and 127.0.0.1 are the two names every machine resolves to loopback with no DNS;
// an IP literal is never sent as SNI (RFC 6066 §3), so its connections carry none.
TEST_F(PoolTest, TwoTlsNamesOnOneUpstreamNeverShareAPooledConnection) {
  authority(); // the test CA, in dir_
  NameRecordingUpstream upstream(multi_name_leaf(dir_, "DNS:localhost,IP:127.0.0.1"));
  start_intercepting(upstream.port());
  auto by_name = open_tunnel("localhost", upstream.port());
  auto by_address = open_tunnel("127.0.0.1", upstream.port());
  // Alternating keep-alive requests: each one finds the other name's connection idle in the
  // I/O thread's pool when it is forwarded.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(inner_get(*by_name, "/allowed/n" + std::to_string(i)).body(), "hello");
    EXPECT_EQ(inner_get(*by_address, "/allowed/a" + std::to_string(i)).body(), "hello");
  }
  auto conns = upstream.conns();
  int requests = 0;
  for (const auto& [index, conn] : conns) {
    for (const auto& host : conn.hosts) {
      ++requests;
      std::string name = host_of(host);
      EXPECT_EQ(conn.sni, name == "127.0.0.1" ? "" : name)
          << "a request for " << name << " arrived on connection " << index << " opened with SNI \""
          << conn.sni << "\"";
    }
  }
  EXPECT_EQ(requests, 6);
  // Each name kept reusing its own connection: the pool was in play, not bypassed.
  EXPECT_EQ(upstream.accepted(), 2);
}

// The upstream's certificate is valid for localhost only. A request for 127.0.0.1 must open
// (and fail to verify) a connection of its own, never ride the idle one verified for
// localhost.
TEST_F(PoolTest, RequestWhoseNameFailsVerificationNeverRidesAnotherNamesConnection) {
  NameRecordingUpstream upstream(ca_leaf("localhost"));
  start_intercepting(upstream.port());
  auto by_name = open_tunnel("localhost", upstream.port());
  EXPECT_EQ(inner_get(*by_name, "/allowed/first").body(), "hello"); // now idle in the pool
  auto by_address = open_tunnel("127.0.0.1", upstream.port());
  auto refused = inner_get(*by_address, "/allowed/second");
  EXPECT_EQ(refused.result_int(), 502u);
  EXPECT_NE(refused.body().find("does not match"), std::string::npos) << refused.body();
  EXPECT_EQ(upstream.requests(), 1);
  EXPECT_EQ(upstream.accepted(), 2); // the refused name's own handshake, which failed
  // The verified name still reuses its connection.
  EXPECT_EQ(inner_get(*by_name, "/allowed/third").body(), "hello");
  auto conns = upstream.conns();
  ASSERT_EQ(conns.size(), 1u); // the failed handshake was never served
  EXPECT_EQ(conns.begin()->second.sni, "localhost");
  EXPECT_EQ(conns.begin()->second.hosts,
            (std::vector<std::string>{by_name->authority, by_name->authority}));
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
    tcp::socket s = agent();
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

// The relay offers each write to the socket at once and leaves the rest to async_write: an
// agent that reads nothing for a while makes the socket take only part of a large body, and
// every byte must still arrive, in order, with the connection then good for the next request
// and the upstream connection returned to the pool.
TEST_F(PoolTest, LargeBodyToAnAgentThatReadsLateArrivesWholeAndBothConnectionsStayReusable) {
  CountingUpstream upstream;
  start({upstream.port()});
  tcp::socket s = agent();
  std::string up = "127.0.0.1:" + std::to_string(upstream.port());
  auto request = [&](const std::string& path) {
    net::write(s, net::buffer("GET http://" + up + path + " HTTP/1.1\r\nHost: " + up + "\r\n\r\n"));
  };
  request("/allowed/big");
  std::this_thread::sleep_for(std::chrono::milliseconds(300)); // the relay fills the socket
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> big;
  big.body_limit(kBigBody);
  boost::system::error_code ec;
  http::read(s, buffer, big, ec);
  ASSERT_FALSE(ec) << ec.message();
  const std::string& body = big.get().body();
  ASSERT_EQ(body.size(), kBigBody);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    wrong += body[i] != big_byte(i) ? 1u : 0u;
  }
  EXPECT_EQ(wrong, 0u);
  request("/allowed/a");
  http::response<http::string_body> next;
  http::read(s, buffer, next, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(next.body(), "hello");
  EXPECT_EQ(upstream.requests(), 2);
  EXPECT_EQ(upstream.accepted(), 1); // the upstream connection went back to the pool
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

// Connections of a key come back newest first (the one most recently proven live; the
// older ones are left to expire); a key that emptied takes connections again; an expired
// connection goes while live ones of other keys stay.
TEST_F(PoolUnitTest, NewestFirstPerKeyAndExpiryLeavesLiveOnesOfOtherKeys) {
  PlainUpstreamPool pool;
  const std::chrono::milliseconds idle(60000);
  pool.put(conn("http://a:80"), idle);
  auto second = conn("http://a:80");
  auto* second_ptr = second.get();
  pool.put(std::move(second), idle);
  auto taken = pool.take("http://a:80");
  EXPECT_EQ(taken.get(), second_ptr);
  EXPECT_NE(pool.take("http://a:80"), nullptr);
  EXPECT_EQ(pool.take("http://a:80"), nullptr);
  EXPECT_EQ(pool.size(), 0u);
  pool.put(conn("http://a:80"), idle); // the emptied key again
  pool.put(conn("http://gone:80"), std::chrono::milliseconds(0));
  pool.put(conn("http://b:80"), idle);
  EXPECT_EQ(pool.take("http://gone:80"), nullptr);
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_NE(pool.take("http://b:80"), nullptr);
  EXPECT_NE(pool.take("http://a:80"), nullptr);
  EXPECT_EQ(pool.size(), 0u);
}

} // namespace
} // namespace runwarden::proxy
