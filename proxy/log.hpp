#pragma once
// Operational log: one line per event on stderr,
// "ts level event conn=N req=... key=value". Never a credential, cookie or body.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace runwarden::proxy {

enum class LogLevel : std::uint8_t { debug, info, warn, error };

/// Parses "debug" | "info" | "warn" | "error"; false when unknown.
bool parse_log_level(std::string_view text, LogLevel& out);
/// Lines below this level are dropped (process-wide; default info).
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);

using LogFields = std::initializer_list<std::pair<std::string_view, std::string_view>>;

/// Writes one line atomically; values with spaces or quotes are quoted so lines stay parseable.
/// debug and info lines reach stderr within ~20 ms (batched); warn and error lines, and
/// everything logged before them, before this returns; all of them at exit.
void log_event(LogLevel level, std::string_view event, std::uint64_t conn, std::string_view req,
               LogFields fields = {});

/// Writes every buffered line now.
void flush_log();

/// For an event that can repeat in a tight loop (a failing accept, connections refused over
/// a cap): at most one line per `every`, the occurrences in between counted for it. Not
/// thread-safe: one per listener, used on its one thread.
class LogThrottle {
public:
  explicit LogThrottle(std::chrono::steady_clock::duration every) : every_(every) {}
  /// True when this occurrence is to be logged; `skipped` is then how many were not since
  /// the last logged one.
  bool due(std::uint64_t& skipped) {
    const auto now = std::chrono::steady_clock::now();
    if (logged_ && now - last_ < every_) {
      ++skipped_;
      return false;
    }
    logged_ = true;
    last_ = now;
    skipped = skipped_;
    skipped_ = 0;
    return true;
  }

private:
  std::chrono::steady_clock::duration every_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
  std::uint64_t skipped_ = 0;
};

} // namespace runwarden::proxy
