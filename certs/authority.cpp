// Loading, creating and minting with OpenSSL 3. Every OpenSSL object is held by a unique_ptr
// with its free function, so every early return cleans up.

#include "certs/authority.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdexcept>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace runwarden::certs {
namespace {

template <typename T, void (*Free)(T*)> struct Deleter {
  void operator()(T* p) const { Free(p); }
};
template <typename T, void (*Free)(T*)> using Ptr = std::unique_ptr<T, Deleter<T, Free>>;

using X509Ptr = Ptr<X509, X509_free>;
using PkeyPtr = Ptr<EVP_PKEY, EVP_PKEY_free>;
using BnPtr = Ptr<BIGNUM, BN_free>;
using NamePtr = Ptr<X509_NAME, X509_NAME_free>;
using ExtPtr = Ptr<X509_EXTENSION, X509_EXTENSION_free>;
using GenNamesPtr = Ptr<GENERAL_NAMES, GENERAL_NAMES_free>;
using GenNamePtr = Ptr<GENERAL_NAME, GENERAL_NAME_free>;
using Asn1OctetPtr = Ptr<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;

constexpr long backdate_seconds = 3600;
constexpr int max_ca_days = 36500;

/// The most recent OpenSSL error as text (and clears the queue), for precise reasons.
std::string openssl_error(std::string_view what) {
  std::string out{what};
  unsigned long code = ERR_get_error();
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    out += ": ";
    out += buf;
  }
  ERR_clear_error();
  return out;
}

/// A positive random serial of 128 bits (RFC 5280 allows up to 20 octets; top bit cleared).
bool set_random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return false;
  }
  bytes[0] &= 0x7f;
  bytes[0] |= 0x40; // never zero, never shorter than 16 octets
  BnPtr bn{BN_bin2bn(bytes, sizeof bytes, nullptr)};
  if (!bn) {
    return false;
  }
  return BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) != nullptr;
}

/// Adds an extension given in OpenSSL's config syntax (only ever constant strings here).
bool add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  ExtPtr ext{X509V3_EXT_conf_nid(nullptr, ctx, nid, value)};
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

/// The digest to sign with: SHA-256, or none for keys that hash internally (Ed25519/Ed448).
const EVP_MD* digest_for(EVP_PKEY* key) {
  int id = EVP_PKEY_get_id(key);
  if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) {
    return nullptr;
  }
  return EVP_sha256();
}

PkeyPtr generate_p256() {
  return PkeyPtr{EVP_EC_gen("P-256")};
}

std::FILE* open_exclusive(const std::filesystem::path& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return nullptr;
  }
  ::fchmod(fd, mode); // the umask must not widen or narrow what we promise
  std::FILE* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
  }
  return f;
}

/// Reads a whole PEM object with `reader`; the reason names the file.
template <typename T, typename Reader>
T* read_pem(const std::filesystem::path& path, Reader reader, const char* what) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    throw std::runtime_error(path.string() + ": cannot open " + what + ": " + std::strerror(errno));
  }
  T* obj = reader(f);
  std::fclose(f);
  if (obj == nullptr) {
    throw std::runtime_error(path.string() + ": " + openssl_error(std::string("no PEM ") + what));
  }
  return obj;
}

/// An ASN.1 time as seconds since the epoch; false if OpenSSL cannot read it.
bool to_time_t(const ASN1_TIME* t, std::time_t* out) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return false;
  }
  *out = ::timegm(&tm);
  return true;
}

/// "2026-11-22T07:13:15Z", for reasons an operator reads.
std::string format_utc(std::time_t t) {
  std::tm tm{};
  char buf[32];
  if (::gmtime_r(&t, &tm) == nullptr ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(t);
  }
  return buf;
}

/// The CA's common name (or its whole subject), to name it in an error.
std::string subject_of(X509* cert) {
  char cn[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) {
    return cn;
  }
  ERR_clear_error();
  return "(no CN)";
}

enum class HostKind : std::uint8_t { dns, ip };

/// Checks that `host` is canonical (what the proxy matched on) and says which SAN it needs.
/// Returns the bare name ("::1" for "[::1]") or an empty string with *error set.
std::string classify_host(std::string_view host, HostKind* kind, std::string* error) {
  if (host.empty()) {
    *error = "empty host";
    return {};
  }
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      *error = "malformed IPv6 literal";
      return {};
    }
    std::string inner{host.substr(1, host.size() - 2)};
    Asn1OctetPtr ip{a2i_IPADDRESS(inner.c_str())};
    if (!ip || inner.find(':') == std::string::npos) {
      ERR_clear_error();
      *error = "invalid IPv6 literal";
      return {};
    }
    *kind = HostKind::ip;
    return inner;
  }
  std::string name{host};
  if (name.find(':') != std::string::npos) {
    *error = "IPv6 literal must be in brackets";
    return {};
  }
  bool all_numeric = true;
  for (char c : name) {
    if ((c < '0' || c > '9') && c != '.') {
      all_numeric = false;
      break;
    }
  }
  if (all_numeric) {
    Asn1OctetPtr ip{a2i_IPADDRESS(name.c_str())};
    if (!ip) {
      ERR_clear_error();
      *error = "invalid IPv4 literal";
      return {};
    }
    *kind = HostKind::ip;
    return name;
  }
  // DNS name: LDH labels, lower case, 1..63 per label, at most 253 in all, no wildcard.
  if (name.size() > 253) {
    *error = "host name longer than 253 characters";
    return {};
  }
  std::size_t label = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0 || label > 63) {
        *error = "host name label empty or longer than 63 characters";
        return {};
      }
      if (name[i - 1] == '-' || name[i - label] == '-') {
        *error = "host name label starts or ends with '-'";
        return {};
      }
      label = 0;
      continue;
    }
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) {
      *error = "host name is not canonical (lower-case letters, digits, '-', '.')";
      return {};
    }
    ++label;
  }
  *kind = HostKind::dns;
  return name;
}

} // namespace

Leaf::~Leaf() {
  X509_free(cert);
  EVP_PKEY_free(key);
}

Authority::Authority(X509* ca_cert, EVP_PKEY* ca_key, EVP_PKEY* leaf_key, std::size_t capacity,
                     Clock clock, std::time_t ca_not_after)
    : ca_cert_(ca_cert), ca_key_(ca_key), leaf_key_(leaf_key),
      capacity_(capacity == 0 ? 1 : capacity), clock_(std::move(clock)),
      ca_not_after_(ca_not_after), stats_{} {}

Authority::~Authority() {
  X509_free(ca_cert_);
  EVP_PKEY_free(ca_key_);
  EVP_PKEY_free(leaf_key_);
}

X509* Authority::certificate() const {
  return ca_cert_;
}

std::time_t Authority::ca_not_after() const {
  return ca_not_after_;
}

Authority::Stats Authority::stats() const {
  std::lock_guard lock{mutex_};
  return stats_;
}

std::shared_ptr<Authority> Authority::load(const std::filesystem::path& cert,
                                           const std::filesystem::path& key,
                                           std::size_t cache_capacity, Clock clock) {
  // An unset path would otherwise read ": cannot open certificate" with nothing to go on.
  if (cert.empty()) {
    throw std::runtime_error("no CA certificate given (tls.ca_cert is not set; "
                             "`runwarden ca init DIR` creates DIR/ca.pem and DIR/ca.key)");
  }
  if (key.empty()) {
    throw std::runtime_error("no CA private key given (tls.ca_key is not set)");
  }
  X509Ptr ca{read_pem<X509>(
      cert, [](std::FILE* f) { return PEM_read_X509(f, nullptr, nullptr, nullptr); },
      "certificate")};

  struct stat st {};
  if (::stat(key.c_str(), &st) != 0) {
    throw std::runtime_error(key.string() + ": cannot open CA key: " + std::strerror(errno));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(key.string() + ": CA key file mode " + mode +
                             " is readable by group or others; chmod 600 it");
  }
  PkeyPtr ca_key{read_pem<EVP_PKEY>(
      key, [](std::FILE* f) { return PEM_read_PrivateKey(f, nullptr, nullptr, nullptr); },
      "private key")};

  // A CA needs basicConstraints CA:TRUE (v1 "self-signed roots" are not accepted) and, if a
  // keyUsage is present, keyCertSign.
  std::uint32_t flags = X509_get_extension_flags(ca.get());
  if ((flags & EXFLAG_CA) == 0 || (flags & EXFLAG_BCONS) == 0) {
    throw std::runtime_error(cert.string() +
                             ": not a CA certificate (basicConstraints CA:TRUE missing)");
  }
  if ((flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN) == 0) {
    throw std::runtime_error(cert.string() + ": CA certificate keyUsage lacks keyCertSign");
  }
  if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    throw std::runtime_error(key.string() + ": private key does not match CA certificate " +
                             cert.string());
  }
  std::time_t not_after = 0;
  if (!to_time_t(X509_get0_notAfter(ca.get()), &not_after)) {
    throw std::runtime_error(cert.string() + ": cannot read the CA certificate's notAfter");
  }
  const std::time_t now = clock ? clock() : std::time(nullptr);
  if (now >= not_after) {
    throw std::runtime_error(cert.string() + ": CA certificate has expired (notAfter " +
                             format_utc(not_after) + ")");
  }
  PkeyPtr leaf_key = generate_p256();
  if (!leaf_key) {
    throw std::runtime_error(openssl_error("cannot generate leaf key"));
  }
  return std::shared_ptr<Authority>(new Authority(ca.release(), ca_key.release(),
                                                  leaf_key.release(), cache_capacity,
                                                  std::move(clock), not_after));
}

void Authority::create(const std::filesystem::path& dir, const std::string& common_name, int days) {
  if (days <= 0 || days > max_ca_days) {
    throw std::runtime_error("CA validity must be 1.." + std::to_string(max_ca_days) +
                             " days, got " + std::to_string(days));
  }
  if (common_name.empty() || common_name.size() > 64) {
    throw std::runtime_error("CA name must be 1..64 characters");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw std::runtime_error(dir.string() + ": cannot create directory: " + ec.message());
  }
  const auto cert_path = dir / "ca.pem";
  const auto key_path = dir / "ca.key";
  for (const auto& p : {cert_path, key_path}) {
    if (std::filesystem::exists(p, ec)) {
      throw std::runtime_error(p.string() + ": already exists; refusing to overwrite");
    }
  }

  PkeyPtr key = generate_p256();
  X509Ptr cert{X509_new()};
  if (!key || !cert) {
    throw std::runtime_error(openssl_error("cannot generate CA key"));
  }
  bool ok = X509_set_version(cert.get(), X509_VERSION_3) == 1 && set_random_serial(cert.get());
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(cert.get()), -backdate_seconds) != nullptr;
  ok = ok && X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) != nullptr;
  X509_NAME* name = X509_get_subject_name(cert.get());
  const auto* cn = reinterpret_cast<const unsigned char*>(common_name.c_str());
  ok = ok &&
       X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                  reinterpret_cast<const unsigned char*>("runwarden"), -1, -1,
                                  0) == 1 &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, cn, -1, -1, 0) == 1;
  ok = ok && X509_set_issuer_name(cert.get(), name) == 1 && X509_set_pubkey(cert.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  ok = ok && add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  ok = ok && add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  ok = ok && add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  ok = ok && X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) {
    throw std::runtime_error(openssl_error("cannot build CA certificate"));
  }

  std::FILE* kf = open_exclusive(key_path, 0600);
  if (kf == nullptr) {
    throw std::runtime_error(key_path.string() + ": cannot create: " + std::strerror(errno));
  }
  bool key_ok = PEM_write_PrivateKey(kf, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  key_ok = (std::fflush(kf) == 0) && key_ok && ::fsync(::fileno(kf)) == 0;
  key_ok = (std::fclose(kf) == 0) && key_ok;
  if (!key_ok) {
    std::filesystem::remove(key_path, ec);
    throw std::runtime_error(openssl_error(key_path.string() + ": cannot write key"));
  }
  std::FILE* cf = open_exclusive(cert_path, 0644);
  bool cert_ok = cf != nullptr && PEM_write_X509(cf, cert.get()) == 1;
  if (cf != nullptr) {
    cert_ok = (std::fclose(cf) == 0) && cert_ok;
  }
  if (!cert_ok) {
    std::filesystem::remove(key_path, ec);
    std::filesystem::remove(cert_path, ec);
    throw std::runtime_error(cert_path.string() + ": cannot write certificate");
  }
}

std::shared_ptr<const Leaf> Authority::leaf(std::string_view host, std::string* error) {
  std::string key{host};
  const std::time_t now = clock_ ? clock_() : std::time(nullptr);
  Minted stale; // a cached leaf due for renewal
  {
    std::lock_guard lock{mutex_};
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      if (now < it->second->minted.renew_at) {
        ++stats_.hits;
        return it->second->minted.leaf;
      }
      stale = it->second->minted;
      ++stats_.renewals;
    }
    ++stats_.misses;
  }
  std::string reason;
  Minted minted = mint(key, now, &reason);
  if (!minted.leaf) {
    if (stale.leaf && now < stale.not_after) {
      return stale.leaf; // still valid: serve it, and try again on the next hit
    }
    if (error != nullptr) {
      *error = reason;
    }
    return nullptr;
  }
  std::lock_guard lock{mutex_};
  auto it = index_.find(key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    if (now < it->second->minted.renew_at) {
      // Another thread minted or renewed the same host meanwhile: one certificate per host.
      return it->second->minted.leaf;
    }
    it->second->minted = minted;
    return minted.leaf;
  }
  lru_.push_front(Entry{key, minted});
  index_.emplace(std::move(key), lru_.begin());
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().host);
    lru_.pop_back();
    ++stats_.evictions;
  }
  return minted.leaf;
}

Authority::Minted Authority::mint(const std::string& host, std::time_t now,
                                  std::string* error) const {
  HostKind kind = HostKind::dns;
  std::string name = classify_host(host, &kind, error);
  if (name.empty()) {
    return {};
  }
  if (now >= ca_not_after_) {
    // Every leaf would be expired on arrival: say why interception stopped.
    *error = "CA certificate \"" + subject_of(ca_cert_) + "\" expired at " +
             format_utc(ca_not_after_) + "; cannot mint a certificate for " + host +
             " (replace tls.ca_cert and tls.ca_key, e.g. `runwarden ca init`, and restart)";
    return {};
  }
  X509Ptr cert{X509_new()};
  if (!cert) {
    *error = openssl_error("X509_new");
    return {};
  }
  Minted out;
  // Never outlive the issuer: a leaf past its CA's expiry would not verify anyway.
  const bool cut_by_ca = now + leaf_lifetime_seconds >= ca_not_after_;
  out.not_after = cut_by_ca ? ca_not_after_ : now + leaf_lifetime_seconds;
  // A leaf cut short by the CA is not renewed early: a new one would end at the same time.
  out.renew_at = cut_by_ca ? out.not_after : out.not_after - leaf_renew_before_seconds;
  std::time_t at = now;
  bool ok = X509_set_version(cert.get(), X509_VERSION_3) == 1 && set_random_serial(cert.get());
  ok = ok && X509_time_adj(X509_getm_notBefore(cert.get()), -backdate_seconds, &at) != nullptr;
  at = out.not_after;
  ok = ok && X509_time_adj(X509_getm_notAfter(cert.get()), 0, &at) != nullptr;
  NamePtr subject{X509_NAME_new()};
  ok = ok && subject != nullptr;
  if (ok && host.size() <= 64) { // CN is limited to 64 characters (RFC 5280 ub-common-name)
    ok = X509_NAME_add_entry_by_txt(subject.get(), "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1,
                                    0) == 1;
  }
  ok = ok && X509_set_subject_name(cert.get(), subject.get()) == 1;
  ok = ok && X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert_)) == 1;
  ok = ok && X509_set_pubkey(cert.get(), leaf_key_) == 1;

  // subjectAltName: exactly the one requested name.
  GenNamesPtr sans{GENERAL_NAMES_new()};
  GenNamePtr gen{GENERAL_NAME_new()};
  ok = ok && sans && gen;
  if (ok && kind == HostKind::ip) {
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(name.c_str());
    ok = ip != nullptr;
    if (ok) {
      GENERAL_NAME_set0_value(gen.get(), GEN_IPADD, ip);
    }
  } else if (ok) {
    ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
    ok = dns != nullptr && ASN1_STRING_set(dns, name.data(), static_cast<int>(name.size())) == 1;
    if (ok) {
      GENERAL_NAME_set0_value(gen.get(), GEN_DNS, dns);
    } else {
      ASN1_IA5STRING_free(dns);
    }
  }
  ok = ok && sk_GENERAL_NAME_push(sans.get(), gen.get()) > 0;
  if (ok) {
    (void)gen.release(); // now owned by sans
  }
  ok = ok && X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, sans.get(), 0, 0) == 1;

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca_cert_, cert.get(), nullptr, nullptr, 0);
  ok = ok && add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  ok = ok && add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  ok = ok && add_ext(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
  // AKI by key id; a foreign CA without SKI is identified by issuer name and serial instead.
  const char* aki =
      X509_get0_subject_key_id(ca_cert_) != nullptr ? "keyid:always" : "issuer:always";
  ok = ok && add_ext(cert.get(), &ctx, NID_authority_key_identifier, aki);
  ok = ok && X509_sign(cert.get(), ca_key_, digest_for(ca_key_)) > 0;
  if (!ok) {
    *error = openssl_error("cannot mint certificate for " + host);
    return {};
  }
  if (EVP_PKEY_up_ref(leaf_key_) != 1) {
    *error = openssl_error("EVP_PKEY_up_ref");
    return {};
  }
  auto leaf = std::make_shared<Leaf>();
  leaf->cert = cert.release();
  leaf->key = leaf_key_;
  out.leaf = std::move(leaf);
  return out;
}

} // namespace runwarden::certs
