// AuditLog::set_redaction (a reload): records built after it use the new rules, built-ins
// included; rules that do not build change nothing; swaps while many threads append leave
// every record built whole by one rule set and the chain verifiable.

#include "audit/audit_log.hpp"
#include "audit/redactor.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <atomic>
#include <gtest/gtest.h>
#include <stdexcept>
#include <thread>

namespace runwarden::audit {
namespace {

using testing::Completions;
using testing::TempDir;

// No built-in rule matches these: only the rules added below do.
constexpr const char* kCanary = "acme_live_Zq8Xw3Rt5Yp0";
constexpr const char* kKeyCanary = "Zq8Xw3Rt5Yp-ref";
const RedactionRules kRules{{"x-acme-handle"}, {"acme_ref"}, {"acme_live_[A-Za-z0-9]{8,}"}};

std::size_t count(const std::string& text, std::string_view what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

/// The canary in a header value, the URL's query and the JSON body, next to an
/// Authorization header, a configured header and a JSON key's value.
Exchange canary_exchange(int i) {
  Exchange ex = testing::sample_exchange(i);
  ex.request.url = std::string("https://api.example.com/v1/items?note=") + kCanary;
  ex.request.headers = {{"Content-Type", "application/json"},
                        {"Authorization", "Bearer abcdefghijklmnop"},
                        {"X-Acme-Handle", "plain-value-0001"},
                        {"X-Note", kCanary}};
  ex.request.body = std::string(R"({"note":")") + kCanary + R"(","acme_ref":")" + kKeyCanary +
                    R"(","n":)" + std::to_string(i) + "}";
  ex.request.body_bytes = ex.request.body.size();
  return ex;
}

TEST(LiveRedaction, RecordsBuiltAfterTheSwapUseTheNewRulesAndTheBuiltIns) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  {
    auto log = AuditLog::open(o);
    Completions c;
    log->record(canary_exchange(1), true, c.make());
    ASSERT_TRUE(c.wait(1));
    ASSERT_TRUE(log->set_redaction(kRules));
    log->record(canary_exchange(2), true, c.make());
    log->event("note", {{"text", std::string("saw ") + kCanary}}, c.make());
    ASSERT_TRUE(c.wait(3));
    EXPECT_EQ(c.errors(), 0);
  }
  const auto lines = testing::split_lines(testing::read_all(o.path));
  ASSERT_EQ(lines.size(), 3u);
  // Before: only the built-ins (the bearer token).
  EXPECT_EQ(count(lines[0], kCanary), 3u) << lines[0];
  EXPECT_EQ(count(lines[0], kKeyCanary), 1u) << lines[0];
  EXPECT_EQ(count(lines[0], "plain-value-0001"), 1u) << lines[0];
  EXPECT_EQ(count(lines[0], "abcdefghijklmnop"), 0u) << lines[0];
  // After: every place the new rules reach, and still the built-ins.
  for (std::size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(count(lines[i], kCanary), 0u) << lines[i];
    EXPECT_EQ(count(lines[i], kKeyCanary), 0u) << lines[i];
    EXPECT_EQ(count(lines[i], "plain-value-0001"), 0u) << lines[i];
    EXPECT_EQ(count(lines[i], "abcdefghijklmnop"), 0u) << lines[i];
    EXPECT_GT(count(lines[i], "[REDACTED:"), 0u) << lines[i];
  }
  EXPECT_TRUE(Verifier::verify({o.path}, {}).ok);
}

TEST(LiveRedaction, RulesThatDoNotBuildChangeNothing) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  o.redact_patterns = kRules.patterns;
  {
    auto log = AuditLog::open(o);
    EXPECT_THROW(log->set_redaction(RedactionRules{{}, {}, {"acme_("}}), std::invalid_argument);
    Completions c;
    log->record(canary_exchange(1), true, c.make());
    ASSERT_TRUE(c.wait(1));
  }
  const std::string text = testing::read_all(o.path);
  EXPECT_EQ(count(text, kCanary), 0u) << text;
}

// Four threads append while a fifth swaps between rules that hide the canary and rules that
// do not. Each record is built by one rule set (the canary appears in all three of its
// places or in none), every record is there once and the chain verifies; the record built
// after the last swap uses its rules. How the appends interleave with the swaps is up to the
// scheduler, so no count of hidden records is asserted. Under ASan this is the swap's memory
// check.
TEST(LiveRedaction, SwapsWhileManyThreadsAppend) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  constexpr int kThreads = 4;
  constexpr int kEach = 300;
  Completions c;
  {
    auto log = AuditLog::open(o);
    std::atomic<bool> done{false};
    std::thread swapper([&] {
      for (int i = 0; i < 100000 && !done.load(); ++i) {
        EXPECT_TRUE(log->set_redaction(i % 2 == 0 ? kRules : RedactionRules{}));
        std::this_thread::yield();
      }
    });
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          log->record(canary_exchange(t * 1000 + i), true, c.make());
        }
      });
    }
    for (auto& th : threads) {
      th.join();
    }
    done.store(true);
    swapper.join();
    ASSERT_TRUE(log->set_redaction(kRules));
    log->record(canary_exchange(99999), true, c.make());
    ASSERT_TRUE(c.wait(kThreads * kEach + 1));
  }
  EXPECT_EQ(c.errors(), 0);
  const auto lines = testing::split_lines(testing::read_all(o.path));
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kEach + 1));
  for (const auto& line : lines) {
    const std::size_t n = count(line, kCanary);
    EXPECT_TRUE(n == 0 || n == 3) << line;
  }
  EXPECT_EQ(count(lines.back(), kCanary), 0u) << lines.back();
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.kind << ": " << report.detail;
}

} // namespace
} // namespace runwarden::audit
