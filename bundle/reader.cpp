// BundleReader: checks the header, finds the project by its tag, opens each chunk as it
// completes and applies each record as it completes (docs/protocol.md "Bundles"). Only bytes
// that authenticated reach a record; only batches that verified (Store::apply_log) are applied.
// A BATCH is applied on a thread of its own while the next is read and prepared
// (Store::prepare_log); everything else waits for it (State::drain), in file order.
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>

#include "bundle/bundle.hpp"
#include "bundle/format.hpp"
#include "common/clock.hpp"
#include "storage/blob_ref.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::bundle {

namespace {

std::string count(std::uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

// Blobs being finished (fsync, named, recorded) on the blob worker, and how that ended.
struct BlobTally {
  std::mutex mu;
  std::condition_variable cv;
  std::uint32_t pending = 0;
  std::uint64_t imported = 0;
  std::uint64_t failed = 0;
  std::string problem;  // the first failure

  void started() {
    std::lock_guard lock(mu);
    ++pending;
  }
  void ended(const Status& st, const storage::BlobId& id) {
    {
      std::lock_guard lock(mu);
      --pending;
      if (st) {
        ++imported;
      } else {
        ++failed;
        if (problem.empty())
          problem = "blob " + storage::digest_hex(id).substr(0, 12) + ": " + st.error().message;
      }
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  }
};

// Reports the end of one blob's finish exactly once, also when the blob worker drops the job
// (the store is closing).
struct FinishCall {
  std::shared_ptr<BlobTally> tally;
  storage::BlobId id;
  bool called = false;
  ~FinishCall() {
    if (!called) tally->ended(make_error(Errc::unavailable, "the store is closing"), id);
  }
};

// The blob whose records are being read. Its records are checked for form whatever happens
// to the blob; `rx` is null when the blob is not received (held, refused, failed).
struct Incoming {
  storage::BlobId id{};
  std::uint64_t size = 0;
  std::uint32_t chunks = 0;
  std::uint32_t hashes_read = 0;
  std::vector<crypto::Digest> hashes;  // only while receiving
  std::uint32_t chunk = 0;             // the chunk being read
  std::uint32_t chunk_at = 0;          // its bytes read so far
  Bytes buf;                           // those bytes (only while receiving)
  crypto::Sha256 whole;                // of every chunk in order: must be the id
  std::unique_ptr<storage::BlobReceiver> rx;
  std::size_t chunk_len(std::uint32_t i) const {
    std::uint64_t start = std::uint64_t{i} * storage::kBlobChunkBytes;
    return static_cast<std::size_t>(
        std::min<std::uint64_t>(storage::kBlobChunkBytes, size - start));
  }
  bool done() const { return hashes_read == chunks && chunk == chunks; }
};

}  // namespace

struct BundleReader::State {
  storage::Store& store;
  ImportOptions opts;
  enum class Stage { header, length, chunk, end };
  Stage stage = Stage::header;
  std::uint64_t offset = 0;  // file bytes consumed
  Bytes header;
  storage::BundleId salt{};
  crypto::AeadKey key{};
  Bytes length_field;  // the current chunk's length field as it arrives
  Bytes chunk;         // the current sealed chunk as it arrives
  std::uint32_t chunk_len = 0;
  bool chunk_last = false;
  std::uint64_t chunk_index = 0;
  std::uint64_t chunk_offset = 0;  // where the current chunk's length field starts
  Bytes plain;                     // opened bytes not yet consumed as records, from plain_at on
  std::size_t plain_at = 0;
  crypto::Sha256 digest;
  bool begun = false, ended = false;
  // A SEALS record's seals, for the BATCH that must come next.
  std::optional<std::vector<std::pair<std::uint64_t, storage::RunSeal>>> pending_seals;
  bool end_verified = false;       // END's signature and counts checked (recorded by finish)
  std::uint64_t batches_read = 0;  // BATCH records read (applied or skipped)
  storage::VersionVector holds;
  // The producer's BLOBS_HELD ids (the first blob.max_peer_blobs), and whether it sent any.
  std::vector<storage::BlobId> producer_blobs;
  bool blobs_held_seen = false;
  bool holdings_closed = false;  // a BATCH or BLOB came: no BLOBS_HELD from here on
  std::set<DeviceId> diverged;
  std::optional<Error> error;
  ImportReport report;

  std::optional<Incoming> blob;
  bool blobs_indexed_after_batches = false;
  std::shared_ptr<BlobTally> tally = std::make_shared<BlobTally>();
  std::uint64_t blobs_refused = 0;  // skipped here (not on the worker)

  State(storage::Store& s, ImportOptions o) : store(s), opts(std::move(o)) {}

  Error fail(Error e) {
    error = e;
    return e;
  }
  std::string where() const {
    return "chunk " + std::to_string(chunk_index) + " (byte offset " +
           std::to_string(chunk_offset) + ")";
  }

  // --- header ---
  Status check_header_prefix() {
    std::size_t n = std::min(header.size(), sizeof kMagic);
    if (!std::equal(header.begin(), header.begin() + static_cast<std::ptrdiff_t>(n), kMagic))
      return make_error(Errc::invalid_argument, "not a fieldsync bundle (wrong magic bytes)");
    if (header.size() > sizeof kMagic) {
      std::uint8_t v = header[sizeof kMagic];
      if (v > kFormatVersion)
        return make_error(Errc::unsupported, "bundle format " + std::to_string(v) +
                                                 " is newer than this daemon (it reads format " +
                                                 std::to_string(kFormatVersion) +
                                                 "): update fieldsync");
      if (v == 0) return make_error(Errc::invalid_argument, "not a fieldsync bundle (format 0)");
    }
    return {};
  }

  Status open_header() {
    std::copy_n(header.begin() + 16, kSaltBytes, salt.begin());
    ByteView tag = ByteView(header).subspan(16 + kSaltBytes, kTagBytes);
    auto projects = store.list_projects();
    if (!projects) return projects.error();
    std::optional<ProjectId> found;
    Bytes secret;
    for (const auto& p : *projects) {
      auto s = store.project_secret(p.id);
      if (!s) continue;
      auto t = detail::project_tag(*s, salt);
      if (crypto::constant_time_equal(ByteView(t), tag)) {
        found = p.id;
        secret = std::move(*s);
        break;
      }
    }
    if (!found)
      return make_error(Errc::not_found,
                        "no project on this device matches this bundle (join the project first)");
    report.project = *found;
    auto seen = store.bundle_imported(*found, salt);
    if (!seen) return seen.error();
    if (*seen) return make_error(Errc::already_exists, "this bundle was already imported");
    auto k = detail::chunk_key(secret, salt);
    if (!k) return k.error();
    key = *k;
    digest.update(header);
    return {};
  }

  // --- chunks ---
  Status open_chunk() {
    auto st = crypto::aes256gcm_open(key, detail::chunk_nonce(chunk_index, chunk_last), header,
                                     chunk, plain);
    if (!st)
      return make_error(Errc::verification_failed,
                        "bundle authentication failed at " + where() +
                            ": the file is damaged, reordered or was changed");
    chunk.clear();
    FS_TRY(take_records());
    if (chunk_last && !ended)
      return make_error(Errc::invalid_argument,
                        "the last chunk of the bundle ends without an END record");
    ++chunk_index;
    return {};
  }

  // --- records ---
  Status take_records() {
    for (;;) {
      std::size_t avail = plain.size() - plain_at;
      if (avail < kRecordHeaderBytes) break;
      ByteReader r(ByteView(plain).subspan(plain_at, kRecordHeaderBytes));
      std::uint8_t type = r.u8();
      std::uint32_t len = r.u32();
      if (len > opts.max_record_bytes)
        return make_error(Errc::too_large, "a record of " + std::to_string(len) + " bytes in " +
                                               where() + " is over the import limit of " +
                                               std::to_string(opts.max_record_bytes) +
                                               " bytes (bundle.max_record_bytes)");
      if (avail < kRecordHeaderBytes + len) break;
      ByteView record = ByteView(plain).subspan(plain_at, kRecordHeaderBytes + len);
      FS_TRY(on_record(type, record));
      plain_at += record.size();
    }
    // Keep only the unfinished record.
    plain.erase(plain.begin(), plain.begin() + static_cast<std::ptrdiff_t>(plain_at));
    plain_at = 0;
    if (plain.capacity() > 2 * (std::size_t{kMaxChunkBytes} + plain.size())) plain.shrink_to_fit();
    return {};
  }

  Status on_record(std::uint8_t type, ByteView record) {
    ByteView payload = record.subspan(kRecordHeaderBytes);
    if (ended) return make_error(Errc::invalid_argument, "data after the END record in " + where());
    if (type == static_cast<std::uint8_t>(RecordType::end)) {
      FS_TRY(drain());
      if (pending_seals)
        return make_error(Errc::invalid_argument,
                          "a SEALS record not followed by a BATCH in " + where());
      // Checked before END takes effect: END must end the plaintext (the whole last chunk is
      // open here, so anything after END is in `plain` already).
      if (chunk_last && plain_at + record.size() != plain.size())
        return make_error(Errc::invalid_argument, "data after the END record in " + where());
      return on_end(payload);
    }
    digest.update(record);
    if (pending_seals && type != static_cast<std::uint8_t>(RecordType::batch))
      return after_drain(make_error(Errc::invalid_argument,
                                    "a SEALS record not followed by a BATCH in " + where()));
    if (type != static_cast<std::uint8_t>(RecordType::batch) &&
        type != static_cast<std::uint8_t>(RecordType::seals))
      FS_TRY(drain());
    switch (static_cast<RecordType>(type)) {
      case RecordType::begin: return on_begin(payload);
      case RecordType::batch: return on_batch(payload);
      case RecordType::blob: return on_blob(payload);
      case RecordType::blob_hashes: return on_blob_hashes(payload);
      case RecordType::blob_data: return on_blob_data(payload);
      case RecordType::blobs_held: return on_blobs_held(payload);
      case RecordType::seals: return on_seals(payload);
      case RecordType::end: break;
    }
    if (type & kIgnorableRecordBit) return {};  // an extension of a later version
    return make_error(Errc::unsupported, "unknown bundle record type " + std::to_string(type) +
                                             " in " + where() + ": update fieldsync");
  }

  Status on_begin(ByteView payload) {
    if (begun) return make_error(Errc::invalid_argument, "a second BEGIN record in " + where());
    auto b = detail::decode_begin(payload);
    if (!b) return b.error();
    if (b->version != header[sizeof kMagic])
      return make_error(Errc::invalid_argument, "BEGIN and the header name different formats");
    if (b->project != report.project)
      return make_error(Errc::invalid_argument, "BEGIN names another project than the header");
    // A removed device's bundle is refused before anything of it is applied.
    auto m = store.member(report.project, b->producer);
    if (!m) return m.error();
    if (*m && (*m)->role == storage::Role::removed)
      return make_error(Errc::permission_denied,
                        "bundle from a removed device (" + b->producer.short_str() + ")");
    // Entries the bundle leaves out (it was made for devices holding them) must be held here.
    auto mine = store.version_vector(report.project);
    if (!mine) return mine.error();
    for (const auto& [a, from] : b->since) {
      auto h = b->holds.find(a);
      if (h == b->holds.end() || h->second <= from) continue;  // nothing of this author in it
      auto it = mine->find(a);
      std::uint64_t have = it == mine->end() ? 0 : it->second;
      if (have < from)
        return make_error(Errc::failed_precondition,
                          "this bundle starts after seq " + std::to_string(from) + " of " +
                              a.short_str() + " but this device holds only " +
                              std::to_string(have) +
                              ": it was made for devices that hold more; export one for this "
                              "device (or a full one)");
    }
    begun = true;
    report.producer = b->producer;
    report.producer_name = std::move(b->producer_name);
    report.created_ms = b->created_ms;
    holds = std::move(b->holds);
    return {};
  }

  // A BATCH record being applied on another thread while the records after it are read; the
  // next BATCH is checked and packed (Store::prepare_log) meanwhile. Any other record, the end
  // of the input and an error wait for it (drain), so records take effect in file order.
  struct Applying {
    sync::Batch m;
    storage::PreparedLog prepared;
    std::future<Result<storage::ApplyResult>> result;
    std::string where;  // the record's place, for its error
  };
  std::unique_ptr<Applying> applying;

  // The batch being applied, once done: its outcome is accounted for as it was read.
  Status drain() {
    if (!applying) return {};
    auto job = std::move(applying);
    return account(*job, job->result.get());
  }

  Status account(const Applying& job, Result<storage::ApplyResult> r) {
    const DeviceId& a = job.m.log.author;
    std::uint64_t n = job.m.log.entries.size();
    std::uint64_t first = job.m.log.entries.front().seq, last = job.m.log.entries.back().seq;
    if (!r) {
      Error e = r.error();
      e.message = "batch of " + count(n, "entry", "entries") + " (seq " + std::to_string(first) +
                  ".." + std::to_string(last) + ") by " + a.short_str() + " in " + job.where +
                  " rejected: " + e.message;
      return e;
    }
    if (r->identity_conflict) {
      store.report_identity_conflict("a bundle from " + report.producer.short_str() +
                                     " holds another version of our log (seq " +
                                     std::to_string(*r->diverged_at) + ")");
      return make_error(Errc::unavailable,
                        "the bundle holds another version of this device's own log: another "
                        "copy of this device wrote under its identity; renewing it");
    }
    report.entries += n;
    if (r->diverged_at && !r->republished) {  // a fork, noted by the store (as on the network)
      diverged.insert(a);
      report.skipped += n;
      return {};
    }
    report.applied += r->republished ? r->relogged : r->applied;
    report.duplicates += r->duplicates;
    ++report.batches;
    blobs_indexed_after_batches = false;
    return {};
  }

  // The batch before goes first: its error comes before any about this record.
  Status after_drain(Error e) {
    FS_TRY(drain());
    return e;
  }

  // BLOBS_HELD: what the producer holds of the project's blobs, recorded once the bundle is
  // complete. Between BEGIN and the first BATCH or BLOB; ids ascending across the records.
  Status on_blobs_held(ByteView payload) {
    if (!begun || holdings_closed)
      return make_error(Errc::invalid_argument,
                        "a BLOBS_HELD record out of place (it follows BEGIN, before any BATCH or "
                        "BLOB) in " +
                            where());
    auto ids = detail::decode_blobs_held(payload);
    if (!ids)
      return make_error(Errc::invalid_argument, "malformed BLOBS_HELD record in " + where());
    blobs_held_seen = true;
    const std::size_t limit = store.blobs().options().max_peer_blobs;
    for (const auto& id : *ids) {
      if (!producer_blobs.empty() && !(producer_blobs.back() < id))
        return make_error(Errc::invalid_argument,
                          "BLOBS_HELD ids not in ascending order in " + where());
      if (producer_blobs.size() < limit) producer_blobs.push_back(id);
    }
    return {};
  }

  // SEALS: kept for the BATCH that must follow it (not applied: the apply in flight goes on).
  Status on_seals(ByteView payload) {
    if (!begun)
      return after_drain(
          make_error(Errc::invalid_argument, "a SEALS record before BEGIN in " + where()));
    auto s = detail::decode_seals(payload);
    if (!s)
      return after_drain(make_error(Errc::invalid_argument, s.error().message + " in " + where()));
    pending_seals = std::move(*s);
    return {};
  }

  Status on_batch(ByteView payload) {
    holdings_closed = true;
    if (!begun)
      return after_drain(
          make_error(Errc::invalid_argument, "a BATCH record before BEGIN in " + where()));
    auto m = sync::decode_batch(payload, opts.limits);
    if (!m) {
      if (m.error().code == Errc::invalid_argument)
        return after_drain(
            make_error(Errc::invalid_argument, "malformed BATCH record in " + where()));
      return after_drain(
          make_error(m.error().code, m.error().message + " (BATCH record in " + where() + ")"));
    }
    if (m->project != report.project)
      return after_drain(
          make_error(Errc::invalid_argument, "a BATCH of another project in " + where()));
    if (m->log.entries.empty())
      return after_drain(make_error(Errc::invalid_argument, "an empty BATCH in " + where()));
    if (pending_seals) {  // each for a checkpoint of this batch (apply_log checks them)
      auto& cps = m->log.checkpoints;
      auto c = cps.begin();
      for (const auto& [seq, seal] : *pending_seals) {
        while (c != cps.end() && c->seq < seq) ++c;
        if (c == cps.end() || c->seq != seq)
          return after_drain(make_error(
              Errc::invalid_argument,
              "a SEALS record for a checkpoint the next BATCH does not carry in " + where()));
        c->seal = seal;
      }
      pending_seals.reset();
    }
    ++batches_read;
    auto job = std::make_unique<Applying>();
    job->m = std::move(*m);
    job->where = where();
    // Checked and packed here while the batch before is applied (its pointer to the batch
    // stays valid: the job is on the heap).
    job->prepared = store.prepare_log(report.project, job->m.log);
    FS_TRY(drain());
    const DeviceId& a = job->m.log.author;
    if (diverged.count(a)) {  // another history of this author is held here: skip its log
      report.entries += job->m.log.entries.size();
      report.skipped += job->m.log.entries.size();
      return {};
    }
    storage::Store& st = store;
    job->result = std::async(std::launch::async | std::launch::deferred, [&st, j = job.get()] {
      return st.apply_log(j->m.project, j->m.log, storage::ApplyOptions{}, j->prepared);
    });
    applying = std::move(job);
    return {};
  }

  // --- blobs ---
  void skip_blob(const std::string& why) {
    ++blobs_refused;
    if (report.blob_problem.empty())
      report.blob_problem = "blob " + storage::digest_hex(blob->id).substr(0, 12) + ": " + why;
    blob->rx.reset();  // chunks already written (each verified) stay for a later attempt
    blob->hashes.clear();
    blob->buf.clear();
  }

  // The current blob's records ended (another BLOB, or END).
  void close_blob() {
    if (!blob) return;
    if (blob->rx && !blob->done()) skip_blob("the bundle holds only part of it");
    blob.reset();
  }

  Status on_blob(ByteView payload) {
    holdings_closed = true;
    if (!begun)
      return make_error(Errc::invalid_argument, "a BLOB record before BEGIN in " + where());
    auto b = detail::decode_blob(payload);
    if (!b) return make_error(Errc::invalid_argument, "malformed BLOB record in " + where());
    close_blob();
    blob.emplace();
    blob->id = b->id;
    blob->size = b->size;
    blob->chunks = b->chunks;
    // The references of the batches just applied are indexed first (on this thread).
    auto& blobs = store.blobs();
    if (!blobs_indexed_after_batches) {
      FS_TRY(blobs.index(report.project));
      blobs_indexed_after_batches = true;
    }
    auto rx = blobs.begin_receive(report.project, b->id);
    if (!rx) {
      if (rx.error().code == Errc::already_exists) {
        ++report.blobs_held;
        return {};
      }
      if (rx.error().code == Errc::not_found) {
        skip_blob("no document of the project refers to it");
        return {};
      }
      skip_blob(rx.error().message);
      return {};
    }
    if ((*rx)->info().size != b->size) {
      skip_blob("its size (" + std::to_string(b->size) + ") is not the one its reference states (" +
                std::to_string((*rx)->info().size) + ")");
      return {};
    }
    blob->rx = std::move(*rx);
    if (blob->chunks == 0) finish_blob();
    return {};
  }

  Status on_blob_hashes(ByteView payload) {
    auto h = detail::decode_blob_hashes(payload);
    if (!h) return make_error(Errc::invalid_argument, "malformed BLOB_HASHES record in " + where());
    if (!blob || blob->id != h->id || h->first != blob->hashes_read ||
        h->hashes.size() > blob->chunks - blob->hashes_read)
      return make_error(Errc::invalid_argument, "a BLOB_HASHES record out of place in " + where());
    blob->hashes_read += static_cast<std::uint32_t>(h->hashes.size());
    if (!blob->rx) return {};
    blob->hashes.insert(blob->hashes.end(), h->hashes.begin(), h->hashes.end());
    if (blob->hashes_read < blob->chunks) return {};
    // Checked against the root of the project's reference before any chunk is written.
    if (auto st = blob->rx->set_chunk_hashes(std::move(blob->hashes)); !st)
      skip_blob(st.error().message);
    blob->hashes.clear();
    return {};
  }

  Status on_blob_data(ByteView payload) {
    auto d = detail::decode_blob_data(payload);
    if (!d) return make_error(Errc::invalid_argument, "malformed BLOB_DATA record in " + where());
    if (!blob || blob->id != d->id || blob->hashes_read != blob->chunks ||
        d->chunk != blob->chunk || blob->chunk >= blob->chunks || d->offset != blob->chunk_at ||
        d->bytes.size() > blob->chunk_len(blob->chunk) - blob->chunk_at)
      return make_error(Errc::invalid_argument, "a BLOB_DATA record out of place in " + where());
    blob->chunk_at += static_cast<std::uint32_t>(d->bytes.size());
    if (blob->rx) append(blob->buf, d->bytes);
    if (blob->chunk_at < blob->chunk_len(blob->chunk)) return {};
    const std::uint32_t index = blob->chunk++;
    blob->chunk_at = 0;
    if (!blob->rx) return {};
    // A chunk already here (a resumed transfer) is not written again.
    const bool missing = blob->rx->next_missing(index) == index;
    if (auto st = blob->rx->put_chunk(index, blob->buf); !st) {
      skip_blob(st.error().message);
      return {};
    }
    if (missing) report.blob_bytes += blob->buf.size();
    blob->whole.update(blob->buf);
    blob->buf.clear();
    if (blob->chunk == blob->chunks) finish_blob();
    return {};
  }

  // Every chunk is written: fsync, name and record it on the blob worker.
  void finish_blob() {
    if (!blob->rx->complete()) {
      skip_blob("its chunks did not all arrive");
      return;
    }
    // The chunks matched the reference's root; the bytes must also be the ones its id names
    // (a reference may pair an id with the root of other bytes).
    if (blob->whole.finish() != blob->id) {
      skip_blob("its bytes do not hash to its id");
      return;
    }
    tally->started();
    auto call = std::make_shared<FinishCall>();
    call->tally = tally;
    call->id = blob->id;
    blob->rx->finish([call](Result<storage::BlobInfo> r) {
      call->called = true;
      call->tally->ended(r ? Status{} : Status{r.error()}, call->id);
    });
    blob->rx.reset();
  }

  // The counts of the blobs finished on the worker, into the report.
  void take_tally() {
    std::lock_guard lock(tally->mu);
    report.blobs_imported = tally->imported;
    report.blobs_skipped = blobs_refused + tally->failed;
    if (report.blob_problem.empty()) report.blob_problem = tally->problem;
  }

  Status on_end(ByteView payload) {
    if (!begun) return make_error(Errc::invalid_argument, "an END record before BEGIN");
    close_blob();
    if (!chunk_last)
      return make_error(Errc::invalid_argument, "END before the last chunk, in " + where());
    auto e = detail::decode_end(payload);
    if (!e) return e.error();
    ended = true;
    auto msg = detail::end_message(digest.finish(), e->entries, e->batches);
    if (!crypto::verify(report.producer, msg, e->signature))
      return make_error(Errc::verification_failed,
                        "bad signature on the bundle's END record: it was not written by " +
                            report.producer.short_str() + " as it claims (" +
                            count(report.applied, "entry", "entries") +
                            " verified by their authors were applied; the producer's version "
                            "vector is not recorded)");
    if (e->entries != report.entries || e->batches != batches_read)
      return make_error(Errc::invalid_argument, "END's counts do not match the bundle");
    end_verified = true;
    return {};
  }

  // The input ended right after a verified END (finish): the bundle is complete; only now is
  // it recorded, so a file with bytes after its last chunk is not remembered as imported.
  Status complete() {
    if (report.producer != store.device_id()) {
      FS_TRY(store.note_peer_holds(report.producer, report.project, holds));
      if (blobs_held_seen)
        FS_TRY(store.blobs().note_peer_blobs(report.project, report.producer, producer_blobs));
    }
    if (blobs_held_seen) report.producer_blobs = producer_blobs.size();
    FS_TRY(store.note_bundle_imported(report.project, salt, unix_ms()));
    report.complete = true;
    return {};
  }

  // --- input ---
  Status feed(ByteView in) {
    while (!in.empty()) {
      switch (stage) {
        case Stage::header: {
          std::size_t n = std::min(in.size(), kHeaderBytes - header.size());
          append(header, in.first(n));
          in = in.subspan(n);
          offset += n;
          FS_TRY(check_header_prefix());
          if (header.size() == kHeaderBytes) {
            FS_TRY(open_header());
            stage = Stage::length;
            chunk_offset = offset;
          }
          break;
        }
        case Stage::length: {
          std::size_t n = std::min(in.size(), 4 - length_field.size());
          append(length_field, in.first(n));
          in = in.subspan(n);
          offset += n;
          if (length_field.size() < 4) break;
          std::uint32_t field = ByteReader(length_field).u32();
          length_field.clear();
          chunk_last = (field & kLastChunkBit) != 0;
          chunk_len = field & ~kLastChunkBit;
          if (chunk_len > kMaxChunkBytes + crypto::kAeadTagBytes)
            return make_error(Errc::too_large,
                              "bundle " + where() + " declares " + std::to_string(chunk_len) +
                                  " bytes, more than the format's limit of " +
                                  std::to_string(kMaxChunkBytes + crypto::kAeadTagBytes) +
                                  ": the file is damaged");
          if (chunk_len < crypto::kAeadTagBytes)
            return make_error(Errc::verification_failed, "bundle authentication failed at " +
                                                             where() +
                                                             ": the chunk is shorter than its tag");
          chunk.reserve(chunk_len);
          stage = Stage::chunk;
          break;
        }
        case Stage::chunk: {
          std::size_t n = std::min<std::size_t>(in.size(), chunk_len - chunk.size());
          append(chunk, in.first(n));
          in = in.subspan(n);
          offset += n;
          if (chunk.size() < chunk_len) break;
          FS_TRY(open_chunk());
          stage = chunk_last ? Stage::end : Stage::length;
          chunk_offset = offset;
          break;
        }
        case Stage::end:
          return make_error(Errc::invalid_argument,
                            count(in.size(), "byte", "bytes") +
                                " after the end of the bundle (byte offset " +
                                std::to_string(offset) + ")");
      }
    }
    return {};
  }
};

BundleReader::BundleReader(storage::Store& store, ImportOptions options)
    : s_(std::make_unique<State>(store, std::move(options))) {}
BundleReader::~BundleReader() = default;

Status BundleReader::feed(ByteView bytes) {
  if (s_->error) return *s_->error;
  auto st = s_->feed(bytes);
  if (!st) {
    auto before = s_->drain();  // a batch applied before this failure counts, and fails first
    s_->take_tally();
    return s_->fail(before ? st.error() : before.error());
  }
  s_->take_tally();
  return {};
}

Result<ImportReport> BundleReader::finish() {
  if (!s_->error)
    if (auto st = s_->drain(); !st) s_->fail(st.error());
  s_->blob.reset();  // a blob cut short stays partial
  s_->tally->wait();
  s_->take_tally();
  if (s_->error) return *s_->error;
  if (s_->report.complete) return s_->report;
  if (s_->end_verified) {
    auto st = s_->complete();
    if (!st) return s_->fail(st.error());
    return s_->report;
  }
  if (s_->offset == 0)
    return s_->fail(make_error(Errc::invalid_argument, "not a fieldsync bundle (no bytes)"));
  return s_->fail(
      make_error(Errc::data_loss, "bundle truncated after " + count(s_->offset, "byte", "bytes") +
                                      " (" + count(s_->report.applied, "entry", "entries") + " " +
                                      (s_->report.applied == 1 ? "was" : "were") +
                                      " applied before; import the whole file again to finish)"));
}

const ImportReport& BundleReader::progress() const { return s_->report; }

}  // namespace fieldsync::bundle
