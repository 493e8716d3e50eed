#include <catch2/catch.hpp>

#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::TempDir;

namespace {

struct Team {
  TempDir da, db, dc;
  std::unique_ptr<Store> a = open_store(da.path());  // coordinator (creator)
  std::unique_ptr<Store> b = open_store(db.path());
  std::unique_ptr<Store> c = open_store(dc.path());
  ProjectId p;
  Team() {
    auto info = a->create_project("health survey");
    REQUIRE(info.ok());
    p = info->id;
    auto secret = a->project_secret(p).value();
    REQUIRE(b->add_project(*info, secret).ok());
    REQUIRE(c->add_project(*info, secret).ok());
  }
  Role role_on(Store& s, const DeviceId& d) {
    auto m = s.member(p, d);
    REQUIRE(m.ok());
    REQUIRE(m->has_value());
    return (*m)->role;
  }
};

}  // namespace

TEST_CASE("the creator is the first coordinator and only coordinators change members",
          "[storage][members]") {
  Team t;
  CHECK(t.role_on(*t.a, t.a->device_id()) == Role::coordinator);
  CHECK(t.role_on(*t.b, t.a->device_id()) == Role::coordinator);  // known from the project itself
  auto denied = t.b->set_member(t.p, t.c->device_id(), Role::coordinator);
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().code == Errc::permission_denied);
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::member, "tablet 2").ok());
  copy_logs(*t.a, *t.b, t.p);
  CHECK(t.role_on(*t.b, t.b->device_id()) == Role::member);
  CHECK(t.b->member(t.p, t.b->device_id()).value()->name == "tablet 2");
  // Membership changes appear on the changes feed.
  auto ch = t.b->changes_since(t.p, 0, 10).value();
  REQUIRE(ch.size() == 1);
  CHECK(ch[0].collection == kMembersCollection);
}

TEST_CASE("records from a device without authority are ignored everywhere", "[storage][members]") {
  Team t;
  // B forges a membership record by writing the reserved collection through the log.
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::member).ok());
  copy_logs(*t.a, *t.b, t.p);
  auto w = t.b->write(t.p, put("_members", t.c->device_id().str(), R"({"role":"coordinator"})"));
  REQUIRE_FALSE(w.ok());  // apps cannot write reserved collections
  CHECK(w.error().message.find("reserved") != std::string::npos);
  CHECK(t.b->set_member(t.p, t.c->device_id(), Role::coordinator).error().code ==
        Errc::permission_denied);
  CHECK_FALSE(t.a->member(t.p, t.c->device_id()).value());
}

TEST_CASE("invites are single use and expire", "[storage][members]") {
  Team t;
  auto inv = t.a->create_invite(t.p, Role::member, 1000);
  REQUIRE(inv.ok());
  CHECK(t.b->create_invite(t.p, Role::member, 1000).error().code == Errc::permission_denied);
  CHECK(t.a->get_invite(inv->id)->secret == inv->secret);
  auto used = t.a->redeem_invite(inv->id, t.b->device_id(), 999);
  REQUIRE(used.ok());
  CHECK(t.role_on(*t.a, t.b->device_id()) == Role::member);
  auto again = t.a->redeem_invite(inv->id, t.c->device_id(), 999);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::failed_precondition);
  CHECK(again.error().message == "invite already used");
  auto late = t.a->create_invite(t.p, Role::member, 1000);
  auto expired = t.a->redeem_invite(late->id, t.c->device_id(), 1001);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.error().message == "invite expired");
  std::array<std::uint8_t, 16> unknown{};
  CHECK(t.a->redeem_invite(unknown, t.c->device_id(), 0).error().code == Errc::not_found);
  CHECK(t.a->list_invites(t.p)->size() == 2);
}

TEST_CASE("a removed device's later versions are ignored, also when relayed",
          "[storage][members]") {
  Team t;
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::member).ok());
  copy_logs(*t.a, *t.b, t.p);
  REQUIRE(t.b->write(t.p, put("obs", "before", R"({"ok":true})")).ok());
  copy_logs(*t.b, *t.a, t.p);
  REQUIRE(t.a->set_member(t.p, t.b->device_id(), Role::removed).ok());
  CHECK(t.a->member(t.p, t.b->device_id()).value()->max_seq == 1);
  // B (not yet aware) keeps writing, and edits the older document too.
  REQUIRE(t.b->write(t.p, put("obs", "after", R"({"forged":true})")).ok());
  REQUIRE(t.b->write(t.p, put("obs", "before", R"({"ok":false})")).ok());

  SECTION("removal known first") {
    copy_logs(*t.a, *t.c, t.p);
    copy_logs(*t.b, *t.c, t.p);  // relayed B data arrives after the removal
    CHECK(t.c->get_document(t.p, "obs", "after").error().code == Errc::not_found);
    CHECK(*t.c->get_document(t.p, "obs", "before")->body == R"({"ok":true})");
  }
  SECTION("removal arrives after the data (retroactive)") {
    copy_logs(*t.b, *t.c, t.p);
    CHECK(t.c->get_document(t.p, "obs", "after").ok());
    copy_logs(*t.a, *t.c, t.p);
    CHECK(t.c->get_document(t.p, "obs", "after").error().code == Errc::not_found);
    auto before = t.c->get_document(t.p, "obs", "before");
    REQUIRE(before.ok());
    CHECK(*before->body == R"({"ok":true})");
    CHECK(before->heads.size() == 1);
  }
  // Either way the vectors stay exact, so nothing is re-sent.
  CHECK(t.c->version_vector(t.p)->at(t.b->device_id()) == 3);
  CHECK(copy_logs(*t.b, *t.c, t.p) == 0);
}

TEST_CASE("leaving a project removes it from this device only", "[storage][members]") {
  Team t;
  REQUIRE(t.a->write(t.p, put("obs", "x", "{}")).ok());
  copy_logs(*t.a, *t.b, t.p);
  REQUIRE(t.b->create_invite(t.p, Role::member, 10).error().code == Errc::permission_denied);
  REQUIRE(t.b->leave_project(t.p).ok());
  CHECK(t.b->get_project(t.p).error().code == Errc::not_found);
  CHECK(t.b->list_projects()->empty());
  CHECK(t.a->get_document(t.p, "obs", "x").ok());
  // Joining again starts from scratch and syncs everything again.
  REQUIRE(t.b->add_project(t.a->get_project(t.p).value(), t.a->project_secret(t.p).value()).ok());
  CHECK(copy_logs(*t.a, *t.b, t.p) == 1);
}

TEST_CASE("peer records persist", "[storage]") {
  TempDir d;
  DeviceId peer;
  peer.bytes.fill(7);  // any id but this device's will do
  {
    auto s = open_store(d.path());
    REQUIRE(s->save_peer(PeerRecord{peer, "hub", {"tcp://10.0.0.5:7891"}, true, 1, 2}).ok());
  }
  auto s = open_store(d.path());
  auto peers = s->load_peers();
  REQUIRE(peers.ok());
  REQUIRE(peers->size() == 1);
  CHECK(peers->front().name == "hub");
  CHECK(peers->front().addresses == std::vector<std::string>{"tcp://10.0.0.5:7891"});
  CHECK(peers->front().approved);
  REQUIRE(s->forget_peer(peer).ok());
  CHECK(s->load_peers()->empty());
}
