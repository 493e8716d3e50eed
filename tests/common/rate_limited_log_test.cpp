#include <catch2/catch.hpp>

#include "common/rate_limited_log.hpp"

using namespace fieldsync;
using namespace std::chrono_literals;

TEST_CASE("rate-limited log: N lines per key per interval, then a summary", "[common][log]") {
  RateLimitedLog log(3, 1000ms, 4);
  auto t0 = RateLimitedLog::Clock::now();
  int written = 0;
  for (int i = 0; i < 1000; ++i)
    written += log.check("refused", t0 + std::chrono::microseconds(i)).log;
  CHECK(written == 3);
  CHECK(log.suppressed_total() == 997);
  // Another key has its own budget.
  CHECK(log.check("handshake", t0).log);
  // The next interval: the first line carries the count of suppressed ones.
  auto d = log.check("refused", t0 + 1001ms);
  CHECK(d.log);
  CHECK(d.suppressed == 997);
  CHECK(log.check("refused", t0 + 1002ms).suppressed == 0);
}

TEST_CASE("rate-limited log: the key table is bounded", "[common][log]") {
  RateLimitedLog log(1, 1000ms, 4);
  auto t0 = RateLimitedLog::Clock::now();
  int written = 0;
  // An attacker varying the key gets at most max_keys (+ the shared overflow key) lines.
  for (int i = 0; i < 10000; ++i) written += log.check("k" + std::to_string(i), t0).log;
  CHECK(written <= 5);
  // Once their windows are over, old keys make room again.
  CHECK(log.check("fresh", t0 + 2000ms).log);
}
