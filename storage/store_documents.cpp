// Store: local writes (create, update, delete, resolve), the document DAG, and purge.
#include <algorithm>

#include "common/encoding.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace {}  // namespace

Result<DocRecord> Store::Impl::add_to_dag(LmdbTxn& txn, ByteView dk, DocRecord rec,
                                          const VersionHeader& h, const VersionId& id,
                                          const Location& at, std::uint64_t seq, bool local) const {
  // Heads live in the DocRecord; a version enters the docver history index only when
  // it stops being a head, so creating a document costs no index write.
  for (const auto& p : h.parents) {
    auto it = std::find_if(rec.heads.begin(), rec.heads.end(),
                           [&](const HeadRef& r) { return r.id == p; });
    if (it != rec.heads.end()) {
      FS_TRY(txn.put(t().docver, docver_key(dk, it->hlc, it->id), encode_location(it->at)));
      rec.heads.erase(it);
    } else if (!local) {
      // Possibly not received yet (another author's log comes later): remember that it
      // has a child so it never becomes a head when it arrives.
      FS_TRY(txn.put(t().superseded, superseded_key(dk, p), ByteView{}));
    }
  }
  bool superseded = false;
  if (!local) {  // a version written here just now cannot have a child yet
    auto sup = txn.get(t().superseded, superseded_key(dk, id));
    if (!sup) return sup.error();
    superseded = sup->has_value();
  }
  if (superseded) {
    FS_TRY(txn.put(t().docver, docver_key(dk, h.hlc, id), encode_location(at)));
  } else if (std::none_of(rec.heads.begin(), rec.heads.end(),
                          [&](const HeadRef& r) { return r.id == id; })) {
    rec.heads.push_back(HeadRef{id, h.hlc, at, h.kind == VersionKind::tombstone});
  }
  if (rec.heads.size() > kMaxDocHeads)
    return make_error(
        Errc::resource_exhausted,
        "document has " + std::to_string(kMaxDocHeads) +
            " concurrent versions, the most a document record holds; resolve them first");
  std::sort(rec.heads.begin(), rec.heads.end(), head_ranks_before);
  rec.flags = static_cast<std::uint8_t>(
      (rec.flags & DocRecord::kPurged) |
      (!rec.heads.empty() && rec.heads.front().tombstone ? DocRecord::kDeleted : 0));
  rec.local_seq = seq;
  FS_TRY(put_doc(txn, dk, rec));
  FS_TRY(txn.put(t().changes, change_key(h.project, seq), encode_location(at, local)));
  return rec;
}

Result<DocumentState> Store::Impl::doc_state(const LmdbTxn& txn, const ProjectId& p,
                                             std::string_view coll, std::string_view id,
                                             const DocRecord& rec) const {
  if (rec.heads.empty()) return make_error(Errc::data_loss, "document without heads");
  DocumentState s;
  s.collection = std::string(coll);
  s.doc_id = std::string(id);
  s.heads = rec.head_ids();
  s.deleted = rec.flags & DocRecord::kDeleted;
  s.purged = rec.flags & DocRecord::kPurged;
  s.local_seq = rec.local_seq;
  s.winner = rec.heads.front().id;
  auto v = load_version(txn, p, rec.heads.front().at);
  if (!v) return v.error();
  s.author = v->header.author;
  s.hlc = v->header.hlc;
  s.schema = v->header.schema;
  if (!s.deleted) s.body = std::move(v->body);
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
                                     const WriteRequest& req, WriteCursor& cur, bool system) {
  const auto& o = im.opts;
  if (!valid_new_collection(req.collection))
    return make_error(Errc::invalid_argument, "invalid collection name " +
                                                  quote_input(req.collection) + " (" +
                                                  std::string(kCollectionRule) + ")");
  if (!system && req.collection.front() == '_')
    return make_error(Errc::invalid_argument,
                      "collection " + quote_input(req.collection) +
                          " is reserved: names starting with '_' belong to fieldsync");
  std::string doc_id = req.doc_id;
  if (doc_id.empty()) doc_id = to_hex(crypto::random_bytes(16));
  if (!valid_new_doc_id(doc_id))
    return make_error(Errc::invalid_argument, "invalid document id " + quote_input(doc_id) + " (" +
                                                  std::string(kDocIdRule) + ")");
  bool tombstone = req.kind == VersionKind::tombstone;
  if (!tombstone) {
    if (req.body.size() > o.max_body_bytes)
      return make_error(Errc::too_large, "document body is " + std::to_string(req.body.size()) +
                                             " bytes; storage.max_body_bytes is " +
                                             std::to_string(o.max_body_bytes));
    FS_TRY(validate_json_object(req.body));
    FS_TRY(im.check_blob_refs(txn, req.body));
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
  const bool live = rec && !(rec->flags & DocRecord::kDeleted);
  if (req.strict) {
    const std::string name = quote_input(req.collection + "/" + doc_id);
    if (req.must_not_exist && live)
      return make_error(Errc::aborted, "document " + name + " exists (If-None-Match: *)");
    if (req.use_current && !live)
      return make_error(Errc::aborted, "no document " + name + " (If-Match: *)");
    if (req.parents.size() == 1) {
      if (!rec)
        return make_error(Errc::aborted,
                          "no document " + name + " (If-Match: " + req.parents.front().str() + ")");
      if (rec->heads.front().id != req.parents.front())
        return make_error(Errc::aborted, "document " + name + " is at version " +
                                             rec->heads.front().id.str() + ", not " +
                                             req.parents.front().str() + " (If-Match)");
    }
  }
  if (req.must_not_exist) {
    if (live)
      return make_error(Errc::already_exists,
                        "document " + req.collection + "/" + doc_id + " exists");
    if (rec) h.parents = rec->head_ids();  // re-creating a deleted document continues its history
  } else if (!req.parents.empty()) {
    for (const auto& p : req.parents) {
      bool head = rec && std::any_of(rec->heads.begin(), rec->heads.end(),
                                     [&](const HeadRef& r) { return r.id == p; });
      if (head) continue;
      auto loc = rec ? im.find_version(txn, dk, *rec, p)
                     : Result<std::optional<Location>>(std::optional<Location>{});
      if (!loc) return loc.error();
      if (!*loc)
        return make_error(
            Errc::failed_precondition,
            "base version " + p.str() + " is not a version of " + req.collection + "/" + doc_id);
      stale = true;
    }
    h.parents = req.parents;
  } else if (rec) {
    // No base: a put continues the winner, a delete supersedes every head so that no
    // conflicting side resurfaces after the delete.
    if (tombstone)
      h.parents = rec->head_ids();
    else
      h.parents = {rec->heads.front().id};
  } else if (tombstone) {
    return make_error(Errc::not_found, "no document " + quote_input(req.collection + "/" + doc_id));
  }
  std::sort(h.parents.begin(), h.parents.end());
  h.parents.erase(std::unique(h.parents.begin(), h.parents.end()), h.parents.end());
  if (h.parents.size() > kMaxParents) return make_error(Errc::invalid_argument, "too many parents");
  if (!tombstone) {
    h.body_hash = crypto::sha256(as_bytes(req.body));
    h.body_size = static_cast<std::uint32_t>(req.body.size());
  }
  // A document erased before: the version says which erasure its writer knew of, so it is
  // not taken for data written before the erasure (docs/storage.md "Erasure").
  auto erased_at = im.erasure_hlc(txn, dk);
  if (!erased_at) return erased_at.error();
  if (*erased_at) set_erasure_epoch(h, *erased_at);
  h.hlc = im.clock.tick();
  Bytes enc = encode_header(h);
  VersionId id = version_id_of(enc);

  cur.own.seq += 1;
  cur.own.chain = chain_next(cur.own.chain, cur.own.seq, id);
  LogRecord lr{cur.own.chain, id, enc, std::nullopt, false};
  if (!tombstone) lr.body = as_bytes(req.body);
  FS_TRY(im.put_log(txn, project, log_key(project, h.author, cur.own.seq), lr));
  if (cur.own.seq % o.checkpoint_interval == 0)
    FS_TRY(im.put_own_checkpoint(txn, project, h.author, *im.key, cur.own.seq, cur.own.chain));
  cur.seq += 1;
  auto updated = im.add_to_dag(txn, dk, rec.value_or(DocRecord{}), h, id,
                               Location{h.author, cur.own.seq}, cur.seq, true);
  if (!updated) return updated.error();

  WriteResult res;
  res.version = id;
  res.collection = req.collection;
  res.doc_id = doc_id;
  res.local_seq = cur.seq;
  res.heads = updated->head_ids();
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
  auto r = impl_->write_in_txn(*txn, project, reqs, false);
  if (!r) return r.error();
  // Whether these writes leave every document's blob references as they were (no body that
  // may hold one, none indexed before): the blob indexer need not read them.
  std::optional<std::uint64_t> ref_free_from = r->second;
  for (std::size_t i = 0; i < reqs.size() && ref_free_from; ++i) {
    const WriteResult& w = r->first[i];
    ref_free_from = std::min(*ref_free_from, w.local_seq - 1);
    auto moves = impl_->may_move_blob_refs(
        *txn, doc_key(project, w.collection, w.doc_id),
        reqs[i].kind == VersionKind::tombstone ? nullptr : &reqs[i].body, true);
    if (!moves) return moves.error();
    if (*moves) ref_free_from.reset();
  }
  FS_TRY(txn->commit());
  impl_->notify(project, r->second, ref_free_from);
  return std::move(r->first);
}

Result<std::pair<std::vector<WriteResult>, std::uint64_t>> Store::Impl::write_in_txn(
    LmdbTxn& txn, const ProjectId& project, const std::vector<WriteRequest>& reqs, bool system) {
  if (renewal_pending.load())
    return make_error(Errc::unavailable,
                      "this device's identity is being renewed (another copy of it was detected); "
                      "retry in a moment");
  FS_TRY(this->project(txn, project));
  WriteCursor cur;
  auto own = head(txn, project, me());
  if (!own) return own.error();
  cur.own = *own;
  auto seq = change_counter(txn, project);
  if (!seq) return seq.error();
  cur.seq = *seq;

  std::vector<WriteResult> out;
  out.reserve(reqs.size());
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto r = write_one(*this, txn, project, reqs[i], cur, system);
    if (!r) {
      Error e = r.error();
      if (reqs.size() > 1) e.message = "write " + std::to_string(i) + ": " + e.message;
      return e;  // the caller aborts the transaction: nothing of the batch is kept
    }
    out.push_back(std::move(*r));
  }
  FS_TRY(txn.put(t().heads, author_key(project, me()), cur.own.encode()));
  FS_TRY(put_change_counter(txn, project, cur.seq));
  FS_TRY(persist_clock(txn));
  return std::pair{std::move(out), cur.seq};
}

Result<std::uint32_t> Store::purge_document(const ProjectId& project, std::string_view collection,
                                            std::string_view doc_id) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  Key dk = doc_key(project, collection, doc_id);
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  std::uint32_t removed = 0;
  auto held = impl_->doc_versions(*txn, dk, *rec);
  if (!held) return held.error();
  for (const auto& version : *held) {
    const Location& at = version.at;
    // Rewrite the log entry without its body: the header stays, so the chain still
    // verifies and peers can still be served (and never re-send) this version.
    Key k = log_key(project, at.author, at.seq);
    auto lr = impl_->held_log(*txn, project, at);
    if (!lr) return lr.error();
    if (!lr->body) continue;
    lr->body.reset();
    Bytes stripped = lr->encode(impl_->bodies, project);
    FS_TRY(txn->put(impl_->t().logs, k, stripped));
    ++removed;
  }
  rec->flags |= DocRecord::kPurged;
  FS_TRY(impl_->put_doc(*txn, dk, *rec));
  FS_TRY(txn->commit());
  return removed;
}

}  // namespace fieldsync::storage
