// The one heavy Asio + asio::ssl translation unit of fs_transports: listener, dialer,
// TLS connections driving sync::Session, reconnect/backoff and peer bookkeeping.
#include "transports/sync_service.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "common/rate_limited_log.hpp"
#include "common/text.hpp"
#include "crypto/tls_context.hpp"
#include "sync/messages.hpp"
#include "sync/session.hpp"

namespace fieldsync::transports {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

std::string_view peer_state_name(PeerState s) {
  switch (s) {
    case PeerState::idle: return "idle";
    case PeerState::connecting: return "connecting";
    case PeerState::handshake: return "handshake";
    case PeerState::syncing: return "syncing";
    case PeerState::in_sync: return "in_sync";
    case PeerState::backoff: return "backoff";
    case PeerState::pending: return "pending";
  }
  return "unknown";
}

namespace {

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "host:port" or "[v6]:port" -> (host, port).
std::optional<std::pair<std::string, std::string>> split_address(const std::string& a) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= a.size()) return std::nullopt;
  std::string host = a.substr(0, colon), port = a.substr(colon + 1);
  if (host.front() == '[') {
    if (host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  }
  for (char c : port)
    if (c < '0' || c > '9') return std::nullopt;
  if (port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535) return std::nullopt;
  return std::make_pair(host, port);
}

}  // namespace

struct Connection;

// One `syncctl join`: the code, which address to try next, why earlier ones failed.
struct JoinAttempt {
  sync::InviteCode code;
  std::function<void(Result<SyncService::JoinOutcome>)> done;
  std::size_t next_address = 0;
  std::vector<std::string> errors;
  std::optional<asio::steady_timer> timer;  // only for a JOIN over an already live session
  bool finished = false;

  void finish(Result<SyncService::JoinOutcome> r) {
    if (finished) return;
    finished = true;
    if (timer) timer->cancel();
    auto cb = std::move(done);
    done = nullptr;
    if (cb) cb(std::move(r));
  }
};

struct PeerEntry {
  DeviceId device;
  std::string name;
  std::string address;
  bool configured = false;
  bool approved = false;  // trusted by the user (trust_policy = ask), remembered in the store
  std::shared_ptr<Connection> conn;     // the attached (live) connection
  std::shared_ptr<Connection> dialing;  // our outgoing attempt, until attached or failed
  std::unique_ptr<asio::steady_timer> retry;
  bool retry_pending = false;
  std::uint32_t failures = 0;
  std::int64_t next_retry_ms = 0;
  std::int64_t last_sync_ms = 0;
  std::optional<Error> last_error;
  std::optional<sync::SessionProgress> last_progress;
  std::uint64_t last_wire_sent = 0;
  std::uint64_t last_wire_received = 0;
  // What this device has shown: a common project (proven), or only projects held for
  // approval under trust_policy = ask (pending). A device that is neither, nor configured
  // nor approved, is a stranger: its entry goes when its connection does.
  bool proven = false;
  bool pending = false;
  std::int64_t seen_ms = 0;  // unix ms of its last connection (oldest pending is forgotten first)
  bool keep() const { return configured || approved || proven || pending; }
};

struct SyncService::Impl : std::enable_shared_from_this<SyncService::Impl> {
  asio::io_context& io;
  storage::Store& store;
  config::SyncOptions opt;
  std::string device_name;
  std::optional<ssl::context> tls;
  tcp::acceptor acceptor;
  std::uint16_t port = 0;
  std::map<DeviceId, PeerEntry> peers;
  std::set<std::shared_ptr<Connection>> conns;
  bool running = false;
  std::mt19937 rng{std::random_device{}()};
  // Incoming connections not yet past the sync handshake (sync.max_handshakes).
  std::size_t handshaking = 0;
  // The listener's pause after EMFILE/ENFILE (doubles up to sync.accept_backoff_max_ms).
  asio::steady_timer accept_timer;
  std::uint32_t accept_delay_ms = 0;
  // Lines any remote party can cause (sync.log_lines_per_key per sync.log_interval_ms).
  RateLimitedLog rlog;

  Impl(asio::io_context& i, storage::Store& s, config::SyncOptions o, std::string name)
      : io(i),
        store(s),
        opt(std::move(o)),
        device_name(sanitize_text(name, sync::kMaxDeviceNameBytes)),
        acceptor(i),
        accept_timer(i),
        rlog(opt.log_lines_per_key, std::chrono::milliseconds(opt.log_interval_ms)) {}

  void accept();
  void on_accept(tcp::socket sock);
  bool make_room_for_handshake();
  void admitted(Connection& c);
  void forget_if_stranger(const DeviceId& device);
  void bound_pending();
  void dial(PeerEntry& e);
  void connect(const std::shared_ptr<Connection>& c);
  void join_next(const std::shared_ptr<JoinAttempt>& j);
  void check_join(Connection& c);
  void join_closed(Connection& c);
  void remember(const PeerEntry& e);
  void established(const std::shared_ptr<Connection>& c);
  void connection_closed(Connection& c);
  void schedule_retry(PeerEntry& e, bool failed);
  PeerStatus status_of(const PeerEntry& e) const;
  // Sessions past the handshake (what sync.max_peers bounds).
  std::size_t session_count() const;
};

struct Connection : std::enable_shared_from_this<Connection> {
  std::shared_ptr<SyncService::Impl> svc;
  ssl::stream<tcp::socket> stream;
  bool outgoing;
  std::string address;
  DeviceId peer;  // from the certificate once TLS is up (or the expected one when dialing)
  std::unique_ptr<sync::Session> session;
  asio::steady_timer deadline_timer;
  asio::steady_timer keepalive;
  Clock::time_point deadline = Clock::time_point::max();
  Bytes rbuf = Bytes(64 * 1024);
  Bytes wbuf;
  bool writing = false;
  bool closed = false;
  bool attached = false;
  std::pair<std::uint64_t, std::uint64_t> wire_at_close{0, 0};
  bool replaced = false;              // closed because another connection to the same peer won
  std::optional<Error> failure;       // why the attempt failed before a session existed
  std::shared_ptr<JoinAttempt> join;  // this connection carries a JOIN (joiner side)
  bool in_budget = false;  // incoming, counted in svc->handshaking until admitted or closed
  Clock::time_point accepted_at{};

  Connection(std::shared_ptr<SyncService::Impl> s, tcp::socket sock, bool out)
      : svc(std::move(s)),
        stream(std::move(sock), *svc->tls),
        outgoing(out),
        deadline_timer(svc->io),
        keepalive(svc->io) {}

  std::string label() const {
    return (outgoing ? "to " : "from ") + (attached || outgoing ? peer.short_str() : address);
  }

  // TCP payload bytes so far (TLS records included), from the kernel.
  std::pair<std::uint64_t, std::uint64_t> wire_bytes() {
    // glibc's struct tcp_info predates these fields; the kernel's layout puts
    // tcpi_bytes_acked at offset 120 and tcpi_bytes_received at 128 (Linux >= 4.2).
    alignas(8) std::uint8_t info[256] = {};
    socklen_t len = sizeof info;
    if (!stream.lowest_layer().is_open() ||
        ::getsockopt(stream.lowest_layer().native_handle(), IPPROTO_TCP, TCP_INFO, info, &len) !=
            0 ||
        len < 136)
      return {0, 0};
    std::uint64_t acked = 0, received = 0;
    std::memcpy(&acked, info + 120, 8);
    std::memcpy(&received, info + 128, 8);
    return {acked, received};
  }

  void set_deadline(std::uint32_t ms) {
    deadline = Clock::now() + std::chrono::milliseconds(ms);
    deadline_timer.expires_at(deadline);
    deadline_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed) return;
      if (Clock::now() >= self->deadline) self->fail(make_error(Errc::unavailable, "timed out"));
    });
  }

  void fail(Error e) {
    if (closed) return;
    if (session && !session->finished()) {
      session->abort(e);
      // Try to tell the peer (bounded by a short deadline), then close.
      pump();
      set_deadline(2000);
      return;
    }
    if (!failure) failure = std::move(e);
    close();
  }

  void close() {
    if (closed) return;
    closed = true;
    if (in_budget) {
      in_budget = false;
      --svc->handshaking;
    }
    wire_at_close = wire_bytes();
    error_code ec;
    deadline_timer.cancel();
    keepalive.cancel();
    stream.lowest_layer().shutdown(tcp::socket::shutdown_both, ec);
    stream.lowest_layer().close(ec);
    svc->connection_closed(*this);
  }

  void start_session(Bytes binding) {
    sync::SessionParams p;
    p.options = svc->opt;
    p.device_name = svc->device_name;
    p.channel_binding = std::move(binding);
    p.authenticated_peer = peer;
    if (auto it = svc->peers.find(peer); it != svc->peers.end())
      p.peer_approved = it->second.approved;
    session = std::make_unique<sync::Session>(svc->store, std::move(p));
    if (join) (void)session->join(join->code);  // a fresh session: cannot fail
    session->start();
    set_deadline(svc->opt.handshake_timeout_ms);
    arm_keepalive();
    read();
    pump();
  }

  void arm_keepalive() {
    auto every = std::max<std::uint32_t>(svc->opt.idle_timeout_ms / 3, 100);
    keepalive.expires_after(std::chrono::milliseconds(every));
    keepalive.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed) return;
      if (self->session && self->session->state() == sync::SessionState::active) {
        self->session->ping();
        self->pump();
      }
      self->arm_keepalive();
    });
  }

  void read() {
    stream.async_read_some(asio::buffer(rbuf), [self = shared_from_this()](error_code ec,
                                                                           std::size_t n) {
      if (self->closed) return;
      if (ec) {
        if (self->session) self->session->transport_closed(ec.message());
        self->failure = make_error(Errc::unavailable, "connection lost: " + ec.message());
        return self->close();
      }
      self->session->receive(ByteView(self->rbuf.data(), n));
      // The session checks HELLO against the key too; the transport does not rely on it.
      if (self->session->peer_known() && self->session->peer() != self->peer) {
        self->fail(make_error(Errc::unauthenticated, "HELLO device id differs from the TLS key"));
        return;
      }
      if (self->join) self->svc->check_join(*self);
      if (self->session->state() == sync::SessionState::active) {
        if (self->in_budget) {
          self->svc->admitted(*self);
          if (self->closed || self->session->finished()) return self->pump();
        }
        self->set_deadline(self->svc->opt.idle_timeout_ms);
      }
      self->pump();
      if (!self->session->finished()) self->read();
    });
  }

  void pump() {
    if (closed || writing || !session) return;
    wbuf = session->take_output(svc->opt.write_chunk_bytes);
    if (wbuf.empty()) {
      if (session->finished()) shutdown_tls();
      return;
    }
    writing = true;
    asio::async_write(stream, asio::buffer(wbuf),
                      [self = shared_from_this()](error_code ec, std::size_t) {
                        self->writing = false;
                        if (self->closed) return;
                        if (ec) {
                          self->session->transport_closed(ec.message());
                          return self->close();
                        }
                        self->pump();
                      });
  }

  void shutdown_tls() {
    set_deadline(2000);  // a peer that does not answer close_notify is cut off
    stream.async_shutdown([self = shared_from_this()](error_code) { self->close(); });
  }
};

// --- Impl ---

void SyncService::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](error_code ec, tcp::socket sock) {
    if (!self->running || ec == asio::error::operation_aborted) return;
    if (!ec) {
      self->accept_delay_ms = 0;
      self->on_accept(std::move(sock));
      return self->accept();
    }
    bool out_of_resources = ec == asio::error::no_descriptors ||
                            ec == boost::system::errc::too_many_files_open_in_system ||
                            ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
    if (!out_of_resources) {
      // A connection that went away before accept (ECONNABORTED and the like): next one.
      self->rlog.log(LogLevel::info, "accept failed", "sync: accept failed: " + ec.message());
      return self->accept();
    }
    // Out of file descriptors: the pending connection stays in the backlog and accept would
    // fail again at once. Pause, doubling up to sync.accept_backoff_max_ms.
    self->accept_delay_ms =
        std::clamp<std::uint32_t>(self->accept_delay_ms * 2, 10, self->opt.accept_backoff_max_ms);
    self->rlog.log(LogLevel::warn, "accept out of resources",
                   "sync: cannot accept connections: " + ec.message() + "; retrying in " +
                       std::to_string(self->accept_delay_ms) + " ms");
    self->accept_timer.expires_after(std::chrono::milliseconds(self->accept_delay_ms));
    self->accept_timer.async_wait([self](error_code tec) {
      if (tec || !self->running) return;
      self->accept();
    });
  });
}

// Drops the oldest incoming connection still in its handshake; false when there is none.
bool SyncService::Impl::make_room_for_handshake() {
  std::shared_ptr<Connection> oldest;
  for (const auto& c : conns)
    if (c->in_budget && !c->closed && (!oldest || c->accepted_at < oldest->accepted_at)) oldest = c;
  if (!oldest) return false;
  rlog.log(LogLevel::info, "handshake dropped",
           "sync: sync.max_handshakes reached: dropping the oldest unfinished handshake (" +
               oldest->address + ")");
  // Out of the budget now (an ERROR to a session that got that far takes a moment).
  oldest->in_budget = false;
  --handshaking;
  oldest->fail(make_error(Errc::resource_exhausted, "sync.max_handshakes reached"));
  return true;
}

void SyncService::Impl::on_accept(tcp::socket sock) {
  error_code ignored;
  auto remote = sock.remote_endpoint(ignored);
  if (handshaking >= opt.max_handshakes && !make_room_for_handshake()) {
    rlog.log(LogLevel::warn, "refused",
             "sync: refusing connection from " + remote.address().to_string() +
                 ": sync.max_handshakes reached");
    sock.close(ignored);
    return;
  }
  auto c = std::make_shared<Connection>(shared_from_this(), std::move(sock), false);
  c->address = remote.address().to_string() + ":" + std::to_string(remote.port());
  c->in_budget = true;
  c->accepted_at = Clock::now();
  ++handshaking;
  conns.insert(c);
  c->set_deadline(opt.tls_handshake_timeout_ms);
  c->stream.async_handshake(ssl::stream_base::server, [c](error_code hec) {
    if (c->closed) return;
    if (hec) {
      c->svc->rlog.log(LogLevel::info, "tls failed",
                       "sync: TLS handshake from " + c->address + " failed: " + hec.message());
      c->failure = make_error(Errc::unauthenticated, "TLS handshake failed: " + hec.message());
      return c->close();
    }
    c->svc->established(c);
  });
}

std::size_t SyncService::Impl::session_count() const {
  std::size_t n = 0;
  for (const auto& [id, e] : peers) n += e.conn != nullptr && !e.conn->in_budget && !e.conn->closed;
  return n;
}

// An incoming connection finished the sync handshake (its session is active: it proved a
// project, or holds some for approval): it leaves the handshake budget and counts as a peer.
void SyncService::Impl::admitted(Connection& c) {
  if (!c.in_budget) return;
  c.in_budget = false;
  --handshaking;
  auto it = peers.find(c.peer);
  if (it != peers.end() && c.session) {
    it->second.proven = it->second.proven || !c.session->common_projects().empty();
    it->second.pending = it->second.pending || !c.session->pending_projects().empty();
  }
  if (session_count() > opt.max_peers) {
    rlog.log(
        LogLevel::warn, "max_peers",
        "sync: refusing " + c.peer.short_str() + " (" + c.address + "): sync.max_peers reached");
    c.fail(make_error(Errc::resource_exhausted, "sync.max_peers reached"));
  }
}

// A device that proved nothing leaves no state behind (strangers cannot grow the peer list).
void SyncService::Impl::forget_if_stranger(const DeviceId& device) {
  auto it = peers.find(device);
  if (it == peers.end()) return;
  const PeerEntry& e = it->second;
  if (e.keep() || e.conn || e.dialing || e.retry_pending) return;
  peers.erase(it);
}

// trust_policy = ask: at most sync.max_pending_devices disconnected devices wait for approval.
void SyncService::Impl::bound_pending() {
  std::vector<std::pair<std::int64_t, DeviceId>> waiting;
  for (const auto& [id, e] : peers)
    if (e.pending && !e.proven && !e.configured && !e.approved && !e.conn && !e.dialing)
      waiting.emplace_back(e.seen_ms, id);
  if (waiting.size() <= opt.max_pending_devices) return;
  std::sort(waiting.begin(), waiting.end());
  for (std::size_t i = 0; i + opt.max_pending_devices < waiting.size(); ++i) {
    spdlog::info("sync: forgetting pending device {} (sync.max_pending_devices)",
                 waiting[i].second.short_str());
    peers.erase(waiting[i].second);
  }
}

void SyncService::Impl::dial(PeerEntry& e) {
  e.retry_pending = false;
  auto hp = split_address(e.address);
  if (!hp) {
    e.last_error = make_error(Errc::invalid_argument, "bad address " + e.address);
    return;
  }
  auto c = std::make_shared<Connection>(shared_from_this(), tcp::socket(io), true);
  c->peer = e.device;
  c->address = e.address;
  e.dialing = c;
  conns.insert(c);
  crypto::tls_expect_peer(c->stream.native_handle(), e.device);
  spdlog::debug("sync: dialing {} at {}", e.device.short_str(), e.address);
  connect(c);
}

// Resolves c->address, connects and runs the TLS handshake (pinned to c->peer).
void SyncService::Impl::connect(const std::shared_ptr<Connection>& c) {
  auto hp = split_address(c->address);
  c->set_deadline(opt.connect_timeout_ms);
  auto resolver = std::make_shared<tcp::resolver>(io);
  resolver->async_resolve(
      hp->first, hp->second, [c, resolver](error_code ec, tcp::resolver::results_type r) {
        if (c->closed) return;
        if (ec) {
          c->failure =
              make_error(Errc::unavailable, "cannot resolve " + c->address + ": " + ec.message());
          return c->close();
        }
        asio::async_connect(c->stream.lowest_layer(), r, [c](error_code cec, const tcp::endpoint&) {
          if (c->closed) return;
          if (cec) {
            c->failure = make_error(Errc::unavailable,
                                    "cannot connect to " + c->address + ": " + cec.message());
            return c->close();
          }
          error_code ignored;
          c->stream.lowest_layer().set_option(tcp::no_delay(true), ignored);
          c->set_deadline(c->svc->opt.handshake_timeout_ms);
          c->stream.async_handshake(ssl::stream_base::client, [c](error_code hec) {
            if (c->closed) return;
            if (hec) {
              bool key = hec.category() == asio::error::get_ssl_category();
              c->failure =
                  make_error(key ? Errc::unauthenticated : Errc::unavailable,
                             key ? "TLS handshake failed (peer key differs from the expected "
                                   "device id?): " +
                                       hec.message()
                                 : "TLS handshake failed: " + hec.message());
              return c->close();
            }
            c->svc->established(c);
          });
        });
      });
}

void SyncService::Impl::established(const std::shared_ptr<Connection>& c) {
  void* ssl = c->stream.native_handle();
  auto device = crypto::tls_peer_device(ssl);
  auto binding = crypto::tls_channel_binding(ssl);
  if (!device || !binding.ok()) {
    c->failure = make_error(Errc::unauthenticated, "no usable peer certificate");
    return c->close();
  }
  if (*device == store.device_id()) {
    c->failure = make_error(Errc::failed_precondition, "connected to ourselves");
    return c->close();
  }
  c->peer = *device;
  if (auto it = peers.find(*device);
      it != peers.end() && it->second.conn && !it->second.conn->closed) {
    PeerEntry& e = it->second;
    // Two connections between the same pair: keep the one dialed by the lower device id
    // (both ends decide the same way); between two of the same direction, the newer.
    const DeviceId& me = store.device_id();
    const DeviceId& winner_dialer = std::min(me, *device);
    auto dialer = [&](const Connection& x) { return x.outgoing ? me : *device; };
    bool new_wins = dialer(*c) == dialer(*e.conn) || dialer(*c) == winner_dialer;
    if (c->join || e.conn->join) new_wins = c->join != nullptr;  // never cut a JOIN short
    auto loser = new_wins ? e.conn : c;
    spdlog::debug("sync: duplicate connection with {}: closing the one {}", device->short_str(),
                  loser->outgoing ? "we dialed" : "it dialed");
    loser->replaced = true;
    if (!new_wins) {
      if (e.dialing == c) e.dialing = nullptr;
      return c->close();
    }
    e.conn->attached = false;
    e.conn = nullptr;
    loser->close();
  }
  // Only now an entry (a stranger's goes again when its connection closes).
  PeerEntry& e = peers[*device];
  e.device = *device;
  e.seen_ms = unix_ms();
  if (e.dialing == c) e.dialing = nullptr;
  if (e.retry) e.retry->cancel();
  e.retry_pending = false;
  e.conn = c;
  c->attached = true;
  if (c->outgoing || e.keep())
    spdlog::info("sync: connected {} {} ({})", c->outgoing ? "to" : "from", device->short_str(),
                 c->address);
  else
    rlog.log(LogLevel::info, "connected from",
             "sync: connected from " + device->short_str() + " (" + c->address + ")");
  c->start_session(std::move(*binding));
}

void SyncService::Impl::connection_closed(Connection& c) {
  auto self = c.shared_from_this();
  conns.erase(self);
  if (c.join) join_closed(c);
  auto it = peers.find(c.peer);
  if (it == peers.end()) return;
  PeerEntry& e = it->second;
  bool was_dialing = e.dialing == self;
  bool was_attached = e.conn == self;
  if (!was_dialing && !was_attached) return;  // a replaced duplicate or a stray incoming
  if (was_dialing) e.dialing = nullptr;
  if (was_attached) e.conn = nullptr;
  bool synced = false;  // this connection reached "in sync" at least once: not a failure
  if (c.session) {
    auto p = c.session->progress();
    for (const auto& pp : p.projects) {
      e.last_sync_ms = std::max(e.last_sync_ms, pp.last_sync_ms);
      synced = synced || pp.last_sync_ms > 0;
    }
    if (!p.peer_name.empty()) e.name = p.peer_name;
    e.last_progress = std::move(p);
    if (c.session->error()) e.last_error = c.session->error();
  }
  e.last_wire_sent = c.wire_at_close.first;
  e.last_wire_received = c.wire_at_close.second;
  if (c.failure && !c.replaced) e.last_error = c.failure;
  if (c.session) {
    e.proven = e.proven || !c.session->common_projects().empty();
    e.pending = e.pending || !c.session->pending_projects().empty();
  }
  if (!c.replaced && e.last_error) {
    std::string line = "sync: connection " + c.label() + " closed: " + e.last_error->message;
    if (e.keep())
      spdlog::info("{}", line);
    else
      rlog.log(LogLevel::info, "stranger closed", line);
  }
  if (running) schedule_retry(e, !synced);
  if (!e.keep()) return forget_if_stranger(c.peer);
  if (e.pending) bound_pending();
}

void SyncService::Impl::schedule_retry(PeerEntry& e, bool failed) {
  if (!running || !e.configured || e.conn || e.dialing || e.retry_pending) return;
  e.failures = failed ? e.failures + 1 : 0;
  double base = opt.retry_min_ms;
  for (std::uint32_t i = 1; i < e.failures && base < opt.retry_max_ms; ++i) base *= 2;
  base = std::min<double>(base, opt.retry_max_ms);
  // +-20% jitter so peers that failed together do not retry together.
  double ms = base * std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  ms = std::clamp<double>(ms, opt.retry_min_ms, opt.retry_max_ms);
  if (!e.retry) e.retry = std::make_unique<asio::steady_timer>(io);
  e.retry->expires_after(std::chrono::milliseconds(static_cast<std::int64_t>(ms)));
  e.retry_pending = true;
  e.next_retry_ms = unix_ms() + static_cast<std::int64_t>(ms);
  DeviceId id = e.device;
  e.retry->async_wait([self = shared_from_this(), id](error_code ec) {
    if (ec || !self->running) return;
    auto it = self->peers.find(id);
    if (it == self->peers.end() || !it->second.retry_pending) return;
    it->second.retry_pending = false;
    if (!it->second.conn && !it->second.dialing) self->dial(it->second);
  });
}

PeerStatus SyncService::Impl::status_of(const PeerEntry& e) const {
  PeerStatus s;
  s.device = e.device;
  s.name = e.name;
  s.address = e.address;
  s.configured = e.configured;
  s.failures = e.failures;
  s.last_error = e.last_error;
  s.last_sync_ms = e.last_sync_ms;
  s.session = e.last_progress;
  s.wire_bytes_sent = e.last_wire_sent;
  s.wire_bytes_received = e.last_wire_received;
  s.approved = e.approved;
  s.verification_code = sync::verification_code(store.device_id(), e.device);
  if (e.conn && e.conn->session) {
    s.pending_projects = e.conn->session->pending_projects();
    std::tie(s.wire_bytes_sent, s.wire_bytes_received) = e.conn->wire_bytes();
    s.connected = true;
    s.outgoing = e.conn->outgoing;
    auto p = e.conn->session->progress();
    for (const auto& pp : p.projects) s.last_sync_ms = std::max(s.last_sync_ms, pp.last_sync_ms);
    if (!p.peer_name.empty()) s.name = p.peer_name;
    switch (p.state) {
      case sync::SessionState::hello:
      case sync::SessionState::proving: s.state = PeerState::handshake; break;
      case sync::SessionState::active:
        s.state = e.conn->session->in_sync() ? PeerState::in_sync : PeerState::syncing;
        if (!s.pending_projects.empty() && e.conn->session->common_projects().empty())
          s.state = PeerState::pending;
        break;
      default: s.state = PeerState::handshake; break;  // closing
    }
    s.session = std::move(p);
  } else if (e.dialing) {
    s.state = PeerState::connecting;
  } else if (e.retry_pending) {
    s.state = PeerState::backoff;
    s.next_retry_ms = e.next_retry_ms;
  }
  return s;
}

// --- joining ---

void SyncService::Impl::remember(const PeerEntry& e) {
  boost::json::object o;
  o["address"] = e.address;
  o["name"] = e.name;
  if (e.approved) o["approved"] = true;
  if (auto st = store.save_peer(storage::PeerRecord{e.device, boost::json::serialize(o)}); !st)
    spdlog::warn("sync: cannot remember peer {}: {}", e.device.short_str(), st.error().message);
}

// Tries the live session with the inviter, else the next address of the code.
void SyncService::Impl::join_next(const std::shared_ptr<JoinAttempt>& j) {
  if (j->finished) return;
  if (!running) return j->finish(make_error(Errc::unavailable, "sync is not running"));
  const DeviceId& inviter = j->code.inviter;
  auto it = peers.find(inviter);
  if (it != peers.end() && it->second.conn && !it->second.conn->join && it->second.conn->session &&
      it->second.conn->session->state() == sync::SessionState::active) {
    auto c = it->second.conn;
    if (c->session->join(j->code)) {
      spdlog::info("sync: joining project {} over the live session with {}", j->code.project.str(),
                   inviter.short_str());
      c->join = j;
      // A live session's deadline is the idle timeout; the answer must come sooner.
      j->timer.emplace(io);
      j->timer->expires_after(std::chrono::milliseconds(opt.handshake_timeout_ms));
      std::weak_ptr<Connection> weak = c;
      j->timer->async_wait([j, weak](error_code ec) {
        if (ec || j->finished) return;
        if (auto conn = weak.lock(); conn && conn->join == j) conn->join = nullptr;
        j->finish(make_error(Errc::unavailable, "the inviter did not answer the invite in time"));
      });
      c->pump();
      return;
    }
  }
  while (j->next_address < j->code.addresses.size()) {
    std::string address = j->code.addresses[j->next_address++];
    if (!split_address(address)) {
      j->errors.push_back(address + ": not host:port");
      continue;
    }
    auto c = std::make_shared<Connection>(shared_from_this(), tcp::socket(io), true);
    c->peer = inviter;
    c->address = address;
    c->join = j;
    conns.insert(c);
    crypto::tls_expect_peer(c->stream.native_handle(), inviter);
    spdlog::info("sync: joining project {}: dialing the inviter {} at {}", j->code.project.str(),
                 inviter.short_str(), address);
    connect(c);
    return;
  }
  std::string why = "cannot reach the inviter " + inviter.short_str();
  if (j->code.addresses.empty()) why += ": the invite code lists no address";
  for (std::size_t i = 0; i < j->errors.size(); ++i) why += (i ? "; " : ": ") + j->errors[i];
  j->finish(make_error(Errc::unavailable, why));
}

// After input on a connection carrying a JOIN: done once the session has the outcome.
void SyncService::Impl::check_join(Connection& c) {
  auto j = c.join;
  if (!j || !c.session || !c.session->join_result()) return;
  c.join = nullptr;
  if (j->finished) return;
  const auto& r = *c.session->join_result();
  if (!r.ok()) return j->finish(r.error());
  // The inviter is a peer we keep syncing with: remembered at the address that worked (for
  // a live incoming session, the code's address on the same host, else its first one).
  std::string address = c.address;
  if (!c.outgoing) {
    auto host = c.address.substr(0, c.address.rfind(':'));
    address = j->code.addresses.empty() ? std::string() : j->code.addresses.front();
    for (const auto& a : j->code.addresses)
      if (auto hp = split_address(a); hp && hp->first == host) address = a;
  }
  PeerEntry& e = peers[c.peer];
  e.device = c.peer;
  if (e.name.empty()) e.name = c.session->peer_name();
  e.approved = true;  // the code pinned its key and the user chose to join through it
  if (!e.configured && split_address(address)) {
    e.address = address;
    e.configured = true;
  }
  remember(e);
  // Other live sessions may share the new project too.
  for (auto& [id, other] : peers) {
    if (!other.conn || other.conn.get() == &c || !other.conn->session) continue;
    auto oc = other.conn;
    oc->session->projects_changed();
    oc->pump();
  }
  j->finish(SyncService::JoinOutcome{*r, e.configured ? e.address : address, e.name});
}

// A connection that carried a JOIN closed before check_join saw the outcome.
void SyncService::Impl::join_closed(Connection& c) {
  check_join(c);
  auto j = c.join;
  if (!j) return;
  c.join = nullptr;
  if (j->finished) return;
  if (c.session && c.session->peer_known()) {
    // We reached the inviter: its answer (or the session's end) is final.
    auto e = c.session->error() ? *c.session->error()
             : c.failure        ? *c.failure
                         : make_error(Errc::unavailable, "the inviter closed the connection");
    return j->finish(std::move(e));
  }
  j->errors.push_back(c.address + ": " +
                      (c.failure ? c.failure->message : std::string("connection closed")));
  // Not from inside close(): the next attempt starts on a fresh stack.
  asio::post(io, [self = shared_from_this(), j] { self->join_next(j); });
}

// --- SyncService ---

SyncService::SyncService(asio::io_context& io, storage::Store& store, config::SyncOptions options,
                         std::string device_name)
    : impl_(std::make_shared<Impl>(io, store, std::move(options), std::move(device_name))) {}

SyncService::~SyncService() { stop(); }

Status SyncService::start() {
  Impl& im = *impl_;
  auto tls = crypto::TlsContext::create(im.store.signing_key(), im.store.device_id().short_str());
  if (!tls.ok()) return tls.error();
  im.tls.emplace(static_cast<SSL_CTX*>(tls->new_reference()));
  error_code ec;
  auto addr = asio::ip::make_address(im.opt.listen_address, ec);
  if (ec)
    return make_error(Errc::invalid_argument,
                      "sync.listen_address: bad address " + im.opt.listen_address);
  tcp::endpoint ep(addr, im.opt.listen_port);
  im.acceptor.open(ep.protocol(), ec);
  if (!ec) im.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) im.acceptor.bind(ep, ec);
  if (!ec) im.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(Errc::unavailable, "cannot listen on " + im.opt.listen_address + ":" +
                                             std::to_string(im.opt.listen_port) + ": " +
                                             ec.message());
  im.port = im.acceptor.local_endpoint().port();
  // Peers added through the API before a restart.
  if (auto saved = im.store.load_peers(); saved.ok()) {
    for (const auto& rec : *saved) {
      boost::system::error_code jec;
      auto v = boost::json::parse(rec.json, jec);
      if (jec || !v.is_object()) continue;
      const auto& o = v.as_object();
      auto* address = o.if_contains("address");
      auto* name = o.if_contains("name");
      auto* approved = o.if_contains("approved");
      if (approved && approved->is_bool() && approved->as_bool()) {
        PeerEntry& e = im.peers[rec.device];
        e.device = rec.device;
        e.approved = true;
        if (name && name->is_string() && e.name.empty())
          e.name = sanitize_text(name->as_string(), sync::kMaxDeviceNameBytes);
      }
      if (!address || !address->is_string() || !split_address(std::string(address->as_string())))
        continue;
      PeerEntry& e = im.peers[rec.device];
      if (e.configured) continue;  // the config file names it too
      e.device = rec.device;
      e.address = std::string(address->as_string());
      e.configured = true;
      if (name && name->is_string())
        e.name = sanitize_text(name->as_string(), sync::kMaxDeviceNameBytes);
    }
  } else {
    spdlog::warn("sync: cannot load remembered peers: {}", saved.error().message);
  }
  im.running = true;
  spdlog::info("sync: listening on {}:{}", im.opt.listen_address, im.port);
  im.accept();
  for (auto& [id, e] : im.peers)
    if (e.configured && !e.conn && !e.dialing) im.dial(e);
  return {};
}

void SyncService::stop() {
  Impl& im = *impl_;
  if (!im.running) return;
  im.running = false;
  error_code ec;
  im.acceptor.close(ec);
  im.accept_timer.cancel();
  for (auto& [id, e] : im.peers)
    if (e.retry) e.retry->cancel();
  auto conns = im.conns;
  for (const auto& c : conns) c->close();
  im.conns.clear();
}

std::uint16_t SyncService::listen_port() const { return impl_->port; }

Status SyncService::add_peer(const std::string& address, const DeviceId& device, std::string name,
                             bool persist) {
  Impl& im = *impl_;
  if (!split_address(address))
    return make_error(Errc::invalid_argument, "address must be host:port, got '" + address + "'");
  if (device == im.store.device_id())
    return make_error(Errc::failed_precondition, "that is this device");
  auto [it, fresh] = im.peers.try_emplace(device);
  PeerEntry& e = it->second;
  if (!fresh && e.configured) return make_error(Errc::already_exists, "peer already added");
  e.device = device;
  e.address = address;
  e.configured = true;
  if (!name.empty() && e.name.empty()) e.name = sanitize_text(name, sync::kMaxDeviceNameBytes);
  e.failures = 0;
  if (persist) im.remember(e);
  if (im.running && !e.conn && !e.dialing) im.dial(e);
  return {};
}

Status SyncService::set_peer_address(const DeviceId& device, const std::string& address) {
  if (!split_address(address))
    return make_error(Errc::invalid_argument, "address must be host:port, got '" + address + "'");
  auto it = impl_->peers.find(device);
  if (it == impl_->peers.end() || !it->second.configured)
    return make_error(Errc::not_found, "no such peer");
  it->second.address = address;
  return {};
}

Status SyncService::remove_peer(const DeviceId& device) {
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end()) return make_error(Errc::not_found, "no such peer");
  PeerEntry& e = it->second;
  e.configured = false;
  e.retry_pending = false;
  if (e.retry) e.retry->cancel();
  auto conn = e.conn, dialing = e.dialing;
  if (conn) conn->close();
  if (dialing) dialing->close();
  im.peers.erase(device);
  if (auto st = im.store.forget_peer(device); !st && st.error().code != Errc::not_found)
    spdlog::warn("sync: cannot forget peer {}: {}", device.short_str(), st.error().message);
  return {};
}

std::vector<PeerStatus> SyncService::peers() const {
  std::vector<PeerStatus> out;
  for (const auto& [id, e] : impl_->peers) out.push_back(impl_->status_of(e));
  return out;
}

Result<PeerStatus> SyncService::peer(const DeviceId& device) const {
  auto it = impl_->peers.find(device);
  if (it == impl_->peers.end()) return make_error(Errc::not_found, "no such peer");
  return impl_->status_of(it->second);
}

Status SyncService::approve_peer(const DeviceId& device) {
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end())
    return make_error(Errc::not_found, "no such peer: it must have connected first");
  PeerEntry& e = it->second;
  e.approved = true;
  im.remember(e);
  spdlog::info("sync: {} approved by the user", device.short_str());
  if (e.conn && e.conn->session) {
    auto c = e.conn;
    c->session->approve();
    c->pump();
  }
  return {};
}

Status SyncService::sync_now(const DeviceId& device) {
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end()) return make_error(Errc::not_found, "no such peer");
  PeerEntry& e = it->second;
  if (e.conn || e.dialing) return {};
  if (!e.configured) return make_error(Errc::failed_precondition, "peer has no address to dial");
  if (!im.running) return make_error(Errc::unavailable, "sync is not running");
  if (e.retry) e.retry->cancel();
  e.failures = 0;
  im.dial(e);
  return {};
}

void SyncService::join(const sync::InviteCode& code,
                       std::function<void(Result<JoinOutcome>)> done) {
  auto j = std::make_shared<JoinAttempt>();
  j->code = code;
  j->done = std::move(done);
  if (code.inviter == impl_->store.device_id())
    return j->finish(make_error(Errc::invalid_argument, "this invite was made on this device"));
  impl_->join_next(j);
}

std::uint32_t SyncService::join_timeout_ms(const sync::InviteCode& code) const {
  const auto& o = impl_->opt;
  // Per address: connect, then the TLS handshake and the session's handshake deadline.
  std::uint64_t per = std::uint64_t{o.connect_timeout_ms} + 2ull * o.handshake_timeout_ms;
  std::uint64_t total =
      per * std::max<std::size_t>(code.addresses.size(), 1) + o.handshake_timeout_ms;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(total, 24ull * 3600 * 1000));
}

void SyncService::projects_changed() {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->io, [weak] {
    auto im = weak.lock();
    if (!im || !im->running) return;
    for (auto& [id, e] : im->peers) {
      if (!e.conn || !e.conn->session) continue;
      auto c = e.conn;
      c->session->projects_changed();
      c->pump();
    }
  });
}

void SyncService::notify_change(const ProjectId& project) {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->io, [weak, project] {
    auto im = weak.lock();
    if (!im || !im->running) return;
    for (auto& [id, e] : im->peers) {
      if (!e.conn || !e.conn->session) continue;
      auto c = e.conn;
      c->session->notify_local_change(project);
      c->pump();
    }
  });
}

}  // namespace fieldsync::transports
