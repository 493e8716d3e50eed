// A member is not trusted either: batches a project member crafts and signs with its own
// key, fed in through a session (the sync path), are refused or have no effect. Also the
// PROJECTS padding and the oversized-batch fallback.
#include "sync_test_util.hpp"

#include <chrono>

#include "crypto/crypto.hpp"
#include "storage/records.hpp"
#include "storage/version_codec.hpp"
#include "sync/messages.hpp"
#include "sync/wire_error.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

storage::VersionVector vv(Node& n, const ProjectId& p) {
  auto v = n.store->version_vector(p);
  REQUIRE(v.ok());
  return *v;
}

std::uint64_t hlc_now() {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  return static_cast<std::uint64_t>(ms) << 16;
}

// Builds a log run of `evil`'s own, signed with its key, with whatever headers it likes.
struct Forger {
  Forger(Node& e, const ProjectId& p)
      : evil(e), project(p), chain(storage::chain_genesis(p, e.store->device_id())) {}
  Node& evil;
  ProjectId project;
  crypto::Digest chain;
  std::uint64_t seq = 0;
  std::uint64_t hlc = hlc_now();
  storage::LogBatch batch;

  DeviceId me() const { return evil.store->device_id(); }

  storage::VersionHeader header(const std::string& collection, const std::string& doc,
                                const std::optional<std::string>& body) {
    storage::VersionHeader h;
    h.project = project;
    h.collection = collection;
    h.doc_id = doc;
    h.author = me();
    h.hlc = ++hlc;
    h.kind = body ? storage::VersionKind::put : storage::VersionKind::tombstone;
    if (body) {
      h.body_hash = crypto::sha256(as_bytes(*body));
      h.body_size = static_cast<std::uint32_t>(body->size());
    }
    return h;
  }

  void add_raw(const Bytes& header_bytes, std::optional<std::string> body) {
    ++seq;
    storage::LogEntry e{seq, storage::version_id_of(header_bytes), header_bytes, std::move(body)};
    chain = storage::chain_next(chain, seq, e.id);
    batch.entries.push_back(std::move(e));
  }
  void add(const storage::VersionHeader& h, std::optional<std::string> body) {
    add_raw(storage::encode_header(h), std::move(body));
  }

  storage::LogBatch signed_batch() {
    storage::LogBatch b = batch;
    b.author = me();
    b.checkpoints.push_back(storage::Checkpoint{
        seq, chain,
        evil.store->signing_key().sign(storage::checkpoint_message(project, me(), seq, chain)),
        std::nullopt});
    return b;
  }
};

// `victim`'s session after a member's handshake; feeds `batch` as a BATCH frame.
struct Fed {
  std::unique_ptr<Session> s;
  Fed(Node& victim, Node& evil, const ProjectId& p, const storage::LogBatch& batch) {
    s = std::make_unique<Session>(*victim.store, params("victim"));
    s->start();
    Bytes in;
    Hello h;
    h.device = evil.store->device_id();
    h.device_name = "member";
    encode_hello(in, h);
    auto secret = evil.store->project_secret(p);
    REQUIRE(secret.ok());
    encode_projects(
        in, Projects{{membership_proof(*secret, Bytes(32, 0x42), evil.store->device_id())}});
    encode_vector(in, MsgType::vv, VectorMsg{p, {}});
    s->receive(in);
    REQUIRE(s->state() == SessionState::active);
    in.clear();
    encode_batch(in, Batch{p, batch});
    s->receive(in);
  }
};

}  // namespace

TEST_CASE("a member's crafted batches are refused and change nothing", "[sync][hostile]") {
  Node victim, evil;
  ProjectId p = shared_project(victim, evil);
  auto other = victim.store->create_project("other");
  REQUIRE(other.ok());
  Forger f(evil, p);
  std::string body = R"({"n":1})";

  SECTION("a sequence gap at the start") {
    f.add(f.header("obs", "a", body), body);
    f.add(f.header("obs", "b", body), body);
    auto b = f.signed_batch();
    b.entries.erase(b.entries.begin());  // starts at seq 2; we hold nothing
    Fed fed(victim, evil, p, b);
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->code == Errc::verification_failed);
    CHECK(fed.s->error()->message.find("starts at seq 2") != std::string::npos);
  }
  SECTION("a sequence gap inside the run") {
    f.add(f.header("obs", "a", body), body);
    f.add(f.header("obs", "b", body), body);
    f.add(f.header("obs", "c", body), body);
    auto b = f.signed_batch();
    b.entries.erase(b.entries.begin() + 1);
    Fed fed(victim, evil, p, b);
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->code == Errc::verification_failed);
    CHECK(fed.s->error()->message.find("not contiguous") != std::string::npos);
  }
  SECTION("a version of another project") {
    auto h = f.header("obs", "a", body);
    h.project = other->id;
    f.add(h, body);
    Fed fed(victim, evil, p, f.signed_batch());
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->message.find("another project") != std::string::npos);
  }
  SECTION("a tombstone with a body") {
    f.add(f.header("obs", "a", std::nullopt), body);
    Fed fed(victim, evil, p, f.signed_batch());
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->message.find("tombstone with a body") != std::string::npos);
  }
  SECTION("a malformed header") {
    Bytes h = storage::encode_header(f.header("obs", "a", body));
    h.resize(h.size() - 3);
    f.add_raw(h, body);
    Fed fed(victim, evil, p, f.signed_batch());
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->code == Errc::verification_failed);
    CHECK(fed.s->error()->message.find("malformed version header") != std::string::npos);
  }
  SECTION("parents unsorted or duplicated") {
    VersionId x, y;
    x.bytes.fill(0x11);
    y.bytes.fill(0x22);
    auto h = f.header("obs", "a", body);
    bool dup = GENERATE(false, true);
    h.parents = dup ? std::vector<VersionId>{x, x} : std::vector<VersionId>{y, x};
    f.add(h, body);
    Fed fed(victim, evil, p, f.signed_batch());
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->message.find("parents are not sorted and unique") != std::string::npos);
  }
  SECTION("an invalid collection name") {
    auto h = f.header("obs", "a", body);
    h.collection = "obs/../x";
    f.add(h, body);
    Fed fed(victim, evil, p, f.signed_batch());
    CHECK(fed.s->state() == SessionState::failed);
    CHECK(fed.s->error()->message.find("invalid collection") != std::string::npos);
  }
  // Nothing of the refused batch entered the store.
  CHECK(vv(victim, p).count(evil.store->device_id()) == 0);
  CHECK_FALSE(victim.store->get_document(p, "obs", "a").ok());
}

TEST_CASE("a _members record written by a non-coordinator member has no effect",
          "[sync][hostile]") {
  Node victim, evil, third;
  ProjectId p = shared_project(victim, evil);
  // evil is a listed member (not a coordinator); third is nobody.
  REQUIRE(victim.store->set_member(p, evil.store->device_id(), storage::Role::member, "evil").ok());
  auto before = victim.store->members(p);
  REQUIRE(before.ok());
  Forger f(evil, p);
  auto record = [&](const DeviceId& who, const std::string& role) {
    std::string b = R"({"role":")" + role + R"(","name":"forged"})";
    f.add(f.header(std::string(storage::kMembersCollection), who.str(), b), b);
  };
  record(evil.store->device_id(), "coordinator");   // promote itself
  record(victim.store->device_id(), "removed");     // remove the creator
  record(third.store->device_id(), "coordinator");  // bring in an accomplice
  Fed fed(victim, evil, p, f.signed_batch());
  // The log itself is well formed and signed: accepted and relayed, but without authority.
  CHECK(fed.s->state() == SessionState::active);
  auto after = victim.store->members(p);
  REQUIRE(after.ok());
  CHECK(after->size() == before->size());
  auto me = victim.store->member(p, victim.store->device_id());
  REQUIRE(me.ok());
  REQUIRE(me->has_value());
  CHECK((*me)->role == storage::Role::coordinator);
  auto ev = victim.store->member(p, evil.store->device_id());
  REQUIRE(ev.ok());
  REQUIRE(ev->has_value());
  CHECK((*ev)->role == storage::Role::member);
  auto th = victim.store->member(p, third.store->device_id());
  REQUIRE(th.ok());
  CHECK_FALSE(th->has_value());
  // The coordinator can still change members (its authority is intact).
  CHECK(victim.store->set_member(p, third.store->device_id(), storage::Role::member, "third").ok());
}

TEST_CASE("PROJECTS is padded so the number of projects does not leak", "[sync][wire]") {
  auto proofs_sent = [](int projects) {
    Node n, peer;
    for (int i = 0; i < projects; ++i)
      REQUIRE(n.store->create_project("p" + std::to_string(i)).ok());
    Session s(*n.store, params("n"));
    s.start();
    Bytes in;
    Hello h;
    h.device = peer.store->device_id();
    encode_hello(in, h);
    s.receive(in);
    FrameDecoder d(64u << 20);
    d.feed(s.take_output(1 << 20));
    for (;;) {
      auto f = d.next();
      REQUIRE(f.ok());
      REQUIRE(*f);
      if ((*f)->type != static_cast<std::uint8_t>(MsgType::projects)) continue;
      auto m = decode_projects((*f)->payload, DecodeLimits{});
      REQUIRE(m.ok());
      return m->proofs.size();
    }
  };
  CHECK(proofs_sent(0) == kProjectsBucket);
  CHECK(proofs_sent(1) == kProjectsBucket);
  CHECK(proofs_sent(3) == kProjectsBucket);
  CHECK(proofs_sent(int(kProjectsBucket) + 1) == 2 * kProjectsBucket);
}

TEST_CASE("a batch too big for the peer's frame limit falls back to smaller runs", "[sync]") {
  Node a(2), b(2);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 40, std::string(1000, 'x'));  // ~1 KB bodies, a checkpoint every 2
  SessionOptions big;
  big.batch_entries = 100;  // 100 KB per batch: over b's limit
  SessionOptions small;
  small.max_frame_bytes = 8192;
  Session sa(*a.store, params("a", big)), sb(*b.store, params("b", small));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  CHECK(sa.error() == std::nullopt);
  CHECK(sb.error() == std::nullopt);
  CHECK(vv(b, p) == vv(a, p));
  CHECK(sa.progress().projects.at(0).sent == 40);
}

TEST_CASE("a single log run larger than the peer's frame limit fails with too_large", "[sync]") {
  Node a(1), b(1);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 1, std::string(6000, 'x'));
  SessionOptions small;
  small.max_frame_bytes = 4096;
  Session sa(*a.store, params("a")), sb(*b.store, params("b", small));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sa.error());
  CHECK(sa.error()->code == Errc::too_large);
  CHECK(sa.error()->message.find("does not fit in one frame") != std::string::npos);
  REQUIRE(sb.error());
  CHECK(sb.error()->code == Errc::too_large);
  CHECK(vv(b, p).empty());
}
