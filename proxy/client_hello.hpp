#pragma once
// Reads the server name (SNI) out of the first bytes of a TLS connection, before any TLS
// library sees them, so the transparent listener can pick a leaf and check the name against
// the original destination. Pure: no I/O, bounded, safe on any input (fuzzed).

#include <cstddef>
#include <string>
#include <string_view>

namespace runwarden::proxy {

/// Largest ClientHello we reassemble (several TLS records); larger hellos are refused.
inline constexpr std::size_t kMaxClientHelloBytes = 64 * 1024;

enum class HelloStatus {
  need_more, // a prefix of a well-formed ClientHello so far: read more bytes
  not_tls,   // the first byte is not a TLS handshake record
  malformed, // TLS-looking, but not a ClientHello we accept
  ok,        // complete ClientHello parsed
};

struct ClientHello {
  HelloStatus status = HelloStatus::need_more;
  /// The host_name from server_name, as sent (ASCII letters, digits, '-', '.', '_').
  std::string sni;
  bool has_sni = false;
  /// Why the hello was refused (malformed only), for the log and the audit record.
  std::string error;
};

std::string_view to_string(HelloStatus status);

/// Parses what has been read so far. need_more until the whole handshake message is there
/// (never beyond kMaxClientHelloBytes of input).
ClientHello parse_client_hello(std::string_view bytes);

/// What the first bytes of a transparent connection look like.
enum class FirstBytes { need_more, tls, http, unknown };

/// TLS handshake record, an HTTP/1.x request line (an upper-case token then a space), or
/// neither. need_more only while too few bytes are in to tell.
FirstBytes classify_first_bytes(std::string_view bytes);

} // namespace runwarden::proxy
