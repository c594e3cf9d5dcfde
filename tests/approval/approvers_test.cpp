#include "approval/approvers.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

TEST(Approvers, EmptyListLetsAnyAuthenticatedOperatorDecide) {
  EXPECT_TRUE(may_decide({}, Principal{"alice", {}}));
  EXPECT_TRUE(may_decide({}, Principal{"webhook:chat.example", {}}));
  EXPECT_EQ(describe_approvers({}), "any authenticated operator");
}

TEST(Approvers, NameOrAnyGroupMustBeListed) {
  const std::vector<std::string> approvers = {"payments-on-call", "carol"};
  EXPECT_TRUE(may_decide(approvers, Principal{"alice", {"sre", "payments-on-call"}}));
  EXPECT_TRUE(may_decide(approvers, Principal{"carol", {}}));
  EXPECT_FALSE(may_decide(approvers, Principal{"alice", {"sre"}}));
  EXPECT_FALSE(may_decide(approvers, Principal{"alice", {}}));
  EXPECT_EQ(describe_approvers(approvers), "payments-on-call, carol");
}

TEST(Approvers, ComparisonIsExactAndCaseSensitive) {
  const std::vector<std::string> approvers = {"payments-on-call"};
  EXPECT_FALSE(may_decide(approvers, Principal{"alice", {"Payments-On-Call"}}));
  EXPECT_FALSE(may_decide(approvers, Principal{"alice", {"payments-on-call "}}));
  EXPECT_FALSE(may_decide(approvers, Principal{"alice", {"payments"}}));
  EXPECT_FALSE(may_decide(approvers, Principal{"payments-on-cal", {}}));
  // An empty identity never matches, even against an empty entry.
  EXPECT_FALSE(may_decide({""}, Principal{"", {""}}));
}

TEST(Approvers, NamesShareOneAlphabet) {
  EXPECT_TRUE(valid_principal_name("payments-on-call"));
  EXPECT_TRUE(valid_principal_name("a.b_c@d-1"));
  EXPECT_FALSE(valid_principal_name(""));
  EXPECT_FALSE(valid_principal_name("has space"));
  EXPECT_FALSE(valid_principal_name("a,b"));
  EXPECT_FALSE(valid_principal_name("ops/team"));
  EXPECT_FALSE(valid_principal_name(std::string(129, 'a')));
  EXPECT_TRUE(valid_principal_name(std::string(128, 'a')));
}

} // namespace
} // namespace runwarden::approval
