// LatencyHistogram: bucket bounds are inclusive, buckets cumulative with +Inf == count, and
// concurrent observers lose nothing (atomics, no lock). The store's commit histogram counts
// every write transaction's commit.
#include "storage/latency.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "store_fixture.hpp"

using namespace fieldsync;
using namespace std::chrono_literals;

TEST_CASE("latency histogram: inclusive bounds, cumulative buckets, sum and count") {
  storage::LatencyHistogram h;
  auto empty = h.snapshot();
  REQUIRE(empty.bounds.size() == storage::LatencyHistogram::kBounds);
  CHECK(empty.bounds.front() == Approx(0.0001));
  CHECK(empty.bounds.back() == Approx(10.0));
  REQUIRE(empty.buckets.size() == empty.bounds.size() + 1);
  CHECK(empty.count == 0);
  CHECK(empty.sum_seconds == 0);

  h.observe(100us);  // exactly on the first bound: in it
  h.observe(101us);  // just above: the next one
  h.observe(3ms);    // (2.5 ms, 5 ms]
  h.observe(-5ns);   // a clock going back counts as 0
  h.observe(20s);    // above every bound: +Inf only
  auto s = h.snapshot();
  CHECK(s.count == 5);
  CHECK(s.buckets.back() == 5);
  CHECK(s.buckets[0] == 2);                    // -5ns (as 0) and 100us
  CHECK(s.buckets[1] == 3);                    // + 101us (<= 250us)
  CHECK(s.buckets[4] == 3);                    // <= 2.5 ms: not the 3 ms one
  CHECK(s.buckets[5] == 4);                    // + 3 ms (<= 5 ms)
  CHECK(s.buckets[s.bounds.size() - 1] == 4);  // <= 10 s: not the 20 s one
  for (std::size_t i = 1; i < s.buckets.size(); ++i) CHECK(s.buckets[i - 1] <= s.buckets[i]);
  CHECK(s.sum_seconds == Approx(0.0001 + 0.000101 + 0.003 + 20.0));
}

TEST_CASE("latency histogram: concurrent observers lose nothing") {
  storage::LatencyHistogram h;
  constexpr int kThreads = 4, kEach = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) h.observe(std::chrono::microseconds(50 + 1000 * t));
    });
  for (int i = 0; i < 100; ++i) {  // snapshots taken meanwhile are consistent
    auto s = h.snapshot();
    CHECK(s.count == s.buckets.back());
    for (std::size_t b = 1; b < s.buckets.size(); ++b) CHECK(s.buckets[b - 1] <= s.buckets[b]);
  }
  for (auto& t : threads) t.join();
  auto s = h.snapshot();
  CHECK(s.count == kThreads * kEach);
  CHECK(s.buckets[0] == kEach);  // the 50 us observations
}

TEST_CASE("store: every write transaction's commit is timed, reads are not") {
  test::TempDir dir;
  auto store = test::open_store(dir.path());
  auto before = store->commit_latency().count;
  auto p = store->create_project("demo");
  REQUIRE(p);
  constexpr int kWrites = 10;
  for (int i = 0; i < kWrites; ++i)
    REQUIRE(store->write(p->id, test::put("c", "d" + std::to_string(i), "{\"i\":1}")));
  auto written = store->commit_latency().count;
  CHECK(written >= before + 1 + kWrites);
  REQUIRE(store->list_projects());
  REQUIRE(store->get_document(p->id, "c", "d0"));
  auto after = store->commit_latency();
  CHECK(after.count == written);  // reads commit nothing
  CHECK(after.buckets.back() == after.count);
  CHECK(after.sum_seconds > 0);
}
