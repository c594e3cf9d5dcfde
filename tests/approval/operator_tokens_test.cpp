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
                           " sre extra\n" // 4: four fields
                           "e/ve " +
                           sha256_hex("e") +
                           "\n" // 5: bad name
                           "frank " +
                           sha256_hex("a") + "\n"; // 6: duplicate hash
  std::vector<std::string> errors;
  OperatorTokens::parse(text, "ops/tokens.txt", errors);
  ASSERT_EQ(errors.size(), 5u);
  EXPECT_EQ(errors[0], "ops/tokens.txt:2: expected `NAME SHA256HEX [GROUP,...]`, found 1 field(s)");
  EXPECT_EQ(errors[1].rfind("ops/tokens.txt:3: token hash must be 64 hex digits", 0), 0u);
  EXPECT_EQ(errors[2], "ops/tokens.txt:4: expected `NAME SHA256HEX [GROUP,...]`, found 4 field(s)");
  EXPECT_EQ(errors[3].rfind("ops/tokens.txt:5: operator name", 0), 0u);
  EXPECT_EQ(errors[4], "ops/tokens.txt:6: the same token hash is already listed for \"alice\" "
                       "(line 1)");
}

TEST(OperatorTokens, OptionalThirdFieldGivesGroups) {
  const std::string text = "alice " + sha256_hex(alice_token) +
                           " payments-on-call,sre\n"
                           "bob " +
                           sha256_hex(bob_token) + "\n";
  std::vector<std::string> errors;
  const auto tokens = OperatorTokens::parse(text, "tokens.txt", errors);
  ASSERT_TRUE(errors.empty()) << errors.front();
  const auto alice = tokens.identify(alice_token);
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->groups, (std::vector<std::string>{"payments-on-call", "sre"}));
  const auto bob = tokens.identify_header("Bearer " + bob_token);
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->name, "bob");
  EXPECT_TRUE(bob->groups.empty());
  EXPECT_EQ(tokens.authenticate(alice_token), "alice"); // the name-only form is unchanged
  EXPECT_TRUE(tokens.knows("alice"));
  EXPECT_TRUE(tokens.knows("bob"));
  EXPECT_TRUE(tokens.knows("payments-on-call"));
  EXPECT_TRUE(tokens.knows("sre"));
  EXPECT_FALSE(tokens.knows("payments"));
  EXPECT_FALSE(tokens.knows(""));
  EXPECT_FALSE(tokens.identify("tok-nobody"));
  EXPECT_FALSE(tokens.identify_header("Bearer payments-on-call"));
}

TEST(OperatorTokens, BadGroupsAndDuplicateNamesStopStartUp) {
  const std::string text = "a1 " + sha256_hex("1") +
                           " ok,\n" // 1: empty group after the comma
                           "a2 " +
                           sha256_hex("2") +
                           " ,ok\n" // 2: empty group first
                           "a3 " +
                           sha256_hex("3") +
                           " sre,ops/team\n" // 3: bad character
                           "a4 " +
                           sha256_hex("4") +
                           " sre,sre\n" // 4: repeated group
                           "a5 " +
                           sha256_hex("5") +
                           " sre\n" // 5: fine
                           "a5 " +
                           sha256_hex("6") +
                           " dba\n" // 6: same name again, other token
                           "a7 " +
                           sha256_hex("7") + " " + std::string(129, 'g') + "\n"; // 7: too long
  std::vector<std::string> errors;
  const auto tokens = OperatorTokens::parse(text, "t", errors);
  ASSERT_EQ(errors.size(), 6u);
  EXPECT_EQ(errors[0], "t:1: empty group name in \"ok,\"");
  EXPECT_EQ(errors[1], "t:2: empty group name in \",ok\"");
  EXPECT_EQ(errors[2], "t:3: group name \"ops/team\" must be 1-128 of [A-Za-z0-9._@-]");
  EXPECT_EQ(errors[3], "t:4: group \"sre\" is listed twice");
  EXPECT_EQ(errors[4], "t:6: operator \"a5\" is listed with other groups (line 5); every token "
                       "of one operator carries the same groups");
  EXPECT_EQ(errors[5].rfind("t:7: group name \"ggg", 0), 0u);
  EXPECT_EQ(tokens.size(), 1u);
}

TEST(OperatorTokens, LoadRefusesOneNameWithTwoGroupSets) {
  const std::string path = ::testing::TempDir() + "runwarden_tokens_dup_test.txt";
  {
    std::ofstream out(path);
    out << "alice " << sha256_hex("x") << " sre\nalice " << sha256_hex("y") << "\n";
  }
  try {
    OperatorTokens::load(path);
    FAIL() << "expected TokenFileError";
  } catch (const TokenFileError& e) {
    ASSERT_EQ(e.errors().size(), 1u);
    EXPECT_EQ(e.errors()[0], path + ":2: operator \"alice\" is listed with other groups (line "
                                    "1); every token of one operator carries the same groups");
  }
  std::remove(path.c_str());
}

TEST(OperatorTokens, SeveralTokensForOneOperatorDuringRotation) {
  const std::string text = "alice " + sha256_hex("old") + " sre,payments\n" + "alice " +
                           sha256_hex("new") + " payments,sre\n";
  std::vector<std::string> errors;
  const auto tokens = OperatorTokens::parse(text, "t", errors);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens.authenticate("old"), std::optional<std::string>("alice"));
  EXPECT_EQ(tokens.authenticate("new"), std::optional<std::string>("alice"));
  EXPECT_FALSE(tokens.authenticate("other").has_value());
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

TEST(OperatorTokens, ReplaceWithReachesEveryCopyAndLeavesTheSourceAlone) {
  std::vector<std::string> errors;
  OperatorTokens running = OperatorTokens::parse(
      "alice " + sha256_hex("a") + "\nbob " + sha256_hex("b") + " sre\n", "t", errors);
  const OperatorTokens held = running; // what an authenticator was handed at start-up
  const OperatorTokens fresh =
      OperatorTokens::parse("alice " + sha256_hex("a") + "\n", "t", errors);
  ASSERT_TRUE(errors.empty());
  ASSERT_EQ(held.authenticate("b"), std::optional<std::string>("bob"));

  running.replace_with(fresh); // bob revoked
  EXPECT_FALSE(held.authenticate("b").has_value());
  EXPECT_FALSE(held.knows("sre"));
  EXPECT_EQ(held.authenticate("a"), std::optional<std::string>("alice"));
  EXPECT_EQ(held.size(), 1u);

  // The source is not bound to the running set: changing the running set again leaves it.
  running.replace_with(OperatorTokens());
  EXPECT_EQ(held.size(), 0u);
  EXPECT_FALSE(held.authenticate("a").has_value());
  EXPECT_EQ(fresh.authenticate("a"), std::optional<std::string>("alice"));
}

TEST(OperatorTokens, DefaultConstructedKnowsNobody) {
  const OperatorTokens none;
  EXPECT_EQ(none.size(), 0u);
  EXPECT_FALSE(none.authenticate("anything").has_value());
  EXPECT_FALSE(none.authenticate_header("Bearer anything").has_value());
}

} // namespace
} // namespace runwarden::approval
