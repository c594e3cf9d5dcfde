#include "proxy/name_lookup.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <netdb.h>
#include <sys/socket.h>
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

NameLookup::NameLookup(std::size_t workers) : state_(std::make_shared<State>()) {
  for (std::size_t i = 0; i < std::max<std::size_t>(workers, 1); ++i) {
    std::thread([state = state_] { work(state); }).detach();
  }
}

NameLookup::~NameLookup() {
  stop();
}

NameLookup::Ticket NameLookup::async_resolve(std::string host, std::string service,
                                             boost::asio::any_io_executor ex, Handler done) {
  auto wanted = std::make_shared<std::atomic<bool>>(true);
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) {
      return wanted;
    }
    state_->jobs.push_back(
        {std::move(host), std::move(service), std::move(ex), std::move(done), wanted});
  }
  state_->ready.notify_one();
  return wanted;
}

void NameLookup::stop() {
  // Destroyed outside the lock, on this thread (handlers may own sessions).
  std::deque<Job> dropped;
  std::map<std::uint64_t, Job> running;
  {
    std::lock_guard lock(state_->mu);
    state_->stopped = true;
    dropped.swap(state_->jobs);
    running.swap(state_->running);
  }
  state_->ready.notify_all();
}

void NameLookup::discard(Job& job) {
  boost::asio::post(job.ex, [done = std::move(job.done)] {});
}

void NameLookup::work(const std::shared_ptr<State>& state) {
  for (;;) {
    std::uint64_t id = 0;
    std::string host;
    std::string service;
    {
      std::unique_lock lock(state->mu);
      state->ready.wait(lock, [&] { return state->stopped || !state->jobs.empty(); });
      if (state->stopped) {
        return;
      }
      Job job = std::move(state->jobs.front());
      state->jobs.pop_front();
      if (!job.wanted->load()) {
        discard(job); // its caller gave up before it started: no worker spent on it
        continue;
      }
      id = state->next_id++;
      host = job.host;
      service = job.service;
      state->running.emplace(id, std::move(job));
    }
    // What tcp::resolver::async_resolve(host, service) asks for: both families, no flags.
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
    boost::system::error_code ec;
    Results results;
    if (rc == 0) {
      results = Results::create(found, host, service);
      ::freeaddrinfo(found);
    } else {
      ec = lookup_error(rc);
    }
    // Posted under the lock: stop() (before the executor's io_context goes away) then either
    // happened first, and took the job (nothing is posted), or waits until this post is done.
    std::lock_guard lock(state->mu);
    auto it = state->running.find(id);
    if (it == state->running.end()) {
      return; // stopped
    }
    Job job = std::move(it->second);
    state->running.erase(it);
    if (!job.wanted->load()) {
      discard(job);
      continue;
    }
    boost::asio::post(job.ex, [done = std::move(job.done), ec, results = std::move(results)]() {
      done(ec, results);
    });
  }
}

} // namespace runwarden::proxy
