// BlobStore: the attachments (photos, audio, any bytes) of this device's projects
// (docs/storage.md "Blobs"). A blob is content-addressed: its id is the SHA-256 of its bytes,
// and a document refers to it with a blob reference object in its JSON body
// ({"$blob": id, "size": n, "type": media type, "root": chunk root}, blob_ref.hpp), so the
// reference is part of the signed, hashed version.
//
// Storage: one file per blob, whatever the number of projects and documents that refer to it,
// under <data_dir>/blobs/ (0700; files 0600, immutable once named by their hash); uploads in
// progress are written under blobs/incoming/ and named only once complete, hashed and fsynced.
// LMDB records (tables blob_held, blob_proj, blob_refs) say which blobs are held, with their
// chunk hashes, which projects hold each, and which documents' current heads refer to them.
// Every read of a blob verifies each chunk it returns against its recorded hash (bit rot is
// data_loss, never silently wrong bytes).
//
// References are indexed from each project's changes feed (the blob worker catches up after
// every commit that added changes): a blob referred to by no current head of a live document
// of a project, and uploaded longer ago than blob.unreferenced_grace_ms, is released from the
// project by gc(); a file no project holds any more is deleted.
//
// Threads: one blob worker thread, owned by this object, does every file write, fsync, rename
// and unlink, the reference indexing and gc, so uploads and large transfers never run on an
// event loop. Completion callbacks run on the worker thread: callers post them back to their
// own thread. All methods may be called from any thread; BlobReader is not thread-safe (one
// reader per download, used from one thread at a time).
// Errors: invalid_argument (bad id, media type), not_found (unknown project; a blob this
// project does not hold), resource_exhausted (disk full, blob.project_quota_bytes),
// too_large (blob.max_blob_bytes), data_loss (a stored chunk does not match its hash, a file
// missing), cancelled (the store is closing), internal.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::storage {

// Blobs are hashed and verified in chunks of this many bytes (the last may be shorter): the
// chunk root is SHA-256 over the concatenated SHA-256 of each chunk, in order (an empty blob
// has no chunks: its root is SHA-256 of nothing). Part of the storage and sync formats.
inline constexpr std::uint32_t kBlobChunkBytes = 256u * 1024;
// The longest media type a blob may carry ("type" of a reference; RFC 6838 allows 127+1+127).
inline constexpr std::size_t kMaxMediaTypeBytes = 255;

using BlobId = crypto::Digest;  // SHA-256 of the blob's bytes

// What a device fetches from its peers by itself (docs/storage.md "Blob policy"), in rising
// order: each level fetches what the one below does and more. Whatever the level, a blob an
// app asks for (demand()) is fetched, except under `none`.
enum class BlobPolicy : std::uint8_t {
  none = 0,        // nothing, not even on demand (only for a peer or a kind of link)
  on_demand = 1,   // only blobs asked for
  thumbnails = 2,  // thumbnails; the rest on demand
  phone = 3,       // thumbnails and previews; originals on demand
  archive = 4,     // everything (hubs, laptops)
};
// The spelling in the API, syncctl and the config file: "none", "on-demand", "thumbnails",
// "phone", "archive".
constexpr std::string_view blob_policy_name(BlobPolicy p) {
  switch (p) {
    case BlobPolicy::none: return "none";
    case BlobPolicy::on_demand: return "on-demand";
    case BlobPolicy::thumbnails: return "thumbnails";
    case BlobPolicy::phone: return "phone";
    case BlobPolicy::archive: return "archive";
  }
  return "none";
}
constexpr std::optional<BlobPolicy> parse_blob_policy(std::string_view s) {
  for (auto p : {BlobPolicy::none, BlobPolicy::on_demand, BlobPolicy::thumbnails, BlobPolicy::phone,
                 BlobPolicy::archive})
    if (blob_policy_name(p) == s) return p;
  return std::nullopt;
}

// A project's policy on this device (never synced: each device chooses for itself).
struct ProjectBlobPolicy {
  std::optional<BlobPolicy> policy;      // unset: blob.policy; never `none`
  std::map<DeviceId, BlobPolicy> peers;  // with these peers, this level instead
};
// The most per-peer levels one project's policy holds.
inline constexpr std::size_t kMaxBlobPolicyPeers = 256;

// Where a blob asked for on demand stands (demand()).
struct BlobDemand {
  bool held = false;       // here: read it
  bool receiving = false;  // a session is fetching it now
  std::uint64_t size = 0;
  std::uint64_t received_bytes = 0;  // verified bytes of it here so far (kept across attempts)
  std::int64_t until_ms = 0;         // sessions look for it until then (unix ms)
};

struct BlobOptions {
  // blob.max_blob_bytes: the largest blob accepted (upload, and later from peers).
  std::uint64_t max_blob_bytes = 4ull << 30;
  // blob.project_quota_bytes: bytes of blobs one project may hold on this device (a blob held
  // by two projects counts in both). 0 = no limit.
  std::uint64_t project_quota_bytes = 16ull << 30;
  // blob.unreferenced_grace_ms: how long an uploaded blob stays without any document
  // referring to it before gc() releases it (the app uploads, then writes the document).
  std::uint64_t unreferenced_grace_ms = 24ull * 3600 * 1000;
  // blob.gc_interval_ms: how often the daemon runs gc() on the blob worker.
  std::uint64_t gc_interval_ms = 3600ull * 1000;
  // blob.policy: what the device fetches by itself in a project that sets no policy.
  BlobPolicy policy = BlobPolicy::archive;
  // blob.demand_ttl_ms: how long sessions keep looking for a blob asked for on demand (each
  // new request for it starts the time again).
  std::uint64_t demand_ttl_ms = 10ull * 60 * 1000;
  // blob.max_demands: blobs asked for at once (beyond: the demand that ends first is dropped).
  std::uint32_t max_demands = 1024;
  // blob.fetch_wait_ms: how long a download of a blob not here yet waits for it by default
  // before answering 202 with progress (the request's `wait` may ask for less or more, up to
  // api.request_timeout_ms).
  std::uint64_t fetch_wait_ms = 15ull * 1000;
  // blob.keep_fetched_ms: how long a blob this device fetched beyond its own level (asked for
  // on demand by an app, or by a peer it relayed the blob for) stays held after it arrived;
  // then gc() releases it (still referred to: fetched again on demand). 0: kept for good.
  // Never on a named destination of the project, nor for blobs uploaded here.
  std::uint64_t keep_fetched_ms = 24ull * 3600 * 1000;
  // blob.make_variants: the daemon makes the preview and thumbnail of the photos it holds
  // without them (daemon/variant_maker.hpp); false: never (another device or the app does).
  bool make_variants = true;
  // blob.max_peer_blobs: blobs recorded per peer and project as what the peer said it holds
  // (note_peer_blobs); the rest of its list counts as not held (a bundle for it carries them).
  std::uint32_t max_peer_blobs = 262144;
};

// What a blob is, as its reference in a document states it and as it is recorded here.
struct BlobInfo {
  BlobId id{};
  std::uint64_t size = 0;
  std::string media_type;  // e.g. "image/jpeg"; "application/octet-stream" when unknown
  crypto::Digest root{};   // chunk root (kBlobChunkBytes)
};

// A blob as one project sees it (list_blobs()).
struct ProjectBlob {
  BlobInfo info;
  bool held = false;          // the bytes are on this device
  std::uint32_t refs = 0;     // documents of the project whose current heads refer to it
  std::int64_t added_ms = 0;  // first held or referred to here
  // A `_variants` document of the project names it as a thumbnail / a preview.
  bool thumbnail = false;
  bool preview = false;
};

struct BlobUsage {
  std::uint64_t held_bytes = 0;    // bytes of the blobs this project holds here
  std::uint64_t held_count = 0;    // blobs it holds
  std::uint64_t wanted_count = 0;  // referred to by its documents, not held here
  std::uint64_t quota_bytes = 0;   // blob.project_quota_bytes (0: none)
};

struct GcResult {
  std::uint64_t released = 0;       // (project, blob) holdings released
  std::uint64_t files_deleted = 0;  // blob files no project held any more
  std::uint64_t bytes_freed = 0;
};

// One upload in progress (begin_upload()). Bytes are written and hashed on the blob worker in
// the order write() was called; nothing is visible to readers until finish() completed. An
// upload dropped without finish() is aborted (its partial file is removed).
class BlobUpload {
 public:
  virtual ~BlobUpload() = default;
  // Queues `piece` to be written; done(status) runs on the worker once it is on disk (page
  // cache). After an error every later write and finish() fails with that error.
  // Errors: too_large (beyond blob.max_blob_bytes), resource_exhausted (disk full, quota).
  virtual void write(Bytes piece, std::function<void(Status)> done) = 0;
  // Completes: fsync, names the file by its hash (an already held blob keeps its file), and
  // records the blob as held by the project (unreferenced until a document refers to it).
  // done runs on the worker. `media_type` is checked here (invalid_argument).
  virtual void finish(std::string media_type, std::function<void(Result<BlobInfo>)> done) = 0;
  // Gives up: the partial file is removed (on the worker). Idempotent.
  virtual void abort() = 0;
};

// Reads one held blob, verifying each chunk against its recorded hash. Reads run on the
// calling thread (one chunk of kBlobChunkBytes at a time at most).
class BlobReader {
 public:
  virtual ~BlobReader() = default;
  virtual const BlobInfo& info() const = 0;
  // Up to `max_bytes` bytes at `offset` (fewer at the end; empty at or beyond size()).
  // Errors: data_loss (a chunk does not match its hash, the file is shorter or missing).
  virtual Result<Bytes> read(std::uint64_t offset, std::size_t max_bytes) = 0;
  // The SHA-256 of each chunk, in order (what a peer verifies chunks against).
  virtual const std::vector<crypto::Digest>& chunk_hashes() const = 0;
  // Chunk `index` (kBlobChunkBytes at offset index * kBlobChunkBytes), verified, without a
  // copy: the view is valid until the next call on this reader. Errors as read().
  virtual Result<ByteView> chunk(std::uint32_t index) = 0;
};

// A blob arriving from peers, chunk by chunk (begin_receive()). Its bytes go to
// blobs/partial/<id> and its chunk hashes, once known and checked against the reference's
// root, to blobs/partial/<id>.chunks, so a transfer cut by a lost link or a kill -9 resumes
// from the chunks already there (each re-verified when the receiver is opened). put_chunk()
// writes to the page cache on the calling thread; finish() fsyncs and names the file on the
// blob worker. Not thread-safe: one receiver per transfer, used from one thread.
class BlobReceiver {
 public:
  virtual ~BlobReceiver() = default;
  virtual const BlobInfo& info() const = 0;
  // Chunks of the blob: (size + kBlobChunkBytes - 1) / kBlobChunkBytes.
  std::uint32_t chunk_count() const {
    return static_cast<std::uint32_t>((info().size + kBlobChunkBytes - 1) / kBlobChunkBytes);
  }
  virtual bool has_chunk_hashes() const = 0;
  // The chunk hashes a peer sent: verification_failed unless there are chunk_count() of
  // them and SHA-256 over them is the reference's root.
  virtual Status set_chunk_hashes(std::vector<crypto::Digest> hashes) = 0;
  // The first chunk not yet here at or after `from` (nullopt: none).
  virtual std::optional<std::uint32_t> next_missing(std::uint32_t from = 0) const = 0;
  virtual std::uint32_t chunks_held() const = 0;
  // One chunk as received: verification_failed when it does not match its hash or length
  // (nothing is written), failed_precondition before set_chunk_hashes().
  virtual Status put_chunk(std::uint32_t index, ByteView data) = 0;
  bool complete() const { return has_chunk_hashes() && chunks_held() == chunk_count(); }
  // Once complete: fsync, name the file by its id and record it as held by every project
  // that refers to it; done runs on the worker. failed_precondition when not complete.
  virtual void finish(std::function<void(Result<BlobInfo>)> done) = 0;
};

class Store;

class BlobStore {
 public:
  virtual ~BlobStore() = default;

  virtual const BlobOptions& options() const = 0;

  // Starts an upload of a blob into `project`. Errors: not_found (project).
  virtual Result<std::unique_ptr<BlobUpload>> begin_upload(const ProjectId& project) = 0;
  // Opens a blob the project holds. not_found when the project neither holds nor refers to
  // it; failed_precondition (message: "not held on this device") when a document of the
  // project refers to it but its bytes are not here yet.
  virtual Result<std::unique_ptr<BlobReader>> open(const ProjectId& project,
                                                   const BlobId& id) const = 0;
  // What the project holds or refers to (references indexed so far), in id order, starting
  // after `after` (paging), at most `limit`.
  virtual Result<std::vector<ProjectBlob>> list(const ProjectId& project,
                                                std::optional<BlobId> after,
                                                std::uint32_t limit) const = 0;
  // The project's record of one blob, as list() gives it; nullopt when the project neither
  // holds nor refers to it (or its record does not read back).
  virtual Result<std::optional<ProjectBlob>> find(const ProjectId& project,
                                                  const BlobId& id) const = 0;
  virtual Result<BlobUsage> usage(const ProjectId& project) const = 0;
  // Stores `data` as a blob of the project on the calling thread, with the same checks,
  // fsync and records as an upload (the blob is unreferenced until a document refers to it).
  // For small blobs made on this device (the variants of a photo): the caller's thread does
  // the file write and fsync, so never call it on an event loop. Errors as for uploads.
  virtual Result<BlobInfo> put(const ProjectId& project, ByteView data, std::string media_type) = 0;
  // Blobs documents of the project refer to and that are not held here (to fetch from
  // peers): thumbnails first, then previews, then every other blob (a blob is a thumbnail or
  // a preview once a `_variants` document names it so), each group in id order; paging
  // continues after `after` in that order; at most `limit`. Only the groups `upto` fetches
  // (thumbnails: the first; phone: the first two; archive: all; less: none). Those beyond
  // blob.max_blob_bytes are left out. The order and the page come from an index in memory
  // (built from the records at open, kept by every change of them), then the page's records
  // are read: a call costs the page, not the project's number of blobs.
  virtual Result<std::vector<BlobInfo>> wanted(const ProjectId& project,
                                               std::optional<BlobId> after, std::uint32_t limit,
                                               BlobPolicy upto = BlobPolicy::archive) const = 0;
  // What wanted() with `upto` would list in all (totals kept in memory), and of `also` (e.g.
  // demanded()) those not held that it would not: blobs and bytes (the backlog shown per peer).
  virtual Result<std::pair<std::uint64_t, std::uint64_t>> wanted_total(
      const ProjectId& project, BlobPolicy upto, const std::vector<BlobId>& also = {}) const = 0;

  // The project's policy as set (set_policy), and its level with a peer: the peer's entry,
  // else the project's, else blob.policy (also when the record cannot be read).
  virtual Result<ProjectBlobPolicy> policy(const ProjectId& project) const = 0;
  virtual BlobPolicy policy_with(const ProjectId& project, const DeviceId& peer) const = 0;
  // Replaces the project's policy. Errors: not_found (project), invalid_argument (`none` as
  // the project's level, more than kMaxBlobPolicyPeers peers).
  virtual Status set_policy(const ProjectId& project, const ProjectBlobPolicy& policy) = 0;

  // Asks for a blob the project refers to and does not hold: sessions fetch it from any
  // peer that has it (even where the policy would not) for blob.demand_ttl_ms from now, and
  // peers that are asked for it and lack it ask their own peers (a demand relayed through
  // the mesh). Held already: only the status. The demand is kept in the store, so it
  // outlives a restart (until it ends). Errors: not_found (no document of the project refers
  // to it, as indexed so far).
  virtual Result<BlobDemand> demand(const ProjectId& project, const BlobId& id) = 0;
  // The project's blobs asked for and not held, whose demand has not ended.
  virtual std::vector<BlobId> demanded(const ProjectId& project) const = 0;
  // How many gc() passes so far released blobs that documents still refer to (fetched beyond
  // the level, blob.keep_fetched_ms): a session may fetch again a blob it fetched before the
  // count last moved (and not one whose finish failed since).
  virtual std::uint64_t refetchable_epoch() const = 0;
  // Calls `fn(project, blob)` each time a blob becomes held by a project (an upload, a
  // transfer finished, put()), on the thread that recorded it (often the blob worker): keep
  // it short, post to your own thread, and call no BlobStore method from it. Returns a
  // token for unwatch_held(); once that returned, fn is not running and is never called.
  virtual std::uint64_t watch_held(std::function<void(const ProjectId&, const BlobId&)> fn) = 0;
  virtual void unwatch_held(std::uint64_t token) = 0;
  // What `peer` said it holds of the project's blobs (the BLOBS_HELD records of a bundle it
  // wrote, docs/protocol.md): replaces what was recorded of it. `held` in ascending id order;
  // the first blob.max_peer_blobs are kept. Errors: not_found (project), invalid_argument (this
  // device, or ids not strictly ascending).
  virtual Status note_peer_blobs(const ProjectId& project, const DeviceId& peer,
                                 const std::vector<BlobId>& held) = 0;
  // What was recorded, in ascending id order: empty when nothing was, or when the record does
  // not read back (the peer then counts as holding no blob). Errors: not_found (project).
  virtual Result<std::vector<BlobId>> peer_blobs(const ProjectId& project,
                                                 const DeviceId& peer) const = 0;
  // Starts (or resumes) receiving a wanted blob of the project. Errors: not_found (the
  // project does not refer to it), already_exists (it is held), resource_exhausted
  // (blob.project_quota_bytes), too_large (blob.max_blob_bytes).
  virtual Result<std::unique_ptr<BlobReceiver>> begin_receive(const ProjectId& project,
                                                              const BlobId& id) = 0;

  // Brings the reference index of `project` up to date with its changes feed (on the
  // calling thread; the worker does the same after commits). Errors: not_found.
  virtual Status index(const ProjectId& project) = 0;
  // Releases unreferenced blobs past their grace, and blobs fetched beyond this device's level
  // past blob.keep_fetched_ms, and deletes files no project holds, for every project (on the
  // calling thread; the daemon runs it on a timer through the worker).
  virtual Result<GcResult> gc(std::int64_t now_ms) = 0;
  // Blobs put for nothing (the variants of an original erased while they were made): those
  // of `ids` no document of the project refers to are released now rather than after
  // blob.unreferenced_grace_ms, and a gc is queued on the worker. Errors: not_found (project).
  virtual Status release_unreferenced(const ProjectId& project, const std::vector<BlobId>& ids) = 0;
  // Asks the worker to run `job` (e.g. gc) after the work already queued; it runs on the
  // worker thread. Dropped (never run) once the store is closing.
  virtual void post(std::function<void()> job) = 0;
};

}  // namespace fieldsync::storage
