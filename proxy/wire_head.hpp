#pragma once
// The message heads the data plane writes itself, byte for byte what Beast's serializer wrote
// for the messages session.cpp used to build. Beast still parses every message; only the
// writing changed: a head is built once per exchange into a reused string and goes out with
// its body in one gather write, where Beast's serializer walked a buffers_cat view of every
// field on each write (4-5 % of the proxy's samples at 32 connections).

#include "policy/request.hpp"

#include <array>
#include <boost/beast/http/message.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::proxy {

/// RFC 9110 §7.6.1 hop-by-hop fields plus the proxy-specific ones never forwarded.
bool is_hop_by_hop(std::string_view name);

/// Appends the lower-cased tokens of a Connection header value to out.
void connection_tokens(std::string_view value, std::vector<std::string>& out);

/// True when name is one of tokens (case-insensitive).
bool named_in(std::string_view name, const std::vector<std::string>& tokens);

/// Removes from headers, in place and keeping the order of the rest, every field that is
/// not forwarded: hop-by-hop ones and those named in Connection or Proxy-Connection. The
/// session calls it before the request is judged, so a rule never matches on a field the
/// upstream will not receive (an agent could otherwise name a field a rule requires in
/// Connection: judged with it, forwarded without it). tokens is scratch space.
void drop_unforwarded(std::vector<policy::Header>& headers, std::vector<std::string>& tokens);

/// Replaces out with the head of the request forwarded for req: "METHOD target HTTP/1.1",
/// req's fields in order except hop-by-hop ones, those named in Connection or
/// Proxy-Connection, Host, Content-Length and Expect; then Host from the canonical authority
/// (with the port unless it is the scheme's default); then Content-Length when the body is
/// not empty or the method is OPTIONS, PUT or POST (Beast's prepare_payload). tokens is
/// scratch space, reused so a keep-alive connection does not allocate per request.
/// streamed: a body that is relayed after the head instead of req.body (an upload judged on
/// its head): `Content-Length: length`, or `Transfer-Encoding: chunked` when chunked.
struct StreamedBody {
  bool chunked = false;
  std::uint64_t length = 0;
};
void build_request_head(std::string& out, const policy::Request& req,
                        std::vector<std::string>& tokens, const StreamedBody* streamed = nullptr);

/// Replaces out with the head of a response: "HTTP/1.1 <code> <reason>" (the reason as
/// given, else Beast's text for the code), then every field of res in order.
void build_response_head(std::string& out, const boost::beast::http::response_header<>& res);

/// "<size in lower-case hex>\r\n", the line before a chunk of that size, written into buf.
std::string_view chunk_size_line(std::array<char, 20>& buf, std::size_t size);

/// What follows a chunk's data (after `size` bytes, possibly none) when re-chunking a body:
/// its CRLF when it had data, and after the last piece the last chunk "0\r\n\r\n".
std::string_view chunk_tail(std::size_t size, bool last);

} // namespace runwarden::proxy
