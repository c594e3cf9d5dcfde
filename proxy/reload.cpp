#include "proxy/reload.hpp"

#include "audit/redactor.hpp"
#include "config/runbook_loader.hpp"
#include "proxy/admin_ops.hpp"
#include "proxy/approval_gate.hpp"
#include "proxy/log.hpp"
#include "proxy/server.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <csignal>
#include <filesystem>
#include <set>
#include <type_traits>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace fs = std::filesystem;

void stamp(std::string& out, const fs::path& p) {
  std::error_code ec;
  const auto t = fs::last_write_time(p, ec);
  const auto size = ec ? 0 : fs::file_size(p, ec);
  out += p.string();
  out += ec ? std::string("?")
            : std::to_string(t.time_since_epoch().count()) + ":" + std::to_string(size);
  out += '\n';
}

template <class T> std::string list_text(const std::vector<T>& items) {
  std::string out;
  for (const auto& item : items) {
    out += out.empty() ? "" : ",";
    if constexpr (std::is_same_v<T, config::Endpoint>) {
      out += item.to_string();
    } else if constexpr (std::is_same_v<T, config::Webhook>) {
      out += item.url + " " + item.secret_env;
    } else {
      out += item;
    }
  }
  return out;
}

/// Whether `fresh` drops any rule of `old` (a header, JSON key or pattern no longer listed).
bool redaction_narrowed(const config::Redaction& old, const config::Redaction& fresh) {
  auto drops = [](const std::vector<std::string>& before, const std::vector<std::string>& after) {
    return std::any_of(before.begin(), before.end(), [&after](const std::string& rule) {
      return std::find(after.begin(), after.end(), rule) == after.end();
    });
  };
  return drops(old.headers, fresh.headers) || drops(old.json_keys, fresh.json_keys) ||
         drops(old.patterns, fresh.patterns);
}

std::string ports_text(const std::set<std::uint16_t>& ports) {
  std::string out;
  for (auto p : ports) {
    out += (out.empty() ? "" : ",") + std::to_string(p);
  }
  return out;
}

} // namespace

std::vector<RestartRequired> restart_required(const config::Config& running,
                                              const config::Config& fresh) {
  std::vector<RestartRequired> out;
  constexpr std::string_view kStartOnly =
      "read once at start-up: the running process keeps its start-up value until restarted";
  auto check = [&out, kStartOnly](std::string setting, bool changed, std::string_view why = {}) {
    if (changed) {
      out.push_back({std::move(setting), std::string(why.empty() ? kStartOnly : why)});
    }
  };
  check("listen.proxy", running.listen.proxy.to_string() != fresh.listen.proxy.to_string(),
        "listeners are bound at start-up");
  check("listen.admin", running.listen.admin.to_string() != fresh.listen.admin.to_string(),
        "listeners are bound at start-up");
  check("listen.transparent",
        list_text(running.listen.transparent) != list_text(fresh.listen.transparent),
        "listeners are bound at start-up");
  check("agent.id", running.agent_id != fresh.agent_id,
        "audit records keep the start-up agent id until restarted");
  check("tls.ca_cert", running.tls.ca_cert != fresh.tls.ca_cert, "the CA is loaded at start-up");
  check("tls.ca_key", running.tls.ca_key != fresh.tls.ca_key, "the CA is loaded at start-up");
  check("tls.upstream_trust", running.tls.upstream_trust != fresh.tls.upstream_trust,
        "the upstream trust store is loaded at start-up");
  const auto& ra = running.approvals;
  const auto& fa = fresh.approvals;
  check("approvals.hold_timeout", ra.hold_timeout != fa.hold_timeout);
  check("approvals.on_timeout", ra.on_timeout != fa.on_timeout);
  check("approvals.max_pending", ra.max_pending != fa.max_pending);
  check("approvals.webhooks", list_text(ra.webhooks) != list_text(fa.webhooks),
        "webhook endpoints and their secrets are read at start-up");
  const auto& rau = running.audit;
  const auto& fau = fresh.audit;
  check("audit.path", rau.path != fau.path, "the audit log is opened at start-up");
  check("audit.fsync",
        rau.fsync_always != fau.fsync_always || rau.fsync_interval != fau.fsync_interval);
  check("audit.body_bytes", rau.body_bytes != fau.body_bytes);
  check("audit.rotate_bytes", rau.rotate_bytes != fau.rotate_bytes);
  check("audit.signing_key", rau.signing_key != fau.signing_key);
  check("audit.checkpoint_records", rau.checkpoint_records != fau.checkpoint_records);
  check("audit.checkpoint_interval", rau.checkpoint_interval != fau.checkpoint_interval);
  // redaction.* and limits.* are not here: Reloader::reload applies them.
  check("threads", running.threads != fresh.threads, "I/O threads start at start-up");
  const auto ports_before = catalogue_connect_ports(running.catalogue.get());
  const auto ports_after = catalogue_connect_ports(fresh.catalogue.get());
  check("catalogue CONNECT ports", ports_before != ports_after,
        "the ports a CONNECT may name (from the catalogue's matchers) are fixed at start-up: " +
            ports_text(ports_before) + " stay in force, not " + ports_text(ports_after));
  return out;
}

Reloader::Reloader(boost::asio::io_context& ioc, std::shared_ptr<ProxyContext> ctx,
                   std::chrono::milliseconds poll)
    : ioc_(ioc), ctx_(std::move(ctx)), poll_(poll), strand_(boost::asio::make_strand(ioc)),
      timer_(strand_), signals_(strand_) {}

std::string Reloader::fingerprint(const config::Config& cfg) const {
  std::string out;
  stamp(out, cfg.file);
  stamp(out, cfg.catalogue_file);
  if (tokens_ && !cfg.approvals.operator_tokens_file.empty()) {
    stamp(out, cfg.approvals.operator_tokens_file); // a revocation applies without a SIGHUP
  }
  for (const auto& p : cfg.runbook_paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (fs::recursive_directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file(ec)) {
          files.push_back(it->path());
        }
      }
      std::sort(files.begin(), files.end());
      out += p.string() + "/\n";
      for (const auto& f : files) {
        stamp(out, f);
      }
    } else {
      stamp(out, p);
    }
  }
  return out;
}

void Reloader::reload_operator_tokens(approval::OperatorTokens tokens) {
  tokens_ = std::move(tokens);
}

void Reloader::start(bool signals) {
  seen_ = fingerprint(*ctx_->runtime->config());
  boost::asio::post(strand_, [self = shared_from_this()] { self->poll(); });
  if (signals) {
    signals_.add(SIGHUP);
    signals_.add(SIGUSR1);
    signals_.add(SIGUSR2);
    wait_signal();
  }
}

void Reloader::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  timer_.cancel();
  signals_.cancel(ignored);
}

void Reloader::wait_signal() {
  signals_.async_wait([self = shared_from_this()](const boost::system::error_code& ec, int signo) {
    if (ec || self->stopped_) {
      return;
    }
    log_event(LogLevel::info, "signal", 0, {}, {{"signal", std::to_string(signo)}});
    if (signo == SIGHUP) {
      self->reload("signal");
    } else if (signo == SIGUSR1) {
      change_mode(self->ctx_, policy::Mode::paused, "signal:SIGUSR1", "signal");
    } else if (signo == SIGUSR2) {
      change_mode(self->ctx_, policy::Mode::normal, "signal:SIGUSR2", "signal");
    }
    self->wait_signal();
  });
}

void Reloader::schedule() {
  if (stopped_) {
    return;
  }
  timer_.expires_after(poll_);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->stopped_) {
      return;
    }
    self->poll();
  });
}

void Reloader::poll() {
  const auto cfg = ctx_->runtime->config();
  const auto& kill_switch = cfg->kill_switch_file;
  std::error_code ec;
  const bool present = !kill_switch.empty() && fs::exists(kill_switch, ec);
  apply_kill_switch(ctx_, present);
  if (++ticks_ % 4 == 0) {
    std::string now = fingerprint(*cfg);
    if (now != seen_) {
      seen_ = std::move(now);
      reload("file_watch");
    }
  }
  schedule();
}

std::size_t log_runbook_warnings(const config::Config& cfg) {
  std::size_t count = 0;
  if (!cfg.catalogue) {
    return 0;
  }
  for (const auto& rb : cfg.runbooks) {
    for (const auto& line : config::runbook_warnings(*rb, *cfg.catalogue)) {
      log_event(LogLevel::warn, "runbook_warning", 0, {},
                {{"runbook", rb->name}, {"warning", line}});
      ++count;
    }
  }
  return count;
}

bool Reloader::reload(const std::string& via) {
  const auto old = ctx_->runtime->config();
  std::shared_ptr<const config::Config> fresh;
  std::vector<std::string> errors;
  try {
    fresh = config::load_config(old->file);
  } catch (const config::ConfigError& e) {
    errors = e.errors();
  } catch (const std::exception& e) {
    errors.push_back(old->file.string() + ": " + e.what());
  }
  // The tokens file is validated with the rest: a broken one fails the whole reload.
  std::optional<approval::OperatorTokens> tokens;
  if (fresh && tokens_) {
    try {
      tokens = fresh->approvals.operator_tokens_file.empty()
                   ? approval::OperatorTokens()
                   : approval::OperatorTokens::load(fresh->approvals.operator_tokens_file.string());
    } catch (const approval::TokenFileError& e) {
      errors = e.errors();
      fresh.reset();
    }
  }
  // Compared with the config the process started with (ctx_->config), not the last reload:
  // a setting stays pending until the restart.
  const config::Config& running = ctx_->config ? *ctx_->config : *old;
  // What the reload will report is worked out before anything is published, so nothing
  // but the publishing itself stands between the new redaction rules and the policy swap.
  std::vector<RestartRequired> restart;
  std::string limits = "unchanged";
  bool narrowed = false;
  if (fresh) {
    restart = restart_required(running, *fresh);
    // limits.* apply live: sessions read them from the swapped config (live_config), new
    // connections and each connection's next request (docs/operations.md says which).
    limits = old->limits == fresh->limits ? "unchanged" : "applied";
    narrowed = redaction_narrowed(old->redaction, fresh->redaction);
  }
  // redaction.* applies live: the packet redactor and the audit log's new rules are built
  // before anything else changes, so rules that do not build (the patterns were compiled
  // one by one by validation; together they could still exceed RE2's memory budget) fail
  // the reload and keep the last good policy, tokens and rules. Then the audit log and the
  // approval gate take them one right after the other, a moment before the policy swap.
  std::string redaction = "unchanged";
  if (fresh && old->redaction != fresh->redaction) {
    try {
      auto packets = make_packet_redactor(fresh->redaction, running.audit.body_bytes);
      const audit::RedactionRules rules{fresh->redaction.headers, fresh->redaction.json_keys,
                                        fresh->redaction.patterns};
      redaction =
          !ctx_->audit || ctx_->audit->set_redaction(rules) ? "applied" : "restart_required";
      if (ctx_->gate) {
        ctx_->gate->set_packet_redactor(std::move(packets));
      }
    } catch (const std::exception& e) {
      errors = {fresh->file.string() + ": redaction: " + e.what()};
      fresh.reset();
    }
  }
  if (!fresh) {
    log_event(
        LogLevel::error, "reload_failed", 0, {},
        {{"via", via}, {"errors", std::to_string(errors.size())}, {"kept", "last good policy"}});
    for (const auto& line : errors) {
      log_event(LogLevel::error, "reload_error", 0, {}, {{"error", line}});
    }
    if (ctx_->metrics) {
      ctx_->metrics->reloads.inc({"failed"});
    }
    if (ctx_->audit) {
      ctx_->audit->event("reload_failed", {{"via", via}, {"errors", errors}},
                         [](std::error_code) {});
    }
    return false;
  }
  if (redaction == "restart_required") {
    restart.push_back({"redaction", "this audit log reads its redaction rules at start-up only: "
                                    "until restarted, its records do NOT use the new rules"});
  }
  ctx_->runtime->swap_config(fresh);
  nlohmann::json pending = nlohmann::json::array();
  for (const auto& r : restart) {
    log_event(LogLevel::warn, "reload_restart_required", 0, {},
              {{"setting", r.setting}, {"why", r.why}});
    pending.push_back(r.setting);
  }
  if (narrowed && redaction == "applied") {
    log_event(LogLevel::warn, "reload_redaction_narrowed", 0, {},
              {{"note", "a redaction rule was removed: every record built from now on uses the "
                        "new rules, including the final records of requests held or in flight "
                        "since before the reload"}});
  }
  log_runbook_warnings(*fresh);
  // A host taken out of tls.passthrough is to be intercepted and judged from now on: its
  // open tunnels close (with their records) rather than carry on unjudged. After the swap:
  // a tunnel starting meanwhile checks the swapped config itself.
  const std::size_t tunnels_closed = ctx_->tunnels.close_if(
      [&fresh](const TunnelRegistry::Entry& e) { return !fresh->tls.passes_through(e.host); },
      passthrough_removed_tunnel_close());
  if (tokens) {
    tokens_->replace_with(*tokens);
  }
  seen_ = fingerprint(*fresh);
  nlohmann::json runbooks = nlohmann::json::object();
  for (const auto& rb : fresh->runbooks) {
    runbooks[rb->name] = rb->sha256;
  }
  log_event(LogLevel::info, "reloaded", 0, {},
            {{"via", via},
             {"active_runbook", fresh->active_runbook},
             {"runbooks", std::to_string(fresh->runbooks.size())},
             {"operator_tokens", tokens ? std::to_string(tokens->size()) : std::string("-")},
             {"redaction", redaction},
             {"limits", limits},
             {"restart_required", std::to_string(restart.size())},
             {"tunnels_closed", std::to_string(tunnels_closed)}});
  if (ctx_->metrics) {
    ctx_->metrics->reloads.inc({"ok"});
    ctx_->metrics->prime(fresh->runbooks);
  }
  if (ctx_->audit) {
    ctx_->audit->event("reload",
                       {{"via", via},
                        {"active_runbook", fresh->active_runbook},
                        {"runbooks", runbooks},
                        {"redaction", redaction},
                        {"redaction_narrowed", narrowed && redaction == "applied"},
                        {"limits", limits},
                        {"restart_required", pending},
                        {"tunnels_closed", tunnels_closed}},
                       [](std::error_code) {});
  }
  return true;
}

std::shared_ptr<Reloader> start_operations(boost::asio::io_context& ioc,
                                           std::shared_ptr<ProxyContext> ctx, bool signals,
                                           std::optional<approval::OperatorTokens> tokens) {
  auto r = std::make_shared<Reloader>(ioc, std::move(ctx));
  if (tokens) {
    r->reload_operator_tokens(std::move(*tokens));
  }
  r->start(signals);
  return r;
}

} // namespace runwarden::proxy
