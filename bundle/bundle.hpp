// Bundles: a project's log entries in one encrypted, signed file, carried between devices by
// hand (a USB stick) instead of over the network. Format in docs/protocol.md "Bundles".
//
// Sans I/O: BundleWriter hands out the bytes of a file piece by piece (pull), BundleReader
// takes them in any split (push); neither touches files or sockets. Both talk to the Store:
// the writer reads one log batch at a time, the reader verifies and applies as it goes.
//
// Thread-safety: one writer or reader is used by one thread at a time; several may run at
// once against the same Store (which is thread-safe).
// Errors: see BundleReader; nothing here throws or crashes on any input.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "storage/store.hpp"
#include "sync/messages.hpp"

namespace fieldsync::bundle {

// --- the format (docs/protocol.md "Bundles") ---
inline constexpr std::uint8_t kMagic[8] = {'f', 's', 'b', 'u', 'n', 'd', 'l', 'e'};
inline constexpr std::uint8_t kFormatVersion = 1;
inline constexpr std::size_t kSaltBytes = storage::kBundleIdBytes;  // 16: also the bundle's id
inline constexpr std::size_t kTagBytes = 16;                        // the project tag
// magic (8), version (1), reserved (7), salt (16), project tag (16).
inline constexpr std::size_t kHeaderBytes = 48;
// Plaintext bytes of one sealed chunk: at most this (the format's bound; a reader refuses a
// longer chunk before buffering it) and at least kMinChunkBytes (config range).
inline constexpr std::uint32_t kMaxChunkBytes = 1u << 20;
inline constexpr std::uint32_t kMinChunkBytes = 1u << 10;
// The chunk length field: bit 31 marks the last chunk, bits 0..30 give the sealed length.
inline constexpr std::uint32_t kLastChunkBit = 0x80000000u;
// Records inside the plaintext: u8 type, u32 length, payload.
inline constexpr std::size_t kRecordHeaderBytes = 5;
// BLOB, BLOB_HASHES and BLOB_DATA carry the blobs the project's documents refer to, after the
// BATCH records; they are ignorable extensions (a reader that does not know them skips them).
enum class RecordType : std::uint8_t {
  begin = 0x01,
  batch = 0x02,
  end = 0x03,
  blob = 0x81,
  blob_hashes = 0x82,
  blob_data = 0x83,
  blobs_held = 0x84,  // the blobs the producer holds of the project (after BEGIN)
  seals = 0x85,       // the run seals of the checkpoints of the BATCH right after it
};
// Record types with this bit set are skipped by a reader that does not know them (still
// covered by END's signature); an unknown type below it is `unsupported`.
inline constexpr std::uint8_t kIgnorableRecordBit = 0x80;

// Which blobs a bundle carries (ExportOptions::blobs; the API's `blobs` parameter).
enum class BlobSelection : std::uint8_t {
  all,       // every blob the project's documents refer to and this device holds
  variants,  // only thumbnails and previews: originals (and every other blob) left out
  none,      // no blob: log entries only
};
// "all", "variants", "none", and back (nullopt for anything else).
std::string_view blob_selection_name(BlobSelection s);
std::optional<BlobSelection> parse_blob_selection(std::string_view name);
inline constexpr std::size_t kMaxProducerNameBytes = sync::kMaxDeviceNameBytes;  // 64

struct ExportOptions {
  // Leave out what all of these devices are known to hold (Store::peer_holds, per author the
  // minimum over them; an unknown device = holds nothing; this device is ignored).
  // Empty: everything.
  std::vector<DeviceId> for_devices;
  // Plaintext bytes per sealed chunk (bundle.chunk_bytes), kMinChunkBytes..kMaxChunkBytes.
  std::uint32_t chunk_bytes = 64u << 10;
  // Per BATCH record, as for the network (sync.batch_entries, sync.batch_bytes).
  std::uint32_t batch_entries = 2048;
  std::uint64_t batch_bytes = 2u << 20;
  // No record is larger (bundle.max_record_bytes): a log run that does not fit even alone is
  // too_large. Keep it at most the importing devices' ImportOptions::max_record_bytes.
  std::uint32_t max_record_bytes = 4u << 20;
  // The producer's name shown by the importer (daemon.device_name), cut to 64 bytes.
  std::string device_name;
  // The blobs carried after the log entries: thumbnails, then previews, then the rest; less
  // those every device of `for_devices` said it holds (BlobStore::peer_blobs: the BLOBS_HELD
  // records of its own last bundle imported here; a device that said nothing holds none).
  BlobSelection blobs = BlobSelection::all;
};

// Pull-based: the caller writes each piece where it likes (a file, an HTTP body). Holds at
// most one log batch and one chunk, never the whole bundle.
class BundleWriter {
 public:
  // Snapshots the project's version vector (what the bundle covers) and works out what to
  // leave out. Errors: not_found (project), invalid_argument (options out of range).
  static Result<std::unique_ptr<BundleWriter>> create(storage::Store& store,
                                                      const ProjectId& project,
                                                      ExportOptions options);
  ~BundleWriter();
  BundleWriter(const BundleWriter&) = delete;
  BundleWriter& operator=(const BundleWriter&) = delete;

  // The next bytes of the file (the header, then one or more sealed chunks); empty = end of
  // file. An error (a store read failed, too_large) sticks: every later call returns it.
  Result<Bytes> next();

  struct Stats {
    std::uint64_t entries = 0;  // log entries written so far
    std::uint64_t batches = 0;  // BATCH records
    std::uint64_t bytes = 0;    // file bytes handed out
    std::uint64_t blobs = 0;    // blobs written whole
    std::uint64_t blob_bytes = 0;
    // Blobs begun and not finished: a chunk of this device's copy did not match its hash
    // (data_loss; the importer skips the blob).
    std::uint64_t blobs_unreadable = 0;
    // Blobs of the selection left out because every device of for_devices holds them.
    std::uint64_t blobs_left_out = 0;
  };
  const Stats& stats() const;
  // The bundle's id (its salt), as the importer remembers it.
  const storage::BundleId& id() const;

  struct State;  // opaque outside bundle/

 private:
  explicit BundleWriter(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

struct ImportOptions {
  // The largest record accepted (bundle.max_record_bytes): a larger one is too_large before
  // it is buffered.
  std::uint32_t max_record_bytes = 4u << 20;
  // BATCH payload limits, as for the network (sync.max_projects, storage.max_body_bytes).
  sync::DecodeLimits limits;
};

struct ImportReport {
  ProjectId project;
  DeviceId producer;          // the device that wrote the bundle (from BEGIN; END signs it)
  std::string producer_name;  // sanitised: valid UTF-8, no control characters
  std::int64_t created_ms = 0;
  std::uint64_t entries = 0;     // log entries read from the bundle
  std::uint64_t applied = 0;     // entries new to this device, verified and applied
  std::uint64_t duplicates = 0;  // entries this device held already
  std::uint64_t batches = 0;     // BATCH records applied
  // Entries not applied because this device holds another history of their author's log
  // (a fork, docs/storage.md "One identity, one history"; recorded like a network one).
  std::uint64_t skipped = 0;
  // Blobs (docs/protocol.md "Blobs in a bundle"). Imported: received whole, every chunk
  // verified, stored. Held: already here, skipped without writing anything. Skipped: refused
  // (no document of the project refers to it, its size or chunk hashes do not match the
  // reference, a chunk does not match its hash, blob.max_blob_bytes, blob.project_quota_bytes,
  // the disk, cut short in the bundle): nothing of it becomes held; blob_problem says why the
  // first one was. blob_bytes: chunk bytes written.
  std::uint64_t blobs_imported = 0;
  std::uint64_t blobs_held = 0;
  std::uint64_t blobs_skipped = 0;
  std::uint64_t blob_bytes = 0;
  std::string blob_problem;
  // The blobs the producer said it holds (its BLOBS_HELD records; nullopt: a bundle without
  // them, from a writer before them), at most blob.max_peer_blobs.
  std::optional<std::uint64_t> producer_blobs;
  // finish() succeeded: END's signature verified, nothing followed it, and the input ended
  // with the last chunk. Only then are the bundle (as imported), the producer's vector and the
  // blobs it holds recorded.
  bool complete = false;
};

// Push-based. Verifies and applies as bytes arrive; nothing unverified is applied. Buffers at
// most one chunk and one record (and one blob chunk).
//
// Blobs go through BlobStore::begin_receive() (so blob.max_blob_bytes, the project's quota and
// partial-file resume apply): their chunk hashes are checked against the root of the
// project's (signed) reference, and each chunk against its hash, before anything is written.
// A blob that fails a check is skipped (ImportReport::blobs_skipped); it never fails the
// import. Chunks are written on the calling thread (page cache); each blob is then fsynced
// and recorded on the blob worker: finish() waits for those, so call it off the blob worker,
// or in a job posted to it after the last feed() (the worker runs jobs in order).
//
// Errors (the first one sticks; feed and finish return it from then on):
//   invalid_argument     not a bundle (magic), malformed records, data after END or after the
//                        last chunk (the bundle is then not recorded as imported)
//   unsupported          a newer bundle format or an unknown non-ignorable record type
//   not_found            no project on this device matches the bundle
//   already_exists       this bundle was already imported (nothing is applied)
//   permission_denied    the producer is removed from the project (nothing is applied)
//   failed_precondition  the bundle leaves out entries this device lacks (made for others)
//   verification_failed  a chunk fails authentication (chunk N, byte offset X), a batch does
//                        not verify, END's signature is bad (applied entries stay: their
//                        authors signed them; the producer's vector is not recorded)
//   too_large            a chunk or record over its limit (refused before buffering it)
//   data_loss            (finish) the input ended before the last chunk: truncated
//   unavailable          the bundle holds another version of this device's own log: another
//                        copy of this device wrote under its key (the store renews it)
class BundleReader {
 public:
  BundleReader(storage::Store& store, ImportOptions options);
  ~BundleReader();
  BundleReader(const BundleReader&) = delete;
  BundleReader& operator=(const BundleReader&) = delete;

  // The next bytes of the file, in any split.
  Status feed(ByteView bytes);
  // End of input: the report if the bundle was complete and verified (recorded as imported
  // only now), else the error (data_loss when it was cut short).
  Result<ImportReport> finish();
  // What was applied so far (also after an error).
  const ImportReport& progress() const;

  struct State;  // opaque outside bundle/

 private:
  std::unique_ptr<State> s_;
};

// The file name this device gives its bundles of `project` in a folder shared by a team
// (`syncctl bundle sync`): "fieldsync-" + 26 base32 characters of
// HMAC-SHA256(HMAC-SHA256(secret, "fieldsync-bundle-file"), device id) + ".bundle". Stable,
// different per (device, project), and meaningless without the project secret.
// Errors: not_found (project).
Result<std::string> file_name(const storage::Store& store, const ProjectId& project);

}  // namespace fieldsync::bundle
