// The log exchange of a session, per common project (docs/protocol.md section 3, VV to DONE):
// VV and TIPS both ways, then each side streams, per author in log order, the entries the
// other lacks as BATCH frames; the receiver verifies and applies them (Store::apply_log) and
// answers ACK. At most window_batches unacknowledged batches are in flight over the session,
// and batches are read from the store only when take_output() asks, so memory stays bounded
// however slow the peer is. DONE marks "sent all I had"; while the session stays up,
// notify_local_change() pushes new versions (NEW + BATCH). Two histories under one device
// key are noticed here (TIPS, FORKED; docs/storage.md "One identity, one history"), and what
// the peer showed it holds is kept in the store (record_holds()).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "sync/session_impl.hpp"

namespace fieldsync::sync {

std::uint64_t Session::Impl::get(const storage::VersionVector& v, const DeviceId& a) {
  auto it = v.find(a);
  return it == v.end() ? 0 : it->second;
}

void Session::Impl::raise(storage::VersionVector& v, const DeviceId& a, std::uint64_t seq) {
  auto& cur = v[a];
  cur = std::max(cur, seq);
}

// --- what the peer holds, kept across sessions (Store::note_peer_holds) ---

// What the store already knows the peer holds of a project (so an unchanged VV writes
// nothing). A record that does not read back is rewritten by the next note.
storage::VersionVector Session::Impl::known_holds(const ProjectId& id) const {
  auto held = store.peer_holds(peer_hello.device, id);
  return held.ok() ? std::move(*held) : storage::VersionVector{};
}

// The peer showed it holds `a`'s log up to `seq`.
void Session::Impl::shows(ProjectSync& ps, const DeviceId& a, std::uint64_t seq) {
  if (seq <= get(ps.holds, a)) return;
  ps.holds[a] = seq;
  ps.holds_dirty = true;
}

// Records what the peer showed it holds since the last call: one short store transaction
// per project that learnt something, none when nothing rose. Left out (for now): authors
// of which the peer holds another history (FORKED/TIPS), and authors whose log we do not
// hold yet (the store keeps only the project's authors; recorded once we hold them).
// A failure costs the record only, never the session.
void Session::Impl::record_holds() {
  if (!have_peer) return;
  for (auto& [id, ps] : projects) {
    if (!ps.holds_dirty) continue;
    ps.holds_dirty = false;
    storage::VersionVector rise;
    for (const auto& [a, seq] : ps.holds)
      if (seq > get(ps.recorded, a) && get(ps.mine, a) > 0 && !ps.diverged.count(a)) rise[a] = seq;
    if (rise.empty()) continue;
    // What follows the write: here, or once the writer thread committed it.
    auto recorded = [this, id = id, rise](const Status& written) {
      if (!written) {
        session_log().log(LogLevel::warn, "cannot record what a peer holds",
                          fmt::format("sync: cannot record what {} holds of {}: {}", peer_label(),
                                      id.str(), written.error().message));
        return;
      }
      if (auto it = projects.find(id); it != projects.end())
        for (const auto& [a, seq] : rise) raise(it->second.recorded, a, seq);
    };
    if (!params.offload) {
      recorded(store.note_peer_holds(peer_hello.device, id, rise));
      continue;
    }
    // A write: on the writer thread too (its fsync stays off the session's thread).
    auto result = std::make_shared<Status>();
    storage::Store& st = store;
    params.offload([&st, peer = peer_hello.device, id = id, rise,
                    result] { *result = st.note_peer_holds(peer, id, rise); },
                   [alive = alive, result, recorded](Status committed) {
                     if (*alive) recorded(committed ? *result : committed);
                   });
  }
}

// --- input ---

Session::Impl::ProjectSync* Session::Impl::project_of(const ProjectId& id, std::string_view what) {
  auto it = projects.find(id);
  if (it == projects.end()) {
    if (refused.count(id)) return nullptr;  // sent before the peer learnt: dropped
    fail(make_error(Errc::permission_denied, std::string(what) + " for a project not proven"),
         true);
    return nullptr;
  }
  return &it->second;
}

// VV then TIPS. A retired identity of ours that may have another history is offered at
// seq 0, so the peer sends its whole log and the point where the histories part is found.
void Session::Impl::send_vv(ProjectSync& ps) {
  auto tips = store.version_tips(ps.id);
  if (!tips.ok()) return fail(tips.error(), true);
  // Versions left out under an earlier subscription are asked for again from where they
  // start (the VV is lowered there).
  auto asked = store.request_vector(ps.id, peer_hello.device);
  if (!asked.ok()) return fail(asked.error(), true);
  if (subscriptions_enabled) {
    auto whole = store.whole_heads(ps.id);
    if (!whole.ok()) return fail(whole.error(), true);
    if (!ps.my_sub.everything() || !whole->empty() || !ps.my_selection.everything())
      encode_subscription(control, SubscriptionMsg{ps.id, ps.my_sub.canonical(), *whole,
                                                   ps.my_selection.canonical()});
  }
  VectorMsg vv{ps.id, {}};
  TipsMsg tm{ps.id, {}};
  for (auto [a, tip] : *tips) {  // both in ascending device id order
    if (std::uint64_t from = get(*asked, a); from < tip.seq) {
      auto chain = store.chain_at(ps.id, a, from);
      if (!chain.ok()) return fail(chain.error(), true);
      if (chain->has_value()) tip = storage::LogTip{from, **chain};
    }
    vv.heads[a] = tip.seq;
    tm.chain_prefixes.push_back(chain_prefix(tip.chain));
    if (tip.seq == 0 && store.holds_retired_key(a)) asked_whole_log.insert(a);
  }
  encode_vector(control, MsgType::vv, vv);
  encode_tips(control, tm);
}

void Session::Impl::diverge(ProjectSync& ps, const DeviceId& a, std::uint64_t seq, bool tell_peer) {
  if (ps.diverged.count(a)) return;
  if (tell_peer) encode_forked(control, ForkedMsg{ps.id, a, seq});
  if (a == store.device_id()) {
    store.report_identity_conflict("peer " + peer_label() +
                                   " holds another version of our log (seq " + std::to_string(seq) +
                                   ")");
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

void Session::Impl::on_tips(TipsMsg m) {
  if (pending.count(m.project)) {  // held with its VV until approval
    ProjectId id = m.project;
    held_tips[id] = std::move(m);
    return;
  }
  ProjectSync* ps = project_of(m.project, "TIPS");
  if (!ps) return;
  if (!ps->vv_received || m.chain_prefixes.size() != ps->peer_vv.size())
    return fail(make_error(Errc::invalid_argument, "TIPS does not match the VV before it"), true);
  std::size_t i = 0;
  for (const auto& [a, seq] : ps->peer_vv) {
    std::uint64_t prefix = m.chain_prefixes[i++];
    if (seq == 0) continue;
    auto ours = store.chain_at(ps->id, a, seq);
    if (!ours.ok()) return fail(ours.error(), true);
    if (ours->has_value() ? chain_prefix(**ours) != prefix : a == store.device_id()) {
      diverge(*ps, a, seq, true);
      if (finished()) return;
    }
  }
}

void Session::Impl::on_forked(ForkedMsg m) {
  ProjectSync* ps = project_of(m.project, "FORKED");
  if (!ps) return;
  diverge(*ps, m.author, m.seq, false);
}

// --- subscriptions ---

storage::Subscription Session::Impl::peer_subscription(const ProjectId& id) const {
  auto it = peer_subs.find(id);
  if (it == peer_subs.end()) return {};
  auto s = storage::Subscription::parse_canonical(it->second.subscription);  // checked on decode
  return s.ok() ? std::move(*s) : storage::Subscription{};
}

Result<storage::VersionVector> Session::Impl::offer_vector(ProjectSync& ps) {
  auto sub = store.subscription(ps.id);
  if (!sub.ok()) return sub.error();
  ps.my_sub = std::move(*sub);
  ps.peer_sub = peer_subscription(ps.id);
  auto selections = store.selections(ps.id);
  if (!selections.ok()) return selections.error();
  auto sel = selections->find(peer_hello.device);
  ps.my_selection = sel == selections->end() ? storage::Subscription{} : sel->second;
  if (!ps.authorities) {
    auto members = store.members(ps.id);
    if (!members.ok()) return members.error();
    ps.authorities.emplace();
    for (const auto& m : *members)
      if (m.role == storage::Role::coordinator) ps.authorities->insert(m.device);
  }
  // Both wanted, within the limits; else the selection alone (the peer drops on arrival
  // what its subscription does not want).
  auto given = storage::Subscription::intersect(ps.peer_sub, ps.my_selection);
  ps.given = given.ok() ? std::move(*given) : ps.my_selection;
  // Documents that left by clean-up (docs/storage.md "Clean-up after delivery"): their
  // entries are given to no one as left out. Peers are offered the whole log: one that holds
  // the cleaned range gets what follows it; for one that lacks it the store's log ends there
  // (produce_batch finds no entries and stops), and it takes the range from the hub or a relay.
  auto cleaned = store.cleaned(ps.id);
  if (!cleaned.ok()) return cleaned.error();
  ps.left_out_ok = ps.given.within(ps.my_sub) && !*cleaned;
  if (*cleaned && ps.my_sub.everything()) {
    auto vv = store.version_vector(ps.id);
    if (!vv.ok()) return vv.error();
    ps.have = *vv;
    return vv;
  }
  storage::Subscription gives;
  if (auto it = peer_subs.find(ps.id); it != peer_subs.end()) {
    auto g = storage::Subscription::parse_canonical(it->second.gives);  // checked on decode
    if (g.ok()) gives = std::move(*g);
  }
  ps.restricted = !ps.my_sub.within(gives);
  auto vv = store.version_vector(ps.id);
  if (!vv.ok()) return vv.error();
  ps.have = *vv;
  auto whole = store.whole_heads(ps.id);
  if (!whole.ok()) return whole.error();
  if (whole->empty()) return vv;
  // Authors whose left-out entries wait to be judged again (a widening) are given only as far
  // as they are whole even to a peer that takes left-out entries (Store::read_log stops there).
  storage::VersionVector asked;
  if (ps.left_out_ok) {
    auto r = store.request_vector(ps.id);
    if (!r.ok()) return r.error();
    asked = std::move(*r);
  }
  for (const auto& [a, upto] : *whole) {
    auto it = vv->find(a);
    if (it == vv->end() || it->second <= upto) continue;
    if (!ps.left_out_ok || get(asked, a) < it->second) it->second = upto;
  }
  return vv;
}

void Session::Impl::on_subscription(SubscriptionMsg m) {
  if (!subscriptions_enabled)
    return fail(make_error(Errc::failed_precondition,
                           "SUBSCRIPTION received but subscriptions were not offered in HELLO"),
                true);
  if (!pending.count(m.project)) {
    ProjectSync* ps = project_of(m.project, "SUBSCRIPTION");
    if (!ps) return;
    if (ps->vv_received)
      return fail(make_error(Errc::failed_precondition, "SUBSCRIPTION after the project's VV"),
                  true);
  }
  ProjectId id = m.project;
  peer_subs[id] = std::move(m);
}

void Session::Impl::subscription_changed(const ProjectId& id) {
  if (state != SessionState::active || (!projects.count(id) && !pending.count(id))) return;
  fail(make_error(Errc::unavailable,
                  "this device's subscription of a project changed: starting over"),
       false);
}

void Session::Impl::on_vv(VectorMsg m) { on_vector(std::move(m), false); }
void Session::Impl::on_new(VectorMsg m) { on_vector(std::move(m), true); }

void Session::Impl::on_vector(VectorMsg m, bool is_new) {
  notices.awaiting.erase(m.project);  // the peer sends its VV: it approved this device
  if (pending.count(m.project)) {     // held for approval: its VV waits, NEW is moot
    if (is_new) return;
    ProjectId id = m.project;
    if (!held_vv.try_emplace(id, std::move(m)).second)
      return fail(make_error(Errc::failed_precondition, "VV sent twice"), true);
    return;
  }
  ProjectSync* ps = project_of(m.project, is_new ? "NEW" : "VV");
  if (!ps) return;
  if (!is_new) {
    if (ps->vv_received) return fail(make_error(Errc::failed_precondition, "VV sent twice"), true);
    // Its SUBSCRIPTION (if any) came first: what we can give it depends on it, and what it
    // gives us is remembered (the VV we show it next time depends on it).
    auto offer = offer_vector(*ps);
    if (!offer.ok()) return fail(offer.error(), true);
    {
      storage::Subscription gives;
      if (auto it = peer_subs.find(ps->id); it != peer_subs.end()) {
        auto g = storage::Subscription::parse_canonical(it->second.gives);
        if (g.ok()) gives = std::move(*g);
      }
      if (auto st = store.note_given_by(ps->id, peer_hello.device, gives); !st)
        spdlog::warn("sync: cannot record what {} gives of {}: {}", peer_label(), ps->id.str(),
                     st.error().message);
    }
    ps->mine = std::move(*offer);
    ps->vv_received = true;
    ps->peer_vv = m.heads;
    ps->peer = m.heads;
    ps->sent = m.heads;
    ps->done_owed = true;
  }
  // A peer that left out entries holds those logs whole only so far: it holds for good no
  // more, and it is sure to give us no more (a peer we want no more than may give its left-out
  // entries too: then we receive more than announced, never wait for more than comes).
  const storage::VersionVector* whole = nullptr;
  if (auto it = peer_subs.find(ps->id); it != peer_subs.end()) whole = &it->second.whole;
  for (const auto& [a, seq] : m.heads) {
    std::uint64_t held = seq;
    if (whole)
      if (auto w = whole->find(a); w != whole->end()) held = std::min(seq, w->second);
    raise(ps->peer_has, a, held);
    shows(*ps, a, held);  // a suspect author the peer asks for whole is at 0: no rise
  }
  if (is_new) ps->peer_done = false;
  // The peer holds more of our own log than we do: another copy of this device wrote it.
  if (auto own = m.heads.find(store.device_id()); own != m.heads.end() && own->second > 0) {
    auto ours = store.chain_at(ps->id, own->first, own->second);
    if (!ours.ok()) return fail(ours.error(), true);
    if (!ours->has_value()) return diverge(*ps, own->first, own->second, true);
  }
  update_sync_flag(*ps);
}

void Session::Impl::on_batch(ReceivedBatch in) {
  Batch& m = in.batch;
  ProjectSync* ps = project_of(m.project, "BATCH");
  if (!ps) return;
  if (!ps->vv_received) return fail(make_error(Errc::failed_precondition, "BATCH before VV"), true);
  if (m.log.empty()) return fail(make_error(Errc::invalid_argument, "empty BATCH"), true);
  if (answer_diverged(m)) return;
  const storage::ApplyOptions options{!ps->restricted};
  if (!params.offload) return batch_applied(in, store.apply_log(m.project, m.log, options));
  // Applied on the writer's thread, in arrival order. With prepare, each is first checked on a
  // worker while earlier ones are applied and input goes on until window_batches are on their
  // way; without, one at a time (input waits meanwhile).
  auto job = std::make_shared<ApplyJob>();
  job->in = std::move(in);
  job->options = options;
  applying.push_back(job);
  busy = applying.size() >= batches_ahead();
  if (!params.prepare) {
    job->ready = true;
    return post_prepared();
  }
  storage::Store& st = store;
  params.prepare(
      [&st, job] { job->prepared = st.prepare_log(job->in.batch.project, job->in.batch.log); },
      [this, job, alive = alive] {
        if (!*alive) return;
        thread.check("Session: a prepared batch");
        job->ready = true;
        post_prepared();
      });
}

std::size_t Session::Impl::batches_ahead() const {
  return params.prepare ? std::max<std::uint32_t>(params.options.window_batches, 1) : 1;
}

bool Session::Impl::answer_diverged(const Batch& m) {
  ProjectSync* ps = project_of(m.project, "BATCH");
  if (!ps || !ps->diverged.count(m.log.author)) return false;
  auto head = store.version_vector(m.project);
  if (!head.ok()) {
    fail(head.error(), true);
    return true;
  }
  encode_ack(control, Ack{m.project, m.log.author, get(*head, m.log.author)});
  return true;
}

void Session::Impl::post_prepared() {
  storage::Store& st = store;
  for (const auto& job : applying) {
    if (job->posted) continue;
    if (!job->ready || finished()) return;  // the writer takes them in arrival order
    job->posted = true;
    params.offload(
        [&st, job] {
          const auto& b = job->in.batch;
          job->result = job->prepared ? st.apply_log(b.project, b.log, job->options, *job->prepared)
                                      : st.apply_log(b.project, b.log, job->options);
        },
        [this, job, alive = alive](Status committed) {
          if (!*alive) return;
          thread.check("Session: an offloaded apply's completion");
          if (!committed) job->result = committed.error();
          job->done = true;
          answer_applied();
        });
  }
}

void Session::Impl::answer_applied() {
  while (!applying.empty() && applying.front()->done) {
    auto job = std::move(applying.front());
    applying.pop_front();
    job->prepared.reset();
    if (finished()) continue;
    // An earlier batch in flight with it made us say FORKED about its author: answered as one
    // that arrived after (its apply found nothing that follows our log, or, for a retired
    // identity of ours, re-published what it verified, which stands).
    if (answer_diverged(job->in.batch)) continue;
    batch_applied(job->in, std::move(job->result));
  }
  const bool was_busy = busy;
  busy = held_frame ? !applying.empty() : applying.size() >= batches_ahead();
  if (finished()) return;
  if (was_busy && !busy) process_input();
  record_holds();
  if (resume_hook) resume_hook();
}

void Session::Impl::batch_applied(const ReceivedBatch& in, Result<storage::ApplyResult> r) {
  const Batch& m = in.batch;
  ProjectSync* ps = project_of(m.project, "BATCH");
  if (!ps) return;
  if (!r.ok()) {
    Error e = r.error();
    e.message = "batch of " + std::to_string(m.log.entries.size()) + " entries by " +
                m.log.author.short_str() + " rejected: " + e.message;
    return fail(std::move(e), true);
  }
  const DeviceId& a = m.log.author;
  std::uint64_t last = m.log.last_seq();
  if (r->identity_conflict || (r->diverged_at && !r->republished)) {
    encode_ack(control, Ack{m.project, a, r->head});
    diverge(*ps, a, *r->diverged_at, true);
    return;
  }
  if (r->republished && last >= get(ps->peer_has, a)) {
    // The peer's whole history of an earlier identity of ours is re-published in our
    // current log; its copy of that log stays different from ours, so stop comparing.
    encode_ack(control, Ack{m.project, a, r->head});
    encode_forked(control, ForkedMsg{m.project, a, *r->diverged_at});
    ps->diverged.insert(a);
    ps->stats.received += m.log.entries.size();
    ps->stats.applied += r->relogged;
    update_sync_flag(*ps);
    return;
  }
  raise(ps->peer, a, last);
  raise(ps->peer_has, a, last);
  // It sent them: it holds them (the same history as ours) -- whole, unless it takes part
  // of the project (then only its VV, capped where its logs are whole, says what it holds).
  if (ps->peer_sub.everything()) shows(*ps, a, last);
  raise(ps->sent, a, last);
  raise(ps->mine, a, r->head);
  raise(ps->have, a, r->head);
  ps->holds_dirty = true;  // a claim in its VV for an author new here may be kept now
  ps->stats.received += m.log.entries.size();
  ps->stats.applied += r->applied;
  ps->stats.bytes_received += in.frame_bytes;
  sample_rate(*ps);
  encode_ack(control, Ack{m.project, a, r->head});
  update_sync_flag(*ps);
}

void Session::Impl::on_zbatch(ReceivedBatch in) {
  if (params.options.compression_level == 0)
    return fail(make_error(Errc::failed_precondition,
                           "ZBATCH received but compressed batches were not offered in HELLO"),
                true);
  on_batch(std::move(in));
}

void Session::Impl::on_ack(Ack m) {
  ProjectSync* ps = project_of(m.project, "ACK");
  if (!ps) return;
  if (inflight == 0 || ps->unacked == 0)
    return fail(make_error(Errc::failed_precondition, "ACK without a batch in flight"), true);
  --inflight;
  --ps->unacked;
  raise(ps->peer, m.author, m.head);
  // Its head after applying our batch (a peer that takes part of the project may have left
  // some of it out: its next VV tells).
  if (ps->peer_sub.everything()) shows(*ps, m.author, m.head);
  raise(ps->sent, m.author, m.head);
  update_sync_flag(*ps);
}

void Session::Impl::on_done(Done m) {
  ProjectSync* ps = project_of(m.project, "DONE");
  if (!ps) return;
  ps->peer_done = true;
  update_sync_flag(*ps);
}

// --- output ---

std::uint64_t Session::Impl::next_from(const ProjectSync& ps, const DeviceId& a) const {
  return std::max(get(ps.sent, a), get(ps.peer, a));
}

bool Session::Impl::has_more(const ProjectSync& ps) const {
  for (const auto& [a, seq] : ps.mine)
    if (seq > next_from(ps, a) && !ps.diverged.count(a)) return true;
  return false;
}

std::uint64_t Session::Impl::to_send(const ProjectSync& ps) const {
  std::uint64_t n = 0;
  for (const auto& [a, seq] : ps.mine)
    if (!ps.diverged.count(a)) n += seq > get(ps.peer, a) ? seq - get(ps.peer, a) : 0;
  return n;
}

std::uint64_t Session::Impl::to_receive(const ProjectSync& ps) const {
  std::uint64_t n = 0;
  for (const auto& [a, seq] : ps.peer_has)
    if (!ps.diverged.count(a)) n += seq > get(ps.have, a) ? seq - get(ps.have, a) : 0;
  return n;
}

void Session::Impl::update_sync_flag(ProjectSync& ps) {
  bool now = ps.vv_received && ps.peer_done && !ps.done_owed && ps.unacked == 0 && !has_more(ps);
  if (now && !ps.was_in_sync) {
    ps.stats.last_sync_ms = params.clock();
    want_scan = true;  // the documents are here: their blobs may be fetched
    // The whole log of an earlier identity was compared with this peer's.
    if (!asked_whole_log.empty() && !retired_diverged) {
      store.clear_suspects();
      asked_whole_log.clear();
    }
  }
  ps.was_in_sync = now;
}

void Session::Impl::sample_rate(ProjectSync& ps) {
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

// Appends the BATCH frame `batch` to `out` as a ZBATCH, or as it is when compressing does not
// make it smaller (or fails); returns the size of the frame appended.
std::size_t Session::Impl::append_compressed(const Bytes& batch, Bytes& out) const {
  std::size_t before = out.size();
  ByteView payload = ByteView(batch).subspan(kFrameHeaderBytes);
  auto st = encode_zbatch(out, payload, static_cast<int>(params.options.compression_level));
  if (!st || out.size() - before >= batch.size()) {
    out.resize(before);
    append(out, batch);
  }
  return out.size() - before;
}

// Appends one BATCH for `ps` if an author has more; false when there is nothing to send.
// Authors of live pushes first, the most recent first (SessionOptions::live_first), then the
// coordinators, then the others, each in id order. Coordinators first: an erasure or a removal
// reaches the peer before the versions it takes out, so the peer never shows them meanwhile
// (a covered version whose body the sender dropped would enter a document there as a put
// without a body until the record arrives).
bool Session::Impl::produce_batch(ProjectSync& ps, Bytes& out) {
  for (auto it = ps.live.begin(); it != ps.live.end();) {
    auto head = ps.mine.find(*it);
    if (head == ps.mine.end() || head->second <= next_from(ps, *it)) {
      it = ps.live.erase(it);  // caught up
      continue;
    }
    if (auto r = produce_batch_of(ps, *it, head->second, out); r != Produced::nothing)
      return r == Produced::batch;
    ++it;
  }
  for (bool authorities : {true, false}) {
    for (const auto& [a, head] : ps.mine) {
      if ((ps.authorities && ps.authorities->count(a)) != authorities) continue;
      if (!ps.live.empty() && std::find(ps.live.begin(), ps.live.end(), a) != ps.live.end())
        continue;  // tried above
      if (auto r = produce_batch_of(ps, a, head, out); r != Produced::nothing)
        return r == Produced::batch;
    }
  }
  return false;
}

Session::Impl::Produced Session::Impl::produce_batch_of(ProjectSync& ps, const DeviceId& a,
                                                        std::uint64_t head, Bytes& out) {
  std::uint64_t from = next_from(ps, a);
  if (head <= from || ps.diverged.count(a)) return Produced::nothing;
  std::uint32_t max_entries = params.options.batch_entries;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto log = store.read_log(ps.id, a, from, max_entries, params.options.batch_bytes,
                              storage::LogFilter{ps.given, ps.left_out_ok, limits.seals});
    if (!log.ok()) {
      fail(log.error(), true);
      return Produced::failed;
    }
    if (log->empty()) {
      // The cached vector promised more than the store returns: trust the store. (Expected
      // on a device that cleaned up, for a peer that lacks the cleaned range.)
      if (ps.left_out_ok)
        spdlog::warn("sync: no log entries for {} after {} (head {})", a.short_str(), from, head);
      ps.mine[a] = from;
      return Produced::nothing;
    }
    std::uint64_t last = log->last_seq();
    // Compressed: encoded aside first, then sent as ZBATCH when that is smaller.
    Bytes& target = compress_batches ? batch_scratch : out;
    if (compress_batches) batch_scratch.clear();
    std::size_t before = target.size();
    encode_batch(target, Batch{ps.id, std::move(*log)}, limits.seals);
    std::size_t frame = target.size() - before;  // the uncompressed frame must fit too
    if (frame > peer_max_frame) {
      target.resize(before);
      if (max_entries > 1) {
        max_entries = 1;  // the smallest run the store can give: up to the next checkpoint
        continue;
      }
      fail(make_error(Errc::too_large, "a log run of " + a.short_str() +
                                           " does not fit in one frame (" + std::to_string(frame) +
                                           " bytes)"),
           true);
      return Produced::failed;
    }
    if (compress_batches) frame = append_compressed(batch_scratch, out);
    ps.sent[a] = last;
    ps.stats.sent += last - from;
    ps.stats.bytes_sent += frame;
    sample_rate(ps);
    ++ps.unacked;
    ++inflight;
    return Produced::batch;
  }
  return Produced::nothing;
}

Bytes Session::Impl::take_output(std::size_t max_bytes) {
  Bytes out = std::move(control);
  control.clear();
  if (state != SessionState::active) {
    bytes_sent += out.size();  // HELLO, PROJECTS, JOIN: on the wire too
    return out;
  }
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
  if (blobs_enabled) produce_blob_frames(out, max_bytes);
  bytes_sent += out.size();
  return out;
}

void Session::Impl::notify_local_change(const ProjectId& id) {
  if (state != SessionState::active) return;
  if (pending.count(id)) return admit_pending();  // a membership record may have arrived
  auto it = projects.find(id);
  if (it == projects.end()) return;
  ProjectSync& ps = it->second;
  if (peer_removed(id)) {  // the removal just arrived (here or by relay)
    if (auto info = store.get_project(id); info.ok())
      notify(NoticeKind::removed, id, removed_message(*info));
    return fail(make_error(Errc::permission_denied, "device removed from the project"), true);
  }
  auto vv = offer_vector(ps);
  if (!vv.ok()) return fail(vv.error(), true);
  storage::VersionVector before = std::exchange(ps.mine, std::move(*vv));
  want_scan = true;
  if (!told_not_held.empty()) recheck_told = true;
  ps.holds_dirty = true;  // what the peer claims of an author we now hold may be kept now
  record_holds();
  if (!ps.vv_received) return;  // the initial exchange will cover it
  VectorMsg announce{id, {}};
  for (const auto& [a, seq] : ps.mine)
    if (seq > next_from(ps, a)) announce.heads[a] = seq;
  if (announce.heads.empty()) return;
  // What was written just now by an author the peer had caught up with goes ahead of the
  // backlog of other authors (each author's log stays in order: the receiver verifies its
  // hash chain, so a new entry cannot overtake its own author's backlog).
  if (params.options.live_first)
    for (const auto& [a, seq] : announce.heads)
      if (get(before, a) <= next_from(ps, a)) {
        std::erase(ps.live, a);
        ps.live.insert(ps.live.begin(), a);
      }
  encode_vector(control, MsgType::new_heads, announce);
  ps.done_owed = true;
  update_sync_flag(ps);
}

}  // namespace fieldsync::sync
