// Peer records (typed, limits on write and on read-back, format 1 JSON converted at open) and
// what each peer is known to hold of each project (merge, lacks, cleanup).
#include <catch2/catch.hpp>

#include <fstream>

#include "raw_lmdb.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/records.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::Raw;
using fieldsync::test::shared_project;
using fieldsync::test::TempDir;

namespace {

DeviceId device(std::uint8_t n) {
  DeviceId d;
  d.bytes.fill(n);
  return d;
}

PeerRecord hub() {
  PeerRecord r;
  r.device = device(7);
  r.name = "hub — north camp";
  r.addresses = {"tcp://10.0.0.5:7891", "tcp://[fe80::1]:7891", "ble://aa:bb:cc:dd:ee:ff"};
  r.approved = true;
  r.added_ms = 1700000000000;
  r.last_seen_ms = 1700000001000;
  return r;
}

void check_same(const PeerRecord& a, const PeerRecord& b) {
  CHECK(a.device == b.device);
  CHECK(a.name == b.name);
  CHECK(a.addresses == b.addresses);
  CHECK(a.approved == b.approved);
  CHECK(a.added_ms == b.added_ms);
  CHECK(a.last_seen_ms == b.last_seen_ms);
}

// Bytes (header + body) of an author's entries (after, upto], as read_log gives them.
std::uint64_t entry_bytes(Store& s, const ProjectId& p, const DeviceId& a, std::uint64_t after,
                          std::uint64_t upto) {
  std::uint64_t n = 0;
  while (after < upto) {
    auto b = s.read_log(p, a, after, 1000, 1ull << 30);
    REQUIRE(b.ok());
    REQUIRE(!b->entries.empty());
    for (const auto& e : b->entries)
      if (e.seq <= upto) n += e.header.size() + (e.body ? e.body->size() : 0);
    after = b->entries.back().seq;
  }
  return n;
}

void write_n(Store& s, const ProjectId& p, int n, const std::string& prefix) {
  for (int i = 0; i < n; ++i)
    REQUIRE(s.write(p, put("obs", prefix + std::to_string(i), R"({"i":)" + std::to_string(i) + "}"))
                .ok());
}

}  // namespace

TEST_CASE("a peer record round-trips every field and survives a reopen", "[storage][peers]") {
  TempDir d;
  {
    auto s = open_store(d.path());
    REQUIRE(s->save_peer(hub()).ok());
    PeerRecord bare;
    bare.device = device(9);
    REQUIRE(s->save_peer(bare).ok());  // no name, no address, never seen
  }
  auto s = open_store(d.path());
  std::vector<PeerProblem> problems;
  auto peers = s->load_peers(&problems);
  REQUIRE(peers.ok());
  CHECK(problems.empty());
  REQUIRE(peers->size() == 2);
  check_same(peers->at(0), hub());
  CHECK(peers->at(1).device == device(9));
  CHECK(peers->at(1).addresses.empty());
  CHECK_FALSE(peers->at(1).approved);

  // Saved again: the first added_ms stays, last_seen_ms never goes back.
  PeerRecord again = hub();
  again.added_ms = 1800000000000;
  again.last_seen_ms = 5;
  again.addresses = {"tcp://10.0.0.6:7891"};
  again.approved = false;
  REQUIRE(s->save_peer(again).ok());
  auto back = s->load_peers()->at(0);
  CHECK(back.added_ms == hub().added_ms);
  CHECK(back.last_seen_ms == hub().last_seen_ms);
  CHECK(back.addresses == again.addresses);
  CHECK_FALSE(back.approved);

  // A session seen later raises last_seen_ms; an earlier one or an unknown device writes nothing.
  REQUIRE(s->note_peer_seen(device(7), 1900000000000).ok());
  REQUIRE(s->note_peer_seen(device(7), 1000).ok());
  REQUIRE(s->note_peer_seen(device(42), 1000).ok());
  CHECK(s->load_peers()->at(0).last_seen_ms == 1900000000000);
  CHECK(s->load_peers()->size() == 2);

  REQUIRE(s->forget_peer(device(7)).ok());
  REQUIRE(s->load_peers()->size() == 1);
  CHECK(s->load_peers()->at(0).device == device(9));
}

TEST_CASE("peer records out of their limits are refused when written", "[storage][peers]") {
  TempDir d;
  auto s = open_store(d.path());
  auto refused = [&](PeerRecord r) {
    auto st = s->save_peer(r);
    INFO(r.name << " " << (r.addresses.empty() ? "" : r.addresses.back()));
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::invalid_argument);
  };
  PeerRecord at_limit = hub();
  at_limit.name = std::string(kMaxPeerNameBytes, 'n');
  at_limit.addresses.clear();
  for (std::size_t i = 0; i < kMaxPeerAddresses; ++i)
    at_limit.addresses.push_back("tcp://h" + std::to_string(i) + ":1");
  at_limit.addresses.back() = "file:///" + std::string(kMaxPeerAddressBytes - 8, 'p');
  REQUIRE(s->save_peer(at_limit).ok());
  check_same(s->load_peers()->at(0), at_limit);

  auto r = at_limit;
  r.name += "n";
  refused(r);
  for (std::string name : {"bad \xff utf-8", "ctrl\x1b[2J", "c1 \xc2\x9b", "over\xc0\xaflong"}) {
    r = hub();
    r.name = name;
    refused(r);
  }
  r = at_limit;
  r.addresses.push_back("tcp://one-more:1");
  refused(r);
  r = at_limit;
  r.addresses.back() += "p";  // one byte over kMaxPeerAddressBytes
  refused(r);
  for (std::string bad : {"10.0.0.5:7891", "TCP://10.0.0.5:7891", "tcp://", "://x", "tcp:/x",
                          "1tcp://x", "tcp://a b", "tcp://a\n", "t_p://x", "tcp://\xff"}) {
    r = hub();
    r.addresses = {bad};
    refused(r);
  }
  r = hub();
  r.addresses = {"tcp://a:1", "tcp://a:1"};
  refused(r);
  r = hub();
  r.added_ms = -1;
  refused(r);
  r = hub();
  r.last_seen_ms = -5;
  refused(r);
  r = hub();
  r.device = DeviceId{};
  refused(r);
  r = hub();
  r.device = s->device_id();
  refused(r);
  CHECK(s->load_peers()->size() == 1);
  CHECK(s->note_peer_seen(device(7), -1).error().code == Errc::invalid_argument);
}

TEST_CASE("a peer record out of its limits is reported on read-back, the others load",
          "[storage][peers]") {
  TempDir d;
  { REQUIRE(open_store(d.path())->save_peer(hub()).ok()); }
  Bytes long_name, bad_uri, flags, version2, truncated, trailing;
  {
    PeerRecord r = hub();
    r.device = device(1);
    r.name = std::string(kMaxPeerNameBytes + 1, 'x');  // encode() does not check: a bad writer
    long_name = PeerValue::encode(r);
    r = hub();
    r.addresses = {"no-scheme"};
    bad_uri = PeerValue::encode(r);
    flags = PeerValue::encode(hub());
    flags[1] = 0x82;
    version2 = PeerValue::encode(hub());
    version2[0] = 2;
    truncated = PeerValue::encode(hub());
    truncated.pop_back();
    trailing = PeerValue::encode(hub());
    trailing.push_back(0);
  }
  {
    Raw raw(d.path());
    raw.put(raw.t().peers, device(1).view(), long_name);
    raw.put(raw.t().peers, device(2).view(), bad_uri);
    raw.put(raw.t().peers, device(3).view(), flags);
    raw.put(raw.t().peers, device(4).view(), version2);
    raw.put(raw.t().peers, device(5).view(), truncated);
    raw.put(raw.t().peers, device(6).view(), trailing);
    raw.put(raw.t().peers, as_bytes("short key"), PeerValue::encode(hub()));
  }
  auto s = open_store(d.path());
  std::vector<PeerProblem> problems;
  auto peers = s->load_peers(&problems);
  REQUIRE(peers.ok());
  REQUIRE(peers->size() == 1);
  check_same(peers->front(), hub());
  REQUIRE(problems.size() == 7);
  CHECK(problems[0].device == device(1).str());
  CHECK(problems[0].error.find("peer name") != std::string::npos);
  CHECK(problems[1].error.find("no-scheme") != std::string::npos);
  CHECK(problems[2].error.find("flags") != std::string::npos);
  CHECK(problems[3].error.find("version 2") != std::string::npos);
  for (const auto& p : problems) CHECK(p.error.find("peer record") == 0);
  // Without the report the good record still loads; a bad one can be forgotten or replaced.
  CHECK(s->load_peers()->size() == 1);
  REQUIRE(s->forget_peer(device(1)).ok());
  PeerRecord fixed = hub();
  fixed.device = device(2);
  REQUIRE(s->save_peer(fixed).ok());
  problems.clear();
  CHECK(s->load_peers(&problems)->size() == 2);
  CHECK(problems.size() == 5);
  // The checks are the same on both sides: what one refuses, the other refuses.
  PeerRecord r = hub();
  r.name = std::string(kMaxPeerNameBytes + 1, 'x');
  CHECK(PeerValue::check(r).error().code == Errc::invalid_argument);
  CHECK(PeerValue::decode(r.device.view(), PeerValue::encode(r)).error().code == Errc::data_loss);
}

TEST_CASE("format-1 host:port addresses become tcp:// URIs", "[storage][peers]") {
  CHECK(tcp_address_uri("10.0.0.5:7891") == "tcp://10.0.0.5:7891");
  CHECK(tcp_address_uri("hub.local:1") == "tcp://hub.local:1");
  CHECK(tcp_address_uri("[fe80::1]:7891") == "tcp://[fe80::1]:7891");
  CHECK(tcp_address_uri("fe80::1:7891") == "tcp://[fe80::1]:7891");
  CHECK(tcp_address_uri("::1:65535") == "tcp://[::1]:65535");
  for (std::string bad : {"", "host", "host:", ":7891", "host:0", "host:65536", "host:12x",
                          "host:123456", "[]:1", "[::1:1", "a]b:1", "a b:1", "a\x01:1"})
    CHECK_FALSE(tcp_address_uri(bad).has_value());
}

TEST_CASE("format 1 stores: JSON peer records are converted when opened", "[storage][peers]") {
  TempDir d;
  DeviceId me;
  { me = open_store(d.path())->device_id(); }
  const Bytes kFormat = {'f', 'o', 'r', 'm', 'a', 't'};
  {
    // What a format-1 daemon (transports/sync_service.cpp) left behind.
    Raw raw(d.path());
    raw.put(raw.t().meta, kFormat, u64_bytes(1));
    auto json = [&](std::uint8_t n, std::string_view text) {
      raw.put(raw.t().peers, device(n).view(), as_bytes(text));
    };
    json(1, R"({"address":"10.0.0.5:7891","name":"hub","approved":true})");
    json(2, R"({"address":"[fe80::1]:7891","name":"v6"})");
    json(3, R"({"address":"fe80::2:7891","name":"v6 bare"})");
    json(4, R"({"address":"","name":"approved, no address","approved":true})");
    json(5, R"({"address":"no port","name":"bad \u001b name"})");
    json(6, "not json");
    json(7, R"(["an","array"])");
    // Daemons with transport plug-ins wrote address URIs in format 1 already.
    json(8, R"({"address":"tcp://10.0.0.9:7891","name":"uri"})");
    json(9, R"({"address":"mem://alpha","name":"memory"})");
    json(10, R"({"address":"bad://a b","name":"bad uri"})");
  }
  // Without room for a copy of the data as it was, nothing is converted.
  const auto copy = d.path() / "upgrade-backup" / "format-1";
  std::filesystem::create_directories(copy.parent_path());
  std::ofstream(copy) << "a file where the copy's directory goes";
  {
    StoreOptions o;
    o.data_dir = d.path();
    auto refused = Store::open(o);
    REQUIRE(!refused.ok());
    CHECK(refused.error().message.find("not converted without a copy") != std::string::npos);
    Raw raw(d.path());
    CHECK(raw.get(raw.t().meta, kFormat) == u64_bytes(1));
  }
  std::filesystem::remove(copy);

  auto s = open_store(d.path());
  CHECK(s->device_id() == me);
  REQUIRE(s->converted());
  CHECK(s->converted()->from_format == 1);
  CHECK(s->converted()->to_format == kStorageFormat);
  CHECK(s->converted()->copy == copy);
  {
    // The copy is the format-1 database as it was (an older release opens it), kept private.
    CHECK((std::filesystem::status(copy).permissions() & std::filesystem::perms::all) ==
          std::filesystem::perms::owner_all);
    CHECK(
        (std::filesystem::status(copy / "data.mdb").permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
    CHECK(!std::filesystem::exists(copy / "data.mdb.tmp"));
    Raw old(copy.parent_path(), "format-1");
    CHECK(old.get(old.t().meta, kFormat) == u64_bytes(1));
    const std::string_view hub_json = R"({"address":"10.0.0.5:7891","name":"hub","approved":true})";
    CHECK(old.get(old.t().peers, device(1).view()) ==
          Bytes(as_bytes(hub_json).begin(), as_bytes(hub_json).end()));
  }
  std::vector<PeerProblem> problems;
  auto peers = s->load_peers(&problems);
  REQUIRE(peers.ok());
  REQUIRE(peers->size() == 8);
  auto& p = *peers;
  CHECK(p[0].device == device(1));
  CHECK(p[0].name == "hub");
  CHECK(p[0].addresses == std::vector<std::string>{"tcp://10.0.0.5:7891"});
  CHECK(p[0].approved);
  CHECK(p[0].added_ms == 0);
  CHECK(p[0].last_seen_ms == 0);
  CHECK(p[1].addresses == std::vector<std::string>{"tcp://[fe80::1]:7891"});
  CHECK_FALSE(p[1].approved);
  CHECK(p[2].addresses == std::vector<std::string>{"tcp://[fe80::2]:7891"});
  CHECK(p[3].addresses.empty());
  CHECK(p[3].approved);
  CHECK(p[3].name == "approved, no address");
  CHECK(p[4].addresses.empty());
  CHECK(p[4].name == "bad \xef\xbf\xbd name");  // sanitised as the old loader did
  CHECK(p[5].addresses == std::vector<std::string>{"tcp://10.0.0.9:7891"});
  CHECK(p[6].addresses == std::vector<std::string>{"mem://alpha"});
  CHECK(p[7].addresses.empty());
  CHECK(p[7].name == "bad uri");
  // Records that were never JSON objects stay as they were and are reported.
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].device == device(6).str());
  CHECK(problems[1].device == device(7).str());
  s.reset();
  Raw raw(d.path());
  CHECK(raw.get(raw.t().meta, kFormat) == u64_bytes(kStorageFormat));
  auto v1 = raw.get(raw.t().peers, device(1).view());
  REQUIRE(v1.has_value());
  CHECK(v1->front() == PeerValue::kVersion);  // written back in the new format only
  CHECK(raw.get(raw.t().peers, device(6).view()) == Bytes{'n', 'o', 't', ' ', 'j', 's', 'o', 'n'});
  // Opened again: nothing more to convert, no new copy.
  raw.env.reset();
  auto again = open_store(d.path());
  CHECK(!again->converted());
}

TEST_CASE("a store of an unknown format is refused", "[storage][peers]") {
  TempDir d;
  { open_store(d.path()); }
  {
    Raw raw(d.path());
    raw.put(raw.t().meta, Bytes{'f', 'o', 'r', 'm', 'a', 't'}, u64_bytes(kStorageFormat + 1));
  }
  StoreOptions o;
  o.data_dir = d.path();
  o.map_size_bytes = 1ull << 30;
  auto s = Store::open(o);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == Errc::unsupported);
}

TEST_CASE("what a peer holds merges per author, never lowers, and keeps the project's authors",
          "[storage][peers]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  ProjectId p = shared_project(*a, *b);
  write_n(*a, p, 5, "a");
  write_n(*b, p, 3, "b");
  copy_logs(*b, *a, p);
  const DeviceId A = a->device_id(), B = b->device_id(), X = device(9);

  CHECK(a->peer_holds(X, p)->empty());
  REQUIRE(a->note_peer_holds(X, p, {{A, 3}}).ok());
  CHECK(*a->peer_holds(X, p) == VersionVector{{A, 3}});
  REQUIRE(a->note_peer_holds(X, p, {{A, 2}, {B, 2}}).ok());  // A stays 3
  CHECK(*a->peer_holds(X, p) == VersionVector{{A, 3}, {B, 2}});
  // A peer may hold more than we do; an author without a log here is not kept; seq 0 says nothing.
  REQUIRE(a->note_peer_holds(X, p, {{B, 10}, {device(5), 4}, {A, 0}}).ok());
  CHECK(*a->peer_holds(X, p) == VersionVector{{A, 3}, {B, 10}});
  // Per peer and per project.
  CHECK(a->peer_holds(B, p)->empty());
  REQUIRE(a->note_peer_holds(B, p, {{A, 1}}).ok());
  CHECK(*a->peer_holds(X, p) == VersionVector{{A, 3}, {B, 10}});
  ProjectId other = a->create_project("other").value().id;
  CHECK(a->peer_holds(X, other)->empty());
  // Kept across a reopen.
  a.reset();
  a = open_store(da.path());
  CHECK(*a->peer_holds(X, p) == VersionVector{{A, 3}, {B, 10}});

  CHECK(a->note_peer_holds(A, p, {{A, 1}}).error().code == Errc::invalid_argument);
  ProjectId unknown;
  unknown.bytes.fill(3);
  CHECK(a->note_peer_holds(X, unknown, {{A, 1}}).error().code == Errc::not_found);
  CHECK(a->peer_holds(X, unknown).error().code == Errc::not_found);
  CHECK(a->peer_lacks(X, unknown).error().code == Errc::not_found);
}

TEST_CASE("a note that raises nothing writes nothing", "[storage][peers]") {
  TempDir da;
  ProjectId p;
  DeviceId A;
  const DeviceId X = device(9);
  {
    auto a = open_store(da.path());
    p = a->create_project("p").value().id;
    write_n(*a, p, 4, "a");
    A = a->device_id();
    REQUIRE(a->note_peer_holds(X, p, {{A, 2}}).ok());
  }
  auto txn_after = [&](auto&& what) {
    {
      auto a = open_store(da.path());
      what(*a);
    }
    return Raw(da.path()).last_txn();
  };
  std::uint64_t t0 = txn_after([](Store&) {});
  std::uint64_t t1 = txn_after([](Store&) {});  // opening alone (the baseline)
  std::uint64_t t2 = txn_after([&](Store& a) {
    REQUIRE(a.note_peer_holds(X, p, {{A, 2}}).ok());
    REQUIRE(a.note_peer_holds(X, p, {{A, 1}, {device(5), 9}}).ok());
    REQUIRE(a.note_peer_holds(X, p, {}).ok());
  });
  std::uint64_t t3 = txn_after([&](Store& a) { REQUIRE(a.note_peer_holds(X, p, {{A, 3}}).ok()); });
  CHECK(t2 - t1 == t1 - t0);
  CHECK(t3 - t2 == t1 - t0 + 1);
}

TEST_CASE("a first note is kept even when empty, and peers_holding lists who has one",
          "[storage][peers]") {
  TempDir da;
  auto a = open_store(da.path());
  ProjectId p = a->create_project("p").value().id;
  ProjectId other = a->create_project("other").value().id;
  write_n(*a, p, 2, "a");
  const DeviceId X = device(9), Y = device(4), Z = device(7);
  CHECK(a->peers_holding(p)->empty());
  REQUIRE(a->note_peer_holds(X, p, {}).ok());  // known to hold nothing
  REQUIRE(a->note_peer_holds(Y, p, {{a->device_id(), 1}}).ok());
  REQUIRE(a->note_peer_holds(Z, other, {}).ok());
  CHECK(a->peer_lacks(X, p)->known);
  CHECK(a->peer_lacks(X, p)->entries == 2);
  CHECK_FALSE(a->peer_lacks(Z, p)->known);
  CHECK(*a->peers_holding(p) == std::vector<DeviceId>{Y, X});  // id order: device(4) < device(9)
  CHECK(*a->peers_holding(other) == std::vector<DeviceId>{Z});
  REQUIRE(a->forget_peer(X).ok());
  CHECK(*a->peers_holding(p) == std::vector<DeviceId>{Y});
  ProjectId unknown;
  unknown.bytes.fill(3);
  CHECK(a->peers_holding(unknown).error().code == Errc::not_found);
}

TEST_CASE("what a peer lacks: entries and bytes beyond what it holds", "[storage][peers]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  ProjectId p = shared_project(*a, *b);
  write_n(*a, p, 10, "a");
  write_n(*b, p, 4, "b");
  copy_logs(*b, *a, p);
  const DeviceId A = a->device_id(), B = b->device_id(), X = device(9);
  REQUIRE(a->purge_document(p, "obs", "a9").ok());  // a body not held here is not counted

  auto none = a->peer_lacks(X, p);
  REQUIRE(none.ok());
  CHECK_FALSE(none->known);
  CHECK(none->entries == 14);
  CHECK(none->authors == 2);
  CHECK(none->bytes == entry_bytes(*a, p, A, 0, 10) + entry_bytes(*a, p, B, 0, 4));

  REQUIRE(a->note_peer_holds(X, p, {{A, 4}, {B, 9}}).ok());
  auto some = a->peer_lacks(X, p);
  REQUIRE(some.ok());
  CHECK(some->known);
  CHECK(some->entries == 6);
  CHECK(some->authors == 1);
  CHECK(some->bytes == entry_bytes(*a, p, A, 4, 10));
  CHECK(some->bytes > 0);
  CHECK(some->bytes < none->bytes);

  REQUIRE(a->note_peer_holds(X, p, {{A, 10}}).ok());
  auto all = a->peer_lacks(X, p);
  REQUIRE(all.ok());
  CHECK(all->entries == 0);
  CHECK(all->bytes == 0);
  CHECK(all->authors == 0);
  // New writes here: the peer lacks them, with no connection needed, also after a reopen.
  write_n(*a, p, 2, "later");
  a.reset();
  a = open_store(da.path());
  auto later = a->peer_lacks(X, p);
  REQUIRE(later.ok());
  CHECK(later->entries == 2);
  CHECK(later->bytes == entry_bytes(*a, p, A, 10, 12));
}

TEST_CASE("what a peer holds goes with forget_peer and with the project", "[storage][peers]") {
  TempDir da;
  auto a = open_store(da.path());
  ProjectInfo p1 = a->create_project("one").value();
  ProjectId p2 = a->create_project("two").value().id;
  write_n(*a, p1.id, 2, "x");
  write_n(*a, p2, 2, "y");
  const DeviceId A = a->device_id(), X = device(9), Y = device(10);
  PeerRecord rx = hub();
  rx.device = X;
  REQUIRE(a->save_peer(rx).ok());
  REQUIRE(a->note_peer_holds(X, p1.id, {{A, 1}}).ok());
  REQUIRE(a->note_peer_holds(X, p2, {{A, 2}}).ok());
  REQUIRE(a->note_peer_holds(Y, p1.id, {{A, 2}}).ok());
  REQUIRE(a->note_peer_holds(Y, p2, {{A, 1}}).ok());

  REQUIRE(a->forget_peer(X).ok());
  CHECK(a->load_peers()->empty());
  CHECK(a->peer_holds(X, p1.id)->empty());
  CHECK(a->peer_holds(X, p2)->empty());
  CHECK_FALSE(a->peer_lacks(X, p2)->known);
  CHECK(*a->peer_holds(Y, p1.id) == VersionVector{{A, 2}});
  CHECK(*a->peer_holds(Y, p2) == VersionVector{{A, 1}});

  auto secret = a->project_secret(p1.id).value();
  REQUIRE(a->leave_project(p1.id).ok());
  CHECK(a->peer_holds(Y, p1.id).error().code == Errc::not_found);
  CHECK(*a->peer_holds(Y, p2) == VersionVector{{A, 1}});
  // Joining the project again starts with nothing known of anyone.
  REQUIRE(a->add_project(p1, secret).ok());
  CHECK(a->peer_holds(Y, p1.id)->empty());
  CHECK_FALSE(a->peer_lacks(Y, p1.id)->known);
}

TEST_CASE("a stored vector that does not read back is data_loss, and the next note replaces it",
          "[storage][peers]") {
  TempDir da;
  ProjectId p;
  DeviceId A;
  const DeviceId X = device(9);
  {
    auto a = open_store(da.path());
    p = a->create_project("p").value().id;
    write_n(*a, p, 3, "a");
    A = a->device_id();
  }
  auto entry = [](const DeviceId& d, std::uint64_t seq) {
    Bytes b;
    ByteWriter w(b);
    w.raw(d.view());
    w.u64(seq);
    return b;
  };
  auto vector_of = [](std::uint32_t n, const std::vector<Bytes>& entries) {
    Bytes b;
    ByteWriter w(b);
    w.u8(PeerHoldsValue::kVersion);
    w.u32(n);
    for (const auto& e : entries) w.raw(e);
    return b;
  };
  DeviceId lo = device(1), hi = device(2);
  Bytes big;
  {
    ByteWriter w(big);
    w.u8(PeerHoldsValue::kVersion);
    w.u32(static_cast<std::uint32_t>(kMaxPeerHoldsAuthors + 1));
  }
  for (std::size_t i = 0; i <= kMaxPeerHoldsAuthors; ++i) {
    DeviceId d;
    ByteWriter(big).raw(d.view());  // placeholder ids: the count is refused before them
    ByteWriter(big).u64(1);
  }
  std::vector<Bytes> bad = {
      vector_of(1, {entry(DeviceId{}, 1)}),        // zero author
      vector_of(1, {entry(lo, 0)}),                // seq 0
      vector_of(2, {entry(hi, 1), entry(lo, 1)}),  // not ascending
      vector_of(2, {entry(lo, 1), entry(lo, 2)}),  // duplicate
      vector_of(2, {entry(lo, 1)}),                // count says more
      vector_of(1, {entry(lo, 1), Bytes{0}}),      // trailing byte
      Bytes{2, 0, 0, 0, 0},                        // unknown version
      Bytes{},                                     // empty
      big,                                         // over kMaxPeerHoldsAuthors
  };
  // What encode() writes for a good vector does read back.
  CHECK(PeerHoldsValue::decode(vector_of(2, {entry(lo, 1), entry(hi, 7)})) ==
        VersionVector{{lo, 1}, {hi, 7}});
  for (std::size_t i = 0; i < bad.size(); ++i) {
    INFO("case " << i);
    CHECK_FALSE(PeerHoldsValue::decode(bad[i]).has_value());
    {
      Raw raw(da.path());
      raw.put(raw.t().peer_holds, peer_holds_key(p, X), bad[i]);
    }
    auto a = open_store(da.path());
    auto held = a->peer_holds(X, p);
    REQUIRE_FALSE(held.ok());
    CHECK(held.error().code == Errc::data_loss);
    CHECK(a->peer_lacks(X, p).error().code == Errc::data_loss);
    REQUIRE(a->note_peer_holds(X, p, {{A, 2}}).ok());
    CHECK(*a->peer_holds(X, p) == VersionVector{{A, 2}});
  }
}
