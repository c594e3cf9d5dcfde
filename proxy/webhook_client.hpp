#pragma once
// approval::WebhookSender over Beast: one short-lived HTTP/1.1 POST per delivery attempt
// (http:// or https:// with the upstream trust store, SNI and hostname verification), on
// the proxy's io_context, with one deadline covering the whole attempt.

#include "approval/webhook_sender.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace runwarden::proxy {

/// A webhook URL split for connecting; `ok` false with `error` for anything else.
struct WebhookUrl {
  bool ok = false;
  bool tls = false;
  std::string host;
  std::uint16_t port = 0;
  std::string target; // path and query, at least "/"
  std::string error;
};
WebhookUrl parse_webhook_url(std::string_view url);

class WebhookClient final : public approval::WebhookSender {
public:
  /// `tls` verifies https endpoints (the proxy's upstream_tls context); it must outlive
  /// every attempt, as must the io_context.
  WebhookClient(boost::asio::io_context& ioc, boost::asio::ssl::context& tls,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

  void send(const approval::WebhookRequest& request, approval::WebhookDone done) override;

  std::uint64_t attempts() const { return attempts_.load(); }
  std::uint64_t failures() const { return failures_.load(); }

private:
  boost::asio::io_context& ioc_;
  boost::asio::ssl::context& tls_;
  std::chrono::milliseconds timeout_;
  std::atomic<std::uint64_t> attempts_{0};
  std::atomic<std::uint64_t> failures_{0};
};

} // namespace runwarden::proxy
