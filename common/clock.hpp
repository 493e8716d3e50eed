// Wall-clock time as the store, the API and the wire record it. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace fieldsync {

// Milliseconds since the Unix epoch (the system clock: it may jump; use steady_clock for
// durations).
inline std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace fieldsync
