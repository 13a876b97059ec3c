#include "kiln/base/clock.h"

#include <time.h>

#include <cstdio>

namespace kiln::base {

int64_t SystemClock::NowMicros() const {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

SystemClock& SystemClock::Get() {
  static SystemClock* clock = new SystemClock();
  return *clock;
}

int64_t MonotonicMicros() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

std::string FormatIso8601(int64_t micros_since_epoch) {
  time_t secs = micros_since_epoch / 1'000'000;
  int64_t micros = micros_since_epoch % 1'000'000;
  if (micros < 0) {
    micros += 1'000'000;
    --secs;
  }
  tm utc;
  gmtime_r(&secs, &utc);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(micros));
  return buf;
}

}  // namespace kiln::base
