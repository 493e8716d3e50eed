#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "storage/json_merge.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::TempDir;

static ListQuery in(std::string collection) {
  ListQuery q;
  q.collection = std::move(collection);
  return q;
}

TEST_CASE("create, read, update and delete a document", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  REQUIRE(p.ok());

  auto req = put("observations", "obs-1", R"({"species":"harpy eagle","count":2})");
  req.must_not_exist = true;
  auto w1 = s->write(p->id, req);
  REQUIRE(w1.ok());
  CHECK_FALSE(w1->conflict);
  CHECK(w1->local_seq == 1);

  auto again = s->write(p->id, req);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::already_exists);

  auto up = put("observations", "obs-1", R"({"species":"harpy eagle","count":3})");
  up.parents = {w1->version};
  auto w2 = s->write(p->id, up);
  REQUIRE(w2.ok());
  CHECK_FALSE(w2->conflict);

  auto d = s->get_document(p->id, "observations", "obs-1");
  REQUIRE(d.ok());
  CHECK(d->winner == w2->version);
  CHECK(d->heads.size() == 1);
  CHECK(*d->body == R"({"species":"harpy eagle","count":3})");
  CHECK(d->author == s->device_id());

  WriteRequest del;
  del.collection = "observations";
  del.doc_id = "obs-1";
  del.kind = VersionKind::tombstone;
  REQUIRE(s->write(p->id, del).ok());
  d = s->get_document(p->id, "observations", "obs-1");
  REQUIRE(d.ok());
  CHECK(d->deleted);
  CHECK_FALSE(d->body);

  auto h = s->history(p->id, "observations", "obs-1", 10);
  REQUIRE(h.ok());
  REQUIRE(h->size() == 3);
  CHECK(h->front().header.kind == VersionKind::tombstone);
  CHECK(h->back().id == w1->version);

  auto list = s->list_documents(p->id, in("observations"));
  REQUIRE(list.ok());
  CHECK(list->docs.empty());
  ListQuery with_deleted = in("observations");
  with_deleted.include_deleted = true;
  CHECK(s->list_documents(p->id, with_deleted)->docs.size() == 1);
}

TEST_CASE("a stale base creates a concurrent version and keeps both", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  auto w1 = s->write(p->id, put("obs", "a", R"({"x":1,"y":1})"));
  REQUIRE(w1.ok());
  auto u1 = put("obs", "a", R"({"x":2,"y":1})");
  u1.parents = {w1->version};
  auto w2 = s->write(p->id, u1);
  REQUIRE(w2.ok());
  auto u2 = put("obs", "a", R"({"x":1,"y":5})");
  u2.parents = {w1->version};  // stale: w1 is no longer a head
  auto w3 = s->write(p->id, u2);
  REQUIRE(w3.ok());
  CHECK(w3->conflict);
  REQUIRE(w3->heads.size() == 2);

  auto d = s->get_document(p->id, "obs", "a");
  REQUIRE(d.ok());
  CHECK(d->in_conflict());
  CHECK(d->winner == w3->version);  // newest hlc wins

  // Different top-level fields changed: the merge is clean.
  auto m = s->merge_heads(p->id, "obs", "a");
  REQUIRE(m.ok());
  CHECK(m->clean());
  CHECK(boost::json::parse(m->body) == boost::json::parse(R"({"x":2,"y":5})"));

  // Resolving with both heads as parents leaves one head.
  auto res = put("obs", "a", m->body);
  res.parents = d->heads;
  auto w4 = s->write(p->id, res);
  REQUIRE(w4.ok());
  CHECK_FALSE(w4->conflict);
  CHECK(s->get_document(p->id, "obs", "a")->heads.size() == 1);
}

TEST_CASE("a strict write is refused when its base is no longer the winner", "[storage]") {
  TempDir d;
  auto a = open_store(d.path() / "a");
  auto b = open_store(d.path() / "b");
  ProjectId p = fieldsync::test::shared_project(*a, *b);
  auto w1 = a->write(p, put("obs", "x", R"({"v":1})"));
  REQUIRE(w1.ok());
  fieldsync::test::copy_logs(*a, *b, p);
  // b writes over it, and that arrives at a: the winner a read before is gone.
  auto req = put("obs", "x", R"({"v":2})");
  req.use_current = true;
  auto w2 = b->write(p, req);
  REQUIRE(w2.ok());
  fieldsync::test::copy_logs(*b, *a, p);
  auto strict = put("obs", "x", R"({"v":3})");
  strict.parents = {w1->version};
  strict.strict = true;
  auto r = a->write(p, strict);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::aborted);
  auto doc = a->get_document(p, "obs", "x");
  REQUIRE(doc.ok());
  CHECK(doc->winner == w2->version);
  CHECK(doc->heads.size() == 1);
  // Over the current winner it is written.
  strict.parents = {w2->version};
  auto ok = a->write(p, strict);
  REQUIRE(ok.ok());
  CHECK_FALSE(ok->conflict);
  // Create-only, and "must exist".
  auto create = put("obs", "x", R"({"v":4})");
  create.must_not_exist = true;
  create.strict = true;
  auto c = a->write(p, create);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == Errc::aborted);
  auto exists = put("obs", "missing", R"({"v":1})");
  exists.use_current = true;
  exists.strict = true;
  auto e = a->write(p, exists);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().code == Errc::aborted);
  CHECK(a->get_document(p, "obs", "missing").error().code == Errc::not_found);
}

TEST_CASE("merge reports fields changed differently on both sides", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  auto w1 = s->write(p->id, put("obs", "a", R"({"x":1,"y":1})"));
  REQUIRE(w1.ok());
  for (auto body : {R"({"x":2,"y":1})", R"({"x":3,"y":1,"z":true})"}) {
    auto u = put("obs", "a", body);
    u.parents = {w1->version};
    REQUIRE(s->write(p->id, u).ok());
  }
  auto m = s->merge_heads(p->id, "obs", "a");
  REQUIRE(m.ok());
  CHECK_FALSE(m->clean());
  CHECK(m->conflicting_fields == std::vector<std::string>{"x"});
  auto merged = boost::json::parse(m->body).as_object();
  CHECK(merged.at("z") == true);  // the one-sided addition is kept
  CHECK(merged.at("y") == 1);

  ListQuery q;
  q.conflicts_only = true;
  auto conflicts = s->list_documents(p->id, q);
  REQUIRE(conflicts.ok());
  REQUIRE(conflicts->docs.size() == 1);
  CHECK(conflicts->docs[0].doc_id == "a");
}

TEST_CASE("delete supersedes every head so no side comes back", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  auto w1 = s->write(p->id, put("obs", "a", R"({"x":1})"));
  REQUIRE(w1.ok());
  for (auto body : {R"({"x":2})", R"({"x":3})"}) {
    auto u = put("obs", "a", body);
    u.parents = {w1->version};
    REQUIRE(s->write(p->id, u).ok());
  }
  WriteRequest del;
  del.collection = "obs";
  del.doc_id = "a";
  del.kind = VersionKind::tombstone;
  auto wd = s->write(p->id, del);
  REQUIRE(wd.ok());
  CHECK(wd->heads.size() == 1);
  CHECK(s->get_document(p->id, "obs", "a")->deleted);
}

TEST_CASE("unknown JSON fields and collections are stored byte for byte", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  std::string body = R"({"v2_field":{"nested":[1,2,{"deep":null}]},"  spaced key":"\u00e9"})";
  auto w = s->write(p->id, put("collection_from_a_newer_app", "id-1", body));
  REQUIRE(w.ok());
  auto v = s->get_version(p->id, "collection_from_a_newer_app", "id-1", w->version);
  REQUIRE(v.ok());
  CHECK(*v->body == body);
  auto cols = s->list_collections(p->id);
  REQUIRE(cols.ok());
  CHECK(*cols == std::vector<std::string>{"collection_from_a_newer_app"});
}

TEST_CASE("bad input gets typed errors and changes nothing", "[storage]") {
  TempDir dir;
  storage::StoreOptions o;
  o.max_body_bytes = 64;
  auto s = open_store(dir.path(), o);
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  auto code = [&](WriteRequest r) { return s->write(p->id, r).error().code; };
  CHECK(code(put("obs", "a", "{not json")) == Errc::invalid_argument);
  CHECK(code(put("obs", "a", "[1,2]")) == Errc::invalid_argument);
  CHECK(code(put("obs", "a", R"({"x":")" + std::string(100, 'y') + "\"}")) == Errc::too_large);
  CHECK(code(put("bad/name", "a", "{}")) == Errc::invalid_argument);
  CHECK(code(put("obs", "has space", "{}")) == Errc::invalid_argument);
  CHECK(code(put("obs", std::string(200, 'a'), "{}")) == Errc::invalid_argument);
  auto stale = put("obs", "a", "{}");
  stale.parents = {VersionId{}};
  CHECK(code(stale) == Errc::failed_precondition);
  ProjectId unknown;
  CHECK(s->write(unknown, put("obs", "a", "{}")).error().code == Errc::not_found);
  CHECK(s->get_document(p->id, "obs", "a").error().code == Errc::not_found);

  // A batch with one bad write keeps nothing.
  auto batch = s->write_batch(p->id, {put("obs", "good", "{}"), put("obs", "bad", "nope")});
  REQUIRE_FALSE(batch.ok());
  CHECK(batch.error().message.rfind("write 1:", 0) == 0);
  CHECK(s->last_change_seq(p->id).value() == 0);
  CHECK(s->version_vector(p->id)->empty());
}

TEST_CASE("list pagination and field filters", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  std::vector<WriteRequest> reqs;
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "obs-%03d", i);
    reqs.push_back(put("obs", id, i % 2 ? R"({"kind":"wildlife"})" : R"({"kind":"fire"})"));
  }
  REQUIRE(s->write_batch(p->id, reqs).ok());
  ListQuery q = in("obs");
  q.limit = 10;
  std::vector<std::string> seen;
  for (int page = 0; page < 5; ++page) {
    auto r = s->list_documents(p->id, q);
    REQUIRE(r.ok());
    for (auto& d : r->docs) seen.push_back(d.doc_id);
    if (r->next.empty()) break;
    q.start_after = r->next;
  }
  CHECK(seen.size() == 25);
  CHECK(seen.front() == "obs-000");
  CHECK(seen.back() == "obs-024");

  ListQuery f = in("obs");
  f.filters = {{"kind", "\"wildlife\""}};
  auto r = s->list_documents(p->id, f);
  REQUIRE(r.ok());
  CHECK(r->docs.size() == 12);
}

TEST_CASE("changes feed numbers every applied version", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  std::uint64_t notified = 0;
  s->set_change_listener([&](const ProjectId&, std::uint64_t seq) { notified = seq; });
  REQUIRE(s->write(p->id, put("obs", "a", "{}")).ok());
  REQUIRE(s->write(p->id, put("obs", "b", "{}")).ok());
  REQUIRE(s->write(p->id, put("obs", "a", R"({"x":1})")).ok());
  CHECK(notified == 3);
  auto ch = s->changes_since(p->id, 1, 100);
  REQUIRE(ch.ok());
  REQUIRE(ch->size() == 2);
  CHECK((*ch)[0].seq == 2);
  CHECK((*ch)[0].doc_id == "b");
  CHECK((*ch)[1].doc_id == "a");
  CHECK((*ch)[1].local);
}

TEST_CASE("purge removes bodies locally and keeps version ids", "[storage]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  auto w1 = s->write(p->id, put("obs", "a", R"({"secret":"x"})"));
  REQUIRE(w1.ok());
  REQUIRE(s->write(p->id, put("obs", "a", R"({"secret":"y"})")).ok());
  auto n = s->purge_document(p->id, "obs", "a");
  REQUIRE(n.ok());
  CHECK(*n == 2);
  auto d = s->get_document(p->id, "obs", "a");
  REQUIRE(d.ok());
  CHECK(d->purged);
  CHECK_FALSE(d->body);
  auto v = s->get_version(p->id, "obs", "a", w1->version);
  REQUIRE(v.ok());
  CHECK_FALSE(v->body);
  // The log still serves the purged versions (header only) so the chain verifies.
  auto batch = s->read_log(p->id, s->device_id(), 0, 100, 1 << 20);
  REQUIRE(batch.ok());
  CHECK(batch->entries.size() == 2);
  CHECK_FALSE(batch->entries[0].body);
}

TEST_CASE("the store survives reopen with identity and clock intact", "[storage]") {
  TempDir dir;
  DeviceId id;
  ProjectId pid;
  std::uint64_t hlc = 0;
  {
    auto s = open_store(dir.path());
    id = s->device_id();
    auto p = s->create_project("survey");
    pid = p->id;
    REQUIRE(s->write(pid, put("obs", "a", "{}")).ok());
    hlc = s->get_document(pid, "obs", "a")->hlc;
  }
  auto s = open_store(dir.path());
  CHECK(s->device_id() == id);
  CHECK(s->get_project(pid).ok());
  REQUIRE(s->write(pid, put("obs", "b", "{}")).ok());
  CHECK(s->get_document(pid, "obs", "b")->hlc > hlc);
  auto perms = std::filesystem::status(dir.path() / "device.key").permissions();
  CHECK((perms & std::filesystem::perms::group_all) == std::filesystem::perms::none);
  CHECK((perms & std::filesystem::perms::others_all) == std::filesystem::perms::none);
}

TEST_CASE("a full map gives resource_exhausted and keeps earlier data", "[storage]") {
  TempDir dir;
  storage::StoreOptions o;
  o.data_dir = dir.path();
  o.map_size_bytes = 1 << 20;
  o.durable = false;
  o.body_compression_level = 0;  // the bodies below would compress to almost nothing
  auto s = storage::Store::open(o);
  REQUIRE(s.ok());
  auto p = (*s)->create_project("survey");
  REQUIRE(p.ok());
  std::string body = R"({"pad":")" + std::string(4000, 'x') + "\"}";
  int written = 0;
  Error last;
  for (int i = 0; i < 1000; ++i) {
    auto w = (*s)->write(p->id, put("obs", "d" + std::to_string(i), body));
    if (!w) {
      last = w.error();
      break;
    }
    ++written;
  }
  REQUIRE(written > 0);
  REQUIRE(written < 1000);
  CHECK(last.code == Errc::resource_exhausted);
  CHECK(last.message.find("storage.map_size") != std::string::npos);
  for (int i = 0; i < written; ++i)
    CHECK((*s)->get_document(p->id, "obs", "d" + std::to_string(i)).ok());
}

TEST_CASE("the merge keeps numbers as written and the winner's key order", "[storage]") {
  MergeInput in;
  in.base = R"({"id":"a", "big":12345678901234567890123, "ph":7.1, "n":{"k":1}, "gone":1})";
  in.sides = {
      // winner: its own order, a change to "ph" spelled with a trailing zero, "gone" removed
      R"({"n": {"k": 1}, "ph":7.10, "big":12345678901234567890123, "id":"a", "w\u00e9":1e300})",
      // other side: "big" changed by one (a double could not tell), whitespace elsewhere
      R"({ "id" : "a", "big":12345678901234567890124, "ph":7.1, "n":{ "k" : 1 }, "gone":1 })"};
  auto m = merge_objects(in);
  REQUIRE(m.ok());
  CHECK(m->conflicting_fields.empty());
  CHECK(m->body ==
        R"({"n":{"k":1},"ph":7.10,"big":12345678901234567890124,"id":"a","w\u00e9":1e300})");
  // Changed differently on both sides: a conflict, the winner's text kept.
  in.sides = {R"({"id":"a","big":1.0})", R"({"id":"a","big":1})"};
  m = merge_objects(in);
  REQUIRE(m.ok());
  CHECK(m->conflicting_fields == std::vector<std::string>{"big"});
  CHECK(m->body == R"({"id":"a","big":1.0})");
  in.sides = {"not json"};
  CHECK(merge_objects(in).error().code == Errc::invalid_argument);
}
