// The data plane writes message heads itself (proxy/wire_head.hpp). These tests hold them
// to the bytes Beast's serializer produced for the messages the session built before, so a
// relayed request or response is unchanged on the wire.

#include "proxy/wire_head.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace http = boost::beast::http;

bool ieq(std::string_view a, std::string_view b) {
  return boost::beast::iequals(a, b);
}

/// The upstream request exactly as session.cpp built it with Beast before: the oracle.
std::string beast_request(const policy::Request& req) {
  http::request<http::string_body> out;
  out.version(11);
  http::verb verb = http::string_to_verb(req.method);
  if (verb == http::verb::unknown) {
    out.method_string(req.method);
  } else {
    out.method(verb);
  }
  out.target(req.target());
  std::vector<std::string> tokens;
  for (const auto& hdr : req.headers) {
    if (ieq(hdr.name, "connection") || ieq(hdr.name, "proxy-connection")) {
      connection_tokens(hdr.value, tokens);
    }
  }
  for (const auto& hdr : req.headers) {
    if (is_hop_by_hop(hdr.name) || named_in(hdr.name, tokens) || ieq(hdr.name, "host") ||
        ieq(hdr.name, "content-length") || ieq(hdr.name, "expect")) {
      continue;
    }
    out.insert(hdr.name, hdr.value);
  }
  bool default_port =
      (req.scheme == "http" && req.port == 80) || (req.scheme == "https" && req.port == 443);
  out.set(http::field::host, default_port ? req.host : req.host + ":" + std::to_string(req.port));
  out.body() = req.body;
  out.keep_alive(true);
  out.prepare_payload();
  std::ostringstream os;
  os << out;
  return os.str();
}

std::string ours(const policy::Request& req) {
  std::string head;
  std::vector<std::string> tokens{"stale"}; // scratch from an earlier request is cleared
  build_request_head(head, req, tokens);
  return head + req.body;
}

policy::Request make(std::string method, std::string scheme, std::string host, std::uint16_t port,
                     std::string path, std::string query, std::vector<policy::Header> headers,
                     std::string body = {}) {
  policy::Request r;
  r.method = std::move(method);
  r.scheme = std::move(scheme);
  r.host = std::move(host);
  r.port = port;
  r.path = std::move(path);
  r.query = std::move(query);
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

TEST(WireHead, RequestHeadsMatchBeast) {
  std::vector<policy::Request> cases = {
      make("GET", "http", "example.com", 80, "/a/b", "x=1&y=%20",
           {{"Host", "example.com"},
            {"User-Agent", "curl/8"},
            {"Accept", "*/*"},
            {"Connection", "keep-alive"},
            {"Proxy-Connection", "keep-alive"},
            {"Keep-Alive", "timeout=5"},
            {"TE", "trailers"},
            {"x-MiXeD-Case", "Value With Spaces"},
            {"X-Empty", ""},
            {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}),
      make("POST", "http", "api.local", 8080, "/v1/items", "",
           {{"Host", "api.local:8080"},
            {"Content-Type", "application/json"},
            {"Content-Length", "13"},
            {"Expect", "100-continue"},
            {"Connection", "close, X-Drop-Me"},
            {"x-drop-me", "secret"},
            {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
            {"X-Keep", "1"}},
           "{\"name\":\"a\"}\n"),
      make("PUT", "http", "h", 80, "/p", "", {{"Host", "h"}}),
      make("OPTIONS", "http", "h", 80, "/", "", {{"Host", "h"}}),
      make("DELETE", "https", "secure.example", 443, "/r/1", "", {{"Host", "secure.example"}}),
      make("PATCH", "https", "secure.example", 8443, "/r/1", "q", {{"Host", "secure.example:8443"}},
           "patch"),
      make("PURGE", "http", "cache.local", 80, "/obj", "", {{"Host", "cache.local"}}, "xyz"),
      make("HEAD", "http", "[::1]", 8080, "", "", {{"Host", "[::1]:8080"}}),
      make("GET", "http", "h", 80, "/dup", "",
           {{"Host", "h"}, {"X-Multi", "a"}, {"X-Multi", "b"}, {"Upgrade", "h2c"}}),
  };
  for (const auto& req : cases) {
    EXPECT_EQ(ours(req), beast_request(req)) << req.method << " " << req.host;
  }
}

/// Parses raw as an upstream response header, the way the relay does.
http::response<http::empty_body> parse_head(const std::string& raw) {
  http::response_parser<http::empty_body> p;
  p.skip(true);
  boost::beast::error_code ec;
  p.put(boost::asio::buffer(raw), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_header_done());
  return p.release();
}

std::string beast_head(const http::response_header<>& h) {
  std::ostringstream os;
  os << h;
  return os.str();
}

TEST(WireHead, ResponseHeadsMatchBeast) {
  std::vector<std::string> raws = {
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 201 Fine Thanks\r\nx-Mixed: a b c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 204 \r\nX-Empty: \r\n\r\n", // no reason: Beast's text for the code
      "HTTP/1.0 299 \r\n\r\n",              // a code Beast has no text for
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
  };
  for (const auto& raw : raws) {
    auto h = parse_head(raw);
    h.version(11);
    std::string head;
    build_response_head(head, h.base());
    EXPECT_EQ(head, beast_head(h.base())) << raw;
    // The relay's own edits: re-chunked and closing.
    h.chunked(true);
    h.keep_alive(false);
    build_response_head(head, h.base());
    EXPECT_EQ(head, beast_head(h.base())) << raw;
    EXPECT_NE(head.find("Connection: close\r\n"), std::string::npos);
  }
}

TEST(WireHead, ChunkFramingMatchesBeast) {
  // (An empty body is left out: Beast writes a zero-size chunk and the last chunk for it.)
  for (std::string body : {std::string("upstream 1"), std::string(16, 'x'), std::string(300, 'y'),
                           std::string(16384, 'z')}) {
    http::response<http::string_body> res{http::status::ok, 11};
    res.body() = body;
    res.chunked(true);
    std::ostringstream os;
    os << res;
    std::string head;
    build_response_head(head, res.base());
    std::array<char, 20> line{};
    std::string mine = head;
    if (!body.empty()) {
      mine.append(chunk_size_line(line, body.size())).append(body);
    }
    mine.append(chunk_tail(body.size(), true));
    EXPECT_EQ(mine, os.str()) << body.size();
  }
  std::array<char, 20> line{};
  EXPECT_EQ(chunk_size_line(line, 1), "1\r\n");
  EXPECT_EQ(chunk_size_line(line, 255), "ff\r\n");
  EXPECT_EQ(chunk_size_line(line, 0x4000), "4000\r\n");
  EXPECT_EQ(chunk_tail(5, false), "\r\n");
  EXPECT_EQ(chunk_tail(0, false), "");
  EXPECT_EQ(chunk_tail(0, true), "0\r\n\r\n");
}

TEST(WireHead, ConnectionTokensAreLowerCasedAndTrimmed) {
  std::vector<std::string> tokens;
  connection_tokens(" Keep-Alive , X-Foo,,close ", tokens);
  EXPECT_EQ(tokens, (std::vector<std::string>{"keep-alive", "x-foo", "close"}));
  EXPECT_TRUE(named_in("X-FOO", tokens));
  EXPECT_FALSE(named_in("x-bar", tokens));
  EXPECT_TRUE(is_hop_by_hop("Transfer-Encoding"));
  EXPECT_FALSE(is_hop_by_hop("traceparent"));
}

// What the session judges is what it forwards: hop-by-hop fields and every field named in
// Connection or Proxy-Connection (any case, any of several fields) go; the rest keep order.
TEST(WireHead, DropUnforwardedLeavesExactlyTheForwardedFieldsInOrder) {
  std::vector<policy::Header> headers{{"Accept", "*/*"},
                                      {"X-Dry-Run", "true"},
                                      {"Connection", "x-DRY-run"},
                                      {"TE", "trailers"},
                                      {"X-Other", "1"},
                                      {"Proxy-Connection", "X-Other"},
                                      {"Authorization", "Bearer a"},
                                      {"Keep-Alive", "timeout=5"},
                                      {"traceparent", "00-1-2-01"}};
  std::vector<std::string> tokens{"stale"};
  drop_unforwarded(headers, tokens);
  ASSERT_EQ(headers.size(), 3u);
  EXPECT_EQ(headers[0].name, "Accept");
  EXPECT_EQ(headers[1].name, "Authorization");
  EXPECT_EQ(headers[2].name, "traceparent");
  // The forwarded head built from what is left is the one built from the original.
  policy::Request req;
  req.method = "GET";
  req.scheme = "http";
  req.host = "h";
  req.port = 80;
  req.path = "/";
  req.headers = headers;
  std::string head;
  build_request_head(head, req, tokens);
  EXPECT_EQ(head, "GET / HTTP/1.1\r\nAccept: */*\r\nAuthorization: Bearer a\r\n"
                  "traceparent: 00-1-2-01\r\nHost: h\r\n\r\n");
}

// A body relayed after the head (an upload judged on its head) is not in req.body: the head
// carries its declared length, or chunked framing, in place of the agent's own fields.
TEST(WireHead, StreamedBodyHeadCarriesItsOwnFraming) {
  auto req = make("PUT", "http", "files.internal", 80, "/upload", "",
                  {{"Content-Length", "7"}, {"Content-Type", "text/plain"}});
  std::string head;
  std::vector<std::string> tokens;
  StreamedBody length{false, 3000000};
  build_request_head(head, req, tokens, &length);
  EXPECT_EQ(head, "PUT /upload HTTP/1.1\r\nContent-Type: text/plain\r\nHost: files.internal\r\n"
                  "Content-Length: 3000000\r\n\r\n");
  StreamedBody chunked{true, 0};
  build_request_head(head,
                     make("PUT", "http", "files.internal", 80, "/x", "",
                          {{"Transfer-Encoding", "chunked"}, {"Content-Length", "9"}}),
                     tokens, &chunked);
  EXPECT_EQ(head, "PUT /x HTTP/1.1\r\nHost: files.internal\r\nTransfer-Encoding: chunked\r\n\r\n");
}

} // namespace
} // namespace runwarden::proxy
