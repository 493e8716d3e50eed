// Remembered peers through the peer manager: a typed record with its address URI, dialed again
// after a restart, and what the peer holds kept by the store while it is away.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>

#include "../sync/sync_test_util.hpp"
#include "peers/peer_manager.hpp"
#include "transports/memory/memory_transport.hpp"

using namespace fieldsync;
using fieldsync::peers::PeerManager;
using fieldsync::peers::PeerState;
using fieldsync::sync::test::Node;
using fieldsync::sync::test::shared_project;
namespace asio = boost::asio;

namespace {

config::SyncOptions options() {
  config::SyncOptions o;
  o.retry_min_ms = 20;
  o.retry_max_ms = 40;
  o.batch_entries = 50;
  o.handshake_timeout_ms = 5000;
  return o;
}

std::unique_ptr<PeerManager> start(asio::io_context& io, transports::MemoryNetwork& net, Node& n,
                                   const std::string& name) {
  auto m = std::make_unique<PeerManager>(io, *n.store, options(), name);
  m->add_transport(
      std::make_unique<transports::MemoryTransport>(io, net, n.store->device_id(), name));
  n.store->set_change_listener(
      [mgr = m.get()](const ProjectId& p, std::uint64_t) { mgr->notify_change(p); });
  REQUIRE(m->start().ok());
  return m;
}

void stop(asio::io_context& io, Node& n, std::unique_ptr<PeerManager>& m) {
  n.store->set_change_listener(nullptr);
  m->stop();
  m.reset();
  if (io.stopped()) io.restart();
  io.run_for(std::chrono::milliseconds(20));
}

template <class Pred>
bool run_until(asio::io_context& io, Pred pred, int ms = 20000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    if (io.stopped()) io.restart();  // it ran out of work while a side was away
    io.run_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace

TEST_CASE("a remembered peer keeps its URI across a restart and what it lacks is known meanwhile",
          "[peers]") {
  asio::io_context io;
  transports::MemoryNetwork net;
  Node na, nb;
  auto a = start(io, net, na, "alpha");
  auto b = start(io, net, nb, "beta");
  const DeviceId A = na.store->device_id(), B = nb.store->device_id();
  ProjectId p = shared_project(na, nb);
  na.write_docs(p, 0, 120);
  REQUIRE(b->add_peer("mem://alpha", A, "alpha", /*persist=*/true).ok());
  auto synced = [&] {
    auto s = b->peer(A);
    return s.ok() && s->state == PeerState::in_sync &&
           *na.store->version_vector(p) == *nb.store->version_vector(p);
  };
  REQUIRE(run_until(io, synced));

  auto saved = nb.store->load_peers();
  REQUIRE(saved.ok());
  REQUIRE(saved->size() == 1);
  const auto& rec = saved->front();
  CHECK(rec.device == A);
  CHECK(rec.name == "alpha");
  CHECK(rec.addresses == std::vector<std::string>{"mem://alpha"});
  CHECK(rec.added_ms > 0);
  // What each side holds of the other is recorded: nothing lacking either way.
  REQUIRE(run_until(io, [&] { return na.store->peer_lacks(B, p)->entries == 0; }));
  CHECK(na.store->peer_lacks(B, p)->known);
  CHECK(nb.store->peer_lacks(A, p)->entries == 0);

  // beta goes away; alpha writes on and knows, with no connection, what beta lacks.
  stop(io, nb, b);
  na.write_docs(p, 1000, 10);
  auto lack = na.store->peer_lacks(B, p);
  REQUIRE(lack.ok());
  CHECK(lack->entries == 10);
  CHECK(lack->bytes > 0);

  // beta restarts: it dials alpha from its remembered record and catches up.
  b = start(io, net, nb, "beta");
  REQUIRE(run_until(io, synced));
  CHECK(b->peer(A)->address == "mem://alpha");
  REQUIRE(run_until(io, [&] { return na.store->peer_lacks(B, p)->entries == 0; }));
  CHECK(nb.store->load_peers()->front().last_seen_ms > 0);
  stop(io, nb, b);
  stop(io, na, a);
}
