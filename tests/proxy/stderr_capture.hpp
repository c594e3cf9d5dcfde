#pragma once
// Points fd 2 (where the operational log goes) at a temporary file while it lives, for
// tests that read what the log wrote.

#include "proxy/log.hpp"

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace runwarden::proxy::testing {

class StderrCapture {
public:
  /// Info lines logged before the capture are flushed to the real stderr first.
  explicit StderrCapture(const std::string& stem)
      : path_((std::filesystem::temp_directory_path() /
               (stem + "_" + std::to_string(::getpid()) + ".txt"))
                  .string()) {
    flush_log();
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

  /// What reached fd 2 so far. Does not flush batched info lines: tests of the log's own
  /// batching read before flushing; others call flush_log() first.
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

} // namespace runwarden::proxy::testing
