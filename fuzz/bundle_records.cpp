// Fuzz target: the records inside a bundle (bundle/reader.cpp, bundle/format.cpp): record
// framing across chunks, BEGIN (format, project, producer, name, the holds and since
// vectors), BATCH (sync's batch decoder, then the store's verification and application of
// the log run: Store::apply_log), BLOB, BLOB_HASHES and BLOB_DATA (their order, the checks
// against the project's references, BlobStore::begin_receive), BLOBS_HELD (place, order), END
// (counts, the producer's signature), unknown and extension record types. The input is the
// plaintext: the target seals it as a bundle of kFuzzProject (a header with kRecordsSalt, chunks
// sealed with the project's real key, the chunk size drawn from a hash of the input), so every
// input authenticates and reaches the record decoders. Seeds: plaintexts of real bundles whose END
// is signed over that header (fuzz/bundle_seeds.cpp). Every input is imported into a store holding
// only kFuzzProject (fuzz::ScratchStores). Checks: those of import_checked (fuzz/fuzz_bundle.hpp);
// a bundle that imported is refused the second time (already_exists) and that changes nothing.
#include "fuzz/fuzz_bundle.hpp"

using namespace fieldsync;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteView plain(data, size);
  std::uint64_t h = fuzz::hash_of(plain);
  // Mostly the writer's smallest chunk; sometimes tiny chunks (records across many) or one.
  static constexpr std::size_t kChunks[] = {bundle::kMinChunkBytes, bundle::kMinChunkBytes, 13,
                                            bundle::kMaxChunkBytes};
  Bytes file =
      fuzz::seal_bundle(fuzz::fuzz_project_secret(), fuzz::kRecordsSalt, plain, kChunks[h % 4]);
  bundle::ImportOptions options;
  options.max_record_bytes = 64u << 10;  // small enough for the fuzzer to cross
  options.limits.max_body_bytes = 16u << 10;

  static fuzz::ScratchStores stores("fieldsync-fuzz-bundle-records");
  storage::Store& store = stores.get();
  std::size_t piece = 1 + (h >> 8) % 5000;
  auto first = fuzz::import_checked(
      store, file, [&] { return piece; }, options);
  if (!first.error) {
    auto project = *ProjectId::parse(fuzz::kFuzzProject);
    auto before = store.version_vector(project);
    FUZZ_CHECK(before.ok());
    auto second = fuzz::import_checked(
        store, file, [&] { return file.size(); }, options);
    FUZZ_CHECK(second.error == Errc::already_exists);
    FUZZ_CHECK(second.report.applied == 0);
    auto after = store.version_vector(project);
    FUZZ_CHECK(after.ok() && *after == *before);
  }
  stores.after(first.report);
  return 0;
}
