// Strict JSON: each way a body could be read two ways has its own error.

#include "policy/strict_json.hpp"

#include <gtest/gtest.h>

namespace runwarden::policy {
namespace {

struct JsonCase {
  std::string text;
  JsonError error;
};

class StrictJson : public ::testing::TestWithParam<JsonCase> {};

TEST_P(StrictJson, Classifies) {
  const JsonCase& c = GetParam();
  StrictJsonResult r = parse_strict_json(c.text, 64);
  EXPECT_EQ(to_code(r.error), to_code(c.error)) << c.text << " -> " << r.detail;
}

std::string nested(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

INSTANTIATE_TEST_SUITE_P(
    Table, StrictJson,
    ::testing::Values(
        JsonCase{R"({"a":1,"b":[1,2,{"c":null}]})", JsonError::ok},
        JsonCase{R"({"a":1,"a":2})", JsonError::duplicate_key},
        JsonCase{R"({"a":1,"\u0061":2})", JsonError::duplicate_key},
        JsonCase{R"({"x":{"a":1},"y":{"a":1}})", JsonError::ok},
        JsonCase{R"([{"a":1},{"a":2}])", JsonError::ok},
        JsonCase{R"({"a":{"b":1,"b":2}})", JsonError::duplicate_key},
        JsonCase{"{\"a\":\"\xFF\"}", JsonError::invalid_utf8},
        JsonCase{"{\"a\":\"\xC0\xAF\"}", JsonError::invalid_utf8},
        JsonCase{"{\"\xED\xA0\x80\":1}", JsonError::invalid_utf8},
        JsonCase{R"({"a":"\ud800"})", JsonError::invalid_utf8},
        JsonCase{R"({"a":"\udc00x"})", JsonError::invalid_utf8},
        JsonCase{R"({"a":"\ud83d\ude00"})", JsonError::ok},
        JsonCase{R"({"amount":1e400})", JsonError::number_out_of_range},
        JsonCase{R"({"amount":-1e400})", JsonError::number_out_of_range},
        JsonCase{R"({"amount":1e300})", JsonError::ok}, JsonCase{nested(64), JsonError::ok},
        JsonCase{nested(65), JsonError::too_deep}, JsonCase{"", JsonError::not_json},
        JsonCase{"{", JsonError::not_json}, JsonCase{R"({"a":1} x)", JsonError::not_json},
        JsonCase{R"({'a':1})", JsonError::not_json}, JsonCase{R"({"a":1,})", JsonError::not_json},
        JsonCase{"{\"a\":\"\x01\"}", JsonError::not_json},
        JsonCase{R"(/*c*/ {"a":1})", JsonError::not_json}));

TEST(StrictJson, KeepsValues) {
  StrictJsonResult r = parse_strict_json(R"({"a":{"b":[1,2.5,"x",true,null]},"n":-3})", 8);
  ASSERT_EQ(r.error, JsonError::ok);
  EXPECT_EQ(r.value["a"]["b"][1], 2.5);
  EXPECT_EQ(r.value["a"]["b"][2], "x");
  EXPECT_EQ(r.value["n"], -3);
  StrictJsonResult dup = parse_strict_json(R"({"k":1,"k":1})", 8);
  EXPECT_NE(dup.detail.find("\"k\""), std::string::npos);
}

TEST(StrictJson, PrunedParseValidatesEverythingButKeepsOnlyWantedPaths) {
  JsonWant want;
  want.add({"amount"});
  want.add({"items", "1", "sku"});
  StrictJsonResult r = parse_strict_json(
      R"({"amount":12,"memo":"x","items":[{"sku":"a"},{"sku":"b","qty":2}]})", 8, want);
  ASSERT_EQ(r.error, JsonError::ok) << r.detail;
  EXPECT_EQ(r.value["amount"], 12);
  EXPECT_FALSE(r.value.contains("memo"));
  EXPECT_EQ(r.value["items"][1]["sku"], "b");
  EXPECT_FALSE(r.value["items"][1].contains("qty"));
  // Unwanted parts are still checked strictly.
  EXPECT_EQ(parse_strict_json(R"({"amount":1,"memo":{"a":1,"a":2}})", 8, want).error,
            JsonError::duplicate_key);
  EXPECT_EQ(parse_strict_json(R"({"amount":1,"memo":"\udc00"})", 8, want).error,
            JsonError::invalid_utf8);
  EXPECT_EQ(parse_strict_json(R"({"amount":1,"memo":[1e999]})", 8, want).error,
            JsonError::number_out_of_range);
}

TEST(StrictJson, DuplicateDetectedInLargeObjects) {
  std::string doc = "{";
  for (int i = 0; i < 100; ++i) {
    doc += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  }
  std::string ok = doc + "\"last\":0}";
  std::string dup = doc + "\"k\\u00350\":0}"; // "k50" spelled with an escape
  EXPECT_EQ(parse_strict_json(ok, 8).error, JsonError::ok);
  EXPECT_EQ(parse_strict_json(dup, 8).error, JsonError::duplicate_key);
}

TEST(StrictJson, NumbersKeepTheirKind) {
  StrictJsonResult r = parse_strict_json(
      R"([-9223372036854775808,18446744073709551615,1.5,1e2,184467440737095516160])", 8);
  ASSERT_EQ(r.error, JsonError::ok) << r.detail;
  EXPECT_TRUE(r.value[0].is_number_integer());
  EXPECT_TRUE(r.value[1].is_number_unsigned());
  EXPECT_TRUE(r.value[2].is_number_float());
  EXPECT_EQ(r.value[3], 100.0);
  EXPECT_TRUE(r.value[4].is_number_float());
  EXPECT_EQ(parse_strict_json("01", 8).error, JsonError::not_json);
  EXPECT_EQ(parse_strict_json("1.", 8).error, JsonError::not_json);
  EXPECT_EQ(parse_strict_json("-", 8).error, JsonError::not_json);
  EXPECT_EQ(parse_strict_json("\xEF\xBB\xBF{}", 8).error, JsonError::not_json);
  EXPECT_EQ(parse_strict_json("1e-400", 8).error, JsonError::ok);
}

} // namespace
} // namespace runwarden::policy
