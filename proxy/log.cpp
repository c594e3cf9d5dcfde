#include "proxy/log.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

namespace runwarden::proxy {
namespace {

std::atomic<LogLevel> g_level{LogLevel::info};

std::string_view level_name(LogLevel level) {
  switch (level) {
  case LogLevel::debug:
    return "debug";
  case LogLevel::info:
    return "info";
  case LogLevel::warn:
    return "warn";
  case LogLevel::error:
    return "error";
  }
  return "info";
}

void append_value(std::string& line, std::string_view value) {
  bool quote = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      quote = true;
      break;
    }
  }
  if (!quote) {
    line.append(value);
    return;
  }
  line.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') {
      line.push_back('\\');
      line.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      line.push_back('?');
    } else {
      line.push_back(c);
    }
  }
  line.push_back('"');
}

/// Appends "YYYY-MM-DDTHH:MM:SS.uuuuuuZ"; the date and time part is formatted once per
/// second per thread.
void append_timestamp(std::string& line) {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[64] = {};
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  line.append(cached);
  char frac[9] = {'.', '0', '0', '0', '0', '0', '0', 'Z', 0};
  auto v = static_cast<unsigned long long>(micros);
  for (int i = 6; i >= 1; --i) {
    frac[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  line.append(frac, 8);
}

void write_all(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(STDERR_FILENO, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return; // stderr is gone: nothing else to tell
    }
    off += static_cast<std::size_t>(n);
  }
}

/// Lines below warn are buffered and written by a flusher thread at most kFlushDelay later
/// (or as soon as kFlushBytes are pending, when it is woken early), so a busy proxy does not
/// pay one write(2) per request line. A warn or error line is written before log_event
/// returns, together with everything buffered before it, so order is kept and no error
/// waits. The buffer is also written at exit. The sink is never destroyed: the detached
/// flusher may outlive main. The write(2) happens outside the lock lines are appended under:
/// an I/O thread appending its line never waits for another's write to a slow stderr. Only
/// past kMaxPendingBytes (stderr slower than the lines come) does the appending thread
/// write itself, so memory stays bounded.
class Sink {
public:
  static Sink& get() {
    static Sink* sink = new Sink();
    return *sink;
  }

  void add(std::string& line, bool urgent) {
    std::unique_lock lock(mu_);
    const bool was_empty = buf_.empty();
    buf_.append(line);
    if (urgent || buf_.size() >= kMaxPendingBytes) {
      lock.unlock();
      flush();
      return;
    }
    if (!started_) {
      started_ = true;
      std::thread([this] { run(); }).detach();
      std::atexit([] { Sink::get().flush(); });
    }
    const bool wake = was_empty || (buf_.size() >= kFlushBytes && !early_);
    early_ = early_ || buf_.size() >= kFlushBytes;
    lock.unlock();
    if (wake) {
      cv_.notify_one();
    }
  }

  /// Writes everything appended so far, in order (flushes are serialized, and each takes
  /// the whole buffer while holding that order).
  void flush() {
    std::lock_guard write_lock(write_mu_);
    {
      std::lock_guard lock(mu_);
      out_.swap(buf_);
      early_ = false;
    }
    if (!out_.empty()) {
      write_all(out_);
      out_.clear();
    }
    if (out_.capacity() > kMaxPendingBytes) {
      std::string().swap(out_); // a burst's buffer does not stay resident
    }
  }

private:
  static constexpr std::size_t kFlushBytes = 32 * 1024;
  static constexpr std::size_t kMaxPendingBytes = 1024 * 1024;
  static constexpr std::chrono::milliseconds kFlushDelay{20};

  Sink() = default;

  [[noreturn]] void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return !buf_.empty(); });
      // Let a burst of lines gather, unless kFlushBytes are already waiting.
      cv_.wait_for(lock, kFlushDelay, [this] { return early_; });
      lock.unlock();
      flush();
      lock.lock();
    }
  }

  std::mutex mu_; // buf_, early_, started_
  std::condition_variable cv_;
  std::string buf_;
  bool early_ = false; // kFlushBytes are pending: the flusher was woken to write now
  bool started_ = false;
  std::mutex write_mu_; // out_, and the order of writes
  std::string out_;
};

} // namespace

bool parse_log_level(std::string_view text, LogLevel& out) {
  for (LogLevel l : {LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error}) {
    if (text == level_name(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

void set_log_level(LogLevel level) {
  g_level.store(level, std::memory_order_relaxed);
}

bool log_enabled(LogLevel level) {
  return level >= g_level.load(std::memory_order_relaxed);
}

void log_event(LogLevel level, std::string_view event, std::uint64_t conn, std::string_view req,
               LogFields fields) {
  if (!log_enabled(level)) {
    return;
  }
  // Built in this thread's buffer, which keeps its capacity: a request's line allocates
  // nothing (the sink copies it into its own).
  thread_local std::string line;
  line.clear();
  if (line.capacity() > 64 * 1024) {
    std::string().swap(line); // one very long line does not stay resident
  }
  append_timestamp(line);
  line.push_back(' ');
  line.append(level_name(level));
  line.push_back(' ');
  line.append(event);
  if (conn != 0) {
    line.append(" conn=");
    line.append(std::to_string(conn));
  }
  if (!req.empty()) {
    line.append(" req=");
    line.append(req);
  }
  for (const auto& [key, value] : fields) {
    line.push_back(' ');
    line.append(key);
    line.push_back('=');
    append_value(line, value);
  }
  line.push_back('\n');
  Sink::get().add(line, level >= LogLevel::warn);
}

void flush_log() {
  Sink::get().flush();
}

} // namespace runwarden::proxy
