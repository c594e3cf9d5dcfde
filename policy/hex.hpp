#pragma once
// One hex-digit decoder for every module that parses hex text (percent escapes, \u escapes,
// digests, admin path segments). policy/ is the lowest module, so everyone can include it.

namespace runwarden::policy {

/// The value of one hex digit (either case), or -1 when c is not one: callers reject the
/// whole input on -1, so a decoder never guesses.
constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

static_assert(hex_value('0') == 0 && hex_value('9') == 9 && hex_value('a') == 10 &&
              hex_value('F') == 15 && hex_value('g') == -1 && hex_value('/') == -1);

} // namespace runwarden::policy
