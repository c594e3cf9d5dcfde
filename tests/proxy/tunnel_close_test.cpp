// Open passthrough tunnels against operations changes, with real sockets and a real TLS
// upstream over loopback: a tunnel is decided on its CONNECT alone and then relays bytes
// nobody judges, so `paused` closes every open tunnel, a run kill closes that run's tunnels
// (and no other run's), and read_only closes those whose CONNECT was not a read_only action
// (a new CONNECT is judged the same way). Each closed tunnel leaves its closing record:
// outcome aborted, code paused / run_killed / read_only_mode. Before these changes the
// tunnels went on relaying after the operator had stopped everything.
//
// The agent speaks TLS end to end with the upstream through the tunnel (the upstream's own
// certificate, not runwarden's), so what flows is the bytes runwarden cannot read.

#include "certs/authority.hpp"
#include "proxy/transparent_session.hpp"
#include "tests/proxy/ops_fixture.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <gtest/gtest.h>
#include <openssl/ssl.h>

namespace runwarden::proxy {
namespace {

using namespace testing;
namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

constexpr const char* kToken = "tunnel-operator-token";
/// The held action's port: nothing listens there, and nothing dials it (the hold comes first).
constexpr std::uint16_t kHeldPort = 9;

std::shared_ptr<certs::Authority> make_ca(const std::filesystem::path& dir) {
  certs::Authority::create(dir, "upstream test CA");
  return certs::Authority::load(dir / "ca.pem", dir / "ca.key");
}

/// One agent connection with a TLS session to the upstream inside its tunnel.
struct AgentTunnel {
  explicit AgentTunnel(net::io_context& ioc) : socket(ioc), tls(ssl::context::tls_client) {
    tls.set_verify_mode(ssl::verify_none);
  }
  tcp::socket socket;
  ssl::context tls;
  std::unique_ptr<ssl::stream<tcp::socket&>> stream;
  beast::flat_buffer buffer;

  /// TLS handshake with SNI `name`, through whatever the socket is connected to.
  bool handshake(const std::string& name) {
    stream = std::make_unique<ssl::stream<tcp::socket&>>(socket, tls);
    SSL_ctrl(stream->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(name.c_str())); // SSL_set_tlsext_host_name, without its C cast
    boost::system::error_code ec;
    stream->handshake(ssl::stream_base::client, ec);
    EXPECT_FALSE(ec) << ec.message();
    return !ec;
  }

  /// GET / inside the TLS session; its status, or 0 with *error set when nothing came back.
  int get(boost::system::error_code* error = nullptr) {
    boost::system::error_code ec;
    net::write(*stream, net::buffer(std::string("GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")), ec);
    http::response<http::string_body> res;
    if (!ec) {
      http::read(*stream, buffer, res, ec);
    }
    if (error != nullptr) {
      *error = ec;
    }
    return ec ? 0 : static_cast<int>(res.result_int());
  }
};

/// Whether a read error says the peer closed the connection, as opposed to the test
/// socket's 5 s receive timeout running out with the tunnel still open.
bool closed_by_peer(const boost::system::error_code& ec) {
  return ec == net::error::eof || ec == ssl::error::stream_truncated ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe;
}

class TunnelCloseTest : public ::testing::Test {
protected:
  TunnelCloseTest()
      : upstream_ca_(make_ca(dir_.file("upstream-ca"))),
        leaf_(upstream_ca_->leaf("localhost", &leaf_error_)), upstream_(leaf_) {}

  void SetUp() override {
    ASSERT_TRUE(leaf_) << leaf_error_;
    const std::string port = std::to_string(upstream_.port());
    std::filesystem::create_directories(dir_.file("runbooks"));
    std::filesystem::create_directories(dir_.file("audit"));
    write_file(dir_.file("tokens"), token_line("alice", kToken));
    // Both names reach the same upstream: through localhost the tunnel is a read_only
    // action, through 127.0.0.1 an allowed one (side effects). A CONNECT to port 9 is held.
    write_file(dir_.file("actions.yaml"), "actions:\n"
                                          "  tunnel_reads:\n"
                                          "    - {host: localhost, port: " +
                                              port +
                                              ", method: CONNECT, path: /}\n"
                                              "  tunnel_writes:\n"
                                              "    - {host: 127.0.0.1, port: " +
                                              port +
                                              ", method: CONNECT, path: /}\n"
                                              "  tunnel_held:\n"
                                              "    - {host: 127.0.0.1, port: " +
                                              std::to_string(kHeldPort) +
                                              ", method: CONNECT, path: /}\n");
    write_file(dir_.file("runbooks") / "rb.yaml",
               "runbook: rb\nowner: test\ntrigger: {manual: test}\n"
               "allowed_actions:\n  read_only: [tunnel_reads]\n  allowed: [tunnel_writes]\n"
               "  approval_required: [tunnel_held]\n"
               "unmatched: deny\n");
    write_file(dir_.file("runwarden.yaml"), "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\n"
                                            "agent: {id: tunnel-agent}\n"
                                            "catalogue: actions.yaml\n"
                                            "runbooks: [runbooks/]\nactive_runbook: rb\n"
                                            "audit:\n  path: audit/audit.jsonl\n"
                                            "approvals:\n  operator_tokens_file: tokens\n"
                                            "tls:\n  upstream_trust: upstream-ca/ca.pem\n"
                                            "  passthrough: [localhost, 127.0.0.1]\n");
    auto cfg = config::load_config(dir_.file("runwarden.yaml"));
    audit_ = std::make_shared<MemoryAudit>();
    // Two I/O threads: tunnels live on different threads than the admin API that closes them.
    server_ = std::make_unique<OpsServer>(cfg, audit_, 2);
  }

  std::shared_ptr<ProxyContext> ctx() { return server_->server().context(); }

  /// CONNECT host:upstream in `run` through the explicit proxy; the answer's status.
  unsigned send_connect(AgentTunnel& t, const std::string& host, std::uint16_t port,
                        const std::string& run) {
    t.socket.connect(server_->server().proxy_endpoint());
    set_timeouts(t.socket);
    const std::string authority = host + ":" + std::to_string(port);
    net::write(t.socket, net::buffer("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority +
                                     "\r\nRunwarden-Run: " + run + "\r\n\r\n"));
    http::response_parser<http::empty_body> head;
    head.skip(true);
    boost::system::error_code ec;
    http::read_header(t.socket, t.buffer, head, ec);
    return ec ? 0u : head.get().result_int();
  }

  /// A tunnel to the upstream through `host` in `run`, TLS inside, one request answered.
  std::unique_ptr<AgentTunnel> open_tunnel(const std::string& host, const std::string& run) {
    auto t = std::make_unique<AgentTunnel>(client_ioc_);
    EXPECT_EQ(send_connect(*t, host, upstream_.port(), run), 200u);
    EXPECT_EQ(t->buffer.size(), 0u); // nothing after the CONNECT answer before the handshake
    if (!t->handshake(host)) {
      return t;
    }
    EXPECT_EQ(t->get(), 200);
    return t;
  }

  /// Over the real admin listener, with the operator token.
  http::response<http::string_body> admin(const std::string& method, const std::string& target,
                                          const std::string& body = "{}") {
    return raw_exchange(server_->server().admin_endpoint(),
                        admin_request(method, target, kToken, body));
  }
  nlohmann::json status() { return body_json(admin("GET", "/v1/status")); }

  /// Bounded: until every tunnel's closing record is written (5 s at most).
  bool tunnels_recorded(std::uint64_t open) {
    for (int i = 0; i < 500 && ctx()->open_tunnels.load() != open; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return ctx()->open_tunnels.load() == open;
  }

  /// The closing records of the CONNECTs in `run` that something ended (outcome aborted);
  /// a tunnel still open has only its decision record (outcome forwarded).
  std::vector<audit::Exchange> aborted_records(const std::string& run) {
    std::vector<audit::Exchange> out;
    for (const auto& ex : audit_->records()) {
      if (ex.request.method == "CONNECT" && ex.run == run && ex.outcome == "aborted") {
        out.push_back(ex);
      }
    }
    return out;
  }

  /// The agent's side of the tunnel is closed: the next request gets no answer, the read
  /// ending because the peer closed (not the 5 s timeout), and the upstream saw nothing.
  void expect_closed(AgentTunnel& t) {
    const int before = upstream_.requests();
    boost::system::error_code ec;
    EXPECT_EQ(t.get(&ec), 0);
    EXPECT_TRUE(closed_by_peer(ec)) << ec.message();
    EXPECT_EQ(upstream_.requests(), before);
  }

  TempDir dir_;
  std::shared_ptr<certs::Authority> upstream_ca_;
  std::string leaf_error_;
  std::shared_ptr<const certs::Leaf> leaf_;
  HelloUpstream upstream_;
  std::shared_ptr<MemoryAudit> audit_;
  std::unique_ptr<OpsServer> server_;
  net::io_context client_ioc_;
};

TEST_F(TunnelCloseTest, PauseClosesEveryOpenTunnelWithItsRecord) {
  auto a = open_tunnel("127.0.0.1", "run-a");
  auto b = open_tunnel("localhost", "run-b"); // read_only: paused closes it all the same
  ASSERT_EQ(upstream_.requests(), 2);
  auto st = status();
  EXPECT_EQ(st.value("open_tunnels", -1), 2) << st.dump();

  auto res = admin("POST", "/v1/mode", R"({"mode":"paused"})");
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  ASSERT_TRUE(tunnels_recorded(0));
  expect_closed(*a);
  expect_closed(*b);
  EXPECT_EQ(upstream_.requests(), 2);

  for (const std::string run : {"run-a", "run-b"}) {
    auto records = aborted_records(run);
    ASSERT_EQ(records.size(), 1u) << run;
    EXPECT_EQ(records[0].outcome, "aborted") << run;
    EXPECT_EQ(records[0].code, "paused") << run;
    EXPECT_NE(records[0].reason.find("paused"), std::string::npos) << records[0].reason;
    ASSERT_TRUE(records[0].response.has_value());
    EXPECT_GT(records[0].response->bytes, 0u); // the handshake and answer it carried
  }
  st = status();
  EXPECT_EQ(st.value("open_tunnels", -1), 0) << st.dump();
  // The mode_changed event counts what it closed.
  bool counted = false;
  for (const auto& [type, fields] : audit_->events()) {
    if (type == "mode_changed" && fields.value("to", "") == "paused") {
      counted = fields.value("tunnels_closed", -1) == 2;
    }
  }
  EXPECT_TRUE(counted);
}

TEST_F(TunnelCloseTest, KillClosesThatRunsTunnelsOnlyAndAnotherRunsTunnelGoesOn) {
  auto killed = open_tunnel("127.0.0.1", "doomed");
  auto also_killed = open_tunnel("localhost", "doomed");
  auto other = open_tunnel("127.0.0.1", "survivor");
  ASSERT_EQ(upstream_.requests(), 3);

  auto res = admin("POST", "/v1/runs/doomed/kill");
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  ASSERT_TRUE(tunnels_recorded(1));
  expect_closed(*killed);
  expect_closed(*also_killed);
  auto records = aborted_records("doomed");
  ASSERT_EQ(records.size(), 2u);
  for (const auto& r : records) {
    EXPECT_EQ(r.outcome, "aborted");
    EXPECT_EQ(r.code, "run_killed");
    EXPECT_NE(r.reason.find("doomed"), std::string::npos) << r.reason;
  }

  // The other run's tunnel still relays, and is still open (no closing record).
  EXPECT_EQ(other->get(), 200);
  EXPECT_EQ(upstream_.requests(), 4);
  EXPECT_TRUE(aborted_records("survivor").empty());
  EXPECT_EQ(status().value("open_tunnels", -1), 1);
}

// read_only lets only read_only actions pass. A new CONNECT judged as another class is
// refused read_only_mode, so an open tunnel of that class is closed; a tunnel whose CONNECT
// is a read_only action would be allowed anew, and stays.
TEST_F(TunnelCloseTest, ReadOnlyClosesTunnelsThatAreNotReadOnlyActions) {
  auto writes = open_tunnel("127.0.0.1", "r");
  auto reads = open_tunnel("localhost", "r");

  auto res = admin("POST", "/v1/mode", R"({"mode":"read_only"})");
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  ASSERT_TRUE(tunnels_recorded(1));
  expect_closed(*writes);
  auto records = aborted_records("r");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].action, "tunnel_writes");
  EXPECT_EQ(records[0].outcome, "aborted");
  EXPECT_EQ(records[0].code, "read_only_mode");

  EXPECT_EQ(reads->get(), 200);
  // Consistent with a new CONNECT in read_only: the writes tunnel is refused, reads allowed.
  AgentTunnel again(client_ioc_);
  EXPECT_EQ(send_connect(again, "127.0.0.1", upstream_.port(), "r"), 403u);
  auto fresh = open_tunnel("localhost", "r");
  EXPECT_EQ(fresh->get(), 200);
}

// GET /v1/status (and so `runwarden ctl status`) shows the pending holds and open tunnels.
TEST_F(TunnelCloseTest, StatusCountsPendingHoldsAndOpenTunnels) {
  auto st = status();
  EXPECT_EQ(st.value("pending_holds", -1), 0) << st.dump();
  EXPECT_EQ(st.value("open_tunnels", -1), 0) << st.dump();

  auto tunnel = open_tunnel("127.0.0.1", "r");
  AgentTunnel held(client_ioc_);
  held.socket.connect(server_->server().proxy_endpoint());
  set_timeouts(held.socket);
  const std::string authority = "127.0.0.1:" + std::to_string(kHeldPort);
  net::write(held.socket, net::buffer("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority +
                                      "\r\nRunwarden-Run: r\r\n\r\n"));
  for (int i = 0; i < 500 && status().value("pending_holds", -1) != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  st = status();
  EXPECT_EQ(st.value("pending_holds", -1), 1) << st.dump();
  EXPECT_EQ(st.value("open_tunnels", -1), 1) << st.dump();

  // Pausing ends both: the hold is denied (403 to the agent), the tunnel closed.
  ASSERT_EQ(admin("POST", "/v1/mode", R"({"mode":"paused"})").result_int(), 200u);
  http::response<http::string_body> refused;
  boost::system::error_code ec;
  http::read(held.socket, held.buffer, refused, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(refused.result_int(), 403u);
  ASSERT_TRUE(tunnels_recorded(0));
  st = status();
  EXPECT_EQ(st.value("pending_holds", -1), 0) << st.dump();
  EXPECT_EQ(st.value("open_tunnels", -1), 0) << st.dump();
}

// The transparent listener's passthrough tunnels (SNI listed, no CONNECT) are the same kind
// of tunnel: paused closes them too.
TEST_F(TunnelCloseTest, PauseClosesATransparentPassthroughTunnel) {
  tcp::acceptor acceptor(server_->ioc(), tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  AgentTunnel t(client_ioc_);
  t.socket.connect(acceptor.local_endpoint());
  set_timeouts(t.socket);
  tcp::socket accepted(server_->ioc());
  acceptor.accept(accepted);
  const tcp::endpoint original(net::ip::make_address("127.0.0.1"), upstream_.port());
  net::post(server_->ioc(), [c = ctx(), s = std::move(accepted), original]() mutable {
    start_transparent_session(std::move(c), std::move(s), original);
  });
  ASSERT_TRUE(t.handshake("localhost"));
  ASSERT_EQ(t.get(), 200);
  ASSERT_EQ(status().value("open_tunnels", -1), 1);

  ASSERT_EQ(admin("POST", "/v1/mode", R"({"mode":"paused"})").result_int(), 200u);
  ASSERT_TRUE(tunnels_recorded(0));
  expect_closed(t);
  std::vector<audit::Exchange> closing;
  for (const auto& ex : audit_->records()) {
    if (ex.outcome == "aborted") {
      closing.push_back(ex);
    }
  }
  ASSERT_EQ(closing.size(), 1u);
  EXPECT_EQ(closing[0].code, "paused");
}

} // namespace
} // namespace runwarden::proxy
