#include "approval/admin_client.hpp"

#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

namespace runwarden::approval {

namespace {

constexpr std::size_t max_response_bytes = 64u * 1024 * 1024;

class Fd {
public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

private:
  int fd_;
};

using Deadline = std::chrono::steady_clock::time_point;

int remaining_ms(Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

bool wait_for(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int ms = remaining_ms(deadline);
    if (ms == 0) {
      return false;
    }
    const int n = ::poll(&p, 1, ms);
    if (n > 0) {
      return true;
    }
    if (n == 0 || errno != EINTR) {
      return false;
    }
  }
}

bool connect_with_deadline(const AdminUrl& url, Deadline deadline, int& out, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const std::string port = std::to_string(url.port);
  const int rc = ::getaddrinfo(url.host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    error = "cannot resolve " + url.host + ": " + ::gai_strerror(rc);
    return false;
  }
  error = "cannot connect to " + url.host + ":" + port;
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS && wait_for(fd, POLLOUT, deadline)) {
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      r = so_error == 0 ? 0 : -1;
      errno = so_error;
    }
    if (r == 0) {
      ::freeaddrinfo(list);
      out = fd;
      return true;
    }
    error += std::string(": ") + std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(list);
  return false;
}

bool send_all(int fd, std::string_view data, Deadline deadline) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(fd, POLLOUT, deadline)) {
        return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool decode_chunked(std::string_view in, std::string& out) {
  std::size_t pos = 0;
  for (int guard = 0; guard < 1000000; ++guard) {
    const std::size_t eol = in.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      return false;
    }
    std::size_t size = 0;
    std::size_t i = pos;
    for (; i < eol && in[i] != ';'; ++i) {
      const char c = in[i];
      int v = -1;
      if (c >= '0' && c <= '9') {
        v = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        v = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        v = c - 'A' + 10;
      }
      if (v < 0 || size > max_response_bytes) {
        return false;
      }
      size = size * 16 + static_cast<std::size_t>(v);
    }
    if (i == pos) {
      return false;
    }
    pos = eol + 2;
    if (size == 0) {
      return true;
    }
    if (pos + size + 2 > in.size()) {
      return false;
    }
    out.append(in.substr(pos, size));
    pos += size + 2;
  }
  return false;
}

bool parse_response(std::string_view raw, HttpResponse& out, std::string& error) {
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos || raw.substr(0, 7) != "HTTP/1.") {
    error = "malformed HTTP response from the admin API";
    return false;
  }
  const std::string_view head = raw.substr(0, head_end);
  const std::size_t sp = head.find(' ');
  if (sp == std::string_view::npos || sp + 4 > head.size()) {
    error = "malformed HTTP status line";
    return false;
  }
  int status = 0;
  for (std::size_t i = sp + 1; i < sp + 4; ++i) {
    if (head[i] < '0' || head[i] > '9') {
      error = "malformed HTTP status code";
      return false;
    }
    status = status * 10 + (head[i] - '0');
  }
  out.status = status;
  bool chunked = false;
  std::optional<std::size_t> length;
  std::size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos < head.size()) {
    pos += 2;
    std::size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      eol = head.size();
    }
    const std::string_view line = head.substr(pos, eol - pos);
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      const std::string name = lower(trim(line.substr(0, colon)));
      const std::string_view value = trim(line.substr(colon + 1));
      if (name == "content-type") {
        out.content_type = std::string(value);
      } else if (name == "transfer-encoding" && lower(value).find("chunked") != std::string::npos) {
        chunked = true;
      } else if (name == "content-length") {
        std::size_t n = 0;
        for (const char c : value) {
          if (c < '0' || c > '9' || n > max_response_bytes) {
            error = "malformed Content-Length";
            return false;
          }
          n = n * 10 + static_cast<std::size_t>(c - '0');
        }
        length = n;
      }
    }
    pos = eol;
  }
  const std::string_view body = raw.substr(head_end + 4);
  if (chunked) {
    if (!decode_chunked(body, out.body)) {
      error = "truncated chunked response";
      return false;
    }
  } else if (length) {
    if (body.size() < *length) {
      error = "truncated response body";
      return false;
    }
    out.body = std::string(body.substr(0, *length));
  } else {
    out.body = std::string(body);
  }
  return true;
}

} // namespace

std::optional<AdminUrl> parse_admin_url(std::string_view url, std::string* error) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) {
    *error = "admin URL must start with http:// (the admin listener is plain HTTP on loopback)";
    return std::nullopt;
  }
  url.remove_prefix(scheme.size());
  const std::size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  AdminUrl out;
  if (slash != std::string_view::npos) {
    std::string_view base = url.substr(slash);
    while (!base.empty() && base.back() == '/') {
      base.remove_suffix(1);
    }
    out.base = std::string(base);
  }
  if (authority.find('@') != std::string_view::npos) {
    *error = "admin URL must not carry credentials; use --token-file or RUNWARDEN_TOKEN";
    return std::nullopt;
  }
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      *error = "unterminated IPv6 literal in admin URL";
      return std::nullopt;
    }
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        *error = "unexpected text after IPv6 literal in admin URL";
        return std::nullopt;
      }
      port = rest.substr(1);
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
    }
  }
  if (out.host.empty()) {
    *error = "admin URL has no host";
    return std::nullopt;
  }
  if (!port.empty() || authority.find(':') != std::string_view::npos) {
    unsigned value = 0;
    if (port.empty() || port.size() > 5) {
      *error = "bad port in admin URL";
      return std::nullopt;
    }
    for (const char c : port) {
      if (c < '0' || c > '9') {
        *error = "bad port in admin URL";
        return std::nullopt;
      }
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) {
      *error = "bad port in admin URL";
      return std::nullopt;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  return out;
}

AdminClient::AdminClient(AdminUrl url, std::string bearer_token, std::chrono::milliseconds timeout)
    : url_(std::move(url)), token_(std::move(bearer_token)), timeout_(timeout) {}

bool AdminClient::request(std::string_view method, std::string_view path,
                          std::string_view json_body, HttpResponse& out, std::string& error) const {
  const Deadline deadline = std::chrono::steady_clock::now() + timeout_;
  int raw_fd = -1;
  if (!connect_with_deadline(url_, deadline, raw_fd, error)) {
    return false;
  }
  const Fd fd(raw_fd);
  const bool v6 = url_.host.find(':') != std::string::npos;
  std::string req;
  req.append(method).append(" ").append(url_.base).append(path).append(" HTTP/1.1\r\n");
  req.append("Host: ")
      .append(v6 ? "[" + url_.host + "]" : url_.host)
      .append(":")
      .append(std::to_string(url_.port))
      .append("\r\n");
  req.append("User-Agent: runwarden-cli\r\nAccept: application/json\r\nConnection: close\r\n");
  if (!token_.empty()) {
    req.append("Authorization: Bearer ").append(token_).append("\r\n");
  }
  if (!json_body.empty() || method == "POST") {
    req.append("Content-Type: application/json\r\n");
    req.append("Content-Length: ").append(std::to_string(json_body.size())).append("\r\n");
  }
  req.append("\r\n").append(json_body);
  if (!send_all(fd.get(), req, deadline)) {
    error = "cannot send the request to the admin API (timeout or connection reset)";
    return false;
  }
  std::string raw;
  char buf[16384];
  for (;;) {
    if (!wait_for(fd.get(), POLLIN, deadline)) {
      error = "timed out waiting for the admin API";
      return false;
    }
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n == 0) {
      break;
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
        continue;
      }
      error = std::string("cannot read the admin API's answer: ") + std::strerror(errno);
      return false;
    }
    raw.append(buf, static_cast<std::size_t>(n));
    if (raw.size() > max_response_bytes) {
      error = "admin API answer too large";
      return false;
    }
  }
  return parse_response(raw, out, error);
}

std::string encode_path_segment(std::string_view segment) {
  static constexpr char digits[] = "0123456789ABCDEF";
  if (segment == "." || segment == "..") { // never a dot-segment
    return segment.size() == 1 ? "%2E" : "%2E%2E";
  }
  std::string out;
  for (const char ch : segment) {
    const auto c = static_cast<unsigned char>(ch);
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 0x0f]);
    }
  }
  return out;
}

} // namespace runwarden::approval
