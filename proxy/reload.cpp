#include "proxy/reload.hpp"

#include "proxy/admin_ops.hpp"
#include "proxy/log.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <csignal>
#include <filesystem>
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

} // namespace

Reloader::Reloader(boost::asio::io_context& ioc, std::shared_ptr<ProxyContext> ctx,
                   std::chrono::milliseconds poll)
    : ioc_(ioc), ctx_(std::move(ctx)), poll_(poll), strand_(boost::asio::make_strand(ioc)),
      timer_(strand_), signals_(strand_) {}

std::string Reloader::fingerprint(const config::Config& cfg) const {
  std::string out;
  stamp(out, cfg.file);
  stamp(out, cfg.catalogue_file);
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
  // Listeners, TLS and the audit log are bound at start-up: changing them needs a restart.
  if (fresh->listen.proxy.to_string() != old->listen.proxy.to_string() ||
      fresh->listen.admin.to_string() != old->listen.admin.to_string() ||
      fresh->tls.ca_cert != old->tls.ca_cert || fresh->audit.path != old->audit.path) {
    log_event(LogLevel::warn, "reload_restart_required", 0, {},
              {{"why", "listen, tls or audit changed; those apply at the next start"}});
  }
  ctx_->runtime->swap_config(fresh);
  seen_ = fingerprint(*fresh);
  nlohmann::json runbooks = nlohmann::json::object();
  for (const auto& rb : fresh->runbooks) {
    runbooks[rb->name] = rb->sha256;
  }
  log_event(LogLevel::info, "reloaded", 0, {},
            {{"via", via},
             {"active_runbook", fresh->active_runbook},
             {"runbooks", std::to_string(fresh->runbooks.size())}});
  if (ctx_->metrics) {
    ctx_->metrics->reloads.inc({"ok"});
  }
  if (ctx_->audit) {
    ctx_->audit->event(
        "reload", {{"via", via}, {"active_runbook", fresh->active_runbook}, {"runbooks", runbooks}},
        [](std::error_code) {});
  }
  return true;
}

std::shared_ptr<Reloader> start_operations(boost::asio::io_context& ioc,
                                           std::shared_ptr<ProxyContext> ctx, bool signals) {
  auto r = std::make_shared<Reloader>(ioc, std::move(ctx));
  r->start(signals);
  return r;
}

} // namespace runwarden::proxy
