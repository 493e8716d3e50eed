// Store: reads (documents, versions, history, lists, merge preview) and the changes feed.
#include <algorithm>
#include <boost/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "common/encoding.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/subscription.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

namespace {

namespace json = boost::json;

// The collation of sort keys: null < false < true < numbers < strings < arrays < objects;
// numbers by value, strings by their UTF-8 bytes, arrays element by element, objects by text.
int type_rank(const json::value& v) {
  if (v.is_null()) return 0;
  if (v.is_bool()) return v.get_bool() ? 2 : 1;
  if (v.is_number()) return 3;
  if (v.is_string()) return 4;
  if (v.is_array()) return 5;
  return 6;
}

double number_of(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return v.get_double();
}

int compare_json(const json::value& a, const json::value& b) {
  int ra = type_rank(a), rb = type_rank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 3: {
      double x = number_of(a), y = number_of(b);
      return x < y ? -1 : (y < x ? 1 : 0);
    }
    case 4: {
      auto c = std::string_view(a.get_string()).compare(std::string_view(b.get_string()));
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    case 5: {
      const auto &x = a.get_array(), &y = b.get_array();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
        if (int c = compare_json(x[i], y[i])) return c;
      return x.size() < y.size() ? -1 : (y.size() < x.size() ? 1 : 0);
    }
    case 6: {
      auto c = json::serialize(a).compare(json::serialize(b));
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    default: return 0;
  }
}

json::value value_at(std::string_view body, const std::vector<std::string>& path) {
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec || !doc.is_object()) return nullptr;
  const json::value* v = &doc;
  for (const auto& seg : path) {
    const json::object* o = v->if_object();
    if (!o) return nullptr;
    v = o->if_contains(seg);
    if (!v) return nullptr;
  }
  return *v;
}

struct SortRow {
  json::value key;
  std::string collection;
  std::string id;
};

// a before b in the query's order (descending reverses every part).
bool sorted_before(const SortRow& a, const SortRow& b, bool descending) {
  int c = compare_json(a.key, b.key);
  if (c == 0) c = a.collection.compare(b.collection);
  if (c == 0) c = a.id.compare(b.id);
  return descending ? c > 0 : c < 0;
}

// The `next` of a sorted page: hex of the JSON [key, collection, id] of its last row.
std::string sort_cursor(const SortRow& r) {
  json::array a{r.key, json::string(r.collection), json::string(r.id)};
  std::string text = json::serialize(a);
  return to_hex(ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

Result<SortRow> parse_sort_cursor(std::string_view cursor) {
  auto bad = [] {
    return make_error(Errc::invalid_argument,
                      "bad cursor (after= of a sorted query takes the `next` of the same query)");
  };
  auto bytes = from_hex(cursor);
  if (!bytes) return bad();
  boost::system::error_code ec;
  json::value v = json::parse(
      std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()), ec);
  if (ec || !v.is_array() || v.get_array().size() != 3 || !v.get_array()[1].is_string() ||
      !v.get_array()[2].is_string())
    return bad();
  auto& a = v.get_array();
  return SortRow{a[0], std::string(a[1].get_string()), std::string(a[2].get_string())};
}

}  // namespace

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
  const bool sorted = !q.sort_path.empty();
  std::optional<SortRow> sort_after;
  if (sorted) {
    start = prefix;  // every match is read, then sorted
    if (!q.start_after.empty()) {
      auto r = parse_sort_cursor(q.start_after);
      if (!r) return r.error();
      sort_after = std::move(*r);
    }
  }
  std::vector<SortRow> rows;
  LmdbCursor c(*txn, impl_->t().docs);
  for (bool ok = c.seek(start); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto parts = split_doc_key(c.key());
    if (!parts || parts->collection.empty())
      return make_error(Errc::data_loss, "corrupt document key");
    std::string coll(parts->collection);
    std::string id(parts->id);
    if (q.collection.empty() && coll.front() == '_') continue;  // fieldsync's own collections
    if (!sorted && page.docs.size() >= q.limit) {
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
    if (q.selector && (!st->body || !q.selector->matches(coll, *st->body))) continue;
    if (!sorted) {
      page.docs.push_back(std::move(*st));
      continue;
    }
    SortRow row{st->body ? value_at(*st->body, q.sort_path) : json::value(nullptr), coll, id};
    if (sort_after && !sorted_before(*sort_after, row, q.sort_descending)) continue;
    if (rows.size() >= q.max_sort_docs)
      return make_error(Errc::invalid_argument,
                        "more than " + std::to_string(q.max_sort_docs) +
                            " documents match a sorted query (api.max_sort_docs): narrow it with "
                            "where= or selector=, or page through it unsorted");
    rows.push_back(std::move(row));
  }
  if (!sorted) return page;
  // The first `limit` rows in order, without sorting all of them.
  const std::size_t n = std::min<std::size_t>(rows.size(), q.limit);
  auto before = [&](const SortRow& a, const SortRow& b) {
    return sorted_before(a, b, q.sort_descending);
  };
  std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(n), rows.end(),
                    before);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& r = rows[i];
    auto rec = impl_->existing_doc(*txn, project, r.collection, r.id);
    if (!rec) return rec.error();
    auto st = impl_->doc_state(*txn, project, r.collection, r.id, *rec);
    if (!st) return st.error();
    page.docs.push_back(std::move(*st));
  }
  if (rows.size() > n && n > 0) page.next = sort_cursor(rows[n - 1]);
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
