// Streamed bodies through a real ApiServer on its Unix socket and on loopback TCP: chunked
// responses pulled from a BodySource one piece at a time, request bodies fed to a BodySink as
// they arrive (api.max_stream_bytes, deadlines, authentication before the body, errors).
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "ipc/api_server.hpp"
#include "ipc/http_error.hpp"
#include "support/api_server_fixture.hpp"

// A deadline that the tests' own steps (a header, then a piece of body) stay well inside:
// ThreadSanitizer runs this code 5-15 times slower, and a loaded machine adds to that.
#if defined(__SANITIZE_THREAD__)
constexpr std::uint32_t kShortDeadlineMs = 3000;
#else
constexpr std::uint32_t kShortDeadlineMs = 300;
#endif

using namespace fieldsync;
using namespace fieldsync::ipc;
using fieldsync::test::ApiServerFixture;
using fieldsync::test::eventually;
using fieldsync::test::parse_response;
using fieldsync::test::RawConn;
using fieldsync::test::read_response;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kPiece = 64 * 1024;

// A test body: a fixed pseudo-random block of a prime length repeated, so a lost, repeated or
// reordered piece shows, and checking it is a memcmp.
constexpr std::size_t kPeriod = 1000003;
const std::string& pattern() {
  static const std::string p = [] {
    std::string s(kPeriod, '\0');
    std::uint32_t x = 2463534242u;
    for (auto& ch : s) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      ch = static_cast<char>(x);
    }
    return s;
  }();
  return p;
}
std::string body_text(std::uint64_t from, std::uint64_t n) {
  std::string s;
  s.reserve(n);
  while (s.size() < n) {
    auto at = static_cast<std::size_t>((from + s.size()) % kPeriod);
    s.append(pattern(), at, std::min<std::size_t>(kPeriod - at, n - s.size()));
  }
  return s;
}
// Whether `piece` is the test body at offset `from`.
bool is_body_text(std::uint64_t from, std::string_view piece) {
  while (!piece.empty()) {
    auto at = static_cast<std::size_t>(from % kPeriod);
    auto n = std::min<std::size_t>(kPeriod - at, piece.size());
    if (piece.substr(0, n) != std::string_view(pattern()).substr(at, n)) return false;
    piece.remove_prefix(n);
    from += n;
  }
  return true;
}

// What the test source did, shared between the server's thread and the test.
struct SourceLog {
  std::atomic<std::uint64_t> produced{0};  // bytes handed to the server
  std::atomic<int> calls{0};
  std::atomic<bool> ended{false};
  std::atomic<bool> released{false};
  std::atomic<std::uint64_t> received{0};         // bytes the test client has read so far
  std::atomic<std::uint64_t> max_outstanding{0};  // produced - received, when asked for more
  std::mutex mu;
  std::optional<Status> outcome;

  void reset() {
    produced = 0;
    calls = 0;
    ended = false;
    released = false;
    received = 0;
    max_outstanding = 0;
    std::lock_guard lock(mu);
    outcome.reset();
  }
};

// Frees itself with the source: released tells that the server let go of it.
struct Releaser {
  std::shared_ptr<SourceLog> log;
  ~Releaser() { log->released = true; }
};

// `total` bytes in pieces of kPiece (unbounded when total is 0); fails with `fail_with` after
// `fail_after` pieces when set.
std::shared_ptr<BodySource> test_source(std::shared_ptr<SourceLog> log, std::uint64_t total,
                                        std::optional<Error> fail_with = std::nullopt,
                                        int fail_after = 0) {
  auto src = std::make_shared<BodySource>();
  auto hold = std::make_shared<Releaser>(Releaser{log});
  src->next = [log, hold, total, fail_with, fail_after]() -> Result<Bytes> {
    const int call = log->calls++;
    if (fail_with && call >= fail_after) return *fail_with;
    const std::uint64_t at = log->produced;
    const std::uint64_t received = log->received;
    if (at > received && at - received > log->max_outstanding) log->max_outstanding = at - received;
    std::uint64_t n = total == 0 ? kPiece : std::min<std::uint64_t>(kPiece, total - at);
    std::string text = body_text(at, n);
    log->produced += n;
    return Bytes(text.begin(), text.end());
  };
  src->done = [log](const Status& st) {
    std::lock_guard lock(log->mu);
    log->outcome = st;
    log->ended = true;
  };
  return src;
}

std::string get_request(const ApiServerFixture& f, Transport t, const std::string& target,
                        const std::string& version = "HTTP/1.1", bool close = true) {
  std::string r = "GET " + target + " " + version + "\r\nHost: localhost\r\n";
  if (t == Transport::tcp) r += "Authorization: Bearer " + f.token + "\r\n";
  if (close) r += "Connection: close\r\n";
  return r + "\r\n";
}

RawConn connect(const ApiServerFixture& f, Transport t, int rcvbuf = 0) {
  return t == Transport::tcp ? RawConn::tcp(f.port(), rcvbuf)
                             : RawConn::unix_socket(f.socket_path(), rcvbuf);
}

// Reads the whole response, counting what arrived in log->received as it comes, `step` bytes
// per read and `pause` between reads (a slow reader).
std::string read_counting(RawConn& c, SourceLog& log, std::size_t step,
                          std::chrono::milliseconds pause = 0ms) {
  std::string all;
  while (true) {
    bool eof = false;
    auto piece = c.read_some(step, 10s, &eof);
    if (piece.empty()) break;
    all += piece;
    log.received += piece.size();
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
  return all;
}

// The largest send buffer the kernel may give the server's socket, plus the client's receive
// buffer and two pieces: what can be in flight without the server buffering anything itself.
std::uint64_t in_flight_bound(Transport t) {
  std::uint64_t send_max = 4u << 20;
  if (t == Transport::tcp) {
    std::ifstream in("/proc/sys/net/ipv4/tcp_wmem");
    std::uint64_t lo = 0, def = 0, max = 0;
    if (in >> lo >> def >> max) send_max = max;
  }
  return send_max + (1u << 20) + 2 * kPiece;
}

const char* name(Transport t) { return t == Transport::tcp ? "TCP" : "Unix socket"; }

}  // namespace

// ------------------------------------------------------------------------------ responses

TEST_CASE("a streamed response arrives whole, chunked, pulled one piece at a time") {
  ApiServerFixture f;
  auto log = std::make_shared<SourceLog>();
  std::atomic<std::uint64_t> total{0};
  f.router().add("GET", "/test/export",
                 [&](ApiRequest&) { return ApiResponse::streamed(test_source(log, total)); });
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->reset();
    // Far more than can be in flight, so a server that read ahead would show.
    const std::uint64_t size = std::max<std::uint64_t>(40u << 20, 3 * in_flight_bound(t));
    total = size;
    auto c = connect(f, t, 64 * 1024);
    REQUIRE(c.send(get_request(f, t, "/test/export")));
    auto raw = read_counting(c, *log, 16 * 1024);
    auto r = parse_response(raw);
    CHECK(r.status == 200);
    CHECK(r.headers["content-type"] == "application/octet-stream");
    CHECK(r.chunked);
    CHECK(r.headers.count("content-length") == 0);
    CHECK(r.complete);
    CHECK(r.chunks >= size / kPiece);
    REQUIRE(r.body.size() == size);
    CHECK(r.body == body_text(0, size));
    // The source was asked for a piece only while little was unread: the daemon never held more
    // than the socket buffers and the piece being written.
    INFO("max outstanding " << log->max_outstanding << ", bound " << in_flight_bound(t));
    CHECK(log->max_outstanding <= in_flight_bound(t));
    CHECK(eventually([&] { return log->ended.load() && log->released.load(); }));
    std::lock_guard lock(log->mu);
    REQUIRE(log->outcome);
    CHECK(log->outcome->ok());
  }
}

TEST_CASE("a slow reader gets the whole stream: each write has the deadline, not the response") {
  config::ApiOptions opt;
  opt.request_timeout_ms = 1000;
  ApiServerFixture f(opt);
  auto log = std::make_shared<SourceLog>();
  const std::uint64_t size = 8u << 20;
  f.router().add("GET", "/test/export",
                 [&](ApiRequest&) { return ApiResponse::streamed(test_source(log, size)); });
  f.start();
  auto c = connect(f, Transport::unix_socket);
  REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/export")));
  const auto began = std::chrono::steady_clock::now();
  // 128 KiB every 25 ms: the whole body takes longer than api.request_timeout_ms.
  auto raw = read_counting(c, *log, 128 * 1024, 25ms);
  const auto took = std::chrono::steady_clock::now() - began;
  auto r = parse_response(raw);
  CHECK(r.complete);
  CHECK(r.body == body_text(0, size));
  CHECK(took > 1000ms);
  CHECK(log->max_outstanding <= in_flight_bound(Transport::unix_socket));
  CHECK(eventually([&] { return log->ended.load(); }));
  std::lock_guard lock(log->mu);
  CHECK(log->outcome->ok());
}

TEST_CASE("a reader that stops reading is cut at the write deadline and the source released") {
  config::ApiOptions opt;
  opt.request_timeout_ms = kShortDeadlineMs;
  ApiServerFixture f(opt);
  auto log = std::make_shared<SourceLog>();
  f.router().add("GET", "/test/endless",
                 [&](ApiRequest&) { return ApiResponse::streamed(test_source(log, 0)); });
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->reset();
    auto c = connect(f, t, 64 * 1024);
    REQUIRE(c.send(get_request(f, t, "/test/endless")));
    // Reads nothing: the server fills the socket buffers, then its write times out.
    REQUIRE(eventually([&] { return log->ended.load() && log->released.load(); }));
    {
      std::lock_guard lock(log->mu);
      REQUIRE(log->outcome);
      CHECK(log->outcome->error().code == Errc::unavailable);
    }
    CHECK(log->produced <= in_flight_bound(t));
    CHECK(eventually([&] { return f.connections() == 0; }));
    auto r = parse_response(c.read_to_end());
    CHECK(r.status == 200);
    CHECK_FALSE(r.complete);
  }
}

TEST_CASE("a client that disconnects mid-stream: the source ends and is released") {
  ApiServerFixture f;
  auto log = std::make_shared<SourceLog>();
  f.router().add("GET", "/test/endless",
                 [&](ApiRequest&) { return ApiResponse::streamed(test_source(log, 0)); });
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->reset();
    {
      auto c = connect(f, t);
      REQUIRE(c.send(get_request(f, t, "/test/endless")));
      std::size_t got = 0;
      while (got < (1u << 20)) {
        auto piece = c.read_some(1 << 16, 10s);
        REQUIRE(!piece.empty());
        got += piece.size();
      }
    }  // closed mid-stream
    REQUIRE(eventually([&] { return log->ended.load() && log->released.load(); }));
    std::lock_guard lock(log->mu);
    CHECK(log->outcome->error().code == Errc::unavailable);
    CHECK(eventually([&] { return f.connections() == 0; }));
  }
}

TEST_CASE("a source error mid-stream closes the connection without the final chunk") {
  ApiServerFixture f;
  auto log = std::make_shared<SourceLog>();
  f.router().add("GET", "/test/broken", [&](ApiRequest&) {
    return ApiResponse::streamed(
        test_source(log, 0, make_error(Errc::data_loss, "bundle record unreadable"), 3));
  });
  f.router().add("GET", "/test/refused", [&](ApiRequest&) {
    return ApiResponse::streamed(
        test_source(log, 0, make_error(Errc::not_found, "no such project"), 0));
  });
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->reset();
    auto c = connect(f, t);
    REQUIRE(c.send(get_request(f, t, "/test/broken")));
    auto r = parse_response(c.read_to_end());
    CHECK(r.status == 200);
    CHECK(r.chunked);
    CHECK_FALSE(r.complete);  // no terminating chunk: the client knows the body is incomplete
    CHECK(r.body == body_text(0, 3 * kPiece));
    REQUIRE(eventually([&] { return log->ended.load(); }));
    std::lock_guard lock(log->mu);
    CHECK(log->outcome->error().code == Errc::data_loss);
  }
  {
    INFO("an error before the first piece is an ordinary error response");
    log->reset();
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/refused")));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 404);
    CHECK(r.complete);
    CHECK(r.body.find("\"error\":\"not_found\"") != std::string::npos);
    CHECK(r.body.find("no such project") != std::string::npos);
    CHECK(eventually([&] { return log->ended.load(); }));
  }
}

TEST_CASE("streamed responses keep the connection alive, HTTP/1.0 gets 501") {
  ApiServerFixture f;
  auto log = std::make_shared<SourceLog>();
  f.router().add("GET", "/test/small",
                 [&](ApiRequest&) { return ApiResponse::streamed(test_source(log, 100000)); });
  f.start();
  auto c = connect(f, Transport::unix_socket);
  std::string raw;
  REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/small", "HTTP/1.1", false) +
                 get_request(f, Transport::unix_socket, "/v1/status", "HTTP/1.1", false)));
  // Both answers arrive on the one connection: the streamed one ended with its last chunk.
  REQUIRE(eventually([&] {
    raw += c.read_some(1 << 16, 100ms);
    return raw.find("device_id") != std::string::npos;
  }));
  auto first = parse_response(raw);
  CHECK(first.complete);
  CHECK(first.body == body_text(0, 100000));

  log->reset();
  auto old = connect(f, Transport::unix_socket);
  REQUIRE(old.send(get_request(f, Transport::unix_socket, "/test/small", "HTTP/1.0")));
  auto r = parse_response(old.read_to_end());
  CHECK(r.status == 501);
  CHECK(eventually([&] { return log->ended.load() && log->released.load(); }));
  CHECK(log->calls == 0);
}

TEST_CASE("a large piece is written in slices of at most 256 KiB") {
  ApiServerFixture f;
  f.router().add("GET", "/test/big-pieces", [](ApiRequest&) {
    auto src = std::make_shared<BodySource>();
    auto sent = std::make_shared<int>(0);
    src->next = [sent]() -> Result<Bytes> {
      if (*sent == 3) return Bytes{};
      auto text = body_text(static_cast<std::uint64_t>(*sent) * (1u << 20), 1u << 20);
      ++*sent;
      return Bytes(text.begin(), text.end());
    };
    return ApiResponse::streamed(std::move(src), "application/x-test");
  });
  f.start();
  auto c = connect(f, Transport::unix_socket);
  REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/big-pieces")));
  auto r = parse_response(read_response(c));
  CHECK(r.complete);
  CHECK(r.headers["content-type"] == "application/x-test");
  CHECK(r.chunks == 12);
  CHECK(r.body == body_text(0, 3u << 20));
}

// ------------------------------------------------------------------------------ uploads

namespace {

// What the test sink saw, shared between the server's thread and the test.
struct SinkLog {
  std::atomic<int> opened{0};
  std::atomic<int> finished{0};
  std::atomic<int> aborted{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::size_t> largest_piece{0};
  std::atomic<bool> mismatch{false};  // a byte differed from body_text()
  std::optional<Error> fail_with;     // write() fails once this many bytes arrived...
  std::uint64_t fail_at = 0;
};

void add_upload_route(ApiServerFixture& f, std::shared_ptr<SinkLog> log,
                      const std::string& path = "/test/import") {
  f.router().add_streamed("POST", path,
                          [log](ApiRequest& req) -> Result<std::shared_ptr<BodySink>> {
                            ++log->opened;
                            if (req.query_value("refuse"))
                              return make_error(Errc::not_found, "no such project");
                            if (!req.body.empty()) log->mismatch = true;
                            auto sink = std::make_shared<BodySink>();
                            sink->write = [log](ByteView piece) -> Status {
                              if (piece.size() > log->largest_piece)
                                log->largest_piece = piece.size();
                              if (!is_body_text(log->bytes, as_chars(piece))) log->mismatch = true;
                              log->bytes += piece.size();
                              if (log->fail_with && log->bytes >= log->fail_at)
                                return *log->fail_with;
                              return {};
                            };
                            sink->finish = [log] {
                              ++log->finished;
                              ApiResponse r;
                              r.status = 201;
                              r.body = "{\"bytes\":" + std::to_string(log->bytes.load()) + "}";
                              return r;
                            };
                            sink->abort = [log] { ++log->aborted; };
                            return sink;
                          });
}

std::string post_header(const ApiServerFixture& f, Transport t, const std::string& target,
                        std::optional<std::uint64_t> length, bool with_token = true) {
  std::string r = "POST " + target + " HTTP/1.1\r\nHost: localhost\r\n";
  if (t == Transport::tcp && with_token) r += "Authorization: Bearer " + f.token + "\r\n";
  r += "Content-Type: application/octet-stream\r\n";
  if (length)
    r += "Content-Length: " + std::to_string(*length) + "\r\n";
  else
    r += "Transfer-Encoding: chunked\r\n";
  return r + "\r\n";
}

std::string chunk(const std::string& data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

}  // namespace

TEST_CASE("a streamed upload of tens of MB reaches the sink whole, as it arrives") {
  config::ApiOptions opt;
  opt.max_body_bytes = 64 * 1024;  // streamed routes are not bound by it
  ApiServerFixture f(opt);
  auto log = std::make_shared<SinkLog>();
  add_upload_route(f, log);
  f.start();
  const std::uint64_t size = 32u << 20;
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    for (bool chunked : {false, true}) {
      INFO(name(t) << (chunked ? ", chunked" : ", Content-Length"));
      log->bytes = 0;
      log->finished = 0;
      log->aborted = 0;
      auto c = connect(f, t);
      REQUIRE(c.send(post_header(f, t, "/test/import",
                                 chunked ? std::nullopt : std::optional<std::uint64_t>(size))));
      for (std::uint64_t at = 0; at < size; at += 1u << 20) {
        auto part = body_text(at, 1u << 20);
        REQUIRE(c.send(chunked ? chunk(part) : part));
        if (at == 4u << 20) {
          // The sink has the first MiBs while the client still holds the rest: nothing waits
          // for the whole body.
          REQUIRE(eventually([&] { return log->bytes >= (4u << 20); }));
          CHECK(log->finished == 0);
        }
      }
      if (chunked) REQUIRE(c.send("0\r\n\r\n"));
      std::string raw;
      REQUIRE(eventually([&] {
        raw += c.read_some(1 << 16, 100ms);
        return parse_response(raw).complete;
      }));
      auto r = parse_response(raw);
      CHECK(r.status == 201);
      CHECK(r.body == "{\"bytes\":" + std::to_string(size) + "}");
      CHECK(log->bytes == size);
      CHECK_FALSE(log->mismatch);
      CHECK(log->largest_piece <= kPiece);
      CHECK(log->finished == 1);
      CHECK(log->aborted == 0);
    }
  }
  CHECK(log->opened == 4);
  {
    INFO("normal routes keep api.max_body_bytes");
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(post_header(f, Transport::unix_socket, "/v1/projects", 100000)));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 413);
    CHECK(r.body.find("api.max_body_bytes") != std::string::npos);
  }
  {
    INFO("an empty body goes straight to finish()");
    log->bytes = 0;
    log->finished = 0;
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(post_header(f, Transport::unix_socket, "/test/import", 0)));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 201);
    CHECK(r.body == "{\"bytes\":0}");
    CHECK(log->finished == 1);
  }
}

TEST_CASE("a streamed upload over api.max_stream_bytes gets 413 and the sink is aborted") {
  config::ApiOptions opt;
  opt.max_stream_bytes = 1u << 20;
  ApiServerFixture f(opt);
  auto log = std::make_shared<SinkLog>();
  add_upload_route(f, log);
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    {
      INFO("Content-Length: refused from the header, the handler is never called");
      auto c = connect(f, t);
      REQUIRE(c.send(post_header(f, t, "/test/import", (1u << 20) + 1)));
      auto r = parse_response(read_response(c));
      CHECK(r.status == 413);
      CHECK(r.body.find("api.max_stream_bytes") != std::string::npos);
      CHECK(log->opened == 0);
    }
    {
      INFO("chunked: counted as it arrives");
      log->aborted = 0;
      log->bytes = 0;
      auto c = connect(f, t);
      REQUIRE(c.send(post_header(f, t, "/test/import", std::nullopt)));
      for (std::uint64_t at = 0; at < (2u << 20) && !c.readable(); at += 64 * 1024)
        if (!c.send(chunk(body_text(at, 64 * 1024)))) break;  // the server may close first
      auto r = parse_response(read_response(c));
      CHECK(r.status == 413);
      CHECK(r.body.find("api.max_stream_bytes = 1048576") != std::string::npos);
      CHECK(eventually([&] { return log->aborted == 1; }));
      CHECK(log->opened == 1);
      log->opened = 0;
      CHECK(log->finished == 0);
      CHECK(log->bytes <= (1u << 20));
    }
  }
}

TEST_CASE("a client that stalls mid-upload is cut at the deadline and the sink aborted") {
  config::ApiOptions opt;
  opt.request_timeout_ms = kShortDeadlineMs;
  ApiServerFixture f(opt);
  auto log = std::make_shared<SinkLog>();
  add_upload_route(f, log);
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->aborted = 0;
    log->bytes = 0;
    auto c = connect(f, t);
    REQUIRE(c.send(post_header(f, t, "/test/import", 1u << 20)));
    REQUIRE(c.send(body_text(0, 100000)));
    // ... and nothing more.
    REQUIRE(eventually([&] { return log->aborted == 1; }));
    CHECK(log->finished == 0);
    CHECK(log->bytes == 100000);
    bool eof = false;
    CHECK(c.read_some(1 << 16, 5s, &eof).empty());
    CHECK(eof);  // closed without an answer
    CHECK(eventually([&] { return f.connections() == 0; }));
  }
}

TEST_CASE("a streamed upload is authenticated before any body byte is read") {
  ApiServerFixture f;
  auto log = std::make_shared<SinkLog>();
  add_upload_route(f, log);
  f.start();
  SECTION("no token on TCP: 401 without the body being sent") {
    auto c = connect(f, Transport::tcp);
    REQUIRE(c.send(post_header(f, Transport::tcp, "/test/import", 10u << 20, false)));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 401);
  }
  SECTION("a foreign Host on TCP: 403") {
    auto c = connect(f, Transport::tcp);
    auto h = post_header(f, Transport::tcp, "/test/import", 10u << 20);
    h.replace(h.find("Host: localhost"), 15, "Host: evil.example");
    REQUIRE(c.send(h));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 403);
  }
  SECTION("the handler refuses from the header: its error, the body unread") {
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(post_header(f, Transport::unix_socket, "/test/import?refuse=1", 10u << 20)));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 404);
    CHECK(log->opened == 1);
  }
  CHECK(log->bytes == 0);
  CHECK(log->aborted == 0);
  CHECK(log->finished == 0);
}

TEST_CASE("a write() error mid-upload answers the mapped status and closes") {
  ApiServerFixture f;
  auto log = std::make_shared<SinkLog>();
  log->fail_with = make_error(Errc::verification_failed, "bundle signature does not verify");
  log->fail_at = 1u << 20;
  add_upload_route(f, log);
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->bytes = 0;
    log->aborted = 0;
    auto c = connect(f, t);
    REQUIRE(c.send(post_header(f, t, "/test/import", 8u << 20)));
    for (std::uint64_t at = 0; at < (8u << 20) && !c.readable(); at += 64 * 1024)
      if (!c.send(body_text(at, 64 * 1024))) break;
    auto r = parse_response(read_response(c));
    CHECK(r.status == http_status(Errc::verification_failed));
    CHECK(r.status == 422);
    CHECK(r.headers["connection"] == "close");
    CHECK(r.body.find("\"error\":\"verification_failed\"") != std::string::npos);
    CHECK(r.body.find("bundle signature does not verify") != std::string::npos);
    CHECK(eventually([&] { return log->aborted == 1; }));
    CHECK(log->finished == 0);
    CHECK(log->bytes < (8u << 20));
  }
}

TEST_CASE("a streamed upload with Expect: 100-continue") {
  ApiServerFixture f;
  auto log = std::make_shared<SinkLog>();
  add_upload_route(f, log);
  f.start();
  auto c = connect(f, Transport::unix_socket);
  auto h = post_header(f, Transport::unix_socket, "/test/import", 1000);
  h.insert(h.size() - 2, "Expect: 100-continue\r\n");
  REQUIRE(c.send(h));
  auto cont = c.read_some(1 << 16, 10s);
  CHECK(cont.rfind("HTTP/1.1 100 Continue", 0) == 0);
  CHECK(log->opened == 1);
  REQUIRE(c.send(body_text(0, 1000)));
  std::string raw;
  REQUIRE(eventually([&] {
    raw += c.read_some(1 << 16, 100ms);
    return parse_response(raw).complete;
  }));
  CHECK(parse_response(raw).status == 201);
  CHECK(log->bytes == 1000);
}

// ------------------------------------------------------------------------------ pacing

namespace {

// A sink that asks to be resumed after every piece; the test resumes it from its own thread
// (as a worker thread would).
struct PacedLog {
  std::mutex mu;
  std::vector<std::function<void()>> pending;  // resume() functions not called yet
  std::atomic<int> writes{0};
  std::atomic<int> readies{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<int> finished{0};
  std::atomic<int> aborted{0};
  std::atomic<bool> mismatch{false};
  void reset() {
    std::lock_guard lock(mu);
    pending.clear();
    writes = 0;
    readies = 0;
    bytes = 0;
    finished = 0;
    aborted = 0;
    mismatch = false;
  }
  // Takes the resume function waiting, if any.
  std::function<void()> take() {
    std::lock_guard lock(mu);
    if (pending.empty()) return {};
    auto f = std::move(pending.front());
    pending.erase(pending.begin());
    return f;
  }
};

void add_paced_route(ApiServerFixture& f, std::shared_ptr<PacedLog> log, bool deferred = false) {
  ApiContext& ctx = f.service->context();
  f.router().add_streamed(
      "POST", "/test/paced",
      [log, deferred, &ctx](ApiRequest&) -> Result<std::shared_ptr<BodySink>> {
        auto sink = std::make_shared<BodySink>();
        sink->write = [log](ByteView piece) -> Status {
          if (!is_body_text(log->bytes, as_chars(piece))) log->mismatch = true;
          log->bytes += piece.size();
          ++log->writes;
          return {};
        };
        sink->ready = [log](std::function<void()> resume) {
          std::lock_guard lock(log->mu);
          ++log->readies;
          log->pending.push_back(std::move(resume));
        };
        sink->finish = [log, deferred, &ctx] {
          ++log->finished;
          ApiResponse r;
          r.status = 201;
          r.body = "{\"bytes\":" + std::to_string(log->bytes.load()) + "}";
          if (!deferred) return r;
          // The answer comes from another thread, posted back to the server's.
          ApiResponse d;
          d.deferred = std::make_shared<DeferredResponse>();
          d.deferred->timeout = 10s;
          d.deferred->start = [r, &ctx](std::function<void(ApiResponse)> reply) {
            std::thread([r, reply, &ctx] { ctx.post([r, reply] { reply(r); }); }).detach();
          };
          return d;
        };
        sink->abort = [log] { ++log->aborted; };
        return sink;
      });
}

}  // namespace

TEST_CASE("a sink with ready() paces the body: nothing more is read until resume()") {
  config::ApiOptions opt;
  opt.request_timeout_ms = 20000;
  ApiServerFixture f(opt);
  auto log = std::make_shared<PacedLog>();
  add_paced_route(f, log);
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    INFO(name(t));
    log->reset();
    const std::uint64_t size = 4u << 20;
    auto c = connect(f, t);
    REQUIRE(c.send(post_header(f, t, "/test/paced", size)));
    // The client sends everything at once (the socket buffers hold what the server does not
    // take yet).
    std::thread sender([&] { c.send(body_text(0, size)); });
    int resumed = 0;
    bool checked_status = false;
    while (true) {
      std::function<void()> resume;
      REQUIRE(eventually([&] { return (resume = log->take()) || log->finished == 1; }));
      if (!resume) break;
      // Paused: exactly one write per resume so far, and the server does not read on.
      CHECK(log->writes == resumed + 1);
      CHECK(log->readies == resumed + 1);
      if (!checked_status && log->bytes >= (1u << 20)) {
        // The server still answers other requests while this body waits.
        auto s = connect(f, Transport::unix_socket);
        REQUIRE(s.send(get_request(f, Transport::unix_socket, "/v1/status")));
        auto r = parse_response(read_response(s));
        CHECK(r.status == 200);
        CHECK(r.body.find("device_id") != std::string::npos);
        CHECK(log->writes == resumed + 1);
        checked_status = true;
      }
      ++resumed;
      std::thread([resume] { resume(); }).join();  // from another thread
    }
    sender.join();
    CHECK(checked_status);
    auto r = parse_response(read_response(c));
    CHECK(r.status == 201);
    CHECK(r.body == "{\"bytes\":" + std::to_string(size) + "}");
    CHECK(log->bytes == size);
    CHECK_FALSE(log->mismatch);
    CHECK(log->aborted == 0);
    CHECK(resumed == log->writes);
  }
}

TEST_CASE("a sink that never resumes: the body is cut at api.request_timeout_ms and aborted") {
  config::ApiOptions opt;
  opt.request_timeout_ms = kShortDeadlineMs;
  ApiServerFixture f(opt);
  auto log = std::make_shared<PacedLog>();
  add_paced_route(f, log);
  f.start();
  auto c = connect(f, Transport::unix_socket);
  REQUIRE(c.send(post_header(f, Transport::unix_socket, "/test/paced", 1u << 20)));
  c.send(body_text(0, 1u << 20));  // fails part-way once the server gives up and closes
  REQUIRE(eventually([&] { return log->aborted == 1; }));
  CHECK(log->finished == 0);
  CHECK(log->writes == 1);
  bool eof = false;
  CHECK(c.read_some(1 << 16, 5s, &eof).empty());
  CHECK(eof);  // closed without an answer
  CHECK(eventually([&] { return f.connections() == 0; }));
  // A late resume() does nothing.
  auto late = log->take();
  REQUIRE(late);
  late();
  CHECK(f.connections() == 0);
}

TEST_CASE("finish() may answer later: a deferred reply posted from another thread") {
  ApiServerFixture f;
  auto log = std::make_shared<PacedLog>();
  add_paced_route(f, log, true);
  f.start();
  auto c = connect(f, Transport::unix_socket);
  const std::uint64_t size = 200000;
  REQUIRE(c.send(post_header(f, Transport::unix_socket, "/test/paced", size)));
  REQUIRE(c.send(body_text(0, size)));
  while (log->finished == 0) {
    std::function<void()> resume;
    REQUIRE(eventually([&] { return (resume = log->take()) || log->finished == 1; }));
    if (resume) resume();
  }
  auto r = parse_response(read_response(c));
  CHECK(r.status == 201);
  CHECK(r.body == "{\"bytes\":" + std::to_string(size) + "}");
}

TEST_CASE("ApiContext::post runs jobs on the server's thread and drops them once it is gone") {
  ApiServerFixture f;
  f.start();
  auto& ctx = f.service->context();
  REQUIRE(ctx.post);
  std::promise<std::thread::id> ran;
  std::thread([&] { ctx.post([&] { ran.set_value(std::this_thread::get_id()); }); }).join();
  auto io_thread = f.on_io([] { return std::this_thread::get_id(); });
  CHECK(ran.get_future().get() == io_thread);
  auto post = ctx.post;
  f.stop();
  bool dropped_ran = false;
  post([&] { dropped_ran = true; });  // the server is destroyed: never run
  f.io.restart();
  f.io.poll();
  CHECK_FALSE(dropped_ran);
}

// ------------------------------------------------------------------------------ statuses

TEST_CASE("a source with a known length: Content-Length, any status and headers") {
  ApiServerFixture f;
  auto log = std::make_shared<SourceLog>();
  std::atomic<std::uint64_t> announced{0};
  f.router().add("GET", "/test/range", [&](ApiRequest&) {
    auto src = test_source(log, 300000);
    src->length = announced.load();
    auto r = ApiResponse::streamed(std::move(src), "image/jpeg");
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes 0-299999/1000000");
    r.headers.emplace_back("Cache-Control", "private, max-age=60, immutable");
    return r;
  });
  f.router().add("GET", "/test/not-modified", [](ApiRequest&) {
    ApiResponse r;
    r.status = 304;
    r.content_type.clear();
    r.headers.emplace_back("ETag", "\"abc\"");
    return r;
  });
  f.start();
  for (auto t : {Transport::unix_socket, Transport::tcp}) {
    for (const char* version : {"HTTP/1.1", "HTTP/1.0"}) {
      INFO(name(t) << " " << version);
      log->reset();
      announced = 300000;
      auto c = connect(f, t);
      REQUIRE(c.send(get_request(f, t, "/test/range", version)));
      auto r = parse_response(c.read_to_end());
      CHECK(r.status == 206);
      CHECK_FALSE(r.chunked);
      CHECK(r.headers["content-length"] == "300000");
      CHECK(r.headers["content-range"] == "bytes 0-299999/1000000");
      CHECK(r.headers["content-type"] == "image/jpeg");
      CHECK(r.headers["cache-control"] == "private, max-age=60, immutable");
      CHECK(r.complete);
      CHECK(r.body == body_text(0, 300000));
      REQUIRE(eventually([&] { return log->ended.load(); }));
      std::lock_guard lock(log->mu);
      CHECK(log->outcome->ok());
    }
  }
  {
    INFO("a source that ends before its length: the connection closes, the body is short");
    log->reset();
    announced = 400000;
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/range")));
    auto r = parse_response(c.read_to_end());
    CHECK(r.headers["content-length"] == "400000");
    CHECK_FALSE(r.complete);
    REQUIRE(eventually([&] { return log->ended.load(); }));
    std::lock_guard lock(log->mu);
    CHECK(log->outcome->error().code == Errc::internal);
  }
  {
    INFO("a source that produces more than its length: cut at it");
    log->reset();
    announced = 100000;
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/range")));
    auto r = parse_response(c.read_to_end());
    CHECK(r.body.size() < 100000);
    CHECK_FALSE(r.complete);
  }
  {
    INFO("304 has no body and no Content-Type");
    auto c = connect(f, Transport::unix_socket);
    REQUIRE(c.send(get_request(f, Transport::unix_socket, "/test/not-modified")));
    auto raw = c.read_to_end();
    auto r = parse_response(raw);
    CHECK(r.status == 304);
    CHECK(r.headers["etag"] == "\"abc\"");
    CHECK(r.headers.count("content-type") == 0);
    CHECK(r.body.empty());
  }
}
