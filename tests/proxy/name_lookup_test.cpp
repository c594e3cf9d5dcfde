// NameLookup: answers come back on the caller's executor, failures as Asio's resolver
// reports them, and nothing at all after stop().

#include "proxy/name_lookup.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <gtest/gtest.h>
#include <thread>

namespace runwarden::proxy {
namespace {

namespace net = boost::asio;

TEST(NameLookup, ResolvesOnTheCallersExecutor) {
  NameLookup lookups(2);
  net::io_context ioc;
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
  NameLookup lookups(1);
  net::io_context ioc;
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
  NameLookup lookups(1);
  net::io_context ioc;
  lookups.stop();
  bool called = false;
  lookups.async_resolve(
      "127.0.0.1", "80", ioc.get_executor(),
      [&](boost::system::error_code, const NameLookup::Results&) { called = true; });
  ioc.run_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(called);
}

} // namespace
} // namespace runwarden::proxy
