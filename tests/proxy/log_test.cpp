// The operational log's ordering and flushing guarantees: info lines may be batched, a warn
// or error line is on stderr when log_event returns, after everything logged before it.

#include "proxy/log.hpp"
#include "tests/proxy/stderr_capture.hpp"

#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
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

} // namespace
} // namespace runwarden::proxy
