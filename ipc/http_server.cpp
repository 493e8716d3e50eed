// The Beast part of the local API: listeners, the HTTP session (one coroutine template for the
// Unix and TCP sockets), long-poll and SSE streaming. Everything else in ipc/ is Beast-free.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <array>
#include <cstring>
#include <map>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <spdlog/spdlog.h>

#include "ipc/api_access.hpp"
#include "ipc/api_paths.hpp"
#include "ipc/api_server.hpp"
#include "ipc/api_service.hpp"
#include "ipc/http_error.hpp"

namespace fieldsync::ipc {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local_stream = asio::local::stream_protocol;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;  // request line + headers
constexpr std::size_t kLingerBytes = 1 << 20;     // discarded after refusing a body

// A long-poll or SSE client waiting for a project's changes feed to move.
struct Waiter {
  explicit Waiter(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  bool notified = false;
};

Status write_private_file(const std::filesystem::path& path, const std::string& content) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(Errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error(Errc::internal, "cannot write " + path.string());
  }
  return {};
}

}  // namespace

struct ApiServer::Impl : std::enable_shared_from_this<ApiServer::Impl> {
  Impl(asio::io_context& io_, ApiService& service_, const config::ApiOptions& options,
       std::filesystem::path data_dir_)
      : io(io_), service(service_), opt(options), data_dir(std::move(data_dir_)), grace_timer(io_) {
    socket_path = resolve_socket_path(opt.socket_path, data_dir);
  }

  asio::io_context& io;
  ApiService& service;
  config::ApiOptions opt;
  std::filesystem::path data_dir;
  std::filesystem::path socket_path;
  bool socket_created = false;
  std::string token;
  std::uint16_t port = 0;
  std::optional<local_stream::acceptor> unix_acceptor;
  std::optional<tcp::acceptor> tcp_acceptor;

  // Open connections: id -> (close function, idle flag). Only touched on the io thread.
  struct Conn {
    std::function<void()> close;
    const bool* idle;
  };
  std::map<std::uint64_t, Conn> conns;
  std::uint64_t next_conn = 1;
  std::map<ProjectId, std::set<Waiter*>> waiters;
  bool stopping = false;
  std::function<void()> on_drained;
  asio::steady_timer grace_timer;

  Status bind_unix();
  Status bind_tcp();
  void wake(const ProjectId& project) {
    auto it = waiters.find(project);
    if (it == waiters.end()) return;
    for (Waiter* w : it->second) {
      w->notified = true;
      w->timer.cancel();
    }
  }
  void wake_all() {
    for (auto& [p, set] : waiters)
      for (Waiter* w : set) w->timer.cancel();
  }
  void unregister(std::uint64_t id) {
    conns.erase(id);
    if (stopping && conns.empty()) finish_stop();
  }
  void finish_stop() {
    grace_timer.cancel();
    if (on_drained) {
      auto done = std::move(on_drained);
      on_drained = nullptr;
      done();
    }
  }

  template <class Socket>
  asio::awaitable<void> session(Socket sock, Transport transport);
  template <class Socket>
  asio::awaitable<bool> write_response(Socket& sock, asio::steady_timer& deadline,
                                       http::response<http::string_body>& res);
  template <class Socket>
  asio::awaitable<void> run_longpoll(Socket& sock, asio::steady_timer& deadline, ChangeStream& s,
                                     bool keep_alive, bool& keep_open);
  template <class Socket>
  asio::awaitable<void> run_sse(Socket& sock, asio::steady_timer& deadline, ChangeStream& s);
  template <class Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, Transport transport);
  asio::awaitable<ApiResponse> run_deferred(std::shared_ptr<DeferredResponse> d);
};

// Waits (bounded by d->timeout) for a deferred handler's answer.
asio::awaitable<ApiResponse> ApiServer::Impl::run_deferred(std::shared_ptr<DeferredResponse> d) {
  struct Slot {
    explicit Slot(asio::io_context& io) : timer(io) {}
    asio::steady_timer timer;
    std::optional<ApiResponse> result;
    bool waiting = true;
  };
  auto slot = std::make_shared<Slot>(io);
  slot->timer.expires_after(d->timeout);
  d->start([slot](ApiResponse r) {
    if (!slot->waiting) return;
    slot->waiting = false;
    slot->result = std::move(r);
    slot->timer.cancel();
  });
  if (slot->waiting) co_await slot->timer.async_wait(use_tuple);
  slot->waiting = false;
  if (!slot->result)
    slot->result = d->on_timeout ? d->on_timeout()
                                 : error_response(make_error(Errc::unavailable, "no answer in time"));
  co_return std::move(*slot->result);
}

// ---------------------------------------------------------------- listeners

Status ApiServer::Impl::bind_unix() {
  namespace fs = std::filesystem;
  std::error_code fec;
  if (socket_path.native().size() >= sizeof(sockaddr_un{}.sun_path))
    return make_error(Errc::invalid_argument, "api.socket_path is too long for a Unix socket (max " +
                                                  std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                                  " bytes): " + socket_path.string());
  fs::path parent = socket_path.parent_path();
  if (!parent.empty() && !fs::exists(parent, fec)) {
    fs::create_directories(parent, fec);
    if (fec)
      return make_error(Errc::internal, "cannot create " + parent.string() + ": " + fec.message());
    ::chmod(parent.c_str(), opt.socket_group.empty() ? 0700 : 0750);
  }
  // A socket file left by a crashed daemon is removed; a live one means another daemon runs.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(Errc::already_exists,
                        socket_path.string() + " exists and is not a socket; refusing to remove it");
    local_stream::socket probe(io);
    boost::system::error_code ec;
    probe.connect(local_stream::endpoint(socket_path.string()), ec);
    if (!ec)
      return make_error(Errc::already_exists,
                        "another fieldsyncd is already listening on " + socket_path.string());
    ::unlink(socket_path.c_str());
  }
  boost::system::error_code ec;
  unix_acceptor.emplace(io);
  unix_acceptor->open(local_stream(), ec);
  // Created owner-only, then opened up to api.socket_mode: no window with looser permissions.
  mode_t old_mask = ::umask(0177);
  if (!ec) unix_acceptor->bind(local_stream::endpoint(socket_path.string()), ec);
  ::umask(old_mask);
  if (ec)
    return make_error(Errc::internal, "cannot bind " + socket_path.string() + ": " + ec.message());
  socket_created = true;
  if (::chmod(socket_path.c_str(), opt.socket_mode & 07777) != 0)
    return make_error(Errc::internal, "cannot chmod " + socket_path.string() + ": " + std::strerror(errno));
  if (!opt.socket_group.empty()) {
    struct group* g = ::getgrnam(opt.socket_group.c_str());
    if (!g) return make_error(Errc::invalid_argument, "api.socket_group: no group named '" + opt.socket_group + "'");
    if (::chown(socket_path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0)
      return make_error(Errc::permission_denied, "cannot give " + socket_path.string() + " to group '" +
                                                     opt.socket_group + "': " + std::strerror(errno));
  }
  unix_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(Errc::internal, "cannot listen on " + socket_path.string() + ": " + ec.message());
  return {};
}

Status ApiServer::Impl::bind_tcp() {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(opt.http_address, ec);
  if (ec) return make_error(Errc::invalid_argument, "api.http_address: not an IP address: '" + opt.http_address + "'");
  if (!addr.is_loopback())
    spdlog::warn("api.http_address {} is not a loopback address: the API is reachable from the network (token required)",
                 opt.http_address);
  auto tok = load_or_create_token(token_file(data_dir));
  if (!tok) return tok.error();
  token = std::move(*tok);
  tcp::endpoint ep(addr, opt.http_port);
  tcp_acceptor.emplace(io);
  tcp_acceptor->open(ep.protocol(), ec);
  if (!ec) tcp_acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_acceptor->bind(ep, ec);
  if (ec)
    return make_error(Errc::unavailable, "cannot bind the HTTP API to " + opt.http_address + ":" +
                                             std::to_string(opt.http_port) + ": " + ec.message());
  tcp_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(Errc::unavailable, "cannot listen on the HTTP API port: " + ec.message());
  port = tcp_acceptor->local_endpoint().port();
  return write_private_file(port_file(data_dir), std::to_string(port) + "\n");
}

template <class Acceptor>
asio::awaitable<void> ApiServer::Impl::accept_loop(Acceptor& acceptor, Transport transport) {
  auto self = shared_from_this();
  asio::steady_timer backoff(io);
  while (!stopping) {
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (stopping) break;
    if (ec) {
      if (ec == asio::error::operation_aborted) break;
      // EMFILE and friends: wait a little instead of spinning.
      spdlog::warn("API accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    asio::co_spawn(io, session(std::move(sock), transport), asio::detached);
  }
}

// ---------------------------------------------------------------- sessions

namespace {

// Fills the transport-neutral request from Beast's message; false if the target is malformed.
bool to_api_request(const http::request_header<>& h, ApiRequest& req) {
  req.method = std::string(h.method_string());
  req.target = std::string(h.target());
  auto url = boost::urls::parse_origin_form(h.target());
  if (!url) return false;
  for (auto seg : url->segments()) req.segments.push_back(seg);
  if (!req.segments.empty() && req.segments.back().empty()) req.segments.pop_back();
  for (auto p : url->params()) req.query.emplace(p.key, p.has_value ? p.value : std::string());
  for (const auto& f : h) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "host" || name == "authorization" || name == "if-match" ||
        name == "last-event-id" || name == "content-type" || name == "accept")
      req.headers[name] = std::string(f.value());
  }
  return true;
}

http::response<http::string_body> to_beast(ApiResponse&& r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "fieldsyncd");
  res.set(http::field::content_type, r.content_type);
  res.set(http::field::cache_control, "no-store");
  for (auto& [k, v] : r.headers) res.set(k, v);
  res.body() = std::move(r.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

// Closes `sock` unless disarm() runs first. The expiry check guards against a wait that had
// already completed when the timer was re-armed or disarmed.
template <class Socket>
void arm(asio::steady_timer& deadline, Socket& sock, std::chrono::milliseconds ms) {
  deadline.expires_after(ms);
  deadline.async_wait([&sock, &deadline](boost::system::error_code ec) {
    if (!ec && deadline.expiry() <= asio::steady_timer::clock_type::now()) {
      boost::system::error_code ignore;
      sock.close(ignore);  // slow or idle peer: give its slot back
    }
  });
}

void disarm(asio::steady_timer& deadline) {
  deadline.expires_at(asio::steady_timer::time_point::max());
}

}  // namespace

template <class Socket>
asio::awaitable<bool> ApiServer::Impl::write_response(Socket& sock, asio::steady_timer& deadline,
                                                      http::response<http::string_body>& res) {
  arm(deadline, sock, std::chrono::milliseconds(opt.request_timeout_ms));
  auto [ec, n] = co_await http::async_write(sock, res, use_tuple);
  disarm(deadline);
  co_return !ec;
}

template <class Socket>
asio::awaitable<void> ApiServer::Impl::session(Socket sock, Transport transport) {
  auto self = shared_from_this();
  const std::uint64_t id = next_conn++;
  bool idle = true;
  conns[id] = Conn{[&sock] {
                     boost::system::error_code ignore;
                     sock.close(ignore);
                   },
                   &idle};
  const bool over_limit = conns.size() > opt.max_connections;
  const auto timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  asio::steady_timer deadline(io);
  beast::flat_buffer buffer;

  bool linger = false;  // the peer may still be sending a body we refused
  while (!stopping) {
    idle = true;
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(opt.max_body_bytes);
    arm(deadline, sock, timeout);
    auto [ec, n] = co_await http::async_read_header(sock, buffer, parser, use_tuple);
    idle = false;
    if (ec) {
      disarm(deadline);
      if (ec == http::error::body_limit) {
        // Content-Length above body_limit: Beast refuses it as soon as the header is complete.
        auto res = to_beast(error_response(make_error(
                                Errc::too_large, "request body exceeds api.max_body_bytes = " +
                                                     std::to_string(opt.max_body_bytes))),
                            11, false);
        co_await write_response(sock, deadline, res);
        linger = true;
      } else if (ec == http::error::header_limit || ec == http::error::bad_target ||
          ec == http::error::bad_method || ec == http::error::bad_version ||
          ec == http::error::bad_field || ec == http::error::bad_value) {
        auto res = to_beast(error_response(make_error(Errc::invalid_argument,
                                                      "malformed HTTP request: " + ec.message())),
                            11, false);
        co_await write_response(sock, deadline, res);
      }
      break;
    }
    const auto& header = parser.get();
    const unsigned version = header.version();
    auto refuse = [&](ApiResponse r) { return to_beast(std::move(r), version, false); };

    if (over_limit) {
      auto res = refuse(error_response(make_error(
          Errc::resource_exhausted, "too many connections (api.max_connections = " +
                                        std::to_string(opt.max_connections) + ")")));
      co_await write_response(sock, deadline, res);
      linger = true;
      break;
    }
    if (parser.content_length() && *parser.content_length() > opt.max_body_bytes) {
      // Refuse before reading the body; the connection closes since the body is left unread.
      auto res = refuse(error_response(make_error(
          Errc::too_large, "request body of " + std::to_string(*parser.content_length()) +
                               " bytes exceeds api.max_body_bytes = " +
                               std::to_string(opt.max_body_bytes))));
      co_await write_response(sock, deadline, res);
      linger = true;
      break;
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      auto [wec, wn] = co_await http::async_write(sock, cont, use_tuple);
      if (wec) break;
    }
    if (!parser.is_done()) {
      auto [bec, bn] = co_await http::async_read(sock, buffer, parser, use_tuple);
      if (bec) {
        disarm(deadline);
        if (bec == http::error::body_limit) {
          auto res = refuse(error_response(make_error(
              Errc::too_large, "request body exceeds api.max_body_bytes = " +
                                   std::to_string(opt.max_body_bytes))));
          co_await write_response(sock, deadline, res);
          linger = true;
        }
        break;
      }
    }
    disarm(deadline);

    auto msg = parser.release();
    const bool keep_alive = msg.keep_alive();
    ApiRequest req;
    req.transport = transport;
    ApiResponse resp;
    if (!to_api_request(msg, req)) {
      resp = error_response(make_error(Errc::invalid_argument, "malformed request target"));
    } else {
      req.body = std::move(msg.body());
      Status access;
      if (transport == Transport::tcp) access = check_tcp_access(req, token);
      if (!access) {
        resp = error_response(access.error());
      } else {
        resp = service.handle(req);
        if (resp.deferred) resp = co_await run_deferred(resp.deferred);
      }
    }
    spdlog::debug("api {} {} -> {}", req.method, req.target, resp.stream ? 200 : resp.status);

    if (resp.stream) {
      auto stream = resp.stream;
      if (stream->mode == ChangeStream::Mode::sse) {
        co_await run_sse(sock, deadline, *stream);
        break;
      }
      bool keep_open = false;
      co_await run_longpoll(sock, deadline, *stream, keep_alive, keep_open);
      if (!keep_open) break;
      continue;
    }
    auto res = to_beast(std::move(resp), version, keep_alive && !stopping);
    if (!co_await write_response(sock, deadline, res)) break;
    if (!keep_alive) break;
  }

  boost::system::error_code ignore;
  sock.shutdown(asio::socket_base::shutdown_send, ignore);
  if (linger) {
    // Closing with unread input makes the kernel send a reset, which can destroy our error
    // response before the client reads it: discard what is still coming for a short while.
    arm(deadline, sock, std::chrono::milliseconds(std::min<std::uint32_t>(opt.request_timeout_ms, 2000)));
    std::array<char, 16384> sink;
    std::size_t drained = 0;
    while (drained < kLingerBytes) {
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
      drained += n;
    }
    disarm(deadline);
  }
  sock.close(ignore);
  unregister(id);
}

template <class Socket>
asio::awaitable<void> ApiServer::Impl::run_longpoll(Socket& sock, asio::steady_timer& deadline,
                                                    ChangeStream& s, bool keep_alive,
                                                    bool& keep_open) {
  auto self = shared_from_this();
  Waiter w(io);
  auto& set = waiters[s.project];
  set.insert(&w);
  auto chunk = s.fetch(s.since);
  if (chunk && chunk->events.empty() && !stopping && !w.notified) {
    // Registered before the fetch on this thread, so a commit after it cannot be missed.
    w.timer.expires_after(s.timeout);
    co_await w.timer.async_wait(use_tuple);
    if (w.notified) chunk = s.fetch(s.since);
  }
  waiters[s.project].erase(&w);
  if (waiters[s.project].empty()) waiters.erase(s.project);

  ApiResponse r;
  if (!chunk) {
    r = error_response(chunk.error());
  } else {
    r.body = s.render(*chunk);
  }
  auto res = to_beast(std::move(r), 11, keep_alive && !stopping);
  keep_open = co_await write_response(sock, deadline, res) && keep_alive && !stopping;
}

template <class Socket>
asio::awaitable<void> ApiServer::Impl::run_sse(Socket& sock, asio::steady_timer& deadline,
                                               ChangeStream& s) {
  auto self = shared_from_this();
  const auto write_timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  auto send = [&](std::string text) -> asio::awaitable<bool> {
    arm(deadline, sock, write_timeout);
    auto [ec, n] = co_await asio::async_write(sock, asio::buffer(text), use_tuple);
    disarm(deadline);
    co_return !ec;
  };
  // A close-delimited event stream (no chunking needed: the connection ends with the stream).
  if (!co_await send("HTTP/1.1 200 OK\r\nServer: fieldsyncd\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
                     "retry: 2000\n\n"))
    co_return;
  Waiter w(io);
  waiters[s.project].insert(&w);
  std::uint64_t cursor = s.since;
  while (!stopping) {
    w.notified = false;
    auto chunk = s.fetch(cursor);
    if (!chunk) {
      auto err = error_response(chunk.error());
      co_await send("event: error\ndata: " + err.body + "\n\n");
      break;
    }
    if (!chunk->events.empty()) {
      std::string text;
      for (auto& [seq, json] : chunk->events)
        text += "id: " + std::to_string(seq) + "\nevent: change\ndata: " + json + "\n\n";
      cursor = chunk->last_seq;
      if (!co_await send(std::move(text))) break;
      continue;  // there may be more than one page
    }
    if (w.notified) continue;  // a commit arrived while we were writing
    w.timer.expires_after(s.heartbeat);
    co_await w.timer.async_wait(use_tuple);
    if (stopping) break;
    if (!w.notified && !co_await send(": heartbeat\n\n")) break;
  }
  waiters[s.project].erase(&w);
  if (waiters[s.project].empty()) waiters.erase(s.project);
}

// ---------------------------------------------------------------- ApiServer

ApiServer::ApiServer(asio::io_context& io, ApiService& service, const config::ApiOptions& options,
                     std::filesystem::path data_dir)
    : impl_(std::make_shared<Impl>(io, service, options, std::move(data_dir))) {}

ApiServer::~ApiServer() {
  if (impl_->socket_created) ::unlink(impl_->socket_path.c_str());
}

Status ApiServer::start() {
  FS_TRY(impl_->bind_unix());
  if (impl_->opt.http_enabled) FS_TRY(impl_->bind_tcp());
  auto& ctx = impl_->service.context();
  ctx.listen.socket_path = impl_->socket_path.string();
  ctx.listen.http_enabled = impl_->opt.http_enabled;
  ctx.listen.http_address = impl_->opt.http_address;
  ctx.listen.http_port = impl_->port;
  std::weak_ptr<Impl> weak = impl_;
  ctx.listen.connections = [weak]() -> std::size_t {
    auto self = weak.lock();
    return self ? self->conns.size() : 0;
  };
  ctx.listen.streams = [weak]() -> std::size_t {
    auto self = weak.lock();
    std::size_t n = 0;
    if (self)
      for (const auto& [p, set] : self->waiters) n += set.size();
    return n;
  };
  asio::co_spawn(impl_->io, impl_->accept_loop(*impl_->unix_acceptor, Transport::unix_socket),
                 asio::detached);
  if (impl_->tcp_acceptor)
    asio::co_spawn(impl_->io, impl_->accept_loop(*impl_->tcp_acceptor, Transport::tcp),
                   asio::detached);
  return {};
}

const std::filesystem::path& ApiServer::socket_path() const { return impl_->socket_path; }
std::uint16_t ApiServer::http_port() const { return impl_->port; }
std::filesystem::path ApiServer::token_path() const { return token_file(impl_->data_dir); }
std::size_t ApiServer::connection_count() const { return impl_->conns.size(); }

void ApiServer::notify_change(const ProjectId& project, std::uint64_t /*last_seq*/) {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->io, [weak, project] {
    if (auto self = weak.lock()) self->wake(project);
  });
}

void ApiServer::stop(std::chrono::milliseconds grace, std::function<void()> done) {
  auto& d = *impl_;
  d.stopping = true;
  d.on_drained = std::move(done);
  boost::system::error_code ignore;
  if (d.unix_acceptor) d.unix_acceptor->close(ignore);
  if (d.tcp_acceptor) d.tcp_acceptor->close(ignore);
  if (d.socket_created) {
    ::unlink(d.socket_path.c_str());
    d.socket_created = false;
  }
  d.wake_all();
  // Idle keep-alive connections have nothing in flight: close them now.
  for (auto& [id, c] : d.conns)
    if (*c.idle) c.close();
  if (d.conns.empty()) {
    asio::post(d.io, [self = impl_] { self->finish_stop(); });
    return;
  }
  d.grace_timer.expires_after(grace);
  d.grace_timer.async_wait([self = impl_](boost::system::error_code ec) {
    if (ec) return;
    if (!self->conns.empty())
      spdlog::warn("closing {} API connection(s) still busy after the shutdown grace period",
                   self->conns.size());
    for (auto& [id, c] : self->conns) c.close();
  });
}

}  // namespace fieldsync::ipc
