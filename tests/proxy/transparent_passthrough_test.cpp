// tls.passthrough on the transparent listener, with real sockets and real TLS over loopback:
// a ClientHello whose SNI is listed is tunnelled to the address the agent dialled (the agent
// sees the upstream's own certificate), but only when that name resolves to that address;
// the list is the live one, so a reload that takes a name or an address out of it applies
// to the next connection (intercepted, or refused sni_required without SNI).
//
// Nothing is REDIRECTed here: each session is started with a known original destination
// (start_transparent_session's overload) on a socket the test accepted. Two CAs: the
// upstream's ("upstream test CA", its leaf for localhost) and runwarden's ("runwarden test
// CA", what an intercepted agent sees), so the issuer says who answered the handshake.

#include "certs/authority.hpp"
#include "proxy/reload.hpp"
#include "proxy/transparent_session.hpp"
#include "tests/proxy/ops_fixture.hpp"
#include "tests/proxy/stderr_capture.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace runwarden::proxy {
namespace {

using namespace testing;
namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

/// What the agent saw of one transparent TLS connection.
struct Seen {
  boost::system::error_code handshake;
  bool upstream_leaf = false; // the peer certificate is the upstream's own leaf
  std::string issuer;         // commonName of the peer certificate's issuer
  int status = 0;             // of GET /denied/raw inside, 0 when there was no answer
  std::string body;
};

std::string issuer_cn(X509* cert) {
  std::array<char, 256> cn{};
  int n = X509_NAME_get_text_by_NID(X509_get_issuer_name(cert), NID_commonName, cn.data(),
                                    static_cast<int>(cn.size()));
  return n > 0 ? std::string(cn.data(), static_cast<std::size_t>(n)) : std::string();
}

std::shared_ptr<certs::Authority> make_ca(const std::filesystem::path& dir, const char* name) {
  certs::Authority::create(dir, name);
  return certs::Authority::load(dir / "ca.pem", dir / "ca.key");
}

class TransparentPassthroughTest : public ::testing::Test {
protected:
  TransparentPassthroughTest()
      : upstream_ca_(make_ca(dir_.file("upstream-ca"), "upstream test CA")),
        proxy_ca_(make_ca(dir_.file("proxy-ca"), "runwarden test CA")),
        leaf_(upstream_ca_->leaf("localhost", &leaf_error_)), upstream_(leaf_) {}

  void SetUp() override {
    ASSERT_TRUE(leaf_) << leaf_error_;
    const std::string port = std::to_string(upstream_.port());
    std::filesystem::create_directories(dir_.file("runbooks"));
    std::filesystem::create_directories(dir_.file("audit"));
    // CONNECT to either name of the upstream is allowed; nothing else is (unmatched: deny),
    // so a request judged inside an intercepted connection is refused 403 while the same
    // request through a tunnel reaches the upstream unread.
    write_file(dir_.file("actions.yaml"), "actions:\n"
                                          "  tunnel_localhost:\n"
                                          "    - {host: localhost, port: " +
                                              port +
                                              ", method: CONNECT, path: /}\n"
                                              "  tunnel_address:\n"
                                              "    - {host: 127.0.0.1, port: " +
                                              port + ", method: CONNECT, path: /}\n");
    write_file(dir_.file("runbooks") / "rb.yaml",
               "runbook: rb\nowner: test\ntrigger: {manual: test}\n"
               "allowed_actions:\n  allowed: [tunnel_localhost, tunnel_address]\n"
               "unmatched: deny\n");
    write_config("[localhost, 127.0.0.1]");
    auto cfg = config::load_config(dir_.file("runwarden.yaml"));
    audit_ = std::make_shared<MemoryAudit>();
    server_ = std::make_unique<Server>(ioc_, ServerOptions{cfg, audit_, proxy_ca_, nullptr});
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
    reloader_ = std::make_shared<Reloader>(ioc_, server_->context());
  }
  void TearDown() override {
    ioc_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    server_.reset();
  }

  void write_config(const std::string& passthrough) {
    write_file(dir_.file("runwarden.yaml"),
               "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\n"
               "agent: {id: passthrough-agent}\n"
               "catalogue: actions.yaml\n"
               "runbooks: [runbooks/]\nactive_runbook: rb\n"
               "audit:\n  path: audit/audit.jsonl\n"
               "tls:\n  upstream_trust: upstream-ca/ca.pem\n  passthrough: " +
                   passthrough + "\n");
  }

  tcp::endpoint upstream_endpoint() const {
    return {net::ip::make_address("127.0.0.1"), upstream_.port()};
  }

  /// A client connection whose server side runs the transparent session as if it had been
  /// redirected from `original`.
  tcp::socket connect_known(const tcp::endpoint& original) {
    tcp::acceptor acceptor(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket client(client_ioc_);
    client.connect(acceptor.local_endpoint());
    set_timeouts(client);
    tcp::socket accepted(ioc_);
    acceptor.accept(accepted);
    net::post(ioc_, [ctx = server_->context(), s = std::move(accepted), original]() mutable {
      start_transparent_session(std::move(ctx), std::move(s), original);
    });
    return client;
  }

  /// A TLS handshake as an agent redirected from `original` makes it (SNI `sni`, none when
  /// empty; no verification, the certificate is inspected instead), then GET /denied/raw.
  Seen agent_tls(const tcp::endpoint& original, const std::string& sni) {
    Seen seen;
    tcp::socket socket = connect_known(original);
    ssl::context tls(ssl::context::tls_client);
    tls.set_verify_mode(ssl::verify_none);
    ssl::stream<tcp::socket&> stream(socket, tls);
    if (!sni.empty()) {
      SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
               const_cast<char*>(sni.c_str())); // SSL_set_tlsext_host_name, without its C cast
    }
    stream.handshake(ssl::stream_base::client, seen.handshake);
    if (seen.handshake) {
      return seen;
    }
    X509* peer = SSL_get1_peer_certificate(stream.native_handle());
    if (peer != nullptr) {
      seen.upstream_leaf = X509_cmp(peer, leaf_->cert) == 0;
      seen.issuer = issuer_cn(peer);
      X509_free(peer);
    }
    const std::string authority = "localhost:" + std::to_string(original.port());
    boost::system::error_code ec;
    net::write(stream,
               net::buffer("GET /denied/raw HTTP/1.1\r\nHost: " + authority +
                           "\r\nConnection: close\r\n\r\n"),
               ec);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res, ec);
    if (!ec) {
      seen.status = static_cast<int>(res.result_int());
      seen.body = res.body();
    }
    return seen;
  }

  /// The audit records once `done` holds for them (bounded: 5 s), else the last seen.
  std::vector<audit::Exchange>
  records_when(const std::function<bool(const std::vector<audit::Exchange>&)>& done) {
    auto records = audit_->records();
    for (int i = 0; i < 500 && !done(records); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      records = audit_->records();
    }
    return records;
  }
  /// The first record with this code, once there is one (bounded: 5 s).
  std::optional<audit::Exchange> record_with_code(const std::string& code) {
    auto has = [&](const audit::Exchange& r) { return r.code == code; };
    auto records = records_when([&](const std::vector<audit::Exchange>& rs) {
      return std::any_of(rs.begin(), rs.end(), has);
    });
    auto it = std::find_if(records.begin(), records.end(), has);
    return it == records.end() ? std::nullopt : std::optional<audit::Exchange>(*it);
  }

  TempDir dir_;
  std::string leaf_error_;
  std::shared_ptr<certs::Authority> upstream_ca_;
  std::shared_ptr<certs::Authority> proxy_ca_;
  std::shared_ptr<const certs::Leaf> leaf_;
  HelloUpstream upstream_;
  net::io_context ioc_;
  net::io_context client_ioc_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::shared_ptr<Reloader> reloader_;
};

TEST_F(TransparentPassthroughTest, ListedSniIsTunnelledToTheUpstreamItself) {
  std::string logged;
  Seen seen;
  {
    StderrCapture capture{"runwarden_transparent_passthrough_test"};
    seen = agent_tls(upstream_endpoint(), "localhost");
    flush_log();
    logged = capture.text();
  }
  ASSERT_FALSE(seen.handshake) << seen.handshake.message();
  EXPECT_TRUE(seen.upstream_leaf) << "the agent saw a certificate issued by " << seen.issuer;
  EXPECT_EQ(seen.issuer, "upstream test CA");
  // Unread inside: a path the runbook would deny reaches the upstream.
  EXPECT_EQ(seen.status, 200);
  EXPECT_EQ(seen.body, "hello");
  EXPECT_EQ(upstream_.requests(), 1);
  EXPECT_EQ(upstream_.snis(), std::vector<std::string>{"localhost"}); // the agent's own hello

  // The decision record and the tunnel's closing record, both of a CONNECT to the name.
  auto records =
      records_when([](const std::vector<audit::Exchange>& rs) { return rs.size() >= 2; });
  ASSERT_EQ(records.size(), 2u);
  const std::string url = "https://localhost:" + std::to_string(upstream_.port()) + "/";
  for (const auto& r : records) {
    EXPECT_EQ(r.request.method, "CONNECT");
    EXPECT_EQ(r.request.url, url);
    EXPECT_EQ(r.action, "tunnel_localhost");
    EXPECT_EQ(r.outcome, "forwarded");
  }
  ASSERT_TRUE(records[1].response);
  EXPECT_GT(records[1].response->bytes, 0u); // what came back through the tunnel
  EXPECT_GT(records[1].request.body_bytes, 0u);
  // The log line names both the checked name and the address it was tunnelled to.
  const auto at = logged.find(" transparent ");
  ASSERT_NE(at, std::string::npos) << logged;
  const std::string line = logged.substr(at, logged.find('\n', at) - at);
  EXPECT_NE(line.find("destination=127.0.0.1:" + std::to_string(upstream_.port())),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("name=localhost"), std::string::npos) << line;
  EXPECT_NE(line.find("mode=passthrough"), std::string::npos) << line;
}

TEST_F(TransparentPassthroughTest, ListedSniToAnAddressItDoesNotNameIsRefused) {
  // A listener the name does not resolve to: a listed SNI must not buy a tunnel there.
  tcp::acceptor elsewhere(client_ioc_, tcp::endpoint(net::ip::make_address("127.0.0.2"), 0));
  Seen seen = agent_tls(elsewhere.local_endpoint(), "localhost");
  EXPECT_TRUE(seen.handshake) << "a handshake completed with " << seen.issuer;
  auto refused = record_with_code("destination_mismatch");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->outcome, "refused");
  const std::string where = "127.0.0.2:" + std::to_string(elsewhere.local_endpoint().port());
  EXPECT_NE(refused->reason.find(where), std::string::npos) << refused->reason;
  EXPECT_NE(refused->reason.find("\"localhost\""), std::string::npos) << refused->reason;
  EXPECT_EQ(refused->request.url,
            "https://localhost:" + std::to_string(elsewhere.local_endpoint().port()) + "/");
  EXPECT_EQ(audit_->records().size(), 1u);
  // Nothing was dialled there.
  elsewhere.non_blocking(true);
  tcp::socket nobody(client_ioc_);
  boost::system::error_code ec;
  elsewhere.accept(nobody, ec);
  EXPECT_EQ(ec, net::error::would_block) << ec.message();
  EXPECT_EQ(upstream_.accepted(), 0);
}

TEST_F(TransparentPassthroughTest, NameTakenOutOnReloadIsInterceptedFromTheNextConnection) {
  Seen before = agent_tls(upstream_endpoint(), "localhost");
  ASSERT_FALSE(before.handshake) << before.handshake.message();
  EXPECT_TRUE(before.upstream_leaf);
  EXPECT_EQ(before.status, 200);

  write_config("[127.0.0.1]");
  ASSERT_TRUE(reloader_->reload("signal"));
  const int reached = upstream_.requests();
  Seen after = agent_tls(upstream_endpoint(), "localhost");
  ASSERT_FALSE(after.handshake) << after.handshake.message();
  EXPECT_FALSE(after.upstream_leaf);
  EXPECT_EQ(after.issuer, "runwarden test CA"); // a minted leaf: the connection is read
  EXPECT_EQ(after.status, 403);                 // and its request judged (unmatched: deny)
  EXPECT_EQ(upstream_.requests(), reached);
  auto denied = record_with_code("unmatched");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->request.method, "GET");
}

TEST_F(TransparentPassthroughTest, AddressTakenOutOnReloadIsRefusedWithoutSni) {
  Seen before = agent_tls(upstream_endpoint(), "");
  ASSERT_FALSE(before.handshake) << before.handshake.message();
  EXPECT_TRUE(before.upstream_leaf);
  EXPECT_EQ(before.status, 200);
  EXPECT_EQ(upstream_.snis(), std::vector<std::string>{""});

  write_config("[localhost]");
  ASSERT_TRUE(reloader_->reload("signal"));
  Seen after = agent_tls(upstream_endpoint(), "");
  EXPECT_TRUE(after.handshake) << "a handshake completed with " << after.issuer;
  auto refused = record_with_code("sni_required");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->outcome, "refused");
  EXPECT_EQ(upstream_.accepted(), 1);
}

TEST_F(TransparentPassthroughTest, UnlistedSniIsStillIntercepted) {
  write_config("[other.example, 127.0.0.1]");
  ASSERT_TRUE(reloader_->reload("signal"));
  Seen seen = agent_tls(upstream_endpoint(), "localhost");
  ASSERT_FALSE(seen.handshake) << seen.handshake.message();
  EXPECT_FALSE(seen.upstream_leaf);
  EXPECT_EQ(seen.issuer, "runwarden test CA");
  EXPECT_EQ(seen.status, 403);
  EXPECT_EQ(upstream_.requests(), 0);
}

} // namespace
} // namespace runwarden::proxy
