// BlobStore over files in <data_dir>/blobs and three LMDB tables (docs/storage.md "Blobs").
#include "storage/blob_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include <xxhash.h>

#include "common/clock.hpp"
#include "common/encoding.hpp"
#include "common/private_dir.hpp"
#include "storage/blob_ref.hpp"
#include "storage/store_impl.hpp"

namespace fieldsync::storage {
namespace fs = std::filesystem;
namespace {

constexpr std::uint8_t kRecordVersion = 1;
constexpr std::uint8_t kProjHeld = 1;
// blob_proj flags set once a `_variants` document of the project names the blob as such
// (wanted() fetches thumbnails first, then previews).
constexpr std::uint8_t kProjThumbnail = 2;
constexpr std::uint8_t kProjPreview = 4;
// Held because it arrived from a peer or a bundle, not uploaded here: on a device whose own
// level does not fetch it (an original on a phone that asked for it, or relayed it for a peer),
// gc() releases it blob.keep_fetched_ms after it arrived.
constexpr std::uint8_t kProjFetched = 8;
constexpr std::uint8_t kProjFlags = kProjHeld | kProjThumbnail | kProjPreview | kProjFetched;
// A file under blobs/ with no record (a crash between naming it and recording it) or a part
// under blobs/incoming/ is deleted by gc() once untouched this long.
constexpr std::int64_t kOrphanAgeMs = 3600 * 1000;
// Changes read per indexing transaction.
constexpr std::uint32_t kIndexPage = 512;
// The stored indexing cursor is advanced at least this often (a restart re-reads at most this
// many changes of documents without references).
constexpr std::uint64_t kCursorSaveEvery = 4096;
// The most blob ids one document's heads are indexed with (a body of 1 MiB holds at most
// ~6,000 references; more is refused on a local write and truncated from a peer).
constexpr std::size_t kMaxRefsPerDoc = 4096;

Error errno_error(int err, const std::string& what) {
  if (err == ENOSPC || err == EDQUOT)
    return make_error(Errc::resource_exhausted, what + ": no space left on the device");
  return make_error(Errc::internal, what + ": " + std::strerror(err));
}

// Writes all of `data` at `offset` (pwrite), or at the file position when `offset` < 0.
// 0, or the errno of the failure.
int write_all(int fd, ByteView data, off_t offset = -1) {
  std::size_t at = 0;
  while (at < data.size()) {
    ssize_t n = offset < 0 ? ::write(fd, data.data() + at, data.size() - at)
                           : ::pwrite(fd, data.data() + at, data.size() - at,
                                      offset + static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    at += static_cast<std::size_t>(n);
  }
  return 0;
}

// Reads into `buf` from `offset` (pread), or from the file position when `offset` < 0, until
// it is full or the file ends. The bytes read, or -errno.
ssize_t read_up_to(int fd, std::span<std::uint8_t> buf, off_t offset = -1) {
  std::size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = offset < 0 ? ::read(fd, buf.data() + got, buf.size() - got)
                           : ::pread(fd, buf.data() + got, buf.size() - got,
                                     offset + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

// Chunk `index` of a blob file of `size` bytes into `buf` (resized to the chunk's length):
// false when the file holds less of it (or cannot be read).
bool read_chunk(int fd, std::uint64_t size, std::uint64_t index, Bytes& buf) {
  const std::uint64_t at = index * kBlobChunkBytes;
  buf.resize(static_cast<std::size_t>(std::min<std::uint64_t>(kBlobChunkBytes, size - at)));
  return read_up_to(fd, buf, static_cast<off_t>(at)) == static_cast<ssize_t>(buf.size());
}

// The blob id in a blob_proj key (project 16, blob 32) or a blob_held key (blob 32).
BlobId blob_of_key(ByteView key) {
  BlobId id{};
  std::copy_n(key.end() - 32, 32, id.begin());
  return id;
}

// fsync, timed into `h` (Store::fsync_latency()).
int timed_fsync(int fd, LatencyHistogram& h) {
  LatencyTimer timer(&h);
  return ::fsync(fd);
}

Status fsync_dir(const fs::path& dir, LatencyHistogram& h) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error(errno, "opening " + dir.string());
  int rc = timed_fsync(fd, h);
  int err = errno;
  ::close(fd);
  if (rc != 0) return errno_error(err, "fsync of " + dir.string());
  return {};
}

// Table keys. blob_held: blob id, and blob id + 's' for its chunks' checksums. blob_proj: project,
// blob id. blob_refs: document key.
Key sums_key(const BlobId& id) {
  Key k;
  k.raw(ByteView(id)).u8('s');
  return k;
}
Key proj_key(const ProjectId& p, const BlobId& id) {
  Key k;
  k.raw(p.view()).raw(ByteView(id));
  return k;
}

crypto::Digest chunk_root(const std::vector<crypto::Digest>& chunks) {
  crypto::Sha256 h;
  for (const auto& c : chunks) h.update(ByteView(c));
  return h.finish();
}

// The local checksum of a chunk as stored here (XXH3-64): what a read checks the file against,
// a fraction of the cost of SHA-256. Bit rot and a truncated or overwritten file are what it
// guards against; bytes from outside (peers, bundles) are checked with SHA-256 against the
// chunk hashes the author's reference commits to, and only then summed.
std::uint64_t chunk_sum(ByteView data) { return XXH3_64bits(data.data(), data.size()); }

// chunk_sum() over pieces.
class ChunkSum {
 public:
  ChunkSum() : s_(XXH3_createState()) {
    if (!s_) throw std::bad_alloc();
    XXH3_64bits_reset(s_.get());
  }
  void update(ByteView data) { XXH3_64bits_update(s_.get(), data.data(), data.size()); }
  // The sum of everything fed since the last finish(); starts again from empty.
  std::uint64_t finish() {
    const std::uint64_t d = XXH3_64bits_digest(s_.get());
    XXH3_64bits_reset(s_.get());
    return d;
  }

 private:
  struct Free {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  std::unique_ptr<XXH3_state_t, Free> s_;
};

// blob_held value (key: blob id): u8 1, u64 size, root (32), u64 held since ms, str16 media
// type, u32 n, n x chunk SHA-256 (32). The chunks' local checksums are a record of their own
// (sums_key()), which daemons before them skip (they read 32-byte keys only).
struct HeldRecord {
  BlobInfo info;
  std::int64_t since_ms = 0;
  std::vector<crypto::Digest> chunks;
  std::vector<std::uint64_t> sums;  // chunk_sum() of each chunk; empty: none recorded

  Bytes encode() const {
    Bytes b;
    ByteWriter w(b);
    w.u8(kRecordVersion);
    w.u64(info.size);
    w.raw(ByteView(info.root));
    w.u64(static_cast<std::uint64_t>(since_ms));
    w.str16(info.media_type);
    w.u32(static_cast<std::uint32_t>(chunks.size()));
    for (const auto& c : chunks) w.raw(ByteView(c));
    return b;
  }
  // The same checks as on write: chunk count matches the size, the root matches the chunks,
  // the media type is valid.
  static std::optional<HeldRecord> decode(const BlobId& id, ByteView v) {
    ByteReader r(v);
    HeldRecord h;
    h.info.id = id;
    if (r.u8() != kRecordVersion) return std::nullopt;
    h.info.size = r.u64();
    h.info.root = r.fixed<32>();
    h.since_ms = static_cast<std::int64_t>(r.u64());
    h.info.media_type = std::string(r.str16());
    std::uint32_t n = r.u32();
    if (!r.ok() || r.remaining() != std::size_t{n} * 32) return std::nullopt;
    if (n != (h.info.size + kBlobChunkBytes - 1) / kBlobChunkBytes) return std::nullopt;
    h.chunks.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) h.chunks.push_back(r.fixed<32>());
    if (!r.ok() || !valid_media_type(h.info.media_type) || chunk_root(h.chunks) != h.info.root)
      return std::nullopt;
    return h;
  }
  // blob_held value at sums_key(): u8 1, n x u64 chunk_sum() of each chunk.
  Bytes encode_sums() const {
    Bytes b;
    ByteWriter w(b);
    w.u8(kRecordVersion);
    for (std::uint64_t s : sums) w.u64(s);
    return b;
  }
  // Takes the checksums of a sums record; one that does not fit the chunks is not used (the
  // chunks are then checked with SHA-256).
  void decode_sums(ByteView v) {
    sums.clear();
    ByteReader r(v);
    if (r.u8() != kRecordVersion || r.remaining() != chunks.size() * 8) return;
    sums.reserve(chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) sums.push_back(r.u64());
  }
  // Whether a chunk read from the file is the one recorded.
  bool chunk_matches(std::size_t index, ByteView data) const {
    return sums.empty() ? crypto::sha256(data) == chunks[index] : chunk_sum(data) == sums[index];
  }
};

// blob_proj value: u8 1, u8 flags (1 held, 2 thumbnail, 4 preview), u32 refs, u64 added ms, u64
// size, root (32), str16 media type.
struct ProjRecord {
  BlobInfo info;
  std::uint8_t flags = 0;
  std::uint32_t refs = 0;
  std::int64_t added_ms = 0;

  bool held() const { return flags & kProjHeld; }
  // No document refers to it and it was released without grace (added_ms 0: its document
  // was erased, or it was put for nothing): gc drops it at its next pass, and nothing new may
  // name it as an original.
  bool released_at_once() const { return refs == 0 && added_ms == 0; }
  // As BlobStore::list() and find() show it.
  ProjectBlob project_blob() const {
    return ProjectBlob{
        info, held(), refs, added_ms, (flags & kProjThumbnail) != 0, (flags & kProjPreview) != 0};
  }
  Bytes encode() const {
    Bytes b;
    ByteWriter w(b);
    w.u8(kRecordVersion);
    w.u8(flags);
    w.u32(refs);
    w.u64(static_cast<std::uint64_t>(added_ms));
    w.u64(info.size);
    w.raw(ByteView(info.root));
    w.str16(info.media_type);
    return b;
  }
  static std::optional<ProjRecord> decode(const BlobId& id, ByteView v) {
    ByteReader r(v);
    ProjRecord p;
    p.info.id = id;
    if (r.u8() != kRecordVersion) return std::nullopt;
    p.flags = r.u8();
    p.refs = r.u32();
    p.added_ms = static_cast<std::int64_t>(r.u64());
    p.info.size = r.u64();
    p.info.root = r.fixed<32>();
    p.info.media_type = std::string(r.str16());
    if (!r.ok() || !r.at_end() || (p.flags & ~kProjFlags) || !valid_media_type(p.info.media_type))
      return std::nullopt;
    return p;
  }
};

// The project's record of a blob in `txn`: nullopt when it has none, or one that does not
// read back.
Result<std::optional<ProjRecord>> read_proj(const LmdbTxn& txn, const Tables& t, const ProjectId& p,
                                            const BlobId& id) {
  auto v = txn.get(t.blob_proj, proj_key(p, id));
  if (!v) return v.error();
  if (!*v) return std::optional<ProjRecord>{};
  return ProjRecord::decode(id, **v);
}

// Every write of a blob_proj record in a write transaction goes through here, which keeps
// each change (project, before, after) for the in-memory index (BlobStoreImpl::ProjIndex),
// moved by BlobStoreImpl::apply() once the transaction committed. `before` is the record as
// read (nullopt: none, or one that does not read back).
struct ProjWrites {
  LmdbTxn& txn;
  const Tables& t;
  std::vector<std::tuple<ProjectId, std::optional<ProjRecord>, std::optional<ProjRecord>>> list;

  Status put(const ProjectId& p, std::optional<ProjRecord> before, const ProjRecord& after) {
    FS_TRY(txn.put(t.blob_proj, proj_key(p, after.info.id), after.encode()));
    list.emplace_back(p, std::move(before), after);
    return {};
  }
  // `key` may be malformed (not project + blob id): deleted all the same.
  Status del(ByteView key, std::optional<ProjRecord> before) {
    FS_TRY(txn.del(t.blob_proj, key));
    auto p = key.size() == 48 ? id_from_bytes<ProjectId>(key.subspan(0, 16)) : std::nullopt;
    if (p && before) list.emplace_back(*p, std::move(before), std::nullopt);
    return {};
  }
};

// blob_refs value: u32 n, n x blob id (sorted).
Bytes encode_refs(const std::set<BlobId>& ids) {
  Bytes b;
  ByteWriter w(b);
  w.u32(static_cast<std::uint32_t>(ids.size()));
  for (const auto& id : ids) w.raw(ByteView(id));
  return b;
}
std::optional<std::set<BlobId>> decode_refs(ByteView v) {
  ByteReader r(v);
  std::uint32_t n = r.u32();
  if (!r.ok() || n > kMaxRefsPerDoc || r.remaining() != std::size_t{n} * 32) return std::nullopt;
  std::set<BlobId> out;
  for (std::uint32_t i = 0; i < n; ++i) out.insert(r.fixed<32>());
  return out;
}

std::string short_hex(const BlobId& id) { return digest_hex(id).substr(0, 12); }

// The original a `_variants` document key of project `p` is about (nullopt: the key is not
// of a `_variants` document, or its id is not a blob id).
std::optional<BlobId> variants_doc_original(const ProjectId& p, ByteView dk) {
  Key prefix = collection_prefix(p, kVariantsCollection);
  if (!has_prefix(dk, prefix)) return std::nullopt;
  auto rest = dk.subspan(prefix.b.size());
  return parse_digest_hex(
      std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()));
}

// Order of wanted(): thumbnails, previews, the rest.
int fetch_rank(std::uint8_t flags) {
  if (flags & kProjThumbnail) return 0;
  if (flags & kProjPreview) return 1;
  return 2;
}
// The ranks a policy fetches by itself: below this.
int ranks_fetched(BlobPolicy p) {
  switch (p) {
    case BlobPolicy::archive: return 3;
    case BlobPolicy::phone: return 2;
    case BlobPolicy::thumbnails: return 1;
    case BlobPolicy::on_demand:
    case BlobPolicy::none: return 0;
  }
  return 0;
}

// meta 'p'+project value: u8 1, u8 the project's level (kPolicyUnset: blob.policy), u16 n,
// n x (device 32, u8 level), devices strictly ascending.
constexpr std::uint8_t kPolicyUnset = 0xFF;
bool valid_level(std::uint8_t v) { return v <= static_cast<std::uint8_t>(BlobPolicy::archive); }
Bytes encode_policy(const ProjectBlobPolicy& p) {
  Bytes b;
  ByteWriter w(b);
  w.u8(kRecordVersion);
  w.u8(p.policy ? static_cast<std::uint8_t>(*p.policy) : kPolicyUnset);
  w.u16(static_cast<std::uint16_t>(p.peers.size()));
  for (const auto& [dev, level] : p.peers) {
    w.raw(dev.view());
    w.u8(static_cast<std::uint8_t>(level));
  }
  return b;
}
std::optional<ProjectBlobPolicy> decode_policy(ByteView v) {
  ByteReader r(v);
  ProjectBlobPolicy p;
  if (r.u8() != kRecordVersion) return std::nullopt;
  std::uint8_t level = r.u8();
  std::uint16_t n = r.u16();
  if (!r.ok() || n > kMaxBlobPolicyPeers || r.remaining() != std::size_t{n} * 33)
    return std::nullopt;
  if (level != kPolicyUnset) {
    if (!valid_level(level) || level == 0) return std::nullopt;
    p.policy = static_cast<BlobPolicy>(level);
  }
  for (std::uint16_t i = 0; i < n; ++i) {
    DeviceId dev;
    dev.bytes = r.fixed<32>();
    std::uint8_t l = r.u8();
    if (!r.ok() || !valid_level(l)) return std::nullopt;
    if (!p.peers.empty() && !(p.peers.rbegin()->first < dev)) return std::nullopt;
    p.peers.emplace(dev, static_cast<BlobPolicy>(l));
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------

class BlobStoreImpl final : public BlobStore {
 public:
  BlobStoreImpl(Store& store, Store::Impl& im) : store_(store), im_(im) {
    root_ = im.opts.data_dir / "blobs";
    incoming_ = root_ / "incoming";
    partial_ = root_ / "partial";
  }
  ~BlobStoreImpl() override { stop(); }

  // In memory, what sessions ask at every scan without reading every record of a project:
  // per project, the blobs it wants (referred to, not held, at most blob.max_blob_bytes) in
  // fetch order, with totals per fetch rank, and what it holds. Built from blob_proj at open;
  // every write of blob_proj records its change (ProjWrites), applied once the transaction
  // committed. Guarded by pidx_mu_.
  struct ProjIndex {
    std::map<std::pair<int, BlobId>, std::uint64_t> wanted;       // (fetch rank, id) -> size
    std::array<std::uint64_t, 3> wanted_count{}, wanted_bytes{};  // per fetch rank
    std::uint64_t wanted_any = 0;  // referred to and not held, whatever the size
    std::uint64_t held_bytes = 0, held_count = 0;
  };
  mutable std::mutex pidx_mu_;
  std::map<ProjectId, ProjIndex> pidx_;
  void index_record(const ProjectId& p, const ProjRecord& r, int sign);
  void apply(const ProjWrites& w);
  Status build_proj_index();

  Status open() {
    FS_TRY(build_proj_index());
    FS_TRY(create_private_dirs(root_));
    FS_TRY(create_private_dirs(incoming_));
    FS_TRY(create_private_dirs(partial_));
    // No upload survives a restart: parts left by a crash are removed now.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(incoming_, ec)) fs::remove(e.path(), ec);
    FS_TRY(load_demands());
    worker_ = std::thread([this] { run(); });
    // Blobs stored before chunk checksums were recorded get them in the background.
    post([this] { add_missing_checksums(std::nullopt); });
    return {};
  }

  // On the worker: gives up to kChecksumStepBytes of held blobs without chunk checksums, in id
  // order after `after`, their checksums (each chunk first checked with SHA-256 against its
  // recorded hash: a damaged blob gets none), then queues the next step behind the jobs
  // waiting, until the end of the list (one pass per open).
  void add_missing_checksums(std::optional<BlobId> after);
  bool closing() {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  const BlobOptions& options() const override { return im_.opts.blobs; }

  void post(std::function<void()> job) override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  // A commit added changes to `p`: index it on the worker (coalesced per project). `ref_free`:
  // changes (first, last] of it that move no document's references (their documents are not
  // read).
  void changed(const ProjectId& p,
               std::optional<std::pair<std::uint64_t, std::uint64_t>> ref_free = std::nullopt) {
    if (ref_free && ref_free->second > ref_free->first) {
      std::lock_guard lock(ref_free_mu_);
      auto& ranges = ref_free_[p];
      auto it = ranges.empty() ? ranges.end() : std::prev(ranges.end());
      if (it != ranges.end() && it->second == ref_free->first)
        it->second = ref_free->second;  // follows the last one (the usual case)
      else if (ranges.size() < kMaxRefFreeRanges)
        ranges.emplace(ref_free->first, ref_free->second);
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_ || !dirty_.insert(p).second) return;
      jobs_.push_back([this, p] {
        {
          std::lock_guard l(mu_);
          dirty_.erase(p);
        }
        auto st = index(p);
        (void)st;  // not_found: the project was left meanwhile; other errors: next commit
        bool release = false;
        {
          std::lock_guard l(index_mu_);
          release = std::exchange(erased_release_, false);
        }
        if (release) {  // attachments of an erased document: their files go now
          auto gc_done = gc(unix_ms());
          (void)gc_done;  // on failure the periodic gc (blob.gc_interval_ms) releases them
        }
      });
    }
    cv_.notify_one();
  }

  Result<std::unique_ptr<BlobUpload>> begin_upload(const ProjectId& project) override;
  Result<std::unique_ptr<BlobReader>> open(const ProjectId& project,
                                           const BlobId& id) const override;
  Result<std::vector<ProjectBlob>> list(const ProjectId& project, std::optional<BlobId> after,
                                        std::uint32_t limit) const override;
  Result<std::optional<ProjectBlob>> find(const ProjectId& project,
                                          const BlobId& id) const override;
  Result<BlobUsage> usage(const ProjectId& project) const override;
  Result<BlobInfo> put(const ProjectId& project, ByteView data, std::string media_type) override;
  Result<std::vector<BlobInfo>> wanted(const ProjectId& project, std::optional<BlobId> after,
                                       std::uint32_t limit, BlobPolicy upto) const override;
  Result<std::pair<std::uint64_t, std::uint64_t>> wanted_total(
      const ProjectId& project, BlobPolicy upto, const std::vector<BlobId>& also) const override;
  Result<ProjectBlobPolicy> policy(const ProjectId& project) const override;
  BlobPolicy policy_with(const ProjectId& project, const DeviceId& peer) const override;
  Status set_policy(const ProjectId& project, const ProjectBlobPolicy& policy) override;
  Result<BlobDemand> demand(const ProjectId& project, const BlobId& id) override;
  std::vector<BlobId> demanded(const ProjectId& project) const override;
  std::uint64_t watch_held(std::function<void(const ProjectId&, const BlobId&)> fn) override;
  void unwatch_held(std::uint64_t token) override;
  Result<std::unique_ptr<BlobReceiver>> begin_receive(const ProjectId& project,
                                                      const BlobId& id) override;
  Status note_peer_blobs(const ProjectId& project, const DeviceId& peer,
                         const std::vector<BlobId>& held) override;
  Result<std::vector<BlobId>> peer_blobs(const ProjectId& project,
                                         const DeviceId& peer) const override;
  // Records a received blob as held, by every project that refers to it.
  Status record_received(const HeldRecord& rec);
  // Per project, the first fetch rank (fetch_rank) this device does not fetch by itself from
  // any peer: the highest of the project's level (or blob.policy) and its per-peer levels. 3
  // (nothing beyond) with blob.keep_fetched_ms 0, for a project whose policy does not read
  // back, and on a named destination of the project (its receipts promise every blob).
  // Projects missing from the map: 3.
  Result<std::map<ProjectId, int>> fetched_beyond_level(
      const std::vector<ProjectInfo>& projects) const;
  const fs::path& partial_dir() const { return partial_; }
  // Blobs being received (one receiver per blob at a time), with their verified bytes so far.
  std::mutex receiving_mu;
  std::map<BlobId, const std::atomic<std::uint64_t>*> receiving;
  std::atomic<std::uint64_t> refetchable_{0};  // refetchable_epoch()
  // `id` became held by these projects: demands end, watchers are told (no lock held).
  void held_now(const std::vector<ProjectId>& projects, const BlobId& id);
  // Demands are kept in meta ('D' + project + blob: until) so they outlive a restart: read
  // at open (those ended, of a blob held by now, or of a project left are deleted), written
  // by demand(), deleted when the blob is held or the demand ends or is dropped.
  Status load_demands();
  Status save_demands(const std::vector<std::pair<std::pair<ProjectId, BlobId>, std::int64_t>>& put,
                      const std::vector<std::pair<ProjectId, BlobId>>& del);
  // Tells the project's sessions to look again at what they fetch (on the worker).
  void wake(const ProjectId& p) {
    post([this, p] {
      auto txn = im_.read_txn();
      if (!txn) return;
      if (auto seq = im_.change_counter(*txn, p)) im_.notify(p, *seq);
    });
  }
  Status index(const ProjectId& project) override;
  Result<GcResult> gc(std::int64_t now) override;
  std::uint64_t refetchable_epoch() const override { return refetchable_.load(); }
  Status release_unreferenced(const ProjectId& project, const std::vector<BlobId>& ids) override;
  // The project was left: its in-memory indexing position goes too.
  void forget(const ProjectId& project);

  // Local writes: every "$blob" object must be a well-formed reference, and one to a blob
  // held here must state its size and root.
  Status check_local_refs(const LmdbTxn& txn, std::string_view body) const;

  fs::path blob_path(const BlobId& id) const {
    std::string hex = digest_hex(id);
    return root_ / hex.substr(0, 2) / hex;
  }
  const fs::path& incoming() const { return incoming_; }
  Store::Impl& im() { return im_; }
  // Bytes the project holds (for the quota), as last committed.
  std::uint64_t held_bytes(const ProjectId& p) const;
  // Records `info` (with its chunk hashes) as held and held by `project`, quota checked.
  Status record_upload(const ProjectId& project, const HeldRecord& rec);

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;  // queued jobs are dropped; parts are removed on next open
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  // Compares the references of one document's current heads with those indexed; with
  // `writes` (of a write transaction) moves the counts. Returns whether they differ.
  Result<bool> index_doc(LmdbTxn& txn, const ProjectId& p, ByteView dk, std::int64_t now,
                         ProjWrites* writes) const;
  // How far each project's feed was indexed in this process (ahead of the stored cursor,
  // which is written only with reference changes or every kCursorSaveEvery changes, so
  // that documents without blobs cost no extra commit). Guarded by index_mu_.
  std::map<ProjectId, std::uint64_t> indexed_;
  // An indexing pass released blobs of an erased document: run gc() after it. Guarded by
  // index_mu_.
  mutable bool erased_release_ = false;
  // Per project, runs of its changes feed (first, last] that moved no document's references
  // (changed()): the pass skips their documents. In memory only: after a restart every change
  // past the stored cursor is read. Guarded by ref_free_mu_.
  static constexpr std::size_t kMaxRefFreeRanges = 4096;
  std::mutex ref_free_mu_;
  std::map<ProjectId, std::map<std::uint64_t, std::uint64_t>> ref_free_;
  // The end of the run of ref_free_ that holds change `after` + 1, if one does.
  std::optional<std::uint64_t> ref_free_run(const ProjectId& p, std::uint64_t after) {
    std::lock_guard lock(ref_free_mu_);
    auto pit = ref_free_.find(p);
    if (pit == ref_free_.end()) return std::nullopt;
    auto it = pit->second.upper_bound(after);  // the first run starting after `after`
    if (it == pit->second.begin()) return std::nullopt;
    --it;
    if (it->second <= after) return std::nullopt;
    return it->second;
  }
  // Whether change `seq` of `p` is in a run of ref_free_; drops the runs below `seq`.
  bool ref_free(const ProjectId& p, std::uint64_t seq) {
    std::lock_guard lock(ref_free_mu_);
    auto pit = ref_free_.find(p);
    if (pit == ref_free_.end()) return false;
    auto& ranges = pit->second;
    while (!ranges.empty() && ranges.begin()->second < seq) ranges.erase(ranges.begin());
    return !ranges.empty() && ranges.begin()->first < seq && seq <= ranges.begin()->second;
  }

  Store& store_;
  Store::Impl& im_;
  fs::path root_, incoming_, partial_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::set<ProjectId> dirty_;
  bool stopping_ = false;
  std::thread worker_;
  std::mutex index_mu_;  // one indexing pass (worker or caller) at a time
  // Blobs asked for on demand: (project, blob) -> until (unix ms); and who is told when a
  // blob becomes held. Guarded by demand_mu_.
  mutable std::mutex demand_mu_;
  std::map<std::pair<ProjectId, BlobId>, std::int64_t> demands_;
  // Watchers are called with watch_mu_ held, so none runs once unwatch_held() returned.
  std::mutex watch_mu_;
  std::map<std::uint64_t, std::function<void(const ProjectId&, const BlobId&)>> watchers_;
  std::uint64_t next_watch_ = 1;

 public:
  // Held while a finished upload is named and recorded, and while gc() decides and deletes
  // files: gc never deletes a file an upload has just named and not yet recorded.
  std::mutex files_mu;
  LatencyHistogram& fsyncs() { return im_.fsyncs; }
};

// ---- uploads ---------------------------------------------------------------------------

namespace {

// State of one upload; touched only by jobs on the worker thread.
struct UploadState {
  BlobStoreImpl* store;
  ProjectId project;
  fs::path part;
  int fd = -1;
  std::uint64_t size = 0;
  std::uint64_t quota_room = 0;  // bytes the project may still add (0 with quota_checked: none)
  bool quota_checked = false;
  crypto::Sha256 whole;
  crypto::Sha256 chunk;
  ChunkSum chunk_local;
  std::uint32_t in_chunk = 0;
  std::vector<crypto::Digest> chunks;
  std::vector<std::uint64_t> sums;
  std::optional<Error> failed;
  bool done = false;

  ~UploadState() { discard(); }
  void discard() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    if (!part.empty()) {
      std::error_code ec;
      fs::remove(part, ec);
      part.clear();
    }
  }

  Status write(ByteView piece) {
    if (failed) return *failed;
    if (done) return make_error(Errc::failed_precondition, "the upload is finished");
    const auto& o = store->options();
    if (size + piece.size() > o.max_blob_bytes)
      return fail(make_error(Errc::too_large, "blob exceeds blob.max_blob_bytes = " +
                                                  std::to_string(o.max_blob_bytes)));
    if (!quota_checked && o.project_quota_bytes) {
      const std::uint64_t held = store->held_bytes(project);
      quota_room = held >= o.project_quota_bytes ? 0 : o.project_quota_bytes - held;
      quota_checked = true;
    }
    if (o.project_quota_bytes && size + piece.size() > quota_room)
      return fail(make_error(Errc::resource_exhausted,
                             "the project's blobs would exceed blob.project_quota_bytes = " +
                                 std::to_string(o.project_quota_bytes)));
    if (fd < 0) {
      fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) return fail(errno_error(errno, "creating " + part.filename().string()));
    }
    if (int err = write_all(fd, piece)) return fail(errno_error(err, "writing an uploaded blob"));
    whole.update(piece);
    std::size_t at = 0;
    while (at < piece.size()) {
      std::size_t take = std::min<std::size_t>(kBlobChunkBytes - in_chunk, piece.size() - at);
      chunk.update(piece.subspan(at, take));
      chunk_local.update(piece.subspan(at, take));
      in_chunk += static_cast<std::uint32_t>(take);
      at += take;
      if (in_chunk == kBlobChunkBytes) {
        chunks.push_back(chunk.finish());
        sums.push_back(chunk_local.finish());
        in_chunk = 0;
      }
    }
    size += piece.size();
    return {};
  }

  Result<BlobInfo> finish(std::string media_type) {
    if (failed) return *failed;
    if (done) return make_error(Errc::failed_precondition, "the upload is finished");
    if (media_type.empty()) media_type = "application/octet-stream";
    if (!valid_media_type(media_type))
      return fail(make_error(
          Errc::invalid_argument,
          "invalid media type " + quote_input(media_type) + " (type/subtype, e.g. image/jpeg)"));
    if (fd < 0) {  // an empty blob
      fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) return fail(errno_error(errno, "creating " + part.filename().string()));
    }
    if (in_chunk > 0) {
      chunks.push_back(chunk.finish());
      sums.push_back(chunk_local.finish());
    }
    in_chunk = 0;
    HeldRecord rec;
    rec.info.id = whole.finish();
    rec.info.size = size;
    rec.info.media_type = std::move(media_type);
    rec.chunks = std::move(chunks);
    rec.sums = std::move(sums);
    rec.info.root = chunk_root(rec.chunks);
    rec.since_ms = unix_ms();
    if (timed_fsync(fd, store->fsyncs()) != 0)
      return fail(errno_error(errno, "fsync of an uploaded blob"));
    ::close(fd);
    fd = -1;
    std::lock_guard files(store->files_mu);
    fs::path target = store->blob_path(rec.info.id);
    if (auto st = create_private_dirs(target.parent_path()); !st) return fail(st.error());
    // Same bytes, same name: replacing a file that is already there changes nothing.
    if (::rename(part.c_str(), target.c_str()) != 0)
      return fail(errno_error(errno, "naming an uploaded blob"));
    part.clear();
    if (auto st = fsync_dir(target.parent_path(), store->fsyncs()); !st) return fail(st.error());
    if (auto st = store->record_upload(project, rec); !st) return fail(st.error());
    done = true;
    return rec.info;
  }

  Error fail(Error e) {
    failed = e;
    discard();
    return e;
  }
};

class UploadImpl final : public BlobUpload {
 public:
  UploadImpl(BlobStoreImpl& store, std::shared_ptr<UploadState> s)
      : store_(store), s_(std::move(s)) {}
  ~UploadImpl() override { abort(); }

  void write(Bytes piece, std::function<void(Status)> done) override {
    store_.post([s = s_, piece = std::move(piece), done = std::move(done)] {
      auto st = s->write(ByteView(piece));
      if (done) done(st);
    });
  }
  void finish(std::string media_type, std::function<void(Result<BlobInfo>)> done) override {
    finished_ = true;
    store_.post([s = s_, media_type = std::move(media_type), done = std::move(done)]() mutable {
      auto r = s->finish(std::move(media_type));
      if (done) done(std::move(r));
    });
  }
  void abort() override {
    if (aborted_ || !s_) return;
    aborted_ = true;
    // After finish() the job holding the state ends it; otherwise the part goes now.
    if (!finished_) store_.post([s = s_] { s->discard(); });
    s_.reset();
  }

 private:
  BlobStoreImpl& store_;
  std::shared_ptr<UploadState> s_;
  bool finished_ = false;
  bool aborted_ = false;
};

// ---- reading ---------------------------------------------------------------------------

class ReaderImpl final : public BlobReader {
 public:
  ReaderImpl(HeldRecord rec, int fd) : rec_(std::move(rec)), fd_(fd) {}
  ~ReaderImpl() override { ::close(fd_); }
  const BlobInfo& info() const override { return rec_.info; }
  const std::vector<crypto::Digest>& chunk_hashes() const override { return rec_.chunks; }

  Result<Bytes> read(std::uint64_t offset, std::size_t max_bytes) override {
    if (offset >= rec_.info.size || max_bytes == 0) return Bytes{};
    std::uint64_t index = offset / kBlobChunkBytes;
    if (!have_ || index != index_) FS_TRY(load(index));
    std::size_t at = static_cast<std::size_t>(offset - index * kBlobChunkBytes);
    std::size_t n = std::min(max_bytes, buf_.size() - at);
    return Bytes(buf_.begin() + static_cast<std::ptrdiff_t>(at),
                 buf_.begin() + static_cast<std::ptrdiff_t>(at + n));
  }
  Result<ByteView> chunk(std::uint32_t index) override {
    if (std::uint64_t{index} * kBlobChunkBytes >= rec_.info.size) return ByteView{};
    if (!have_ || index != index_) FS_TRY(load(index));
    return ByteView(buf_);
  }

 private:
  Status load(std::uint64_t index) {
    have_ = false;
    std::uint64_t start = index * kBlobChunkBytes;
    std::size_t len =
        static_cast<std::size_t>(std::min<std::uint64_t>(kBlobChunkBytes, rec_.info.size - start));
    buf_.resize(len);
    ssize_t got = read_up_to(fd_, buf_, static_cast<off_t>(start));
    if (got < 0)
      return errno_error(static_cast<int>(-got), "reading blob " + short_hex(rec_.info.id));
    if (static_cast<std::size_t>(got) != len)
      return make_error(Errc::data_loss,
                        "blob " + short_hex(rec_.info.id) + " is shorter than recorded");
    if (!rec_.chunk_matches(index, ByteView(buf_)))
      return make_error(Errc::data_loss,
                        "blob " + short_hex(rec_.info.id) + ": chunk " + std::to_string(index) +
                            " does not match what was recorded (the file was damaged)");
    index_ = index;
    have_ = true;
    return {};
  }

  HeldRecord rec_;
  int fd_;
  Bytes buf_;
  std::uint64_t index_ = 0;
  bool have_ = false;
};

// A received blob's chunks handed to the kernel's writeback at a time (8 MiB).
constexpr std::uint32_t kWritebackChunks = 32;

// State of one transfer from peers: owned by the receiver, and by finish()'s job on the
// worker once finishing.
struct ReceiveState {
  BlobStoreImpl* store = nullptr;
  BlobInfo info;
  fs::path part, sidecar;
  int fd = -1;
  std::vector<crypto::Digest> hashes;
  std::vector<bool> have;
  std::uint32_t held = 0;
  std::atomic<std::uint64_t> held_bytes{0};  // read by demand() on any thread
  bool registered = false;                   // in store->receiving

  ProjectId project;
  bool finished = false;  // named and recorded

  ~ReceiveState() {
    if (fd >= 0) ::close(fd);
    if (!registered) return;
    {
      std::lock_guard lock(store->receiving_mu);
      // Ended without a chunk (the peer lacked it, a cut before the first chunk): nothing
      // worth resuming is kept, so no empty part outlives the transfer. Removed before this
      // receiver is unregistered: no other receiver of the blob can be opening the same file.
      if (!finished && held == 0) {
        std::error_code ec;
        fs::remove(part, ec);
        fs::remove(sidecar, ec);
      }
      store->receiving.erase(info.id);
    }
    // Given up (the peer lacked it, a cut link): sessions that found it busy may try now.
    if (!finished) store->wake(project);
  }
  std::uint32_t count() const {
    return static_cast<std::uint32_t>((info.size + kBlobChunkBytes - 1) / kBlobChunkBytes);
  }
  std::size_t chunk_len(std::uint32_t i) const {
    std::uint64_t start = std::uint64_t{i} * kBlobChunkBytes;
    return static_cast<std::size_t>(std::min<std::uint64_t>(kBlobChunkBytes, info.size - start));
  }
  Status check_hashes(const std::vector<crypto::Digest>& h) const {
    if (h.size() != count() || chunk_root(h) != info.root)
      return make_error(Errc::verification_failed,
                        "the chunk hashes of blob " + short_hex(info.id) +
                            " do not match the root its reference states");
    return {};
  }
  // Which chunks of the partial file are already right (after a cut or a restart).
  void scan() {
    have.assign(count(), false);
    held = 0;
    Bytes buf;
    for (std::uint32_t i = 0; i < count(); ++i) {
      if (read_chunk(fd, info.size, i, buf) && crypto::sha256(ByteView(buf)) == hashes[i]) {
        have[i] = true;
        ++held;
        held_bytes += buf.size();
      }
    }
  }
};

class ReceiverImpl final : public BlobReceiver {
 public:
  explicit ReceiverImpl(std::shared_ptr<ReceiveState> s) : s_(std::move(s)) {}
  const BlobInfo& info() const override { return s_->info; }
  bool has_chunk_hashes() const override { return !s_->hashes.empty() || s_->count() == 0; }

  Status set_chunk_hashes(std::vector<crypto::Digest> hashes) override {
    if (has_chunk_hashes()) return s_->check_hashes(hashes);
    FS_TRY(s_->check_hashes(hashes));
    s_->hashes = std::move(hashes);
    s_->have.assign(s_->count(), false);
    s_->held = 0;
    s_->held_bytes = 0;
    // Kept beside the part so that a resumed transfer needs no peer to state them again.
    Bytes b;
    for (const auto& h : s_->hashes) append(b, ByteView(h));
    fs::path tmp = s_->sidecar;
    tmp += ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return errno_error(errno, "writing the chunk list of a blob");
    int err = write_all(fd, b);
    ::close(fd);
    if (err) return errno_error(err, "writing the chunk list of a blob");
    if (::rename(tmp.c_str(), s_->sidecar.c_str()) != 0)
      return errno_error(errno, "naming the chunk list of a blob");
    return {};
  }

  std::optional<std::uint32_t> next_missing(std::uint32_t from) const override {
    if (!has_chunk_hashes())
      return from < s_->count() ? std::optional<std::uint32_t>(from) : std::nullopt;
    for (std::uint32_t i = from; i < s_->count(); ++i)
      if (!s_->have[i]) return i;
    return std::nullopt;
  }
  std::uint32_t chunks_held() const override { return s_->held; }

  Status put_chunk(std::uint32_t index, ByteView data) override {
    if (!has_chunk_hashes())
      return make_error(Errc::failed_precondition, "chunk before the blob's chunk hashes");
    if (index >= s_->count())
      return make_error(Errc::verification_failed, "chunk " + std::to_string(index) +
                                                       " is beyond the blob's " +
                                                       std::to_string(s_->count()) + " chunks");
    if (data.size() != s_->chunk_len(index) || crypto::sha256(data) != s_->hashes[index])
      return make_error(Errc::verification_failed, "chunk " + std::to_string(index) + " of blob " +
                                                       short_hex(s_->info.id) +
                                                       " does not match its hash");
    if (s_->have[index]) return {};
    if (int err =
            write_all(s_->fd, data, static_cast<off_t>(std::uint64_t{index} * kBlobChunkBytes)))
      return errno_error(err, "writing a received blob");
    // Every kWritebackChunks chunks, the kernel starts writing the last ones to disk (not a
    // sync: nothing waits, nothing is promised), so the fsync once the blob is whole finds
    // little left to write instead of the whole blob.
    if ((index + 1) % kWritebackChunks == 0)
      (void)::sync_file_range(
          s_->fd, static_cast<off_t>(std::uint64_t{index + 1 - kWritebackChunks} * kBlobChunkBytes),
          static_cast<off_t>(std::uint64_t{kWritebackChunks} * kBlobChunkBytes),
          SYNC_FILE_RANGE_WRITE);
    s_->have[index] = true;
    ++s_->held;
    s_->held_bytes += data.size();
    return {};
  }

  void finish(std::function<void(Result<BlobInfo>)> done) override {
    if (!complete()) {
      if (done) done(make_error(Errc::failed_precondition, "the blob is not complete"));
      return;
    }
    auto s = s_;
    s->store->post([s, done = std::move(done)] {
      auto r = finish_now(*s);
      if (done) done(std::move(r));
    });
  }

 private:
  static Result<BlobInfo> finish_now(ReceiveState& s) {
    if (::ftruncate(s.fd, static_cast<off_t>(s.info.size)) != 0 ||
        timed_fsync(s.fd, s.store->fsyncs()) != 0)
      return errno_error(errno, "fsync of a received blob");
    // Every chunk matched the root the reference states, but a reference may pair an id with
    // another blob's root: the bytes must hash to the id they are named by, or another
    // project's blob of that id would read as these bytes. Not kept (nor resumed) otherwise.
    crypto::Sha256 whole;
    std::vector<std::uint64_t> sums;
    sums.reserve(s.count());
    Bytes buf;
    for (std::uint32_t i = 0; i < s.count(); ++i) {
      if (!read_chunk(s.fd, s.info.size, i, buf))
        return errno_error(EIO, "reading a received blob back");
      whole.update(ByteView(buf));
      sums.push_back(chunk_sum(ByteView(buf)));
    }
    if (whole.finish() != s.info.id) {
      std::error_code rm;
      fs::remove(s.part, rm);
      fs::remove(s.sidecar, rm);
      return make_error(Errc::verification_failed,
                        "the bytes received for blob " + short_hex(s.info.id) +
                            " match the root its reference states but not its id: not kept");
    }
    std::lock_guard files(s.store->files_mu);
    fs::path target = s.store->blob_path(s.info.id);
    FS_TRY(create_private_dirs(target.parent_path()));
    if (::rename(s.part.c_str(), target.c_str()) != 0)
      return errno_error(errno, "naming a received blob");
    FS_TRY(fsync_dir(target.parent_path(), s.store->fsyncs()));
    std::error_code ec;
    fs::remove(s.sidecar, ec);
    HeldRecord rec;
    rec.info = s.info;
    rec.chunks = s.hashes;
    rec.sums = std::move(sums);
    rec.since_ms = unix_ms();
    FS_TRY(s.store->record_received(rec));
    s.finished = true;
    // Recorded: no longer being received from now on, not only once the last holder of this
    // state lets it go (the job that ran this, after its callback): a transfer of the blob
    // after gc released it again must not find it busy.
    std::lock_guard lock(s.store->receiving_mu);
    s.store->receiving.erase(s.info.id);
    s.registered = false;
    return s.info;
  }

  std::shared_ptr<ReceiveState> s_;
};

}  // namespace

// ---- BlobStoreImpl ---------------------------------------------------------------------

void BlobStoreImpl::index_record(const ProjectId& p, const ProjRecord& r, int sign) {
  auto& ix = pidx_[p];
  auto move = [sign](std::uint64_t& v, std::uint64_t by) { v = sign > 0 ? v + by : v - by; };
  if (r.held()) {
    move(ix.held_bytes, r.info.size);
    move(ix.held_count, 1);
  } else if (r.refs > 0) {
    move(ix.wanted_any, 1);
    if (r.info.size > options().max_blob_bytes) return;  // never fetched
    const int rank = fetch_rank(r.flags);
    move(ix.wanted_count[static_cast<std::size_t>(rank)], 1);
    move(ix.wanted_bytes[static_cast<std::size_t>(rank)], r.info.size);
    if (sign > 0)
      ix.wanted[{rank, r.info.id}] = r.info.size;
    else
      ix.wanted.erase({rank, r.info.id});
  }
}

void BlobStoreImpl::apply(const ProjWrites& w) {
  std::lock_guard lock(pidx_mu_);
  for (const auto& [p, before, after] : w.list) {
    if (before) index_record(p, *before, -1);
    if (after) index_record(p, *after, +1);
  }
}

Status BlobStoreImpl::build_proj_index() {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  std::lock_guard lock(pidx_mu_);
  pidx_.clear();
  LmdbCursor c(*txn, im_.t().blob_proj);
  for (bool ok = c.seek({}); ok; ok = c.next()) {
    if (c.key().size() != 48) continue;
    auto p = id_from_bytes<ProjectId>(c.key().subspan(0, 16));
    auto rec = ProjRecord::decode(blob_of_key(c.key()), c.value());
    if (p && rec) index_record(*p, *rec, +1);
  }
  return {};
}

Result<std::vector<BlobInfo>> BlobStoreImpl::wanted(const ProjectId& project,
                                                    std::optional<BlobId> after,
                                                    std::uint32_t limit, BlobPolicy upto) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  const int ranks = ranks_fetched(upto);
  std::vector<BlobInfo> out;
  if (ranks == 0 || limit == 0) return out;
  // Continue after `after` in (rank, id) order; a blob unknown here ranks with the rest.
  int after_rank = 2;
  if (after) {
    auto rec = read_proj(*txn, im_.t(), project, *after);
    if (!rec) return rec.error();
    if (*rec) after_rank = fetch_rank((*rec)->flags);
  }
  std::vector<BlobId> page;
  {
    std::lock_guard lock(pidx_mu_);
    auto ix = pidx_.find(project);
    if (ix == pidx_.end()) return out;
    const auto& w = ix->second.wanted;
    for (auto it = after ? w.upper_bound({after_rank, *after}) : w.begin();
         it != w.end() && it->first.first < ranks && page.size() < limit; ++it)
      page.push_back(it->first.second);
  }
  // The records as this snapshot has them (a blob held since is no longer wanted).
  for (const auto& id : page) {
    auto rec = read_proj(*txn, im_.t(), project, id);
    if (!rec) return rec.error();
    if (*rec && !(*rec)->held() && (*rec)->refs > 0) out.push_back(std::move((*rec)->info));
  }
  return out;
}

Result<std::pair<std::uint64_t, std::uint64_t>> BlobStoreImpl::wanted_total(
    const ProjectId& project, BlobPolicy upto, const std::vector<BlobId>& also) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  const int ranks = ranks_fetched(upto);
  std::pair<std::uint64_t, std::uint64_t> total{0, 0};
  {
    std::lock_guard lock(pidx_mu_);
    if (auto ix = pidx_.find(project); ix != pidx_.end())
      for (int r = 0; r < ranks; ++r) {
        total.first += ix->second.wanted_count[static_cast<std::size_t>(r)];
        total.second += ix->second.wanted_bytes[static_cast<std::size_t>(r)];
      }
  }
  for (const auto& id : std::set<BlobId>(also.begin(), also.end())) {
    auto v = txn->get(im_.t().blob_proj, proj_key(project, id));
    if (!v) return v.error();
    if (!*v) continue;
    auto rec = ProjRecord::decode(id, **v);
    if (!rec || rec->held() || (rec->refs > 0 && fetch_rank(rec->flags) < ranks)) continue;
    ++total.first;
    total.second += rec->info.size;
  }
  return total;
}

Result<ProjectBlobPolicy> BlobStoreImpl::policy(const ProjectId& project) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  auto v = txn->get(im_.t().meta, blob_policy_key(project));
  if (!v) return v.error();
  if (!*v) return ProjectBlobPolicy{};
  auto p = decode_policy(**v);
  if (!p)
    return make_error(Errc::data_loss,
                      "the blob policy of project " + project.str() + " cannot be read");
  return *p;
}

BlobPolicy BlobStoreImpl::policy_with(const ProjectId& project, const DeviceId& peer) const {
  auto p = policy(project);
  if (!p) return options().policy;
  if (auto it = p->peers.find(peer); it != p->peers.end()) return it->second;
  return p->policy.value_or(options().policy);
}

Status BlobStoreImpl::set_policy(const ProjectId& project, const ProjectBlobPolicy& policy) {
  if (policy.policy == BlobPolicy::none)
    return make_error(Errc::invalid_argument,
                      "a project's blob policy cannot be none (on-demand fetches only what is "
                      "asked for; none applies to a peer)");
  if (policy.peers.size() > kMaxBlobPolicyPeers)
    return make_error(Errc::invalid_argument,
                      "at most " + std::to_string(kMaxBlobPolicyPeers) +
                          " peers may have a blob policy of their own in a project");
  auto txn = im_.write_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  if (!policy.policy && policy.peers.empty())
    FS_TRY(txn->del(im_.t().meta, blob_policy_key(project)));
  else
    FS_TRY(txn->put(im_.t().meta, blob_policy_key(project), encode_policy(policy)));
  auto seq = im_.change_counter(*txn, project);
  if (!seq) return seq.error();
  FS_TRY(txn->commit());
  im_.notify(project, *seq);  // sessions look again at what they fetch
  return {};
}

Result<BlobDemand> BlobStoreImpl::demand(const ProjectId& project, const BlobId& id) {
  BlobDemand d;
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    FS_TRY(im_.project(*txn, project));
    auto found = read_proj(*txn, im_.t(), project, id);
    if (!found) return found.error();
    const auto& pr = *found;
    if (!pr || (!pr->held() && pr->refs == 0))
      return make_error(Errc::not_found,
                        "no document of this project refers to blob " + digest_hex(id));
    d.size = pr->info.size;
    if (pr->held()) {
      d.held = true;
      d.received_bytes = d.size;
      return d;
    }
  }
  {
    std::lock_guard lock(receiving_mu);
    if (auto it = receiving.find(id); it != receiving.end()) {
      d.receiving = true;
      d.received_bytes = it->second->load();
    }
  }
  bool fresh = false;
  std::vector<std::pair<ProjectId, BlobId>> dropped;
  {
    std::lock_guard lock(demand_mu_);
    const std::int64_t now = unix_ms();
    // Ended demands go first; then, when full, the one that ends soonest.
    for (auto it = demands_.begin(); it != demands_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      dropped.push_back(it->first);
      it = demands_.erase(it);
    }
    auto key = std::make_pair(project, id);
    fresh = demands_.find(key) == demands_.end();
    if (fresh && options().max_demands > 0 && demands_.size() >= options().max_demands) {
      auto soonest = std::min_element(demands_.begin(), demands_.end(),
                                      [](auto& a, auto& b) { return a.second < b.second; });
      dropped.push_back(soonest->first);
      demands_.erase(soonest);
    }
    if (options().max_demands == 0) return d;  // demands are off
    d.until_ms = now + static_cast<std::int64_t>(options().demand_ttl_ms);
    demands_[key] = d.until_ms;
  }
  // Kept across a restart: a phone that asked before it was switched off still gets it.
  // (Not kept, e.g. on a full disk: the demand still holds until the daemon stops.)
  (void)save_demands({{{project, id}, d.until_ms}}, dropped);
  if (fresh) {  // sessions look for it now
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    auto seq = im_.change_counter(*txn, project);
    if (seq) im_.notify(project, *seq);
  }
  return d;
}

std::vector<BlobId> BlobStoreImpl::demanded(const ProjectId& project) const {
  std::vector<BlobId> out;
  std::lock_guard lock(demand_mu_);
  const std::int64_t now = unix_ms();
  for (auto it = demands_.lower_bound({project, BlobId{}});
       it != demands_.end() && it->first.first == project; ++it)
    if (it->second > now) out.push_back(it->first.second);
  return out;
}

std::uint64_t BlobStoreImpl::watch_held(std::function<void(const ProjectId&, const BlobId&)> fn) {
  std::lock_guard lock(watch_mu_);
  const std::uint64_t token = next_watch_++;
  watchers_.emplace(token, std::move(fn));
  return token;
}

void BlobStoreImpl::unwatch_held(std::uint64_t token) {
  std::lock_guard lock(watch_mu_);
  watchers_.erase(token);
}

Status BlobStoreImpl::load_demands() {
  const std::int64_t now = unix_ms();
  std::vector<std::pair<ProjectId, BlobId>> stale;
  std::vector<std::pair<std::pair<ProjectId, BlobId>, std::int64_t>> live;
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    Key prefix;
    prefix.u8('D');
    LmdbCursor c(*txn, im_.t().meta);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      ByteView k = c.key();
      if (k.size() != 1 + 16 + 32) continue;
      auto p = id_from_bytes<ProjectId>(k.subspan(1, 16));
      if (!p) continue;
      BlobId id{};
      std::copy(k.begin() + 17, k.end(), id.begin());
      ByteReader r(c.value());
      const std::uint8_t version = r.u8();
      const auto until = static_cast<std::int64_t>(r.u64());
      bool keep = r.ok() && version == kRecordVersion && until > now;
      if (keep) {
        auto pr = read_proj(*txn, im_.t(), *p, id);
        keep = pr && *pr && !(*pr)->held() && (*pr)->refs > 0;
      }
      if (keep)
        live.push_back({{*p, id}, until});
      else
        stale.emplace_back(*p, id);
    }
  }
  // Beyond blob.max_demands (lowered since): the ones that end last stay.
  std::sort(live.begin(), live.end(), [](auto& a, auto& b) { return a.second > b.second; });
  while (live.size() > options().max_demands) {
    stale.push_back(live.back().first);
    live.pop_back();
  }
  {
    std::lock_guard lock(demand_mu_);
    for (const auto& [key, until] : live) demands_[key] = until;
  }
  return save_demands({}, stale);
}

Status BlobStoreImpl::save_demands(
    const std::vector<std::pair<std::pair<ProjectId, BlobId>, std::int64_t>>& put,
    const std::vector<std::pair<ProjectId, BlobId>>& del) {
  if (put.empty() && del.empty()) return {};
  auto txn = im_.write_txn();
  if (!txn) return txn.error();
  for (const auto& [key, until] : put) {
    Bytes v;
    ByteWriter w(v);
    w.u8(kRecordVersion);
    w.u64(static_cast<std::uint64_t>(until));
    FS_TRY(txn->put(im_.t().meta, blob_demand_key(key.first, ByteView(key.second)), v));
  }
  for (const auto& key : del)
    FS_TRY(txn->del(im_.t().meta, blob_demand_key(key.first, ByteView(key.second))));
  return txn->commit();
}

void BlobStoreImpl::held_now(const std::vector<ProjectId>& projects, const BlobId& id) {
  {
    std::vector<std::pair<ProjectId, BlobId>> ended;
    {
      std::lock_guard lock(demand_mu_);
      for (const auto& p : projects)
        if (demands_.erase({p, id})) ended.emplace_back(p, id);
    }
    (void)save_demands({}, ended);  // (one left over is deleted at the next open)
  }
  std::lock_guard lock(watch_mu_);
  for (const auto& p : projects)
    for (const auto& [token, fn] : watchers_) fn(p, id);
}

Result<std::unique_ptr<BlobReceiver>> BlobStoreImpl::begin_receive(const ProjectId& project,
                                                                   const BlobId& id) {
  BlobInfo info;
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    FS_TRY(im_.project(*txn, project));
    auto pv = txn->get(im_.t().blob_proj, proj_key(project, id));
    if (!pv) return pv.error();
    if (!*pv) return make_error(Errc::not_found, "no blob " + digest_hex(id) + " in this project");
    auto pr = ProjRecord::decode(id, **pv);
    if (!pr) return make_error(Errc::data_loss, "corrupt blob record " + short_hex(id));
    if (pr->held()) return make_error(Errc::already_exists, "blob " + short_hex(id) + " is held");
    info = pr->info;
    if (info.size > options().max_blob_bytes)
      return make_error(Errc::too_large, "blob " + short_hex(id) +
                                             " exceeds blob.max_blob_bytes = " +
                                             std::to_string(options().max_blob_bytes));
    if (options().project_quota_bytes) {
      if (held_bytes(project) + info.size > options().project_quota_bytes)
        return make_error(Errc::resource_exhausted,
                          "blob " + short_hex(id) + " would exceed blob.project_quota_bytes = " +
                              std::to_string(options().project_quota_bytes));
    }
  }
  auto s = std::make_shared<ReceiveState>();
  s->store = this;
  s->info = info;
  s->project = project;
  {
    std::lock_guard lock(receiving_mu);
    if (!receiving.emplace(id, &s->held_bytes).second)
      return make_error(Errc::failed_precondition,
                        "blob " + short_hex(id) + " is being received on another session");
    s->registered = true;
  }
  s->part = partial_ / digest_hex(id);
  s->sidecar = partial_ / (digest_hex(id) + ".chunks");
  s->fd = ::open(s->part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->fd < 0) return errno_error(errno, "opening a partial blob");
  // A chunk list kept from an earlier attempt counts only if it matches the root.
  std::error_code ec;
  auto sidecar_size = fs::file_size(s->sidecar, ec);
  if (!ec && sidecar_size == std::uintmax_t{s->count()} * 32 && s->count() > 0) {
    Bytes b(sidecar_size);
    int fd = ::open(s->sidecar.c_str(), O_RDONLY | O_CLOEXEC);
    const std::size_t got =
        fd < 0 ? 0 : static_cast<std::size_t>(std::max<ssize_t>(read_up_to(fd, b), 0));
    if (fd >= 0) ::close(fd);
    std::vector<crypto::Digest> hashes(s->count());
    for (std::size_t i = 0; got == b.size() && i < hashes.size(); ++i)
      std::copy_n(b.begin() + static_cast<std::ptrdiff_t>(i * 32), 32, hashes[i].begin());
    if (got == b.size() && s->check_hashes(hashes)) {
      s->hashes = std::move(hashes);
      s->scan();
    }
  }
  if (s->hashes.empty()) s->have.assign(s->count(), false);
  return std::unique_ptr<BlobReceiver>(new ReceiverImpl(std::move(s)));
}

Status BlobStoreImpl::record_received(const HeldRecord& rec) {
  auto txn = im_.write_txn();
  if (!txn) return txn.error();
  const auto& id = rec.info.id;
  FS_TRY(txn->put(im_.t().blob_held, ByteView(id), rec.encode()));
  FS_TRY(txn->put(im_.t().blob_held, sums_key(id), rec.encode_sums()));
  std::vector<ProjectId> projects;
  {
    LmdbCursor c(*txn, im_.t().projects);
    for (bool ok = c.seek({}); ok; ok = c.next())
      if (auto p = id_from_bytes<ProjectId>(c.key())) projects.push_back(*p);
  }
  ProjWrites w{*txn, im_.t(), {}};
  for (const auto& p : projects) {
    auto pr = read_proj(*txn, im_.t(), p, id);
    if (!pr) return pr.error();
    if (!*pr) continue;
    ProjRecord now = **pr;
    now.info = rec.info;
    now.flags |= kProjHeld | kProjFetched;
    // Held since now (what blob.keep_fetched_ms counts from); an unreferenced record keeps its
    // time (0 for one released at once: an erased document's photo).
    if (now.refs > 0) now.added_ms = std::max(now.added_ms, rec.since_ms);
    FS_TRY(w.put(p, std::move(*pr), now));
  }
  std::vector<std::pair<ProjectId, std::uint64_t>> woken;
  for (const auto& p : projects) {
    auto seq = im_.change_counter(*txn, p);
    auto has = txn->get(im_.t().blob_proj, proj_key(p, id));
    if (seq && has && *has) woken.emplace_back(p, *seq);
  }
  FS_TRY(txn->commit());
  apply(w);
  // No project wants it any more (its document was erased or deleted while it travelled):
  // its file goes now, not at the next periodic gc.
  if (woken.empty()) post([this] { (void)gc(unix_ms()); });
  // Sessions learn that the blob is here now (a peer that asked for it may ask again).
  for (const auto& [p, seq] : woken) im_.notify(p, seq);
  std::vector<ProjectId> holders;
  for (const auto& [p, seq] : woken) holders.push_back(p);
  held_now(holders, id);
  return {};
}

Status BlobStoreImpl::note_peer_blobs(const ProjectId& project, const DeviceId& peer,
                                      const std::vector<BlobId>& held) {
  if (peer == im_.me())
    return make_error(Errc::invalid_argument, "what this device holds is in its own records");
  for (std::size_t i = 1; i < held.size(); ++i)
    if (!(held[i - 1] < held[i]))
      return make_error(Errc::invalid_argument, "blob ids not in strictly ascending order");
  const std::size_t n = std::min<std::size_t>(held.size(), options().max_peer_blobs);
  Bytes v;
  v.reserve(1 + 8 + n * 32);
  ByteWriter w(v);
  w.u8(kRecordVersion);
  w.u64(static_cast<std::uint64_t>(unix_ms()));
  for (std::size_t i = 0; i < n; ++i) w.raw(ByteView(held[i]));
  auto txn = im_.write_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  FS_TRY(txn->put(im_.t().meta, peer_blobs_key(project, peer), v));
  return txn->commit();
}

Result<std::vector<BlobId>> BlobStoreImpl::peer_blobs(const ProjectId& project,
                                                      const DeviceId& peer) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  auto v = txn->get(im_.t().meta, peer_blobs_key(project, peer));
  if (!v) return v.error();
  std::vector<BlobId> out;
  if (!*v) return out;
  // The same checks as on write; a record that fails them counts as none.
  ByteView b = **v;
  if (b.size() < 9 || b[0] != kRecordVersion || (b.size() - 9) % 32 != 0 ||
      (b.size() - 9) / 32 > options().max_peer_blobs)
    return out;
  out.resize((b.size() - 9) / 32);
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::copy_n(b.begin() + static_cast<std::ptrdiff_t>(9 + i * 32), 32, out[i].begin());
    if (i > 0 && !(out[i - 1] < out[i])) return std::vector<BlobId>{};
  }
  return out;
}

void BlobStoreImpl::add_missing_checksums(std::optional<BlobId> after) {
  constexpr std::uint64_t kChecksumStepBytes = 64ull << 20;
  std::vector<HeldRecord> todo;
  std::uint64_t bytes = 0;
  {
    auto txn = im_.read_txn();
    if (!txn) return;
    LmdbCursor c(*txn, im_.t().blob_held);
    Key from;
    if (after) from.raw(ByteView(*after)).u8(0xff);  // past the blob and its checksums' key
    for (bool ok = c.seek(from); ok && bytes < kChecksumStepBytes; ok = c.next()) {
      if (c.key().size() != 32) continue;
      const BlobId id = blob_of_key(c.key());
      after = id;
      auto rec = HeldRecord::decode(id, c.value());
      if (!rec || rec->chunks.empty()) continue;
      auto sv = txn->get(im_.t().blob_held, sums_key(id));
      if (!sv) return;
      if (*sv) rec->decode_sums(**sv);
      if (!rec->sums.empty()) continue;
      bytes += rec->info.size;
      todo.push_back(std::move(*rec));
    }
  }
  const bool more = bytes >= kChecksumStepBytes;
  std::vector<const HeldRecord*> summed;
  Bytes buf;
  for (auto& rec : todo) {
    int fd = ::open(blob_path(rec.info.id).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    bool intact = true;
    for (std::uint32_t i = 0; intact && i < rec.chunks.size(); ++i) {
      if (closing()) {
        ::close(fd);
        return;
      }
      intact =
          read_chunk(fd, rec.info.size, i, buf) && crypto::sha256(ByteView(buf)) == rec.chunks[i];
      if (intact) rec.sums.push_back(chunk_sum(ByteView(buf)));
    }
    ::close(fd);
    if (intact) summed.push_back(&rec);  // damaged: reads keep saying so, by SHA-256
  }
  // One commit for the step (not one per blob, each with its fsync).
  if (!summed.empty()) {
    auto txn = im_.write_txn();
    if (!txn) return;
    for (const HeldRecord* rec : summed) {
      auto still = txn->get(im_.t().blob_held, ByteView(rec->info.id));
      if (!still) return;
      if (!*still) continue;  // released meanwhile
      if (!txn->put(im_.t().blob_held, sums_key(rec->info.id), rec->encode_sums()).ok()) return;
    }
    if (!txn->commit().ok()) return;
  }
  if (more) post([this, after] { add_missing_checksums(after); });
}

Result<std::unique_ptr<BlobUpload>> BlobStoreImpl::begin_upload(const ProjectId& project) {
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    FS_TRY(im_.project(*txn, project));
  }
  auto s = std::make_shared<UploadState>();
  s->store = this;
  s->project = project;
  s->part = incoming_ / (to_hex(crypto::random_bytes(16)) + ".part");
  return std::unique_ptr<BlobUpload>(new UploadImpl(*this, std::move(s)));
}

Result<BlobInfo> BlobStoreImpl::put(const ProjectId& project, ByteView data,
                                    std::string media_type) {
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    FS_TRY(im_.project(*txn, project));
  }
  UploadState s;
  s.store = this;
  s.project = project;
  s.part = incoming_ / (to_hex(crypto::random_bytes(16)) + ".part");
  FS_TRY(s.write(data));
  return s.finish(std::move(media_type));
}

std::uint64_t BlobStoreImpl::held_bytes(const ProjectId& p) const {
  std::lock_guard lock(pidx_mu_);
  auto ix = pidx_.find(p);
  return ix == pidx_.end() ? 0 : ix->second.held_bytes;
}

Status BlobStoreImpl::record_upload(const ProjectId& project, const HeldRecord& rec) {
  auto txn = im_.write_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  const auto& id = rec.info.id;
  auto existing = txn->get(im_.t().blob_held, ByteView(id));
  if (!existing) return existing.error();
  if (!*existing || !HeldRecord::decode(id, **existing))
    FS_TRY(txn->put(im_.t().blob_held, ByteView(id), rec.encode()));
  // The checksums, also for a blob held already (one stored before checksums were).
  FS_TRY(txn->put(im_.t().blob_held, sums_key(id), rec.encode_sums()));
  Key pk = proj_key(project, id);
  auto pv = txn->get(im_.t().blob_proj, pk);
  if (!pv) return pv.error();
  ProjRecord pr;
  std::optional<ProjRecord> before;
  if (*pv) before = ProjRecord::decode(id, **pv);
  if (before) pr = *before;
  const bool was_held = pr.held();
  pr.info = rec.info;
  pr.flags |= kProjHeld;
  pr.flags &= static_cast<std::uint8_t>(~kProjFetched);  // uploaded here: this device's own
  // Uploading again restarts the grace period of an unreferenced blob.
  pr.added_ms = std::max(pr.added_ms, rec.since_ms);
  if (!was_held && options().project_quota_bytes) {
    if (held_bytes(project) + rec.info.size > options().project_quota_bytes)
      return make_error(Errc::resource_exhausted,
                        "the project's blobs would exceed blob.project_quota_bytes = " +
                            std::to_string(options().project_quota_bytes));
  }
  ProjWrites w{*txn, im_.t(), {}};
  FS_TRY(w.put(project, std::move(before), pr));
  auto seq = im_.change_counter(*txn, project);
  if (!seq) return seq.error();
  FS_TRY(txn->commit());
  apply(w);
  im_.notify(project, *seq);
  held_now({project}, id);
  return {};
}

Result<std::unique_ptr<BlobReader>> BlobStoreImpl::open(const ProjectId& project,
                                                        const BlobId& id) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  auto pv = txn->get(im_.t().blob_proj, proj_key(project, id));
  if (!pv) return pv.error();
  if (!*pv) return make_error(Errc::not_found, "no blob " + digest_hex(id) + " in this project");
  auto pr = ProjRecord::decode(id, **pv);
  if (!pr) return make_error(Errc::data_loss, "corrupt blob record " + short_hex(id));
  if (!pr->held())
    return make_error(Errc::failed_precondition,
                      "blob " + digest_hex(id) + " is referred to but not held on this device yet");
  auto hv = txn->get(im_.t().blob_held, ByteView(id));
  if (!hv) return hv.error();
  if (!*hv) return make_error(Errc::data_loss, "blob " + short_hex(id) + " has no record");
  auto rec = HeldRecord::decode(id, **hv);
  if (!rec) return make_error(Errc::data_loss, "corrupt blob record " + short_hex(id));
  auto sv = txn->get(im_.t().blob_held, sums_key(id));
  if (!sv) return sv.error();
  if (*sv) rec->decode_sums(**sv);
  fs::path path = blob_path(id);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return make_error(Errc::data_loss, "the file of blob " + short_hex(id) + " is missing");
    return errno_error(errno, "opening blob " + short_hex(id));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != rec->info.size) {
    ::close(fd);
    return make_error(Errc::data_loss,
                      "the file of blob " + short_hex(id) + " does not have its recorded size");
  }
  return std::unique_ptr<BlobReader>(new ReaderImpl(std::move(*rec), fd));
}

Result<std::vector<ProjectBlob>> BlobStoreImpl::list(const ProjectId& project,
                                                     std::optional<BlobId> after,
                                                     std::uint32_t limit) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  std::vector<ProjectBlob> out;
  Key prefix = prefix_of(project);
  Key start = after ? proj_key(project, *after) : prefix;
  LmdbCursor c(*txn, im_.t().blob_proj);
  for (bool ok = c.seek(start); ok && has_prefix(c.key(), prefix) && out.size() < limit;
       ok = c.next()) {
    if (c.key().size() != 48) continue;
    BlobId id = blob_of_key(c.key());
    if (after && id == *after) continue;
    auto rec = ProjRecord::decode(id, c.value());
    if (!rec) return make_error(Errc::data_loss, "corrupt blob record " + short_hex(id));
    out.push_back(rec->project_blob());
  }
  return out;
}

Result<std::optional<ProjectBlob>> BlobStoreImpl::find(const ProjectId& project,
                                                       const BlobId& id) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  auto rec = read_proj(*txn, im_.t(), project, id);
  if (!rec) return rec.error();
  if (!*rec) return std::optional<ProjectBlob>{};
  return std::optional<ProjectBlob>{(*rec)->project_blob()};
}

Result<BlobUsage> BlobStoreImpl::usage(const ProjectId& project) const {
  auto txn = im_.read_txn();
  if (!txn) return txn.error();
  FS_TRY(im_.project(*txn, project));
  BlobUsage u;
  u.quota_bytes = options().project_quota_bytes;
  std::lock_guard lock(pidx_mu_);
  if (auto ix = pidx_.find(project); ix != pidx_.end()) {
    u.held_bytes = ix->second.held_bytes;
    u.held_count = ix->second.held_count;
    u.wanted_count = ix->second.wanted_any;
  }
  return u;
}

// Re-reads the references of one document's current heads and moves the project's counts.
Result<bool> BlobStoreImpl::index_doc(LmdbTxn& txn, const ProjectId& p, ByteView dk,
                                      std::int64_t now, ProjWrites* writes) const {
  std::set<BlobId> now_refs;
  std::map<BlobId, BlobInfo> infos;
  // A `_variants` document does not refer to its original ("of"): only the documents of the
  // app keep an original; its variants are kinds of blob (flags).
  const auto original = variants_doc_original(p, dk);
  std::map<BlobId, std::uint8_t> kinds;
  auto rec = im_.doc(txn, dk);
  if (!rec) return rec.error();
  if (*rec && !((*rec)->flags & DocRecord::kPurged)) {
    for (const auto& h : (*rec)->heads) {
      // Of a `_variants` document only the winner counts (docs/storage.md "Who makes the
      // variants"): the variants of a losing concurrent head are fetched by no device and
      // released where they were made.
      if (original && &h != &(*rec)->heads.front()) break;
      if (h.tombstone) continue;
      auto v = im_.load_version(txn, p, h.at);
      if (!v) return v.error();
      if (!v->body) continue;
      if (original) {
        if (auto named = parse_blob_variants(*v->body)) {
          if (named->thumbnail) kinds[named->thumbnail->id] |= kProjThumbnail;
          if (named->preview) kinds[named->preview->id] |= kProjPreview;
        }
      }
      for (auto& ref : find_blob_refs(*v->body)) {
        if (now_refs.size() >= kMaxRefsPerDoc) break;
        if (original && ref.id == *original) continue;
        if (now_refs.insert(ref.id).second) infos.emplace(ref.id, std::move(ref));
      }
    }
  }
  auto old_v = txn.get(im_.t().blob_refs, dk);
  if (!old_v) return old_v.error();
  std::set<BlobId> before;
  if (*old_v) before = decode_refs(**old_v).value_or(std::set<BlobId>{});
  if (before == now_refs) return false;
  if (!writes) return true;
  for (const auto& id : before) {
    if (now_refs.count(id)) continue;
    Key pk = proj_key(p, id);
    auto pv = txn.get(im_.t().blob_proj, pk);
    if (!pv) return pv.error();
    if (!*pv) continue;
    auto pr = ProjRecord::decode(id, **pv);
    if (!pr) continue;
    const ProjRecord was = *pr;
    if (pr->refs > 0) --pr->refs;
    // gc() releases it once its grace from now has passed; at once when the document was
    // erased (docs/storage.md "Erasure": its attachments go with it).
    if (pr->refs == 0) {
      pr->added_ms = now;
      auto erased = im_.erasure_hlc(txn, dk);
      if (!erased) return erased.error();
      if (*erased) {
        pr->added_ms = 0;
        erased_release_ = true;
      }
    }
    FS_TRY(writes->put(p, was, *pr));
  }
  for (const auto& id : now_refs) {
    if (before.count(id)) continue;
    Key pk = proj_key(p, id);
    auto pv = txn.get(im_.t().blob_proj, pk);
    if (!pv) return pv.error();
    ProjRecord pr;
    std::optional<ProjRecord> old;
    if (*pv) old = ProjRecord::decode(id, **pv);
    if (old) {
      pr = *old;
    } else {
      pr.info = infos.at(id);
      pr.added_ms = now;
      // Held for another project already: held for this one too (stored once per device).
      auto hv = txn.get(im_.t().blob_held, ByteView(id));
      if (!hv) return hv.error();
      if (*hv) {
        if (auto held = HeldRecord::decode(id, **hv)) {
          pr.info = held->info;
          pr.flags |= kProjHeld;
        }
      }
    }
    ++pr.refs;
    if (auto k = kinds.find(id); k != kinds.end()) pr.flags |= k->second;
    FS_TRY(writes->put(p, old, pr));
  }
  if (now_refs.empty())
    FS_TRY(txn.del(im_.t().blob_refs, dk));
  else
    FS_TRY(txn.put(im_.t().blob_refs, dk, encode_refs(now_refs)));
  return true;
}

Status BlobStoreImpl::index(const ProjectId& project) {
  std::lock_guard lock(index_mu_);
  for (;;) {
    std::uint64_t stored = 0;
    std::vector<Bytes> differ;
    std::vector<Change> page;
    {
      auto txn = im_.read_txn();
      if (!txn) return txn.error();
      FS_TRY(im_.project(*txn, project));
      auto v = txn->get(im_.t().meta, blob_cursor_key(project));
      if (!v) return v.error();
      if (*v) {
        ByteReader r(**v);
        stored = r.u64();
      }
    }
    std::uint64_t upto = 0;
    bool more = true;  // a whole page: more may follow
    auto mem = indexed_.find(project);
    const std::uint64_t since = std::max(stored, mem == indexed_.end() ? 0 : mem->second);
    if (auto run = ref_free_run(project, since)) {
      upto = *run;  // changes that move no reference: passed without reading them
    } else {
      auto changes = store_.changes_since(project, since, kIndexPage);
      if (!changes) return changes.error();
      if (changes->empty()) return {};
      page = std::move(*changes);
      // The documents are read in a snapshot taken after the page: never older than the
      // changes it holds (an older one would miss a commit in between, and the cursor would
      // pass its change without its references).
      auto txn = im_.read_txn();
      if (!txn) return txn.error();
      FS_TRY(im_.project(*txn, project));
      std::set<Bytes> docs;
      for (const auto& ch : page)
        if (!ref_free(project, ch.seq))
          docs.insert(doc_key(project, ch.collection, ch.doc_id).bytes());
      for (const auto& dk : docs) {
        auto d = index_doc(*txn, project, dk, 0, nullptr);
        if (!d) return d.error();
        if (*d) differ.push_back(dk);
      }
      upto = page.back().seq;
      more = page.size() == kIndexPage;
    }
    // Documents without references (most) cost one read here and no commit.
    if (!differ.empty() || upto - stored >= kCursorSaveEvery) {
      auto txn = im_.write_txn();
      if (!txn) return txn.error();
      FS_TRY(im_.project(*txn, project));
      const std::int64_t now = unix_ms();
      ProjWrites w{*txn, im_.t(), {}};
      for (const auto& dk : differ) {
        auto d = index_doc(*txn, project, dk, now, &w);
        if (!d) return d.error();
      }
      Bytes cur;
      ByteWriter(cur).u64(upto);
      FS_TRY(txn->put(im_.t().meta, blob_cursor_key(project), cur));
      FS_TRY(txn->commit());
      apply(w);
    }
    indexed_[project] = upto;
    if (!more) return {};
  }
}

Status BlobStoreImpl::release_unreferenced(const ProjectId& project,
                                           const std::vector<BlobId>& ids) {
  bool released = false;
  {
    auto txn = im_.write_txn();
    if (!txn) return txn.error();
    FS_TRY(im_.project(*txn, project));
    ProjWrites w{*txn, im_.t(), {}};
    for (const auto& id : ids) {
      auto pr = read_proj(*txn, im_.t(), project, id);
      if (!pr) return pr.error();
      if (!*pr || (*pr)->refs > 0 || (*pr)->released_at_once()) continue;
      ProjRecord now = **pr;
      now.added_ms = 0;
      FS_TRY(w.put(project, std::move(*pr), now));
      released = true;
    }
    FS_TRY(txn->commit());
    apply(w);
  }
  if (released) post([this] { (void)gc(unix_ms()); });
  return {};
}

void BlobStoreImpl::forget(const ProjectId& project) {
  {
    std::lock_guard lock(pidx_mu_);
    pidx_.erase(project);
  }
  {
    std::lock_guard lock(index_mu_);
    indexed_.erase(project);
  }
  {
    std::lock_guard lock(ref_free_mu_);
    ref_free_.erase(project);
  }
  std::lock_guard lock(demand_mu_);  // (their records went with the project's)
  for (auto it = demands_.lower_bound({project, BlobId{}});
       it != demands_.end() && it->first.first == project;)
    it = demands_.erase(it);
}

Result<std::map<ProjectId, int>> BlobStoreImpl::fetched_beyond_level(
    const std::vector<ProjectInfo>& projects) const {
  std::map<ProjectId, int> out;
  if (options().keep_fetched_ms == 0) return out;
  for (const auto& p : projects) {
    auto pol = policy(p.id);
    if (!pol) continue;
    BlobPolicy level = pol->policy.value_or(options().policy);
    for (const auto& [peer, l] : pol->peers) level = std::max(level, l);
    const int first = ranks_fetched(level);
    if (first >= 3) continue;
    auto dests = store_.destinations(p.id);
    if (!dests) {
      if (dests.error().code == Errc::not_found) continue;  // left meanwhile
      return dests.error();
    }
    if (std::any_of(dests->begin(), dests->end(),
                    [&](const Destination& d) { return d.device == store_.device_id(); }))
      continue;
    out[p.id] = first;
  }
  return out;
}

Result<GcResult> BlobStoreImpl::gc(std::int64_t now) {
  GcResult out;
  std::lock_guard files(files_mu);
  auto projects = store_.list_projects();
  if (!projects) return projects.error();
  for (const auto& p : *projects) {
    auto st = index(p.id);
    if (!st && st.error().code != Errc::not_found) return st.error();
  }
  const auto grace = static_cast<std::int64_t>(options().unreferenced_grace_ms);
  const auto beyond = fetched_beyond_level(*projects);
  if (!beyond) return beyond.error();
  const auto keep_fetched = static_cast<std::int64_t>(options().keep_fetched_ms);
  std::vector<std::pair<BlobId, std::uint64_t>> unlink;
  std::set<ProjectId> unheld;  // projects that let blobs go that they still refer to
  {
    auto txn = im_.write_txn();
    if (!txn) return txn.error();
    std::set<BlobId> kept;  // held by some project after this pass
    std::vector<std::pair<Bytes, std::optional<ProjRecord>>> release;
    // Referred to, no longer held here: (project, record as read, record to write).
    std::vector<std::tuple<ProjectId, ProjRecord, ProjRecord>> unhold;
    // The references of a `_variants` document whose original no document of the project
    // refers to any more (or that the project no longer has) do not keep its variants: they
    // are released with the original, after the grace counted from the later of the two; at
    // once when the original's document was erased (a thumbnail shows the photo).
    struct Ignored {
      std::uint32_t refs = 0;
      std::int64_t since_ms = 0;
      bool erased = false;
    };
    std::map<Bytes, Ignored> ignored;  // blob_proj key -> references not counted
    for (const auto& p : *projects) {
      Key prefix = collection_prefix(p.id, kVariantsCollection);
      LmdbCursor c(*txn, im_.t().blob_refs);
      for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
        auto original = variants_doc_original(p.id, c.key());
        if (!original) continue;
        auto ov = txn->get(im_.t().blob_proj, proj_key(p.id, *original));
        if (!ov) return ov.error();
        std::int64_t since = 0;
        bool erased = false;
        if (*ov) {
          auto orec = ProjRecord::decode(*original, **ov);
          if (orec && orec->refs > 0) continue;  // the original is in use: so are its variants
          if (orec) since = orec->added_ms;
          erased = orec && orec->released_at_once();
        }
        auto refs = decode_refs(c.value());
        if (!refs) continue;
        for (const auto& id : *refs) {
          Key k = proj_key(p.id, id);
          auto& ig = ignored[Bytes(k.b.begin(), k.b.end())];
          ++ig.refs;
          ig.since_ms = std::max(ig.since_ms, since);
          ig.erased = ig.erased || erased;
        }
      }
    }
    {
      LmdbCursor c(*txn, im_.t().blob_proj);
      for (bool ok = c.seek({}); ok; ok = c.next()) {
        if (c.key().size() != 48) {
          release.emplace_back(Bytes(c.key().begin(), c.key().end()), std::nullopt);
          continue;
        }
        BlobId id = blob_of_key(c.key());
        auto rec = ProjRecord::decode(id, c.value());
        std::uint32_t refs = rec ? rec->refs : 0;
        std::int64_t since = rec ? rec->added_ms : 0;
        if (auto ig = ignored.find(Bytes(c.key().begin(), c.key().end())); ig != ignored.end()) {
          refs -= std::min(refs, ig->second.refs);
          since = ig->second.erased ? 0 : std::max(since, ig->second.since_ms);
        }
        bool drop = !rec || (refs == 0 && (!rec->held() || since + grace <= now));
        if (drop) {
          release.emplace_back(Bytes(c.key().begin(), c.key().end()), std::move(rec));
          continue;
        }
        const auto project = id_from_bytes<ProjectId>(c.key().subspan(0, 16));
        const auto beyond_rank = project ? beyond->find(*project) : beyond->end();
        if (rec->held() && refs > 0 && (rec->flags & kProjFetched) &&
            rec->added_ms + keep_fetched <= now && beyond_rank != beyond->end() &&
            fetch_rank(rec->flags) >= beyond_rank->second) {
          // Fetched beyond what this device fetches by itself, long enough ago: no longer
          // held here (still referred to; fetched again on demand).
          ProjRecord r = *rec;
          r.flags &= static_cast<std::uint8_t>(~(kProjHeld | kProjFetched));
          unhold.emplace_back(*project, *rec, r);
        } else if (rec->held()) {
          kept.insert(id);
        }
      }
    }
    ProjWrites w{*txn, im_.t(), {}};
    for (auto& [k, rec] : release) FS_TRY(w.del(k, std::move(rec)));
    for (auto& [p, before, after] : unhold) {
      FS_TRY(w.put(p, std::move(before), after));
      unheld.insert(p);
    }
    out.released = release.size() + unhold.size();
    std::vector<BlobId> gone;
    std::vector<Key> sums_gone;  // also those an older daemon's gc left behind
    {
      LmdbCursor c(*txn, im_.t().blob_held);
      for (bool ok = c.seek({}); ok; ok = c.next()) {
        if (c.key().size() == 33) {
          const BlobId of = blob_of_key(c.key().first(32));
          if (!kept.count(of)) sums_gone.push_back(sums_key(of));
        }
        if (c.key().size() != 32) continue;
        BlobId id = blob_of_key(c.key());
        if (kept.count(id)) continue;
        auto rec = HeldRecord::decode(id, c.value());
        gone.push_back(id);
        unlink.emplace_back(id, rec ? rec->info.size : 0);
      }
    }
    for (const auto& k : sums_gone) FS_TRY(txn->del(im_.t().blob_held, k));
    for (const auto& id : gone) FS_TRY(txn->del(im_.t().blob_held, ByteView(id)));
    FS_TRY(txn->commit());
    apply(w);
  }
  if (!unheld.empty()) {
    // Sessions may fetch them again (on demand), and look at what they want again.
    ++refetchable_;
    for (const auto& p : unheld) wake(p);
  }
  for (const auto& [id, size] : unlink) {
    std::error_code ec;
    if (fs::remove(blob_path(id), ec)) {
      ++out.files_deleted;
      out.bytes_freed += size;
    }
  }
  // Files without a record (a crash between naming a file and recording it) and parts of
  // uploads nobody finished, once old enough that no upload in progress can own them.
  std::set<BlobId> recorded;
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    LmdbCursor c(*txn, im_.t().blob_held);
    for (bool ok = c.seek({}); ok; ok = c.next()) {
      if (c.key().size() != 32) continue;
      BlobId id = blob_of_key(c.key());
      recorded.insert(id);
    }
  }
  auto old_enough = [&](const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return false;
    std::int64_t mtime =
        static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
    return mtime + kOrphanAgeMs <= now;
  };
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(root_, ec)) {
    if (!dir.is_directory(ec) || dir.path() == incoming_ || dir.path() == partial_) continue;
    for (const auto& f : fs::directory_iterator(dir.path(), ec)) {
      auto id = parse_digest_hex(f.path().filename().string());
      if (id && recorded.count(*id)) continue;
      if (!old_enough(f.path())) continue;
      std::uintmax_t size = f.file_size(ec);
      if (fs::remove(f.path(), ec)) {
        ++out.files_deleted;
        out.bytes_freed += ec ? 0 : size;
      }
    }
  }
  for (const auto& f : fs::directory_iterator(incoming_, ec))
    if (old_enough(f.path())) fs::remove(f.path(), ec);
  // Partial transfers of blobs no project wants any more.
  std::set<BlobId> wanted_any;
  {
    auto txn = im_.read_txn();
    if (!txn) return txn.error();
    LmdbCursor c(*txn, im_.t().blob_proj);
    for (bool ok = c.seek({}); ok; ok = c.next()) {
      if (c.key().size() != 48) continue;
      BlobId id = blob_of_key(c.key());
      wanted_any.insert(id);
    }
  }
  // Those of a blob no project refers to go at once (the chunks of an erased document's photo
  // are its data too), unless a receiver has it open; under receiving_mu, so none starts on
  // the file while it is removed. Anything else there goes once old enough.
  {
    std::lock_guard lock(receiving_mu);
    for (const auto& f : fs::directory_iterator(partial_, ec)) {
      std::string name = f.path().filename().string();
      auto id = parse_digest_hex(name.substr(0, 64));
      if (id && (wanted_any.count(*id) || receiving.count(*id))) continue;
      if (id || old_enough(f.path())) fs::remove(f.path(), ec);
    }
  }
  return out;
}

Status BlobStoreImpl::check_local_refs(const LmdbTxn& txn, std::string_view body) const {
  // Most bodies hold no reference: skip the second parse unless "$blob" may be spelled in it
  // (directly, or with \u escapes).
  if (body.find("$blob") == std::string_view::npos && body.find("\\u") == std::string_view::npos)
    return {};
  std::vector<std::string> problems;
  auto refs = find_blob_refs(body, &problems);
  if (!problems.empty())
    return make_error(Errc::invalid_argument, "malformed blob reference at " + problems.front());
  if (refs.size() > kMaxRefsPerDoc)
    return make_error(Errc::invalid_argument, "a document may refer to at most " +
                                                  std::to_string(kMaxRefsPerDoc) + " blobs");
  for (const auto& ref : refs) {
    auto hv = txn.get(im_.t().blob_held, ByteView(ref.id));
    if (!hv) return hv.error();
    if (!*hv) continue;
    auto held = HeldRecord::decode(ref.id, **hv);
    if (!held) continue;
    if (held->info.size != ref.size || held->info.root != ref.root)
      return make_error(Errc::invalid_argument, "blob reference " + short_hex(ref.id) +
                                                    " does not match the blob held here (size " +
                                                    std::to_string(held->info.size) + ", root " +
                                                    digest_hex(held->info.root) + ")");
  }
  return {};
}

// ---- glue with Store -------------------------------------------------------------------

Status Store::Impl::open_blobs(Store& store) {
  auto b = std::make_unique<BlobStoreImpl>(store, *this);
  FS_TRY(b->open());
  blobs = std::move(b);
  return {};
}

void Store::Impl::close_blobs() {
  if (blobs) static_cast<BlobStoreImpl&>(*blobs).stop();
}

void Store::Impl::blobs_left(const ProjectId& p) {
  if (blobs) static_cast<BlobStoreImpl&>(*blobs).forget(p);
}

void Store::Impl::blobs_changed(const ProjectId& p,
                                std::optional<std::pair<std::uint64_t, std::uint64_t>> ref_free) {
  if (blobs) static_cast<BlobStoreImpl&>(*blobs).changed(p, ref_free);
}

Result<bool> Store::Impl::may_move_blob_refs(const LmdbTxn& txn, ByteView dk,
                                             const std::string* body, bool held_before) const {
  if (body && may_hold_blob_refs(*body)) return true;
  if (!held_before) return false;
  auto had = txn.get(t().blob_refs, dk);
  if (!had) return had.error();
  return had->has_value();
}

Status Store::Impl::check_blob_refs(const LmdbTxn& txn, std::string_view body) const {
  if (!blobs) return {};
  return static_cast<const BlobStoreImpl&>(*blobs).check_local_refs(txn, body);
}

Result<bool> Store::Impl::blob_gone(const LmdbTxn& txn, const ProjectId& p,
                                    const BlobId& id) const {
  auto rec = read_proj(txn, t(), p, id);
  if (!rec) return rec.error();
  return !*rec || (*rec)->released_at_once();
}

BlobStore& Store::blobs() { return *impl_->blobs; }
const BlobStore& Store::blobs() const { return *impl_->blobs; }

}  // namespace fieldsync::storage
