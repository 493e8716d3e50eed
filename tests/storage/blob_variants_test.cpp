// Variants of a blob: the `_variants` documents (written, read, app-supplied ones win, synced),
// gc releasing a blob's variants with the original, and wanted() fetching thumbnails first,
// then previews, then the rest.
#include <future>

#include "common/clock.hpp"
#include "crypto/crypto.hpp"
#include "storage/blob_ref.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::TempDir;

namespace {

Bytes bytes_of(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  std::uint32_t x = seed * 2654435761u + 7;
  for (auto& c : b) {
    x = x * 1103515245u + 12345;
    c = static_cast<std::uint8_t>(x >> 24);
  }
  return b;
}

BlobInfo put_blob(Store& s, const ProjectId& p, std::size_t n, std::uint8_t seed,
                  std::string type = "image/jpeg") {
  auto info = s.blobs().put(p, ByteView(bytes_of(n, seed)), std::move(type));
  REQUIRE(info.ok());
  return *info;
}

std::string doc_with(const BlobInfo& info) {
  return R"({"title":"river","photo":)" + blob_ref_json(info) + "}";
}

// Brings blob `id` of project `p` from `from` to `to` as a session does: chunk hashes, each
// chunk verified, then finish().
void transfer(Store& from, Store& to, const ProjectId& p, const BlobId& id) {
  auto src = from.blobs().open(p, id);
  REQUIRE(src.ok());
  auto rx = to.blobs().begin_receive(p, id);
  INFO((rx.ok() ? std::string() : rx.error().message));
  REQUIRE(rx.ok());
  REQUIRE((*rx)->set_chunk_hashes((*src)->chunk_hashes()).ok());
  for (std::uint32_t i = 0; i < (*rx)->chunk_count(); ++i) {
    auto c = (*src)->chunk(i);
    REQUIRE(c.ok());
    REQUIRE((*rx)->put_chunk(i, *c).ok());
  }
  std::promise<Result<BlobInfo>> fin;
  (*rx)->finish([&](Result<BlobInfo> r) { fin.set_value(std::move(r)); });
  REQUIRE(fin.get_future().get().ok());
}

std::optional<ProjectBlob> listed(Store& s, const ProjectId& p, const BlobId& id) {
  auto l = s.blobs().list(p, std::nullopt, 1000);
  REQUIRE(l.ok());
  for (const auto& b : *l)
    if (b.info.id == id) return b;
  return std::nullopt;
}

}  // namespace

TEST_CASE("put() stores a blob on the calling thread, named by its SHA-256") {
  TempDir dir;
  auto store = test::open_store(dir.path());
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  Bytes data = bytes_of(300000, 9);
  auto info = store->blobs().put(p->id, ByteView(data), "image/png");
  REQUIRE(info.ok());
  CHECK(info->id == crypto::sha256(ByteView(data)));
  CHECK(info->media_type == "image/png");
  auto r = store->blobs().open(p->id, info->id);
  REQUIRE(r.ok());
  auto head = (*r)->read(0, 10);
  REQUIRE(head.ok());
  CHECK(Bytes(data.begin(), data.begin() + 10) == *head);
  auto bad = store->blobs().put(p->id, ByteView(data), "not a type");
  REQUIRE(!bad.ok());
  CHECK(bad.error().code == Errc::invalid_argument);
}

TEST_CASE("_variants documents: written once by fieldsync, replaced by the app, read back") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  BlobInfo orig = put_blob(*a, p, 5000, 1);
  BlobInfo prev = put_blob(*a, p, 800, 2);
  BlobInfo thumb = put_blob(*a, p, 100, 3);

  auto none = a->blob_variants(p, orig.id);
  REQUIRE(none.ok());
  CHECK(!*none);
  // An app cannot write the reserved collection itself.
  auto direct = a->write(p, test::put("_variants", digest_hex(orig.id), "{}"));
  REQUIRE(!direct.ok());
  CHECK(direct.error().code == Errc::invalid_argument);
  CHECK(!a->set_blob_variants(p, orig, std::nullopt, std::nullopt, kMadeByFieldsync).ok());
  CHECK(!a->set_blob_variants(p, orig, prev, thumb, "someone").ok());

  auto made = a->set_blob_variants(p, orig, prev, thumb, kMadeByFieldsync);
  REQUIRE(made.ok());
  auto got = a->blob_variants(p, orig.id);
  REQUIRE(got.ok());
  REQUIRE(*got);
  CHECK((*got)->of.id == orig.id);
  REQUIRE((*got)->preview);
  CHECK((*got)->preview->id == prev.id);
  REQUIRE((*got)->thumbnail);
  CHECK((*got)->thumbnail->id == thumb.id);
  CHECK((*got)->made_by == "fieldsync");
  // The document is an ordinary signed version of `_variants`, id = the original's id.
  auto doc = a->get_document(p, "_variants", digest_hex(orig.id));
  REQUIRE(doc.ok());
  REQUIRE(doc->body);
  CHECK(doc->body->find(R"("made_by":"fieldsync")") != std::string::npos);

  // Made twice: the second is refused, nothing written.
  auto again = a->set_blob_variants(p, orig, thumb, thumb, kMadeByFieldsync);
  REQUIRE(!again.ok());
  CHECK(again.error().code == Errc::already_exists);

  // An app-supplied thumbnail replaces the made one, keeps the preview; fieldsync never
  // replaces it afterwards.
  BlobInfo app_thumb = put_blob(*a, p, 120, 4);
  auto app = a->set_blob_variants(p, orig, std::nullopt, app_thumb, kMadeByApp);
  REQUIRE(app.ok());
  got = a->blob_variants(p, orig.id);
  REQUIRE((got.ok() && *got));
  CHECK((*got)->thumbnail->id == app_thumb.id);
  CHECK((*got)->preview->id == prev.id);
  CHECK((*got)->made_by == "app");
  CHECK(a->set_blob_variants(p, orig, prev, thumb, kMadeByFieldsync).error().code ==
        Errc::already_exists);

  // Synced like data: the other device reads the same variants.
  test::copy_logs(*a, *b, p);
  auto on_b = b->blob_variants(p, orig.id);
  REQUIRE(on_b.ok());
  REQUIRE(*on_b);
  CHECK((*on_b)->thumbnail->id == app_thumb.id);
  CHECK((*on_b)->made_by == "app");
}

TEST_CASE("gc releases a blob's variants with the original, not before") {
  TempDir dir;
  StoreOptions o;
  o.blobs.unreferenced_grace_ms = 60000;
  auto store = test::open_store(dir.path(), o);
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  BlobInfo orig = put_blob(*store, p->id, 5000, 1);
  BlobInfo prev = put_blob(*store, p->id, 800, 2);
  BlobInfo thumb = put_blob(*store, p->id, 100, 3);
  REQUIRE(store->set_blob_variants(p->id, orig, prev, thumb, kMadeByFieldsync).ok());
  REQUIRE(store->write(p->id, test::put("obs", "r", doc_with(orig))).ok());
  REQUIRE(store->blobs().index(p->id).ok());
  // The `_variants` document refers to the variants, not to the original: only the app's
  // document keeps the original.
  CHECK(listed(*store, p->id, orig.id)->refs == 1);
  CHECK(listed(*store, p->id, prev.id)->refs == 1);
  CHECK(listed(*store, p->id, thumb.id)->refs == 1);

  // Long after every grace, all three stay while the document refers to the original.
  auto g0 = store->blobs().gc(unix_ms() + 120000);
  REQUIRE(g0.ok());
  CHECK(g0->released == 0);
  CHECK(store->blobs().open(p->id, thumb.id).ok());

  // The document goes: within the grace all three stay, after it all three go.
  storage::WriteRequest del;
  del.collection = "obs";
  del.doc_id = "r";
  del.kind = VersionKind::tombstone;
  del.use_current = true;
  REQUIRE(store->write(p->id, del).ok());
  auto g1 = store->blobs().gc(unix_ms());
  REQUIRE(g1.ok());
  CHECK(g1->released == 0);
  auto g2 = store->blobs().gc(unix_ms() + 61000);
  REQUIRE(g2.ok());
  CHECK(g2->released == 3);
  CHECK(g2->files_deleted == 3);
  CHECK(g2->bytes_freed == 5900);
  for (const auto& id : {orig.id, prev.id, thumb.id}) {
    auto r = store->blobs().open(p->id, id);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::not_found);
  }
}

TEST_CASE("a variant another document refers to stays when the original goes") {
  TempDir dir;
  StoreOptions o;
  o.blobs.unreferenced_grace_ms = 1000;
  auto store = test::open_store(dir.path(), o);
  auto p = store->create_project("photos");
  REQUIRE(p.ok());
  BlobInfo orig = put_blob(*store, p->id, 5000, 1);
  BlobInfo prev = put_blob(*store, p->id, 800, 2);
  BlobInfo thumb = put_blob(*store, p->id, 100, 3);
  REQUIRE(store->set_blob_variants(p->id, orig, prev, thumb, kMadeByFieldsync).ok());
  // Nobody refers to the original; the app's document refers to the thumbnail itself.
  REQUIRE(store->write(p->id, test::put("avatars", "me", doc_with(thumb))).ok());
  auto g = store->blobs().gc(unix_ms() + 10000);
  REQUIRE(g.ok());
  CHECK(g->released == 2);  // the original and its preview
  CHECK(store->blobs().open(p->id, thumb.id).ok());
  CHECK(!store->blobs().open(p->id, orig.id).ok());
  CHECK(!store->blobs().open(p->id, prev.id).ok());
}

TEST_CASE("an erased photo's variants go with it at once, and none are recorded after it") {
  TempDir dir;
  StoreOptions o;
  o.blobs.unreferenced_grace_ms = 3600 * 1000;  // nothing here waits for it
  auto store = test::open_store(dir.path(), o);
  auto p = store->create_project("photos");  // this device: its coordinator
  REQUIRE(p.ok());
  BlobInfo orig = put_blob(*store, p->id, 5000, 1);
  BlobInfo prev = put_blob(*store, p->id, 800, 2);
  BlobInfo thumb = put_blob(*store, p->id, 100, 3);
  REQUIRE(store->write(p->id, test::put("obs", "r", doc_with(orig))).ok());
  REQUIRE(store->set_blob_variants(p->id, orig, prev, thumb, kMadeByFieldsync).ok());
  REQUIRE(store->blobs().index(p->id).ok());

  // Variants made while the erasure lands (the maker reads the original, decodes it, puts
  // the variants, then records them): whichever the order, none of the photo stays.
  BlobInfo late_prev = put_blob(*store, p->id, 700, 5);
  BlobInfo late_thumb = put_blob(*store, p->id, 90, 6);
  REQUIRE(store->erase_document(p->id, "obs", "r", "consent withdrawn").ok());
  REQUIRE(store->blobs().index(p->id).ok());
  auto refused = store->set_blob_variants(p->id, orig, late_prev, late_thumb, kMadeByApp);
  REQUIRE(!refused.ok());
  CHECK(refused.error().code == Errc::not_found);
  refused = store->set_blob_variants(p->id, orig, late_prev, late_thumb, kMadeByFieldsync);
  REQUIRE(!refused.ok());
  CHECK(refused.error().code == Errc::not_found);
  REQUIRE(store->blobs().release_unreferenced(p->id, {late_prev.id, late_thumb.id}).ok());
  // Well within every grace: the original, the variants recorded before, and those made for
  // nothing are gone, files and all.
  REQUIRE(store->blobs().gc(unix_ms()).ok());
  for (const auto& id : {orig.id, prev.id, thumb.id, late_prev.id, late_thumb.id}) {
    auto r = store->blobs().open(p->id, id);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::not_found);
    CHECK(!listed(*store, p->id, id));
  }
  std::size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path() / "blobs"))
    files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 0);

  // An upload nobody refers to yet still gets variants (the app writes its document next),
  // and release_unreferenced leaves a blob a document refers to alone.
  BlobInfo fresh = put_blob(*store, p->id, 4000, 7);
  BlobInfo fresh_thumb = put_blob(*store, p->id, 80, 8);
  CHECK(store->set_blob_variants(p->id, fresh, std::nullopt, fresh_thumb, kMadeByFieldsync).ok());
  REQUIRE(store->write(p->id, test::put("obs", "s", doc_with(fresh))).ok());
  REQUIRE(store->blobs().index(p->id).ok());
  REQUIRE(store->blobs().release_unreferenced(p->id, {fresh.id}).ok());
  REQUIRE(store->blobs().gc(unix_ms()).ok());
  CHECK(store->blobs().open(p->id, fresh.id).ok());
}

TEST_CASE("wanted(): thumbnails first, then previews, then originals, paged in that order") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  std::vector<BlobInfo> thumbs, previews, originals;
  for (std::uint8_t i = 0; i < 4; ++i) {
    BlobInfo orig = put_blob(*a, p, 3000 + i, static_cast<std::uint8_t>(10 + i));
    BlobInfo prev = put_blob(*a, p, 700 + i, static_cast<std::uint8_t>(20 + i));
    BlobInfo thumb = put_blob(*a, p, 90 + i, static_cast<std::uint8_t>(30 + i));
    REQUIRE(a->set_blob_variants(p, orig, prev, thumb, kMadeByFieldsync).ok());
    REQUIRE(a->write(p, test::put("obs", "d" + std::to_string(i), doc_with(orig))).ok());
    originals.push_back(orig);
    previews.push_back(prev);
    thumbs.push_back(thumb);
  }
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  auto by_id = [](std::vector<BlobInfo> v) {
    std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    std::vector<BlobId> ids;
    for (const auto& i : v) ids.push_back(i.id);
    return ids;
  };
  std::vector<BlobId> expect;
  for (const auto& group : {thumbs, previews, originals})
    for (const auto& id : by_id(group)) expect.push_back(id);

  auto all = b->blobs().wanted(p, std::nullopt, 100);
  REQUIRE(all.ok());
  std::vector<BlobId> got;
  for (const auto& i : *all) got.push_back(i.id);
  CHECK(got == expect);
  // Paging by the last id of each page gives the same order.
  std::vector<BlobId> paged;
  std::optional<BlobId> after;
  for (;;) {
    auto page = b->blobs().wanted(p, after, 3);
    REQUIRE(page.ok());
    for (const auto& i : *page) paged.push_back(i.id);
    if (page->size() < 3) break;
    after = page->back().id;
  }
  CHECK(paged == expect);
  // A received thumbnail is no longer wanted; the order of the rest holds.
  auto rx = b->blobs().begin_receive(p, expect.front());
  REQUIRE(rx.ok());
  auto r = a->blobs().open(p, expect.front());
  REQUIRE(r.ok());
  REQUIRE((*rx)->set_chunk_hashes((*r)->chunk_hashes()).ok());
  auto bytes = (*r)->read(0, kBlobChunkBytes);
  REQUIRE(bytes.ok());
  REQUIRE((*rx)->put_chunk(0, ByteView(*bytes)).ok());
  std::promise<Result<BlobInfo>> fin;
  (*rx)->finish([&](Result<BlobInfo> res) { fin.set_value(std::move(res)); });
  REQUIRE(fin.get_future().get().ok());
  auto rest = b->blobs().wanted(p, std::nullopt, 100);
  REQUIRE(rest.ok());
  REQUIRE(rest->size() == expect.size() - 1);
  CHECK((*rest)[0].id == expect[1]);
}

namespace {

// `a` holds a photo (original, preview, thumbnail, its `_variants` document) that a document
// refers to; `b` (blob.keep_fetched_ms = keep_ms, the project's level `level`) has the
// documents and none of the blobs.
struct PhotoOnA {
  TempDir da, db;
  std::unique_ptr<Store> a, b;
  ProjectId p;
  BlobInfo orig, prev, thumb;
  PhotoOnA(std::uint64_t keep_ms, BlobPolicy level) {
    a = test::open_store(da.path());
    StoreOptions o;
    o.blobs.keep_fetched_ms = keep_ms;
    b = test::open_store(db.path(), o);
    p = test::shared_project(*a, *b);
    orig = put_blob(*a, p, 5000, 1);
    prev = put_blob(*a, p, 800, 2);
    thumb = put_blob(*a, p, 100, 3);
    REQUIRE(a->write(p, test::put("obs", "river", doc_with(orig))).ok());
    REQUIRE(a->set_blob_variants(p, orig, prev, thumb, kMadeByFieldsync).ok());
    test::copy_logs(*a, *b, p);
    REQUIRE(b->blobs().index(p).ok());
    REQUIRE(b->blobs().set_policy(p, ProjectBlobPolicy{level, {}}).ok());
  }
};

}  // namespace

TEST_CASE("a phone releases what it fetched beyond its level once blob.keep_fetched_ms passed") {
  PhotoOnA ph(60000, BlobPolicy::phone);
  auto& a = ph.a;
  auto& b = ph.b;
  const ProjectId& p = ph.p;
  const BlobInfo &orig = ph.orig, &prev = ph.prev, &thumb = ph.thumb;
  // The phone's own photo, uploaded there: never released for being beyond its level.
  BlobInfo own = put_blob(*b, p, 3000, 4);
  REQUIRE(b->write(p, test::put("obs", "mine", doc_with(own))).ok());
  REQUIRE(b->blobs().index(p).ok());
  // The phone fetched the thumbnail and preview by itself, and the original on demand.
  transfer(*a, *b, p, thumb.id);
  transfer(*a, *b, p, prev.id);
  REQUIRE(b->blobs().demand(p, orig.id).ok());
  transfer(*a, *b, p, orig.id);
  CHECK(b->blobs().demanded(p).empty());
  const std::int64_t later = unix_ms() + 61000;
  auto held = [&](const BlobId& id) {
    auto f = b->blobs().find(p, id);
    REQUIRE(f.ok());
    REQUIRE(*f);
    return (*f)->held;
  };

  // Within blob.keep_fetched_ms: kept.
  auto g0 = b->blobs().gc(unix_ms());
  REQUIRE(g0.ok());
  CHECK(g0->released == 0);
  // A peer with which the level is archive: the phone fetches originals by itself, so none is
  // beyond its level.
  REQUIRE(b->blobs()
              .set_policy(
                  p, ProjectBlobPolicy{BlobPolicy::phone, {{a->device_id(), BlobPolicy::archive}}})
              .ok());
  auto g1 = b->blobs().gc(later);
  REQUIRE(g1.ok());
  CHECK(g1->released == 0);
  CHECK(held(orig.id));

  // Past it, under `phone`: the original goes, the variants and the phone's own photo stay.
  REQUIRE(b->blobs().set_policy(p, ProjectBlobPolicy{BlobPolicy::phone, {}}).ok());
  auto g2 = b->blobs().gc(later);
  REQUIRE(g2.ok());
  CHECK(g2->released == 1);
  CHECK(g2->files_deleted == 1);
  CHECK(g2->bytes_freed == 5000);
  CHECK_FALSE(held(orig.id));
  CHECK(held(prev.id));
  CHECK(held(thumb.id));
  CHECK(held(own.id));
  // Still referred to: asked for again, it is fetched on demand, never by the level itself.
  auto r = b->blobs().open(p, orig.id);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::failed_precondition);
  auto by_level = b->blobs().wanted(p, std::nullopt, 10, BlobPolicy::phone);
  REQUIRE(by_level.ok());
  CHECK(by_level->empty());
  auto all = b->blobs().wanted(p, std::nullopt, 10, BlobPolicy::archive);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 1);
  CHECK(all->front().id == orig.id);
  auto usage = b->blobs().usage(p);
  REQUIRE(usage.ok());
  CHECK(usage->wanted_count == 1);
  CHECK(usage->held_count == 3);
  REQUIRE(b->blobs().demand(p, orig.id).ok());
  transfer(*a, *b, p, orig.id);
  CHECK(held(orig.id));
  auto g3 = b->blobs().gc(unix_ms() + 1000);
  REQUIRE(g3.ok());
  CHECK(g3->released == 0);

  // A named destination of the project keeps everything it holds: its receipts say so.
  REQUIRE(a->set_destination(p, b->device_id(), "office", true).ok());
  test::copy_logs(*a, *b, p);
  auto g4 = b->blobs().gc(unix_ms() + 120000);
  REQUIRE(g4.ok());
  CHECK(g4->released == 0);
  CHECK(held(orig.id));
}

TEST_CASE("with blob.keep_fetched_ms = 0 a device keeps all it fetched") {
  PhotoOnA f(0, BlobPolicy::on_demand);
  transfer(*f.a, *f.b, f.p, f.orig.id);
  auto g = f.b->blobs().gc(unix_ms() + 3650ll * 24 * 3600 * 1000);
  REQUIRE(g.ok());
  CHECK(g->released == 0);
  CHECK(f.b->blobs().open(f.p, f.orig.id).ok());
}

namespace {

// What wanted(), wanted_total() and usage() must say, worked out from list() (every record).
struct Expected {
  std::vector<BlobId> wanted;  // fetch order
  std::map<BlobPolicy, std::pair<std::uint64_t, std::uint64_t>> totals;
  BlobUsage usage;
};
Expected expected_of(Store& s, const ProjectId& p) {
  auto all = s.blobs().list(p, std::nullopt, 100000);
  REQUIRE(all.ok());
  Expected e;
  std::vector<std::pair<std::pair<int, BlobId>, std::uint64_t>> w;
  for (const auto& b : *all) {
    if (b.held) {
      e.usage.held_bytes += b.info.size;
      ++e.usage.held_count;
    } else if (b.refs > 0) {
      ++e.usage.wanted_count;
      w.push_back({{b.thumbnail ? 0 : b.preview ? 1 : 2, b.info.id}, b.info.size});
    }
  }
  std::sort(w.begin(), w.end());
  for (const auto& [k, size] : w) e.wanted.push_back(k.second);
  for (auto [level, ranks] : {std::pair{BlobPolicy::on_demand, 0},
                              {BlobPolicy::thumbnails, 1},
                              {BlobPolicy::phone, 2},
                              {BlobPolicy::archive, 3}}) {
    auto& t = e.totals[level];
    for (const auto& [k, size] : w)
      if (k.first < ranks) {
        ++t.first;
        t.second += size;
      }
  }
  return e;
}

void check_against_records(Store& s, const ProjectId& p) {
  Expected e = expected_of(s, p);
  auto w = s.blobs().wanted(p, std::nullopt, 1000);
  REQUIRE(w.ok());
  std::vector<BlobId> got;
  for (const auto& i : *w) got.push_back(i.id);
  CHECK(got == e.wanted);
  for (const auto& [level, t] : e.totals) {
    auto total = s.blobs().wanted_total(p, level);
    REQUIRE(total.ok());
    CHECK(*total == t);
  }
  auto u = s.blobs().usage(p);
  REQUIRE(u.ok());
  CHECK(u->held_bytes == e.usage.held_bytes);
  CHECK(u->held_count == e.usage.held_count);
  CHECK(u->wanted_count == e.usage.wanted_count);
}

}  // namespace

TEST_CASE("what sessions ask of the blob store agrees with its records, after a restart too") {
  TempDir da, db;
  auto a = test::open_store(da.path());
  auto b = test::open_store(db.path());
  ProjectId p = test::shared_project(*a, *b);
  std::vector<BlobInfo> originals;
  for (std::uint8_t i = 0; i < 3; ++i) {
    BlobInfo orig = put_blob(*a, p, 4000 + i, static_cast<std::uint8_t>(10 * i + 1));
    BlobInfo prev = put_blob(*a, p, 700 + i, static_cast<std::uint8_t>(10 * i + 2));
    BlobInfo thumb = put_blob(*a, p, 90 + i, static_cast<std::uint8_t>(10 * i + 3));
    REQUIRE(a->write(p, test::put("obs", "o" + std::to_string(i), doc_with(orig))).ok());
    REQUIRE(a->set_blob_variants(p, orig, prev, thumb, kMadeByFieldsync).ok());
    originals.push_back(orig);
  }
  BlobInfo plain = put_blob(*a, p, 333, 99, "application/pdf");
  REQUIRE(a->write(p, test::put("obs", "report", doc_with(plain))).ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  check_against_records(*b, p);
  auto first = b->blobs().wanted(p, std::nullopt, 100);
  REQUIRE(first.ok());
  REQUIRE(first->size() == 10);
  // Some arrive (a thumbnail, a preview, an original); b uploads one of its own.
  for (std::size_t i : {0u, 4u, 9u}) transfer(*a, *b, p, (*first)[i].id);
  BlobInfo own = put_blob(*b, p, 5555, 77);
  REQUIRE(b->write(p, test::put("obs", "mine", doc_with(own))).ok());
  REQUIRE(b->blobs().index(p).ok());
  check_against_records(*b, p);
  // A document deleted: its original is no longer wanted; gc after the grace releases it.
  storage::WriteRequest del;
  del.collection = "obs";
  del.doc_id = "o1";
  del.kind = VersionKind::tombstone;
  del.use_current = true;
  REQUIRE(a->write(p, del).ok());
  test::copy_logs(*a, *b, p);
  REQUIRE(b->blobs().index(p).ok());
  check_against_records(*b, p);
  REQUIRE(b->blobs().gc(unix_ms() + 2 * 24 * 3600 * 1000ll).ok());
  check_against_records(*b, p);
  // Built again from the records at open.
  b.reset();
  b = test::open_store(db.path());
  check_against_records(*b, p);
  auto usage = b->blobs().usage(p);
  REQUIRE(usage.ok());
  CHECK(usage->held_count >= 2);
  CHECK(usage->wanted_count >= 5);
}
