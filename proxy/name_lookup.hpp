#pragma once
// Name lookups (getaddrinfo) for the data plane, several at once, off the I/O threads.
//
// Asio's tcp::resolver runs every lookup of an io_context on ONE private thread, in turn: a
// lookup that hangs (a name server that does not answer: glibc waits timeout x attempts per
// server) holds up every later lookup of that I/O thread, whatever its own deadline. Here a
// few worker threads share the lookups of the whole process, so one slow name delays only
// its own connection; the caller's deadline decides when to give up, and a lookup that
// completes after that is handed back all the same (the caller ignores it).

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace runwarden::proxy {

class NameLookup {
public:
  using Results = boost::asio::ip::tcp::resolver::results_type;
  using Handler = std::function<void(boost::system::error_code, Results)>;
  /// Held by the caller; store(false) once it no longer wants the answer (its deadline
  /// passed): a lookup not started yet is then skipped, and no answer is handed back.
  using Ticket = std::shared_ptr<std::atomic<bool>>;

  /// Starts `workers` threads (at least one). They are detached: stop() never waits for a
  /// lookup that hangs in the C library.
  explicit NameLookup(std::size_t workers);
  ~NameLookup();
  NameLookup(const NameLookup&) = delete;
  NameLookup& operator=(const NameLookup&) = delete;

  /// Resolves `host`:`service` (numeric port) and posts `done` to `ex` with the result.
  /// `done` is never called after stop() or once the ticket is withdrawn; it is destroyed on
  /// `ex` (or, after stop(), on the thread that called stop()), never on a worker.
  Ticket async_resolve(std::string host, std::string service, boost::asio::any_io_executor ex,
                       Handler done);

  /// No result is posted from now on; queued lookups are dropped. Called before the
  /// io_contexts the results would be posted to go away.
  void stop();

private:
  struct Job {
    std::string host;
    std::string service;
    boost::asio::any_io_executor ex;
    Handler done;
    Ticket wanted;
  };
  struct State {
    std::mutex mu;
    std::condition_variable ready;
    std::deque<Job> jobs;
    std::map<std::uint64_t, Job> running; // owned here while getaddrinfo runs: stop() takes them
    std::uint64_t next_id = 0;
    bool stopped = false;
  };
  /// Hands `job`'s handler back to its executor to be destroyed there, uncalled.
  static void discard(Job& job);
  static void work(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
};

} // namespace runwarden::proxy
