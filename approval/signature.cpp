#include "approval/signature.hpp"

#include "policy/ascii.hpp"

namespace runwarden::approval {

namespace {

using policy::trim_ows;

std::string signed_payload(std::int64_t t, std::string_view body) {
  std::string payload = std::to_string(t);
  payload.push_back('.');
  payload.append(body);
  return payload;
}

struct Parsed {
  std::int64_t t = 0;
  std::vector<Sha256> v1;
};

bool parse_header(std::string_view header, Parsed& out) {
  bool have_t = false;
  std::size_t pos = 0;
  while (pos <= header.size()) {
    std::size_t end = header.find(',', pos);
    if (end == std::string_view::npos) {
      end = header.size();
    }
    const std::string_view item = trim_ows(header.substr(pos, end - pos));
    pos = end + 1;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return false;
    }
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (key == "t") {
      if (have_t || value.empty() || value.size() > 12) {
        return false;
      }
      std::int64_t t = 0;
      for (const char c : value) {
        if (c < '0' || c > '9') {
          return false;
        }
        t = t * 10 + (c - '0');
      }
      out.t = t;
      have_t = true;
    } else if (key == "v1") {
      const auto mac = sha256_from_hex(value);
      if (!mac || out.v1.size() >= 8) {
        return false;
      }
      out.v1.push_back(*mac);
    }
    // Other schemes (v0, v2...) are ignored so senders can add them without breaking us.
  }
  return have_t && !out.v1.empty();
}

} // namespace

std::string sign(std::string_view secret, std::int64_t t, std::string_view body) {
  const Sha256 mac = hmac_sha256(secret, signed_payload(t, body));
  return "t=" + std::to_string(t) + ",v1=" + to_hex(mac.data(), mac.size());
}

std::string_view to_string(SignatureError e) {
  switch (e) {
  case SignatureError::ok:
    return "ok";
  case SignatureError::missing:
    return "signature_missing";
  case SignatureError::malformed:
    return "signature_malformed";
  case SignatureError::stale:
    return "signature_stale";
  case SignatureError::future:
    return "signature_from_future";
  case SignatureError::mismatch:
    return "signature_mismatch";
  case SignatureError::replayed:
    return "signature_replayed";
  case SignatureError::cache_full:
    return "signature_cache_full";
  }
  return "signature_invalid";
}

SignatureVerifier::SignatureVerifier(std::vector<SignatureKey> keys, std::chrono::seconds window,
                                     std::size_t max_remembered)
    : keys_(std::move(keys)), window_(window.count()), max_(max_remembered) {}

VerifyResult SignatureVerifier::verify(std::string_view header, std::string_view body,
                                       std::int64_t now_unix) {
  {
    std::lock_guard lock(mutex_);
    forget_expired_locked(now_unix);
  }
  VerifyResult r;
  header = trim_ows(header);
  if (header.empty()) {
    r.error = SignatureError::missing;
    return r;
  }
  Parsed parsed;
  if (!parse_header(header, parsed)) {
    r.error = SignatureError::malformed;
    return r;
  }
  if (parsed.t < now_unix - window_) {
    r.error = SignatureError::stale;
    return r;
  }
  if (parsed.t > now_unix + window_) {
    r.error = SignatureError::future;
    return r;
  }
  const std::string payload = signed_payload(parsed.t, body);
  const SignatureKey* matched = nullptr;
  const Sha256* matched_mac = nullptr;
  for (const auto& key : keys_) { // every key and every v1: no early exit
    const Sha256 expected = hmac_sha256(key.secret, payload);
    for (const auto& mac : parsed.v1) {
      if (digest_equal(expected, mac) && matched == nullptr) {
        matched = &key;
        matched_mac = &mac;
      }
    }
  }
  if (matched == nullptr) {
    r.error = SignatureError::mismatch;
    return r;
  }
  const std::string seen_key = to_hex(matched_mac->data(), matched_mac->size());
  std::lock_guard lock(mutex_);
  forget_expired_locked(now_unix);
  if (seen_.count(seen_key) != 0 || spent_.count(seen_key) != 0) {
    r.error = SignatureError::replayed;
    return r;
  }
  if (seen_.size() >= max_) {
    r.error = SignatureError::cache_full;
    return r;
  }
  seen_.insert(seen_key);
  // Remember until the signature can no longer pass the window check.
  expiry_.emplace(parsed.t + window_, seen_key);
  r.error = SignatureError::ok;
  r.signer = matched->name;
  return r;
}

void SignatureVerifier::spend(std::string_view header, std::int64_t now_unix) {
  Parsed parsed;
  if (!parse_header(trim_ows(header), parsed)) {
    return; // not one of ours: nothing could verify against it either
  }
  std::lock_guard lock(mutex_);
  forget_expired_locked(now_unix);
  for (const Sha256& mac : parsed.v1) {
    std::string key = to_hex(mac.data(), mac.size());
    if (spent_.insert(key).second) {
      spent_expiry_.emplace(parsed.t + window_, std::move(key));
    }
  }
  while (spent_.size() > max_ && !spent_expiry_.empty()) {
    spent_.erase(spent_expiry_.begin()->second);
    spent_expiry_.erase(spent_expiry_.begin());
  }
}

void SignatureVerifier::forget_expired_locked(std::int64_t now_unix) {
  while (!expiry_.empty() && expiry_.begin()->first < now_unix) {
    seen_.erase(expiry_.begin()->second);
    expiry_.erase(expiry_.begin());
  }
  while (!spent_expiry_.empty() && spent_expiry_.begin()->first < now_unix) {
    spent_.erase(spent_expiry_.begin()->second);
    spent_expiry_.erase(spent_expiry_.begin());
  }
}

std::size_t SignatureVerifier::remembered() const {
  std::lock_guard lock(mutex_);
  return seen_.size() + spent_.size();
}

} // namespace runwarden::approval
