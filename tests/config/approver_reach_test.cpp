// The approvers rule `check` and `serve` share: an entry nobody matches, and an action whose
// holds nobody can decide, are found with where the action is listed.

#include "config/approver_reach.hpp"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::config {
namespace {

std::shared_ptr<const policy::Runbook>
runbook(const std::string& name,
        const std::vector<std::pair<std::string, std::vector<std::string>>>& actions) {
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = name;
  int line = 10;
  for (const auto& [action, approvers] : actions) {
    policy::RunbookAction a;
    a.name = action;
    a.cls = policy::ActionClass::approval_required;
    a.approvers = approvers;
    a.mark = policy::SourceMark{"runbooks/" + name + ".yaml", line++, 7};
    rb->actions.emplace(action, std::move(a));
  }
  return rb;
}

TEST(ApproverReach, UnknownEntriesThenTheUnreachableActionWithItsMark) {
  const std::vector<std::shared_ptr<const policy::Runbook>> runbooks = {
      runbook("payments", {{"restart", {"payments-on-call", "alice"}},
                           {"refund", {"finance", "nobody"}},
                           {"status", {}}}),
      nullptr, // a runbook that failed to load is skipped, not a crash
      runbook("crm", {{"overwrite", {"Sales-Ops"}}})};
  const auto known = [](std::string_view who) {
    return who == "alice" || who == "sales-ops" || who == "webhook:ops.example";
  };
  const auto gaps = unmatched_approvers(runbooks, known);
  ASSERT_EQ(gaps.size(), 6u);
  // payments, actions in name order: refund (both unknown, so unreachable), restart.
  EXPECT_EQ(gaps[0].action, "refund");
  EXPECT_EQ(gaps[0].approver, "finance");
  EXPECT_EQ(gaps[1].approver, "nobody");
  EXPECT_EQ(gaps[2].action, "refund");
  EXPECT_EQ(gaps[2].approver, ""); // unreachable
  EXPECT_EQ(gaps[2].mark.file, "runbooks/payments.yaml");
  EXPECT_EQ(gaps[2].mark.line, 11);
  // restart has alice: only its unknown entry, the action stays reachable.
  EXPECT_EQ(gaps[3].action, "restart");
  EXPECT_EQ(gaps[3].approver, "payments-on-call");
  // Case-sensitive, as the admin API compares: Sales-Ops is not sales-ops.
  EXPECT_EQ(gaps[4].runbook, "crm");
  EXPECT_EQ(gaps[4].approver, "Sales-Ops");
  EXPECT_EQ(gaps[5].approver, "");
  // An action without approvers (any operator may decide) never shows.
  for (const auto& g : gaps) {
    EXPECT_NE(g.action, "status");
  }
  EXPECT_TRUE(unmatched_approvers(runbooks, [](std::string_view) { return true; }).empty());
}

TEST(ApproverReach, WebhookIdentityIsTheUrlsHostAsServeSeesIt) {
  EXPECT_EQ(webhook_identity("https://ops.example/hooks/runwarden"), "webhook:ops.example");
  EXPECT_EQ(webhook_identity("http://ops.example:8080?x=1"), "webhook:ops.example");
  EXPECT_EQ(webhook_identity("https://[::1]:9443/h"), "webhook:::1");
  EXPECT_EQ(webhook_identity("https://Ops.Example"), "webhook:Ops.Example");
  EXPECT_EQ(webhook_identity("https://user:pw@ops.example/"), std::nullopt);
  EXPECT_EQ(webhook_identity("ftp://ops.example/"), std::nullopt);
  EXPECT_EQ(webhook_identity("https:///x"), std::nullopt);
  EXPECT_EQ(webhook_identity("https://[::1/x"), std::nullopt);
}

} // namespace
} // namespace runwarden::config
