#include "proxy/server.hpp"

#include "certs/authority.hpp"
#include "policy/ascii.hpp"
#include "proxy/admin_ops.hpp"
#include "proxy/approval_gate.hpp"
#include "proxy/in_flight.hpp"
#include "proxy/log.hpp"
#include "proxy/metered_audit_log.hpp"
#include "proxy/session.hpp"
#include "proxy/transparent_session.hpp"
#include "proxy/upstream_pool.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace runwarden::proxy {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

/// Server side ALPN: http/1.1 when offered, otherwise no ALPN at all (clients then speak
/// HTTP/1.1); h2 is never selected.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  unsigned int i = 0;
  while (i < inlen) {
    unsigned int len = in[i];
    if (i + 1 + len > inlen) {
      break;
    }
    if (len == 8 && std::string_view(reinterpret_cast<const char*>(in + i + 1), 8) == "http/1.1") {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/// Series read at scrape time from the context (weakly: the registry lives in it).
void add_computed_metrics(ProxyContext& ctx) {
  using Type = MetricFamily::Type;
  auto& r = ctx.metrics->registry;
  ProxyContext* c = &ctx;
  r.computed("runwarden_open_connections", "Open agent connections.", Type::gauge,
             [c] { return static_cast<double>(c->open_connections.load()); });
  r.computed("runwarden_in_flight_requests", "Requests being forwarded.", Type::gauge,
             [c] { return static_cast<double>(c->in_flight.load()); });
  r.computed("runwarden_rejected_connections_total", "Connections refused over the limit.",
             Type::counter, [c] { return static_cast<double>(c->rejected_connections.load()); });
  r.computed("runwarden_mode", "Effective mode: 0 normal, 1 read_only, 2 paused.", Type::gauge,
             [c] { return static_cast<double>(c->runtime->effective_mode()); });
  r.computed("runwarden_kill_switch", "1 while the kill-switch file exists.", Type::gauge,
             [c] { return c->runtime->kill_switch_present() ? 1.0 : 0.0; });
  r.computed("runwarden_runs", "Runs in the run table.", Type::gauge,
             [c] { return static_cast<double>(c->runtime->run_count()); });
  r.computed("runwarden_cert_cache_hits_total", "Leaf certificate cache hits.", Type::counter,
             [c] { return c->authority ? static_cast<double>(c->authority->stats().hits) : 0.0; });
  r.computed(
      "runwarden_cert_cache_misses_total", "Leaf certificate cache misses (mints).", Type::counter,
      [c] { return c->authority ? static_cast<double>(c->authority->stats().misses) : 0.0; });
}

} // namespace

std::set<std::uint16_t> catalogue_connect_ports(const policy::Catalogue* catalogue) {
  std::set<std::uint16_t> ports;
  if (catalogue == nullptr) {
    return ports;
  }
  for (const auto& [name, action] : catalogue->actions) {
    for (const auto& m : action.matchers) {
      if (!m.ports.empty()) {
        ports.insert(m.ports.begin(), m.ports.end());
        continue;
      }
      bool https = m.schemes.empty();
      for (const auto& s : m.schemes) {
        https = https || s == "https";
      }
      if (https) {
        ports.insert(443);
      }
    }
  }
  return ports;
}

struct Server::Listener {
  explicit Listener(net::io_context& ioc) : acceptor(ioc), retry(ioc) {}
  tcp::acceptor acceptor;
  bool admin = false;
  bool transparent = false; // listen.transparent: transparent_session.cpp
  // After a failed accept (EMFILE: out of descriptors), the next one waits kAcceptBackoff;
  // failures are logged at most once a second, with how many were not.
  net::steady_timer retry;
  LogThrottle failures{std::chrono::seconds(1)};
};

/// A failed accept leaves the connection in the backlog, so accepting again at once fails
/// the same way: a busy loop that took a core and wrote ~140 MB of log a second when the
/// descriptors ran out. nginx pauses its accepts for 500 ms in that case; 100 ms here.
constexpr std::chrono::milliseconds kAcceptBackoff{100};

/// Name lookup workers kept, and at most running at once (each hung name holds one until the
/// C library gives up; Asio's resolver would have held the whole I/O thread's lookups
/// behind it). Workers beyond the first 8 start only while lookups queue with none free.
constexpr std::size_t kLookupWorkers = 8;
constexpr std::size_t kMaxLookupWorkers = 64;

Server::Server(net::io_context& ioc, ServerOptions options)
    : ioc_(ioc), ctx_(std::make_shared<ProxyContext>()), drain_timer_(ioc) {
  if (!options.config || !options.config->engine || !options.audit) {
    throw std::runtime_error("proxy server needs a loaded config with an engine and an audit log");
  }
  for (unsigned i = 0; i < options.io_threads; ++i) {
    io_.push_back(std::make_unique<net::io_context>(1)); // hint 1: one thread, less locking
  }
  ctx_->config = std::move(options.config);
  ctx_->metrics = std::make_shared<ProxyMetrics>();
  ctx_->metrics->prime(ctx_->config->runbooks);
  ctx_->audit = std::make_shared<MeteredAuditLog>(std::move(options.audit), ctx_->metrics);
  ctx_->runtime = std::make_shared<RuntimeState>(ctx_->config);
  ctx_->lookups =
      std::make_shared<NameLookup>(kLookupWorkers, NameLookup::Resolve{}, kMaxLookupWorkers);
  ctx_->authority = std::move(options.authority);
  ctx_->gate = std::move(options.gate);

  ctx_->server_tls = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx_->server_tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                ssl::context::no_tlsv1_1);
  SSL_CTX_set_alpn_select_cb(ctx_->server_tls->native_handle(), select_alpn, nullptr);

  ctx_->upstream_tls = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx_->upstream_tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                  ssl::context::no_tlsv1_1);
  ctx_->upstream_tls->set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  const auto& trust = ctx_->config->tls.upstream_trust;
  if (trust.empty() || trust == "system") {
    ctx_->upstream_tls->set_default_verify_paths(ec);
  } else {
    ctx_->upstream_tls->load_verify_file(trust, ec);
  }
  if (ec) {
    throw std::runtime_error("tls.upstream_trust: cannot load \"" + trust + "\": " + ec.message());
  }
  if (SSL_CTX_set_alpn_protos(ctx_->upstream_tls->native_handle(), kAlpnHttp11,
                              sizeof kAlpnHttp11) != 0) {
    throw std::runtime_error("cannot configure upstream ALPN");
  }
  ctx_->connect_ports = catalogue_connect_ports(ctx_->config->catalogue.get());
  add_builtin_admin_routes(router_, ctx_);
  add_ops_routes(router_, ctx_);
  add_computed_metrics(*ctx_);
  if (!ctx_->gate) { // approvals (approval_gate.hpp); no audit.path: holds are refused
    Approvals approvals = make_approvals(ioc_, *ctx_->upstream_tls, *ctx_->config, ctx_->audit);
    if (approvals.gate) {
      add_approval_routes(router_, approvals.gate, approvals.auth);
      ctx_->authenticate_admin = [auth = approvals.auth](const AdminRequest& r, std::string* why) {
        AdminIdentity who = auth->authenticate(r);
        if (!who.name && why != nullptr) {
          *why = who.error;
        }
        return who.name;
      };
      ctx_->announce = [gate = std::weak_ptr<ApprovalGate>(approvals.gate)](
                           std::string_view event, const nlohmann::json& data) {
        if (auto g = gate.lock()) {
          g->announce(event, data);
        }
      };
      auto& metrics = ctx_->metrics->registry;
      std::weak_ptr<ApprovalGate> weak = approvals.gate;
      metrics.computed("runwarden_pending_holds", "Requests held for approval now.",
                       MetricFamily::Type::gauge, [weak] {
                         auto g = weak.lock();
                         return g ? static_cast<double>(g->registry().stats().pending) : 0.0;
                       });
      metrics.computed(
          "runwarden_oldest_hold_age_seconds", "How long the oldest pending hold has waited.",
          MetricFamily::Type::gauge, [weak] {
            auto g = weak.lock();
            return g ? static_cast<double>(g->registry().oldest_pending_age().count()) / 1000.0
                     : 0.0;
          });
      approvals_ = approvals.gate;
      ctx_->gate = std::move(approvals.gate);
      tokens_ = approvals.tokens; // the handle the admin auth reads
    } else {
      ctx_->gate = std::make_shared<RefuseHolds>();
      if (!ctx_->config->approvals.operator_tokens_file.empty()) {
        // No approvals (no audit.path) but operators: they may still change mode or kill.
        tokens_ =
            approval::OperatorTokens::load(ctx_->config->approvals.operator_tokens_file.string());
        ctx_->authenticate_admin = [tokens = tokens_](const AdminRequest& r, std::string* why) {
          for (const auto& [name, value] : r.headers) {
            if (policy::iequals(name, "authorization")) {
              auto who = tokens.authenticate_header(value);
              if (!who && why != nullptr) {
                *why = "bad_token";
              }
              return who;
            }
          }
          if (why != nullptr) {
            *why = "missing_credentials";
          }
          return std::optional<std::string>();
        };
      }
    }
  }
}

Server::~Server() {
  stop_io_threads();
}

void Server::stop_io_threads() {
  io_guards_.clear();
  for (auto& io : io_) {
    io->stop();
  }
  for (auto& t : io_threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  io_threads_.clear();
  // Nothing runs on the I/O threads any more: a late lookup must not post to them.
  ctx_->lookups->stop();
}

void Server::start() {
  const auto& listen = ctx_->config->listen;
  auto bind = [this](const config::Endpoint& where, bool admin, bool dual_stack = false) {
    auto l = std::make_shared<Listener>(ioc_);
    l->admin = admin;
    boost::system::error_code ec;
    auto address = net::ip::make_address(where.host, ec);
    if (ec) {
      throw std::runtime_error("listen: bad address \"" + where.host + "\"");
    }
    tcp::endpoint ep(address, where.port);
    l->acceptor.open(ep.protocol(), ec);
    if (!ec) {
      l->acceptor.set_option(net::socket_base::reuse_address(true), ec);
    }
    if (!ec && dual_stack && address.is_v6() && address.is_unspecified()) {
      // "[::]" takes IPv4 too (as v4-mapped peers), whatever net.ipv6.bindv6only says.
      l->acceptor.set_option(net::ip::v6_only(false), ec);
    }
    if (!ec) {
      l->acceptor.bind(ep, ec);
    }
    if (!ec) {
      l->acceptor.listen(net::socket_base::max_listen_connections, ec);
    }
    if (ec) {
      throw std::runtime_error("listen: cannot bind " + where.to_string() + ": " + ec.message());
    }
    return l;
  };
  proxy_ = bind(listen.proxy, false);
  admin_ = bind(listen.admin, true);
  proxy_endpoint_ = proxy_->acceptor.local_endpoint();
  admin_endpoint_ = admin_->acceptor.local_endpoint();
  ctx_->own_ports = {proxy_endpoint_.port(), admin_endpoint_.port()};
  for (const auto& where : listen.transparent) {
    auto l = bind(where, false, true);
    l->transparent = true;
    auto bound = l->acceptor.local_endpoint();
    ctx_->own_ports.insert(bound.port());
    log_event(
        LogLevel::info, "listening", 0, {},
        {{"transparent", config::Endpoint{bound.address().to_string(), bound.port()}.to_string()}});
    transparent_.push_back(std::move(l));
  }
  ctx_->own_host = listen.proxy.host;
  log_event(LogLevel::info, "listening", 0, {},
            {{"proxy", proxy_->acceptor.local_endpoint().address().to_string() + ":" +
                           std::to_string(proxy_->acceptor.local_endpoint().port())},
             {"admin", admin_->acceptor.local_endpoint().address().to_string() + ":" +
                           std::to_string(admin_->acceptor.local_endpoint().port())}});
  for (auto& io : io_) {
    io_guards_.push_back(net::make_work_guard(*io));
    io_threads_.emplace_back([ctx = io.get()] {
      // The audit records this thread's handlers make in one turn share one write(2).
      const audit::TurnBatching batching(
          [ctx](std::function<void()> write) { net::post(*ctx, std::move(write)); });
      ctx->run();
    });
  }
  accept(proxy_);
  accept(admin_);
  for (const auto& l : transparent_) {
    accept(l);
  }
  if (approvals_) {
    approvals_->start(ctx_);
  }
}

tcp::endpoint Server::proxy_endpoint() const {
  return proxy_->acceptor.local_endpoint();
}
tcp::endpoint Server::admin_endpoint() const {
  return admin_->acceptor.local_endpoint();
}
tcp::endpoint Server::transparent_endpoint() const {
  boost::system::error_code ec;
  return transparent_.empty() ? tcp::endpoint() : transparent_.front()->acceptor.local_endpoint(ec);
}
std::vector<tcp::endpoint> Server::transparent_endpoints() const {
  std::vector<tcp::endpoint> out;
  for (const auto& l : transparent_) {
    boost::system::error_code ec;
    out.push_back(l->acceptor.local_endpoint(ec));
  }
  return out;
}

void Server::accept(const std::shared_ptr<Listener>& listener) {
  auto on_accept = [this, listener](boost::system::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !listener->acceptor.is_open()) {
      return;
    }
    if (!ec) {
      if (listener->admin) {
        start_admin_session(router_, ctx_, std::move(socket));
      } else {
        // The session starts on its own executor: once its first operation is initiated,
        // its handlers may run there, and nothing of it may run here concurrently.
        tcp::socket moved = adopt_on_io_thread(std::move(socket));
        if (!moved.is_open()) {
          accept(listener);
          return;
        }
        auto exec = moved.get_executor();
        net::post(exec, [ctx = ctx_, transparent = listener->transparent,
                         s = std::move(moved)]() mutable {
          if (transparent) {
            start_transparent_session(std::move(ctx), std::move(s));
          } else {
            start_proxy_session(std::move(ctx), std::move(s));
          }
        });
      }
    } else {
      if (std::uint64_t skipped = 0; listener->failures.due(skipped)) {
        log_event(LogLevel::warn, "accept_failed", 0, {},
                  {{"error", ec.message()},
                   {"not_logged_since", std::to_string(skipped)},
                   {"retry_in_ms", std::to_string(kAcceptBackoff.count())}});
      }
      listener->retry.expires_after(kAcceptBackoff);
      listener->retry.async_wait([this, listener](boost::system::error_code wait_ec) {
        if (!wait_ec && listener->acceptor.is_open()) {
          accept(listener);
        }
      });
      return;
    }
    accept(listener);
  };
  // The pending accept's peer socket belongs to the acceptor's own context: a pending
  // operation must never hold a socket of another context, which may be destroyed first
  // (an abrupt stop destroyed the I/O contexts while ioc_ still held the accept). A
  // connection that stays on ioc_ (admin, or no I/O threads) gets a strand of its own; one
  // handed to an I/O thread needs none here, its descriptor moves on at once.
  if (listener->admin || io_.empty()) {
    listener->acceptor.async_accept(net::make_strand(ioc_), std::move(on_accept));
    return;
  }
  listener->acceptor.async_accept(ioc_, std::move(on_accept));
}

tcp::socket Server::adopt_on_io_thread(tcp::socket socket) {
  if (io_.empty()) {
    return socket;
  }
  // An io_context run by one thread serializes its handlers already: no strand needed.
  net::io_context& target = *io_[next_io_.fetch_add(1) % io_.size()];
  boost::system::error_code ec;
  const tcp::endpoint local = socket.local_endpoint(ec);
  if (!ec) {
    const tcp::socket::native_handle_type fd = socket.release(ec);
    if (!ec) {
      tcp::socket adopted(target);
      adopted.assign(local.protocol(), fd, ec);
      if (!ec) {
        return adopted;
      }
      ::close(fd);
    }
  }
  log_event(LogLevel::warn, "accept_failed", 0, {},
            {{"error", "handing the connection to an I/O thread: " + ec.message()}});
  return tcp::socket(target);
}

void Server::drain(std::chrono::milliseconds grace, std::function<void()> done) {
  // The grace counts from the signal: ending many holds below is part of it.
  const auto deadline = std::chrono::steady_clock::now() + grace;
  ctx_->draining.store(true);
  log_event(LogLevel::info, "draining", 0, {},
            {{"in_flight", std::to_string(ctx_->in_flight.load())},
             {"open_connections", std::to_string(ctx_->open_connections.load())}});
  // A held request is no exchange in flight: nothing would answer it once the I/O threads
  // stop. Each pending hold ends now (503 approval_shutdown to its agent, its record, the
  // approval's end and webhook); the drain below waits for those answers and deliveries.
  if (approvals_) {
    approvals_->shut_down();
  }
  std::vector<std::shared_ptr<Listener>> listeners = transparent_;
  listeners.push_back(proxy_);
  listeners.push_back(admin_);
  for (const auto& listener : listeners) {
    if (listener) {
      net::post(listener->acceptor.get_executor(), [listener] {
        boost::system::error_code ignored;
        listener->acceptor.close(ignored);
        listener->retry.cancel();
      });
    }
  }
  // Idle pooled upstream connections close now, each on its own thread (pools are
  // thread-confined); in-flight exchanges no longer return theirs while draining.
  for (auto& io : io_) {
    net::post(*io, [ctx = io.get()] {
      if (net::has_service<UpstreamPools>(*ctx)) {
        net::use_service<UpstreamPools>(*ctx).close_all();
      }
    });
  }
  poll_drain(deadline, std::move(done));
}

namespace {
/// After the drain's grace: how long aborted exchanges get to write their records.
constexpr std::chrono::seconds kAbortWait{2};
} // namespace

void Server::poll_drain(std::chrono::steady_clock::time_point deadline,
                        std::function<void()> done) {
  drain_timer_.expires_after(std::chrono::milliseconds(50));
  drain_timer_.async_wait([this, deadline, done = std::move(done)](boost::system::error_code) {
    // Held requests count until their answer is written and every hold transition has
    // reached the journal, the audit log and the webhook queue (another thread may still be
    // delivering the shutdown's events).
    const bool holds_idle =
        !approvals_ || (approvals_->unanswered() == 0 && approvals_->events_idle());
    const bool exchanges_idle = ctx_->in_flight.load() == 0 && holds_idle;
    // Once the drain ended holds, the webhooks announcing it get what is left of the grace
    // (best effort: a dead endpoint waits it out). They never make the drain abort anything,
    // nor mark it unclean.
    const bool webhooks_pending =
        approvals_ && approvals_->shutdown_ended() > 0 && !approvals_->webhooks_idle();
    const bool tunnels_open = ctx_->open_tunnels.load() > 0;
    const bool over = std::chrono::steady_clock::now() >= deadline;
    // Tunnels do not hold the drain open (an idle one cannot be told from a busy one), but
    // neither are they cut unrecorded: once the exchanges are done, or the grace is over,
    // whatever is still open (exchanges, tunnels) ends now with an audit record (outcome
    // aborted) on its own thread, rather than the I/O threads stopping under it; a short,
    // bounded wait lets those records reach the log.
    if (!drain_aborting_ && (exchanges_idle || over) && (!exchanges_idle || tunnels_open)) {
      drain_aborting_ = true;
      ctx_->closing_tunnels.store(true);
      log_event(exchanges_idle ? LogLevel::info : LogLevel::warn,
                exchanges_idle ? "drain_closing_tunnels" : "drain_grace_over", 0, {},
                {{"in_flight", std::to_string(ctx_->in_flight.load())},
                 {"tunnels", std::to_string(ctx_->open_tunnels.load())}});
      auto abort_on = [](net::io_context& ctx) {
        net::post(ctx, [&ctx] {
          if (net::has_service<InFlightExchanges>(ctx)) {
            net::use_service<InFlightExchanges>(ctx).abort_all();
          }
        });
      };
      abort_on(ioc_);
      for (auto& io : io_) {
        abort_on(*io);
      }
      poll_drain(std::chrono::steady_clock::now() + kAbortWait, done);
      return;
    }
    const bool idle = exchanges_idle && !tunnels_open;
    if ((idle && !webhooks_pending) || over) {
      log_event(LogLevel::info, "drained", 0, {},
                {{"in_flight", std::to_string(ctx_->in_flight.load())},
                 {"held", std::to_string(approvals_ ? approvals_->unanswered() : 0)},
                 {"tunnels", std::to_string(ctx_->open_tunnels.load())},
                 {"webhooks_pending", webhooks_pending ? "yes" : "no"},
                 {"clean", idle ? "yes" : "no"}});
      done();
      return;
    }
    poll_drain(deadline, done);
  });
}

void add_builtin_admin_routes(AdminRouter& router, std::shared_ptr<ProxyContext> ctx) {
  router.add("GET", "/healthz", [](const AdminRequest&) {
    AdminResponse r;
    r.content_type = "text/plain";
    r.body = "ok";
    return r;
  });
  router.add("GET", "/readyz", [ctx](const AdminRequest&) {
    nlohmann::json failing = nlohmann::json::object();
    if (!ctx->config || !ctx->config->engine) {
      failing["config"] = "no policy loaded";
    }
    if (!ctx->authority) {
      failing["ca"] = "no CA loaded: TLS interception unavailable";
    }
    if (!ctx->audit || !ctx->audit->healthy()) {
      failing["audit"] = ctx->audit ? ctx->audit->failure() : std::string("no audit log");
    }
    if (ctx->draining.load()) {
      failing["draining"] = "shutting down";
    }
    AdminResponse r;
    r.status = failing.empty() ? 200 : 503;
    r.body = failing.empty() ? nlohmann::json{{"ready", true}}.dump()
                             : nlohmann::json{{"ready", false}, {"failing", failing}}.dump();
    return r;
  });
  router.add("GET", "/v1/status", [ctx](const AdminRequest&) {
    const auto& cfg = *ctx->config;
    std::string sha;
    if (cfg.engine) {
      if (const auto* rb = cfg.engine->runbook(cfg.active_runbook)) {
        sha = rb->sha256;
      }
    }
    auto uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx->started);
    nlohmann::json j{{"mode", policy::to_string(ctx->mode.load())},
                     {"agent", cfg.agent_id},
                     {"active_runbook", cfg.active_runbook},
                     {"runbook_sha256", sha},
                     {"uptime_s", uptime.count()},
                     {"open_connections", ctx->open_connections.load()},
                     {"rejected_connections", ctx->rejected_connections.load()},
                     {"requests", ctx->requests.load()},
                     {"in_flight", ctx->in_flight.load()},
                     {"draining", ctx->draining.load()}};
    AdminResponse r;
    r.body = j.dump();
    return r;
  });
}

} // namespace runwarden::proxy
