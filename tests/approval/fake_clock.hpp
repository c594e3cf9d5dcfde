#pragma once
// A clock the test moves by hand: every schedule in these tests is deterministic.

#include "approval/clock.hpp"

#include <atomic>
#include <chrono>

namespace runwarden::approval::test {

class FakeClock final : public Clock {
public:
  SteadyTime steady() const override { return SteadyTime(offset()); }
  WallTime wall() const override {
    return WallTime(std::chrono::seconds(1'800'000'000)) + offset();
  }
  void advance(std::chrono::milliseconds d) { ms_ += d.count(); }

private:
  std::chrono::milliseconds offset() const { return std::chrono::milliseconds(ms_.load()); }
  std::atomic<long long> ms_{1'000'000};
};

} // namespace runwarden::approval::test
