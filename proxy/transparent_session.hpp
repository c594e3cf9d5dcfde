#pragma once
// The transparent listener's first phase (DESIGN §2 listen.transparent, issue 7): learn where
// an iptables-REDIRECTed connection was going, peek at its first bytes (TLS ClientHello or an
// HTTP request head), check that the SNI or Host names that destination, and only then hand
// the connection to the explicit proxy's request machinery (session.cpp).

#include "proxy/proxy_context.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace runwarden::proxy {

/// Takes ownership of a connection accepted on listen.transparent.
/// Counted in open_connections from here on and refused (503 overloaded) beyond
/// limits.max_connections, as the explicit listener does; the first bytes must all arrive
/// within one limits.header_timeout.
void start_transparent_session(std::shared_ptr<ProxyContext> ctx,
                               boost::asio::ip::tcp::socket socket);
/// The same for a connection whose original destination the caller already knows: tests
/// drive the first-bytes phase over loopback, where nothing was redirected.
void start_transparent_session(std::shared_ptr<ProxyContext> ctx,
                               boost::asio::ip::tcp::socket socket,
                               const boost::asio::ip::tcp::endpoint& original_destination);

/// Where the connection was addressed before REDIRECT (SO_ORIGINAL_DST for IPv4,
/// IP6T_SO_ORIGINAL_DST for IPv6). Fails when conntrack knows no such connection.
std::optional<boost::asio::ip::tcp::endpoint>
original_destination(boost::asio::ip::tcp::socket& socket, std::error_code& ec);

/// An address as it appears in URLs, audit records and messages: IPv4 dotted, IPv6 in
/// brackets ("[fd00::2]"), and a v4-mapped IPv6 address (a dual-stack "[::]" listener's view
/// of an IPv4 peer) as the IPv4 address it carries, so both listener shapes log alike.
std::string address_text(const boost::asio::ip::address& address);
/// address_text plus ":port" ("10.0.0.1:80", "[fd00::2]:443").
std::string endpoint_text(const boost::asio::ip::tcp::endpoint& endpoint);

/// The address a canonical host (policy::normalize_host output) spells literally: a dotted
/// quad or a bracketed IPv6 literal; nullopt for a name. v4-mapped literals are unmapped.
std::optional<boost::asio::ip::address> ip_literal(std::string_view canonical_host);

/// "host", "host:port", "[v6]" or "[v6]:port" (a Host field) -> canonical host and port.
bool split_authority(std::string_view text, std::uint16_t default_port, std::string& host,
                     std::uint16_t& port);

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
