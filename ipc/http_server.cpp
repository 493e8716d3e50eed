// The Beast part of the local API: listeners, the HTTP session, long-poll and SSE streaming.
// Everything else in ipc/ is Beast-free. Connections of both listeners are one socket type
// (Stream), so the session coroutines and Beast's parsers and serializers are compiled once,
// not once per socket type (this is the slowest file of the build).
#include <fcntl.h>
#include <grp.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
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

#include "common/clock.hpp"
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
// A connection of either listener: accepted sockets are moved into one.
using Stream = asio::generic::stream_protocol::socket;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t kLingerBytes = 1 << 20;  // discarded after refusing a body
// Chunk size digits, ';', CR LF around chunk lines and the trailer: what a chunked body's
// framing may hold in the read buffer besides the chunk extensions and the trailer fields.
constexpr std::size_t kChunkFramingBytes = 64;
// Reads of a Content-Length body go through a buffer of this size; a streamed request body is
// handed to its sink in pieces of at most this size.
constexpr std::size_t kBodyReadBytes = 64 * 1024;
// A streamed response piece is written in slices of at most this size, each with the write
// deadline, so a large piece does not need to reach a slow reader within one deadline.
constexpr std::size_t kMaxChunkWriteBytes = 256 * 1024;
constexpr auto kFirstAcceptRetry = std::chrono::milliseconds(10);

// A long-poll or SSE client waiting for a project's changes feed to move.
struct Waiter {
  explicit Waiter(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  bool notified = false;
  bool write_wait = false;  // SSE: a wait for the socket to take bytes again is pending
  bool read_wait = false;   // SSE: a wait for input (the subscriber closing) is pending
  bool readable = false;
};

// What a connection is doing, for choosing whom to drop when a budget is needed.
enum class ConnState {
  pending,  // no complete (on TCP: authenticated) request header yet
  idle,     // keep-alive, between requests
  busy,     // a request is being read or answered
  stream,   // an SSE stream or a long-poll
};

std::size_t slot(Transport t) { return t == Transport::tcp ? 1 : 0; }

// A changes page rendered as SSE events. Streams of a project at the same cursor and page size
// share it: the server keeps it while a stream of the project is still at that cursor (and the
// feed has not moved), and each stream that took it holds it until it has sent it, so it is
// freed once the last of them has sent it.
struct SsePage {
  SsePage() = default;
  SsePage(const SsePage&) = delete;
  SsePage& operator=(const SsePage&) = delete;
  ~SsePage() {
    if (held) *held -= text.size();
  }
  std::uint64_t last_seq = 0;  // cursor after it
  std::size_t events = 0;
  std::string text;
  std::size_t* held = nullptr;  // the server's count of page bytes alive (io thread only)
};
using PageKey = std::pair<std::uint64_t, std::uint32_t>;  // (cursor read after, page size)

// A project's SSE streams as far as sharing goes: how many are at each cursor, and the pages
// read for them since the project's last change (only for cursors some stream is still at).
struct SharedFeed {
  std::map<PageKey, std::size_t> streams;
  std::map<PageKey, std::shared_ptr<const SsePage>> pages;
  // A stream moves from one cursor to another (either may be absent: starting, ending). The
  // page at a cursor no stream is at any more is released (those who took it still hold it).
  void move(std::optional<PageKey> from, std::optional<PageKey> to) {
    if (to) ++streams[*to];
    if (!from) return;
    auto it = streams.find(*from);
    if (it == streams.end() || --it->second != 0) return;
    streams.erase(it);
    pages.erase(*from);
  }
};

// An SSE stream's outbound bytes in order: its own text (response header, heartbeats, errors)
// and change pages it may share with other streams. Each piece is released once sent.
class OutQueue {
 public:
  void push(std::shared_ptr<const std::string> piece) {
    if (piece->empty()) return;
    unsent_ += piece->size();
    pieces_.push_back(std::move(piece));
  }
  void push(std::string text) { push(std::make_shared<const std::string>(std::move(text))); }
  bool empty() const { return unsent_ == 0; }
  std::size_t unsent() const { return unsent_; }
  // The next bytes to send (the first pieces, for one gathering write).
  const std::vector<asio::const_buffer>& buffers() {
    bufs_.clear();
    std::size_t skip = front_sent_;
    for (const auto& p : pieces_) {
      bufs_.push_back(asio::buffer(p->data() + skip, p->size() - skip));
      skip = 0;
      if (bufs_.size() == kMaxBuffers) break;
    }
    return bufs_;
  }
  void consume(std::size_t n) {
    unsent_ -= n;
    while (n > 0) {
      const std::size_t left = pieces_.front()->size() - front_sent_;
      if (n < left) {
        front_sent_ += n;
        return;
      }
      n -= left;
      pieces_.pop_front();
      front_sent_ = 0;
    }
  }
  void clear() {
    pieces_.clear();
    front_sent_ = 0;
    unsent_ = 0;
  }

 private:
  static constexpr std::size_t kMaxBuffers = 16;
  std::deque<std::shared_ptr<const std::string>> pieces_;
  std::size_t front_sent_ = 0;  // bytes of the first piece already sent
  std::size_t unsent_ = 0;
  std::vector<asio::const_buffer> bufs_;
};

// Posts jobs to the io_context from any thread while the server exists; once it is destroyed
// the jobs are dropped (ApiContext::post, BodySink resume).
struct Poster {
  explicit Poster(asio::io_context& io_) : io(&io_) {}
  void post(std::function<void()> job) {
    std::lock_guard lock(mu);
    if (io) asio::post(*io, std::move(job));
  }
  void close() {
    std::lock_guard lock(mu);
    io = nullptr;
  }

 private:
  std::mutex mu;
  asio::io_context* io;
};

// A streamed request body waiting for its sink's resume() (BodySink::ready). One per
// connection, touched on the io thread only; `round` tells a resume of an earlier wait.
struct Pause {
  explicit Pause(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  std::uint64_t round = 0;
  bool resumed = true;
};

const char* transport_name(Transport t) { return t == Transport::tcp ? "TCP" : "Unix socket"; }

bool is_fd_exhaustion(const boost::system::error_code& ec) {
  return ec == boost::system::errc::too_many_files_open ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == boost::system::errc::no_buffer_space || ec == boost::system::errc::not_enough_memory;
}

// A parse error of the request's framing (answered 400), as opposed to the peer going away.
bool is_framing_error(const boost::system::error_code& ec) {
  if (ec.category() != http::make_error_code(http::error::bad_target).category()) return false;
  return ec != http::error::end_of_stream && ec != http::error::partial_message &&
         ec != http::error::need_more;
}

Status write_private_file(const std::filesystem::path& path, const std::string& content) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(Errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  int saved = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return make_error(
        saved == ENOSPC || saved == EDQUOT ? Errc::resource_exhausted : Errc::internal,
        "cannot write " + path.string() + ": " + std::strerror(saved));
  }
  return {};
}

}  // namespace

struct ApiServer::Impl : std::enable_shared_from_this<ApiServer::Impl> {
  Impl(asio::io_context& io_, ApiService& service_, const config::ApiOptions& options,
       std::filesystem::path data_dir_)
      : io(io_),
        service(service_),
        opt(options),
        data_dir(std::move(data_dir_)),
        grace_timer(io_),
        poster(std::make_shared<Poster>(io_)) {
    socket_path = resolve_socket_path(opt.socket_path, data_dir);
    cors_allowed = parse_origins(opt.cors_origins);
  }
  using Headers = std::vector<std::pair<std::string, std::string>>;

  asio::io_context& io;
  ApiService& service;
  config::ApiOptions opt;
  std::filesystem::path data_dir;
  std::filesystem::path socket_path;
  bool socket_created = false;
  std::string token;
  std::vector<std::string> cors_allowed;  // api.cors_origins
  std::uint16_t port = 0;
  std::optional<local_stream::acceptor> unix_acceptor;
  std::optional<tcp::acceptor> tcp_acceptor;

  // Open connections within the budgets, oldest first. Only touched on the io thread.
  struct Conn {
    std::function<void()> close;
    Transport transport;
    ConnState state = ConnState::pending;
  };
  std::map<std::uint64_t, Conn> conns;
  std::uint64_t next_conn = 1;
  std::array<std::size_t, 2> open_count{};      // conns per transport
  std::array<std::size_t, 2> overflow_count{};  // connections being refused with 503
  std::array<std::size_t, 2> stream_count{};    // SSE streams and long-polls per transport
  int reserve_fd = -1;  // released at fd exhaustion to accept (and refuse) one connection
  // After large SSE buffers are freed, their memory is handed back to the system (once for a
  // burst of them): the allocator would otherwise keep it, and the daemon's heap would stay at
  // its high-water mark after a round of slow subscribers.
  asio::steady_timer trim_timer{io};
  bool trim_pending = false;
  void trim_soon() {
    if (trim_pending) return;
    trim_pending = true;
    trim_timer.expires_after(std::chrono::milliseconds(200));
    trim_timer.async_wait([self = shared_from_this()](boost::system::error_code) {
      self->trim_pending = false;
#if defined(__GLIBC__)
      ::malloc_trim(0);
#endif
    });
  }

  std::size_t budget(Transport t) const {
    return t == Transport::tcp ? opt.max_connections : opt.max_unix_connections;
  }
  enum class Admission { admitted, refuse, close };
  Admission admit(std::uint64_t id, Transport t, std::function<void()> close);
  void set_state(std::uint64_t id, ConnState st) {
    if (auto it = conns.find(id); it != conns.end()) it->second.state = st;
  }
  void release(std::uint64_t id) {
    if (auto it = conns.find(id); it != conns.end()) {
      --open_count[slot(it->second.transport)];
      conns.erase(it);
    }
    if (stopping && conns.empty()) finish_stop();
  }
  void reopen_reserve() {
    if (reserve_fd < 0) reserve_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  std::map<ProjectId, std::set<Waiter*>> waiters;
  // Page bytes alive for SSE streams (each shared page counted once); declared before
  // `feeds`, whose pages decrement it when freed.
  std::size_t page_bytes = 0;
  // Per project with SSE streams: its streams' cursors and the pages read for them, which
  // streams at the same cursor (every caught-up subscriber after a commit) share.
  std::map<ProjectId, SharedFeed> feeds;
  Result<std::shared_ptr<const SsePage>> sse_page(const ChangeStream& s, std::uint64_t after);
  void move_stream(const ChangeStream& s, std::optional<std::uint64_t> from,
                   std::optional<std::uint64_t> to) {
    if (s.limit == 0) return;  // never shared
    auto key = [&](std::optional<std::uint64_t> c) {
      return c ? std::optional<PageKey>(PageKey{*c, s.limit}) : std::nullopt;
    };
    auto& feed = feeds[s.project];
    feed.move(key(from), key(to));
    if (feed.streams.empty()) feeds.erase(s.project);
  }
  bool stopping = false;
  std::function<void()> on_drained;
  asio::steady_timer grace_timer;
  std::shared_ptr<Poster> poster;  // closed by ~ApiServer

  Status bind_unix();
  Status bind_tcp();
  void wake(const ProjectId& project) {
    // The feed moved (or the project is gone): pages read before may be incomplete.
    if (auto f = feeds.find(project); f != feeds.end()) f->second.pages.clear();
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
  void finish_stop() {
    grace_timer.cancel();
    if (on_drained) {
      auto done = std::move(on_drained);
      on_drained = nullptr;
      done();
    }
  }

  asio::awaitable<void> session(Stream sock, Transport transport);
  asio::awaitable<bool> write_response(Stream& sock, asio::steady_timer& deadline,
                                       http::response<http::string_body>& res);
  // What reading a streamed request body came to: the response to send (none when the client
  // went away or stalled), and whether the connection may serve further requests afterwards
  // (false: the body was refused part-way, the answer is followed by closing).
  struct StreamOutcome {
    std::optional<ApiResponse> response;
    bool keep = false;
  };
  asio::awaitable<StreamOutcome> read_stream_body(Stream& sock, beast::flat_buffer& buffer,
                                                  asio::steady_timer& deadline,
                                                  http::request_parser<http::string_body>& parser,
                                                  BodySink& sink, const ApiRequest& req,
                                                  const std::shared_ptr<Pause>& pause);
  asio::awaitable<bool> send_source(Stream& sock, asio::steady_timer& deadline, ApiResponse& resp,
                                    const ApiRequest& req, unsigned version, bool keep_alive);
  asio::awaitable<void> run_longpoll(Stream& sock, asio::steady_timer& deadline, ChangeStream& s,
                                     bool keep_alive, bool& keep_open, const Headers& extra);
  asio::awaitable<void> run_sse(Stream& sock, asio::steady_timer& deadline, ChangeStream& s,
                                const Headers& extra);
  template <class Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, Transport transport);
  asio::awaitable<void> refuse_exhausted(Stream sock);
  asio::awaitable<ApiResponse> run_deferred(std::shared_ptr<DeferredResponse> d);
};

// The SSE events of the changes page after `after` for stream s, read and rendered once for
// the streams of the project at that cursor with the same page size, until the project's next
// change (wake() drops the pages). A page taken between a commit and its wake() may lack the
// commit's changes: the wake that follows makes every stream of the project read on.
Result<std::shared_ptr<const SsePage>> ApiServer::Impl::sse_page(const ChangeStream& s,
                                                                 std::uint64_t after) {
  const PageKey key{after, s.limit};
  auto feed = feeds.find(s.project);
  if (feed != feeds.end())
    if (auto it = feed->second.pages.find(key); it != feed->second.pages.end()) return it->second;
  auto chunk = s.fetch(after);
  if (!chunk) return chunk.error();
  auto page = std::make_shared<SsePage>();
  page->last_seq = chunk->last_seq;
  page->events = chunk->events.size();
  for (auto& [seq, json] : chunk->events)
    page->text += "id: " + std::to_string(seq) + "\nevent: change\ndata: " + json + "\n\n";
  page->held = &page_bytes;
  page_bytes += page->text.size();
  // Kept while a stream is at this cursor (this one too, until it moves past the page).
  if (feed != feeds.end() && feed->second.streams.count(key)) feed->second.pages[key] = page;
  return std::shared_ptr<const SsePage>(std::move(page));
}

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
    slot->result = d->on_timeout
                       ? d->on_timeout()
                       : error_response(make_error(Errc::unavailable, "no answer in time"));
  co_return std::move(*slot->result);
}

// ---------------------------------------------------------------- listeners

Status ApiServer::Impl::bind_unix() {
  namespace fs = std::filesystem;
  std::error_code fec;
  if (socket_path.native().size() >= sizeof(sockaddr_un{}.sun_path))
    return make_error(Errc::invalid_argument,
                      "api.socket_path is too long for a Unix socket (max " +
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
      return make_error(
          Errc::already_exists,
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
    return make_error(Errc::internal,
                      "cannot chmod " + socket_path.string() + ": " + std::strerror(errno));
  if (!opt.socket_group.empty()) {
    struct group* g = ::getgrnam(opt.socket_group.c_str());
    if (!g)
      return make_error(Errc::invalid_argument,
                        "api.socket_group: no group named '" + opt.socket_group + "'");
    if (::chown(socket_path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0)
      return make_error(Errc::permission_denied, "cannot give " + socket_path.string() +
                                                     " to group '" + opt.socket_group +
                                                     "': " + std::strerror(errno));
  }
  unix_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(Errc::internal,
                      "cannot listen on " + socket_path.string() + ": " + ec.message());
  return {};
}

Status ApiServer::Impl::bind_tcp() {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(opt.http_address, ec);
  if (ec)
    return make_error(Errc::invalid_argument,
                      "api.http_address: not an IP address: '" + opt.http_address + "'");
  if (!addr.is_loopback())
    spdlog::warn(
        "api.http_address {} is not a loopback address: the API is reachable from the network "
        "(token required)",
        opt.http_address);
  auto group = token_group_id(opt.token_group);
  if (!group) return group.error();
  auto tok = load_or_create_token(token_file(data_dir), *group);
  if (!tok) return tok.error();
  FS_TRY(open_dir_to_group(data_dir, *group));
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
  if (ec)
    return make_error(Errc::unavailable, "cannot listen on the HTTP API port: " + ec.message());
  port = tcp_acceptor->local_endpoint().port();
  // api.port only helps clients find an ephemeral port: failing to write it (a full disk) must
  // not keep the API down. A stale file is removed so nobody dials an old port.
  auto written = write_private_file(port_file(data_dir), std::to_string(port) + "\n");
  if (written && *group) {  // readers of the token need the port too
    if (auto shared = set_token_access(port_file(data_dir), *group); !shared)
      written = shared.error();
  }
  if (!written) {
    ::unlink(port_file(data_dir).c_str());
    spdlog::error(
        "{}; serving anyway: the HTTP API listens on port {} (see GET /v1/status), the "
        "Unix socket works as usual",
        written.error().message, port);
  }
  return {};
}

// A connection beyond its listener's budget takes the slot of the oldest one that has not
// sent a complete, authenticated request header yet, else of the oldest idle keep-alive one.
// When every slot is busy it is answered 503 (up to as many again; further ones are closed).
ApiServer::Impl::Admission ApiServer::Impl::admit(std::uint64_t id, Transport t,
                                                  std::function<void()> close) {
  const std::size_t k = slot(t);
  if (open_count[k] >= budget(t)) {
    auto victim = conns.end();
    for (auto want : {ConnState::pending, ConnState::idle}) {
      for (auto it = conns.begin(); it != conns.end(); ++it)
        if (it->second.transport == t && it->second.state == want) {
          victim = it;
          break;
        }
      if (victim != conns.end()) break;
    }
    if (victim != conns.end()) {
      spdlog::debug("API {}: dropping {} connection to make room (budget {})", transport_name(t),
                    victim->second.state == ConnState::pending ? "an unauthenticated" : "an idle",
                    budget(t));
      auto close_it = std::move(victim->second.close);
      conns.erase(victim);
      --open_count[k];
      close_it();
    }
  }
  if (open_count[k] >= budget(t)) {
    if (overflow_count[k] >= budget(t)) return Admission::close;
    ++overflow_count[k];
    return Admission::refuse;
  }
  conns[id] = Conn{std::move(close), t, ConnState::pending};
  ++open_count[k];
  return Admission::admitted;
}

// Out of file descriptors: the reserve descriptor makes room to accept one waiting connection
// and answer it 503 (instead of leaving it hanging in the backlog); accepting then pauses,
// doubling from 10 ms up to api.accept_retry_max_ms, until descriptors are free again.
template <class Acceptor>
asio::awaitable<void> ApiServer::Impl::accept_loop(Acceptor& acceptor, Transport transport) {
  auto self = shared_from_this();
  asio::steady_timer backoff(io);
  auto delay = kFirstAcceptRetry;
  const auto max_delay = std::chrono::milliseconds(opt.accept_retry_max_ms);
  std::uint64_t exhausted = 0;
  while (!stopping) {
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (stopping) break;
    if (!ec) {
      if (exhausted)
        spdlog::info(
            "API {}: accepting again after {} failed accept(s) for lack of file descriptors",
            transport_name(transport), exhausted);
      exhausted = 0;
      delay = kFirstAcceptRetry;
      reopen_reserve();
      asio::co_spawn(io, session(Stream(std::move(sock)), transport), asio::detached);
      continue;
    }
    if (ec == asio::error::operation_aborted) break;
    if (is_fd_exhaustion(ec)) {
      if (exhausted++ == 0)
        spdlog::warn(
            "API {}: out of file descriptors ({}); answering 503 and retrying within {} ms",
            transport_name(transport), ec.message(), opt.accept_retry_max_ms);
      if (reserve_fd >= 0) {
        ::close(reserve_fd);
        reserve_fd = -1;
        boost::system::error_code aec;
        typename Acceptor::protocol_type::socket refused(io);
        acceptor.accept(refused, aec);  // non-blocking: the backlog holds the waiting one
        if (!aec)
          asio::co_spawn(io, refuse_exhausted(Stream(std::move(refused))), asio::detached);
        else
          reopen_reserve();
      }
    } else {
      spdlog::warn("API {}: accept failed: {}", transport_name(transport), ec.message());
    }
    backoff.expires_after(delay);
    co_await backoff.async_wait(use_tuple);
    delay = std::min(delay * 2, max_delay);
    reopen_reserve();
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
        name == "last-event-id" || name == "content-type" || name == "accept" || name == "range" ||
        name == "if-none-match" || name == "if-range" || name == "content-length" ||
        name == "origin" || name == "access-control-request-method")
      req.headers[name] = std::string(f.value());
  }
  return true;
}

http::response<http::string_body> to_beast(ApiResponse&& r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "fieldsyncd");
  if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
  res.set(http::field::cache_control, "no-store");
  for (auto& [k, v] : r.headers) res.set(k, v);
  res.body() = std::move(r.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

// Sink and source callbacks are route code: an exception escaping them must not end the
// session coroutine (its connection slot would never be given back).
Status sink_write(BodySink& sink, ByteView piece) {
  try {
    return sink.write(piece);
  } catch (const std::exception& e) {
    return make_error(Errc::internal, std::string("unexpected error: ") + e.what());
  }
}

ApiResponse sink_finish(BodySink& sink) {
  try {
    return sink.finish();
  } catch (const std::exception& e) {
    return error_response(make_error(Errc::internal, std::string("unexpected error: ") + e.what()));
  }
}

Status sink_ready(BodySink& sink, std::function<void()> resume) {
  try {
    sink.ready(std::move(resume));
    return {};
  } catch (const std::exception& e) {
    return make_error(Errc::internal, std::string("unexpected error: ") + e.what());
  }
}

void abort_sink(BodySink& sink) {
  try {
    if (sink.abort) sink.abort();
  } catch (const std::exception& e) {
    spdlog::error("API: aborting a streamed request body failed: {}", e.what());
  }
}

Result<Bytes> source_next(BodySource& source) {
  try {
    if (!source.next) return make_error(Errc::internal, "the response has no body source");
    return source.next();
  } catch (const std::exception& e) {
    return make_error(Errc::internal, std::string("unexpected error: ") + e.what());
  }
}

void source_done(BodySource& source, const Status& outcome) {
  try {
    if (source.done) source.done(outcome);
  } catch (const std::exception& e) {
    spdlog::error("API: ending a streamed response failed: {}", e.what());
  }
}

// Closes `sock` unless disarm() runs first. The expiry check guards against a wait that had
// already completed when the timer was re-armed or disarmed.
void arm(asio::steady_timer& deadline, Stream& sock, std::chrono::milliseconds ms) {
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

asio::awaitable<bool> ApiServer::Impl::write_response(Stream& sock, asio::steady_timer& deadline,
                                                      http::response<http::string_body>& res) {
  arm(deadline, sock, std::chrono::milliseconds(opt.request_timeout_ms));
  auto [ec, n] = co_await http::async_write(sock, res, use_tuple);
  disarm(deadline);
  co_return !ec;
}

// A streamed request body goes to the sink piece by piece as it arrives: each read has
// api.request_timeout_ms (a client that stops sending is cut), the total is bounded by
// api.max_stream_bytes, and chunk lines and the trailer by their limits as for any body.
asio::awaitable<ApiServer::Impl::StreamOutcome> ApiServer::Impl::read_stream_body(
    Stream& sock, beast::flat_buffer& buffer, asio::steady_timer& deadline,
    http::request_parser<http::string_body>& header_parser, BodySink& sink, const ApiRequest& req,
    const std::shared_ptr<Pause>& pause) {
  StreamOutcome out;
  if (header_parser.is_done()) {  // no body at all
    out.response = sink_finish(sink);
    out.keep = true;
    co_return out;
  }
  const auto timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  const bool chunked = header_parser.chunked();
  buffer.max_size(std::max<std::size_t>(
      buffer.size(),
      chunked ? opt.max_chunk_extension_bytes + opt.max_trailer_bytes + kChunkFramingBytes
              : kBodyReadBytes));
  // Reads take what the socket has, up to the buffer's capacity: room for a whole piece.
  buffer.reserve(std::min<std::size_t>(buffer.max_size(), kBodyReadBytes));
  http::request_parser<http::buffer_body> parser{std::move(header_parser)};
  parser.body_limit(opt.max_stream_bytes);
  std::string too_long;
  auto on_chunk = [&](std::uint64_t, std::string_view ext, boost::system::error_code& cec) {
    if (ext.size() > opt.max_chunk_extension_bytes) {
      too_long = "chunk extension exceeds api.max_chunk_extension_bytes = " +
                 std::to_string(opt.max_chunk_extension_bytes);
      cec = http::error::bad_chunk_extension;
    }
  };
  parser.on_chunk_header(on_chunk);
  auto field_bytes = [&] {
    std::size_t n = 0;
    for (const auto& f : parser.get()) n += f.name_string().size() + f.value().size() + 4;
    return n;
  };
  const std::size_t fields_before = field_bytes();
  auto too_large = [&] {
    return error_response(
        make_error(Errc::too_large, "streamed request body exceeds api.max_stream_bytes = " +
                                        std::to_string(opt.max_stream_bytes)));
  };

  std::vector<std::uint8_t> piece(kBodyReadBytes);
  std::uint64_t total = 0;
  std::optional<ApiResponse> refusal;  // the body is refused part-way: answer, then close
  std::string lost;                    // the client went away or stalled
  while (!parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    arm(deadline, sock, timeout);
    auto [ec, n] = co_await http::async_read_some(sock, buffer, parser, use_tuple);
    disarm(deadline);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      if (ec == http::error::body_limit) {
        refusal = too_large();
      } else if (!too_long.empty()) {
        refusal = error_response(make_error(Errc::invalid_argument, too_long));
      } else if (ec == http::error::buffer_overflow) {
        refusal = error_response(
            make_error(Errc::invalid_argument,
                       "chunk line or trailer exceeds api.max_chunk_extension_bytes = " +
                           std::to_string(opt.max_chunk_extension_bytes) +
                           " / api.max_trailer_bytes = " + std::to_string(opt.max_trailer_bytes)));
      } else if (is_framing_error(ec)) {
        refusal = error_response(
            make_error(Errc::invalid_argument, "malformed HTTP request body: " + ec.message()));
      } else if (!sock.is_open()) {
        lost = "no data for " + std::to_string(opt.request_timeout_ms) +
               " ms (api.request_timeout_ms), or the daemon is stopping";
      } else {
        lost = "the client went away (" + ec.message() + ")";
      }
      break;
    }
    const std::size_t got = piece.size() - parser.get().body().size;
    if (got == 0) continue;
    total += got;
    if (total > opt.max_stream_bytes) {
      refusal = too_large();
      break;
    }
    if (auto written = sink_write(sink, ByteView(piece.data(), got)); !written) {
      refusal = sink.refuse ? sink.refuse(written.error()) : error_response(written.error());
      break;
    }
    if (!sink.ready) continue;
    // Backpressure: no more of the body until the sink says it takes more (from any thread).
    const std::uint64_t round = ++pause->round;
    pause->resumed = false;
    pause->timer.expires_after(timeout);
    std::weak_ptr<Pause> weak = pause;
    auto resume = [poster = poster, weak, round] {
      poster->post([weak, round] {
        auto p = weak.lock();
        if (!p || p->round != round || p->resumed) return;
        p->resumed = true;
        p->timer.cancel();
      });
    };
    if (auto asked = sink_ready(sink, std::move(resume)); !asked) {
      refusal = error_response(asked.error());
      break;
    }
    if (!pause->resumed) co_await pause->timer.async_wait(use_tuple);
    if (!pause->resumed) {
      ++pause->round;  // a late resume() belongs to nothing
      pause->resumed = true;
      lost = sock.is_open()
                 ? "the body was not taken for " + std::to_string(opt.request_timeout_ms) +
                       " ms (api.request_timeout_ms)"
                 : "the daemon is stopping";
      break;
    }
    if (!sock.is_open()) {
      lost = "the daemon is stopping";
      break;
    }
  }
  if (!refusal && lost.empty() && field_bytes() - fields_before > opt.max_trailer_bytes)
    refusal = error_response(make_error(
        Errc::invalid_argument,
        "trailer exceeds api.max_trailer_bytes = " + std::to_string(opt.max_trailer_bytes)));
  if (!refusal && lost.empty()) {
    out.response = sink_finish(sink);
    out.keep = true;
    co_return out;
  }
  abort_sink(sink);
  if (refusal) {
    spdlog::info("api {} {}: streamed request body refused after {} bytes: {} {}", req.method,
                 req.target, total, refusal->status, refusal->body);
    out.response = std::move(refusal);
  } else {
    spdlog::info("api {} {}: streamed request body cut after {} bytes: {}", req.method, req.target,
                 total, lost);
  }
  co_return out;
}

// A streamed response: the header and then one chunk per piece of the source, the next piece
// pulled only once the previous one is written; the terminating chunk only if the whole body
// was produced. False when the connection must close.
asio::awaitable<bool> ApiServer::Impl::send_source(Stream& sock, asio::steady_timer& deadline,
                                                   ApiResponse& resp, const ApiRequest& req,
                                                   unsigned version, bool keep_alive) {
  auto source = std::move(resp.source);
  auto end = [&](const Status& outcome) {
    source_done(*source, outcome);
    source.reset();  // whatever the source holds is freed now, not with the connection
  };
  const std::optional<std::uint64_t> length = source->length;
  if (version < 11 && !length) {
    Error e = make_error(Errc::unsupported,
                         "this response is streamed (chunked transfer coding), which needs "
                         "HTTP/1.1");
    end(e);
    auto res = to_beast(error_response(e), version, false);
    co_await write_response(sock, deadline, res);
    co_return false;
  }
  // The first piece comes before the header: a source that fails at once gets a proper
  // error response.
  auto first = source_next(*source);
  if (!first) {
    spdlog::warn("api {} {}: streamed response failed before its first byte: {}", req.method,
                 req.target, first.error().message);
    end(first.error());
    auto res = to_beast(error_response(first.error()), version, keep_alive);
    co_return co_await write_response(sock, deadline, res) && keep_alive;
  }
  const auto timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  http::response<http::empty_body> head{static_cast<http::status>(resp.status), version};
  head.set(http::field::server, "fieldsyncd");
  if (!resp.content_type.empty()) head.set(http::field::content_type, resp.content_type);
  head.set(http::field::cache_control, "no-store");
  for (auto& [k, v] : resp.headers) head.set(k, v);
  head.keep_alive(keep_alive);
  if (length)
    head.content_length(*length);
  else
    head.chunked(true);
  http::response_serializer<http::empty_body> sr{head};
  arm(deadline, sock, timeout);
  auto [hec, hn] = co_await http::async_write_header(sock, sr, use_tuple);
  disarm(deadline);
  Status outcome;
  std::uint64_t sent = 0;
  if (hec) outcome = make_error(Errc::unavailable, "the client went away: " + hec.message());
  Bytes piece = std::move(*first);
  while (outcome && !piece.empty()) {
    if (length && piece.size() > *length - sent) {
      spdlog::error("api {} {}: streamed response source produced more than its {} bytes",
                    req.method, req.target, *length);
      outcome = make_error(Errc::internal, "the body source produced more than its length");
      break;
    }
    for (std::size_t off = 0; off < piece.size();) {
      const std::size_t n = std::min(kMaxChunkWriteBytes, piece.size() - off);
      const asio::const_buffer slice(piece.data() + off, n);
      arm(deadline, sock, timeout);
      auto [wec, wn] = length
                           ? co_await asio::async_write(sock, slice, use_tuple)
                           : co_await asio::async_write(sock, http::make_chunk(slice), use_tuple);
      disarm(deadline);
      if (wec) {
        outcome = make_error(Errc::unavailable,
                             sock.is_open() ? "the client went away: " + wec.message()
                                            : "the client took nothing for " +
                                                  std::to_string(opt.request_timeout_ms) +
                                                  " ms (api.request_timeout_ms), or the daemon "
                                                  "is stopping");
        break;
      }
      off += n;
      sent += n;
    }
    if (!outcome) break;
    Bytes().swap(piece);  // one piece in memory at a time
    auto next = source_next(*source);
    if (!next) {
      spdlog::error(
          "api {} {}: streamed response failed after {} bytes: {}; closing the connection "
          "without the final chunk",
          req.method, req.target, sent, next.error().message);
      outcome = next.error();
      break;
    }
    piece = std::move(*next);
  }
  if (outcome && length && sent != *length) {
    spdlog::error(
        "api {} {}: streamed response source ended after {} of its {} bytes; closing "
        "the connection",
        req.method, req.target, sent, *length);
    outcome = make_error(Errc::internal, "the body source ended before its length");
  }
  if (outcome && !length) {
    arm(deadline, sock, timeout);
    auto [lec, ln] = co_await asio::async_write(sock, http::make_chunk_last(), use_tuple);
    disarm(deadline);
    if (lec) outcome = make_error(Errc::unavailable, "the client went away: " + lec.message());
  }
  if (!outcome && outcome.error().code == Errc::unavailable)
    spdlog::info("api {} {}: streamed response ended after {} bytes: {}", req.method, req.target,
                 sent, outcome.error().message);
  end(outcome);
  co_return outcome.ok() && keep_alive;
}

namespace {

// Closing with unread input makes the kernel send a reset, which can destroy a response
// before the client reads it: discard what is still coming for a short while, then close.
asio::awaitable<void> linger_close(Stream& sock, asio::steady_timer& deadline,
                                   std::chrono::milliseconds wait) {
  boost::system::error_code ignore;
  sock.shutdown(asio::socket_base::shutdown_send, ignore);
  arm(deadline, sock, wait);
  std::array<char, 16384> sink;
  std::size_t drained = 0;
  while (drained < kLingerBytes) {
    auto [ec, n] = co_await sock.async_read_some(asio::buffer(sink), use_tuple);
    if (ec) break;
    drained += n;
  }
  disarm(deadline);
  sock.close(ignore);
}

ApiResponse too_many_connections(Transport t, std::size_t budget) {
  return error_response(
      make_error(Errc::resource_exhausted,
                 std::string("too many connections (") +
                     (t == Transport::tcp ? "api.max_connections" : "api.max_unix_connections") +
                     " = " + std::to_string(budget) + ")"));
}

}  // namespace

// Answers a connection accepted with the reserve descriptor 503, without reading it first.
asio::awaitable<void> ApiServer::Impl::refuse_exhausted(Stream sock) {
  auto self = shared_from_this();
  asio::steady_timer deadline(io);
  auto res =
      to_beast(error_response(make_error(Errc::resource_exhausted,
                                         "the daemon is out of file descriptors; retry later")),
               11, false);
  if (co_await write_response(sock, deadline, res))
    co_await linger_close(
        sock, deadline,
        std::chrono::milliseconds(std::min<std::uint32_t>(opt.header_timeout_ms, 100)));
  boost::system::error_code ignore;
  sock.close(ignore);
  reopen_reserve();
}

asio::awaitable<void> ApiServer::Impl::session(Stream sock, Transport transport) {
  auto self = shared_from_this();
  const std::uint64_t id = next_conn++;
  auto pause = std::make_shared<Pause>(io);
  const auto admission = admit(id, transport, [&sock, pause] {
    boost::system::error_code ignore;
    sock.close(ignore);
    pause->timer.cancel();  // a body waiting for its sink stops waiting
  });
  if (admission == Admission::close) {
    boost::system::error_code ignore;
    sock.close(ignore);
    co_return;
  }
  const bool overflow = admission == Admission::refuse;
  const auto timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  // Until a complete (on TCP: authenticated) request header arrived, the connection has
  // api.header_timeout_ms from its accept, whatever it sends meanwhile.
  const auto header_due =
      asio::steady_timer::clock_type::now() + std::chrono::milliseconds(opt.header_timeout_ms);
  bool authenticated = false;
  asio::steady_timer deadline(io);
  beast::flat_buffer buffer;
  auto err = [](Errc code, std::string message) {
    return error_response(make_error(code, std::move(message)));
  };

  bool linger = false;  // the peer may still be sending a body we refused
  // Every answer is counted in GET /metrics (ApiContext::metrics), with its latency from the
  // complete request header (0 for answers to a header that never completed).
  auto header_done = asio::steady_timer::clock_type::now();
  auto record = [&](int status) {
    service.context().metrics.observe(
        status,
        std::chrono::duration<double>(asio::steady_timer::clock_type::now() - header_done).count());
  };
  while (!stopping) {
    set_state(id, authenticated ? ConnState::idle : ConnState::pending);
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opt.max_header_bytes));
    // The route (and so the body limit) is known once the header is complete; until then the
    // larger of the two limits applies, and the chosen one is checked right after the header.
    parser.body_limit(std::max(opt.max_body_bytes, opt.max_stream_bytes));
    // Nothing beyond the header limit is buffered while the header is read.
    buffer.max_size(std::max<std::size_t>(opt.max_header_bytes, buffer.size()));
    if (authenticated) {
      arm(deadline, sock, timeout);
    } else {
      deadline.expires_at(header_due);
      deadline.async_wait([&sock, &deadline](boost::system::error_code ec) {
        if (!ec && deadline.expiry() <= asio::steady_timer::clock_type::now()) {
          boost::system::error_code ignore;
          sock.close(ignore);
        }
      });
    }
    auto [ec, n] = co_await http::async_read_header(sock, buffer, parser, use_tuple);
    disarm(deadline);
    if (ec) {
      std::optional<ApiResponse> answer;
      if (ec == http::error::body_limit) {
        // Content-Length above body_limit: Beast refuses it as soon as the header is complete.
        answer = err(Errc::too_large, opt.max_stream_bytes > opt.max_body_bytes
                                          ? "request body exceeds api.max_stream_bytes = " +
                                                std::to_string(opt.max_stream_bytes)
                                          : "request body exceeds api.max_body_bytes = " +
                                                std::to_string(opt.max_body_bytes));
      } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        answer = err(Errc::invalid_argument, "request header exceeds api.max_header_bytes = " +
                                                 std::to_string(opt.max_header_bytes));
      } else if (is_framing_error(ec)) {
        answer = err(Errc::invalid_argument, "malformed HTTP request: " + ec.message());
      }
      if (answer) {
        header_done = asio::steady_timer::clock_type::now();
        record(answer->status);
        auto res = to_beast(std::move(*answer), 11, false);
        co_await write_response(sock, deadline, res);
        linger = true;
      }
      break;
    }
    header_done = asio::steady_timer::clock_type::now();
    set_state(id, ConnState::busy);
    const auto& header = parser.get();
    const unsigned version = header.version();
    auto refuse = [&](ApiResponse r) { return to_beast(std::move(r), version, false); };

    if (overflow) {
      record(503);
      auto res = refuse(too_many_connections(transport, budget(transport)));
      co_await write_response(sock, deadline, res);
      linger = true;
      break;
    }

    // Everything is checked from the header, before any of the body is read.
    ApiRequest req;
    req.transport = transport;
    std::optional<ApiResponse> early;
    Headers cors;  // CORS response headers for an allowed Origin (api.cors_origins), TCP only
    if (!to_api_request(header, req)) {
      early = err(Errc::invalid_argument, "malformed request target");
    } else if (transport == Transport::tcp) {
      cors = cors_headers(cors_allowed, req.header("origin"));
      const bool preflight = req.method == "OPTIONS" && req.header("access-control-request-method");
      // (A preflight carries no token; the Host check still holds against DNS rebinding.)
      auto& ctx = service.context();
      auto access = preflight
                        ? check_tcp_host(req)
                        : check_tcp_access(req, {token, &ctx.tickets, &ctx.ui_sessions}, unix_ms());
      if (!access)
        early = error_response(access.error());
      else if (preflight)
        early = cors_preflight(cors_allowed, req);
      if (early && early->status != 204)
        early->headers.insert(early->headers.end(), cors.begin(), cors.end());
    }
    if (!early) authenticated = true;
    // A route added with add_streamed() takes its body in pieces, up to api.max_stream_bytes.
    const bool streamed = !early && service.router().takes_stream(req);
    const std::uint64_t body_limit = streamed ? opt.max_stream_bytes : opt.max_body_bytes;
    if (!early && parser.content_length() && *parser.content_length() > body_limit) {
      early =
          err(Errc::too_large,
              "request body of " + std::to_string(*parser.content_length()) + " bytes exceeds " +
                  (streamed ? "api.max_stream_bytes = " : "api.max_body_bytes = ") +
                  std::to_string(body_limit));
    }
    std::shared_ptr<BodySink> sink;
    if (!early && streamed) {
      auto opened = service.router().open_sink(req);
      if (opened)
        sink = std::move(*opened);
      else
        early = error_response(opened.error());
    }
    if (early) {
      record(early->status);
      // Without a body the connection can stay open; with one it is left unread and closed.
      const bool keep = parser.is_done() && header.keep_alive() && !stopping;
      auto res = to_beast(std::move(*early), version, keep);
      if (!co_await write_response(sock, deadline, res)) break;
      if (keep) continue;
      linger = !parser.is_done();
      break;
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      arm(deadline, sock, timeout);
      auto [wec, wn] = co_await http::async_write(sock, cont, use_tuple);
      disarm(deadline);
      if (wec) {
        if (sink) abort_sink(*sink);
        break;
      }
    }
    ApiResponse resp;
    bool keep_alive = header.keep_alive();
    if (sink) {
      auto outcome = co_await read_stream_body(sock, buffer, deadline, parser, *sink, req, pause);
      sink.reset();
      if (!outcome.response) break;  // the client went away or stalled: nobody to answer
      if (!outcome.keep) {
        record(outcome.response->status);
        auto res = refuse(std::move(*outcome.response));
        co_await write_response(sock, deadline, res);
        linger = true;
        break;
      }
      resp = std::move(*outcome.response);
    } else if (!parser.is_done()) {
      parser.body_limit(opt.max_body_bytes);
      // Chunk lines and the trailer are the only parts that wait in the buffer whole; chunk
      // data and Content-Length bodies pass through it into the body (api.max_body_bytes).
      const bool chunked = parser.chunked();
      buffer.max_size(std::max<std::size_t>(
          buffer.size(),
          chunked ? opt.max_chunk_extension_bytes + opt.max_trailer_bytes + kChunkFramingBytes
                  : kBodyReadBytes));
      // Reads take what the socket has, up to the buffer's capacity (Beast reads 512 bytes at
      // a time into a buffer with no more room): room for a whole piece.
      buffer.reserve(std::min<std::size_t>(buffer.max_size(), kBodyReadBytes));
      std::string too_long;
      auto on_chunk = [&](std::uint64_t, std::string_view ext, boost::system::error_code& cec) {
        if (ext.size() > opt.max_chunk_extension_bytes) {
          too_long = "chunk extension exceeds api.max_chunk_extension_bytes = " +
                     std::to_string(opt.max_chunk_extension_bytes);
          cec = http::error::bad_chunk_extension;
        }
      };
      parser.on_chunk_header(on_chunk);
      std::size_t fields_before = 0;
      for (const auto& f : parser.get())
        fields_before += f.name_string().size() + f.value().size() + 4;
      arm(deadline, sock, timeout);
      auto [bec, bn] = co_await http::async_read(sock, buffer, parser, use_tuple);
      disarm(deadline);
      std::size_t fields_after = 0;
      for (const auto& f : parser.get())
        fields_after += f.name_string().size() + f.value().size() + 4;
      if (!bec && fields_after - fields_before > opt.max_trailer_bytes) {
        too_long =
            "trailer exceeds api.max_trailer_bytes = " + std::to_string(opt.max_trailer_bytes);
        bec = http::error::bad_chunk;
      }
      if (bec) {
        std::optional<ApiResponse> answer;
        if (bec == http::error::body_limit) {
          answer = err(Errc::too_large, "request body exceeds api.max_body_bytes = " +
                                            std::to_string(opt.max_body_bytes));
        } else if (!too_long.empty()) {
          answer = err(Errc::invalid_argument, too_long);
        } else if (bec == http::error::buffer_overflow) {
          answer = err(Errc::invalid_argument,
                       "chunk line or trailer exceeds api.max_chunk_extension_bytes = " +
                           std::to_string(opt.max_chunk_extension_bytes) +
                           " / api.max_trailer_bytes = " + std::to_string(opt.max_trailer_bytes));
        } else if (is_framing_error(bec)) {
          answer = err(Errc::invalid_argument, "malformed HTTP request body: " + bec.message());
        }
        if (answer) {
          record(answer->status);
          auto res = refuse(std::move(*answer));
          co_await write_response(sock, deadline, res);
          linger = true;
        }
        break;
      }
    }

    if (!streamed) {
      req.body = std::move(parser.get().body());
      resp = service.handle(req);
    }
    if (resp.deferred) resp = co_await run_deferred(resp.deferred);
    resp.headers.insert(resp.headers.end(), cors.begin(), cors.end());
    spdlog::debug("api {} {} -> {}", req.method, req.target, resp.stream ? 200 : resp.status);
    if (!resp.stream) record(resp.status);

    if (resp.source) {
      if (!co_await send_source(sock, deadline, resp, req, version, keep_alive && !stopping)) break;
      continue;
    }

    if (resp.stream) {
      const std::size_t k = slot(transport);
      if (stream_count[k] >= opt.max_streams) {
        record(503);
        auto res =
            to_beast(err(Errc::resource_exhausted,
                         "too many open streams on the " + std::string(transport_name(transport)) +
                             " (api.max_streams = " + std::to_string(opt.max_streams) + ")"),
                     version, keep_alive && !stopping);
        if (!co_await write_response(sock, deadline, res) || !keep_alive) break;
        continue;
      }
      record(200);  // a long-poll or SSE stream counts once it starts
      auto stream = resp.stream;
      set_state(id, ConnState::stream);
      ++stream_count[k];
      bool keep_open = false;
      if (stream->mode == ChangeStream::Mode::sse)
        co_await run_sse(sock, deadline, *stream, resp.headers);
      else
        co_await run_longpoll(sock, deadline, *stream, keep_alive, keep_open, resp.headers);
      --stream_count[k];
      if (!keep_open) break;
      continue;
    }
    auto res = to_beast(std::move(resp), version, keep_alive && !stopping);
    if (!co_await write_response(sock, deadline, res)) break;
    if (!keep_alive) break;
  }

  boost::system::error_code ignore;
  if (linger) {
    co_await linger_close(
        sock, deadline,
        std::chrono::milliseconds(std::min<std::uint32_t>(opt.request_timeout_ms, 2000)));
  } else {
    sock.shutdown(asio::socket_base::shutdown_send, ignore);
  }
  sock.close(ignore);
  if (overflow)
    --overflow_count[slot(transport)];
  else
    release(id);
}

asio::awaitable<void> ApiServer::Impl::run_longpoll(Stream& sock, asio::steady_timer& deadline,
                                                    ChangeStream& s, bool keep_alive,
                                                    bool& keep_open, const Headers& extra) {
  auto self = shared_from_this();
  Waiter w(io);
  auto& set = waiters[s.project];
  set.insert(&w);
  auto chunk = s.fetch(s.since);
  // Until a change the stream passes (a filtered stream may pass none of a commit's changes:
  // it waits on from past them) or the timeout. Registered before the fetch on this thread,
  // so a commit after it cannot be missed.
  const auto until = asio::steady_timer::clock_type::now() + s.timeout;
  while (chunk && chunk->events.empty() && !stopping) {
    if (!w.notified) {
      w.timer.expires_at(until);
      co_await w.timer.async_wait(use_tuple);
      if (!w.notified || stopping) break;  // timed out
    }
    w.notified = false;
    chunk = s.fetch(chunk->last_seq);
  }
  waiters[s.project].erase(&w);
  if (waiters[s.project].empty()) waiters.erase(s.project);

  ApiResponse r;
  if (!chunk) {
    r = error_response(chunk.error());
  } else {
    r.body = s.render(*chunk);
  }
  r.headers.insert(r.headers.end(), extra.begin(), extra.end());
  auto res = to_beast(std::move(r), 11, keep_alive && !stopping);
  keep_open = co_await write_response(sock, deadline, res) && keep_alive && !stopping;
}

// The stream writes without waiting: events go into an outbound queue that the socket drains
// as the subscriber reads. While catching up (the first pages after the cursor), the next page
// is read only once the queue is empty. Once caught up, every new change is appended as it is
// committed; a subscriber that lets more than api.max_stream_buffer_bytes pile up, or takes
// nothing for api.request_timeout_ms, is disconnected (it resumes with Last-Event-ID). Pages
// come from sse_page(), shared with the project's other streams at the same cursor.
asio::awaitable<void> ApiServer::Impl::run_sse(Stream& sock, asio::steady_timer& /*deadline*/,
                                               ChangeStream& s, const Headers& extra) {
  auto self = shared_from_this();
  using clock = asio::steady_timer::clock_type;
  const auto write_timeout = std::chrono::milliseconds(opt.request_timeout_ms);
  // Shared with the pending wait for writability, which may complete after we return.
  auto w = std::make_shared<Waiter>(io);
  waiters[s.project].insert(w.get());
  std::uint64_t cursor = s.since;
  move_stream(s, std::nullopt, cursor);
  OutQueue out;
  std::string head =
      "HTTP/1.1 200 OK\r\nServer: fieldsyncd\r\nContent-Type: text/event-stream\r\n"
      "Cache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n";
  for (const auto& [k, v] : extra) head += k + ": " + v + "\r\n";  // (CORS: our own values)
  out.push(head + "\r\nretry: 2000\n\n");
  bool more = true;        // the feed may hold changes after the cursor
  bool caught_up = false;  // a fetch came back empty once
  bool finish = false;     // end the stream once the queue is flushed
  bool full_page = false;  // the page just taken had `limit` changes: more may follow
  auto progress = clock::now();
  std::size_t peak = 0;  // most bytes the outbound queue held
  boost::system::error_code nb_ec;
  sock.non_blocking(true, nb_ec);
  while (!stopping && !nb_ec) {
    w->notified = false;
    if (more && !finish && (caught_up || out.empty())) {
      more = false;
      full_page = false;
      auto page = sse_page(s, cursor);
      if (!page) {
        out.push("event: error\ndata: " + error_response(page.error()).body + "\n\n");
        finish = true;
      } else if ((*page)->events != 0) {
        if ((*page)->last_seq <= cursor) {  // never resend: the cursor must move forward
          out.push("event: error\ndata: " +
                   error_response(make_error(Errc::internal, "changes feed did not advance")).body +
                   "\n\n");
          finish = true;
        } else {
          out.push(std::shared_ptr<const std::string>(*page, &(*page)->text));
          move_stream(s, cursor, (*page)->last_seq);
          cursor = (*page)->last_seq;
          more = true;  // there may be more than one page
          full_page = s.limit != 0 && (*page)->events >= s.limit;
        }
      } else {
        caught_up = true;
      }
    }
    peak = std::max(peak, out.unsent());
    if (out.unsent() > opt.max_stream_buffer_bytes) {
      spdlog::info(
          "SSE subscriber of project {} too slow: {} unsent bytes exceed "
          "api.max_stream_buffer_bytes = {}; disconnecting (it can resume at {})",
          s.project.str(), out.unsent(), opt.max_stream_buffer_bytes, cursor);
      break;
    }
    // Hand the socket what it takes now (unless it was full and has not said it takes more).
    boost::system::error_code wec;
    while (!out.empty() && !w->write_wait) {
      std::size_t n = sock.write_some(out.buffers(), wec);
      if (wec) break;
      out.consume(n);
      progress = clock::now();
    }
    if (wec && wec != asio::error::would_block && wec != asio::error::try_again) break;
    if (out.empty() && finish) break;
    if (more && (caught_up || out.empty())) {
      // Before reading on after a full page, the project's other streams woken with this one
      // take it (they are at its cursor), so that the next page is read once for them all too.
      if (full_page) co_await asio::post(io, asio::use_awaitable);
      continue;
    }
    if (!out.empty() && clock::now() - progress >= write_timeout) {
      spdlog::info("SSE subscriber of project {} took nothing for {} ms; disconnecting",
                   s.project.str(), opt.request_timeout_ms);
      break;
    }
    // A subscriber that goes away is noticed at once, not at the next write.
    if (w->readable) {
      w->readable = false;
      std::array<char, 512> sink;
      boost::system::error_code rec;
      sock.read_some(asio::buffer(sink), rec);
      if (rec && rec != asio::error::would_block && rec != asio::error::try_again) break;
    }
    if (!w->read_wait) {
      w->read_wait = true;
      sock.async_wait(asio::socket_base::wait_read, [w](boost::system::error_code ec) {
        w->read_wait = false;
        if (ec == asio::error::operation_aborted) return;
        w->readable = true;
        w->timer.cancel();
      });
    }
    if (!out.empty() && !w->write_wait) {
      w->write_wait = true;
      sock.async_wait(asio::socket_base::wait_write, [w](boost::system::error_code ec) {
        w->write_wait = false;
        if (ec != asio::error::operation_aborted) w->timer.cancel();
      });
    }
    if (w->notified) {
      more = true;
      continue;
    }
    auto wait = std::chrono::duration_cast<clock::duration>(s.heartbeat);
    if (!out.empty())
      wait = std::min<clock::duration>(wait, progress + write_timeout - clock::now());
    w->timer.expires_after(wait);
    auto [tec] = co_await w->timer.async_wait(use_tuple);
    if (stopping) break;
    if (w->notified) more = true;
    if (!tec && out.empty() && !w->notified) out.push(std::string(": heartbeat\n\n"));
  }
  if (w->write_wait || w->read_wait) {
    boost::system::error_code ignore;
    sock.cancel(ignore);
  }
  waiters[s.project].erase(w.get());
  if (waiters[s.project].empty()) waiters.erase(s.project);
  move_stream(s, cursor, std::nullopt);
  out.clear();  // pages no other stream holds are freed here
  if (peak > 64 * 1024) trim_soon();
}

// ---------------------------------------------------------------- ApiServer

ApiServer::ApiServer(asio::io_context& io, ApiService& service, const config::ApiOptions& options,
                     std::filesystem::path data_dir)
    : impl_(std::make_shared<Impl>(io, service, options, std::move(data_dir))) {}

ApiServer::~ApiServer() {
  impl_->poster->close();
  if (impl_->socket_created) ::unlink(impl_->socket_path.c_str());
  if (impl_->reserve_fd >= 0) ::close(impl_->reserve_fd);
  impl_->reserve_fd = -1;
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
  ctx.listen.stream_bytes = [weak]() -> std::size_t {
    auto self = weak.lock();
    return self ? self->page_bytes : 0;
  };
  ctx.listen.project_left = [weak](const ProjectId& project) {
    if (auto self = weak.lock()) self->wake(project);
  };
  ctx.post = [poster = impl_->poster](std::function<void()> job) { poster->post(std::move(job)); };
  // Non-blocking acceptors: at fd exhaustion one waiting connection is taken synchronously.
  boost::system::error_code nb;
  impl_->unix_acceptor->non_blocking(true, nb);
  if (impl_->tcp_acceptor) impl_->tcp_acceptor->non_blocking(true, nb);
  impl_->reopen_reserve();
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
  // Idle keep-alive connections and those still sending a header have nothing in flight.
  for (auto& [id, c] : d.conns)
    if (c.state == ConnState::idle || c.state == ConnState::pending) c.close();
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
