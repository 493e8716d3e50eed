// TcpPeerManager over real TCP + TLS on 127.0.0.1 (port 0), two or three stores in temp dirs,
// all driven by one io_context on this thread.
#include <catch2/catch.hpp>

#include <boost/asio.hpp>
#include <map>

#include "../support/backup_dir.hpp"
#include "../support/run_until.hpp"
#include "../support/tcp_peer_manager.hpp"
#include "../sync/sync_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::peers;
using fieldsync::sync::test::Node;
using fieldsync::sync::test::shared_project;
using fieldsync::test::run_until;
using fieldsync::test::TcpDevice;
using fieldsync::test::TcpPeerManager;

namespace {

// Small batches, so the tests see several.
config::SyncOptions test_options() {
  auto o = fieldsync::test::loopback_options();
  o.batch_entries = 100;
  return o;
}

}  // namespace

TEST_CASE("two services sync over TLS and push live writes", "[transports]") {
  boost::asio::io_context io;
  TcpDevice a(io, "alpha", test_options()), b(io, "beta", test_options());
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 500);
  REQUIRE(b.svc->add_peer(a.address(), a.id(), "alpha").ok());
  REQUIRE(run_until(io, [&] { return a.vv(p) == b.vv(p); }));
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync;
  }));
  auto sb = *b.status(a.id());
  CHECK(sb.connected);
  CHECK(sb.outgoing);
  CHECK(sb.name == "alpha");
  CHECK(sb.last_sync_ms > 0);
  REQUIRE(sb.session);
  CHECK(sb.session->projects.at(0).applied == 500);
  auto sa = a.status(b.id());
  REQUIRE(sa);  // a learned the incoming peer
  CHECK_FALSE(sa->configured);

  // Live: a write on either side arrives without a new connection.
  a.node.write_docs(p, 1000, 3, "live");
  REQUIRE(run_until(
      io, [&] { return a.vv(p) == b.vv(p); }, 3000));
  b.node.write_docs(p, 2000, 2, "back");
  REQUIRE(run_until(
      io, [&] { return a.vv(p) == b.vv(p); }, 3000));
  CHECK(b.status(a.id())->session->bytes_sent > 0);
}

TEST_CASE("simultaneous dials end with one session per pair", "[transports]") {
  boost::asio::io_context io;
  TcpDevice a(io, "alpha", test_options()), b(io, "beta", test_options());
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 50);
  b.node.write_docs(p, 100, 50);
  REQUIRE(a.svc->add_peer(b.address(), b.id()).ok());
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto x = a.status(b.id()), y = b.status(a.id());
    return x && y && x->state == PeerState::in_sync && y->state == PeerState::in_sync;
  }));
  CHECK(a.vv(p) == b.vv(p));
  // Both ends keep the connection dialed by the lower device id.
  bool a_lower = a.id() < b.id();
  CHECK(a.status(b.id())->outgoing == a_lower);
  CHECK(b.status(a.id())->outgoing == !a_lower);
  // And it stays that way (no reconnect churn).
  io.run_for(std::chrono::milliseconds(300));
  CHECK(a.status(b.id())->state == PeerState::in_sync);
  CHECK(a.status(b.id())->failures == 0);
}

TEST_CASE("a peer with the wrong key is refused at TLS level", "[transports]") {
  boost::asio::io_context io;
  TcpDevice a(io, "alpha", test_options()), b(io, "beta", test_options());
  Node stranger;
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 5);
  // b expects another device at a's address.
  REQUIRE(b.svc->add_peer(a.address(), stranger.store->device_id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(stranger.store->device_id());
    return s && s->failures >= 2;
  }));
  auto s = *b.status(stranger.store->device_id());
  CHECK_FALSE(s.connected);
  REQUIRE(s.last_error);
  CHECK(s.last_error->code == Errc::unauthenticated);
  // It says who answered there instead.
  REQUIRE(s.reason);
  CHECK(s.reason->code == peers::PeerReasonCode::wrong_device);
  CHECK(s.reason->message == "address tcp://" + a.address() + " answered as device " +
                                 a.node.store->device_id().str() + ", expected " +
                                 stranger.store->device_id().str());
  CHECK(b.vv(p).empty());
}

TEST_CASE("a peer restored from a backup is followed under its new identity", "[transports]") {
  boost::asio::io_context io;
  TcpDevice b(io, "beta", test_options());
  Node a;
  ProjectId p = shared_project(a, b.node);
  a.write_docs(p, 0, 5);
  const DeviceId old = a.store->device_id();
  auto o = test_options();
  auto ma = std::make_unique<TcpPeerManager>(io, *a.store, o, "alpha");
  REQUIRE(ma->start().ok());
  const std::uint16_t port = ma->listen_port();
  // Only b dials: a listens, like a hub the phones dial.
  REQUIRE(b.svc->add_peer("127.0.0.1:" + std::to_string(port), old, "alpha").ok());
  REQUIRE(run_until(io, [&] { return b.vv(p) == *a.store->version_vector(p); }));

  // a is restored from a backup, at the same address: it renewed its identity, and b has no
  // other peer that could tell it so.
  (void)fieldsync::test::write_backup_dir(*a.store, a.dir.path / "restored");
  ma->stop();
  ma.reset();
  storage::StoreOptions so;
  so.data_dir = a.dir.path / "restored";
  so.durable = false;
  so.map_size_bytes = 1ull << 30;
  auto restored = storage::Store::open(so);
  REQUIRE(restored.ok());
  storage::Store& r = **restored;
  const DeviceId renewed = r.device_id();
  REQUIRE(renewed != old);
  storage::WriteRequest w;
  w.collection = "obs";
  w.doc_id = "after";
  w.body = R"({"n":1})";
  REQUIRE(r.write_batch(p, {w}).ok());
  o.listen_port = port;
  ma = std::make_unique<TcpPeerManager>(io, r, o, "alpha");
  REQUIRE(ma->start().ok());

  // b's next dial of the old id meets the new key, whose certificate proves the renewal: b
  // follows it (address, name kept), forgets the old id and syncs.
  REQUIRE(run_until(io, [&] {
    auto s = b.status(renewed);
    return s && s->state == PeerState::in_sync && b.vv(p) == *r.version_vector(p);
  }));
  auto s = *b.status(renewed);
  CHECK(s.configured);
  CHECK(s.outgoing);
  CHECK(s.name == "alpha");
  CHECK(s.address == "tcp://127.0.0.1:" + std::to_string(port));
  CHECK_FALSE(b.status(old));
  CHECK(b.node.store->get_document(p, "obs", "after").ok());
  // Remembered under the new id: the next start dials it.
  auto known = b.node.store->load_peers();
  REQUIRE(known.ok());
  bool has_new = false, has_old = false;
  for (const auto& k : *known) {
    has_new = has_new || k.device == renewed;
    has_old = has_old || k.device == old;
  }
  CHECK(has_new);
  CHECK_FALSE(has_old);
  ma->stop();
}

TEST_CASE("a device outside the project learns nothing and retries with backoff", "[transports]") {
  boost::asio::io_context io;
  auto slow = test_options();
  slow.retry_min_ms = 200;
  slow.retry_max_ms = 3200;
  TcpDevice a(io, "alpha", test_options()), c(io, "outsider", slow);
  auto pa = a.node.store->create_project("secret-survey");
  REQUIRE(pa.ok());
  a.node.write_docs(pa->id, 0, 5);
  REQUIRE(c.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = c.status(a.id());
    return s && s->last_error && s->failures >= 1;
  }));
  auto s = *c.status(a.id());
  CHECK(s.last_error->code == Errc::permission_denied);
  CHECK(c.node.store->list_projects()->empty());
  // Backoff grows: the delay planned after each failure (next_retry_ms - now, read as soon as
  // the failure shows) doubles: 200, 400, 800 ms, each +-20%.
  std::map<std::uint32_t, std::int64_t> delay;
  REQUIRE(run_until(io, [&] {
    auto st = *c.status(a.id());
    if (st.state == PeerState::backoff && !delay.count(st.failures))
      delay[st.failures] =
          st.next_retry_ms - std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    return delay.count(3) > 0;
  }));
  REQUIRE(delay.count(1));
  REQUIRE(delay.count(2));
  INFO("delays " << delay[1] << " " << delay[2] << " " << delay[3]);
  CHECK(delay[1] <= 240);
  CHECK(delay[2] > delay[1]);
  CHECK(delay[3] > delay[2]);
  CHECK(delay[3] >= 500);  // 800 - 20%, less what polling may have lost
  CHECK(c.status(a.id())->failures < 10);
}

TEST_CASE("junk on the sync port does not disturb the service", "[transports]") {
  boost::asio::io_context io;
  TcpDevice a(io, "alpha", test_options()), b(io, "beta", test_options());
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 20);
  // Plain-text garbage instead of a TLS ClientHello.
  boost::asio::ip::tcp::socket junk(io);
  junk.connect({boost::asio::ip::make_address("127.0.0.1"), a.svc->listen_port()});
  boost::asio::write(
      junk, boost::asio::buffer(std::string("GET / HTTP/1.1\r\n\r\n") + std::string(5000, 'x')));
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] { return a.vv(p) == b.vv(p); }));
  // The junk connection was closed by a.
  char c;
  boost::system::error_code ec;
  REQUIRE(run_until(io, [&] {
    junk.non_blocking(true);
    junk.read_some(boost::asio::buffer(&c, 1), ec);
    return ec && ec != boost::asio::error::would_block;
  }));
}

TEST_CASE("sync_now after a peer restarts reconnects and catches up", "[transports]") {
  boost::asio::io_context io;
  auto a = std::make_unique<TcpDevice>(io, "alpha", test_options());
  // b's automatic redial is a minute away: only sync_now can reconnect it within the test.
  auto patient = test_options();
  patient.retry_min_ms = 60000;
  patient.retry_max_ms = 120000;
  TcpDevice b(io, "beta", patient);
  ProjectId p = shared_project(a->node, b.node);
  REQUIRE(b.svc->add_peer(a->address(), a->id()).ok());
  REQUIRE(run_until(io, [&] { return b.status(a->id())->state == PeerState::in_sync; }));
  std::string addr = a->address();
  a->svc->stop();
  REQUIRE(run_until(io, [&] { return !b.status(a->id())->connected; }));
  REQUIRE(b.status(a->id())->state == PeerState::backoff);
  // a restarts on the same port with new data.
  auto o = test_options();
  o.listen_port = static_cast<std::uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1)));
  a->svc = std::make_unique<TcpPeerManager>(io, *a->node.store, o, "alpha");
  REQUIRE(a->svc->start().ok());
  a->node.write_docs(p, 0, 30);
  io.run_for(std::chrono::milliseconds(300));
  REQUIRE(b.status(a->id())->state == PeerState::backoff);
  REQUIRE(b.vv(p).empty());
  REQUIRE(b.svc->sync_now(a->id()).ok());
  REQUIRE(run_until(
      io, [&] { return a->vv(p) == b.vv(p); }, 5000));
  CHECK(b.svc->remove_peer(a->id()).ok());
  CHECK(b.svc->peers().empty());
  CHECK(b.svc->sync_now(a->id()).error().code == Errc::not_found);
}
