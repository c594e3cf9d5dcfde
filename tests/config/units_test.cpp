#include "config/units.hpp"

#include <gtest/gtest.h>

namespace runwarden::config {
namespace {

using std::chrono::milliseconds;

TEST(Units, DurationsTakeAnIntegerAndOneUnit) {
  std::string why;
  EXPECT_EQ(parse_duration("50ms", &why), milliseconds(50));
  EXPECT_EQ(parse_duration("10s", &why), milliseconds(10'000));
  EXPECT_EQ(parse_duration("15m", &why), milliseconds(900'000));
  EXPECT_EQ(parse_duration("1h", &why), milliseconds(3'600'000));
}

TEST(Units, AmbiguousOrMalformedDurationsAreRefusedWithTheReason) {
  std::string why;
  EXPECT_FALSE(parse_duration("10", &why));
  EXPECT_EQ(why, "invalid duration \"10\": a unit is required: use a whole number followed by ms, "
                 "s, m or h (e.g. 50ms, 10s, 15m, 1h)");
  for (const char* bad : {"1.5s", "10 s", "s", "", "-1s", "10sec", "1d", "10S", "0x10s"}) {
    EXPECT_FALSE(parse_duration(bad, &why)) << bad;
  }
  EXPECT_FALSE(parse_duration("0s", &why));
  EXPECT_EQ(why, "invalid duration \"0s\": must be greater than zero");
  EXPECT_FALSE(parse_duration("99999999999999999999h", &why));
  EXPECT_FALSE(parse_duration("9999999h", &why));
  EXPECT_EQ(why, "invalid duration \"9999999h\": too large (at most 10 years)");
}

TEST(Units, SizesUseBinaryUnitsOnly) {
  std::string why;
  EXPECT_EQ(parse_size("512", &why), 512u);
  EXPECT_EQ(parse_size("512B", &why), 512u);
  EXPECT_EQ(parse_size("16KiB", &why), 16u * 1024);
  EXPECT_EQ(parse_size("1MiB", &why), 1024u * 1024);
  EXPECT_EQ(parse_size("1GiB", &why), 1024u * 1024 * 1024);
  EXPECT_EQ(parse_size("0", &why), 0u);
  EXPECT_FALSE(parse_size("16KB", &why));
  EXPECT_EQ(why, "invalid size \"16KB\": use a whole number of bytes, optionally followed by B, "
                 "KiB, MiB or GiB (e.g. 512, 16KiB, 1MiB); decimal units such as KB or MB are not "
                 "accepted");
  for (const char* bad : {"1MB", "1kib", "1.5MiB", "MiB", "", "-1", "1 MiB", "1TiB"}) {
    EXPECT_FALSE(parse_size(bad, &why)) << bad;
  }
}

TEST(Units, FormatDurationRoundTrips) {
  for (const char* s : {"50ms", "10s", "15m", "1h", "1500ms", "90s"}) {
    std::string why;
    const auto d = parse_duration(s, &why);
    ASSERT_TRUE(d) << s;
    EXPECT_EQ(format_duration(*d), s);
  }
}

} // namespace
} // namespace runwarden::config
