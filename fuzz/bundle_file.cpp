// Fuzz target: BundleReader (bundle/reader.cpp) on raw bytes, as a bundle file arrives from a
// USB stick or an upload: the header (magic, format, reserved bytes, project tag), the chunk
// length fields and last-chunk bit, the chunks' authentication, truncation and bytes after
// the end, and the blob records behind them. Seeds: real bundles of kFuzzProject
// (fuzz/bundle_seeds.cpp), whose key the store holds. Every input is imported twice, each time into
// a store holding only kFuzzProject (fuzz::ScratchStores): whole, and in pieces of sizes drawn from
// a hash of the input. Checks: those of import_checked (fuzz/fuzz_bundle.hpp) for both imports, and
// both end alike (the same error or none, the same counts): the reader takes its input in any
// split.
#include "fuzz/fuzz_bundle.hpp"

using namespace fieldsync;

namespace {

bool same(const bundle::ImportReport& a, const bundle::ImportReport& b) {
  return a.project == b.project && a.producer == b.producer && a.producer_name == b.producer_name &&
         a.created_ms == b.created_ms && a.entries == b.entries && a.applied == b.applied &&
         a.duplicates == b.duplicates && a.batches == b.batches && a.skipped == b.skipped &&
         a.blobs_imported == b.blobs_imported && a.blobs_held == b.blobs_held &&
         a.blobs_skipped == b.blobs_skipped && a.blob_bytes == b.blob_bytes &&
         a.complete == b.complete;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteView in(data, size);
  std::uint64_t h = fuzz::hash_of(in);
  static constexpr std::size_t kMaxPieces[] = {1, 7, 64, 4096};
  const std::size_t max_piece = kMaxPieces[h % 4];
  std::uint64_t state = h | 1;
  auto next_piece = [&]() -> std::size_t {
    state ^= state << 13;  // xorshift64
    state ^= state >> 7;
    state ^= state << 17;
    return 1 + state % max_piece;
  };

  static fuzz::ScratchStores stores("fieldsync-fuzz-bundle-file");
  auto whole =
      fuzz::import_checked(stores.get(), in, [&] { return std::max<std::size_t>(size, 1); });
  stores.after(whole.report);
  auto pieces = fuzz::import_checked(stores.get(), in, next_piece);
  stores.after(pieces.report);
  FUZZ_CHECK(whole.error == pieces.error);
  FUZZ_CHECK(same(whole.report, pieces.report));
  return 0;
}
