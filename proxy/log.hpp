#pragma once
// Operational log: one line per event on stderr,
// "ts level event conn=N req=... key=value". Never a credential, cookie or body.

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

} // namespace runwarden::proxy
