#include "proxy/webhook_client.hpp"

#include "proxy/log.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <memory>
#include <openssl/ssl.h>
#include <optional>

namespace runwarden::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr std::uint64_t kResponseBodyLimit = 64 * 1024;

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)net::ip::make_address(host, ec);
  return !ec;
}

/// One delivery attempt; owns itself through the handlers bound to it.
template <class Stream> class Attempt : public std::enable_shared_from_this<Attempt<Stream>> {
public:
  template <class... Args>
  Attempt(net::io_context& ioc, WebhookUrl url, approval::WebhookRequest request,
          approval::WebhookDone done, std::chrono::milliseconds timeout, Args&&... stream_args)
      : stream_(net::make_strand(ioc), std::forward<Args>(stream_args)...),
        resolver_(stream_.get_executor()), url_(std::move(url)), request_(std::move(request)),
        done_(std::move(done)), timeout_(timeout) {}

  void start() {
    beast::get_lowest_layer(stream_).expires_after(timeout_);
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        beast::bind_front_handler(&Attempt::on_resolve, this->shared_from_this()));
  }

private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  void finish(bool ok, std::string error) {
    if (done_) {
      auto done = std::move(done_);
      done_ = nullptr;
      done(ok, std::move(error));
    }
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) {
      finish(false, "cannot resolve " + url_.host + ": " + ec.message());
      return;
    }
    beast::get_lowest_layer(stream_).async_connect(
        results, beast::bind_front_handler(&Attempt::on_connect, this->shared_from_this()));
  }

  void on_connect(beast::error_code ec, const tcp::endpoint&) {
    if (ec) {
      finish(false, "cannot connect: " + ec.message());
      return;
    }
    if constexpr (kTls) {
      SSL* native = stream_.native_handle();
      if (!is_ip_literal(url_.host)) {
        SSL_ctrl(native, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(url_.host.c_str()));
      }
      stream_.set_verify_mode(ssl::verify_peer);
      stream_.set_verify_callback(ssl::host_name_verification(url_.host));
      stream_.async_handshake(
          ssl::stream_base::client,
          beast::bind_front_handler(&Attempt::on_handshake, this->shared_from_this()));
    } else {
      write();
    }
  }

  void on_handshake(beast::error_code ec) {
    if (ec) {
      finish(false, "TLS handshake failed: " + ec.message());
      return;
    }
    write();
  }

  void write() {
    req_.method(http::verb::post);
    req_.target(url_.target);
    req_.version(11);
    const bool default_port = url_.port == (url_.tls ? 443 : 80);
    req_.set(http::field::host,
             default_port ? url_.host : url_.host + ":" + std::to_string(url_.port));
    req_.set(http::field::user_agent, "runwarden-webhook/1");
    req_.set(http::field::content_type, "application/json");
    req_.set("Runwarden-Event", request_.event);
    req_.set("Runwarden-Delivery", request_.delivery_id);
    req_.set("Runwarden-Signature", request_.signature);
    req_.set("Runwarden-Attempt", std::to_string(request_.attempt));
    req_.keep_alive(false);
    req_.body() = request_.body;
    req_.prepare_payload();
    http::async_write(stream_, req_,
                      beast::bind_front_handler(&Attempt::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec) {
      finish(false, "write failed: " + ec.message());
      return;
    }
    parser_.emplace();
    parser_->body_limit(kResponseBodyLimit);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Attempt::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) {
      finish(false, ec == beast::error::timeout ? std::string("timeout")
                                                : "reading the response failed: " + ec.message());
      return;
    }
    const unsigned status = parser_->get().result_int();
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    if (status >= 200 && status < 300) {
      finish(true, {});
    } else {
      finish(false, "status " + std::to_string(status));
    }
  }

  Stream stream_;
  tcp::resolver resolver_;
  WebhookUrl url_;
  approval::WebhookRequest request_;
  approval::WebhookDone done_;
  std::chrono::milliseconds timeout_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

} // namespace

WebhookUrl parse_webhook_url(std::string_view url) {
  WebhookUrl out;
  std::string_view rest;
  if (url.rfind("https://", 0) == 0) {
    out.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    out.error = "webhook URL must start with http:// or https://";
    return out;
  }
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!out.target.empty() && out.target.front() == '?') {
    out.target.insert(out.target.begin(), '/');
  }
  if (authority.find('@') != std::string_view::npos) {
    out.error = "webhook URL must not carry userinfo";
    return out;
  }
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      out.error = "webhook URL has an unterminated IPv6 literal";
      return out;
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        out.error = "webhook URL has a malformed authority";
        return out;
      }
      port = authority.substr(close + 2);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    out.error = "webhook URL has no host";
    return out;
  }
  out.port = out.tls ? 443 : 80;
  if (!port.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || ptr != port.data() + port.size() || value == 0 || value > 65535) {
      out.error = "webhook URL has a bad port";
      return out;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  out.host = std::string(host);
  out.ok = true;
  return out;
}

WebhookClient::WebhookClient(net::io_context& ioc, ssl::context& tls,
                             std::chrono::milliseconds timeout)
    : ioc_(ioc), tls_(tls), timeout_(timeout) {}

void WebhookClient::send(const approval::WebhookRequest& request, approval::WebhookDone done) {
  attempts_.fetch_add(1);
  WebhookUrl url = parse_webhook_url(request.url);
  // Only host and port are logged: a URL path or query may carry a credential.
  auto logged = [this, where = url.host + ":" + std::to_string(url.port), event = request.event,
                 delivery = request.delivery_id, attempt = request.attempt,
                 done = std::move(done)](bool ok, std::string error) {
    if (!ok) {
      failures_.fetch_add(1);
      log_event(LogLevel::warn, "webhook_failed", 0, {},
                {{"endpoint", where},
                 {"event", event},
                 {"delivery", delivery},
                 {"attempt", std::to_string(attempt)},
                 {"error", error}});
    } else {
      log_event(LogLevel::debug, "webhook_delivered", 0, {},
                {{"endpoint", where}, {"event", event}, {"delivery", delivery}});
    }
    done(ok, std::move(error));
  };
  if (!url.ok) {
    logged(false, url.error);
    return;
  }
  if (url.tls) {
    std::make_shared<Attempt<beast::ssl_stream<beast::tcp_stream>>>(
        ioc_, std::move(url), request, std::move(logged), timeout_, tls_)
        ->start();
  } else {
    std::make_shared<Attempt<beast::tcp_stream>>(ioc_, std::move(url), request, std::move(logged),
                                                 timeout_)
        ->start();
  }
}

} // namespace runwarden::proxy
