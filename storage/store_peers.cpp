// Store: the peers this device keeps (typed records) and what each peer is known to hold of
// each project (docs/storage.md "Peers").
#include <algorithm>

#include "common/encoding.hpp"
#include "storage/store_impl.hpp"

namespace fieldsync::storage {

namespace {

std::string device_label(ByteView key) {
  auto id = id_from_bytes<DeviceId>(key);
  return id ? id->str() : to_hex(key);
}

// The stored vector of `peer` in `p`: nullopt when none is stored.
Result<std::optional<VersionVector>> read_holds(const LmdbTxn& txn, const Tables& t,
                                                const ProjectId& p, const DeviceId& peer) {
  auto v = txn.get(t.peer_holds, peer_holds_key(p, peer));
  if (!v) return v.error();
  if (!*v) return std::optional<VersionVector>{};
  auto held = PeerHoldsValue::decode(**v);
  if (!held)
    return make_error(Errc::data_loss, "what peer " + peer.short_str() + " holds of project " +
                                           p.str() + " does not read back (" +
                                           std::to_string((*v)->size()) + " bytes)");
  return std::optional<VersionVector>{std::move(*held)};
}

}  // namespace

Status Store::Impl::upgrade_peers_format1(LmdbTxn& txn) const {
  std::vector<std::pair<Bytes, Bytes>> converted;
  {
    LmdbCursor c(txn, t().peers);
    for (bool ok = c.seek({}); ok; ok = c.next()) {
      auto rec = PeerValue::from_format1(c.key(), as_chars(c.value()));
      if (!rec || !PeerValue::check(*rec)) continue;
      converted.emplace_back(Bytes(c.key().begin(), c.key().end()), PeerValue::encode(*rec));
    }
  }
  for (const auto& [key, value] : converted) FS_TRY(txn.put(t().peers, key, value));
  return {};
}

Status Store::save_peer(const PeerRecord& peer) {
  FS_TRY(PeerValue::check(peer));
  if (peer.device == impl_->me())
    return make_error(Errc::invalid_argument, "a peer record cannot name this device");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  PeerRecord rec = peer;
  auto old = txn->get(impl_->t().peers, peer.device.view());
  if (!old) return old.error();
  if (*old) {
    // An unreadable earlier record is replaced.
    if (auto prev = PeerValue::decode(peer.device.view(), **old); prev.ok()) {
      if (prev->added_ms != 0) rec.added_ms = prev->added_ms;
      rec.last_seen_ms = std::max(rec.last_seen_ms, prev->last_seen_ms);
    }
  }
  FS_TRY(txn->put(impl_->t().peers, peer.device.view(), PeerValue::encode(rec)));
  return txn->commit();
}

Result<std::vector<PeerRecord>> Store::load_peers(std::vector<PeerProblem>* unreadable) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  std::vector<PeerRecord> out;
  LmdbCursor c(*txn, impl_->t().peers);
  for (bool ok = c.seek({}); ok; ok = c.next()) {
    auto rec = PeerValue::decode(c.key(), c.value());
    if (rec.ok()) {
      out.push_back(std::move(*rec));
    } else if (unreadable) {
      unreadable->push_back(PeerProblem{device_label(c.key()), rec.error().message});
    }
  }
  return out;
}

Status Store::note_peer_seen(const DeviceId& device, std::int64_t at_ms) {
  if (at_ms < 0) return make_error(Errc::invalid_argument, "peer times must not be negative");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  auto v = txn->get(impl_->t().peers, device.view());
  if (!v) return v.error();
  if (!*v) return {};  // not a kept peer
  auto rec = PeerValue::decode(device.view(), **v);
  if (!rec) return rec.error();
  if (rec->last_seen_ms >= at_ms) return {};
  rec->last_seen_ms = at_ms;
  FS_TRY(txn->put(impl_->t().peers, device.view(), PeerValue::encode(*rec)));
  return txn->commit();
}

Status Store::forget_peer(const DeviceId& device) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  const Tables& t = impl_->t();
  FS_TRY(txn->del(t.peers, device.view()));
  std::vector<Bytes> holds;  // keyed project + peer: every project's vector of this peer
  {
    LmdbCursor c(*txn, t.peer_holds);
    for (bool ok = c.seek({}); ok; ok = c.next())
      if (c.key().size() == ProjectId::size + DeviceId::size &&
          std::equal(device.bytes.begin(), device.bytes.end(), c.key().begin() + ProjectId::size))
        holds.emplace_back(c.key().begin(), c.key().end());
  }
  for (const auto& k : holds) FS_TRY(txn->del(t.peer_holds, k));
  std::vector<Bytes> blob_lists;  // meta 'H' + project + peer: the blobs it said it holds
  {
    LmdbCursor c(*txn, t.meta);
    const Bytes prefix{'H'};
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next())
      if (c.key().size() == 1 + ProjectId::size + DeviceId::size &&
          std::equal(device.bytes.begin(), device.bytes.end(),
                     c.key().begin() + 1 + ProjectId::size))
        blob_lists.emplace_back(c.key().begin(), c.key().end());
  }
  for (const auto& k : blob_lists) FS_TRY(txn->del(t.meta, k));
  return txn->commit();
}

Status Store::note_peer_holds(const DeviceId& peer, const ProjectId& project,
                              const VersionVector& held) {
  if (peer == impl_->me())
    return make_error(Errc::invalid_argument, "what this device holds is its version vector");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  // A stored vector that does not read back is replaced by what is learnt now.
  auto stored = read_holds(*txn, impl_->t(), project, peer);
  VersionVector merged = stored.ok() && *stored ? std::move(**stored) : VersionVector{};
  // The first note is written even when empty: "known to hold nothing" is not "unknown".
  bool changed = !stored.ok() || !*stored;
  for (const auto& [author, seq] : held) {
    auto it = merged.find(author);
    if (seq == 0 || (it != merged.end() && it->second >= seq)) continue;
    auto ours = impl_->head(*txn, project, author);
    if (!ours) return ours.error();
    if (ours->seq == 0) continue;  // no log of this author here: not one of the project's authors
    merged[author] = seq;
    changed = true;
  }
  if (!changed) return {};  // the transaction is aborted: nothing written
  if (merged.size() > kMaxPeerHoldsAuthors)
    return make_error(Errc::resource_exhausted, "more than " +
                                                    std::to_string(kMaxPeerHoldsAuthors) +
                                                    " authors in project " + project.str());
  FS_TRY(txn->put(impl_->t().peer_holds, peer_holds_key(project, peer),
                  PeerHoldsValue::encode(merged)));
  return txn->commit();
}

Result<VersionVector> Store::peer_holds(const DeviceId& peer, const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto held = read_holds(*txn, impl_->t(), project, peer);
  if (!held) return held.error();
  return held->value_or(VersionVector{});
}

Result<std::vector<DeviceId>> Store::peers_holding(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<DeviceId> out;
  LmdbCursor c(*txn, impl_->t().peer_holds);
  for (bool ok = c.seek(project.view()); ok; ok = c.next()) {
    ByteView k = c.key();
    if (k.size() < ProjectId::size ||
        !std::equal(project.bytes.begin(), project.bytes.end(), k.begin()))
      break;
    if (auto d = id_from_bytes<DeviceId>(k.subspan(ProjectId::size))) out.push_back(*d);
  }
  return out;
}

Result<LackSummary> Store::peer_lacks(const DeviceId& peer, const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto held = read_holds(*txn, impl_->t(), project, peer);
  if (!held) return held.error();
  auto ours = impl_->version_vector(*txn, project);
  if (!ours) return ours.error();
  LackSummary out;
  out.known = held->has_value();
  for (const auto& [author, seq] : *ours) {
    std::uint64_t has = 0;
    if (*held)
      if (auto it = (*held)->find(author); it != (*held)->end()) has = it->second;
    if (seq <= has) continue;
    auto bytes = impl_->log_bytes(*txn, project, author, has, seq);
    if (!bytes) return bytes.error();
    out.entries += seq - has;
    out.bytes += *bytes;
    ++out.authors;
  }
  return out;
}

}  // namespace fieldsync::storage
