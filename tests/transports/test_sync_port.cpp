// The sync port under attack and its rarely used paths, over real TLS on 127.0.0.1:
// strangers leave no state, peer-provided names are sanitised, connections that never
// start TLS have their own budget and deadline, accept backs off at descriptor exhaustion,
// deadlines, keepalive, max_peers, HELLO against the TLS key, TLS 1.2 and certificate-less
// clients, out-of-order frames.
#include <catch2/catch.hpp>

#include <openssl/ssl.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstdio>
#include <future>
#include <sstream>
#include <thread>

#include "../support/tcp_peer_manager.hpp"
#include "../sync/sync_test_util.hpp"
#include "common/text.hpp"
#include "raw_peer.hpp"

using namespace fieldsync;
using namespace fieldsync::peers;
using fieldsync::sync::test::Node;
using fieldsync::sync::test::shared_project;
using fieldsync::test::RawPeer;
using fieldsync::test::run_until;
using fieldsync::test::TcpDevice;
using fieldsync::test::TcpPeerManager;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

void import_project(Node& from, Node& to, const ProjectId& p) {
  auto info = from.store->get_project(p);
  REQUIRE(info.ok());
  REQUIRE(to.store->add_project(*info, *from.store->project_secret(p)).ok());
}

// Runs `f` on its own thread while the io_context runs here; returns f's result.
template <class F>
auto beside(asio::io_context& io, F f, int ms = 20000) {
  auto fut = std::async(std::launch::async, std::move(f));
  REQUIRE(run_until(
      io, [&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, ms));
  return fut.get();
}

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

// Captures spdlog output (the default logger) for the scope.
struct LogCapture {
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> old;
  LogCapture() {
    old = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    auto l = std::make_shared<spdlog::logger>("capture", sink);
    l->set_level(spdlog::level::info);
    spdlog::set_default_logger(l);
  }
  ~LogCapture() { spdlog::set_default_logger(old); }
  std::size_t count(const std::string& what) {
    spdlog::default_logger()->flush();
    std::string s = out.str();
    std::size_t n = 0;
    for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  }
};

}  // namespace

TEST_CASE("strangers leave no lasting state on the sync port", "[transports][hostile]") {
  asio::io_context io;
  TcpDevice a(io, "alpha");
  auto pa = a.node.store->create_project("field");
  REQUIRE(pa.ok());
  constexpr int kStrangers = 40;
  int refused = beside(io, [&] {
    int n = 0;
    for (int i = 0; i < kStrangers; ++i) {
      RawPeer r(RawPeer::fresh_key());
      if (!r.connect(a.svc->listen_port(), a.id())) continue;
      r.hello("stranger-" + std::to_string(i));
      r.projects({crypto::Digest{}});  // proves nothing
      n += r.wait_error() == Errc::permission_denied;
    }
    return n;
  });
  CHECK(refused == kStrangers);
  REQUIRE(run_until(
      io, [&] { return a.svc->peers().empty(); }, 3000));
  CHECK(a.node.store->load_peers()->empty());
  // A real member is still remembered after its session ends.
  TcpDevice b(io, "beta");
  import_project(a.node, b.node, pa->id);
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = a.status(b.id());
    return s && s->state == PeerState::in_sync;
  }));
  b.svc->stop();
  REQUIRE(run_until(io, [&] {
    auto s = a.status(b.id());
    return s && !s->connected;
  }));
  CHECK(a.svc->peers().size() == 1);
}

TEST_CASE("trust_policy ask keeps a bounded table of pending devices", "[transports][hostile]") {
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.trust_policy = "ask";
  o.max_pending_devices = 3;
  TcpDevice a(io, "alpha", o);
  auto pa = a.node.store->create_project("field");
  REQUIRE(pa.ok());
  auto secret = *a.node.store->project_secret(pa->id);
  // Devices that know the secret but are not listed members wait for approval.
  for (int i = 0; i < 6; ++i) {
    auto key = RawPeer::fresh_key();
    DeviceId dev = key.device_id();
    std::promise<void> release;
    auto fut = std::async(std::launch::async,
                          [&, key = std::move(key), done = release.get_future()]() mutable {
                            RawPeer r(std::move(key));
                            REQUIRE(r.connect(a.svc->listen_port(), a.id()));
                            r.hello("pending-" + std::to_string(i));
                            r.projects({r.proof(secret)});
                            done.wait();
                          });
    REQUIRE(run_until(io, [&] {
      auto s = a.status(dev);
      return s && s->state == PeerState::pending;
    }));
    release.set_value();
    REQUIRE(run_until(io, [&] {
      auto s = a.status(dev);
      return !s || !s->connected;
    }));
    fut.get();
  }
  auto list = a.svc->peers();
  CHECK(list.size() == 3);
  for (const auto& p : list) CHECK(p.name.rfind("pending-", 0) == 0);
  CHECK(a.node.store->load_peers()->empty());  // nothing persisted until approved
}

TEST_CASE("a peer's device name is sanitised before anyone sees it", "[transports][hostile]") {
  asio::io_context io;
  TcpDevice a(io, "alpha");
  auto pa = a.node.store->create_project("field");
  REQUIRE(pa.ok());
  auto secret = *a.node.store->project_secret(pa->id);
  auto key = RawPeer::fresh_key();
  DeviceId dev = key.device_id();
  std::promise<void> release;
  auto fut = std::async(std::launch::async,
                        [&, key = std::move(key), done = release.get_future()]() mutable {
                          RawPeer r(std::move(key));
                          REQUIRE(r.connect(a.svc->listen_port(), a.id()));
                          r.hello(
                              "\x1b]0;owned\x07\x1b[2J\xff\xfe\xc2\x9b"
                              "31mevil");  // escapes and invalid UTF-8
                          r.projects({r.proof(secret)});
                          done.wait();
                        });
  REQUIRE(run_until(io, [&] {
    auto s = a.status(dev);
    return s && s->state != PeerState::handshake;
  }));
  auto name = a.status(dev)->name;
  CHECK(is_clean_text(name, sync::kMaxDeviceNameBytes));
  CHECK(name.find("owned") != std::string::npos);
  CHECK(name.find('\x1b') == std::string::npos);
  release.set_value();
  fut.get();
  REQUIRE(run_until(io, [&] {
    auto s = a.status(dev);
    return s && !s->connected;
  }));
  CHECK(is_clean_text(a.status(dev)->name, sync::kMaxDeviceNameBytes));
}

TEST_CASE("connections that never start TLS cannot lock real peers out", "[transports][hostile]") {
  LogCapture log;
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.max_handshakes = 8;
  o.log_lines_per_key = 3;
  o.log_interval_ms = 60000;
  TcpDevice a(io, "alpha", o);
  TcpDevice b(io, "beta");
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 20);
  // 80 TCP connections that never send a byte.
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 80; ++i) {
    idle.emplace_back(io);
    idle.back().connect({asio::ip::make_address("127.0.0.1"), a.svc->listen_port()});
  }
  io.run_for(std::chrono::milliseconds(200));
  // A real peer syncs at once, long before any handshake deadline frees a slot.
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(
      io, [&] { return a.vv(p) == b.vv(p); }, 2500));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2500));
  // The flood left a few lines, not one per connection.
  std::size_t lines = log.count("sync.max_handshakes reached");
  std::fprintf(stderr, "(80 idle connections: peer synced after %lld ms, %zu log lines)\n",
               static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - t0)
                                          .count()),
               lines);
  CHECK(lines >= 1);
  CHECK(lines <= 2 * o.log_lines_per_key);
  // Idle ones are closed after sync.tls_handshake_timeout_ms.
  CHECK(a.status(b.id())->connected);
}

TEST_CASE("an incoming connection must finish TLS within tls_handshake_timeout_ms",
          "[transports]") {
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.tls_handshake_timeout_ms = 300;
  o.handshake_timeout_ms = 60000;
  TcpDevice a(io, "alpha", o);
  tcp::socket idle(io);
  idle.connect({asio::ip::make_address("127.0.0.1"), a.svc->listen_port()});
  auto t0 = std::chrono::steady_clock::now();
  char c;
  boost::system::error_code ec;
  idle.non_blocking(true);
  REQUIRE(run_until(
      io,
      [&] {
        idle.read_some(asio::buffer(&c, 1), ec);
        return ec && ec != asio::error::would_block;
      },
      5000));
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= std::chrono::milliseconds(250));
  CHECK(took < std::chrono::milliseconds(3000));
}

TEST_CASE("accept backs off when the process is out of file descriptors", "[transports][hostile]") {
#ifdef FIELDSYNC_SANITIZED
  // Out of descriptors the sanitizer runtimes fail (UBSan's vptr check probes memory through a
  // pipe and reports a false "invalid vptr"); the plain build runs this test.
  WARN("SKIP: fd exhaustion is not testable under sanitizers");
  return;
#endif
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.accept_backoff_max_ms = 200;
  TcpDevice a(io, "alpha", o);
  TcpDevice b(io, "beta");
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 10);
  // Connections waiting in the listen backlog: accept has work it cannot do.
  std::vector<tcp::socket> waiting;
  for (int i = 0; i < 4; ++i) {
    waiting.emplace_back(io);
    waiting.back().connect({asio::ip::make_address("127.0.0.1"), a.svc->listen_port()});
  }
  // Lower RLIMIT_NOFILE to just above what is open, then use up the rest.
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
  int probe = ::open("/dev/null", O_RDONLY);
  REQUIRE(probe >= 0);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(probe + 16);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> fill{probe};
  for (;;) {
    int fd = ::dup(probe);
    if (fd < 0) break;
    fill.push_back(fd);
  }
  double cpu0 = cpu_seconds();
  auto wall0 = std::chrono::steady_clock::now();
  io.run_for(std::chrono::milliseconds(1500));
  double cpu = cpu_seconds() - cpu0;
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  // Descriptors back before any assertion (the test framework and sanitizers need some).
  for (int fd : fill) ::close(fd);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
  INFO("cpu " << cpu << " s over " << wall << " s");
  std::fprintf(stderr, "(accept at EMFILE: %.3f s CPU over %.3f s)\n", cpu, wall);
  CHECK(cpu < 0.25 * wall);
  // Descriptors are back: a real peer syncs.
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(
      io, [&] { return a.vv(p) == b.vv(p); }, 5000));
}

TEST_CASE("a TLS connection that never sends HELLO is closed at the handshake deadline",
          "[transports]") {
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.handshake_timeout_ms = 400;
  TcpDevice a(io, "alpha", o);
  auto took = beside(io, [&] {
    RawPeer r(RawPeer::fresh_key());
    REQUIRE(r.connect(a.svc->listen_port(), a.id()));
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(r.closed_by_peer(5000));
    return std::chrono::steady_clock::now() - t0;
  });
  CHECK(took >= std::chrono::milliseconds(300));
  CHECK(took < std::chrono::milliseconds(3000));
  REQUIRE(run_until(
      io, [&] { return a.svc->peers().empty(); }, 2000));
}

TEST_CASE("a silent member is closed at the idle deadline, PINGs keep a live link open",
          "[transports]") {
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.idle_timeout_ms = 500;
  TcpDevice a(io, "alpha", o);
  TcpDevice b(io, "beta", o);
  ProjectId p = shared_project(a.node, b.node);
  a.node.write_docs(p, 0, 5);
  // A member that completes the handshake and then says nothing.
  auto secret = *a.node.store->project_secret(p);
  auto took = beside(io, [&] {
    RawPeer r(RawPeer::fresh_key());
    REQUIRE(r.connect(a.svc->listen_port(), a.id()));
    r.hello("quiet");
    r.projects({r.proof(secret)});
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(r.closed_by_peer(5000));
    return std::chrono::steady_clock::now() - t0;
  });
  CHECK(took >= std::chrono::milliseconds(400));
  CHECK(took < std::chrono::milliseconds(3000));
  // Two real services: the keepalive PINGs hold the session across many idle timeouts.
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = b.status(a.id());
    return s && s->state == PeerState::in_sync;
  }));
  auto rx0 = b.status(a.id())->wire_bytes_received;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
  while (std::chrono::steady_clock::now() < end) {
    io.run_for(std::chrono::milliseconds(50));
    auto s = b.status(a.id());
    REQUIRE(s->connected);
    REQUIRE(s->failures == 0);
  }
  CHECK(b.status(a.id())->wire_bytes_received > rx0);  // PINGs arrived
}

TEST_CASE("sync.max_peers refuses one more member with resource_exhausted", "[transports]") {
  asio::io_context io;
  auto o = fieldsync::test::loopback_options();
  o.max_peers = 1;
  TcpDevice a(io, "alpha", o), b(io, "beta"), c(io, "gamma");
  ProjectId p = shared_project(a.node, b.node);
  import_project(a.node, c.node, p);
  a.node.write_docs(p, 0, 5);
  REQUIRE(b.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] { return b.vv(p) == a.vv(p); }));
  REQUIRE(c.svc->add_peer(a.address(), a.id()).ok());
  REQUIRE(run_until(io, [&] {
    auto s = c.status(a.id());
    return s && s->last_error && s->failures >= 1;
  }));
  CHECK(c.status(a.id())->last_error->code == Errc::resource_exhausted);
  CHECK(c.vv(p).empty());
  CHECK(b.status(a.id())->connected);
}

TEST_CASE("the transport checks HELLO's device id against the TLS key", "[transports][hostile]") {
  asio::io_context io;
  TcpDevice a(io, "alpha");
  auto pa = a.node.store->create_project("field");
  REQUIRE(pa.ok());
  auto other = RawPeer::fresh_key();
  auto code = beside(io, [&] {
    RawPeer r(RawPeer::fresh_key());
    REQUIRE(r.connect(a.svc->listen_port(), a.id()));
    r.hello("impostor", other.device_id());
    return r.wait_error();
  });
  REQUIRE(code);
  CHECK(*code == Errc::unauthenticated);
  REQUIRE(run_until(
      io, [&] { return a.svc->peers().empty(); }, 2000));
}

TEST_CASE("TLS 1.2 and certificate-less clients are refused", "[transports][hostile]") {
  asio::io_context io;
  TcpDevice a(io, "alpha");
  auto pa = a.node.store->create_project("field");
  REQUIRE(pa.ok());
  bool tls12 = beside(io, [&] {
    RawPeer r(RawPeer::fresh_key());
    auto* ssl = static_cast<SSL*>(r.s.native_handle());
    REQUIRE(SSL_set_min_proto_version(ssl, TLS1_2_VERSION) == 1);
    REQUIRE(SSL_set_max_proto_version(ssl, TLS1_2_VERSION) == 1);
    return r.connect(a.svc->listen_port(), a.id());
  });
  CHECK_FALSE(tls12);
  bool no_cert = beside(io, [&] {
    asio::io_context cio;
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_verify_mode(asio::ssl::verify_none);
    asio::ssl::stream<tcp::socket> s(cio, ctx);
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), a.svc->listen_port()});
    boost::system::error_code ec;
    s.handshake(asio::ssl::stream_base::client, ec);
    if (ec) return false;
    // TLS 1.3: the server's verdict on the client certificate arrives after the client's
    // Finished. The connection must not carry anything.
    Bytes out;
    sync::Hello h;
    sync::encode_hello(out, h);
    asio::write(s, asio::buffer(out), ec);
    char buf[256];
    s.read_some(asio::buffer(buf), ec);
    return !ec;
  });
  CHECK_FALSE(no_cert);
  REQUIRE(run_until(
      io, [&] { return a.svc->peers().empty(); }, 2000));
}

TEST_CASE("frames out of order end the session with failed_precondition", "[transports][hostile]") {
  asio::io_context io;
  TcpDevice a(io, "alpha");
  Node evil;
  ProjectId p = shared_project(a.node, evil);
  evil.write_docs(p, 0, 3);
  auto secret = *a.node.store->project_secret(p);
  auto log = *evil.store->read_log(p, evil.store->device_id(), 0, 100, 1 << 20);
  enum Case { vv_first, batch_before_projects, batch_before_vv, ack_without_batch, hello_twice };
  auto which =
      GENERATE(vv_first, batch_before_projects, batch_before_vv, ack_without_batch, hello_twice);
  auto code = beside(io, [&] {
    RawPeer r(RawPeer::fresh_key());
    REQUIRE(r.connect(a.svc->listen_port(), a.id()));
    Bytes out;
    if (which == vv_first) {
      sync::encode_vector(out, sync::MsgType::vv, sync::VectorMsg{p, {}});
      r.send(out);
      return r.wait_error();
    }
    r.hello("ooo");
    if (which == batch_before_projects) {
      sync::encode_batch(out, sync::Batch{p, log});
    } else {
      r.projects({r.proof(secret)});
      if (which == batch_before_vv) sync::encode_batch(out, sync::Batch{p, log});
      if (which == ack_without_batch) sync::encode_ack(out, sync::Ack{p, r.id(), 1});
      if (which == hello_twice) r.hello("again");
    }
    r.send(out);
    return r.wait_error();
  });
  REQUIRE(code);
  CHECK(*code == Errc::failed_precondition);
  CHECK(a.vv(p).empty());
}
