// PeerManager: registry, dial policy, backoff, duplicates, approval, joins and status, over
// any transport. Streams come from transports/; sessions run in SessionDriver.
#include "peers/peer_manager.hpp"

#include "common/thread_check.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <random>
#include <set>

#include "common/clock.hpp"
#include "common/rate_limited_log.hpp"
#include "common/text.hpp"
#include "peers/session_driver.hpp"
#include "sync/messages.hpp"
#include "sync/session.hpp"

namespace fieldsync::peers {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
using transports::Address;
using transports::HandshakeBudget;
using transports::Stream;

std::string_view peer_state_name(PeerState s) {
  switch (s) {
    case PeerState::idle: return "idle";
    case PeerState::connecting: return "connecting";
    case PeerState::handshake: return "handshake";
    case PeerState::syncing: return "syncing";
    case PeerState::in_sync: return "in_sync";
    case PeerState::backoff: return "backoff";
    case PeerState::pending: return "pending";
    case PeerState::waiting: return "waiting";
  }
  return "unknown";
}

std::string_view peer_reason_name(PeerReasonCode c) {
  switch (c) {
    case PeerReasonCode::peer_shut_down: return "peer_shut_down";
    case PeerReasonCode::removed: return "removed";
    case PeerReasonCode::awaiting_approval: return "awaiting_approval";
    case PeerReasonCode::approval_needed: return "approval_needed";
    case PeerReasonCode::wrong_device: return "wrong_device";
    case PeerReasonCode::failed: return "failed";
  }
  return "unknown";
}

namespace {

// The host part of an address (for matching an incoming connection to an invite's address).
std::string host_of(const std::string& uri) {
  auto a = transports::parse_address(uri);
  if (!a.ok()) return {};
  auto hp = transports::split_host_port(a->rest);
  return hp ? a->scheme + "://" + hp->first : a->str();
}

}  // namespace

struct Conn;

// One `syncctl join`: the code, which address to try next, why earlier ones failed.
struct JoinAttempt {
  sync::InviteCode code;
  std::function<void(Result<PeerManager::JoinOutcome>)> done;
  std::size_t next_address = 0;
  std::vector<std::string> errors;
  std::optional<asio::steady_timer> timer;  // only for a JOIN over an already live session
  bool finished = false;

  void finish(Result<PeerManager::JoinOutcome> r) {
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
  std::string address;  // URI we dial (configured peers)
  bool configured = false;
  bool approved = false;       // trusted by the user (trust_policy = ask), remembered in the store
  std::shared_ptr<Conn> conn;  // the attached (live) connection
  std::shared_ptr<Conn> dialing;  // our outgoing attempt, until attached or failed
  std::unique_ptr<asio::steady_timer> retry;
  bool retry_pending = false;
  std::uint32_t failures = 0;
  std::int64_t next_retry_ms = 0;
  std::int64_t last_sync_ms = 0;
  std::optional<Error> last_error;
  // Why its last connection ended, when that explains its state (PeerStatus::reason).
  std::optional<PeerReason> reason;
  std::optional<sync::SessionProgress> last_progress;
  std::uint64_t last_wire_sent = 0;
  std::uint64_t last_wire_received = 0;
  std::string last_transport;
  std::string last_remote;
  std::optional<transports::LinkClass> last_link;
  // What this device has shown: a common project (proven), or only projects held for
  // approval under trust_policy = ask (pending). A device that is neither, nor configured
  // nor approved, is a stranger: its entry goes when its connection does.
  bool proven = false;
  bool pending = false;
  std::int64_t seen_ms = 0;  // unix ms of its last connection (oldest pending is forgotten first)
  // A connection that was lost after the transport authenticated the peer but before the
  // peer's HELLO: what its failure overwrote. When both devices dial each other at once, the
  // side that sees both connections first closes the one the tie-break drops, and the other
  // side may only see that link reset before the winner reaches it. Once the winner (dialed
  // by the lower device id, from the other side) arrives soon after, the loss was that
  // duplicate: it is undone (replaced, not a failure).
  struct EarlyLoss {
    std::uint64_t conn = 0;
    bool outgoing = false;
    std::int64_t at_ms = 0;
    std::uint32_t failures = 0;
    std::optional<Error> last_error;
    std::optional<PeerReason> reason;
    bool slow = false;  // a slow link (Bluetooth LE): a faster connection may have replaced it
  };
  std::optional<EarlyLoss> early_loss;
  std::shared_ptr<Conn> handing_over;  // PeerManager::handover's attempt, until it ends
  bool keep() const { return configured || approved || proven || pending; }
};

// One connection: a dial under way, or a stream (incoming or dialed) and, once the session
// runs, its driver.
struct Conn : std::enable_shared_from_this<Conn> {
  std::uint64_t id = 0;  // this manager's connection number, for logs
  bool outgoing = false;
  std::string address;  // URI: what we dialed, or where an incoming one came from
  std::string scheme;
  DeviceId peer;  // the authenticated key once connected (or the expected one when dialing)
  std::shared_ptr<Stream> stream;
  std::shared_ptr<SessionDriver> driver;
  std::shared_ptr<HandshakeBudget::Slot> slot;  // incoming, until admitted
  std::shared_ptr<JoinAttempt> join;            // this connection carries a JOIN (joiner side)
  bool closed = false;
  bool attached = false;
  bool replaced = false;                 // closed because another connection to the same peer won
  bool counted = false;                  // its transfer is in PeerManager::Impl::closed_totals
  std::optional<Error> failure;          // why the attempt failed before a session existed
  std::function<void(Status)> handover;  // PeerManager::handover's callback, until it ends

  sync::Session* session() { return driver ? &driver->session() : nullptr; }
  // A stream of link class fast (TCP), not slow (Bluetooth LE); false before a stream.
  bool fast() const { return stream && stream->link_class() == transports::LinkClass::fast; }
  bool in_budget() const { return slot && slot->held(); }
  std::string label() const {
    return "#" + std::to_string(id) + (outgoing ? " to " : " from ") +
           (attached || outgoing ? peer.short_str() : address);
  }
  void pump() {
    if (driver) driver->pump();
  }
};

struct PeerManager::Impl : std::enable_shared_from_this<PeerManager::Impl> {
  asio::io_context& io;
  storage::Store& store;
  config::SyncOptions opt;
  sync::SessionOptions session_opt;  // what each session runs with (from opt)
  std::string device_name;
  PeerManager::PostWrite post_write;      // set before start(); empty: batches applied inline
  PeerManager::PostPrepare post_prepare;  // set before start(); empty: prepared in the apply
  ThreadCheck thread;                     // the io_context's thread (peer_manager.hpp)
  std::map<std::string, std::unique_ptr<transports::Transport>, std::less<>> transports;
  std::set<std::string> listening;  // schemes that accept connections
  HandshakeBudget budget;
  std::map<DeviceId, PeerEntry> peers;
  std::set<std::shared_ptr<Conn>> conns;
  std::uint64_t next_conn_id = 1;
  // What closed connections moved, per transport scheme (PeerManager::transfer_totals).
  std::map<std::string, TransferTotals> closed_totals;
  bool running = false;
  std::function<void()> stopped;  // PeerManager::stop(done): runs once no connection is left
  std::mt19937 rng{std::random_device{}()};
  // Lines any remote party can cause (sync.log_lines_per_key per sync.log_interval_ms).
  RateLimitedLog rlog;

  Impl(asio::io_context& i, storage::Store& s, config::SyncOptions o, std::string name)
      : io(i),
        store(s),
        opt(std::move(o)),
        session_opt(sync::session_options(opt)),
        device_name(sanitize_text(name, sync::kMaxDeviceNameBytes)),
        budget(opt.max_handshakes),
        rlog(opt.log_lines_per_key, std::chrono::milliseconds(opt.log_interval_ms)) {}

  transports::Transport* transport_for(const std::string& uri, Address* parsed = nullptr);
  Status check_address(const std::string& uri, std::string* normalized);
  void on_incoming(const std::string& scheme, std::shared_ptr<Stream> s,
                   std::shared_ptr<HandshakeBudget::Slot> slot);
  void admitted(Conn& c);
  void forget_if_stranger(const DeviceId& device);
  void bound_pending();
  void dial(PeerEntry& e);
  void connect(const std::shared_ptr<Conn>& c);
  void join_next(const std::shared_ptr<JoinAttempt>& j);
  void check_join(Conn& c);
  void join_closed(Conn& c);
  void remember(const PeerEntry& e);
  void established(const std::shared_ptr<Conn>& c);
  void start_session(const std::shared_ptr<Conn>& c);
  void close(Conn& c);
  void fail(Conn& c, Error e);
  void connection_closed(Conn& c);
  // Why connection c ended, as the peer's reason (nullopt: a clean close with nothing to say).
  std::optional<PeerReason> closing_reason(Conn& c, const std::optional<Error>& ended_by) const;
  void stop_all(std::function<void()> done, bool graceful);
  void check_stopped();
  void schedule_retry(PeerEntry& e, bool failed);
  std::optional<DeviceId> successor_of(const DeviceId& device) const;
  bool follow_successor(const DeviceId& device);
  PeerEntry& move_to_successor(PeerEntry& old, const DeviceId& next);
  PeerStatus status_of(const PeerEntry& e) const;
  // Sessions past the handshake (what sync.max_peers bounds).
  std::size_t session_count() const;
};

// --- addresses ---

transports::Transport* PeerManager::Impl::transport_for(const std::string& uri, Address* parsed) {
  auto a = transports::parse_address(uri);
  if (!a.ok()) return nullptr;
  auto it = transports.find(a->scheme);
  if (it == transports.end()) return nullptr;
  if (parsed) *parsed = *a;
  return it->second.get();
}

Status PeerManager::Impl::check_address(const std::string& uri, std::string* normalized) {
  auto a = transports::parse_address(uri);
  if (!a.ok()) return a.error();
  if (!transports.count(a->scheme))
    return make_error(Errc::invalid_argument,
                      "no transport for " + quote_input(a->scheme + "://") + " addresses");
  if (normalized) *normalized = a->str();
  return {};
}

// --- connections ---

void PeerManager::Impl::on_incoming(const std::string& scheme, std::shared_ptr<Stream> s,
                                    std::shared_ptr<HandshakeBudget::Slot> slot) {
  if (!running) return s->close();
  auto c = std::make_shared<Conn>();
  c->id = next_conn_id++;
  c->outgoing = false;
  c->address = s->remote();
  c->scheme = scheme;
  c->stream = std::move(s);
  c->slot = std::move(slot);
  conns.insert(c);
  std::weak_ptr<Conn> weak = c;
  if (c->slot)
    c->slot->on_evict([weak, self = shared_from_this()] {
      if (auto conn = weak.lock())
        self->fail(*conn, make_error(Errc::resource_exhausted, "sync.max_handshakes reached"));
    });
  established(c);
}

std::size_t PeerManager::Impl::session_count() const {
  std::size_t n = 0;
  for (const auto& [id, e] : peers)
    n += e.conn != nullptr && !e.conn->in_budget() && !e.conn->closed;
  return n;
}

// An incoming connection finished the sync handshake (its session is active: it proved a
// project, or holds some for approval): it leaves the handshake budget and counts as a peer.
void PeerManager::Impl::admitted(Conn& c) {
  if (!c.in_budget()) return;
  c.slot->release();
  auto it = peers.find(c.peer);
  if (it != peers.end() && c.session()) {
    it->second.proven = it->second.proven || !c.session()->common_projects().empty();
    it->second.pending = it->second.pending || !c.session()->pending_projects().empty();
  }
  if (session_count() > opt.max_peers) {
    rlog.log(
        LogLevel::warn, "max_peers",
        "sync: refusing " + c.peer.short_str() + " (" + c.address + "): sync.max_peers reached");
    fail(c, make_error(Errc::resource_exhausted, "sync.max_peers reached"));
  }
}

// A device that proved nothing leaves no state behind (strangers cannot grow the peer list).
void PeerManager::Impl::forget_if_stranger(const DeviceId& device) {
  auto it = peers.find(device);
  if (it == peers.end()) return;
  const PeerEntry& e = it->second;
  if (e.keep() || e.conn || e.dialing || e.retry_pending) return;
  peers.erase(it);
}

// trust_policy = ask: at most sync.max_pending_devices disconnected devices wait for approval.
void PeerManager::Impl::bound_pending() {
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

void PeerManager::Impl::dial(PeerEntry& e) {
  e.retry_pending = false;
  if (!transport_for(e.address)) {
    e.last_error = make_error(Errc::invalid_argument, "no transport for address " + e.address);
    return;
  }
  auto c = std::make_shared<Conn>();
  c->id = next_conn_id++;
  c->outgoing = true;
  c->peer = e.device;
  c->address = e.address;
  e.dialing = c;
  conns.insert(c);
  spdlog::debug("sync: dialing {} at {}", e.device.short_str(), e.address);
  connect(c);
}

// Dials c->address through its transport (authenticating c->peer).
void PeerManager::Impl::connect(const std::shared_ptr<Conn>& c) {
  Address a;
  auto* t = transport_for(c->address, &a);
  if (!t) {
    c->failure = make_error(Errc::invalid_argument, "no transport for address " + c->address);
    asio::post(io, [c, self = shared_from_this()] { self->close(*c); });
    return;
  }
  c->scheme = a.scheme;
  t->dial(a, c->peer, [c, self = shared_from_this()](Result<std::shared_ptr<Stream>> r) {
    if (c->closed) {
      if (r.ok()) (*r)->close();
      return;
    }
    if (!r.ok()) {
      c->failure = r.error();
      return self->close(*c);
    }
    c->stream = std::move(*r);
    self->established(c);
  });
}

void PeerManager::Impl::established(const std::shared_ptr<Conn>& c) {
  const DeviceId device = c->stream->peer();
  if (device == store.device_id()) {
    c->failure = make_error(Errc::failed_precondition, "connected to ourselves");
    return close(*c);
  }
  if (c->outgoing && device != c->peer) {
    // The transport accepts another key than the one dialed only when its certificate proves
    // that it continues the dialed device (crypto/renewal.hpp): the peer renewed its identity
    // (restored from a backup) and we follow it now, before any member record says so.
    spdlog::info("sync: peer {} renewed its identity (its old key vouches for {} at {})",
                 c->peer.short_str(), device.short_str(), c->address);
    if (auto old = peers.find(c->peer); old != peers.end() && old->second.dialing == c) {
      old->second.dialing = nullptr;
      move_to_successor(old->second, device);
    }
  }
  c->peer = device;
  if (auto it = peers.find(device);
      it != peers.end() && it->second.conn && !it->second.conn->closed) {
    PeerEntry& e = it->second;
    // Two connections between the same pair: keep the one dialed by the lower device id
    // (both ends decide the same way); between two of the same direction, the newer.
    const DeviceId& me = store.device_id();
    const DeviceId& winner_dialer = std::min(me, device);
    auto dialer = [&](const Conn& x) { return x.outgoing ? me : device; };
    bool new_wins = dialer(*c) == dialer(*e.conn) || dialer(*c) == winner_dialer;
    // A faster link first (TCP over Bluetooth LE: both ends see the same two classes).
    if (c->fast() != e.conn->fast()) new_wins = c->fast();
    if (c->join || e.conn->join) new_wins = c->join != nullptr;  // never cut a JOIN short
    auto loser = new_wins ? e.conn : c;
    spdlog::debug("sync: duplicate connection with {}: closing the one {} (#{}, keeping #{})",
                  device.short_str(), loser->outgoing ? "we dialed" : "it dialed", loser->id,
                  (new_wins ? c : e.conn)->id);
    loser->replaced = true;
    if (!new_wins) {
      if (e.dialing == c) e.dialing = nullptr;
      if (c->handover && !c->failure)
        c->failure = make_error(Errc::already_exists, "the other connection won");
      return close(*c);
    }
    if (loser->stream && !loser->fast() && c->fast())
      spdlog::info("sync: {} is reachable over {} now: moving its session there from {} (#{})",
                   device.short_str(), c->scheme, loser->scheme, loser->id);
    // A live session replaced by a faster link: what went wrong before it is history.
    if (e.conn->session() && e.conn->session()->state() == sync::SessionState::active) {
      e.reason.reset();
      e.last_error.reset();
    }
    e.conn->attached = false;
    e.conn = nullptr;
    close(*loser);
  }
  // Only now an entry (a stranger's goes again when its connection closes).
  PeerEntry& e = peers[device];
  e.device = device;
  e.seen_ms = unix_ms();
  if (e.dialing == c) e.dialing = nullptr;
  if (e.retry) e.retry->cancel();
  e.retry_pending = false;
  e.conn = c;
  c->attached = true;
  const bool fast_now = c->fast();
  if (auto loss = std::exchange(e.early_loss, std::nullopt);
      loss && unix_ms() - loss->at_ms <= std::int64_t{opt.handshake_timeout_ms} &&
      ((loss->slow && fast_now) ||
       (loss->outgoing != c->outgoing &&
        (c->outgoing ? store.device_id() : device) == std::min(store.device_id(), device)))) {
    if (loss->slow && fast_now)
      spdlog::info(
          "sync: connection #{} with {} was the slow link it replaced with #{}: not a failure",
          loss->conn, device.short_str(), c->id);
    else
      spdlog::info(
          "sync: connection #{} with {} was the duplicate it closed (both dialed at once; it "
          "kept #{}): not a failure",
          loss->conn, device.short_str(), c->id);
    e.failures = loss->failures;
    e.last_error = std::move(loss->last_error);
    e.reason = std::move(loss->reason);
  }
  if (c->handover) {
    e.address = c->address;  // the faster way is the one to dial from now on
    if (e.handing_over == c) e.handing_over = nullptr;
    std::exchange(c->handover, nullptr)(Status{});
  }
  if (c->outgoing || e.keep())
    spdlog::info("sync: connected {} {} ({})", c->outgoing ? "to" : "from", device.short_str(),
                 c->address);
  else
    rlog.log(LogLevel::info, "connected from",
             "sync: connected from " + device.short_str() + " (" + c->address + ")");
  start_session(c);
}

void PeerManager::Impl::start_session(const std::shared_ptr<Conn>& c) {
  sync::SessionParams p;
  p.options = session_opt;
  p.options.blob_link_policy = c->stream->link_class() == transports::LinkClass::fast
                                   ? storage::BlobPolicy::archive
                                   : p.options.slow_link_blobs;
  p.options.exchange_blobs = p.options.blob_link_policy != storage::BlobPolicy::none;
  if (c->stream->link_class() != transports::LinkClass::fast) {
    // Small batches, new writes first (sync/session_options.hpp).
    p.options.batch_entries = p.options.slow_batch_entries;
    p.options.batch_bytes = p.options.slow_batch_bytes;
    p.options.window_batches = p.options.slow_window_batches;
    p.options.live_first = true;
  }
  p.device_name = device_name;
  p.channel_binding = c->stream->channel_binding();
  p.authenticated_peer = c->peer;
  if (auto it = peers.find(c->peer); it != peers.end()) p.peer_approved = it->second.approved;
  if (post_write) {
    p.offload = [post = post_write, &io = io](std::function<void()> work,
                                              std::function<void(Status)> done) {
      post(std::move(work), [&io, done = std::move(done)](const Status& committed) {
        asio::post(io, [done, committed] { done(committed); });
      });
    };
    if (post_prepare)
      p.prepare = [post = post_prepare, &io = io](std::function<void()> work,
                                                  std::function<void()> done) {
        post(std::move(work), [&io, done = std::move(done)] { asio::post(io, done); });
      };
  }
  auto session = std::make_unique<sync::Session>(store, std::move(p));
  if (c->join) (void)session->join(c->join->code);  // a fresh session: cannot fail
  SessionDriver::Options o;
  o.handshake_timeout_ms = opt.handshake_timeout_ms;
  o.idle_timeout_ms = opt.idle_timeout_ms;
  o.write_chunk_bytes = opt.write_chunk_bytes;
  std::weak_ptr<Conn> weak = c;
  SessionDriver::Events ev;
  ev.input = [weak, self = shared_from_this()](SessionDriver& d) {
    auto conn = weak.lock();
    if (!conn) return;
    if (conn->join) self->check_join(*conn);
    if (d.session().state() == sync::SessionState::active && conn->in_budget())
      self->admitted(*conn);
    // In sync now: an older connection's error is stale.
    if (auto it = self->peers.find(conn->peer); it != self->peers.end() &&
                                                it->second.conn == conn && it->second.last_error &&
                                                d.session().in_sync())
      it->second.last_error.reset();
  };
  ev.closed = [weak, self = shared_from_this()](SessionDriver&) {
    if (auto conn = weak.lock()) self->close(*conn);
  };
  c->driver = SessionDriver::start(io, c->stream, std::move(session), o, std::move(ev));
}

void PeerManager::Impl::fail(Conn& c, Error e) {
  if (c.closed) return;
  if (c.driver) return c.driver->fail(std::move(e));
  if (!c.failure) c.failure = std::move(e);
  close(c);
}

void PeerManager::Impl::close(Conn& c) {
  if (c.closed) return;
  c.closed = true;
  if (c.slot) c.slot->release();
  if (c.driver) c.driver->close();  // its `closed` event finds c closed already
  if (c.stream) c.stream->close();
  connection_closed(c);
}

namespace {

// Adds what connection c moved so far to t.
void add_transfer(Conn& c, TransferTotals& t) {
  if (c.stream) {
    auto [sent, received] = c.stream->wire_bytes();
    t.wire_bytes_sent += sent;
    t.wire_bytes_received += received;
  }
  if (auto* s = c.session()) {
    auto p = s->progress();
    t.bytes_sent += p.bytes_sent;
    t.bytes_received += p.bytes_received;
    for (const auto& pp : p.projects) {
      t.versions_sent += pp.sent;
      t.versions_received += pp.received;
    }
  }
}

}  // namespace

void PeerManager::Impl::connection_closed(Conn& c) {
  auto self = c.shared_from_this();
  if (conns.erase(self) != 0 && !c.counted && !c.scheme.empty()) {
    c.counted = true;
    auto& t = closed_totals[c.scheme];
    add_transfer(c, t);
    ++t.connections_closed;
  }
  check_stopped();  // (posts: runs after the rest of this)
  if (c.join) join_closed(c);
  auto it = peers.find(c.peer);
  if (c.handover) {
    if (it != peers.end() && it->second.handing_over == self) it->second.handing_over = nullptr;
    spdlog::debug("sync: {} is not reachable at {}: {}", c.peer.short_str(), c.address,
                  c.failure ? c.failure->message : "closed");
    std::exchange(c.handover, nullptr)(
        c.failure ? Status(*c.failure) : make_error(Errc::unavailable, "connection closed"));
  }
  if (it == peers.end()) return;
  PeerEntry& e = it->second;
  bool was_dialing = e.dialing == self;
  bool was_attached = e.conn == self;
  if (!was_dialing && !was_attached) return;  // a replaced duplicate or a stray incoming
  if (was_dialing) e.dialing = nullptr;
  if (was_attached) e.conn = nullptr;
  bool synced = false;            // this connection reached "in sync" at least once: not a failure
  std::optional<Error> ended_by;  // this connection's own error (none: it closed cleanly)
  if (auto* s = c.session()) {
    auto p = s->progress();
    for (const auto& pp : p.projects) {
      e.last_sync_ms = std::max(e.last_sync_ms, pp.last_sync_ms);
      synced = synced || pp.last_sync_ms > 0;
    }
    if (!p.peer_name.empty()) e.name = p.peer_name;
    e.last_progress = std::move(p);
    if (s->error()) ended_by = s->error();
    e.proven = e.proven || !s->common_projects().empty();
    e.pending = e.pending || !s->pending_projects().empty();
  }
  // The peer said it shuts down (NOTICE closing): the link it then drops (a TCP reset, a
  // Bluetooth LE link reset that may overtake the session's own end) is part of that.
  const bool peer_closed = c.session() && c.session()->peer_notices().closing.has_value();
  const bool session_failed = c.session() && c.session()->error();
  const bool goodbye = peer_closed && !session_failed;
  // A session that ended cleanly (a NOTICE closing, ours or the peer's) ended the connection
  // cleanly too, whatever the transport did after it.
  if (c.driver && c.driver->failure() && !session_failed &&
      c.session()->state() != sync::SessionState::closed && !goodbye)
    c.failure = c.failure ? c.failure : c.driver->failure();
  if (c.stream) {
    std::tie(e.last_wire_sent, e.last_wire_received) = c.stream->wire_bytes();
    e.last_remote = c.stream->remote();
  }
  e.last_transport = c.scheme;
  if (c.stream) e.last_link = c.stream->link_class();
  if (c.failure && !c.replaced && !goodbye) ended_by = c.failure;
  // The peer shut down (it said so): neither that nor failing to reach it until it is back is
  // a failure of ours to report.
  const bool still_away = (!c.session() || !c.session()->peer_known()) && ended_by &&
                          ended_by->code == Errc::unavailable && e.reason &&
                          e.reason->code == PeerReasonCode::peer_shut_down;
  // Lost before the peer's HELLO (perhaps the duplicate the peer dropped: EarlyLoss).
  // A slow link lost at any point: perhaps the peer moved the session to a faster one.
  const bool slow = c.stream && !c.fast();
  if (!c.replaced && ended_by && !still_away && c.stream && ended_by->code == Errc::unavailable &&
      (slow || !c.session() || !c.session()->peer_known()))
    e.early_loss =
        PeerEntry::EarlyLoss{c.id, c.outgoing, unix_ms(), e.failures, e.last_error, e.reason, slow};
  if (!c.replaced) {
    if (!still_away) e.reason = closing_reason(c, ended_by);
    if (ended_by && !still_away) e.last_error = ended_by;
    // A session that synced and ended cleanly: an older connection's error is stale.
    if (!ended_by && synced) e.last_error.reset();
  }
  if (!c.replaced && ended_by && !still_away) {
    // This connection's own reason: an earlier connection's error is never logged again for
    // a clean close.
    std::string line = "sync: connection " + c.label() + " closed: " + ended_by->message;
    if (e.keep())
      spdlog::info("{}", line);
    else
      rlog.log(LogLevel::info, "stranger closed", line);
  } else if (!c.replaced) {
    spdlog::debug(
        "sync: connection {} closed{}", c.label(),
        still_away ? ": " + ended_by->message + " (the peer shut down)" : std::string(" cleanly"));
  }
  // Neither the peer's shutdown nor a session that only waited for the peer's approval is a
  // failure: no backoff escalation for them.
  synced = synced || peer_closed ||
           (!ended_by && e.reason && e.reason->code == PeerReasonCode::awaiting_approval);
  // A configured peer we could not reach may have renewed its identity (restored from a
  // backup, or found running twice): dial its successor instead.
  if (running && c.outgoing && !synced && e.configured && !c.replaced && follow_successor(c.peer))
    return;
  if (running) schedule_retry(e, !synced);
  if (!e.keep()) return forget_if_stranger(c.peer);
  if (e.pending) bound_pending();
}

std::optional<PeerReason> PeerManager::Impl::closing_reason(
    Conn& c, const std::optional<Error>& ended_by) const {
  const std::string who = c.peer.short_str();
  if (auto* s = c.session()) {
    const auto& n = s->peer_notices();
    if (n.closing) return PeerReason{PeerReasonCode::peer_shut_down, *n.closing, std::nullopt};
    if (!n.removed.empty()) {
      const auto& [project, message] = *n.removed.begin();
      return PeerReason{PeerReasonCode::removed, message, project};
    }
    if (!n.awaiting.empty() && !ended_by) {
      const auto& [project, message] = *n.awaiting.begin();
      return PeerReason{PeerReasonCode::awaiting_approval, message, project};
    }
  }
  if (!ended_by) return std::nullopt;
  // The pinned key refused another device at the address (only a dial fails this way before
  // a session: the transport's message names both devices).
  if (c.outgoing && !c.session() && ended_by->code == Errc::unauthenticated)
    return PeerReason{PeerReasonCode::wrong_device, ended_by->message, std::nullopt};
  return PeerReason{PeerReasonCode::failed, ended_by->message, std::nullopt};
}

void PeerManager::Impl::schedule_retry(PeerEntry& e, bool failed) {
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

// The identity that continues `device` (docs/storage.md "One identity, one history": a
// renewed device's old key vouches for its new one in the project's membership records),
// following renewals in turn; nullopt when none is known.
std::optional<DeviceId> PeerManager::Impl::successor_of(const DeviceId& device) const {
  auto projects = store.list_projects();
  if (!projects.ok()) return std::nullopt;
  std::optional<DeviceId> found;
  DeviceId cur = device;
  for (int hop = 0; hop < 16; ++hop) {  // a chain of renewals, bounded
    std::optional<DeviceId> next;
    for (const auto& p : *projects) {
      auto members = store.members(p.id);
      if (!members.ok()) continue;
      for (const auto& m : *members)
        if (m.successor_of && *m.successor_of == cur && m.role != storage::Role::removed)
          next = m.device;
      if (next) break;
    }
    if (!next || *next == device) break;
    found = cur = *next;
  }
  return found;
}

// Moves a configured peer to the identity that continues it (keeping its address, name and
// approval, in memory and in the store) and dials that. False when it has no successor.
bool PeerManager::Impl::follow_successor(const DeviceId& device) {
  auto it = peers.find(device);
  if (it == peers.end() || !it->second.configured) return false;
  auto next = successor_of(device);
  if (!next || *next == store.device_id()) return false;
  PeerEntry& old = it->second;
  if (old.conn || old.dialing) return false;
  spdlog::info(
      "sync: peer {} renewed its identity (its old key vouches for {}): dialing the new one at {}",
      device.short_str(), next->short_str(), old.address);
  PeerEntry& n = move_to_successor(old, *next);
  if (running && !n.conn && !n.dialing) dial(n);
  return true;
}

// Moves a configured peer's address, name and approval to the identity that continues it, in
// memory and in the store, and forgets the old entry (`old` is gone afterwards).
PeerEntry& PeerManager::Impl::move_to_successor(PeerEntry& old, const DeviceId& next) {
  const DeviceId device = old.device;
  PeerEntry& n = peers[next];
  n.device = next;
  if (!n.configured && old.configured) {
    n.address = old.address;
    n.configured = true;
  }
  n.approved = n.approved || old.approved;
  if (n.name.empty()) n.name = old.name;
  n.failures = 0;
  const bool configured = n.configured;
  if (old.retry) old.retry->cancel();
  peers.erase(device);
  if (auto st = store.forget_peer(device); !st && st.error().code != Errc::not_found)
    spdlog::warn("sync: cannot forget peer {}: {}", device.short_str(), st.error().message);
  if (configured) remember(n);
  return n;
}

PeerStatus PeerManager::Impl::status_of(const PeerEntry& e) const {
  PeerStatus s;
  s.device = e.device;
  s.name = e.name;
  s.address = e.address;
  s.configured = e.configured;
  s.failures = e.failures;
  s.last_error = e.last_error;
  s.reason = e.reason;
  s.last_sync_ms = e.last_sync_ms;
  s.session = e.last_progress;
  s.wire_bytes_sent = e.last_wire_sent;
  s.wire_bytes_received = e.last_wire_received;
  s.transport = e.last_transport;
  s.remote = e.last_remote;
  s.link = e.last_link;
  s.approved = e.approved;
  s.verification_code = sync::verification_code(store.device_id(), e.device);
  if (e.conn && e.conn->driver) {
    const auto& d = *e.conn->driver;
    const auto& session = d.session();
    s.pending_projects = session.pending_projects();
    std::tie(s.wire_bytes_sent, s.wire_bytes_received) = d.stream().wire_bytes();
    s.transport = e.conn->scheme;
    s.remote = d.stream().remote();
    s.link = d.stream().link_class();
    s.connected = true;
    s.outgoing = e.conn->outgoing;
    auto p = session.progress();
    for (const auto& pp : p.projects) s.last_sync_ms = std::max(s.last_sync_ms, pp.last_sync_ms);
    if (!p.peer_name.empty()) s.name = p.peer_name;
    switch (p.state) {
      case sync::SessionState::hello:
      case sync::SessionState::proving: s.state = PeerState::handshake; break;
      case sync::SessionState::active:
        s.state = session.in_sync() ? PeerState::in_sync : PeerState::syncing;
        if (!s.pending_projects.empty() && session.common_projects().empty())
          s.state = PeerState::pending;
        break;
      default: s.state = PeerState::handshake; break;  // closing
    }
    s.reason = std::nullopt;  // the live session's own, if any
    const auto& n = session.peer_notices();
    if (p.state == sync::SessionState::active) {
      if (s.state == PeerState::pending) {
        s.reason = PeerReason{PeerReasonCode::approval_needed,
                              "it proved " + std::to_string(s.pending_projects.size()) +
                                  " project(s) that wait for your approval (syncctl peers "
                                  "approve " +
                                  e.device.short_str() + ")",
                              s.pending_projects.front()};
      } else if (!n.awaiting.empty()) {
        // Nothing of those projects flows until the peer's user approves this device.
        s.state = PeerState::waiting;
        const auto& [project, message] = *n.awaiting.begin();
        s.reason = PeerReason{PeerReasonCode::awaiting_approval, message, project};
      } else if (!n.removed.empty()) {
        const auto& [project, message] = *n.removed.begin();
        s.reason = PeerReason{PeerReasonCode::removed, message, project};
      } else if (session.common_projects().empty()) {
        s.reason = e.reason;  // up, sharing nothing yet (a refusal may be on its way): stands
      }
    } else {
      s.reason = e.reason;  // a new session is starting: the last one's outcome stands
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

void PeerManager::Impl::remember(const PeerEntry& e) {
  storage::PeerRecord rec{e.device, e.name, {}, e.approved, unix_ms(), e.seen_ms};
  if (!e.address.empty()) rec.addresses.push_back(e.address);
  if (auto st = store.save_peer(rec); !st)
    spdlog::warn("sync: cannot remember peer {}: {}", e.device.short_str(), st.error().message);
}

// Tries the live session with the inviter, else the next address of the code.
void PeerManager::Impl::join_next(const std::shared_ptr<JoinAttempt>& j) {
  if (j->finished) return;
  if (!running) return j->finish(make_error(Errc::unavailable, "sync is not running"));
  const DeviceId& inviter = j->code.inviter;
  auto it = peers.find(inviter);
  if (it != peers.end() && it->second.conn && !it->second.conn->join &&
      it->second.conn->session() &&
      it->second.conn->session()->state() == sync::SessionState::active) {
    auto c = it->second.conn;
    if (c->session()->join(j->code)) {
      spdlog::info("sync: joining project {} over the live session with {}", j->code.project.str(),
                   inviter.short_str());
      c->join = j;
      // A live session's deadline is the idle timeout; the answer must come sooner.
      j->timer.emplace(io);
      j->timer->expires_after(std::chrono::milliseconds(opt.handshake_timeout_ms));
      std::weak_ptr<Conn> weak = c;
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
    std::string uri;
    if (auto st = check_address(address, &uri); !st) {
      j->errors.push_back(address + ": " + st.error().message);
      continue;
    }
    auto c = std::make_shared<Conn>();
    c->id = next_conn_id++;
    c->outgoing = true;
    c->peer = inviter;
    c->address = uri;
    c->join = j;
    conns.insert(c);
    spdlog::info("sync: joining project {}: dialing the inviter {} at {}", j->code.project.str(),
                 inviter.short_str(), uri);
    connect(c);
    return;
  }
  std::string why = "cannot reach the inviter " + inviter.short_str();
  if (j->code.addresses.empty()) why += ": the invite code lists no address";
  for (std::size_t i = 0; i < j->errors.size(); ++i) why += (i ? "; " : ": ") + j->errors[i];
  j->finish(make_error(Errc::unavailable, why));
}

// After input on a connection carrying a JOIN: done once the session has the outcome.
void PeerManager::Impl::check_join(Conn& c) {
  auto j = c.join;
  if (!j || !c.session() || !c.session()->join_result()) return;
  c.join = nullptr;
  if (j->finished) return;
  const auto& r = *c.session()->join_result();
  if (!r.ok()) return j->finish(r.error());
  // The inviter is a peer we keep syncing with: remembered at the address that worked (for
  // a live incoming session, the code's address on the same host, else its first one).
  std::string address = c.address;
  if (!c.outgoing) {
    auto host = host_of(c.address);
    address.clear();
    for (const auto& a : j->code.addresses) {
      std::string uri;
      if (!check_address(a, &uri)) continue;
      if (address.empty() || host_of(uri) == host) address = uri;
      if (host_of(uri) == host) break;
    }
  }
  PeerEntry& e = peers[c.peer];
  e.device = c.peer;
  if (e.name.empty()) e.name = c.session()->peer_name();
  e.approved = true;  // the code pinned its key and the user chose to join through it
  if (!e.configured && !address.empty()) {
    e.address = address;
    e.configured = true;
  }
  remember(e);
  // Other live sessions may share the new project too.
  for (auto& [id, other] : peers) {
    if (!other.conn || other.conn.get() == &c || !other.conn->session()) continue;
    auto oc = other.conn;
    oc->session()->projects_changed();
    oc->pump();
  }
  j->finish(PeerManager::JoinOutcome{*r, e.configured ? e.address : address, e.name});
}

// A connection that carried a JOIN closed before check_join saw the outcome.
void PeerManager::Impl::join_closed(Conn& c) {
  check_join(c);
  auto j = c.join;
  if (!j) return;
  c.join = nullptr;
  if (j->finished) return;
  if (c.session() && c.session()->peer_known()) {
    // We reached the inviter: its answer (or the session's end) is final.
    auto e = c.session()->error() ? *c.session()->error()
             : c.failure          ? *c.failure
             : c.driver && c.driver->failure()
                 ? *c.driver->failure()
                 : make_error(Errc::unavailable, "the inviter closed the connection");
    return j->finish(std::move(e));
  }
  const std::optional<Error>& why =
      c.failure ? c.failure : (c.driver ? c.driver->failure() : c.failure);
  j->errors.push_back(c.address + ": " + (why ? why->message : std::string("connection closed")));
  // Not from inside close(): the next attempt starts on a fresh stack.
  asio::post(io, [self = shared_from_this(), j] { self->join_next(j); });
}

// --- PeerManager ---

PeerManager::PeerManager(asio::io_context& io, storage::Store& store, config::SyncOptions options,
                         std::string device_name)
    : impl_(std::make_shared<Impl>(io, store, std::move(options), std::move(device_name))) {}

PeerManager::~PeerManager() { stop(); }

transports::Transport& PeerManager::add_transport(std::unique_ptr<transports::Transport> t,
                                                  bool listen) {
  std::string scheme(t->scheme());
  if (listen) impl_->listening.insert(scheme);
  auto& slot = impl_->transports[scheme];
  slot = std::move(t);
  return *slot;
}

void PeerManager::set_writer(PostWrite post_write) { impl_->post_write = std::move(post_write); }
void PeerManager::set_preparer(PostPrepare post_prepare) {
  impl_->post_prepare = std::move(post_prepare);
}

Status PeerManager::start() {
  impl_->thread.check("PeerManager::start");
  Impl& im = *impl_;
  std::weak_ptr<Impl> weak = impl_;
  for (const auto& scheme : im.listening) {
    auto& t = im.transports.at(scheme);
    auto st = t->listen(im.budget, [weak, scheme](std::shared_ptr<Stream> s,
                                                  std::shared_ptr<HandshakeBudget::Slot> slot) {
      if (auto self = weak.lock()) self->on_incoming(scheme, std::move(s), std::move(slot));
    });
    if (!st) {
      for (auto& [name, other] : im.transports) other->stop();
      return st;
    }
  }
  // Peers added through the API before a restart.
  std::vector<storage::PeerProblem> unreadable;
  if (auto saved = im.store.load_peers(&unreadable); saved.ok()) {
    for (const auto& rec : *saved) {
      if (rec.approved) {
        PeerEntry& e = im.peers[rec.device];
        e.device = rec.device;
        e.approved = true;
        if (e.name.empty()) e.name = sanitize_text(rec.name, sync::kMaxDeviceNameBytes);
      }
      std::string uri;  // the first address a transport here can dial
      if (std::none_of(rec.addresses.begin(), rec.addresses.end(),
                       [&](const std::string& a) { return im.check_address(a, &uri).ok(); }))
        continue;
      PeerEntry& e = im.peers[rec.device];
      if (e.configured) continue;  // the config file names it too
      e.device = rec.device;
      e.address = uri;
      e.configured = true;
      e.name = sanitize_text(rec.name, sync::kMaxDeviceNameBytes);
    }
    for (const auto& p : unreadable)
      spdlog::warn("sync: remembered peer {} not loaded: {}", p.device, p.error);
  } else {
    spdlog::warn("sync: cannot load remembered peers: {}", saved.error().message);
  }
  // Peers that renewed their identity while we were away: their successors instead.
  std::vector<DeviceId> configured;
  for (const auto& [id, e] : im.peers)
    if (e.configured) configured.push_back(id);
  for (const auto& id : configured) (void)im.follow_successor(id);
  im.running = true;
  for (auto& [id, e] : im.peers)
    if (e.configured && !e.conn && !e.dialing) im.dial(e);
  return {};
}

void PeerManager::stop() { impl_->stop_all(nullptr, false); }

void PeerManager::stop(std::function<void()> done) { impl_->stop_all(std::move(done), true); }

void PeerManager::Impl::stop_all(std::function<void()> done, bool graceful) {
  for (auto& [name, t] : transports) t->stop();
  if (running) {
    running = false;
    for (auto& [id, e] : peers)
      if (e.retry) e.retry->cancel();
  }
  if (done) stopped = std::move(done);
  auto list = conns;
  for (const auto& c : list) {
    if (graceful && c->driver && !c->closed && !c->driver->session().finished())
      c->driver->end("this device shuts down");  // closes itself within the goodbye timeout
    else
      close(*c);
  }
  if (!graceful) conns.clear();
  check_stopped();
}

void PeerManager::Impl::check_stopped() {
  if (running || !conns.empty() || !stopped) return;
  asio::post(io, std::exchange(stopped, nullptr));
}

std::vector<Address> PeerManager::listen_addresses() const {
  std::vector<Address> out;
  for (const auto& scheme : impl_->listening) {
    auto a = impl_->transports.at(scheme)->listen_addresses();
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

Status PeerManager::add_peer(const std::string& address, const DeviceId& device, std::string name,
                             bool persist) {
  impl_->thread.check("PeerManager::add_peer");
  Impl& im = *impl_;
  std::string uri;
  FS_TRY(im.check_address(address, &uri));
  if (device == im.store.device_id())
    return make_error(Errc::failed_precondition, "that is this device");
  auto [it, fresh] = im.peers.try_emplace(device);
  PeerEntry& e = it->second;
  if (!fresh && e.configured) return make_error(Errc::already_exists, "peer already added");
  e.device = device;
  e.address = uri;
  e.configured = true;
  if (!name.empty() && e.name.empty()) e.name = sanitize_text(name, sync::kMaxDeviceNameBytes);
  e.failures = 0;
  if (persist) im.remember(e);
  if (im.running && !e.conn && !e.dialing) im.dial(e);
  return {};
}

Status PeerManager::set_peer_address(const DeviceId& device, const std::string& address) {
  impl_->thread.check("PeerManager::set_peer_address");
  std::string uri;
  FS_TRY(impl_->check_address(address, &uri));
  auto it = impl_->peers.find(device);
  if (it == impl_->peers.end() || !it->second.configured)
    return make_error(Errc::not_found, "no such peer");
  it->second.address = uri;
  return {};
}

void PeerManager::handover(const DeviceId& device, const std::string& address,
                           std::function<void(Status)> done) {
  impl_->thread.check("PeerManager::handover");
  Impl& im = *impl_;
  auto finish = [&](Status st) {
    asio::post(im.io, [done = std::move(done), st = std::move(st)] { done(st); });
  };
  std::string uri;
  if (auto st = im.check_address(address, &uri); !st) return finish(st);
  auto it = im.peers.find(device);
  if (it == im.peers.end() || !it->second.configured)
    return finish(make_error(Errc::not_found, "no such peer"));
  PeerEntry& e = it->second;
  if (!e.conn || !e.conn->stream) {  // nothing to hand over: dial there now
    e.address = uri;
    (void)sync_now(device);
    return finish({});
  }
  auto* t = im.transport_for(uri);
  if (!t || e.conn->fast() || t->link_class() != transports::LinkClass::fast)
    return finish(make_error(Errc::failed_precondition,
                             "the live connection (" + e.conn->scheme + ") is as fast"));
  if (e.handing_over) return finish(make_error(Errc::already_exists, "already trying"));
  auto c = std::make_shared<Conn>();
  c->id = im.next_conn_id++;
  c->outgoing = true;
  c->peer = e.device;
  c->address = uri;
  c->handover = std::move(done);
  e.handing_over = c;
  im.conns.insert(c);
  spdlog::debug("sync: trying {} at {} (it syncs over {} now)", e.device.short_str(), uri,
                e.conn->scheme);
  im.connect(c);
}

Status PeerManager::remove_peer(const DeviceId& device) {
  impl_->thread.check("PeerManager::remove_peer");
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end()) return make_error(Errc::not_found, "no such peer");
  PeerEntry& e = it->second;
  e.configured = false;
  e.retry_pending = false;
  if (e.retry) e.retry->cancel();
  auto conn = e.conn, dialing = e.dialing;
  if (conn) im.close(*conn);
  if (dialing) im.close(*dialing);
  im.peers.erase(device);
  if (auto st = im.store.forget_peer(device); !st && st.error().code != Errc::not_found)
    spdlog::warn("sync: cannot forget peer {}: {}", device.short_str(), st.error().message);
  return {};
}

Status PeerManager::unconfigure_peer(const DeviceId& device) {
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end() || !it->second.configured)
    return make_error(Errc::not_found, "no such configured peer");
  if (auto saved = im.store.load_peers(); saved.ok())
    for (const auto& rec : *saved)
      if (rec.device == device && !rec.addresses.empty()) return {};  // remembered: still dialed
  PeerEntry& e = it->second;
  e.configured = false;
  e.retry_pending = false;
  if (e.retry) e.retry->cancel();
  auto conn = e.conn, dialing = e.dialing;
  // (closing may erase the entry: e is not used after this)
  if (conn) im.close(*conn);
  if (dialing) im.close(*dialing);
  im.forget_if_stranger(device);
  return {};
}

std::vector<PeerStatus> PeerManager::peers() const {
  impl_->thread.check("PeerManager::peers");
  std::vector<PeerStatus> out;
  for (const auto& [id, e] : impl_->peers) out.push_back(impl_->status_of(e));
  return out;
}

std::map<std::string, TransferTotals> PeerManager::transfer_totals() const {
  auto out = impl_->closed_totals;
  for (const auto& [scheme, t] : impl_->transports) out[scheme];
  for (const auto& c : impl_->conns)
    if (!c->counted && !c->scheme.empty()) add_transfer(*c, out[c->scheme]);
  return out;
}

Result<PeerStatus> PeerManager::peer(const DeviceId& device) const {
  auto it = impl_->peers.find(device);
  if (it == impl_->peers.end()) return make_error(Errc::not_found, "no such peer");
  return impl_->status_of(it->second);
}

Status PeerManager::approve_peer(const DeviceId& device) {
  Impl& im = *impl_;
  auto it = im.peers.find(device);
  if (it == im.peers.end())
    return make_error(Errc::not_found, "no such peer: it must have connected first");
  PeerEntry& e = it->second;
  e.approved = true;
  im.remember(e);
  spdlog::info("sync: {} approved by the user", device.short_str());
  if (e.conn && e.conn->session()) {
    auto c = e.conn;
    c->session()->approve();
    c->pump();
  }
  return {};
}

Status PeerManager::sync_now(const DeviceId& device) {
  impl_->thread.check("PeerManager::sync_now");
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

void PeerManager::join(const sync::InviteCode& code,
                       std::function<void(Result<JoinOutcome>)> done) {
  auto j = std::make_shared<JoinAttempt>();
  j->code = code;
  j->done = std::move(done);
  if (code.inviter == impl_->store.device_id())
    return j->finish(make_error(Errc::invalid_argument, "this invite was made on this device"));
  impl_->join_next(j);
}

std::uint32_t PeerManager::join_timeout_ms(const sync::InviteCode& code) const {
  const auto& o = impl_->opt;
  // Per address: connect, then the transport's handshake and the session's handshake deadline.
  std::uint64_t per = std::uint64_t{o.connect_timeout_ms} + 2ull * o.handshake_timeout_ms;
  std::uint64_t total =
      per * std::max<std::size_t>(code.addresses.size(), 1) + o.handshake_timeout_ms;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(total, 24ull * 3600 * 1000));
}

// Runs `fn` on every live session on the io_context thread, then pumps its output (any thread).
void PeerManager::for_each_session(std::function<void(sync::Session&)> fn) {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->io, [weak, fn = std::move(fn)] {
    auto im = weak.lock();
    if (!im || !im->running) return;
    for (auto& [id, e] : im->peers) {
      if (!e.conn || !e.conn->session()) continue;
      auto c = e.conn;
      fn(*c->session());
      c->pump();
    }
  });
}

void PeerManager::projects_changed() {
  for_each_session([](sync::Session& s) { s.projects_changed(); });
}

void PeerManager::subscription_changed(const ProjectId& project) {
  for_each_session([project](sync::Session& s) { s.subscription_changed(project); });
}

void PeerManager::notify_change(const ProjectId& project) {
  for_each_session([project](sync::Session& s) { s.notify_local_change(project); });
}

}  // namespace fieldsync::peers
