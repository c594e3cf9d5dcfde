#pragma once
// The transparent listener's first phase (DESIGN §2 listen.transparent, issue 7): learn where
// an iptables-REDIRECTed connection was going, peek at its first bytes (TLS ClientHello or an
// HTTP request head), check that the SNI or Host names that destination, and only then hand
// the connection to the explicit proxy's request machinery (session.cpp).

#include "proxy/proxy_context.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace runwarden::proxy {

/// Takes ownership of a connection accepted on listen.transparent.
void start_transparent_session(std::shared_ptr<ProxyContext> ctx,
                               boost::asio::ip::tcp::socket socket);

/// Where the connection was addressed before REDIRECT (SO_ORIGINAL_DST for IPv4,
/// IP6T_SO_ORIGINAL_DST for IPv6). Fails when conntrack knows no such connection.
std::optional<boost::asio::ip::tcp::endpoint>
original_destination(boost::asio::ip::tcp::socket& socket, std::error_code& ec);

/// Result of scanning a request head for its Host field.
struct HostField {
  enum class Status { ok, missing, duplicate, incomplete } status = Status::incomplete;
  std::string_view value; // trimmed; valid while the head is
};

/// The Host field of an HTTP/1.x request head (request line, fields, blank line). Only used
/// to choose the destination check; the full parser runs afterwards and refuses anything
/// that disagrees with it.
HostField find_host_field(std::string_view head);

} // namespace runwarden::proxy
