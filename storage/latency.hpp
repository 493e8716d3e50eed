// LatencyHistogram: how long the store's commits and fsyncs take, for GET /metrics
// (docs/api.md "Metrics": fieldsync_storage_commit_seconds, fieldsync_storage_fsync_seconds).
//
// Fixed bucket bounds (latency_bounds_seconds()), one atomic counter per bucket and an atomic
// sum: observe() takes no lock and never blocks, so it is cheap beside a commit or an fsync.
// Thread-safety: observe() and snapshot() may be called from any thread, concurrently. A
// snapshot taken during observations may miss the newest ones, and its sum may be a few
// observations ahead or behind its buckets; its buckets are always cumulative and its count is
// always the last (+Inf) bucket.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fieldsync::storage {

struct LatencySnapshot {
  std::vector<double> bounds;          // upper bounds in seconds, ascending (no +Inf)
  std::vector<std::uint64_t> buckets;  // cumulative: bounds.size() + 1 entries, last = +Inf
  double sum_seconds = 0;
  std::uint64_t count = 0;  // == buckets.back()
};

class LatencyHistogram {
 public:
  static constexpr std::size_t kBounds = 16;
  // 0.1 ms .. 10 s.
  static const std::array<double, kBounds>& bounds_seconds();

  void observe(std::chrono::nanoseconds elapsed) noexcept;
  LatencySnapshot snapshot() const;

 private:
  std::array<std::atomic<std::uint64_t>, kBounds + 1> counts_{};  // per bucket; last: above all
  std::atomic<std::uint64_t> sum_ns_{0};
};

// Times a scope: observes the elapsed time into `h` (when not null) when destroyed.
class LatencyTimer {
 public:
  explicit LatencyTimer(LatencyHistogram* h) noexcept
      : h_(h),
        start_(h ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{}) {}
  ~LatencyTimer() {
    if (h_) h_->observe(std::chrono::steady_clock::now() - start_);
  }
  LatencyTimer(const LatencyTimer&) = delete;
  LatencyTimer& operator=(const LatencyTimer&) = delete;

 private:
  LatencyHistogram* h_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace fieldsync::storage
