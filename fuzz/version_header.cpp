// Fuzz target: decode_header (storage/version_codec.cpp), the binary version header that
// arrives in sync batches and is read back from LMDB. Checks: a header that decodes is
// canonical (encodes back to exactly the input bytes, so its id is well defined) and valid;
// its extension records (the erasure epoch) read without fault, and setting the epoch and
// reading it back agree.
#include "fuzz/fuzz_support.hpp"
#include "storage/version_codec.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteView in(data, size);
  auto h = decode_header(in);
  if (!h.ok()) return 0;
  FUZZ_CHECK(valid_collection(h->collection));
  FUZZ_CHECK(valid_doc_id(h->doc_id));
  FUZZ_CHECK(h->parents.size() <= kMaxParents);
  FUZZ_CHECK(h->extensions.size() <= kMaxExtensionBytes);
  Bytes again = encode_header(*h);
  FUZZ_CHECK(again == Bytes(in.begin(), in.end()));
  FUZZ_CHECK(version_id_of(again) == version_id_of(in));
  std::uint64_t epoch = erasure_epoch(*h);
  VersionHeader copy = *h;
  set_erasure_epoch(copy, epoch + 1);
  FUZZ_CHECK(erasure_epoch(copy) == epoch + 1);
  set_erasure_epoch(copy, 0);
  FUZZ_CHECK(erasure_epoch(copy) == 0);
  return 0;
}
