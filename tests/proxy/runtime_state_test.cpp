// RuntimeState::config_here: the per-request path's copy of the live config, one per thread,
// refreshed after each swap_config and never confused between two states.

#include "proxy/runtime_state.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <new>
#include <thread>

namespace runwarden::proxy {
namespace {

std::shared_ptr<const config::Config> config_for(std::string agent) {
  auto c = std::make_shared<config::Config>();
  c->agent_id = std::move(agent);
  return c;
}

TEST(RuntimeStateConfigHere, FollowsEverySwapOnEveryThread) {
  RuntimeState state(config_for("first"));
  EXPECT_EQ(state.config_here()->agent_id, "first");
  EXPECT_EQ(state.config_here().get(), state.config().get());
  state.swap_config(config_for("second"));
  EXPECT_EQ(state.config_here()->agent_id, "second") << "this thread kept its stale copy";
  std::string seen_elsewhere;
  std::thread([&] { seen_elsewhere = state.config_here()->agent_id; }).join();
  EXPECT_EQ(seen_elsewhere, "second");
  // A copy taken before a swap keeps its snapshot alive (an exchange in flight).
  const std::shared_ptr<const config::Config> held = state.config_here();
  state.swap_config(config_for("third"));
  EXPECT_EQ(state.config_here()->agent_id, "third");
  EXPECT_EQ(held->agent_id, "second");
}

TEST(RuntimeStateConfigHere, TwoStatesOnOneThreadEachGetTheirOwn) {
  RuntimeState a(config_for("a"));
  RuntimeState b(config_for("b"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.config_here()->agent_id, "a");
    EXPECT_EQ(b.config_here()->agent_id, "b");
  }
  b.swap_config(config_for("b2"));
  EXPECT_EQ(a.config_here()->agent_id, "a");
  EXPECT_EQ(b.config_here()->agent_id, "b2");
}

// A state made where an earlier one lived (same address, same swap count) is not taken for
// it: its config is its own.
TEST(RuntimeStateConfigHere, ALaterStateAtTheSameAddressIsNotTheEarlierOne) {
  alignas(RuntimeState) unsigned char storage[sizeof(RuntimeState)];
  auto* first = new (storage) RuntimeState(config_for("earlier"));
  EXPECT_EQ(first->config_here()->agent_id, "earlier");
  first->~RuntimeState();
  auto* second = new (storage) RuntimeState(config_for("later"));
  ASSERT_EQ(static_cast<void*>(first), static_cast<void*>(second));
  EXPECT_EQ(second->config_here()->agent_id, "later");
  second->~RuntimeState();
}

} // namespace
} // namespace runwarden::proxy
