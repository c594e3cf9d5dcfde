#pragma once
// Helpers shared by the audit tests: a private temp directory, file I/O, sample exchanges.

#include "audit/audit_log.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace runwarden::audit::testing {

class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rw-audit-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

inline std::string read_all(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_all(const std::string& path, const std::string& data) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out << data;
}

inline std::vector<std::string> split_lines(const std::string& data) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) {
      lines.push_back(data.substr(pos));
      break;
    }
    lines.push_back(data.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    out += l;
    out += '\n';
  }
  return out;
}

/// The file's size in bytes, 0 when it cannot be read.
inline std::uint64_t file_size(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<std::uint64_t>(n);
}

inline Exchange sample_exchange(int i, const std::string& run = "run-1") {
  Exchange ex;
  ex.id = "req_" + std::to_string(i);
  ex.run = run;
  ex.agent = "payments-agent";
  ex.runbook = "payment-api-latency";
  ex.runbook_sha256 = std::string(64, 'a');
  ex.action = i % 2 == 0 ? "fetch_logs" : "restart_payment_workers";
  ex.cls = i % 2 == 0 ? "read_only" : "approval_required";
  ex.outcome = i % 3 == 0 ? "denied" : "forwarded";
  ex.code = i % 3 == 0 ? "denied_by_runbook" : "";
  ex.reason = "rule " + std::to_string(i);
  ex.request.method = i % 2 == 0 ? "GET" : "POST";
  ex.request.url =
      "https://api" + std::to_string(i % 2) + ".example.com/v1/items?i=" + std::to_string(i);
  ex.request.headers = {{"Content-Type", "application/json"}, {"Accept", "*/*"}};
  ex.request.body = "{\"n\":" + std::to_string(i) + "}";
  ex.request.body_bytes = ex.request.body.size();
  ResponseInfo resp;
  resp.status = 200;
  resp.headers = {{"Content-Type", "application/json"}};
  resp.body = "{\"ok\":true}";
  resp.bytes = resp.body.size();
  ex.response = resp;
  ex.timing = {1.5, 1.25, 0};
  ex.client = "127.0.0.1:5555";
  return ex;
}

/// Counts completions; wait() is bounded so a lost callback fails instead of hanging.
class Completions {
public:
  Completion make() {
    return [this](std::error_code ec) {
      std::lock_guard lock(mu_);
      ++done_;
      if (ec) {
        ++errors_;
      }
      cv_.notify_all();
    };
  }
  bool wait(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return done_ >= n; });
  }
  int errors() {
    std::lock_guard lock(mu_);
    return errors_;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
  int errors_ = 0;
};

} // namespace runwarden::audit::testing
