// Store: the per-device logs that sync reads and applies (docs/storage.md "Log chain").
#include <algorithm>
#include <set>

#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

Result<VersionVector> Store::Impl::version_vector(const LmdbTxn& txn, const ProjectId& p) const {
  VersionVector vv;
  Key prefix = prefix_of(p);
  LmdbCursor c(txn, t().heads);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto author = id_from_bytes<DeviceId>(c.key().subspan(ProjectId::size));
    auto h = HeadValue::decode(c.value());
    if (!author || !h) return make_error(Errc::data_loss, "corrupt log head");
    vv[*author] = h->seq;
  }
  return vv;
}

Result<VersionVector> Store::version_vector(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return impl_->version_vector(*txn, project);
}

Result<std::optional<crypto::Digest>> Store::Impl::chain_at(const LmdbTxn& txn, const ProjectId& p,
                                                            const DeviceId& a,
                                                            std::uint64_t seq) const {
  using Out = std::optional<crypto::Digest>;
  if (seq == 0) return Out{chain_genesis(p, a)};
  Key k = log_key(p, a, seq);
  auto cp = txn.get(t().checkpoints, k);
  if (!cp) return cp.error();
  if (*cp) {
    auto cv = CheckpointValue::decode(**cp);
    if (!cv) return make_error(Errc::data_loss, "corrupt checkpoint");
    return Out{cv->chain};
  }
  auto v = txn.get(t().logs, k);
  if (!v) return v.error();
  if (!*v) return Out{};
  auto lr = LogRecord::decode_stored(**v);
  if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
  if (lr->proven) return Out{};
  return Out{lr->chain};
}

Result<std::optional<std::pair<std::uint64_t, RunSeal>>> Store::Impl::held_run(
    const LmdbTxn& txn, const ProjectId& p, const DeviceId& a, std::uint64_t seq) const {
  using Out = std::optional<std::pair<std::uint64_t, RunSeal>>;
  Key prefix = author_key(p, a);
  LmdbCursor cps(txn, t().checkpoints);
  if (!cps.seek(log_key(p, a, seq)) || !has_prefix(cps.key(), prefix)) return Out{};
  auto cv = CheckpointValue::decode(cps.value());
  if (!cv) return make_error(Errc::data_loss, "corrupt checkpoint");
  if (!cv->seal || cv->seal->from >= seq) return Out{};
  return Out{std::pair{ByteReader(cps.key().subspan(prefix.b.size())).u64(), *cv->seal}};
}

Result<std::uint64_t> Store::Impl::proven_run_start(const LmdbTxn& txn, const ProjectId& p,
                                                    const DeviceId& a, std::uint64_t seq) const {
  auto run = held_run(txn, p, a, seq);
  if (!run) return run.error();
  return *run ? (*run)->second.from + 1 : seq;
}

Status Store::Impl::complete_run(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                                 std::uint64_t from, std::uint64_t end) {
  auto start = chain_at(txn, p, a, from);
  if (!start) return start.error();
  auto cp = txn.get(t().checkpoints, log_key(p, a, end));
  if (!cp) return cp.error();
  if (!*start || !*cp) return {};
  auto cv = CheckpointValue::decode(**cp);
  if (!cv) return make_error(Errc::data_loss, "corrupt checkpoint");
  std::vector<Bytes> held;  // copies: the records are rewritten below
  held.reserve(end - from);
  {
    Key prefix = author_key(p, a);
    LmdbCursor logs(txn, t().logs);
    for (bool ok = logs.seek(log_key(p, a, from + 1)); ok && has_prefix(logs.key(), prefix);
         ok = logs.next()) {
      std::uint64_t seq = ByteReader(logs.key().subspan(prefix.b.size())).u64();
      if (seq > end) break;
      if (seq != from + held.size() + 1) return {};  // not all held yet
      held.emplace_back(logs.value().begin(), logs.value().end());
    }
  }
  if (held.size() != end - from) return {};
  std::vector<LogRecord> recs;
  recs.reserve(held.size());
  crypto::Digest chain = **start;
  for (std::size_t i = 0; i < held.size(); ++i) {
    auto lr = LogRecord::decode_stored(held[i]);
    if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
    chain = chain_next(chain, from + i + 1, lr->id);
    lr->chain = chain;
    recs.push_back(std::move(*lr));
  }
  // A sealed root the chain does not follow from: the author signed two histories; the run
  // stays proven (full replicas report the fork).
  if (chain != cv->chain) return {};
  for (std::size_t i = 0; i < recs.size(); ++i) {
    recs[i].proven = false;
    recs[i].path.clear();
    FS_TRY(txn.put(t().logs, log_key(p, a, from + i + 1), recs[i].encode(bodies, p)));
  }
  return rescan_left_out(txn, p, a, from + 1, from + 1);
}

Result<std::uint64_t> Store::Impl::log_bytes(const LmdbTxn& txn, const ProjectId& p,
                                             const DeviceId& a, std::uint64_t after,
                                             std::uint64_t upto) const {
  std::uint64_t bytes = 0;
  Key prefix = author_key(p, a);
  LmdbCursor logs(txn, t().logs);
  for (bool ok = logs.seek(log_key(p, a, after + 1)); ok && has_prefix(logs.key(), prefix);
       ok = logs.next()) {
    if (ByteReader(logs.key().subspan(prefix.b.size())).u64() > upto) break;
    auto lr = LogRecord::decode_stored(logs.value());
    if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
    bytes += lr->header.size() + lr->body_size();
  }
  return bytes;
}

// Signs this device's log head if writes since the last checkpoint are unsigned.
// Done lazily (when the log is read for a peer) so single writes cost no signature.
// Also for an earlier identity of this device (its key is in retired/): the tail it wrote
// before the renewal may still be unsigned.
static Status sign_own_head(Store::Impl& im, const ProjectId& project, const DeviceId& author) {
  const crypto::SigningKey* key = author == im.me() ? &*im.key : im.retired_key(author);
  if (!key) return {};
  auto txn = im.write_txn();
  if (!txn) return txn.error();
  auto head = im.head(*txn, project, author);
  if (!head) return head.error();
  if (head->seq == 0) return {};
  Key k = log_key(project, author, head->seq);
  auto cp = txn->get(im.t().checkpoints, k);
  if (!cp) return cp.error();
  if (*cp) return {};
  FS_TRY(im.put_own_checkpoint(*txn, project, author, *key, head->seq, head->chain));
  return txn->commit();
}

Status Store::Impl::put_own_checkpoint(LmdbTxn& txn, const ProjectId& p, const DeviceId& author,
                                       const crypto::SigningKey& key, std::uint64_t seq,
                                       const crypto::Digest& chain) {
  Key prefix = author_key(p, author);
  RunSeal seal;
  {
    LmdbCursor cps(txn, t().checkpoints);
    bool ok = cps.seek(log_key(p, author, seq)) ? cps.prev() : cps.last();
    if (ok && has_prefix(cps.key(), prefix))
      seal.from = ByteReader(cps.key().subspan(prefix.b.size())).u64();
  }
  CheckpointValue cv{chain, key.sign(checkpoint_message(p, author, seq, chain)), std::nullopt};
  if (seq - seal.from > kMaxSealedRun)  // longer than any interval allows: left unsealed
    return txn.put(t().checkpoints, log_key(p, author, seq), cv.encode());
  std::vector<VersionId> ids;
  ids.reserve(seq - seal.from);
  LmdbCursor logs(txn, t().logs);
  for (bool ok = logs.seek(log_key(p, author, seal.from + 1));
       ok && has_prefix(logs.key(), prefix) && ids.size() < seq - seal.from; ok = logs.next()) {
    std::uint64_t at = ByteReader(logs.key().subspan(prefix.b.size())).u64();
    auto lr = LogRecord::decode_stored(logs.value());
    if (at != seal.from + ids.size() + 1 || !lr) return make_error(Errc::data_loss, "gap in log");
    ids.push_back(lr->id);
  }
  if (ids.size() != seq - seal.from) return make_error(Errc::data_loss, "gap in log");
  seal.root = run_root(ids);
  seal.signature = key.sign(seal_message(p, author, seq, chain, seal.from, seal.root));
  cv.seal = seal;
  return txn.put(t().checkpoints, log_key(p, author, seq), cv.encode());
}

Result<LogBatch> Store::read_log(const ProjectId& project, const DeviceId& author,
                                 std::uint64_t after_seq, std::uint32_t max_entries,
                                 std::uint64_t max_bytes) {
  return read_log(project, author, after_seq, max_entries, max_bytes, LogFilter{});
}

Result<LogBatch> Store::read_log(const ProjectId& project, const DeviceId& author,
                                 std::uint64_t after_seq, std::uint32_t max_entries,
                                 std::uint64_t max_bytes, const LogFilter& filter) {
  if (author == impl_->me() || impl_->retired_key(author))
    FS_TRY(sign_own_head(*impl_, project, author));
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  LogBatch batch;
  batch.author = author;
  auto head = impl_->head(*txn, project, author);
  if (!head) return head.error();
  if (after_seq >= head->seq) return batch;
  max_entries = std::max<std::uint32_t>(max_entries, 1);

  // Entries left out here under an earlier, narrower subscription and not judged again yet
  // may be wanted under ours: never given as left out (the receiver would skip them for good).
  std::optional<std::uint64_t> unjudged_from;
  if (filter.left_out_ok) {
    auto judging = impl_->judged_upto(*txn, project, author);
    if (!judging) return judging.error();
    unjudged_from = *judging;
  }
  const bool proven_ok = filter.proven_ok && filter.left_out_ok && !filter.want.everything();
  Key prefix = author_key(project, author);
  LmdbCursor logs(*txn, impl_->t().logs);
  LmdbCursor cps(*txn, impl_->t().checkpoints);
  std::uint64_t pos = after_seq, bytes = 0;
  std::size_t given = 0;
  bool cut = false;  // the log is given only up to `pos` (see below)
  // Run by run, each ending at the next checkpoint: a batch ends at a checkpoint inside the
  // limits (the first run is taken whatever its size).
  struct Held {
    std::uint64_t seq;
    LogRecord lr;
    std::optional<std::string> unpacked;
    bool give = false;
  };
  std::vector<Held> run;
  for (bool cp_ok = cps.seek(log_key(project, author, pos + 1));
       cp_ok && has_prefix(cps.key(), prefix); cp_ok = cps.next()) {
    const std::uint64_t cseq = ByteReader(cps.key().subspan(prefix.b.size())).u64();
    auto cv = CheckpointValue::decode(cps.value());
    if (!cv) return make_error(Errc::data_loss, "corrupt checkpoint");
    run.clear();
    bool gaps = false, any_proven = false, any_elided = false;
    std::uint64_t first_missing = 0;
    for (bool ok = logs.seek(log_key(project, author, pos + 1));
         ok && has_prefix(logs.key(), prefix); ok = logs.next()) {
      std::uint64_t seq = ByteReader(logs.key().subspan(prefix.b.size())).u64();
      if (seq > cseq) break;
      std::uint64_t expect = pos + run.size() + 1;
      if (seq != expect && !gaps) {
        gaps = true;
        first_missing = expect;
      }
      auto lr = LogRecord::decode_stored(logs.value());
      if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
      any_proven |= lr->proven;
      any_elided |= lr->elided;
      run.push_back(Held{seq, std::move(*lr), std::nullopt});
    }
    if (!gaps && run.size() != cseq - pos) {
      gaps = true;
      first_missing = pos + run.size() + 1;
    }
    // Entries not held here as they are: a receiver that wants no more than we do takes
    // them as left out, or skipped in a proven run; anyone else gets the log only up to here
    // (we must not pose as holding them). Nor are they given so when left out under an earlier,
    // narrower subscription and not judged again yet (the receiver would skip them for good).
    const bool sealed = cv->seal && cv->seal->from == pos && cseq - pos <= kMaxSealedRun;
    cut = ((gaps || any_proven) && (!proven_ok || !sealed)) || (any_elided && !filter.left_out_ok);
    if (!cut && unjudged_from) {
      if (gaps && first_missing > *unjudged_from) cut = true;
      for (const auto& h : run)
        if (h.lr.elided && h.seq > *unjudged_from) cut = true;
    }
    if (cut) break;
    // What the receiver is given.
    std::size_t n_give = 0;
    std::uint64_t run_bytes = 0;
    for (auto& h : run) {
      if (h.lr.elided) continue;
      // A compressed body is unpacked straight into what the batch gives (one allocation).
      if (h.lr.packed) {
        h.unpacked.emplace();
        FS_TRY(impl_->bodies.unpack(h.lr.packed_dict, *h.lr.packed, kMaxBodyBytesCeiling,
                                    *h.unpacked));
        h.lr.body = as_bytes(*h.unpacked);
      }
      bool give = true;
      if (!filter.want.everything() && !h.lr.excluded) {
        auto hd = decode_header(h.lr.header);
        if (!hd) return make_error(Errc::data_loss, "stored version: " + hd.error().message);
        auto w = impl_->wanted_by(*txn, project, filter.want, *hd, h.lr.body);
        if (!w) return w.error();
        give = *w;
      }
      h.give = give;
      if (!give) continue;
      ++n_give;
      run_bytes += h.lr.body ? h.lr.body->size() : 0;
    }
    // A proven run: held so, or cheaper than the left-out ids of the entries not given.
    bool proven = gaps || any_proven;
    const std::uint64_t len = cseq - pos;
    std::uint64_t depth = 0;
    while ((std::uint64_t{1} << depth) < len) ++depth;
    if (!proven && proven_ok && sealed) proven = n_give * (1 + 32 * depth) < (len - n_give) * 45;
    // A proven run's paths and sealed checkpoint count towards the bytes too: a batch of runs
    // with nothing wanted is all checkpoints, and must still fit a frame.
    if (proven) run_bytes += n_give * (1 + 32 * depth) + kSealedCheckpointBytes;
    const std::size_t run_entries = proven ? n_give : run.size();
    if (!batch.checkpoints.empty() &&
        (given + run_entries > max_entries || bytes + run_bytes > max_bytes))
      break;
    std::vector<std::vector<crypto::Digest>> paths;
    if (proven && !any_proven && n_give > 0) {
      std::vector<VersionId> ids;
      std::vector<std::size_t> at;
      ids.reserve(run.size());
      for (std::size_t i = 0; i < run.size(); ++i) {
        ids.push_back(run[i].lr.id);
        if (run[i].give) at.push_back(i);
      }
      paths = run_paths(ids, at);
    }
    std::size_t pi = 0;
    for (auto& h : run) {
      if (!h.give) {
        if (!proven) batch.entries.push_back(LogEntry{h.seq, h.lr.id, {}, std::nullopt, true});
        continue;
      }
      LogEntry e{h.seq, h.lr.id, Bytes(h.lr.header.begin(), h.lr.header.end()), std::nullopt};
      if (h.unpacked)
        e.body = std::move(*h.unpacked);
      else if (h.lr.body)
        e.body = std::string(as_chars(*h.lr.body));
      if (proven) {
        e.proven = true;
        if (any_proven) {
          if (!h.lr.proven)  // a run held with gaps holds only proven entries
            return make_error(Errc::data_loss, "log of " + author.short_str() +
                                                   ": an entry at seq " + std::to_string(h.seq) +
                                                   " of a proven run without its path");
          e.path = h.lr.path;
        } else {
          e.path = std::move(paths[pi++]);
        }
      }
      batch.entries.push_back(std::move(e));
    }
    batch.checkpoints.push_back(Checkpoint{cseq, cv->chain, cv->signature, cv->seal});
    given += run_entries;
    bytes += run_bytes;
    pos = cseq;
  }
  // Entries after `after_seq` that no checkpoint ends: a log is always signed up to its head,
  // so this is damage (a cut is not).
  if (batch.checkpoints.empty() && !cut && logs.seek(log_key(project, author, after_seq + 1)) &&
      has_prefix(logs.key(), prefix))
    return make_error(Errc::data_loss, "log of " + author.short_str() +
                                           " has no checkpoint after seq " +
                                           std::to_string(after_seq));
  return batch;
}

namespace {

Key tip_key(const ProjectId& p, const DeviceId& a, std::uint64_t seq) {
  Key k;
  k.u8('T').raw(p.view()).raw(a.view()).u64(seq);
  return k;
}

}  // namespace

Result<std::uint32_t> Store::Impl::relog(
    LmdbTxn& txn, const ProjectId& p,
    const std::vector<std::pair<const LogEntry*, VersionHeader>>& entries) {
  auto own = head(txn, p, me());
  if (!own) return own.error();
  HeadValue cur = *own;
  auto lseq = change_counter(txn, p);
  if (!lseq) return lseq.error();
  std::uint32_t n = 0;
  for (const auto& [e, h] : entries) {
    Key rk;
    rk.u8('R').raw(p.view()).raw(e->id.view());
    auto done = txn.get(t().meta, rk);
    if (!done) return done.error();
    if (*done) continue;
    cur.seq += 1;
    cur.chain = chain_next(cur.chain, cur.seq, e->id);
    // An erased version is re-published as its header only, and enters no document.
    auto gone = erased(txn, h);
    if (!gone) return gone.error();
    LogRecord lr{cur.chain, e->id, e->header, std::nullopt, *gone};
    if (e->body && !*gone) lr.body = as_bytes(*e->body);
    FS_TRY(put_log(txn, p, log_key(p, me(), cur.seq), lr));
    if (cur.seq % opts.checkpoint_interval == 0)
      FS_TRY(put_own_checkpoint(txn, p, me(), *key, cur.seq, cur.chain));
    FS_TRY(txn.put(t().meta, rk, ByteView{}));
    Key dk = doc_key(p, h.collection, h.doc_id);
    auto rec = doc(txn, dk);
    if (!rec) return rec.error();
    bool held = *gone;
    if (!held && *rec) {
      auto at = find_version(txn, dk, **rec, e->id);
      if (!at) return at.error();
      held = at->has_value();
    }
    if (!held) {
      clock.observe(h.hlc);
      auto r = add_to_dag(txn, dk, rec->value_or(DocRecord{}), h, e->id, Location{me(), cur.seq},
                          ++*lseq, false);
      if (!r) return r.error();
    }
    ++n;
  }
  FS_TRY(txn.put(t().heads, author_key(p, me()), cur.encode()));
  FS_TRY(put_change_counter(txn, p, *lseq));
  return n;
}

namespace {

// The checks of one received entry that need no transaction (its id, header and body).
PreparedLog::Entry check_entry(const LogEntry& e, std::size_t max_body_bytes) {
  PreparedLog::Entry out;
  out.id_ok = version_id_of(e.header) == e.id;
  if (!out.id_ok) return out;
  auto h = decode_header(e.header);
  if (!h) {
    out.problem = h.error().message;
    return out;
  }
  if (e.body) {
    if (h->kind == VersionKind::tombstone)
      out.body = PreparedLog::BodyCheck::tombstone;
    else if (e.body->size() != h->body_size || crypto::sha256(as_bytes(*e.body)) != h->body_hash)
      out.body = PreparedLog::BodyCheck::mismatch;
    else if (e.body->size() > max_body_bytes)
      out.body = PreparedLog::BodyCheck::too_large;
    else
      out.body = PreparedLog::BodyCheck::ok;
  }
  out.header = std::move(*h);
  return out;
}

// The batch entry at `seq` (entries ascend, contiguous but for proven runs), or null.
const LogEntry* entry_at(const std::vector<LogEntry>& es, std::uint64_t seq) {
  if (es.empty() || seq < es.front().seq) return nullptr;
  if (std::uint64_t i = seq - es.front().seq; i < es.size() && es[i].seq == seq) return &es[i];
  auto in = std::lower_bound(es.begin(), es.end(), seq,
                             [](const LogEntry& x, std::uint64_t s) { return x.seq < s; });
  return in != es.end() && in->seq == seq ? &*in : nullptr;
}

using SealCheck = PreparedLog::SealCheck;

// `c`'s seal checked against the ids of its run, which `id_at(seq)` gives (nullopt: not known
// here, and the seal is left unchecked; so is one whose run is longer than kMaxSealedRun).
template <class IdAt>
SealCheck check_seal(const ProjectId& project, const DeviceId& author, const Checkpoint& c,
                     IdAt id_at) {
  const RunSeal& sl = *c.seal;
  if (sl.from >= c.seq) return SealCheck::backwards;
  if (c.seq - sl.from > kMaxSealedRun) return SealCheck::unchecked;
  // The signature first: a seal nobody signed costs no lookups.
  if (!crypto::verify(author, seal_message(project, author, c.seq, c.chain, sl.from, sl.root),
                      sl.signature))
    return SealCheck::bad_signature;
  std::vector<VersionId> ids;
  ids.reserve(c.seq - sl.from);
  for (std::uint64_t s2 = sl.from + 1; s2 <= c.seq; ++s2) {
    std::optional<VersionId> id = id_at(s2);
    if (!id) return SealCheck::signed_only;
    ids.push_back(*id);
  }
  return run_root(ids) == sl.root ? SealCheck::ok : SealCheck::bad_root;
}

}  // namespace

PreparedLog Store::prepare_log(const ProjectId& project, const LogBatch& batch) const {
  PreparedLog out;
  out.batch = &batch;
  out.entries.resize(batch.entries.size());
  // Packed ahead only with a dictionary: a project still training one packs in the transaction
  // that counts its bodies (BodyCodec).
  const bool pack = impl_->bodies.level() > 0 && impl_->bodies.current(project).has_value();
  for (std::size_t i = 0; i < batch.entries.size(); ++i) {
    const LogEntry& e = batch.entries[i];
    if (e.elided) continue;
    auto& pe = out.entries[i] = check_entry(e, impl_->opts.max_body_bytes);
    if (!pack || pe.body != PreparedLog::BodyCheck::ok) continue;
    auto pk = impl_->bodies.pack(project, as_bytes(*e.body));
    if (!pk || !pk->compressed || pk->dict == 0) continue;
    pe.packed = true;
    pe.dict = pk->dict;
    pe.frame = std::move(pk->frame);
  }
  // Checkpoint signatures, and seals, checked here, off the applying thread: seals whose run
  // is all in the batch whole; the signatures of the others (proven runs, and a run that began
  // in an earlier batch).
  out.signed_ok.resize(batch.checkpoints.size());
  for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci) {
    const Checkpoint& c = batch.checkpoints[ci];
    out.signed_ok[ci] = crypto::verify(
        batch.author, checkpoint_message(project, batch.author, c.seq, c.chain), c.signature);
  }
  out.seals.resize(batch.checkpoints.size());
  const auto& es = batch.entries;
  for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci) {
    const Checkpoint& c = batch.checkpoints[ci];
    if (!c.seal) continue;
    out.seals[ci] =
        check_seal(project, batch.author, c, [&](std::uint64_t s2) -> std::optional<VersionId> {
          const LogEntry* e = entry_at(es, s2);
          if (!e || e->proven) return std::nullopt;
          return e->id;
        });
  }
  return out;
}

Result<ApplyResult> Store::apply_log(const ProjectId& project, const LogBatch& batch) {
  return apply_log(project, batch, ApplyOptions{});
}

Result<ApplyResult> Store::apply_log(const ProjectId& project, const LogBatch& batch,
                                     const ApplyOptions& options) {
  return apply_log(project, batch, options, nullptr);
}

Result<ApplyResult> Store::apply_log(const ProjectId& project, const LogBatch& batch,
                                     const ApplyOptions& options, const PreparedLog& prepared) {
  if (prepared.batch != &batch || prepared.entries.size() != batch.entries.size())
    return make_error(Errc::invalid_argument, "apply_log: prepared for another batch");
  return apply_log(project, batch, options, &prepared);
}

Result<ApplyResult> Store::apply_log(const ProjectId& project, const LogBatch& batch,
                                     const ApplyOptions& options, const PreparedLog* prepared) {
  auto fail = [&](const std::string& why) {
    return make_error(Errc::verification_failed, "log of " + batch.author.short_str() + ": " + why);
  };
  const DeviceId& author = batch.author;
  ApplyResult res;
  {
    auto txn0 = impl_->read_txn();
    if (!txn0) return txn0.error();
    FS_TRY(impl_->project(*txn0, project));
  }
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  auto head = impl_->head(*txn, project, author);
  if (!head) return head.error();
  res.head = head->seq;
  if (batch.empty()) return res;
  const auto& entries = batch.entries;
  if (!entries.empty() && entries.front().seq == 0) return fail("batch starts at seq 0");
  for (std::size_t i = 1; i < entries.size(); ++i)
    if (entries[i].seq <= entries[i - 1].seq) return fail("entries are not in seq order");
  for (std::size_t i = 1; i < batch.checkpoints.size(); ++i)
    if (batch.checkpoints[i].seq <= batch.checkpoints[i - 1].seq)
      return fail("checkpoint out of order");
  // Proven runs give some entries of a run and skip the rest (docs/storage.md "Proven runs"):
  // the batch then has proven entries, or ends past its last entry.
  const bool skips =
      std::any_of(entries.begin(), entries.end(), [](const LogEntry& e) { return e.proven; }) ||
      batch.last_seq() > (entries.empty() ? 0 : entries.back().seq);
  const bool own = author == impl_->me();
  // The signature of batch checkpoint `ci`, as prepare_log found it when it ran.
  auto checkpoint_signed = [&](std::size_t ci) {
    if (prepared && ci < prepared->signed_ok.size())
      return static_cast<bool>(prepared->signed_ok[ci]);
    const Checkpoint& c = batch.checkpoints[ci];
    return crypto::verify(author, checkpoint_message(project, author, c.seq, c.chain), c.signature);
  };
  const bool retired = impl_->retired_key(author) != nullptr;
  auto sub = impl_->subscription(*txn, project);
  if (!sub) return sub.error();
  const bool partial = !sub->everything();
  // Left-out entries come only from a sender that gives us part of the project: because we
  // subscribe to part, or because it gives us a selection (then they are asked for again).
  if ((!partial && options.judged) || own || retired) {
    const char* why =
        partial || !options.judged ? "wants every entry of this log" : "holds the whole project";
    for (const auto& e : entries)
      if (e.elided || e.proven)
        return fail("seq " + std::to_string(e.seq) + ": a " + (e.elided ? "left-out" : "proven") +
                    " entry, but this device " + why);
    if (skips) return fail(std::string("a proven run that skips entries, but this device ") + why);
  }
  // Entries held here left out that arrive whole, and entries of a proven run held here
  // (docs/storage.md "Proven runs") that arrive proven: taken in when now wanted.
  struct Upgrade {
    std::size_t i;
    std::optional<RunSeal> run;  // into a proven run held here: the seal it is checked by
    std::uint64_t run_end = 0;   // that run's checkpoint
  };
  std::vector<Upgrade> upgrades;

  // 0. Compare with the log held here: entries we hold must be the same versions.
  std::size_t j = 0;
  std::optional<std::uint64_t> differs;
  for (; j < entries.size() && entries[j].seq <= head->seq; ++j) {
    auto have = txn->get(impl_->t().logs, log_key(project, author, entries[j].seq));
    if (!have) return have.error();
    if (!*have) {
      // Not held: skipped in a proven run held here. What arrives for it is checked against
      // the seal of that run.
      auto run = impl_->held_run(*txn, project, author, entries[j].seq);
      if (!run) return run.error();
      if (!*run) return make_error(Errc::data_loss, "gap in log");
      if (!entries[j].elided) upgrades.push_back(Upgrade{j, (*run)->second, (*run)->first});
      ++res.duplicates;
      continue;
    }
    auto lr = LogRecord::decode_stored(**have);
    if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
    if (lr->id != entries[j].id) {
      differs = entries[j].seq;
      break;
    }
    if (lr->elided && !entries[j].elided) upgrades.push_back(Upgrade{j, std::nullopt, 0});
    ++res.duplicates;
  }
  if (own) {
    // Nobody else writes our log: a different or a longer one means another copy of this
    // device (restored, rolled back or cloned) wrote under our key -- if our key signed it.
    // The evidence is a checkpoint that verifies under our key over a chain this device does
    // not hold at that seq; without one the batch is a forgery (anyone with the project
    // secret could send it) and must not make this device renew its identity.
    if (differs || j < entries.size()) {
      bool proven = false;
      for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci) {
        const Checkpoint& c = batch.checkpoints[ci];
        if (!checkpoint_signed(ci)) continue;
        if (c.seq > head->seq) {
          proven = true;
          break;
        }
        auto v = txn->get(impl_->t().logs, log_key(project, author, c.seq));
        if (!v) return v.error();
        auto lr = *v ? LogRecord::decode_stored(**v) : std::nullopt;
        if (lr && lr->chain != c.chain) {
          proven = true;
          break;
        }
      }
      std::uint64_t at = differs ? *differs : entries[j].seq;
      if (!proven)
        return fail("entries of this device's own log from seq " + std::to_string(at) +
                    " that its key did not sign");
      res.identity_conflict = true;
      res.diverged_at = at;
      return res;
    }
    // The same entries: our own versions a narrower subscription left out here (after they
    // were delivered) are taken back in below when now wanted.
  }
  // Entries held here left out that arrive whole: taken in when now wanted (after the
  // subscription widened). Checked like any received version; the chain is the one held.
  // The seq before the batch's first, and its last.
  const std::uint64_t batch_from = !entries.empty() && !entries.front().proven
                                       ? entries.front().seq - 1
                                   : !batch.checkpoints.empty() && batch.checkpoints.front().seal
                                       ? batch.checkpoints.front().seal->from
                                       : (entries.empty() ? 0 : entries.front().seq - 1);
  const std::uint64_t batch_last = batch.last_seq();
  // Paths for entries that arrive whole into a proven run held here: the batch carries the
  // whole run then (else it is refused), whose ids must hash to the sealed root.
  std::map<std::uint64_t, std::vector<std::vector<crypto::Digest>>> run_paths_of;
  auto path_into = [&](const Upgrade& u) -> Result<std::vector<crypto::Digest>> {
    const LogEntry& e = entries[u.i];
    const std::uint64_t from = u.run->from, len = u.run_end - from;
    std::string at = "seq " + std::to_string(e.seq) + ": ";
    if (e.proven) {
      if (!run_path_ok(e.id, e.seq - from - 1, len, e.path, u.run->root))
        return fail(at + "its path does not lead to the root the author sealed");
      return e.path;
    }
    auto it = run_paths_of.find(u.run_end);
    if (it == run_paths_of.end()) {
      std::vector<VersionId> ids;
      const LogEntry* first = entry_at(entries, from + 1);
      const LogEntry* end = entries.data() + entries.size();
      for (const LogEntry* k = first; k && k != end && k->seq <= u.run_end; ++k)
        ids.push_back(k->id);
      if (ids.size() != len)
        return fail(at + "part of a proven run held here, without its path or the whole run");
      if (run_root(ids) != u.run->root)
        return fail(at + "the run is not the one the author sealed");
      std::vector<std::size_t> all(len);
      for (std::size_t k = 0; k < len; ++k) all[k] = k;
      it = run_paths_of.emplace(u.run_end, run_paths(ids, all)).first;
    }
    return it->second[e.seq - from - 1];
  };
  std::optional<std::optional<std::uint64_t>> cutoff_of;           // a removed author's last seq
  std::set<std::pair<std::uint64_t, std::uint64_t>> runs_touched;  // proven runs held, taken into
  auto take_in = [&](std::uint64_t& lseq) -> Status {
    for (const Upgrade& u : upgrades) {
      const LogEntry& e = entries[u.i];
      std::string at = "seq " + std::to_string(e.seq) + ": ";
      if (version_id_of(e.header) != e.id) return fail(at + "id does not match header hash");
      auto h = decode_header(e.header);
      if (!h) return fail(at + h.error().message);
      if (h->author != author || h->project != project)
        return fail(at + "not a version of this author and project");
      if (e.body && (h->kind == VersionKind::tombstone || e.body->size() != h->body_size ||
                     crypto::sha256(as_bytes(*e.body)) != h->body_hash))
        return fail(at + "body does not match its hash");
      std::vector<crypto::Digest> path;
      if (u.run) {
        auto p2 = path_into(u);
        if (!p2) return p2.error();
        path = std::move(*p2);
      }
      auto w = impl_->wanted_here(*txn, project, *sub, *h, e.body);
      if (!w) return w.error();
      if (!*w) continue;
      Key lk = log_key(project, author, e.seq);
      auto gone = impl_->erased(*txn, *h);
      if (!gone) return gone.error();
      LogRecord lr{crypto::Digest{}, e.id, e.header, std::nullopt, *gone, false};
      if (u.run) {
        if (!cutoff_of) {
          auto members = impl_->membership(*txn, project);
          if (!members) return members.error();
          auto m = members->find(author);
          cutoff_of.emplace(m != members->end() && m->second.role == Role::removed
                                ? std::optional(m->second.max_seq)
                                : std::nullopt);
        }
        lr.excluded = lr.excluded || (*cutoff_of && e.seq > **cutoff_of);
        lr.proven = true;
        lr.path = std::move(path);
      } else {
        auto v = txn->get(impl_->t().logs, lk);
        if (!v) return v.error();
        auto held = *v ? LogRecord::decode_stored(**v) : std::nullopt;
        if (!held) return make_error(Errc::data_loss, "gap in log");
        lr.chain = held->chain;
        lr.excluded = lr.excluded || held->excluded;
        lr.proven = held->proven;
        lr.path = held->path;
        if (held->proven) {
          auto run = impl_->held_run(*txn, project, author, e.seq);
          if (!run) return run.error();
          if (*run) runs_touched.emplace((*run)->second.from, (*run)->first);
        }
      }
      if (u.run) runs_touched.emplace(u.run->from, u.run_end);
      const bool excluded = lr.excluded;
      if (e.body && !excluded) lr.body = as_bytes(*e.body);
      FS_TRY(impl_->put_log(*txn, project, lk, lr));
      if (!u.run) FS_TRY(impl_->note_taken_in(*txn, project, author, e.seq));
      if (excluded) continue;
      impl_->clock.observe(h->hlc);
      Key dk = doc_key(project, h->collection, h->doc_id);
      auto rec = impl_->doc(*txn, dk);
      if (!rec) return rec.error();
      auto r = impl_->add_to_dag(*txn, dk, rec->value_or(DocRecord{}), *h, e.id,
                                 Location{author, e.seq}, ++lseq, false);
      if (!r) return r.error();
      ++res.applied;
      --res.duplicates;
    }
    for (const auto& [from, end] : runs_touched)
      FS_TRY(impl_->complete_run(*txn, project, author, from, end));
    if (!options.judged) return Status{};
    return impl_->note_judged(*txn, project, author, batch_from + 1, batch_last);
  };
  if (!differs && j == entries.size() && batch_last <= head->seq) {  // all held already
    auto judging = impl_->judged_upto(*txn, project, author);
    if (!judging) return judging.error();
    if (upgrades.empty() && !judging->has_value()) return res;
    auto lseq = impl_->change_counter(*txn, project);
    if (!lseq) return lseq.error();
    std::uint64_t before = *lseq;
    FS_TRY(take_in(*lseq));
    FS_TRY(impl_->put_change_counter(*txn, project, *lseq));
    FS_TRY(impl_->persist_clock(*txn));
    FS_TRY(txn->commit());
    if (*lseq != before) impl_->notify(project, *lseq);
    return res;
  }

  // 1. Verify entries[j..] from a base chain: ours where the batch still agrees with our log,
  // else (a retired identity of ours) the tip of a branch already re-published. A proven run
  // starts where our log ends.
  std::uint64_t base_seq =
      j < entries.size() && !entries[j].proven ? entries[j].seq - 1 : head->seq;
  std::vector<crypto::Digest> bases;
  if (base_seq <= head->seq) {
    auto c = impl_->chain_at(*txn, project, author, base_seq);
    if (!c) return c.error();
    if (!*c)
      return fail("batch starts at seq " + std::to_string(base_seq + 1) +
                  ", inside a run held here in part only");
    bases.push_back(**c);
  }
  if (retired) {
    Key prefix = tip_key(project, author, base_seq);
    LmdbCursor c(*txn, impl_->t().meta);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next())
      if (c.key().size() == prefix.b.size() + 32) {
        crypto::Digest d{};
        std::copy(c.key().end() - 32, c.key().end(), d.begin());
        bases.push_back(d);
      }
  }
  if (bases.empty())
    return fail("batch starts at seq " + std::to_string(base_seq + 1) + " but we hold up to " +
                std::to_string(head->seq));

  // Predecessors whose versions this author may re-publish (its succession records).
  std::optional<std::set<DeviceId>> predecessors;
  auto may_carry = [&](const DeviceId& a) -> Result<bool> {
    if (!predecessors) {
      predecessors.emplace();
      auto members = impl_->membership(*txn, project);
      if (!members) return members.error();
      for (DeviceId cur = author;;) {
        auto m = members->find(cur);
        if (m == members->end() || !m->second.successor_of ||
            predecessors->count(*m->second.successor_of))
          break;
        cur = *m->second.successor_of;
        predecessors->insert(cur);
      }
      for (const auto& e : entries) {  // the succession record may be in this very batch
        auto h = decode_header(e.header);
        if (!h || h->author != author) continue;
        if (auto pred = verified_predecessor(project, *h, e.body)) predecessors->insert(*pred);
      }
    }
    return predecessors->count(a) > 0;
  };

  // Each entry's own checks: done ahead (prepare_log), else here, once for every base tried.
  std::vector<PreparedLog::Entry> checked_here;
  if (!prepared) {
    checked_here.resize(entries.size());
    for (std::size_t i = j; i < entries.size(); ++i)
      if (!entries[i].elided) checked_here[i] = check_entry(entries[i], impl_->opts.max_body_bytes);
  }
  const std::vector<PreparedLog::Entry>& checked = prepared ? prepared->entries : checked_here;

  struct Pending {
    const LogEntry* entry;
    const PreparedLog::Entry* checked;  // its header (unset for a left-out entry)
    crypto::Digest chain;               // the chain after it (zero for a proven entry)
    std::uint64_t run_from = 0;         // a proven entry: the seq its run follows
  };
  enum class Outcome { ok, diverges };
  std::vector<Pending> fresh;
  std::vector<std::uint64_t> skipped;  // proven runs that skip entries: the seq each starts at
  std::vector<bool> run_proven(batch.checkpoints.size());  // checkpoints ending a proven run
  std::vector<bool> run_whole(batch.checkpoints.size());   // ... that gave every entry
  std::uint64_t seq = 0;
  crypto::Digest chain{};
  // An entry's own checks (done ahead or here), for a whole or a proven one.
  auto check_whole = [&](std::size_t i) -> Result<const PreparedLog::Entry*> {
    const auto& e = entries[i];
    const PreparedLog::Entry& ce = checked[i];
    if (!ce.id_ok) return fail("seq " + std::to_string(e.seq) + ": id does not match header hash");
    if (!ce.header) return fail("seq " + std::to_string(e.seq) + ": " + ce.problem);
    const VersionHeader* h = &*ce.header;
    if (h->author != author) {
      auto ok = may_carry(h->author);
      if (!ok) return ok.error();
      if (!*ok) return fail("seq " + std::to_string(e.seq) + ": version claims another author");
    }
    if (h->project != project)
      return fail("seq " + std::to_string(e.seq) + ": version of another project");
    switch (ce.body) {
      case PreparedLog::BodyCheck::none:
      case PreparedLog::BodyCheck::ok: break;
      case PreparedLog::BodyCheck::tombstone: return fail("tombstone with a body");
      case PreparedLog::BodyCheck::mismatch:
        return fail("seq " + std::to_string(e.seq) + ": body does not match its hash");
      case PreparedLog::BodyCheck::too_large:
        return make_error(Errc::too_large, "received body exceeds storage.max_body_bytes");
    }
    return &ce;
  };
  // Checks entries[j..] against `base`. Errors are tampering; `diverges` is a validly signed
  // history that does not continue `base` (another branch of the same device).
  auto verify = [&](const crypto::Digest& base) -> Result<Outcome> {
    fresh.clear();
    skipped.clear();
    std::fill(run_proven.begin(), run_proven.end(), false);
    std::fill(run_whole.begin(), run_whole.end(), false);
    chain = base;
    seq = base_seq;
    std::size_t ci = 0;
    while (ci < batch.checkpoints.size() && batch.checkpoints[ci].seq <= base_seq) ++ci;
    // The checkpoints at `seq`: signed by the author over the chain reached.
    auto at_checkpoints = [&]() -> Result<Outcome> {
      for (; ci < batch.checkpoints.size() && batch.checkpoints[ci].seq == seq; ++ci) {
        const Checkpoint& c = batch.checkpoints[ci];
        if (!checkpoint_signed(ci)) return fail("bad signature at seq " + std::to_string(seq));
        if (c.chain != chain) return Outcome::diverges;
      }
      return Outcome::ok;
    };
    std::size_t i = j;
    while (i < entries.size() || ci < batch.checkpoints.size()) {
      if (i < entries.size() && !entries[i].proven) {
        const auto& e = entries[i];
        if (e.seq != seq + 1) return fail("entries are not contiguous");
        const PreparedLog::Entry* ce = nullptr;
        if (!e.elided) {  // else a version this device does not want: its id continues the chain
          auto c = check_whole(i);
          if (!c) return c.error();
          ce = *c;
        }
        seq = e.seq;
        chain = chain_next(chain, seq, e.id);
        auto o = at_checkpoints();
        if (!o) return o.error();
        if (*o == Outcome::diverges) return Outcome::diverges;
        fresh.push_back(Pending{&e, ce, chain, 0});
        ++i;
        continue;
      }
      // A proven run: from `seq` to the next checkpoint, whose seal proves its entries.
      if (ci == batch.checkpoints.size())
        return fail("seq " + std::to_string(entries[i].seq) +
                    ": a proven entry after the last checkpoint");
      const Checkpoint& c = batch.checkpoints[ci];
      std::string at = "proven run to seq " + std::to_string(c.seq) + ": ";
      if (!c.seal || c.seal->from != seq || c.seq - seq > kMaxSealedRun)
        return fail(at + "no seal of the run from seq " + std::to_string(seq));
      if (!checkpoint_signed(ci)) return fail("bad signature at seq " + std::to_string(c.seq));
      SealCheck sc =
          prepared && ci < prepared->seals.size() ? prepared->seals[ci] : SealCheck::unchecked;
      if (sc != SealCheck::ok && sc != SealCheck::signed_only &&
          !crypto::verify(author,
                          seal_message(project, author, c.seq, c.chain, c.seal->from, c.seal->root),
                          c.seal->signature))
        return fail(at + "bad seal signature");
      std::uint64_t n = 0, prev = seq;
      for (; i < entries.size() && entries[i].seq <= c.seq; ++i, ++n) {
        const auto& e = entries[i];
        std::string eat = "seq " + std::to_string(e.seq) + ": ";
        if (!e.proven) return fail(eat + "a whole entry inside a proven run");
        if (e.seq <= prev) return fail("entries are not in seq order");
        prev = e.seq;
        auto ce = check_whole(i);
        if (!ce) return ce.error();
        if (!run_path_ok(e.id, e.seq - seq - 1, c.seq - seq, e.path, c.seal->root))
          return fail(eat + "its path does not lead to the root the author sealed");
        fresh.push_back(Pending{&e, *ce, crypto::Digest{}, seq});
      }
      if (n < c.seq - seq) skipped.push_back(seq + 1);
      run_proven[ci] = true;
      run_whole[ci] = n == c.seq - seq;
      seq = c.seq;
      chain = c.chain;
      ++ci;
    }
    bool signed_end = std::any_of(batch.checkpoints.begin(), batch.checkpoints.end(),
                                  [&](const Checkpoint& c) { return c.seq == seq; });
    if (!signed_end) return fail("batch does not end at a signed checkpoint");
    return Outcome::ok;
  };

  bool from_ours = false;  // verified from our own log's chain (else from a branch tip)
  // Our chain at base_seq is certainly the sender's too when the batch agreed with our log
  // up to there (or it is the genesis): a signed chain that does not follow from it means
  // the entries are not what the author signed.
  const bool certain_base = base_seq <= head->seq && (j > 0 || base_seq == 0);
  for (std::size_t b = 0; b < bases.size(); ++b) {
    auto o = verify(bases[b]);
    if (!o) return o.error();
    if (*o == Outcome::ok) {
      from_ours = b == 0 && base_seq <= head->seq;
      break;
    }
    if (b == 0 && certain_base) return fail("hash chain broken at seq " + std::to_string(seq));
    if (b + 1 == bases.size()) {
      // Validly signed, but another history than the one held here.
      std::uint64_t at = differs ? *differs : entries[j].seq;
      res.diverged_at = at;
      if (retired) {
        Key sk;
        sk.u8('S').raw(author.view());
        FS_TRY(txn->put(impl_->t().meta, sk, ByteView{}));  // ask for its whole log next time
      }
      FS_TRY(impl_->note_fork(*txn, project, author, at, false));
      FS_TRY(txn->commit());
      return res;
    }
  }
  const bool linear = from_ours && !differs;
  if (!linear) {
    // Another history of the same device, verified from a point both share.
    std::uint64_t at = differs ? *differs : entries[j].seq;
    res.diverged_at = at;
    if (!retired) {
      // Only the device holding the key can re-publish it; keep ours, note it.
      FS_TRY(impl_->note_fork(*txn, project, author, at, false));
      FS_TRY(txn->commit());
      return res;
    }
    // A retired identity of ours: re-publish both sides in our current log, our own side
    // first (it is what we hold from the fork point on), then the received side.
    std::vector<std::pair<const LogEntry*, VersionHeader>> out;
    std::vector<LogEntry> ours;
    if (differs) {
      ours.reserve(head->seq - *differs + 1);
      for (std::uint64_t s2 = *differs; s2 <= head->seq; ++s2) {
        auto v = txn->get(impl_->t().logs, log_key(project, author, s2));
        if (!v) return v.error();
        auto lr = *v ? LogRecord::decode(**v, impl_->bodies) : std::nullopt;
        if (!lr) return make_error(Errc::data_loss, "gap in log");
        LogEntry e{s2, lr->id, Bytes(lr->header.begin(), lr->header.end()), std::nullopt};
        if (lr->body) e.body = std::string(as_chars(*lr->body));
        ours.push_back(std::move(e));
      }
    }
    for (const auto& e : ours) {
      auto h = decode_header(e.header);
      if (!h) return make_error(Errc::data_loss, "stored version: " + h.error().message);
      out.emplace_back(&e, std::move(*h));
    }
    for (auto& p : fresh)
      out.emplace_back(p.entry, p.checked ? *p.checked->header : VersionHeader{});
    auto n = impl_->relog(*txn, project, out);
    if (!n) return n.error();
    res.relogged = *n;
    res.republished = true;
    // Where this branch has got to, so its next batch can be verified.
    Key tk = tip_key(project, author, seq);
    tk.raw(ByteView(chain.data(), chain.size()));
    FS_TRY(txn->put(impl_->t().meta, tk, ByteView{}));
    FS_TRY(impl_->note_fork(*txn, project, author, at, true));
    FS_TRY(impl_->persist_clock(*txn));
    FS_TRY(txn->commit());
    auto last = last_change_seq(project);
    if (last && *n) impl_->notify(project, *last);
    return res;
  }
  if (fresh.empty() && seq <= head->seq) return res;

  // The seals of the checkpoints to store: each checked against its run's ids (from this
  // batch, or held here) and the author's signature. One that does not verify fails the
  // batch; one whose run is not all known here (a batch from a device that holds part of it)
  // is not kept.
  std::vector<std::optional<RunSeal>> seals(batch.checkpoints.size());
  for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci) {
    const Checkpoint& c = batch.checkpoints[ci];
    if (!c.seal || c.seq <= head->seq || c.seq > seq) continue;
    if (run_proven[ci]) {  // checked with the run's entries
      seals[ci] = c.seal;
      continue;
    }
    SealCheck check =
        prepared && ci < prepared->seals.size() ? prepared->seals[ci] : SealCheck::unchecked;
    if (check == SealCheck::unchecked || check == SealCheck::signed_only) {
      Status lookup;
      check = check_seal(project, author, c, [&](std::uint64_t s2) -> std::optional<VersionId> {
        if (const LogEntry* in = entry_at(entries, s2)) return in->id;
        auto v = txn->get(impl_->t().logs, log_key(project, author, s2));
        if (!v) {
          lookup = v.error();
          return std::nullopt;
        }
        auto lr = *v ? LogRecord::decode_stored(**v) : std::nullopt;
        if (!lr) return std::nullopt;
        return lr->id;
      });
      FS_TRY(lookup);
    }
    std::string at = "seal at seq " + std::to_string(c.seq) + ": ";
    switch (check) {
      case SealCheck::unchecked:
      case SealCheck::signed_only: break;
      case SealCheck::ok: seals[ci] = c.seal; break;
      case SealCheck::backwards: return fail(at + "the run ends before it starts");
      case SealCheck::bad_signature: return fail(at + "bad signature");
      case SealCheck::bad_root: return fail(at + "the root is not that of the run");
    }
  }

  // 2. Apply. Versions a removed author wrote after its removal are kept in the log
  // (header only, so the chain still verifies and relays) but enter no document.
  const Tables& t = impl_->t();
  auto members = impl_->membership(*txn, project);
  if (!members) return members.error();
  std::optional<std::uint64_t> cutoff;
  if (auto m = members->find(batch.author); m != members->end() && m->second.role == Role::removed)
    cutoff = m->second.max_seq;
  bool membership_changed = false, erasures_changed = false, feed_moved = false;
  auto erasures = impl_->any_erasure(*txn, project);
  if (!erasures) return erasures.error();
  auto lseq = impl_->change_counter(*txn, project);
  if (!lseq) return lseq.error();
  const std::uint64_t first_change = *lseq;
  // Whether this batch's changes leave every document's blob references as they were: then
  // the blob indexer need not read them (Store::Impl::notify).
  bool ref_free = upgrades.empty();
  FS_TRY(take_in(*lseq));
  static const VersionHeader kLeftOut;
  for (const auto& p : fresh) {
    const LogEntry& e = *p.entry;
    const crypto::Digest& c2 = p.chain;
    const VersionHeader& header = p.checked ? *p.checked->header : kLeftOut;
    bool excluded = cutoff && e.seq > *cutoff;
    if (!excluded && !e.elided && *erasures) {  // covered by an erasure: no body, no document
      auto gone = impl_->erased(*txn, header);
      if (!gone) return gone.error();
      excluded = *gone;
    }
    bool left_out = e.elided;
    if (!left_out && !excluded && partial) {
      auto w = impl_->wanted_here(*txn, project, *sub, header, e.body);
      if (!w) return w.error();
      left_out = !*w;
    }
    if (left_out && e.proven) {  // not kept at all: skipped, as the run's others
      FS_TRY(impl_->note_left_out(*txn, project, batch.author, p.run_from + 1));
      continue;
    }
    if (left_out) {  // kept for the chain only: id, no header, no body
      LogRecord lr{c2, e.id, ByteView{}, std::nullopt, excluded, true};
      FS_TRY(txn->put(t.logs, log_key(project, batch.author, e.seq),
                      lr.encode(impl_->bodies, project)));
      FS_TRY(impl_->note_left_out(*txn, project, batch.author, e.seq));
      // Left out by a sender that gives us less than we want: ask others for it again.
      if (e.elided && !options.judged) FS_TRY(impl_->note_unjudged(*txn, project, author, e.seq));
      continue;
    }
    LogRecord lr{c2, e.id, e.header, std::nullopt, excluded};
    if (e.proven) {
      lr.proven = true;
      lr.path = e.path;
    }
    if (e.body && !excluded) {
      if (p.checked->packed) {  // packed ahead (prepare_log)
        lr.packed = ByteView(p.checked->frame);
        lr.packed_dict = p.checked->dict;
      } else {
        lr.body = as_bytes(*e.body);
      }
    }
    FS_TRY(impl_->put_log(*txn, project, log_key(project, batch.author, e.seq), lr));
    if (excluded) continue;
    if (header.collection == kMembersCollection) membership_changed = true;
    if (header.collection == kErasuresCollection) erasures_changed = true;
    impl_->clock.observe(header.hlc);
    Key dk = doc_key(project, header.collection, header.doc_id);
    auto rec = impl_->doc(*txn, dk);
    if (!rec) return rec.error();
    if (header.author != batch.author && *rec) {
      // An earlier identity's version re-published by its successor: held already?
      auto at = impl_->find_version(*txn, dk, **rec, e.id);
      if (!at) return at.error();
      if (at->has_value()) {
        ++res.duplicates;
        continue;
      }
    }
    if (ref_free) {
      auto moves =
          impl_->may_move_blob_refs(*txn, dk, e.body ? &*e.body : nullptr, rec->has_value());
      if (!moves) return moves.error();
      ref_free = !*moves;
    }
    auto r = impl_->add_to_dag(*txn, dk, rec->value_or(DocRecord{}), header, e.id,
                               Location{batch.author, e.seq}, ++*lseq, false);
    if (!r) return r.error();
    ++res.applied;
  }
  for (std::uint64_t from : skipped) {  // not held here: a device asking for it must not rely on us
    FS_TRY(impl_->note_left_out(*txn, project, batch.author, from));
    if (!options.judged) FS_TRY(impl_->note_unjudged(*txn, project, author, from));
  }
  for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci) {
    const Checkpoint& c = batch.checkpoints[ci];
    if (c.seq <= head->seq || c.seq > seq) continue;
    FS_TRY(txn->put(t.checkpoints, log_key(project, batch.author, c.seq),
                    CheckpointValue{c.chain, c.signature, seals[ci]}.encode()));
  }
  for (std::size_t ci = 0; ci < batch.checkpoints.size(); ++ci)  // proven, and maybe all held
    if (run_whole[ci] && batch.checkpoints[ci].seq > head->seq)
      FS_TRY(impl_->complete_run(*txn, project, author, batch.checkpoints[ci].seal->from,
                                 batch.checkpoints[ci].seq));
  FS_TRY(txn->put(t.heads, author_key(project, batch.author), HeadValue{seq, chain}.encode()));
  FS_TRY(impl_->put_change_counter(*txn, project, *lseq));
  if (membership_changed || erasures_changed) {
    FS_TRY(impl_->put_change_counter(*txn, project, *lseq));
    if (membership_changed) FS_TRY(impl_->enforce_removals(*txn, project));
    // A coordinator's erasure counts by the membership at its time: both changes re-evaluate.
    auto gone = impl_->enforce_erasures(*txn, project);
    if (!gone) return gone.error();
    auto after = impl_->change_counter(*txn, project);
    if (!after) return after.error();
    feed_moved = *after != *lseq;
    *lseq = *after;
  }
  FS_TRY(impl_->persist_clock(*txn));
  FS_TRY(txn->commit());
  res.head = seq;
  if (membership_changed || erasures_changed) ref_free = false;
  if (res.applied || feed_moved)
    impl_->notify(project, *lseq, ref_free ? std::optional(first_change) : std::nullopt);
  return res;
}

}  // namespace fieldsync::storage
