// Joining a project with an invite over a Session (JOIN/JOINED, docs/protocol.md "Joining"):
// two or three real Stores joined through the in-memory pipe.
#include "sync_test_util.hpp"

#include "common/clock.hpp"
#include "sync/join.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

InviteCode invite(Node& inviter, const ProjectId& p, std::int64_t expires_ms = 0) {
  auto inv = inviter.store->create_invite(p, storage::Role::member,
                                          expires_ms ? expires_ms : unix_ms() + 60000);
  REQUIRE(inv.ok());
  InviteCode c;
  c.inviter = inviter.store->device_id();
  c.project = p;
  c.project_name = "survey";
  c.invite_id = inv->id;
  c.secret = inv->secret;
  c.expires_ms = inv->expires_ms;
  c.addresses = {"127.0.0.1:7891"};
  return c;
}

bool has_project(Node& n, const ProjectId& p) { return n.store->get_project(p).ok(); }

}  // namespace

TEST_CASE("a device joins with an invite and syncs the project on the same session",
          "[sync][join]") {
  Node a, b;
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  a.write_docs(p->id, 0, 30);
  InviteCode code = invite(a, p->id);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  REQUIRE(sb.join(code).ok());
  CHECK_FALSE(sb.join(code).ok());  // one join at a time
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sb.join_result().has_value());
  REQUIRE(sb.join_result()->ok());
  CHECK((*sb.join_result())->id == p->id);
  CHECK(has_project(b, p->id));
  CHECK(doc(b, p->id, "d29").body == doc(a, p->id, "d29").body);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  CHECK(a.store->member(p->id, b.store->device_id()).value()->role == storage::Role::member);
  // Writes after joining flow both ways on the live session.
  b.write_docs(p->id, 100, 3, "from-b");
  pipe.run();
  CHECK(doc(a, p->id, "d101").body->find("from-b") != std::string::npos);
  // The membership record written by the inviter reached the joiner.
  CHECK(b.store->member(p->id, b.store->device_id()).value().has_value());
}

TEST_CASE("a used invite is refused with the inviter's reason and shares nothing", "[sync][join]") {
  Node a, b, c;
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  InviteCode code = invite(a, p->id);
  {
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    REQUIRE(sb.join(code).ok());
    sa.start();
    sb.start();
    Pipe{sa, sb}.run();
    REQUIRE(sb.join_result()->ok());
  }
  Session sa(*a.store, params("a")), sc(*c.store, params("c"));
  REQUIRE(sc.join(code).ok());
  sa.start();
  sc.start();
  Pipe{sa, sc}.run();
  REQUIRE(sc.join_result().has_value());
  REQUIRE_FALSE(sc.join_result()->ok());
  CHECK(sc.join_result()->error().code == Errc::failed_precondition);
  CHECK(sc.join_result()->error().message.find("invite already used") != std::string::npos);
  CHECK(sc.state() == SessionState::failed);
  CHECK(sa.state() == SessionState::failed);
  CHECK_FALSE(has_project(c, p->id));
}

TEST_CASE("an expired invite is refused by the inviter", "[sync][join]") {
  Node a, b;
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  InviteCode code = invite(a, p->id, unix_ms() - 1);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  REQUIRE(sb.join(code).ok());
  sa.start();
  sb.start();
  Pipe{sa, sb}.run();
  REQUIRE_FALSE(sb.join_result()->ok());
  CHECK(sb.join_result()->error().message.find("invite expired") != std::string::npos);
  CHECK_FALSE(has_project(b, p->id));
}

TEST_CASE("JOIN is bound to the inviter, the channel and the joiner", "[sync][join]") {
  Node a, b, other;
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  SECTION("the peer is not the device that made the invite") {
    InviteCode code = invite(a, p->id);
    code.inviter = other.store->device_id();
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    REQUIRE(sb.join(code).ok());
    sa.start();
    sb.start();
    Pipe{sa, sb}.run();
    REQUIRE_FALSE(sb.join_result()->ok());
    CHECK(sb.join_result()->error().code == Errc::unauthenticated);
  }
  SECTION("a proof made for another channel is refused and the invite stays open") {
    InviteCode code = invite(a, p->id);
    auto pa = params("a");
    pa.channel_binding = Bytes(32, 0x01);  // the two ends disagree: as if replayed
    Session sa(*a.store, pa), sb(*b.store, params("b"));
    REQUIRE(sb.join(code).ok());
    sa.start();
    sb.start();
    Pipe{sa, sb}.run();
    REQUIRE_FALSE(sb.join_result()->ok());
    CHECK(sb.join_result()->error().code == Errc::permission_denied);
    auto invites = a.store->list_invites(p->id);
    REQUIRE(invites.ok());
    CHECK_FALSE(invites->front().used_by.has_value());
  }
}

TEST_CASE("a device joins a second project over a live session", "[sync][join]") {
  Node a, b;
  ProjectId p1 = shared_project(a, b);
  auto p2 = a.store->create_project("second");
  REQUIRE(p2.ok());
  a.write_docs(p2->id, 0, 20);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sb.in_sync());
  REQUIRE(sb.join(invite(a, p2->id)).ok());
  pipe.run();
  REQUIRE(sb.join_result()->ok());
  CHECK(sb.common_projects().size() == 2);
  CHECK(doc(b, p2->id, "d19").body == doc(a, p2->id, "d19").body);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  (void)p1;
}

TEST_CASE("JOIN and JOINED out of place fail the session", "[sync][join]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  SECTION("JOINED nobody asked for") {
    Session sb(*b.store, params("b"));
    sb.start();
    Bytes in;
    Hello h;
    h.device = a.store->device_id();
    h.device_name = "a";
    encode_hello(in, h);
    Joined j;
    j.project = *a.store->get_project(p);
    encode_joined(in, j);
    sb.receive(in);
    CHECK(sb.state() == SessionState::failed);
    CHECK(sb.error()->code == Errc::failed_precondition);
  }
  SECTION("JOIN before HELLO") {
    Session sa(*a.store, params("a"));
    sa.start();
    Bytes in;
    encode_join(in, Join{});
    sa.receive(in);
    CHECK(sa.state() == SessionState::failed);
  }
}

// --- trust policy (sync.trust_policy) ---

namespace {
SessionParams asking(std::string name) {
  SessionOptions o;
  o.trust_policy = TrustPolicy::ask;
  return params(std::move(name), o);
}
}  // namespace

TEST_CASE("trust_policy ask holds a device that only knows the secret until approved",
          "[sync][trust]") {
  Node a, b;
  ProjectId p = shared_project(a, b);  // b has the secret but no member record
  a.write_docs(p, 0, 20);
  Session sa(*a.store, asking("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  CHECK(sa.state() == SessionState::active);  // held open, not refused
  CHECK(sa.pending_projects() == std::vector<ProjectId>{p});
  CHECK(sa.common_projects().empty());
  CHECK_FALSE(sa.in_sync());
  CHECK_FALSE(b.store->get_document(p, "obs", "d0").ok());  // nothing flowed
  // b was told it waits for a's approval (NOTICE awaiting_approval), not left "syncing".
  REQUIRE(sb.peer_notices().awaiting.count(p) == 1);
  CHECK(sb.peer_notices().awaiting.at(p).find("waiting for approval by a") != std::string::npos);
  sa.approve();
  pipe.run();
  CHECK(sa.pending_projects().empty());
  CHECK(sb.peer_notices().awaiting.empty());  // a's VV ended the wait
  CHECK(doc(b, p, "d19").body == doc(a, p, "d19").body);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
}

TEST_CASE("a session closed because its device shuts down is no failure for the peer",
          "[sync][trust]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 3);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sb.in_sync());
  sa.close("shutting down");
  pipe.run();
  CHECK(sa.state() == SessionState::closed);
  CHECK_FALSE(sa.error().has_value());
  CHECK(sb.state() == SessionState::closed);  // not failed
  CHECK_FALSE(sb.error().has_value());
  REQUIRE(sb.peer_notices().closing.has_value());
  CHECK(sb.peer_notices().closing->find("a (") == 0);
  sb.transport_closed("end of stream");  // the connection then ends: still no failure
  CHECK(sb.state() == SessionState::closed);
  CHECK_FALSE(sb.error().has_value());
}

TEST_CASE("trust_policy ask accepts listed members and the creator at once", "[sync][trust]") {
  Node a, b;
  ProjectId p = shared_project(a, b);  // a created it
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::member).ok());
  a.write_docs(p, 0, 5);
  Session sa(*a.store, asking("a")), sb(*b.store, asking("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  CHECK(sa.pending_projects().empty());  // b is a listed member on a
  CHECK(sb.pending_projects().empty());  // a is the creator, also on b
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
}

TEST_CASE("trust_policy ask admits a pending device when its membership record arrives",
          "[sync][trust]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 5);
  Session sa(*a.store, asking("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sa.pending_projects().size() == 1);
  // The coordinator adds b as a member (here, or it arrives by sync from another device).
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::member).ok());
  pipe.run();
  CHECK(sa.pending_projects().empty());
  CHECK(sa.in_sync());
  CHECK(doc(b, p, "d4").body == doc(a, p, "d4").body);
}

TEST_CASE("a removed device is refused whatever the trust policy, approved or not",
          "[sync][trust]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::removed).ok());
  auto pa = asking("a");
  pa.peer_approved = true;
  Session sa(*a.store, pa), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe{sa, sb}.run();
  CHECK(sa.state() == SessionState::failed);
  CHECK(sa.error()->code == Errc::permission_denied);
  REQUIRE(sb.error().has_value());
  CHECK(sb.error()->code == Errc::permission_denied);
  CHECK(sb.error()->message.find("device removed from the project") != std::string::npos);
  // b is told which project (NOTICE removed), not just "no common project".
  REQUIRE(sb.peer_notices().removed.count(p) == 1);
  CHECK(sb.peer_notices().removed.at(p).find("removed from project") != std::string::npos);
}

TEST_CASE("a device removed from one project still syncs the others, told which it lost",
          "[sync][trust]") {
  Node a, b;
  ProjectId gone = shared_project(a, b);
  ProjectId kept = shared_project(a, b);
  a.write_docs(kept, 0, 5);
  b.write_docs(gone, 100, 3, "b");
  REQUIRE(a.store->set_member(gone, b.store->device_id(), storage::Role::removed).ok());
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  // b's VV for the lost project crossed a's NOTICE: dropped, not a reason to end the session.
  CHECK(sa.state() == SessionState::active);
  CHECK(sb.state() == SessionState::active);
  CHECK(sa.common_projects() == std::vector<ProjectId>{kept});
  CHECK(sb.common_projects() == std::vector<ProjectId>{kept});
  REQUIRE(sb.peer_notices().removed.count(gone) == 1);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());  // not stuck waiting for the project a refuses
  CHECK(doc(b, kept, "d4").body == doc(a, kept, "d4").body);
  CHECK_FALSE(a.store->get_document(gone, "obs", "d100").ok());
}

TEST_CASE("JOIN and JOINED decoders and a joining session survive random and mutated input",
          "[sync][join][fuzz]") {
  Node a, b;
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  InviteCode code = invite(a, p->id);
  Joined good;
  good.project = *p;
  good.role = storage::Role::member;
  Bytes joined_frame, join_frame;
  encode_joined(joined_frame, good);
  encode_join(join_frame, make_join(code, Bytes(32, 0x42), b.store->device_id()));
  std::mt19937 rng(20261123);
  for (int round = 0; round < 3000; ++round) {
    const Bytes& base = round % 2 ? joined_frame : join_frame;
    Bytes payload(base.begin() + kFrameHeaderBytes, base.end());
    switch (round % 3) {
      case 0:  // flip bytes
        for (int k = 0; k < 3 && !payload.empty(); ++k)
          payload[rng() % payload.size()] ^= std::uint8_t(1 + rng() % 255);
        break;
      case 1:  // truncate or extend
        payload.resize(rng() % (payload.size() + 8), std::uint8_t(rng()));
        break;
      default:  // random
        payload.resize(rng() % 200);
        for (auto& x : payload) x = std::uint8_t(rng());
    }
    (void)decode_join(payload);
    auto d = decode_joined(payload);
    if (d.ok()) CHECK((d->role == storage::Role::member || d->role == storage::Role::coordinator));
    if (round % 50 != 0) continue;
    // The joiner's session fed the inviter's HELLO and the mutated JOINED.
    Session sb(*b.store, params("b"));
    REQUIRE(sb.join(code).ok());
    sb.start();
    Bytes in;
    Hello h;
    h.device = a.store->device_id();
    h.device_name = "a";
    encode_hello(in, h);
    encode_frame(in, kMsgJoined, payload);
    sb.receive(in);
    REQUIRE(sb.join_result().has_value());
    if (sb.join_result()->ok())
      CHECK((*sb.join_result())->id == p->id);
    else
      CHECK(sb.state() == SessionState::failed);
    (void)sb.take_output(1 << 20);
  }
  // Only the project the code names can ever be added (the inviter is pinned by TLS).
  auto list = b.store->list_projects();
  REQUIRE(list.ok());
  for (const auto& q : *list) CHECK(q.id == p->id);
}

TEST_CASE("with trust_policy ask the joiner trusts an inviter that is not the creator",
          "[sync][trust][join]") {
  Node a, c, b;
  ProjectId p = shared_project(a, c);
  REQUIRE(a.store->set_member(p, c.store->device_id(), storage::Role::coordinator).ok());
  a.write_docs(p, 0, 5);
  {
    Session sa(*a.store, params("a")), sc(*c.store, params("c"));
    sa.start();
    sc.start();
    Pipe{sa, sc}.run();
    REQUIRE(sc.in_sync());
  }
  InviteCode code = invite(c, p);  // c is a coordinator, not the creator
  Session sc(*c.store, params("c")), sb(*b.store, asking("b"));
  REQUIRE(sb.join(code).ok());
  sc.start();
  sb.start();
  Pipe{sc, sb, &c, &b}.run();
  REQUIRE(sb.join_result()->ok());
  CHECK(sb.pending_projects().empty());
  CHECK(sb.in_sync());
  CHECK(doc(b, p, "d4").body == doc(a, p, "d4").body);
}
