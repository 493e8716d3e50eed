// PeerTable and DiscoveryService against a fake source (no Avahi) and a recording fake sync
// layer, on a real io_context and real Stores.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <ctime>
#include <map>
#include <set>

#include "common/text.hpp"
#include "discovery/discovery_service.hpp"
#include "discovery/discovery_tag.hpp"
#include "discovery/peer_table.hpp"
#include "discovery/txt_record.hpp"
#include "storage/store.hpp"
#include "temp_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::discovery;

namespace {

DeviceId device(std::uint8_t fill) {
  DeviceId d;
  d.bytes.fill(fill);
  return d;
}

ResolvedService service(std::string name, std::string ip, std::uint16_t port, int proto = 0,
                        std::vector<std::string> txt = {}) {
  ResolvedService s;
  s.key = ServiceKey{2, proto, std::move(name)};
  s.address = std::move(ip);
  s.ipv6 = proto == 1;
  s.port = port;
  s.txt = std::move(txt);
  return s;
}

TxtRecord txt_of(const DeviceId& d, std::vector<std::string> tags = {}) {
  TxtRecord t;
  t.device = d;
  t.sync_protocol = 1;
  t.tags = std::move(tags);
  return t;
}

// A DiscoverySource the test drives by hand; events are delivered on the io_context like
// AvahiSource's.
struct FakeSource final : DiscoverySource {
  struct Shared {
    Listener listener;
    std::optional<Announcement> announced;
    int announces = 0;
    int withdraws = 0;
    bool started = false;
  };
  std::shared_ptr<Shared> sh = std::make_shared<Shared>();
  void start(Listener l) override {
    sh->listener = std::move(l);
    sh->started = true;
  }
  void stop() override { sh->started = false; }
  void announce(const Announcement& a) override {
    if (sh->announced && *sh->announced == a) return;
    sh->announced = a;
    ++sh->announces;
  }
  void withdraw() override {
    sh->announced.reset();
    ++sh->withdraws;
  }
};

struct FakeConnector final : PeerConnector {
  struct Peer {
    std::string address;
    bool connected = false;
  };
  std::map<DeviceId, Peer> peers;
  std::set<DeviceId> preconfigured;
  int adds = 0, updates = 0, removes = 0;
  bool configured(const DeviceId& d) const override { return preconfigured.count(d) > 0; }
  bool connected(const DeviceId& d) const override {
    auto it = peers.find(d);
    return it != peers.end() && it->second.connected;
  }
  Status add(const DeviceId& d, const std::string& a, const std::string&) override {
    ++adds;
    if (peers.count(d)) return make_error(Errc::already_exists, "peer already added");
    peers[d] = Peer{a, false};
    return {};
  }
  Status update_address(const DeviceId& d, const std::string& a) override {
    ++updates;
    peers.at(d).address = a;
    return {};
  }
  Status remove(const DeviceId& d) override {
    ++removes;
    peers.erase(d);
    return {};
  }
};

std::unique_ptr<storage::Store> open_store(const std::filesystem::path& dir) {
  storage::StoreOptions o;
  o.data_dir = dir;
  o.map_size_bytes = 1ull << 28;
  o.durable = false;
  auto s = storage::Store::open(o);
  REQUIRE(s.ok());
  return std::move(*s);
}

std::int64_t now_s() { return static_cast<std::int64_t>(std::time(nullptr)); }

struct Fixture {
  test::TempDir dir;
  std::unique_ptr<storage::Store> store = open_store(dir.path());
  boost::asio::io_context io;
  FakeConnector conn;
  std::shared_ptr<FakeSource::Shared> src;
  std::unique_ptr<DiscoveryService> svc;

  explicit Fixture(config::DiscoveryOptions o = {}) {
    o.refresh_ms = 3600000;  // the test calls refresh() itself
    auto fake = std::make_unique<FakeSource>();
    src = fake->sh;
    svc = std::make_unique<DiscoveryService>(io, *store, o, "me", 1, std::move(fake), &conn);
  }
  void deliver(SourceEvent ev) {
    src->listener(std::move(ev));
    io.poll();
  }
  // A peer device that shares `project` (it announces the project's tag for itself).
  std::vector<std::string> member_txt(const DeviceId& peer, const ProjectId& project) {
    auto secret = store->project_secret(project);
    REQUIRE(secret.ok());
    auto tag = DiscoveryTag::compute(*secret, peer, DiscoveryTag::bucket_of(now_s()));
    return txt_of(peer, {tag}).encode();
  }
};

}  // namespace

TEST_CASE("peer table: instances fold into devices, last removal removes the device",
          "[discovery]") {
  PeerTable t(10);
  auto a = device(1);
  REQUIRE(t.upsert(service("a", "fe80::1%veth0", 7000, 1), txt_of(a), 100).ok());
  REQUIRE(t.upsert(service("a", "169.254.1.1", 7000, 0), txt_of(a), 200).ok());
  REQUIRE(t.size() == 1);
  const auto* d = t.find(a);
  REQUIRE(d);
  // IPv4 first, whatever the order of arrival.
  CHECK(d->addresses == std::vector<std::string>{"169.254.1.1:7000", "[fe80::1%veth0]:7000"});
  CHECK(d->first_seen_ms == 100);
  CHECK(d->last_seen_ms == 200);
  CHECK_FALSE(t.remove(ServiceKey{2, 0, "a"}).has_value());  // the IPv6 instance remains
  CHECK(t.find(a)->addresses == std::vector<std::string>{"[fe80::1%veth0]:7000"});
  CHECK(t.remove(ServiceKey{2, 1, "a"}) == a);
  CHECK(t.size() == 0);
  CHECK_FALSE(t.remove(ServiceKey{2, 1, "a"}).has_value());
}

TEST_CASE("peer table: instance names from the network are valid UTF-8 without controls",
          "[discovery]") {
  PeerTable t(10);
  auto a = device(1);
  // 62 ASCII bytes, then a 2-byte character across the 63-byte limit, plus escapes.
  std::string name = "\x1b[2J\xc2\x9b" + std::string(55, 'n') + "\xc3\xa4\xc3\xa4\xff";
  REQUIRE(t.upsert(service(name, "10.0.0.1", 7000), txt_of(a), 100).ok());
  const auto& shown = t.find(a)->name;
  CHECK(is_clean_text(shown, 63));
  CHECK(shown.find('\x1b') == std::string::npos);
}

TEST_CASE("peer table: re-resolve updates the address, TTL expiry, size limit", "[discovery]") {
  PeerTable t(2);
  auto a = device(1), b = device(2), c = device(3);
  REQUIRE(t.upsert(service("a", "10.0.0.1", 7000), txt_of(a), 100).ok());
  REQUIRE(t.upsert(service("a", "10.0.0.9", 7001), txt_of(a), 150).ok());
  CHECK(t.find(a)->addresses == std::vector<std::string>{"10.0.0.9:7001"});
  REQUIRE(t.upsert(service("b", "10.0.0.2", 7000), txt_of(b), 100).ok());
  auto full = t.upsert(service("c", "10.0.0.3", 7000), txt_of(c), 100);
  REQUIRE_FALSE(full.ok());
  CHECK(full.error().code == Errc::resource_exhausted);
  // The same instance name now announced by another device id moves to it.
  REQUIRE(t.upsert(service("b", "10.0.0.2", 7000), txt_of(a), 160).ok());
  CHECK(t.find(b) == nullptr);
  CHECK(t.find(a)->addresses.size() == 2);

  CHECK(t.expire(200, 100).empty());
  auto gone = t.expire(300, 100);
  CHECK(gone == std::vector<DeviceId>{a});
  CHECK(t.size() == 0);
  REQUIRE(t.upsert(service("a", "10.0.0.1", 7000), txt_of(a), 100).ok());
  t.confirm_all(1000);
  CHECK(t.expire(1050, 100).empty());
}

TEST_CASE("service: announces only visible projects' tags, withdraws with none", "[discovery]") {
  Fixture f;
  f.svc->start(7891);
  CHECK(f.src->started);
  CHECK_FALSE(f.src->announced.has_value());  // no project yet: not announced at all

  auto p1 = f.store->create_project("visible one");
  auto p2 = f.store->create_project("hidden", R"({"discovery":{"visible":false}})");
  auto p3 = f.store->create_project("typo", R"({"discovery":{"visible":"nope"}})");
  REQUIRE((p1.ok() && p2.ok() && p3.ok()));
  f.svc->refresh();
  REQUIRE(f.src->announced.has_value());
  CHECK(f.src->announced->name == "me");
  CHECK(f.src->announced->port == 7891);
  auto txt = TxtRecord::parse(f.src->announced->txt);
  REQUIRE(txt.ok());
  CHECK(txt->device == f.store->device_id());
  REQUIRE(txt->tags.size() == 1);  // p2 hidden, p3 malformed -> hidden
  auto s1 = f.store->project_secret(p1->id);
  CHECK(DiscoveryTag::matches(*s1, f.store->device_id(), txt->tags, now_s()));
  for (const auto& s : f.src->announced->txt) {
    CHECK(s.find(p1->id.str()) == std::string::npos);
    CHECK(s.find("visible one") == std::string::npos);
  }
  int announces = f.src->announces;
  f.svc->refresh();
  CHECK(f.src->announces == announces);  // unchanged TXT is not re-sent

  REQUIRE(f.store->update_project(p1->id, std::nullopt, R"({"discovery":{"visible":false}})").ok());
  f.svc->refresh();
  CHECK_FALSE(f.src->announced.has_value());
  CHECK(f.src->withdraws == 1);
}

TEST_CASE("service: discovery.enabled = false starts nothing", "[discovery]") {
  config::DiscoveryOptions o;
  o.enabled = false;
  Fixture f(o);
  REQUIRE(f.store->create_project("p").ok());
  f.svc->start(7891);
  CHECK_FALSE(f.src->started);
  CHECK_FALSE(f.src->announced.has_value());
  CHECK_FALSE(f.svc->status().enabled);
}

TEST_CASE("service: manual policy lists a member but does not dial it", "[discovery]") {
  Fixture f;
  auto p = f.store->create_project("survey");
  REQUIRE(p.ok());
  f.svc->start(7891);
  auto peer = device(9);
  f.deliver(service("peer", "10.1.1.1", 7000, 0, f.member_txt(peer, p->id)));
  auto list = f.svc->peers();
  REQUIRE(list.size() == 1);
  CHECK(list[0].device.device == peer);
  CHECK(list[0].device.name == "peer");
  CHECK(list[0].device.projects == std::vector<ProjectId>{p->id});
  CHECK_FALSE(list[0].auto_peer);
  CHECK(f.conn.adds == 0);
}

TEST_CASE("service: auto policy adds a member once, follows its address, drops it when gone",
          "[discovery]") {
  Fixture f;
  auto p = f.store->create_project("survey", R"({"discovery":{"policy":"auto"}})");
  auto other = f.store->create_project("other", R"({"discovery":{"policy":"auto"}})");
  REQUIRE((p.ok() && other.ok()));
  f.svc->start(7891);
  auto member = device(9), stranger = device(8), self = f.store->device_id();

  // A stranger announces a tag made with a secret we do not have: listed, never dialed.
  Bytes foreign(32, 0x42);
  auto ftag = DiscoveryTag::compute(foreign, stranger, DiscoveryTag::bucket_of(now_s()));
  f.deliver(service("stranger", "10.1.1.2", 7000, 0, txt_of(stranger, {ftag}).encode()));
  // Our own announcement coming back is ignored.
  f.deliver(service("me", "10.1.1.3", 7891, 0, f.member_txt(self, p->id)));
  // A member: added exactly once, even when resolved again and on refreshes.
  f.deliver(service("member", "10.1.1.1", 7000, 0, f.member_txt(member, p->id)));
  f.deliver(service("member", "10.1.1.1", 7000, 0, f.member_txt(member, p->id)));
  f.svc->refresh();
  f.svc->refresh();
  CHECK(f.conn.adds == 1);
  REQUIRE(f.conn.peers.count(member));
  CHECK(f.conn.peers[member].address == "10.1.1.1:7000");
  CHECK_FALSE(f.conn.peers.count(stranger));
  REQUIRE(f.svc->peers().size() == 2);
  auto m = f.svc->peer(member);
  REQUIRE(m);
  CHECK(m->auto_peer);
  auto s = f.svc->peer(stranger);
  REQUIRE(s);
  CHECK(s->device.projects.empty());

  // Re-resolved at a new address: updated in place, not re-added.
  f.deliver(service("member", "10.1.1.7", 7002, 0, f.member_txt(member, p->id)));
  CHECK(f.conn.adds == 1);
  CHECK(f.conn.updates == 1);
  CHECK(f.conn.peers[member].address == "10.1.1.7:7002");

  // It leaves while a session is up: the session stays; once it is down the peer is removed.
  f.conn.peers[member].connected = true;
  f.deliver(ServiceRemoved{ServiceKey{2, 0, "member"}});
  CHECK_FALSE(f.svc->peer(member));
  CHECK(f.conn.peers.count(member));
  f.conn.peers[member].connected = false;
  f.svc->refresh();
  CHECK_FALSE(f.conn.peers.count(member));
  CHECK(f.conn.removes == 1);

  // Back again: added again (once).
  f.deliver(service("member", "10.1.1.1", 7000, 0, f.member_txt(member, p->id)));
  CHECK(f.conn.adds == 2);
}

TEST_CASE("service: a configured peer is left to the user, a refused add is not retried",
          "[discovery]") {
  Fixture f;
  auto p = f.store->create_project("survey", R"({"discovery":{"policy":"auto"}})");
  REQUIRE(p.ok());
  f.svc->start(7891);
  auto configured = device(5), dup = device(6);
  f.conn.preconfigured.insert(configured);
  f.deliver(service("c", "10.1.1.5", 7000, 0, f.member_txt(configured, p->id)));
  CHECK(f.conn.adds == 0);

  f.conn.peers[dup] = {};  // the fake refuses a second add of this device
  f.deliver(service("d", "10.1.1.6", 7000, 0, f.member_txt(dup, p->id)));
  f.deliver(service("d", "10.1.1.6", 7000, 0, f.member_txt(dup, p->id)));
  f.svc->refresh();
  CHECK(f.conn.adds == 1);
}

TEST_CASE("service: Avahi state, registrations and TTL while Avahi is away", "[discovery]") {
  config::DiscoveryOptions o;
  o.ttl_ms = 1;
  Fixture f(o);
  auto p = f.store->create_project("survey");
  REQUIRE(p.ok());
  f.svc->start(7891);
  f.deliver(SourceStateChanged{SourceState::running, {}});
  f.deliver(Announced{"me"});
  auto st = f.svc->status();
  CHECK(st.state == SourceState::running);
  CHECK(st.announced);
  CHECK(st.registrations == 1);
  CHECK(st.visible_projects == 1);

  auto peer = device(9);
  f.deliver(service("peer", "10.1.1.1", 7000, 0, f.member_txt(peer, p->id)));
  f.svc->refresh();  // running: Avahi vouches for it, so it stays whatever the TTL
  CHECK(f.svc->peers().size() == 1);

  f.deliver(SourceStateChanged{SourceState::connecting, "avahi-daemon went away"});
  CHECK_FALSE(f.svc->status().announced);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!f.svc->peers().empty() && std::chrono::steady_clock::now() < deadline) f.svc->refresh();
  CHECK(f.svc->peers().empty());  // unconfirmed for longer than the TTL

  f.deliver(SourceStateChanged{SourceState::running, {}});
  f.deliver(Announced{"me"});
  CHECK(f.svc->status().registrations == 2);
  CHECK(f.svc->status().announced);

  // Across an Avahi restart, a device Avahi lists again stays; one that vanished meanwhile
  // (no goodbye reached the new daemon) is not confirmed and ages out.
  auto gone = device(7);
  f.deliver(service("peer", "10.1.1.1", 7000, 0, f.member_txt(peer, p->id)));
  f.deliver(service("gone", "10.1.1.2", 7000, 0, f.member_txt(gone, p->id)));
  f.deliver(SourceStateChanged{SourceState::connecting, "avahi-daemon went away"});
  f.deliver(SourceStateChanged{SourceState::running, {}});
  f.deliver(service("peer", "10.1.1.1", 7000, 0, f.member_txt(peer, p->id)));
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (f.svc->peer(gone) && std::chrono::steady_clock::now() < deadline) f.svc->refresh();
  CHECK_FALSE(f.svc->peer(gone));
  CHECK(f.svc->peer(peer));
}

TEST_CASE("service: malformed TXT records are ignored", "[discovery]") {
  Fixture f;
  REQUIRE(f.store->create_project("survey").ok());
  f.svc->start(7891);
  f.deliver(service("junk", "10.1.1.1", 7000, 0, {"v=1", "id=nope"}));
  f.deliver(service("future", "10.1.1.2", 7000, 0, {"v=9", "id=" + device(1).str()}));
  f.deliver(service("empty", "10.1.1.3", 7000, 0, {}));
  CHECK(f.svc->peers().empty());
}

TEST_CASE("service: a project joined after discovery is matched at the next refresh",
          "[discovery]") {
  Fixture f;
  test::TempDir other_dir;
  auto other = open_store(other_dir.path());
  auto p = other->create_project("joined later");
  REQUIRE(p.ok());
  auto secret = other->project_secret(p->id);
  REQUIRE(secret.ok());
  f.svc->start(7891);
  auto tag = DiscoveryTag::compute(*secret, other->device_id(), DiscoveryTag::bucket_of(now_s()));
  f.deliver(service("other", "10.1.1.1", 7000, 0, txt_of(other->device_id(), {tag}).encode()));
  REQUIRE(f.svc->peer(other->device_id()));
  CHECK(f.svc->peer(other->device_id())->device.projects.empty());
  f.svc->refresh();
  CHECK(f.svc->peer(other->device_id())->device.projects.empty());

  REQUIRE(f.store->add_project(*p, *secret).ok());
  f.svc->refresh();
  CHECK(f.svc->peer(other->device_id())->device.projects == std::vector<ProjectId>{p->id});
}

TEST_CASE("peer table: names from the network are made printable and bounded", "[discovery]") {
  PeerTable t(4);
  REQUIRE(t.upsert(service("evil\nname\x1b[31m" + std::string(100, 'x'), "10.0.0.1", 7000),
                   txt_of(device(1)), 1)
              .ok());
  const auto* d = t.find(device(1));
  REQUIRE(d);
  CHECK(d->name.size() <= 63);
  CHECK(d->name.size() >= 60);
  CHECK(d->name.rfind("evil\xEF\xBF\xBDname\xEF\xBF\xBD[31m", 0) == 0);  // U+FFFD
  CHECK(is_clean_text(d->name, 63));
}
