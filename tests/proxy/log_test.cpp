// The operational log's ordering and flushing guarantees: info lines may be batched, a warn
// or error line is on stderr when log_event returns, after everything logged before it.

#include "proxy/log.hpp"

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

/// Points fd 2 at a temporary file for the test's lifetime.
class StderrCapture {
public:
  StderrCapture() {
    path_ = (std::filesystem::temp_directory_path() /
             ("runwarden_log_test_" + std::to_string(::getpid()) + ".txt"))
                .string();
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  ~StderrCapture() {
    flush_log();
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    std::filesystem::remove(path_);
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  std::string text() const {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

private:
  std::string path_;
  int saved_ = -1;
};

TEST(LogTest, WarnLineIsWrittenAtOnceAfterTheInfoLinesBeforeIt) {
  set_log_level(LogLevel::info);
  StderrCapture capture;
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
  StderrCapture capture;
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
