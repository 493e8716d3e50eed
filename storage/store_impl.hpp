// Store::Impl: the state behind Store and the transaction-level helpers shared by
// store.cpp (open, projects), store_documents.cpp, store_queries.cpp and store_log.cpp.
// Private to storage/.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <optional>

#include "storage/hybrid_clock.hpp"
#include "storage/latency.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/records.hpp"
#include "storage/store.hpp"

namespace fieldsync::storage {

// The message an earlier identity signs to vouch for its successor in a project.
Bytes succession_message(const ProjectId& p, const DeviceId& predecessor,
                         const DeviceId& successor);
// The predecessor named by a successor's own `_members` record, if its signature verifies.
std::optional<DeviceId> verified_predecessor(const ProjectId& p, const VersionHeader& h,
                                             const std::optional<std::string>& body);

class IndexBuilder;
struct IndexBuilderStop {  // stops and joins the index thread (store_indexes.cpp)
  void operator()(IndexBuilder* b) const;
};

struct Store::Impl {
  StoreOptions opts;
  std::optional<StoreConversion> converted;  // set by Store::open, read-only afterwards
  std::unique_ptr<LmdbEnv> env;
  std::optional<crypto::SigningKey> key;      // the current identity
  std::vector<crypto::SigningKey> retired;    // earlier identities of this device
  std::vector<crypto::RenewalLink> renewals;  // meta `renewals`: how `key` continues them
  std::atomic<bool> renewal_pending{false};   // report_identity_conflict() was called
  IdentityListener identity_listener;         // guarded by listener_mu
  HybridClock clock;
  LatencyHistogram fsyncs;  // the blob store's file and directory fsyncs (any thread)
  std::mutex listener_mu;
  ChangeListener listener;
  BodyCodec bodies;  // how log records store bodies (body_codec.hpp; any thread)

  explicit Impl(const StoreOptions& o)
      : opts(o),
        clock(o.max_clock_skew_ms),
        bodies(static_cast<int>(o.body_compression_level), o.body_dictionary_bytes) {}
  const Tables& t() const { return env->tables(); }
  const DeviceId& me() const { return key->device_id(); }

  Result<LmdbTxn> read_txn() const { return LmdbTxn::begin(*env, false); }
  Result<LmdbTxn> write_txn() const { return LmdbTxn::begin(*env, true); }

  Result<ProjectRecord> project(const LmdbTxn& txn, const ProjectId& p) const;
  Result<std::optional<DocRecord>> doc(const LmdbTxn& txn, ByteView doc_key) const;
  // The record of a document that must exist: not_found for an unknown project or document.
  Result<DocRecord> existing_doc(const LmdbTxn& txn, const ProjectId& p, std::string_view coll,
                                 std::string_view id) const;
  // The version at a log position, header decoded, body copied if held (`with_body`; without,
  // nothing is decompressed: for readers of the header only).
  Result<Version> load_version(const LmdbTxn& txn, const ProjectId& p, const Location& at,
                               bool with_body = true) const;
  // Every version of a document held here: its heads (in the DocRecord) and its
  // superseded versions (the docver history index), newest first.
  struct Held {
    std::uint64_t hlc;
    VersionId id;
    Location at;
  };
  // The log entry at `at` that a document's history names: data_loss when it is missing or
  // does not decode. `unpack` false: as stored (LogRecord::decode_stored, body left packed).
  Result<LogRecord> held_log(const LmdbTxn& txn, const ProjectId& p, const Location& at,
                             bool unpack = true) const;
  Result<std::vector<Held>> doc_versions(const LmdbTxn& txn, ByteView doc_key,
                                         const DocRecord& rec) const;
  Result<std::optional<Location>> find_version(const LmdbTxn& txn, ByteView doc_key,
                                               const DocRecord& rec, const VersionId& v) const;
  Result<HeadValue> head(const LmdbTxn& txn, const ProjectId& p, const DeviceId& a) const;
  // The project's version vector (heads table); the project's existence is not checked.
  Result<VersionVector> version_vector(const LmdbTxn& txn, const ProjectId& p) const;
  // An author's chain at `seq`: the genesis at 0, a checkpoint's, or a whole entry's held
  // here; nullopt where neither is held (inside a proven run, docs/storage.md "Proven runs").
  Result<std::optional<crypto::Digest>> chain_at(const LmdbTxn& txn, const ProjectId& p,
                                                 const DeviceId& a, std::uint64_t seq) const;
  // The proven run held here that `seq` is inside: its checkpoint's seq and seal (nullopt:
  // `seq` is in no sealed run held here).
  Result<std::optional<std::pair<std::uint64_t, RunSeal>>> held_run(const LmdbTxn& txn,
                                                                    const ProjectId& p,
                                                                    const DeviceId& a,
                                                                    std::uint64_t seq) const;
  // Where the entry at `seq` counts as left out from: the start of the proven run held here
  // that it is in (where its chain is known), else `seq` itself.
  Result<std::uint64_t> proven_run_start(const LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                         std::uint64_t seq) const;
  // Bytes (header + body) of an author's log entries (after, upto] held here (entries skipped
  // in proven runs count nothing).
  Result<std::uint64_t> log_bytes(const LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                  std::uint64_t after, std::uint64_t upto) const;
  // Opening a store of format 1: its JSON peer records become PeerValue records
  // (store_peers.cpp). Records that are not JSON objects are left (load_peers reports them).
  Status upgrade_peers_format1(LmdbTxn& txn) const;
  Result<std::uint64_t> change_counter(const LmdbTxn& txn, const ProjectId& p) const;
  Status put_change_counter(LmdbTxn& txn, const ProjectId& p, std::uint64_t seq) const;
  Status persist_clock(LmdbTxn& txn) const;

  // Adds a stored version to its document's DAG (heads, winner, history index) and to
  // the changes feed at `seq`. Order-independent: a version whose child arrived first
  // never becomes a head.
  // `rec` is the document's current record (empty for a new document).
  Result<DocRecord> add_to_dag(LmdbTxn& txn, ByteView doc_key, DocRecord rec,
                               const VersionHeader& h, const VersionId& id, const Location& at,
                               std::uint64_t seq, bool local) const;
  Result<DocumentState> doc_state(const LmdbTxn& txn, const ProjectId& p, std::string_view coll,
                                  std::string_view id, const DocRecord& rec) const;

  // A commit moved the project's changes feed to `seq`. `ref_free_from`: the changes after it
  // up to `seq` are of documents whose blob references did not change (no body that may hold
  // one, none held before: the blob indexer need not read them).
  void notify(const ProjectId& p, std::uint64_t seq,
              std::optional<std::uint64_t> ref_free_from = std::nullopt);

  // Blobs (blob_store.cpp): opened by Store::open after the identity, stopped before the
  // environment closes. blobs_changed() queues the project's reference indexing (any thread);
  // check_blob_refs() checks the blob references of a locally written body.
  Status open_blobs(Store& store);
  void close_blobs();
  void blobs_changed(
      const ProjectId& p,
      std::optional<std::pair<std::uint64_t, std::uint64_t>> ref_free = std::nullopt);
  void blobs_left(const ProjectId& p);
  Status check_blob_refs(const LmdbTxn& txn, std::string_view body) const;
  // Whether writing a version of document `dk` with `body` (null: none) may change the
  // document's blob references: a body that may hold one, or references indexed for it before
  // (looked up only when `held_before`). False lets notify() tell the blob indexer to skip it.
  Result<bool> may_move_blob_refs(const LmdbTxn& txn, ByteView dk, const std::string* body,
                                  bool held_before) const;
  // Whether the project no longer has the blob, as of `txn`: no record of it (never uploaded
  // nor referred to, or released by gc), or released at once (its document was erased).
  Result<bool> blob_gone(const LmdbTxn& txn, const ProjectId& p, const BlobId& id) const;

  // Identity (store_identity.cpp): loads device.key and retired/ keys, finishes or starts a
  // renewal. Called once by Store::open, before anything else is written.
  Status open_identity();
  Status renew_identity(const std::string& reason);
  Status load_renewals();
  const crypto::SigningKey* retired_key(const DeviceId& a) const;
  bool suspect(const LmdbTxn& txn, const DeviceId& a) const;
  Status note_fork(LmdbTxn& txn, const ProjectId& p, const DeviceId& a, std::uint64_t seq,
                   bool resolved) const;
  // Writes a checkpoint of a log this device signs (its own, or an earlier identity's) at
  // `seq`, where the log's chain is `chain`, with the seal of its run: the entries after the
  // author's previous checkpoint, all in the logs table (docs/storage.md "Sealed runs").
  Status put_own_checkpoint(LmdbTxn& txn, const ProjectId& p, const DeviceId& author,
                            const crypto::SigningKey& key, std::uint64_t seq,
                            const crypto::Digest& chain);
  // Appends versions to this device's own log with their original headers (an earlier
  // identity's writes being re-published); versions not held yet also enter their documents.
  // Skips versions already re-published. Returns how many were appended.
  Result<std::uint32_t> relog(
      LmdbTxn& txn, const ProjectId& p,
      const std::vector<std::pair<const LogEntry*, VersionHeader>>& entries);

  // Local writes inside an open write transaction (store_documents.cpp). `system`
  // allows the reserved `_` collections. Returns the results and the last changes seq.
  Result<std::pair<std::vector<WriteResult>, std::uint64_t>> write_in_txn(
      LmdbTxn& txn, const ProjectId& p, const std::vector<WriteRequest>& reqs, bool system);
  // Membership evaluation and enforcement (store_members.cpp).
  Result<std::map<DeviceId, Member>> membership(const LmdbTxn& txn, const ProjectId& p) const;
  // permission_denied "only a coordinator of the project can <to_do>" unless this device is a
  // coordinator of `p` now.
  Status require_coordinator(const LmdbTxn& txn, const ProjectId& p, std::string_view to_do) const;
  Result<Member> write_member(LmdbTxn& txn, const ProjectId& p, const DeviceId& device, Role role,
                              std::string name);
  Status enforce_removals(LmdbTxn& txn, const ProjectId& p) const;
  // For each (hlc, version id, author) point, ascending: whether the author was a coordinator
  // just before that point of the membership replay (records with a lower hlc, then id).
  struct AuthorityProbe {
    std::uint64_t hlc = 0;
    VersionId id;
    DeviceId author;
    bool coordinator = false;  // the answer
  };
  Status coordinators_at(const LmdbTxn& txn, const ProjectId& p,
                         std::vector<AuthorityProbe>& probes) const;
  // The versions of every document of a reserved collection, by document id: every held one,
  // or (heads_only) the heads (store_hubs.cpp).
  Result<std::map<std::string, std::vector<Version>>> collection_versions(const LmdbTxn& txn,
                                                                          const ProjectId& p,
                                                                          std::string_view coll,
                                                                          bool heads_only) const;
  // Erasure (store_erasures.cpp, docs/storage.md "Erasure"). erasure_hlc: the hlc of the latest
  // erasure of the document that counts here (0: none). A version is covered (its body is
  // dropped, it enters no document) when its erasure_epoch() is below that.
  Result<std::uint64_t> erasure_hlc(const LmdbTxn& txn, ByteView doc_key) const;
  Result<bool> any_erasure(const LmdbTxn& txn, const ProjectId& p) const;
  Result<bool> erased(const LmdbTxn& txn, const VersionHeader& h) const;
  // Evaluates the project's `_erasures` records and applies those that count and are new
  // here. Returns whether a document changed (the caller notifies).
  Result<bool> enforce_erasures(LmdbTxn& txn, const ProjectId& p) const;
  Status forget_erasures(LmdbTxn& txn, const ProjectId& p) const;
  // Takes a document out of this device (subscription narrowing, clean-up): its versions
  // become left-out entries (header kept, no body), its history and record go, and it appears
  // once more in the changes feed. Returns the changes seq written and the body bytes freed.
  Result<std::pair<std::uint64_t, std::uint64_t>> leave_document(LmdbTxn& txn, const ProjectId& p,
                                                                 ByteView doc_key,
                                                                 const DocRecord& rec) const;
  // A destination's receipt claims only versions whose attachments it holds too: the seq up
  // to which every version of `author`'s log held here has its blobs held here (advanced from
  // where it stopped; store_hubs.cpp).
  Result<std::uint64_t> blobs_whole_upto(LmdbTxn& txn, const ProjectId& p, const DeviceId& author,
                                         std::uint64_t head) const;
  // Forgets the bundles imported into a project (store_bundles.cpp; leaving it).
  Status forget_bundles(LmdbTxn& txn, const ProjectId& p) const;
  Status rebuild_doc(LmdbTxn& txn, const ProjectId& p, ByteView doc_key) const;

  // Subscriptions (store_subscriptions.cpp).
  // Removes the project's subscription records (leaving it).
  Status forget_subscriptions(LmdbTxn& txn, const ProjectId& p) const;
  Result<Subscription> subscription(const LmdbTxn& txn, const ProjectId& p) const;
  // Whether a received version is wanted under `s`: it matches, or it supersedes a version
  // held here (so changes that make a document leave, and deletes, arrive).
  Result<bool> wanted_here(const LmdbTxn& txn, const ProjectId& p, const Subscription& s,
                           const VersionHeader& h, const std::optional<std::string>& body) const;
  // Whether a version held here is wanted by a receiver under `s`: it matches, or a version
  // it supersedes (held here) matches.
  Result<bool> wanted_by(const LmdbTxn& txn, const ProjectId& p, const Subscription& s,
                         const VersionHeader& h, std::optional<ByteView> body) const;
  // Bookkeeping of left-out entries: the first one per author, and how far entries left
  // out under an earlier subscription have been judged again.
  Status rescan_left_out(LmdbTxn& txn, const ProjectId& p, const DeviceId& a, std::uint64_t was,
                         std::uint64_t from) const;
  // A proven run held here whose every entry is held now (docs/storage.md "Proven runs") is
  // rewritten as a whole run: each entry's chain from the one at `from`, which must reach the
  // checkpoint's at `end`. Else it stays as it is.
  Status complete_run(LmdbTxn& txn, const ProjectId& p, const DeviceId& a, std::uint64_t from,
                      std::uint64_t end);
  Status note_left_out(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                       std::uint64_t seq) const;
  Status note_taken_in(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                       std::uint64_t seq) const;
  // The seq up to which entries of the author left out under an earlier subscription were
  // judged again (nullopt: none wait to be).
  Result<std::optional<std::uint64_t>> judged_upto(const LmdbTxn& txn, const ProjectId& p,
                                                   const DeviceId& a) const;
  // The entry at `seq` was left out by a sender that may have left out more than our
  // subscription does: entries from it on are judged again (with peers that give us all).
  Status note_unjudged(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                       std::uint64_t seq) const;
  Status note_judged(LmdbTxn& txn, const ProjectId& p, const DeviceId& a, std::uint64_t from,
                     std::uint64_t upto) const;

  // Indexes (store_indexes.cpp, docs/storage.md "Indexes").
  struct IndexDef {
    IndexSpec spec;
    std::uint32_t number = 0;  // in the entry keys
    std::vector<std::vector<std::string>> paths;
    bool ready = false;
    std::string cursor;  // while building: the last document id indexed by the builder
  };
  using IndexSet = std::vector<IndexDef>;
  // Every change of a document record goes through these: the project's indexes on its
  // collection are kept in the same transaction (rec: the new record; null: removed).
  Status put_doc(LmdbTxn& txn, ByteView doc_key, const DocRecord& rec) const;
  Status del_doc(LmdbTxn& txn, ByteView doc_key) const;
  Status index_doc(LmdbTxn& txn, ByteView doc_key, const DocRecord* rec) const;
  // The project's index declarations as of `txn`. One that does not read back is left out
  // (named in `unreadable`): it is neither kept nor used, and fails nothing else.
  Result<IndexSet> index_set(const LmdbTxn& txn, const ProjectId& p,
                             std::vector<std::string>* unreadable = nullptr) const;
  // The same, cached for write transactions: filled and cleared only inside one (LMDB runs one
  // at a time), so a write never sees a declaration another write has not committed.
  Result<std::shared_ptr<const IndexSet>> write_index_set(const LmdbTxn& txn,
                                                          const ProjectId& p) const;
  void forget_index_cache(const ProjectId& p) const;
  // Records that the project's indexes are kept up to its changes-feed counter `seq` (called
  // by put_change_counter): a store written meanwhile by a release without indexes has them
  // rebuilt when opened (check_indexes).
  Status note_indexed(LmdbTxn& txn, const ProjectId& p, std::uint64_t seq) const;
  Status check_indexes();
  Status forget_indexes(LmdbTxn& txn, const ProjectId& p) const;
  // Lists through a ready index when one serves the query (nullopt: none does, scan).
  Result<std::optional<ListPage>> indexed_list(const LmdbTxn& txn, const ProjectId& p,
                                               const ListQuery& q) const;
  // One step of building (store's index thread): indexes up to a batch of documents of the
  // first index being built. False: none is being built.
  Result<bool> build_index_step();
  // Bodies at rest (store_dictionaries.cpp): the dictionaries and each project's current one,
  // loaded at open. put_log() writes a log record whose body may be packed: in `txn` it trains
  // the project's dictionary when one is due, and makes sure the dictionary it packs with is
  // stored in `txn` itself (so no committed record names one that is not).
  Status load_body_dictionaries();
  Status put_log(LmdbTxn& txn, const ProjectId& p, ByteView key, const LogRecord& lr);
  Status forget_body_dictionary(LmdbTxn& txn, const ProjectId& p);
  void start_index_builder();
  void wake_index_builder();
  mutable std::mutex index_mu;
  mutable std::map<ProjectId, std::shared_ptr<const IndexSet>> index_cache;  // under index_mu
  std::unique_ptr<IndexBuilder, IndexBuilderStop>
      index_builder;  // destroyed (joined) before the environment

  // Declared last: destroyed (its worker stopped) before everything it uses.
  std::unique_ptr<BlobStore> blobs;
};

}  // namespace fieldsync::storage
