#pragma once
// Entry points of the proxy's connection sessions (implemented in session.cpp, the one
// translation unit that instantiates the Beast HTTP machinery for the data plane).

#include "proxy/proxy_context.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <cstdint>
#include <memory>
#include <string>

namespace runwarden::proxy {

/// Takes ownership of an accepted agent connection on the explicit proxy listener.
void start_proxy_session(std::shared_ptr<ProxyContext> ctx, boost::asio::ip::tcp::socket socket);

/// How a transparent connection goes on once its name and original destination agree.
enum class TransparentKind { http, tls, passthrough };

struct TransparentHandoff {
  TransparentKind kind = TransparentKind::http;
  std::string host; // canonical Host/SNI name, or the destination address (TLS without SNI)
  std::uint16_t port = 0;
  /// What the agent dialled, checked against host: a passthrough tunnel connects here.
  boost::asio::ip::tcp::endpoint destination;
  std::string early; // bytes already read from the agent (request head or ClientHello)
  std::uint64_t conn_id = 0;
  std::string peer;
};

/// Hands a checked transparent connection (transparent_session.cpp) to the same request
/// machinery as the explicit proxy, so decisions, answers and audit records are identical.
void start_transparent_exchange(std::shared_ptr<ProxyContext> ctx, boost::beast::tcp_stream stream,
                                TransparentHandoff handoff);

} // namespace runwarden::proxy
