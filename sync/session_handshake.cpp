// The handshake of a session (docs/protocol.md sections 3 "HELLO" and "PROJECTS"): HELLO both
// ways (protocol version, device, frame limit; the device must be the transport's), then
// membership proofs bound to the channel. The projects both sides prove become common and
// start the log exchange (session_log.cpp); the trust policy may hold some back
// (session_trust.cpp). A later PROJECTS adds projects joined while connected.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "crypto/crypto.hpp"
#include "sync/session_impl.hpp"

namespace fieldsync::sync {

void Session::Impl::send_hello() {
  Hello h;
  h.device = store.device_id();
  h.device_name = params.device_name;
  h.max_version = params.options.protocol_max;
  h.max_frame_bytes = params.options.max_frame_bytes;
  if (params.options.compression_level > 0) h.features |= kFeatureZstdBatches;
  if (params.options.exchange_blobs) h.features |= kFeatureBlobs;
  h.features |= kFeatureSubscriptions;
  h.features |= kFeatureNotices;
  h.features |= kFeatureSeals;
  encode_hello(control, h);
}

void Session::Impl::on_hello(Hello m) {
  std::uint16_t lo = std::max(m.min_version, kProtocolMin);
  std::uint16_t hi = std::min(m.max_version, params.options.protocol_max);
  if (lo > hi)
    return fail(
        make_error(Errc::unsupported,
                   "no common protocol version (peer " + std::to_string(m.min_version) + ".." +
                       std::to_string(m.max_version) + ", we " + std::to_string(kProtocolMin) +
                       ".." + std::to_string(params.options.protocol_max) + ")"),
        true);
  if (params.authenticated_peer && *params.authenticated_peer != m.device)
    return fail(make_error(Errc::unauthenticated, "HELLO device id differs from the TLS key"),
                true);
  if (m.device == store.device_id())
    return fail(make_error(Errc::failed_precondition, "connected to ourselves"), true);
  peer_hello = std::move(m);
  have_peer = true;
  protocol = hi;
  peer_max_frame = peer_hello.max_frame_bytes == 0
                       ? params.options.max_frame_bytes
                       : std::min(peer_hello.max_frame_bytes, params.options.max_frame_bytes);
  compress_batches =
      params.options.compression_level > 0 && (peer_hello.features & kFeatureZstdBatches) != 0;
  blobs_enabled = params.options.exchange_blobs && (peer_hello.features & kFeatureBlobs) != 0;
  subscriptions_enabled = (peer_hello.features & kFeatureSubscriptions) != 0;
  notices_enabled = (peer_hello.features & kFeatureNotices) != 0;
  limits.seals = (peer_hello.features & kFeatureSeals) != 0;
  state = SessionState::proving;
  if (join_code && !join_result) return send_join();  // PROJECTS follows JOINED
  send_projects();
}

void Session::Impl::send_projects() {
  Projects m;
  m.proof_bytes = proof_bytes_of(protocol);
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
      (m.proofs.size() + kProjectsBucket - 1) / kProjectsBucket * kProjectsBucket, kProjectsBucket);
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

void Session::Impl::on_projects_msg(Projects m) {
  if (state == SessionState::proving && join_pending) return hold_projects(std::move(m));
  on_projects(std::move(m));
}

// PROJECTS: the first one completes the handshake; a later one (the peer joined a project
// while connected) adds the projects that became common, answered with our own proofs.
void Session::Impl::on_projects(Projects m) {
  bool initial = state == SessionState::proving;
  auto list = store.list_projects();
  if (!list.ok()) return fail(list.error(), true);
  std::vector<ProjectId> added;
  bool removed = false;  // a proven project the peer was removed from
  for (const auto& p : *list) {
    if (projects.count(p.id)) continue;
    auto secret = store.project_secret(p.id);
    if (!secret.ok()) continue;
    auto expect = membership_proof(*secret, params.channel_binding, peer_hello.device);
    if (!m.holds(expect)) continue;
    if (peer_removed(p.id)) {
      spdlog::warn("sync: {} was removed from project {}: not syncing it", peer_label(),
                   p.id.str());
      removed = true;
      refused.insert(p.id);
      notify(NoticeKind::removed, p.id, removed_message(p));
      continue;
    }
    if (must_ask(p)) continue;
    ProjectSync ps;
    ps.id = p.id;
    ps.stats.project = p.id;
    projects.emplace(p.id, std::move(ps));
    rr.push_back(p.id);
    added.push_back(p.id);
  }
  state = SessionState::active;
  if (projects.empty() && pending.empty()) {
    // Nothing to share: say so without naming anything (a removed device was told which
    // project with NOTICE: it proved it holds it), then end.
    return fail(make_error(Errc::permission_denied,
                           removed ? "device removed from the project" : "no common project"),
                true);
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
    auto vv = offer_vector(projects.at(id));
    if (!vv.ok()) return fail(vv.error(), true);
    projects.at(id).mine = std::move(*vv);
    projects.at(id).recorded = known_holds(id);
    send_vv(projects.at(id));
    if (finished()) return;
  }
}

void Session::Impl::reannounce() {
  if (state == SessionState::active) send_projects();
}

void Session::Impl::note_seen() {
  if (auto st = store.note_peer_seen(peer_hello.device, params.clock()); !st)
    spdlog::debug("sync: cannot note when {} was seen: {}", peer_label(), st.error().message);
}

}  // namespace fieldsync::sync
