// Store: fieldsync's storage engine over one LMDB environment in the data directory.
//
// Owns: the device's identity key (device.key, 0600) and the LMDB files (0600, dir 0700).
// Data model (docs/storage.md): projects hold collections of JSON documents; every write
// creates an immutable, content-addressed Version; versions form a DAG per document; each
// author's versions form a signed, hash-chained per-device log per project; a version
// vector summarises what is held; a per-project changes feed numbers every applied version.
//
// Thread-safety: all methods may be called from any thread. Writes are serialised by LMDB;
// reads run concurrently with them. No method blocks on the network.
// Errors: every method returns Result; codes used: invalid_argument (bad id/JSON/field),
// not_found, already_exists, failed_precondition, too_large, resource_exhausted (disk or
// map full), verification_failed (bad chain/signature/hash in received data), data_loss.
#pragma once

#include <functional>
#include <memory>

#include "common/result.hpp"
#include "crypto/renewal.hpp"
#include "storage/blob_ref.hpp"
#include "storage/blob_store.hpp"
#include "storage/latency.hpp"
#include "storage/subscription.hpp"
#include "storage/types.hpp"

namespace fieldsync::storage {

// An older storage format converted when the store was opened: the copy of the data as it
// was (an LMDB directory an older release opens) is in `copy`.
struct StoreConversion {
  std::uint64_t from_format = 0;
  std::uint64_t to_format = 0;
  std::filesystem::path copy;
};

class Store {
 public:
  // Opens or creates the store in options.data_dir (created 0700).
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const DeviceId& device_id() const;
  const crypto::SigningKey& signing_key() const;
  const StoreOptions& options() const;
  // Set when this open converted an older storage format (docs/operations.md "Upgrading").
  const std::optional<StoreConversion>& converted() const;
  // How long each LMDB write transaction's commit took (its fsync included when
  // storage.durable = true), and each separate fsync (blob files and their directories).
  // Any thread; no lock (docs/api.md "Metrics").
  LatencySnapshot commit_latency() const;
  LatencySnapshot fsync_latency() const;

  // --- projects ---
  Result<ProjectInfo> create_project(std::string name, std::string settings_json = "{}");
  // Adds a project known from elsewhere (joining): same id on every device.
  Result<ProjectInfo> add_project(const ProjectInfo& info, ByteView secret);
  // The projects whose record reads back; those that do not are skipped and, when
  // `unreadable` is given, reported there (one corrupt record never fails the listing).
  Result<std::vector<ProjectInfo>> list_projects(
      std::vector<ProjectProblem>* unreadable = nullptr) const;
  Result<ProjectInfo> get_project(const ProjectId& id) const;
  Result<ProjectInfo> update_project(const ProjectId& id, std::optional<std::string> name,
                                     std::optional<std::string> settings_json);
  // The 32-byte secret members use to prove membership to each other.
  Result<Bytes> project_secret(const ProjectId& id) const;

  // --- grouped commits ---
  // Runs `body` on this thread with the store's writes grouped: each write transaction that a
  // Store method begins on this thread meanwhile is nested in one transaction (a write that
  // fails undoes only itself; later ones see earlier ones), and all are committed together at
  // the end, with one fsync. Change listeners run after that commit. The result is the
  // commit's: when it fails, nothing of the group is written, whatever the methods returned.
  // A method that reads through a transaction of its own (merge_heads, a list) does not see
  // the group's writes before the commit. Groups do not nest (internal).
  Status write_group(const std::function<void()>& body);

  // --- documents ---
  Result<WriteResult> write(const ProjectId& project, const WriteRequest& req);
  // All-or-nothing: one transaction, one fsync.
  Result<std::vector<WriteResult>> write_batch(const ProjectId& project,
                                               const std::vector<WriteRequest>& reqs);
  Result<DocumentState> get_document(const ProjectId& project, std::string_view collection,
                                     std::string_view doc_id) const;
  // One version of a document (current or historical).
  Result<Version> get_version(const ProjectId& project, std::string_view collection,
                              std::string_view doc_id, const VersionId& id) const;
  // Ancestors of the current heads, newest (by hlc) first.
  Result<std::vector<Version>> history(const ProjectId& project, std::string_view collection,
                                       std::string_view doc_id, std::uint32_t limit) const;
  Result<ListPage> list_documents(const ProjectId& project, const ListQuery& query) const;
  Result<std::vector<std::string>> list_collections(const ProjectId& project) const;
  // Field-level three-way merge of the heads against their common ancestor.
  Result<MergeResult> merge_heads(const ProjectId& project, std::string_view collection,
                                  std::string_view doc_id) const;
  // Removes this device's copies of the document's bodies; version ids stay known.
  Result<std::uint32_t> purge_document(const ProjectId& project, std::string_view collection,
                                       std::string_view doc_id);

  // --- indexes (store_indexes.cpp, docs/storage.md "Indexes") ---
  // Declares an index on a collection. From then on it is kept in the same transaction as
  // every local write and applied batch; the documents held already are indexed by the
  // store's index thread in short transactions (ready = false until done: list_documents
  // uses only ready indexes). Declaring the same spec again changes nothing; another spec
  // under a name in use is already_exists. Errors: invalid_argument (name, collection, fields),
  // not_found (project), failed_precondition (storage.max_indexes reached).
  Result<IndexInfo> create_index(const ProjectId& project, const IndexSpec& spec);
  // Removes the index and its entries. not_found when no index has that name.
  Status drop_index(const ProjectId& project, std::string_view name);
  // The project's indexes by name, with their entry counts (one pass over the entries).
  Result<std::vector<IndexInfo>> indexes(const ProjectId& project) const;

  // The number of the dictionary this project's new bodies are compressed with, once one was
  // trained for it (docs/storage.md "Bodies at rest").
  std::optional<std::uint16_t> body_dictionary(const ProjectId& project) const;

  // --- membership, invites, leaving (store_members.cpp) ---
  // Every device's current record, evaluated from the `_members` versions in hlc order,
  // accepting only records written by a device that was a coordinator at the time
  // (starting from the project's creator).
  Result<std::vector<Member>> members(const ProjectId& project) const;
  Result<std::optional<Member>> member(const ProjectId& project, const DeviceId& device) const;
  // Writes a membership record as this device. permission_denied unless this device is a
  // coordinator. Removing a device records the highest seq of its log held here; its
  // later versions are ignored (also retroactively, where already applied).
  Result<Member> set_member(const ProjectId& project, const DeviceId& device, Role role,
                            std::string name = {});
  Result<Invite> create_invite(const ProjectId& project, Role role, std::int64_t expires_ms);
  Result<std::vector<Invite>> list_invites(const ProjectId& project) const;
  // One invite by id (to check a joiner's proof before redeeming). not_found if unknown.
  Result<Invite> get_invite(const std::array<std::uint8_t, 16>& invite_id) const;
  // Marks the invite used by `joiner` and adds the joiner as a member, atomically.
  // not_found (unknown), failed_precondition (used or expired; the message says which).
  Result<Invite> redeem_invite(const std::array<std::uint8_t, 16>& invite_id,
                               const DeviceId& joiner, std::int64_t now_ms);
  // Removes every trace of the project from this device (its data stays on other devices).
  Status leave_project(const ProjectId& project);

  // --- erasure (store_erasures.cpp, docs/storage.md "Erasure") ---
  // Erases a document of an app collection on every device: writes the signed `_erasures`
  // record and drops here, in the same transaction, the bodies of the document's versions.
  // The document need not be held here. permission_denied unless this device is a
  // coordinator; invalid_argument for a reserved collection, bad names or reason.
  Result<Erasure> erase_document(const ProjectId& project, std::string_view collection,
                                 std::string_view doc_id, std::string reason);
  // The erasures that count (their author was a coordinator when writing them): per document,
  // the latest.
  Result<std::vector<Erasure>> erasures(const ProjectId& project) const;

  // --- destinations and delivery receipts (store_hubs.cpp, docs/storage.md "Destinations and
  // receipts") ---
  // The project's named destinations: per `_destinations` document, the latest version (by
  // hlc) written by a device that is a coordinator now; a put names the device, a delete
  // un-names it. At most kMaxDestinations (by name order of their ids).
  Result<std::vector<Destination>> destinations(const ProjectId& project) const;
  // Names (or, with named = false, un-names) a destination. permission_denied unless this
  // device is a coordinator; resource_exhausted beyond kMaxDestinations; not_found when
  // un-naming a device never named.
  Result<Destination> set_destination(const ProjectId& project, const DeviceId& device,
                                      std::string name, bool named);
  // The latest receipt of each named destination: the latest `_receipts/<its id>` version
  // written by that destination itself. Records of others, or that do not read back within
  // kMaxReceiptAuthors, are ignored.
  Result<std::vector<Receipt>> receipts(const ProjectId& project) const;
  // On a named destination: writes a receipt of its version vector when it holds more than
  // its last receipt says (its own writes aside). False: nothing to state (or not a named
  // destination). failed_precondition when this device holds only part of the project (a
  // subscription): a receipt must never claim what it left out.
  Result<bool> write_receipt(const ProjectId& project, std::int64_t now_ms);
  // What of this device's writes the destinations hold (docs/api.md "Delivery").
  Result<Delivery> delivery(const ProjectId& project) const;
  // Clean-up (docs/storage.md "Clean-up after delivery"): documents of app collections every
  // version of which a destination's receipt covers, and whose newest version is older than
  // `min_age_ms`, leave this device (left-out entries: no body; never fetched again).
  // Documents with a version no receipt covers stay. failed_precondition on a destination.
  Result<CleanupResult> clean_up(const ProjectId& project, std::int64_t min_age_ms,
                                 std::int64_t now_ms);
  // Whether documents of the project left this device by clean_up().
  Result<bool> cleaned(const ProjectId& project) const;

  // --- peers (store_peers.cpp, docs/storage.md "Peers") ---
  // Saves (replaces) the record of a peer. invalid_argument when a field is out of its limits
  // (storage/records.hpp: name, addresses, URI syntax, negative times) or the device is this
  // one. An existing record's added_ms is kept (the first save counts) and last_seen_ms never
  // goes back.
  Status save_peer(const PeerRecord& peer);
  // The records that read back (checked as on write); those that do not are skipped and, when
  // `unreadable` is given, reported there (one bad record never loses the others).
  Result<std::vector<PeerRecord>> load_peers(std::vector<PeerProblem>* unreadable = nullptr) const;
  // A session with `device` is up at `at_ms`: raises its record's last_seen_ms. Nothing is
  // written when it has no record or a later time is recorded.
  Status note_peer_seen(const DeviceId& device, std::int64_t at_ms);
  // Removes the peer's record and what it is known to hold in every project.
  Status forget_peer(const DeviceId& device);

  // What a peer is known to hold of a project, kept across restarts (per peer and project).
  // Merges `held` into the stored vector: per author the higher seq wins, nothing is lowered.
  // Only authors whose log this device holds are kept (the vector is bounded by the project's
  // authors; a peer may claim a seq beyond ours). One short write transaction, none when
  // nothing rises (the first note is written even when empty: known to hold nothing). Errors:
  // not_found (project), invalid_argument (`peer` is this device), resource_exhausted.
  Status note_peer_holds(const DeviceId& peer, const ProjectId& project, const VersionVector& held);
  // The stored vector (empty when nothing is known). data_loss when it does not read back.
  Result<VersionVector> peer_holds(const DeviceId& peer, const ProjectId& project) const;
  // The devices with a stored vector for the project (what they hold is known), in id order.
  Result<std::vector<DeviceId>> peers_holding(const ProjectId& project) const;
  // What the peer lacks of our logs: for each author, our seq beyond what it holds. One read
  // transaction stepping once over each lacking log entry (for its size), no copy of it.
  Result<LackSummary> peer_lacks(const DeviceId& peer, const ProjectId& project) const;

  // --- changes feed ---
  Result<std::vector<Change>> changes_since(const ProjectId& project, std::uint64_t since,
                                            std::uint32_t limit) const;
  Result<std::uint64_t> last_change_seq(const ProjectId& project) const;
  // Called after every commit that added changes, on the committing thread.
  // The listener must be cheap and must not call back into a write.
  using ChangeListener = std::function<void(const ProjectId&, std::uint64_t last_seq)>;
  void set_change_listener(ChangeListener listener);

  // --- sync support ---
  Result<VersionVector> version_vector(const ProjectId& project) const;
  // One author's entries after `after_seq`, ending at a signed checkpoint, with about
  // max_entries entries (more only if no checkpoint is closer) and bodies up to
  // max_body_bytes in total (later bodies are left for the next batch).
  Result<LogBatch> read_log(const ProjectId& project, const DeviceId& author,
                            std::uint64_t after_seq, std::uint32_t max_entries,
                            std::uint64_t max_bytes);
  // The same for a receiver that wants only part of the project (docs/storage.md
  // "Subscriptions"): versions `filter.want` does not select go as left-out entries (id only);
  // versions left out here go as such when `filter.left_out_ok` (the receiver wants no more
  // than this device does), else the batch ends before the first of them.
  Result<LogBatch> read_log(const ProjectId& project, const DeviceId& author,
                            std::uint64_t after_seq, std::uint32_t max_entries,
                            std::uint64_t max_bytes, const LogFilter& filter);
  // Verifies (hashes, chain, signatures, authorship) and applies a received batch in
  // one transaction. verification_failed leaves the store unchanged. Under a subscription,
  // versions it does not select are kept as left-out entries (id and chain only), and
  // left-out entries are accepted (refused by a device that holds everything); a version
  // held here as left out is taken in full when it arrives whole and is now wanted.
  Result<ApplyResult> apply_log(const ProjectId& project, const LogBatch& batch);
  // The same; with options.judged = false (a sender that gives us less than our subscription
  // wants), entries left out in the batch are asked for again from other peers
  // (request_vector) instead of being taken as not wanted.
  Result<ApplyResult> apply_log(const ProjectId& project, const LogBatch& batch,
                                const ApplyOptions& options);
  // The part of apply_log's work that needs no transaction, done ahead on any thread (e.g.
  // while the previous batch commits): each entry's header hashed against its id and decoded,
  // its body checked against the header, and packed for storage when the project has a
  // dictionary. Nothing is written; what fails here fails the apply, with the same error.
  PreparedLog prepare_log(const ProjectId& project, const LogBatch& batch) const;
  // apply_log with that work done: `prepared` must come from prepare_log on this very batch
  // (invalid_argument otherwise).
  Result<ApplyResult> apply_log(const ProjectId& project, const LogBatch& batch,
                                const ApplyOptions& options, const PreparedLog& prepared);

  // --- subscriptions (store_subscriptions.cpp, docs/storage.md "Subscriptions") ---
  // What this device wants of the project (everything() unless set). This device's own
  // record: never synced.
  Result<Subscription> subscription(const ProjectId& project) const;
  // Sets it. Documents that no longer match leave this device (their versions become
  // left-out entries: a local purge, never a delete that syncs), except documents with a
  // version this device wrote that no peer is known to hold yet. Versions left out before
  // are asked for again (request_vector()) and taken in if they now match.
  Result<SubscriptionChange> set_subscription(const ProjectId& project, const Subscription& s);
  // The vector to show peers as "what to send me": the version vector, lowered to just before
  // the first left-out version of each author while versions left out under an earlier
  // subscription wait to be judged again under this one.
  Result<VersionVector> request_vector(const ProjectId& project) const;
  // The vector to show `peer`: request_vector(), except to a peer known to give this device
  // less than it wants (given_by()): asking it again would bring the same left-out entries.
  Result<VersionVector> request_vector(const ProjectId& project, const DeviceId& peer) const;
  // Selections: the most this device gives a peer of the project, whatever that peer's
  // subscription ("send this tablet only district 7"). This device's own choice, never synced;
  // at most kMaxSelections per project. set_selection with everything() removes one.
  // Errors: not_found (project), invalid_argument (this device, too many).
  Result<std::map<DeviceId, Subscription>> selections(const ProjectId& project) const;
  Status set_selection(const ProjectId& project, const DeviceId& peer, const Subscription& s);
  // What `peer` last said it gives this device of the project (its selection for us, in its
  // SUBSCRIPTION); everything() when it never said otherwise. note_given_by() records it
  // (nothing is written when unchanged).
  Result<Subscription> given_by(const ProjectId& project, const DeviceId& peer) const;
  Status note_given_by(const ProjectId& project, const DeviceId& peer, const Subscription& s);
  // Authors whose log holds left-out versions here, with the seq up to which their log can be
  // given whole (the last checkpoint before the first left-out version). Other authors' logs
  // can be given whole up to their head.
  Result<VersionVector> whole_heads(const ProjectId& project) const;

  // --- bundles (store_bundles.cpp, docs/storage.md "Imported bundles") ---
  // Whether the bundle `id` was imported into the project (and not forgotten since).
  Result<bool> bundle_imported(const ProjectId& project, const BundleId& id) const;
  // Remembers that the bundle `id` was imported at `at_ms`. At most
  // options().max_imported_bundles are kept per project: the oldest is forgotten first.
  // Errors: not_found (project), resource_exhausted.
  Status note_bundle_imported(const ProjectId& project, const BundleId& id, std::int64_t at_ms);

  // --- identity over time (store_identity.cpp, docs/storage.md "One identity, one history") ---
  // Earlier identities of this device (renewed after a restore or a detected copy); their
  // keys are kept to re-publish what they wrote.
  std::vector<DeviceId> retired_ids() const;
  // How the current identity continues the earlier ones (oldest first, the newest
  // crypto::kMaxRenewalLinks): each link is signed by the old key. The TLS certificate carries
  // them, so peers that dial an old id accept the new key. Fixed once the store is open.
  const std::vector<crypto::RenewalLink>& renewal_links() const;
  bool holds_retired_key(const DeviceId& author) const;
  // The last renewal, if any: the identity before it, when and why.
  std::optional<IdentityChange> last_identity_change() const;
  // Evidence that another copy of this device writes under its current identity (a peer
  // holds entries of our log that we don't, or different ones). Recorded durably; from now
  // on local writes fail with `unavailable` until the store is reopened, which renews the
  // identity. The listener (called once, on the reporting thread) lets the owner reopen.
  void report_identity_conflict(const std::string& evidence);
  bool identity_renewal_pending() const;
  using IdentityListener = std::function<void(const std::string& evidence)>;
  void set_identity_listener(IdentityListener listener);
  // A retired identity whose other copies may hold another history: its tip is offered as
  // seq 0 (so peers send its whole log) until a session completes (clear_suspects()).
  void mark_suspect(const DeviceId& retired_author);
  void clear_suspects();
  // Per author: seq and chain of its log tip, as offered to peers.
  Result<VersionTips> version_tips(const ProjectId& project) const;
  // The chain value after `seq` of an author's log held here (nullopt beyond our head).
  Result<std::optional<crypto::Digest>> chain_at(const ProjectId& project, const DeviceId& author,
                                                 std::uint64_t seq) const;
  // Devices whose log was seen in two versions in this project (for status).
  Status record_fork(const ProjectId& project, const DeviceId& author, std::uint64_t seq);
  Result<std::vector<ForkInfo>> forks(const ProjectId& project) const;

  // --- backup (store_backup.cpp, docs/operations.md "Backup and restore") ---
  // A consistent hot backup of this device, read as a sequence of files (BackupReader).
  // Errors: internal (cannot start the copy).
  Result<std::unique_ptr<BackupReader>> open_backup() const;

  // --- blobs (blob_store.hpp, docs/storage.md "Blobs") ---
  // The attachments of this device's projects: uploads, reads, references, gc.
  BlobStore& blobs();
  const BlobStore& blobs() const;

  // --- variants of a blob (store_variants.cpp, docs/storage.md "Variants of a blob") ---
  // Records the preview and/or thumbnail of the blob `original` in the project's `_variants`
  // document of that id (a signed system write, synced like data). `made_by` is
  // kMadeByFieldsync (what this device made: written only when no live `_variants`
  // document of the original exists, else already_exists and nothing is written) or
  // kMadeByApp (supplied by an app: replaces the variants it gives, keeps the other one of
  // the existing document, and marks the document "app", so that fieldsync never replaces it).
  // Errors: not_found (project; or the original is not in the project: never uploaded nor
  // referred to here, released, or its document erased), invalid_argument (no variant given,
  // bad `made_by`, a reference contradicting a blob held here), already_exists.
  Result<BlobVariants> set_blob_variants(const ProjectId& project, const BlobInfo& original,
                                         std::optional<BlobInfo> preview,
                                         std::optional<BlobInfo> thumbnail,
                                         std::string_view made_by);
  // The variants recorded for `original` (nullopt: none, or the document is deleted or does
  // not read as a `_variants` body). Errors: not_found (project).
  Result<std::optional<BlobVariants>> blob_variants(const ProjectId& project,
                                                    const BlobId& original) const;

  struct Impl;  // opaque outside storage/

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  // apply_log, with its entries' own checks done ahead (prepared) or not (null).
  Result<ApplyResult> apply_log(const ProjectId& project, const LogBatch& batch,
                                const ApplyOptions& options, const PreparedLog* prepared);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::storage
