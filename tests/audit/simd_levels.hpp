#pragma once
// The SIMD levels a test can pin on this CPU, for the tests that hold the AVX2 and portable
// body paths to each other and to their references.

#include "audit/body_scan_simd.hpp"

#include <vector>

namespace runwarden::audit::testing {

/// The portable level, and AVX2 when this CPU has it.
inline std::vector<simd::Level> simd_levels() {
  std::vector<simd::Level> out = {simd::Level::portable};
  if (simd::best_level() == simd::Level::avx2) {
    out.push_back(simd::Level::avx2);
  }
  return out;
}

/// Pins a level for one scope.
class PinnedLevel {
public:
  explicit PinnedLevel(simd::Level level) { simd::pin_level(level); }
  ~PinnedLevel() { simd::unpin_level(); }
  PinnedLevel(const PinnedLevel&) = delete;
  PinnedLevel& operator=(const PinnedLevel&) = delete;
};

} // namespace runwarden::audit::testing
