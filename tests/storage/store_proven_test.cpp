// Proven runs (docs/storage.md "Proven runs"): a device that wants a few versions of a sealed
// run takes them with their audit paths and holds nothing of the rest of the run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "raw_lmdb.hpp"
#include "storage/records.hpp"
#include "storage/subscription.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::add_to;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::Raw;
using fieldsync::test::shared_project;
using fieldsync::test::TempDir;

namespace {

Subscription districts(const std::string& values) {
  auto s = Subscription::parse(R"({"where":{"in":{"path":"district","values":[)" + values + "]}}}");
  REQUIRE(s.ok());
  return *s;
}

void write_docs(Store& s, const ProjectId& p, int start, int n) {
  std::vector<WriteRequest> reqs;
  for (int i = start; i < start + n; ++i)
    reqs.push_back(
        put("obs", "d" + std::to_string(i),
            R"({"district":)" + std::to_string(i % 10) + R"(,"n":)" + std::to_string(i) + "}"));
  REQUIRE(s.write_batch(p, reqs).ok());
}

std::set<std::string> doc_ids(Store& s, const ProjectId& p) {
  ListQuery q;
  q.collection = "obs";
  q.limit = 100000;
  auto page = s.list_documents(p, q);
  REQUIRE(page.ok());
  std::set<std::string> out;
  for (const auto& d : page->docs) out.insert(d.doc_id);
  return out;
}

std::set<std::string> expected(int n, std::set<int> ds) {
  std::set<std::string> out;
  for (int i = 0; i < n; ++i)
    if (ds.count(i % 10)) out.insert("d" + std::to_string(i));
  return out;
}

struct Given {
  std::size_t entries = 0, proven = 0, checkpoints = 0;
};

// `author`'s log from `from` to `to` as a session gives it to a device that wants `want` and
// takes proven runs: from what `to` asks for (its request vector) to `from`'s head.
Given give(Store& from, Store& to, const ProjectId& p, const DeviceId& author,
           const Subscription& want, bool proven_ok = true) {
  Given out;
  auto asked = to.request_vector(p);
  REQUIRE(asked.ok());
  std::uint64_t at = asked->count(author) ? asked->at(author) : 0;
  for (;;) {
    auto b = from.read_log(p, author, at, 1000, 1u << 30, LogFilter{want, true, proven_ok});
    REQUIRE(b.ok());
    if (b->empty()) break;
    out.entries += b->entries.size();
    for (const auto& e : b->entries) out.proven += e.proven;
    out.checkpoints += b->checkpoints.size();
    auto r = to.apply_log(p, *b, ApplyOptions{}, to.prepare_log(p, *b));
    INFO((r.ok() ? std::string() : r.error().message));
    REQUIRE(r.ok());
    at = b->last_seq();
  }
  return out;
}

// The log records `dir`'s store holds of `author` (the store closed): seq, and whether proven.
std::vector<std::pair<std::uint64_t, bool>> records(const std::filesystem::path& dir,
                                                    const ProjectId& p, const DeviceId& author) {
  Raw raw(dir);
  std::vector<std::pair<std::uint64_t, bool>> out;
  Key prefix = author_key(p, author);
  for (const auto& [k, v] : raw.scan(raw.t().logs, prefix.b)) {
    auto lr = LogRecord::decode_stored(v);
    REQUIRE(lr.has_value());
    out.emplace_back(ByteReader(ByteView(k).subspan(prefix.b.size())).u64(), lr->proven);
  }
  return out;
}

StoreOptions runs_of_64() {
  StoreOptions o;
  o.checkpoint_interval = 64;
  return o;
}

}  // namespace

TEST_CASE("a device that wants a few versions of a run takes them proven, and no more",
          "[storage][log][proven]") {
  TempDir da, db, dc, dd;
  auto a = open_store(da.path(), runs_of_64());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  const DeviceId author = a->device_id();
  write_docs(*a, p, 0, 640);  // ten runs of 64, a tenth of each in district 7
  REQUIRE(b->set_subscription(p, districts("7")).ok());
  auto g = give(*a, *b, p, author, districts("7"));
  CHECK(g.entries == 64);
  CHECK(g.proven == 64);
  CHECK(g.checkpoints == 10);
  CHECK(doc_ids(*b, p) == expected(640, {7}));
  CHECK(b->version_vector(p)->at(author) == 640);
  // It does not pose as holding the rest: whole up to nothing, and the log is given to no
  // device that wants more than it holds.
  CHECK(b->whole_heads(p)->at(author) == 0);
  CHECK(b->read_log(p, author, 0, 1000, 1u << 30)->empty());
  CHECK(b->read_log(p, author, 0, 1000, 1u << 30, LogFilter{Subscription{}, true, true})->empty());
  CHECK(b->read_log(p, author, 0, 1000, 1u << 30, LogFilter{districts("7"), true, false})->empty());

  // Relayed to a device that wants the same or less: proven again, with the paths held.
  auto c = open_store(dc.path());
  add_to(*c, *a, p);
  REQUIRE(c->set_subscription(p, districts("7")).ok());
  auto g2 = give(*b, *c, p, author, districts("7"));
  CHECK(g2.proven == 64);
  CHECK(doc_ids(*c, p) == expected(640, {7}));
  CHECK(c->version_vector(p)->at(author) == 640);

  // A later write arrives the same way.
  write_docs(*a, p, 640, 64);
  CHECK(give(*a, *b, p, author, districts("7")).proven == 6);
  CHECK(doc_ids(*b, p) == expected(704, {7}));

  b.reset();
  auto held = records(db.path(), p, author);
  CHECK(held.size() == 70);  // the wanted versions only
  CHECK(std::all_of(held.begin(), held.end(), [](const auto& r) { return r.second; }));
}

TEST_CASE("runs with nothing wanted are checkpoints alone, as many as the batch's bytes allow",
          "[storage][log][proven]") {
  TempDir da, db;
  auto a = open_store(da.path(), runs_of_64());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  const DeviceId author = a->device_id();
  write_docs(*a, p, 0, 64 * 40);
  const Subscription none = districts("11");
  REQUIRE(b->set_subscription(p, none).ok());
  auto log = a->read_log(p, author, 0, 1000, 2000, LogFilter{none, true, true});
  REQUIRE(log.ok());
  CHECK(log->entries.empty());
  CHECK(log->checkpoints.size() == 9);  // 2,000 bytes: the first, and 8 more of 209
  REQUIRE(b->apply_log(p, *log).ok());
  CHECK(b->version_vector(p)->at(author) == 64 * 9);
  auto g = give(*a, *b, p, author, none);
  CHECK(g.entries == 0);
  CHECK(g.checkpoints == 31);
  CHECK(b->version_vector(p)->at(author) == 64 * 40);
  CHECK(doc_ids(*b, p).empty());
}

TEST_CASE(
    "widening takes the newly wanted versions into proven runs, and a run held whole is "
    "chained again",
    "[storage][log][proven]") {
  TempDir da, db, dd;
  auto a = open_store(da.path(), runs_of_64());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  const DeviceId author = a->device_id();
  write_docs(*a, p, 0, 640);
  REQUIRE(b->set_subscription(p, districts("7")).ok());
  give(*a, *b, p, author, districts("7"));

  SECTION("wider: more proven entries") {
    auto ch = b->set_subscription(p, districts("3,7"));
    REQUIRE(ch.ok());
    CHECK(ch->asks_again);
    CHECK(b->request_vector(p)->at(author) == 0);  // asked again from the first run
    auto g = give(*a, *b, p, author, districts("3,7"));
    CHECK(g.proven > 0);  // runs where few are wanted (the rest go with left-out ids)
    CHECK(doc_ids(*b, p) == expected(640, {3, 7}));
    CHECK(b->request_vector(p)->at(author) == 640);  // judged again: not asked a third time
    CHECK(b->whole_heads(p)->at(author) == 0);
  }
  SECTION("everything: the runs are whole again, and relayed to a full replica") {
    REQUIRE(b->set_subscription(p, Subscription{}).ok());
    // A full replica gives whole runs: their entries fill the gaps.
    auto g = give(*a, *b, p, author, Subscription{}, false);
    CHECK(g.proven == 0);
    CHECK(doc_ids(*b, p) == expected(640, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    CHECK(b->whole_heads(p)->empty());
    auto d = open_store(dd.path());
    add_to(*d, *a, p);
    CHECK(copy_logs(*b, *d, p) == 640);  // chained: verified from the genesis
    CHECK(doc_ids(*d, p).size() == 640);
    b.reset();
    auto held = records(db.path(), p, author);
    CHECK(held.size() == 640);
    CHECK(std::none_of(held.begin(), held.end(), [](const auto& r) { return r.second; }));
  }
}

TEST_CASE("narrowing leaves proven versions out, and widening again takes them back",
          "[storage][log][proven]") {
  TempDir da, db, dc;
  auto a = open_store(da.path(), runs_of_64());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  const DeviceId author = a->device_id();
  write_docs(*a, p, 0, 640);
  REQUIRE(b->set_subscription(p, districts("3,7")).ok());
  CHECK(give(*a, *b, p, author, districts("3,7")).proven > 0);
  // Narrower as Subscription::within sees it (else b asks again before it gives left-out ids).
  auto seven = Subscription::parse(R"({"where":{"all":[{"in":{"path":"district","values":[3,7]}},)"
                                   R"({"in":{"path":"district","values":[7]}}]}})");
  REQUIRE(seven.ok());
  auto narrow = b->set_subscription(p, *seven);
  REQUIRE(narrow.ok());
  CHECK(narrow->documents_removed == 64);
  CHECK(doc_ids(*b, p) == expected(640, {7}));
  // Relayed to a narrower device: what b holds is still proven.
  auto c = open_store(dc.path());
  add_to(*c, *a, p);
  REQUIRE(c->set_subscription(p, *seven).ok());
  CHECK(give(*b, *c, p, author, *seven).proven > 0);
  CHECK(doc_ids(*c, p) == expected(640, {7}));
  // Wider again: the versions left out come back (b still holds their ids and paths).
  REQUIRE(b->set_subscription(p, districts("3,7")).ok());
  give(*a, *b, p, author, districts("3,7"));
  CHECK(doc_ids(*b, p) == expected(640, {3, 7}));
}

TEST_CASE("a forged proven run fails the batch and nothing is applied", "[storage][log][proven]") {
  TempDir da, db;
  auto a = open_store(da.path(), runs_of_64());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  const DeviceId author = a->device_id();
  write_docs(*a, p, 0, 128);
  REQUIRE(b->set_subscription(p, districts("7")).ok());
  auto log = a->read_log(p, author, 0, 1000, 1u << 30, LogFilter{districts("7"), true, true});
  REQUIRE(log.ok());
  REQUIRE(log->checkpoints.size() == 2);
  REQUIRE(log->entries.size() == 13);
  auto& e = log->entries[2];
  auto& cp = log->checkpoints[0];
  std::string says;
  SECTION("another path") {
    e.path[1][0] ^= 1;
    says = "its path does not lead to the root the author sealed";
  }
  SECTION("the entry at another place of the run") {
    e.seq += 1;
    says = "its path does not lead to the root the author sealed";
  }
  SECTION("a body that is not the version's") {
    e.body = R"({"district":7,"n":9999})";
    says = "body does not match its hash";
  }
  SECTION("no seal") {
    cp.seal.reset();
    says = "no seal of the run from seq 0";
  }
  SECTION("a seal of another run") {
    cp.seal->from = 1;
    says = "no seal of the run from seq 0";
  }
  SECTION("a root the author did not seal") {
    cp.seal->root[0] ^= 1;
    says = "bad seal signature";
  }
  SECTION("a chain the author did not sign") {
    cp.chain[0] ^= 1;
    says = "bad signature at seq 64";
  }
  SECTION("an entry after the last checkpoint") {
    log->checkpoints.pop_back();
    says = "a proven entry after the last checkpoint";
  }
  SECTION("a whole entry inside a proven run") {
    e.proven = false;
    says = "a whole entry inside a proven run";
  }
  SECTION("to a device that holds the whole project") {
    REQUIRE(b->set_subscription(p, Subscription{}).ok());
    says = "holds the whole project";
  }
  auto prepared = b->prepare_log(p, *log);
  for (bool ahead : {true, false}) {
    auto r = ahead ? b->apply_log(p, *log, ApplyOptions{}, prepared) : b->apply_log(p, *log);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::verification_failed);
    INFO(r.error().message);
    CHECK(r.error().message.find(says) != std::string::npos);
    CHECK(b->version_vector(p)->count(author) == 0);
  }
}

TEST_CASE("proven log records keep their path, and a malformed one reads as damage",
          "[storage][log][proven]") {
  BodyCodec codec(0, 0);
  ProjectId p;
  Bytes header{1, 2, 3};
  LogRecord lr{crypto::Digest{}, VersionId{}, header, std::nullopt, false, false};
  lr.id.bytes[0] = 7;
  lr.proven = true;
  lr.path.resize(8);
  lr.path[7][31] = 9;
  std::string body = R"({"district":7})";
  lr.body = as_bytes(body);
  Bytes v = lr.encode(codec, p);
  auto back = LogRecord::decode_stored(v);
  REQUIRE(back.has_value());
  CHECK(back->proven);
  CHECK_FALSE(back->elided);
  CHECK(back->path == lr.path);
  CHECK(back->id == lr.id);
  REQUIRE(back->body.has_value());
  CHECK(as_chars(*back->body) == body);
  // Narrowed: no body, header and path kept.
  lr.body.reset();
  lr.elided = true;
  auto left = LogRecord::decode_stored(lr.encode(codec, p));
  REQUIRE(left.has_value());
  CHECK((left->proven && left->elided && !left->body && left->path == lr.path));
  // Damage: a path longer than any run's, one cut short, an unknown flag.
  Bytes deep = v;
  deep[deep.size() - 8 * 32 - 1] = kMaxRunPath + 1;
  CHECK_FALSE(LogRecord::decode_stored(deep).has_value());
  Bytes cut(v.begin(), v.end() - 1);
  CHECK_FALSE(LogRecord::decode_stored(cut).has_value());
  Bytes flag = v;
  flag[64] |= 32;
  CHECK_FALSE(LogRecord::decode_stored(flag).has_value());
}
