// clock.h
//
// `Clock`, the seam through which Kiln reads time, so that tests can advance a fake
// clock instead of sleeping. Times are microseconds since the Unix epoch.
#pragma once

#include <cstdint>
#include <string>

namespace kiln::base {

// Thread-safe implementations only.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in microseconds since the Unix epoch.
  virtual int64_t NowMicros() const = 0;
};

// The real clock (CLOCK_REALTIME). Thread-safe.
class SystemClock final : public Clock {
 public:
  int64_t NowMicros() const override;
  // A process-wide instance; stateless, so sharing it is safe.
  static SystemClock& Get();
};

// Microseconds on CLOCK_MONOTONIC, for measuring durations.
int64_t MonotonicMicros();

// "2026-11-26T09:51:47.123456Z"
std::string FormatIso8601(int64_t micros_since_epoch);

}  // namespace kiln::base
