// RateLimitedLog: at most `lines` log lines per key per `interval`; the rest are counted and
// summarised ("suppressed K similar lines") when the key logs again in a later interval.
// Meant for lines a remote party can trigger at will (refused connections, failed handshakes),
// so a flood of them cannot fill the disk.
//
// Keys are short strings naming the kind of line (not the remote address, which an attacker
// can vary). At most `max_keys` keys are tracked; beyond that, lines share one overflow key.
// Thread-safety: every method is safe from any thread (one mutex).
// Errors: none.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace fieldsync {

enum class LogLevel : std::uint8_t { debug, info, warn, error };

class RateLimitedLog {
 public:
  using Clock = std::chrono::steady_clock;

  RateLimitedLog(std::uint32_t lines, std::chrono::milliseconds interval,
                 std::size_t max_keys = 64);

  struct Decision {
    bool log = false;  // write this line
    std::uint64_t suppressed =
        0;  // lines of this key dropped since it last logged: summarise first
  };
  // The decision for one line of `key` at `now` (and counts it).
  Decision check(std::string_view key, Clock::time_point now = Clock::now());

  // check() then, when allowed, writes the summary (if any) and `message` through spdlog.
  void log(LogLevel level, std::string_view key, const std::string& message);

  // Lines suppressed so far, over all keys (tests, status).
  std::uint64_t suppressed_total() const;
  void set_limits(std::uint32_t lines, std::chrono::milliseconds interval);

 private:
  struct Window {
    Clock::time_point start;
    std::uint32_t logged = 0;
    std::uint64_t suppressed = 0;
  };
  mutable std::mutex mu_;
  std::uint32_t lines_;
  std::chrono::milliseconds interval_;
  std::size_t max_keys_;
  std::map<std::string, Window, std::less<>> windows_;
  std::uint64_t suppressed_total_ = 0;
};

}  // namespace fieldsync
