#include "proxy/transparent_session.hpp"

#include "policy/ascii.hpp"
#include "proxy/client_hello.hpp"
#include "proxy/log.hpp"
#include "proxy/responses.hpp"
#include "proxy/session.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <charconv>
#include <chrono>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sys/socket.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 // linux/netfilter_ipv6/ip6_tables.h
#endif

namespace runwarden::proxy {
namespace {

using policy::ascii_lower;

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 4096;

std::string random_id(std::string_view prefix) {
  std::array<unsigned char, 8> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    static std::atomic<std::uint64_t> counter{1};
    std::uint64_t v = counter.fetch_add(1) * 0x9E3779B97F4A7C15ull;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      raw[i] = static_cast<unsigned char>(v >> (i * 8));
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(prefix);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

/// v4-mapped IPv6 addresses compare as the IPv4 address they carry.
net::ip::address unmapped(const net::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6());
  }
  return a;
}

bool same_endpoint(const tcp::endpoint& a, const tcp::endpoint& b) {
  return a.port() == b.port() && unmapped(a.address()) == unmapped(b.address());
}

} // namespace

std::string address_text(const net::ip::address& address) {
  auto u = unmapped(address);
  return u.is_v6() ? "[" + u.to_string() + "]" : u.to_string();
}

std::string endpoint_text(const tcp::endpoint& endpoint) {
  return address_text(endpoint.address()) + ":" + std::to_string(endpoint.port());
}

std::optional<net::ip::address> ip_literal(std::string_view canonical_host) {
  boost::system::error_code ec;
  if (canonical_host.size() > 2 && canonical_host.front() == '[' && canonical_host.back() == ']') {
    auto a = net::ip::make_address_v6(canonical_host.substr(1, canonical_host.size() - 2), ec);
    return ec ? std::nullopt : std::optional<net::ip::address>(unmapped(a));
  }
  bool dotted = !canonical_host.empty() &&
                std::all_of(canonical_host.begin(), canonical_host.end(),
                            [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  if (!dotted) {
    return std::nullopt;
  }
  auto a = net::ip::make_address_v4(canonical_host, ec);
  return ec ? std::nullopt : std::optional<net::ip::address>(a);
}

bool split_authority(std::string_view text, std::uint16_t default_port, std::string& host,
                     std::uint16_t& port) {
  std::string_view host_part = text;
  std::string_view port_part;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    host_part = text.substr(0, close + 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return false;
      }
      port_part = rest.substr(1);
    }
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
  }
  port = default_port;
  if (!port_part.empty() || (text.size() > host_part.size())) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
    if (ec != std::errc{} || p != port_part.data() + port_part.size() || value == 0 ||
        value > 65535) {
      return false;
    }
    port = static_cast<std::uint16_t>(value);
  }
  return policy::normalize_host(host_part, host) == policy::NormalizeError::ok;
}

namespace {

class TransparentSession : public std::enable_shared_from_this<TransparentSession> {
public:
  TransparentSession(std::shared_ptr<ProxyContext> ctx, tcp::socket socket)
      : ctx_(std::move(ctx)), stream_(std::move(socket)), resolve_timer_(stream_.get_executor()) {
    conn_id_ = ctx_->next_conn_id.fetch_add(1);
    // Counted from accept, like an explicit connection: one still sending its first bytes
    // holds a descriptor and a session as much as one being served.
    ctx_->open_connections.fetch_add(1);
    counted_ = true;
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? std::string("unknown") : endpoint_text(ep);
  }
  ~TransparentSession() { uncount(); }
  TransparentSession(const TransparentSession&) = delete;
  TransparentSession& operator=(const TransparentSession&) = delete;

  /// `known`: the original destination when the caller already has it (tests over
  /// loopback, where nothing was redirected); otherwise it is asked of conntrack.
  void start(std::optional<tcp::endpoint> known = std::nullopt) {
    if (ctx_->open_connections.load() > limits().max_connections) {
      overload();
      return;
    }
    std::error_code ec;
    auto dst = known ? known : original_destination(stream_.socket(), ec);
    if (!dst) {
      refuse("no_original_destination",
             "the transparent listener only serves connections redirected by iptables "
             "(no original destination: " +
                 ec.message() + ")");
      return;
    }
    orig_ = *dst;
    beast::error_code lec;
    local_ = stream_.socket().local_endpoint(lec);
    // One deadline for the whole first-bytes phase, not one per read: a client trickling a
    // byte at a time must not hold the connection past limits.header_timeout.
    stream_.expires_after(limits().header_timeout);
    read_more();
  }

private:
  /// limits.* in force when the connection was accepted (a reload applies to the next).
  const config::Limits& limits() const { return limits_; }

  void uncount() {
    if (counted_) {
      counted_ = false;
      ctx_->open_connections.fetch_sub(1);
    }
  }

  /// Over limits.max_connections: the explicit listener's answer (503 overloaded, counted
  /// in rejected_connections), written before anything is read. A TLS client cannot read
  /// it, but it is refused all the same: the connection closes.
  void overload() {
    ctx_->rejected_connections.fetch_add(1);
    log_event(LogLevel::warn, "overload", conn_id_, {}, {{"peer", peer_}, {"transparent", "yes"}});
    const std::string body =
        error_body("overloaded", "too many open connections (limits.max_connections)", {});
    response_ = "HTTP/1.1 503 Service Unavailable\r\nServer: runwarden\r\n"
                "Content-Type: application/json\r\nRetry-After: " +
                std::to_string(retry_after_seconds("overloaded")) +
                "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
                "\r\n\r\n" + body;
    stream_.expires_after(std::chrono::seconds(5));
    net::async_write(
        stream_, net::buffer(response_),
        [self = shared_from_this()](beast::error_code, std::size_t) { self->close(); });
  }

  void read_more() {
    stream_.async_read_some(
        net::buffer(chunk_),
        [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, std::size_t n) {
    if (ec) {
      log_event(LogLevel::info, "transparent_closed", conn_id_, {},
                {{"peer", peer_}, {"error", ec.message()}});
      return;
    }
    early_.append(chunk_.data(), n);
    switch (classify_first_bytes(early_)) {
    case FirstBytes::need_more:
      read_more();
      return;
    case FirstBytes::unknown:
      refuse("unsupported_protocol",
             "the first bytes are neither a TLS ClientHello nor an HTTP/1.x request");
      return;
    case FirstBytes::tls:
      on_tls();
      return;
    case FirstBytes::http:
      on_http();
      return;
    }
  }

  void on_tls() {
    tls_ = true;
    auto hello = parse_client_hello(early_);
    if (hello.status == HelloStatus::need_more) {
      read_more();
      return;
    }
    if (hello.status != HelloStatus::ok) {
      refuse("bad_client_hello", "TLS ClientHello refused: " + hello.error);
      return;
    }
    port_ = orig_.port();
    if (!hello.has_sni) {
      std::string address = address_text(orig_.address());
      if (listed_passthrough(address)) {
        // The name is the destination's own address: the IP-literal check passes it.
        name_ = address;
        check_loop_then(TransparentKind::passthrough);
        return;
      }
      refuse("sni_required", "TLS without SNI is refused unless the destination " + address +
                                 " is listed in tls.passthrough");
      return;
    }
    if (policy::normalize_host(hello.sni, name_) != policy::NormalizeError::ok) {
      refuse("bad_sni", "TLS SNI \"" + hello.sni + "\" is not a valid host name");
      return;
    }
    // As a CONNECT to that host would be (DESIGN §2: decided on host alone): a client that
    // pins the upstream's certificate must reach the upstream, not a minted leaf.
    check_loop_then(listed_passthrough(name_) ? TransparentKind::passthrough
                                              : TransparentKind::tls);
  }

  /// Against the live tls.passthrough: a reload that takes a host out of it applies to the
  /// next connection, as it does for the explicit proxy's CONNECT.
  bool listed_passthrough(std::string_view host) const {
    return live_config(*ctx_)->tls.passes_through(host);
  }

  void on_http() {
    auto end = early_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (early_.size() > limits().header_bytes) {
        refuse("header_too_large", "request header larger than limits.header_bytes");
        return;
      }
      read_more();
      return;
    }
    std::string_view head(early_.data(), end + 4);
    method_ = std::string(head.substr(0, head.find(' ')));
    auto host = find_host_field(head);
    if (host.status != HostField::Status::ok) {
      refuse(host.status == HostField::Status::duplicate ? "duplicate_host" : "missing_host",
             "a transparent HTTP request needs exactly one Host header");
      return;
    }
    std::string host_text(host.value);
    if (!split_authority(host_text, 80, name_, port_)) {
      refuse("bad_host_header", "Host header \"" + host_text + "\" is not a valid authority");
      return;
    }
    if (port_ != orig_.port()) {
      refuse("destination_mismatch", "Host port " + std::to_string(port_) +
                                         " differs from the original destination port " +
                                         std::to_string(orig_.port()));
      return;
    }
    check_loop_then(TransparentKind::http);
  }

  bool is_own_listener() const {
    if (same_endpoint(orig_, local_)) {
      return true; // not redirected at all: someone dialled the transparent port itself
    }
    if (ctx_->own_ports.count(orig_.port()) == 0) {
      return false;
    }
    auto a = unmapped(orig_.address());
    boost::system::error_code ec;
    auto own = net::ip::make_address(ctx_->own_host, ec);
    return a.is_loopback() || a.is_unspecified() || a == unmapped(local_.address()) ||
           (!ec && a == unmapped(own));
  }

  void check_loop_then(TransparentKind kind) {
    kind_ = kind;
    if (is_own_listener()) {
      refuse("loop_refused", "the original destination " + address_text(orig_.address()) + ":" +
                                 std::to_string(orig_.port()) + " is runwarden's own listener");
      return;
    }
    // Every kind, passthrough included, must name the original destination: a listed SNI
    // sent to any other address would otherwise buy an unjudged tunnel there. Without SNI the
    // name is the destination's address, so the literal comparison passes it.
    if (auto literal = ip_literal(name_)) {
      // An IP literal names exactly one address: no resolution, and the forms
      // "[FD00:0::2]" and "[fd00::2]" (or "[::ffff:10.0.0.1]" and "10.0.0.1") are equal.
      if (*literal == unmapped(orig_.address())) {
        hand_over();
      } else {
        mismatch("the name is an IP literal that differs from it");
      }
      return;
    }
    // The stream's own deadline covers only operations on the stream, not the lookup: a
    // resolver that never answers would hold the connection (and a max_connections slot).
    resolve_timer_.expires_after(limits().upstream_connect_timeout);
    resolve_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      // The answer and the timer can both be queued: whichever runs first settles it.
      if (!ec && !self->resolve_settled_) {
        self->resolve_settled_ = true;
        self->lookup_ticket_->store(false);
        // Refused now: a lookup already running cannot be cut short (it completes later,
        // and its answer is then ignored), only the connection can.
        self->mismatch("the name did not resolve within limits.upstream_connect_timeout");
      }
    });
    lookup_ticket_ = ctx_->lookups->async_resolve(
        name_, std::to_string(port_), stream_.get_executor(),
        [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type results) {
          if (self->resolve_settled_) {
            return; // refused when the timer fired
          }
          self->resolve_settled_ = true;
          self->resolve_timer_.cancel();
          self->on_resolve(ec, std::move(results));
        });
  }

  void on_resolve(beast::error_code ec, const tcp::resolver::results_type& results) {
    if (ec) {
      mismatch("the name does not resolve (" + ec.message() + ")");
      return;
    }
    auto want = unmapped(orig_.address());
    for (const auto& entry : results) {
      if (unmapped(entry.endpoint().address()) == want) {
        hand_over();
        return;
      }
    }
    mismatch("the name resolves to other addresses");
  }

  void mismatch(const std::string& why) {
    refuse("destination_mismatch", std::string(tls_ ? "TLS SNI" : "Host") + " \"" + name_ +
                                       "\" does not name the original destination " +
                                       address_text(orig_.address()) + ":" +
                                       std::to_string(orig_.port()) + ": " + why);
  }

  void hand_over() {
    log_event(LogLevel::info, "transparent", conn_id_, {},
              {{"peer", peer_},
               {"destination", address_text(orig_.address()) + ":" + std::to_string(orig_.port())},
               {"name", name_},
               {"mode", kind_ == TransparentKind::http  ? "http"
                        : kind_ == TransparentKind::tls ? "intercept"
                                                        : "passthrough"}});
    TransparentHandoff handoff;
    handoff.kind = kind_;
    handoff.host = name_;
    handoff.port = orig_.port();
    handoff.destination = orig_;
    handoff.early = std::move(early_);
    handoff.conn_id = conn_id_;
    handoff.peer = peer_;
    stream_.expires_never();
    uncount(); // the exchange counts the connection from here on
    start_transparent_exchange(ctx_, std::move(stream_), std::move(handoff));
  }

  /// Refused before the request machinery: one audit record (outcome refused), then a 403
  /// JSON answer to a plain HTTP client, or just a close for TLS and unknown protocols.
  void refuse(const std::string& code, const std::string& reason) {
    std::string req_id = random_id("req_");
    log_event(LogLevel::info, "refused", conn_id_, req_id,
              {{"code", code}, {"peer", peer_}, {"name", name_}});
    audit::Exchange ex;
    ex.id = req_id;
    ex.run = random_id("run_");
    ex.agent = ctx_->config->agent_id;
    // The runbook in force now (a reload may have changed it), as the explicit listener's
    // records name it.
    ex.runbook =
        ctx_->runtime ? ctx_->runtime->config()->active_runbook : ctx_->config->active_runbook;
    ex.outcome = "refused";
    ex.code = code;
    ex.reason = reason;
    ex.client = peer_;
    ex.request.method = tls_ ? "CONNECT" : method_;
    std::string dst = orig_.port() == 0
                          ? std::string()
                          : address_text(orig_.address()) + ":" + std::to_string(orig_.port());
    std::string authority = name_.empty() ? dst : name_ + ":" + std::to_string(orig_.port());
    ex.request.url =
        authority.empty() ? std::string() : (tls_ ? "https://" : "http://") + authority + "/";
    bool answer = !method_.empty() && !tls_;
    std::string body;
    if (answer) {
      body = error_body(code, reason, req_id);
      ex.response = audit::ResponseInfo{};
      ex.response->status = 403;
      ex.response->headers = {{"content-type", "application/json"}};
      ex.response->body = body;
      ex.response->bytes = body.size();
    }
    ex.timing.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
    auto exec = stream_.get_executor();
    ctx_->audit->record(ex, true,
                        [self = shared_from_this(), exec, answer,
                         body = std::move(body)](std::error_code aec) mutable {
                          net::post(exec, [self, aec, answer, body = std::move(body)]() mutable {
                            if (aec) {
                              log_event(LogLevel::error, "audit_failed", self->conn_id_, {},
                                        {{"error", aec.message()}});
                            }
                            if (!answer) {
                              self->close();
                              return;
                            }
                            self->answer(std::move(body));
                          });
                        });
  }

  void answer(std::string body) {
    response_ = "HTTP/1.1 403 Forbidden\r\nServer: runwarden\r\n"
                "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body;
    stream_.expires_after(limits().idle_timeout);
    net::async_write(
        stream_, net::buffer(response_),
        [self = shared_from_this()](beast::error_code, std::size_t) { self->close(); });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    uncount(); // closed: no longer holds a max_connections slot, even while a lookup runs
  }

  std::shared_ptr<ProxyContext> ctx_;
  config::Limits limits_ = live_config(*ctx_)->limits;
  beast::tcp_stream stream_;
  net::steady_timer resolve_timer_;
  bool resolve_settled_ = false; // the lookup's answer or its deadline came first
  NameLookup::Ticket lookup_ticket_;
  std::uint64_t conn_id_ = 0;
  std::string peer_;
  tcp::endpoint orig_;
  tcp::endpoint local_;
  std::array<char, kReadChunk> chunk_{};
  std::string early_;
  std::string method_;
  std::string name_;
  std::string response_;
  std::uint16_t port_ = 0;
  bool tls_ = false;
  TransparentKind kind_ = TransparentKind::http;
  bool counted_ = false; // in ctx_->open_connections until handed over or gone
  Clock::time_point started_ = Clock::now();
};

} // namespace

std::optional<tcp::endpoint> original_destination(tcp::socket& socket, std::error_code& ec) {
  ec.clear();
  int fd = socket.native_handle();
  boost::system::error_code lec;
  auto local = socket.local_endpoint(lec);
  if (lec) {
    ec = std::error_code(lec.value(), std::generic_category());
    return std::nullopt;
  }
  if (local.address().is_v6() && !local.address().to_v6().is_v4_mapped()) {
    sockaddr_in6 addr{};
    socklen_t len = sizeof addr;
    if (::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &addr, &len) != 0) {
      ec = std::error_code(errno, std::generic_category());
      return std::nullopt;
    }
    net::ip::address_v6::bytes_type bytes{};
    std::copy(std::begin(addr.sin6_addr.s6_addr), std::end(addr.sin6_addr.s6_addr), bytes.begin());
    return tcp::endpoint(net::ip::address_v6(bytes), ntohs(addr.sin6_port));
  }
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0) {
    ec = std::error_code(errno, std::generic_category());
    return std::nullopt;
  }
  return tcp::endpoint(net::ip::address_v4(ntohl(addr.sin_addr.s_addr)), ntohs(addr.sin_port));
}

HostField find_host_field(std::string_view head) {
  HostField out;
  auto end = head.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return out; // incomplete
  }
  out.status = HostField::Status::missing;
  std::string_view rest = head.substr(0, end + 2);
  auto first = rest.find("\r\n");
  rest.remove_prefix(first + 2); // the request line
  while (!rest.empty()) {
    auto eol = rest.find("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    auto colon = line.find(':');
    if (colon != 4) {
      continue;
    }
    std::string_view name = line.substr(0, 4);
    bool is_host = ascii_lower(name[0]) == 'h' && ascii_lower(name[1]) == 'o' &&
                   ascii_lower(name[2]) == 's' && ascii_lower(name[3]) == 't';
    if (!is_host) {
      continue;
    }
    if (out.status == HostField::Status::ok) {
      out.status = HostField::Status::duplicate;
      out.value = {};
      return out;
    }
    out.status = HostField::Status::ok;
    out.value = trim(line.substr(colon + 1));
  }
  return out;
}

void start_transparent_session(std::shared_ptr<ProxyContext> ctx, tcp::socket socket) {
  std::make_shared<TransparentSession>(std::move(ctx), std::move(socket))->start();
}

void start_transparent_session(std::shared_ptr<ProxyContext> ctx, tcp::socket socket,
                               const tcp::endpoint& original_destination) {
  std::make_shared<TransparentSession>(std::move(ctx), std::move(socket))
      ->start(original_destination);
}

} // namespace runwarden::proxy
