#include "proxy/client_hello.hpp"

#include <cstdint>

namespace runwarden::proxy {
namespace {

constexpr std::uint8_t kHandshakeRecord = 0x16;
constexpr std::uint8_t kClientHello = 0x01;
constexpr std::uint16_t kServerNameExtension = 0x0000;
constexpr std::uint8_t kHostName = 0x00;
constexpr std::size_t kRecordHeader = 5;
constexpr std::size_t kMaxRecordPayload = 16384 + 2048; // TLSPlaintext limit plus slack
constexpr std::size_t kMaxHostName = 255;
constexpr std::size_t kMaxMethodToken = 16;

/// Bounds-checked big-endian reader over a byte span; any overrun sets failed and yields 0.
class Reader {
public:
  explicit Reader(std::string_view data) : data_(data) {}

  std::size_t remaining() const { return data_.size() - pos_; }
  bool failed() const { return failed_; }

  std::uint32_t number(std::size_t width) {
    if (failed_ || remaining() < width) {
      failed_ = true;
      return 0;
    }
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < width; ++i) {
      v = (v << 8) | static_cast<std::uint8_t>(data_[pos_ + i]);
    }
    pos_ += width;
    return v;
  }

  std::string_view bytes(std::size_t n) {
    if (failed_ || remaining() < n) {
      failed_ = true;
      return {};
    }
    std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

private:
  std::string_view data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

ClientHello fail(std::string why) {
  ClientHello out;
  out.status = HelloStatus::malformed;
  out.error = std::move(why);
  return out;
}

bool valid_host_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxHostName) {
    return false;
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_';
    if (!ok) {
      return false;
    }
  }
  return true;
}

/// server_name extension body (RFC 6066 §3): a list with exactly one host_name.
bool parse_server_name(std::string_view body, ClientHello& out) {
  Reader r(body);
  std::size_t list_len = r.number(2);
  if (r.failed() || list_len != r.remaining() || list_len == 0) {
    out = fail("server_name: bad list length");
    return false;
  }
  while (r.remaining() > 0) {
    std::uint32_t type = r.number(1);
    std::size_t len = r.number(2);
    std::string_view name = r.bytes(len);
    if (r.failed()) {
      out = fail("server_name: truncated entry");
      return false;
    }
    if (type != kHostName) {
      continue; // unknown name types are skipped, as RFC 6066 allows
    }
    if (out.has_sni) {
      out = fail("server_name: more than one host_name");
      return false;
    }
    if (!valid_host_name(name)) {
      out = fail("server_name: host_name is not a DNS name");
      return false;
    }
    out.sni = std::string(name);
    out.has_sni = true;
  }
  return true;
}

ClientHello parse_handshake(std::string_view msg) {
  Reader r(msg);
  r.number(1); // handshake type, checked by the caller
  r.number(3); // length, checked by the caller
  std::uint32_t version = r.number(2);
  if ((version >> 8) != 0x03) {
    return fail("unsupported ClientHello version");
  }
  r.bytes(32); // random
  std::size_t session_id_len = r.number(1);
  if (session_id_len > 32) {
    return fail("session id longer than 32 bytes");
  }
  r.bytes(session_id_len);
  std::size_t suites_len = r.number(2);
  if (!r.failed() && (suites_len < 2 || suites_len % 2 != 0)) {
    return fail("bad cipher suites length");
  }
  r.bytes(suites_len);
  std::size_t compression_len = r.number(1);
  if (!r.failed() && compression_len < 1) {
    return fail("no compression methods");
  }
  r.bytes(compression_len);
  if (r.failed()) {
    return fail("truncated ClientHello");
  }
  ClientHello out;
  out.status = HelloStatus::ok;
  if (r.remaining() == 0) {
    return out; // no extensions at all (pre-TLS 1.2 clients): no SNI
  }
  std::size_t ext_len = r.number(2);
  if (r.failed() || ext_len != r.remaining()) {
    return fail("extensions length does not match the message");
  }
  bool seen_server_name = false;
  while (r.remaining() > 0) {
    std::uint32_t type = r.number(2);
    std::size_t len = r.number(2);
    std::string_view body = r.bytes(len);
    if (r.failed()) {
      return fail("truncated extension");
    }
    if (type != kServerNameExtension) {
      continue;
    }
    if (seen_server_name) {
      return fail("duplicate server_name extension");
    }
    seen_server_name = true;
    if (!parse_server_name(body, out)) {
      return out;
    }
  }
  return out;
}

} // namespace

std::string_view to_string(HelloStatus status) {
  switch (status) {
  case HelloStatus::need_more:
    return "need_more";
  case HelloStatus::not_tls:
    return "not_tls";
  case HelloStatus::malformed:
    return "malformed";
  case HelloStatus::ok:
    return "ok";
  }
  return "unknown";
}

ClientHello parse_client_hello(std::string_view bytes) {
  if (bytes.size() > kMaxClientHelloBytes) {
    bytes = bytes.substr(0, kMaxClientHelloBytes);
  }
  if (!bytes.empty() && static_cast<std::uint8_t>(bytes[0]) != kHandshakeRecord) {
    ClientHello out;
    out.status = HelloStatus::not_tls;
    return out;
  }
  // Reassemble the handshake message from consecutive handshake records.
  std::string message;
  Reader records(bytes);
  while (true) {
    if (records.remaining() < kRecordHeader) {
      break;
    }
    std::uint32_t type = records.number(1);
    std::uint32_t version = records.number(2);
    std::size_t len = records.number(2);
    if (type != kHandshakeRecord) {
      return fail("non-handshake record before the ClientHello was complete");
    }
    if ((version >> 8) != 0x03) {
      return fail("not a TLS record version");
    }
    if (len == 0 || len > kMaxRecordPayload) {
      return fail("bad TLS record length");
    }
    if (records.remaining() < len) {
      break;
    }
    message.append(records.bytes(len));
    if (message.size() >= 4) {
      if (static_cast<std::uint8_t>(message[0]) != kClientHello) {
        return fail("first handshake message is not a ClientHello");
      }
      std::size_t body_len =
          (static_cast<std::size_t>(static_cast<std::uint8_t>(message[1])) << 16) |
          (static_cast<std::size_t>(static_cast<std::uint8_t>(message[2])) << 8) |
          static_cast<std::uint8_t>(message[3]);
      if (body_len + 4 > kMaxClientHelloBytes) {
        return fail("ClientHello larger than the limit");
      }
      if (message.size() >= body_len + 4) {
        return parse_handshake(std::string_view(message).substr(0, body_len + 4));
      }
    }
  }
  if (bytes.size() >= kMaxClientHelloBytes) {
    return fail("ClientHello larger than the limit");
  }
  return ClientHello{}; // need_more
}

FirstBytes classify_first_bytes(std::string_view bytes) {
  if (bytes.empty()) {
    return FirstBytes::need_more;
  }
  if (static_cast<std::uint8_t>(bytes[0]) == kHandshakeRecord) {
    return FirstBytes::tls;
  }
  for (std::size_t i = 0; i < bytes.size() && i <= kMaxMethodToken; ++i) {
    char c = bytes[i];
    if (c == ' ') {
      return i > 0 ? FirstBytes::http : FirstBytes::unknown;
    }
    if (c < 'A' || c > 'Z') {
      return FirstBytes::unknown;
    }
  }
  return bytes.size() > kMaxMethodToken ? FirstBytes::unknown : FirstBytes::need_more;
}

} // namespace runwarden::proxy
