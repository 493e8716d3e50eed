// Prometheus text exposition (format 0.0.4) for GET /metrics (docs/api.md "Metrics"), and the
// API's own request metrics.
//
// MetricsWriter renders families: every family is written once with its HELP and TYPE lines,
// followed by its samples; label values are escaped. Histogram keeps cumulative buckets, _sum
// and _count. ApiMetrics counts the API's answers by status class and observes their latency.
// Thread-safety: none of these types is thread-safe. ApiMetrics (ApiContext::metrics) is only
// touched on the server's thread (the io_context's single thread), where the server records
// each answer and the GET /metrics handler renders it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fieldsync::ipc {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsWriter {
 public:
  // Starts a family: "# HELP name help" and "# TYPE name type" (counter, gauge, histogram).
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample line: name{labels} value. `name` is the family's name or, for a histogram,
  // name_bucket / name_sum / name_count.
  void sample(std::string_view name, const MetricLabels& labels, double value);
  void sample(std::string_view name, const MetricLabels& labels, std::uint64_t value);
  const std::string& text() const { return text_; }
  std::string take() { return std::move(text_); }

 private:
  void line_start(std::string_view name, const MetricLabels& labels);
  std::string text_;
};

// A histogram with fixed upper bounds (seconds), observations counted in the first bucket
// whose bound is >= the value; written with cumulative buckets and le="+Inf".
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // The family (HELP/TYPE) must have been started by the caller.
  void write(MetricsWriter& w, std::string_view name, const MetricLabels& labels = {}) const;
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; last = above every bound
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// Writes the samples of a histogram kept elsewhere: `cumulative` has one count per bound and
// a last one for +Inf (which is `count`). The family (HELP/TYPE) must have been started.
void write_histogram(MetricsWriter& w, std::string_view name, const std::vector<double>& bounds,
                     const std::vector<std::uint64_t>& cumulative, double sum, std::uint64_t count);

// Latency buckets (seconds) of the API request histogram.
std::vector<double> api_latency_buckets();

class ApiMetrics {
 public:
  ApiMetrics();
  // One answer of the API (any status, also refusals before routing: 400, 401, 413, 503),
  // `seconds` from the complete request header to the answer being ready.
  void observe(int status, double seconds);
  // fieldsync_api_requests_total{code="2xx"...} and fieldsync_api_request_duration_seconds.
  void write(MetricsWriter& w) const;

 private:
  std::array<std::uint64_t, 5> by_class_{};  // 1xx..5xx
  Histogram latency_;
};

}  // namespace fieldsync::ipc
