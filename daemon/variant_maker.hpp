// VariantMaker: makes the preview and thumbnail of each photo uploaded to this device
// (docs/storage.md "Variants of a blob"), in the background.
//
// After an upload of a JPEG, PNG or WebP finishes, uploaded() queues it; one worker thread of
// its own (never the event loop, nor the blob worker, so uploads and downloads go on while an
// image is decoded) reads the original (verified), calls media::make_variants, stores both
// variants as blobs of the project (BlobStore::put) and records them with
// Store::set_blob_variants(..., "fieldsync") unless the original already has a `_variants`
// document (an app-supplied variant wins). An original erased while its variants were made
// gets none: the refused variants are released at once (BlobStore::release_unreferenced).
// The original is only read. A blob of another type
// is not queued; an image libvips refuses (corrupt, over the limits) gets an info log line and
// no variants.
//
// Ownership: borrows the Store (it must outlive this object). The queue holds one small entry
// (project, blob reference) per finished upload and is drained one image at a time, so at most
// one image is in memory. Destruction drops what is queued and waits for the image in hand.
// Thread-safety: uploaded() and idle() from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "common/ids.hpp"
#include "media/variants.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::storage {
class Store;
}

namespace fieldsync::daemon {

class VariantMaker {
 public:
  explicit VariantMaker(storage::Store& store, media::VariantOptions options = {});
  ~VariantMaker();
  VariantMaker(const VariantMaker&) = delete;
  VariantMaker& operator=(const VariantMaker&) = delete;

  // The blob `info` was uploaded into `project`: queue making its variants (images only).
  void uploaded(const ProjectId& project, const storage::BlobInfo& info);
  // True when one of the types variants are made of (image/jpeg, image/png, image/webp;
  // letter case and parameters ignored).
  static bool makes_variants_of(std::string_view media_type);

 private:
  void run();
  void make(const ProjectId& project, const storage::BlobInfo& info);

  storage::Store& store_;
  media::VariantOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<ProjectId, storage::BlobInfo>> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace fieldsync::daemon
