#pragma once
// Runwarden-Signature (DESIGN §5): `t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`.
// Outbound webhooks are signed with it; an inbound admin call signed the same way is
// accepted instead of a bearer token, inside a 5-minute window, once.

#include "approval/crypto.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace runwarden::approval {

/// The header value for `body` signed at unix time `t`.
std::string sign(std::string_view secret, std::int64_t t, std::string_view body);

enum class SignatureError : std::uint8_t {
  ok,
  missing,    // no header (or empty)
  malformed,  // not t=<digits>,v1=<64 hex>
  stale,      // t older than the window
  future,     // t further ahead than the window
  mismatch,   // no v1 matches any configured secret
  replayed,   // this exact signature was already accepted within the window
  cache_full, // too many live signatures remembered: refused rather than forgotten
};
std::string_view to_string(SignatureError e);

struct SignatureKey {
  std::string name; // identity recorded as the approver ("webhook:<name>" by convention)
  std::string secret;
};

struct VerifyResult {
  SignatureError error = SignatureError::missing;
  std::string signer; // the matching key's name when ok
};

/// Verifies inbound signatures and remembers accepted ones until they leave the window.
/// Thread-safe; memory bounded by `max_remembered`.
class SignatureVerifier {
public:
  explicit SignatureVerifier(std::vector<SignatureKey> keys,
                             std::chrono::seconds window = std::chrono::minutes(5),
                             std::size_t max_remembered = 100000);

  /// Checks, in order: presence, syntax, window, HMAC (constant time, every key and every
  /// v1), replay. Only a valid signature is remembered, so forgeries cannot fill the cache.
  VerifyResult verify(std::string_view header, std::string_view body, std::int64_t now_unix);

  /// A signature runwarden made for an outbound webhook (`sign`'s header): remembered as
  /// if accepted, until it leaves the window. Outbound and inbound calls share the secret
  /// and the format (DESIGN §5), so without this a delivery captured from a receiver's log
  /// or a relay could be replayed to the admin API as a credential (onto another hold's
  /// approve, or a list). Kept apart from accepted signatures (it never makes verify
  /// answer cache_full), at most `max_remembered` of them, the oldest forgotten first.
  void spend(std::string_view header, std::int64_t now_unix);

  std::size_t remembered() const;

private:
  void forget_expired_locked(std::int64_t now_unix);
  std::vector<SignatureKey> keys_;
  std::int64_t window_;
  std::size_t max_;
  mutable std::mutex mutex_;
  std::unordered_set<std::string> seen_;            // accepted v1 values
  std::multimap<std::int64_t, std::string> expiry_; // forget-at -> v1
  // Spent outbound signatures: apart from seen_, so deliveries (which an agent can cause,
  // by holds it abandons) never fill the inbound cache into signature_cache_full. Capped
  // at max_remembered too: past it the oldest is forgotten (the strict bodies and the
  // signed-GET rule still refuse a replayed delivery; this is the second line).
  std::unordered_set<std::string> spent_;
  std::multimap<std::int64_t, std::string> spent_expiry_;
};

} // namespace runwarden::approval
