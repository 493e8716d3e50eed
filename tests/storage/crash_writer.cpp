// Child process of the crash test: writes batches forever into an existing project and
// prints "ACK <doc id> <version>" after each acknowledged (committed) write.
// Usage: storage_crash_writer <data dir> <project id> <seed> [nosync]
//   nosync: open the store with durable = false (MDB_NOSYNC), for the power-cut negative control.
#include <cstdio>
#include <random>
#include <string>

#include "storage/store.hpp"

using namespace fieldsync;

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) return 2;
  storage::StoreOptions o;
  o.data_dir = argv[1];
  o.map_size_bytes = 1ull << 30;
  o.checkpoint_interval = 32;
  o.durable = !(argc == 5 && std::string(argv[4]) == "nosync");
  auto store = storage::Store::open(o);
  if (!store) {
    std::fprintf(stderr, "open: %s\n", store.error().message.c_str());
    return 1;
  }
  auto pid = ProjectId::parse(argv[2]);
  std::mt19937 rng(static_cast<unsigned>(std::stoul(argv[3])));
  for (std::uint64_t round = 0;; ++round) {
    std::vector<storage::WriteRequest> reqs(1 + rng() % 40);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].collection = "obs";
      // Reuse a small id space so that updates and deletes happen too.
      reqs[i].doc_id = "doc-" + std::to_string(rng() % 500);
      reqs[i].body = "{\"round\":" + std::to_string(round) + ",\"pad\":\"" +
                     std::string(rng() % 600, 'x') + "\"}";
      if (rng() % 20 == 0) reqs[i].kind = storage::VersionKind::tombstone;
    }
    auto r = (*store)->write_batch(*pid, reqs);
    if (!r) continue;  // e.g. deleting a document that does not exist: the batch is refused
    for (const auto& w : *r) std::printf("ACK %s %s\n", w.doc_id.c_str(), w.version.str().c_str());
    std::fflush(stdout);
  }
}
