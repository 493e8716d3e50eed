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
