// What checking one 256 KiB blob chunk read back from disk costs (docs/storage.md "Files, and why
// not LMDB"): SHA-256 against its chunk hash (crypto::sha256, OpenSSL), as every read did, and
// XXH3-64 against its local checksum (libxxhash), as reads do now. 400 chunks (100 MiB) per
// round, 5 rounds alternating, median MB/s of each.
// Usage: chunk_check_bench
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "crypto/crypto.hpp"
#include "storage/blob_store.hpp"

using namespace fieldsync;

int main() {
  Bytes chunk(storage::kBlobChunkBytes);
  std::uint32_t x = 12345;
  for (auto& c : chunk) c = static_cast<std::uint8_t>((x = x * 1103515245u + 12345) >> 24);
  constexpr int kChunks = 400;
  const double mib = kChunks * static_cast<double>(chunk.size()) / (1 << 20);
  std::vector<double> sha, xxh;
  volatile std::uint64_t sink = 0;
  for (int round = 0; round < 5; ++round) {
    auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < kChunks; ++i) sink = sink + crypto::sha256(ByteView(chunk))[0];
    sha.push_back(mib /
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    t = std::chrono::steady_clock::now();
    for (int i = 0; i < kChunks; ++i) sink = sink + XXH3_64bits(chunk.data(), chunk.size());
    xxh.push_back(mib /
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  std::sort(sha.begin(), sha.end());
  std::sort(xxh.begin(), xxh.end());
  std::printf("256 KiB chunks, median of 5 rounds of %d: SHA-256 %.0f MiB/s, XXH3-64 %.0f MiB/s\n",
              kChunks, sha[2], xxh[2]);
  return 0;
}
