// BlobStore: uploads named by their hash, stored once, read back verified per chunk,
// references indexed from documents (local and synced), quota, gc.
#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "common/clock.hpp"
#include "crypto/crypto.hpp"
#include "raw_lmdb.hpp"
#include "storage/blob_ref.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::TempDir;

namespace {

Bytes pattern(std::size_t n, std::uint8_t seed = 1) {
  Bytes b(n);
  std::uint32_t x = seed * 2654435761u + 12345;
  for (auto& c : b) {
    x = x * 1103515245u + 12345;
    c = static_cast<std::uint8_t>(x >> 24);
  }
  return b;
}

// Uploads `data` in pieces of `piece` bytes and waits for the outcome.
Result<BlobInfo> upload(BlobStore& blobs, const ProjectId& p, const Bytes& data,
                        std::string type = "image/jpeg", std::size_t piece = 100000) {
  auto up = blobs.begin_upload(p);
  if (!up) return up.error();
  std::vector<std::future<Status>> writes;
  for (std::size_t at = 0; at < data.size(); at += piece) {
    auto pr = std::make_shared<std::promise<Status>>();
    writes.push_back(pr->get_future());
    std::size_t n = std::min(piece, data.size() - at);
    (*up)->write(Bytes(data.begin() + static_cast<std::ptrdiff_t>(at),
                       data.begin() + static_cast<std::ptrdiff_t>(at + n)),
                 [pr](Status st) { pr->set_value(st); });
  }
  for (auto& w : writes) {
    auto st = w.get();
    if (!st) return st.error();
  }
  auto pr = std::make_shared<std::promise<Result<BlobInfo>>>();
  auto fut = pr->get_future();
  (*up)->finish(std::move(type), [pr](Result<BlobInfo> r) { pr->set_value(std::move(r)); });
  return fut.get();
}

Bytes read_all(BlobReader& r, std::size_t piece = 70000) {
  Bytes out;
  for (;;) {
    auto b = r.read(out.size(), piece);
    REQUIRE(b.ok());
    if (b->empty()) return out;
    out.insert(out.end(), b->begin(), b->end());
  }
}

// Waits until the jobs queued on the blob worker so far are done.
void settle(Store& s) {
  std::promise<void> done;
  s.blobs().post([&] { done.set_value(); });
  done.get_future().get();
}

std::size_t count_files(const std::filesystem::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) ++n;
  return n;
}

std::string doc_with(const BlobInfo& info) {
  return R"({"title":"river","photos":[)" + blob_ref_json(info) + "]}";
}

}  // namespace

TEST_CASE("an upload is named by its SHA-256 and reads back byte for byte") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  Bytes data = pattern(3 * kBlobChunkBytes + 12345);
  auto info = upload(store->blobs(), p->id, data);
  INFO((info.ok() ? "" : info.error().message));
  REQUIRE(info.ok());
  CHECK(info->id == crypto::sha256(ByteView(data)));
  CHECK(info->size == data.size());
  CHECK(info->media_type == "image/jpeg");
  // The chunk root: SHA-256 over each 256 KiB chunk's SHA-256.
  crypto::Sha256 root;
  for (std::size_t at = 0; at < data.size(); at += kBlobChunkBytes) {
    std::size_t n = std::min<std::size_t>(kBlobChunkBytes, data.size() - at);
    auto c = crypto::sha256(ByteView(data).subspan(at, n));
    root.update(ByteView(c));
  }
  CHECK(info->root == root.finish());

  auto r = store->blobs().open(p->id, info->id);
  REQUIRE(r.ok());
  CHECK(read_all(**r) == data);
  // Reads at any offset, across chunk boundaries.
  auto mid = (*r)->read(kBlobChunkBytes - 10, 20);
  REQUIRE(mid.ok());
  CHECK(*mid == Bytes(data.begin() + kBlobChunkBytes - 10, data.begin() + kBlobChunkBytes));
  auto end = (*r)->read(data.size(), 10);
  REQUIRE(end.ok());
  CHECK(end->empty());
  // Nothing is left in incoming/, and the file is private.
  CHECK(count_files(dir.path() / "blobs" / "incoming") == 0);
  auto path = dir.path() / "blobs" / digest_hex(info->id).substr(0, 2) / digest_hex(info->id);
  const auto owner_rw = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) == owner_rw);
}

TEST_CASE("an empty blob and a blob of exactly one chunk") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  auto empty = upload(store->blobs(), p->id, {}, "text/plain");
  REQUIRE(empty.ok());
  CHECK(empty->size == 0);
  CHECK(empty->root == crypto::sha256(ByteView()));
  auto r = store->blobs().open(p->id, empty->id);
  REQUIRE(r.ok());
  CHECK(read_all(**r).empty());
  Bytes one = pattern(kBlobChunkBytes);
  auto info = upload(store->blobs(), p->id, one);
  REQUIRE(info.ok());
  auto r2 = store->blobs().open(p->id, info->id);
  REQUIRE(r2.ok());
  CHECK(read_all(**r2) == one);
}

TEST_CASE("the same bytes in two projects are stored once, each project sees only its own") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto a = store->create_project("a");
  auto b = store->create_project("b");
  REQUIRE((a.ok() && b.ok()));
  Bytes data = pattern(500000);
  auto ia = upload(store->blobs(), a->id, data);
  auto ib = upload(store->blobs(), b->id, data);
  REQUIRE((ia.ok() && ib.ok()));
  CHECK(ia->id == ib->id);
  CHECK(count_files(dir.path() / "blobs") == 1);
  auto other = upload(store->blobs(), a->id, pattern(1000, 7));
  REQUIRE(other.ok());
  auto r = store->blobs().open(b->id, other->id);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::not_found);
  auto ua = store->blobs().usage(a->id);
  REQUIRE(ua.ok());
  CHECK(ua->held_count == 2);
  CHECK(ua->held_bytes == 501000);
}

TEST_CASE("limits: blob.max_blob_bytes, blob.project_quota_bytes, media type") {
  TempDir dir;
  StoreOptions o;
  o.blobs.max_blob_bytes = 300000;
  o.blobs.project_quota_bytes = 500000;
  auto store = test::open_store(dir.path(), o);
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  auto big = upload(store->blobs(), p->id, pattern(300001));
  REQUIRE(!big.ok());
  CHECK(big.error().code == Errc::too_large);
  CHECK(big.error().message.find("blob.max_blob_bytes") != std::string::npos);
  REQUIRE(upload(store->blobs(), p->id, pattern(300000)).ok());
  auto over = upload(store->blobs(), p->id, pattern(250000, 3));
  REQUIRE(!over.ok());
  CHECK(over.error().code == Errc::resource_exhausted);
  CHECK(over.error().message.find("blob.project_quota_bytes") != std::string::npos);
  auto bad_type = upload(store->blobs(), p->id, pattern(10), "not a type");
  REQUIRE(!bad_type.ok());
  CHECK(bad_type.error().code == Errc::invalid_argument);
  // Refused uploads leave nothing behind.
  CHECK(count_files(dir.path() / "blobs" / "incoming") == 0);
  CHECK(count_files(dir.path() / "blobs") == 1);
  auto u = store->blobs().usage(p->id);
  REQUIRE(u.ok());
  CHECK(u->held_bytes == 300000);
}

TEST_CASE("an abandoned upload leaves no file") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  {
    auto up = store->blobs().begin_upload(p->id);
    REQUIRE(up.ok());
    std::promise<Status> wrote;
    (*up)->write(pattern(1000), [&](Status st) { wrote.set_value(st); });
    REQUIRE(wrote.get_future().get().ok());
    CHECK(count_files(dir.path() / "blobs" / "incoming") == 1);
  }  // dropped without finish(): aborted on the worker
  settle(*store);
  CHECK(count_files(dir.path() / "blobs" / "incoming") == 0);
}

TEST_CASE("a damaged blob file reads as data_loss, never as wrong bytes") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  Bytes data = pattern(2 * kBlobChunkBytes);
  auto info = upload(store->blobs(), p->id, data);
  REQUIRE(info.ok());
  auto path = dir.path() / "blobs" / digest_hex(info->id).substr(0, 2) / digest_hex(info->id);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kBlobChunkBytes + 5);
    f.put(static_cast<char>(data[kBlobChunkBytes + 5] ^ 0xff));
  }
  auto r = store->blobs().open(p->id, info->id);
  REQUIRE(r.ok());
  auto first = (*r)->read(0, 100);
  CHECK(first.ok());  // the first chunk is intact
  auto second = (*r)->read(kBlobChunkBytes, 100);
  REQUIRE(!second.ok());
  CHECK(second.error().code == Errc::data_loss);
  std::filesystem::resize_file(path, 100);
  auto shorter = store->blobs().open(p->id, info->id);
  REQUIRE(!shorter.ok());
  CHECK(shorter.error().code == Errc::data_loss);
}

// The key of a held blob's chunk checksums in blob_held: the blob id, then 's'.
Bytes sums_key(const BlobId& id) {
  Bytes k(id.begin(), id.end());
  k.push_back('s');
  return k;
}

TEST_CASE(
    "held blobs have a checksum per chunk, added after an open where missing, SHA-256 otherwise") {
  TempDir da, db;
  const Bytes data = pattern(3 * kBlobChunkBytes + 5);
  const std::size_t sums_size = 1 + 4 * 8;  // u8 1, a u64 per chunk
  ProjectId p, q;
  BlobInfo info;
  {
    auto a = test::open_store(da.path());
    auto b = test::open_store(db.path());
    p = test::shared_project(*a, *b);
    auto up = upload(a->blobs(), p, data);
    REQUIRE(up.ok());
    info = *up;
    // Received from a peer: summed once its bytes are checked.
    REQUIRE(a->write(p, test::put("obs", "r", doc_with(info))).ok());
    test::copy_logs(*a, *b, p);
    REQUIRE(b->blobs().index(p).ok());
    auto src = a->blobs().open(p, info.id);
    REQUIRE(src.ok());
    auto rx = b->blobs().begin_receive(p, info.id);
    REQUIRE(rx.ok());
    REQUIRE((*rx)->set_chunk_hashes((*src)->chunk_hashes()).ok());
    for (std::uint32_t i = 0; i < 4; ++i) {
      auto c = (*src)->read(std::uint64_t{i} * kBlobChunkBytes, kBlobChunkBytes);
      REQUIRE(c.ok());
      REQUIRE((*rx)->put_chunk(i, *c).ok());
    }
    std::promise<Result<BlobInfo>> done;
    (*rx)->finish([&](Result<BlobInfo> r) { done.set_value(std::move(r)); });
    REQUIRE(done.get_future().get().ok());
    auto other = a->create_project("other");
    REQUIRE(other.ok());
    q = other->id;
  }
  Bytes uploaded_sums;
  {
    test::Raw ra(da.path()), rb(db.path());
    auto uploaded = ra.get(ra.t().blob_held, sums_key(info.id));
    auto received = rb.get(rb.t().blob_held, sums_key(info.id));
    REQUIRE(uploaded);
    REQUIRE(received);
    CHECK(uploaded->size() == sums_size);
    CHECK(*received == *uploaded);
    uploaded_sums = *uploaded;
    // What a daemon before checksums left: none.
    ra.del(ra.t().blob_held, sums_key(info.id));
  }
  auto path = da.path() / "blobs" / digest_hex(info.id).substr(0, 2) / digest_hex(info.id);
  auto set_byte = [&](std::uint8_t x) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * kBlobChunkBytes + 9);
    f.put(static_cast<char>(data[2 * kBlobChunkBytes + 9] ^ x));
  };
  auto damaged_read = [&](Store& s) {
    auto r = s.blobs().open(p, info.id);
    REQUIRE(r.ok());
    CHECK((*r)->read(0, 10).ok());
    auto damaged = (*r)->read(2 * kBlobChunkBytes, 10);
    REQUIRE(!damaged.ok());
    CHECK(damaged.error().code == Errc::data_loss);
  };
  auto reads_whole = [&](Store& s) {
    auto r = s.blobs().open(p, info.id);
    REQUIRE(r.ok());
    CHECK(read_all(**r) == data);
  };
  auto sums_now = [&] {
    test::Raw ra(da.path());
    return ra.get(ra.t().blob_held, sums_key(info.id));
  };
  {
    // Damaged while no checksums are recorded: found by SHA-256, and given no checksums.
    set_byte(0x01);
    auto a = test::open_store(da.path());
    settle(*a);
    damaged_read(*a);
  }
  CHECK_FALSE(sums_now());
  set_byte(0);
  {
    // Intact: it gets its checksums in the background after the open, the same as uploaded.
    auto a = test::open_store(da.path());
    settle(*a);  // the checksums added after the open
    reads_whole(*a);
    // The same bytes uploaded again (here to another project) record the same.
    auto again = upload(a->blobs(), q, data);
    REQUIRE(again.ok());
    CHECK(again->id == info.id);
  }
  CHECK(sums_now() == uploaded_sums);
  {
    auto a = test::open_store(da.path());
    settle(*a);
    set_byte(0x01);
    damaged_read(*a);  // found by the checksum
    set_byte(0);
  }
  {
    // Checksums that do not fit the chunks are not used: SHA-256 checks them, and they are
    // replaced in the background (here, once the blob is intact again).
    test::Raw ra(da.path());
    ra.put(ra.t().blob_held, sums_key(info.id), Bytes(sums_size - 8, 1));
  }
  set_byte(0x01);
  {
    auto a = test::open_store(da.path());
    settle(*a);
    damaged_read(*a);
  }
  CHECK(sums_now() == Bytes(sums_size - 8, 1));
  set_byte(0);
  {
    auto a = test::open_store(da.path());
    settle(*a);  // the checksums added after the open
    reads_whole(*a);
  }
  CHECK(sums_now() == uploaded_sums);
}

TEST_CASE("gc drops a blob's checksums with it, and those an older daemon's gc left behind") {
  TempDir d;
  BlobId id{}, orphan{};
  orphan[0] = 0x42;
  {
    auto s = test::open_store(d.path());
    auto p = s->create_project("photos");
    REQUIRE(p.ok());
    auto up = upload(s->blobs(), p->id, pattern(kBlobChunkBytes + 1));  // referred to by nothing
    REQUIRE(up.ok());
    id = up->id;
  }
  {
    test::Raw raw(d.path());
    CHECK(raw.get(raw.t().blob_held, sums_key(id)));
    raw.put(raw.t().blob_held, sums_key(orphan), Bytes{1, 0, 0, 0, 0, 0, 0, 0, 7});
  }
  {
    auto s = test::open_store(d.path());
    REQUIRE(s->blobs().gc(unix_ms() + 365LL * 86400 * 1000).ok());
  }
  test::Raw raw(d.path());
  CHECK(!raw.get(raw.t().blob_held, ByteView(id)));
  CHECK(!raw.get(raw.t().blob_held, sums_key(id)));
  CHECK(!raw.get(raw.t().blob_held, sums_key(orphan)));
}

TEST_CASE("blob references: local writes are checked, synced ones are indexed as wanted") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  Bytes data = pattern(400000);
  auto info = upload(a->blobs(), p, data);
  REQUIRE(info.ok());

  // Malformed references and ones that contradict the blob held here are refused.
  auto bad = a->write(p, test::put("obs", "x", R"({"photo":{"$blob":"nothex","size":1}})"));
  REQUIRE(!bad.ok());
  CHECK(bad.error().code == Errc::invalid_argument);
  CHECK(bad.error().message.find("photo") != std::string::npos);
  BlobInfo lying = *info;
  lying.size += 1;
  auto wrong = a->write(p, test::put("obs", "x", doc_with(lying)));
  REQUIRE(!wrong.ok());
  CHECK(wrong.error().code == Errc::invalid_argument);
  // An escaped spelling of "$blob" is a reference too.
  auto escaped = a->write(p, test::put("obs", "x", R"({"p":{"\u0024blob":"zz"}})"));
  CHECK(!escaped.ok());

  REQUIRE(a->write(p, test::put("obs", "r1", doc_with(*info))).ok());
  REQUIRE(a->write(p, test::put("obs", "r2", doc_with(*info))).ok());
  REQUIRE(a->blobs().index(p).ok());
  auto la = a->blobs().list(p, std::nullopt, 100);
  REQUIRE(la.ok());
  REQUIRE(la->size() == 1);
  CHECK((*la)[0].held);
  CHECK((*la)[0].refs == 2);

  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  auto lb = b->blobs().list(p, std::nullopt, 100);
  REQUIRE(lb.ok());
  REQUIRE(lb->size() == 1);
  CHECK(!(*lb)[0].held);
  CHECK((*lb)[0].refs == 2);
  CHECK((*lb)[0].info.size == info->size);
  CHECK((*lb)[0].info.media_type == "image/jpeg");
  auto ub = b->blobs().usage(p);
  REQUIRE(ub.ok());
  CHECK(ub->wanted_count == 1);
  auto open_b = b->blobs().open(p, info->id);
  REQUIRE(!open_b.ok());
  CHECK(open_b.error().code == Errc::failed_precondition);
  CHECK(open_b.error().message.find("not held on this device") != std::string::npos);
  // Uploading the same bytes on b makes it held there.
  REQUIRE(upload(b->blobs(), p, data).ok());
  auto rb = b->blobs().open(p, info->id);
  REQUIRE(rb.ok());
  CHECK(read_all(**rb) == data);
}

TEST_CASE("synced versions that drop a reference are indexed, however far the indexer is") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  auto info = upload(a->blobs(), p, pattern(5000));
  REQUIRE(info.ok());
  auto refs_on_b = [&] {
    REQUIRE(b->blobs().index(p).ok());
    auto l = b->blobs().list(p, std::nullopt, 10);
    REQUIRE(l.ok());
    return l->empty() ? 0u : (*l)[0].refs;
  };
  // Indexed on b, then replaced by a version without it (with documents that never had one).
  REQUIRE(a->write(p, test::put("obs", "d1", doc_with(*info))).ok());
  test::copy_logs(*a, *b, p);
  CHECK(refs_on_b() == 1);
  REQUIRE(a->write(p, test::put("obs", "d1", R"({"n":1})")).ok());
  for (int i = 0; i < 5; ++i)
    REQUIRE(a->write(p, test::put("obs", "x" + std::to_string(i), R"({"n":2})")).ok());
  test::copy_logs(*a, *b, p);
  CHECK(refs_on_b() == 0);
  // Received with a reference and replaced before b indexed it: the same.
  REQUIRE(a->write(p, test::put("obs", "d2", doc_with(*info))).ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(a->write(p, test::put("obs", "d2", R"({"n":3})")).ok());
  test::copy_logs(*a, *b, p);
  CHECK(refs_on_b() == 0);
  // And a reference that arrives among versions without one counts.
  REQUIRE(a->write(p, test::put("obs", "y0", R"({"n":4})")).ok());
  REQUIRE(a->write(p, test::put("obs", "d3", doc_with(*info))).ok());
  test::copy_logs(*a, *b, p);
  CHECK(refs_on_b() == 1);
  // Local writes the same way: a's own replacement of d3 drops the reference there.
  auto refs_on_a = [&] {
    REQUIRE(a->blobs().index(p).ok());
    auto l = a->blobs().list(p, std::nullopt, 10);
    REQUIRE(l.ok());
    return l->empty() ? 0u : (*l)[0].refs;
  };
  CHECK(refs_on_a() == 1);
  REQUIRE(a->write(p, test::put("obs", "d3", R"({"n":5})")).ok());
  CHECK(refs_on_a() == 0);
}

TEST_CASE("the worker indexes references after commits without being asked") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  auto info = upload(store->blobs(), p->id, pattern(1000));
  REQUIRE(info.ok());
  REQUIRE(store->write(p->id, test::put("obs", "r", doc_with(*info))).ok());
  std::uint32_t refs = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (refs == 0 && std::chrono::steady_clock::now() < deadline) {
    settle(*store);
    auto l = store->blobs().list(p->id, std::nullopt, 10);
    REQUIRE(l.ok());
    refs = l->empty() ? 0 : (*l)[0].refs;
  }
  CHECK(refs == 1);
}

TEST_CASE("gc releases blobs no live document refers to, after their grace") {
  TempDir dir;
  StoreOptions o;
  o.blobs.unreferenced_grace_ms = 60000;
  auto store = test::open_store(dir.path(), o);
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  auto kept = upload(store->blobs(), p->id, pattern(1000, 1));
  auto dropped = upload(store->blobs(), p->id, pattern(2000, 2));
  auto fresh = upload(store->blobs(), p->id, pattern(3000, 3));
  REQUIRE((kept.ok() && dropped.ok() && fresh.ok()));
  REQUIRE(store->write(p->id, test::put("obs", "keep", doc_with(*kept))).ok());
  auto w = store->write(p->id, test::put("obs", "drop", doc_with(*dropped)));
  REQUIRE(w.ok());
  // Replacing the body drops the reference (only current heads count).
  auto replace = test::put("obs", "drop", R"({"title":"no photo"})");
  replace.use_current = true;
  REQUIRE(store->write(p->id, replace).ok());

  // Within the grace nothing goes.
  auto g0 = store->blobs().gc(unix_ms());
  REQUIRE(g0.ok());
  CHECK(g0->released == 0);
  CHECK(count_files(dir.path() / "blobs") == 3);
  // After it: the unreferenced ones go, the referenced one stays.
  auto g1 = store->blobs().gc(unix_ms() + 61000);
  REQUIRE(g1.ok());
  CHECK(g1->released == 2);
  CHECK(g1->files_deleted == 2);
  CHECK(g1->bytes_freed == 5000);
  CHECK(count_files(dir.path() / "blobs") == 1);
  CHECK(store->blobs().open(p->id, kept->id).ok());
  auto gone = store->blobs().open(p->id, dropped->id);
  REQUIRE(!gone.ok());
  CHECK(gone.error().code == Errc::not_found);

  // Deleting the document releases its blob too.
  storage::WriteRequest del;
  del.collection = "obs";
  del.doc_id = "keep";
  del.kind = VersionKind::tombstone;
  del.use_current = true;
  REQUIRE(store->write(p->id, del).ok());
  auto g2 = store->blobs().gc(unix_ms() + 61000);
  REQUIRE(g2.ok());
  CHECK(g2->files_deleted == 1);
  CHECK(count_files(dir.path() / "blobs") == 0);
}

TEST_CASE("leaving a project releases its blobs, a blob another project holds stays") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto a = store->create_project("a");
  auto b = store->create_project("b");
  REQUIRE((a.ok() && b.ok()));
  auto shared = pattern(1000, 1);
  REQUIRE(upload(store->blobs(), a->id, shared).ok());
  REQUIRE(upload(store->blobs(), b->id, shared).ok());
  REQUIRE(upload(store->blobs(), a->id, pattern(2000, 2)).ok());
  REQUIRE(store->leave_project(a->id).ok());
  auto g = store->blobs().gc(unix_ms());
  REQUIRE(g.ok());
  CHECK(g->files_deleted == 1);
  CHECK(count_files(dir.path() / "blobs") == 1);
  auto r = store->blobs().open(b->id, crypto::sha256(ByteView(shared)));
  CHECK(r.ok());
}

TEST_CASE("blobs survive reopening, parts of unfinished uploads do not") {
  TempDir dir;
  Bytes data = pattern(600000);
  BlobInfo info;
  ProjectId p;
  {
    auto store = test::open_store(dir.path());
    auto pr = store->create_project("photos");
    REQUIRE(pr.ok());
    p = pr->id;
    auto i = upload(store->blobs(), p, data);
    REQUIRE(i.ok());
    info = *i;
  }
  // A part left by a crash.
  std::ofstream(dir.path() / "blobs" / "incoming" / "0123.part") << "partial";
  auto store = test::open_store(dir.path());
  CHECK(count_files(dir.path() / "blobs" / "incoming") == 0);
  auto r = store->blobs().open(p, info.id);
  REQUIRE(r.ok());
  CHECK(read_all(**r) == data);
}

TEST_CASE("find_blob_refs: nested references, each blob once, problems named by path") {
  BlobInfo i{crypto::sha256(ByteView()), 0, "image/png", crypto::sha256(ByteView())};
  std::string ref = blob_ref_json(i);
  std::vector<std::string> problems;
  auto refs = find_blob_refs(R"({"a":)" + ref + R"(,"b":[1,{"c":)" + ref +
                                 R"(}],"d":{"$blob":"00","size":1,"type":"x/y","root":"00"},)" +
                                 R"("e":{"$blob":")" + digest_hex(i.id) +
                                 R"(","size":-1,"type":"image/png","root":")" + digest_hex(i.root) +
                                 R"("}})",
                             &problems);
  REQUIRE(refs.size() == 1);
  CHECK(refs[0].media_type == "image/png");
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].rfind("d:", 0) == 0);
  CHECK(problems[1].find("size") != std::string::npos);
  CHECK(find_blob_refs("not json").empty());
  // The test before parsing skips text without the name, never a reference spelled with escapes.
  CHECK(!may_hold_blob_refs(R"({"species":"oak","n":3,"note":"$ blob"})"));
  CHECK(may_hold_blob_refs(R"({"x":"caf\u00e9"})"));
  std::string escaped = ref;
  escaped.replace(escaped.find("$blob"), 5, "\\u0024bl\\u006fb");
  auto spelled = find_blob_refs(R"({"p":)" + escaped + "}");
  REQUIRE(spelled.size() == 1);
  CHECK(spelled[0].id == i.id);
  CHECK(valid_media_type("image/jpeg"));
  CHECK(valid_media_type("text/plain; charset=utf-8"));
  CHECK(!valid_media_type("image"));
  CHECK(!valid_media_type("image/jpeg junk"));
  CHECK(!valid_media_type("/jpeg"));
  CHECK(!parse_digest_hex(std::string(64, 'A')));
  CHECK(parse_digest_hex(std::string(64, 'a')));
}

namespace {

// Device a holds `data` as a blob a document refers to; b has the document and wants the blob.
struct PeerBlob {
  TempDir da, db;
  std::unique_ptr<Store> a = test::open_store(da.path());
  std::unique_ptr<Store> b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  Bytes data;
  Result<BlobInfo> info;
  std::unique_ptr<BlobReader> src;

  explicit PeerBlob(Bytes bytes) : data(std::move(bytes)), info(upload(a->blobs(), p, data)) {
    REQUIRE(info.ok());
    REQUIRE(a->write(p, test::put("obs", "r", doc_with(*info))).ok());
    test::copy_logs(*a, *b, p);
    REQUIRE(b->blobs().index(p).ok());
    auto opened = a->blobs().open(p, info->id);
    REQUIRE(opened.ok());
    src = std::move(*opened);
  }
  // Chunk i as a's copy serves it.
  Bytes chunk(std::uint32_t i) {
    auto c = src->read(std::uint64_t{i} * kBlobChunkBytes, kBlobChunkBytes);
    REQUIRE(c.ok());
    return *c;
  }
  // Puts every chunk `rx` still lacks, then finishes it: what finishing gave.
  Result<BlobInfo> receive_rest(BlobReceiver& rx) {
    for (auto i = rx.next_missing(); i; i = rx.next_missing(*i + 1))
      REQUIRE(rx.put_chunk(*i, chunk(*i)).ok());
    REQUIRE(rx.complete());
    std::promise<Result<BlobInfo>> done;
    rx.finish([&](Result<BlobInfo> r) { done.set_value(std::move(r)); });
    return done.get_future().get();
  }
};

}  // namespace

TEST_CASE("receiving a blob from a peer: verified per chunk, resumed after a cut") {
  PeerBlob t(pattern(5 * kBlobChunkBytes + 777));
  auto [a, b, p, info, src] = std::tie(t.a, t.b, t.p, t.info, t.src);
  const Bytes& data = t.data;
  auto wanted = b->blobs().wanted(p, std::nullopt, 10);
  REQUIRE(wanted.ok());
  REQUIRE(wanted->size() == 1);
  CHECK((*wanted)[0].id == info->id);
  auto chunk = [&](std::uint32_t i) { return t.chunk(i); };
  {
    auto rx = b->blobs().begin_receive(p, info->id);
    REQUIRE(rx.ok());
    CHECK((*rx)->chunk_count() == 6);
    // A second transfer of the same blob at the same time is refused.
    auto twice = b->blobs().begin_receive(p, info->id);
    REQUIRE(!twice.ok());
    CHECK(twice.error().code == Errc::failed_precondition);
    // Chunk hashes that do not match the reference's root are refused.
    auto forged = src->chunk_hashes();
    forged[2][0] ^= 1;
    auto bad_list = (*rx)->set_chunk_hashes(forged);
    REQUIRE(!bad_list.ok());
    CHECK(bad_list.error().code == Errc::verification_failed);
    REQUIRE((*rx)->set_chunk_hashes(src->chunk_hashes()).ok());
    REQUIRE((*rx)->put_chunk(0, chunk(0)).ok());
    Bytes tampered = chunk(1);
    tampered[100] ^= 0x55;
    auto refused = (*rx)->put_chunk(1, tampered);
    REQUIRE(!refused.ok());
    CHECK(refused.error().code == Errc::verification_failed);
    REQUIRE((*rx)->put_chunk(3, chunk(3)).ok());
    CHECK((*rx)->chunks_held() == 2);
    CHECK((*rx)->next_missing() == 1u);
  }  // the link is cut
  auto rx = b->blobs().begin_receive(p, info->id);
  REQUIRE(rx.ok());
  CHECK((*rx)->has_chunk_hashes());  // kept beside the part
  CHECK((*rx)->chunks_held() == 2);  // chunks 0 and 3, re-verified
  auto finished = t.receive_rest(**rx);
  REQUIRE(finished.ok());
  auto r = b->blobs().open(p, info->id);
  REQUIRE(r.ok());
  CHECK(read_all(**r) == data);
  auto again = b->blobs().wanted(p, std::nullopt, 10);
  REQUIRE(again.ok());
  CHECK(again->empty());
  CHECK(count_files(t.db.path() / "blobs" / "partial") == 0);
}

TEST_CASE("bytes from a peer that match the reference's root but not its id are not kept") {
  // One chunk and a short one, and more than a writeback step of chunks.
  const std::size_t chunks = GENERATE(2, 33);
  INFO(chunks);
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  // A member refers to blob X with the size and root of other bytes Y, and serves Y as X.
  Bytes x = pattern(chunks * kBlobChunkBytes + 5, 3);
  Bytes y = pattern(chunks * kBlobChunkBytes + 5, 4);
  auto y_info = upload(a->blobs(), p, y);
  REQUIRE(y_info.ok());
  BlobInfo forged = *y_info;
  forged.id = crypto::sha256(ByteView(x));
  REQUIRE(a->write(p, test::put("obs", "r", doc_with(forged))).ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  auto src = a->blobs().open(p, y_info->id);
  REQUIRE(src.ok());
  auto rx = b->blobs().begin_receive(p, forged.id);
  REQUIRE(rx.ok());
  REQUIRE((*rx)->set_chunk_hashes((*src)->chunk_hashes()).ok());  // the root matches
  for (std::uint32_t i = 0; i < (*rx)->chunk_count(); ++i) {
    auto c = (*src)->read(std::uint64_t{i} * kBlobChunkBytes, kBlobChunkBytes);
    REQUIRE(c.ok());
    REQUIRE((*rx)->put_chunk(i, *c).ok());  // and so does every chunk
  }
  std::promise<Result<BlobInfo>> done;
  (*rx)->finish([&](Result<BlobInfo> r) { done.set_value(std::move(r)); });
  auto finished = done.get_future().get();
  REQUIRE(!finished.ok());
  CHECK(finished.error().code == Errc::verification_failed);
  auto r = b->blobs().open(p, forged.id);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::failed_precondition);  // still wanted, never held
  CHECK(count_files(db.path() / "blobs" / "partial") == 0);
}

TEST_CASE("a blob received out of order, cut and resumed is kept whole with its checksums") {
  PeerBlob t(pattern(20 * kBlobChunkBytes + 321, 7));
  auto [b, p, info, src] = std::tie(t.b, t.p, t.info, t.src);
  const Bytes& data = t.data;
  auto chunk = [&](std::uint32_t i) { return t.chunk(i); };
  {
    auto rx = b->blobs().begin_receive(p, info->id);
    REQUIRE(rx.ok());
    REQUIRE((*rx)->set_chunk_hashes(src->chunk_hashes()).ok());
    // The back first, then the start up to past it.
    for (std::uint32_t i :
         {12u, 13u, 14u, 15u, 16u, 20u, 0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 11u})
      REQUIRE((*rx)->put_chunk(i, chunk(i)).ok());
    CHECK((*rx)->next_missing() == 17u);
  }  // the link is cut: the part is kept
  auto rx = b->blobs().begin_receive(p, info->id);
  REQUIRE(rx.ok());
  CHECK((*rx)->chunks_held() == 18);
  auto finished = t.receive_rest(**rx);
  REQUIRE(finished.ok());
  CHECK(finished->id == info->id);
  // Read back through the local checksums recorded when it was finished: each chunk is checked.
  auto r = b->blobs().open(p, info->id);
  REQUIRE(r.ok());
  CHECK(read_all(**r) == data);
}

TEST_CASE("an erased document's photo leaves no part, nor a file that arrives after") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);  // `a` created it: a coordinator
  const auto partial = db.path() / "blobs" / "partial";
  Bytes one = pattern(3 * kBlobChunkBytes + 9, 5);
  Bytes two = pattern(2 * kBlobChunkBytes + 1, 6);
  auto i1 = upload(a->blobs(), p, one);
  auto i2 = upload(a->blobs(), p, two);
  REQUIRE((i1.ok() && i2.ok()));
  REQUIRE(a->write(p, test::put("obs", "one", doc_with(*i1))).ok());
  REQUIRE(a->write(p, test::put("obs", "two", doc_with(*i2))).ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  auto s1 = a->blobs().open(p, i1->id);
  auto s2 = a->blobs().open(p, i2->id);
  REQUIRE((s1.ok() && s2.ok()));
  auto chunk = [](BlobReader& src, std::uint32_t i) {
    auto c = src.read(std::uint64_t{i} * kBlobChunkBytes, kBlobChunkBytes);
    REQUIRE(c.ok());
    return *c;
  };

  // A transfer that ends before its first chunk (the peer lacked the blob) keeps nothing.
  {
    auto rx = b->blobs().begin_receive(p, i1->id);
    REQUIRE(rx.ok());
    CHECK(count_files(partial) == 1);
  }
  CHECK(count_files(partial) == 0);
  {
    auto rx = b->blobs().begin_receive(p, i1->id);
    REQUIRE(rx.ok());
    REQUIRE((*rx)->set_chunk_hashes((*s1)->chunk_hashes()).ok());
    REQUIRE((*rx)->put_chunk(0, chunk(**s1, 0)).ok());
  }  // cut after a chunk: kept to resume (the part and its chunk list)
  CHECK(count_files(partial) == 2);

  // The second photo is being received, all but finished, when both documents are erased.
  auto rx2 = b->blobs().begin_receive(p, i2->id);
  REQUIRE(rx2.ok());
  REQUIRE((*rx2)->set_chunk_hashes((*s2)->chunk_hashes()).ok());
  for (std::uint32_t i = 0; i < (*rx2)->chunk_count(); ++i)
    REQUIRE((*rx2)->put_chunk(i, chunk(**s2, i)).ok());
  REQUIRE(a->erase_document(p, "obs", "one", "consent withdrawn").ok());
  REQUIRE(a->erase_document(p, "obs", "two", "consent withdrawn").ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  REQUIRE(b->blobs().gc(unix_ms()).ok());
  // The cut transfer's part goes at once, not after an hour; the open one stays its
  // receiver's until it ends.
  CHECK(count_files(partial) == 2);
  CHECK(!std::filesystem::exists(partial / digest_hex(i1->id)));
  CHECK(std::filesystem::exists(partial / digest_hex(i2->id)));

  // It finishes after the erasure: no project wants it, so its file is deleted at once.
  std::promise<Result<BlobInfo>> done;
  (*rx2)->finish([&](Result<BlobInfo> r) { done.set_value(std::move(r)); });
  REQUIRE(done.get_future().get().ok());
  rx2->reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (count_files(db.path() / "blobs") != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(count_files(db.path() / "blobs") == 0);
  auto r = b->blobs().open(p, i2->id);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::not_found);
}
