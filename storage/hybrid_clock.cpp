#include "storage/hybrid_clock.hpp"

#include <algorithm>
#include <chrono>

namespace fieldsync::storage {

HybridClock::HybridClock(std::uint64_t max_skew_ms, NowMs now)
    : max_skew_ms_(max_skew_ms), now_(std::move(now)) {}

std::uint64_t HybridClock::now_ms() const {
  if (now_) return now_();
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::uint64_t HybridClock::tick() {
  std::lock_guard lock(mu_);
  last_ = std::max(last_ + 1, now_ms() << 16);
  return last_;
}

void HybridClock::observe(std::uint64_t remote) {
  std::lock_guard lock(mu_);
  // A peer with a clock far in the future must not drag ours along forever.
  if (physical_ms(remote) > now_ms() + max_skew_ms_) return;
  last_ = std::max(last_, remote);
}

void HybridClock::restore(std::uint64_t last) {
  std::lock_guard lock(mu_);
  last_ = std::max(last_, last);
}

std::uint64_t HybridClock::last() const {
  std::lock_guard lock(mu_);
  return last_;
}

}  // namespace fieldsync::storage
