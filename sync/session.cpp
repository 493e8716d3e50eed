// Session: the public engine and its input. Received frames go through the message table
// below; the exchanges live in session_handshake.cpp, session_log.cpp, session_join.cpp and
// session_trust.cpp (sync/session_impl.hpp).
#include "sync/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "storage/blob_ref.hpp"
#include "sync/session_impl.hpp"
#include "sync/wire_error.hpp"

namespace fieldsync::sync {

std::string_view session_state_name(SessionState s) {
  switch (s) {
    case SessionState::hello: return "hello";
    case SessionState::proving: return "proving";
    case SessionState::active: return "active";
    case SessionState::closed: return "closed";
    case SessionState::failed: return "failed";
  }
  return "unknown";
}

namespace {

std::int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// --- the message table ---

const Session::Impl::MessageRule* Session::Impl::message_rule(std::uint8_t type) {
  using S = SessionState;
  constexpr StateSet kAnyState = states(S::hello, S::proving, S::active);
  constexpr StateSet kProven = states(S::proving, S::active);  // after the peer's HELLO
  static constexpr MessageRule kMessages[] = {
      // type, accepted in, run<decoder, handler>
      {MsgType::error, kAnyState, &run<&decode_peer_error, &Impl::on_error>},
      {MsgType::ping, kAnyState, &run<&decode_ping, &Impl::on_ping>},
      {MsgType::notice, kProven, &run<&decode_notice, &Impl::on_notice>},
      // Handshake (session_handshake.cpp).
      {MsgType::hello, states(S::hello), &run<&decode_hello, &Impl::on_hello>},
      {MsgType::projects, kProven, &run<&decode_projects, &Impl::on_projects_msg>},
      // Joining (session_join.cpp): before our first PROJECTS, or on an active session.
      {MsgType{kMsgJoin}, kProven, &run<&decode_join, &Impl::on_join>},
      {MsgType{kMsgJoined}, kProven, &run<&decode_joined, &Impl::on_joined>},
      // Log exchange (session_log.cpp).
      {MsgType::vv, states(S::active), &run<&decode_vector, &Impl::on_vv>},
      {MsgType::tips, states(S::active), &run<&decode_tips, &Impl::on_tips>},
      {MsgType::forked, states(S::active), &run<&decode_forked, &Impl::on_forked>},
      {MsgType::batch, states(S::active), &run<&decode_received_batch, &Impl::on_batch>},
      {MsgType::zbatch, states(S::active), &run<&decode_received_zbatch, &Impl::on_zbatch>},
      {MsgType::ack, states(S::active), &run<&decode_ack, &Impl::on_ack>},
      {MsgType::done, states(S::active), &run<&decode_done, &Impl::on_done>},
      {MsgType::new_heads, states(S::active), &run<&decode_vector, &Impl::on_new>},
      // Blobs (session_blobs.cpp).
      {MsgType::blob_get, states(S::active), &run<&decode_blob_get, &Impl::on_blob_get>},
      {MsgType::blob_head, states(S::active), &run<&decode_blob_head, &Impl::on_blob_head>},
      {MsgType::blob_chunk, states(S::active), &run<&decode_blob_chunk, &Impl::on_blob_chunk>},
      {MsgType::blob_wants, states(S::active), &run<&decode_blob_wants, &Impl::on_blob_wants>},
      // Subscriptions (session_log.cpp).
      {MsgType::subscription, states(S::active),
       &run<&decode_subscription, &Impl::on_subscription>},
  };
  for (const auto& rule : kMessages)
    if (static_cast<std::uint8_t>(rule.type) == type) return &rule;
  return nullptr;
}

void Session::Impl::handle(const Frame& f) {
  const MessageRule* rule = message_rule(f.type);
  if (rule && (rule->accepted & states(state))) return rule->run(*this, f);
  // An optional extension we do not know (once the session is up).
  if (!rule && state == SessionState::active && (f.type & kIgnorableTypeBit)) return;
  refuse(f.type, rule != nullptr);
}

void Session::Impl::refuse(std::uint8_t type, bool known) {
  if (state == SessionState::hello)
    return fail(make_error(Errc::failed_precondition, "expected HELLO first"), true);
  if (state == SessionState::proving)
    return fail(make_error(Errc::failed_precondition, "expected PROJECTS after HELLO"), true);
  if (known)  // a handshake message on an active session
    return fail(
        make_error(Errc::failed_precondition, std::string(msg_type_name(type)) + " sent twice"),
        true);
  fail(make_error(Errc::unsupported, "unknown message type " + std::to_string(type)), true);
}

Result<Session::Impl::Ping> Session::Impl::decode_ping(ByteView) { return Ping{}; }

Result<Session::Impl::PeerError> Session::Impl::decode_peer_error(ByteView payload) {
  auto m = decode_error(payload);
  if (!m.ok()) return PeerError{};
  return PeerError{std::move(*m)};
}

Result<Session::Impl::ReceivedBatch> Session::Impl::decode_received_batch(
    ByteView payload, const DecodeLimits& limits) {
  auto m = decode_batch(payload, limits);
  if (!m.ok()) return m.error();
  return ReceivedBatch{std::move(*m), payload.size() + kFrameHeaderBytes};
}

Result<Session::Impl::ReceivedBatch> Session::Impl::decode_received_zbatch(
    ByteView payload, const DecodeLimits& limits) {
  thread_local Bytes plain;  // reused: at most max_batch_payload bytes per thread
  if (auto st = decode_zbatch(payload, limits, plain); !st) return st.error();
  auto m = decode_batch(plain, limits);
  if (!m.ok()) return m.error();
  return ReceivedBatch{std::move(*m), payload.size() + kFrameHeaderBytes};
}

// --- input and ending ---

Session::Impl::Impl(storage::Store& s, SessionParams p)
    : store(s), params(std::move(p)), decoder(params.options.max_frame_bytes) {
  limits.max_projects = params.options.max_projects;
  limits.max_body_bytes = store.options().max_body_bytes;
  limits.max_batch_payload = params.options.max_frame_bytes - 1;
  if (!params.clock) params.clock = system_now_ms;
  session_log().set_limits(params.options.log_lines_per_key,
                           std::chrono::milliseconds(params.options.log_interval_ms));
}

// sync.log_lines_per_key per sync.log_interval_ms (set from the options of each new session).
RateLimitedLog& Session::Impl::session_log() {
  static RateLimitedLog log(10, std::chrono::seconds(10));
  return log;
}

std::string Session::Impl::peer_label() const {
  return have_peer ? peer_hello.device.short_str() : std::string("(unknown peer)");
}

void Session::Impl::fail(Error e, bool tell_peer) {
  if (state == SessionState::failed || state == SessionState::closed) return;
  if (state == SessionState::active) note_seen();  // it was up until now
  // A lost connection is routine (the peer went away); everything else is worth a warning.
  // Rate-limited per error kind: any stranger can make a session fail.
  session_log().log(e.code == Errc::unavailable ? LogLevel::info : LogLevel::warn,
                    std::string("session failed: ") + std::string(errc_name(e.code)),
                    fmt::format("sync: session with {} failed: {}: {}", peer_label(),
                                errc_name(e.code), e.message));
  if (tell_peer) encode_error(control, WireError{to_wire_code(e.code), e.message});
  if (join_code && !join_result) join_result = e;  // the join ends with the session
  error = std::move(e);
  state = SessionState::failed;
}

void Session::Impl::receive(ByteView bytes) {
  if (finished()) return;
  bytes_received += bytes.size();
  decoder.feed(bytes);
  process_input();
  record_holds();  // what this input showed the peer holds: at most one write per project
}

void Session::Impl::process_input() {
  while (!finished() && !busy) {
    Frame f;
    if (held_frame) {
      f = *held_frame;
      held_frame.reset();
    } else {
      auto next = decoder.next();
      if (!next.ok()) {
        fail(next.error(), true);
        break;
      }
      if (!next.value()) break;
      f = *next.value();
    }
    const bool batch = f.type == static_cast<std::uint8_t>(MsgType::batch) ||
                       f.type == static_cast<std::uint8_t>(MsgType::zbatch);
    if (!batch && !applying.empty()) {  // after the batches before it
      held_frame = f;
      busy = true;
      break;
    }
    handle(f);
  }
}

void Session::Impl::on_ping(Ping) {}

void Session::Impl::on_error(PeerError m) {
  Error e = m.sent
                ? make_error(from_wire_code(m.sent->code),
                             (join_pending ? "the inviter refused: " : "peer: ") + m.sent->reason)
                : make_error(Errc::invalid_argument, "peer sent a malformed ERROR");
  fail(std::move(e), false);
}

std::string Session::Impl::self_label() const {
  return params.device_name.empty()
             ? store.device_id().short_str()
             : params.device_name + " (" + store.device_id().short_str() + ")";
}

void Session::Impl::notify(NoticeKind kind, const ProjectId& project, std::string message) {
  if (!notices_enabled || finished()) return;
  encode_notice(control, NoticeMsg{static_cast<std::uint8_t>(kind), project, std::move(message)});
}

void Session::Impl::on_notice(NoticeMsg m) {
  // A project it names must be one of ours (what the peer can make us keep stays bounded).
  auto ours = [&] { return store.project_secret(m.project).ok(); };
  switch (static_cast<NoticeKind>(m.kind)) {
    case NoticeKind::closing:
      spdlog::info("sync: {} ends the session: {}", peer_label(), m.message);
      notices.closing = m.message;
      return close_cleanly("the peer closed: " + m.message, false);
    case NoticeKind::removed:
      if (!ours()) return;
      session_log().log(LogLevel::warn, "removed notice",
                        fmt::format("sync: {} refuses this device: {}", peer_label(), m.message));
      notices.removed[m.project] = std::move(m.message);
      return drop_refused(m.project);
    case NoticeKind::awaiting_approval:
      if (!ours()) return;
      if (!notices.awaiting.count(m.project)) spdlog::info("sync: {}: {}", peer_label(), m.message);
      notices.awaiting[m.project] = std::move(m.message);
      return;
  }
  spdlog::debug("sync: {} sent NOTICE of unknown kind {}", peer_label(), int{m.kind});
}

// The peer refuses `id` (this device was removed from it): it leaves the session's projects,
// so the others can be in sync. Nothing of it was exchanged yet (the peer sent no VV for it).
void Session::Impl::drop_refused(const ProjectId& id) {
  auto it = projects.find(id);
  if (it == projects.end() || it->second.vv_received || it->second.unacked != 0) return;
  refused.insert(id);
  projects.erase(it);
  rr.erase(std::remove(rr.begin(), rr.end(), id), rr.end());
}

void Session::Impl::close_cleanly(const std::string& reason, bool notify_peer) {
  if (finished()) return;
  if (state == SessionState::active) note_seen();  // it was up until now
  if (notify_peer) notify(NoticeKind::closing, ProjectId{}, self_label() + " is shutting down");
  if (join_code && !join_result) join_result = make_error(Errc::unavailable, reason);
  state = SessionState::closed;
}

// --- Session ---

Session::Session(storage::Store& store, SessionParams params)
    : impl_(std::make_unique<Impl>(store, std::move(params))) {}
Session::~Session() = default;

void Session::start() {
  impl_->thread.check("Session::start");
  impl_->send_hello();
}
void Session::receive(ByteView bytes) {
  impl_->thread.check("Session::receive");
  impl_->receive(bytes);
}
bool Session::busy() const { return impl_->busy; }
void Session::set_resume_hook(std::function<void()> hook) { impl_->resume_hook = std::move(hook); }
Bytes Session::take_output(std::size_t max_bytes) {
  impl_->thread.check("Session::take_output");
  return impl_->take_output(max_bytes);
}
void Session::notify_local_change(const ProjectId& project) {
  impl_->thread.check("Session::notify_local_change");
  impl_->notify_local_change(project);
}
void Session::projects_changed() { impl_->reannounce(); }
void Session::subscription_changed(const ProjectId& project) {
  impl_->subscription_changed(project);
}
Status Session::join(const InviteCode& code) { return impl_->join(code); }

const std::optional<Result<storage::ProjectInfo>>& Session::join_result() const {
  return impl_->join_result;
}

std::vector<ProjectId> Session::pending_projects() const {
  return {impl_->pending.begin(), impl_->pending.end()};
}

void Session::approve() { impl_->approve(); }

void Session::ping() {
  if (!impl_->finished()) encode_ping(impl_->control);
}

void Session::transport_closed(std::string reason) {
  if (impl_->finished()) return;
  impl_->fail(make_error(Errc::unavailable, "connection lost: " + reason), false);
}

void Session::abort(Error error) {
  impl_->thread.check("Session::abort");
  impl_->fail(std::move(error), true);
}
void Session::close(std::string reason) {
  impl_->thread.check("Session::close");
  impl_->close_cleanly(reason, true);
}
const PeerNotices& Session::peer_notices() const { return impl_->notices; }

SessionState Session::state() const { return impl_->state; }
bool Session::finished() const { return impl_->finished(); }
bool Session::peer_known() const { return impl_->have_peer; }
const DeviceId& Session::peer() const { return impl_->peer_hello.device; }
const std::string& Session::peer_name() const { return impl_->peer_hello.device_name; }
const std::optional<Error>& Session::error() const { return impl_->error; }

SessionProgress Session::progress() const {
  SessionProgress p;
  p.state = impl_->state;
  if (impl_->have_peer) {
    p.peer = impl_->peer_hello.device;
    p.peer_name = impl_->peer_hello.device_name;
  }
  p.protocol = impl_->protocol;
  p.bytes_sent = impl_->bytes_sent;
  p.bytes_received = impl_->bytes_received;
  p.error = impl_->error;
  std::int64_t now = impl_->params.clock();
  for (const auto& [id, ps] : impl_->projects) {
    ProjectProgress pp = ps.stats;
    pp.to_send = impl_->to_send(ps);
    pp.to_receive = impl_->to_receive(ps);
    pp.in_sync = ps.was_in_sync;
    pp.diverged.assign(ps.diverged.begin(), ps.diverged.end());
    if (ps.rate_sample_ms != 0 && now - ps.rate_sample_ms > 3000) pp.rate_bytes_per_s = 0;
    if (const auto& f = impl_->fetch; f && f->project == id) {
      pp.blob_fetching = storage::digest_hex(f->rx->info().id);
      pp.blob_fetching_size = f->rx->info().size;
      pp.blob_fetching_bytes = std::min<std::uint64_t>(
          std::uint64_t{f->rx->chunks_held()} * storage::kBlobChunkBytes, f->rx->info().size);
    }
    p.projects.push_back(pp);
  }
  return p;
}

bool Session::in_sync() const {
  if (impl_->state != SessionState::active || !impl_->pending.empty()) return false;
  for (const auto& [id, ps] : impl_->projects)
    if (!ps.was_in_sync) return false;
  return true;
}

std::vector<ProjectId> Session::common_projects() const {
  std::vector<ProjectId> ids;
  for (const auto& [id, ps] : impl_->projects) ids.push_back(id);
  return ids;
}

}  // namespace fieldsync::sync
