// ApiServer's SSE streams over a real Unix socket, on a feed that counts its reads: streams of
// a project at the same cursor share one read and rendering of each page, streams at other
// cursors get their own, and a shared page is freed once the last stream holding it sent it.
// The server's io_context runs on the test's thread, in slices (run_until).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "ipc/api_server.hpp"
#include "ipc/api_service.hpp"
#include "storage/store.hpp"
#include "storage/temp_dir.hpp"
#include "support/run_until.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::run_until;

namespace {

constexpr int kWaitMs = 20000;

// A changes feed in memory: change i (from 1) has seq i and the body given when it was added.
struct Feed {
  std::vector<std::string> changes;
  int reads = 0;

  Result<ChangeChunk> read(std::uint64_t after, std::uint32_t limit) {
    ++reads;
    ChangeChunk c;
    c.last_seq = after;
    for (std::uint64_t seq = after + 1; seq <= changes.size() && c.events.size() < limit; ++seq) {
      c.events.emplace_back(seq, changes[seq - 1]);
      c.last_seq = seq;
    }
    return c;
  }
};

// The SSE text of change `seq` as the server renders it.
std::string event_text(std::uint64_t seq, const std::string& body) {
  return "id: " + std::to_string(seq) + "\nevent: change\ndata: " + body + "\n\n";
}

// An API server with GET /test/feed?since=N&limit=L streaming `feed` as one project's changes.
struct Server {
  test::TempDir dir;
  std::unique_ptr<storage::Store> store;
  config::ApiOptions options;
  std::unique_ptr<ApiService> api;
  asio::io_context io;
  std::unique_ptr<ApiServer> server;
  Feed feed;
  ProjectId project;

  Server() {
    storage::StoreOptions so;
    so.data_dir = dir.path() / "data";
    so.durable = false;
    auto s = storage::Store::open(so);
    REQUIRE(s);
    store = std::move(*s);
    options.http_enabled = false;
    options.socket_path = dir.path() / "api.sock";  // (root's default is /run/fieldsync)
    options.max_stream_buffer_bytes = 64u << 20;    // nobody is too slow here
    api = std::make_unique<ApiService>(*store, options, "test-device");
    auto pid = ProjectId::parse(std::string(32, 'a'));
    REQUIRE(pid);
    project = *pid;
    api->router().add("GET", "/test/feed", [this](ApiRequest& req) {
      auto stream = std::make_shared<ChangeStream>();
      stream->mode = ChangeStream::Mode::sse;
      stream->project = project;
      stream->since = std::stoull(req.query_value("since").value_or("0"));
      stream->limit = static_cast<std::uint32_t>(std::stoul(req.query_value("limit").value()));
      stream->heartbeat = 600s;
      stream->fetch = [this, limit = stream->limit](std::uint64_t after) {
        return feed.read(after, limit);
      };
      ApiResponse r;
      r.stream = std::move(stream);
      return r;
    });
    server = std::make_unique<ApiServer>(io, *api, options, dir.path() / "data");
    REQUIRE(server->start());
  }
  ~Server() {
    bool stopped = false;
    server->stop(1s, [&stopped] { stopped = true; });
    run_until(
        io, [&] { return stopped; }, kWaitMs);
  }

  std::size_t streams() { return api->context().listen.streams(); }
  std::size_t page_bytes() { return api->context().listen.stream_bytes(); }
  // Runs the server until the feed was read `n` times and nothing more is ready to run, so
  // that a read beyond `n` would show.
  bool reads_reach(int n) {
    if (!run_until(
            io, [&] { return feed.reads >= n; }, kWaitMs))
      return false;
    io.poll();
    return true;
  }
};

// A subscriber on a raw non-blocking Unix socket; takes what came only when asked to.
struct Subscriber {
  int fd = -1;
  std::string data;

  Subscriber(const std::filesystem::path& socket, const std::string& target, int rcvbuf = 0) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    if (rcvbuf) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  }
  ~Subscriber() { ::close(fd); }

  // Takes what the socket holds (up to `max` bytes in all).
  void take(std::size_t max = std::string::npos) {
    char buf[65536];
    while (data.size() < max) {
      ssize_t n = ::recv(fd, buf, std::min(sizeof buf, max - data.size()), 0);
      if (n <= 0) return;
      data.append(buf, static_cast<std::size_t>(n));
    }
  }
  // Runs the server until `want` came.
  bool wait_for(asio::io_context& io, const std::string& want) {
    return run_until(
        io,
        [&] {
          take();
          return data.find(want) != std::string::npos;
        },
        kWaitMs);
  }
  // Runs the server until `n` bytes came.
  bool wait_for_bytes(asio::io_context& io, std::size_t n) {
    return run_until(
        io,
        [&] {
          take(n);
          return data.size() >= n;
        },
        kWaitMs);
  }
  // The event ids received so far, in order.
  std::vector<std::uint64_t> ids() const {
    std::vector<std::uint64_t> out;
    for (std::size_t at = data.find("\nid: "); at != std::string::npos;
         at = data.find("\nid: ", at + 1))
      out.push_back(std::stoull(data.substr(at + 5)));
    return out;
  }
};

constexpr const char* kHeaderEnd = "retry: 2000\n\n";

}  // namespace

TEST_CASE(
    "SSE streams at the same cursor share one read of each page, other cursors read their own") {
  Server srv;
  const auto socket = srv.server->socket_path();
  std::vector<std::unique_ptr<Subscriber>> subs;
  for (int i = 0; i < 4; ++i) {
    subs.push_back(std::make_unique<Subscriber>(socket, "/test/feed?since=0&limit=2"));
    // The response header comes after the stream's first read of the feed.
    REQUIRE(subs.back()->wait_for(srv.io, kHeaderEnd));
  }
  REQUIRE(srv.streams() == 4);
  REQUIRE(srv.reads_reach(1));
  // One read of the (empty) feed after cursor 0 for the four streams.
  CHECK(srv.feed.reads == 1);

  for (int i = 1; i <= 3; ++i) srv.feed.changes.push_back("{\"n\":" + std::to_string(i) + "}");
  srv.server->notify_change(srv.project, 3);
  for (auto& s : subs) {
    REQUIRE(s->wait_for(srv.io, "id: 3\n"));
    CHECK(s->ids() == std::vector<std::uint64_t>{1, 2, 3});
  }
  // Pages after 0 (changes 1-2), after 2 (3) and after 3 (none): read once for all four.
  REQUIRE(srv.reads_reach(4));
  CHECK(srv.feed.reads == 4);

  // A stream at another cursor reads its own page, then shares the one after 3.
  subs.push_back(std::make_unique<Subscriber>(socket, "/test/feed?since=1&limit=2"));
  REQUIRE(subs.back()->wait_for(srv.io, "id: 3\n"));
  CHECK(subs.back()->ids() == std::vector<std::uint64_t>{2, 3});
  REQUIRE(srv.reads_reach(5));
  CHECK(srv.feed.reads == 5);

  // The next change: one page after 3 and one (empty) after 4 for all five.
  srv.feed.changes.push_back("{\"n\":4}");
  srv.server->notify_change(srv.project, 4);
  for (auto& s : subs) REQUIRE(s->wait_for(srv.io, "id: 4\n"));
  CHECK(subs[0]->ids() == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(subs[4]->ids() == std::vector<std::uint64_t>{2, 3, 4});
  REQUIRE(srv.reads_reach(7));
  CHECK(srv.feed.reads == 7);
  // Everything was sent: no page is held any more.
  CHECK(run_until(
      srv.io, [&] { return srv.page_bytes() == 0; }, kWaitMs));
}

TEST_CASE("a page shared by slow SSE streams is held once and freed when the last one sent it") {
  Server srv;
  const auto socket = srv.server->socket_path();
  std::vector<std::unique_ptr<Subscriber>> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(std::make_unique<Subscriber>(socket, "/test/feed?since=0&limit=4", 4096));
    REQUIRE(subs.back()->wait_for(srv.io, kHeaderEnd));
  }
  REQUIRE(srv.reads_reach(1));
  // A page of 4 MiB: far more than the sockets take, so each stream keeps most of it queued.
  std::string page;
  for (int i = 1; i <= 4; ++i) {
    std::string body =
        "{\"n\":" + std::to_string(i) + ",\"x\":\"" + std::string(1 << 20, 'x') + "\"}";
    page += event_text(static_cast<std::uint64_t>(i), body);
    srv.feed.changes.push_back(std::move(body));
  }
  srv.server->notify_change(srv.project, 4);
  // Each stream took the page, and read on (nothing after 4): one read of each for all three.
  REQUIRE(srv.reads_reach(3));
  CHECK(srv.feed.reads == 3);
  REQUIRE(srv.page_bytes() == page.size());  // one copy for the three streams

  auto read_all = [&](Subscriber& s) {
    const std::size_t start = s.data.find(kHeaderEnd) + std::strlen(kHeaderEnd);
    REQUIRE(s.wait_for_bytes(srv.io, start + page.size()));
    CHECK(s.data.substr(start) == page);
  };
  // Two subscribers read everything: the third still holds the page.
  read_all(*subs[0]);
  read_all(*subs[1]);
  CHECK(srv.page_bytes() == page.size());
  // The last one too: the page is freed.
  read_all(*subs[2]);
  CHECK(run_until(
      srv.io, [&] { return srv.page_bytes() == 0; }, kWaitMs));
  for (auto& s : subs) CHECK(s->ids() == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(srv.feed.reads == 3);
}
