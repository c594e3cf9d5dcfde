#include "proxy/wire_head.hpp"

#include "policy/ascii.hpp"

#include <algorithm>
#include <boost/beast/http/status.hpp>
#include <charconv>

namespace runwarden::proxy {
namespace {

using policy::ascii_lower;
using policy::iequals;
using policy::trim_ows;

namespace http = boost::beast::http;

/// The decimal digits of v, as Beast's to_static_string writes them.
void append_decimal(std::string& out, std::uint64_t v) {
  char digits[20];
  auto end = std::to_chars(digits, digits + sizeof digits, v).ptr; // 20 digits hold any
  out.append(digits, end);
}

} // namespace

bool is_hop_by_hop(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "connection",        "proxy-connection",  "keep-alive", "te",
      "trailer",           "transfer-encoding", "upgrade",    "proxy-authorization",
      "proxy-authenticate"};
  for (auto n : kNames) {
    if (iequals(name, n)) {
      return true;
    }
  }
  return false;
}

void connection_tokens(std::string_view value, std::vector<std::string>& out) {
  while (!value.empty()) {
    auto comma = value.find(',');
    std::string_view token = trim_ows(value.substr(0, comma));
    if (!token.empty()) {
      std::string t(token);
      std::transform(t.begin(), t.end(), t.begin(), ascii_lower);
      out.push_back(std::move(t));
    }
    if (comma == std::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
}

bool named_in(std::string_view name, const std::vector<std::string>& tokens) {
  for (const auto& t : tokens) {
    if (iequals(name, t)) {
      return true;
    }
  }
  return false;
}

void drop_unforwarded(std::vector<policy::Header>& headers, std::vector<std::string>& tokens) {
  tokens.clear();
  for (const auto& hdr : headers) {
    if (iequals(hdr.name, "connection") || iequals(hdr.name, "proxy-connection")) {
      connection_tokens(hdr.value, tokens);
    }
  }
  std::erase_if(headers, [&](const policy::Header& hdr) {
    return is_hop_by_hop(hdr.name) || named_in(hdr.name, tokens);
  });
}

void build_request_head(std::string& out, const policy::Request& req,
                        std::vector<std::string>& tokens, const StreamedBody* streamed) {
  out.clear();
  out.append(req.method).push_back(' ');
  out.append(req.path.empty() ? std::string_view("/") : std::string_view(req.path));
  if (!req.query.empty()) {
    out.push_back('?');
    out.append(req.query);
  }
  out.append(" HTTP/1.1\r\n");
  tokens.clear();
  for (const auto& hdr : req.headers) {
    if (iequals(hdr.name, "connection") || iequals(hdr.name, "proxy-connection")) {
      connection_tokens(hdr.value, tokens);
    }
  }
  for (const auto& hdr : req.headers) {
    if (is_hop_by_hop(hdr.name) || named_in(hdr.name, tokens) || iequals(hdr.name, "host") ||
        iequals(hdr.name, "content-length") || iequals(hdr.name, "expect")) {
      continue;
    }
    out.append(hdr.name).append(": ").append(hdr.value).append("\r\n");
  }
  out.append("Host: ").append(req.host);
  bool default_port =
      (req.scheme == "http" && req.port == 80) || (req.scheme == "https" && req.port == 443);
  if (!default_port) {
    out.push_back(':');
    append_decimal(out, req.port);
  }
  out.append("\r\n");
  if (streamed != nullptr && streamed->chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  } else if (streamed != nullptr) {
    out.append("Content-Length: ");
    append_decimal(out, streamed->length);
    out.append("\r\n");
  } else if (!req.body.empty() || req.method == "OPTIONS" || req.method == "PUT" ||
             req.method == "POST") {
    out.append("Content-Length: ");
    append_decimal(out, req.body.size());
    out.append("\r\n");
  }
  out.append("\r\n");
}

void build_response_head(std::string& out, const http::response_header<>& res) {
  out.clear();
  unsigned code = res.result_int();
  char line[13] = {'H', 'T', 'T', 'P', '/', '1', '.', '1', ' ', '0', '0', '0', ' '};
  line[9] = static_cast<char>('0' + code / 100 % 10);
  line[10] = static_cast<char>('0' + code / 10 % 10);
  line[11] = static_cast<char>('0' + code % 10);
  out.append(line, sizeof line);
  std::string_view reason = res.reason();
  if (reason.empty()) {
    reason = http::obsolete_reason(static_cast<http::status>(code));
  }
  out.append(reason).append("\r\n");
  for (const auto& f : res) {
    out.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
  }
  out.append("\r\n");
}

std::string_view chunk_size_line(std::array<char, 20>& buf, std::size_t size) {
  char* end = buf.data() + buf.size();
  char* p = end;
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = "0123456789abcdef"[size & 0xF];
    size >>= 4;
  } while (size != 0);
  return {p, static_cast<std::size_t>(end - p)};
}

std::string_view chunk_tail(std::size_t size, bool last) {
  if (size != 0) {
    return last ? std::string_view("\r\n0\r\n\r\n") : std::string_view("\r\n");
  }
  return last ? std::string_view("0\r\n\r\n") : std::string_view();
}

} // namespace runwarden::proxy
