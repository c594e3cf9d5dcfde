#pragma once
// The certificate authority runwarden uses to intercept TLS: it loads (or creates) a CA and
// mints one short-lived leaf per host, cached in an LRU. DESIGN §1 (certs/), issue 4.

#include <cstddef>
#include <cstdint>
#include <filesystem>
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
  /// Loads a CA cert and key (PEM). Throws std::runtime_error with the reason (missing file,
  /// key does not match the certificate, not a CA, key file readable by group or others).
  static std::shared_ptr<Authority> load(const std::filesystem::path& cert,
                                         const std::filesystem::path& key,
                                         std::size_t cache_capacity = 10000);

  /// Creates DIR/ca.pem and DIR/ca.key (0600): ECDSA P-256, basicConstraints critical
  /// CA:TRUE pathlen:0, keyUsage critical keyCertSign+cRLSign, SKI. Refuses to overwrite.
  /// Throws std::runtime_error on failure (start-up / CLI only).
  static void create(const std::filesystem::path& dir, const std::string& common_name,
                     int days = 3650);

  Authority(const Authority&) = delete;
  Authority& operator=(const Authority&) = delete;
  ~Authority();

  /// The leaf for a canonical host (DNS name or IP literal, IPv6 in brackets) from an LRU
  /// cache; mints on a miss. Thread-safe; minting happens outside the cache lock so one slow
  /// mint never blocks other connections. Returns nullptr and sets *error on failure.
  std::shared_ptr<const Leaf> leaf(std::string_view host, std::string* error);

  /// The CA certificate (owned by the Authority), e.g. to append to a served chain.
  X509* certificate() const;

  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t evictions = 0;
  };
  /// Cache counters since load, for metrics.
  Stats stats() const;

private:
  Authority(X509* ca_cert, EVP_PKEY* ca_key, EVP_PKEY* leaf_key, std::size_t capacity);

  std::shared_ptr<const Leaf> mint(const std::string& host, std::string* error) const;

  using LruList = std::list<std::pair<std::string, std::shared_ptr<const Leaf>>>;

  X509* ca_cert_;
  EVP_PKEY* ca_key_;
  EVP_PKEY* leaf_key_;
  std::size_t capacity_;

  mutable std::mutex mutex_;
  LruList lru_; // front = most recently used
  std::unordered_map<std::string, LruList::iterator> index_;
  Stats stats_;
};

} // namespace runwarden::certs
