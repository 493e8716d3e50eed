// Sessions keep what the peer holds in the store (Store::note_peer_holds): its VV, the batches
// it sent and its ACKs of ours, never what we only offered; it outlives the session and a
// restart, and a session that learns nothing writes nothing.
#include "storage/lmdb_env.hpp"
#include "support/backup_dir.hpp"
#include "sync/messages.hpp"
#include "sync_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

// A device whose store can be closed and opened again (a restart).
struct Dev {
  std::filesystem::path dir;
  std::uint32_t checkpoint_interval;
  std::unique_ptr<storage::Store> store;

  explicit Dev(std::filesystem::path d, std::uint32_t interval = 256)
      : dir(std::move(d)), checkpoint_interval(interval) {
    open();
  }
  void open() {
    storage::StoreOptions o;
    o.data_dir = dir;
    o.durable = false;
    o.map_size_bytes = 1ull << 30;
    o.checkpoint_interval = checkpoint_interval;
    auto s = storage::Store::open(o);
    REQUIRE(s.ok());
    store = std::move(*s);
  }
  void restart() {
    store.reset();
    open();
  }
  DeviceId id() const { return store->device_id(); }
  storage::VersionVector vv(const ProjectId& p) const {
    auto v = store->version_vector(p);
    REQUIRE(v.ok());
    return *v;
  }
  storage::VersionVector holds(const Dev& peer, const ProjectId& p) const {
    auto v = store->peer_holds(peer.id(), p);
    REQUIRE(v.ok());
    return *v;
  }
  storage::LackSummary lacks(const Dev& peer, const ProjectId& p) const {
    auto v = store->peer_lacks(peer.id(), p);
    REQUIRE(v.ok());
    return *v;
  }
  void write_docs(const ProjectId& p, int start, int n) {
    std::vector<storage::WriteRequest> reqs;
    for (int i = 0; i < n; ++i) {
      storage::WriteRequest r;
      r.collection = "obs";
      r.doc_id = "d" + std::to_string(start + i);
      r.body = R"({"n":)" + std::to_string(start + i) + "}";
      r.use_current = true;
      reqs.push_back(std::move(r));
    }
    REQUIRE(store->write_batch(p, reqs).ok());
  }
  // The id of the last committed LMDB write transaction (the store must be closed).
  std::uint64_t last_txn() const {
    REQUIRE(!store);
    auto env = storage::LmdbEnv::open(dir / "db", 1ull << 30, false);
    REQUIRE(env.ok());
    MDB_envinfo info{};
    REQUIRE(mdb_env_info((*env)->raw(), &info) == 0);
    return info.me_last_txnid;
  }
};

ProjectId share(Dev& a, Dev& b) {
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  REQUIRE(b.store->add_project(*p, *a.store->project_secret(p->id)).ok());
  return p->id;
}

SessionOptions small_batches() {
  SessionOptions o;
  o.batch_entries = 50;
  o.window_batches = 2;
  return o;
}

void sync_once(Dev& a, Dev& b, SessionOptions o = {}) {
  Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb};
  pipe.run();
  REQUIRE(sa.in_sync());
  REQUIRE(sb.in_sync());
}

std::vector<std::pair<std::uint8_t, Bytes>> frames_of(const Bytes& bytes) {
  FrameDecoder d(64u << 20);
  d.feed(bytes);
  std::vector<std::pair<std::uint8_t, Bytes>> out;
  for (;;) {
    auto f = d.next();
    REQUIRE(f.ok());
    if (!*f) break;
    out.emplace_back((*f)->type, Bytes((*f)->payload.begin(), (*f)->payload.end()));
  }
  return out;
}

}  // namespace

TEST_CASE("after a sync each store knows what the peer holds, also after a restart",
          "[sync][peer_holds]") {
  TempDir t;
  Dev a(t.path / "a"), b(t.path / "b");
  ProjectId p = share(a, b);
  a.write_docs(p, 0, 300);
  b.write_docs(p, 1000, 40);
  CHECK_FALSE(a.lacks(b, p).known);
  CHECK(a.lacks(b, p).entries == 300);

  sync_once(a, b, small_batches());
  REQUIRE(a.vv(p) == b.vv(p));
  CHECK(a.holds(b, p) == b.vv(p));  // b's own log from its VV, a's from its ACKs
  CHECK(b.holds(a, p) == a.vv(p));  // a's log from the batches a sent
  CHECK(a.lacks(b, p).known);
  CHECK(a.lacks(b, p).entries == 0);
  CHECK(a.lacks(b, p).bytes == 0);
  CHECK(b.lacks(a, p).entries == 0);

  // Later writes, no connection: what b lacks is known here, and stays right across a restart.
  a.write_docs(p, 2000, 25);
  a.restart();
  auto lack = a.lacks(b, p);
  CHECK(lack.known);
  CHECK(lack.entries == 25);
  CHECK(lack.authors == 1);
  CHECK(lack.bytes > 25 * 8);
  b.restart();
  CHECK(b.holds(a, p) == storage::VersionVector{{a.id(), 300}, {b.id(), 40}});
  CHECK(b.lacks(a, p).entries == 0);  // b does not know of the new writes: nothing a lacks

  // The next session brings b up to date and both records with it.
  sync_once(a, b);
  CHECK(a.holds(b, p) == a.vv(p));
  CHECK(a.lacks(b, p).entries == 0);
}

TEST_CASE("batches only sent are not held: the peer's VV and its ACKs are", "[sync][peer_holds]") {
  TempDir t;
  Dev a(t.path / "a", 10), b(t.path / "b");
  ProjectId p = share(a, b);
  a.write_docs(p, 0, 120);
  b.write_docs(p, 500, 3);
  Session s(*a.store, params("a", small_batches()));
  s.start();
  (void)s.take_output(1 << 20);
  // b plays the peer by hand: HELLO, PROJECTS, VV naming b's own 3 entries and nothing of a's.
  Bytes in;
  Hello h;
  h.device = b.id();
  h.device_name = "b";
  encode_hello(in, h);
  auto secret = b.store->project_secret(p);
  REQUIRE(secret.ok());
  encode_projects(in, Projects{{membership_proof(*secret, Bytes(32, 0x42), b.id())}});
  encode_vector(in, MsgType::vv, VectorMsg{p, {{b.id(), 3}, {a.id(), 0}}});
  s.receive(in);
  REQUIRE(s.state() == SessionState::active);
  // Not one of the project's authors here yet: b's log is not held by a, nothing is kept.
  CHECK(a.holds(b, p).empty());

  // a offers its log: two batches in flight (window 2), none acknowledged.
  std::vector<std::uint64_t> ends;
  for (auto& [type, payload] : frames_of(s.take_output(1 << 20))) {
    if (type != static_cast<std::uint8_t>(MsgType::batch)) continue;
    auto m = decode_batch(payload, DecodeLimits{});
    REQUIRE(m.ok());
    ends.push_back(m->log.entries.back().seq);
  }
  REQUIRE(ends.size() == 2);
  CHECK(a.holds(b, p).empty());  // what was only sent is not held

  // b acknowledges the first batch: held up to its head.
  Bytes ack;
  encode_ack(ack, Ack{p, a.id(), ends[0]});
  s.receive(ack);
  CHECK(a.holds(b, p) == storage::VersionVector{{a.id(), ends[0]}});
  CHECK(a.lacks(b, p).entries == 120 - ends[0]);
  Bytes second;
  encode_ack(second, Ack{p, a.id(), ends[1]});
  s.receive(second);
  CHECK(a.holds(b, p) == storage::VersionVector{{a.id(), ends[1]}});
  // The last batch goes out; an ACK that says less (a peer's late answer) lowers nothing.
  (void)s.take_output(1 << 20);
  CHECK(a.holds(b, p) == storage::VersionVector{{a.id(), ends[1]}});
  Bytes late;
  encode_ack(late, Ack{p, a.id(), 1});
  s.receive(late);
  REQUIRE(s.state() == SessionState::active);
  CHECK(a.holds(b, p) == storage::VersionVector{{a.id(), ends[1]}});
  CHECK(a.lacks(b, p).entries == 120 - ends[1]);
}

TEST_CASE("a session that learns nothing new writes nothing to the store", "[sync][peer_holds]") {
  TempDir t;
  Dev a(t.path / "a"), b(t.path / "b");
  ProjectId p = share(a, b);
  a.write_docs(p, 0, 30);
  b.write_docs(p, 100, 30);
  sync_once(a, b);
  REQUIRE(b.holds(a, p) == a.vv(p));
  auto txns = [&]() {
    a.store.reset();
    b.store.reset();
    auto n = std::pair{a.last_txn(), b.last_txn()};
    a.open();
    b.open();
    return n;
  };
  auto t0 = txns();
  auto t1 = txns();  // a restart alone: the baseline
  sync_once(a, b);   // nothing new on either side
  auto t2 = txns();
  CHECK(t2.first - t1.first == t1.first - t0.first);
  CHECK(t2.second - t1.second == t1.second - t0.second);
  // One new entry: a signs its head for the batch and learns from b's ACK (two writes), b
  // applies the batch and records that a holds it (two writes).
  a.write_docs(p, 0, 1);
  auto t3 = txns();
  sync_once(a, b);
  auto t4 = txns();
  CHECK(t4.first - t3.first == t1.first - t0.first + 2);
  CHECK(t4.second - t3.second == t1.second - t0.second + 2);
  CHECK(b.holds(a, p) == a.vv(p));
  CHECK(a.holds(b, p) == a.vv(p));
}

TEST_CASE("a restored device: the whole log it asks for is recorded only once it has it",
          "[sync][peer_holds]") {
  TempDir t;
  Dev a(t.path / "a"), b(t.path / "b");
  ProjectId p = share(a, b);
  a.write_docs(p, 0, 20);
  sync_once(a, b);
  const DeviceId old = a.id();
  fieldsync::test::write_backup_dir(*a.store, t.path / "restored");
  a.store.reset();
  Dev r(t.path / "restored");  // renewed: `old` is retired and offered at seq 0
  REQUIRE(r.id() != old);
  REQUIRE(r.store->version_tips(p)->at(old).seq == 0);

  // b knew `old` held 20; the restored device's VV offers `old` at 0: nothing is lowered, and
  // what b records for the new identity comes from the restored device's ACKs and batches.
  sync_once(r, b);
  CHECK(r.store->version_tips(p)->at(old).seq == 20);  // the suspect was cleared as before
  CHECK(b.holds(r, p) == r.vv(p));
  CHECK(b.holds(r, p).at(old) == 20);
  CHECK(r.holds(b, p) == b.vv(p));
  CHECK(b.lacks(r, p).entries == 0);
  CHECK(r.lacks(b, p).entries == 0);
}
