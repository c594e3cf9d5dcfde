#pragma once
// Entry points of the proxy's connection sessions (implemented in session.cpp, the one
// translation unit that instantiates the Beast HTTP machinery for the data plane).

#include "proxy/proxy_context.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <memory>

namespace runwarden::proxy {

/// Takes ownership of an accepted agent connection on the explicit proxy listener.
void start_proxy_session(std::shared_ptr<ProxyContext> ctx, boost::asio::ip::tcp::socket socket);

} // namespace runwarden::proxy
