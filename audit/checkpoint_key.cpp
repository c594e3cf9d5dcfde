#include "audit/checkpoint_key.hpp"

#include "audit/digest.hpp"

#include <cstdio>
#include <fstream>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <vector>

namespace runwarden::audit {
namespace {

std::string read_pem(std::string_view pem_or_path) {
  if (pem_or_path.find("-----BEGIN") != std::string_view::npos) {
    return std::string(pem_or_path);
  }
  std::ifstream in{std::string(pem_or_path), std::ios::binary};
  if (!in) {
    throw std::runtime_error("cannot read key file " + std::string(pem_or_path));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

EVP_PKEY* as_pkey(void* p) {
  return static_cast<EVP_PKEY*>(p);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

} // namespace

CheckpointKey::CheckpointKey(void* pkey) : pkey_(pkey) {
  unsigned char raw[32];
  std::size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(as_pkey(pkey_), raw, &len) == 1) {
    key_id_ = sha256_hex(std::string_view(reinterpret_cast<const char*>(raw), len)).substr(0, 16);
  }
}

CheckpointKey::~CheckpointKey() {
  EVP_PKEY_free(as_pkey(pkey_));
}

std::unique_ptr<CheckpointKey> CheckpointKey::load_private(std::string_view pem_or_path) {
  const std::string pem = read_pem(pem_or_path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    throw std::runtime_error("audit signing key is not an Ed25519 private key in PEM");
  }
  return std::unique_ptr<CheckpointKey>(new CheckpointKey(key));
}

std::unique_ptr<CheckpointKey> CheckpointKey::load_public(std::string_view pem_or_path) {
  const std::string pem = read_pem(pem_or_path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) {
    bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
  }
  if (key == nullptr || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    throw std::runtime_error("audit verification key is not an Ed25519 public key in PEM");
  }
  return std::unique_ptr<CheckpointKey>(new CheckpointKey(key));
}

void CheckpointKey::generate(const std::string& private_path, const std::string& public_path) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) {
    throw std::runtime_error("Ed25519 key generation failed");
  }
  const mode_t old_mask = umask(077);
  FILE* priv = std::fopen(private_path.c_str(), "wx");
  umask(old_mask);
  FILE* pub = priv != nullptr ? std::fopen(public_path.c_str(), "wx") : nullptr;
  const bool ok = priv != nullptr && pub != nullptr &&
                  PEM_write_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr) == 1 &&
                  PEM_write_PUBKEY(pub, key) == 1;
  if (priv != nullptr) {
    std::fclose(priv);
  }
  if (pub != nullptr) {
    std::fclose(pub);
  }
  EVP_PKEY_free(key);
  if (!ok) {
    throw std::runtime_error("cannot write key pair " + private_path + ", " + public_path +
                             " (files must not exist yet)");
  }
}

std::string CheckpointKey::message(std::uint64_t head_seq, std::string_view head_hash) {
  std::string m = "runwarden-audit-checkpoint-v1\n";
  m += std::to_string(head_seq);
  m += '\n';
  m += head_hash;
  m += '\n';
  return m;
}

std::string CheckpointKey::sign(std::uint64_t head_seq, std::string_view head_hash) const {
  const std::string m = message(head_seq, head_hash);
  unsigned char sig[64];
  std::size_t len = sizeof sig;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, as_pkey(pkey_)) == 1 &&
                  EVP_DigestSign(ctx, sig, &len, reinterpret_cast<const unsigned char*>(m.data()),
                                 m.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok ? to_hex(sig, len) : std::string();
}

bool CheckpointKey::verify(std::uint64_t head_seq, std::string_view head_hash,
                           std::string_view sig_hex) const {
  if (sig_hex.size() != 128) {
    return false;
  }
  std::vector<unsigned char> sig(64);
  for (std::size_t i = 0; i < 64; ++i) {
    const int hi = hex_digit(sig_hex[2 * i]);
    const int lo = hex_digit(sig_hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    sig[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  const std::string m = message(head_seq, head_hash);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, as_pkey(pkey_)) == 1 &&
                  EVP_DigestVerify(ctx, sig.data(), sig.size(),
                                   reinterpret_cast<const unsigned char*>(m.data()), m.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

} // namespace runwarden::audit
