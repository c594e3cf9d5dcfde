#pragma once
// runwarden.yaml as typed, immutable objects (DESIGN §2). Loading collects every
// error as "file:line:col: path.to.key: message" and throws ConfigError with all of them.

#include "policy/engine.hpp"
#include "policy/model.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace runwarden::config {

struct Endpoint {
  std::string host; // literal address ("127.0.0.1", "::1", "0.0.0.0")
  std::uint16_t port = 0;
  std::string to_string() const;
};

struct Listen {
  Endpoint proxy;
  /// listen.transparent: one endpoint or a list (e.g. 127.0.0.1 and [::1], the targets of
  /// iptables and ip6tables REDIRECT). Empty: no transparent listener. "[::]" is dual-stack.
  std::vector<Endpoint> transparent;
  Endpoint admin;
};

struct Tls {
  std::filesystem::path ca_cert;
  std::filesystem::path ca_key;
  std::string upstream_trust = "system"; // "system" or a PEM bundle path (resolved)
  std::vector<policy::HostPattern> passthrough;

  /// Whether `host` (a name, or an address's text) is tunnelled unread.
  bool passes_through(std::string_view host) const {
    return std::any_of(passthrough.begin(), passthrough.end(),
                       [&](const policy::HostPattern& p) { return p.matches(host); });
  }
};

struct Webhook {
  std::string url;
  std::string secret_env; // name of the environment variable holding the secret
};

struct Approvals {
  std::chrono::milliseconds hold_timeout{std::chrono::minutes(10)};
  std::string on_timeout = "deny"; // only "deny" is accepted: fail closed
  std::size_t max_pending = 10000;
  std::vector<Webhook> webhooks;
  std::filesystem::path operator_tokens_file; // empty: none
};

struct Audit {
  std::filesystem::path path;
  bool fsync_always = false;
  std::chrono::milliseconds fsync_interval{std::chrono::milliseconds(50)};
  std::size_t body_bytes = 16 * 1024;
  std::size_t rotate_bytes = 256ull * 1024 * 1024;
  std::filesystem::path signing_key; // optional Ed25519 private key (PEM) for checkpoints
  std::uint64_t checkpoint_records = 1000;
  std::chrono::milliseconds checkpoint_interval{std::chrono::seconds(10)};
};

struct Redaction {
  std::vector<std::string> headers;   // lower-cased
  std::vector<std::string> json_keys; // lower-cased
  std::vector<std::string> patterns;  // RE2, validated
  bool operator==(const Redaction&) const = default;
};

struct Limits {
  std::size_t header_bytes = 16 * 1024;
  std::size_t header_count = 100;
  std::size_t inspect_body_bytes = 1024 * 1024;
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds upstream_connect_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds upstream_response_timeout{std::chrono::seconds(60)};
  std::size_t max_connections = 10000;
  std::size_t max_json_depth = 64;
  bool operator==(const Limits&) const = default; // a new field is compared too (reload)
};

/// How calls that carry no `Runwarden-Run` header are grouped into runs (`agent.runs`); a run
/// is what budgets, `ctl kill` and blast-radius count by.
enum class RunIds {
  per_connection, ///< each connection is its own run (the default)
  shared,         ///< all of them are one run named after agent.id
  required,       ///< refused: 400 run_id_required
};

struct Config {
  std::filesystem::path file; // the runwarden.yaml that was loaded
  Listen listen;
  std::string agent_id;
  RunIds run_ids = RunIds::per_connection;
  std::filesystem::path catalogue_file;
  std::vector<std::filesystem::path> runbook_paths;
  std::string active_runbook;
  std::vector<std::string> selectable_runbooks; // agent may pick via Runwarden-Runbook
  Tls tls;
  Approvals approvals;
  Audit audit;
  Redaction redaction;
  Limits limits;
  std::filesystem::path kill_switch_file; // optional: its presence means paused
  unsigned threads = 0;                   // 0: one per core

  std::shared_ptr<const policy::Catalogue> catalogue;
  std::vector<std::shared_ptr<const policy::Runbook>> runbooks;
  std::shared_ptr<const policy::Engine> engine; // built from catalogue + runbooks
};

/// All load errors, one per line, each "file:line:col: path: message".
class ConfigError : public std::runtime_error {
public:
  explicit ConfigError(std::vector<std::string> errors);
  const std::vector<std::string>& errors() const { return errors_; }

private:
  std::vector<std::string> errors_;
};

/// Loads runwarden.yaml, the catalogue and every runbook. Throws ConfigError.
std::shared_ptr<const Config> load_config(const std::filesystem::path& file);

/// What `serve` cannot start without but the file may leave out: the loader accepts a config
/// with no `tls` (tools, tests and `explain` load partial configs), while `serve` always
/// loads the interception CA. One line per missing key, "<file>: tls.ca_cert: ...".
/// `check` reports these as errors, so `check` and `serve` agree on what is missing (the
/// files themselves are only opened by `serve`).
std::vector<std::string> serve_requirements(const Config& config);

} // namespace runwarden::config
