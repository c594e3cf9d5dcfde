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

} // namespace
} // namespace runwarden::policy
