#include "daemon/variant_maker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>

#include "storage/blob_ref.hpp"
#include "storage/store.hpp"

namespace fieldsync::daemon {

VariantMaker::VariantMaker(storage::Store& store, media::VariantOptions options)
    : store_(store), options_(options), worker_([this] { run(); }) {}

VariantMaker::~VariantMaker() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

bool VariantMaker::makes_variants_of(std::string_view media_type) {
  std::string t(media_type.substr(0, media_type.find(';')));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return t == media::kJpeg || t == media::kPng || t == media::kWebp;
}

void VariantMaker::uploaded(const ProjectId& project, const storage::BlobInfo& info) {
  if (!makes_variants_of(info.media_type)) return;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.push_back(Job{project, info, false});
  }
  cv_.notify_one();
}

void VariantMaker::held(const ProjectId& project, const storage::BlobId& id) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    storage::BlobInfo info;
    info.id = id;
    queue_.push_back(Job{project, std::move(info), true});
  }
  cv_.notify_one();
}

bool VariantMaker::stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

void VariantMaker::run() {
  sweep();
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (job.check)
      check(job.project, job.info.id);
    else
      make(job.project, job.info);
  }
}

namespace {

// An original variants are made of: held, referred to by a document of the app (a `_variants`
// document's "of" is not a reference), not itself named a variant, and of an image type.
bool is_original(const storage::ProjectBlob& b) {
  return b.held && b.refs > 0 && !b.thumbnail && !b.preview &&
         VariantMaker::makes_variants_of(b.info.media_type);
}

}  // namespace

void VariantMaker::check(const ProjectId& project, const storage::BlobId& id) {
  if (tried_.count({project, id})) return;
  // Our own variants (put() makes them held) are not referred to until their `_variants`
  // document is indexed, and named variants then: neither is an original.
  auto b = store_.blobs().find(project, id);
  if (!b || !*b || !is_original(**b)) return;
  make(project, (*b)->info);
}

void VariantMaker::sweep() {
  auto projects = store_.list_projects();
  if (!projects) {
    spdlog::warn("looking for photos without variants: {}", projects.error().message);
    return;
  }
  std::uint64_t queued = 0;
  for (const auto& p : *projects) {
    std::optional<storage::BlobId> after;
    for (;;) {
      if (stopping()) return;
      auto page = store_.blobs().list(p.id, after, 256);
      if (!page || page->empty()) break;
      after = page->back().info.id;
      for (const auto& b : *page) {
        if (!is_original(b)) continue;
        auto existing = store_.blob_variants(p.id, b.info.id);
        if (!existing || *existing) continue;
        {
          std::lock_guard lock(mu_);
          if (stopping_) return;
          queue_.push_back(Job{p.id, b.info, false});
        }
        ++queued;
      }
    }
  }
  if (queued) spdlog::info("making the variants of {} photos held without them", queued);
}

void VariantMaker::make(const ProjectId& project, const storage::BlobInfo& info) {
  if (!tried_.insert({project, info.id}).second) return;
  if (tried_.size() > 65536) tried_.clear();  // a bound; a repeat costs one look-up below
  const std::string id = storage::digest_hex(info.id);
  auto existing = store_.blob_variants(project, info.id);
  if (!existing) {
    spdlog::info("no variants of blob {}: {}", id, existing.error().message);
    return;
  }
  if (*existing) return;  // recorded already (supplied by an app, or made before)
  if (info.size > options_.max_input_bytes) {
    spdlog::info("no variants of blob {} ({}): {} bytes is over the {} bytes variants are made of",
                 id, info.media_type, info.size, options_.max_input_bytes);
    return;
  }
  auto reader = store_.blobs().open(project, info.id);
  if (!reader) {
    spdlog::info("no variants of blob {}: {}", id, reader.error().message);
    return;
  }
  // Only an image is read whole (up to max_input_bytes): anything else is known from its first
  // chunk, so a large video uploaded as image/jpeg costs one chunk of memory, not its size.
  Bytes original;
  {
    auto head = (*reader)->read(0, storage::kBlobChunkBytes);
    if (!head || !media::sniff_image_type(ByteView(*head))) {
      spdlog::info(
          "no variants of blob {} ({}): {}", id, info.media_type,
          head ? std::string("the data is not a JPEG, PNG or WebP image") : head.error().message);
      return;
    }
  }
  original.reserve(static_cast<std::size_t>(info.size));
  while (original.size() < info.size) {
    auto piece = (*reader)->read(original.size(), storage::kBlobChunkBytes);
    if (!piece || piece->empty()) {
      spdlog::info("no variants of blob {}: {}", id,
                   piece ? std::string("shorter than recorded") : piece.error().message);
      return;
    }
    original.insert(original.end(), piece->begin(), piece->end());
  }
  reader->reset();
  auto made = media::make_variants(ByteView(original), info.media_type, options_);
  original = Bytes{};
  if (!made) {
    spdlog::info("no variants of blob {} ({}): {}", id, info.media_type, made.error().message);
    return;
  }
  auto preview =
      store_.blobs().put(project, ByteView(made->preview.data), made->preview.media_type);
  if (!preview) {
    spdlog::warn("the preview of blob {} was not stored: {}", id, preview.error().message);
    return;
  }
  auto thumbnail =
      store_.blobs().put(project, ByteView(made->thumbnail.data), made->thumbnail.media_type);
  if (!thumbnail) {
    spdlog::warn("the thumbnail of blob {} was not stored: {}", id, thumbnail.error().message);
    return;
  }
  auto recorded =
      store_.set_blob_variants(project, info, *preview, *thumbnail, storage::kMadeByFieldsync);
  if (!recorded) {
    if (recorded.error().code == Errc::not_found) {
      // The original went while they were made (its document erased): they show it, so they
      // go now rather than after blob.unreferenced_grace_ms.
      spdlog::info("variants of blob {} not recorded: {}", id, recorded.error().message);
      auto released = store_.blobs().release_unreferenced(project, {preview->id, thumbnail->id});
      if (!released)
        spdlog::warn("the variants made of blob {} were not released: {}", id,
                     released.error().message);
    } else if (recorded.error().code != Errc::already_exists) {
      spdlog::warn("the variants of blob {} were not recorded: {}", id, recorded.error().message);
    }
    return;  // (an app's arrived meanwhile: it wins; ours are released by gc)
  }
  spdlog::info("variants of blob {} made: preview {}x{} ({} bytes), thumbnail {}x{} ({} bytes)", id,
               made->preview.width, made->preview.height, preview->size, made->thumbnail.width,
               made->thumbnail.height, thumbnail->size);
}

}  // namespace fieldsync::daemon
