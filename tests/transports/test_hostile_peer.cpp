// A hostile project member speaking the protocol by hand over real TLS to a real
// TcpPeerManager: tampered and forged batches are refused, logged, and change nothing.
#include <catch2/catch.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <future>
#include <thread>

#include "../support/run_until.hpp"
#include "../support/tcp_peer_manager.hpp"
#include "../sync/sync_test_util.hpp"
#include "crypto/tls_context.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"
#include "sync/wire_error.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::peers;
using fieldsync::sync::test::Node;
using fieldsync::test::run_until;
using fieldsync::test::TcpPeerManager;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

enum class Attack {
  tampered_body,
  forged_author,
  oversized_frame,
  garbage_after_tls,
  unknown_type
};

// Runs the attack on its own thread and io_context (blocking I/O); returns the error code
// the victim sent back in its ERROR frame, or nullopt if none arrived.
std::optional<Errc> attack(Node& evil, const ProjectId& project, const DeviceId& victim,
                           std::uint16_t port, Attack kind, const DeviceId& someone_else) {
  asio::io_context io;
  auto tls = crypto::TlsContext::create(evil.store->signing_key());
  REQUIRE(tls.ok());
  ssl::context ctx(static_cast<SSL_CTX*>(tls->new_reference()));
  ssl::stream<tcp::socket> s(io, ctx);
  s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
  crypto::tls_expect_peer(s.native_handle(), victim);
  s.handshake(ssl::stream_base::client);
  auto binding = crypto::tls_channel_binding(s.native_handle());
  REQUIRE(binding.ok());

  Bytes out;
  if (kind == Attack::garbage_after_tls) {
    out.assign(3000, 0xEE);
  } else {
    Hello h;
    h.device = evil.store->device_id();
    h.device_name = "evil";
    encode_hello(out, h);
    auto secret = evil.store->project_secret(project);
    encode_projects(out, Projects{{membership_proof(*secret, *binding, evil.store->device_id())}});
    encode_vector(out, MsgType::vv, VectorMsg{project, {}});
    auto log = evil.store->read_log(project, evil.store->device_id(), 0, 100, 1 << 20);
    REQUIRE(log.ok());
    if (kind == Attack::tampered_body) (*log->entries[2].body)[3] ^= 0x20;
    if (kind == Attack::forged_author) log->author = someone_else;
    if (kind == Attack::oversized_frame) {
      ByteWriter(out).u32(64u << 20);
    } else if (kind == Attack::unknown_type) {
      encode_frame(out, 0x42, Bytes{1, 2, 3});
    } else {
      encode_batch(out, Batch{project, *log});
    }
  }
  boost::system::error_code ec;
  asio::write(s, asio::buffer(out), ec);

  FrameDecoder dec(16u << 20);
  Bytes buf(65536);
  for (;;) {
    std::size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec) return std::nullopt;
    dec.feed(ByteView(buf.data(), n));
    for (;;) {
      auto f = dec.next();
      if (!f.ok() || !*f) break;
      if ((*f)->type == static_cast<std::uint8_t>(MsgType::error)) {
        auto e = decode_error((*f)->payload);
        if (e.ok()) return from_wire_code(e->code);
      }
    }
  }
}

}  // namespace

TEST_CASE("hostile peer data is refused over TLS and changes nothing", "[transports][hostile]") {
  auto [kind, expect] = GENERATE(table<Attack, Errc>({
      {Attack::tampered_body, Errc::verification_failed},
      {Attack::forged_author, Errc::verification_failed},
      {Attack::oversized_frame, Errc::too_large},
      {Attack::garbage_after_tls, Errc::too_large},
      {Attack::unknown_type, Errc::unsupported},
  }));
  asio::io_context io;
  Node victim, evil, other;
  ProjectId p = fieldsync::sync::test::shared_project(evil, victim);
  evil.write_docs(p, 0, 10);
  config::SyncOptions o;
  o.listen_address = "127.0.0.1";
  o.listen_port = 0;
  TcpPeerManager svc(io, *victim.store, o, "victim");
  REQUIRE(svc.start().ok());

  auto result = std::async(std::launch::async, [&, kind = kind] {
    return attack(evil, p, victim.store->device_id(), svc.listen_port(), kind,
                  other.store->device_id());
  });
  REQUIRE(run_until(
      io, [&] { return result.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
  auto code = result.get();
  REQUIRE(code);
  CHECK(*code == expect);
  CHECK(victim.store->version_vector(p)->empty());
  if (kind == Attack::garbage_after_tls) {
    // It never said HELLO, let alone proved a project: a stranger leaves no entry behind.
    REQUIRE(run_until(io, [&] { return svc.peers().empty(); }));
    return;
  }
  auto st = svc.peer(evil.store->device_id());
  REQUIRE(st.ok());
  REQUIRE(run_until(io, [&] { return !svc.peer(evil.store->device_id())->connected; }));
  st = svc.peer(evil.store->device_id());
  REQUIRE(st->last_error);
  CHECK(st->last_error->code == expect);
}
