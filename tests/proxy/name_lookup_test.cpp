// NameLookup: answers come back on the caller's executor, failures as Asio's resolver
// reports them, and nothing at all after stop(); callers of one name share one lookup, so a
// name that hangs holds one worker and other names still resolve. The hanging lookups here
// come from a stand-in for getaddrinfo that holds a name until the test lets it go (the
// netns integration test has a real name server that never answers).

#include "proxy/name_lookup.hpp"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace runwarden::proxy {
namespace {

namespace net = boost::asio;

TEST(NameLookup, ResolvesOnTheCallersExecutor) {
  net::io_context ioc;
  NameLookup lookups(2);
  auto guard = net::make_work_guard(ioc); // until the answer is in
  bool called = false;
  std::thread::id ran_on;
  lookups.async_resolve("127.0.0.1", "8080", ioc.get_executor(),
                        [&](boost::system::error_code ec, NameLookup::Results results) {
                          called = true;
                          guard.reset();
                          ran_on = std::this_thread::get_id();
                          ASSERT_FALSE(ec) << ec.message();
                          ASSERT_FALSE(results.empty());
                          EXPECT_EQ(
                              results.begin()->endpoint(),
                              net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 8080));
                        });
  ioc.run_for(std::chrono::seconds(10));
  EXPECT_TRUE(called);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(NameLookup, AFailedLookupIsAnError) {
  net::io_context ioc;
  NameLookup lookups(1);
  auto guard = net::make_work_guard(ioc);
  bool called = false;
  // Not a valid host name or address; the C library refuses it without asking a server.
  lookups.async_resolve("bad name..", "80", ioc.get_executor(),
                        [&](boost::system::error_code ec, const NameLookup::Results& results) {
                          called = true;
                          guard.reset();
                          EXPECT_TRUE(ec);
                          EXPECT_TRUE(results.empty());
                        });
  ioc.run_for(std::chrono::seconds(10));
  EXPECT_TRUE(called);
}

TEST(NameLookup, NothingIsPostedAfterStop) {
  net::io_context ioc;
  NameLookup lookups(1);
  lookups.stop();
  bool called = false;
  lookups.async_resolve(
      "127.0.0.1", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { called = true; });
  ioc.run_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(called);
}

/// getaddrinfo, except that a name starting with "hung" ("hung.test", "hung2.test") waits
/// until release() (or 20 s) and then answers as 127.0.0.1 would; counts calls per name.
class HeldResolver : public std::enable_shared_from_this<HeldResolver> {
public:
  /// The stand-in owns this object: a detached worker may still be inside it after the test.
  NameLookup::Resolve resolve() {
    return [self = shared_from_this()](const char* host, const char* service, const addrinfo* hints,
                                       addrinfo** out) {
      return self->call(host, service, hints, out);
    };
  }
  int call(const char* host, const char* service, const addrinfo* hints, addrinfo** out) {
    const std::string name(host);
    {
      std::unique_lock lock(mu_);
      ++calls_[name];
      cv_.notify_all();
      if (name.rfind("hung", 0) == 0) {
        cv_.wait_for(lock, std::chrono::seconds(20), [this] { return released_; });
        host = "127.0.0.1";
      }
    }
    return ::getaddrinfo(host, service, hints, out);
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  int calls(const std::string& name) {
    std::lock_guard lock(mu_);
    return calls_[name];
  }
  /// Waits (bounded) until `name` was asked for at least once.
  bool wait_for_call(const std::string& name) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return calls_[name] > 0; });
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> calls_;
  bool released_ = false;
};

/// Asks for 127.0.0.1 and runs ioc until the answer is in (bounded: 10 s).
bool answered_soon(NameLookup& lookups, net::io_context& ioc) {
  bool answered = false;
  lookups.async_resolve("127.0.0.1", "80", ioc.get_executor(),
                        [&](boost::system::error_code ec, const NameLookup::Results&) {
                          EXPECT_FALSE(ec) << ec.message();
                          answered = true;
                        });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!answered && std::chrono::steady_clock::now() < until) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  return answered;
}

TEST(NameLookup, CallersOfOneNameShareOneLookupAndOtherNamesGoOn) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(2, held.resolve()); // two workers: enough for two separate hung lookups
  auto guard = net::make_work_guard(ioc);
  constexpr int kCallers = 5;
  int hung_answers = 0;
  for (int i = 0; i < kCallers; ++i) {
    lookups.async_resolve("hung.test", "80", ioc.get_executor(),
                          [&](boost::system::error_code ec, const NameLookup::Results& results) {
                            EXPECT_FALSE(ec) << ec.message();
                            EXPECT_FALSE(results.empty());
                            ++hung_answers;
                          });
  }
  ASSERT_TRUE(held.wait_for_call("hung.test"));
  EXPECT_TRUE(answered_soon(lookups, ioc)); // while hung.test is still held
  EXPECT_EQ(hung_answers, 0);
  held.release();
  const auto until_all = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (hung_answers < kCallers && std::chrono::steady_clock::now() < until_all) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(hung_answers, kCallers);     // every caller answered ...
  EXPECT_EQ(held.calls("hung.test"), 1); // ... by one lookup
}

// Different names that hang each hold a worker: more start while lookups queue with none
// free, up to the cap, so other names still resolve; at the cap a lookup waits for one.
TEST(NameLookup, WorkersGrowForDifferentHungNamesUpToTheCap) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(1, held.resolve(), 4); // one kept, at most four at once
  auto guard = net::make_work_guard(ioc);
  int hung_answers = 0;
  const std::vector<std::string> hung{"hung1.test", "hung2.test", "hung3.test"};
  for (const std::string& name : hung) {
    lookups.async_resolve(name, "80", ioc.get_executor(),
                          [&](boost::system::error_code ec, const NameLookup::Results&) {
                            EXPECT_FALSE(ec) << ec.message();
                            ++hung_answers;
                          });
  }
  for (const std::string& name : hung) {
    ASSERT_TRUE(held.wait_for_call(name)) << name; // three held at once: two workers added
  }
  EXPECT_TRUE(answered_soon(lookups, ioc)); // the fourth worker, while three names are held
  EXPECT_EQ(hung_answers, 0);
  bool capped_answered = false;
  lookups.async_resolve("hung4.test", "80", ioc.get_executor(),
                        [&](boost::system::error_code, const NameLookup::Results&) {});
  ASSERT_TRUE(held.wait_for_call("hung4.test")); // the fourth worker again: four held now
  lookups.async_resolve(
      "127.0.0.1", "81", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { capped_answered = true; });
  ioc.run_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(capped_answered); // the cap: no fifth worker
  held.release();
  const auto until_all = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(capped_answered && hung_answers == 3) && std::chrono::steady_clock::now() < until_all) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(capped_answered);
  EXPECT_EQ(hung_answers, 3);
}

// After a burst the spares end, but only down to the base count: each worker that idles
// past spare_idle ends only while there are more than the base (all of them did, when
// each judged "spare" by the count when it began to wait; review).
TEST(NameLookup, SparesEndAfterABurstAndTheBaseWorkersStay) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(2, held.resolve(), 4, std::chrono::milliseconds(100));
  auto guard = net::make_work_guard(ioc);
  int answers = 0;
  for (const std::string name : {"hung1.test", "hung2.test", "hung3.test"}) {
    lookups.async_resolve(
        name, "80", ioc.get_executor(),
        [&](boost::system::error_code, const NameLookup::Results&) { ++answers; });
    ASSERT_TRUE(held.wait_for_call(name)) << name;
  }
  EXPECT_EQ(lookups.workers(), 3u);
  held.release();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (answers < 3 && std::chrono::steady_clock::now() < until) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(answers, 3);
  // Bounded wait for the spare to end (100 ms idle), then several idle periods more.
  for (int i = 0; i < 100 && lookups.workers() > 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(lookups.workers(), 2u);
  EXPECT_TRUE(answered_soon(lookups, ioc));
}

TEST(NameLookup, AWithdrawnCallerIsSkippedAndAQueuedLookupNobodyWantsIsNeverMade) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(1, held.resolve()); // one worker, held by hung.test
  auto guard = net::make_work_guard(ioc);
  bool withdrawn_called = false;
  bool kept_called = false;
  const NameLookup::Ticket withdrawn = lookups.async_resolve(
      "hung.test", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { withdrawn_called = true; });
  lookups.async_resolve(
      "hung.test", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { kept_called = true; });
  ASSERT_TRUE(held.wait_for_call("hung.test"));
  bool queued_called = false;
  const NameLookup::Ticket queued = lookups.async_resolve(
      "localhost", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { queued_called = true; });
  withdrawn->store(false);
  queued->store(false);
  bool marker = false; // queued after the withdrawn one: once it is answered, that one is done
  lookups.async_resolve(
      "127.0.0.1", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { marker = true; });
  held.release();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(kept_called && marker) && std::chrono::steady_clock::now() < until) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  ioc.poll(); // the withdrawn handlers' disposals, posted before the marker's answer
  EXPECT_TRUE(kept_called);
  EXPECT_TRUE(marker);
  EXPECT_FALSE(withdrawn_called);
  EXPECT_FALSE(queued_called);
  EXPECT_EQ(held.calls("localhost"), 0); // skipped: its only caller had given up
}

// A caller that gave up on a lookup that hangs is let go (its handler, which owns its
// session, destroyed uncalled) when the next caller joins, not when the lookup returns.
TEST(NameLookup, ACallerWhoGaveUpIsLetGoWhenAnotherJoinsAHungLookup) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(1, held.resolve());
  auto guard = net::make_work_guard(ioc); // poll() below must not leave it stopped
  auto token = std::make_shared<int>(0);
  const std::weak_ptr<int> alive = token;
  bool gave_up_called = false;
  const NameLookup::Ticket gave_up = lookups.async_resolve(
      "hung.test", "80", ioc.get_executor(),
      [&gave_up_called, token = std::move(token)](
          boost::system::error_code, const NameLookup::Results&) { gave_up_called = true; });
  ASSERT_TRUE(held.wait_for_call("hung.test"));
  gave_up->store(false);
  EXPECT_FALSE(alive.expired()); // still waiting in the hung lookup
  bool joined_called = false;
  lookups.async_resolve(
      "hung.test", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { joined_called = true; });
  ioc.poll();                   // runs the disposal the join posted
  EXPECT_TRUE(alive.expired()); // let go while hung.test is still held
  held.release();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!joined_called && std::chrono::steady_clock::now() < until) {
    ioc.run_one_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(joined_called);
  EXPECT_FALSE(gave_up_called);
  EXPECT_EQ(held.calls("hung.test"), 1);
}

TEST(NameLookup, StopDuringALookupDestroysItsHandlersOnTheStoppingThreadUncalled) {
  auto held_owner = std::make_shared<HeldResolver>();
  HeldResolver& held = *held_owner;
  net::io_context ioc;
  NameLookup lookups(1, held.resolve());
  auto token = std::make_shared<int>(0);
  const std::weak_ptr<int> alive = token;
  bool called = false;
  lookups.async_resolve(
      "hung.test", "80", ioc.get_executor(),
      [&called, token = std::move(token)](boost::system::error_code, const NameLookup::Results&) {
        called = true;
      });
  ASSERT_TRUE(held.wait_for_call("hung.test"));
  lookups.stop();
  // Gone when stop() returns, while the worker is still held in the lookup: destroyed by
  // stop(), on this thread, not later on the worker.
  EXPECT_TRUE(alive.expired());
  held.release(); // the worker finds the lookup taken and posts nothing
  ioc.run_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(called);
}

} // namespace
} // namespace runwarden::proxy
