// HybridClock: hybrid logical clock (physical ms << 16 | logical counter).
// Monotonic across restarts (the last value is persisted by the Store) and pulled
// forward by received versions, so a version always sorts after what its author saw.
// Thread-safety: internally locked.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

namespace fieldsync::storage {

class HybridClock {
 public:
  using NowMs = std::function<std::uint64_t()>;
  explicit HybridClock(std::uint64_t max_skew_ms, NowMs now = {});

  std::uint64_t tick();                // a new timestamp for a local write
  void observe(std::uint64_t remote);  // a timestamp seen on received data
  void restore(std::uint64_t last);    // the persisted value at open
  std::uint64_t last() const;

  static std::uint64_t physical_ms(std::uint64_t hlc) { return hlc >> 16; }

 private:
  std::uint64_t now_ms() const;
  mutable std::mutex mu_;
  std::uint64_t last_ = 0;
  std::uint64_t max_skew_ms_;
  NowMs now_;
};

}  // namespace fieldsync::storage
