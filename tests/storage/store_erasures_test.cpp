// Erasure by a coordinator (docs/storage.md "Erasure").
#include <catch2/catch.hpp>

#include "storage/version_codec.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::TempDir;

namespace {

constexpr const char* kSecret = "Amina Okafor, born 1987";

// A: the coordinator; B: a phone that goes offline; C: a laptop; D: a device that joins later.
struct Team {
  TempDir da, db, dc, dd;
  std::unique_ptr<Store> a = open_store(da.path());
  std::unique_ptr<Store> b = open_store(db.path());
  std::unique_ptr<Store> c = open_store(dc.path());
  std::unique_ptr<Store> d = open_store(dd.path());
  ProjectId p;
  Team() {
    auto info = a->create_project("clinic visits");
    REQUIRE(info.ok());
    p = info->id;
    auto secret = a->project_secret(p).value();
    for (Store* s : {b.get(), c.get(), d.get()}) REQUIRE(s->add_project(*info, secret).ok());
  }
  void everyone(Store& from, Store& to) { copy_logs(from, to, p); }
};

// Whether any body of any log held by `s` contains `text` (what a peer could be sent).
bool holds_text(Store& s, const ProjectId& p, std::string_view text) {
  auto vv = s.version_vector(p).value();
  for (const auto& [author, head] : vv) {
    std::uint64_t at = 0;
    while (at < head) {
      auto b = s.read_log(p, author, at, 1000, 1u << 30).value();
      REQUIRE_FALSE(b.entries.empty());
      for (const auto& e : b.entries)
        if (e.body && e.body->find(text) != std::string::npos) return true;
      at = b.entries.back().seq;
    }
  }
  return false;
}

// One author's log only, from `from` to `to`.
void copy_author(Store& from, Store& to, const ProjectId& p, const DeviceId& author) {
  auto theirs = to.version_vector(p).value();
  std::uint64_t at = theirs.count(author) ? theirs.at(author) : 0;
  auto head = from.version_vector(p).value().at(author);
  while (at < head) {
    auto b = from.read_log(p, author, at, 1000, 1u << 30).value();
    REQUIRE(to.apply_log(p, b).ok());
    at = b.entries.back().seq;
  }
}

std::string body(const std::string& name) { return R"({"patient":")" + name + R"("})"; }

}  // namespace

TEST_CASE("an erasure removes every version's body here and on every device it reaches",
          "[storage][erasure]") {
  Team t;
  REQUIRE(t.a->write(t.p, put("visits", "v1", body(kSecret))).ok());
  auto w2 = t.a->write(t.p, put("visits", "v1", body(std::string(kSecret) + " (corrected)")));
  REQUIRE(w2.ok());
  REQUIRE(t.a->write(t.p, put("visits", "v2", body("Kept Person"))).ok());
  t.everyone(*t.a, *t.c);
  REQUIRE(holds_text(*t.c, t.p, kSecret));

  // Only a coordinator erases; only app collections.
  auto denied = t.c->erase_document(t.p, "visits", "v1", "");
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().code == Errc::permission_denied);
  CHECK(t.a->erase_document(t.p, "_members", t.a->device_id().str(), "").error().code ==
        Errc::invalid_argument);
  CHECK(t.a->erase_document(t.p, "visits", "v1", std::string(300, 'x')).error().code ==
        Errc::invalid_argument);
  CHECK(t.a->erase_document(t.p, "visits", "v1", "bad\x01").error().code == Errc::invalid_argument);

  auto before = t.a->last_change_seq(t.p).value();
  auto e = t.a->erase_document(t.p, "visits", "v1", "consent withdrawn");
  REQUIRE(e.ok());
  CHECK(e->by == t.a->device_id());
  CHECK(e->reason == "consent withdrawn");
  CHECK(t.a->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK_FALSE(holds_text(*t.a, t.p, kSecret));
  CHECK(t.a->get_document(t.p, "visits", "v2").ok());  // other documents stay
  // The document appears in the changes feed once more, so followers learn it is gone.
  auto changes = t.a->changes_since(t.p, before, 100).value();
  CHECK(std::any_of(changes.begin(), changes.end(),
                    [](const Change& c) { return c.collection == "visits" && c.doc_id == "v1"; }));

  t.everyone(*t.a, *t.c);
  CHECK(t.c->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK_FALSE(holds_text(*t.c, t.p, kSecret));
  auto listed = t.c->erasures(t.p).value();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].collection == "visits");
  CHECK(listed[0].doc_id == "v1");
  CHECK(listed[0].hlc == e->hlc);
  // The log still verifies end to end: a new device syncs everything from C.
  t.everyone(*t.c, *t.d);
  CHECK(t.d->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK(t.d->get_document(t.p, "visits", "v2").ok());
  CHECK_FALSE(holds_text(*t.d, t.p, kSecret));
  CHECK(t.d->version_vector(t.p).value() == t.a->version_vector(t.p).value());
}

TEST_CASE("a device offline during the erasure cannot bring the document back",
          "[storage][erasure]") {
  Team t;
  REQUIRE(t.a->write(t.p, put("visits", "v1", body(kSecret))).ok());
  t.everyone(*t.a, *t.b);
  // B goes offline and edits the document, not knowing of the erasure to come.
  auto edit = t.b->write(t.p, put("visits", "v1", body(std::string(kSecret) + ", 2 children")));
  REQUIRE(edit.ok());
  REQUIRE(t.a->erase_document(t.p, "visits", "v1", "").ok());
  t.everyone(*t.a, *t.c);

  // Much later B meets C: B's versions (its offline edit too) reach C, which drops them.
  t.everyone(*t.b, *t.c);
  CHECK(t.c->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK_FALSE(holds_text(*t.c, t.p, kSecret));
  // And B learns of the erasure from C.
  t.everyone(*t.c, *t.b);
  CHECK(t.b->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK_FALSE(holds_text(*t.b, t.p, kSecret));
  // A device that never saw the document syncs from everyone: nothing comes back.
  t.everyone(*t.b, *t.d);
  t.everyone(*t.a, *t.d);
  CHECK(t.d->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK_FALSE(holds_text(*t.d, t.p, kSecret));
}

TEST_CASE("versions arriving before their erasure, or after it, end the same",
          "[storage][erasure]") {
  Team t;
  REQUIRE(t.b->write(t.p, put("visits", "v1", body(kSecret))).ok());
  t.everyone(*t.b, *t.a);
  REQUIRE(t.a->erase_document(t.p, "visits", "v1", "").ok());
  // C: the erasure (A's log) first, then B's versions. D: the other way round.
  copy_author(*t.a, *t.c, t.p, t.a->device_id());
  copy_author(*t.b, *t.c, t.p, t.b->device_id());
  copy_author(*t.b, *t.d, t.p, t.b->device_id());
  REQUIRE(t.d->get_document(t.p, "visits", "v1").ok());
  copy_author(*t.a, *t.d, t.p, t.a->device_id());
  for (Store* s : {t.c.get(), t.d.get()}) {
    CHECK(s->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
    CHECK_FALSE(holds_text(*s, t.p, kSecret));
  }
}

TEST_CASE("a document written again after its erasure lives on everywhere", "[storage][erasure]") {
  Team t;
  REQUIRE(t.a->write(t.p, put("visits", "v1", body(kSecret))).ok());
  t.everyone(*t.a, *t.b);
  REQUIRE(t.a->erase_document(t.p, "visits", "v1", "").ok());
  t.everyone(*t.a, *t.c);
  // C, which knows of the erasure, creates the id anew; its version says so.
  auto again = t.c->write(t.p, put("visits", "v1", body("A New Entry")));
  REQUIRE(again.ok());
  auto hist = t.c->history(t.p, "visits", "v1", 10).value();
  REQUIRE(hist.size() == 1);
  CHECK(hist[0].header.parents.empty());
  CHECK(erasure_epoch(hist[0].header) == t.a->erasures(t.p).value().at(0).hlc);
  // It survives everywhere, the offline device's old copy included.
  t.everyone(*t.c, *t.b);
  t.everyone(*t.b, *t.a);
  for (Store* s : {t.a.get(), t.b.get(), t.c.get()}) {
    auto d = s->get_document(t.p, "visits", "v1");
    REQUIRE(d.ok());
    CHECK(d->body.value() == body("A New Entry"));
    CHECK_FALSE(holds_text(*s, t.p, kSecret));
  }
}

TEST_CASE("an erasure counts by its author's role when written", "[storage][erasure]") {
  Team t;
  REQUIRE(t.a->write(t.p, put("visits", "v1", body(kSecret))).ok());
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::coordinator).ok());
  t.everyone(*t.a, *t.b);
  REQUIRE(t.b->erase_document(t.p, "visits", "v1", "").ok());
  t.everyone(*t.b, *t.a);
  // B is no coordinator any more: the erasure it made while it was one still counts.
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::member).ok());
  t.everyone(*t.a, *t.d);
  CHECK(t.d->get_document(t.p, "visits", "v1").error().code == Errc::not_found);
  CHECK(t.d->erasures(t.p).value().size() == 1);
  // A member cannot erase.
  t.everyone(*t.a, *t.b);
  CHECK(t.b->erase_document(t.p, "visits", "v1", "").error().code == Errc::permission_denied);
}

TEST_CASE("erasure epochs read and write as extension records", "[storage][erasure]") {
  VersionHeader h;
  CHECK(erasure_epoch(h) == 0);
  h.extensions = {9, 0, 2, 0xab, 0xcd};  // a field of a newer daemon stays
  set_erasure_epoch(h, 0x1122334455667788ull);
  CHECK(erasure_epoch(h) == 0x1122334455667788ull);
  CHECK(h.extensions.size() == 5 + 11);
  CHECK(h.extensions[0] == 1);  // ascending by type
  set_erasure_epoch(h, 0);
  CHECK(erasure_epoch(h) == 0);
  CHECK(h.extensions == Bytes{9, 0, 2, 0xab, 0xcd});
  h.extensions = {1, 0, 3, 1, 2, 3};  // wrong length: no epoch
  CHECK(erasure_epoch(h) == 0);
  h.extensions = {1, 0, 9};  // truncated
  CHECK(erasure_epoch(h) == 0);
}
