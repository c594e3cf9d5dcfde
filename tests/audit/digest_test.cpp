// StreamedBodyDigest: a relayed body kept only up to a prefix for its record still gets the
// digest of every byte relayed, whatever the pieces it came in; a body the prefix holds
// whole is left to the audit to hash (no digest here), and the record writes what it is given.

#include "audit/digest.hpp"
#include "audit/record_builder.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

namespace runwarden::audit {
namespace {

std::string pattern_body(std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  }
  return out;
}

/// Feeds `body` in pieces of `piece` bytes; returns what was kept.
std::string feed(StreamedBodyDigest& d, std::string_view body, std::size_t keep,
                 std::size_t piece) {
  std::string kept;
  for (std::size_t at = 0; at < body.size(); at += piece) {
    const auto part = body.substr(at, piece);
    d.add(kept, keep, part.data(), part.size());
  }
  return kept;
}

TEST(StreamedBodyDigest, ABodyThePrefixHoldsIsLeftToTheAudit) {
  const std::string body = pattern_body(1000);
  for (std::size_t piece : {1u, 7u, 1000u}) {
    StreamedBodyDigest d;
    EXPECT_EQ(feed(d, body, 1000, piece), body);
    EXPECT_EQ(d.hex(), "") << piece;
  }
}

TEST(StreamedBodyDigest, ALongerBodyGetsTheDigestOfEveryByteInAnyPieces) {
  const std::size_t keep = 1000;
  for (std::size_t size : {1001u, 4096u, 70000u}) {
    const std::string body = pattern_body(size);
    for (std::size_t piece : {1u, 7u, 999u, 1000u, 1001u, 16384u, 100000u}) {
      StreamedBodyDigest d;
      const std::string kept = feed(d, body, keep, piece);
      EXPECT_EQ(kept, body.substr(0, keep)) << size << "/" << piece;
      EXPECT_EQ(d.hex(), sha256_hex(body)) << size << "/" << piece;
      EXPECT_NE(d.hex(), sha256_hex(kept));
    }
  }
}

TEST(StreamedBodyDigest, ReadMidBodyThenGoesOnAndResetStartsAfresh) {
  const std::string body = pattern_body(5000);
  StreamedBodyDigest d;
  std::string kept;
  d.add(kept, 100, body.data(), 3000);
  EXPECT_EQ(d.hex(), sha256_hex(body.substr(0, 3000))); // what was relayed so far
  d.add(kept, 100, body.data() + 3000, 2000);
  EXPECT_EQ(d.hex(), sha256_hex(body));

  d.reset(); // the next body on the connection: a small one, then a large one
  std::string small_kept;
  d.add(small_kept, 100, body.data(), 50);
  EXPECT_EQ(d.hex(), "");
  d.reset();
  const std::string other = pattern_body(300).replace(0, 3, "xyz");
  EXPECT_EQ(feed(d, other, 100, 64), other.substr(0, 100));
  EXPECT_EQ(d.hex(), sha256_hex(other));
}

TEST(StreamedBodyDigest, TheRecordNamesTheWholeBodysDigestWhenGivenOne) {
  const RecordBuilder builder({}, 64);
  Exchange ex;
  ex.id = "req_1";
  ex.outcome = "forwarded";
  ex.request.method = "PUT";
  ex.request.url = "https://files.example/upload";
  ex.request.body = pattern_body(200);
  ex.request.body_bytes = 200;
  ResponseInfo resp;
  resp.status = 200;
  resp.body = pattern_body(90);
  resp.bytes = 90;
  ex.response = resp;
  auto members = [&] {
    return nlohmann::json::parse("{" + builder.exchange_members(ex, true) + "}");
  };
  auto j = members();
  EXPECT_EQ(j["request"]["body_sha256"], sha256_hex(ex.request.body));
  EXPECT_EQ(j["response"]["body_sha256"], sha256_hex(resp.body));

  ex.request.body_bytes = 1 << 20; // a prefix of a relayed MiB, with that MiB's digest
  ex.request.body_complete = false;
  ex.request.body_sha256 = std::string(64, 'a');
  ex.response->body_sha256 = std::string(64, 'b');
  j = members();
  EXPECT_EQ(j["request"]["body_sha256"], std::string(64, 'a'));
  EXPECT_EQ(j["request"]["truncated"], true);
  EXPECT_EQ(j["response"]["body_sha256"], std::string(64, 'b'));
}

} // namespace
} // namespace runwarden::audit
