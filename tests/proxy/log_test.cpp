// The operational log's ordering and flushing guarantees: info lines may be batched, a warn
// or error line is on stderr when log_event returns, after everything logged before it.

#include "proxy/log.hpp"
#include "tests/proxy/stderr_capture.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>

namespace runwarden::proxy {
namespace {

using testing::StderrCapture;

TEST(LogTest, WarnLineIsWrittenAtOnceAfterTheInfoLinesBeforeIt) {
  set_log_level(LogLevel::info);
  StderrCapture capture{"runwarden_log_test"};
  log_event(LogLevel::info, "first", 1, "req_a", {{"k", "v"}});
  log_event(LogLevel::info, "second", 1, "req_a", {{"k", "with space"}});
  log_event(LogLevel::warn, "third", 1, "req_a");
  std::string text = capture.text();
  auto first = text.find(" info first conn=1 req=req_a k=v\n");
  auto second = text.find(" info second conn=1 req=req_a k=\"with space\"\n");
  auto third = text.find(" warn third conn=1 req=req_a\n");
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  ASSERT_NE(third, std::string::npos) << text;
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
}

TEST(LogTest, FlushWritesBufferedLinesWholeWithTimestamps) {
  set_log_level(LogLevel::info);
  StderrCapture capture{"runwarden_log_test"};
  for (int i = 0; i < 100; ++i) {
    log_event(LogLevel::info, "line", static_cast<std::uint64_t>(i + 1), {});
  }
  log_event(LogLevel::debug, "dropped", 1, {});
  flush_log();
  std::string text = capture.text();
  std::istringstream lines(text);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    // 2026-11-21T10:00:00.123456Z info line conn=N
    ASSERT_GE(line.size(), 29u) << line;
    EXPECT_EQ(line[4], '-');
    EXPECT_EQ(line[10], 'T');
    EXPECT_EQ(line[19], '.');
    EXPECT_EQ(line[26], 'Z');
    EXPECT_EQ(line.substr(28), "info line conn=" + std::to_string(count + 1)) << line;
    ++count;
  }
  EXPECT_EQ(count, 100);
}

// Two threads logging past the early-flush size while the flusher writes: nothing lost or
// torn, each thread's lines in its order, and they reach stderr without flush_log (the
// flusher is woken early, and the writes happen outside the appending lock).
TEST(LogTest, ConcurrentLinesPastTheFlushSizeAreWrittenWholeAndInOrder) {
  set_log_level(LogLevel::info);
  StderrCapture capture{"runwarden_log_test"};
  constexpr int kPerThread = 2000; // ~100 bytes each: several early flushes
  auto writer = [](std::uint64_t conn) {
    for (int i = 0; i < kPerThread; ++i) {
      log_event(LogLevel::info, "burst", conn, {}, {{"n", std::to_string(i)}});
    }
  };
  std::thread a(writer, 1);
  std::thread b(writer, 2);
  a.join();
  b.join();
  // Most of it is on stderr already; the flusher writes the rest within its delay.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string text;
  std::size_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    text = capture.text();
    seen = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
    if (seen >= 2 * kPerThread) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(seen, 2u * kPerThread) << "lines missing without flush_log";
  int next[3] = {0, 0, 0};
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const auto at = line.find(" info burst conn=");
    ASSERT_NE(at, std::string::npos) << line;
    const std::string rest = line.substr(at + 17); // "<conn> n=<i>"
    const int conn = rest[0] - '0';
    ASSERT_TRUE(conn == 1 || conn == 2) << line;
    EXPECT_EQ(rest.substr(1), " n=" + std::to_string(next[conn])) << line;
    ++next[conn];
  }
  EXPECT_EQ(next[1], kPerThread);
  EXPECT_EQ(next[2], kPerThread);
}

} // namespace
} // namespace runwarden::proxy
