// Store: local writes (create, update, delete, resolve), the document DAG, and purge.
#include <algorithm>

#include "common/encoding.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace {

struct Ranked {
  std::uint64_t hlc;
  VersionId id;
  bool tombstone;
};

// Deterministic winner: highest hlc, then highest version id. Every device that holds
// the same heads picks the same winner.
bool rank_before(const Ranked& a, const Ranked& b) {
  if (a.hlc != b.hlc) return a.hlc > b.hlc;
  return a.id > b.id;
}

}  // namespace

Result<DocRecord> Store::Impl::add_to_dag(LmdbTxn& txn, const VersionHeader& h, const VersionId& id,
                                          std::uint64_t seq, bool local) const {
  Key dk = doc_key(h.project, h.collection, h.doc_id);
  DocTag tag = doc_tag(dk);
  auto existing = doc(txn, dk);
  if (!existing) return existing.error();
  DocRecord rec = existing->value_or(DocRecord{});

  for (const auto& p : h.parents) {
    FS_TRY(txn.put(t().superseded, p.view(), ByteView(tag)));
    std::erase(rec.heads, p);
  }
  auto sup = txn.get(t().superseded, id.view());
  if (!sup) return sup.error();
  bool superseded = *sup && std::equal((*sup)->begin(), (*sup)->end(), tag.begin(), tag.end());
  if (!superseded && std::find(rec.heads.begin(), rec.heads.end(), id) == rec.heads.end())
    rec.heads.push_back(id);

  std::vector<Ranked> ranked;
  ranked.reserve(rec.heads.size());
  for (const auto& head : rec.heads) {
    if (head == id) {
      ranked.push_back({h.hlc, id, h.kind == VersionKind::tombstone});
      continue;
    }
    auto hh = header(txn, head);
    if (!hh) return hh.error();
    ranked.push_back({hh->hlc, head, hh->kind == VersionKind::tombstone});
  }
  std::sort(ranked.begin(), ranked.end(), rank_before);
  rec.heads.clear();
  for (const auto& r : ranked) rec.heads.push_back(r.id);
  rec.flags = static_cast<std::uint8_t>((rec.flags & DocRecord::kPurged) |
                                        (!ranked.empty() && ranked.front().tombstone ? DocRecord::kDeleted : 0));
  rec.local_seq = seq;
  FS_TRY(txn.put(t().docs, dk, rec.encode()));
  FS_TRY(txn.put(t().docver, docver_key(tag, h.hlc, id), ByteView{}));
  FS_TRY(txn.put(t().changes, change_key(h.project, seq), ChangeValue{id, local}.encode()));
  return rec;
}

Result<DocumentState> Store::Impl::doc_state(const LmdbTxn& txn, const ProjectId&, std::string_view coll,
                                             std::string_view id, const DocRecord& rec) const {
  DocumentState s;
  s.collection = std::string(coll);
  s.doc_id = std::string(id);
  s.heads = rec.heads;
  s.deleted = rec.flags & DocRecord::kDeleted;
  s.purged = rec.flags & DocRecord::kPurged;
  s.local_seq = rec.local_seq;
  if (rec.heads.empty()) return make_error(Errc::data_loss, "document without heads");
  s.winner = rec.heads.front();
  auto h = header(txn, s.winner);
  if (!h) return h.error();
  s.author = h->author;
  s.hlc = h->hlc;
  s.schema = h->schema;
  if (!s.deleted) {
    auto b = body(txn, s.winner);
    if (!b) return b.error();
    s.body = std::move(*b);
  }
  return s;
}

namespace {

// Everything needed to append one local write inside an open write transaction.
struct WriteCursor {
  HeadValue own;          // this device's log head in the project
  std::uint64_t seq = 0;  // changes-feed counter
};

}  // namespace

static Result<WriteResult> write_one(Store::Impl& im, LmdbTxn& txn, const ProjectId& project,
                                     const WriteRequest& req, WriteCursor& cur) {
  const auto& o = im.opts;
  if (!valid_collection(req.collection))
    return make_error(Errc::invalid_argument,
                      "invalid collection name '" + req.collection + "' (1-64 of A-Z a-z 0-9 _ - .)");
  std::string doc_id = req.doc_id;
  if (doc_id.empty()) doc_id = to_hex(crypto::random_bytes(16));
  if (!valid_doc_id(doc_id))
    return make_error(Errc::invalid_argument,
                      "invalid document id '" + doc_id + "' (1-128 of A-Z a-z 0-9 _ - . : @ ~ +)");
  bool tombstone = req.kind == VersionKind::tombstone;
  if (!tombstone) {
    if (req.body.size() > o.max_body_bytes)
      return make_error(Errc::too_large, "document body is " + std::to_string(req.body.size()) +
                                             " bytes; storage.max_body_bytes is " +
                                             std::to_string(o.max_body_bytes));
    FS_TRY(validate_json_object(req.body));
  }

  Key dk = doc_key(project, req.collection, doc_id);
  auto existing = im.doc(txn, dk);
  if (!existing) return existing.error();
  const std::optional<DocRecord>& rec = *existing;

  VersionHeader h;
  h.project = project;
  h.collection = req.collection;
  h.doc_id = doc_id;
  h.author = im.me();
  h.schema = req.schema;
  h.kind = req.kind;
  bool stale = false;
  if (req.must_not_exist) {
    if (rec && !(rec->flags & DocRecord::kDeleted))
      return make_error(Errc::already_exists, "document " + req.collection + "/" + doc_id + " exists");
    if (rec) h.parents = rec->heads;  // re-creating a deleted document continues its history
  } else if (!req.parents.empty()) {
    for (const auto& p : req.parents) {
      auto ph = im.header(txn, p);
      if (!ph) return make_error(Errc::failed_precondition, "base version " + p.str() + " is unknown");
      if (ph->collection != req.collection || ph->doc_id != doc_id || ph->project != project)
        return make_error(Errc::invalid_argument, "base version " + p.str() + " belongs to another document");
      if (!rec || std::find(rec->heads.begin(), rec->heads.end(), p) == rec->heads.end()) stale = true;
    }
    h.parents = req.parents;
  } else if (rec) {
    // No base: a put continues the winner, a delete supersedes every head so that no
    // conflicting side resurfaces after the delete.
    if (tombstone)
      h.parents = rec->heads;
    else
      h.parents = {rec->heads.front()};
  } else if (tombstone) {
    return make_error(Errc::not_found, "no document " + req.collection + "/" + doc_id);
  }
  std::sort(h.parents.begin(), h.parents.end());
  h.parents.erase(std::unique(h.parents.begin(), h.parents.end()), h.parents.end());
  if (h.parents.size() > kMaxParents) return make_error(Errc::invalid_argument, "too many parents");
  if (!tombstone) {
    h.body_hash = crypto::sha256(as_bytes(req.body));
    h.body_size = static_cast<std::uint32_t>(req.body.size());
  }
  h.hlc = im.clock.tick();
  Bytes enc = encode_header(h);
  VersionId id = version_id_of(enc);

  const Tables& t = im.t();
  FS_TRY(txn.put(t.versions, id.view(), enc));
  if (!tombstone) FS_TRY(txn.put(t.bodies, id.view(), as_bytes(req.body)));
  cur.own.seq += 1;
  cur.own.chain = chain_next(cur.own.chain, cur.own.seq, id);
  FS_TRY(txn.put(t.logs, log_key(project, h.author, cur.own.seq), LogValue{id, cur.own.chain}.encode()));
  if (cur.own.seq % o.checkpoint_interval == 0) {
    auto sig = im.key->sign(checkpoint_message(project, h.author, cur.own.seq, cur.own.chain));
    FS_TRY(txn.put(t.checkpoints, log_key(project, h.author, cur.own.seq),
                   CheckpointValue{cur.own.chain, sig}.encode()));
  }
  cur.seq += 1;
  auto updated = im.add_to_dag(txn, h, id, cur.seq, true);
  if (!updated) return updated.error();

  WriteResult res;
  res.version = id;
  res.collection = req.collection;
  res.doc_id = doc_id;
  res.local_seq = cur.seq;
  res.heads = updated->heads;
  res.conflict = updated->heads.size() > 1 || stale;
  return res;
}

Result<WriteResult> Store::write(const ProjectId& project, const WriteRequest& req) {
  auto r = write_batch(project, {req});
  if (!r) return r.error();
  return std::move(r->front());
}

Result<std::vector<WriteResult>> Store::write_batch(const ProjectId& project,
                                                    const std::vector<WriteRequest>& reqs) {
  if (reqs.empty()) return std::vector<WriteResult>{};
  if (reqs.size() > impl_->opts.max_batch_docs)
    return make_error(Errc::too_large, "batch of " + std::to_string(reqs.size()) +
                                           " writes; storage.max_batch_docs is " +
                                           std::to_string(impl_->opts.max_batch_docs));
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  WriteCursor cur;
  auto head = impl_->head(*txn, project, impl_->me());
  if (!head) return head.error();
  cur.own = *head;
  auto seq = impl_->change_counter(*txn, project);
  if (!seq) return seq.error();
  cur.seq = *seq;

  std::vector<WriteResult> out;
  out.reserve(reqs.size());
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto r = write_one(*impl_, *txn, project, reqs[i], cur);
    if (!r) {
      Error e = r.error();
      if (reqs.size() > 1) e.message = "write " + std::to_string(i) + ": " + e.message;
      return e;  // the transaction aborts: nothing of the batch is kept
    }
    out.push_back(std::move(*r));
  }
  FS_TRY(txn->put(impl_->t().heads, author_key(project, impl_->me()), cur.own.encode()));
  FS_TRY(impl_->put_change_counter(*txn, project, cur.seq));
  FS_TRY(impl_->persist_clock(*txn));
  FS_TRY(txn->commit());
  impl_->notify(project, cur.seq);
  return out;
}

Result<std::uint32_t> Store::purge_document(const ProjectId& project, std::string_view collection,
                                            std::string_view doc_id) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Key dk = doc_key(project, collection, doc_id);
  auto rec = impl_->doc(*txn, dk);
  if (!rec) return rec.error();
  if (!*rec) return make_error(Errc::not_found, "no document " + std::string(collection) + "/" + std::string(doc_id));
  DocTag tag = doc_tag(dk);
  std::uint32_t removed = 0;
  {
    LmdbCursor c(*txn, impl_->t().docver);
    for (bool ok = c.seek(ByteView(tag)); ok && has_prefix(c.key(), ByteView(tag)); ok = c.next()) {
      auto id = id_from_bytes<VersionId>(c.key().subspan(tag.size() + 8));
      if (!id) return make_error(Errc::data_loss, "corrupt history index");
      auto b = txn->get(impl_->t().bodies, id->view());
      if (!b) return b.error();
      if (*b) {
        FS_TRY(txn->del(impl_->t().bodies, id->view()));
        ++removed;
      }
    }
  }
  (*rec)->flags |= DocRecord::kPurged;
  FS_TRY(txn->put(impl_->t().docs, dk, (*rec)->encode()));
  FS_TRY(txn->commit());
  return removed;
}

}  // namespace fieldsync::storage
