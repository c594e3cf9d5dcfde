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

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <thread>

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
    for (auto it = idle_.find(key); it != idle_.end() && it->first == key;) {
      auto conn = std::move(it->second);
      it = idle_.erase(it);
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
    if (idle_.count(conn->key) >= kPoolMaxIdlePerKey) {
      idle_.erase(idle_.find(conn->key)); // the first of a key is its oldest
    }
    if (idle_.size() >= kPoolMaxIdleTotal) {
      evict_oldest();
    }
    std::string key = conn->key;
    idle_.emplace(std::move(key), std::move(conn));
  }

  /// Closes every idle connection whose idle time is over.
  void purge(Clock::time_point now) {
    for (auto it = idle_.begin(); it != idle_.end();) {
      it = it->second->expires <= now ? idle_.erase(it) : std::next(it);
    }
  }

  void clear() { idle_.clear(); }
  std::size_t size() const { return idle_.size(); }

private:
  void evict_oldest() {
    auto oldest = idle_.begin();
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->second->expires < oldest->second->expires) {
        oldest = it;
      }
    }
    idle_.erase(oldest);
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

  std::multimap<std::string, std::unique_ptr<Conn>> idle_;
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
