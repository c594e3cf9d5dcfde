// The pre-filter in front of the built-in patterns may only skip texts in which no pattern
// can match. Held to the exhaustive path (every text through the combined RE2) on the same
// corpus: hand-written samples of every pattern in many contexts, then seeded random texts
// built from pattern fragments, separators and digits.

#include "audit/redactor.hpp"

#include <gtest/gtest.h>
#include <random>
#include <string>
#include <vector>

namespace runwarden::audit {
namespace {

const std::vector<std::string>& samples() {
  static const std::vector<std::string> list = {
      "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
      "-----BEGIN PRIVATE KEY-----abc",
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",
      "AKIAABCDEFGHIJKLMNOP",
      "ASIAABCDEFGHIJKLMNOP",
      "ACCAABCDEFGHIJKLMNOP",
      "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
      "gho_abcdefghijklmnopqrstuvwxyz0123456789",
      "github_pat_abcdefghijklmnopqrstuvwxyz",
      "xoxb-123456789012-abcdef",
      "hooks.slack.com/services/T000/B000/XXXX",
      "sk_live_abcdefghijklmnop",
      "rk_test_abcdefghijklmnop",
      "whsec_abcdefghijklmnopqrstuvwxyz",
      "sk-proj-abcdefghijklmnopqrstuvwx",
      "sk-abcdefghijklmnopqrstuvwxyz",
      "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
      "Bearer abcdefgh.ijkl",
      "bEaReR\t\tabcdefghijkl",
      "Basic dXNlcjpwYXNzd29yZA==",
      "password=hunter2",
      "PASSWD: hunter2",
      "Pwd='x1'",
      "client_secret = abc",
      "CLIENT-SECRET:abc",
      "api_key=abc",
      "Api-Key: abc",
      "APIKEY=abc",
      "access_token=abc",
      "Refresh-Token: abc",
      "id_token=\"abc\"",
      "private_key: abc",
      "PRIVATE-KEY=abc",
      "token=abc",
      "\\\"token\\\": \\\"abc\\\"",
      "4111 1111 1111 1111",
      "4111-1111-1111-1111",
      "4111111111111111",
      "5500 0000 0000 0004",
      "378282246310005",
      "6011111111111117",
      "4012888888881881",
  };
  return list;
}

void expect_same(const Redactor& fast, const Redactor& slow, const std::string& text) {
  EXPECT_EQ(fast.redact_text(text), slow.redact_text(text)) << "text: " << text;
  const std::string url = "https://h.example.com/p?q=" + text;
  EXPECT_EQ(fast.redact_url(url), slow.redact_url(url)) << "url: " << url;
  EXPECT_EQ(fast.redact_header("X-Note", text), slow.redact_header("X-Note", text));
  const std::string json = R"({"note":")" + text + R"(","n":1})";
  EXPECT_EQ(fast.redact_body(json, "application/json", 4096).text,
            slow.redact_body(json, "application/json", 4096).text)
      << "json: " << json;
}

TEST(Prefilter, EveryBuiltinSampleIsACandidate) {
  const Redactor slow({}, Redactor::Scan::exhaustive);
  for (const auto& s : samples()) {
    EXPECT_TRUE(Redactor::may_match_builtin(s)) << s;
    EXPECT_TRUE(Redactor::may_match_builtin("x " + s + " y")) << s;
    // The samples are real secrets: the reference path redacts each of them.
    EXPECT_NE(slow.redact_text(" " + s + " "), " " + s + " ") << s;
  }
}

TEST(Prefilter, PlainTextIsSkipped) {
  EXPECT_FALSE(Redactor::may_match_builtin(""));
  EXPECT_FALSE(Redactor::may_match_builtin(
      R"({"id":"ord_100001","customer":{"name":"Ada Lovelace","email":"ada@example.com"},)"
      R"("amount":2000,"currency":"usd","status":"pending","date":"2026-11-20 10:11:12"})"));
  EXPECT_FALSE(Redactor::may_match_builtin("https://api.stripe.com/v1/refunds?expand=charge"));
  EXPECT_FALSE(Redactor::may_match_builtin("123456789012 and 1-2-3-4-5-6-7-8-9-0-1-2"));
  EXPECT_TRUE(Redactor::may_match_builtin("1-2-3-4-5-6-7-8-9-0-1-2-3"));
  EXPECT_FALSE(Redactor::may_match_builtin("1-2-3-4-5-6--7-8-9-0-1-2-3"));
}

TEST(Prefilter, SamplesInContextMatchTheExhaustivePath) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  const std::vector<std::string> contexts = {"", " ", "a", "_", "\"", "=", "\n", "x:", "1", "é"};
  for (const auto& s : samples()) {
    for (const auto& before : contexts) {
      for (const auto& after : contexts) {
        expect_same(fast, slow, before + s + after);
      }
    }
  }
}

// Random texts assembled from trigger fragments (whole and cut short), letters, digits and
// separators: near misses of every pattern, in both case forms.
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> pieces = {"-----BEGIN",
                                                  " PRIVATE KEY-----",
                                                  "-----END EC PRIVATE KEY-----",
                                                  "eyJ",
                                                  "eyJhbGci",
                                                  ".",
                                                  "AKIA",
                                                  "ASIA",
                                                  "AIza",
                                                  "AKI",
                                                  "gh",
                                                  "ghp_",
                                                  "github_pat_",
                                                  "xox",
                                                  "xoxb-",
                                                  "hooks.slack.com/",
                                                  "services/",
                                                  "sk_",
                                                  "rk_",
                                                  "live_",
                                                  "test_",
                                                  "whsec_",
                                                  "sk-",
                                                  "proj-",
                                                  "Bearer",
                                                  "bearer",
                                                  "BEARER",
                                                  "Basic",
                                                  "basic",
                                                  " ",
                                                  "\t",
                                                  "password",
                                                  "PassWord",
                                                  "pwd",
                                                  "secret",
                                                  "Secret",
                                                  "client_",
                                                  "api",
                                                  "api_",
                                                  "API-",
                                                  "key",
                                                  "KEY",
                                                  "token",
                                                  "Token",
                                                  "access_",
                                                  "private_",
                                                  "=",
                                                  ":",
                                                  "\"",
                                                  "'",
                                                  "\\",
                                                  "-",
                                                  "0",
                                                  "1",
                                                  "4111",
                                                  "1111 ",
                                                  "5500-",
                                                  "abcdefghij",
                                                  "ABCDEFGHIJKLMNOP",
                                                  "0123456789",
                                                  "_",
                                                  "&",
                                                  ",",
                                                  "}",
                                                  "{",
                                                  "é",
                                                  "\xff"};
  std::uniform_int_distribution<std::size_t> count(1, 24);
  std::uniform_int_distribution<std::size_t> pick(0, pieces.size() - 1);
  std::string out;
  const std::size_t n = count(rng);
  for (std::size_t k = 0; k < n; ++k) {
    out += pieces[pick(rng)];
  }
  return out;
}

TEST(Prefilter, SeededRandomCorpusMatchesTheExhaustivePath) {
  const Redactor fast;
  const Redactor slow({}, Redactor::Scan::exhaustive);
  const RedactionRules extra{{}, {}, {R"(ord_(\d+))", R"(internal-[a-z]{4})"}};
  const Redactor fast_extra(extra);
  const Redactor slow_extra(extra, Redactor::Scan::exhaustive);
  std::mt19937 rng(20261120);
  std::size_t candidates = 0;
  for (int round = 0; round < 4000; ++round) {
    std::string text = random_text(rng);
    if (round % 3 == 0) {
      text += " ord_42 internal-abcd";
    }
    candidates += Redactor::may_match_builtin(text) ? 1u : 0u;
    EXPECT_EQ(fast.redact_text(text), slow.redact_text(text)) << text;
    EXPECT_EQ(fast_extra.redact_text(text), slow_extra.redact_text(text)) << text;
    const std::string json = R"({"a":")" + text + R"("})";
    EXPECT_EQ(fast_extra.redact_body(json, "application/json", 1 << 16).text,
              slow_extra.redact_body(json, "application/json", 1 << 16).text)
        << json;
  }
  // Both kinds of text occurred: the corpus exercised the skip and the RE2 path.
  EXPECT_GT(candidates, 100u);
  EXPECT_LT(candidates, 4000u);
}

} // namespace
} // namespace runwarden::audit
