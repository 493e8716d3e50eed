// Subscriptions (docs/storage.md "Subscriptions", docs/protocol.md "Subscriptions"): a device
// that wants part of a project receives exactly that part, still verifies every log, and never
// poses as holding what it left out.
#include <catch2/catch.hpp>

#include <random>

#include "storage/subscription.hpp"
#include "sync_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;
using storage::Subscription;

namespace {

Subscription sub(const std::string& json) {
  auto s = Subscription::parse(json);
  INFO(json);
  REQUIRE(s.ok());
  return *s;
}

const Subscription kDistrict7 = [] {
  auto s = Subscription::parse(R"({"where":{"eq":{"path":"district","value":7}}})");
  return s.ok() ? *s : Subscription{};
}();

// Writes docs d<start>..d<start+n-1> with district = i % 10 (or `district` when given).
void write_district_docs(Node& n, const ProjectId& p, int start, int count, int district = -1) {
  std::vector<storage::WriteRequest> reqs;
  for (int i = start; i < start + count; ++i) {
    storage::WriteRequest r;
    r.collection = "obs";
    r.doc_id = "d" + std::to_string(i);
    std::string note;  // ~300 bytes of text, like a field observation's notes
    std::mt19937 rng(static_cast<unsigned>(i));
    while (note.size() < 300) note += "abcdefghijklmnopqrstuvwxyz "[rng() % 27];
    r.body = "{\"district\":" + std::to_string(district >= 0 ? district : i % 10) +
             ",\"n\":" + std::to_string(i) + ",\"notes\":\"" + note + "\"}";
    r.use_current = true;
    reqs.push_back(std::move(r));
  }
  REQUIRE(n.store->write_batch(p, reqs).ok());
}

void put(Node& n, const ProjectId& p, const std::string& id, const std::string& body) {
  storage::WriteRequest r;
  r.collection = "obs";
  r.doc_id = id;
  r.body = body;
  r.use_current = true;
  REQUIRE(n.store->write(p, r).ok());
}

void remove(Node& n, const ProjectId& p, const std::string& id) {
  storage::WriteRequest r;
  r.collection = "obs";
  r.doc_id = id;
  r.kind = storage::VersionKind::tombstone;
  r.use_current = true;
  REQUIRE(n.store->write(p, r).ok());
}

std::set<std::string> doc_ids(Node& n, const ProjectId& p) {
  storage::ListQuery q;
  q.collection = "obs";
  q.limit = 100000;
  auto page = n.store->list_documents(p, q);
  REQUIRE(page.ok());
  std::set<std::string> out;
  for (const auto& d : page->docs) out.insert(d.doc_id);
  return out;
}

storage::VersionVector vv(Node& n, const ProjectId& p) {
  auto v = n.store->version_vector(p);
  REQUIRE(v.ok());
  return *v;
}

struct Synced {
  ProjectProgress a, b;
};

// One session between two nodes until both are quiet.
Synced sync_once(Node& a, Node& b) {
  SessionOptions o;
  o.batch_entries = 64;
  Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  INFO((sa.error() ? sa.error()->message : std::string("a ok")));
  INFO((sb.error() ? sb.error()->message : std::string("b ok")));
  REQUIRE(sa.state() == SessionState::active);
  REQUIRE(sb.state() == SessionState::active);
  REQUIRE(sa.in_sync());
  REQUIRE(sb.in_sync());
  auto pa = sa.progress(), pb = sb.progress();
  REQUIRE(pa.projects.size() == 1);
  REQUIRE(pb.projects.size() == 1);
  // In sync means nothing more is coming: progress never waits for what a peer left out.
  CHECK(pa.projects[0].to_receive == 0);
  CHECK(pb.projects[0].to_receive == 0);
  CHECK(pa.projects[0].to_send == 0);
  CHECK(pb.projects[0].to_send == 0);
  return Synced{pa.projects[0], pb.projects[0]};
}

ProjectId add_to(Node& a, const ProjectId& p, Node& c) {
  auto info = a.store->get_project(p);
  REQUIRE(info.ok());
  auto secret = a.store->project_secret(p);
  REQUIRE(secret.ok());
  REQUIRE(c.store->add_project(*info, *secret).ok());
  return p;
}

std::set<std::string> expected(int from, int to, std::initializer_list<int> districts) {
  std::set<std::string> out;
  for (int i = from; i < to; ++i)
    for (int d : districts)
      if (i % 10 == d) out.insert("d" + std::to_string(i));
  return out;
}

}  // namespace

TEST_CASE("subscription JSON: parsed, checked and spelled canonically", "[subscription]") {
  CHECK(sub("{}").everything());
  CHECK(sub("null").everything());
  CHECK(sub("{}").canonical() == "{}");
  auto s = sub(
      R"({"where":{"all":[{"eq":{"path":"a.b","value":7.5}},{"range":{"path":"t","gte":"2026-01","lt":"2026-02"}}]},"collections":["z","a","z"]})");
  CHECK(
      s.canonical() ==
      R"({"collections":["a","z"],"where":{"all":[{"eq":{"path":"a.b","value":7.5}},{"range":{"path":"t","gte":"2026-01","lt":"2026-02"}}]}})");
  CHECK(Subscription::parse_canonical(s.canonical()).ok());
  CHECK_FALSE(Subscription::parse_canonical(R"({"collections":["z","a"]})").ok());
  for (const char* bad :
       {R"([])", R"({"where":{"eq":{"path":"a"}}})", R"({"where":{"eq":{"path":"","value":1}}})",
        R"({"where":{"eq":{"path":"a..b","value":1}}})", R"({"where":{"near":{"path":"a"}}})",
        R"({"where":{"range":{"path":"a"}}})", R"({"where":{"range":{"path":"a","gt":1,"gte":2}}})",
        R"({"where":{"bbox":{"south":10,"north":5,"west":0,"east":1}}})", R"({"colections":["a"]})",
        R"({"where":{"all":[]}})", R"({"where":{"eq":{"path":"a","value":{"x":1}}}})", "{",
        R"({"collections":[]})", R"({"where":{"range":{"path":"n","gt":2e308}}})",
        R"({"where":{"eq":{"path":"n","value":-1e999}}})"}) {
    INFO(bad);
    auto r = Subscription::parse(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
  }
  std::string deep = R"({"eq":{"path":"a","value":1}})";
  for (int i = 0; i < 9; ++i) deep = R"({"any":[)" + deep + "]}";
  CHECK_FALSE(Subscription::parse(R"({"where":)" + deep + "}").ok());
  CHECK_FALSE(Subscription::parse(std::string(storage::kMaxSubscriptionBytes + 1, ' ')).ok());
}

TEST_CASE("subscription numbers keep one canonical spelling that reads back as itself",
          "[subscription]") {
  // The JSON parser reads these one ulp off; their shortest spellings alternate between two
  // doubles, so a canonical form made of shortest spellings did not read back as itself.
  for (
      const char* text :
      {R"({"where":{"range":{"path":"n","gt":30e080}}})",
       R"({"where":{"range":{"path":"n","lt":3666666666600000000000000000000000000000000000000000000000000000000000001937239397}}})",
       R"({"where":{"eq":{"path":"n","value":0.1}}})",
       R"({"where":{"bbox":{"south":-1.2345678901234567,"north":5,"west":0,"east":1}}})"}) {
    INFO(text);
    auto s = Subscription::parse(text);
    REQUIRE(s.ok());
    auto again = Subscription::parse_canonical(s->canonical());
    REQUIRE(again.ok());
    CHECK(again->canonical() == s->canonical());
  }
}

TEST_CASE("subscription matching: equality, sets, ranges, boxes, and/or", "[subscription]") {
  auto s = sub(
      R"({"collections":["obs"],"where":{"any":[{"all":[{"in":{"path":"tags.category","values":["water","clinic"]}},{"range":{"path":"count","gt":2,"lte":10}}]},{"bbox":{"south":-5,"west":-61,"north":-4,"east":-60}}]}})");
  CHECK(s.matches("obs", R"({"tags":{"category":"water"},"count":3})"));
  CHECK(s.matches("obs", R"({"tags":{"category":"clinic"},"count":10.0})"));
  CHECK_FALSE(s.matches("obs", R"({"tags":{"category":"clinic"},"count":2})"));
  CHECK_FALSE(s.matches("obs", R"({"tags":{"category":"road"},"count":3})"));
  CHECK_FALSE(s.matches("obs", R"({"tags":{"category":"water"},"count":"3"})"));
  CHECK(s.matches("obs", R"({"lat":-4.5,"lon":-60.5})"));
  CHECK_FALSE(s.matches("obs", R"({"lat":-3.5,"lon":-60.5})"));
  CHECK_FALSE(s.matches("other", R"({"lat":-4.5,"lon":-60.5})"));
  CHECK(s.matches("_members", "{}"));  // reserved collections: every device holds them
  CHECK_FALSE(s.matches("obs", "not json"));
  auto across = sub(R"({"where":{"bbox":{"south":-10,"west":170,"north":10,"east":-170}}})");
  CHECK(across.matches("x", R"({"lat":0,"lon":175})"));
  CHECK(across.matches("x", R"({"lat":0,"lon":-175})"));
  CHECK_FALSE(across.matches("x", R"({"lat":0,"lon":0})"));
  auto eq = sub(R"({"where":{"eq":{"path":"d","value":7}}})");
  CHECK(eq.matches("x", R"({"d":7.0})"));
  CHECK_FALSE(eq.matches("x", R"({"d":"7"})"));
}

TEST_CASE("subscription within: conservative subsumption", "[subscription]") {
  auto a = sub(R"({"where":{"eq":{"path":"d","value":7}}})");
  auto ab =
      sub(R"({"where":{"all":[{"eq":{"path":"d","value":7}},{"eq":{"path":"k","value":1}}]}})");
  auto c = sub(R"({"collections":["obs"],"where":{"eq":{"path":"d","value":7}}})");
  CHECK(a.within(Subscription{}));
  CHECK_FALSE(Subscription{}.within(a));
  CHECK(a.within(a));
  CHECK(ab.within(a));
  CHECK_FALSE(a.within(ab));
  CHECK(c.within(a));
  CHECK_FALSE(a.within(c));
}

TEST_CASE("a subscribed device receives exactly the documents its subscription selects",
          "[subscription]") {
  Node hub, phone;
  ProjectId p = shared_project(hub, phone);
  write_district_docs(hub, p, 0, 700);
  REQUIRE(phone.store->set_subscription(p, kDistrict7).ok());
  auto s = sync_once(hub, phone);
  CHECK(doc_ids(phone, p) == expected(0, 700, {7}));
  // The log is exact: the phone's vector equals the hub's (every version it holds proven the
  // author's by the sealed run it is in), so nothing is asked for again.
  CHECK(vv(phone, p) == vv(hub, p));
  CHECK(s.b.applied == 70);
  // Proven runs (a tenth of each run is wanted): only the wanted versions travel, not the
  // ids of the others, nor versions dropped on arrival.
  CHECK(s.b.received == 70);
  Node full;
  add_to(hub, p, full);
  auto f = sync_once(hub, full);
  INFO("phone " << s.b.bytes_received << " B, full replica " << f.b.bytes_received << " B");
  CHECK(s.b.bytes_received * 4 < f.b.bytes_received);
  auto again = sync_once(hub, phone);
  CHECK(again.a.sent == 0);
  CHECK(again.b.sent == 0);
  // The phone cannot give the hub's log whole: it says so.
  auto whole = phone.store->whole_heads(p);
  REQUIRE(whole.ok());
  REQUIRE(whole->count(hub.store->device_id()) == 1);
  CHECK(whole->at(hub.store->device_id()) < 700);
}

TEST_CASE("changes that make a document leave or enter a subscription, and deletes, arrive",
          "[subscription]") {
  Node hub, phone;
  ProjectId p = shared_project(hub, phone);
  write_district_docs(hub, p, 0, 50);
  REQUIRE(phone.store->set_subscription(p, kDistrict7).ok());
  sync_once(hub, phone);
  put(hub, p, "d7", R"({"district":3,"n":7})");    // leaves
  put(hub, p, "d13", R"({"district":7,"n":13})");  // enters
  remove(hub, p, "d17");                           // deleted while in
  put(hub, p, "d23", R"({"district":4,"n":23})");  // never in: not sent
  sync_once(hub, phone);
  auto d7 = phone.store->get_document(p, "obs", "d7");
  REQUIRE(d7.ok());
  CHECK(d7->body == R"({"district":3,"n":7})");  // the phone learns it left
  auto d13 = phone.store->get_document(p, "obs", "d13");
  REQUIRE(d13.ok());
  CHECK(d13->body == R"({"district":7,"n":13})");
  auto d17 = phone.store->get_document(p, "obs", "d17");
  REQUIRE(d17.ok());
  CHECK(d17->deleted);
  CHECK(phone.store->get_document(p, "obs", "d23").error().code == Errc::not_found);
  CHECK(vv(phone, p) == vv(hub, p));
}

TEST_CASE("a conflict between two subscribed devices is kept on both", "[subscription]") {
  Node hub, p1, p2;
  ProjectId p = shared_project(hub, p1);
  add_to(hub, p, p2);
  write_district_docs(hub, p, 0, 20);
  for (Node* n : {&p1, &p2}) REQUIRE(n->store->set_subscription(p, kDistrict7).ok());
  sync_once(hub, p1);
  sync_once(hub, p2);
  put(p1, p, "d7", R"({"district":7,"n":1})");
  put(p2, p, "d7", R"({"district":7,"n":2})");
  sync_once(p1, p2);
  auto a = p1.store->get_document(p, "obs", "d7");
  auto b = p2.store->get_document(p, "obs", "d7");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->heads.size() == 2);
  CHECK(a->heads == b->heads);
  CHECK(a->winner == b->winner);
}

TEST_CASE(
    "a phone relays its own writes through another phone to the hub, and never poses "
    "as holding what it left out",
    "[subscription]") {
  Node hub, laptop, p1, p2;
  ProjectId p = shared_project(hub, p1);
  add_to(hub, p, p2);
  add_to(hub, p, laptop);
  write_district_docs(hub, p, 0, 600);
  for (Node* n : {&p1, &p2}) REQUIRE(n->store->set_subscription(p, kDistrict7).ok());
  sync_once(hub, p2);
  // p1's own writes (some outside its own subscription: a device keeps what it wrote).
  write_district_docs(p1, p, 1000, 20, 7);
  sync_once(p1, p2);  // p1 has never met the hub
  // A full laptop meets only p2: it gets p1's log (whole at p2) but not the hub's beyond
  // where p2 holds it whole.
  sync_once(p2, laptop);
  auto lv = vv(laptop, p);
  CHECK(lv[p1.store->device_id()] == vv(p1, p)[p1.store->device_id()]);
  auto whole = p2.store->whole_heads(p);
  REQUIRE(whole.ok());
  CHECK(lv[hub.store->device_id()] <= whole->at(hub.store->device_id()));
  CHECK(lv[hub.store->device_id()] < vv(hub, p)[hub.store->device_id()]);
  // The hub gets p1's writes from p2.
  sync_once(p2, hub);
  for (int i = 1000; i < 1020; ++i)
    CHECK(hub.store->get_document(p, "obs", "d" + std::to_string(i)).ok());
  // Meeting the hub makes the laptop complete.
  sync_once(hub, laptop);
  CHECK(vv(laptop, p) == vv(hub, p));
  CHECK(doc_ids(laptop, p) == doc_ids(hub, p));
  // A phone meeting the laptop in any order ends with the same documents.
  Node p3;
  add_to(hub, p, p3);
  REQUIRE(p3.store->set_subscription(p, kDistrict7).ok());
  sync_once(laptop, p3);
  CHECK(doc_ids(p3, p) == doc_ids(p2, p));
}

TEST_CASE(
    "widening fetches the newly wanted documents, narrowing removes the others but "
    "keeps undelivered own writes",
    "[subscription]") {
  Node hub, phone;
  ProjectId p = shared_project(hub, phone);
  write_district_docs(hub, p, 0, 300);
  REQUIRE(phone.store->set_subscription(p, kDistrict7).ok());
  sync_once(hub, phone);
  REQUIRE(doc_ids(phone, p) == expected(0, 300, {7}));

  auto wider = sub(R"({"where":{"in":{"path":"district","values":[3,7]}}})");
  auto ch = phone.store->set_subscription(p, wider);
  REQUIRE(ch.ok());
  CHECK(ch->asks_again);
  auto asked = phone.store->request_vector(p);
  REQUIRE(asked.ok());
  CHECK(asked->at(hub.store->device_id()) < vv(phone, p).at(hub.store->device_id()));
  sync_once(hub, phone);
  CHECK(doc_ids(phone, p) == expected(0, 300, {3, 7}));
  asked = phone.store->request_vector(p);
  REQUIRE(asked.ok());
  CHECK(*asked == vv(phone, p));  // judged again: not asked for a third time

  // Own writes not delivered anywhere stay; the rest of district 3 leaves.
  write_district_docs(phone, p, 2000, 5, 3);
  auto before = phone.store->last_change_seq(p);
  REQUIRE(before.ok());
  auto narrow = phone.store->set_subscription(p, kDistrict7);
  REQUIRE(narrow.ok());
  CHECK(narrow->documents_removed == 30);
  CHECK(narrow->documents_kept == 5);
  // Apps following the changes feed see each document that left once more (it now reads as
  // not found).
  auto left_feed = phone.store->changes_since(p, *before, 1000);
  REQUIRE(left_feed.ok());
  REQUIRE(left_feed->size() == 30);
  for (const auto& c : *left_feed) {
    CHECK(expected(0, 300, {3}).count(c.doc_id) == 1);
    CHECK(phone.store->get_document(p, "obs", c.doc_id).error().code == Errc::not_found);
  }
  auto left = expected(0, 300, {7});
  for (int i = 2000; i < 2005; ++i) left.insert("d" + std::to_string(i));
  CHECK(doc_ids(phone, p) == left);
  // Still exact: a session with the hub sends nothing back and takes the own writes.
  sync_once(hub, phone);
  CHECK(doc_ids(phone, p) == left);
  CHECK(hub.store->get_document(p, "obs", "d2004").ok());
  // Delivered now: narrowing again lets them go.
  auto again = phone.store->set_subscription(p, kDistrict7);
  REQUIRE(again.ok());
  // (Set to the same value: nothing narrows.)
  CHECK(again->documents_removed == 0);
  auto only_7 = sub(R"({"where":{"all":[{"eq":{"path":"district","value":7}}]}})");
  auto gone = phone.store->set_subscription(p, only_7);
  REQUIRE(gone.ok());
  CHECK(gone->documents_removed == 5);
  CHECK(doc_ids(phone, p) == expected(0, 300, {7}));
  // Everything again: the device becomes a full replica, with no left-out entries.
  auto all = phone.store->set_subscription(p, Subscription{});
  REQUIRE(all.ok());
  CHECK(all->asks_again);
  sync_once(hub, phone);
  CHECK(doc_ids(phone, p) == doc_ids(hub, p));
  auto whole = phone.store->whole_heads(p);
  REQUIRE(whole.ok());
  CHECK(whole->empty());
}

TEST_CASE("a device that holds everything refuses left-out entries", "[subscription]") {
  Node hub, phone, full;
  ProjectId p = shared_project(hub, phone);
  add_to(hub, p, full);
  write_district_docs(hub, p, 0, 10);
  auto log = hub.store->read_log(p, hub.store->device_id(), 0, 100, 1u << 20,
                                 storage::LogFilter{kDistrict7, false});
  REQUIRE(log.ok());
  REQUIRE(log->entries.size() >= 10);
  CHECK(std::count_if(log->entries.begin(), log->entries.end(),
                      [](const storage::LogEntry& e) { return e.elided; }) >= 9);
  auto r = full.store->apply_log(p, *log);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::verification_failed);
  CHECK(vv(full, p)[hub.store->device_id()] == 0);
  // A left-out entry whose id was changed breaks the chain: refused by a subscribed device.
  REQUIRE(phone.store->set_subscription(p, kDistrict7).ok());
  auto tampered = *log;
  for (auto& e : tampered.entries)
    if (e.elided) {
      e.id.bytes[0] ^= 1;
      break;
    }
  auto t = phone.store->apply_log(p, tampered);
  REQUIRE_FALSE(t.ok());
  CHECK(t.error().code == Errc::verification_failed);
  auto ok = phone.store->apply_log(p, *log);
  REQUIRE(ok.ok());
  CHECK(doc_ids(phone, p) == std::set<std::string>{"d7"});
}

TEST_CASE(
    "entries left out under a narrower subscription and not judged again are never "
    "given as left out",
    "[subscription]") {
  Node hub, p1, p2;
  ProjectId p = shared_project(hub, p1);
  add_to(hub, p, p2);
  write_district_docs(hub, p, 0, 300);
  REQUIRE(p1.store->set_subscription(p, kDistrict7).ok());
  sync_once(hub, p1);
  // p1 widens but meets only p2 (same wider subscription) before meeting the hub again: its
  // district-3 documents are still left out there, and must not reach p2 as "not wanted".
  auto wider = sub(R"({"where":{"in":{"path":"district","values":[3,7]}}})");
  REQUIRE(p1.store->set_subscription(p, wider).ok());
  REQUIRE(p2.store->set_subscription(p, wider).ok());
  sync_once(p1, p2);
  auto got = doc_ids(p2, p);
  for (const auto& id : got) CHECK(expected(0, 300, {3, 7}).count(id) == 1);
  sync_once(hub, p2);
  CHECK(doc_ids(p2, p) == expected(0, 300, {3, 7}));
  sync_once(hub, p1);
  CHECK(doc_ids(p1, p) == expected(0, 300, {3, 7}));
}

TEST_CASE("a selection restricts what one peer is given, and the peer gets the rest from others",
          "[subscription]") {
  Node hub, tablet, laptop;
  ProjectId p = shared_project(hub, tablet);
  add_to(hub, p, laptop);
  write_district_docs(hub, p, 0, 300);
  REQUIRE(hub.store->set_selection(p, tablet.store->device_id(), kDistrict7).ok());
  auto sels = hub.store->selections(p);
  REQUIRE(sels.ok());
  CHECK(sels->size() == 1);
  CHECK_FALSE(hub.store->set_selection(p, hub.store->device_id(), kDistrict7).ok());
  // The tablet wants everything, but the hub gives it district 7 only.
  sync_once(hub, tablet);
  CHECK(doc_ids(tablet, p) == expected(0, 300, {7}));
  CHECK(vv(tablet, p) == vv(hub, p));
  auto given = tablet.store->given_by(p, hub.store->device_id());
  REQUIRE(given.ok());
  CHECK(*given == kDistrict7);
  // Meeting the hub again costs no batch: the tablet does not ask the hub again.
  auto again = sync_once(hub, tablet);
  CHECK(again.a.sent == 0);
  // Others are not restricted, and the tablet gets the rest from them.
  sync_once(hub, laptop);
  CHECK(doc_ids(laptop, p) == expected(0, 300, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  sync_once(laptop, tablet);
  CHECK(doc_ids(tablet, p) == doc_ids(hub, p));
  auto whole = tablet.store->whole_heads(p);
  REQUIRE(whole.ok());
  CHECK(whole->empty());
  // New writes: the hub gives the tablet its district only, the laptop the rest.
  write_district_docs(hub, p, 300, 20);
  auto third = sync_once(hub, tablet);
  CHECK(third.b.applied == 2);
  sync_once(hub, laptop);
  sync_once(laptop, tablet);
  CHECK(doc_ids(tablet, p) == doc_ids(hub, p));
  // Lifting the selection: the hub says so, and the tablet stops treating it as restricting.
  REQUIRE(hub.store->set_selection(p, tablet.store->device_id(), Subscription{}).ok());
  sync_once(hub, tablet);
  auto now = tablet.store->given_by(p, hub.store->device_id());
  REQUIRE(now.ok());
  CHECK(now->everything());
}

TEST_CASE("leaving a project removes its subscription, selections and left-out bookkeeping",
          "[subscription]") {
  Node hub, phone;
  ProjectId p = shared_project(hub, phone);
  write_district_docs(hub, p, 0, 50);
  REQUIRE(phone.store->set_subscription(p, kDistrict7).ok());
  REQUIRE(phone.store->set_selection(p, hub.store->device_id(), kDistrict7).ok());
  sync_once(hub, phone);
  auto whole = phone.store->whole_heads(p);
  REQUIRE(whole.ok());
  REQUIRE_FALSE(whole->empty());
  REQUIRE(phone.store->leave_project(p).ok());
  CHECK(phone.store->subscription(p).error().code == Errc::not_found);
  auto info = hub.store->get_project(p);
  auto secret = hub.store->project_secret(p);
  REQUIRE(info.ok());
  REQUIRE(secret.ok());
  REQUIRE(phone.store->add_project(*info, *secret).ok());
  auto sub = phone.store->subscription(p);
  REQUIRE(sub.ok());
  CHECK(sub->everything());
  auto sels = phone.store->selections(p);
  REQUIRE(sels.ok());
  CHECK(sels->empty());
  whole = phone.store->whole_heads(p);
  REQUIRE(whole.ok());
  CHECK(whole->empty());
  auto asked = phone.store->request_vector(p);
  REQUIRE(asked.ok());
  CHECK(asked->empty());
  sync_once(hub, phone);
  CHECK(doc_ids(phone, p) == doc_ids(hub, p));
}
