// A real ApiServer for tests: a Store in a temporary data directory, the API on a Unix socket
// and on loopback TCP (ephemeral port), served by its own io thread. Add routes with
// router() before start(). RawConn is a blocking client socket that sends raw bytes and reads
// with deadlines, so tests see exactly what the server puts on the wire. Tests only.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>

#include "ipc/api_server.hpp"
#include "ipc/api_service.hpp"
#include "storage/store.hpp"
#include "storage/temp_dir.hpp"

namespace fieldsync::test {

class ApiServerFixture {
 public:
  explicit ApiServerFixture(config::ApiOptions opt = {}) : options(std::move(opt)) {
    storage::StoreOptions so;
    so.data_dir = dir.path() / "data";
    so.durable = false;
    auto s = storage::Store::open(so);
    REQUIRE(s);
    store = std::move(*s);
    options.http_enabled = true;
    options.http_address = "127.0.0.1";
    options.http_port = 0;
    options.socket_path = dir.path() / "api.sock";
    service = std::make_unique<ipc::ApiService>(*store, options, "test-device");
  }
  ~ApiServerFixture() { stop(); }
  ApiServerFixture(const ApiServerFixture&) = delete;
  ApiServerFixture& operator=(const ApiServerFixture&) = delete;

  ipc::Router& router() { return service->router(); }

  void start() {
    server = std::make_unique<ipc::ApiServer>(io, *service, options, so_data_dir());
    auto started = server->start();
    REQUIRE(started.ok());
    std::ifstream in(server->token_path());
    std::getline(in, token);
    REQUIRE(!token.empty());
    thread = std::thread([this] { io.run(); });
  }

  // Graceful stop (what is still open is closed after a short grace), then the io thread ends.
  void stop() {
    if (!thread.joinable()) return;
    boost::asio::post(
        io, [this] { server->stop(std::chrono::milliseconds(200), [this] { io.stop(); }); });
    thread.join();
    server.reset();
  }

  // Runs `f` on the server's thread and returns its result.
  template <class F>
  auto on_io(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    boost::asio::post(io, [&task] { task(); });
    return result.get();
  }

  std::size_t connections() {
    return on_io([this] { return server->connection_count(); });
  }

  std::filesystem::path socket_path() const { return options.socket_path; }
  std::uint16_t port() const { return server->http_port(); }

  TempDir dir;
  config::ApiOptions options;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ipc::ApiService> service;
  boost::asio::io_context io{1};
  std::unique_ptr<ipc::ApiServer> server;
  std::thread thread;
  std::string token;

 private:
  std::filesystem::path so_data_dir() const { return dir.path() / "data"; }
};

// Polls `cond` until it holds or `limit` passes; returns whether it held.
template <class Cond>
bool eventually(Cond cond, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class RawConn {
 public:
  static RawConn unix_socket(const std::filesystem::path& path, int rcvbuf = 0) {
    RawConn c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    c.set_rcvbuf(rcvbuf);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(::connect(c.fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return c;
  }
  static RawConn tcp(std::uint16_t port, int rcvbuf = 0) {
    RawConn c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    c.set_rcvbuf(rcvbuf);  // before connect: it bounds the advertised window
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(c.fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return c;
  }
  RawConn(RawConn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ~RawConn() { close(); }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  // Sends everything; false when the peer closed.
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads what arrives within `wait` (at most `max` bytes). Empty at EOF or timeout; `eof`
  // tells which.
  std::string read_some(std::size_t max, std::chrono::milliseconds wait, bool* eof = nullptr) {
    if (eof) *eof = false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return {};
    std::string out(max, '\0');
    ssize_t n = ::recv(fd_, out.data(), max, 0);
    if (n <= 0) {
      if (eof) *eof = true;
      return {};
    }
    out.resize(static_cast<std::size_t>(n));
    return out;
  }

  // True when something (data or the end) is waiting to be read.
  bool readable() {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  // Reads until the peer closes (or `limit` passes).
  std::string read_to_end(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    std::string all;
    auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      bool eof = false;
      auto piece = read_some(1 << 16, std::chrono::milliseconds(100), &eof);
      if (eof) break;
      all += piece;
    }
    return all;
  }

 private:
  explicit RawConn(int fd) : fd_(fd) { REQUIRE(fd_ >= 0); }
  void set_rcvbuf(int bytes) {
    if (bytes > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  int fd_ = -1;
};

// A response as it came over the wire, with a chunked body decoded.
struct WireResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool chunked = false;
  bool complete = false;  // the body's end was seen (last chunk, or Content-Length reached)
  std::size_t chunks = 0;
};

inline WireResponse parse_response(const std::string& raw) {
  WireResponse r;
  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return r;
  r.status = std::atoi(raw.substr(9, 3).c_str());
  std::size_t pos = raw.find("\r\n") + 2;
  while (pos < end) {
    auto e = raw.find("\r\n", pos);
    auto line = raw.substr(pos, e - pos);
    auto colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    r.headers[name] = value;
    pos = e + 2;
  }
  pos = end + 4;
  if (r.headers.count("transfer-encoding")) {
    r.chunked = r.headers["transfer-encoding"] == "chunked";
    while (true) {
      auto e = raw.find("\r\n", pos);
      if (e == std::string::npos) return r;
      std::size_t size = std::stoul(raw.substr(pos, e - pos), nullptr, 16);
      pos = e + 2;
      if (size == 0) {
        r.complete = raw.compare(pos, 2, "\r\n") == 0;
        return r;
      }
      if (raw.size() < pos + size + 2) {
        r.body += raw.substr(pos);
        return r;
      }
      r.body += raw.substr(pos, size);
      ++r.chunks;
      pos += size + 2;
    }
  }
  r.body = raw.substr(pos);
  if (r.headers.count("content-length"))
    r.complete = r.body.size() == std::stoul(r.headers["content-length"]);
  return r;
}

// Reads until a whole response is in (by its framing), the peer closes, or `limit` passes.
inline std::string read_response(RawConn& c,
                                 std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  std::string raw;
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until && !parse_response(raw).complete) {
    bool eof = false;
    raw += c.read_some(1 << 16, std::chrono::milliseconds(100), &eof);
    if (eof) break;
  }
  return raw;
}

}  // namespace fieldsync::test
