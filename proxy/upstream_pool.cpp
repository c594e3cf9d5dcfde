#include "proxy/upstream_pool.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace runwarden::proxy {

namespace net = boost::asio;

bool upstream_idle_and_open(net::ip::tcp::socket& socket) {
  char probe = 0;
  ssize_t n = ::recv(socket.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

net::io_context::id UpstreamPools::id;

UpstreamPools::UpstreamPools(net::io_context& ioc) : net::io_context::service(ioc), timer_(ioc) {}

void UpstreamPools::schedule_sweep(std::chrono::milliseconds idle) {
  if (sweeping_ || idle.count() <= 0) {
    return;
  }
  sweeping_ = true;
  every_ = idle;
  timer_.expires_after(idle);
  timer_.async_wait([this](boost::system::error_code ec) {
    sweeping_ = false;
    if (!ec) {
      sweep();
    }
  });
}

void UpstreamPools::sweep() {
  auto now = std::chrono::steady_clock::now();
  plain_.purge(now);
  tls_.purge(now);
  if (plain_.size() + tls_.size() > 0) {
    schedule_sweep(every_);
  }
}

void UpstreamPools::close_all() {
  plain_.clear();
  tls_.clear();
  timer_.cancel();
}

void UpstreamPools::shutdown() {
  plain_.clear();
  tls_.clear();
}

} // namespace runwarden::proxy
