#include <catch2/catch.hpp>

#include "common/encoding.hpp"
#include "storage/records.hpp"
#include "storage/version_codec.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::add_to;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::shared_project;
using fieldsync::test::TempDir;

TEST_CASE("versions keep their ids and bodies across devices", "[storage][log]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  auto w = a->write(p, put("obs", "x", R"({"n":1})"));
  REQUIRE(w.ok());
  CHECK(copy_logs(*a, *b, p) == 1);
  auto va = a->get_version(p, "obs", "x", w->version);
  auto vb = b->get_version(p, "obs", "x", w->version);
  REQUIRE(vb.ok());
  CHECK(vb->id == va->id);
  CHECK(encode_header(vb->header) == encode_header(va->header));
  CHECK(version_id_of(encode_header(vb->header)) == w->version);
  CHECK(*vb->body == R"({"n":1})");
  CHECK(b->version_vector(p).value() == a->version_vector(p).value());
  auto ch = b->changes_since(p, 0, 10);
  REQUIRE(ch->size() == 1);
  CHECK_FALSE((*ch)[0].local);
}

TEST_CASE("concurrent edits converge to the same heads and winner", "[storage][log]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  auto base = a->write(p, put("obs", "x", R"({"n":1,"m":1})"));
  REQUIRE(base.ok());
  copy_logs(*a, *b, p);
  auto ua = put("obs", "x", R"({"n":2,"m":1})");
  ua.parents = {base->version};
  auto ub = put("obs", "x", R"({"n":1,"m":7})");
  ub.parents = {base->version};
  REQUIRE(a->write(p, ua).ok());
  REQUIRE(b->write(p, ub).ok());
  copy_logs(*a, *b, p);
  copy_logs(*b, *a, p);
  auto xa = a->get_document(p, "obs", "x");
  auto xb = b->get_document(p, "obs", "x");
  REQUIRE(xa.ok());
  REQUIRE(xb.ok());
  CHECK(xa->heads.size() == 2);
  CHECK(xa->heads == xb->heads);
  CHECK(xa->winner == xb->winner);
  CHECK(a->merge_heads(p, "obs", "x")->body == b->merge_heads(p, "obs", "x")->body);
  CHECK(a->version_vector(p).value() == b->version_vector(p).value());
}

TEST_CASE("relayed logs converge three devices that never all meet", "[storage][log]") {
  TempDir da, db, dc;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto c = open_store(dc.path());
  auto p = shared_project(*a, *b);
  REQUIRE(c->add_project(*a->get_project(p), *a->project_secret(p)).ok());
  REQUIRE(a->write(p, put("obs", "from-a", "{}")).ok());
  REQUIRE(c->write(p, put("obs", "from-c", "{}")).ok());
  copy_logs(*a, *b, p);
  copy_logs(*c, *b, p);
  copy_logs(*b, *a, p);
  copy_logs(*b, *c, p);
  CHECK(a->get_document(p, "obs", "from-c").ok());
  CHECK(c->get_document(p, "obs", "from-a").ok());
  // Arriving twice (by two paths) applies nothing twice.
  CHECK(copy_logs(*a, *c, p) == 0);
  CHECK(c->last_change_seq(p).value() == 2);
}

TEST_CASE("out-of-order authors still give the right heads", "[storage][log]") {
  // B edits A's version; C receives B's log before A's.
  TempDir da, db, dc;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto c = open_store(dc.path());
  auto p = shared_project(*a, *b);
  REQUIRE(c->add_project(*a->get_project(p), *a->project_secret(p)).ok());
  auto w = a->write(p, put("obs", "x", R"({"v":1})"));
  copy_logs(*a, *b, p);
  auto u = put("obs", "x", R"({"v":2})");
  u.parents = {w->version};
  auto wb = b->write(p, u);
  REQUIRE(wb.ok());
  auto bl = b->read_log(p, b->device_id(), 0, 100, 1 << 20);
  REQUIRE(bl.ok());
  REQUIRE(c->apply_log(p, *bl).ok());
  auto al = a->read_log(p, a->device_id(), 0, 100, 1 << 20);
  REQUIRE(c->apply_log(p, *al).ok());
  auto d = c->get_document(p, "obs", "x");
  REQUIRE(d.ok());
  CHECK(d->heads == std::vector<VersionId>{wb->version});
}

TEST_CASE("read_log cuts batches at signed checkpoints", "[storage][log]") {
  TempDir da, db;
  StoreOptions o;
  o.checkpoint_interval = 16;
  auto a = open_store(da.path(), o);
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  for (int i = 0; i < 50; ++i) REQUIRE(a->write(p, put("obs", "d" + std::to_string(i), "{}")).ok());
  auto b1 = a->read_log(p, a->device_id(), 0, 20, 1 << 20);
  REQUIRE(b1.ok());
  CHECK(b1->entries.size() == 16);
  CHECK(b1->checkpoints.back().seq == 16);
  auto b2 = a->read_log(p, a->device_id(), 48, 20, 1 << 20);  // head 50 is signed lazily
  REQUIRE(b2.ok());
  CHECK(b2->entries.size() == 2);
  CHECK(b2->checkpoints.back().seq == 50);
  // Tiny limits still make progress: up to the next checkpoint.
  auto b3 = a->read_log(p, a->device_id(), 16, 1, 1);
  REQUIRE(b3.ok());
  CHECK(b3->entries.size() == 16);
  CHECK(copy_logs(*a, *b, p, 7) == 50);
  CHECK(b->version_vector(p)->at(a->device_id()) == 50);
}

namespace {

struct Tamper {
  TempDir da, db;
  std::unique_ptr<Store> a = open_store(da.path());
  std::unique_ptr<Store> b = open_store(db.path());
  ProjectId p = shared_project(*a, *b);
  LogBatch batch;
  Tamper() {
    for (int i = 0; i < 5; ++i)
      REQUIRE(a->write(p, put("obs", "d" + std::to_string(i), R"({"n":1})")).ok());
    auto r = a->read_log(p, a->device_id(), 0, 100, 1 << 20);
    REQUIRE(r.ok());
    batch = *r;
  }
  // Checked both ways, with the same answer: ahead of the transaction (prepare_log, as
  // sessions and bundles do) and while applying.
  Errc apply() {
    auto prepared = b->prepare_log(p, batch);
    auto ahead = b->apply_log(p, batch, ApplyOptions{}, prepared);
    auto r = b->apply_log(p, batch);
    CHECK(ahead.ok() == r.ok());
    if (!ahead.ok() && !r.ok()) CHECK(ahead.error().message == r.error().message);
    if (r.ok()) return Errc::ok;
    return r.error().code;
  }
  void unchanged() {
    CHECK(b->version_vector(p)->empty());
    CHECK(b->last_change_seq(p).value() == 0);
  }
};

}  // namespace

TEST_CASE("tampered logs are rejected and nothing is applied", "[storage][log]") {
  SECTION("changed body") {
    Tamper t;
    t.batch.entries[2].body = R"({"n":2})";
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("changed header") {
    Tamper t;
    t.batch.entries[1].header.back() ^= 1;
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("re-hashed header breaks the chain") {
    Tamper t;
    auto h = decode_header(t.batch.entries[1].header).value();
    h.schema = 99;
    t.batch.entries[1].header = encode_header(h);
    t.batch.entries[1].id = version_id_of(t.batch.entries[1].header);
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("bad signature") {
    Tamper t;
    t.batch.checkpoints.back().signature[0] ^= 1;
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("dropped entry") {
    Tamper t;
    t.batch.entries.erase(t.batch.entries.begin() + 2);
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("unsigned tail") {
    Tamper t;
    t.batch.checkpoints.clear();
    CHECK(t.apply() == Errc::verification_failed);
    t.unchanged();
  }
  SECTION("forged author: a relay re-signs another device's versions") {
    Tamper t;
    TempDir dm;
    auto mallory = open_store(dm.path());
    // Mallory presents A's versions as its own log, signed with its own key.
    LogBatch forged = t.batch;
    forged.author = mallory->device_id();
    crypto::Digest chain = chain_genesis(t.p, forged.author);
    for (auto& e : forged.entries) chain = chain_next(chain, e.seq, e.id);
    forged.checkpoints = {Checkpoint{
        5, chain, mallory->signing_key().sign(checkpoint_message(t.p, forged.author, 5, chain)),
        std::nullopt}};
    auto r = t.b->apply_log(t.p, forged);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::verification_failed);
    CHECK(r.error().message.find("another author") != std::string::npos);
    t.unchanged();
  }
  SECTION("untampered applies") {
    Tamper t;
    CHECK(t.apply() == Errc::ok);
    CHECK(t.b->version_vector(t.p)->at(t.a->device_id()) == 5);
  }
}

TEST_CASE("version vectors tell exactly what is missing", "[storage][log]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto p = shared_project(*a, *b);
  for (int i = 0; i < 10; ++i) REQUIRE(a->write(p, put("obs", "d" + std::to_string(i), "{}")).ok());
  copy_logs(*a, *b, p);
  for (int i = 10; i < 13; ++i)
    REQUIRE(a->write(p, put("obs", "d" + std::to_string(i), "{}")).ok());
  auto theirs = b->version_vector(p).value();
  CHECK(theirs.at(a->device_id()) == 10);
  auto batch = a->read_log(p, a->device_id(), theirs.at(a->device_id()), 100, 1 << 20);
  REQUIRE(batch.ok());
  REQUIRE(batch->entries.size() == 3);
  CHECK(batch->entries.front().seq == 11);
  CHECK(b->apply_log(p, *batch)->applied == 3);
  // Overlapping batches count duplicates instead of failing.
  auto all = a->read_log(p, a->device_id(), 0, 100, 1 << 20);
  auto r = b->apply_log(p, *all);
  REQUIRE(r.ok());
  CHECK(r->applied == 0);
  CHECK(r->duplicates == 13);
}

TEST_CASE("purged versions relay as headers and are not fetched again", "[storage][log]") {
  TempDir da, db, dc;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  auto c = open_store(dc.path());
  auto p = shared_project(*a, *b);
  REQUIRE(c->add_project(*a->get_project(p), *a->project_secret(p)).ok());
  REQUIRE(a->write(p, put("obs", "x", R"({"photo":"big"})")).ok());
  copy_logs(*a, *b, p);
  REQUIRE(b->purge_document(p, "obs", "x").ok());
  copy_logs(*b, *c, p);  // B relays A's log without the body
  auto d = c->get_document(p, "obs", "x");
  REQUIRE(d.ok());
  CHECK_FALSE(d->body);
  CHECK(c->version_vector(p)->at(a->device_id()) == 1);
  CHECK(copy_logs(*a, *b, p) == 0);  // B does not fetch the purged version again
  CHECK_FALSE(b->get_document(p, "obs", "x")->body);
}

TEST_CASE("ids and codecs", "[common]") {
  TempDir d;
  auto s = open_store(d.path());
  auto text = s->device_id().str();
  CHECK(text.size() == 52);
  CHECK(DeviceId::parse(text) == s->device_id());
  CHECK_FALSE(DeviceId::parse(text.substr(1)));
  CHECK(s->device_id().short_str().size() == 19);
  auto p = s->create_project("x");
  CHECK(ProjectId::parse(p->id.str()) == p->id);
  REQUIRE(s->list_projects()->size() == 1);
  CHECK(s->list_projects()->front().name == "x");
  CHECK_FALSE(ProjectId::parse("zz"));
  CHECK(from_base32(to_base32(as_bytes("hello"))) == Bytes{'h', 'e', 'l', 'l', 'o'});
}

TEST_CASE("run roots and paths: every id of a run proves against the root", "[storage][log]") {
  std::vector<VersionId> ids;
  for (int n = 1; n <= 40; ++n) {
    VersionId v;
    v.bytes = crypto::sha256(as_bytes(std::to_string(n)));
    ids.push_back(v);
    std::span<const VersionId> run(ids);
    auto root = run_root(run);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto path = run_path(run, i);
      CHECK(run_path_ok(ids[i], i, ids.size(), path, root));
      // Another position, a path longer or shorter than the run's shape, another id or another
      // root: refused. (The run's size comes from the seal, which the author signs.)
      CHECK_FALSE(run_path_ok(ids[i], (i + 1) % ids.size() + (n == 1), ids.size(), path, root));
      auto longer = path;
      longer.push_back(root);
      CHECK_FALSE(run_path_ok(ids[i], i, ids.size(), longer, root));
      if (!path.empty())
        CHECK_FALSE(
            run_path_ok(ids[i], i, ids.size(), std::span(path).first(path.size() - 1), root));
      if (n > 1) CHECK_FALSE(run_path_ok(ids[(i + 1) % ids.size()], i, ids.size(), path, root));
      auto other = root;
      other[0] ^= 1;
      CHECK_FALSE(run_path_ok(ids[i], i, ids.size(), path, other));
    }
  }
  // The shape of RFC 9162's tree: a run of three is ((a, b), c), and one id is its own root.
  auto node = [](const crypto::Digest& l, const crypto::Digest& r) {
    std::uint8_t one = 1;
    return crypto::sha256({ByteView(&one, 1), ByteView(l), ByteView(r)});
  };
  std::span<const VersionId> three(ids.data(), 3);
  CHECK(run_root(three) == node(node(ids[0].bytes, ids[1].bytes), ids[2].bytes));
  CHECK(run_root(std::span<const VersionId>(ids.data(), 1)) == ids[0].bytes);
}

namespace {

// Checks every checkpoint's seal of `author`'s log as `s` holds it: present, from the previous
// checkpoint, the root of the ids in between, signed by the author.
void check_seals(Store& s, const ProjectId& p, const DeviceId& author,
                 const std::vector<std::uint64_t>& expect) {
  auto log = s.read_log(p, author, 0, 100000, 1ull << 30);
  REQUIRE(log.ok());
  std::vector<std::uint64_t> at;
  std::uint64_t from = 0;
  for (const auto& c : log->checkpoints) {
    at.push_back(c.seq);
    INFO("checkpoint " << c.seq);
    REQUIRE(c.seal.has_value());
    CHECK(c.seal->from == from);
    std::vector<VersionId> ids;
    for (const auto& e : log->entries)
      if (e.seq > from && e.seq <= c.seq) ids.push_back(e.id);
    CHECK(c.seal->root == run_root(ids));
    CHECK(crypto::verify(author, seal_message(p, author, c.seq, c.chain, from, c.seal->root),
                         c.seal->signature));
    from = c.seq;
  }
  CHECK(at == expect);
}

}  // namespace

TEST_CASE("checkpoints seal their runs, and the seals travel with the log", "[storage][log]") {
  TempDir da, db, dc;
  StoreOptions o;
  o.checkpoint_interval = 16;
  auto a = open_store(da.path(), o);
  auto b = open_store(db.path());
  auto c = open_store(dc.path());
  auto p = shared_project(*a, *b);
  add_to(*c, *a, p);
  for (int i = 0; i < 20; ++i) REQUIRE(a->write(p, put("obs", "d" + std::to_string(i), "{}")).ok());
  std::vector<WriteRequest> many;
  for (int i = 20; i < 45; ++i) many.push_back(put("obs", "d" + std::to_string(i), "{}"));
  REQUIRE(a->write_batch(p, many).ok());
  // Written: 16 and 32 with the writes; 45, the head, when the log is first read for a peer.
  check_seals(*a, p, a->device_id(), {16, 32, 45});
  CHECK(copy_logs(*a, *b, p, 7) == 45);
  check_seals(*b, p, a->device_id(), {16, 32, 45});
  CHECK(copy_logs(*b, *c, p) == 45);  // relayed
  check_seals(*c, p, a->device_id(), {16, 32, 45});

  // D, a fresh member, and A's first run (1..16) as A gives it.
  TempDir dd;
  auto d = open_store(dd.path());
  add_to(*d, *a, p);
  auto log = a->read_log(p, a->device_id(), 0, 20, 1 << 20);
  REQUIRE(log.ok());
  REQUIRE(log->checkpoints.back().seq == 16);
  auto& sl = *log->checkpoints.back().seal;
  SECTION("a seal that is not the author's, or not of the run, fails the batch") {
    std::string says = "seal at seq 16: bad signature";
    SECTION("another root") { sl.root[3] ^= 1; }
    SECTION("another start") { sl.from = 1; }
    SECTION("another signature") { sl.signature[0] ^= 1; }
    SECTION("the root of another order, signed by the author") {
      std::vector<VersionId> ids;
      for (const auto& e : log->entries) ids.push_back(e.id);
      std::swap(ids[0], ids[1]);
      sl.root = run_root(ids);
      sl.signature = a->signing_key().sign(
          seal_message(p, a->device_id(), 16, log->checkpoints.back().chain, 0, sl.root));
      says = "seal at seq 16: the root is not that of the run";
    }
    // Checked ahead (prepare_log, off the applying thread) or when applied: the same refusal.
    auto prepared = d->prepare_log(p, *log);
    for (bool ahead : {true, false}) {
      auto r = ahead ? d->apply_log(p, *log, ApplyOptions{}, prepared) : d->apply_log(p, *log);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == Errc::verification_failed);
      CHECK(r.error().message.find(says) != std::string::npos);
      CHECK(d->version_vector(p)->count(a->device_id()) == 0);
    }
  }
  SECTION("a checkpoint without its seal (an older relay) is kept without one") {
    log->checkpoints.back().seal.reset();
    REQUIRE(d->apply_log(p, *log).ok());
    auto back = d->read_log(p, a->device_id(), 0, 20, 1 << 20);
    REQUIRE(back.ok());
    REQUIRE(back->checkpoints.size() == 1);
    CHECK_FALSE(back->checkpoints[0].seal.has_value());
  }
}
