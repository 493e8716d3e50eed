#include "common/rate_limited_log.hpp"

#include <spdlog/spdlog.h>

namespace fieldsync {

RateLimitedLog::RateLimitedLog(std::uint32_t lines, std::chrono::milliseconds interval,
                               std::size_t max_keys)
    : lines_(lines), interval_(interval), max_keys_(std::max<std::size_t>(max_keys, 1)) {}

void RateLimitedLog::set_limits(std::uint32_t lines, std::chrono::milliseconds interval) {
  std::lock_guard lock(mu_);
  lines_ = lines;
  interval_ = interval;
}

RateLimitedLog::Decision RateLimitedLog::check(std::string_view key, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= max_keys_) {
      // Forget keys whose window is over and that owe no summary; else share one key.
      for (auto i = windows_.begin(); i != windows_.end();)
        i = now - i->second.start >= interval_ && i->second.suppressed == 0 ? windows_.erase(i)
                                                                            : std::next(i);
    }
    std::string k = windows_.size() >= max_keys_ ? std::string("(other)") : std::string(key);
    it = windows_.try_emplace(std::move(k), Window{now, 0, 0}).first;
  }
  Window& w = it->second;
  if (now - w.start >= interval_) {
    w.start = now;
    w.logged = 0;
  }
  Decision d;
  if (w.logged < lines_) {
    ++w.logged;
    d.log = true;
    d.suppressed = w.suppressed;
    w.suppressed = 0;
  } else {
    ++w.suppressed;
    ++suppressed_total_;
  }
  return d;
}

std::uint64_t RateLimitedLog::suppressed_total() const {
  std::lock_guard lock(mu_);
  return suppressed_total_;
}

void RateLimitedLog::log(LogLevel level, std::string_view key, const std::string& message) {
  auto d = check(key);
  if (!d.log) return;
  auto lvl = level == LogLevel::debug  ? spdlog::level::debug
             : level == LogLevel::info ? spdlog::level::info
             : level == LogLevel::warn ? spdlog::level::warn
                                       : spdlog::level::err;
  if (d.suppressed > 0) spdlog::log(lvl, "suppressed {} similar line(s) ({})", d.suppressed, key);
  spdlog::log(lvl, "{}", message);
}

}  // namespace fieldsync
