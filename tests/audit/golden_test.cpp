// Golden records: the exact bytes and chain hash of fixed records, pinned before the
// throughput work (issue 3 "Benchmark"). The line format and hash definition must never
// change, so any speed-up that alters a byte of these fails here. Long lines are pinned by
// their SHA-256; one short line is pinned in full.

#include "audit/digest.hpp"
#include "audit/record_builder.hpp"
#include "audit/record_codec.hpp"
#include "test_support.hpp"

#include <array>
#include <gtest/gtest.h>
#include <string>

namespace runwarden::audit {
namespace {

constexpr std::string_view kTs = "2026-11-20T10:11:12.123456Z";

std::string seal_at(std::uint64_t seq, const std::string& members, std::string& hash) {
  return RecordCodec::seal(seq, kTs, members, kGenesisHash, hash);
}

std::string items_body(std::size_t target) {
  std::string body = "{\"items\":[";
  int i = 0;
  while (body.size() < target) {
    if (i > 0) {
      body += ',';
    }
    body += R"({"id":"ord_)" + std::to_string(100000 + i) +
            R"(","customer":{"name":"Ada Lovelace","email":"ada@example.com"},"amount":)" +
            std::to_string(1999 + i) + R"(,"notes":"refund after the outage"})";
    ++i;
  }
  body += "]}";
  return body;
}

Exchange realistic() {
  Exchange ex = testing::sample_exchange(1);
  ex.request.url = "https://api.stripe.com/v1/refunds?expand=charge&api_key=k123&x=%20y";
  ex.request.headers = {{"Host", "api.stripe.com"},
                        {"Authorization", "Bearer sk_live_abcdefghijklmnopqrstuvwx"},
                        {"Content-Type", "application/json"},
                        {"X-Custom", "a"},
                        {"x-custom", "b"},
                        {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}};
  ex.request.body = items_body(1024);
  ex.request.body_bytes = ex.request.body.size();
  ex.response->headers = {{"Content-Type", "application/json; charset=utf-8"},
                          {"Set-Cookie", "__stripe_mid=abcdef; Secure"}};
  ex.response->body = items_body(900);
  ex.response->body_complete = false;
  ex.approval = ApprovalInfo{"ap_9", "alice", 1234};
  ex.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  return ex;
}

// Every value class the redactor and escaper handle, in one record.
Exchange hostile() {
  Exchange ex = testing::sample_exchange(2);
  ex.reason = "ctl \x01\x1f\x7f tab\t nl\n cr\r quote\" bs\\ ls\xe2\x80\xa8 ps\xe2\x80\xa9 "
              "esc\x1b[31m bad\xff\xfe utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 over\xc0\xaf "
              "Bearer abcdefgh12345678";
  ex.request.url = "https://user:pw@h.example.com/p?access_token=zzz&q=1#frag";
  ex.request.headers = {{"Content-Type", "application/json"},
                        {"X-Session-Id", "s1"},
                        {"Accept", "text/\xc3\xa9"},
                        {"X-Note", "token=abc123 AKIAABCDEFGHIJKLMNOP"}};
  ex.request.body = R"({"a":{"b":[{"Client-Secret":"x1"},{"pass\u0077ord":7}]},"card":)"
                    R"("4111 1111 1111 1111","jwt":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",)"
                    R"("k":"ghp_abcdefghijklmnopqrstuvwxyz0123456789","n":null,"t":true,)"
                    R"("xo":"xoxb-123456789012-abc","s":"sk-proj-abcdefghijklmnopqrstuvwx",)"
                    R"("g":"AIzaSyA-abcdefghijklmnopqrstuvwxyz0123456","u":"\u2028é"})";
  ex.request.body_bytes = ex.request.body.size();
  ex.response->headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  ex.response->body = "user=bob&pass%77ord=hunter2&cvv=123&x=1";
  ex.code = "denied_by_runbook";
  return ex;
}

TEST(Golden, ShortRecordLineIsPinnedByteForByte) {
  const RecordBuilder builder({}, 64);
  std::string hash;
  const std::string line =
      seal_at(7, builder.exchange_members(testing::sample_exchange(3), true), hash);
  EXPECT_EQ(
      line,
      "{\"v\":1,\"seq\":7,\"ts\":\"2026-11-20T10:11:12.123456Z\",\"type\":\"exchange\",\"id\":"
      "\"req_3\",\"run\":\"run-1\",\"agent\":\"payments-agent\",\"runbook\":\"payment-api-"
      "latency\",\"runbook_sha256\":"
      "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"action\":\"restart_"
      "payment_workers\",\"class\":\"approval_required\",\"outcome\":\"denied\",\"code\":\"denied_"
      "by_runbook\",\"reason\":\"rule "
      "3\",\"request\":{\"method\":\"POST\",\"url\":\"https://api1.example.com/v1/"
      "items?i=3\",\"headers\":{\"content-type\":\"application/json\",\"accept\":\"*/"
      "*\"},\"body\":\"{\\\"n\\\":3}\",\"body_sha256\":"
      "\"215ddd5567ca2590efd4ea109b4e56cbe591e2676fbf54a9262692c539166da6\",\"truncated\":false,"
      "\"bytes\":7},\"response\":{\"status\":200,\"headers\":{\"content-type\":\"application/"
      "json\"},\"body\":\"{\\\"ok\\\":true}\",\"body_sha256\":"
      "\"4062edaf750fb8074e7e83e0c9028c94e32468a8b6f1614774328ef045150f93\",\"truncated\":false,"
      "\"bytes\":11},\"timing\":{\"total_ms\":1.5,\"upstream_ms\":1.25,\"hold_ms\":0.0},"
      "\"traceparent\":\"\",\"client\":\"127.0.0.1:5555\",\"prev\":"
      "\"0000000000000000000000000000000000000000000000000000000000000000\",\"hash\":"
      "\"54b1f00772b22da1d2c9fdf31f0e38bb94fa0732cac94117a052c830c5a3435e\"}\n");
  EXPECT_EQ(hash, "54b1f00772b22da1d2c9fdf31f0e38bb94fa0732cac94117a052c830c5a3435e");
}

// seal_into appends the line the format defines, at every width of seq (the largest needs
// every byte of the room it reserves) and after bytes already in the buffer (the batch).
TEST(Golden, SealIntoAppendsTheDefinedLineAtEveryWidth) {
  const std::string members = R"("type":"event","event":"x","data":{})";
  const std::string prev(64, 'b');
  for (const std::uint64_t seq : {std::uint64_t{0}, std::uint64_t{9}, std::uint64_t{1234567},
                                  std::uint64_t{18446744073709551615u}}) {
    const std::string unsealed = "{\"v\":1,\"seq\":" + std::to_string(seq) + ",\"ts\":\"" +
                                 std::string(kTs) + "\"," + members + ",\"prev\":\"" + prev + "\"}";
    const std::string hash = RecordCodec::chain_hash(prev, unsealed);
    const std::string line =
        unsealed.substr(0, unsealed.size() - 1) + ",\"hash\":\"" + hash + "\"}\n";
    std::string batch = "earlier\n";
    std::array<char, 64> out_hash{};
    RecordCodec::seal_into(batch, seq, kTs, members, prev, out_hash);
    EXPECT_EQ(batch, "earlier\n" + line) << seq;
    EXPECT_EQ(std::string(out_hash.data(), out_hash.size()), hash) << seq;
    std::string seal_hash;
    EXPECT_EQ(RecordCodec::seal(seq, kTs, members, prev, seal_hash), line) << seq;
    EXPECT_EQ(seal_hash, hash);
  }
}

// seal_in_place writes the same line around members already in a buffer, using exactly
// the room it needs (the largest seq fills the head room to the byte here), and refuses,
// writing nothing, when either room is one byte short.
TEST(Golden, SealInPlaceWritesTheSameLineAroundTheMembers) {
  const std::string members = R"("type":"event","event":"x","data":{"q":"\"}")";
  const std::string prev(64, 'c');
  for (const std::uint64_t seq : {std::uint64_t{0}, std::uint64_t{9}, std::uint64_t{1234567},
                                  std::uint64_t{18446744073709551615u}}) {
    std::string expected_hash;
    const std::string line = RecordCodec::seal(seq, kTs, members, prev, expected_hash);
    const std::size_t head = line.find(members);
    ASSERT_NE(head, std::string::npos);
    const std::size_t tail = line.size() - head - members.size();
    for (const std::size_t spare : {std::size_t{0}, std::size_t{5}}) {
      std::string buffer(spare + head + members.size() + tail + spare, '#');
      buffer.replace(spare + head, members.size(), members);
      std::array<char, 64> hash{};
      const std::string_view sealed =
          RecordCodec::seal_in_place(buffer.data() + spare + head, members.size(), spare + head,
                                     spare + tail, seq, kTs, prev, hash);
      EXPECT_EQ(sealed, line) << seq;
      EXPECT_EQ(sealed.data(), buffer.data() + spare) << seq;
      EXPECT_EQ(std::string(hash.data(), hash.size()), expected_hash) << seq;
      EXPECT_EQ(buffer.substr(0, spare), std::string(spare, '#')) << seq;
      EXPECT_EQ(buffer.substr(spare + line.size()), std::string(spare, '#')) << seq;
    }
    for (const bool short_head : {true, false}) {
      std::string buffer(head + members.size() + tail, '#');
      buffer.replace(head, members.size(), members);
      const std::string before = buffer;
      std::array<char, 64> hash{};
      const std::string_view sealed = RecordCodec::seal_in_place(
          buffer.data() + head, members.size(), short_head ? head - 1 : head,
          short_head ? tail : tail - 1, seq, kTs, prev, hash);
      EXPECT_TRUE(sealed.empty()) << seq;
      EXPECT_EQ(buffer, before) << seq;
    }
  }
}

struct Case {
  const char* name;
  std::string line_sha256;
  std::string hash;
};

void expect_pinned(const Case& c, const std::string& line, const std::string& hash) {
  EXPECT_EQ(sha256_hex(line), c.line_sha256) << c.name << " line: " << line;
  EXPECT_EQ(hash, c.hash) << c.name;
}

TEST(Golden, LongRecordsArePinnedByDigest) {
  const RecordBuilder builder({}, 16 * 1024);
  const RecordBuilder small({}, 300);
  const RecordBuilder extra({{"X-Custom"}, {"notes"}, {R"(ord_(\d+))"}}, 16 * 1024);
  std::string hash;
  std::string line = seal_at(1, builder.exchange_members(realistic(), true), hash);
  expect_pinned({"realistic final",
                 "ca9225defb020f517ce8d9a8678f389ce96899072f42b6d3c6807504a3e46cab",
                 "a94be0acf9f7dc3ba618de32ca917473ae796939917a9736519da2815722d87a"},
                line, hash);
  line = seal_at(2, builder.exchange_members(realistic(), false), hash);
  expect_pinned({"realistic decision",
                 "7bdce88f0a95b2c909ca2c55dbcf8b2ecef328387a24d26b5333531e11b2bb19",
                 "8f0ae7284529bd003a73db8a446ee95f02749236240dfb2fbb2576955968aa02"},
                line, hash);
  line = seal_at(3, small.exchange_members(realistic(), true), hash);
  expect_pinned({"realistic truncated",
                 "c5f48e56520d762ba417f12fb226d4e91e3dbd05b2ef4498289c57f1c4ad6540",
                 "2570b92d395e619b6d64056ad93e2df5b41f84e7d926d7bc56cccdfafb4f6871"},
                line, hash);
  line = seal_at(4, builder.exchange_members(hostile(), true), hash);
  expect_pinned({"hostile", "ed6a85e5ae5b8e3be9ec25f15fc002104415ab09c922bc8e694ff27ef296487d",
                 "1166416e4a4eb4e50f7c3428001856e4f98344bfed349b2913cbabb695ef5262"},
                line, hash);
  line = seal_at(5, extra.exchange_members(realistic(), true), hash);
  expect_pinned({"extra rules", "56dc5cd18c4a42d52f1b2261558bbeaaf9f2ea82af150c11d104bc6f542d2367",
                 "a96da9ac583566105e3e8dce022b29b5ff15fbf640e843004a542cb4369dd666"},
                line, hash);
  line = seal_at(6, extra.exchange_members(hostile(), true), hash);
  expect_pinned({"extra rules hostile",
                 "c9e4a8b1e85bb0b187e86308deb203ab32a8c04303ec421ff1e7936b978d090e",
                 "99b91a714c1acbf998bf48069e762caf5cb9ae1cdb33660ba093ba0451b19419"},
                line, hash);
  const nlohmann::json fields = {{"by", "alice \x01\xff"},
                                 {"credentials", {{"password", "pw"}, {"n", 3}}},
                                 {"list", {"Bearer abcdefgh12345678", 1.5, nullptr, false}}};
  line = seal_at(7, builder.event_members("approval_resolved", fields), hash);
  expect_pinned({"event", "526baa6dd26347b8b2b7e34becd4a73cadc0ffc0eb2d7932c10860361775ad72",
                 "0155f43d2d86f82bad23dc19624b250ff07f81adc3917d4a979f07a691fcc289"},
                line, hash);
}

} // namespace
} // namespace runwarden::audit
