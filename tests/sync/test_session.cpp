// Session engine tests: two real Stores joined through an in-memory pipe.
#include "sync_test_util.hpp"

#include "config/config.hpp"
#include "sync/messages.hpp"
#include "sync/session_options.hpp"
#include "sync/wire_error.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

SessionOptions small_batches() {
  SessionOptions o;
  o.batch_entries = 50;
  o.window_batches = 2;
  return o;
}

storage::VersionVector vv(Node& n, const ProjectId& p) {
  auto v = n.store->version_vector(p);
  REQUIRE(v.ok());
  return *v;
}

// Splits a byte string into frames (type, payload copy).
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

bool has_error_frame(const Bytes& out, Errc code) {
  for (auto& [t, p] : frames_of(out)) {
    if (t != static_cast<std::uint8_t>(MsgType::error)) continue;
    auto e = decode_error(p);
    if (e.ok() && from_wire_code(e->code) == code) return true;
  }
  return false;
}

// Hand-driven peer: plays device `from` (a real store, for ids, secrets and logs) against
// session `s`, up to the point where `s` is active and expects batches.
struct FakePeer {
  Node& from;
  ProjectId project;
  Bytes binding = Bytes(32, 0x42);

  void handshake(Session& s, const storage::VersionVector& heads = {}) {
    Bytes in;
    Hello h;
    h.device = from.store->device_id();
    h.device_name = "fake";
    h.max_frame_bytes = 4u << 20;
    encode_hello(in, h);
    auto secret = from.store->project_secret(project);
    REQUIRE(secret.ok());
    encode_projects(in, Projects{{membership_proof(*secret, binding, from.store->device_id())}});
    encode_vector(in, MsgType::vv, VectorMsg{project, heads});
    s.receive(in);
    REQUIRE(s.state() == SessionState::active);
  }
};

}  // namespace

TEST_CASE("initial sync copies every version and both sides end in sync", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 600);
  Session sa(*a.store, params("a", small_batches())), sb(*b.store, params("b", small_batches()));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sa.state() == SessionState::active);
  REQUIRE(sb.state() == SessionState::active);
  CHECK(vv(a, p) == vv(b, p));
  CHECK(doc(b, p, "d599").body == doc(a, p, "d599").body);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  auto pa = sa.progress();
  REQUIRE(pa.projects.size() == 1);
  CHECK(pa.projects[0].sent == 600);
  CHECK(pa.projects[0].to_send == 0);
  CHECK(pa.projects[0].last_sync_ms > 0);
  auto pb = sb.progress();
  CHECK(pb.projects[0].applied == 600);
  CHECK(pb.peer == a.store->device_id());
  CHECK(pb.peer_name == "a");
  // Every checkpoint arrived with its run's seal (both sides announce seals).
  auto log = b.store->read_log(p, a.store->device_id(), 0, 1000, 1 << 30);
  REQUIRE(log.ok());
  REQUIRE(log->checkpoints.size() >= 3);
  std::uint64_t from = 0;
  for (const auto& c : log->checkpoints) {
    REQUIRE(c.seal.has_value());
    CHECK(c.seal->from == from);
    from = c.seq;
  }
}

TEST_CASE("live session pushes new local writes and updates", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 10);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sb.in_sync());
  std::size_t before = pipe.moved;
  a.write_docs(p, 5, 10, "second");  // 5 updates + 5 new
  b.write_docs(p, 100, 3, "from-b");
  pipe.run();
  CHECK(vv(a, p) == vv(b, p));
  CHECK(doc(b, p, "d7").body == doc(a, p, "d7").body);
  CHECK(doc(b, p, "d7").body->find("second") != std::string::npos);
  CHECK(doc(a, p, "d101").body->find("from-b") != std::string::npos);
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  CHECK(pipe.moved - before < 10000);
}

TEST_CASE("a fresh session after a sync sends only the vectors", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 300);
  b.write_docs(p, 1000, 300);
  {
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb};
    pipe.run();
    REQUIRE(vv(a, p) == vv(b, p));
  }
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb};
  pipe.run();
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  CHECK(sa.progress().projects[0].sent == 0);
  // HELLO, PROJECTS (one proof padded to a bucket of 16-byte proofs), VV (2 authors), DONE
  // each way.
  CHECK(pipe.moved < 600 + 2 * (kProjectsBucket - 1) * kProofBytesV2);
}

TEST_CASE("a device of the previous release (protocol 1) syncs with this one, both ways",
          "[sync][versions]") {
  Node a, b, c;
  ProjectId p = shared_project(a, b);
  auto listed = a.store->list_projects();
  REQUIRE((listed.ok() && listed->size() == 1));
  REQUIRE(c.store->add_project(listed->front(), *a.store->project_secret(p)).ok());
  a.write_docs(p, 0, 40);
  b.write_docs(p, 1000, 40);
  SessionOptions old_release;
  old_release.protocol_max = 1;
  // New with old, the old one speaking first or second: protocol 1, its 32-byte proofs.
  for (bool old_first : {true, false}) {
    Session s_new(*a.store, params("a")), s_old(*b.store, params("b", old_release));
    if (old_first) s_old.start();
    s_new.start();
    if (!old_first) s_old.start();
    Pipe pipe{s_new, s_old};
    pipe.run();
    REQUIRE(s_new.state() == SessionState::active);
    CHECK(s_new.progress().protocol == 1);
    CHECK(s_old.progress().protocol == 1);
    CHECK(s_new.in_sync());
    CHECK(s_old.in_sync());
    CHECK(vv(a, p) == vv(b, p));
  }
  // Two of this release: protocol 2, and the no-op session is smaller by the shorter proofs.
  CHECK(run_session(a, params("a"), c, params("c")).protocol == 2);
  CHECK(vv(a, p) == vv(c, p));
  const auto now_run = run_session(a, params("a"), c, params("c"));
  const auto old_run = run_session(a, params("a", old_release), c, params("c"));
  CHECK(old_run.protocol == 1);
  CHECK(old_run.moved - now_run.moved == 2 * kProjectsBucket * (kProofBytesV1 - kProofBytesV2));
}

TEST_CASE("concurrent edits converge to the same heads and winner", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 5);
  {
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe{sa, sb}.run();
  }
  a.write_docs(p, 0, 2, "edit-a");
  b.write_docs(p, 0, 2, "edit-b");
  storage::WriteRequest del;
  del.collection = "obs";
  del.doc_id = "d4";
  del.kind = storage::VersionKind::tombstone;
  del.use_current = true;
  REQUIRE(b.store->write(p, del).ok());
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe{sa, sb}.run();
  auto da = doc(a, p, "d0"), db = doc(b, p, "d0");
  CHECK(da.heads.size() == 2);
  CHECK(da.heads == db.heads);
  CHECK(da.winner == db.winner);
  CHECK(doc(a, p, "d4").deleted);
  CHECK(sa.in_sync());
}

TEST_CASE("a cut connection keeps applied batches and the next session sends the rest", "[sync]") {
  Node a(20), b(20);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 400);
  auto o = small_batches();
  o.batch_entries = 20;
  std::size_t first_moved = 0;
  {
    Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb};
    pipe.cut_after = 9000;
    pipe.run();
    REQUIRE(pipe.broken);
    CHECK(sa.state() == SessionState::failed);
    CHECK(sa.error()->code == Errc::unavailable);
    first_moved = pipe.moved;
  }
  auto mid = vv(b, p)[a.store->device_id()];
  CHECK(mid > 0);
  CHECK(mid < 400);
  Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb};
  pipe.run();
  CHECK(vv(a, p) == vv(b, p));
  CHECK(sa.progress().projects[0].sent == 400 - mid);
  CHECK(first_moved > 0);
}

TEST_CASE("the sender keeps at most window_batches unacknowledged batches", "[sync]") {
  Node a(10), b(10);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 200);
  auto o = small_batches();
  o.batch_entries = 10;
  o.window_batches = 3;
  Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
  sa.start();
  sb.start();
  // Handshake both ways, then never deliver b's ACKs.
  for (int i = 0; i < 3; ++i) {
    Bytes x = sa.take_output(1 << 20), y = sb.take_output(1 << 20);
    sb.receive(x);
    sa.receive(y);
  }
  int batches = 0;
  for (int i = 0; i < 20; ++i) {
    Bytes x = sa.take_output(1 << 20);
    for (auto& [t, payload] : frames_of(x))
      batches += t == static_cast<std::uint8_t>(MsgType::batch) ||
                 t == static_cast<std::uint8_t>(MsgType::zbatch);
    sb.receive(x);
    (void)sb.take_output(1 << 20);  // ACKs dropped
  }
  CHECK(batches == 3);
  CHECK(vv(b, p)[a.store->device_id()] == 30);
}

TEST_CASE("live_first: a new write goes ahead of another author's backlog, in chain order",
          "[sync]") {
  Node a(10), b(10), c(10);
  ProjectId p = shared_project(a, b);
  // b holds a's log so far (whatever the order of the device ids, a is an author b has caught
  // up with), then a gets c's 200 versions, none of which b holds.
  run_session(a, params("a"), b, params("b"));
  REQUIRE(c.store->add_project(*a.store->get_project(p), *a.store->project_secret(p)).ok());
  c.write_docs(p, 0, 200, "backlog");
  run_session(a, params("a"), c, params("c"));
  REQUIRE(vv(b, p)[a.store->device_id()] == vv(a, p)[a.store->device_id()]);
  REQUIRE(vv(a, p)[c.store->device_id()] == 200);
  auto o = small_batches();
  o.batch_entries = 10;
  o.window_batches = 1;
  o.live_first = true;
  Session sa(*a.store, params("a", o)), sb(*b.store, params("b", o));
  sa.start();
  sb.start();
  auto round = [&] {
    Bytes x = sa.take_output(1 << 20);
    sb.receive(x);
    sa.receive(sb.take_output(1 << 20));
  };
  for (int i = 0; i < 6; ++i) round();  // handshake, then the first batches of c's backlog
  const DeviceId& author_c = c.store->device_id();
  const DeviceId& author_a = a.store->device_id();
  REQUIRE(vv(b, p)[author_c] > 0);
  REQUIRE(vv(b, p)[author_c] < 150);
  a.write_docs(p, 1000, 1, "urgent");
  sa.notify_local_change(p);
  // One batch in flight at a time: the one already sent, then a's new version.
  round();
  round();
  CHECK(vv(b, p)[author_a] == 1);
  CHECK(vv(b, p)[author_c] < 200);  // the backlog is still flowing
  for (int i = 0; i < 40; ++i) round();
  CHECK(vv(b, p) == vv(a, p));  // and nothing of c's chain was skipped
  CHECK(!sa.error());
  CHECK(!sb.error());
}

TEST_CASE("a coordinator's log goes ahead of the other authors' backlog, whatever the ids",
          "[sync]") {
  // a created the project (its coordinator); three members' logs reach a, then a new device
  // syncs from a. Before any member's entry, it holds a's log: an erasure or removal there
  // arrives before the versions it takes out.
  Node a(10), n(10);
  ProjectId p = shared_project(a, n);
  std::vector<std::unique_ptr<Node>> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(std::make_unique<Node>(10));
    Node& m = *members.back();
    REQUIRE(m.store->add_project(*a.store->get_project(p), *a.store->project_secret(p)).ok());
    m.write_docs(p, i * 100, 30, "member");
    run_session(a, params("a"), m, params("m"));
  }
  a.write_docs(p, 1000, 25, "coordinator");
  auto o = small_batches();
  o.batch_entries = 10;
  o.window_batches = 1;
  Session sa(*a.store, params("a", o)), sn(*n.store, params("n", o));
  sa.start();
  sn.start();
  const DeviceId& author_a = a.store->device_id();
  const std::uint64_t a_head = vv(a, p)[author_a];
  for (int i = 0; i < 40 && vv(n, p)[author_a] < a_head; ++i) {
    sn.receive(sa.take_output(1 << 20));
    sa.receive(sn.take_output(1 << 20));
    for (auto& m : members) CHECK(vv(n, p)[m->store->device_id()] == 0);
  }
  CHECK(vv(n, p)[author_a] == a_head);
  for (int i = 0; i < 40; ++i) {
    sn.receive(sa.take_output(1 << 20));
    sa.receive(sn.take_output(1 << 20));
  }
  CHECK(vv(n, p) == vv(a, p));
  CHECK(!sa.error());
  CHECK(!sn.error());
}

TEST_CASE("relay: versions from one peer are served to another", "[sync]") {
  Node a, b, c;
  ProjectId p = shared_project(a, b);
  auto secret = a.store->project_secret(p);
  REQUIRE(c.store->add_project(*a.store->get_project(p), *secret).ok());
  a.write_docs(p, 0, 100);
  Session ab(*a.store, params("a")), ba(*b.store, params("b"));
  Session bc(*b.store, params("b")), cb(*c.store, params("c"));
  for (Session* s : {&ab, &ba, &bc, &cb}) s->start();
  Pipe p1{ab, ba, &a, nullptr}, p2{bc, cb, nullptr, &c};
  // b's changes fan out to both of its sessions, as the service does.
  auto pump = [&] {
    for (int i = 0; i < 50; ++i) {
      auto changed = b.take_changed();
      if (changed.empty() && i > 0) break;
      for (auto& pid : changed) {
        ba.notify_local_change(pid);
        bc.notify_local_change(pid);
      }
      p1.run();
      p2.run();
    }
  };
  pump();
  CHECK(vv(c, p) == vv(a, p));
  c.write_docs(p, 500, 5, "from-c");
  pump();
  CHECK(vv(a, p) == vv(c, p));
  CHECK(doc(a, p, "d502").body->find("from-c") != std::string::npos);
  CHECK(ab.in_sync());
  CHECK(cb.in_sync());
}

TEST_CASE("purged bodies are not brought back by a sync", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 3);
  {
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe{sa, sb}.run();
  }
  REQUIRE(a.store->purge_document(p, "obs", "d1").ok());
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe{sa, sb}.run();
  CHECK(sa.in_sync());
  CHECK_FALSE(doc(a, p, "d1").body.has_value());
  CHECK(doc(b, p, "d1").body.has_value());
}

TEST_CASE("a tampered entry fails the session and leaves that batch unapplied", "[sync]") {
  Node a(10), b(10);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 30);
  Session sb(*b.store, params("b"));
  sb.start();
  FakePeer{a, p}.handshake(sb);
  auto good = a.store->read_log(p, a.store->device_id(), 0, 10, 1 << 20);
  REQUIRE(good.ok());
  REQUIRE(good->entries.back().seq == 10);
  Bytes in;
  encode_batch(in, Batch{p, *good});
  sb.receive(in);
  REQUIRE(sb.state() == SessionState::active);
  CHECK(vv(b, p)[a.store->device_id()] == 10);

  auto bad = a.store->read_log(p, a.store->device_id(), 10, 10, 1 << 20);
  REQUIRE(bad.ok());
  SECTION("body changed") { (*bad->entries[3].body)[2] ^= 1; }
  SECTION("header changed") { bad->entries[3].header.back() ^= 1; }
  SECTION("signature changed") { bad->checkpoints.back().signature[5] ^= 1; }
  SECTION("entry dropped") { bad->entries.erase(bad->entries.begin() + 4); }
  in.clear();
  encode_batch(in, Batch{p, *bad});
  sb.receive(in);
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == Errc::verification_failed);
  CHECK(has_error_frame(sb.take_output(1 << 20), Errc::verification_failed));
  CHECK(vv(b, p)[a.store->device_id()] == 10);  // the good batch stays, the bad one is absent
  CHECK_FALSE(b.store->get_document(p, "obs", "d13").ok());
}

TEST_CASE("a batch claiming another author is refused", "[sync]") {
  Node a(10), b(10), c(10);
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 10);
  Session sb(*b.store, params("b"));
  sb.start();
  FakePeer{a, p}.handshake(sb);
  auto log = a.store->read_log(p, a.store->device_id(), 0, 10, 1 << 20);
  REQUIRE(log.ok());
  log->author = c.store->device_id();  // a relays "c's" versions that a wrote
  Bytes in;
  encode_batch(in, Batch{p, *log});
  sb.receive(in);
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == Errc::verification_failed);
  CHECK(vv(b, p).empty());
}

TEST_CASE("a device that is not a member learns nothing", "[sync]") {
  Node a, b, outsider;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 5);
  auto other = outsider.store->create_project("other");
  REQUIRE(other.ok());
  Session sa(*a.store, params("a")), so(*outsider.store, params("o"));
  sa.start();
  so.start();
  Bytes to_outsider;
  for (int i = 0; i < 5; ++i) {
    Bytes x = sa.take_output(1 << 20), y = so.take_output(1 << 20);
    to_outsider.insert(to_outsider.end(), x.begin(), x.end());
    so.receive(x);
    sa.receive(y);
  }
  CHECK(sa.state() == SessionState::failed);
  CHECK(sa.error()->code == Errc::permission_denied);
  CHECK(so.state() == SessionState::failed);
  // Nothing a sent names the project: no VV, no BATCH, and the id bytes never appear.
  for (auto& [t, payload] : frames_of(to_outsider)) {
    CHECK(t != static_cast<std::uint8_t>(MsgType::vv));
    CHECK(t != static_cast<std::uint8_t>(MsgType::batch));
    CHECK(t != static_cast<std::uint8_t>(MsgType::zbatch));
  }
  auto needle = p.view();
  CHECK(std::search(to_outsider.begin(), to_outsider.end(), needle.begin(), needle.end()) ==
        to_outsider.end());
  CHECK(outsider.store->list_projects()->size() == 1);
}

TEST_CASE("a replayed membership proof from another channel is refused", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  auto pb = params("b");
  pb.channel_binding = Bytes(32, 0x99);  // the proof below was made for binding 0x42...
  Session sb(*b.store, pb);
  sb.start();
  Bytes in;
  Hello h;
  h.device = a.store->device_id();
  encode_hello(in, h);
  encode_projects(in, Projects{{membership_proof(*a.store->project_secret(p), Bytes(32, 0x42),
                                                 a.store->device_id())}});
  sb.receive(in);
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == Errc::permission_denied);
}

TEST_CASE("HELLO from a device other than the TLS key is refused", "[sync]") {
  Node a, b, c;
  shared_project(a, b);
  auto pb = params("b");
  pb.authenticated_peer = c.store->device_id();
  Session sa(*a.store, params("a")), sb(*b.store, pb);
  sa.start();
  sb.start();
  Pipe{sa, sb}.run();
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == Errc::unauthenticated);
}

TEST_CASE("bad frames fail the session cleanly", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Session sb(*b.store, params("b"));
  sb.start();
  (void)sb.take_output(1 << 20);

  SECTION("oversized frame") {
    Bytes in;
    ByteWriter(in).u32((4u << 20) + 1);
    sb.receive(in);
    CHECK(sb.error()->code == Errc::too_large);
    CHECK(has_error_frame(sb.take_output(1 << 20), Errc::too_large));
  }
  SECTION("garbage instead of HELLO") {
    Bytes in{0, 0, 0, 12, 1, 'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/'};
    sb.receive(in);
    CHECK(sb.error()->code == Errc::unsupported);
  }
  SECTION("frame before HELLO") {
    Bytes in;
    encode_done(in, Done{p});
    sb.receive(in);
    CHECK(sb.error()->code == Errc::failed_precondition);
  }
  SECTION("newer protocol only") {
    Bytes in;
    Hello h;
    h.device = a.store->device_id();
    h.min_version = 7;
    h.max_version = 9;
    encode_hello(in, h);
    sb.receive(in);
    CHECK(sb.error()->code == Errc::unsupported);
    CHECK(has_error_frame(sb.take_output(1 << 20), Errc::unsupported));
  }
  SECTION("unknown message types: refused, or ignored when marked ignorable") {
    FakePeer{a, p}.handshake(sb);
    Bytes in;
    encode_frame(in, 0xB0, Bytes{1, 2, 3});
    sb.receive(in);
    CHECK(sb.state() == SessionState::active);
    in.clear();
    encode_frame(in, 0x30, Bytes{1, 2, 3});
    sb.receive(in);
    CHECK(sb.error()->code == Errc::unsupported);
  }
  SECTION("batch for a project the peer did not prove") {
    FakePeer{a, p}.handshake(sb);
    Bytes in;
    storage::LogBatch log;
    log.author = a.store->device_id();
    log.entries.push_back(storage::LogEntry{1, {}, Bytes{1}, std::nullopt});
    ProjectId other;
    other.bytes[0] = 9;
    encode_batch(in, Batch{other, log});
    sb.receive(in);
    CHECK(sb.error()->code == Errc::permission_denied);
  }
  SECTION("ERROR from the peer") {
    Bytes in;
    encode_error(in, WireError{to_wire_code(Errc::resource_exhausted), "disk full"});
    sb.receive(in);
    CHECK(sb.error()->code == Errc::resource_exhausted);
    CHECK(sb.error()->message == "peer: disk full");
    CHECK(sb.take_output(1 << 20).empty());  // no ERROR answered with an ERROR
  }
}

TEST_CASE("a message outside the states it is accepted in is refused, whatever its payload",
          "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Session sb(*b.store, params("b"));
  sb.start();
  (void)sb.take_output(1 << 20);
  const Bytes junk{1, 2, 3};  // refused before it is decoded
  auto refused = [&](std::uint8_t type, Errc code, const std::string& message) {
    Bytes in;
    encode_frame(in, type, junk);
    sb.receive(in);
    CHECK(sb.state() == SessionState::failed);
    REQUIRE(sb.error());
    CHECK(sb.error()->code == code);
    CHECK(sb.error()->message == message);
    CHECK(has_error_frame(sb.take_output(1 << 20), code));
  };
  auto u8 = [](MsgType t) { return static_cast<std::uint8_t>(t); };
  auto hello = [&] {
    Bytes in;
    Hello h;
    h.device = a.store->device_id();
    encode_hello(in, h);
    sb.receive(in);
    REQUIRE(sb.state() == SessionState::proving);
    (void)sb.take_output(1 << 20);  // PROJECTS
  };
  Bytes ping;
  encode_ping(ping);

  SECTION("before HELLO: only HELLO, PING and ERROR") {
    sb.receive(ping);
    REQUIRE(sb.state() == SessionState::hello);
    auto type = GENERATE(as<std::uint8_t>{}, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0B, 0x8A,
                         0x8B, 0xB0, 0x30);
    refused(type, Errc::failed_precondition, "expected HELLO first");
  }
  SECTION("after HELLO: only PROJECTS, JOIN, JOINED, PING and ERROR") {
    hello();
    sb.receive(ping);
    REQUIRE(sb.state() == SessionState::proving);
    auto type =
        GENERATE(as<std::uint8_t>{}, 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x8A, 0x8B, 0xB0, 0x30);
    refused(type, Errc::failed_precondition, "expected PROJECTS after HELLO");
  }
  SECTION("active: HELLO twice, unknown types") {
    FakePeer{a, p}.handshake(sb);
    sb.receive(ping);
    Bytes in;
    encode_frame(in, 0xB0, junk);  // an ignorable extension we do not know
    sb.receive(in);
    REQUIRE(sb.state() == SessionState::active);
    SECTION("HELLO") { refused(u8(MsgType::hello), Errc::failed_precondition, "HELLO sent twice"); }
    SECTION("unknown") { refused(0x30, Errc::unsupported, "unknown message type 48"); }
  }
  SECTION("a malformed payload in the right state fails the session") {
    hello();
    Bytes in;
    encode_frame(in, u8(MsgType::projects), junk);
    sb.receive(in);
    REQUIRE(sb.error());
    CHECK(sb.error()->code == Errc::invalid_argument);
    CHECK(has_error_frame(sb.take_output(1 << 20), Errc::invalid_argument));
  }
  SECTION("a malformed ERROR still ends the session, unanswered") {
    hello();
    Bytes in;
    encode_frame(in, u8(MsgType::error), junk);
    sb.receive(in);
    REQUIRE(sb.error());
    CHECK(sb.error()->code == Errc::invalid_argument);
    CHECK(sb.error()->message == "peer sent a malformed ERROR");
    CHECK(sb.take_output(1 << 20).empty());
  }
}

TEST_CASE("a project joined during a live session starts syncing without reconnecting", "[sync]") {
  Node a, b;
  ProjectId p1 = shared_project(a, b);
  auto p2 = a.store->create_project("second");
  REQUIRE(p2.ok());
  a.write_docs(p2->id, 0, 40);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sa.common_projects().size() == 1);
  REQUIRE(b.store->add_project(*p2, *a.store->project_secret(p2->id)).ok());
  sb.projects_changed();
  pipe.run();
  CHECK(sa.common_projects().size() == 2);
  CHECK(sb.common_projects().size() == 2);
  CHECK(vv(b, p2->id) == vv(a, p2->id));
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  CHECK(sa.state() == SessionState::active);
  (void)p1;
}

TEST_CASE("a device removed from the project is refused, also on a live session", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::member).ok());
  a.write_docs(p, 0, 5);
  Session sa(*a.store, params("a")), sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.run();
  REQUIRE(sa.in_sync());
  // a revokes b while connected: the session ends at once.
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::removed).ok());
  pipe.run();
  CHECK(sa.state() == SessionState::failed);
  CHECK(sa.error()->code == Errc::permission_denied);
  // A new session shares nothing with b.
  Session sa2(*a.store, params("a")), sb2(*b.store, params("b"));
  sa2.start();
  sb2.start();
  Pipe{sa2, sb2}.run();
  CHECK(sa2.state() == SessionState::failed);
  CHECK(sa2.error()->code == Errc::permission_denied);
}

TEST_CASE("session options are the sync.* settings of the configuration", "[sync][options]") {
  CHECK(session_options(config::SyncOptions{}) == SessionOptions{});  // the same defaults
  config::SyncOptions c;
  c.max_frame_bytes = 8192;
  c.batch_entries = 7;
  c.batch_bytes = 4096;
  c.window_batches = 3;
  c.max_projects = 17;
  c.compression_level = 0;
  c.log_lines_per_key = 2;
  c.log_interval_ms = 500;
  c.trust_policy = "ask";
  SessionOptions o = session_options(c);
  CHECK(o.max_frame_bytes == 8192);
  CHECK(o.batch_entries == 7);
  CHECK(o.batch_bytes == 4096);
  CHECK(o.window_batches == 3);
  CHECK(o.max_projects == 17);
  CHECK(o.compression_level == 0);
  CHECK(o.log_lines_per_key == 2);
  CHECK(o.log_interval_ms == 500);
  CHECK(o.trust_policy == TrustPolicy::ask);
  c.trust_policy = "auto";
  CHECK(session_options(c).trust_policy == TrustPolicy::automatic);
  CHECK(trust_policy_name(TrustPolicy::ask) == "ask");
  CHECK(trust_policy_name(TrustPolicy::automatic) == "auto");
}

TEST_CASE(
    "batches prepared ahead: the next is checked while one is applied, at most window_batches "
    "on their way, applied and answered in arrival order",
    "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 600);
  // b's workers and writer are queues this test runs by hand.
  std::vector<std::pair<std::function<void()>, std::function<void()>>> preparing;
  std::vector<std::pair<std::function<void()>, std::function<void(Status)>>> writing;
  auto pb = params("b", small_batches());
  pb.prepare = [&](std::function<void()> work, std::function<void()> done) {
    preparing.emplace_back(std::move(work), std::move(done));
  };
  bool preparing_done = false;  // an apply handed over now follows a prepared batch
  std::size_t applies_queued = 0;
  pb.offload = [&](std::function<void()> work, std::function<void(Status)> done) {
    writing.emplace_back(std::move(work), std::move(done));
    applies_queued += preparing_done;
  };
  SessionOptions wide = small_batches();
  wide.window_batches = 4;  // a sends more than b takes on at once
  Session sa(*a.store, params("a", wide)), sb(*b.store, std::move(pb));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  bool prepared_while_applying = false, out_of_order = false;
  std::size_t most_on_way = 0;
  for (int step = 0; step < 100000; ++step) {
    const int moved = pipe.run(1);
    most_on_way = std::max(most_on_way, preparing.size() + applies_queued);
    if (moved > 0 && preparing.size() < 2) continue;  // let batches arrive
    if (!preparing.empty()) {
      // The newest first: the writer must still take them in arrival order.
      if (preparing.size() > 1) out_of_order = true;
      auto job = std::move(preparing.back());
      preparing.pop_back();
      if (applies_queued > 0) prepared_while_applying = true;
      job.first();
      preparing_done = true;
      job.second();
      preparing_done = false;
      continue;
    }
    if (!writing.empty()) {  // one at a time: the next batch comes in meanwhile
      auto job = std::move(writing.front());
      writing.erase(writing.begin());
      if (applies_queued > 0) --applies_queued;
      Status committed = b.store->write_group([&] { job.first(); });
      job.second(committed);
      continue;
    }
    if (moved == 0) break;
  }
  CHECK(prepared_while_applying);
  CHECK(out_of_order);
  CHECK(most_on_way == 2);  // small_batches(): window_batches = 2
  REQUIRE(!sb.finished());
  CHECK(vv(a, p) == vv(b, p));
  CHECK(doc(b, p, "d599").body == doc(a, p, "d599").body);
  CHECK(sb.in_sync());
  CHECK(sa.in_sync());
  CHECK(sb.progress().projects[0].applied == 600);
}

TEST_CASE(
    "batches applied off the session's thread: input waits, order holds, a failed commit "
    "fails the session",
    "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 600);
  // b's batches go to a queue that this test runs later, grouped, like the daemon's writer.
  std::vector<std::pair<std::function<void()>, std::function<void(Status)>>> queued;
  auto pb = params("b", small_batches());
  pb.offload = [&](std::function<void()> work, std::function<void(Status)> done) {
    queued.emplace_back(std::move(work), std::move(done));
  };
  Session sa(*a.store, params("a", small_batches())), sb(*b.store, std::move(pb));
  int resumed = 0;
  sb.set_resume_hook([&] { ++resumed; });
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  bool saw_busy_with_input = false;
  std::optional<Error> fail_next;
  for (int step = 0; step < 100000; ++step) {
    const int moved = pipe.run(1);
    if (!queued.empty()) {
      const std::size_t before = queued.size();
      if (sb.busy()) {
        Bytes more = sa.take_output(1 << 20);
        if (!more.empty()) {
          saw_busy_with_input = true;
          sb.receive(more);                  // kept, not handled, while the batch is applied
          REQUIRE(queued.size() == before);  // one batch at a time
        }
      }
      auto jobs = std::move(queued);
      queued.clear();
      Status committed = b.store->write_group([&] {
        for (auto& j : jobs) j.first();
      });
      // Done: the input kept meanwhile is handled now, which may start the next batch.
      for (auto& j : jobs) j.second(committed);
      continue;
    }
    if (moved == 0) break;
  }
  CHECK(saw_busy_with_input);
  CHECK(resumed > 1);
  CHECK(vv(a, p) == vv(b, p));
  CHECK(doc(b, p, "d599").body == doc(a, p, "d599").body);
  CHECK(sb.in_sync());
  CHECK(sb.progress().projects[0].applied == 600);

  // A commit that fails (a full disk) fails the session: the batch is not acknowledged.
  a.write_docs(p, 600, 100);
  for (const auto& c : a.take_changed()) sa.notify_local_change(c);
  fail_next = make_error(Errc::resource_exhausted, "disk full");
  for (int step = 0; step < 1000 && !sb.finished(); ++step) {
    pipe.run(1);
    auto jobs = std::move(queued);
    queued.clear();
    for (auto& j : jobs) j.second(Status(*fail_next));  // nothing was written
  }
  REQUIRE(sb.finished());
  REQUIRE(sb.error());
  CHECK(sb.error()->code == Errc::resource_exhausted);
}
