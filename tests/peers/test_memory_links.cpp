// The peer manager and session driver over the in-memory transport: links cut after N bytes
// at random points, and a 20 KB/s link. Real stores in temp dirs, one io_context.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <random>

#include "../support/run_until.hpp"
#include "../sync/sync_test_util.hpp"
#include "peers/peer_manager.hpp"
#include "transports/memory/memory_transport.hpp"

using namespace fieldsync;
using fieldsync::peers::PeerManager;
using fieldsync::peers::PeerState;
using fieldsync::sync::test::Node;
using fieldsync::sync::test::shared_project;
namespace asio = boost::asio;
using fieldsync::test::run_until;

namespace {

config::SyncOptions options() {
  config::SyncOptions o;
  o.retry_min_ms = 20;
  o.retry_max_ms = 40;
  o.batch_entries = 50;
  o.handshake_timeout_ms = 5000;
  return o;
}

struct Device {
  Node node;
  std::unique_ptr<PeerManager> mgr;
  // `slow`: a second transport, slow://<name>, of link class slow (a Bluetooth LE stand-in).
  Device(asio::io_context& io, transports::MemoryNetwork& net, const std::string& name,
         config::SyncOptions o = options(), bool slow = false) {
    mgr = std::make_unique<PeerManager>(io, *node.store, o, name);
    mgr->add_transport(
        std::make_unique<transports::MemoryTransport>(io, net, node.store->device_id(), name));
    if (slow)
      mgr->add_transport(std::make_unique<transports::MemoryTransport>(
          io, net, node.store->device_id(), name, "slow", transports::LinkClass::slow));
    node.store->set_change_listener(
        [this](const ProjectId& p, std::uint64_t) { mgr->notify_change(p); });
    REQUIRE(mgr->start().ok());
  }
  DeviceId id() const { return node.store->device_id(); }
  storage::VersionVector vv(const ProjectId& p) { return *node.store->version_vector(p); }
  std::optional<peers::PeerStatus> status(const DeviceId& d) {
    auto s = mgr->peer(d);
    if (!s.ok()) return std::nullopt;
    return *s;
  }
};

}  // namespace

TEST_CASE("two peer managers sync over the memory transport", "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  Device a(io, net, "alpha"), b(io, net, "beta");
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 120);
  REQUIRE(b.mgr->add_peer("mem://alpha", a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync && a.vv(p) == b.vv(p);
  }));
  auto s = *b.status(a.id());
  CHECK(s.transport == "mem");
  CHECK(s.remote == "mem://alpha");
  CHECK(s.address == "mem://alpha");
  CHECK(s.outgoing);
  // Live push over the same link.
  b.node.write_docs(p, 500, 5, "b");
  REQUIRE(run_until(io, [&] { return a.vv(p) == b.vv(p); }));
  CHECK(net.links_made == 1);
  // Addresses no transport serves are refused with a reason.
  auto bad = b.mgr->add_peer("ble://00:11:22:33:44:55", Node().store->device_id());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == Errc::invalid_argument);
  CHECK(bad.error().message.find("no transport") != std::string::npos);
  CHECK(b.mgr->listen_addresses() == std::vector<transports::Address>{{"mem", "beta"}});
}

TEST_CASE("a session over a slow link moves to a fast one, and a failed try changes nothing",
          "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  Device a(io, net, "alpha", options(), true), b(io, net, "beta", options(), true);
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 40, "a");
  // Tried first where nobody answers (as a TCP address that does not answer), then over the
  // slow link.
  REQUIRE(b.mgr->add_peer("mem://nowhere", a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->failures > 0;
  }));
  REQUIRE(b.mgr->set_peer_address(a.id(), "slow://alpha").ok());
  REQUIRE(b.mgr->sync_now(a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync && a.vv(p) == b.vv(p);
  }));
  CHECK(b.status(a.id())->transport == "slow");
  CHECK(b.status(a.id())->link == transports::LinkClass::slow);
  const auto failures_before = b.status(a.id())->failures;

  std::optional<peers::PeerStatus> at_handover;  // b's view of alpha when an attempt ends
  auto attempt = [&](const std::string& address) {
    std::optional<Status> out;
    b.mgr->handover(a.id(), address, [&](Status st) {
      out = st;
      at_handover = b.status(a.id());
    });
    REQUIRE(run_until(io, [&] { return out.has_value(); }));
    return *out;
  };
  // Nobody there: an error for the caller, nothing for the peer.
  auto failed = attempt("mem://nobody");
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().code == Errc::unavailable);
  auto s = *b.status(a.id());
  CHECK(s.connected);
  CHECK(s.transport == "slow");
  CHECK(s.address == "slow://alpha");
  CHECK(s.failures == failures_before);
  CHECK(net.links_made == 1);
  // Not faster than the live link, or no such peer.
  CHECK(attempt("slow://alpha").error().code == Errc::failed_precondition);
  CHECK(attempt("tcp://10.0.0.1:1").error().code == Errc::invalid_argument);

  // Alpha's fast address: both keep the fast connection and close the slow one. The new
  // session starts with nothing of the first failed dial shown against it.
  REQUIRE(attempt("mem://alpha").ok());
  REQUIRE(at_handover);
  CHECK(at_handover->transport == "mem");
  CHECK_FALSE(at_handover->reason);
  CHECK_FALSE(at_handover->last_error);
  REQUIRE(run_until(io, [&] {
    auto sa = a.status(b.id()), sb = b.status(a.id());
    return sa && sb && sa->connected && sb->connected && sa->transport == "mem" &&
           sb->transport == "mem" && sb->state == PeerState::in_sync;
  }));
  for (auto st : {*a.status(b.id()), *b.status(a.id())}) {
    CHECK(st.link == transports::LinkClass::fast);
    CHECK(st.failures <= failures_before);  // the slow link's end was no failure, either side
    CHECK_FALSE(st.last_error);
    CHECK_FALSE(st.reason);
  }
  CHECK(b.status(a.id())->address == "mem://alpha");  // dialed there from now on
  CHECK(net.links_made == 2);
  CHECK(attempt("mem://alpha").error().code == Errc::failed_precondition);
  // The session goes on over the fast link.
  a.node.write_docs(p, 100, 5, "a2");
  REQUIRE(run_until(io, [&] { return a.vv(p) == b.vv(p); }));
  CHECK(net.links_made == 2);
}

TEST_CASE("the memory transport authenticates the expected device", "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  Device a(io, net, "alpha"), b(io, net, "beta");
  Node stranger;
  REQUIRE(b.mgr->add_peer("mem://alpha", stranger.store->device_id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(stranger.store->device_id());
    return s && s->last_error && s->failures > 0;
  }));
  CHECK(b.status(stranger.store->device_id())->last_error->code == Errc::unauthenticated);
  CHECK_FALSE(a.status(b.id()));  // nothing reached alpha's peer list
}

// Alpha holds 300 documents and beta 100 of its own; beta dials.
struct CutWorld {
  asio::io_context io;
  transports::MemoryNetwork net;
  Device a{io, net, "alpha"}, b{io, net, "beta"};
  ProjectId p = shared_project(a.node, b.node);
  CutWorld() {
    a.node.write_docs(p, 0, 300, "a");
    b.node.write_docs(p, 1000, 100, "b");
  }
  bool converged() {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync && a.vv(p) == b.vv(p);
  }
};

TEST_CASE("a link cut after N bytes at random points resumes and converges", "[peers]") {
  // How many bytes a whole sync of this data moves, both directions.
  std::uint64_t total = 0;
  {
    CutWorld w;
    REQUIRE(w.b.mgr->add_peer("mem://alpha", w.a.id()).ok());
    REQUIRE(run_until(w.io, [&] { return w.converged(); }));
    auto s = *w.b.status(w.a.id());
    total = s.wire_bytes_sent + s.wire_bytes_received;
  }
  REQUIRE(total > 10000);
  std::mt19937 rng(20261129);
  for (int round = 0; round < 8; ++round) {
    CutWorld w;
    // Within the first 90%: how many bytes a sync moves varies a little with timing (how
    // ACKs and pushes interleave), and a cut the link never reaches would not be one.
    std::uint64_t cut = 1 + rng() % (total * 9 / 10);
    INFO("round " << round << ": cut after " << cut << " of " << total << " bytes");
    w.net.link_options.cut_after_bytes = cut;
    REQUIRE(w.b.mgr->add_peer("mem://alpha", w.a.id()).ok());
    REQUIRE(run_until(w.io, [&] {
      auto s = w.b.status(w.a.id());
      return s && s->last_error;
    }));
    auto failed = *w.b.status(w.a.id());
    CHECK(failed.last_error->code == Errc::unavailable);
    CHECK(failed.last_error->message.find("link cut") != std::string::npos);
    // What arrived before the cut stays; the next link (uncut) brings the rest.
    w.net.link_options.cut_after_bytes = 0;
    REQUIRE(run_until(w.io, [&] { return w.converged(); }));
    CHECK(w.net.links_made >= 2);
    storage::ListQuery q;
    q.collection = "obs";
    q.limit = 1000;
    auto docs_a = w.a.node.store->list_documents(w.p, q);
    auto docs_b = w.b.node.store->list_documents(w.p, q);
    REQUIRE(docs_a.ok());
    REQUIRE(docs_b.ok());
    CHECK(docs_a->docs.size() == 400);
    CHECK(docs_b->docs.size() == 400);
  }
}

TEST_CASE("a 20 KB/s link syncs, with PINGs keeping the quiet link open", "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  net.link_options.bytes_per_second = 20000;
  net.link_options.link_class = transports::LinkClass::slow;
  auto o = options();
  o.idle_timeout_ms = 600;  // PINGs every 200 ms keep it open while nothing changes
  o.write_chunk_bytes = 4096;
  o.compression_level = 0;  // enough bytes to measure the throttle with
  Device a(io, net, "alpha", o), b(io, net, "beta", o);
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 150);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(b.mgr->add_peer("mem://alpha", a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync && a.vv(p) == b.vv(p);
  }));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto s = *b.status(a.id());
  // The throttle held: the bytes that crossed could not have crossed faster.
  CHECK(static_cast<double>(s.wire_bytes_received) <= 20000.0 * secs * 1.05 + 4096);
  CHECK(s.wire_bytes_received > 10000);
  // Quiet for three idle timeouts: still the same link.
  io.run_for(std::chrono::milliseconds(1800));
  CHECK(b.status(a.id())->connected);
  CHECK(net.links_made == 1);
}

namespace {

// Alpha's 300 observations (~500 bytes of JSON each) synced to beta over one link; the wire
// bytes beta received.
std::uint64_t observation_sync_bytes(std::uint32_t level_a, std::uint32_t level_b) {
  asio::io_context io;
  transports::MemoryNetwork net;
  auto oa = options(), ob = options();
  oa.compression_level = level_a;
  ob.compression_level = level_b;
  Device a(io, net, "alpha", oa), b(io, net, "beta", ob);
  ProjectId p = shared_project(a.node, b.node);
  std::vector<storage::WriteRequest> reqs;
  for (int i = 0; i < 300; ++i) {
    storage::WriteRequest r;
    r.collection = "obs";
    r.doc_id = "obs-" + std::to_string(i);
    r.body = "{\"site\":\"plot-" + std::to_string(i % 41) + "\",\"observer\":\"ana\",\"species\":" +
             "\"Picea abies\",\"count\":" + std::to_string(i % 17) + ",\"notes\":\"" +
             std::string(360, static_cast<char>('a' + i % 26)) + "\"}";
    r.use_current = true;
    reqs.push_back(std::move(r));
  }
  REQUIRE(a.node.store->write_batch(p, reqs).ok());
  REQUIRE(b.mgr->add_peer("mem://alpha", a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync && a.vv(p) == b.vv(p);
  }));
  return b.status(a.id())->wire_bytes_received;
}

}  // namespace

TEST_CASE("compressed batches over a link: fewer wire bytes, and peers without them converge",
          "[peers]") {
  std::uint64_t plain = observation_sync_bytes(0, 0);
  std::uint64_t compressed = observation_sync_bytes(3, 3);
  INFO("plain " << plain << " compressed " << compressed);
  CHECK(plain > 300 * 500);
  CHECK(compressed * 2 < plain);
  // A peer that does not offer compressed batches (as before this feature) gets them plain.
  std::uint64_t old_receiver = observation_sync_bytes(3, 0);
  CHECK(old_receiver * 10 > plain * 9);
  std::uint64_t old_sender = observation_sync_bytes(0, 3);
  CHECK(old_sender * 10 > plain * 9);
}

TEST_CASE("a peer manager that stops cleanly is no failure for its peers", "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  Device a(io, net, "alpha"), b(io, net, "beta");
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 10);
  REQUIRE(b.mgr->add_peer("mem://alpha", a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync;
  }));
  bool stopped = false;
  a.mgr->stop([&] { stopped = true; });
  REQUIRE(run_until(io, [&] { return stopped; }));
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && !s->connected && s->reason;
  }));
  auto s = *b.status(a.id());
  CHECK(s.reason->code == peers::PeerReasonCode::peer_shut_down);
  CHECK(s.reason->message.find("alpha") != std::string::npos);
  CHECK_FALSE(s.last_error);  // redials that find nobody there yet do not change that
  REQUIRE(s.session);
  CHECK(s.session->state == sync::SessionState::closed);
  CHECK_FALSE(s.session->error);
}
