// Blobs in bundles: round trip (thumbnails and previews first), variants only, blobs already
// held, bundles without blob records, and blob records that must not be stored (bytes or
// hashes that do not match the signed reference, a blob nobody refers to, over the quota, cut
// short by damage on the writer's disk).
#include <algorithm>
#include <fstream>

#include "bundle_test_util.hpp"
#include "storage/blob_ref.hpp"

using namespace fieldsync;
using namespace fieldsync::bundle;
using namespace fieldsync::bundle::test;

namespace {

using sync::test::TempDir;

Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (auto& c : b) c = static_cast<std::uint8_t>(rng());
  return b;
}

// A store of the project with blob options of our choosing.
struct BlobNode {
  TempDir dir;
  std::unique_ptr<storage::Store> store;
  explicit BlobNode(storage::BlobOptions blobs = {}) {
    storage::StoreOptions o;
    o.data_dir = dir.path / "data";
    o.durable = false;
    o.map_size_bytes = 1ull << 30;
    o.blobs = blobs;
    auto s = storage::Store::open(o);
    REQUIRE(s.ok());
    store = std::move(*s);
  }
  void join(storage::Store& owner, const ProjectId& p) {
    auto secret = owner.project_secret(p);
    auto info = owner.get_project(p);
    REQUIRE(store->add_project(*info, *secret).ok());
  }
};

storage::BlobInfo put(storage::Store& s, const ProjectId& p, ByteView data, std::string type) {
  auto info = s.blobs().put(p, data, std::move(type));
  REQUIRE(info.ok());
  return *info;
}

void write_doc(storage::Store& s, const ProjectId& p, const std::string& id, std::string body) {
  storage::WriteRequest r;
  r.collection = "obs";
  r.doc_id = id;
  r.body = std::move(body);
  r.use_current = true;
  auto w = s.write_batch(p, {r});
  INFO((w.ok() ? "" : w.error().message));
  REQUIRE(w.ok());
}

// Whole bytes of a blob the project holds (nullopt: not held).
std::optional<Bytes> held_bytes(storage::Store& s, const ProjectId& p, const storage::BlobId& id) {
  auto r = s.blobs().open(p, id);
  if (!r) return std::nullopt;
  Bytes out;
  while (out.size() < (*r)->info().size) {
    auto piece = (*r)->read(out.size(), 1u << 20);
    REQUIRE(piece.ok());
    REQUIRE_FALSE(piece->empty());
    append(out, *piece);
  }
  return out;
}

// A with a photo (three chunks and a bit), its preview and thumbnail, and a binary blob, all
// referred to by documents; B has joined and holds nothing.
struct Photos {
  Node a{16};
  BlobNode b;
  ProjectId p;
  Bytes photo = pattern(3 * storage::kBlobChunkBytes + 1000, 1);
  Bytes preview = pattern(40000, 2);
  Bytes thumb = pattern(3000, 3);
  Bytes binary = pattern(storage::kBlobChunkBytes + 7, 4);
  storage::BlobInfo photo_i, preview_i, thumb_i, binary_i;

  explicit Photos(storage::BlobOptions b_blobs = {}) : b(b_blobs) {
    auto created = a.store->create_project("survey");
    REQUIRE(created.ok());
    p = created->id;
    b.join(*a.store, p);
    photo_i = put(*a.store, p, photo, "image/jpeg");
    preview_i = put(*a.store, p, preview, "image/jpeg");
    thumb_i = put(*a.store, p, thumb, "image/jpeg");
    binary_i = put(*a.store, p, binary, "application/octet-stream");
    write_doc(*a.store, p, "site1",
              "{\"photo\":" + storage::blob_ref_json(photo_i) +
                  ",\"log\":" + storage::blob_ref_json(binary_i) + "}");
    REQUIRE(
        a.store->set_blob_variants(p, photo_i, preview_i, thumb_i, storage::kMadeByFieldsync).ok());
    a.write_docs(p, 0, 50);
    REQUIRE(a.store->blobs().index(p).ok());
  }
  std::uint64_t all_bytes() const {
    return photo.size() + preview.size() + thumb.size() + binary.size();
  }
};

ExportOptions opts(BlobSelection sel, std::uint32_t max_record = 4u << 20) {
  ExportOptions o;
  o.chunk_bytes = 4096;
  o.batch_entries = 20;
  o.max_record_bytes = max_record;
  o.blobs = sel;
  return o;
}

// A's log as BEGIN and BATCH records of a hand-made bundle; the caller adds blob records and END.
struct CraftedLog {
  Crafted c;
  std::uint64_t entries = 0, batches = 0;
  CraftedLog(storage::Store& a, const ProjectId& p) : c(a, p) {
    auto v = vv(a, p);
    detail::Begin b;
    b.project = p;
    b.producer = a.device_id();
    b.holds = v;
    c.begin(b);
    for (const auto& [author, head] : v) {
      std::uint64_t after = 0;
      while (after < head) {
        auto log = a.read_log(p, author, after, 100, 1u << 20);
        REQUIRE(log.ok());
        after = log->entries.back().seq;
        entries += log->entries.size();
        ++batches;
        c.batch(p, std::move(*log));
      }
    }
  }
  void blob(const storage::BlobId& id, std::uint64_t size) {
    std::uint32_t n = static_cast<std::uint32_t>((size + storage::kBlobChunkBytes - 1) /
                                                 storage::kBlobChunkBytes);
    c.record(static_cast<std::uint8_t>(RecordType::blob), detail::encode_blob({id, size, n}));
  }
  void hashes(const storage::BlobId& id, const std::vector<crypto::Digest>& h) {
    c.record(static_cast<std::uint8_t>(RecordType::blob_hashes),
             detail::encode_blob_hashes(id, 0, h));
  }
  void data(const storage::BlobId& id, ByteView bytes) {
    for (std::uint32_t i = 0; std::uint64_t{i} * storage::kBlobChunkBytes < bytes.size(); ++i) {
      std::size_t at = std::size_t{i} * storage::kBlobChunkBytes;
      std::size_t n = std::min<std::size_t>(storage::kBlobChunkBytes, bytes.size() - at);
      c.record(static_cast<std::uint8_t>(RecordType::blob_data),
               detail::encode_blob_data(id, i, 0, bytes.subspan(at, n)));
    }
  }
  // BLOB, BLOB_HASHES (of `hashed`), BLOB_DATA (of `sent`).
  void whole(const storage::BlobId& id, ByteView hashed, ByteView sent) {
    std::vector<crypto::Digest> h;
    for (std::size_t at = 0; at < hashed.size(); at += storage::kBlobChunkBytes)
      h.push_back(crypto::sha256(
          hashed.subspan(at, std::min<std::size_t>(storage::kBlobChunkBytes, hashed.size() - at))));
    blob(id, hashed.size());
    if (!h.empty()) hashes(id, h);
    data(id, sent);
  }
  Bytes seal(storage::Store& a) {
    c.end(a.signing_key(), entries, batches);
    return c.seal(8192);
  }
};

}  // namespace

TEST_CASE("bundle blobs: carried with the log, thumbnails and previews before originals") {
  Photos t;
  BundleWriter::Stats stats;
  // Records of 64 KiB (the smallest bundle.max_record_bytes): each chunk in several pieces.
  Bytes file = must_export(*t.a.store, t.p, opts(BlobSelection::all, 64u << 10), &stats);
  CHECK(stats.blobs == 4);
  CHECK(stats.blob_bytes == t.all_bytes());
  CHECK(stats.blobs_unreadable == 0);
  CHECK(file.size() > t.all_bytes());

  for (std::size_t piece : {std::size_t{1000}, std::size_t{300000}}) {
    BlobNode b;
    b.join(*t.a.store, t.p);
    ImportReport r = must_import(*b.store, file, piece);
    CHECK(r.complete);
    CHECK(r.applied == stats.entries);
    CHECK(r.blobs_imported == 4);
    CHECK(r.blobs_held == 0);
    CHECK(r.blobs_skipped == 0);
    CHECK(r.blob_problem.empty());
    CHECK(r.blob_bytes == t.all_bytes());
    CHECK(held_bytes(*b.store, t.p, t.photo_i.id) == t.photo);
    CHECK(held_bytes(*b.store, t.p, t.preview_i.id) == t.preview);
    CHECK(held_bytes(*b.store, t.p, t.thumb_i.id) == t.thumb);
    CHECK(held_bytes(*b.store, t.p, t.binary_i.id) == t.binary);
    auto wanted = b.store->blobs().wanted(t.p, std::nullopt, 10);
    REQUIRE(wanted.ok());
    CHECK(wanted->empty());
  }

  // A bundle cut short after its first blobs delivered the small ones: thumbnail, preview.
  BlobNode c;
  c.join(*t.a.store, t.p);
  // Cut inside the first original: what precedes the originals' bytes, and 100 kB of them.
  const std::size_t at = file.size() - (t.photo.size() + t.binary.size()) + 100000;
  auto cut = import_bytes(*c.store, ByteView(file).first(at));
  REQUIRE_FALSE(cut.result.ok());
  CHECK(cut.result.error().code == Errc::data_loss);
  CHECK(cut.progress.blobs_imported == 2);
  CHECK(held_bytes(*c.store, t.p, t.thumb_i.id) == t.thumb);
  CHECK(held_bytes(*c.store, t.p, t.preview_i.id) == t.preview);
  CHECK_FALSE(held_bytes(*c.store, t.p, t.photo_i.id));
  // The whole file again: the variants are held (nothing written for them), the rest comes.
  ImportReport again = must_import(*c.store, file);
  CHECK(again.blobs_held == 2);
  CHECK(again.blobs_imported == 2);
  CHECK(held_bytes(*c.store, t.p, t.photo_i.id) == t.photo);
}

TEST_CASE("bundle blobs: variants only leaves the originals out") {
  Photos t;
  BundleWriter::Stats stats;
  Bytes file = must_export(*t.a.store, t.p, opts(BlobSelection::variants), &stats);
  CHECK(stats.blobs == 2);
  CHECK(stats.blob_bytes == t.preview.size() + t.thumb.size());
  ImportReport r = must_import(*t.b.store, file);
  CHECK(r.blobs_imported == 2);
  CHECK(r.blob_bytes == t.preview.size() + t.thumb.size());
  CHECK(held_bytes(*t.b.store, t.p, t.thumb_i.id) == t.thumb);
  CHECK(held_bytes(*t.b.store, t.p, t.preview_i.id) == t.preview);
  auto original = t.b.store->blobs().open(t.p, t.photo_i.id);
  REQUIRE_FALSE(original.ok());
  CHECK(original.error().code == Errc::failed_precondition);  // referred to, not held
  CHECK_FALSE(held_bytes(*t.b.store, t.p, t.binary_i.id));
  // What B wants now: the originals only.
  auto wanted = t.b.store->blobs().wanted(t.p, std::nullopt, 10);
  REQUIRE(wanted.ok());
  CHECK(wanted->size() == 2);

  // A later full bundle brings the originals and skips what is held without writing it.
  ImportReport full =
      must_import(*t.b.store, must_export(*t.a.store, t.p, opts(BlobSelection::all)));
  CHECK(full.blobs_held == 2);
  CHECK(full.blobs_imported == 2);
  CHECK(full.blob_bytes == t.photo.size() + t.binary.size());
  CHECK(held_bytes(*t.b.store, t.p, t.photo_i.id) == t.photo);
}

TEST_CASE("bundle blobs: none, or a writer that knows no blobs, still imports the log") {
  Photos t;
  BundleWriter::Stats stats;
  Bytes file = must_export(*t.a.store, t.p, opts(BlobSelection::none), &stats);
  CHECK(stats.blobs == 0);
  CHECK(file.size() < t.thumb.size() + t.preview.size());
  ImportReport r = must_import(*t.b.store, file);
  CHECK(r.applied == stats.entries);
  CHECK(r.blobs_imported + r.blobs_held + r.blobs_skipped == 0);
  // Hand-made as an older writer did (BEGIN, BATCH, END only).
  BlobNode c;
  c.join(*t.a.store, t.p);
  CraftedLog old(*t.a.store, t.p);
  ImportReport o = must_import(*c.store, old.seal(*t.a.store));
  CHECK(o.applied == old.entries);
  CHECK(o.blobs_imported == 0);
  REQUIRE(c.store->blobs().index(t.p).ok());
  auto wanted = c.store->blobs().wanted(t.p, std::nullopt, 10);
  REQUIRE(wanted.ok());
  CHECK(wanted->size() == 4);  // referred to by what was applied, not held
}

TEST_CASE("bundle blobs: bytes or hashes that do not match the signed reference are not stored") {
  Photos t;
  const storage::BlobId id = t.binary_i.id;
  auto held_nothing = [&](storage::Store& s) {
    CHECK_FALSE(held_bytes(s, t.p, id));
    auto u = s.blobs().usage(t.p);
    REQUIRE(u.ok());
    CHECK(u->held_count == 0);
  };
  SECTION("a chunk's bytes changed, its hash kept: the chunk fails its hash") {
    Bytes bad = t.binary;
    bad[storage::kBlobChunkBytes + 3] ^= 1;  // the second (last) chunk
    CraftedLog c(*t.a.store, t.p);
    c.whole(id, t.binary, bad);
    auto r = must_import(*t.b.store, c.seal(*t.a.store));
    CHECK(r.applied == c.entries);
    CHECK(r.blobs_imported == 0);
    CHECK(r.blobs_skipped == 1);
    CHECK(r.blob_problem.find("does not match its hash") != std::string::npos);
    held_nothing(*t.b.store);
  }
  SECTION("other bytes with their own hashes: the root is not the reference's") {
    Bytes other = pattern(t.binary.size(), 9);
    CraftedLog c(*t.a.store, t.p);
    c.whole(id, other, other);
    auto r = must_import(*t.b.store, c.seal(*t.a.store));
    CHECK(r.blobs_skipped == 1);
    CHECK(r.blob_problem.find("do not match the root") != std::string::npos);
    CHECK(r.blob_bytes == 0);  // nothing written: refused before the first chunk
    held_nothing(*t.b.store);
  }
  SECTION("a size other than the reference's") {
    Bytes longer = t.binary;
    longer.push_back(0);
    CraftedLog c(*t.a.store, t.p);
    c.whole(id, longer, longer);
    auto r = must_import(*t.b.store, c.seal(*t.a.store));
    CHECK(r.blobs_skipped == 1);
    CHECK(r.blob_problem.find("size") != std::string::npos);
    held_nothing(*t.b.store);
  }
  SECTION("a blob no document of the project refers to") {
    Bytes stray = pattern(5000, 7);
    CraftedLog c(*t.a.store, t.p);
    c.whole(crypto::sha256(stray), stray, stray);
    auto r = must_import(*t.b.store, c.seal(*t.a.store));
    CHECK(r.blobs_skipped == 1);
    CHECK(r.blob_problem.find("refers to it") != std::string::npos);
    held_nothing(*t.b.store);
  }
  SECTION("a reference pairing an id with the root of other bytes") {
    Bytes other = pattern(9000, 11);
    storage::BlobInfo lie;
    lie.id = crypto::sha256(as_bytes(std::string_view("not these bytes")));
    lie.size = other.size();
    lie.media_type = "image/jpeg";
    lie.root = crypto::sha256(ByteView(crypto::sha256(other)));
    write_doc(*t.a.store, t.p, "lie", "{\"photo\":" + storage::blob_ref_json(lie) + "}");
    CraftedLog c(*t.a.store, t.p);
    c.whole(lie.id, other, other);
    auto r = must_import(*t.b.store, c.seal(*t.a.store));
    CHECK(r.blobs_skipped == 1);
    CHECK(r.blob_problem.find("do not hash to its id") != std::string::npos);
    CHECK_FALSE(held_bytes(*t.b.store, t.p, lie.id));
    held_nothing(*t.b.store);
  }
  SECTION("blob records out of order fail the import, after the log was applied") {
    CraftedLog c(*t.a.store, t.p);
    c.blob(id, t.binary.size());
    c.data(id, t.binary);  // before its hashes
    auto r = import_bytes(*t.b.store, c.seal(*t.a.store));
    REQUIRE_FALSE(r.result.ok());
    CHECK(r.result.error().code == Errc::invalid_argument);
    CHECK(r.result.error().message.find("BLOB_DATA record out of place") != std::string::npos);
    CHECK(r.progress.applied == c.entries);
    held_nothing(*t.b.store);
  }
  // The genuine blob still comes in a later bundle.
  ImportReport r = must_import(*t.b.store, must_export(*t.a.store, t.p, opts(BlobSelection::all)));
  CHECK(r.blobs_imported == 4);
  CHECK(held_bytes(*t.b.store, t.p, id) == t.binary);
}

TEST_CASE("bundle blobs: the project's quota and blob.max_blob_bytes apply") {
  storage::BlobOptions small;
  // Room for the thumbnail and the preview, not the rest.
  small.project_quota_bytes = 50000;
  small.max_blob_bytes = 2 * storage::kBlobChunkBytes;
  Photos t(small);
  Bytes file = must_export(*t.a.store, t.p, opts(BlobSelection::all));
  ImportReport r = must_import(*t.b.store, file);
  CHECK(r.complete);
  CHECK(r.blobs_imported == 2);
  CHECK(r.blobs_skipped == 2);
  CHECK((r.blob_problem.find("blob.project_quota_bytes") != std::string::npos ||
         r.blob_problem.find("blob.max_blob_bytes") != std::string::npos));
  CHECK(held_bytes(*t.b.store, t.p, t.thumb_i.id) == t.thumb);
  CHECK(held_bytes(*t.b.store, t.p, t.preview_i.id) == t.preview);
  CHECK_FALSE(held_bytes(*t.b.store, t.p, t.photo_i.id));
  CHECK_FALSE(held_bytes(*t.b.store, t.p, t.binary_i.id));
  auto u = t.b.store->blobs().usage(t.p);
  REQUIRE(u.ok());
  CHECK(u->held_bytes <= small.project_quota_bytes);
}

TEST_CASE("bundle blobs: a blob damaged on the writer's disk stops where it broke, the rest goes") {
  Photos t;
  // Flip a byte of the photo's third chunk in A's file: A reads it as data_loss.
  const std::string hex = storage::digest_hex(t.photo_i.id);
  const auto path = t.a.dir.path / "data" / "blobs" / hex.substr(0, 2) / hex;
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f.good());
    f.seekp(static_cast<std::streamoff>(2 * storage::kBlobChunkBytes + 5));
    f.put('\x5a' ^ static_cast<char>(t.photo[2 * storage::kBlobChunkBytes + 5]));
  }
  BundleWriter::Stats stats;
  Bytes file = must_export(*t.a.store, t.p, opts(BlobSelection::all), &stats);
  CHECK(stats.blobs == 3);
  CHECK(stats.blobs_unreadable == 1);
  ImportReport r = must_import(*t.b.store, file);
  CHECK(r.complete);
  CHECK(r.blobs_imported == 3);
  CHECK(r.blobs_skipped == 1);
  CHECK(r.blob_problem.find("only part of it") != std::string::npos);
  CHECK_FALSE(held_bytes(*t.b.store, t.p, t.photo_i.id));
  CHECK(held_bytes(*t.b.store, t.p, t.binary_i.id) == t.binary);
  CHECK(held_bytes(*t.b.store, t.p, t.thumb_i.id) == t.thumb);
}

TEST_CASE(
    "bundle blobs: a bundle for a device leaves out what that device's bundle said it holds") {
  Photos t;
  const DeviceId b_id = t.b.store->device_id();
  // B gets the variants only, then writes its own bundle, which tells A what B holds.
  must_import(*t.b.store, must_export(*t.a.store, t.p, opts(BlobSelection::variants)));
  ImportReport back =
      must_import(*t.a.store, must_export(*t.b.store, t.p, opts(BlobSelection::none)));
  REQUIRE(back.producer_blobs);
  CHECK(*back.producer_blobs == 2);
  std::vector<storage::BlobId> variants{t.thumb_i.id, t.preview_i.id};
  std::sort(variants.begin(), variants.end());
  auto known = t.a.store->blobs().peer_blobs(t.p, b_id);
  REQUIRE(known.ok());
  CHECK(*known == variants);

  // For B: the originals only.
  BundleWriter::Stats stats;
  ExportOptions for_b = opts(BlobSelection::all);
  for_b.for_devices = {b_id};
  Bytes file = must_export(*t.a.store, t.p, for_b, &stats);
  CHECK(stats.blobs == 2);
  CHECK(stats.blobs_left_out == 2);
  CHECK(stats.blob_bytes == t.photo.size() + t.binary.size());
  ImportReport r = must_import(*t.b.store, file);
  CHECK(r.blobs_imported == 2);
  CHECK(r.blobs_held == 0);
  CHECK(held_bytes(*t.b.store, t.p, t.photo_i.id) == t.photo);

  // For B and a device that said nothing (holds none, as far as A knows): everything.
  BlobNode c;
  c.join(*t.a.store, t.p);
  ExportOptions for_both = for_b;
  for_both.for_devices.push_back(c.store->device_id());
  must_export(*t.a.store, t.p, for_both, &stats);
  CHECK(stats.blobs == 4);
  CHECK(stats.blobs_left_out == 0);

  // B's next bundle says it holds all four: nothing is carried for it any more.
  must_import(*t.a.store, must_export(*t.b.store, t.p, opts(BlobSelection::none)));
  must_export(*t.a.store, t.p, for_b, &stats);
  CHECK(stats.blobs == 0);
  CHECK(stats.blobs_left_out == 4);

  // A bundle from a writer before BLOBS_HELD changes nothing of what is known.
  {
    CraftedLog old(*t.b.store, t.p);
    ImportReport o = must_import(*t.a.store, old.seal(*t.b.store));
    CHECK_FALSE(o.producer_blobs);
    auto still = t.a.store->blobs().peer_blobs(t.p, b_id);
    REQUIRE(still.ok());
    CHECK(still->size() == 4);
  }
  // A device that holds none says so (an empty BLOBS_HELD).
  ImportReport from_c =
      must_import(*t.a.store, must_export(*c.store, t.p, opts(BlobSelection::all)));
  REQUIRE(from_c.producer_blobs);
  CHECK(*from_c.producer_blobs == 0);

  // Forgetting B forgets what it holds; this device's own list is not recorded.
  REQUIRE(t.a.store->forget_peer(b_id).ok());
  auto forgotten = t.a.store->blobs().peer_blobs(t.p, b_id);
  REQUIRE(forgotten.ok());
  CHECK(forgotten->empty());
  auto self = t.a.store->blobs().note_peer_blobs(t.p, t.a.store->device_id(), {});
  REQUIRE_FALSE(self.ok());
  CHECK(self.error().code == Errc::invalid_argument);
}

TEST_CASE("bundle blobs: BLOBS_HELD out of place, out of order or malformed fails the import") {
  Photos t;
  auto begin_of = [&] {
    detail::Begin b;
    b.project = t.p;
    b.producer = t.a.store->device_id();
    b.holds = vv(*t.a.store, t.p);
    return b;
  };
  auto ids = [](std::initializer_list<storage::BlobId> list) {
    Bytes out;
    for (const auto& id : list) append(out, ByteView(id));
    return out;
  };
  const auto lo = std::min(t.photo_i.id, t.thumb_i.id), hi = std::max(t.photo_i.id, t.thumb_i.id);
  const auto held = static_cast<std::uint8_t>(RecordType::blobs_held);
  struct Case {
    const char* what;
    std::function<Bytes()> make;
  };
  std::vector<Case> cases{
      {"after a BATCH",
       [&] {
         CraftedLog log(*t.a.store, t.p);
         log.c.record(held, ids({lo}));
         return log.seal(*t.a.store);
       }},
      {"not ascending",
       [&] {
         Crafted c(*t.a.store, t.p);
         c.begin(begin_of());
         c.record(held, ids({hi}));
         c.record(held, ids({lo}));
         c.end(t.a.store->signing_key(), 0, 0);
         return c.seal();
       }},
      {"not whole ids",
       [&] {
         Crafted c(*t.a.store, t.p);
         c.begin(begin_of());
         c.record(held, Bytes(33, 1));
         c.end(t.a.store->signing_key(), 0, 0);
         return c.seal();
       }},
  };
  for (const auto& k : cases) {
    INFO(k.what);
    BlobNode b;
    b.join(*t.a.store, t.p);
    auto r = import_bytes(*b.store, k.make());
    REQUIRE_FALSE(r.result.ok());
    CHECK(r.result.error().code == Errc::invalid_argument);
    auto known = b.store->blobs().peer_blobs(t.p, t.a.store->device_id());
    REQUIRE(known.ok());
    CHECK(known->empty());
  }
}
