#pragma once
// State every proxy connection shares: immutable config and policy, the audit log, the CA,
// the TLS contexts, the post-decision gate and the counters the admin API reports.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "policy/engine.hpp"
#include "proxy/admin_router.hpp"
#include "proxy/gate.hpp"
#include "proxy/metrics.hpp"
#include "proxy/name_lookup.hpp"
#include "proxy/runtime_state.hpp"
#include "proxy/tunnel_registry.hpp"

#include <atomic>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace runwarden::certs {
class Authority;
}

namespace runwarden::proxy {

/// A Runwarden-Run value as sent (OWS trimmed): 1-128 bytes, or the request is refused; a kill
/// of a longer id (unless agent.id is that long) is refused too.
constexpr std::size_t kMaxRunId = 128;

struct ProxyContext {
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<audit::AuditLog> audit;
  std::shared_ptr<certs::Authority> authority; // null: CONNECT interception is refused
  std::shared_ptr<Gate> gate;
  std::unique_ptr<boost::asio::ssl::context> server_tls;   // interception, one for all
  std::unique_ptr<boost::asio::ssl::context> upstream_tls; // verified client side

  /// Ports a CONNECT may name: those named by catalogue matchers (443 for an https or
  /// any-scheme matcher without ports).
  std::set<std::uint16_t> connect_ports;
  /// Our own listener ports, refused as targets ("loop_refused").
  std::set<std::uint16_t> own_ports;
  std::string own_host;

  std::atomic<policy::Mode> mode{policy::Mode::normal}; // effective mode (runtime's copy)
  /// Operations state: mode with since/by, kill switch, policy snapshot, runs and budgets.
  std::shared_ptr<RuntimeState> runtime;
  /// Upstream and transparent-destination name lookups (a slow name delays only its own).
  std::shared_ptr<NameLookup> lookups;
  std::shared_ptr<ProxyMetrics> metrics;
  /// Operator identity for mutating admin routes (POST /v1/mode, kill), or nullopt with
  /// *error set. Unset: those routes answer 401.
  std::function<std::optional<std::string>(const AdminRequest&, std::string* error)>
      authenticate_admin;
  /// Announces an operations event (mode_changed, run_killed, budget_exceeded) by webhook.
  std::function<void(std::string_view event, const nlohmann::json& data)> announce;
  std::atomic<bool> draining{false};
  std::atomic<std::uint64_t> next_conn_id{1};
  std::atomic<std::uint64_t> open_connections{0};
  std::atomic<std::uint64_t> rejected_connections{0};
  /// Admin connections open now (capped at kMaxAdminConnections, admin_session.cpp); those
  /// refused over the cap count in rejected_connections too.
  std::atomic<std::uint64_t> admin_connections{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> in_flight{0};
  /// Passthrough tunnels whose closing record is not yet written. They do not hold a drain
  /// open, but the drain ends each with its record before it stops the I/O threads.
  std::atomic<std::uint64_t> open_tunnels{0};
  /// Set by the drain before it tells open tunnels to close; a tunnel starting later closes
  /// itself at once.
  std::atomic<bool> closing_tunnels{false};
  /// The passthrough tunnels open now (explicit and transparent), with their run: pausing,
  /// a run kill or read_only closes those it covers (admin_ops.hpp).
  TunnelRegistry tunnels;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

/// The config in force now: the last good reload's (RuntimeState), else the start-up one.
/// What reads it is live: limits.*, tls.passthrough, the policy. `config` above keeps the
/// start-up values of the settings that need a restart (reload.hpp, restart_required).
inline std::shared_ptr<const config::Config> live_config(const ProxyContext& ctx) {
  return ctx.runtime ? ctx.runtime->config() : ctx.config;
}

/// live_config for the per-request path, without touching the shared reference count
/// (RuntimeState::config_here): valid until this thread calls it again.
inline const std::shared_ptr<const config::Config>& live_config_here(const ProxyContext& ctx) {
  return ctx.runtime ? ctx.runtime->config_here() : ctx.config;
}

} // namespace runwarden::proxy
