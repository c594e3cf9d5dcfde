#pragma once
// Name lookups (getaddrinfo) for the data plane, several at once, off the I/O threads.
//
// Asio's tcp::resolver runs every lookup of an io_context on ONE private thread, in turn: a
// lookup that hangs (a name server that does not answer: glibc waits timeout x attempts per
// server) holds up every later lookup of that I/O thread, whatever its own deadline. Here a
// few worker threads share the lookups of the whole process, so one slow name delays only
// its own connections; the caller's deadline decides when to give up, and a lookup that
// completes after that is handed back all the same (the caller ignores it).
//
// Callers asking for the same host and port while a lookup of it is queued or running join
// that lookup instead of starting another: a burst of connections to one name whose server
// never answers takes one worker, not all of them, so the other names still resolve.
//
// Different names that hang each hold a worker. When a lookup is queued and no worker is
// free, another worker starts, up to a cap; a worker beyond the base count that then waits
// kSpareIdle for work ends. So a handful of dead names does not stop every other name from
// resolving, and a quiet process keeps only its base workers.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <string>
#include <utility>
#include <vector>

namespace runwarden::proxy {

class NameLookup {
public:
  using Results = boost::asio::ip::tcp::resolver::results_type;
  using Handler = std::function<void(boost::system::error_code, Results)>;
  /// Held by the caller; store(false) once it no longer wants the answer (its deadline
  /// passed): a lookup not started yet is then skipped, and no answer is handed back.
  using Ticket = std::shared_ptr<std::atomic<bool>>;

  /// getaddrinfo's signature; its answer is released with freeaddrinfo.
  using Resolve = std::function<int(const char*, const char*, const addrinfo*, addrinfo**)>;

  /// How long a worker beyond the base count waits for work before it ends.
  static constexpr std::chrono::seconds kSpareIdle{10};

  /// Starts `workers` threads (at least one), and more while lookups queue with none free,
  /// up to `max_workers` at once (at least `workers`). They are detached: stop() never
  /// waits for a lookup that hangs in the C library. `resolve` is getaddrinfo unless a test
  /// passes a stand-in that holds a lookup for as long as it likes.
  /// A worker beyond `workers` ends after `spare_idle` without work.
  explicit NameLookup(std::size_t workers, Resolve resolve = {}, std::size_t max_workers = 0,
                      std::chrono::milliseconds spare_idle = kSpareIdle);
  ~NameLookup();
  NameLookup(const NameLookup&) = delete;
  NameLookup& operator=(const NameLookup&) = delete;

  /// Resolves `host`:`service` (numeric port) and posts `done` to `ex` with the result.
  /// `done` is never called after stop() or once the ticket is withdrawn; it is destroyed on
  /// `ex` (or, after stop(), on the thread that called stop()), never on a worker.
  Ticket async_resolve(std::string host, std::string service, boost::asio::any_io_executor ex,
                       Handler done);

  /// Workers running now (the base count, plus spares while lookups queue).
  std::size_t workers() const;

  /// No result is posted from now on; queued lookups are dropped. Called before the
  /// io_contexts the results would be posted to go away.
  void stop();

private:
  /// One caller waiting for a lookup.
  struct Waiter {
    boost::asio::any_io_executor ex;
    Handler done;
    Ticket wanted;
  };
  /// One getaddrinfo call and everyone waiting for it.
  struct Lookup {
    std::string host;
    std::string service;
    std::vector<Waiter> waiters;
  };
  using Key = std::pair<std::string, std::string>; // host, service
  struct State {
    std::mutex mu;
    std::condition_variable ready;
    std::deque<std::shared_ptr<Lookup>> queue;
    /// Queued or running, by host and service: a new caller joins the lookup found here.
    /// A running lookup is owned here while getaddrinfo runs: stop() takes it.
    std::map<Key, std::shared_ptr<Lookup>> pending;
    bool stopped = false;
    std::size_t threads = 0;  // workers running
    std::size_t idle = 0;     // of them, waiting for work
    std::size_t starting = 0; // started, not yet waiting: about to be idle (not spawned for)
    std::size_t base = 1;     // kept however quiet it gets
    std::size_t max = 1;      // at most this many at once
    std::chrono::milliseconds spare_idle{kSpareIdle};
    Resolve resolve; // set before the workers start, then only read
  };
  /// True if some waiter of `lookup` still wants its answer.
  static bool wanted(const Lookup& lookup);
  /// Hands `waiter`'s handler back to its executor to be destroyed there, uncalled.
  static void discard(Waiter& waiter);
  static void work(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
};

} // namespace runwarden::proxy
