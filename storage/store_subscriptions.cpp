// Store: subscriptions, what a device wants of a project, and the left-out log entries they
// make (docs/storage.md "Subscriptions").
#include <algorithm>

#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace {

// meta keys of a project's subscription records, by kind: 'u'+project: the subscription
// (canonical JSON); 'e'+project+author: u64 seq of the author's first left-out entry here;
// 'w'+project+author: u64 seq up to which entries left out under an earlier subscription have
// been judged again under this one; 'g'+project+peer: the selection this device gives the peer;
// 'G'+project+peer: what the peer said it gives this device (both canonical JSON).
// Without a device: the prefix of that kind's records of the project.
Key meta_key(std::uint8_t kind, const ProjectId& p, const DeviceId* device = nullptr) {
  Key k;
  k.u8(kind).raw(p.view());
  if (device) k.raw(device->view());
  return k;
}
Key subscription_key(const ProjectId& p) { return meta_key('u', p); }
Key left_out_key(const ProjectId& p, const DeviceId& a) { return meta_key('e', p, &a); }
Key judged_key(const ProjectId& p, const DeviceId& a) { return meta_key('w', p, &a); }
Key selection_key(const ProjectId& p, const DeviceId& peer) { return meta_key('g', p, &peer); }
Key given_key(const ProjectId& p, const DeviceId& peer) { return meta_key('G', p, &peer); }

Result<std::optional<std::uint64_t>> get_u64(const LmdbTxn& txn, MDB_dbi dbi, ByteView key) {
  auto v = txn.get(dbi, key);
  if (!v) return v.error();
  if (!*v) return std::optional<std::uint64_t>{};
  ByteReader r(**v);
  std::uint64_t x = r.u64();
  if (!r.ok() || !r.at_end()) return make_error(Errc::data_loss, "corrupt subscription record");
  return std::optional<std::uint64_t>{x};
}

Status put_u64(LmdbTxn& txn, MDB_dbi dbi, ByteView key, std::uint64_t x) {
  Bytes b;
  ByteWriter(b).u64(x);
  return txn.put(dbi, key, b);
}

bool reserved(std::string_view collection) {
  return !collection.empty() && collection.front() == '_';
}

}  // namespace

Result<Subscription> Store::Impl::subscription(const LmdbTxn& txn, const ProjectId& p) const {
  auto v = txn.get(t().meta, subscription_key(p));
  if (!v) return v.error();
  if (!*v) return Subscription{};
  auto s = Subscription::parse_canonical(as_chars(**v));
  if (!s) return make_error(Errc::data_loss, "stored " + s.error().message);
  return s;
}

Result<bool> Store::Impl::wanted_here(const LmdbTxn& txn, const ProjectId& p, const Subscription& s,
                                      const VersionHeader& h,
                                      const std::optional<std::string>& body) const {
  if (s.everything() || reserved(h.collection)) return true;
  if (body && s.matches(h.collection, *body)) return true;
  if (h.parents.empty()) return false;
  Key dk = doc_key(p, h.collection, h.doc_id);
  auto rec = doc(txn, dk);
  if (!rec) return rec.error();
  if (!*rec) return false;
  for (const auto& parent : h.parents) {
    auto at = find_version(txn, dk, **rec, parent);
    if (!at) return at.error();
    if (at->has_value()) return true;
  }
  return false;
}

Result<bool> Store::Impl::wanted_by(const LmdbTxn& txn, const ProjectId& p, const Subscription& s,
                                    const VersionHeader& h, std::optional<ByteView> body) const {
  if (s.everything() || reserved(h.collection)) return true;
  if (!s.wants_collection(h.collection)) return false;
  if (body && s.matches(h.collection, as_chars(*body))) return true;
  if (h.parents.empty()) return false;
  Key dk = doc_key(p, h.collection, h.doc_id);
  auto rec = doc(txn, dk);
  if (!rec) return rec.error();
  if (!*rec) return false;
  for (const auto& parent : h.parents) {
    auto at = find_version(txn, dk, **rec, parent);
    if (!at) return at.error();
    if (!at->has_value()) continue;
    auto v = load_version(txn, p, **at);
    if (!v) return v.error();
    if (v->body && s.matches(h.collection, *v->body)) return true;
  }
  return false;
}

Status Store::Impl::note_left_out(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                  std::uint64_t seq) const {
  Key k = left_out_key(p, a);
  auto first = get_u64(txn, t().meta, k);
  if (!first) return first.error();
  if (*first && **first <= seq) return {};
  return put_u64(txn, t().meta, k, seq);
}

// The entry at `seq` is held whole now: if it was the first left-out one, find the next.
Status Store::Impl::note_taken_in(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                  std::uint64_t seq) const {
  return rescan_left_out(txn, p, a, seq, seq + 1);
}

// If the first left-out entry is `was`, the first one from `from` on.
Status Store::Impl::rescan_left_out(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                    std::uint64_t was, std::uint64_t from) const {
  Key k = left_out_key(p, a);
  auto first = get_u64(txn, t().meta, k);
  if (!first) return first.error();
  if (!*first || **first != was) return {};
  Key prefix = author_key(p, a);
  LmdbCursor c(txn, t().logs);
  std::uint64_t expect = from;
  for (bool ok = c.seek(log_key(p, a, from)); ok && has_prefix(c.key(), prefix);
       ok = c.next(), ++expect) {
    std::uint64_t at = ByteReader(c.key().subspan(prefix.b.size())).u64();
    // Skipped in a proven run, or held proven: left out from the run's start.
    std::optional<std::uint64_t> left;
    if (at != expect) {
      left = expect;
    } else {
      auto lr = LogRecord::decode_stored(c.value());
      if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
      if (lr->proven)
        left = at;
      else if (lr->elided)
        return put_u64(txn, t().meta, k, at);
    }
    if (left) {
      auto start = proven_run_start(txn, p, a, *left);
      if (!start) return start.error();
      return put_u64(txn, t().meta, k, *start);
    }
  }
  auto h = head(txn, p, a);
  if (!h) return h.error();
  if (expect <= h->seq) {  // the log ends in a proven run that skips its last entries
    auto start = proven_run_start(txn, p, a, expect);
    if (!start) return start.error();
    return put_u64(txn, t().meta, k, *start);
  }
  return txn.del(t().meta, k);
}

Result<std::optional<std::uint64_t>> Store::Impl::judged_upto(const LmdbTxn& txn,
                                                              const ProjectId& p,
                                                              const DeviceId& a) const {
  return get_u64(txn, t().meta, judged_key(p, a));
}

Status Store::Impl::note_unjudged(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                  std::uint64_t seq) const {
  Key k = judged_key(p, a);
  auto judged = get_u64(txn, t().meta, k);
  if (!judged) return judged.error();
  if (*judged && **judged < seq) return {};
  return put_u64(txn, t().meta, k, seq - 1);
}

Status Store::Impl::note_judged(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                std::uint64_t from, std::uint64_t upto) const {
  Key k = judged_key(p, a);
  auto judged = get_u64(txn, t().meta, k);
  if (!judged) return judged.error();
  if (!*judged || from > **judged + 1 || upto <= **judged) return {};
  auto h = head(txn, p, a);
  if (!h) return h.error();
  if (upto >= h->seq) return txn.del(t().meta, k);
  return put_u64(txn, t().meta, k, upto);
}

Result<std::pair<std::uint64_t, std::uint64_t>> Store::Impl::leave_document(
    LmdbTxn& txn, const ProjectId& p, ByteView dk, const DocRecord& rec) const {
  auto held = doc_versions(txn, dk, rec);
  if (!held) return held.error();
  // The document appears once more in the changes feed (its winner; reading it now answers
  // not_found), so apps following the feed learn that it left this device.
  auto lseq = change_counter(txn, p);
  if (!lseq) return lseq.error();
  const std::uint64_t seq = *lseq + 1;
  FS_TRY(txn.put(t().changes, change_key(p, seq), encode_location(rec.heads.front().at)));
  FS_TRY(put_change_counter(txn, p, seq));
  std::uint64_t freed = 0;
  for (const auto& h : *held) {
    Key lk = log_key(p, h.at.author, h.at.seq);
    auto lr = held_log(txn, p, h.at);
    if (!lr) return lr.error();
    if (lr->body) freed += lr->body->size();
    Bytes header(lr->header.begin(), lr->header.end());
    LogRecord out_rec{lr->chain, lr->id, header, std::nullopt, lr->excluded, true};
    out_rec.proven = lr->proven;  // held without its chain: stays so, with its path
    out_rec.path = lr->path;
    FS_TRY(txn.put(t().logs, lk, out_rec.encode(bodies, p)));
    // A proven run is left out from its start (where its chain is known).
    auto first = lr->proven ? proven_run_start(txn, p, h.at.author, h.at.seq)
                            : Result<std::uint64_t>(h.at.seq);
    if (!first) return first.error();
    FS_TRY(note_left_out(txn, p, h.at.author, *first));
  }
  Key sub = doc_sub_prefix(dk);
  for (auto dbi : {t().docver, t().superseded}) {
    LmdbCursor dc(txn, dbi);
    for (bool ok = dc.seek(sub); ok && has_prefix(dc.key(), sub);) {
      FS_TRY(dc.del());
      ok = dc.seek(sub);
    }
  }
  FS_TRY(del_doc(txn, dk));
  return std::pair{seq, freed};
}

Status Store::Impl::forget_subscriptions(LmdbTxn& txn, const ProjectId& p) const {
  FS_TRY(txn.del(t().meta, subscription_key(p)));
  for (std::uint8_t kind : {'e', 'w', 'g', 'G'})
    FS_TRY(delete_prefix(txn, t().meta, meta_key(kind, p)));
  return {};
}

Result<std::map<DeviceId, Subscription>> Store::selections(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::map<DeviceId, Subscription> out;
  Key prefix = meta_key('g', project);
  LmdbCursor c(*txn, impl_->t().meta);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto peer = id_from_bytes<DeviceId>(c.key().subspan(prefix.b.size()));
    auto sel = Subscription::parse_canonical(as_chars(c.value()));
    if (!peer || !sel) return make_error(Errc::data_loss, "corrupt selection record");
    out[*peer] = std::move(*sel);
  }
  return out;
}

Status Store::set_selection(const ProjectId& project, const DeviceId& peer, const Subscription& s) {
  if (peer == impl_->me())
    return make_error(Errc::invalid_argument, "a selection is for another device");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Key k = selection_key(project, peer);
  if (s.everything()) {
    FS_TRY(txn->del(impl_->t().meta, k));
    return txn->commit();
  }
  auto had = txn->get(impl_->t().meta, k);
  if (!had) return had.error();
  if (!*had) {
    std::size_t n = 0;
    Key prefix = meta_key('g', project);
    LmdbCursor c(*txn, impl_->t().meta);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) ++n;
    if (n >= kMaxSelections)
      return make_error(Errc::invalid_argument, "a project gives at most " +
                                                    std::to_string(kMaxSelections) +
                                                    " peers a selection of their own");
  }
  FS_TRY(txn->put(impl_->t().meta, k, as_bytes(s.canonical())));
  return txn->commit();
}

Result<Subscription> Store::given_by(const ProjectId& project, const DeviceId& peer) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto v = txn->get(impl_->t().meta, given_key(project, peer));
  if (!v) return v.error();
  if (!*v) return Subscription{};
  auto s = Subscription::parse_canonical(as_chars(**v));
  if (!s) return make_error(Errc::data_loss, "corrupt record of what a peer gives");
  return s;
}

Status Store::note_given_by(const ProjectId& project, const DeviceId& peer, const Subscription& s) {
  auto now = given_by(project, peer);
  if (now.ok() && *now == s) return {};
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  if (s.everything())
    FS_TRY(txn->del(impl_->t().meta, given_key(project, peer)));
  else
    FS_TRY(txn->put(impl_->t().meta, given_key(project, peer), as_bytes(s.canonical())));
  return txn->commit();
}

Result<VersionVector> Store::request_vector(const ProjectId& project, const DeviceId& peer) const {
  auto given = given_by(project, peer);
  if (!given) return given.error();
  auto mine = subscription(project);
  if (!mine) return mine.error();
  if (!mine->within(*given)) return version_vector(project);
  return request_vector(project);
}

Result<Subscription> Store::subscription(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return impl_->subscription(*txn, project);
}

Result<VersionVector> Store::request_vector(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto vv = impl_->version_vector(*txn, project);
  if (!vv) return vv.error();
  for (auto& [a, seq] : *vv) {
    auto judged = get_u64(*txn, impl_->t().meta, judged_key(project, a));
    if (!judged) return judged.error();
    if (*judged) seq = std::min(seq, **judged);
  }
  return vv;
}

Result<VersionVector> Store::whole_heads(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  VersionVector out;
  Key prefix = meta_key('e', project);
  LmdbCursor c(*txn, impl_->t().meta);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto a = id_from_bytes<DeviceId>(c.key().subspan(prefix.b.size()));
    ByteReader r(c.value());
    std::uint64_t first = r.u64();
    if (!a || !r.ok()) return make_error(Errc::data_loss, "corrupt subscription record");
    // The last checkpoint before the first left-out entry.
    std::uint64_t whole = 0;
    Key author = author_key(project, *a);
    LmdbCursor cps(*txn, impl_->t().checkpoints);
    for (bool ok2 = cps.seek(author); ok2 && has_prefix(cps.key(), author); ok2 = cps.next()) {
      std::uint64_t s = ByteReader(cps.key().subspan(author.b.size())).u64();
      if (s >= first) break;
      whole = s;
    }
    out[*a] = whole;
  }
  return out;
}

Result<SubscriptionChange> Store::set_subscription(const ProjectId& project,
                                                   const Subscription& next) {
  if (!next.everything()) {
    auto was_cleaned = cleaned(project);
    if (!was_cleaned) return was_cleaned.error();
    if (*was_cleaned)
      return make_error(Errc::failed_precondition,
                        "documents of the project left this device by clean-up: it cannot also "
                        "take a subscription");
    auto dests = destinations(project);
    if (!dests) return dests.error();
    if (std::any_of(dests->begin(), dests->end(),
                    [&](const Destination& d) { return d.device == impl_->me(); }))
      return make_error(Errc::failed_precondition,
                        "this device is a destination of the project: it keeps everything (a "
                        "coordinator un-names it first)");
  }
  SubscriptionChange out;
  std::uint64_t last_change = 0;
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto prev = impl_->subscription(*txn, project);
  if (!prev) return prev.error();
  const Tables& t = impl_->t();
  if (next.everything())
    FS_TRY(txn->del(t.meta, subscription_key(project)));
  else
    FS_TRY(txn->put(t.meta, subscription_key(project), as_bytes(next.canonical())));

  // Versions left out before are judged again when this one may want more.
  if (!next.within(*prev)) {
    Key prefix = meta_key('e', project);
    std::vector<std::pair<DeviceId, std::uint64_t>> firsts;
    LmdbCursor c(*txn, t.meta);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      auto a = id_from_bytes<DeviceId>(c.key().subspan(prefix.b.size()));
      ByteReader r(c.value());
      std::uint64_t first = r.u64();
      if (!a || !r.ok()) return make_error(Errc::data_loss, "corrupt subscription record");
      firsts.emplace_back(*a, first);
    }
    for (const auto& [a, first] : firsts) {
      Key k = judged_key(project, a);
      auto judged = get_u64(*txn, t.meta, k);
      if (!judged) return judged.error();
      if (!*judged || **judged > first - 1) FS_TRY(put_u64(*txn, t.meta, k, first - 1));
      out.asks_again = true;
    }
  }

  // Documents that no longer match leave, unless they hold own versions not delivered yet.
  if (!prev->within(next)) {
    std::uint64_t delivered = 0;
    {
      Key pp;
      pp.raw(project.view());
      LmdbCursor c(*txn, t.peer_holds);
      for (bool ok = c.seek(pp); ok && has_prefix(c.key(), pp); ok = c.next()) {
        auto held = PeerHoldsValue::decode(c.value());
        if (!held) continue;
        auto it = held->find(impl_->me());
        if (it != held->end()) delivered = std::max(delivered, it->second);
      }
    }
    Key prefix;
    prefix.raw(project.view());
    std::vector<Bytes> leaving;
    LmdbCursor c(*txn, t.docs);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      ByteView dk = c.key();
      auto parts = split_doc_key(dk);
      if (!parts) return make_error(Errc::data_loss, "corrupt document key");
      std::string collection(parts->collection);
      if (reserved(collection)) continue;
      auto rec = DocRecord::decode(c.value());
      if (!rec || rec->heads.empty()) return make_error(Errc::data_loss, "corrupt document record");
      if (next.wants_collection(collection)) {
        auto winner = impl_->load_version(*txn, project, rec->heads.front().at);
        if (!winner) return winner.error();
        if (winner->body && next.matches(collection, *winner->body)) continue;
      }
      leaving.emplace_back(dk.begin(), dk.end());
    }
    for (const auto& dkb : leaving) {
      ByteView dk(dkb);
      auto rec = impl_->doc(*txn, dk);
      if (!rec) return rec.error();
      if (!*rec) continue;
      auto held = impl_->doc_versions(*txn, dk, **rec);
      if (!held) return held.error();
      bool keep = std::any_of(held->begin(), held->end(), [&](const Impl::Held& h) {
        return h.at.author == impl_->me() && h.at.seq > delivered;
      });
      if (keep) {
        ++out.documents_kept;
        continue;
      }
      auto left = impl_->leave_document(*txn, project, dk, **rec);
      if (!left) return left.error();
      last_change = left->first;
      ++out.documents_removed;
    }
  }
  FS_TRY(txn->commit());
  if (out.documents_removed) {
    impl_->blobs_changed(project);
    impl_->notify(project, last_change);
  }
  return out;
}

}  // namespace fieldsync::storage
