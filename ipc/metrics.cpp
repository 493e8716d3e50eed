#include "ipc/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace fieldsync::ipc {

namespace {

void append_escaped(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

void MetricsWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  text_ += "# HELP ";
  text_ += name;
  text_ += ' ';
  for (char c : help) {  // HELP escapes backslash and newline only
    if (c == '\\')
      text_ += "\\\\";
    else if (c == '\n')
      text_ += "\\n";
    else
      text_ += c;
  }
  text_ += "\n# TYPE ";
  text_ += name;
  text_ += ' ';
  text_ += type;
  text_ += '\n';
}

void MetricsWriter::line_start(std::string_view name, const MetricLabels& labels) {
  text_ += name;
  if (!labels.empty()) {
    text_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) text_ += ',';
      first = false;
      text_ += k;
      text_ += "=\"";
      append_escaped(text_, v);
      text_ += '"';
    }
    text_ += '}';
  }
  text_ += ' ';
}

void MetricsWriter::sample(std::string_view name, const MetricLabels& labels, double value) {
  line_start(name, labels);
  text_ += number(value);
  text_ += '\n';
}

void MetricsWriter::sample(std::string_view name, const MetricLabels& labels, std::uint64_t value) {
  line_start(name, labels);
  text_ += std::to_string(value);
  text_ += '\n';
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::write(MetricsWriter& w, std::string_view name, const MetricLabels& labels) const {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    MetricLabels l = labels;
    l.emplace_back("le", i < bounds_.size() ? number(bounds_[i]) : "+Inf");
    w.sample(bucket, l, cumulative);
  }
  w.sample(std::string(name) + "_sum", labels, sum_);
  w.sample(std::string(name) + "_count", labels, count_);
}

void write_histogram(MetricsWriter& w, std::string_view name, const std::vector<double>& bounds,
                     const std::vector<std::uint64_t>& cumulative, double sum,
                     std::uint64_t count) {
  const std::string bucket = std::string(name) + "_bucket";
  for (std::size_t i = 0; i < cumulative.size(); ++i)
    w.sample(bucket, {{"le", i < bounds.size() ? number(bounds[i]) : "+Inf"}}, cumulative[i]);
  w.sample(std::string(name) + "_sum", {}, sum);
  w.sample(std::string(name) + "_count", {}, count);
}

std::vector<double> api_latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

ApiMetrics::ApiMetrics() : latency_(api_latency_buckets()) {}

void ApiMetrics::observe(int status, double seconds) {
  const int k = status / 100;
  if (k >= 1 && k <= 5) ++by_class_[static_cast<std::size_t>(k - 1)];
  latency_.observe(seconds);
}

void ApiMetrics::write(MetricsWriter& w) const {
  w.family("fieldsync_api_requests_total", "counter",
           "API requests answered, by HTTP status class (both listeners; refusals before "
           "routing included).");
  for (std::size_t i = 0; i < by_class_.size(); ++i)
    w.sample("fieldsync_api_requests_total", {{"code", std::to_string(i + 1) + "xx"}},
             by_class_[i]);
  w.family("fieldsync_api_request_duration_seconds", "histogram",
           "Time from a complete request header to its answer being ready to send, seconds.");
  latency_.write(w, "fieldsync_api_request_duration_seconds");
}

}  // namespace fieldsync::ipc
