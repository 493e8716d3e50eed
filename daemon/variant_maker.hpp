// VariantMaker: makes the preview and thumbnail of each photo this device holds without them
// (docs/storage.md "Variants of a blob": who makes them), in the background.
//
// After an upload of a JPEG, PNG or WebP finishes, uploaded() queues it; held() queues a blob
// that became held otherwise (from a peer, a bundle), made only when a document of the app
// refers to it and no `_variants` document names it a variant; at start the worker looks
// through every project once for held photos a document refers to that have no `_variants`
// document (uploads made before variants were made, or held while blob.make_variants was
// false). One worker thread of
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
// (project, blob reference) per finished upload or held blob and is drained one image at a
// time, so at most one image is in memory. An original is tried once per process (an image
// libvips refuses is tried again only after a restart). Destruction drops what is queued and
// waits for the image in hand.
// Thread-safety: uploaded() and held() from any thread (held() may be called from a
// BlobStore::watch_held callback: it only queues).
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
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
  // The blob `id` became held by `project` (from a peer, a bundle, or any other way): queue
  // making its variants if it turns out to be an original without them.
  void held(const ProjectId& project, const storage::BlobId& id);
  // True when one of the types variants are made of (image/jpeg, image/png, image/webp;
  // letter case and parameters ignored).
  static bool makes_variants_of(std::string_view media_type);

 private:
  struct Job {
    ProjectId project;
    storage::BlobInfo info;  // uploaded(): the blob; held(): only its id
    bool check = false;      // held(): look up whether it is an original without variants
  };
  void run();
  void sweep();
  void check(const ProjectId& project, const storage::BlobId& id);
  void make(const ProjectId& project, const storage::BlobInfo& info);
  bool stopping();

  storage::Store& store_;
  media::VariantOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  // Originals tried in this process (worker thread only): each is made at most once.
  std::set<std::pair<ProjectId, storage::BlobId>> tried_;
  std::thread worker_;
};

}  // namespace fieldsync::daemon
