#include "approval/signature.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

constexpr std::int64_t now = 1'800'000'000;
const std::string body = R"({"by":"alice","reason":"ok"})";

SignatureVerifier verifier(std::size_t max = 1000) {
  return SignatureVerifier({{"chatops", "s3cret"}, {"rotated", "new-secret"}},
                           std::chrono::minutes(5), max);
}

TEST(Signature, SignProducesTheDocumentedShape) {
  const std::string h = sign("s3cret", 1700000000, "{}");
  EXPECT_EQ(h.rfind("t=1700000000,v1=", 0), 0u);
  EXPECT_EQ(h.size(), std::string("t=1700000000,v1=").size() + 64);
  EXPECT_EQ(h.substr(16), to_hex(hmac_sha256("s3cret", "1700000000.{}").data(), 32));
}

TEST(Signature, ValidSignatureNamesTheSigner) {
  auto v = verifier();
  const auto r = v.verify(sign("s3cret", now, body), body, now);
  EXPECT_EQ(r.error, SignatureError::ok);
  EXPECT_EQ(r.signer, "chatops");
  const auto r2 = v.verify(sign("new-secret", now - 10, body), body, now);
  EXPECT_EQ(r2.error, SignatureError::ok);
  EXPECT_EQ(r2.signer, "rotated");
}

TEST(Signature, ForgedWrongSecretOrAlteredBodyIsMismatch) {
  auto v = verifier();
  EXPECT_EQ(v.verify(sign("guess", now, body), body, now).error, SignatureError::mismatch);
  EXPECT_EQ(v.verify(sign("s3cret", now, body), body + " ", now).error, SignatureError::mismatch);
  // Right MAC, wrong timestamp claimed.
  std::string h = sign("s3cret", now, body);
  h.replace(2, 10, std::to_string(now - 1));
  EXPECT_EQ(v.verify(h, body, now).error, SignatureError::mismatch);
  EXPECT_EQ(v.remembered(), 0u); // forgeries are not remembered
}

TEST(Signature, StaleAndFutureAreRefusedAtTheWindowEdges) {
  auto v = verifier();
  EXPECT_EQ(v.verify(sign("s3cret", now - 301, body), body, now).error, SignatureError::stale);
  EXPECT_EQ(v.verify(sign("s3cret", now + 301, body), body, now).error, SignatureError::future);
  EXPECT_EQ(v.verify(sign("s3cret", now - 300, body), body, now).error, SignatureError::ok);
  EXPECT_EQ(v.verify(sign("s3cret", now + 300, body), body, now).error, SignatureError::ok);
}

TEST(Signature, ReplayIsRefusedWithinTheWindow) {
  auto v = verifier();
  const std::string h = sign("s3cret", now, body);
  EXPECT_EQ(v.verify(h, body, now).error, SignatureError::ok);
  EXPECT_EQ(v.verify(h, body, now + 1).error, SignatureError::replayed);
  EXPECT_EQ(v.verify(h + ",v1=" + std::string(64, '0'), body, now + 2).error,
            SignatureError::replayed);
  EXPECT_EQ(v.verify(h, body, now + 300).error, SignatureError::replayed);
  // After the window it is stale, and the cache has forgotten it.
  EXPECT_EQ(v.verify(h, body, now + 301).error, SignatureError::stale);
  EXPECT_EQ(v.remembered(), 0u);
}

// An outbound webhook's signature (the same secret and format as an inbound call's) is spent
// when made: replayed to the admin API it is refused, and forgotten after the window.
TEST(Signature, SpentOutboundSignatureIsRefusedAsReplayed) {
  auto v = verifier();
  const std::string h = sign("s3cret", now, body);
  v.spend(h, now);
  EXPECT_EQ(v.remembered(), 1u);
  EXPECT_EQ(v.verify(h, body, now + 1).error, SignatureError::replayed);
  v.spend("garbage", now); // not a signature: nothing remembered
  EXPECT_EQ(v.remembered(), 1u);
  EXPECT_EQ(v.verify(h, body, now + 301).error, SignatureError::stale);
  EXPECT_EQ(v.remembered(), 0u);
  // Another signature of the same secret still works once.
  const std::string fresh = sign("s3cret", now + 2, body);
  EXPECT_EQ(v.verify(fresh, body, now + 2).error, SignatureError::ok);
}

// Deliveries an agent can cause (holds it abandons) must not fill the inbound cache: spent
// signatures have their own cap, the oldest forgotten first.
TEST(Signature, SpentSignaturesNeverMakeTheInboundCacheFull) {
  auto v = verifier(2);
  for (int i = 0; i < 5; ++i) {
    v.spend(sign("s3cret", now + i, "delivery " + std::to_string(i)), now);
  }
  EXPECT_EQ(v.remembered(), 2u); // the two newest
  EXPECT_EQ(v.verify(sign("s3cret", now + 4, "delivery 4"), "delivery 4", now + 4).error,
            SignatureError::replayed);
  EXPECT_EQ(v.verify(sign("s3cret", now, body), body, now).error, SignatureError::ok);
}

TEST(Signature, MissingAndMalformed) {
  auto v = verifier();
  const std::string mac(64, 'a');
  EXPECT_EQ(v.verify("", body, now).error, SignatureError::missing);
  EXPECT_EQ(v.verify("   ", body, now).error, SignatureError::missing);
  for (const std::string& bad :
       {std::string("garbage"), "t=,v1=" + mac, "t=12x,v1=" + mac, "v1=" + mac,
        "t=" + std::to_string(now), "t=" + std::to_string(now) + ",v1=abc",
        "t=" + std::to_string(now) + ",v1=" + std::string(64, 'g'), "t=1,t=2,v1=" + mac,
        "t=-5,v1=" + mac, "t=" + std::to_string(now) + ",,v1=" + mac,
        "t=1234567890123,v1=" + mac}) {
    EXPECT_EQ(v.verify(bad, body, now).error, SignatureError::malformed) << bad;
  }
}

TEST(Signature, AcceptsAnyMatchingV1AndIgnoresOtherSchemes) {
  auto v = verifier();
  const std::string good = sign("s3cret", now, body);
  const std::string h = "t=" + std::to_string(now) + ", v0=old, v1=" + std::string(64, '0') +
                        ", v1=" + good.substr(good.find("v1=") + 3);
  EXPECT_EQ(v.verify(h, body, now).error, SignatureError::ok);
}

TEST(Signature, FullCacheRefusesRatherThanForgets) {
  auto v = verifier(2);
  EXPECT_EQ(v.verify(sign("s3cret", now, "a"), "a", now).error, SignatureError::ok);
  EXPECT_EQ(v.verify(sign("s3cret", now, "b"), "b", now).error, SignatureError::ok);
  EXPECT_EQ(v.verify(sign("s3cret", now, "c"), "c", now).error, SignatureError::cache_full);
  EXPECT_EQ(v.verify(sign("s3cret", now + 301, "c"), "c", now + 301).error, SignatureError::ok);
}

} // namespace
} // namespace runwarden::approval
