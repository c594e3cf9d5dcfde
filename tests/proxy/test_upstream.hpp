#pragma once
// A real loopback upstream for the proxy tests: 127.0.0.1 port 0, plain or TLS, one acceptor
// thread and one blocking worker thread per connection. What each connection does is the
// test's: the handler's serve_on runs once per accepted connection.
//
// Why blocking threads: the proxy runs in-process on its own io_context threads; an upstream
// on threads of its own is never starved by it, and a handler reads as a plain script. Every
// socket read and write gives up after 5 s (set_timeouts), and stop() unblocks the rest, so a
// broken proxy fails a test instead of hanging it.

#include "certs/authority.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <openssl/ssl.h>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <utility>
#include <vector>

namespace runwarden::proxy::testing {

/// Blocking test sockets must never hang a test: reads and writes give up after 5 s.
inline void set_timeouts(boost::asio::ip::tcp::socket& s) {
  timeval tv{5, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/// Reads requests one after another (at most max) and hands each to on_request, which
/// answers it and returns whether to read the next; a read error (the peer closed, or the
/// 5 s timeout) ends the connection too.
template <class Stream, class OnRequest>
void serve_requests(Stream& stream, int max, OnRequest on_request) {
  boost::beast::flat_buffer buffer;
  for (int i = 0; i < max; ++i) {
    boost::beast::http::request<boost::beast::http::string_body> req;
    boost::system::error_code ec;
    boost::beast::http::read(stream, buffer, req, ec);
    if (ec || !on_request(req)) {
      return;
    }
  }
}

/// Answers 200 "hello" (text/plain, Content-Length); returns whether the write succeeded.
template <class Stream> bool write_hello(Stream& stream, bool keep_alive) {
  namespace http = boost::beast::http;
  http::response<http::string_body> res{http::status::ok, 11};
  res.set(http::field::content_type, "text/plain");
  res.body() = "hello";
  res.keep_alive(keep_alive);
  res.prepare_payload();
  boost::system::error_code ec;
  http::write(stream, res, ec);
  return !ec;
}

/// What the upstream knows of one accepted connection when its handler starts.
struct Accepted {
  int index = 0;   ///< order of acceptance, from 0
  std::string sni; ///< server name of the client's TLS ClientHello; empty if plain or none sent
};

/// The listening side. Handler provides
///   template <class Stream> void serve_on(Stream& stream, const Accepted& conn);
/// called with the tcp::socket, or with the ssl::stream after a successful handshake (a
/// failed handshake counts as accepted but is never served). Returning closes the connection.
/// An owner declares its LoopbackUpstream as its last member, so that the threads are joined
/// before the state the handler uses goes; an owner whose handler waits on its own condition
/// wakes it in its destructor first.
template <class Handler> class LoopbackUpstream {
public:
  using tcp = boost::asio::ip::tcp;

  /// leaf: serve TLS with this certificate; null: plain HTTP. At most max_connections are
  /// accepted (a bound on the threads a runaway proxy can make the test start).
  LoopbackUpstream(Handler& handler, std::shared_ptr<const certs::Leaf> leaf, int max_connections)
      : handler_(handler), max_connections_(max_connections),
        acceptor_(ioc_, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {
    if (leaf) {
      tls_ = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
      SSL_CTX_use_certificate(tls_->native_handle(), leaf->cert);
      SSL_CTX_use_PrivateKey(tls_->native_handle(), leaf->key);
    }
    thread_ = std::thread([this] { accept_loop(); });
  }
  LoopbackUpstream(const LoopbackUpstream&) = delete;
  LoopbackUpstream& operator=(const LoopbackUpstream&) = delete;
  ~LoopbackUpstream() { stop(); }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  /// Connections accepted so far (TLS ones whose handshake failed included).
  int accepted() {
    std::lock_guard lock(mutex_);
    return static_cast<int>(sockets_.size());
  }

  /// Stops accepting (a connection to itself wakes the blocked accept), shuts down every
  /// connection still open so blocked workers return, and joins them all. Idempotent.
  void stop() {
    if (stop_.exchange(true)) {
      return;
    }
    {
      boost::asio::io_context ioc;
      tcp::socket poke(ioc);
      boost::system::error_code ec;
      poke.connect(acceptor_.local_endpoint(), ec);
    }
    thread_.join();
    std::vector<std::thread> workers;
    {
      std::lock_guard lock(mutex_);
      for (const auto& socket : sockets_) {
        if (socket->is_open()) { // a closed one's descriptor may belong to someone else now
          ::shutdown(socket->native_handle(), SHUT_RDWR);
        }
      }
      workers.swap(workers_);
    }
    for (auto& t : workers) {
      t.join();
    }
  }

private:
  void accept_loop() {
    for (int i = 0; i < max_connections_ && !stop_; ++i) {
      auto socket = std::make_shared<tcp::socket>(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stop_) {
        return;
      }
      set_timeouts(*socket);
      std::lock_guard lock(mutex_);
      sockets_.push_back(socket);
      workers_.emplace_back([this, socket, i] {
        connection(*socket, i);
        std::lock_guard done(mutex_);
        boost::system::error_code ignored;
        socket->close(ignored); // the peer sees the close now, not when the test ends
      });
    }
  }

  void connection(tcp::socket& socket, int index) {
    Accepted conn{index, {}};
    if (!tls_) {
      handler_.serve_on(socket, conn);
      return;
    }
    boost::asio::ssl::stream<tcp::socket&> stream(socket, *tls_);
    boost::system::error_code ec;
    stream.handshake(boost::asio::ssl::stream_base::server, ec);
    if (ec) {
      return;
    }
    const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
    conn.sni = sni != nullptr ? sni : "";
    handler_.serve_on(stream, conn);
  }

  Handler& handler_;
  int max_connections_;
  boost::asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> workers_;
};

} // namespace runwarden::proxy::testing
