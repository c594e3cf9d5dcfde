#include "approval/operator_tokens.hpp"

#include <cstdio>
#include <fstream>
#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

const std::string alice_token = "tok-alice-0123456789";
const std::string bob_token = "tok-bob-abcdef";

std::string file_text() {
  return "# operators\n"
         "\n"
         "alice " +
         sha256_hex(alice_token) + "\n   bob\t" + sha256_hex(bob_token) + "  \n";
}

TEST(OperatorTokens, AuthenticatesKnownTokensToTheirNames) {
  std::vector<std::string> errors;
  const auto tokens = OperatorTokens::parse(file_text(), "tokens.txt", errors);
  ASSERT_TRUE(errors.empty());
  EXPECT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens.authenticate(alice_token), "alice");
  EXPECT_EQ(tokens.authenticate(bob_token), "bob");
  EXPECT_EQ(tokens.authenticate_header("Bearer " + bob_token), "bob");
  EXPECT_EQ(tokens.authenticate_header("bearer " + alice_token), "alice");
}

TEST(OperatorTokens, RefusesWrongMissingAndHashedTokens) {
  std::vector<std::string> errors;
  const auto tokens = OperatorTokens::parse(file_text(), "tokens.txt", errors);
  EXPECT_FALSE(tokens.authenticate("tok-alice-012345678"));
  EXPECT_FALSE(tokens.authenticate(""));
  // Presenting the stored hash itself is not the token.
  EXPECT_FALSE(tokens.authenticate(sha256_hex(alice_token)));
  EXPECT_FALSE(tokens.authenticate_header("Basic " + alice_token));
  EXPECT_FALSE(tokens.authenticate_header("Bearer "));
  EXPECT_FALSE(tokens.authenticate_header(""));
}

TEST(OperatorTokens, MalformedLinesAreErrorsWithFileAndLine) {
  const std::string text = "alice " + sha256_hex("a") +
                           "\n"
                           "bob\n"      // 2: one field
                           "carol zz\n" // 3: not hex
                           "dave " +
                           sha256_hex("d") +
                           " extra\n" // 4: three fields
                           "e/ve " +
                           sha256_hex("e") +
                           "\n" // 5: bad name
                           "frank " +
                           sha256_hex("a") + "\n"; // 6: duplicate hash
  std::vector<std::string> errors;
  OperatorTokens::parse(text, "ops/tokens.txt", errors);
  ASSERT_EQ(errors.size(), 5u);
  EXPECT_EQ(errors[0], "ops/tokens.txt:2: expected `NAME SHA256HEX`, found 1 field(s)");
  EXPECT_EQ(errors[1].rfind("ops/tokens.txt:3: token hash must be 64 hex digits", 0), 0u);
  EXPECT_EQ(errors[2], "ops/tokens.txt:4: expected `NAME SHA256HEX`, found 3 field(s)");
  EXPECT_EQ(errors[3].rfind("ops/tokens.txt:5: operator name", 0), 0u);
  EXPECT_EQ(errors[4].rfind("ops/tokens.txt:6: the same token hash", 0), 0u);
}

TEST(OperatorTokens, LoadThrowsEveryErrorAtStartUp) {
  const std::string path = ::testing::TempDir() + "runwarden_tokens_test.txt";
  {
    std::ofstream out(path);
    out << "alice nothex\nbob\n";
  }
  try {
    OperatorTokens::load(path);
    FAIL() << "expected TokenFileError";
  } catch (const TokenFileError& e) {
    EXPECT_EQ(e.errors().size(), 2u);
    EXPECT_NE(std::string(e.what()).find(path + ":2:"), std::string::npos);
  }
  EXPECT_THROW(OperatorTokens::load(path + ".missing"), TokenFileError);
  std::remove(path.c_str());
}

} // namespace
} // namespace runwarden::approval
