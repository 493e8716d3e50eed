// Store: the per-device logs that sync reads and applies (docs/storage.md "Log chain").
#include <algorithm>

#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

Result<VersionVector> Store::version_vector(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  VersionVector vv;
  Key prefix = Key{}.raw(project.view());
  LmdbCursor c(*txn, impl_->t().heads);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto author = id_from_bytes<DeviceId>(c.key().subspan(ProjectId::size));
    auto h = HeadValue::decode(c.value());
    if (!author || !h) return make_error(Errc::data_loss, "corrupt log head");
    vv[*author] = h->seq;
  }
  return vv;
}

// Signs this device's log head if writes since the last checkpoint are unsigned.
// Done lazily (when the log is read for a peer) so single writes cost no signature.
static Status sign_own_head(Store::Impl& im, const ProjectId& project) {
  auto txn = im.write_txn();
  if (!txn) return txn.error();
  auto head = im.head(*txn, project, im.me());
  if (!head) return head.error();
  if (head->seq == 0) return {};
  Key k = log_key(project, im.me(), head->seq);
  auto cp = txn->get(im.t().checkpoints, k);
  if (!cp) return cp.error();
  if (*cp) return {};
  auto sig = im.key->sign(checkpoint_message(project, im.me(), head->seq, head->chain));
  FS_TRY(txn->put(im.t().checkpoints, k, CheckpointValue{head->chain, sig}.encode()));
  return txn->commit();
}

Result<LogBatch> Store::read_log(const ProjectId& project, const DeviceId& author,
                                 std::uint64_t after_seq, std::uint32_t max_entries,
                                 std::uint64_t max_bytes) {
  if (author == impl_->me()) FS_TRY(sign_own_head(*impl_, project));
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  LogBatch batch;
  batch.author = author;
  auto head = impl_->head(*txn, project, author);
  if (!head) return head.error();
  if (after_seq >= head->seq) return batch;
  max_entries = std::max<std::uint32_t>(max_entries, 1);

  Key prefix = author_key(project, author);
  LmdbCursor logs(*txn, impl_->t().logs);
  LmdbCursor cps(*txn, impl_->t().checkpoints);
  bool cp_ok = cps.seek(log_key(project, author, after_seq + 1));
  std::uint64_t bytes = 0;
  std::size_t cut_entries = 0, cut_checkpoints = 0;  // the last point where the batch may end
  for (bool ok = logs.seek(log_key(project, author, after_seq + 1));
       ok && has_prefix(logs.key(), prefix); ok = logs.next()) {
    std::uint64_t seq = ByteReader(logs.key().subspan(prefix.b.size())).u64();
    if (seq != after_seq + batch.entries.size() + 1)
      return make_error(Errc::data_loss, "gap in log");
    auto lr = LogRecord::decode(logs.value());
    if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
    std::size_t body_size = lr->body ? lr->body->size() : 0;
    bool over = batch.entries.size() >= max_entries || (bytes > 0 && bytes + body_size > max_bytes);
    if (over && cut_entries > 0) break;  // end at the last checkpoint inside the limits
    bytes += body_size;
    LogEntry e{seq, lr->id, Bytes(lr->header.begin(), lr->header.end()), std::nullopt};
    if (lr->body) e.body = std::string(as_chars(*lr->body));
    batch.entries.push_back(std::move(e));
    while (cp_ok && has_prefix(cps.key(), prefix) &&
           ByteReader(cps.key().subspan(prefix.b.size())).u64() <= seq) {
      std::uint64_t cseq = ByteReader(cps.key().subspan(prefix.b.size())).u64();
      auto cv = CheckpointValue::decode(cps.value());
      if (!cv) return make_error(Errc::data_loss, "corrupt checkpoint");
      batch.checkpoints.push_back(Checkpoint{cseq, cv->chain, cv->signature});
      cp_ok = cps.next();
    }
    if (!batch.checkpoints.empty() && batch.checkpoints.back().seq == seq) {
      cut_entries = batch.entries.size();
      cut_checkpoints = batch.checkpoints.size();
    }
  }
  if (cut_entries == 0)
    return make_error(Errc::data_loss, "log of " + author.short_str() +
                                           " has no checkpoint after seq " +
                                           std::to_string(after_seq));
  batch.entries.resize(cut_entries);
  batch.checkpoints.resize(cut_checkpoints);
  return batch;
}

Result<ApplyResult> Store::apply_log(const ProjectId& project, const LogBatch& batch) {
  auto fail = [&](const std::string& why) {
    return make_error(Errc::verification_failed, "log of " + batch.author.short_str() + ": " + why);
  };
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto head = impl_->head(*txn, project, batch.author);
  if (!head) return head.error();
  ApplyResult res;
  res.head = head->seq;
  if (batch.entries.empty()) return res;
  if (batch.entries.front().seq == 0 || batch.entries.front().seq > head->seq + 1)
    return fail("batch starts at seq " + std::to_string(batch.entries.front().seq) +
                " but we hold up to " + std::to_string(head->seq));

  // 1. Verify everything before writing anything.
  crypto::Digest chain = head->chain;
  std::uint64_t seq = head->seq;
  struct Pending {
    const LogEntry* entry;
    VersionHeader header;
  };
  std::vector<Pending> fresh;
  std::size_t cp = 0;
  std::uint64_t expect = batch.entries.front().seq;
  for (const auto& e : batch.entries) {
    if (e.seq != expect++) return fail("entries are not contiguous");
    if (e.seq <= head->seq) {
      // Already held (another path delivered it): it must be the same version.
      auto have = txn->get(impl_->t().logs, log_key(project, batch.author, e.seq));
      if (!have) return have.error();
      auto lr = *have ? LogRecord::decode(**have) : std::nullopt;
      if (!lr || lr->id != e.id)
        return fail("seq " + std::to_string(e.seq) + " differs from the held log (forked log)");
      ++res.duplicates;
      continue;
    }
    if (version_id_of(e.header) != e.id)
      return fail("seq " + std::to_string(e.seq) + ": id does not match header hash");
    auto h = decode_header(e.header);
    if (!h) return fail("seq " + std::to_string(e.seq) + ": " + h.error().message);
    if (h->author != batch.author)
      return fail("seq " + std::to_string(e.seq) + ": version claims another author");
    if (h->project != project)
      return fail("seq " + std::to_string(e.seq) + ": version of another project");
    if (e.body) {
      if (h->kind == VersionKind::tombstone) return fail("tombstone with a body");
      if (e.body->size() != h->body_size || crypto::sha256(as_bytes(*e.body)) != h->body_hash)
        return fail("seq " + std::to_string(e.seq) + ": body does not match its hash");
      if (e.body->size() > impl_->opts.max_body_bytes)
        return make_error(Errc::too_large, "received body exceeds storage.max_body_bytes");
    }
    seq = e.seq;
    chain = chain_next(chain, seq, e.id);
    // Checkpoints up to here must match the chain we computed.
    while (cp < batch.checkpoints.size() && batch.checkpoints[cp].seq <= seq) {
      const auto& c = batch.checkpoints[cp++];
      if (c.seq < seq && c.seq > head->seq) return fail("checkpoint out of order");
      if (c.seq != seq) continue;  // at or below our head: already verified when applied
      if (c.chain != chain) return fail("hash chain broken at seq " + std::to_string(seq));
      if (!crypto::verify(batch.author, checkpoint_message(project, batch.author, seq, chain),
                          c.signature))
        return fail("bad signature at seq " + std::to_string(seq));
    }
    fresh.push_back(Pending{&e, std::move(*h)});
  }
  if (fresh.empty()) return res;
  bool signed_end = std::any_of(batch.checkpoints.begin(), batch.checkpoints.end(),
                                [&](const Checkpoint& c) { return c.seq == seq; });
  if (!signed_end) return fail("batch does not end at a signed checkpoint");

  // 2. Apply. Versions a removed author wrote after its removal are kept in the log
  // (header only, so the chain still verifies and relays) but enter no document.
  const Tables& t = impl_->t();
  auto members = impl_->membership(*txn, project);
  if (!members) return members.error();
  std::optional<std::uint64_t> cutoff;
  if (auto m = members->find(batch.author); m != members->end() && m->second.role == Role::removed)
    cutoff = m->second.max_seq;
  bool membership_changed = false;
  auto lseq = impl_->change_counter(*txn, project);
  if (!lseq) return lseq.error();
  crypto::Digest c2 = head->chain;
  for (const auto& p : fresh) {
    const LogEntry& e = *p.entry;
    c2 = chain_next(c2, e.seq, e.id);
    bool excluded = cutoff && e.seq > *cutoff;
    LogRecord lr{c2, e.id, e.header, std::nullopt, excluded};
    if (e.body && !excluded) lr.body = as_bytes(*e.body);
    FS_TRY(txn->put(t.logs, log_key(project, batch.author, e.seq), lr.encode()));
    if (excluded) continue;
    if (p.header.collection == kMembersCollection) membership_changed = true;
    impl_->clock.observe(p.header.hlc);
    Key dk = doc_key(project, p.header.collection, p.header.doc_id);
    auto rec = impl_->doc(*txn, dk);
    if (!rec) return rec.error();
    auto r = impl_->add_to_dag(*txn, dk, rec->value_or(DocRecord{}), p.header, e.id,
                               Location{batch.author, e.seq}, ++*lseq, false);
    if (!r) return r.error();
    ++res.applied;
  }
  for (const auto& c : batch.checkpoints) {
    if (c.seq <= head->seq || c.seq > seq) continue;
    FS_TRY(txn->put(t.checkpoints, log_key(project, batch.author, c.seq),
                    CheckpointValue{c.chain, c.signature}.encode()));
  }
  FS_TRY(txn->put(t.heads, author_key(project, batch.author), HeadValue{seq, chain}.encode()));
  FS_TRY(impl_->put_change_counter(*txn, project, *lseq));
  if (membership_changed) {
    FS_TRY(impl_->enforce_removals(*txn, project));
    auto after = impl_->change_counter(*txn, project);
    if (!after) return after.error();
    *lseq = *after;
  }
  FS_TRY(impl_->persist_clock(*txn));
  FS_TRY(txn->commit());
  res.head = seq;
  if (res.applied) impl_->notify(project, *lseq);
  return res;
}

}  // namespace fieldsync::storage
