// Declared indexes: what a query answers through an index is what it answers by reading the
// whole collection, across writes, deletes, conflicts, syncs, truncated values and pages.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <thread>

#include "storage/index_key.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/records.hpp"
#include "storage/subscription.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::TempDir;
namespace json = boost::json;

namespace {

// Polls (no sleep as synchronisation: a deadline) until every index of the project is ready.
void wait_ready(Store& s, const ProjectId& p) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    auto ix = s.indexes(p);
    REQUIRE(ix.ok());
    if (std::all_of(ix->begin(), ix->end(), [](const IndexInfo& i) { return i.ready; })) return;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::yield();
  }
}

std::string long_text(char tail) { return std::string(400, 'm') + tail; }

// Values chosen to collide: equal numbers of different spellings, strings that are prefixes of
// each other or share their first 400 bytes (beyond what an index keeps), a NUL byte, types.
const std::vector<std::string> kValues = {"null",
                                          "false",
                                          "true",
                                          "-2",
                                          "-0.5",
                                          "0",
                                          "1",
                                          "1.0",
                                          "2",
                                          "1e20",
                                          "12345678901234567890",
                                          "\"\"",
                                          "\"a\"",
                                          "\"ab\"",
                                          "\"b\"",
                                          "\"a\\u0000b\"",
                                          "\"a\\u0000\"",
                                          "\"" + long_text('x') + "\"",
                                          "\"" + long_text('b') + "\"",
                                          "\"" + long_text('z') + "\"",
                                          "[1,2]",
                                          "[1]",
                                          "{\"x\":1}"};

std::string body_of(std::mt19937& rng) {
  std::uniform_int_distribution<std::size_t> pick(0, kValues.size());  // size(): missing
  std::string b = "{";
  std::size_t a = pick(rng), h = pick(rng);
  if (a < kValues.size()) b += "\"a\":" + kValues[a];
  if (h < kValues.size())
    b += std::string(b.size() > 1 ? "," : "") + "\"g\":{\"h\":" + kValues[h] + "}";
  return b + ",\"n\":" + std::to_string(rng() % 1000) + "}";
}

std::vector<std::string> all_ids(Store& s, const ProjectId& p, ListQuery q, std::string* index) {
  std::vector<std::string> ids;
  for (int pages = 0; pages < 1000; ++pages) {
    auto page = s.list_documents(p, q);
    INFO((page.ok() ? std::string() : page.error().message));
    REQUIRE(page.ok());
    if (index && pages == 0) *index = page->plan.index;
    for (const auto& d : page->docs) ids.push_back(d.doc_id);
    if (page->next.empty()) return ids;
    q.start_after = page->next;
  }
  FAIL("no last page");
  return ids;
}

std::shared_ptr<const Subscription> selector(const std::string& where) {
  auto s = Subscription::parse("{\"where\":" + where + "}");
  INFO(where);
  REQUIRE(s.ok());
  return std::make_shared<const Subscription>(std::move(*s));
}

// The first page of `obs` documents whose `path` equals the JSON `value`.
ListPage obs_where(Store& s, const ProjectId& p, const std::string& path,
                   const std::string& value) {
  ListQuery q;
  q.collection = "obs";
  q.selector = selector("{\"eq\":{\"path\":\"" + path + "\",\"value\":" + value + "}}");
  auto page = s.list_documents(p, q);
  INFO((page.ok() ? std::string() : page.error().message));
  REQUIRE(page.ok());
  return std::move(*page);
}

// The same query on the indexed collection and on the plain one with the same documents.
void same_answer(Store& s, const ProjectId& p, ListQuery q, bool expect_index) {
  q.collection = "plain";
  std::string scan_index;
  auto scanned = all_ids(s, p, q, &scan_index);
  CHECK(scan_index.empty());
  q.collection = "ix";
  std::string used;
  auto indexed = all_ids(s, p, q, &used);
  if (expect_index) CHECK_FALSE(used.empty());
  CHECK(indexed == scanned);
}

}  // namespace

TEST_CASE("index keys sort as the query collation", "[storage][index]") {
  std::vector<std::string> ordered = {"null",
                                      "false",
                                      "true",
                                      "-1e300",
                                      "-2",
                                      "-0.5",
                                      "0",
                                      "0.25",
                                      "1",
                                      "2",
                                      "1e300",
                                      "\"\"",
                                      "\"\\u0000\"",
                                      "\"a\"",
                                      "\"a\\u0000\"",
                                      "\"a\\u0000b\"",
                                      "\"a\\u0001\"",
                                      "\"ab\"",
                                      "\"b\"",
                                      "\"" + long_text('a') + "\"",
                                      "[]",
                                      "{}"};
  std::vector<Bytes> enc;
  for (const auto& t : ordered) {
    Bytes b;
    index_key::append(b, json::parse(t), index_key::string_budget(1));
    CHECK(index_key::length(b) == b.size());
    enc.push_back(b);
  }
  for (std::size_t i = 1; i < enc.size(); ++i) {
    INFO(ordered[i - 1] << " < " << ordered[i]);
    CHECK(std::lexicographical_compare(enc[i - 1].begin(), enc[i - 1].end(), enc[i].begin(),
                                       enc[i].end()));
  }
  Bytes zero, minus_zero, one_int, one_double;
  index_key::append(zero, json::parse("0"), 10);
  index_key::append(minus_zero, json::parse("-0.0"), 10);
  index_key::append(one_int, json::parse("1"), 10);
  index_key::append(one_double, json::parse("1.0"), 10);
  CHECK(zero == minus_zero);
  CHECK(one_int == one_double);
  Bytes cut;
  CHECK(index_key::append(cut, json::value(long_text('q')), index_key::string_budget(8)));
  CHECK(index_key::truncated(cut));
  CHECK(index_key::length(cut) == cut.size());
  CHECK(index_key::length(ByteView(cut).first(cut.size() - 1)) == 0);
}

TEST_CASE("a query through an index answers what a scan answers", "[storage][index]") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  std::mt19937 rng(7);
  std::vector<std::string> ids;
  auto write_both = [&](const std::string& id, const std::string& body) {
    for (const char* coll : {"ix", "plain"}) REQUIRE(s->write(p->id, put(coll, id, body)).ok());
  };
  // Half the documents before the indexes (built by the index thread), half after (kept by
  // the writes).
  for (int i = 0; i < 150; ++i) {
    ids.push_back("d" + std::to_string(1000 + i));
    write_both(ids.back(), body_of(rng));
  }
  REQUIRE(s->create_index(p->id, {"by_a", "ix", {"a"}}).ok());
  REQUIRE(s->create_index(p->id, {"by_h_a", "ix", {"g.h", "a"}}).ok());
  wait_ready(*s, p->id);
  for (int i = 150; i < 300; ++i) {
    ids.push_back("d" + std::to_string(1000 + i));
    write_both(ids.back(), body_of(rng));
  }
  // Updates and deletes move and remove entries.
  for (int i = 0; i < 60; ++i) {
    const auto& id = ids[rng() % ids.size()];
    if (i % 4 == 0) {
      for (const char* coll : {"ix", "plain"}) {
        WriteRequest del;
        del.collection = coll;
        del.doc_id = id;
        del.kind = VersionKind::tombstone;
        auto r = s->write(p->id, del);
        REQUIRE((r.ok() || r.error().code == Errc::not_found));
      }
    } else {
      write_both(id, body_of(rng));
    }
  }
  auto ix = s->indexes(p->id);
  REQUIRE(ix.ok());
  REQUIRE(ix->size() == 2);
  auto plain = s->list_documents(p->id, [] {
    ListQuery q;
    q.collection = "plain";
    q.limit = 1000;
    return q;
  }());
  REQUIRE(plain.ok());
  CHECK(ix->at(0).entries == plain->docs.size());  // live documents only

  for (const auto& v : kValues) {
    if (v.front() == '[' || v.front() == '{') continue;
    ListQuery eq;
    eq.selector = selector("{\"eq\":{\"path\":\"a\",\"value\":" + v + "}}");
    same_answer(*s, p->id, eq, true);
    ListQuery where;
    where.filters.push_back({"a", v});
    where.limit = 3;
    same_answer(*s, p->id, where, true);
    ListQuery both;
    both.selector = selector("{\"all\":[{\"eq\":{\"path\":\"g.h\",\"value\":" + v +
                             "}},{\"range\":{\"path\":\"a\",\"gte\":0}}]}");
    both.limit = 4;
    same_answer(*s, p->id, both, true);
    for (bool desc : {false, true}) {
      ListQuery sorted;
      sorted.selector = selector("{\"eq\":{\"path\":\"g.h\",\"value\":" + v + "}}");
      sorted.sort_path = {"a"};
      sorted.sort_descending = desc;
      sorted.limit = 2;
      same_answer(*s, p->id, sorted, true);
    }
  }
  for (const char* range :
       {R"({"range":{"path":"a","gt":-1,"lte":2}})", R"({"range":{"path":"a","gte":"a"}})",
        R"({"range":{"path":"a","lt":"b"}})", R"({"range":{"path":"a","gt":1}})",
        R"({"in":{"path":"a","values":["ab","b","a"]}})",
        R"({"in":{"path":"a","values":[2,-2]}})"}) {
    ListQuery q;
    q.selector = selector(range);
    q.limit = 5;
    same_answer(*s, p->id, q, true);
    q.sort_path = {"n"};
    same_answer(*s, p->id, q, true);
  }
  for (bool desc : {false, true}) {
    for (std::uint32_t limit : {1u, 7u, 100u}) {
      ListQuery q;
      q.sort_path = {"a"};
      q.sort_descending = desc;
      q.limit = limit;
      same_answer(*s, p->id, q, true);
      q.sort_path = {"g", "h"};  // no index has it last alone: sorted here
      same_answer(*s, p->id, q, false);
    }
  }
  // Conditions no index narrows: a scan.
  ListQuery other;
  other.selector = selector(R"({"range":{"path":"n","gte":500}})");
  same_answer(*s, p->id, other, false);
}

TEST_CASE("indexes follow synced batches and conflicts, and go with the project",
          "[storage][index]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto p = test::shared_project(*a, *b);
  REQUIRE(b->create_index(p, {"by_kind", "obs", {"kind"}}).ok());
  wait_ready(*b, p);
  REQUIRE(a->write(p, put("obs", "x", R"({"kind":"bird"})")).ok());
  REQUIRE(a->write(p, put("obs", "y", R"({"kind":"frog"})")).ok());
  test::copy_logs(*a, *b, p);
  auto r = obs_where(*b, p, "kind", R"("bird")");
  CHECK(r.plan.index == "by_kind");
  REQUIRE(r.docs.size() == 1);
  CHECK(r.docs[0].doc_id == "x");
  CHECK(r.plan.examined == 1);
  // Concurrent edits: the winner's body is what the index holds.
  auto base = b->get_document(p, "obs", "x");
  REQUIRE(base.ok());
  auto on_a = put("obs", "x", R"({"kind":"bat"})");
  on_a.parents = {base->winner};
  auto on_b = put("obs", "x", R"({"kind":"moth"})");
  on_b.parents = {base->winner};
  REQUIRE(b->write(p, on_b).ok());
  REQUIRE(a->write(p, on_a).ok());
  test::copy_logs(*a, *b, p);
  auto d = b->get_document(p, "obs", "x");
  REQUIRE(d.ok());
  REQUIRE(d->heads.size() == 2);
  auto winner_kind = json::parse(*d->body).at("kind").as_string();
  for (const char* kind : {"bird", "bat", "moth"})
    CHECK(obs_where(*b, p, "kind", "\"" + std::string(kind) + "\"").docs.size() ==
          (winner_kind == kind ? 1u : 0u));
  // Leaving the project removes its indexes; joining again starts without them.
  auto info = b->get_project(p);
  REQUIRE(info.ok());
  auto secret = b->project_secret(p);
  REQUIRE(secret.ok());
  REQUIRE(b->leave_project(p).ok());
  REQUIRE(b->add_project(*info, *secret).ok());
  auto ix = b->indexes(p);
  REQUIRE(ix.ok());
  CHECK(ix->empty());
}

TEST_CASE("index declarations: checks, idempotence, limits, drop", "[storage][index]") {
  TempDir dir;
  StoreOptions o;
  o.max_indexes = 2;
  auto s = open_store(dir.path(), o);
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  auto bad = [&](IndexSpec spec) {
    auto r = s->create_index(p->id, spec);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
  };
  bad({"has space", "obs", {"a"}});
  bad({"", "obs", {"a"}});
  bad({"i", "_members", {"a"}});
  bad({"i", "obs", {}});
  bad({"i", "obs", {"a", "a"}});
  bad({"i", "obs", {"a..b"}});
  bad({"i", "obs", {"a", "b", "c", "d", "e", "f", "g", "h", "i"}});
  REQUIRE(s->create_index(p->id, {"one", "obs", {"a"}}).ok());
  CHECK(s->create_index(p->id, {"one", "obs", {"a"}}).ok());  // the same again: nothing changes
  auto clash = s->create_index(p->id, {"one", "obs", {"b"}});
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error().code == Errc::already_exists);
  REQUIRE(s->create_index(p->id, {"two", "obs", {"b"}}).ok());
  auto full = s->create_index(p->id, {"three", "obs", {"c"}});
  REQUIRE_FALSE(full.ok());
  CHECK(full.error().code == Errc::failed_precondition);
  REQUIRE(s->drop_index(p->id, "one").ok());
  CHECK(s->drop_index(p->id, "one").error().code == Errc::not_found);
  CHECK(s->create_index(p->id, {"three", "obs", {"c"}}).ok());
}

TEST_CASE("an index is built over held documents while writes go on, and after a restart",
          "[storage][index]") {
  TempDir dir;
  ProjectId p;
  {
    auto s = open_store(dir.path());
    auto info = s->create_project("survey");
    REQUIRE(info.ok());
    p = info->id;
    std::vector<WriteRequest> batch;
    for (int i = 0; i < 3000; ++i)
      batch.push_back(
          put("obs", "d" + std::to_string(i), "{\"v\":" + std::to_string(i % 10) + "}"));
    REQUIRE(s->write_batch(p, batch).ok());
    REQUIRE(s->create_index(p, {"by_v", "obs", {"v"}}).ok());
    // Writes while it builds: documents ahead of and behind the builder.
    REQUIRE(s->write(p, put("obs", "d0", R"({"v":42})")).ok());
    REQUIRE(s->write(p, put("obs", "d2999", R"({"v":42})")).ok());
    // Closed at once: the build goes on at the next open.
  }
  auto s = open_store(dir.path());
  wait_ready(*s, p);
  auto r = obs_where(*s, p, "v", "42");
  CHECK(r.plan.index == "by_v");
  REQUIRE(r.docs.size() == 2);
  CHECK(r.docs[0].doc_id == "d0");
  CHECK(r.docs[1].doc_id == "d2999");
  r = obs_where(*s, p, "v", "3");
  CHECK(r.docs.size() == 100);
  CHECK(r.next.empty() == false);
  auto ix = s->indexes(p);
  REQUIRE(ix.ok());
  CHECK(ix->at(0).entries == 3000);
}

TEST_CASE("indexes are built again after a daemon that does not keep them wrote to the store",
          "[storage][index]") {
  TempDir dir;
  ProjectId p;
  {
    auto s = open_store(dir.path());
    auto info = s->create_project("survey");
    REQUIRE(info.ok());
    p = info->id;
    REQUIRE(s->create_index(p, {"by_v", "obs", {"v"}}).ok());
    wait_ready(*s, p);
    REQUIRE(s->write(p, put("obs", "a", R"({"v":1})")).ok());
  }
  {
    // What an older daemon leaves: a document written without its index entry, and the
    // project's changes seq moved past what the indexes were kept up to.
    auto s = open_store(dir.path());
    REQUIRE(s->write(p, put("obs", "b", R"({"v":1})")).ok());
  }
  {
    auto env = LmdbEnv::open(dir.path() / "db", 1ull << 30, false);
    REQUIRE(env.ok());
    auto txn = LmdbTxn::begin(**env, true);
    REQUIRE(txn.ok());
    Key entries;
    entries.raw(p.view());
    REQUIRE(delete_prefix(*txn, (*env)->tables().indexes, entries).ok());
    Key through;
    through.u8('J').raw(p.view());
    Bytes stale;
    ByteWriter(stale).u64(1);
    REQUIRE(txn->put((*env)->tables().meta, through, stale).ok());
    REQUIRE(txn->commit().ok());
  }
  auto s = open_store(dir.path());
  wait_ready(*s, p);
  auto r = obs_where(*s, p, "v", "1");
  CHECK(r.plan.index == "by_v");
  REQUIRE(r.docs.size() == 2);
  CHECK(r.docs[1].doc_id == "b");
}

TEST_CASE("a number finds the documents that hold its very text, through an index and by a scan",
          "[storage][index]") {
  // Numbers with 17 significant digits, as %.17g and many JSON writers print doubles. The
  // JSON parser alone reads some of them to a neighbouring double depending on the text that
  // follows them, which is not the same in a document and in a query.
  TempDir dir;
  auto s = open_store(dir.path());
  auto p = s->create_project("survey");
  REQUIRE(p.ok());
  REQUIRE(s->create_index(p->id, {"by_a", "ix", {"a"}}).ok());
  wait_ready(*s, p->id);
  const std::vector<std::string> numbers = {"0.30000000000000004", "22.22222222222222222",
                                            "4.3498985700011654e-05", "-117.25000000000001",
                                            "51.508415000000002"};
  for (std::size_t i = 0; i < numbers.size(); ++i)
    for (const char* coll : {"ix", "plain"})
      REQUIRE(s->write(p->id, put(coll, "d" + std::to_string(i),
                                  "{\"a\":" + numbers[i] + ",\"label\":\"site " +
                                      std::to_string(i) + "\",\"n\":" + std::to_string(i) + "}"))
                  .ok());
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    INFO(numbers[i]);
    for (const char* coll : {"ix", "plain"}) {
      ListQuery eq;
      eq.collection = coll;
      eq.selector = selector("{\"eq\":{\"path\":\"a\",\"value\":" + numbers[i] + "}}");
      CHECK(all_ids(*s, p->id, eq, nullptr) == std::vector<std::string>{"d" + std::to_string(i)});
      ListQuery where;
      where.collection = coll;
      where.filters.push_back({"a", numbers[i]});
      CHECK(all_ids(*s, p->id, where, nullptr) ==
            std::vector<std::string>{"d" + std::to_string(i)});
    }
  }
}
