#include "config/units.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <utility>

namespace runwarden::config {
namespace {

/// Splits "123unit" into the leading decimal integer and the rest. False when
/// there is no leading digit or the integer does not fit.
bool split_number(std::string_view text, std::uint64_t& value, std::string_view& unit) {
  std::size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  const auto* first = text.data();
  const auto res = std::from_chars(first, first + i, value);
  if (res.ec != std::errc{} || res.ptr != first + i) {
    return false;
  }
  unit = text.substr(i);
  return true;
}

} // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<std::chrono::milliseconds> {
    if (error != nullptr) {
      *error = "invalid duration \"" + std::string(text) + "\": " + std::move(why);
    }
    return std::nullopt;
  };
  static constexpr const char* accepted =
      "use a whole number followed by ms, s, m or h (e.g. 50ms, 10s, 15m, 1h)";
  std::uint64_t n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit)) {
    return fail(accepted);
  }
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 4> units{{
      {"ms", 1},
      {"s", 1000},
      {"m", 60'000},
      {"h", 3'600'000},
  }};
  for (const auto& [name, factor] : units) {
    if (unit != name) {
      continue;
    }
    if (n == 0) {
      return fail("must be greater than zero");
    }
    // Cap at about 10 years: enough for any timeout, far from overflow.
    constexpr std::uint64_t max_ms = 10ull * 366 * 24 * 3'600'000;
    if (n > max_ms / factor) {
      return fail("too large (at most 10 years)");
    }
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(n * factor));
  }
  if (unit.empty()) {
    return fail("a unit is required: " + std::string(accepted));
  }
  return fail(accepted);
}

std::optional<std::size_t> parse_size(std::string_view text, std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<std::size_t> {
    if (error != nullptr) {
      *error = "invalid size \"" + std::string(text) + "\": " + std::move(why);
    }
    return std::nullopt;
  };
  static constexpr const char* accepted =
      "use a whole number of bytes, optionally followed by B, KiB, MiB or GiB (e.g. 512, 16KiB, "
      "1MiB); decimal units such as KB or MB are not accepted";
  std::uint64_t n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit)) {
    return fail(accepted);
  }
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 5> units{{
      {"", 1},
      {"B", 1},
      {"KiB", 1ull << 10},
      {"MiB", 1ull << 20},
      {"GiB", 1ull << 30},
  }};
  for (const auto& [name, factor] : units) {
    if (unit != name) {
      continue;
    }
    constexpr std::uint64_t max_bytes = 1ull << 50; // 1 PiB: far beyond any sane limit
    if (n > max_bytes / factor) {
      return fail("too large");
    }
    return static_cast<std::size_t>(n * factor);
  }
  return fail(accepted);
}

std::string format_duration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) {
    return std::to_string(ms / 3'600'000) + "h";
  }
  if (ms != 0 && ms % 60'000 == 0) {
    return std::to_string(ms / 60'000) + "m";
  }
  if (ms != 0 && ms % 1000 == 0) {
    return std::to_string(ms / 1000) + "s";
  }
  return std::to_string(ms) + "ms";
}

} // namespace runwarden::config
