// Store: reads (documents, versions, history, lists, merge preview) and the changes feed.
#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

Result<DocumentState> Store::get_document(const ProjectId& project, std::string_view collection,
                                          std::string_view doc_id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  return impl_->doc_state(*txn, project, collection, doc_id, *rec);
}

Result<Version> Store::get_version(const ProjectId& project, std::string_view collection,
                                   std::string_view doc_id, const VersionId& id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Key dk = doc_key(project, collection, doc_id);
  auto rec = impl_->doc(*txn, dk);
  if (!rec) return rec.error();
  auto loc = *rec ? impl_->find_version(*txn, dk, **rec, id)
                  : Result<std::optional<Location>>(std::optional<Location>{});
  if (!loc) return loc.error();
  if (!*loc)
    return make_error(Errc::not_found, "no version " + id.str() + " of " + std::string(collection) +
                                           "/" + std::string(doc_id));
  return impl_->load_version(*txn, project, **loc);
}

Result<std::vector<Version>> Store::history(const ProjectId& project, std::string_view collection,
                                            std::string_view doc_id, std::uint32_t limit) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  auto held = impl_->doc_versions(*txn, doc_key(project, collection, doc_id), *rec);
  if (!held) return held.error();
  std::vector<Version> out;
  for (const auto& h : *held) {
    if (out.size() >= limit) break;
    auto v = impl_->load_version(*txn, project, h.at);
    if (!v) return v.error();
    out.push_back(std::move(*v));
  }
  return out;
}

Result<ListPage> Store::list_documents(const ProjectId& project, const ListQuery& q) const {
  if (!q.collection.empty() && !valid_collection(q.collection))
    return make_error(Errc::invalid_argument,
                      "invalid collection name " + quote_input(q.collection));
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Key prefix =
      q.collection.empty() ? Key{}.raw(project.view()) : collection_prefix(project, q.collection);
  Key start = prefix;
  if (!q.start_after.empty()) {
    if (q.collection.empty()) {
      auto slash = q.start_after.find('/');
      if (slash == std::string::npos) return make_error(Errc::invalid_argument, "bad cursor");
      start = doc_key(project, q.start_after.substr(0, slash), q.start_after.substr(slash + 1));
    } else {
      start = doc_key(project, q.collection, q.start_after);
    }
    start.u8(0);  // strictly after the cursor
  }
  ListPage page;
  LmdbCursor c(*txn, impl_->t().docs);
  for (bool ok = c.seek(start); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto parts = split_doc_key(c.key());
    if (!parts || parts->collection.empty())
      return make_error(Errc::data_loss, "corrupt document key");
    std::string coll(parts->collection);
    std::string id(parts->id);
    if (q.collection.empty() && coll.front() == '_') continue;  // fieldsync's own collections
    if (page.docs.size() >= q.limit) {
      page.next = q.collection.empty() ? page.docs.back().collection + "/" + page.docs.back().doc_id
                                       : page.docs.back().doc_id;
      break;
    }
    auto rec = DocRecord::decode(c.value());
    if (!rec) return make_error(Errc::data_loss, "corrupt document record");
    if ((rec->flags & DocRecord::kDeleted) && !q.include_deleted) continue;
    if (q.conflicts_only && rec->heads.size() < 2) continue;
    auto st = impl_->doc_state(*txn, project, coll, id, *rec);
    if (!st) return st.error();
    if (!q.filters.empty()) {
      if (!st->body) continue;
      auto m = matches_filters(*st->body, q.filters);
      if (!m) return m.error();
      if (!*m) continue;
    }
    page.docs.push_back(std::move(*st));
  }
  return page;
}

Result<std::vector<std::string>> Store::list_collections(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<std::string> out;
  LmdbCursor c(*txn, impl_->t().docs);
  Key prefix = Key{}.raw(project.view());
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix);) {
    auto parts = split_doc_key(c.key());
    if (!parts || parts->collection.empty())
      return make_error(Errc::data_loss, "corrupt document key");
    std::string name(parts->collection);
    Key next = collection_prefix(project, name);
    if (name.front() != '_') out.push_back(name);  // fieldsync's own collections are not listed
    // Doc ids are printable ASCII, so prefix|0xff sorts after every key of this collection.
    next.u8(0xff);
    ok = c.seek(next);
  }
  return out;
}

Result<MergeResult> Store::merge_heads(const ProjectId& project, std::string_view collection,
                                       std::string_view doc_id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  Key dk = doc_key(project, collection, doc_id);
  const auto heads = rec->head_ids();

  // Every version of this document we hold, by id (the DAG walk needs parents).
  std::unordered_map<VersionId, Version, FixedIdHash> versions;
  auto held = impl_->doc_versions(*txn, dk, *rec);
  if (!held) return held.error();
  for (const auto& h : *held) {
    auto v = impl_->load_version(*txn, project, h.at);
    if (!v) return v.error();
    versions.emplace(v->id, std::move(*v));
  }
  // Ancestor sets of every head.
  std::vector<std::unordered_set<VersionId, FixedIdHash>> anc(heads.size());
  for (std::size_t i = 0; i < heads.size(); ++i) {
    std::vector<VersionId> stack{heads[i]};
    while (!stack.empty()) {
      VersionId v = stack.back();
      stack.pop_back();
      auto it = versions.find(v);
      if (it == versions.end() || !anc[i].insert(v).second) continue;  // unknown parent: stop there
      for (const auto& p : it->second.header.parents) stack.push_back(p);
    }
  }
  MergeInput in;
  MergeResult out;
  out.heads = heads;
  for (const auto& head : heads) {
    const Version& v = versions.at(head);
    if (v.header.kind == VersionKind::tombstone) {
      out.conflicting_fields.push_back("(deleted)");
      continue;
    }
    if (!v.body)
      return make_error(Errc::failed_precondition,
                        "a head's body is not held on this device (purged)");
    in.sides.push_back(*v.body);
  }
  // Base: the newest version that is an ancestor of every head.
  const Version* base = nullptr;
  for (const auto& id : anc[0]) {
    bool common =
        std::all_of(anc.begin() + 1, anc.end(), [&](const auto& s) { return s.count(id) > 0; });
    const Version& v = versions.at(id);
    if (common && (!base || v.header.hlc > base->header.hlc)) base = &v;
  }
  if (base && base->body) in.base = *base->body;
  if (in.sides.empty()) {
    out.body = "{}";
    return out;
  }
  auto merged = merge_objects(in);
  if (!merged) return merged.error();
  out.body = std::move(merged->body);
  for (auto& f : merged->conflicting_fields) out.conflicting_fields.push_back(std::move(f));
  return out;
}

Result<std::vector<Change>> Store::changes_since(const ProjectId& project, std::uint64_t since,
                                                 std::uint32_t limit) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<Change> out;
  Key prefix = Key{}.raw(project.view());
  LmdbCursor c(*txn, impl_->t().changes);
  for (bool ok = c.seek(change_key(project, since + 1));
       ok && has_prefix(c.key(), prefix) && out.size() < limit; ok = c.next()) {
    auto loc = decode_location(c.value());
    if (!loc) return make_error(Errc::data_loss, "corrupt changes feed");
    auto v = impl_->load_version(*txn, project, loc->first);
    if (!v) return v.error();
    Change ch;
    ch.seq = ByteReader(c.key().subspan(ProjectId::size)).u64();
    ch.version = v->id;
    ch.collection = std::move(v->header.collection);
    ch.doc_id = std::move(v->header.doc_id);
    ch.author = v->header.author;
    ch.deleted = v->header.kind == VersionKind::tombstone;
    ch.local = loc->second;
    out.push_back(std::move(ch));
  }
  return out;
}

Result<std::uint64_t> Store::last_change_seq(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return impl_->change_counter(*txn, project);
}

}  // namespace fieldsync::storage
