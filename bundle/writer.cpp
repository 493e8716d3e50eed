// BundleWriter: header, BEGIN, one BATCH record per log batch read from the store, the blobs
// (BLOB, BLOB_HASHES, BLOB_DATA), END; the records are cut into sealed chunks as they are
// produced (docs/protocol.md "Bundles").
#include <algorithm>
#include <chrono>
#include <iterator>

#include "bundle/bundle.hpp"
#include "bundle/format.hpp"
#include "common/clock.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::bundle {

struct BundleWriter::State {
  storage::Store& store;
  ProjectId project;
  ExportOptions opts;
  storage::BundleId salt{};
  Bytes header;
  crypto::AeadKey key{};
  detail::Begin begin;
  // The authors to send, in order: entries (from, to] of each.
  struct Run {
    DeviceId author;
    std::uint64_t after = 0;
    std::uint64_t to = 0;
  };
  std::vector<Run> runs;
  std::size_t run = 0;
  bool batches_done = false;

  // BLOBS_HELD: this device's held blobs, a page of the project's list per record.
  bool held_listed = false, held_record_written = false;
  std::optional<storage::BlobId> held_after;
  // Blobs every device of for_devices said it holds (ascending): not carried.
  std::vector<storage::BlobId> known_held;

  // The blobs, read after the batches in pages of the project's list, one pass per kind:
  // thumbnails (0), previews (1), the rest (2). One blob is open at a time, one chunk read.
  int blob_pass = 0;
  std::optional<storage::BlobId> blob_after;
  std::vector<storage::BlobInfo> blob_page;
  std::size_t blob_page_at = 0;
  bool blob_page_last = false;
  std::unique_ptr<storage::BlobReader> blob;
  std::uint32_t blob_hashes_sent = 0;
  std::uint32_t blob_chunk = 0;

  crypto::Sha256 digest;  // header and every record before END
  Bytes plain;            // records not sealed yet, from plain_at on
  std::size_t plain_at = 0;
  std::uint64_t chunk_index = 0;
  bool header_out = false, begun = false, ended = false, done = false;
  std::optional<Error> error;
  Stats stats;

  State(storage::Store& s, const ProjectId& p, ExportOptions o)
      : store(s), project(p), opts(std::move(o)) {}

  std::size_t pending() const { return plain.size() - plain_at; }

  void add_record(RecordType type, ByteView payload) {
    std::size_t at = plain.size();
    detail::put_record_header(plain, static_cast<std::uint8_t>(type),
                              static_cast<std::uint32_t>(payload.size()));
    append(plain, payload);
    if (type != RecordType::end) digest.update(ByteView(plain).subspan(at));
  }

  // One BLOBS_HELD record of the next page of the project's blob list (at least one record,
  // empty when nothing is held, so that a reader tells "holds none" from a bundle of a writer
  // before these records); false when done.
  Result<bool> add_blobs_held() {
    const std::uint32_t page =
        static_cast<std::uint32_t>(std::min<std::size_t>(256, opts.max_record_bytes / 32));
    if (page == 0) return false;  // records too small to say anything
    auto list = store.blobs().list(project, held_after, page);
    if (!list) return list.error();
    Bytes payload;
    for (const auto& b : *list)
      if (b.held && b.refs > 0) append(payload, ByteView(b.info.id));
    const bool last = list->size() < page;
    if (!list->empty()) held_after = list->back().info.id;
    if (!payload.empty() || (last && !held_record_written)) {
      add_record(RecordType::blobs_held, payload);
      held_record_written = true;
    }
    return !last;
  }

  // One BATCH record of the current run's next log batch; false when every run is done.
  Result<bool> add_batch() {
    while (run < runs.size() && runs[run].after >= runs[run].to) ++run;
    if (run == runs.size()) return false;
    Run& r = runs[run];
    std::uint32_t max_entries = opts.batch_entries;
    for (;;) {
      auto log = store.read_log(project, r.author, r.after, max_entries, opts.batch_bytes);
      if (!log) return log.error();
      if (log->entries.empty()) {  // the store holds less than its vector said: trust the store
        r.after = r.to;
        return true;
      }
      std::uint64_t last = log->entries.back().seq;
      std::size_t n = log->entries.size();
      // The run seals go in a SEALS record right before the BATCH (whose payload has none):
      // readers before seals skip it and read the BATCH as ever.
      Bytes seals = detail::encode_seals(log->checkpoints);
      // sync's BATCH frame is u32 length, u8 type, payload; the record is u8 type, u32
      // length, payload: the same 5 bytes before the payload, rewritten in place.
      std::size_t at = plain.size();
      sync::encode_batch(plain, sync::Batch{project, std::move(*log)});
      std::size_t payload = plain.size() - at - kRecordHeaderBytes;
      if (payload > opts.max_record_bytes) {
        plain.resize(at);
        if (max_entries > 1) {
          max_entries = 1;  // the smallest run the store gives: up to the next checkpoint
          continue;
        }
        return make_error(Errc::too_large,
                          "a log run of " + r.author.short_str() + " after seq " +
                              std::to_string(r.after) + " does not fit in one bundle record (" +
                              std::to_string(payload) + " bytes, bundle.max_record_bytes " +
                              std::to_string(opts.max_record_bytes) + ")");
      }
      Bytes head;
      detail::put_record_header(head, static_cast<std::uint8_t>(RecordType::batch),
                                static_cast<std::uint32_t>(payload));
      std::copy(head.begin(), head.end(), plain.begin() + static_cast<std::ptrdiff_t>(at));
      if (!seals.empty()) {
        Bytes rec;
        detail::put_record_header(rec, static_cast<std::uint8_t>(RecordType::seals),
                                  static_cast<std::uint32_t>(seals.size()));
        append(rec, seals);
        plain.insert(plain.begin() + static_cast<std::ptrdiff_t>(at), rec.begin(), rec.end());
      }
      digest.update(ByteView(plain).subspan(at));
      r.after = last;
      stats.entries += n;
      ++stats.batches;
      return true;
    }
  }

  static int blob_kind(const storage::ProjectBlob& b) {
    if (b.thumbnail) return 0;
    if (b.preview) return 1;
    return 2;
  }
  int last_pass() const { return opts.blobs == BlobSelection::variants ? 1 : 2; }

  // The next blob to carry (opened), or false when every pass is done.
  Result<bool> open_next_blob() {
    for (;;) {
      if (blob_page_at < blob_page.size()) {
        const auto& info = blob_page[blob_page_at++];
        auto r = store.blobs().open(project, info.id);
        if (!r) {
          // Released or damaged since it was listed: left out (the importer keeps wanting it).
          if (r.error().code == Errc::data_loss) ++stats.blobs_unreadable;
          continue;
        }
        blob = std::move(*r);
        blob_hashes_sent = 0;
        blob_chunk = 0;
        return true;
      }
      if (blob_page_last) {  // this pass has listed every blob of the project
        if (blob_pass >= last_pass()) return false;
        ++blob_pass;
        blob_after.reset();
        blob_page_last = false;
      }
      constexpr std::uint32_t kPage = 256;
      auto list = store.blobs().list(project, blob_after, kPage);
      if (!list) return list.error();
      blob_page.clear();
      blob_page_at = 0;
      blob_page_last = list->size() < kPage;
      if (!list->empty()) blob_after = list->back().info.id;
      for (const auto& b : *list) {
        if (!b.held || b.refs == 0 || blob_kind(b) != blob_pass) continue;
        if (std::binary_search(known_held.begin(), known_held.end(), b.info.id)) {
          ++stats.blobs_left_out;  // every device this bundle is for holds it
          continue;
        }
        blob_page.push_back(b.info);
      }
    }
  }

  // The next record(s) of the blob section: a BLOB record, one BLOB_HASHES record, or the
  // BLOB_DATA records of one chunk. False when the section is done.
  Result<bool> add_blob_records() {
    if (opts.blobs == BlobSelection::none) return false;
    if (!blob) {
      auto more = open_next_blob();
      if (!more) return more.error();
      if (!*more) return false;
      const auto& info = blob->info();
      detail::BlobHead head{info.id, info.size,
                            static_cast<std::uint32_t>(blob->chunk_hashes().size())};
      add_record(RecordType::blob, detail::encode_blob(head));
      if (head.chunks == 0) blob_done();
      return true;
    }
    const auto& info = blob->info();
    const auto& hashes = blob->chunk_hashes();
    const auto n = static_cast<std::uint32_t>(hashes.size());
    if (blob_hashes_sent < n) {
      std::size_t room = (opts.max_record_bytes - detail::kBlobHashesHeaderBytes) / 32;
      std::size_t k = std::min<std::size_t>(room, n - blob_hashes_sent);
      add_record(RecordType::blob_hashes,
                 detail::encode_blob_hashes(
                     info.id, blob_hashes_sent,
                     std::span<const crypto::Digest>(hashes).subspan(blob_hashes_sent, k)));
      blob_hashes_sent += static_cast<std::uint32_t>(k);
      return true;
    }
    const std::uint64_t at = std::uint64_t{blob_chunk} * storage::kBlobChunkBytes;
    auto bytes = blob->read(at, storage::kBlobChunkBytes);
    if (!bytes || bytes->empty()) {
      // This device's copy is damaged: the blob stops here (the importer skips it).
      ++stats.blobs_unreadable;
      blob.reset();
      return true;
    }
    const std::size_t piece = opts.max_record_bytes - detail::kBlobDataHeaderBytes;
    for (std::size_t off = 0; off < bytes->size(); off += piece) {
      std::size_t len = std::min(piece, bytes->size() - off);
      add_record(RecordType::blob_data,
                 detail::encode_blob_data(info.id, blob_chunk, static_cast<std::uint32_t>(off),
                                          ByteView(*bytes).subspan(off, len)));
    }
    stats.blob_bytes += bytes->size();
    if (++blob_chunk == n) blob_done();
    return true;
  }

  void blob_done() {
    ++stats.blobs;
    blob.reset();
  }

  Status add_end() {
    detail::End e;
    e.entries = stats.entries;
    e.batches = stats.batches;
    e.signature = store.signing_key().sign(
        detail::end_message(digest.finish(), stats.entries, stats.batches));
    add_record(RecordType::end, detail::encode_end(e));
    ended = true;
    return {};
  }

  void seal(Bytes& out, std::size_t n, bool last) {
    std::size_t len_at = out.size();
    ByteWriter(out).u32(0);
    crypto::aes256gcm_seal(key, detail::chunk_nonce(chunk_index++, last), header,
                           ByteView(plain).subspan(plain_at, n), out);
    auto sealed = static_cast<std::uint32_t>(out.size() - len_at - 4);
    std::uint32_t field = sealed | (last ? kLastChunkBit : 0);
    for (int i = 0; i < 4; ++i)
      out[len_at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(field >> (24 - 8 * i));
    plain_at += n;
    if (plain_at == plain.size()) {
      plain.clear();
      plain_at = 0;
    }
  }

  Result<Bytes> next() {
    Bytes out;
    if (!header_out) {
      out = header;
      header_out = true;
    }
    // Produce records until more than one chunk is pending (so the last chunk, sealed after
    // END, is never empty) or END is written.
    while (!ended && pending() <= opts.chunk_bytes) {
      if (!begun) {
        add_record(RecordType::begin, detail::encode_begin(begin));
        begun = true;
        continue;
      }
      if (!held_listed) {
        auto more = add_blobs_held();
        if (!more) return more.error();
        if (!*more) held_listed = true;
        continue;
      }
      if (!batches_done) {
        auto more = add_batch();
        if (!more) return more.error();
        if (*more) continue;
        batches_done = true;
      }
      auto more = add_blob_records();
      if (!more) return more.error();
      if (!*more) FS_TRY(add_end());
    }
    while (pending() > opts.chunk_bytes) seal(out, opts.chunk_bytes, false);
    if (ended) {
      seal(out, pending(), true);
      done = true;
    }
    // Keep the buffer from growing: drop what was sealed.
    if (plain_at > 0) {
      plain.erase(plain.begin(), plain.begin() + static_cast<std::ptrdiff_t>(plain_at));
      plain_at = 0;
    }
    stats.bytes += out.size();
    return out;
  }
};

Result<std::unique_ptr<BundleWriter>> BundleWriter::create(storage::Store& store,
                                                           const ProjectId& project,
                                                           ExportOptions options) {
  if (options.chunk_bytes < kMinChunkBytes || options.chunk_bytes > kMaxChunkBytes)
    return make_error(Errc::invalid_argument, "bundle chunk size must be " +
                                                  std::to_string(kMinChunkBytes) + ".." +
                                                  std::to_string(kMaxChunkBytes) + " bytes");
  if (options.batch_entries == 0 || options.batch_bytes == 0 || options.max_record_bytes == 0)
    return make_error(Errc::invalid_argument, "bundle batch limits must be positive");
  if (options.blobs != BlobSelection::none &&
      options.max_record_bytes < detail::kMinBlobRecordBytes)
    return make_error(Errc::invalid_argument, "a bundle with blobs needs records of at least " +
                                                  std::to_string(detail::kMinBlobRecordBytes) +
                                                  " bytes");
  auto secret = store.project_secret(project);
  if (!secret) return secret.error();
  auto vv = store.version_vector(project);
  if (!vv) return vv.error();

  // Per author, the minimum over the devices of what each is known to hold.
  storage::VersionVector since;
  bool first = true;
  for (const auto& d : options.for_devices) {
    if (d == store.device_id()) continue;  // holds everything it exports
    storage::VersionVector held;
    // A record that cannot be read counts as "holds nothing": a larger bundle, never a gap.
    if (auto h = store.peer_holds(d, project); h.ok()) held = std::move(*h);
    if (first) {
      since = std::move(held);
      first = false;
    } else {
      for (auto it = since.begin(); it != since.end();) {
        auto o = held.find(it->first);
        if (o == held.end()) {
          it = since.erase(it);
        } else {
          it->second = std::min(it->second, o->second);
          ++it;
        }
      }
    }
  }

  // The blobs every one of them said it holds (a device that said nothing holds none).
  std::vector<storage::BlobId> known_held;
  bool first_list = true;
  if (options.blobs != BlobSelection::none) {
    for (const auto& d : options.for_devices) {
      if (d == store.device_id()) continue;
      std::vector<storage::BlobId> theirs;
      if (auto l = store.blobs().peer_blobs(project, d); l.ok()) theirs = std::move(*l);
      if (first_list) {
        known_held = std::move(theirs);
        first_list = false;
      } else {
        std::vector<storage::BlobId> both;
        std::set_intersection(known_held.begin(), known_held.end(), theirs.begin(), theirs.end(),
                              std::back_inserter(both));
        known_held = std::move(both);
      }
    }
  }

  auto s = std::make_unique<State>(store, project, std::move(options));
  s->known_held = std::move(known_held);
  crypto::random_fill(s->salt);
  s->header = detail::encode_header(s->salt, detail::project_tag(*secret, s->salt));
  auto key = detail::chunk_key(*secret, s->salt);
  if (!key) return key.error();
  s->key = *key;
  s->digest.update(s->header);

  s->begin.project = project;
  s->begin.producer = store.device_id();
  s->begin.producer_name = s->opts.device_name;
  s->begin.created_ms = unix_ms();
  s->begin.holds = *vv;
  for (const auto& [a, seq] : *vv) {
    std::uint64_t from = 0;
    if (auto it = since.find(a); it != since.end()) from = std::min(it->second, seq);
    if (from > 0) s->begin.since[a] = from;
    if (from < seq) s->runs.push_back(State::Run{a, from, seq});
  }
  return std::unique_ptr<BundleWriter>(new BundleWriter(std::move(s)));
}

BundleWriter::BundleWriter(std::unique_ptr<State> s) : s_(std::move(s)) {}
BundleWriter::~BundleWriter() = default;

Result<Bytes> BundleWriter::next() {
  if (s_->error) return *s_->error;
  if (s_->done) return Bytes{};
  auto r = s_->next();
  if (!r) s_->error = r.error();
  return r;
}

const BundleWriter::Stats& BundleWriter::stats() const { return s_->stats; }
const storage::BundleId& BundleWriter::id() const { return s_->salt; }

}  // namespace fieldsync::bundle
