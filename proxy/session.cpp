// The data plane: explicit-proxy sessions (absolute-form HTTP and CONNECT), TLS interception
// sessions, passthrough tunnels and the upstream relay. The only translation unit that
// instantiates Beast's HTTP templates for the proxy, to keep builds short.

#include "proxy/session.hpp"

#include "audit/digest.hpp"
#include "certs/authority.hpp"
#include "policy/ascii.hpp"
#include "policy/strict_json.hpp"
#include "proxy/admin_ops.hpp"
#include "proxy/in_flight.hpp"
#include "proxy/log.hpp"
#include "proxy/responses.hpp"
#include "proxy/transparent_session.hpp"
#include "proxy/upstream_pool.hpp"
#include "proxy/wire_head.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/uio.h>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace runwarden::proxy {
namespace {

using policy::iequals;
using policy::trim_ows;

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kRelayBuffer = 16 * 1024;
constexpr std::size_t kKeptAgentBuffer = 4 * 1024; // what an agent connection keeps after a body
/// A streamed body (a response, an upload judged on its head) is kept this far past
/// audit.body_bytes for its record: the audit redacts what it is given and only then cuts
/// the excerpt, so a secret that straddles the cut is found whole (an API key, a JWT, a PEM
/// block of up to this size) rather than left as a readable head.
constexpr std::size_t kRedactionMargin = 4 * 1024;
/// A chunked body's framing (a chunk-size line with its extensions, the trailer), relayed or
/// buffered, may hold at most this much in the read buffer before it is refused as malformed.
constexpr std::size_t kMaxChunkFraming = 64 * 1024;
constexpr std::uint32_t kUpstreamHeaderLimit = 64 * 1024;
constexpr int kMaxInterimResponses = 8;
constexpr std::chrono::seconds kLingerTimeout{2};
constexpr std::size_t kLingerBytes = 256 * 1024;
constexpr std::string_view kConnectOk = "HTTP/1.1 200 Connection Established\r\n\r\n";
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::chrono::milliseconds kHeldRecheck{250}; // held with bytes pending: re-poll

/// Request and run ids: "<prefix>" + 16 hex digits. Ids are correlation handles, not
/// secrets; RAND_bytes per id cost a getpid(2) and the RNG lock on every request. Instead one
/// random 64-bit key per process plus a counter, through a bijective mix: unique within a
/// process (the mix is a permutation of the counter), unrelated across processes, and not
/// visibly sequential.
void next_id_into(std::string& out, std::string_view prefix) {
  static const std::uint64_t key = [] {
    std::uint64_t k = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&k), sizeof k) != 1) {
      k = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) ^
          (static_cast<std::uint64_t>(::getpid()) << 32);
    }
    return k;
  }();
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t v = key + counter.fetch_add(1, std::memory_order_relaxed);
  // splitmix64 finalizer: a bijection on 64-bit values.
  v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ull;
  v = (v ^ (v >> 27)) * 0x94D049BB133111EBull;
  v ^= v >> 31;
  static constexpr char kHex[] = "0123456789abcdef";
  out.clear();
  out.append(prefix);
  for (int shift = 60; shift >= 0; shift -= 4) {
    out.push_back(kHex[(v >> shift) & 0xF]);
  }
}

/// A fresh id; next_id_into reuses a string's storage (one allocation less per request).
std::string next_id(std::string_view prefix) {
  std::string out;
  out.reserve(prefix.size() + 16);
  next_id_into(out, prefix);
  return out;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

/// A held MCP call's JSON-RPC errors say how the hold ended (approval_denied, ...) and
/// carry the approval id, instead of the engine's approval_required.
std::string jsonrpc_hold_outcome(const std::string& body, const std::string& code,
                                 const std::string& reason, const std::string& approval_id) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return body;
  }
  auto fix = [&](nlohmann::json& e) {
    if (!e.is_object() || !e.contains("error") || !e["error"].contains("data")) {
      return;
    }
    auto& err = e["error"];
    if (err["data"].value("code", "") != "approval_required") {
      return;
    }
    err["message"] = code + ": " + reason;
    err["data"]["error"] = code;
    err["data"]["code"] = code;
    if (!approval_id.empty()) {
      err["data"]["approval_id"] = approval_id;
    }
  };
  if (j.is_array()) {
    for (auto& e : j) {
      fix(e);
    }
  } else {
    fix(j);
  }
  return j.dump();
}

/// "host:port" or "[v6]:port" -> canonical host and port; the port may be optional.
bool parse_authority(std::string_view text, bool port_required, std::uint16_t default_port,
                     std::string& host, std::uint16_t& port, std::string& why) {
  std::string_view host_part = text;
  std::string_view port_part;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      why = "unterminated IPv6 literal";
      return false;
    }
    host_part = text.substr(0, close + 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        why = "junk after IPv6 literal";
        return false;
      }
      port_part = rest.substr(1);
    }
  } else {
    auto colon = text.rfind(':');
    if (colon != std::string_view::npos) {
      host_part = text.substr(0, colon);
      port_part = text.substr(colon + 1);
      if (port_part.empty()) {
        why = "empty port";
        return false;
      }
    }
  }
  if (port_part.empty()) {
    if (port_required) {
      why = "port required";
      return false;
    }
    port = default_port;
  } else {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
    if (ec != std::errc{} || p != port_part.data() + port_part.size() || value == 0 ||
        value > 65535) {
      why = "bad port";
      return false;
    }
    port = static_cast<std::uint16_t>(value);
  }
  auto err = policy::normalize_host(host_part, host);
  if (err != policy::NormalizeError::ok) {
    why = std::string(policy::to_string(err));
    return false;
  }
  return true;
}

std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

bool is_ip_literal(const std::string& host) {
  if (!host.empty() && host.front() == '[') {
    return true;
  }
  return !host.empty() && std::all_of(host.begin(), host.end(),
                                      [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

bool is_orderly_close(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == ssl::error::stream_truncated || ec == net::error::operation_aborted ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

/// Decrements the open-connection count when the last session of a connection ends.
struct ConnectionToken {
  explicit ConnectionToken(std::shared_ptr<ProxyContext> c) : ctx(std::move(c)) {}
  ~ConnectionToken() { ctx->open_connections.fetch_sub(1); }
  ConnectionToken(const ConnectionToken&) = delete;
  ConnectionToken& operator=(const ConnectionToken&) = delete;
  std::shared_ptr<ProxyContext> ctx;
};

struct ConnInfo {
  std::shared_ptr<ConnectionToken> token;
  std::uint64_t id = 0;
  std::string peer;
  std::string run;        // run id assigned to the connection (or from Runwarden-Run on CONNECT)
  bool run_given = false; // the CONNECT named the run: its inner requests belong to it
};

struct Target {
  std::string host;
  std::uint16_t port = 0;
};

bool is_loop(const ProxyContext& ctx, const std::string& host, std::uint16_t port) {
  if (ctx.own_ports.count(port) == 0) {
    return false;
  }
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]" ||
         host == "0.0.0.0" || host == "[::]" || host == ctx.own_host;
}

// ---------------------------------------------------------------------------------------
// Passthrough tunnel: bytes both ways, decided on host:port alone.

class TunnelSession : public std::enable_shared_from_this<TunnelSession>,
                      public InFlightExchange,
                      public ClosableTunnel {
public:
  /// `idle_timeout`: limits.idle_timeout of the config that judged the CONNECT (a reload
  /// later does not change it for this tunnel).
  TunnelSession(std::shared_ptr<ProxyContext> ctx, ConnInfo conn, PlainStream client,
                PlainStream upstream, audit::Exchange exchange, std::string host,
                std::chrono::milliseconds idle_timeout)
      : ctx_(std::move(ctx)), conn_(std::move(conn)), client_(std::move(client)),
        upstream_(std::move(upstream)), exchange_(std::move(exchange)), host_(std::move(host)),
        idle_timeout_(idle_timeout) {}

  ~TunnelSession() override {
    // Unlinked by finish(), unless the io_context went away first (its services outlive the
    // handlers it destroys, so the list is still there). After finish() the last reference
    // may drop on the audit writer's thread: the list is not touched then.
    if (list_ != nullptr && in_flight_linked()) {
      list_->remove(*this);
    }
    if (!finished_ && registry_key_ != 0) {
      ctx_->tunnels.remove(registry_key_); // the shared registry: safe from any thread
    }
  }

  /// A drain that ends with the tunnel open closes it here, with its closing record.
  void abort_for_shutdown() override { close_for(shutdown_close()); }
  std::shared_ptr<InFlightExchange> lock_exchange() override { return weak_from_this().lock(); }

  /// Pausing, a kill of its run or read_only closes it (admin_ops.cpp), as the drain does.
  void close_for(TunnelClose why, std::shared_ptr<ClosableTunnel> keep = nullptr) override {
    net::dispatch(client_.get_executor(),
                  [self = shared_from_this(), keep = std::move(keep), why = std::move(why)] {
                    if (!self->finished_) {
                      self->abort_ = why;
                      self->finish({});
                    }
                  });
  }

  void start(std::string early_bytes) {
    ctx_->open_tunnels.fetch_add(1);
    list_ = &net::use_service<InFlightExchanges>(
        net::query(client_.get_executor(), net::execution::context));
    list_->add(*this);
    registry_key_ = ctx_->tunnels.add(
        {exchange_.run, exchange_.cls == policy::to_string(policy::ActionClass::read_only), host_,
         weak_from_this()});
    if (ctx_->closing_tunnels.load()) {
      // The drain already told every linked tunnel to close: this one missed that call.
      abort_ = shutdown_close();
      finish({});
      return;
    }
    // Linked first, checked second: an operations change made while this CONNECT was being
    // dialled either finds the tunnel in the registry or is seen here.
    if (auto why = refused_now()) {
      abort_ = std::move(why);
      finish({});
      return;
    }
    early_ = std::move(early_bytes);
    if (early_.empty()) {
      pump(true);
      pump(false);
      return;
    }
    upstream_.expires_after(idle_timeout_);
    net::async_write(upstream_, net::buffer(early_),
                     [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                       self->up_bytes_ += n;
                       if (ec) {
                         self->finish(ec);
                         return;
                       }
                       self->pump(true);
                       self->pump(false);
                     });
  }

private:
  static TunnelClose shutdown_close() {
    return {"shutdown", "runwarden shut down with the tunnel open (the drain ended)"};
  }

  /// Whether the mode or a kill would refuse this tunnel's CONNECT now.
  std::optional<TunnelClose> refused_now() const {
    const policy::Mode mode = ctx_->mode.load();
    if (mode == policy::Mode::paused) {
      return paused_tunnel_close();
    }
    // A reload that took the host out of tls.passthrough after this CONNECT was judged.
    if (ctx_->runtime && !ctx_->runtime->config()->tls.passes_through(host_)) {
      return passthrough_removed_tunnel_close();
    }
    if (ctx_->runtime && ctx_->runtime->run_killed(exchange_.run)) {
      return run_killed_tunnel_close(exchange_.run);
    }
    if (mode == policy::Mode::read_only &&
        exchange_.cls != policy::to_string(policy::ActionClass::read_only)) {
      return read_only_tunnel_close();
    }
    return std::nullopt;
  }

  void pump(bool from_client) {
    auto& from = from_client ? client_ : upstream_;
    auto& buf = from_client ? to_up_ : to_client_;
    from.expires_after(idle_timeout_);
    from.async_read_some(net::buffer(buf), [self = shared_from_this(),
                                            from_client](beast::error_code ec, std::size_t n) {
      self->on_read(from_client, ec, n);
    });
  }

  void on_read(bool from_client, beast::error_code ec, std::size_t n) {
    auto& to = from_client ? upstream_ : client_;
    if (ec) {
      beast::error_code ignored;
      to.socket().shutdown(tcp::socket::shutdown_send, ignored);
      if (!is_orderly_close(ec)) {
        error_ = ec;
      }
      if (--open_dirs_ == 0) {
        finish(error_);
      }
      return;
    }
    (from_client ? up_bytes_ : down_bytes_) += n;
    auto& buf = from_client ? to_up_ : to_client_;
    to.expires_after(idle_timeout_);
    net::async_write(to, net::buffer(buf.data(), n),
                     [self = shared_from_this(), from_client](beast::error_code wec, std::size_t) {
                       if (wec) {
                         self->error_ = wec;
                         beast::error_code ignored;
                         self->client_.socket().close(ignored);
                         self->upstream_.socket().close(ignored);
                         if (--self->open_dirs_ == 0) {
                           self->finish(wec);
                         }
                         return;
                       }
                       self->pump(from_client);
                     });
  }

  void finish(beast::error_code ec) {
    if (finished_) {
      return;
    }
    finished_ = true;
    beast::error_code ignored;
    client_.socket().close(ignored);
    upstream_.socket().close(ignored);
    exchange_.response = audit::ResponseInfo{};
    exchange_.response->status = 200;
    exchange_.response->bytes = down_bytes_;
    exchange_.request.body_bytes = up_bytes_;
    exchange_.timing.total_ms = ms_since(started_);
    const char* event = "tunnel_closed";
    if (abort_) {
      exchange_.outcome = "aborted";
      exchange_.code = abort_->code;
      exchange_.reason = abort_->reason;
      event = abort_->code == "shutdown" ? "tunnel_aborted_at_shutdown" : "tunnel_aborted";
    } else if (ec) {
      exchange_.outcome = "upstream_error";
      exchange_.reason = "tunnel: " + ec.message();
    }
    log_event(LogLevel::info, event, conn_.id, exchange_.id,
              {{"up_bytes", std::to_string(up_bytes_)},
               {"down_bytes", std::to_string(down_bytes_)},
               {"code", abort_ ? abort_->code : std::string()}});
    // Unlinked here, on its own thread: the record's completion may run on the audit
    // writer's thread after the drain, when the list's io_context may be gone. The tunnel
    // still counts as open until its record is written, so a drain waits for the record.
    list_->remove(*this);
    ctx_->tunnels.remove(registry_key_);
    // The completion may run on another thread (see audit::Completion): it gets copies.
    ctx_->audit->record(
        exchange_, true,
        [hold = shared_from_this(), conn = conn_.id, id = exchange_.id](std::error_code aec) {
          if (aec) {
            log_event(LogLevel::error, "audit_failed", conn, id, {{"error", aec.message()}});
          }
          hold->ctx_->open_tunnels.fetch_sub(1);
        });
  }

  std::shared_ptr<ProxyContext> ctx_;
  ConnInfo conn_;
  PlainStream client_;
  PlainStream upstream_;
  audit::Exchange exchange_;
  std::string host_; // the tls.passthrough host it was opened for
  std::chrono::milliseconds idle_timeout_;
  std::string early_;
  std::array<char, kRelayBuffer> to_up_{};
  std::array<char, kRelayBuffer> to_client_{};
  std::uint64_t up_bytes_ = 0;
  std::uint64_t down_bytes_ = 0;
  int open_dirs_ = 2;
  bool finished_ = false;
  /// Set when the drain or an operations change ended it (abort_for_shutdown, close_for).
  std::optional<TunnelClose> abort_;
  InFlightExchanges* list_ = nullptr;
  std::uint64_t registry_key_ = 0; // in ctx_->tunnels
  beast::error_code error_;
  Clock::time_point started_ = Clock::now();
};

// ---------------------------------------------------------------------------------------
// HTTP session, over the plain proxy connection or inside an intercepted TLS tunnel.

template <class Stream>
class HttpSession : public std::enable_shared_from_this<HttpSession<Stream>>,
                    public InFlightExchange {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  // Plain forward proxy -> http upstream; intercepted TLS -> https upstream.
  using UpStream = Stream;

  using Upstream = UpstreamConn<UpStream>;

public:
  /// Plain proxy connection.
  HttpSession(std::shared_ptr<ProxyContext> ctx, ConnInfo conn,
              tcp::socket&& socket) requires(!kTls)
      : ctx_(std::move(ctx)), conn_(std::move(conn)), stream_(std::move(socket)),
        deadline_timer_(stream_.get_executor()), io_exec_(io_executor(stream_.get_executor())) {}

  /// Intercepted tunnel: takes over the plain stream and the bytes already read.
  HttpSession(std::shared_ptr<ProxyContext> ctx, ConnInfo conn, PlainStream&& plain,
              beast::flat_buffer&& buffer, Target target) requires(kTls)
      : ctx_(std::move(ctx)), conn_(std::move(conn)), stream_(std::move(plain), *ctx_->server_tls),
        buffer_(std::move(buffer)), deadline_timer_(stream_.get_executor()),
        io_exec_(io_executor(stream_.get_executor())), target_(std::move(target)) {}

  /// Transparent plain HTTP: the stream, the bytes already read, and the target checked
  /// against the original destination. Requests are origin-form for that target only.
  HttpSession(std::shared_ptr<ProxyContext> ctx, ConnInfo conn, PlainStream&& plain,
              beast::flat_buffer&& buffer, Target target, bool transparent) requires(!kTls)
      : ctx_(std::move(ctx)), conn_(std::move(conn)), stream_(std::move(plain)),
        buffer_(std::move(buffer)), deadline_timer_(stream_.get_executor()),
        io_exec_(io_executor(stream_.get_executor())), target_(std::move(target)),
        transparent_(transparent) {}

  ~HttpSession() {
    // Unlinked already unless the session ended with an exchange in flight (its io_context
    // being destroyed): then the list still exists. Never touched once unlinked, so a
    // session whose last reference drops on the audit writer's thread at exit does not
    // reach into a destroyed io_context's service.
    if (in_flight_list_ != nullptr && in_flight_linked()) {
      in_flight_list_->remove(*this);
    }
  }

  std::shared_ptr<InFlightExchange> lock_exchange() override {
    return this->weak_from_this().lock();
  }

  /// The drain's grace period ran out with this exchange in flight (server.cpp): it ends
  /// now, with its record, instead of the process stopping under it unrecorded.
  void abort_for_shutdown() override {
    net::dispatch(stream_.get_executor(),
                  [self = this->shared_from_this()] { self->on_shutdown_abort(); });
  }

  /// Transparent passthrough (TLS whose SNI, or without SNI whose address, is in
  /// tls.passthrough): decided like a CONNECT to that host, then tunnelled without a CONNECT
  /// answer to `destination`, the address the agent dialled and the name was checked against
  /// (a fresh resolution of the name could answer another address).
  void start_transparent_tunnel(const tcp::endpoint& destination) requires(!kTls) {
    reset_exchange();
    dial_ = destination;
    ctx_->requests.fetch_add(1);
    describe_connect(target_);
    raw_url_ = target_.host + ":" + std::to_string(target_.port);
    have_request_ = true;
    tunnel_ = true;
    tunnel_host_ = target_.host;
    // No header can name the run here: under agent.runs shared the tunnel joins the agent's
    // run; otherwise (required too) it is the connection's own.
    if (policy_->run_ids == config::RunIds::shared) {
      run_ = ctx_->config->agent_id;
    }
    if (refused_for_drain()) {
      return;
    }
    // The listener chose passthrough on the config it read; this exchange judges with the
    // config now in force, and a reload in between may have taken the host out.
    if (!policy_->tls.passes_through(target_.host)) {
      refuse(http::status::service_unavailable, "passthrough_changed",
             "tls.passthrough no longer lists " + target_.host + " (reloaded): reconnect");
      return;
    }
    decide();
  }

  void start() {
    if constexpr (kTls) {
      start_tls();
    } else {
      do_read();
    }
  }

private:
  using Self = HttpSession<Stream>;

  /// limits.* as reloaded (DESIGN §7): the values in force when the session began waiting
  /// for this request (header_bytes, header_timeout, the idle_timeout between requests),
  /// then, from its head on, those of the config snapshot that judges it (policy_).
  const config::Limits& limits() const { return limits_; }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  template <class F> auto bind(F f) {
    return beast::bind_front_handler(f, this->shared_from_this());
  }

  /// Runs f now when called on the session's thread (an audit completion at `written`
  /// durability usually is), else dispatches it there. Checking the concrete io_context
  /// executor first skips the type-erased any_io_executor copy and the function wrapper
  /// that net::dispatch through it costs per call.
  ///
  /// Safe to call from any thread: it reads only io_exec_ (const) and the stream's executor,
  /// which no operation changes (the stream moves to another session only between
  /// exchanges, never while an audit completion is pending).
  template <class F> void on_session_thread(F&& f) {
    if (io_exec_ && io_exec_->running_in_this_thread()) {
      f();
      return;
    }
    net::dispatch(stream_.get_executor(), std::forward<F>(f));
  }

  /// The session's io_context executor when it runs on one (not on a strand).
  static std::optional<net::io_context::executor_type> io_executor(const net::any_io_executor& ex) {
    if (const auto* io = ex.template target<net::io_context::executor_type>()) {
      return *io;
    }
    return std::nullopt;
  }

  // --- deadlines ----------------------------------------------------------------------
  // One timer per session instead of Beast's per-operation stream timers: a stream timer
  // is armed and cancelled around every read and write, and each cancel is one more
  // completion through the scheduler (with several threads, a wake-up). Here each
  // operation only moves deadline_; the timer is re-armed when it fires before the
  // deadline, or when a deadline is earlier than the pending expiry. Every limit is still
  // enforced to the timer's resolution; a timeout cancels the watched operation, whose
  // handler then sees beast::error::timeout (see timed_out()).

  enum class Watch : std::uint8_t { none, client, upstream, resolve };

  /// The next operation on `what` must complete within `d`.
  void arm(Watch what, std::chrono::milliseconds d) {
    watch_ = what;
    timed_out_ = false;
    deadline_ = Clock::now() + d;
    if (timer_waiting_ && timer_at_ <= deadline_) {
      return; // fires first, then re-arms for deadline_
    }
    start_deadline_timer();
  }

  /// Nothing is watched (held, handed over, or between exchanges without a read).
  void disarm() { watch_ = Watch::none; }

  void start_deadline_timer() {
    timer_at_ = deadline_;
    timer_waiting_ = true;
    deadline_timer_.expires_at(deadline_); // cancels a pending wait: its handler ignores it
    deadline_timer_.async_wait([weak = this->weak_from_this()](beast::error_code ec) {
      if (ec == net::error::operation_aborted) {
        return; // re-armed earlier (a newer wait is pending) or the session is gone
      }
      if (auto self = weak.lock()) {
        self->on_deadline();
      }
    });
  }

  void on_deadline() {
    timer_waiting_ = false;
    if (watch_ == Watch::none) {
      return;
    }
    if (Clock::now() < deadline_) {
      start_deadline_timer();
      return;
    }
    timed_out_ = true;
    Watch what = watch_;
    watch_ = Watch::none;
    beast::error_code ignored;
    switch (what) {
    case Watch::client:
      lowest().socket().cancel(ignored);
      break;
    case Watch::upstream:
      if (up_) {
        beast::get_lowest_layer(up_->stream).socket().cancel(ignored);
      }
      break;
    case Watch::resolve:
      // A lookup already running cannot be cut short: the exchange fails now, and the
      // lookup's late answer is dropped (lookup_seq_ moved on).
      ++lookup_seq_;
      if (lookup_ticket_) {
        lookup_ticket_->store(false); // not started yet: skipped; else its answer is dropped
      }
      on_resolve(net::error::operation_aborted, {});
      break;
    case Watch::none:
      break;
    }
  }

  /// An operation cancelled by the deadline reports a timeout.
  beast::error_code timed_out(beast::error_code ec) {
    if (ec == net::error::operation_aborted && timed_out_) {
      timed_out_ = false;
      return beast::error::timeout;
    }
    return ec;
  }

  // --- TLS interception ---------------------------------------------------------------

  void start_tls() requires(kTls) {
    std::string error;
    auto leaf = ctx_->authority->leaf(target_.host, &error);
    if (!leaf) {
      log_event(LogLevel::error, "leaf_failed", conn_.id, {},
                {{"host", target_.host}, {"error", error}});
      return;
    }
    SSL* native = stream_.native_handle();
    if (SSL_use_certificate(native, leaf->cert) != 1 ||
        SSL_use_PrivateKey(native, leaf->key) != 1) {
      log_event(LogLevel::error, "leaf_install_failed", conn_.id, {}, {{"host", target_.host}});
      return;
    }
    lowest().expires_after(limits().header_timeout);
    stream_.async_handshake(ssl::stream_base::server, buffer_.data(), bind(&Self::on_handshake));
  }

  void on_handshake(beast::error_code ec, std::size_t used) requires(kTls) {
    if (ec) {
      log_event(LogLevel::info, "tls_handshake_failed", conn_.id, {},
                {{"host", target_.host}, {"error", ec.message()}});
      if (ctx_->metrics) {
        ctx_->metrics->tls_errors.inc({"agent"});
      }
      return;
    }
    buffer_.consume(used);
    const char* sni = SSL_get_servername(stream_.native_handle(), TLSEXT_NAMETYPE_host_name);
    if (sni != nullptr) {
      std::string canonical;
      if (policy::normalize_host(sni, canonical) != policy::NormalizeError::ok ||
          canonical != target_.host) {
        // Refused before any request is read: recorded as the CONNECT it refuses, so an
        // agent that asks for one host and names another leaves a trace in the audit log.
        reset_exchange();
        describe_connect(target_);
        send_error(http::status::bad_request, "sni_mismatch",
                   "TLS SNI \"" + std::string(sni) + "\" does not match the CONNECT host " +
                       target_.host,
                   true, true);
        return;
      }
    }
    do_read();
  }

  // --- reading one request ------------------------------------------------------------

  void do_read() {
    // An idle keep-alive connection closes; a request already (partly) read, or the first
    // of a transparent hand-off, is read and refused with its record (on_header).
    if (ctx_->draining.load() && served_ > 0 && buffer_.size() == 0) {
      linger_close();
      return;
    }
    inline_steps_ = 0; // an async read follows: the stack unwinds
    // As reloaded: a reload applies from the next wait for a request on.
    limits_ = live_config_here(*ctx_)->limits;
    buffer_.max_size(std::numeric_limits<std::size_t>::max()); // see upload_next_chunk
    parser_.emplace();
    head_limit_ = limits().header_bytes; // what the parser refuses past, for the 431's text
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(head_limit_, std::numeric_limits<std::uint32_t>::max())));
    // No body limit while the head is read: Beast would refuse a Content-Length over it
    // there, before the head could be judged (judge_unread_body). on_header sets it.
    parser_->body_limit(boost::none);
    bool idle = served_ > 0 && buffer_.size() == 0;
    // The session's deadline, not the stream's: a stream timeout closes the socket, and a
    // slow header deserves a 408 before the close.
    lowest().expires_never();
    arm(Watch::client, idle ? limits().idle_timeout : limits().header_timeout);
    http::async_read_header(stream_, buffer_, *parser_, bind(&Self::on_header));
  }

  void reset_exchange() {
    next_id_into(req_id_, "req_");
    started_ = Clock::now();
    req_ = policy::Request{};
    decision_ = policy::Decision{};
    run_ = conn_.run;
    // Kept for this exchange; assigned only when a reload changed it, so the count shared
    // with other threads is not touched per request.
    if (const auto& live = live_config_here(*ctx_); policy_ != live) {
      policy_ = live;
    }
    limits_ = policy_->limits; // the limits its engine judges with, too
    runbook_ = policy_->active_runbook;
    traceparent_.clear();
    raw_url_.clear();
    have_request_ = false;
    // A CONNECT that was refused leaves the connection open: the next request on it is an
    // ordinary one, never a tunnel (or a dial to a transparent destination).
    tunnel_ = false;
    dial_.reset();
    clear_response();
    exchange_ready_ = false;
    upstream_ms_ = 0;
    reused_ = false;
    approval_.reset();
    approval_id_.clear();
    retry_after_.reset();
    up_digest_.reset();
    upload_ = false;
    upload_chunked_ = false;
    upload_ended_ = false;
    upload_total_ = 0;
    upload_left_ = 0;
    upload_taken_ = 0;
    upload_parser_.reset();
    upload_cut_ = false;
  }

  void on_read_error(beast::error_code ec, bool in_header) {
    // A body being buffered to be judged belongs to a request whose head was read: a
    // request all the same, so it gets its final record, with the part of the body that
    // arrived, whether the agent stalls or goes away (as a relayed upload's does).
    const bool judged_body = !in_header && have_request_;
    if (ec == beast::error::timeout) {
      if (in_header && buffer_.size() == 0) {
        return; // idle keep-alive connection: close quietly
      }
      if (judged_body) {
        send_error(http::status::request_timeout, "request_timeout",
                   "the request body stalled after " + keep_partial_body() +
                       " (limits.idle_timeout), before it was judged",
                   true, true);
        return;
      }
      send_error(http::status::request_timeout, "request_timeout",
                 "the request was not received within the configured timeout", true, false);
      return;
    }
    if (is_orderly_close(ec) || ec == http::error::partial_message) {
      if (judged_body) {
        record_client_gone("the agent closed the connection during the request body, after " +
                           keep_partial_body() + ", before it was judged: " + ec.message());
      }
      return;
    }
    // A refused request is still a request: it gets its audit record, with whatever of the
    // request line the parser read before it gave up.
    if (!have_request_ && parser_) {
      const auto& h = parser_->get();
      if (raw_url_.empty()) {
        raw_url_ = std::string(h.target());
      }
      if (req_.method.empty()) {
        req_.method = std::string(h.method_string());
      }
    }
    if (ec == http::error::header_limit) {
      // The limit that refused it: the parser's, set when the wait began, or a lower one a
      // reload set meanwhile (on_header); not a higher one a reload set meanwhile.
      send_error(http::status::request_header_fields_too_large, "header_too_large",
                 "request header larger than limits.header_bytes (" +
                     std::to_string(std::min(head_limit_, limits().header_bytes)) + " bytes)",
                 true, true);
      return;
    }
    if (ec == http::error::body_limit) {
      send_error(http::status::payload_too_large, "body_too_large",
                 "request body larger than limits.inspect_body_bytes (" +
                     std::to_string(limits().inspect_body_bytes) +
                     " bytes): a chunked body, which declares no length, is buffered to be judged",
                 true, true);
      return;
    }
    send_error(http::status::bad_request, "malformed_request",
               "HTTP framing error: " + ec.message(), true, true);
  }

  /// The agent went away before anything of its request was forwarded: the request's one
  /// final record (client_gone, no response), then the connection closes.
  void record_client_gone(const std::string& reason) {
    auto ex = make_exchange("client_gone", "client_gone", reason);
    ctx_->gate->observe(run_, req_id_, decision_.action, "client_gone", req_.method,
                        ex.request.url);
    ctx_->audit->record(ex, true, audit_failure_logger());
    beast::error_code ignored;
    lowest().socket().close(ignored);
  }

  /// The part of a buffered body that arrived, kept for the record of a request cut short
  /// before it was judged; says how much that was ("N of M bytes", or "N bytes" chunked).
  std::string keep_partial_body() {
    req_.body = std::move(parser_->get().body());
    req_.body_complete = false;
    std::string said = std::to_string(req_.body.size());
    if (auto length = parser_->content_length()) {
      said += " of " + std::to_string(*length);
    }
    return said + " bytes";
  }

  void on_header(beast::error_code ec, std::size_t head_bytes) {
    ec = timed_out(ec);
    disarm();
    reset_exchange();
    // The parser read this head under limits.header_bytes as it was when the wait began: a
    // reload that lowered it meanwhile (an idle keep-alive connection) applies all the same.
    if (!ec && head_bytes > limits().header_bytes) {
      ec = http::error::header_limit;
    }
    if (ec) {
      on_read_error(ec, true);
      return;
    }
    ctx_->requests.fetch_add(1);
    auto& h = parser_->get();
    keep_alive_ = h.keep_alive();
    client_version_ = h.version();
    raw_url_.assign(h.target());
    req_.method = std::string(h.method_string());
    if (refused_for_drain()) {
      return;
    }

    std::size_t count = static_cast<std::size_t>(std::distance(h.begin(), h.end()));
    if (count > limits().header_count) {
      refuse(http::status::request_header_fields_too_large, "header_fields_too_many",
             "request has " + std::to_string(count) + " header fields; limit is " +
                 std::to_string(limits().header_count));
      return;
    }
    std::size_t hosts = h.count(http::field::host);
    bool is_connect = h.method() == http::verb::connect;
    if (hosts > 1) {
      refuse(http::status::bad_request, "duplicate_host", "more than one Host header");
      return;
    }
    if (hosts == 0 && !is_connect) {
      refuse(http::status::bad_request, "missing_host", "request without a Host header");
      return;
    }
    if (h.count(http::field::content_length) > 0 && h.count(http::field::transfer_encoding) > 0) {
      refuse(http::status::bad_request, "content_length_with_transfer_encoding",
             "Content-Length together with Transfer-Encoding is refused (request smuggling)");
      return;
    }
    // Beast takes a list of equal values ("5, 5"), in one field or several; RFC 9110 §8.6
    // lets a recipient refuse it, as another parser on the path may read it otherwise.
    if (h.count(http::field::content_length) > 1 ||
        h[http::field::content_length].find(',') != std::string_view::npos) {
      refuse(http::status::bad_request, "duplicate_content_length",
             "more than one Content-Length value");
      return;
    }
    if (h.count(http::field::transfer_encoding) > 0) {
      if (h.count(http::field::transfer_encoding) > 1 ||
          !iequals(trim_ows(h[http::field::transfer_encoding]), "chunked")) {
        refuse(http::status::bad_request, "unsupported_transfer_encoding",
               "only \"Transfer-Encoding: chunked\" is accepted");
        return;
      }
    }
    if (h.count(http::field::upgrade) > 0) {
      refuse(http::status::forbidden, "upgrade_refused",
             "protocol upgrades (websocket, h2c) are not allowed through runwarden");
      return;
    }
    expect_continue_ = false;
    if (h.count(http::field::expect) > 0) {
      if (!iequals(trim_ows(h[http::field::expect]), "100-continue")) {
        refuse(http::status::expectation_failed, "expectation_failed",
               "only \"Expect: 100-continue\" is supported");
        return;
      }
      expect_continue_ = true;
    }
    if (is_connect) {
      if constexpr (kTls) {
        refuse(http::status::bad_request, "nested_connect", "CONNECT inside a CONNECT tunnel");
      } else {
        handle_connect();
      }
      return;
    }
    if (!build_target(h)) {
      return;
    }
    if (!consume_headers(h)) {
      return;
    }
    have_request_ = true;
    if (parser_->is_done()) {
      on_body({}, 0);
      return;
    }
    if (auto length = parser_->content_length(); length && *length > limits().inspect_body_bytes) {
      judge_unread_body(*length);
      return;
    }
    if (parser_->chunked() && head_allows_unread_body()) {
      judge_unread_body(std::nullopt);
      return;
    }
    parser_->body_limit(limits().inspect_body_bytes); // the body is buffered up to it
    if (expect_continue_) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      arm(Watch::client, limits().idle_timeout);
      http::async_write(
          stream_, *cont,
          [self = this->shared_from_this(), cont](beast::error_code wec, std::size_t) {
            if (wec) {
              return;
            }
            self->read_body();
          });
      return;
    }
    read_body();
  }

  /// Fills req_'s scheme, host, port, path and query; checks that every authority agrees.
  bool build_target(const http::request_parser<http::string_body>::value_type& h) {
    std::string_view target = h.target();
    if (transparent_) {
      if (!transparent_target(target)) {
        return false;
      }
    } else if constexpr (!kTls) {
      if (target.empty() || target.front() == '/' || target.front() == '*') {
        refuse(http::status::bad_request, "origin_form_to_proxy",
               "this is a forward proxy: send absolute-form http:// URIs, or CONNECT for https");
        return false;
      }
      if (istarts_with(target, "https://")) {
        refuse(http::status::bad_request, "https_over_plain",
               "https:// absolute URIs must use CONNECT (HTTPS_PROXY), not plain forwarding");
        return false;
      }
      auto err = policy::normalize_absolute_url(target, req_);
      if (err != policy::NormalizeError::ok) {
        refuse(http::status::bad_request, "bad_url",
               "cannot normalize the URL: " + std::string(policy::to_string(err)));
        return false;
      }
      if (req_.scheme != "http") {
        refuse(http::status::bad_request, "bad_scheme", "only http:// URIs are forwarded");
        return false;
      }
    } else {
      if (!target.empty() && target.front() == '/') {
        auto err = policy::normalize_target(target, req_.path, req_.query);
        if (err != policy::NormalizeError::ok) {
          refuse(http::status::bad_request, "bad_target",
                 "cannot normalize the target: " + std::string(policy::to_string(err)));
          return false;
        }
        req_.scheme = "https";
        req_.host = target_.host;
        req_.port = target_.port;
      } else {
        auto err = policy::normalize_absolute_url(target, req_);
        if (err != policy::NormalizeError::ok) {
          refuse(http::status::bad_request, "bad_url",
                 "cannot normalize the URL: " + std::string(policy::to_string(err)));
          return false;
        }
        if (req_.scheme != "https" || req_.host != target_.host || req_.port != target_.port) {
          refuse(http::status::bad_request, "authority_mismatch",
                 "absolute URI inside the tunnel does not match the CONNECT target " +
                     target_.host + ":" + std::to_string(target_.port));
          return false;
        }
      }
    }
    std::string host;
    std::uint16_t port = 0;
    std::string why;
    std::uint16_t default_port = req_.scheme == "https" ? 443 : 80;
    if (!parse_authority(trim_ows(h[http::field::host]), false, default_port, host, port, why)) {
      refuse(http::status::bad_request, "bad_host_header", "Host header: " + why);
      return false;
    }
    if (host != req_.host || port != req_.port) {
      refuse(http::status::bad_request, "host_mismatch",
             "Host header \"" + std::string(h[http::field::host]) +
                 "\" does not match the request target " + req_.host + ":" +
                 std::to_string(req_.port));
      return false;
    }
    if (is_loop(*ctx_, req_.host, req_.port)) {
      refuse(http::status::forbidden, "loop_refused",
             "the request is addressed to runwarden's own listener");
      return false;
    }
    return true;
  }

  /// Transparent plain HTTP: origin-form (or an absolute http URI naming the same target).
  bool transparent_target(std::string_view target) {
    if (!target.empty() && target.front() == '/') {
      auto err = policy::normalize_target(target, req_.path, req_.query);
      if (err != policy::NormalizeError::ok) {
        refuse(http::status::bad_request, "bad_target",
               "cannot normalize the target: " + std::string(policy::to_string(err)));
        return false;
      }
      req_.scheme = "http";
      req_.host = target_.host;
      req_.port = target_.port;
      return true;
    }
    auto err = policy::normalize_absolute_url(target, req_);
    if (err != policy::NormalizeError::ok) {
      refuse(http::status::bad_request, "bad_url",
             "cannot normalize the URL: " + std::string(policy::to_string(err)));
      return false;
    }
    if (req_.scheme != "http" || req_.host != target_.host || req_.port != target_.port) {
      refuse(http::status::bad_request, "authority_mismatch",
             "absolute URI does not match the connection's destination " + target_.host + ":" +
                 std::to_string(target_.port));
      return false;
    }
    return true;
  }

  /// During a drain nothing new starts (neither the kill switch's poll, stopped by then, nor
  /// the drain's tunnel close would see it): the request is refused 503, recorded, and the
  /// connection closed.
  bool refused_for_drain() {
    if (!ctx_->draining.load()) {
      return false;
    }
    keep_alive_ = false;
    refuse(http::status::service_unavailable, "draining",
           "runwarden is shutting down; retry on a new connection");
    return true;
  }

  /// A Runwarden-Run value, OWS trimmed, into `run`; a value that cannot be a run id is
  /// refused rather than silently replaced (the call would land in another run's budget).
  /// The request a CONNECT to `target` is judged and recorded as: `CONNECT
  /// https://host[:port]/`.
  void describe_connect(const Target& target) {
    req_.method = "CONNECT";
    req_.scheme = "https";
    req_.host = target.host;
    req_.port = target.port;
    req_.path = "/";
  }

  /// One Runwarden-Run header's value into `run`; `seen` says one was taken already: the
  /// run decides budgets and kills, so which of two counts would be a guess (refused).
  bool take_run_id(std::string_view value, std::string& run, bool& seen) {
    if (seen) {
      refuse(http::status::bad_request, "duplicate_runwarden_header",
             "more than one Runwarden-Run header");
      return false;
    }
    seen = true;
    std::string_view v = trim_ows(value);
    if (v.empty() || v.size() > kMaxRunId) {
      refuse(http::status::bad_request, "bad_run_id",
             "Runwarden-Run must be 1 to " + std::to_string(kMaxRunId) + " bytes");
      return false;
    }
    run.assign(v);
    return true;
  }

  /// A call that names no run: `agent.runs` (as reloaded) says which run it belongs to.
  bool apply_run_policy(std::string& run) {
    switch (policy_->run_ids) {
    case config::RunIds::per_connection:
      return true;
    case config::RunIds::shared:
      run = ctx_->config->agent_id; // the id the records carry (agent.id needs a restart)
      return true;
    case config::RunIds::required:
      refuse(http::status::bad_request, "run_id_required",
             "this runwarden requires a Runwarden-Run header naming the run (agent.runs: "
             "required)");
      return false;
    }
    return false;
  }

  /// Copies headers into req_, consuming Runwarden-* ones.
  bool consume_headers(const http::request_parser<http::string_body>::value_type& h) {
    std::string wanted_runbook;
    bool runbook_given = false;
    bool run_given = conn_.run_given;
    bool run_header = false;
    for (const auto& f : h) {
      std::string_view name = f.name_string();
      std::string_view value = f.value();
      if (istarts_with(name, "runwarden-")) {
        if (iequals(name, "runwarden-run")) {
          if (!take_run_id(value, run_, run_header)) {
            return false;
          }
          run_given = true;
        } else if (iequals(name, "runwarden-runbook")) {
          if (runbook_given) {
            refuse(http::status::bad_request, "duplicate_runwarden_header",
                   "more than one Runwarden-Runbook header");
            return false;
          }
          wanted_runbook = std::string(trim_ows(value));
          runbook_given = true;
        }
        continue;
      }
      req_.headers.push_back({std::string(name), std::string(value)});
    }
    if (!run_given && !apply_run_policy(run_)) {
      return false;
    }
    // Judged, recorded and forwarded are the same fields: nothing hop-by-hop or named in
    // Connection reaches the policy (it would match on a field the upstream never sees).
    drop_unforwarded(req_.headers, conn_tokens_);
    for (const auto& hdr : req_.headers) {
      if (iequals(hdr.name, "traceparent")) {
        traceparent_.assign(hdr.value);
      }
    }
    if (runbook_given) {
      const auto& selectable = policy_->selectable_runbooks;
      if (std::find(selectable.begin(), selectable.end(), wanted_runbook) == selectable.end()) {
        refuse(http::status::forbidden, "runbook_not_selectable",
               "Runwarden-Runbook \"" + wanted_runbook +
                   "\" is not in the config's selectable_runbooks");
        return false;
      }
      runbook_ = wanted_runbook;
    }
    return true;
  }

  void read_body() {
    // Beast reads at most the buffer's free capacity, which the head's read left at about
    // 512 bytes: an upload came in 512-byte reads. Room for up to one relay buffer of body
    // is reserved here and given back in on_body.
    std::size_t room = kRelayBuffer;
    if (auto left = parser_->content_length_remaining(); left && *left < room) {
      room = static_cast<std::size_t>(*left);
    }
    buffer_.reserve(buffer_.size() + room);
    // Body bytes leave buffer_ as the parser takes them; what stays is a line not yet whole.
    // Beast limits neither a chunk extension nor the trailer and reads on until the line
    // ends: capped, framing that carries no body fails (buffer_overflow, a 400) instead of
    // growing buffer_ for as long as the agent sends. do_read lifts the cap.
    buffer_.max_size(buffer_.size() + room + kMaxChunkFraming);
    body_room_ = true;
    arm(Watch::client, limits().idle_timeout);
    http::async_read(stream_, buffer_, *parser_, bind(&Self::on_body));
  }

  /// A body that declares more than limits.inspect_body_bytes is judged on its head
  /// alone (DESIGN §3: only a predicate that needs the body fails closed on it). The engine
  /// sees an incomplete, empty body: an action whose rule reads the body denies with
  /// body_too_large (answered 413 here), any other decides as usual. Nothing of the body
  /// is read before the decision: an allowed one is relayed after the head (send_upstream),
  /// a refused one is never read (the connection closes after the answer), and an agent
  /// that sent `Expect: 100-continue` gets its 100 only once the request is allowed.
  /// length: nullopt for a chunked body (see head_allows_unread_body).
  void judge_unread_body(std::optional<std::uint64_t> length) {
    upload_ = true;
    upload_chunked_ = !length;
    upload_total_ = length.value_or(0);
    upload_left_ = upload_total_;
    req_.body.clear();
    req_.body_complete = false;
    decide();
  }

  /// A chunked body declares no length. It is judged on the head first, which has no side
  /// effect (the engine is pure; budgets, metrics and the log come with decide()): when
  /// that allows it, no rule that could match reads the body, and it is relayed as it comes
  /// (judge_unread_body). Any other verdict buffers it up to the inspect limit and judges
  /// it whole, as before: a rule may need it, and an approval shows it.
  bool head_allows_unread_body() {
    req_.body.clear();
    req_.body_complete = false;
    const policy::Decision head = policy_->engine->decide(req_, runbook_, effective_mode());
    req_.body_complete = true;
    if (head.verdict != policy::Verdict::allow) {
      return false;
    }
    // A sums budget of the deciding action reads a value from the body: buffered too.
    const policy::Runbook* rb =
        policy_->engine->runbook(head.runbook.empty() ? runbook_ : head.runbook);
    return rb == nullptr ||
           std::none_of(rb->budgets.sums.begin(), rb->budgets.sums.end(),
                        [&](const auto& sum) { return sum.action == head.action; });
  }

  /// How much of an unread body has been taken from the agent, for reasons and logs.
  std::string upload_progress() const {
    std::string text = std::to_string(upload_taken_);
    if (upload_chunked_) {
      return text + " bytes of a chunked body";
    }
    return text + " of " + std::to_string(upload_total_) + " bytes";
  }

  /// 413 for a body judge_unread_body cannot pass without reading it: a rule that could
  /// match reads it (the engine's body_too_large), an approval would show it, or a budget
  /// of the deciding action sums a value from it. True when it answered; the connection
  /// closes after the answer (the body was never read). Budgets do not count it.
  bool refused_unread_body() {
    std::string reason;
    const std::string size =
        upload_chunked_ ? std::string("a chunked body") : std::to_string(upload_total_) + " bytes";
    const std::string limit =
        "limits.inspect_body_bytes (" + std::to_string(limits().inspect_body_bytes) + ")";
    if (decision_.verdict == policy::Verdict::deny && decision_.code == "body_too_large") {
      reason = decision_.reason;
    } else if (decision_.verdict == policy::Verdict::hold) {
      reason = "action " + decision_.action +
               " needs approval, and an approval shows the whole request body; this one is " +
               size + ", not read whole (" + limit + ")";
    } else if (decision_.verdict == policy::Verdict::allow) {
      const std::string& rb_name = decision_.runbook.empty() ? runbook_ : decision_.runbook;
      if (const policy::Runbook* rb = policy_->engine->runbook(rb_name)) {
        for (std::size_t i = 0; i < rb->budgets.sums.size(); ++i) {
          const auto& sum = rb->budgets.sums[i];
          if (sum.action == decision_.action) {
            reason = "budget sums[" + std::to_string(i) + "] adds up " + sum.pointer.text() +
                     " from the body of " + sum.action + "; this one is " + size +
                     ", not read whole (" + limit + ")";
            break;
          }
        }
      }
    }
    if (reason.empty()) {
      return false;
    }
    log_event(LogLevel::info, "refused", conn_.id, req_id_,
              {{"status", "413"}, {"code", "body_too_large"}, {"action", decision_.action}});
    finish_refusal(http::status::payload_too_large, error_body("body_too_large", reason, req_id_),
                   "refused", "body_too_large", reason, true);
    return true;
  }

  void on_body(beast::error_code ec, std::size_t) {
    ec = timed_out(ec);
    disarm();
    // An idle keep-alive connection keeps a head-sized buffer, not the body's (10,000 of
    // them would otherwise hold 160 MiB); pipelined bytes already read stay.
    if (body_room_ && buffer_.capacity() > kKeptAgentBuffer) {
      buffer_.shrink_to_fit();
    }
    body_room_ = false;
    if (ec) {
      on_read_error(ec, false);
      return;
    }
    req_.body = std::move(parser_->get().body());
    req_.body_complete = true;
    decide();
  }

  // --- deciding -----------------------------------------------------------------------

  /// decision_.reason names the request's URL, whose query may carry a credential (an
  /// access_token parameter): the log, which never carries one, shows it without the query.
  /// The agent's 403 body and the audit record (redacted) keep the whole reason.
  std::string loggable_reason() const {
    std::string reason = decision_.reason;
    if (req_.query.empty()) {
      return reason;
    }
    const std::string url = req_.url();
    const std::string shown = url.substr(0, url.find('?')) + "?...";
    for (auto at = reason.find(url); at != std::string::npos; at = reason.find(url, at)) {
      reason.replace(at, url.size(), shown);
      at += shown.size();
    }
    return reason;
  }

  /// The mode now: the operator's, or paused while the kill-switch file exists. The file is
  /// not looked at here (no stat(2) per request): the Reloader that `serve` starts polls it
  /// (as reloaded) every 250 ms, and at start-up before the first connection, and folds it
  /// into ctx_->mode. A server embedded without that poller ignores kill_switch_file.
  policy::Mode effective_mode() const { return ctx_->mode.load(); }

  void decide() {
    decision_ = policy_->engine->decide(req_, runbook_, effective_mode());
    if (upload_ && refused_unread_body()) {
      return; // before budgets count it: the body's size, not the agent's intent, refused it
    }
    policy::Verdict verdict = decision_.verdict;
    bool answered = enforce_operations(); // a killed run or a budget may refuse it
    // One info line per forwarded request: its "response" line (response_done) carries the
    // decision too, so an allowed request that goes on logs its decision at debug. Every
    // other outcome (deny, hold, paused, refused by the run's state) keeps it at info.
    bool forwarded = !answered && verdict == policy::Verdict::allow;
    const LogLevel level = forwarded ? LogLevel::debug : LogLevel::info;
    if (log_enabled(level)) { // the reason's copy only when the line is written
      log_event(level, "decision", conn_.id, req_id_,
                {{"run", run_},
                 {"method", req_.method},
                 {"host", req_.host},
                 {"verdict", policy::to_string(verdict)},
                 {"code", decision_.code},
                 {"action", decision_.action},
                 {"rule", loggable_reason()}});
    }
    if (answered) {
      return;
    }
    switch (decision_.verdict) {
    case policy::Verdict::allow:
      audit_then_forward("forwarded");
      return;
    case policy::Verdict::deny:
      refuse_decision(decision_.code.empty() ? "denied_by_runbook" : decision_.code,
                      decision_.reason, "denied");
      return;
    case policy::Verdict::paused:
      if (ctx_->runtime && ctx_->runtime->kill_switch_present()) {
        decision_.reason += " (by the operators' kill-switch file)";
      }
      finish_refusal(http::status::service_unavailable,
                     error_body("runwarden_paused", decision_.reason, req_id_), "paused",
                     "runwarden_paused", decision_.reason, false);
      return;
    case policy::Verdict::hold:
      break;
    }
    HoldRequest hold{req_id_, run_, ctx_->config->agent_id, conn_.peer, req_, decision_};
    auto exec = stream_.get_executor();
    // req_ stays untouched while held: an approval forwards exactly these canonical bytes.
    hold_active_ = true;
    client_gone_ = false;
    disarm();
    ctx_->gate->hold(std::move(hold), [self = this->shared_from_this(), exec](HoldResult r) {
      net::post(exec, [self, r = std::move(r)]() mutable { self->on_hold(std::move(r)); });
    });
    watch_client();
  }

  // While held nothing is read from the agent; a readable socket means either pipelined
  // bytes or the agent going away. POLLRDHUP tells them apart without consuming anything.
  void watch_client() {
    if (!hold_active_) {
      return;
    }
    lowest().socket().async_wait(
        tcp::socket::wait_read,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_client_readable(ec); });
  }

  void on_client_readable(beast::error_code ec) {
    if (!hold_active_) {
      return;
    }
    if (ec) {
      client_left(ec.message());
      return;
    }
    pollfd p{lowest().socket().native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) < 0 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
      client_left("peer closed the connection");
      return;
    }
    if (!hold_timer_) {
      hold_timer_.emplace(stream_.get_executor());
    }
    hold_timer_->expires_after(kHeldRecheck); // bytes are waiting: look again shortly
    hold_timer_->async_wait([self = this->shared_from_this()](beast::error_code tec) {
      if (!tec) {
        self->on_client_readable({});
      }
    });
  }

  void client_left(const std::string& why) {
    hold_active_ = false;
    client_gone_ = true;
    log_event(LogLevel::info, "client_gone_while_held", conn_.id, req_id_, {{"error", why}});
    ctx_->gate->abandon(req_id_);
  }

  /// Run kills and budgets (DESIGN §7), after the decision and before anything is
  /// forwarded or held. Counts the call. True when it answered the request itself.
  bool enforce_operations() {
    if (!ctx_->runtime) {
      return false;
    }
    auto& rt = *ctx_->runtime;
    const std::string& rb_name = decision_.runbook.empty() ? runbook_ : decision_.runbook;
    if (ctx_->metrics) {
      ctx_->metrics->requests.inc(
          {policy::to_string(decision_.verdict), decision_.action, rb_name});
    }
    if (decision_.verdict == policy::Verdict::paused) {
      return false;
    }
    if (rt.run_killed(run_)) {
      rt.note_call(run_, rb_name, CallKind::denied);
      decision_.verdict = policy::Verdict::deny;
      finish_refusal(http::status::forbidden,
                     error_body("run_killed",
                                "run \"" + run_ + "\" was killed: its calls are refused", req_id_),
                     "denied", "run_killed", "run was killed", false);
      return true;
    }
    const policy::Runbook* rb = policy_->engine->runbook(rb_name);
    const policy::Budgets* budgets = rb != nullptr && !rb->budgets.empty() ? &rb->budgets : nullptr;
    if (decision_.verdict == policy::Verdict::deny) {
      rt.note_call(run_, rb_name, CallKind::denied);
      if (budgets != nullptr) {
        if (auto trip = rt.record_denial(run_, *budgets)) {
          budget_tripped(*trip, rb_name); // the denial itself is answered as usual
        }
      }
      return false;
    }
    std::optional<policy::BudgetTrip> trip;
    if (budgets != nullptr) {
      nlohmann::json body;
      const nlohmann::json* body_ptr = nullptr;
      bool summed = false;
      for (const auto& sum : budgets->sums) {
        summed = summed || sum.action == decision_.action;
      }
      if (summed) {
        auto parsed = policy::parse_strict_json(req_.body, limits().max_json_depth);
        if (parsed.error == policy::JsonError::ok) {
          body = std::move(parsed.value);
          body_ptr = &body;
        }
      }
      trip = rt.admit(run_, *budgets, policy::BudgetCall{decision_.action, body_ptr});
    }
    if (trip) {
      rt.note_call(run_, rb_name, CallKind::denied);
      budget_tripped(*trip, rb_name);
      nlohmann::json j{{"error", "budget_exceeded"},
                       {"budget", trip->budget},
                       {"on_exceed", policy::to_string(trip->on_exceed)},
                       {"runbook", rb_name},
                       {"action", decision_.action},
                       {"reason", trip->reason},
                       {"request_id", req_id_}};
      decision_.verdict = policy::Verdict::deny;
      finish_refusal(http::status::forbidden, j.dump(), "denied", "budget_exceeded", trip->reason,
                     false);
      return true;
    }
    CallKind kind = CallKind::allowed_read;
    if (decision_.verdict == policy::Verdict::hold) {
      kind = CallKind::held;
    } else if (decision_.cls && *decision_.cls != policy::ActionClass::read_only) {
      kind = CallKind::allowed_write;
    }
    rt.note_call(run_, rb_name, kind);
    return false;
  }

  /// A budget was crossed: counted, recorded, announced; kill_run budgets stop the run.
  void budget_tripped(const policy::BudgetTrip& trip, const std::string& rb_name) {
    const std::string on_exceed(policy::to_string(trip.on_exceed));
    log_event(LogLevel::warn, "budget_exceeded", conn_.id, req_id_,
              {{"run", run_},
               {"runbook", rb_name},
               {"budget", trip.budget},
               {"on_exceed", on_exceed},
               {"reason", trip.reason}});
    if (ctx_->metrics) {
      ctx_->metrics->budget_trips.inc({rb_name, trip.budget, on_exceed});
    }
    nlohmann::json fields{{"run", run_},           {"runbook", rb_name},
                          {"budget", trip.budget}, {"on_exceed", on_exceed},
                          {"reason", trip.reason}, {"request_id", req_id_},
                          {"limit", trip.limit},   {"value", trip.value}};
    ctx_->audit->event("budget_exceeded", fields, [](std::error_code) {});
    if (ctx_->announce) {
      ctx_->announce("budget_exceeded", fields);
    }
    if (trip.on_exceed == policy::OnExceed::kill_run) {
      kill_run(ctx_, run_, "budget:" + trip.budget, trip.reason, "budget");
    }
  }

  void on_hold(HoldResult result) {
    hold_answer_ = std::move(result.answering); // a drain waits until the answer is out
    if (ctx_->metrics) {
      ctx_->metrics->approvals.inc({result.approved ? std::string("approved") : result.code});
    }
    if (hold_active_) {
      hold_active_ = false;
      beast::error_code ignored;
      lowest().socket().cancel(ignored);
      if (hold_timer_) {
        hold_timer_->cancel();
      }
    }
    approval_ = result.approval;
    if (client_gone_) {
      // Nobody is waiting: nothing is forwarded, whatever the hold's outcome was.
      record_client_gone("the agent disconnected while the request was held; nothing was "
                         "forwarded");
      return;
    }
    if (result.approved) {
      // The mode may have changed while the request waited: an approval given for normal
      // operation does not override read_only, a pause or the kill switch that came since.
      if (policy::Mode mode = effective_mode(); mode != policy::Mode::normal) {
        policy::Decision now = policy_->engine->decide(req_, runbook_, mode);
        if (now.verdict == policy::Verdict::paused) {
          finish_refusal(http::status::service_unavailable,
                         error_body("runwarden_paused", now.reason, req_id_), "paused",
                         "runwarden_paused", now.reason, false);
          return;
        }
        if (now.verdict == policy::Verdict::deny) {
          // Answered as the same request sent now would be (error denied_by_runbook, code
          // read_only_mode), with the approval id.
          decision_.verdict = now.verdict;
          decision_.code = now.code;
          decision_.reason = now.reason;
          approval_id_ = result.approval_id;
          refuse_decision(now.code.empty() ? "denied_by_runbook" : now.code, now.reason, "denied");
          return;
        }
      }
      audit_then_forward("approved_forwarded");
      return;
    }
    std::string outcome = !result.outcome.empty()              ? result.outcome
                          : result.code == "approval_required" ? "held"
                                                               : result.code;
    retry_after_ = result.retry_after;
    approval_id_ = result.approval_id;
    // Shut down before a decision: 503, the request may be retried once runwarden is back.
    refuse_decision(result.code, result.reason.empty() ? decision_.reason : result.reason, outcome,
                    result.code == kShutdownCode ? http::status::service_unavailable
                                                 : http::status::forbidden);
  }

  /// A runbook refusal: JSON-RPC errors for MCP bodies, else JSON with `status` (403, or
  /// 503 for a hold ended by the shutdown).
  void refuse_decision(const std::string& code, const std::string& reason,
                       const std::string& outcome, http::status status = http::status::forbidden) {
    if (!decision_.jsonrpc.empty()) {
      std::string body = jsonrpc_refusal_body(decision_, code, req_id_);
      if (!body.empty() && code != "approval_required" && code.rfind("approval_", 0) == 0) {
        body = jsonrpc_hold_outcome(body, code, reason, approval_id_);
      }
      if (!body.empty()) {
        finish_refusal(http::status::ok, std::move(body), outcome, code, reason, false);
        return;
      }
    }
    std::string body = decision_body(code, decision_, reason, req_id_);
    if (!approval_id_.empty()) {
      auto j = nlohmann::json::parse(body, nullptr, false);
      if (j.is_object()) {
        j["approval_id"] = approval_id_;
        body = j.dump();
      }
    }
    finish_refusal(status, std::move(body), outcome, code, reason, false);
  }

  audit::Exchange make_exchange(const std::string& outcome, const std::string& code,
                                const std::string& reason) const {
    audit::Exchange ex;
    fill_exchange(ex, outcome, code, reason);
    return ex;
  }

  /// Sets every field of ex for this exchange (no response). Assigns into ex's strings, so
  /// the session's reused record (exchange_) keeps their storage from one request to the
  /// next instead of allocating each field anew.
  void fill_exchange(audit::Exchange& ex, const std::string& outcome, const std::string& code,
                     const std::string& reason) const {
    ex.id.assign(req_id_);
    ex.run.assign(run_);
    ex.agent.assign(ctx_->config->agent_id);
    ex.runbook.assign(decision_.runbook.empty() ? runbook_ : decision_.runbook);
    ex.runbook_sha256.assign(decision_.runbook_sha256);
    ex.action.assign(decision_.action);
    if (decision_.cls) {
      ex.cls.assign(policy::to_string(*decision_.cls));
    } else {
      ex.cls.clear();
    }
    ex.outcome.assign(outcome);
    ex.code.assign(code);
    ex.reason.assign(reason);
    ex.approval = approval_;
    ex.request.method.assign(req_.method);
    if (req_.host.empty()) {
      ex.request.url.assign(raw_url_);
    } else {
      ex.request.url.clear();
      req_.append_url(ex.request.url);
    }
    auto& headers = ex.request.headers;
    headers.resize(req_.headers.size());
    for (std::size_t i = 0; i < headers.size(); ++i) {
      headers[i].first.assign(req_.headers[i].name);
      headers[i].second.assign(req_.headers[i].value);
    }
    if (upload_ && exchange_ready_ && &ex != &exchange_) {
      // A relayed upload's failure record (408, client_gone, 502/504): the prefix kept as it
      // was relayed, and as many bytes as were taken from the agent, which its digest covers.
      ex.request.body.assign(exchange_.request.body);
      ex.request.body_bytes = upload_taken_;
    } else {
      ex.request.body.assign(req_.body);
      ex.request.body_bytes = upload_ ? upload_total_ : req_.body.size(); // chunked: grows
    }
    ex.request.body_complete = req_.body_complete;
    ex.request.body_sha256 = up_digest_.hex(); // empty unless a relayed body outgrew its prefix
    ex.response.reset();
    ex.timing = audit::Timing{};
    ex.timing.total_ms = ms_since(started_);
    ex.timing.upstream_ms = upstream_ms_;
    ex.traceparent.assign(traceparent_);
    ex.client.assign(conn_.peer);
  }

  /// resp_info_ emptied for the next response; its header strings are kept for reuse
  /// (on_upstream_header overwrites them in place and drops the surplus).
  void clear_response() {
    resp_info_.status = 0;
    resp_info_.body.clear();
    resp_info_.bytes = 0;
    resp_info_.body_complete = true;
    resp_info_.body_sha256.clear();
    down_digest_.reset();
  }

  /// Refusal of a request we parsed: one final audit record, then the answer.
  void finish_refusal(http::status status, std::string body, const std::string& outcome,
                      const std::string& code, const std::string& reason, bool close) {
    close = close || !parser_ || !parser_->is_done();
    if (ctx_->metrics) {
      ctx_->metrics->request_seconds.observe({outcome}, ms_since(started_) / 1000.0);
    }
    auto ex = make_exchange(outcome, code, reason);
    ctx_->gate->observe(run_, req_id_, decision_.action, outcome, req_.method, ex.request.url);
    ex.response = audit::ResponseInfo{};
    ex.response->status = static_cast<int>(status);
    ex.response->headers = {{"content-type", "application/json"}};
    // Every 503, and the JSON-RPC (HTTP 200) form of a hold ended by a shutdown, which an MCP
    // client would otherwise retry at once.
    if (!retry_after_ && (status == http::status::service_unavailable || code == kShutdownCode)) {
      retry_after_ = std::chrono::seconds(retry_after_seconds(code));
    }
    if (retry_after_) { // the record shows the answer's header as sent (send_json)
      ex.response->headers.emplace_back("retry-after", std::to_string(retry_after_->count()));
    }
    if (req_.method != "HEAD") { // a HEAD answer goes out without its body (send_json)
      ex.response->body = body;
      ex.response->bytes = body.size();
    }
    auto payload = std::make_shared<std::string>(std::move(body));
    ctx_->audit->record(
        ex, true, [self = this->shared_from_this(), status, payload, close](std::error_code ec) {
          self->on_session_thread([self, ec, status, payload, close] {
            if (ec) {
              self->send_audit_unavailable(ec);
              return;
            }
            self->send_json(status, std::move(*payload), close);
          });
        });
  }

  /// Refusal before or without a decision (framing, limits, authority checks).
  void refuse(http::status status, const std::string& code, const std::string& reason) {
    log_event(LogLevel::info, "refused", conn_.id, req_id_,
              {{"status", std::to_string(static_cast<int>(status))}, {"code", code}});
    // Anything but a policy-style 403 is a framing or limit problem: close after answering.
    bool close = status != http::status::forbidden;
    finish_refusal(status, error_body(code, reason, req_id_), "refused", code, reason, close);
  }

  /// An answer that is not audited: the request could not be parsed at all.
  void send_error(http::status status, const std::string& code, const std::string& reason,
                  bool close, bool audit_it) {
    log_event(LogLevel::info, "refused", conn_.id, req_id_,
              {{"status", std::to_string(static_cast<int>(status))}, {"code", code}});
    if (audit_it) {
      finish_refusal(status, error_body(code, reason, req_id_), "refused", code, reason, close);
      return;
    }
    send_json(status, error_body(code, reason, req_id_), close);
  }

  void send_audit_unavailable(std::error_code ec) {
    log_event(LogLevel::error, "audit_failed", conn_.id, req_id_, {{"error", ec.message()}});
    retry_after_ = std::chrono::seconds(retry_after_seconds("audit_unavailable"));
    send_json(
        http::status::service_unavailable,
        error_body("audit_unavailable", "the audit log could not record this request", req_id_),
        true);
  }

  void send_json(http::status status, std::string body, bool close) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "runwarden");
    res->set(http::field::content_type, "application/json");
    if (retry_after_) {
      res->set(http::field::retry_after, std::to_string(retry_after_->count()));
      retry_after_.reset();
    }
    res->body() = std::move(body);
    bool keep = keep_alive_ && !close && !ctx_->draining.load();
    res->keep_alive(keep);
    res->prepare_payload();
    arm(Watch::client, limits().idle_timeout);
    if (req_.method == "HEAD") {
      // RFC 9110 §9.3.2: an answer to HEAD carries no content (Content-Length still says what
      // a GET would get). A body here would be read as the start of the next response.
      auto bare = std::make_shared<http::response<http::empty_body>>(std::move(res->base()));
      http::async_write(stream_, *bare,
                        [self = this->shared_from_this(), bare, keep](
                            beast::error_code ec, std::size_t) { self->after_response(ec, keep); });
      return;
    }
    http::async_write(stream_, *res,
                      [self = this->shared_from_this(), res, keep](
                          beast::error_code ec, std::size_t) { self->after_response(ec, keep); });
  }

  void after_response(beast::error_code ec, bool keep) {
    disarm();
    hold_answer_.reset();
    if (ec) {
      return;
    }
    ++served_;
    if (!keep) {
      linger_close();
      return;
    }
    do_read();
  }

  /// Half-close, then drain what the client still sends for a moment, so our last
  /// response is not destroyed by a reset.
  void linger_close() {
    disarm();
    if constexpr (kTls) {
      lowest().expires_after(kLingerTimeout);
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        self->lowest().socket().close(ignored);
      });
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      linger_read();
    }
  }

  void linger_read() {
    if (lingered_ >= kLingerBytes) {
      return;
    }
    lowest().expires_after(kLingerTimeout);
    if (!discard_) {
      discard_ = std::make_unique<std::array<char, 4096>>();
    }
    lowest().async_read_some(net::buffer(*discard_), [self = this->shared_from_this()](
                                                         beast::error_code ec, std::size_t n) {
      if (ec) {
        return;
      }
      self->lingered_ += n;
      self->linger_read();
    });
  }

  // --- CONNECT ------------------------------------------------------------------------

  void handle_connect() requires(!kTls) {
    auto& h = parser_->get();
    Target target;
    std::string why;
    if (!parse_authority(h.target(), true, 0, target.host, target.port, why)) {
      refuse(http::status::bad_request, "bad_connect_target", "CONNECT target: " + why);
      return;
    }
    describe_connect(target);
    if (h.count(http::field::host) == 1) {
      std::string host;
      std::uint16_t port = 0;
      if (!parse_authority(trim_ows(h[http::field::host]), false, target.port, host, port, why) ||
          host != target.host || port != target.port) {
        refuse(http::status::bad_request, "host_mismatch",
               "Host header does not match the CONNECT target");
        return;
      }
    }
    if (is_loop(*ctx_, target.host, target.port)) {
      refuse(http::status::forbidden, "loop_refused",
             "the CONNECT target is runwarden's own listener");
      return;
    }
    if (ctx_->connect_ports.count(target.port) == 0) {
      refuse(http::status::forbidden, "connect_port_refused",
             "no catalogue action names port " + std::to_string(target.port));
      return;
    }
    // The run this CONNECT names judges it; the connection keeps it only once interception
    // starts (a refused CONNECT leaves the connection's run as it was).
    bool named = conn_.run_given;
    bool run_header = false;
    for (const auto& f : h) {
      if (iequals(f.name_string(), "runwarden-run")) {
        if (!take_run_id(f.value(), run_, run_header)) {
          return;
        }
        named = true;
      }
    }
    const bool passthrough = policy_->tls.passes_through(target.host); // as reloaded: live
    // A tunnel is judged on this CONNECT alone; an intercepted connection's requests are
    // each judged and may name their run themselves.
    if (!named && passthrough && !apply_run_policy(run_)) {
      return;
    }
    log_event(LogLevel::info, "connect", conn_.id, req_id_,
              {{"host", target.host},
               {"port", std::to_string(target.port)},
               {"mode", passthrough ? "passthrough" : "intercept"}});
    if (passthrough) {
      have_request_ = true;
      tunnel_ = true;
      tunnel_host_ = target.host;
      decide();
      return;
    }
    if (!ctx_->authority || !ctx_->server_tls) {
      refuse(http::status::service_unavailable, "interception_unavailable",
             "no CA is loaded, so TLS cannot be intercepted");
      return;
    }
    if (named) {
      conn_.run = run_; // the intercepted requests' run unless they name their own
      conn_.run_given = true;
    }
    lowest().expires_after(limits().idle_timeout);
    net::async_write(stream_, net::buffer(kConnectOk),
                     [self = this->shared_from_this(), target](beast::error_code ec, std::size_t) {
                       if (ec) {
                         return;
                       }
                       self->hand_over_to_tls(target);
                     });
  }

  void hand_over_to_tls(const Target& target) requires(!kTls) {
    auto next = std::make_shared<HttpSession<TlsStream>>(ctx_, conn_, std::move(stream_),
                                                         std::move(buffer_), target);
    next->start();
  }

  // --- forwarding ---------------------------------------------------------------------

  void audit_then_forward(const std::string& outcome) {
    // Kept for the final record, which then only adds the response and the timing. The
    // previous exchange's response goes back to resp_info_ with its storage.
    if (exchange_.response) {
      resp_info_ = std::move(*exchange_.response);
      clear_response();
    }
    fill_exchange(exchange_, outcome, decision_.code, decision_.reason);
    exchange_ready_ = true;
    outcome_ = outcome;
    ctx_->audit->record(exchange_, false, [self = this->shared_from_this()](std::error_code ec) {
      self->on_session_thread([self, ec] {
        if (ec) {
          self->send_audit_unavailable(ec);
          return;
        }
        self->forward();
      });
    });
  }

  /// Everything that makes a pooled connection reusable for this request: for TLS also the
  /// name it is verified for (SNI and certificate) and the trust context it is verified with.
  /// Computed once per target and kept: on a keep-alive connection every request usually
  /// goes to the same upstream, and building the key was a few allocations per request.
  const std::string& upstream_key() {
    if (key_valid_ && key_port_ == req_.port && key_host_ == req_.host &&
        key_scheme_ == req_.scheme) {
      return key_;
    }
    key_ = req_.scheme + "://" + req_.host + ":" + std::to_string(req_.port);
    if constexpr (kTls) {
      key_ += " name=" + strip_brackets(req_.host) + " trust=" +
              std::to_string(reinterpret_cast<std::uintptr_t>(ctx_->upstream_tls.get()));
    }
    key_scheme_ = req_.scheme;
    key_host_ = req_.host;
    key_port_ = req_.port;
    key_valid_ = true;
    return key_;
  }

  /// The idle upstream connections this session may use: its I/O thread's pool when the
  /// session runs on an io_context run by one thread (ServerOptions::io_threads > 0; every
  /// session of that thread shares it), else (a strand on a shared io_context) its own.
  UpstreamPool<UpStream>& pool() {
    if (shared_pools_ != nullptr) {
      return shared_pools_->template of<UpStream>();
    }
    if (!own_pool_chosen_) {
      auto exec = stream_.get_executor();
      if (const auto* io = exec.template target<net::io_context::executor_type>()) {
        shared_pools_ = &net::use_service<UpstreamPools>(io->context());
        return shared_pools_->template of<UpStream>();
      }
      own_pool_chosen_ = true;
    }
    return own_pool_;
  }

  void forward() {
    ctx_->in_flight.fetch_add(1);
    in_flight_ = true;
    hold_answer_.reset(); // an approved request: in_flight holds the drain open from here
    if (in_flight_list_ == nullptr) {
      in_flight_list_ = &net::use_service<InFlightExchanges>(
          net::query(stream_.get_executor(), net::execution::context));
    }
    in_flight_list_->add(*this);
    relay_last_ = false; // set once the record of this exchange is submitted (record_then_send)
    upstream_started_ = Clock::now();
    const std::string& key = upstream_key();
    if (!tunnel_) {
      if (auto conn = pool().take(key)) {
        up_ = std::move(conn);
        reused_ = true;
        send_upstream();
        return;
      }
    }
    if constexpr (kTls) {
      up_ = std::make_unique<Upstream>(stream_.get_executor(), *ctx_->upstream_tls);
    } else {
      up_ = std::make_unique<Upstream>(stream_.get_executor());
    }
    up_->key = key;
    if (dial_) { // a transparent passthrough tunnel: the checked original destination
      on_resolve({}, tcp::resolver::results_type::create(*dial_, strip_brackets(req_.host),
                                                         std::to_string(req_.port)));
      return;
    }
    // A hung resolver must not pin the session: the resolve shares the connect timeout.
    arm(Watch::resolve, limits().upstream_connect_timeout);
    lookup_ticket_ = ctx_->lookups->async_resolve(
        strip_brackets(req_.host), std::to_string(req_.port), stream_.get_executor(),
        [self = this->shared_from_this(), seq = ++lookup_seq_](beast::error_code ec,
                                                               tcp::resolver::results_type r) {
          if (seq == self->lookup_seq_) {
            self->on_resolve(ec, std::move(r));
          }
        });
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    ec = timed_out(ec);
    disarm();
    if (ec) {
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "cannot resolve " + req_.host + ": " +
                          (ec == beast::error::timeout
                               ? std::string("resolve timeout (limits.upstream_connect_timeout)")
                               : ec.message()));
      return;
    }
    beast::get_lowest_layer(up_->stream).expires_after(limits().upstream_connect_timeout);
    beast::get_lowest_layer(up_->stream).async_connect(results, bind(&Self::on_connect));
  }

  void on_connect(beast::error_code ec, const tcp::endpoint&) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    if (ec) {
      upstream_failed(
          http::status::bad_gateway, "upstream_unavailable",
          "cannot connect to " + req_.host + ":" + std::to_string(req_.port) + ": " +
              (ec == beast::error::timeout ? std::string("connect timeout") : ec.message()));
      return;
    }
    beast::error_code ignored;
    beast::get_lowest_layer(up_->stream).expires_never(); // from here on: the session deadline
    beast::get_lowest_layer(up_->stream).socket().set_option(tcp::no_delay(true), ignored);
    if constexpr (kTls) {
      std::string name = strip_brackets(req_.host);
      SSL* native = up_->stream.native_handle();
      if (!is_ip_literal(req_.host)) {
        SSL_ctrl(native, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(name.c_str()));
      }
      up_->stream.set_verify_mode(ssl::verify_peer);
      up_->stream.set_verify_callback(ssl::host_name_verification(name));
      beast::get_lowest_layer(up_->stream).expires_after(limits().upstream_connect_timeout);
      up_->stream.async_handshake(ssl::stream_base::client, bind(&Self::on_upstream_handshake));
    } else {
      if (tunnel_) {
        start_tunnel();
        return;
      }
      send_upstream();
    }
  }

  void on_upstream_handshake(beast::error_code ec) requires(kTls) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    if (ec) {
      if (ctx_->metrics) {
        ctx_->metrics->tls_errors.inc({"upstream"});
      }
      long verify = SSL_get_verify_result(up_->stream.native_handle());
      std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : ec.message();
      if (verify == X509_V_ERR_UNSPECIFIED) {
        // The chain verified but ssl::host_name_verification rejected the name.
        why = "certificate does not match host name " + strip_brackets(req_.host);
      }
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "TLS to " + req_.host + " failed: " + why);
      return;
    }
    beast::get_lowest_layer(up_->stream).expires_never();
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(up_->stream.native_handle(), &alpn, &alpn_len);
    if (alpn_len != 0 &&
        std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != "http/1.1") {
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "upstream selected an ALPN protocol other than http/1.1");
      return;
    }
    send_upstream();
  }

  void start_tunnel() requires(!kTls) {
    if (transparent_) {
      open_tunnel(); // the client never sent a CONNECT: no answer to give
      return;
    }
    lowest().expires_after(limits().idle_timeout);
    net::async_write(stream_, net::buffer(kConnectOk),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) {
                         return;
                       }
                       self->open_tunnel();
                     });
  }

  void open_tunnel() requires(!kTls) {
    if (aborted_) {
      return;
    }
    std::string early = beast::buffers_to_string(buffer_.data());
    auto tunnel = std::make_shared<TunnelSession>(
        ctx_, conn_, std::move(stream_), std::move(up_->stream),
        make_exchange("forwarded", decision_.code, decision_.reason), tunnel_host_,
        limits().idle_timeout);
    tunnel->start(std::move(early));
    // Only now: a drain polling in between must see the exchange or the tunnel, never neither.
    release_in_flight(); // a tunnel is not an exchange in flight: it lives on its own
  }

  void send_upstream() {
    StreamedBody streamed{upload_chunked_, upload_total_};
    build_request_head(up_head_, req_, conn_tokens_, upload_ ? &streamed : nullptr);
    head_ = req_.method == "HEAD";
    arm(Watch::upstream, limits().upstream_response_timeout);
    if (upload_) {
      net::async_write(up_->stream, net::buffer(up_head_),
                       [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                         self->on_upload_written(ec, 0, false);
                       });
      return;
    }
    // req_ is untouched until the exchange ends: its body is written in place.
    up_bufs_ = {net::buffer(up_head_), net::buffer(req_.body)};
    if constexpr (!kTls) {
      beast::error_code ec;
      if (send_now(beast::get_lowest_layer(up_->stream).socket(), up_bufs_, ec)) {
        on_upstream_written(ec);
        return;
      }
    }
    net::async_write(up_->stream, up_bufs_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_upstream_written(ec);
                     });
  }

  // --- a request body larger than the inspect limit (judge_unread_body) ---------------
  // Relayed after the head in pieces of up to one relay buffer: first what the head's read
  // already buffered, then reads from the agent, each written upstream before the next
  // read (the agent is slowed to the upstream's pace; nothing piles up here). The first
  // audit.body_bytes (and kRedactionMargin) are kept for the exchange record. Exactly the declared
  // length is taken: whatever follows is the agent's next request.

  void on_upload_written(beast::error_code ec, std::size_t consumed, bool from_buffer) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    ec = timed_out(ec);
    if (from_buffer) {
      buffer_.consume(consumed);
    }
    if (ec) {
      // Only a write the upstream cut short (it closed or reset) may have left its answer;
      // a timed-out one means it stopped reading: a 502 now, not another wait.
      const bool cut = ec == net::error::broken_pipe || ec == net::error::connection_reset ||
                       ec == net::error::eof;
      if (cut && upstream_answered()) {
        // It refused the upload early (a 413 or 401 on the head) and stopped reading: its
        // answer, not a 502, is what the agent can act on. The agent's connection closes
        // after it (the rest of its body is unread), the upstream's is never pooled.
        log_event(LogLevel::info, "upstream_answered_early", conn_.id, req_id_,
                  {{"relayed", upload_progress()}, {"error", ec.message()}});
        upload_cut_ = true;
        keep_alive_ = false;
        interim_ = 0;
        read_upstream_header();
        return;
      }
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "writing the request body upstream failed after " + upload_progress() + ": " +
                          ec.message());
      return;
    }
    if (expect_continue_) { // the head is upstream: now the agent may send the body
      expect_continue_ = false;
      arm(Watch::client, limits().idle_timeout);
      net::async_write(stream_, net::buffer(kContinue),
                       [self = this->shared_from_this()](beast::error_code wec, std::size_t) {
                         if (self->agent_step_ok(wec)) {
                           self->upload_next();
                         }
                       });
      return;
    }
    upload_next();
  }

  /// True when the upstream has sent something (its answer) that is waiting to be read:
  /// a write that failed because it closed may still leave its answer readable.
  bool upstream_answered() {
    if (!up_) {
      return false;
    }
    if (up_->buffer.size() != 0) {
      return true;
    }
    char byte = 0;
    ssize_t n = ::recv(beast::get_lowest_layer(up_->stream).socket().native_handle(), &byte, 1,
                       MSG_PEEK | MSG_DONTWAIT);
    return n > 0;
  }

  /// How an operation on the agent's side of an upload went: true to go on; false once
  /// on_shutdown_abort ended the exchange, or after upload_client_failed handled an error.
  bool agent_step_ok(beast::error_code ec) {
    if (aborted_) {
      return false;
    }
    ec = timed_out(ec);
    if (ec) {
      upload_client_failed(ec);
      return false;
    }
    return true;
  }

  void upload_next() {
    if (upload_chunked_) {
      upload_next_chunk();
      return;
    }
    if (upload_left_ == 0) {
      on_upstream_written({});
      return;
    }
    if (buffer_.size() != 0) {
      auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_.size(), upload_left_));
      upload_piece(static_cast<const char*>(buffer_.data().data()), n, true);
      return;
    }
    if (!relay_buf_) {
      relay_buf_ = std::make_unique<std::array<char, kRelayBuffer>>();
    }
    auto want = static_cast<std::size_t>(std::min<std::uint64_t>(relay_buf_->size(), upload_left_));
    arm(Watch::client, limits().idle_timeout);
    stream_.async_read_some(net::buffer(relay_buf_->data(), want),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (self->agent_step_ok(ec)) {
                                self->upload_piece(self->relay_buf_->data(), n, false);
                              }
                            });
  }

  /// Writes n body bytes at data upstream; from_buffer: they are the front of buffer_,
  /// consumed once written.
  void upload_piece(const char* data, std::size_t n, bool from_buffer) {
    up_digest_.add(exchange_.request.body, ctx_->config->audit.body_bytes + kRedactionMargin, data,
                   n);
    upload_left_ -= n;
    upload_taken_ += n;
    arm(Watch::upstream, limits().upstream_response_timeout);
    net::async_write(
        up_->stream, net::buffer(data, n),
        [self = this->shared_from_this(), n, from_buffer](beast::error_code ec, std::size_t) {
          self->on_upload_written(ec, n, from_buffer);
        });
  }

  /// A chunked body: Beast's parser takes the chunk framing off (what was buffered with
  /// the head first), each piece goes upstream as one chunk, and the parser's end (after
  /// the agent's last chunk and trailer, which is dropped) sends the terminator. The parser
  /// reads from buffer_, so what follows the body stays there as the next request.
  void upload_next_chunk() {
    if (upload_ended_) {
      if (buffer_.capacity() > kKeptAgentBuffer && buffer_.size() <= kKeptAgentBuffer) {
        buffer_.shrink_to_fit(); // the idle connection keeps a head-sized buffer (on_body)
      }
      on_upstream_written({});
      return;
    }
    if (!upload_parser_) {
      upload_parser_.emplace(std::move(*parser_));
      parser_.reset(); // a refusal from here on closes the connection (finish_refusal)
      upload_parser_->body_limit(boost::none);
    }
    if (!relay_buf_) {
      relay_buf_ = std::make_unique<std::array<char, kRelayBuffer>>();
    }
    auto& body = upload_parser_->get().body();
    body.data = relay_buf_->data();
    body.size = relay_buf_->size();
    body.more = true;
    buffer_.reserve(kRelayBuffer); // Beast reads at most the free capacity
    // Beast limits neither a chunk extension nor the trailer, and reads on until a line is
    // whole: capped, framing that carries no body fails (buffer_overflow, a 400) instead of
    // growing buffer_ until the idle timeout. do_read lifts the cap.
    buffer_.max_size(buffer_.size() + kRelayBuffer + kMaxChunkFraming);
    arm(Watch::client, limits().idle_timeout);
    http::async_read_some(stream_, buffer_, *upload_parser_,
                          [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                            self->on_upload_chunk(ec);
                          });
  }

  void on_upload_chunk(beast::error_code ec) {
    if (!body_read_done(ec)) {
      return;
    }
    if (ec) {
      upload_client_failed(ec);
      return;
    }
    auto& body = upload_parser_->get().body();
    std::size_t got = relay_buf_->size() - body.size;
    bool last = upload_parser_->is_done();
    up_digest_.add(exchange_.request.body, ctx_->config->audit.body_bytes + kRedactionMargin,
                   relay_buf_->data(), got);
    upload_taken_ += got;
    upload_total_ = upload_taken_;
    exchange_.request.body_bytes = upload_taken_;
    auto& bufs = upload_bufs_;
    std::size_t n = 0;
    if (got != 0) {
      auto line = chunk_size_line(chunk_line_, got);
      bufs[n++] = net::buffer(line.data(), line.size());
      bufs[n++] = net::buffer(relay_buf_->data(), got);
    }
    std::string_view tail = chunk_tail(got, last);
    if (!tail.empty()) {
      bufs[n++] = net::buffer(tail.data(), tail.size());
    }
    upload_ended_ = last;
    if (n == 0) {
      upload_next_chunk(); // a chunk-size line alone: nothing to relay yet
      return;
    }
    arm(Watch::upstream, limits().upstream_response_timeout);
    net::async_write(up_->stream, std::span<const net::const_buffer>(bufs.data(), n),
                     [self = this->shared_from_this()](beast::error_code wec, std::size_t) {
                       self->on_upload_written(wec, 0, false);
                     });
  }

  /// The agent stopped sending its body: the upstream holds part of a request, so its
  /// connection is never reused. A stalled agent gets 408; one that went away only the
  /// record.
  void upload_client_failed(beast::error_code ec) {
    disarm();
    std::string relayed = upload_progress();
    log_event(LogLevel::warn, "upload_failed", conn_.id, req_id_,
              {{"relayed", relayed}, {"error", ec.message()}});
    rparser_.reset();
    up_.reset();
    bool framing = ec.category() == http::make_error_code(http::error::bad_chunk).category() &&
                   ec != http::error::end_of_stream && ec != http::error::partial_message;
    req_.body = exchange_.request.body; // the relayed prefix, for the refusal's record
    if (framing) { // a malformed chunked body: answered like any framing error, then closed
      release_in_flight();
      std::string reason =
          "HTTP framing error in the request body after " + relayed + ": " + ec.message();
      finish_refusal(http::status::bad_request, error_body("malformed_request", reason, req_id_),
                     "refused", "malformed_request", reason, true);
      return;
    }
    if (ec == beast::error::timeout) {
      release_in_flight();
      std::string reason = "the request body stalled after " + relayed + " (limits.idle_timeout)";
      finish_refusal(http::status::request_timeout, error_body("request_timeout", reason, req_id_),
                     "refused", "request_timeout", reason, true);
      return;
    }
    record_final("client_gone", "client_gone",
                 "the agent closed the connection during the request body (" + relayed +
                     " relayed): " + ec.message());
    release_in_flight();
    beast::error_code ignored;
    lowest().socket().close(ignored);
  }

  // --- writing without a scheduler trip -----------------------------------------------
  // An async_write whose first send takes every byte still posts its completion: one more
  // pass through the io_context (an epoll_wait and a handler dispatch) per write, two per
  // forwarded request, on the path between the agent's request and its answer. A plain
  // socket is first offered the bytes with one non-blocking sendmsg; only what it does not
  // take goes through async_write. TLS streams always write asynchronously.

  /// Continuations run inline (a send that took everything, a body already buffered) at
  /// most this deep before one goes through the scheduler, so the stack stays bounded.
  static constexpr int kMaxInlineSteps = 16;

  /// True when the write is over (every byte sent, or a send error in ec): the caller runs
  /// its completion now. Else bufs is advanced past what was sent and the caller writes the
  /// rest with async_write. Never blocks.
  template <std::size_t N>
  bool send_now(tcp::socket& socket, std::array<net::const_buffer, N>& bufs, beast::error_code& ec,
                std::size_t count = N) {
    if (inline_steps_ >= kMaxInlineSteps) {
      inline_steps_ = 0; // the caller's async_write unwinds the stack
      return false;
    }
    std::array<iovec, N> iov{};
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
      iov[i].iov_base = const_cast<void*>(bufs[i].data());
      iov[i].iov_len = bufs[i].size();
      total += bufs[i].size();
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    ssize_t n = ::sendmsg(socket.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        inline_steps_ = 0;
        return false;
      }
      ec = beast::error_code(errno, boost::system::system_category());
      ++inline_steps_;
      return true;
    }
    auto sent = static_cast<std::size_t>(n);
    if (sent == total) {
      ++inline_steps_;
      return true;
    }
    for (std::size_t i = 0; i < count; ++i) { // what is left, for async_write
      std::size_t used = std::min(sent, bufs[i].size());
      bufs[i] += used;
      sent -= used;
    }
    inline_steps_ = 0;
    return false;
  }

  void on_upstream_written(beast::error_code ec) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    ec = timed_out(ec);
    if (ec) {
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "writing the request upstream failed: " + ec.message());
      return;
    }
    interim_ = 0;
    read_upstream_header();
  }

  void read_upstream_header() {
    inline_steps_ = 0; // an async read follows: the stack unwinds
    rparser_.emplace();
    rparser_->header_limit(kUpstreamHeaderLimit);
    rparser_->body_limit(boost::none);
    if (head_) {
      rparser_->skip(true);
    }
    arm(Watch::upstream, limits().upstream_response_timeout);
    http::async_read_header(up_->stream, up_->buffer, *rparser_, bind(&Self::on_upstream_header));
  }

  void on_upstream_header(beast::error_code ec, std::size_t) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    ec = timed_out(ec);
    if (ec) {
      if (ec == beast::error::timeout) {
        upstream_failed(http::status::gateway_timeout, "upstream_timeout",
                        "no response from " + req_.host +
                            " within limits.upstream_response_timeout");
      } else {
        upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                        "reading the upstream response failed: " + ec.message());
      }
      return;
    }
    auto& res = rparser_->get();
    unsigned status = res.result_int();
    if (status >= 100 && status < 200) {
      if (status == 101 || ++interim_ > kMaxInterimResponses) {
        upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                        "upstream sent an unexpected interim response " + std::to_string(status));
        return;
      }
      read_upstream_header();
      return;
    }
    // RFC 9112 §6.1: a message with both Transfer-Encoding and Content-Length "ought to be
    // handled as an error". Beast frames such a response by Content-Length when the coding
    // does not end in chunked, where the upstream may mean close-delimited: what follows could
    // be taken for the next response on a pooled connection. Refused, never reused.
    if (res.count(http::field::transfer_encoding) > 0 &&
        res.count(http::field::content_length) > 0) {
      upstream_failed(http::status::bad_gateway, "upstream_unavailable",
                      "upstream response has both Transfer-Encoding and Content-Length");
      return;
    }
    upstream_ms_ = ms_since(upstream_started_);
    resp_info_.status = static_cast<int>(status);
    auto& tokens = resp_tokens_;
    tokens.clear();
    auto& headers = resp_info_.headers;
    std::size_t fields = 0;
    for (const auto& f : res) {
      if (fields < headers.size()) { // a slot of an earlier response: its strings reused
        headers[fields].first.assign(f.name_string());
        headers[fields].second.assign(f.value());
      } else {
        headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      }
      ++fields;
      if (iequals(f.name_string(), "connection") || iequals(f.name_string(), "proxy-connection")) {
        connection_tokens(f.value(), tokens);
      }
    }
    headers.resize(fields);
    for (auto it = res.begin(); it != res.end();) {
      std::string_view name = it->name_string();
      bool framing = iequals(name, "transfer-encoding");
      if ((is_hop_by_hop(name) && !framing) || named_in(name, tokens)) {
        it = res.erase(it);
      } else {
        ++it;
      }
    }
    client_keep_ = keep_alive_ && !ctx_->draining.load();
    res.version(11);
    bool body_allowed = !head_ && status != 204 && status != 304;
    if (body_allowed && !res.has_content_length() && !res.chunked()) {
      if (client_version_ >= 11) {
        res.chunked(true); // upstream delimits by close; re-frame for a keep-alive client
      } else {
        client_keep_ = false; // an HTTP/1.0 agent gets the body delimited by close
      }
    }
    res.keep_alive(client_keep_);
    // An answer to HEAD, a 204 or a 304 has no content whatever its framing fields say:
    // nothing but the head goes to the agent (no chunk terminator either).
    down_body_ = body_allowed && status >= 200;
    down_chunked_ = down_body_ && res.chunked();
    build_response_head(down_head_, res);
    head_sent_ = false;
    relay_last_ = false;
    if (up_->buffer.size() != 0 || rparser_->is_done()) {
      // Body bytes came with the header (the common small API response): the header goes
      // out with the first body piece in one write.
      relay_read();
      return;
    }
    // Nothing of the body yet (SSE, slow producers): the agent gets the header now.
    relay_write(0, false);
  }

  void relay_read() {
    auto& body = rparser_->get().body();
    if (rparser_->is_done()) {
      relay_write(0, true);
      return;
    }
    if (!relay_buf_) {
      relay_buf_ = std::make_unique<std::array<char, kRelayBuffer>>();
    }
    body.data = relay_buf_->data();
    body.size = relay_buf_->size();
    body.more = true;
    if (up_->buffer.size() != 0 && inline_steps_ < kMaxInlineSteps) {
      // What http::async_read_some does first, without the post it completes with when no
      // read was needed: parse what is already buffered (a small response's body came with
      // its header). Only need_more goes on to read from the upstream.
      beast::error_code ec;
      std::size_t used = rparser_->put(up_->buffer.data(), ec);
      up_->buffer.consume(used);
      if (ec != http::error::need_more) {
        ++inline_steps_;
        on_relay_read(ec, used);
        return;
      }
    }
    inline_steps_ = 0;
    // Beast reads at most the buffer's free capacity (512 bytes at least): the head's read
    // left it at 512, so a large body came in 512-byte reads, each relayed as its own write.
    up_->buffer.reserve(kRelayBuffer);
    arm(Watch::upstream, limits().upstream_response_timeout);
    http::async_read_some(up_->stream, up_->buffer, *rparser_, bind(&Self::on_relay_read));
  }

  /// How a read into a buffer_body went (the upstream's response or a chunked upload):
  /// false once on_shutdown_abort ended the exchange; else ec, with a filled relay buffer
  /// (need_buffer) not an error.
  bool body_read_done(beast::error_code& ec) {
    if (aborted_) {
      return false;
    }
    ec = timed_out(ec);
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    return true;
  }

  void on_relay_read(beast::error_code ec, std::size_t) {
    if (!body_read_done(ec)) {
      return;
    }
    if (ec) {
      relay_failed("upstream_error", ec);
      return;
    }
    auto& body = rparser_->get().body();
    std::size_t got = relay_buf_->size() - body.size;
    bool last = rparser_->is_done();
    resp_info_.bytes += got;
    down_digest_.add(resp_info_.body, ctx_->config->audit.body_bytes + kRedactionMargin,
                     relay_buf_->data(), got);
    if (got == 0 && !last && head_sent_) {
      relay_read();
      return;
    }
    relay_write(got, last); // also sends a still unsent header, so it never waits on the body
  }

  /// Writes what is pending for the agent in one gather write: the head if it has not gone
  /// out, then `got` bytes of relay_buf_ (as one chunk when re-chunking), then, after the
  /// last piece, the chunked terminator. The same bytes Beast's serializer wrote, except
  /// that a bodiless answer never gets chunk framing.
  void relay_write(std::size_t got, bool last) {
    auto& bufs = relay_bufs_; // a member: the write keeps a view of it until it completes
    std::size_t n = 0;
    if (!head_sent_) {
      bufs[n++] = net::buffer(down_head_);
      head_sent_ = true;
    }
    if (down_body_) {
      if (down_chunked_ && got != 0) {
        auto line = chunk_size_line(chunk_line_, got);
        bufs[n++] = net::buffer(line.data(), line.size());
      }
      if (got != 0) {
        bufs[n++] = net::buffer(relay_buf_->data(), got);
      }
      std::string_view tail = down_chunked_ ? chunk_tail(got, last) : std::string_view();
      if (!tail.empty()) {
        bufs[n++] = net::buffer(tail.data(), tail.size());
      }
    }
    relay_last_ = last;
    if (last) {
      record_then_send(n);
      return;
    }
    send_relay(n);
  }

  /// DESIGN §6: a request's record is written before its response completes to the agent.
  /// The last piece (the whole response, when it came in one read) waits for the record;
  /// if the audit log fails the agent never gets it (see abort_unrecorded). The pieces stay
  /// in relay_bufs_, relay_buf_ and chunk_line_, which nothing touches until they are sent.
  void record_then_send(std::size_t n) {
    disarm();
    record_final(outcome_, decision_.code, decision_.reason,
                 [self = this->shared_from_this(), n](std::error_code ec) {
                   self->on_session_thread([self, ec, n] {
                     if (ec) {
                       self->abort_unrecorded(ec);
                       return;
                     }
                     self->send_relay(n);
                   });
                 });
  }

  /// The exchange's record could not be written: the response does not complete. The
  /// connection is reset (not closed cleanly), so an agent reading a close-delimited body
  /// sees an error, not its end; the upstream connection is not reused.
  void abort_unrecorded(std::error_code ec) {
    log_event(LogLevel::error, "audit_failed", conn_.id, req_id_,
              {{"error", ec.message()}, {"effect", "response not completed"}});
    rparser_.reset();
    up_.reset();
    release_in_flight();
    beast::error_code ignored;
    lowest().socket().set_option(net::socket_base::linger(true, 0), ignored);
    lowest().socket().close(ignored);
  }

  void send_relay(std::size_t n) {
    if (aborted_) {
      release_in_flight(); // the record on_shutdown_abort left to record_then_send is written
      return;
    }
    auto& bufs = relay_bufs_;
    if (n == 0) {
      on_relay_written({}, 0); // nothing left to send (a close-delimited body's end)
      return;
    }
    arm(Watch::client, limits().idle_timeout);
    if constexpr (!kTls) {
      beast::error_code ec;
      if (send_now(lowest().socket(), bufs, ec, n)) {
        on_relay_written(ec, 0);
        return;
      }
    }
    net::async_write(stream_, std::span<const net::const_buffer>(bufs.data(), n),
                     bind(&Self::on_relay_written));
  }

  void on_relay_written(beast::error_code ec, std::size_t) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    ec = timed_out(ec);
    if (ec) {
      relay_failed("client_gone", ec, relay_last_); // the last piece: already recorded
      return;
    }
    if (relay_last_) {
      response_done();
      return;
    }
    relay_read();
  }

  /// The completion of a final record, which only logs a failure. It may run on another
  /// thread while this session already reads its next request (audit::Completion), so it
  /// reads copies of the connection and request ids, never the session's members: the
  /// request id goes in an inline buffer ("req_" and 16 hex digits), which adds no
  /// allocation to the one the completion's wrapper already costs. It still holds the
  /// session (and so the connection's slot) until the record is durable, as before.
  audit::Completion audit_failure_logger() {
    struct IdCopy {
      std::array<char, 32> text{};
      std::size_t size = 0;
    } id;
    id.size = std::min(req_id_.size(), id.text.size());
    std::copy_n(req_id_.data(), id.size, id.text.data());
    return [hold = this->shared_from_this(), conn = conn_.id, id](std::error_code ec) {
      if (ec) {
        log_event(LogLevel::error, "audit_failed", conn, std::string_view(id.text.data(), id.size),
                  {{"error", ec.message()}});
      }
    };
  }

  void release_in_flight() {
    if (in_flight_) {
      in_flight_ = false;
      ctx_->in_flight.fetch_sub(1);
      in_flight_list_->remove(*this);
    }
  }

  /// See abort_for_shutdown. The sockets are closed, not destroyed: the operations pending
  /// on them complete with errors, and every handler of the forwarding path returns at
  /// once when aborted_ is set.
  void on_shutdown_abort() {
    if (!in_flight_ || aborted_) {
      return;
    }
    aborted_ = true;
    log_event(LogLevel::warn, "aborted_at_shutdown", conn_.id, req_id_, {{"run", run_}});
    disarm();
    // The exchange stays in flight until its record is written: the drain waits for that
    // (Server::poll_drain) before it stops the I/O threads the completion runs on.
    if (!relay_last_) {
      record_final("aborted", "shutdown",
                   "runwarden shut down before the response completed (the drain's grace "
                   "period ran out)",
                   [self = this->shared_from_this()](std::error_code ec) {
                     if (ec) {
                       log_event(LogLevel::error, "audit_failed", self->conn_.id, {},
                                 {{"error", ec.message()}, {"effect", "aborted exchange"}});
                     }
                     self->on_session_thread([self] { self->release_in_flight(); });
                   });
    } // else record_then_send's record is pending: its completion releases (send_relay)
    beast::error_code ignored;
    if (up_) {
      beast::get_lowest_layer(up_->stream).socket().close(ignored);
    }
    lowest().socket().close(ignored);
  }

  void record_final(const std::string& outcome, const std::string& code, const std::string& reason,
                    audit::Completion done = {}) {
    if (exchange_ready_) {
      exchange_.outcome = outcome;
      exchange_.code = code;
      exchange_.reason = reason;
      exchange_.approval = approval_;
      exchange_.timing.total_ms = ms_since(started_);
      exchange_.timing.upstream_ms = upstream_ms_;
    } else {
      fill_exchange(exchange_, outcome, code, reason);
    }
    exchange_ready_ = false;
    auto& ex = exchange_;
    ctx_->gate->observe(run_, req_id_, decision_.action, outcome, req_.method, ex.request.url);
    if (resp_info_.status == 0) {
      resp_info_.headers.clear(); // no response head arrived: none of its fields either
    }
    resp_info_.body_complete = resp_info_.body.size() == resp_info_.bytes;
    resp_info_.body_sha256 = down_digest_.hex();
    if (upload_) { // the relayed upload since its decision record: all of it, or its
                   // part taken before an early answer or a shutdown
      ex.request.body_bytes = upload_taken_;
      ex.request.body_sha256 = up_digest_.hex();
    }
    ex.response = std::move(resp_info_); // comes back with its storage (audit_then_forward)
    resp_info_.headers.clear();          // moved from: made definite
    clear_response();
    ctx_->audit->record(ex, true, done ? std::move(done) : audit_failure_logger());
    // Written: the bodies go now, so an idle keep-alive connection holds neither the agent's
    // payload nor, after a large upload, its buffer until the next request (the reused
    // record keeps string capacity, and inspected bodies reach limits.inspect_body_bytes).
    if (ex.request.body.capacity() > ctx_->config->audit.body_bytes + kRedactionMargin) {
      std::string().swap(ex.request.body);
    } else {
      ex.request.body.clear();
    }
    ex.response->body.clear();
  }

  void response_done() {
    disarm();
    // Only a clean exchange returns the connection: the response read to its end, both
    // sides keep-alive, nothing left over, not draining. Anything else closes it.
    bool reusable =
        rparser_->keep_alive() && up_->buffer.size() == 0 && !ctx_->draining.load() && !upload_cut_;
    if (reusable) {
      pool().put(std::move(up_), limits().idle_timeout);
      if (shared_pools_ != nullptr) {
        shared_pools_->schedule_sweep(limits().idle_timeout);
      }
    }
    up_.reset();
    rparser_.reset();
    if (log_enabled(LogLevel::info) && exchange_.response) {
      // The record (record_then_send) holds the response's status and length now.
      char status[12];
      char bytes[24];
      auto status_end =
          std::to_chars(status, status + sizeof status, exchange_.response->status).ptr;
      auto bytes_end = std::to_chars(bytes, bytes + sizeof bytes, exchange_.response->bytes).ptr;
      log_event(
          LogLevel::info, "response", conn_.id, req_id_,
          {{"run", run_},
           {"method", req_.method},
           {"host", req_.host},
           {"outcome", outcome_},
           {"code", decision_.code},
           {"action", decision_.action},
           {"status", std::string_view(status, static_cast<std::size_t>(status_end - status))},
           {"bytes", std::string_view(bytes, static_cast<std::size_t>(bytes_end - bytes))},
           {"reused", reusable ? "yes" : "no"},
           {"pooled_upstream", reused_ ? "yes" : "no"}});
    }
    if (ctx_->metrics) {
      ctx_->metrics->upstream_time.observe(upstream_ms_ / 1000.0);
      ctx_->metrics->request_seconds.observe({outcome_}, ms_since(started_) / 1000.0);
    }
    release_in_flight();
    ++served_;
    if (!client_keep_) {
      linger_close();
      return;
    }
    do_read();
  }

  /// Mid-stream failure: the status line is already out, so the only honest signal left
  /// is closing the connection.
  void relay_failed(const std::string& outcome, beast::error_code ec, bool recorded = false) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    disarm();
    log_event(LogLevel::warn, "relay_failed", conn_.id, req_id_,
              {{"outcome", outcome}, {"error", ec.message()}});
    if (ctx_->metrics) {
      ctx_->metrics->upstream_errors.inc({outcome});
    }
    rparser_.reset();
    up_.reset();
    if (!recorded) {
      record_final(outcome, outcome, "response relay failed: " + ec.message());
    } else {
      // The exchange's record (written before the last piece) says the response went out;
      // the last piece did not reach the agent. An event says so, under the same id.
      ctx_->audit->event(
          "response_not_delivered",
          {{"request_id", req_id_}, {"run", run_}, {"outcome", outcome}, {"error", ec.message()}},
          [](std::error_code) {});
    }
    release_in_flight();
    beast::error_code ignored;
    lowest().socket().close(ignored);
  }

  /// Before any response byte reached the agent: answer 502/504 and never reuse the
  /// upstream connection.
  void upstream_failed(http::status status, const std::string& code, const std::string& reason) {
    if (aborted_) {
      return; // on_shutdown_abort ended the exchange
    }
    disarm();
    log_event(LogLevel::warn, "upstream_failed", conn_.id, req_id_,
              {{"code", code}, {"reason", reason}});
    if (ctx_->metrics) {
      ctx_->metrics->upstream_errors.inc({code});
    }
    rparser_.reset();
    up_.reset();
    release_in_flight();
    bool close = tunnel_;
    finish_refusal(status, error_body(code, reason, req_id_), "upstream_error", code, reason,
                   close);
  }

  std::shared_ptr<ProxyContext> ctx_;
  ConnInfo conn_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::uint32_t lookup_seq_ = 0;     // the name lookup whose answer is awaited
  NameLookup::Ticket lookup_ticket_; // withdrawn when the lookup's deadline passes
  net::steady_timer deadline_timer_;
  const std::optional<net::io_context::executor_type> io_exec_; // see on_session_thread()
  Clock::time_point deadline_{};
  Clock::time_point timer_at_{};
  Watch watch_ = Watch::none;
  bool timer_waiting_ = false;
  bool timed_out_ = false; // the watched operation was cancelled by the deadline
  Target target_;          // TLS sessions: the CONNECT target
  std::optional<http::request_parser<http::string_body>> parser_;

  // Per exchange.
  std::string req_id_;
  Clock::time_point started_ = Clock::now();
  Clock::time_point upstream_started_ = Clock::now();
  policy::Request req_;
  policy::Decision decision_;
  std::optional<audit::ApprovalInfo> approval_;
  std::string approval_id_;                         // shown in a hold's refusal
  std::optional<std::chrono::seconds> retry_after_; // approval_pending
  // Relayed bodies that outgrow the record's prefix are hashed whole as they pass.
  audit::StreamedBodyDigest up_digest_;
  audit::StreamedBodyDigest down_digest_;
  bool hold_active_ = false; // waiting on the gate; client watched
  bool client_gone_ = false;
  std::shared_ptr<const void> hold_answer_; // HoldResult::answering, until the answer is out
  std::optional<net::steady_timer> hold_timer_;
  std::string run_;
  std::string runbook_;
  std::shared_ptr<const config::Config> policy_; // the policy snapshot judging this exchange
  /// limits(): refreshed when a request is awaited and when its head arrives.
  config::Limits limits_ = live_config(*ctx_)->limits;
  std::size_t head_limit_ = 0; // the header_bytes the parser was given for this head
  std::string traceparent_;
  std::string raw_url_;
  std::string outcome_;
  audit::ResponseInfo resp_info_;
  audit::Exchange exchange_; // the forwarded request's record, reused for its final record
  bool exchange_ready_ = false;
  double upstream_ms_ = 0;
  bool have_request_ = false;
  bool keep_alive_ = true;
  bool client_keep_ = true;
  bool expect_continue_ = false;
  bool upload_ = false;            // judge_unread_body: the body is relayed, not buffered
  bool upload_chunked_ = false;    // it is chunked (no declared length)
  bool upload_ended_ = false;      // chunked: its terminator is written (or being written)
  std::uint64_t upload_total_ = 0; // its declared length (chunked: taken so far)
  std::uint64_t upload_left_ = 0;  // not yet taken from the agent (Content-Length)
  std::uint64_t upload_taken_ = 0; // taken from the agent so far
  bool upload_cut_ = false;        // the upstream answered before it had the whole body
  std::optional<http::request_parser<http::buffer_body>> upload_parser_; // chunked
  std::array<net::const_buffer, 3> upload_bufs_{};                       // chunk line, piece, tail
  bool body_room_ = false; // read_body reserved room for the body: on_body gives it back
  bool head_ = false;
  bool tunnel_ = false;
  std::string tunnel_host_;           // with tunnel_: the tls.passthrough host it was judged for
  bool transparent_ = false;          // plain HTTP on the transparent listener (target_ is fixed)
  std::optional<tcp::endpoint> dial_; // transparent passthrough: connect here, no resolve
  bool in_flight_ = false;
  bool aborted_ = false; // on_shutdown_abort ended the exchange: every handler returns
  InFlightExchanges* in_flight_list_ = nullptr; // this io_context's, once forwarding began
  int interim_ = 0;
  unsigned client_version_ = 11;
  std::uint64_t served_ = 0;

  // Upstream side.
  std::unique_ptr<Upstream> up_;
  UpstreamPool<UpStream> own_pool_;       // used only off a one-thread io_context
  UpstreamPools* shared_pools_ = nullptr; // this I/O thread's pools, once looked up
  bool own_pool_chosen_ = false;          // looked up: not on a one-thread io_context
  std::string key_;                       // upstream_key() of the last target
  std::string key_scheme_;
  std::string key_host_;
  std::uint16_t key_port_ = 0;
  bool key_valid_ = false;
  bool reused_ = false; // up_ came from a pool
  std::optional<http::response_parser<http::buffer_body>> rparser_;
  std::string down_head_;                         // the agent's response head, reused per exchange
  std::array<char, 20> chunk_line_{};             // "<hex size>\r\n" of the chunk being written
  std::array<net::const_buffer, 4> relay_bufs_{}; // the agent write in flight
  std::array<net::const_buffer, 2> up_bufs_{};    // the upstream write in flight
  int inline_steps_ = 0;                          // see kMaxInlineSteps
  bool down_body_ = false;                        // the answer carries content (not HEAD, 204, 304)
  bool down_chunked_ = false;                     // its content is chunk-framed for the agent
  bool head_sent_ = false;
  bool relay_last_ = false;              // the write in flight ends the response
  std::string up_head_;                  // the upstream request head, reused per exchange
  std::vector<std::string> conn_tokens_; // Connection tokens, reused per head
  std::vector<std::string> resp_tokens_; // the upstream response's Connection tokens
  std::unique_ptr<std::array<char, kRelayBuffer>> relay_buf_;
  std::unique_ptr<std::array<char, 4096>> discard_;
  std::size_t lingered_ = 0;
};

} // namespace

void start_proxy_session(std::shared_ptr<ProxyContext> ctx, tcp::socket socket) {
  ConnInfo conn;
  conn.id = ctx->next_conn_id.fetch_add(1);
  ctx->open_connections.fetch_add(1);
  conn.token = std::make_shared<ConnectionToken>(ctx);
  beast::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  // Bracketed IPv6 ("[::1]:4000"), as the transparent listener writes it.
  conn.peer = ec ? std::string("unknown") : endpoint_text(ep);
  conn.run = next_id("run_");
  socket.set_option(tcp::no_delay(true), ec);
  // As reloaded: a lowered cap refuses new connections; those already open stay.
  if (ctx->open_connections.load() > live_config(*ctx)->limits.max_connections) {
    ctx->rejected_connections.fetch_add(1);
    log_event(LogLevel::warn, "overload", conn.id, {}, {{"peer", conn.peer}});
    auto stream = std::make_shared<PlainStream>(std::move(socket));
    auto res =
        std::make_shared<http::response<http::string_body>>(http::status::service_unavailable, 11);
    res->set(http::field::content_type, "application/json");
    res->set(http::field::retry_after, std::to_string(retry_after_seconds("overloaded")));
    res->body() =
        error_body("overloaded", "too many open connections (limits.max_connections)", {});
    res->keep_alive(false);
    res->prepare_payload();
    stream->expires_after(std::chrono::seconds(5));
    http::async_write(*stream, *res,
                      [stream, res, token = conn.token](beast::error_code, std::size_t) {
                        beast::error_code ignored;
                        stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
                      });
    return;
  }
  log_event(LogLevel::debug, "accepted", conn.id, {}, {{"peer", conn.peer}});
  std::make_shared<HttpSession<PlainStream>>(std::move(ctx), std::move(conn), std::move(socket))
      ->start();
}

void start_transparent_exchange(std::shared_ptr<ProxyContext> ctx, beast::tcp_stream stream,
                                TransparentHandoff handoff) {
  ConnInfo conn;
  conn.id = handoff.conn_id;
  ctx->open_connections.fetch_add(1);
  conn.token = std::make_shared<ConnectionToken>(ctx);
  conn.peer = std::move(handoff.peer);
  conn.run = next_id("run_");
  // As on the explicit listener: without it, a response relayed in pieces (SSE, a body
  // larger than one relay buffer) waits on the agent's delayed ACK after its first piece.
  beast::error_code ec;
  stream.socket().set_option(tcp::no_delay(true), ec);
  beast::flat_buffer buffer;
  if (!handoff.early.empty()) {
    auto room = buffer.prepare(handoff.early.size());
    net::buffer_copy(room, net::buffer(handoff.early));
    buffer.commit(handoff.early.size());
  }
  Target target{std::move(handoff.host), handoff.port};
  switch (handoff.kind) {
  case TransparentKind::http:
    std::make_shared<HttpSession<PlainStream>>(std::move(ctx), std::move(conn), std::move(stream),
                                               std::move(buffer), std::move(target), true)
        ->start();
    return;
  case TransparentKind::tls:
    if (!ctx->authority || !ctx->server_tls) {
      log_event(LogLevel::warn, "refused", conn.id, {},
                {{"code", "interception_unavailable"}, {"host", target.host}});
      return;
    }
    std::make_shared<HttpSession<TlsStream>>(std::move(ctx), std::move(conn), std::move(stream),
                                             std::move(buffer), std::move(target))
        ->start();
    return;
  case TransparentKind::passthrough:
    std::make_shared<HttpSession<PlainStream>>(std::move(ctx), std::move(conn), std::move(stream),
                                               std::move(buffer), std::move(target), true)
        ->start_transparent_tunnel(handoff.destination);
    return;
  }
}

} // namespace runwarden::proxy
