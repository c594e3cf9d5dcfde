#pragma once
// Idle upstream keep-alive connections, shared by every agent connection of one I/O thread.
//
// Why per thread and lock-free: with ServerOptions::io_threads > 0 each io_context is run by
// exactly one thread and every session lives on one io_context for its whole life, so all
// users of one io_context's pool run on that thread, one handler at a time. A pooled stream is
// bound to that io_context's executor and is never handed to another thread. The pool checks
// the assumption (RUNWARDEN_POOL_ASSERT) on every call.
//
// A connection is keyed by everything that makes it reusable for a request: scheme, host,
// port and, for TLS, the name it was verified for (SNI and certificate) and the trust context
// it was verified with. A connection verified for host A therefore never serves host B.

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace runwarden::proxy {

/// Idle connections kept for one key (scheme, host, port, verified name, trust). It must
/// cover the exchanges a thread has in flight to one upstream at once: below that, every
/// return beyond the cap closes a connection that the next request re-opens with a full
/// TLS handshake (with 8, 32 intercepted keep-alive agents lost half their throughput).
inline constexpr std::size_t kPoolMaxIdlePerKey = 128;
/// Idle connections kept per pool (per I/O thread); the oldest goes first when full.
inline constexpr std::size_t kPoolMaxIdleTotal = 512;

/// True when the socket has nothing to read and is not closed: an idle keep-alive upstream
/// connection the server has neither closed nor written unsolicited bytes to.
bool upstream_idle_and_open(boost::asio::ip::tcp::socket& socket);

/// One upstream connection with its read buffer and key.
template <class Stream> struct UpstreamConn {
  Stream stream;
  boost::beast::flat_buffer buffer;
  std::string key;
  std::chrono::steady_clock::time_point expires{};
  template <class... Args>
  explicit UpstreamConn(Args&&... args) : stream(std::forward<Args>(args)...) {}
};

/// Idle connections of one stream type. Not thread-safe by design (see the file comment).
///
/// Why flat: a put and a take per forwarded request. A multimap cost a node and a key copy
/// per put (two allocations) and their frees per take; here each key keeps a vector of its
/// idle connections in the order they were returned, whose storage stays with the key, so a
/// keep-alive exchange to a known upstream allocates nothing in the pool. Expired connections are
/// looked for only once the earliest expiry has passed, not on every call.
template <class Stream> class UpstreamPool {
public:
  using Conn = UpstreamConn<Stream>;
  using Clock = std::chrono::steady_clock;

  /// thread_confined: the pool of an io_context run by one thread; every call is asserted to
  /// come from that thread. A session's own pool (on a strand) may move between threads.
  explicit UpstreamPool(bool thread_confined = false) : confined_(thread_confined) {}

  /// A live idle connection for key, or null. Dead or expired ones are closed on the way.
  std::unique_ptr<Conn> take(const std::string& key) {
    check_thread();
    purge(Clock::now());
    auto it = idle_.find(key);
    if (it == idle_.end()) {
      return nullptr;
    }
    auto& conns = it->second;
    while (!conns.empty()) {
      // The newest first, as nginx and Envoy do: the connection most recently proven live,
      // least likely to have met the upstream's own keep-alive timeout (a close racing the
      // reuse is a 502 for the agent). Under light load the rest stay unused and expire,
      // so the pool shrinks to what the traffic needs.
      auto conn = std::move(conns.back());
      conns.pop_back();
      --size_;
      if (upstream_idle_and_open(boost::beast::get_lowest_layer(conn->stream).socket())) {
        return conn;
      }
    }
    return nullptr;
  }

  /// Keeps conn (after a clean exchange) for idle; evicts the oldest of its key, or of the
  /// pool, when a cap is reached.
  void put(std::unique_ptr<Conn> conn, std::chrono::milliseconds idle) {
    check_thread();
    auto now = Clock::now();
    purge(now);
    conn->expires = now + idle;
    auto it = idle_.find(conn->key);
    if (it != idle_.end() && it->second.size() >= kPoolMaxIdlePerKey) {
      it->second.erase(it->second.begin()); // the first of a key is its oldest
      --size_;
    }
    if (size_ >= kPoolMaxIdleTotal) {
      evict_oldest(); // leaves every key in place (emptied ones keep their storage)
    }
    if (it == idle_.end()) {
      if (idle_.size() >= kPoolMaxIdleTotal) {
        drop_empty_keys(); // keys keep their storage while empty; bound how many do
      }
      it = idle_.try_emplace(conn->key).first;
    }
    if (conn->expires < next_expiry_) {
      next_expiry_ = conn->expires;
    }
    it->second.push_back(std::move(conn));
    ++size_;
  }

  /// Closes every idle connection whose idle time is over.
  void purge(Clock::time_point now) {
    if (now < next_expiry_) {
      return;
    }
    next_expiry_ = Clock::time_point::max();
    for (auto& [key, conns] : idle_) {
      for (auto it = conns.begin(); it != conns.end();) {
        if ((*it)->expires <= now) {
          it = conns.erase(it);
          --size_;
        } else {
          next_expiry_ = std::min(next_expiry_, (*it)->expires);
          ++it;
        }
      }
    }
  }

  void clear() {
    idle_.clear();
    size_ = 0;
    next_expiry_ = Clock::time_point::max();
  }
  std::size_t size() const { return size_; }

private:
  void evict_oldest() {
    std::vector<std::unique_ptr<Conn>>* where = nullptr;
    std::size_t index = 0;
    for (auto& [key, conns] : idle_) {
      for (std::size_t i = 0; i < conns.size(); ++i) {
        if (where == nullptr || conns[i]->expires < (*where)[index]->expires) {
          where = &conns;
          index = i;
        }
      }
    }
    if (where != nullptr) {
      where->erase(where->begin() + static_cast<std::ptrdiff_t>(index));
      --size_;
    }
  }
  void drop_empty_keys() {
    for (auto it = idle_.begin(); it != idle_.end();) {
      it = it->second.empty() ? idle_.erase(it) : std::next(it);
    }
  }
  void check_thread() {
    if (!confined_) {
      return;
    }
    if (owner_ == std::thread::id{}) {
      owner_ = std::this_thread::get_id();
    }
    assert(owner_ == std::this_thread::get_id() && "upstream pool used from a second thread");
  }

  /// Per key, its idle connections in the order they were returned (oldest first).
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle_;
  std::size_t size_ = 0;
  Clock::time_point next_expiry_ = Clock::time_point::max(); // no idle one expires before
  std::thread::id owner_;
  bool confined_;
};

using PlainUpstreamPool = UpstreamPool<boost::beast::tcp_stream>;
using TlsUpstreamPool = UpstreamPool<boost::beast::ssl_stream<boost::beast::tcp_stream>>;

/// The pools of one io_context (an Asio service, so it is created on first use and its
/// sockets are closed when the io_context shuts down). Only for io_contexts run by one thread.
class UpstreamPools final : public boost::asio::io_context::service {
public:
  static boost::asio::io_context::id id;
  explicit UpstreamPools(boost::asio::io_context& ioc);

  PlainUpstreamPool& plain() { return plain_; }
  TlsUpstreamPool& tls() { return tls_; }
  template <class Stream> UpstreamPool<Stream>& of() {
    if constexpr (std::is_same_v<Stream, boost::beast::tcp_stream>) {
      return plain_;
    } else {
      return tls_;
    }
  }

  /// After a put: make sure a sweep closes expired idle connections even with no traffic.
  void schedule_sweep(std::chrono::milliseconds idle);
  /// Closes every idle connection (drain). Run on the pool's thread.
  void close_all();

private:
  void shutdown() override;
  void sweep();

  boost::asio::steady_timer timer_;
  bool sweeping_ = false;
  std::chrono::milliseconds every_{0};
  PlainUpstreamPool plain_{true};
  TlsUpstreamPool tls_{true};
};

} // namespace runwarden::proxy
