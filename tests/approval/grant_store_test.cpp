#include "approval/grant_store.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

using namespace std::chrono_literals;

TEST(GrantStore, SingleUsePerRunAndDigestWithinTtl) {
  GrantStore store(10s, 100);
  const SteadyTime t0{};
  store.add("run", "dig", "apr_1", "alice", t0);
  store.add("run", "dig", "apr_2", "bob", t0); // two approvals: two passes
  EXPECT_FALSE(store.take("run", "other", t0));
  EXPECT_FALSE(store.take("other", "dig", t0));
  EXPECT_TRUE(store.take("run", "dig", t0 + 9s));
  EXPECT_TRUE(store.take("run", "dig", t0 + 9s));
  EXPECT_FALSE(store.take("run", "dig", t0 + 9s));
}

TEST(GrantStore, ExpiredGrantIsNotHonouredAndIsPurged) {
  GrantStore store(10s, 100);
  const SteadyTime t0{};
  store.add("run", "dig", "apr_1", "alice", t0);
  EXPECT_FALSE(store.take("run", "dig", t0 + 10s));
  store.purge(t0 + 10s);
  EXPECT_EQ(store.size(), 0u);
}

TEST(GrantStore, BoundedByDroppingTheOldest) {
  GrantStore store(10s, 2);
  const SteadyTime t0{};
  store.add("run", "a", "apr_a", "x", t0);
  store.add("run", "b", "apr_b", "x", t0 + 1s);
  store.add("run", "c", "apr_c", "x", t0 + 2s);
  EXPECT_EQ(store.size(), 2u);
  EXPECT_FALSE(store.take("run", "a", t0 + 3s));
  EXPECT_TRUE(store.take("run", "c", t0 + 3s));
}

} // namespace
} // namespace runwarden::approval
