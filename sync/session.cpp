#include "sync/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <random>

#include "common/rate_limited_log.hpp"

#include "crypto/crypto.hpp"
#include "sync/join.hpp"
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

std::uint64_t get(const storage::VersionVector& v, const DeviceId& a) {
  auto it = v.find(a);
  return it == v.end() ? 0 : it->second;
}

void raise(storage::VersionVector& v, const DeviceId& a, std::uint64_t seq) {
  auto& cur = v[a];
  cur = std::max(cur, seq);
}

// Failure lines of every session in the process, per kind: sync.log_lines_per_key per
// sync.log_interval_ms (set from the options of each new session).
RateLimitedLog& session_log() {
  static RateLimitedLog log(10, std::chrono::seconds(10));
  return log;
}

std::int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Per-project state of one session.
struct ProjectSync {
  ProjectId id;
  storage::VersionVector mine;      // our vector (cached; refreshed on local change)
  storage::VersionVector peer;      // what the peer is known to hold (VV, ACK, its batches)
  storage::VersionVector sent;      // highest seq sent per author (in flight or acked)
  storage::VersionVector peer_has;  // what the peer announced (VV, NEW): to-receive estimate
  storage::VersionVector peer_vv;   // the peer's VV as sent (TIPS follows its order)
  // What the peer showed it holds (its VV and NEW, batches it sent, its ACKs of ours; never
  // what we offered), kept in the store by record_holds(); `recorded`: what the store has.
  storage::VersionVector holds;
  storage::VersionVector recorded;
  bool holds_dirty = false;  // `holds` rose (or `mine` did) since the last record_holds()
  bool vv_received = false;
  bool done_owed = false;  // send DONE once everything for this project is sent
  bool peer_done = false;  // the peer sent DONE and announced nothing since
  bool was_in_sync = false;
  std::uint32_t unacked = 0;
  // Authors whose log the peer holds in another version (docs/storage.md "One identity,
  // one history"): neither sent nor taken on this session.
  std::set<DeviceId> diverged;
  ProjectProgress stats;
  std::int64_t rate_sample_ms = 0;
  std::uint64_t rate_sample_bytes = 0;
};

}  // namespace

struct Session::Impl {
  storage::Store& store;
  SessionParams params;
  DecodeLimits limits;
  FrameDecoder decoder;
  SessionState state = SessionState::hello;
  Bytes control;  // small frames waiting to be sent (ahead of batches)
  std::optional<Error> error;
  Hello peer_hello;
  bool have_peer = false;
  std::uint16_t protocol = 0;
  std::uint32_t peer_max_frame = 0;
  std::uint32_t inflight = 0;  // unacknowledged batches over all projects
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::map<ProjectId, ProjectSync> projects;  // common projects only
  std::deque<ProjectId> rr;                   // round robin over projects for fairness
  // Joining with an invite (sync/join.hpp), joiner side: the code, JOIN sent and not yet
  // answered, the peer's PROJECTS held back until JOINED made the project ours, the outcome.
  std::optional<InviteCode> join_code;
  bool join_pending = false;
  std::optional<Bytes> held_projects;
  std::optional<Result<storage::ProjectInfo>> join_result;
  // Trust policy "ask": proven projects held until approve(), and the peer's VV for each.
  std::set<ProjectId> pending;
  std::map<ProjectId, Bytes> held_vv;
  std::map<ProjectId, Bytes> held_tips;
  // A retired identity of ours was offered at seq 0 (its whole log asked for); cleared once
  // a project is in sync unless a new divergence of one was seen meanwhile.
  std::set<DeviceId> asked_whole_log;
  bool retired_diverged = false;

  Impl(storage::Store& s, SessionParams p)
      : store(s), params(std::move(p)), decoder(params.options.max_frame_bytes) {
    limits.max_projects = params.options.max_projects;
    limits.max_body_bytes = store.options().max_body_bytes;
    if (!params.clock) params.clock = system_now_ms;
    session_log().set_limits(params.options.log_lines_per_key,
                             std::chrono::milliseconds(params.options.log_interval_ms));
  }

  std::string peer_label() const {
    return have_peer ? peer_hello.device.short_str() : std::string("(unknown peer)");
  }

  void fail(Error e, bool tell_peer) {
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

  // --- input ---

  void receive(ByteView bytes) {
    if (finished()) return;
    bytes_received += bytes.size();
    decoder.feed(bytes);
    while (!finished()) {
      auto next = decoder.next();
      if (!next.ok()) {
        fail(next.error(), true);
        break;
      }
      if (!next.value()) break;
      handle(*next.value());
    }
    record_holds();  // what this input showed the peer holds: at most one write per project
  }

  // --- what the peer holds, kept across sessions (Store::note_peer_holds) ---

  // What the store already knows the peer holds of a project (so an unchanged VV writes
  // nothing). A record that does not read back is rewritten by the next note.
  storage::VersionVector known_holds(const ProjectId& id) const {
    auto held = store.peer_holds(peer_hello.device, id);
    return held.ok() ? std::move(*held) : storage::VersionVector{};
  }

  // The peer showed it holds `a`'s log up to `seq`.
  static void shows(ProjectSync& ps, const DeviceId& a, std::uint64_t seq) {
    if (seq <= get(ps.holds, a)) return;
    ps.holds[a] = seq;
    ps.holds_dirty = true;
  }

  // Records what the peer showed it holds since the last call: one short store transaction
  // per project that learnt something, none when nothing rose. Left out (for now): authors
  // of which the peer holds another history (FORKED/TIPS), and authors whose log we do not
  // hold yet (the store keeps only the project's authors; recorded once we hold them).
  // A failure costs the record only, never the session.
  void record_holds() {
    if (!have_peer) return;
    for (auto& [id, ps] : projects) {
      if (!ps.holds_dirty) continue;
      ps.holds_dirty = false;
      storage::VersionVector rise;
      for (const auto& [a, seq] : ps.holds)
        if (seq > get(ps.recorded, a) && get(ps.mine, a) > 0 && !ps.diverged.count(a))
          rise[a] = seq;
      if (rise.empty()) continue;
      if (auto st = store.note_peer_holds(peer_hello.device, id, rise); !st) {
        session_log().log(LogLevel::warn, "cannot record what a peer holds",
                          fmt::format("sync: cannot record what {} holds of {}: {}", peer_label(),
                                      id.str(), st.error().message));
        continue;
      }
      for (const auto& [a, seq] : rise) raise(ps.recorded, a, seq);
    }
  }

  // A session with the peer is up now (its record's last_seen_ms, when it is a kept peer).
  void note_seen() {
    if (auto st = store.note_peer_seen(peer_hello.device, params.clock()); !st)
      spdlog::debug("sync: cannot note when {} was seen: {}", peer_label(), st.error().message);
  }

  bool finished() const { return state == SessionState::failed || state == SessionState::closed; }

  void handle(const Frame& f) {
    auto type = static_cast<MsgType>(f.type);
    if (type == MsgType::error) return on_error(f.payload);
    if (type == MsgType::ping) return;
    if (state == SessionState::hello) {
      if (type != MsgType::hello)
        return fail(make_error(Errc::failed_precondition, "expected HELLO first"), true);
      return on_hello(f.payload);
    }
    if (f.type == kMsgJoin) return on_join(f.payload);
    if (f.type == kMsgJoined) return on_joined(f.payload);
    if (state == SessionState::proving) {
      if (type != MsgType::projects)
        return fail(make_error(Errc::failed_precondition, "expected PROJECTS after HELLO"), true);
      if (join_pending) return hold_projects(f.payload);
      return on_projects(f.payload);
    }
    switch (type) {
      case MsgType::vv: return on_vector(f.payload, false);
      case MsgType::new_heads: return on_vector(f.payload, true);
      case MsgType::batch: return on_batch(f.payload, f.payload.size() + kFrameHeaderBytes);
      case MsgType::ack: return on_ack(f.payload);
      case MsgType::done: return on_done(f.payload);
      case MsgType::projects: return on_projects(f.payload);
      case MsgType::tips: return on_tips(f.payload);
      case MsgType::forked: return on_forked(f.payload);
      case MsgType::hello:
        return fail(make_error(Errc::failed_precondition,
                               std::string(msg_type_name(f.type)) + " sent twice"),
                    true);
      default: break;
    }
    if (f.type & kIgnorableTypeBit) return;  // an optional extension we do not know
    fail(make_error(Errc::unsupported, "unknown message type " + std::to_string(f.type)), true);
  }

  void on_error(ByteView payload) {
    auto m = decode_error(payload);
    Error e = m.ok() ? make_error(from_wire_code(m->code),
                                  (join_pending ? "the inviter refused: " : "peer: ") + m->reason)
                     : make_error(Errc::invalid_argument, "peer sent a malformed ERROR");
    fail(std::move(e), false);
  }

  void on_hello(ByteView payload) {
    auto m = decode_hello(payload);
    if (!m.ok()) return fail(m.error(), true);
    std::uint16_t lo = std::max(m->min_version, kProtocolMin);
    std::uint16_t hi = std::min(m->max_version, kProtocolMax);
    if (lo > hi)
      return fail(
          make_error(Errc::unsupported,
                     "no common protocol version (peer " + std::to_string(m->min_version) + ".." +
                         std::to_string(m->max_version) + ", we " + std::to_string(kProtocolMin) +
                         ".." + std::to_string(kProtocolMax) + ")"),
          true);
    if (params.authenticated_peer && *params.authenticated_peer != m->device)
      return fail(make_error(Errc::unauthenticated, "HELLO device id differs from the TLS key"),
                  true);
    if (m->device == store.device_id())
      return fail(make_error(Errc::failed_precondition, "connected to ourselves"), true);
    peer_hello = std::move(*m);
    have_peer = true;
    protocol = hi;
    peer_max_frame = peer_hello.max_frame_bytes == 0
                         ? params.options.max_frame_bytes
                         : std::min(peer_hello.max_frame_bytes, params.options.max_frame_bytes);
    state = SessionState::proving;
    if (join_code && !join_result) return send_join();  // PROJECTS follows JOINED
    send_projects();
  }

  // --- joining (docs/protocol.md "Joining") ---

  // Joiner: JOIN proves we hold the invite, bound to this channel and our key.
  void send_join() {
    if (peer_hello.device != join_code->inviter)
      return fail(
          make_error(Errc::unauthenticated, "this peer is not the device that made the invite"),
          true);
    encode_join(control, make_join(*join_code, params.channel_binding, store.device_id()));
    join_pending = true;
  }

  // Joiner, still proving: the inviter's proofs cover the project we are about to receive.
  void hold_projects(ByteView payload) {
    if (held_projects)
      return fail(make_error(Errc::failed_precondition, "PROJECTS sent twice"), true);
    held_projects = Bytes(payload.begin(), payload.end());
  }

  // Inviter: check the proof, redeem the invite (single use, expiry) and hand over the
  // project. Any refusal ends the session, so guessing costs a connection per try.
  void on_join(ByteView payload) {
    auto m = decode_join(payload);
    if (!m.ok()) return fail(m.error(), true);
    auto r = answer_join(store, *m, params.channel_binding, peer_hello.device, params.clock());
    if (!r.ok()) return fail(r.error(), true);
    spdlog::info("sync: {} ({}) joined project {} ({}) as {}", peer_label(), peer_hello.device_name,
                 r->project.name, r->project.id.str(), storage::role_name(r->role));
    encode_joined(control, *r);
  }

  // Joiner: add the project, then prove it like any other (PROJECTS, held proofs).
  void on_joined(ByteView payload) {
    if (!join_pending)
      return fail(make_error(Errc::failed_precondition, "JOINED without a JOIN"), true);
    auto m = decode_joined(payload);
    if (!m.ok()) return fail(m.error(), true);
    auto added = accept_joined(store, *join_code, *m);
    if (!added.ok()) return fail(added.error(), true);
    join_pending = false;
    spdlog::info("sync: joined project {} ({}) via {} as {}", added->name, added->id.str(),
                 peer_label(), storage::role_name(m->role));
    join_result = std::move(added);
    params.peer_approved = true;  // its key was pinned by the code we chose to use: trusted
    if (state == SessionState::active) return reannounce();
    send_projects();
    if (held_projects) {
      Bytes held = std::move(*held_projects);
      held_projects.reset();
      on_projects(held);
    }
  }

  void send_projects() {
    Projects m;
    auto list = store.list_projects();
    if (!list.ok()) return fail(list.error(), true);
    for (const auto& p : *list) {
      if (m.proofs.size() >= params.options.max_projects) break;
      auto secret = store.project_secret(p.id);
      if (!secret.ok()) continue;
      m.proofs.push_back(membership_proof(*secret, params.channel_binding, store.device_id()));
    }
    // Random proofs (they match nothing) up to a whole bucket: the count does not leak.
    std::size_t padded = std::max<std::size_t>(
        (m.proofs.size() + kProjectsBucket - 1) / kProjectsBucket * kProjectsBucket,
        kProjectsBucket);
    padded = std::max(std::min<std::size_t>(padded, params.options.max_projects), m.proofs.size());
    while (m.proofs.size() < padded) {
      crypto::Digest junk{};
      crypto::random_fill(junk);
      m.proofs.push_back(junk);
    }
    // Shuffled too: where a peer finds a proof it can check says nothing about the others.
    std::uint64_t seed = 0;
    crypto::random_fill(std::span(reinterpret_cast<std::uint8_t*>(&seed), sizeof seed));
    std::shuffle(m.proofs.begin(), m.proofs.end(), std::mt19937_64(seed));
    encode_projects(control, m);
  }

  // PROJECTS: the first one completes the handshake; a later one (the peer joined a project
  // while connected) adds the projects that became common, answered with our own proofs.
  void on_projects(ByteView payload) {
    bool initial = state == SessionState::proving;
    auto m = decode_projects(payload, limits);
    if (!m.ok()) return fail(m.error(), true);
    auto list = store.list_projects();
    if (!list.ok()) return fail(list.error(), true);
    std::vector<ProjectId> added;
    for (const auto& p : *list) {
      if (projects.count(p.id)) continue;
      auto secret = store.project_secret(p.id);
      if (!secret.ok()) continue;
      auto expect = membership_proof(*secret, params.channel_binding, peer_hello.device);
      for (const auto& proof : m->proofs) {
        if (crypto::constant_time_equal(ByteView(proof), ByteView(expect))) {
          if (peer_removed(p.id)) {
            spdlog::warn("sync: {} was removed from project {}: not syncing it", peer_label(),
                         p.id.str());
            break;
          }
          if (must_ask(p)) break;
          ProjectSync ps;
          ps.id = p.id;
          ps.stats.project = p.id;
          projects.emplace(p.id, std::move(ps));
          rr.push_back(p.id);
          added.push_back(p.id);
          break;
        }
      }
    }
    state = SessionState::active;
    if (projects.empty() && pending.empty()) {
      // Nothing to share: say so without naming anything, then end.
      return fail(make_error(Errc::permission_denied, "no common project"), true);
    }
    if (initial) {
      spdlog::info("sync: session with {} ({}) active, {} common project(s)", peer_label(),
                   peer_hello.device_name, projects.size());
    } else if (!added.empty()) {
      spdlog::info("sync: {} more common project(s) with {}", added.size(), peer_label());
      send_projects();  // the peer learns that we hold them too (it stops when nothing is new)
    }
    if (initial) note_seen();
    for (const auto& id : added) {
      auto vv = store.version_vector(id);
      if (!vv.ok()) return fail(vv.error(), true);
      projects.at(id).mine = std::move(*vv);
      projects.at(id).recorded = known_holds(id);
      send_vv(projects.at(id));
      if (finished()) return;
    }
  }

  // --- trust policy (docs/protocol.md "Trust") ---

  // "ask": a device that proves `p` but is neither its creator, a listed member nor
  // approved waits for the user. Records it as pending (and says so once) when it must.
  bool must_ask(const storage::ProjectInfo& p) {
    if (params.options.trust_policy != TrustPolicy::ask || params.peer_approved) return false;
    if (p.creator == peer_hello.device) return false;
    auto m = store.member(p.id, peer_hello.device);
    if (m.ok() && m->has_value() && (*m)->role != storage::Role::removed) return false;
    if (pending.insert(p.id).second)
      spdlog::warn(
          "sync: {} ({}) proves project {} but is not a member (trust_policy = ask): held until "
          "approved (syncctl peers approve; verification code in syncctl peers show)",
          peer_label(), peer_hello.device_name, p.name);
    return true;
  }

  // Pending projects that may now sync (approved, or the device became a listed member).
  void admit_pending() {
    if (state != SessionState::active || pending.empty()) return;
    auto list = store.list_projects();
    if (!list.ok()) return fail(list.error(), true);
    std::vector<ProjectId> ids;
    for (const auto& p : *list) {
      if (!pending.count(p.id) || must_ask(p)) continue;
      pending.erase(p.id);
      ids.push_back(p.id);
    }
    if (ids.empty()) return;
    spdlog::info("sync: {} admitted: {} more project(s)", peer_label(), ids.size());
    for (const auto& id : ids) {
      auto vv = store.version_vector(id);
      if (!vv.ok()) return fail(vv.error(), true);
      ProjectSync ps;
      ps.id = id;
      ps.stats.project = id;
      ps.mine = std::move(*vv);
      ps.recorded = known_holds(id);
      auto& placed = projects.emplace(id, std::move(ps)).first->second;
      rr.push_back(id);
      send_vv(placed);
      if (finished()) return;
    }
    for (const auto& id : ids) {
      auto held = held_vv.find(id);
      if (held == held_vv.end()) continue;
      Bytes payload = std::move(held->second);
      held_vv.erase(held);
      on_vector(payload, false);
      if (finished()) break;
      if (auto t = held_tips.find(id); t != held_tips.end()) {
        Bytes tips = std::move(t->second);
        held_tips.erase(t);
        on_tips(tips);
        if (finished()) break;
      }
    }
    record_holds();  // the held VVs
  }

  // The project's membership records say the peer was removed (revoked): it gets nothing more.
  bool peer_removed(const ProjectId& project) const {
    auto m = store.member(project, peer_hello.device);
    return m.ok() && m->has_value() && (*m)->role == storage::Role::removed;
  }

  // Our project list changed (a project was joined): tell the peer.
  void reannounce() {
    if (state == SessionState::active) send_projects();
  }

  ProjectSync* project_of(const ProjectId& id, std::string_view what) {
    auto it = projects.find(id);
    if (it == projects.end()) {
      fail(make_error(Errc::permission_denied, std::string(what) + " for a project not proven"),
           true);
      return nullptr;
    }
    return &it->second;
  }

  // VV then TIPS. A retired identity of ours that may have another history is offered at
  // seq 0, so the peer sends its whole log and the point where the histories part is found.
  void send_vv(ProjectSync& ps) {
    auto tips = store.version_tips(ps.id);
    if (!tips.ok()) return fail(tips.error(), true);
    VectorMsg vv{ps.id, {}};
    TipsMsg tm{ps.id, {}};
    for (const auto& [a, tip] : *tips) {  // both in ascending device id order
      vv.heads[a] = tip.seq;
      tm.chain_prefixes.push_back(chain_prefix(tip.chain));
      if (tip.seq == 0 && store.holds_retired_key(a)) asked_whole_log.insert(a);
    }
    encode_vector(control, MsgType::vv, vv);
    encode_tips(control, tm);
  }

  // Two histories under one device key (docs/storage.md "One identity, one history").
  void diverge(ProjectSync& ps, const DeviceId& a, std::uint64_t seq, bool tell_peer) {
    if (ps.diverged.count(a)) return;
    if (tell_peer) encode_forked(control, ForkedMsg{ps.id, a, seq});
    if (a == store.device_id()) {
      store.report_identity_conflict("peer " + peer_label() +
                                     " holds another version of our log (seq " +
                                     std::to_string(seq) + ")");
      return fail(make_error(Errc::unavailable,
                             "another copy of this device wrote under its identity: renewing it"),
                  false);
    }
    if (store.holds_retired_key(a)) {
      if (asked_whole_log.count(a)) return;  // its whole log is on its way: compared as it comes
      // An earlier identity of ours: ask for its whole log on the next session and
      // re-publish what differs. Ending this one makes the next one start now.
      store.mark_suspect(a);
      retired_diverged = true;
      spdlog::warn(
          "sync: {} holds another history of our earlier identity {} (from seq {}): "
          "reconnecting to re-publish it",
          peer_label(), a.short_str(), seq);
      return fail(make_error(Errc::unavailable, "re-reading an earlier identity's log"), false);
    }
    ps.diverged.insert(a);
    (void)store.record_fork(ps.id, a, seq);
    spdlog::warn(
        "sync: {} holds another version of the log of {} (differs at or before seq {}); "
        "that device must reconnect to repair it, everything else keeps syncing",
        peer_label(), a.short_str(), seq);
    update_sync_flag(ps);
  }

  void on_tips(ByteView payload) {
    auto m = decode_tips(payload, limits);
    if (!m.ok()) return fail(m.error(), true);
    if (pending.count(m->project)) {  // held with its VV until approval
      held_tips[m->project] = Bytes(payload.begin(), payload.end());
      return;
    }
    ProjectSync* ps = project_of(m->project, "TIPS");
    if (!ps) return;
    if (!ps->vv_received || m->chain_prefixes.size() != ps->peer_vv.size())
      return fail(make_error(Errc::invalid_argument, "TIPS does not match the VV before it"), true);
    std::size_t i = 0;
    for (const auto& [a, seq] : ps->peer_vv) {
      std::uint64_t prefix = m->chain_prefixes[i++];
      if (seq == 0) continue;
      auto ours = store.chain_at(ps->id, a, seq);
      if (!ours.ok()) return fail(ours.error(), true);
      if (ours->has_value() ? chain_prefix(**ours) != prefix : a == store.device_id()) {
        diverge(*ps, a, seq, true);
        if (finished()) return;
      }
    }
  }

  void on_forked(ByteView payload) {
    auto m = decode_forked(payload);
    if (!m.ok()) return fail(m.error(), true);
    ProjectSync* ps = project_of(m->project, "FORKED");
    if (!ps) return;
    diverge(*ps, m->author, m->seq, false);
  }

  void on_vector(ByteView payload, bool is_new) {
    auto m = decode_vector(payload, limits);
    if (!m.ok()) return fail(m.error(), true);
    if (pending.count(m->project)) {  // held for approval: its VV waits, NEW is moot
      if (!is_new && !held_vv.emplace(m->project, Bytes(payload.begin(), payload.end())).second)
        return fail(make_error(Errc::failed_precondition, "VV sent twice"), true);
      return;
    }
    ProjectSync* ps = project_of(m->project, is_new ? "NEW" : "VV");
    if (!ps) return;
    if (!is_new) {
      if (ps->vv_received)
        return fail(make_error(Errc::failed_precondition, "VV sent twice"), true);
      ps->vv_received = true;
      ps->peer_vv = m->heads;
      ps->peer = m->heads;
      ps->sent = m->heads;
      ps->done_owed = true;
    }
    for (const auto& [a, seq] : m->heads) {
      raise(ps->peer_has, a, seq);
      shows(*ps, a, seq);  // a suspect author the peer asks for whole is at 0: no rise
    }
    if (is_new) ps->peer_done = false;
    // The peer holds more of our own log than we do: another copy of this device wrote it.
    if (auto own = m->heads.find(store.device_id()); own != m->heads.end() && own->second > 0) {
      auto ours = store.chain_at(ps->id, own->first, own->second);
      if (!ours.ok()) return fail(ours.error(), true);
      if (!ours->has_value()) return diverge(*ps, own->first, own->second, true);
    }
    update_sync_flag(*ps);
  }

  void on_batch(ByteView payload, std::size_t frame_bytes) {
    auto m = decode_batch(payload, limits);
    if (!m.ok()) return fail(m.error(), true);
    ProjectSync* ps = project_of(m->project, "BATCH");
    if (!ps) return;
    if (!ps->vv_received)
      return fail(make_error(Errc::failed_precondition, "BATCH before VV"), true);
    if (m->log.entries.empty())
      return fail(make_error(Errc::invalid_argument, "empty BATCH"), true);
    if (ps->diverged.count(m->log.author)) {  // already in flight when we said FORKED
      auto head = store.version_vector(m->project);
      if (!head.ok()) return fail(head.error(), true);
      encode_ack(control, Ack{m->project, m->log.author, get(*head, m->log.author)});
      return;
    }
    auto r = store.apply_log(m->project, m->log);
    if (!r.ok()) {
      Error e = r.error();
      e.message = "batch of " + std::to_string(m->log.entries.size()) + " entries by " +
                  m->log.author.short_str() + " rejected: " + e.message;
      return fail(std::move(e), true);
    }
    const DeviceId& a = m->log.author;
    std::uint64_t last = m->log.entries.back().seq;
    if (r->identity_conflict || (r->diverged_at && !r->republished)) {
      encode_ack(control, Ack{m->project, a, r->head});
      diverge(*ps, a, *r->diverged_at, true);
      return;
    }
    if (r->republished && last >= get(ps->peer_has, a)) {
      // The peer's whole history of an earlier identity of ours is re-published in our
      // current log; its copy of that log stays different from ours, so stop comparing.
      encode_ack(control, Ack{m->project, a, r->head});
      encode_forked(control, ForkedMsg{m->project, a, *r->diverged_at});
      ps->diverged.insert(a);
      ps->stats.received += m->log.entries.size();
      ps->stats.applied += r->relogged;
      update_sync_flag(*ps);
      return;
    }
    raise(ps->peer, a, last);
    raise(ps->peer_has, a, last);
    shows(*ps, a, last);  // it sent them: it holds them (the same history as ours)
    raise(ps->sent, a, last);
    raise(ps->mine, a, r->head);
    ps->holds_dirty = true;  // a claim in its VV for an author new here may be kept now
    ps->stats.received += m->log.entries.size();
    ps->stats.applied += r->applied;
    ps->stats.bytes_received += frame_bytes;
    sample_rate(*ps);
    encode_ack(control, Ack{m->project, a, r->head});
    update_sync_flag(*ps);
  }

  void on_ack(ByteView payload) {
    auto m = decode_ack(payload);
    if (!m.ok()) return fail(m.error(), true);
    ProjectSync* ps = project_of(m->project, "ACK");
    if (!ps) return;
    if (inflight == 0 || ps->unacked == 0)
      return fail(make_error(Errc::failed_precondition, "ACK without a batch in flight"), true);
    --inflight;
    --ps->unacked;
    raise(ps->peer, m->author, m->head);
    shows(*ps, m->author, m->head);  // its head after applying our batch
    raise(ps->sent, m->author, m->head);
    update_sync_flag(*ps);
  }

  void on_done(ByteView payload) {
    auto m = decode_done(payload);
    if (!m.ok()) return fail(m.error(), true);
    ProjectSync* ps = project_of(m->project, "DONE");
    if (!ps) return;
    ps->peer_done = true;
    update_sync_flag(*ps);
  }

  // --- output ---

  std::uint64_t next_from(const ProjectSync& ps, const DeviceId& a) const {
    return std::max(get(ps.sent, a), get(ps.peer, a));
  }

  bool has_more(const ProjectSync& ps) const {
    for (const auto& [a, seq] : ps.mine)
      if (seq > next_from(ps, a) && !ps.diverged.count(a)) return true;
    return false;
  }

  std::uint64_t to_send(const ProjectSync& ps) const {
    std::uint64_t n = 0;
    for (const auto& [a, seq] : ps.mine)
      if (!ps.diverged.count(a)) n += seq > get(ps.peer, a) ? seq - get(ps.peer, a) : 0;
    return n;
  }

  std::uint64_t to_receive(const ProjectSync& ps) const {
    std::uint64_t n = 0;
    for (const auto& [a, seq] : ps.peer_has)
      if (!ps.diverged.count(a)) n += seq > get(ps.mine, a) ? seq - get(ps.mine, a) : 0;
    return n;
  }

  void update_sync_flag(ProjectSync& ps) {
    bool now = ps.vv_received && ps.peer_done && !ps.done_owed && ps.unacked == 0 && !has_more(ps);
    if (now && !ps.was_in_sync) {
      ps.stats.last_sync_ms = params.clock();
      // The whole log of an earlier identity was compared with this peer's.
      if (!asked_whole_log.empty() && !retired_diverged) {
        store.clear_suspects();
        asked_whole_log.clear();
      }
    }
    ps.was_in_sync = now;
  }

  void sample_rate(ProjectSync& ps) {
    std::int64_t now = params.clock();
    std::uint64_t total = ps.stats.bytes_sent + ps.stats.bytes_received;
    if (ps.rate_sample_ms == 0) {
      ps.rate_sample_ms = now;
      ps.rate_sample_bytes = total;
    } else if (now - ps.rate_sample_ms >= 1000) {
      ps.stats.rate_bytes_per_s =
          double(total - ps.rate_sample_bytes) * 1000.0 / double(now - ps.rate_sample_ms);
      ps.rate_sample_ms = now;
      ps.rate_sample_bytes = total;
    }
  }

  // Appends one BATCH for `ps` if an author has more; false when there is nothing to send.
  bool produce_batch(ProjectSync& ps, Bytes& out) {
    for (const auto& [a, head] : ps.mine) {
      std::uint64_t from = next_from(ps, a);
      if (head <= from || ps.diverged.count(a)) continue;
      std::uint32_t max_entries = params.options.batch_entries;
      for (int attempt = 0; attempt < 2; ++attempt) {
        auto log = store.read_log(ps.id, a, from, max_entries, params.options.batch_bytes);
        if (!log.ok()) {
          fail(log.error(), true);
          return false;
        }
        if (log->entries.empty()) {
          // The cached vector promised more than the store returns: trust the store.
          spdlog::warn("sync: no log entries for {} after {} (head {})", a.short_str(), from, head);
          ps.mine[a] = from;
          break;
        }
        std::uint64_t last = log->entries.back().seq;
        std::size_t before = out.size();
        encode_batch(out, Batch{ps.id, std::move(*log)});
        std::size_t frame = out.size() - before;
        if (frame > peer_max_frame) {
          out.resize(before);
          if (max_entries > 1) {
            max_entries = 1;  // the smallest run the store can give: up to the next checkpoint
            continue;
          }
          fail(make_error(Errc::too_large, "a log run of " + a.short_str() +
                                               " does not fit in one frame (" +
                                               std::to_string(frame) + " bytes)"),
               true);
          return false;
        }
        ps.sent[a] = last;
        ps.stats.sent += last - from;
        ps.stats.bytes_sent += frame;
        sample_rate(ps);
        ++ps.unacked;
        ++inflight;
        return true;
      }
    }
    return false;
  }

  Bytes take_output(std::size_t max_bytes) {
    Bytes out = std::move(control);
    control.clear();
    if (state != SessionState::active) return out;
    bool progress = true;
    while (progress && out.size() < max_bytes && inflight < params.options.window_batches) {
      progress = false;
      for (std::size_t i = 0; i < rr.size() && !finished(); ++i) {
        ProjectId id = rr.front();
        rr.pop_front();
        rr.push_back(id);
        ProjectSync& ps = projects.at(id);
        if (!ps.vv_received) continue;
        if (produce_batch(ps, out)) {
          progress = true;
          break;
        }
      }
      if (finished()) {  // produce_batch failed: only the ERROR goes out now
        out.insert(out.end(), control.begin(), control.end());
        control.clear();
        bytes_sent += out.size();
        return out;
      }
    }
    for (auto& [id, ps] : projects) {
      if (ps.vv_received && ps.done_owed && !has_more(ps)) {
        encode_done(out, Done{id});
        ps.done_owed = false;
        update_sync_flag(ps);
      }
    }
    bytes_sent += out.size();
    return out;
  }

  void notify_local_change(const ProjectId& id) {
    if (state != SessionState::active) return;
    if (pending.count(id)) return admit_pending();  // a membership record may have arrived
    auto it = projects.find(id);
    if (it == projects.end()) return;
    ProjectSync& ps = it->second;
    if (peer_removed(id))  // the removal just arrived (here or by relay)
      return fail(make_error(Errc::permission_denied, "device removed from the project"), true);
    auto vv = store.version_vector(id);
    if (!vv.ok()) return fail(vv.error(), true);
    ps.mine = std::move(*vv);
    ps.holds_dirty = true;  // what the peer claims of an author we now hold may be kept now
    record_holds();
    if (!ps.vv_received) return;  // the initial exchange will cover it
    VectorMsg announce{id, {}};
    for (const auto& [a, seq] : ps.mine)
      if (seq > next_from(ps, a)) announce.heads[a] = seq;
    if (announce.heads.empty()) return;
    encode_vector(control, MsgType::new_heads, announce);
    ps.done_owed = true;
    update_sync_flag(ps);
  }
};

Session::Session(storage::Store& store, SessionParams params)
    : impl_(std::make_unique<Impl>(store, std::move(params))) {}
Session::~Session() = default;

void Session::start() {
  Hello h;
  h.device = impl_->store.device_id();
  h.device_name = impl_->params.device_name;
  h.max_frame_bytes = impl_->params.options.max_frame_bytes;
  encode_hello(impl_->control, h);
}

void Session::receive(ByteView bytes) { impl_->receive(bytes); }
Bytes Session::take_output(std::size_t max_bytes) { return impl_->take_output(max_bytes); }
void Session::notify_local_change(const ProjectId& project) { impl_->notify_local_change(project); }

void Session::projects_changed() { impl_->reannounce(); }

Status Session::join(const InviteCode& code) {
  Impl& im = *impl_;
  if (im.join_pending || (im.join_code && !im.join_result))
    return make_error(Errc::failed_precondition, "a join is already under way on this session");
  if (im.state != SessionState::hello && im.state != SessionState::active)
    return make_error(Errc::failed_precondition, std::string("cannot join while the session is ") +
                                                     std::string(session_state_name(im.state)));
  im.join_code = code;
  im.join_result.reset();
  if (im.state == SessionState::active) im.send_join();  // else on_hello sends it
  return {};
}

const std::optional<Result<storage::ProjectInfo>>& Session::join_result() const {
  return impl_->join_result;
}

std::vector<ProjectId> Session::pending_projects() const {
  return {impl_->pending.begin(), impl_->pending.end()};
}

void Session::approve() {
  impl_->params.peer_approved = true;
  impl_->admit_pending();
}

void Session::ping() {
  if (!impl_->finished()) encode_ping(impl_->control);
}

void Session::transport_closed(std::string reason) {
  if (impl_->finished()) return;
  impl_->fail(make_error(Errc::unavailable, "connection lost: " + reason), false);
}

void Session::abort(Error error) { impl_->fail(std::move(error), true); }

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
