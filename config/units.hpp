#pragma once
// Strict parsing of the duration and size strings that runwarden.yaml uses.
// Strict on purpose: "10" (seconds? milliseconds?) or "16KB" (1000 or 1024?) are
// ambiguous, and an ambiguous limit in a security tool is a bug waiting to happen.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace runwarden::config {

/// "50ms", "10s", "15m", "1h": a positive integer and one unit. Anything else
/// returns nullopt and sets *error to a sentence saying what is accepted.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* error);

/// "512" or "512B" (bytes), "16KiB", "1MiB", "1GiB": an integer and a binary unit.
/// Decimal units (KB, MB, GB) are refused because they are ambiguous.
std::optional<std::size_t> parse_size(std::string_view text, std::string* error);

/// "15m", "10s", "250ms": the shortest exact spelling, as parse_duration reads it.
std::string format_duration(std::chrono::milliseconds d);

} // namespace runwarden::config
