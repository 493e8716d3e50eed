// Fuzz target: the local API as the daemon serves it. Raw bytes are written to a live
// ApiServer (ipc/http_server.cpp: Beast's request parser, limits, keep-alive, pipelining,
// Expect: 100-continue, long-poll and SSE) over a real socket, and go on through the access
// check, the Router and every route group the daemon registers (ApiService plus DaemonSync's
// peers, members and join routes, sync disabled so nothing dials out) to a real Store in a
// temporary directory. The project kFuzzProject exists, and the TCP token is kToken, so seed
// inputs can reach authenticated handlers.
// Input: byte 0 picks the listener: odd = the Unix socket (trusted, no token), even = TCP
// (Host check + bearer token). The rest is sent as is, then the client half-closes.
// Checks: every response is well-formed HTTP/1.x with a Content-Length (until an event
// stream starts), and none is a 500 (a handler threw or an internal error leaked).
// FIELDSYNC_FUZZ_VERBOSE=1 in the environment prints every response (to check seeds).
#include <spdlog/spdlog.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fstream>

#include "daemon/daemon_sync.hpp"
#include "fuzz/fuzz_store.hpp"
#include "ipc/api_server.hpp"
#include "ipc/api_service.hpp"

using namespace fieldsync;
namespace asio = boost::asio;

namespace {

constexpr const char* kToken = "f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022";
// A client gives up on a connection after this long (an SSE stream never ends by itself).
constexpr auto kClientLimit = std::chrono::milliseconds(500);

struct Daemon {
  config::Config cfg;
  asio::io_context io{1};
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ipc::ApiService> api;
  std::unique_ptr<daemon::DaemonSync> sync;
  std::unique_ptr<ipc::ApiServer> server;
};

Daemon& the_daemon() {
  static Daemon* d = [] {
    spdlog::set_level(spdlog::level::off);
    auto* n = new Daemon;
    auto& cfg = n->cfg;
    cfg.data_dir = fuzz::make_temp_dir("fieldsync-fuzz-http");
    cfg.device_name = "fuzz";
    cfg.storage = fuzz::fuzz_store_options(cfg.data_dir);
    cfg.sync.enabled = false;
    cfg.api.socket_path = cfg.data_dir / "api.sock";
    cfg.api.http_enabled = true;
    cfg.api.http_address = "127.0.0.1";
    cfg.api.http_port = 0;
    cfg.api.max_body_bytes = 4096;  // small enough for the fuzzer to cross
    cfg.api.max_page_size = 20;
    cfg.api.request_timeout_ms = 2000;
    cfg.api.longpoll_timeout_ms = 5;
    cfg.api.sse_heartbeat_ms = 10;
    {
      std::ofstream token(cfg.data_dir / "api.token");
      token << kToken << "\n";
    }
    // Wired like daemon/daemon.cpp.
    n->store = fuzz::open_fuzz_store(cfg.storage);
    n->api = std::make_unique<ipc::ApiService>(*n->store, cfg.api, cfg.device_name);
    n->sync = std::make_unique<daemon::DaemonSync>(n->io, *n->store, cfg);
    n->sync->attach_api(*n->api);
    n->server = std::make_unique<ipc::ApiServer>(n->io, *n->api, cfg.api, cfg.data_dir);
    auto st = n->server->start();
    if (!st) std::fprintf(stderr, "cannot start the API: %s\n", st.error().message.c_str());
    FUZZ_CHECK(st.ok());
    ipc::ApiServer* server = n->server.get();
    n->store->set_change_listener(
        [server](const ProjectId& p, std::uint64_t seq) { server->notify_change(p, seq); });
    return n;
  }();
  return *d;
}

// Checks the bytes the server answered with: a sequence of HTTP/1.x responses, each with a
// Content-Length body, except 1xx (no body) and an event stream (the rest of the connection).
void check_responses(std::string_view r, bool cut) {
  while (!r.empty()) {
    auto head_end = r.find("\r\n\r\n");
    if (head_end == std::string_view::npos) {
      FUZZ_CHECK(cut);
      return;
    }
    std::string_view head = r.substr(0, head_end + 2);
    FUZZ_CHECK(head.size() >= 12 && head.substr(0, 7) == "HTTP/1.");
    std::string_view status = head.substr(9, 3);
    if (status == "500") {
      std::fprintf(stderr, "500 response: %.*s\n",
                   static_cast<int>(std::min<std::size_t>(r.size(), 2000)), r.data());
    }
    FUZZ_CHECK(status != "500");
    r.remove_prefix(head_end + 4);
    if (status[0] == '1') continue;
    std::string lower(head);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("\r\ncontent-type: text/event-stream\r\n") != std::string::npos) return;
    auto cl = lower.find("\r\ncontent-length: ");
    FUZZ_CHECK(cl != std::string::npos);
    std::size_t length = std::strtoull(lower.c_str() + cl + 18, nullptr, 10);
    if (r.size() < length) {
      FUZZ_CHECK(cut);
      return;
    }
    r.remove_prefix(length);
  }
}

template <class Socket>
void exchange(Daemon& d, Socket& sock, std::string_view request) {
  std::string response;
  std::array<char, 4096> buf;
  int pending = 0;
  bool cut = false;
  asio::steady_timer limit(d.io);
  limit.expires_after(kClientLimit);
  ++pending;
  limit.async_wait([&](boost::system::error_code ec) {
    --pending;
    if (ec) return;
    cut = true;
    boost::system::error_code ignore;
    sock.close(ignore);
  });
  std::function<void()> read_more = [&] {
    ++pending;
    sock.async_read_some(asio::buffer(buf), [&](boost::system::error_code ec, std::size_t n) {
      --pending;
      response.append(buf.data(), n);
      if (ec) {
        limit.cancel();
        return;
      }
      // An event stream never ends by itself: seen its start, hang up.
      if (response.find("text/event-stream") != std::string::npos) {
        boost::system::error_code ignore;
        sock.close(ignore);
        limit.cancel();
        return;
      }
      read_more();
    });
  };
  ++pending;
  asio::async_write(sock, asio::buffer(request.data(), request.size()),
                    [&](boost::system::error_code, std::size_t) {
                      --pending;
                      boost::system::error_code ignore;
                      sock.shutdown(asio::socket_base::shutdown_send, ignore);
                    });
  read_more();
  while (pending > 0) d.io.run_one();
  static const bool verbose = std::getenv("FIELDSYNC_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n", response.c_str());
  check_responses(response, cut);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Daemon& d = the_daemon();
  std::string_view request(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    asio::local::stream_protocol::socket sock(d.io);
    sock.connect(asio::local::stream_protocol::endpoint(d.server->socket_path().string()));
    exchange(d, sock, request);
  } else {
    asio::ip::tcp::socket sock(d.io);
    sock.connect(
        asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), d.server->http_port()));
    exchange(d, sock, request);
  }
  // Let the server finish with the connection, so inputs do not overlap.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (d.server->connection_count() > 0 && std::chrono::steady_clock::now() < until)
    d.io.run_one_for(std::chrono::milliseconds(10));
  // POST .../leave deletes the project the seeds use: bring it back for the next input.
  if (!d.store->get_project(*ProjectId::parse(fuzz::kFuzzProject)).ok())
    (void)fuzz::add_fuzz_project(*d.store);
  return 0;
}
