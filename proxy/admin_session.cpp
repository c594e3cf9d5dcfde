// One admin connection: HTTP/1.1 keep-alive, each request routed through the AdminRouter.

#include "proxy/log.hpp"
#include "proxy/server.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>

namespace runwarden::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::uint32_t kAdminHeaderLimit = 16 * 1024;
constexpr std::uint64_t kAdminBodyLimit = 1024 * 1024;
constexpr std::chrono::seconds kAdminTimeout{30};
/// A kept-alive connection waits this long for its next request (a slot is not held idle).
constexpr std::chrono::seconds kAdminIdleTimeout{5};
/// The admin port is reachable by anything in the pod (the agent too): without a cap, idle
/// or half-sent connections to it could use up the process's descriptors and starve the
/// proxy. Over the cap a connection gets 503 admin_busy at once; signals and the
/// kill-switch file still work (docs/operations.md).
constexpr std::uint64_t kMaxAdminConnections = 64;

class AdminSession : public std::enable_shared_from_this<AdminSession> {
public:
  AdminSession(const AdminRouter& router, std::shared_ptr<ProxyContext> ctx, tcp::socket&& socket)
      : router_(router), ctx_(std::move(ctx)), stream_(std::move(socket)) {
    ctx_->admin_connections.fetch_add(1);
  }
  ~AdminSession() { ctx_->admin_connections.fetch_sub(1); }
  AdminSession(const AdminSession&) = delete;
  AdminSession& operator=(const AdminSession&) = delete;

  /// Over the cap: the answer, then the connection closes.
  void refuse_busy() {
    reply(503, "application/json",
          R"j({"error":"admin_busy","reason":"too many open admin connections (64)"})j", false);
  }

  void start() { do_read(kAdminTimeout); }

private:
  void do_read(std::chrono::seconds deadline) {
    parser_.emplace();
    parser_->header_limit(kAdminHeaderLimit);
    parser_->body_limit(kAdminBodyLimit);
    stream_.expires_after(deadline);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&AdminSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) {
      if (ec == http::error::body_limit) {
        reply(413, "application/json",
              R"({"error":"body_too_large","reason":"an admin request body is at most 1 MiB"})",
              false);
      } else if (ec == http::error::header_limit) {
        reply(431, "application/json",
              R"({"error":"headers_too_large","reason":"an admin request head is at most 16 KiB"})",
              false);
      } else if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
                 ec != net::error::operation_aborted) {
        reply(400, "application/json", R"({"error":"malformed_request"})", false);
      }
      return;
    }
    auto& req = parser_->get();
    AdminRequest ar;
    ar.method = std::string(req.method_string());
    std::string_view target = req.target();
    auto q = target.find('?');
    ar.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) {
      ar.query = std::string(target.substr(q + 1));
    }
    for (const auto& f : req) {
      ar.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    ar.body = std::move(req.body());
    AdminResponse r = router_.handle(ar);
    log_event(LogLevel::debug, "admin", 0, {},
              {{"method", ar.method}, {"path", ar.path}, {"status", std::to_string(r.status)}});
    reply(r.status, r.content_type, std::move(r.body), req.keep_alive() && !ctx_->draining.load(),
          r.headers, req.method() == http::verb::head);
  }

  void reply(int status, const std::string& content_type, std::string body, bool keep,
             const std::vector<std::pair<std::string, std::string>>& fields = {},
             bool head = false) {
    auto res =
        std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), 11);
    res->set(http::field::server, "runwarden");
    res->set(http::field::content_type, content_type);
    for (const auto& [name, value] : fields) {
      res->set(name, value);
    }
    res->keep_alive(keep);
    if (head) { // the GET's Content-Length, no body
      res->content_length(body.size());
    } else {
      res->body() = std::move(body);
      res->prepare_payload();
    }
    stream_.expires_after(kAdminTimeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                        if (ec || !keep) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->do_read(kAdminIdleTimeout);
                      });
  }

  const AdminRouter& router_;
  std::shared_ptr<ProxyContext> ctx_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

} // namespace

void start_admin_session(const AdminRouter& router, std::shared_ptr<ProxyContext> ctx,
                         tcp::socket socket) {
  const bool busy = ctx->admin_connections.load() >= kMaxAdminConnections;
  auto session = std::make_shared<AdminSession>(router, ctx, std::move(socket));
  if (busy) {
    ctx->rejected_connections.fetch_add(1);
    // Logged at most once a second (admin accepts run on one thread), the rest counted.
    static LogThrottle throttle{std::chrono::seconds(1)};
    if (std::uint64_t skipped = 0; throttle.due(skipped)) {
      log_event(LogLevel::warn, "admin_busy", 0, {},
                {{"open_admin_connections", std::to_string(ctx->admin_connections.load())},
                 {"not_logged_since", std::to_string(skipped)}});
    }
    session->refuse_busy();
    return;
  }
  session->start();
}

} // namespace runwarden::proxy
