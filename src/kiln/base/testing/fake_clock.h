// fake_clock.h
//
// `FakeClock`, a `Clock` that moves only when a test advances it.
#pragma once

#include <atomic>
#include <cstdint>

#include "kiln/base/clock.h"

namespace kiln::base {

// Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_micros = 1'700'000'000'000'000) : now_(start_micros) {}
  int64_t NowMicros() const override { return now_.load(); }
  void AdvanceMicros(int64_t delta) { now_ += delta; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace kiln::base
