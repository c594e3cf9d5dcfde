#include "certs/authority.hpp"

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using runwarden::certs::Authority;
using runwarden::certs::Leaf;

namespace {

/// A fresh directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("runwarden-certs-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

private:
  fs::path path_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

/// Verifies `leaf` against `ca` as a TLS client would: chain, purpose and the exact name;
/// at time `at` when given, else now.
int verify(X509* ca, X509* leaf, const std::string& host, bool ip,
           std::optional<std::time_t> at = std::nullopt) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
  if (ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  }
  if (at) {
    X509_VERIFY_PARAM_set_time(param, *at);
  }
  int ok = X509_verify_cert(ctx);
  int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return err;
}

std::string serial_hex(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out{hex};
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

/// The single SAN of a leaf as (type, text).
std::vector<std::pair<int, std::string>> sans_of(X509* cert) {
  std::vector<std::pair<int, std::string>> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_DNS) {
      out.emplace_back(
          GEN_DNS, std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                               static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName))));
    } else if (g->type == GEN_IPADD) {
      out.emplace_back(GEN_IPADD, std::to_string(ASN1_STRING_length(g->d.iPAddress)) + " bytes");
    } else {
      out.emplace_back(g->type, "");
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

/// Writes a self-signed certificate with or without CA:TRUE, for the refusal tests.
void write_self_signed(const fs::path& cert_path, const fs::path& key_path, bool ca) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("not a ca"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_set_pubkey(cert, key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints,
                                            ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(cert, key, EVP_sha256());
  std::FILE* f = std::fopen(cert_path.c_str(), "w");
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  ::chmod(key_path.c_str(), 0600);
  X509_free(cert);
  EVP_PKEY_free(key);
}

class AuthorityTest : public ::testing::Test {
protected:
  void SetUp() override {
    Authority::create(dir_.path(), "runwarden test CA", 30);
    ca_ = Authority::load(dir_.path() / "ca.pem", dir_.path() / "ca.key", 4);
  }
  TempDir dir_;
  std::shared_ptr<Authority> ca_;
};

} // namespace

TEST_F(AuthorityTest, CreateWritesCaWithProperExtensionsAndPrivateKeyMode) {
  struct stat st {};
  ASSERT_EQ(::stat((dir_.path() / "ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  X509* ca = ca_->certificate();
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca), 1);
  std::uint32_t flags = X509_get_extension_flags(ca);
  EXPECT_TRUE(flags & EXFLAG_CA);
  EXPECT_TRUE(flags & EXFLAG_SS);
  EXPECT_EQ(X509_get_pathlen(ca), 0);
  EXPECT_EQ(X509_get_key_usage(ca), static_cast<std::uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_NE(X509_get0_subject_key_id(ca), nullptr);
  int crit = 0;
  void* bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, nullptr);
  EXPECT_EQ(crit, 1);
  BASIC_CONSTRAINTS_free(static_cast<BASIC_CONSTRAINTS*>(bc));
  void* ku = X509_get_ext_d2i(ca, NID_key_usage, &crit, nullptr);
  EXPECT_EQ(crit, 1);
  ASN1_BIT_STRING_free(static_cast<ASN1_BIT_STRING*>(ku));

  EVP_PKEY* pub = X509_get0_pubkey(ca);
  EXPECT_EQ(EVP_PKEY_get_id(pub), EVP_PKEY_EC);
  char group[64] = {};
  size_t len = 0;
  EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof group, &len);
  EXPECT_STREQ(group, "prime256v1");
  // 30 days requested: expiry between 29 and 31 days from now.
  int pday = 0;
  int psec = 0;
  ASSERT_EQ(ASN1_TIME_diff(&pday, &psec, nullptr, X509_get0_notAfter(ca)), 1);
  EXPECT_GE(pday, 29);
  EXPECT_LE(pday, 30);
}

TEST_F(AuthorityTest, CreateRefusesToOverwrite) {
  std::string err = error_of([&] { Authority::create(dir_.path(), "again", 30); });
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
}

TEST_F(AuthorityTest, CreateRefusesBadValidity) {
  TempDir other;
  EXPECT_NE(error_of([&] { Authority::create(other.path(), "x", 0); }).find("validity"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(other.path() / "ca.key"));
}

TEST(AuthorityLoad, RefusesMissingFile) {
  TempDir dir;
  std::string err =
      error_of([&] { Authority::load(dir.path() / "nope.pem", dir.path() / "nope.key"); });
  EXPECT_NE(err.find("nope.pem"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
}

TEST(AuthorityLoad, RefusesMismatchedKey) {
  TempDir a;
  TempDir b;
  Authority::create(a.path(), "A", 10);
  Authority::create(b.path(), "B", 10);
  std::string err = error_of([&] { Authority::load(a.path() / "ca.pem", b.path() / "ca.key"); });
  EXPECT_NE(err.find("does not match"), std::string::npos) << err;
}

TEST(AuthorityLoad, RefusesNonCaCertificate) {
  TempDir dir;
  write_self_signed(dir.path() / "leaf.pem", dir.path() / "leaf.key", false);
  std::string err =
      error_of([&] { Authority::load(dir.path() / "leaf.pem", dir.path() / "leaf.key"); });
  EXPECT_NE(err.find("not a CA"), std::string::npos) << err;
}

TEST(AuthorityLoad, AcceptsForeignCaWithCaTrue) {
  TempDir dir;
  write_self_signed(dir.path() / "ca.pem", dir.path() / "ca.key", true);
  auto ca = Authority::load(dir.path() / "ca.pem", dir.path() / "ca.key");
  std::string error;
  auto leaf = ca->leaf("api.example.com", &error);
  ASSERT_NE(leaf, nullptr) << error;
  EXPECT_EQ(verify(ca->certificate(), leaf->cert, "api.example.com", false), X509_V_OK);
}

TEST(AuthorityLoad, RefusesKeyReadableByOthers) {
  TempDir dir;
  Authority::create(dir.path(), "CA", 10);
  ::chmod((dir.path() / "ca.key").c_str(), 0644);
  std::string err =
      error_of([&] { Authority::load(dir.path() / "ca.pem", dir.path() / "ca.key"); });
  EXPECT_NE(err.find("0644"), std::string::npos) << err;
}

TEST(AuthorityLoad, RefusesGarbagePem) {
  TempDir dir;
  Authority::create(dir.path(), "CA", 10);
  std::ofstream(dir.path() / "bad.pem") << "not a certificate\n";
  std::string err =
      error_of([&] { Authority::load(dir.path() / "bad.pem", dir.path() / "ca.key"); });
  EXPECT_NE(err.find("no PEM certificate"), std::string::npos) << err;
}

TEST_F(AuthorityTest, LeafVerifiesForExactDnsNameOnly) {
  std::string error;
  auto leaf = ca_->leaf("api.example.com", &error);
  ASSERT_NE(leaf, nullptr) << error;
  EXPECT_EQ(verify(ca_->certificate(), leaf->cert, "api.example.com", false), X509_V_OK);
  EXPECT_EQ(verify(ca_->certificate(), leaf->cert, "other.example.com", false),
            X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(verify(ca_->certificate(), leaf->cert, "x.api.example.com", false),
            X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(X509_check_host(leaf->cert, "api.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(leaf->cert, "example.com", 0, 0, nullptr), 0);

  auto sans = sans_of(leaf->cert);
  ASSERT_EQ(sans.size(), 1u);
  EXPECT_EQ(sans[0].first, GEN_DNS);
  EXPECT_EQ(sans[0].second, "api.example.com");

  // Another CA does not vouch for it.
  TempDir other;
  Authority::create(other.path(), "other", 10);
  auto other_ca = Authority::load(other.path() / "ca.pem", other.path() / "ca.key");
  EXPECT_NE(verify(other_ca->certificate(), leaf->cert, "api.example.com", false), X509_V_OK);
}

TEST_F(AuthorityTest, LeafHasServerExtensionsShortValidityAndSharedKey) {
  std::string error;
  auto leaf = ca_->leaf("tools.test", &error);
  ASSERT_NE(leaf, nullptr) << error;
  X509* c = leaf->cert;
  EXPECT_EQ(X509_check_ca(c), 0);
  EXPECT_EQ(X509_get_key_usage(c), static_cast<std::uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(c), static_cast<std::uint32_t>(XKU_SSL_SERVER));
  ASSERT_NE(X509_get0_authority_key_id(c), nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(c),
                                  X509_get0_subject_key_id(ca_->certificate())),
            0);
  EXPECT_EQ(X509_get_signature_nid(c), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_check_private_key(c, leaf->key), 1);
  int day = 0;
  int sec = 0;
  ASSERT_EQ(ASN1_TIME_diff(&day, &sec, nullptr, X509_get0_notAfter(c)), 1);
  EXPECT_TRUE(day == 6 || day == 7) << day;
  ASSERT_EQ(ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(c), nullptr), 1);
  EXPECT_EQ(day, 0);
  EXPECT_GE(sec, 3600 - 5);
  EXPECT_LE(sec, 3600 + 60);
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, cn, sizeof cn);
  EXPECT_STREQ(cn, "tools.test");

  auto other = ca_->leaf("other.test", &error);
  ASSERT_NE(other, nullptr) << error;
  EXPECT_EQ(other->key, leaf->key); // one leaf key per Authority
}

TEST_F(AuthorityTest, IpLiteralsGetIpSans) {
  std::string error;
  auto v4 = ca_->leaf("127.0.0.1", &error);
  ASSERT_NE(v4, nullptr) << error;
  auto sans = sans_of(v4->cert);
  ASSERT_EQ(sans.size(), 1u);
  EXPECT_EQ(sans[0].first, GEN_IPADD);
  EXPECT_EQ(sans[0].second, "4 bytes");
  EXPECT_EQ(verify(ca_->certificate(), v4->cert, "127.0.0.1", true), X509_V_OK);
  EXPECT_EQ(verify(ca_->certificate(), v4->cert, "127.0.0.2", true),
            X509_V_ERR_IP_ADDRESS_MISMATCH);
  EXPECT_EQ(X509_check_ip_asc(v4->cert, "127.0.0.1", 0), 1);

  auto v6 = ca_->leaf("[::1]", &error);
  ASSERT_NE(v6, nullptr) << error;
  sans = sans_of(v6->cert);
  ASSERT_EQ(sans.size(), 1u);
  EXPECT_EQ(sans[0].first, GEN_IPADD);
  EXPECT_EQ(sans[0].second, "16 bytes");
  EXPECT_EQ(verify(ca_->certificate(), v6->cert, "::1", true), X509_V_OK);
  EXPECT_EQ(X509_check_ip_asc(v6->cert, "::2", 0), 0);
}

TEST_F(AuthorityTest, RejectsNonCanonicalOrWildcardHosts) {
  for (const char* bad : {"", "*.example.com", "Example.com", "a..b", "-a.com", "a.com.", "::1",
                          "[::1", "[zz]", "300.1.1.1", "a b", "a,DNS:evil.com"}) {
    std::string error;
    EXPECT_EQ(ca_->leaf(bad, &error), nullptr) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
  std::string error;
  std::string with_nul("a.com\0b.com", 11);
  EXPECT_EQ(ca_->leaf(with_nul, &error), nullptr);
  EXPECT_EQ(ca_->leaf(std::string(254, 'a'), &error), nullptr);
  // A long name is fine; it goes in the SAN and not the CN (which is capped at 64).
  std::string long_name = std::string(60, 'a') + "." + std::string(60, 'b') + ".example";
  auto leaf = ca_->leaf(long_name, &error);
  ASSERT_NE(leaf, nullptr) << error;
  EXPECT_EQ(verify(ca_->certificate(), leaf->cert, long_name, false), X509_V_OK);
}

TEST_F(AuthorityTest, SerialsAreUniquePositiveAnd128Bits) {
  std::set<std::string> serials;
  for (int i = 0; i < 4; ++i) {
    std::string error;
    auto leaf = ca_->leaf("h" + std::to_string(i) + ".test", &error);
    ASSERT_NE(leaf, nullptr) << error;
    const ASN1_INTEGER* s = X509_get0_serialNumber(leaf->cert);
    EXPECT_EQ(ASN1_STRING_type(s), V_ASN1_INTEGER); // not V_ASN1_NEG_INTEGER
    std::string hex = serial_hex(leaf->cert);
    EXPECT_EQ(hex.size(), 32u) << hex;
    serials.insert(hex);
  }
  serials.insert(serial_hex(ca_->certificate()));
  EXPECT_EQ(serials.size(), 5u);
}

TEST_F(AuthorityTest, CacheHitsMissesAndLruEviction) {
  std::string error;
  auto a = ca_->leaf("a.test", &error);
  auto a2 = ca_->leaf("a.test", &error);
  EXPECT_EQ(a.get(), a2.get());
  auto s = ca_->stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.evictions, 0u);

  ca_->leaf("b.test", &error);
  ca_->leaf("c.test", &error);
  ca_->leaf("d.test", &error);
  ca_->leaf("a.test", &error); // touch a: b is now the least recently used
  ca_->leaf("e.test", &error); // capacity 4: evicts b
  s = ca_->stats();
  EXPECT_EQ(s.misses, 5u);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.evictions, 1u);

  auto a3 = ca_->leaf("a.test", &error);
  EXPECT_EQ(a3.get(), a.get()); // a survived
  EXPECT_EQ(ca_->stats().hits, 3u);
  auto b = ca_->leaf("b.test", &error); // b was evicted: a fresh mint
  s = ca_->stats();
  EXPECT_EQ(s.misses, 6u);
  EXPECT_EQ(s.evictions, 2u); // ... which evicted c
  ASSERT_NE(b, nullptr);

  // An evicted leaf still held by a connection stays valid.
  EXPECT_EQ(verify(ca_->certificate(), a->cert, "a.test", false), X509_V_OK);
}

TEST_F(AuthorityTest, FailedMintIsCountedAndNotCached) {
  std::string error;
  EXPECT_EQ(ca_->leaf("*.bad", &error), nullptr);
  EXPECT_EQ(ca_->leaf("*.bad", &error), nullptr);
  EXPECT_EQ(ca_->stats().misses, 2u);
  EXPECT_EQ(ca_->stats().hits, 0u);
}

TEST(AuthorityConcurrency, ParallelLeafCallsAreSafeAndConsistent) {
  TempDir dir;
  Authority::create(dir.path(), "CA", 10);
  auto ca = Authority::load(dir.path() / "ca.pem", dir.path() / "ca.key", 8);
  constexpr int threads = 6;
  constexpr int iterations = 150;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < iterations; ++i) {
        std::string host = "h" + std::to_string((i * 7 + t) % 12) + ".test";
        std::string error;
        auto leaf = ca->leaf(host, &error);
        if (!leaf || X509_check_host(leaf->cert, host.c_str(), host.size(), 0, nullptr) != 1) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  auto s = ca->stats();
  EXPECT_EQ(s.hits + s.misses, static_cast<std::uint64_t>(threads * iterations));
  EXPECT_GE(s.misses, 12u);
}

namespace {

/// verify() at a given time instead of now.
int verify_at(X509* ca, X509* leaf, const std::string& host, std::time_t at) {
  return verify(ca, leaf, host, false, at);
}

/// A CA valid `days` whose Authority reads the time from `now`.
struct ClockedAuthority {
  TempDir dir;
  std::shared_ptr<std::atomic<std::time_t>> now =
      std::make_shared<std::atomic<std::time_t>>(std::time(nullptr));
  std::shared_ptr<Authority> ca;
  explicit ClockedAuthority(int days) {
    Authority::create(dir.path(), "clocked CA", days);
    ca = Authority::load(dir.path() / "ca.pem", dir.path() / "ca.key", 4,
                         [n = now] { return n->load(); });
  }
  void advance(std::time_t seconds) { now->fetch_add(seconds); }
};

} // namespace

TEST(AuthorityRenewal, AHitReMintsALeafNearItsNotAfter) {
  ClockedAuthority c(365);
  std::string error;
  auto first = c.ca->leaf("a.test", &error);
  ASSERT_NE(first, nullptr) << error;
  c.advance(Authority::leaf_lifetime_seconds - Authority::leaf_renew_before_seconds - 1);
  EXPECT_EQ(c.ca->leaf("a.test", &error).get(), first.get()); // not yet due
  EXPECT_EQ(c.ca->stats().renewals, 0u);

  c.advance(1);
  auto renewed = c.ca->leaf("a.test", &error);
  ASSERT_NE(renewed, nullptr) << error;
  EXPECT_NE(renewed.get(), first.get());
  EXPECT_NE(serial_hex(renewed->cert), serial_hex(first->cert));
  EXPECT_GT(ASN1_TIME_compare(X509_get0_notAfter(renewed->cert), X509_get0_notAfter(first->cert)),
            0);
  const auto s = c.ca->stats();
  EXPECT_EQ(s.renewals, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 2u);                                      // the first mint and the renewal
  EXPECT_EQ(c.ca->leaf("a.test", &error).get(), renewed.get()); // cached again

  // Where the old leaf would have failed, the renewed one verifies.
  const std::time_t later = c.now->load() + Authority::leaf_renew_before_seconds;
  EXPECT_EQ(verify_at(c.ca->certificate(), first->cert, "a.test", later),
            X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_EQ(verify_at(c.ca->certificate(), renewed->cert, "a.test", later), X509_V_OK);
}

TEST(AuthorityRenewal, MonthsOfUptimeNeverServeAnExpiredLeaf) {
  ClockedAuthority c(365);
  std::string error;
  // 120 days in 6-hour steps (480 calls), for two hosts that stay in the cache.
  for (int step = 0; step < 480; ++step) {
    for (const std::string host : {"a.test", "b.test"}) {
      auto leaf = c.ca->leaf(host, &error);
      ASSERT_NE(leaf, nullptr) << error;
      ASSERT_EQ(verify_at(c.ca->certificate(), leaf->cert, host, c.now->load()), X509_V_OK)
          << host << " at step " << step;
    }
    c.advance(6 * 3600);
  }
  // 120 days / (7 days - 42 h) is about 23 mints per host, not one per call.
  const auto s = c.ca->stats();
  EXPECT_GE(s.renewals, 40u);
  EXPECT_LE(s.renewals, 50u);
  EXPECT_EQ(s.evictions, 0u);
}

TEST(AuthorityRenewal, ALeafCutShortByTheCaIsNotReMintedAndAnExpiredCaSaysSo) {
  ClockedAuthority c(1); // the CA expires before a 7-day leaf would
  std::string error;
  auto leaf = c.ca->leaf("a.test", &error);
  ASSERT_NE(leaf, nullptr) << error;
  EXPECT_EQ(
      ASN1_TIME_compare(X509_get0_notAfter(leaf->cert), X509_get0_notAfter(c.ca->certificate())),
      0);
  // Within the renewal window, but a new leaf could not live longer: no pointless re-mint.
  c.advance(20 * 3600);
  EXPECT_EQ(c.ca->leaf("a.test", &error).get(), leaf.get());
  EXPECT_EQ(c.ca->stats().renewals, 0u);

  c.now->store(c.ca->ca_not_after());
  error.clear();
  EXPECT_EQ(c.ca->leaf("a.test", &error), nullptr);
  EXPECT_NE(error.find("CA certificate \"clocked CA\" expired at"), std::string::npos) << error;
  EXPECT_NE(error.find("tls.ca_cert"), std::string::npos) << error;
  error.clear();
  EXPECT_EQ(c.ca->leaf("new.test", &error), nullptr); // a miss says the same
  EXPECT_NE(error.find("expired at"), std::string::npos) << error;

  // Loading a CA that has expired by the clock's time is refused at start-up.
  const std::time_t expired_at = c.ca->ca_not_after();
  const std::string why = error_of([&] {
    Authority::load(c.dir.path() / "ca.pem", c.dir.path() / "ca.key", 4,
                    [expired_at] { return expired_at + 1; });
  });
  EXPECT_NE(why.find("CA certificate has expired (notAfter "), std::string::npos) << why;
}

TEST(AuthorityLoad, AnUnsetPathNamesTheConfigKey) {
  TempDir dir;
  Authority::create(dir.path(), "CA", 10);
  const std::string no_cert = error_of([&] { Authority::load("", dir.path() / "ca.key"); });
  EXPECT_NE(no_cert.find("tls.ca_cert is not set"), std::string::npos) << no_cert;
  const std::string no_key = error_of([&] { Authority::load(dir.path() / "ca.pem", ""); });
  EXPECT_NE(no_key.find("tls.ca_key is not set"), std::string::npos) << no_key;
}
