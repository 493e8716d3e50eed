// Public value types of the storage engine. Plain data; no LMDB types.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "crypto/crypto.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::storage {

// Fixed limits of stored records (docs/storage.md "Limits"). Each is checked where the data
// comes in (API, join, sync) and is the same bound the record decoder applies on read-back, so
// an accepted record can always be read again.
inline constexpr std::size_t kMaxProjectNameBytes = 200;           // project name
inline constexpr std::size_t kMaxProjectSettingsBytes = 1u << 20;  // project settings JSON
inline constexpr std::uint64_t kMaxBodyBytesCeiling = 1ull
                                                      << 30;  // storage.max_body_bytes upper bound

// A project this device holds whose record cannot be read (reported, never fatal to listings).
struct ProjectProblem {
  std::string id;     // 32 hex chars, or the hex of a malformed key
  std::string error;  // why it cannot be read
};

// Named, configurable limits and settings of the store (config keys in docs/operations.md).
struct StoreOptions {
  std::filesystem::path data_dir;
  std::uint64_t map_size_bytes = 16ull << 30;  // storage.map_size: LMDB map (sparse file)
  std::uint32_t max_body_bytes = 1u << 20;     // storage.max_body_bytes: one document body
  std::uint32_t max_batch_docs = 10000;        // storage.max_batch_docs: docs in one batch write
  std::uint32_t checkpoint_interval =
      256;              // storage.checkpoint_interval: log entries per signature
  bool durable = true;  // storage.durable: fsync every commit
  std::uint64_t max_clock_skew_ms = 24ull * 3600 * 1000;  // storage.max_clock_skew_ms
  // storage.max_imported_bundles: bundle ids remembered per project to refuse a second import
  // (the oldest is forgotten first).
  std::uint32_t max_imported_bundles = 1024;
  // storage.max_indexes: indexes declared on one project (Store::create_index).
  std::uint32_t max_indexes = 32;
  // storage.body_compression_level: zstd level of bodies at rest, 1..19; 0 stores them as they
  // are. storage.body_dictionary_bytes: the size of the dictionary trained per project, 0 for
  // none (docs/storage.md "Bodies at rest").
  std::uint32_t body_compression_level = 3;
  std::uint32_t body_dictionary_bytes = 16384;
  BlobOptions blobs;  // [blob]: attachments (blob_store.hpp)
};

// The id of a bundle file: the random salt of its header (docs/protocol.md "Bundles").
inline constexpr std::size_t kBundleIdBytes = 16;
using BundleId = std::array<std::uint8_t, kBundleIdBytes>;

enum class VersionKind : std::uint8_t { put = 1, tombstone = 2 };

// The hashed, signed part of a version (docs/storage.md "Version encoding").
struct VersionHeader {
  ProjectId project;
  std::string collection;
  std::string doc_id;
  std::vector<VersionId> parents;  // sorted ascending, no duplicates
  DeviceId author;
  std::uint64_t hlc = 0;     // hybrid logical clock: ms << 16 | counter
  std::uint32_t schema = 1;  // the app's schema version of the body
  VersionKind kind = VersionKind::put;
  crypto::Digest body_hash{};  // SHA-256 of the body bytes (zero for tombstones)
  std::uint32_t body_size = 0;
  Bytes extensions;  // fields of newer formats: kept and forwarded unchanged
};

struct Version {
  VersionId id;
  VersionHeader header;
  std::optional<std::string> body;  // nullopt: tombstone, purged here, or never received
};

struct ProjectInfo {
  ProjectId id;
  std::string name;
  std::string settings_json = "{}";  // a JSON object
  std::uint64_t created_hlc = 0;
  DeviceId creator;  // the first coordinator: the root of membership authority
};

// Membership (docs/storage.md "Membership"): records in the reserved collection
// `_members`, one document per device, written by coordinators and synced like any data.
enum class Role : std::uint8_t { coordinator = 1, member = 2, removed = 3 };
std::string_view role_name(Role r);
std::optional<Role> parse_role(std::string_view s);

struct Member {
  DeviceId device;
  Role role = Role::member;
  std::string name;
  // For removed devices: the last log seq of theirs that stays accepted; their versions
  // after it are ignored on every device that learns of the removal.
  std::uint64_t max_seq = 0;
  DeviceId by;            // the coordinator who wrote this record
  std::uint64_t hlc = 0;  // when
  // Set when this device continues an earlier identity of the same device (restored
  // from a backup or found running twice): it holds that identity's role.
  std::optional<DeviceId> successor_of = std::nullopt;
};

inline constexpr std::string_view kMembersCollection = "_members";

// Destinations and delivery receipts (docs/storage.md "Destinations and receipts"): a
// coordinator names a device the project's destination (a hub) with a record in
// `_destinations` (one document per device; a delete un-names it); a destination states what
// it durably holds with a receipt in `_receipts` (one document, its own id, written only by
// itself). Both are versions in their author's signed log and travel like any data.
inline constexpr std::string_view kDestinationsCollection = "_destinations";
inline constexpr std::string_view kReceiptsCollection = "_receipts";
// Named destinations per project, and authors in one receipt (both checked where a record is
// written and where one is read back or received; a record beyond them is ignored).
inline constexpr std::size_t kMaxDestinations = 16;
inline constexpr std::size_t kMaxReceiptAuthors = 100000;
inline constexpr std::size_t kMaxDestinationNameBytes = 128;

// Erasure (docs/storage.md "Erasure"): a coordinator erases a document with a record in
// `_erasures` (document id: erasure_doc_id(collection, doc id)); every device drops the bodies
// of the document's versions that the erasure covers, and refuses to take them in again.
inline constexpr std::string_view kErasuresCollection = "_erasures";
inline constexpr std::size_t kMaxErasureReasonBytes = 256;

// The id of the `_erasures` record of a document: hex SHA-256 of "fieldsync/erasure/v1",
// the collection's length (u8), the collection and the document id.
std::string erasure_doc_id(std::string_view collection, std::string_view doc_id);

struct CleanupResult {
  std::uint64_t documents_removed = 0;
  std::uint64_t versions_removed = 0;
  std::uint64_t bytes_freed = 0;        // bodies dropped
  std::uint64_t documents_kept = 0;     // a version not covered by a receipt yet
  std::uint64_t documents_too_new = 0;  // covered, but newer than the minimum age
};

struct Erasure {
  std::string collection;
  std::string doc_id;
  std::string reason;     // the coordinator's note (never the erased data)
  DeviceId by;            // the coordinator who erased it
  std::uint64_t hlc = 0;  // the erasure's time: versions written before it learned of it go
};

struct Destination {
  DeviceId device;
  std::string name;
  DeviceId named_by;  // the coordinator whose record counts
  std::uint64_t hlc = 0;
};

struct Receipt {
  DeviceId hub;
  std::map<DeviceId, std::uint64_t> held;  // per author, the seq held durably
  std::int64_t at_ms = 0;                  // when the destination wrote it
};

// What of this device's own writes in a project reached a destination.
struct Delivery {
  std::uint64_t written = 0;    // this device's last seq in the project
  std::uint64_t delivered = 0;  // the highest seq of it that a destination's receipt covers
  // The write time of the oldest write no receipt covers (0: none).
  std::int64_t oldest_undelivered_ms = 0;
  std::vector<Destination> destinations;
  std::vector<Receipt> receipts;  // the destinations' latest receipts (not every one has one)
  // Clean-up on this device (Store::clean_up): documents and body bytes removed so far, and
  // when it last removed any (0: never).
  std::uint64_t cleaned_documents = 0;
  std::uint64_t cleaned_bytes = 0;
  std::int64_t cleaned_at_ms = 0;
};

// A single-use invitation to a project, kept by the inviting device.
struct Invite {
  std::array<std::uint8_t, 16> id{};
  std::array<std::uint8_t, 32> secret{};  // proves possession of the invite code
  ProjectId project;
  Role role = Role::member;
  std::int64_t expires_ms = 0;  // unix ms
  std::optional<DeviceId> used_by;
};

// A peer device this one keeps (docs/storage.md "Peers"): dialed again and trusted after a
// restart. Limits (storage/records.hpp) are checked by Store::save_peer and on read-back.
struct PeerRecord {
  DeviceId device;
  std::string name;  // clean UTF-8, at most kMaxPeerNameBytes
  // Where to reach it: transport address URIs "scheme://rest" such as "tcp://10.0.0.5:7891" or
  // "tcp://[fe80::1]:7891"; at most kMaxPeerAddresses, each at most kMaxPeerAddressBytes, no
  // duplicates. Empty: only approved, no address to dial.
  std::vector<std::string> addresses;
  bool approved = false;          // trusted by the user (sync.trust_policy = ask)
  std::int64_t added_ms = 0;      // unix ms of the first save (0: unknown, from format 1)
  std::int64_t last_seen_ms = 0;  // unix ms a session with it was last up (0: never)
};

// A peer record that cannot be read (reported, never fatal to load_peers).
struct PeerProblem {
  std::string device;  // device id, or the hex of a malformed key
  std::string error;
};

// What a peer lacks of a project, from what it is known to hold (Store::peer_lacks).
struct LackSummary {
  std::uint64_t entries = 0;  // log entries held here that the peer lacks
  std::uint64_t bytes = 0;    // their header and body bytes as held here
  std::uint32_t authors = 0;  // authors of which it lacks something
  bool known = false;         // something of what it holds is recorded (else: it lacks all)
};

// The state of one document: its heads (DAG leaves) and the deterministic winner.
struct DocumentState {
  std::string collection;
  std::string doc_id;
  VersionId winner;
  std::vector<VersionId> heads;     // winner first, then the other heads by rank
  bool deleted = false;             // the winner is a tombstone
  bool purged = false;              // bodies were removed on this device
  std::optional<std::string> body;  // winner's body if held
  DeviceId author;                  // winner's author
  std::uint64_t hlc = 0;            // winner's hlc
  std::uint32_t schema = 1;
  std::uint64_t local_seq = 0;  // changes-feed position of the last change
  bool in_conflict() const { return heads.size() > 1; }
};

struct WriteRequest {
  std::string collection;
  std::string doc_id;  // empty: a random 128-bit id is assigned
  std::string body;    // JSON object text; ignored for tombstones
  VersionKind kind = VersionKind::put;
  std::uint32_t schema = 1;
  // How to pick parents:
  //  create:   parents empty, must_not_exist = true
  //  update:   parents = {base}; a base that is not a head creates a concurrent version
  //  resolve:  parents = several heads
  //  no base:  use_current = true takes the winner (put) or all heads (tombstone)
  std::vector<VersionId> parents;
  bool must_not_exist = false;
  bool use_current = false;
  // A conditional write (HTTP If-Match / If-None-Match), checked in the write's transaction:
  // parents = {base} must name the current winner; use_current needs a document that exists
  // and is not deleted; must_not_exist fails the same way. Otherwise `aborted` and nothing is
  // written (a stale base is not kept as a concurrent version).
  bool strict = false;
};

struct WriteResult {
  VersionId version;
  std::string collection;
  std::string doc_id;
  std::uint64_t local_seq = 0;
  bool conflict = false;  // the document now has more than one head
  std::vector<VersionId> heads;
};

struct Change {
  std::uint64_t seq = 0;
  VersionId version;
  std::string collection;
  std::string doc_id;
  DeviceId author;
  bool deleted = false;
  bool local = false;  // written on this device (vs received)
};

struct FieldFilter {
  std::string field;       // a top-level field name
  std::string json_value;  // compared as JSON values, e.g. "\"wildlife\"" or "29"
};

class Subscription;

struct ListQuery {
  std::string collection;   // empty: every collection (cursor is then "collection/doc_id")
  std::string start_after;  // cursor for pagination: the `next` of the previous page
  std::uint32_t limit = 100;
  bool include_deleted = false;
  bool conflicts_only = false;       // only documents with more than one head
  std::vector<FieldFilter> filters;  // all must match
  // A condition in the subscription language (its "where": eq, in, range, bbox, all, any on
  // dot paths); null: none. Must match too.
  std::shared_ptr<const Subscription> selector;
  // Sorted by the JSON value at this dot path (then by collection and id) instead of by id;
  // empty: by id. A missing value sorts as null: null < false < true < numbers < strings <
  // arrays < objects. The cursor is then opaque (a `next` of the same query).
  std::vector<std::string> sort_path;
  bool sort_descending = false;
  // A sorted query reads every match to sort it: more than this many is invalid_argument
  // (api.max_sort_docs).
  std::uint32_t max_sort_docs = 100000;
};

// How a list query found its documents: through a declared index (its name), or by reading
// the whole collection (index empty). `examined`: the documents it read to answer.
struct QueryPlan {
  std::string index;
  std::uint64_t examined = 0;
};

struct ListPage {
  std::vector<DocumentState> docs;
  std::string next;  // cursor for the next page, empty at the end
  QueryPlan plan;
};

// An index an app declares on a collection (docs/storage.md "Indexes"): the documents'
// values at these dot paths, in order. Kept on this device only (never synced).
inline constexpr std::size_t kMaxIndexFields = 8;
inline constexpr std::size_t kMaxIndexNameBytes = 64;  // [A-Za-z0-9_.-]
struct IndexSpec {
  std::string name;
  std::string collection;
  std::vector<std::string> fields;  // dot paths, e.g. "site.region"
  bool operator==(const IndexSpec&) const = default;
};

struct IndexInfo {
  IndexSpec spec;
  bool ready = false;         // false: being built over the documents already held
  std::uint64_t entries = 0;  // documents indexed (so far, while building)
  // Set when the declaration does not read back: the index is neither kept nor used (drop
  // it and declare it again).
  std::string error;
};

struct MergeResult {
  std::vector<VersionId> heads;
  std::string body;                             // merged JSON object
  std::vector<std::string> conflicting_fields;  // same field changed differently
  bool clean() const { return conflicting_fields.empty(); }
};

// author -> highest contiguous log sequence number held.
using VersionVector = std::map<DeviceId, std::uint64_t>;

struct LogEntry {
  std::uint64_t seq = 0;
  VersionId id;
  Bytes header;                     // exact canonical header encoding (hashed to `id`)
  std::optional<std::string> body;  // omitted when purged or filtered out
  // Left out by a subscription (docs/storage.md "Subscriptions"): only `id` is given (no
  // header, no body), so the chain still verifies for a device that does not want it.
  bool elided = false;
  // Proven (docs/storage.md "Proven runs"): given without its neighbours, with the audit path
  // (leaf to root) that proves `id` at its place in the sealed run of the checkpoint that ends
  // the run; the entries of the run not given are skipped (no entry at all).
  bool proven = false;
  std::vector<crypto::Digest> path{};
};

// The author's seal over the run of its log a checkpoint ends, (from, seq]: a Merkle root of
// the run's version ids, signed (docs/storage.md "Sealed runs"). With it, one version of the
// run is proven the author's by the root and a short path, without the others.
struct RunSeal {
  std::uint64_t from = 0;  // the author's previous checkpoint (0: none)
  crypto::Digest root{};
  crypto::Signature signature{};
  bool operator==(const RunSeal&) const = default;
};

// The longest run a seal is made for or checked (storage.checkpoint_interval's ceiling).
inline constexpr std::uint64_t kMaxSealedRun = 1000000;

// An author's signature over its log up to `seq` (docs/storage.md "Log chain").
struct Checkpoint {
  std::uint64_t seq = 0;
  crypto::Digest chain{};
  crypto::Signature signature{};
  std::optional<RunSeal> seal;  // absent: written before seals, or not passed on
};

// The depth of the deepest audit path (a run of kMaxSealedRun entries).
inline constexpr std::size_t kMaxRunPath = 20;
// A sealed checkpoint in a BATCH (docs/protocol.md): what Store::read_log counts for each
// proven run towards a batch's bytes.
inline constexpr std::size_t kSealedCheckpointBytes = 209;

// A run of one author's log: entries (from, to], ending at a signed checkpoint. Entries are in
// seq order and contiguous, except in proven runs (LogEntry::proven), which give only some of
// theirs; a proven run may give none (then only its checkpoint is in the batch).
struct LogBatch {
  DeviceId author;
  std::vector<LogEntry> entries;
  std::vector<Checkpoint> checkpoints;  // every checkpoint inside the run; the last is at the end
  // The last seq the batch covers (its last checkpoint's), or 0 for an empty batch.
  std::uint64_t last_seq() const {
    std::uint64_t last = entries.empty() ? 0 : entries.back().seq;
    return checkpoints.empty() ? last : std::max(last, checkpoints.back().seq);
  }
  bool empty() const { return entries.empty() && checkpoints.empty(); }
};

// A received batch checked as far as needs no transaction (Store::prepare_log). Valid for
// the LogBatch it was made from only (`batch`), which must stay unchanged until applied.
struct PreparedLog {
  enum class BodyCheck : std::uint8_t { none, ok, tombstone, mismatch, too_large };
  struct Entry {
    bool id_ok = false;                   // the header hashes to the entry's id
    std::optional<VersionHeader> header;  // decoded (else `problem` says why)
    std::string problem;
    BodyCheck body = BodyCheck::none;
    // Packed ahead with the project's dictionary `dict` (else packed when written).
    bool packed = false;
    std::uint16_t dict = 0;
    Bytes frame;
  };
  // A checkpoint's seal (docs/storage.md "Sealed runs"): checked ahead when its whole run is in
  // the batch, else `unchecked` (apply_log checks it with the entries held).
  // `signed_only`: the signature verifies, the run's ids are not all in the batch (a proven
  // run, or one that began in an earlier batch).
  enum class SealCheck : std::uint8_t {
    unchecked,
    ok,
    signed_only,
    backwards,
    bad_signature,
    bad_root
  };
  const LogBatch* batch = nullptr;
  std::vector<Entry> entries;    // one per batch entry; left-out and earlier ones unchecked
  std::vector<SealCheck> seals;  // one per batch checkpoint
  // One per batch checkpoint: whether its signature verifies (checked ahead; apply_log still
  // checks its chain against the entries).
  std::vector<bool> signed_ok;
};

struct ApplyResult {
  std::uint32_t applied = 0;
  std::uint32_t duplicates = 0;  // already held (arrived by another path)
  std::uint64_t head = 0;        // author's head seq after the apply
  // The batch diverges from the author's log held here (two validly signed histories of
  // one device): nothing of it was applied to that log; `diverged_at` is the first seq
  // known to differ (or the batch's first seq when the point is not known yet). When the
  // author is a retired identity of this device, the received side was verified and
  // re-published in this device's current log instead (`relogged` entries).
  std::optional<std::uint64_t> diverged_at;
  std::uint32_t relogged = 0;
  bool republished = false;  // the received side was verified and is in our current log
  // The batch is of this device's own current log and differs from it or goes beyond it:
  // another copy of this device writes under its key (Store::report_identity_conflict).
  bool identity_conflict = false;
};

// The tip of one author's log: its seq and chain value there (docs/storage.md). Peers compare
// tips to notice two different histories under one device key.
struct LogTip {
  std::uint64_t seq = 0;
  crypto::Digest chain{};
};
using VersionTips = std::map<DeviceId, LogTip>;

// The last renewal of this device's identity.
struct IdentityChange {
  DeviceId previous;
  std::int64_t at_ms = 0;
  std::string reason;
};

// A consistent hot backup of a running store (Store::open_backup), read as files with their
// paths relative to the data directory, in this order: `RESTORED` (the marker that makes a
// store opened from the backup renew its identity first, so it can never write a second
// history under the identity it was copied from), `device.key`, `retired/<device id>.key`,
// `db/data.mdb` (a compacted copy of the database, made in one read transaction by a thread
// while it is read: writers carry on meanwhile) and the blob files `blobs/<xx>/<id>` (listed
// once the database copy is complete: a blob recorded in the copy is on disk by then; one
// stored later is an extra file the restored store does not record; one removed by blob gc
// meanwhile, unreferenced past its grace, is missing from the backup).
// Memory stays bounded by the pieces asked for. Not thread-safe: one reader, one thread.
// Destroying it before the end stops the database copy.
class BackupReader {
 public:
  virtual ~BackupReader() = default;
  // Moves to the next file and returns its path ('/'-separated); nullopt after the last one.
  virtual Result<std::optional<std::string>> next_file() = 0;
  // The next bytes of the current file, at most `max` (> 0); empty at its end.
  // Errors: internal (the database copy or a file read failed), resource_exhausted.
  virtual Result<Bytes> read(std::size_t max) = 0;
  // The identity the backup was made of.
  virtual const DeviceId& device() const = 0;
  // Bytes of the database copy read so far.
  virtual std::uint64_t db_bytes() const = 0;
};

// A device whose log was seen in two different versions (storage `forks` records).
struct ForkInfo {
  DeviceId author;
  std::uint64_t seq = 0;              // first seq known to differ
  std::int64_t seen_ms = 0;           // when it was first noticed here
  bool resolved = false;              // this device held the key and re-published both sides
  std::optional<DeviceId> successor;  // the identity that re-published them, when known
};

}  // namespace fieldsync::storage
