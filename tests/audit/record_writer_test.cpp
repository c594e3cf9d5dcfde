// The record members are written through a raw cursor over a per-thread buffer that grows
// on demand and is released after a record larger than 1 MiB. Every piece must land
// exactly (plain strings of every length take a different inline copy), a record that
// grows the buffer mid-member must come out whole, and the records after a release must
// equal those before it.

#include "audit/record_builder.hpp"
#include "test_support.hpp"

#include <cstring>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

namespace runwarden::audit {
namespace {

TEST(RecordWriter, PlainStringsOfEveryLengthAreCopiedExactly) {
  for (std::size_t n = 0; n <= 300; ++n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) {
      s += static_cast<char>('a' + (i * 7 + n) % 26); // every byte differs from its neighbours
    }
    ASSERT_EQ(RecordBuilder::dump(nlohmann::ordered_json(s)), "\"" + s + "\"") << n;
    // The same string as a member next to others: each copy starts where the last ended.
    const nlohmann::ordered_json object = {{"k", s}, {s, n}, {"z", "x"}};
    ASSERT_EQ(RecordBuilder::dump(object), object.dump()) << n;
  }
}

TEST(RecordWriter, GrowthMidRecordAndReleaseKeepEveryByte) {
  const RecordBuilder builder({}, 4u << 20);
  const Exchange small = testing::sample_exchange(5);
  const std::string before = builder.exchange_members(small, true);
  // Sizes around the initial 8 KiB, past it in one member, and past the 1 MiB kept.
  for (const std::size_t size : {std::size_t{100}, std::size_t{8000}, std::size_t{9000},
                                 std::size_t{300000}, std::size_t{1500000}}) {
    Exchange big = testing::sample_exchange(6);
    std::string body;
    for (std::size_t i = 0; body.size() < size; ++i) {
      body += i % 3 == 0 ? "line \"quoted\" \\ " : "plain words and more ";
      if (i % 50 == 0) {
        body += '\n';
      }
    }
    big.request.body = body;
    big.request.body_bytes = body.size();
    big.request.headers = {{"Content-Type", "text/plain"}};
    big.response->body = body;
    big.response->headers = {{"Content-Type", "text/plain"}};
    big.reason = std::string(size / 2, 'r');
    std::string out = "prefix,"; // the writer's members are appended after what is there
    builder.exchange_members(big, true, out);
    ASSERT_EQ(out.substr(0, 7), "prefix,");
    const auto parsed = nlohmann::json::parse("{" + out.substr(7) + "}");
    EXPECT_EQ(parsed["request"]["body"], body) << size;
    EXPECT_EQ(parsed["response"]["body"], body) << size;
    EXPECT_EQ(parsed["reason"], big.reason) << size;
    EXPECT_EQ(parsed["client"], big.client) << size;
    EXPECT_EQ(parsed["timing"]["total_ms"], big.timing.total_ms) << size;
    // After each (including the released buffer), a small record is byte-identical.
    EXPECT_EQ(builder.exchange_members(small, true), before) << size;
    // The writer's slot holds the same members, with its room around them writable.
    const RecordBuilder::Slot slot = builder.exchange_slot(big, true);
    EXPECT_EQ(slot.view(), out.substr(7)) << size;
    std::memset(slot.data - RecordBuilder::kSlotHeadroom, '<', RecordBuilder::kSlotHeadroom);
    std::memset(slot.data + slot.size, '>', RecordBuilder::kSlotTailroom);
    EXPECT_EQ(builder.exchange_slot(small, true).view(), before) << size;
  }
}

} // namespace
} // namespace runwarden::audit
