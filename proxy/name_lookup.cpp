#include "proxy/name_lookup.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <netdb.h>
#include <sys/socket.h>
#include <system_error>
#include <thread>
#include <utility>

namespace runwarden::proxy {

namespace {

/// getaddrinfo's answer as an error code of the same category Asio's resolver uses.
boost::system::error_code lookup_error(int rc) {
  namespace error = boost::asio::error;
  switch (rc) {
  case EAI_AGAIN:
    return error::host_not_found_try_again;
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
    return error::host_not_found;
  case EAI_SERVICE:
    return error::service_not_found;
  case EAI_MEMORY:
    return error::no_memory;
  case EAI_SYSTEM:
    return {errno, boost::system::system_category()};
  default:
    return error::no_recovery;
  }
}

} // namespace

NameLookup::NameLookup(std::size_t workers, Resolve resolve, std::size_t max_workers,
                       std::chrono::milliseconds spare_idle)
    : state_(std::make_shared<State>()) {
  state_->spare_idle = spare_idle;
  state_->resolve = resolve ? std::move(resolve) : Resolve(::getaddrinfo);
  state_->base = std::max<std::size_t>(workers, 1);
  state_->max = std::max(max_workers, state_->base);
  state_->threads = state_->base;
  state_->starting = state_->base;
  for (std::size_t i = 0; i < state_->base; ++i) {
    std::thread([state = state_] { work(state); }).detach();
  }
}

NameLookup::~NameLookup() {
  stop();
}

std::size_t NameLookup::workers() const {
  std::lock_guard lock(state_->mu);
  return state_->threads;
}

NameLookup::Ticket NameLookup::async_resolve(std::string host, std::string service,
                                             boost::asio::any_io_executor ex, Handler done) {
  auto wanted = std::make_shared<std::atomic<bool>>(true);
  bool spawn = false;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) {
      return wanted;
    }
    Waiter waiter{std::move(ex), std::move(done), wanted};
    Key key(std::move(host), std::move(service));
    if (auto it = state_->pending.find(key); it != state_->pending.end()) {
      // The same name is being looked up: join it. Callers that gave up meanwhile are let
      // go now (their sessions freed) rather than when a hung lookup finally returns.
      auto& waiters = it->second->waiters;
      waiters.erase(std::remove_if(waiters.begin(), waiters.end(),
                                   [](Waiter& w) {
                                     if (w.wanted->load()) {
                                       return false;
                                     }
                                     discard(w);
                                     return true;
                                   }),
                    waiters.end());
      waiters.push_back(std::move(waiter));
      return wanted;
    }
    auto lookup = std::make_shared<Lookup>();
    lookup->host = key.first;
    lookup->service = key.second;
    lookup->waiters.push_back(std::move(waiter));
    state_->pending.emplace(std::move(key), lookup);
    state_->queue.push_back(std::move(lookup));
    // Every free worker has a lookup to take already: one more, if the cap allows.
    spawn = state_->queue.size() > state_->idle + state_->starting && state_->threads < state_->max;
    if (spawn) {
      ++state_->threads;
      ++state_->starting;
    }
  }
  if (spawn) {
    try {
      std::thread([state = state_] { work(state); }).detach();
    } catch (const std::system_error&) { // no thread to be had: the queue waits for one
      std::lock_guard lock(state_->mu);
      --state_->threads;
      --state_->starting;
    }
  }
  state_->ready.notify_one();
  return wanted;
}

void NameLookup::stop() {
  // Every queued or running lookup is in `pending`. Its waiters are taken out here and
  // destroyed outside the lock, on this thread (handlers may own sessions): a worker still
  // in getaddrinfo keeps only the emptied lookup.
  std::vector<Waiter> dropped;
  {
    std::lock_guard lock(state_->mu);
    state_->stopped = true;
    for (auto& entry : state_->pending) {
      for (Waiter& w : entry.second->waiters) {
        dropped.push_back(std::move(w));
      }
      entry.second->waiters.clear();
    }
    state_->pending.clear();
    state_->queue.clear();
  }
  state_->ready.notify_all();
}

bool NameLookup::wanted(const Lookup& lookup) {
  return std::any_of(lookup.waiters.begin(), lookup.waiters.end(),
                     [](const Waiter& w) { return w.wanted->load(); });
}

void NameLookup::discard(Waiter& waiter) {
  boost::asio::post(waiter.ex, [done = std::move(waiter.done)] {});
}

void NameLookup::work(const std::shared_ptr<State>& state) {
  bool started = false;
  for (;;) {
    std::shared_ptr<Lookup> lookup;
    {
      std::unique_lock lock(state->mu);
      auto has_work = [&] { return state->stopped || !state->queue.empty(); };
      for (;;) {
        if (!started) { // waiting from now on: counted as idle, no longer as starting
          started = true;
          --state->starting;
        }
        ++state->idle;
        bool woken = true;
        if (state->threads > state->base) { // spares exist: whoever idles long enough ends
          woken = state->ready.wait_for(lock, state->spare_idle, has_work);
        } else {
          state->ready.wait(lock, has_work);
        }
        --state->idle;
        if (state->stopped) {
          --state->threads;
          return;
        }
        if (woken) {
          break;
        }
        // Idle for spare_idle: one worker fewer, but never below the base count (others
        // that timed out meanwhile may have ended already).
        if (state->threads > state->base) {
          --state->threads;
          return;
        }
      }
      lookup = std::move(state->queue.front());
      state->queue.pop_front();
      if (!wanted(*lookup)) {
        // Every caller gave up before it started: no worker spent on it.
        state->pending.erase(Key(lookup->host, lookup->service));
        for (Waiter& w : lookup->waiters) {
          discard(w);
        }
        continue;
      }
      // It stays in `pending` while it runs, so callers for the same name join it.
    }
    // What tcp::resolver::async_resolve(host, service) asks for: both families, no flags.
    // host and service are not changed while the lookup is pending: read without the lock.
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo* found = nullptr;
    const int rc = state->resolve(lookup->host.c_str(), lookup->service.c_str(), &hints, &found);
    boost::system::error_code ec;
    Results results;
    if (rc == 0) {
      results = Results::create(found, lookup->host, lookup->service);
      ::freeaddrinfo(found);
    } else {
      ec = lookup_error(rc);
    }
    // Posted under the lock: stop() (before the executors' io_contexts go away) then either
    // happened first, and took the lookup (nothing is posted), or waits until these posts
    // are done.
    std::lock_guard lock(state->mu);
    if (state->stopped) {
      return; // stop() took its waiters
    }
    state->pending.erase(Key(lookup->host, lookup->service));
    for (Waiter& w : lookup->waiters) {
      if (!w.wanted->load()) {
        discard(w);
        continue;
      }
      boost::asio::post(w.ex, [done = std::move(w.done), ec, results]() { done(ec, results); });
    }
  }
}

} // namespace runwarden::proxy
