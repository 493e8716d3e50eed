#include "storage/latency.hpp"

namespace fieldsync::storage {
namespace {

constexpr std::array<std::uint64_t, LatencyHistogram::kBounds> kBoundsNs = {
    100'000,       250'000,       500'000,       1'000'000,     2'500'000,   5'000'000,
    10'000'000,    25'000'000,    50'000'000,    100'000'000,   250'000'000, 500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

}  // namespace

const std::array<double, LatencyHistogram::kBounds>& LatencyHistogram::bounds_seconds() {
  static const std::array<double, kBounds> seconds = [] {
    std::array<double, kBounds> s{};
    for (std::size_t i = 0; i < kBounds; ++i) s[i] = static_cast<double>(kBoundsNs[i]) / 1e9;
    return s;
  }();
  return seconds;
}

void LatencyHistogram::observe(std::chrono::nanoseconds elapsed) noexcept {
  auto ns = static_cast<std::uint64_t>(elapsed.count() < 0 ? 0 : elapsed.count());
  std::size_t i = 0;
  while (i < kBounds && ns > kBoundsNs[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

LatencySnapshot LatencyHistogram::snapshot() const {
  LatencySnapshot s;
  const auto& b = bounds_seconds();
  s.bounds.assign(b.begin(), b.end());
  s.buckets.reserve(kBounds + 1);
  std::uint64_t cumulative = 0;
  for (const auto& c : counts_) {
    cumulative += c.load(std::memory_order_relaxed);
    s.buckets.push_back(cumulative);
  }
  s.count = cumulative;
  s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

}  // namespace fieldsync::storage
