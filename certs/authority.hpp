#pragma once
// The certificate authority runwarden uses to intercept TLS: it loads (or creates) a CA and
// mints one short-lived leaf per host, cached in an LRU. DESIGN §1 (certs/), issue 4.

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string>
#include <string_view>
#include <unordered_map>

namespace runwarden::certs {

/// Leaf certificate + key for one host, ready for SSL_use_certificate/SSL_use_PrivateKey.
/// Owns one reference to each; the key is shared with the Authority (up-ref'd).
struct Leaf {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;

  Leaf() = default;
  Leaf(const Leaf&) = delete;
  Leaf& operator=(const Leaf&) = delete;
  ~Leaf();
};

/// Holds the CA and mints leaves on demand; one instance is shared by every connection.
class Authority {
public:
  /// Seconds since the epoch. Injectable so tests can move time across a leaf's validity;
  /// empty: std::time.
  using Clock = std::function<std::time_t()>;

  /// How long a minted leaf is valid (it is backdated one hour besides, for clients whose
  /// clock runs behind), unless the CA expires first: a leaf never outlives its issuer.
  static constexpr std::time_t leaf_lifetime_seconds = 7L * 24 * 3600;
  /// A cache hit re-mints a leaf with less than this left (a quarter of its lifetime, 42 h).
  /// More than a day, so a client whose clock runs up to a day ahead of ours never sees an
  /// expired leaf, and a long-lived connection that handshook just before the renewal
  /// still has more than a day; small enough that a busy host is re-minted only about
  /// every 5 days (one ECDSA signature).
  static constexpr std::time_t leaf_renew_before_seconds = leaf_lifetime_seconds / 4;

  /// Loads a CA cert and key (PEM). Throws std::runtime_error with the reason (a path not
  /// set, named by its config key; missing file, key does not match the certificate, not a
  /// CA, CA expired, key file readable by group or others).
  static std::shared_ptr<Authority> load(const std::filesystem::path& cert,
                                         const std::filesystem::path& key,
                                         std::size_t cache_capacity = 10000, Clock clock = {});

  /// Creates DIR/ca.pem and DIR/ca.key (0600): ECDSA P-256, basicConstraints critical
  /// CA:TRUE pathlen:0, keyUsage critical keyCertSign+cRLSign, SKI. Refuses to overwrite.
  /// Throws std::runtime_error on failure (start-up / CLI only).
  static void create(const std::filesystem::path& dir, const std::string& common_name,
                     int days = 3650);

  Authority(const Authority&) = delete;
  Authority& operator=(const Authority&) = delete;
  ~Authority();

  /// The leaf for a canonical host (DNS name or IP literal, IPv6 in brackets) from an LRU
  /// cache; mints on a miss, and re-mints on a hit when the cached leaf is due for renewal
  /// (`leaf_renew_before_seconds`; a leaf cut short by the CA's own expiry is not renewed,
  /// a new one could not live longer). Thread-safe; minting happens outside the cache lock
  /// so one slow mint never blocks other connections. Returns nullptr and sets *error on
  /// failure, e.g. "CA certificate ... expired at ...; replace tls.ca_cert" once the CA has
  /// expired. A renewal that fails while the cached leaf is still valid serves that leaf.
  std::shared_ptr<const Leaf> leaf(std::string_view host, std::string* error);

  /// When the CA certificate stops being valid (seconds since the epoch), so start-up and
  /// `check` can warn before interception starts failing.
  std::time_t ca_not_after() const;

  /// The CA certificate (owned by the Authority), e.g. to append to a served chain.
  X509* certificate() const;

  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t evictions = 0;
    std::uint64_t renewals = 0; // hits that found the leaf due for renewal (also misses)
  };
  /// Cache counters since load, for metrics.
  Stats stats() const;

private:
  Authority(X509* ca_cert, EVP_PKEY* ca_key, EVP_PKEY* leaf_key, std::size_t capacity, Clock clock,
            std::time_t ca_not_after);

  struct Minted {
    std::shared_ptr<const Leaf> leaf;
    std::time_t not_after = 0;
    std::time_t renew_at = 0; // a hit at or after this re-mints
  };
  Minted mint(const std::string& host, std::time_t now, std::string* error) const;

  struct Entry {
    std::string host;
    Minted minted;
  };
  using LruList = std::list<Entry>;

  X509* ca_cert_;
  EVP_PKEY* ca_key_;
  EVP_PKEY* leaf_key_;
  std::size_t capacity_;
  Clock clock_;
  std::time_t ca_not_after_;

  mutable std::mutex mutex_;
  LruList lru_; // front = most recently used
  std::unordered_map<std::string, LruList::iterator> index_;
  Stats stats_;
};

} // namespace runwarden::certs
