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

void NameLookup::async_resolve(std::string host, std::string service,
                               boost::asio::any_io_executor ex, Handler done) {
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) {
      return;
    }
    state_->jobs.push_back({std::move(host), std::move(service), std::move(ex), std::move(done)});
  }
  state_->ready.notify_one();
}

void NameLookup::stop() {
  std::deque<Job> dropped; // destroyed outside the lock (handlers may own sessions)
  {
    std::lock_guard lock(state_->mu);
    state_->stopped = true;
    dropped.swap(state_->jobs);
  }
  state_->ready.notify_all();
}

void NameLookup::work(const std::shared_ptr<State>& state) {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(state->mu);
      state->ready.wait(lock, [&] { return state->stopped || !state->jobs.empty(); });
      if (state->stopped) {
        return;
      }
      job = std::move(state->jobs.front());
      state->jobs.pop_front();
    }
    // What tcp::resolver::async_resolve(host, service) asks for: both families, no flags.
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(job.host.c_str(), job.service.c_str(), &hints, &found);
    boost::system::error_code ec;
    Results results;
    if (rc == 0) {
      results = Results::create(found, job.host, job.service);
      ::freeaddrinfo(found);
    } else {
      ec = lookup_error(rc);
    }
    // Posted under the lock: stop() (before the executor's io_context goes away) then either
    // happened first, and nothing is posted, or waits until this post is done.
    std::lock_guard lock(state->mu);
    if (state->stopped) {
      return;
    }
    boost::asio::post(job.ex, [done = std::move(job.done), ec, results = std::move(results)]() {
      done(ec, results);
    });
  }
}

} // namespace runwarden::proxy
