// Model helpers: globs, host patterns, JSON pointers, class and mode names.

#include "policy/engine.hpp"
#include "policy/model.hpp"

#include <gtest/gtest.h>

namespace runwarden::policy {
namespace {

struct GlobCase {
  const char* pattern;
  const char* text;
  bool match;
};

class PathGlob : public ::testing::TestWithParam<GlobCase> {};

TEST_P(PathGlob, Matches) {
  const GlobCase& c = GetParam();
  std::string err;
  auto g = Glob::compile(c.pattern, Glob::Kind::path, &err);
  ASSERT_TRUE(g) << c.pattern << ": " << err;
  EXPECT_EQ(g->matches(c.text), c.match) << c.pattern << " vs " << c.text;
}

INSTANTIATE_TEST_SUITE_P(Table, PathGlob,
                         ::testing::Values(GlobCase{"/v1/refunds", "/v1/refunds", true},
                                           GlobCase{"/v1/refunds", "/v1/refunds;x", false},
                                           GlobCase{"/v1/refunds", "/v1/refunds/", false},
                                           GlobCase{"/v1/refunds", "/V1/refunds", false},
                                           GlobCase{"/api/v1/query/**", "/api/v1/query", true},
                                           GlobCase{"/api/v1/query/**", "/api/v1/query/", true},
                                           GlobCase{"/api/v1/query/**", "/api/v1/query/a/b", true},
                                           GlobCase{"/api/v1/query/**", "/api/v1/queryx", false},
                                           GlobCase{"/api/v1/query/**", "/api/v1/admin", false},
                                           GlobCase{"/**", "/anything/at/all", true},
                                           GlobCase{"/v1/*/items", "/v1/42/items", true},
                                           GlobCase{"/v1/*/items", "/v1/42/43/items", false},
                                           GlobCase{"/v1/*", "/v1", false},
                                           GlobCase{"/v1/cus_*", "/v1/cus_123", true},
                                           GlobCase{"/v1/cus_*", "/v1/cus_123/x", false},
                                           GlobCase{"/a/**/z", "/a/z", true},
                                           GlobCase{"/a/**/z", "/a/b/c/z", true},
                                           GlobCase{"/a/**/z", "/a/b/c/zz", false},
                                           GlobCase{"/v1/%7euser", "/v1/~user", true},
                                           GlobCase{"/v1/a.b", "/v1/aXb", false}));

TEST(Glob, RejectsBadPathPatterns) {
  std::string err;
  EXPECT_FALSE(Glob::compile("v1/x", Glob::Kind::path, &err));
  EXPECT_FALSE(Glob::compile("/v1/../x", Glob::Kind::path, &err));
  EXPECT_FALSE(Glob::compile("/v1/a**", Glob::Kind::path, &err));
  EXPECT_FALSE(Glob::compile("/v1/%2F", Glob::Kind::path, &err));
  EXPECT_FALSE(err.empty());
}

TEST(Glob, TextKindStarCrossesEverything) {
  auto g = Glob::compile("refund-*", Glob::Kind::text, nullptr);
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->matches("refund-a/b"));
  EXPECT_FALSE(g->matches("xrefund-a"));
  auto lit = Glob::compile("a.b", Glob::Kind::text, nullptr);
  ASSERT_TRUE(lit);
  EXPECT_FALSE(lit->matches("aXb"));
}

TEST(HostPattern, ExactAndWildcard) {
  auto exact = HostPattern::parse("Logs.Internal.", nullptr);
  ASSERT_TRUE(exact);
  EXPECT_EQ(exact->host(), "logs.internal");
  EXPECT_TRUE(exact->matches("logs.internal"));
  EXPECT_FALSE(exact->matches("x.logs.internal"));

  auto wild = HostPattern::parse("*.example.com", nullptr);
  ASSERT_TRUE(wild);
  EXPECT_TRUE(wild->is_wildcard());
  EXPECT_EQ(wild->to_string(), "*.example.com");
  EXPECT_TRUE(wild->matches("a.example.com"));
  EXPECT_TRUE(wild->matches("a.b.example.com"));
  EXPECT_FALSE(wild->matches("example.com"));
  EXPECT_FALSE(wild->matches("badexample.com"));

  std::string err;
  EXPECT_FALSE(HostPattern::parse("a.*.com", &err));
  EXPECT_FALSE(HostPattern::parse("*", &err));
  EXPECT_FALSE(HostPattern::parse("*.10.0.0.1", &err));
  EXPECT_FALSE(HostPattern::parse("127.1", &err));
  EXPECT_FALSE(err.empty());
}

TEST(JsonPointer, ParsesAndResolves) {
  auto doc = nlohmann::json::parse(R"({"a":{"b/c":[10,20],"m~n":1},"":5})");
  auto p = JsonPointer::parse("/a/b~1c/1", nullptr);
  ASSERT_TRUE(p);
  ASSERT_NE(p->resolve(doc), nullptr);
  EXPECT_EQ(*p->resolve(doc), 20);
  EXPECT_EQ(*JsonPointer::parse("/a/m~0n", nullptr)->resolve(doc), 1);
  EXPECT_EQ(*JsonPointer::parse("/", nullptr)->resolve(doc), 5);
  EXPECT_EQ(JsonPointer::parse("", nullptr)->resolve(doc), &doc);
  EXPECT_EQ(JsonPointer::parse("/a/b~1c/01", nullptr)->resolve(doc), nullptr);
  EXPECT_EQ(JsonPointer::parse("/a/b~1c/-", nullptr)->resolve(doc), nullptr);
  EXPECT_EQ(JsonPointer::parse("/a/b~1c/2", nullptr)->resolve(doc), nullptr);
  EXPECT_EQ(JsonPointer::parse("/x/y", nullptr)->resolve(doc), nullptr);
  std::string err;
  EXPECT_FALSE(JsonPointer::parse("a", &err));
  EXPECT_FALSE(JsonPointer::parse("/a~2", &err));
  EXPECT_FALSE(JsonPointer::parse("/a~", &err));
}

TEST(Names, RoundTrip) {
  for (auto c : {ActionClass::read_only, ActionClass::allowed, ActionClass::approval_required,
                 ActionClass::denied}) {
    EXPECT_EQ(parse_action_class(to_string(c)), c);
  }
  EXPECT_FALSE(parse_action_class("Denied"));
  for (auto m : {Mode::normal, Mode::read_only, Mode::paused}) {
    EXPECT_EQ(parse_mode(to_string(m)), m);
  }
  EXPECT_FALSE(parse_mode("off"));
  EXPECT_EQ(to_string(PredicateOp::lte), "lte");
  EXPECT_EQ(to_string(Verdict::hold), "hold");
}

} // namespace
} // namespace runwarden::policy
