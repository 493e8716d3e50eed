// The cost of what a sync session asks the blob store at each scan (docs/storage.md
// "References, quota and garbage collection"), on a project whose documents refer to many
// blobs this device does not hold: a phone with N photos' originals left on the hub.
// Usage: blob_index_bench [documents (default 100000)]
// Prints the median time of each call over 21 runs (microseconds), and of a scan as a
// session makes it; then the time and heap of opening the store again (which builds the
// in-memory index of wanted blobs from the records).
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "crypto/crypto.hpp"
#include "storage/blob_ref.hpp"
#include "storage/blob_store.hpp"
#include "storage/store.hpp"

using namespace fieldsync;
using Clock = std::chrono::steady_clock;

namespace {

template <class F>
double median_us(F&& f) {
  std::vector<double> t;
  for (int i = 0; i < 21; ++i) {
    auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::string hex_of(const std::string& s) {
  return storage::digest_hex(
      crypto::sha256(ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size())));
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
  auto dir = std::filesystem::temp_directory_path() /
             ("fieldsync-blob-index-bench-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  storage::StoreOptions o;
  o.data_dir = dir;
  o.map_size_bytes = 8ull << 30;
  o.durable = false;
  auto s = storage::Store::open(o);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    return 1;
  }
  auto& store = **s;
  auto p = store.create_project("bench");
  if (!p) return 1;
  auto t0 = Clock::now();
  std::vector<storage::WriteRequest> reqs;
  for (std::size_t i = 0; i < n; ++i) {
    storage::WriteRequest r;
    r.collection = "sites";
    r.doc_id = "s" + std::to_string(i);
    r.body = R"({"title":"site )" + std::to_string(i) + R"(","photo":{"$blob":")" +
             hex_of("blob" + std::to_string(i)) + R"(","size":)" + std::to_string(2000000 + i) +
             R"(,"type":"image/jpeg","root":")" + hex_of("root" + std::to_string(i)) + "\"}}";
    reqs.push_back(std::move(r));
    if (reqs.size() == 1000 || i + 1 == n) {
      if (!store.write_batch(p->id, reqs)) return 1;
      reqs.clear();
    }
  }
  if (!store.blobs().index(p->id)) return 1;
  const double setup = std::chrono::duration<double>(Clock::now() - t0).count();
  auto& blobs = store.blobs();
  auto usage = blobs.usage(p->id);
  std::printf(
      "%zu documents, each referring to a blob not held here (%llu wanted), set up in "
      "%.1f s\n",
      n, static_cast<unsigned long long>(usage ? usage->wanted_count : 0), setup);
  std::printf("| call | median µs |\n| --- | --- |\n");
  std::printf("| wanted_total(phone): what a phone still fetches by itself (nothing) | %.1f |\n",
              median_us([&] { (void)blobs.wanted_total(p->id, storage::BlobPolicy::phone); }));
  std::printf("| wanted_total(archive) | %.1f |\n",
              median_us([&] { (void)blobs.wanted_total(p->id, storage::BlobPolicy::archive); }));
  std::printf("| wanted(archive), first page of 64 | %.1f |\n",
              median_us([&] { (void)blobs.wanted(p->id, std::nullopt, 64); }));
  std::printf("| usage() | %.1f |\n", median_us([&] { (void)blobs.usage(p->id); }));
  std::printf("| a session's scan under phone (index, demanded, wanted_total, wanted) | %.1f |\n",
              median_us([&] {
                (void)blobs.index(p->id);
                auto d = blobs.demanded(p->id);
                (void)blobs.wanted_total(p->id, storage::BlobPolicy::phone, d);
                (void)blobs.wanted(p->id, std::nullopt, 64, storage::BlobPolicy::phone);
              }));
  // Opening the store again builds the in-memory index from the records: its heap and time.
  s.value().reset();
  const auto heap_before = mallinfo2().uordblks;
  const auto t1 = Clock::now();
  auto again = storage::Store::open(o);
  if (!again) return 1;
  const double open_ms = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  const auto heap_grew = mallinfo2().uordblks - heap_before;
  std::printf(
      "reopening the store (which builds the index): %.1f ms, heap +%.1f MB (%.0f B per "
      "wanted blob)\n",
      open_ms, static_cast<double>(heap_grew) / (1 << 20),
      static_cast<double>(heap_grew) / static_cast<double>(n));
  again.value().reset();
  std::filesystem::remove_all(dir);
  return 0;
}
