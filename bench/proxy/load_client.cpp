// Load client for bench/run.sh: HTTP/1.1 over plain TCP or TLS, directly or through an
// HTTP proxy (absolute-form requests for plain HTTP, CONNECT + TLS for HTTPS). wrk cannot
// CONNECT, so this one client measures both direct TLS and intercepted TLS the same way.
//
// Modes:
//   load   N connections for S seconds; keep-alive (many requests per connection) or
//          --new-conn (one request per connection: TCP + CONNECT + TLS handshake each time).
//   idle   open N connections, one request on each, then hold them open until stdin closes
//          or --hold seconds pass (the caller reads the proxy's RSS meanwhile).
// Prints one JSON line. Single-threaded (one io_context) unless --threads is given.
//
// Build: c++ -std=c++20 -O2 load_client.cpp -o load_client -lssl -lcrypto -lpthread

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <openssl/x509v3.h>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

struct Options {
  std::string mode = "load";
  std::string target_host = "127.0.0.1";
  std::string target_port;
  std::string proxy_host;
  std::string proxy_port;
  std::string path = "/";
  std::string ca_file;
  bool tls = false;
  bool new_conn = false;
  int conns = 1;
  double seconds = 5;
  double hold = 60;
  int threads = 1;
  unsigned expect_status = 200;
};

struct Stats {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::uint64_t connections = 0;
  std::vector<std::uint32_t> latencies_us; // bounded: see kMaxSamples
};

constexpr std::size_t kMaxSamples = 4'000'000;

bool split_hostport(const std::string& s, std::string& host, std::string& port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos)
    return false;
  host = s.substr(0, colon);
  port = s.substr(colon + 1);
  return !host.empty() && !port.empty();
}

class Client {
public:
  Client(const Options& opt, asio::ssl::context* ssl, Stats& stats, clock_type::time_point deadline)
      : opt_(opt), ssl_(ssl), stats_(stats), deadline_(deadline) {
    authority_ = opt.target_host + ":" + opt.target_port;
    if (!opt.proxy_host.empty() && !opt.tls) {
      request_target_ = "http://" + authority_ + opt.path;
    } else {
      request_target_ = opt.path;
    }
  }

  // One connection's life: open (TCP, CONNECT, TLS) and send requests until the deadline
  // (keep-alive) or one request (new-conn), repeated until the deadline.
  asio::awaitable<void> run() {
    while (clock_type::now() < deadline_) {
      bool ok = co_await one_connection(false);
      if (!ok) {
        ++stats_.errors;
        if (stats_.errors > 1000)
          co_return; // bounded: a broken setup must not spin
      }
    }
  }

  // Idle mode: open, one request, then keep the stream alive until `release` fires.
  asio::awaitable<void> open_and_hold(asio::steady_timer& release, std::atomic<int>& ready) {
    bool ok = co_await one_connection(true);
    if (!ok) {
      ++stats_.errors;
      co_return;
    }
    ++ready;
    boost::system::error_code ec;
    co_await release.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

private:
  template <class Stream> asio::awaitable<bool> request_once(Stream& stream, bool close) {
    http::request<http::empty_body> req{http::verb::get, request_target_, 11};
    req.set(http::field::host, authority_);
    req.set(http::field::user_agent, "runwarden-bench");
    if (close)
      req.set(http::field::connection, "close");
    auto start = clock_type::now();
    boost::system::error_code ec;
    co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return false;
    http::response<http::string_body> res;
    co_await http::async_read(stream, buffer_, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || res.result_int() != opt_.expect_status)
      co_return false;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - start);
    ++stats_.requests;
    if (stats_.latencies_us.size() < kMaxSamples) {
      stats_.latencies_us.push_back(static_cast<std::uint32_t>(us.count()));
    }
    co_return true;
  }

  asio::awaitable<bool> one_connection(bool hold) {
    auto ex = co_await asio::this_coro::executor;
    boost::system::error_code ec;
    tcp::resolver resolver(ex);
    const bool via_proxy = !opt_.proxy_host.empty();
    auto results = co_await resolver.async_resolve(via_proxy ? opt_.proxy_host : opt_.target_host,
                                                   via_proxy ? opt_.proxy_port : opt_.target_port,
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return false;
    beast::tcp_stream tcp_stream(ex);
    co_await tcp_stream.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return false;
    tcp_stream.expires_never();
    tcp_stream.socket().set_option(tcp::no_delay(true), ec);
    buffer_.clear();
    ++stats_.connections;

    if (!opt_.tls) {
      if (hold) {
        bool ok = co_await request_once(tcp_stream, false);
        if (ok)
          held_plain_.emplace(std::move(tcp_stream));
        co_return ok;
      }
      if (opt_.new_conn)
        co_return co_await request_once(tcp_stream, true);
      while (clock_type::now() < deadline_) {
        if (!co_await request_once(tcp_stream, false))
          co_return false;
      }
      co_return true;
    }

    if (via_proxy) {
      std::string connect =
          "CONNECT " + authority_ + " HTTP/1.1\r\nHost: " + authority_ + "\r\n\r\n";
      co_await asio::async_write(tcp_stream, asio::buffer(connect),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec)
        co_return false;
      http::response_parser<http::empty_body> parser;
      parser.skip(true); // a 200 to CONNECT has no body
      co_await http::async_read_header(tcp_stream, buffer_, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
      if (ec || parser.get().result() != http::status::ok)
        co_return false;
      if (buffer_.size() != 0)
        co_return false; // nothing may follow the 200 before TLS
    }

    auto stream =
        std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(tcp_stream), *ssl_);
    // The target is an IP literal: no SNI (RFC 6066), verify the IP SAN instead.
    X509_VERIFY_PARAM* param = SSL_get0_param(stream->native_handle());
    X509_VERIFY_PARAM_set1_ip_asc(param, opt_.target_host.c_str());
    stream->set_verify_mode(asio::ssl::verify_peer);
    co_await stream->async_handshake(asio::ssl::stream_base::client,
                                     asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return false;
    bool ok = true;
    if (opt_.new_conn) {
      ok = co_await request_once(*stream, true);
    } else {
      while (ok && clock_type::now() < deadline_)
        ok = co_await request_once(*stream, false);
    }
    // Close the TLS session without waiting for the peer's close_notify.
    beast::get_lowest_layer(*stream).socket().shutdown(tcp::socket::shutdown_both, ec);
    co_return ok;
  }

  const Options& opt_;
  asio::ssl::context* ssl_;
  Stats& stats_;
  clock_type::time_point deadline_;
  std::string authority_;
  std::string request_target_;
  beast::flat_buffer buffer_;
  std::optional<beast::tcp_stream> held_plain_;
};

std::uint32_t percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty())
    return 0;
  auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(idx), v.end());
  return v[idx];
}

int usage() {
  std::cerr << "usage: load_client --target HOST:PORT [--proxy HOST:PORT] [--tls --ca FILE] "
               "[--path P] [--conns N] [--seconds S] [--new-conn] [--threads T] "
               "[--mode load|idle] [--hold S] [--expect-status CODE]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : std::string(); };
    if (a == "--target") {
      if (!split_hostport(next(), opt.target_host, opt.target_port))
        return usage();
    } else if (a == "--proxy") {
      if (!split_hostport(next(), opt.proxy_host, opt.proxy_port))
        return usage();
    } else if (a == "--tls") {
      opt.tls = true;
    } else if (a == "--ca") {
      opt.ca_file = next();
    } else if (a == "--path") {
      opt.path = next();
    } else if (a == "--conns") {
      opt.conns = std::atoi(next().c_str());
    } else if (a == "--seconds") {
      opt.seconds = std::atof(next().c_str());
    } else if (a == "--hold") {
      opt.hold = std::atof(next().c_str());
    } else if (a == "--new-conn") {
      opt.new_conn = true;
    } else if (a == "--threads") {
      opt.threads = std::atoi(next().c_str());
    } else if (a == "--expect-status") {
      opt.expect_status = static_cast<unsigned>(std::atoi(next().c_str()));
    } else if (a == "--mode") {
      opt.mode = next();
    } else {
      return usage();
    }
  }
  if (opt.target_port.empty() || opt.conns < 1 || opt.conns > 100000 || opt.threads < 1 ||
      opt.seconds <= 0 || opt.seconds > 600 || opt.hold <= 0 || opt.hold > 600) {
    return usage();
  }

  asio::ssl::context ssl(asio::ssl::context::tls_client);
  if (opt.tls) {
    if (opt.ca_file.empty())
      return usage();
    ssl.load_verify_file(opt.ca_file);
    // Full handshakes every time, on both the direct and the proxied path.
    SSL_CTX_set_session_cache_mode(ssl.native_handle(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ssl.native_handle(), SSL_OP_NO_TICKET);
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ssl.native_handle(), alpn, sizeof(alpn));
  }

  if (opt.mode == "idle") {
    asio::io_context io(1);
    Stats stats;
    auto deadline = clock_type::now() + std::chrono::seconds(120);
    asio::steady_timer release(io, std::chrono::steady_clock::time_point::max());
    std::atomic<int> ready{0};
    std::vector<std::unique_ptr<Client>> clients;
    clients.reserve(static_cast<std::size_t>(opt.conns));
    for (int i = 0; i < opt.conns; ++i) {
      clients.push_back(std::make_unique<Client>(opt, opt.tls ? &ssl : nullptr, stats, deadline));
      asio::co_spawn(io, clients.back()->open_and_hold(release, ready), asio::detached);
    }
    // Run until every connection is open (or failed), bounded to 120 s.
    auto open_deadline = clock_type::now() + std::chrono::seconds(120);
    while (ready.load() + static_cast<int>(stats.errors) < opt.conns &&
           clock_type::now() < open_deadline) {
      io.run_for(std::chrono::milliseconds(50));
    }
    std::printf("{\"mode\":\"idle\",\"open\":%d,\"errors\":%llu}\n", ready.load(),
                static_cast<unsigned long long>(stats.errors));
    std::fflush(stdout);
    // Hold: the caller closes our stdin (or --hold elapses) when it has measured.
    std::atomic<bool> stdin_closed{false};
    std::thread watcher([&] {
      char buf[64];
      while (std::fread(buf, 1, sizeof buf, stdin) > 0) {
      }
      stdin_closed = true;
    });
    watcher.detach();
    auto hold_deadline = clock_type::now() + std::chrono::duration<double>(opt.hold);
    while (!stdin_closed.load() && clock_type::now() < hold_deadline) {
      io.run_for(std::chrono::milliseconds(100));
    }
    std::_Exit(0); // sockets close with the process
  }

  // Load mode: `threads` io_contexts, connections spread over them.
  auto start = clock_type::now();
  auto deadline = start + std::chrono::duration_cast<clock_type::duration>(
                              std::chrono::duration<double>(opt.seconds));
  std::vector<Stats> stats(static_cast<std::size_t>(opt.threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < opt.threads; ++t) {
    workers.emplace_back([&, t] {
      asio::io_context io(1);
      std::vector<std::unique_ptr<Client>> clients;
      for (int i = t; i < opt.conns; i += opt.threads) {
        clients.push_back(std::make_unique<Client>(opt, opt.tls ? &ssl : nullptr,
                                                   stats[static_cast<std::size_t>(t)], deadline));
        asio::co_spawn(io, clients.back()->run(), asio::detached);
      }
      io.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::duration<double>(opt.seconds)) +
                 std::chrono::seconds(10));
    });
  }
  for (auto& w : workers)
    w.join();
  double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  Stats all;
  for (auto& s : stats) {
    all.requests += s.requests;
    all.errors += s.errors;
    all.connections += s.connections;
    all.latencies_us.insert(all.latencies_us.end(), s.latencies_us.begin(), s.latencies_us.end());
  }
  double window = std::min(elapsed, opt.seconds);
  std::uint32_t p50 = percentile(all.latencies_us, 0.50);
  std::uint32_t p99 = percentile(all.latencies_us, 0.99);
  std::printf("{\"requests\":%llu,\"connections\":%llu,\"errors\":%llu,\"seconds\":%.3f,"
              "\"rps\":%.1f,\"p50_us\":%u,\"p99_us\":%u}\n",
              static_cast<unsigned long long>(all.requests),
              static_cast<unsigned long long>(all.connections),
              static_cast<unsigned long long>(all.errors), window,
              static_cast<double>(all.requests) / window, p50, p99);
  return all.requests > 0 ? 0 : 1;
}
