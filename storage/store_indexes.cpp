// Store: declared indexes (docs/storage.md "Indexes"): declarations, upkeep in the writing
// transaction, and the index thread that builds an index over the documents held already.
// Queries through them are in store_queries.cpp.
#include <boost/json.hpp>
#include <condition_variable>
#include <thread>

#include "common/json_parse.hpp"
#include "storage/index_key.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

namespace json = boost::json;

namespace {

// Documents indexed per transaction of the index thread: writes wait at most for one.
constexpr std::size_t kBuildBatch = 1000;

// meta: 'I' + project + name -> the declaration; 'J' + project -> the changes-feed counter
// the project's indexes are kept up to; "ixn" -> the next index number.
Key decl_prefix(const ProjectId& p) {
  Key k;
  k.u8('I').raw(p.view());
  return k;
}
Key decl_key(const ProjectId& p, std::string_view name) {
  Key k = decl_prefix(p);
  k.raw(as_bytes(name));
  return k;
}
Key through_key(const ProjectId& p) {
  Key k;
  k.u8('J').raw(p.view());
  return k;
}
const Bytes kIndexNumberKey = {'i', 'x', 'n'};

// indexes table: project + 'f' + number + values + doc id -> empty (the entries, in order);
// project + 'r' + number + doc id -> values (what to remove when the document changes).
Key entry_prefix(const ProjectId& p, std::uint32_t number) {
  Key k;
  k.raw(p.view()).u8('f');
  k.u32(number);
  return k;
}
Key reverse_prefix(const ProjectId& p, std::uint32_t number) {
  Key k;
  k.raw(p.view()).u8('r');
  k.u32(number);
  return k;
}

bool valid_index_name(std::string_view s) {
  if (s.empty() || s.size() > kMaxIndexNameBytes) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

// The checks of a declaration, on the way in and when it is read back.
Result<std::vector<std::vector<std::string>>> check_spec(const IndexSpec& s) {
  if (!valid_index_name(s.name))
    return make_error(Errc::invalid_argument, "index name " + quote_input(s.name) + " must be 1-" +
                                                  std::to_string(kMaxIndexNameBytes) +
                                                  " of A-Z a-z 0-9 _ - .");
  if (!valid_collection(s.collection) || s.collection.front() == '_')
    return make_error(Errc::invalid_argument,
                      "an index is on an app collection: " + quote_input(s.collection) +
                          " is not one (" + std::string(kCollectionRule) + ", not starting _)");
  if (s.fields.empty() || s.fields.size() > kMaxIndexFields)
    return make_error(Errc::invalid_argument,
                      "an index has 1-" + std::to_string(kMaxIndexFields) + " fields (dot paths)");
  std::vector<std::vector<std::string>> paths;
  for (std::size_t i = 0; i < s.fields.size(); ++i) {
    auto p = parse_dot_path(s.fields[i], "index field");
    if (!p) return p.error();
    for (std::size_t j = 0; j < i; ++j)
      if (s.fields[j] == s.fields[i])
        return make_error(Errc::invalid_argument,
                          "index field " + quote_input(s.fields[i]) + " is given twice");
    paths.push_back(std::move(*p));
  }
  return paths;
}

// Declaration value: u8 1 (record version), u32 number, u8 ready, str16 collection, u8 field
// count, str16 per field, str16 build cursor (a document id, or empty).
Bytes encode_decl(const Store::Impl::IndexDef& d) {
  Bytes out;
  ByteWriter w(out);
  w.u8(1);
  w.u32(d.number);
  w.u8(d.ready ? 1 : 0);
  w.str16(d.spec.collection);
  w.u8(static_cast<std::uint8_t>(d.spec.fields.size()));
  for (const auto& f : d.spec.fields) w.str16(f);
  w.str16(d.cursor);
  return out;
}

Result<Store::Impl::IndexDef> decode_decl(std::string_view name, ByteView v) {
  auto bad = [&] {
    return make_error(Errc::data_loss,
                      "index " + quote_input(name) + ": record does not read back");
  };
  ByteReader r(v);
  Store::Impl::IndexDef d;
  if (r.u8() != 1) return bad();
  d.spec.name = std::string(name);
  d.number = r.u32();
  const std::uint8_t ready = r.u8();
  d.ready = ready == 1;
  d.spec.collection = std::string(r.str16());
  const std::uint8_t n = r.u8();
  for (std::uint8_t i = 0; i < n && r.ok(); ++i) d.spec.fields.emplace_back(r.str16());
  d.cursor = std::string(r.str16());
  if (!r.ok() || !r.at_end() || ready > 1 || (!d.cursor.empty() && !valid_doc_id(d.cursor)))
    return bad();
  auto paths = check_spec(d.spec);
  if (!paths) return bad();
  d.paths = std::move(*paths);
  return d;
}

}  // namespace

// The index thread: builds declared indexes over the documents held already, a batch per
// transaction, until none is being built; then sleeps until woken (a declaration). A failed
// step is tried again after a pause.
class IndexBuilder {
 public:
  explicit IndexBuilder(Store::Impl& im) : im_(im), thread_([this] { run(); }) {}
  ~IndexBuilder() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void wake() {
    {
      std::lock_guard lock(mu_);
      work_ = true;
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait(lock, [&] { return stop_ || work_; });
      work_ = false;
      while (!stop_) {
        lock.unlock();
        auto more = im_.build_index_step();
        lock.lock();
        if (!more) {
          cv_.wait_for(lock, std::chrono::seconds(5), [&] { return stop_; });
          continue;
        }
        if (!*more) break;
      }
    }
  }

  Store::Impl& im_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool work_ = true;    // at start: resume what an earlier run left being built
  std::thread thread_;  // last: starts once the rest is set
};

void IndexBuilderStop::operator()(IndexBuilder* b) const { delete b; }

void Store::Impl::start_index_builder() { index_builder.reset(new IndexBuilder(*this)); }

void Store::Impl::wake_index_builder() {
  if (index_builder) index_builder->wake();
}

Result<Store::Impl::IndexSet> Store::Impl::index_set(const LmdbTxn& txn, const ProjectId& p,
                                                     std::vector<std::string>* unreadable) const {
  IndexSet out;
  Key prefix = decl_prefix(p);
  LmdbCursor c(txn, t().meta);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto name = as_chars(c.key().subspan(prefix.b.size()));
    auto d = decode_decl(name, c.value());
    if (d) {
      out.push_back(std::move(*d));
    } else if (unreadable) {
      unreadable->emplace_back(name);
    }
  }
  return out;
}

Result<std::shared_ptr<const Store::Impl::IndexSet>> Store::Impl::write_index_set(
    const LmdbTxn& txn, const ProjectId& p) const {
  std::lock_guard lock(index_mu);
  auto it = index_cache.find(p);
  if (it != index_cache.end()) return it->second;
  auto set = index_set(txn, p);
  if (!set) return set.error();
  auto shared = std::make_shared<const IndexSet>(std::move(*set));
  index_cache.emplace(p, shared);
  return shared;
}

void Store::Impl::forget_index_cache(const ProjectId& p) const {
  std::lock_guard lock(index_mu);
  index_cache.erase(p);
}

namespace {

// Upkeep of one index for one document: its entry follows the document's winner body.
Status index_one(LmdbTxn& txn, MDB_dbi dbi, const ProjectId& p, const Store::Impl::IndexDef& d,
                 std::string_view doc_id, const json::value* body) {
  Key rk = reverse_prefix(p, d.number);
  rk.raw(as_bytes(doc_id));
  Bytes values;
  if (body) {
    const std::size_t budget = index_key::string_budget(d.paths.size());
    static const json::value null_value;
    for (const auto& path : d.paths) {
      const json::value* v = body->is_object() ? find_path(*body, path) : nullptr;
      // A truncated value ends the key: what follows would not be in order.
      if (index_key::append(values, v ? *v : null_value, budget)) break;
    }
  }
  auto old = txn.get(dbi, rk);
  if (!old) return old.error();
  if (*old && body && std::equal(values.begin(), values.end(), (*old)->begin(), (*old)->end()))
    return {};
  if (*old) {
    Key fk = entry_prefix(p, d.number);
    fk.raw(**old).raw(as_bytes(doc_id));
    FS_TRY(txn.del(dbi, fk));
    if (!body) return txn.del(dbi, rk);
  }
  if (!body) return {};
  Key fk = entry_prefix(p, d.number);
  fk.raw(values).raw(as_bytes(doc_id));
  FS_TRY(txn.put(dbi, fk, ByteView{}));
  return txn.put(dbi, rk, values);
}

// The winner's body as JSON (null when not held or not JSON: every field indexes as null);
// nullopt when the document is not listed (no record, deleted).
Result<std::optional<json::value>> indexed_body(const Store::Impl& im, const LmdbTxn& txn,
                                                const ProjectId& p, const DocRecord* rec) {
  if (!rec || (rec->flags & DocRecord::kDeleted) || rec->heads.empty())
    return std::optional<json::value>{};
  auto v = im.load_version(txn, p, rec->heads.front().at);
  if (!v) return v.error();
  if (!v->body) return std::optional<json::value>(json::value(nullptr));
  boost::system::error_code ec;
  json::value doc = parse_json(*v->body, ec);
  if (ec) doc = nullptr;
  return std::optional<json::value>(std::move(doc));
}

}  // namespace

Status Store::Impl::index_doc(LmdbTxn& txn, ByteView dk, const DocRecord* rec) const {
  auto parts = split_doc_key(dk);
  if (!parts) return {};  // split_doc_key checked the project's 16 bytes too
  auto p = *id_from_bytes<ProjectId>(dk.first(ProjectId::size));
  auto set = write_index_set(txn, p);
  if (!set) return set.error();
  bool any = false;
  for (const auto& d : **set) any = any || d.spec.collection == parts->collection;
  if (!any) return {};
  auto body = indexed_body(*this, txn, p, rec);
  if (!body) return body.error();
  for (const auto& d : **set)
    if (d.spec.collection == parts->collection)
      FS_TRY(index_one(txn, t().indexes, p, d, parts->id, *body ? &**body : nullptr));
  return {};
}

Status Store::Impl::put_doc(LmdbTxn& txn, ByteView dk, const DocRecord& rec) const {
  FS_TRY(txn.put(t().docs, dk, rec.encode()));
  return index_doc(txn, dk, &rec);
}

Status Store::Impl::del_doc(LmdbTxn& txn, ByteView dk) const {
  FS_TRY(txn.del(t().docs, dk));
  return index_doc(txn, dk, nullptr);
}

Status Store::Impl::note_indexed(LmdbTxn& txn, const ProjectId& p, std::uint64_t seq) const {
  auto set = write_index_set(txn, p);
  if (!set) return set.error();
  if ((*set)->empty()) return {};
  return txn.put(t().meta, through_key(p), u64_bytes(seq));
}

Status Store::Impl::forget_indexes(LmdbTxn& txn, const ProjectId& p) const {
  FS_TRY(delete_prefix(txn, t().meta, decl_prefix(p)));
  FS_TRY(txn.del(t().meta, through_key(p)));
  FS_TRY(delete_prefix(txn, t().indexes, Key{}.raw(p.view())));
  forget_index_cache(p);
  return {};
}

Status Store::Impl::check_indexes() {
  auto txn = write_txn();
  if (!txn) return txn.error();
  std::vector<ProjectId> projects;
  {
    Key all;
    all.u8('I');
    LmdbCursor c(*txn, t().meta);
    for (bool ok = c.seek(all); ok && has_prefix(c.key(), all); ok = c.next()) {
      if (c.key().size() < 1 + ProjectId::size) return make_error(Errc::data_loss, "bad index key");
      auto p = *id_from_bytes<ProjectId>(c.key().subspan(1, ProjectId::size));
      if (projects.empty() || projects.back() != p) projects.push_back(p);
    }
  }
  bool changed = false;
  for (const auto& p : projects) {
    auto counter = change_counter(*txn, p);
    if (!counter) return counter.error();
    auto through = txn->get(t().meta, through_key(p));
    if (!through) return through.error();
    if (*through && read_u64(**through) == *counter) continue;
    // Written by a release that does not keep indexes: build them again from the start.
    auto set = index_set(*txn, p);
    if (!set) return set.error();
    for (auto d : *set) {
      FS_TRY(delete_prefix(*txn, t().indexes, entry_prefix(p, d.number)));
      FS_TRY(delete_prefix(*txn, t().indexes, reverse_prefix(p, d.number)));
      d.ready = false;
      d.cursor.clear();
      FS_TRY(txn->put(t().meta, decl_key(p, d.spec.name), encode_decl(d)));
    }
    FS_TRY(txn->put(t().meta, through_key(p), u64_bytes(*counter)));
    changed = true;
  }
  if (!changed) return {};
  return txn->commit();
}

Result<bool> Store::Impl::build_index_step() {
  auto txn = write_txn();
  if (!txn) return txn.error();
  std::optional<IndexDef> todo;
  ProjectId p;
  {
    Key all;
    all.u8('I');
    LmdbCursor c(*txn, t().meta);
    for (bool ok = c.seek(all); ok && has_prefix(c.key(), all); ok = c.next()) {
      if (c.key().size() < 1 + ProjectId::size) return make_error(Errc::data_loss, "bad index key");
      auto name = as_chars(c.key().subspan(1 + ProjectId::size));
      auto d = decode_decl(name, c.value());
      if (!d || d->ready) continue;
      p = *id_from_bytes<ProjectId>(c.key().subspan(1, ProjectId::size));
      todo = std::move(*d);
      break;
    }
  }
  if (!todo) return false;
  Key prefix = collection_prefix(p, todo->spec.collection);
  Key start = todo->cursor.empty() ? prefix : doc_key(p, todo->spec.collection, todo->cursor);
  if (!todo->cursor.empty()) start.u8(0);  // strictly after the cursor
  std::vector<std::pair<std::string, DocRecord>> batch;
  bool done = true;
  {
    LmdbCursor c(*txn, t().docs);
    for (bool ok = c.seek(start); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      if (batch.size() >= kBuildBatch) {
        done = false;
        break;
      }
      auto parts = split_doc_key(c.key());
      auto rec = DocRecord::decode(c.value());
      if (!parts || !rec) return make_error(Errc::data_loss, "corrupt document record");
      batch.emplace_back(std::string(parts->id), std::move(*rec));
    }
  }
  for (const auto& [id, rec] : batch) {
    auto body = indexed_body(*this, *txn, p, &rec);
    if (!body) return body.error();
    FS_TRY(index_one(*txn, t().indexes, p, *todo, id, *body ? &**body : nullptr));
  }
  if (done) {
    todo->ready = true;
    todo->cursor.clear();
  } else {
    todo->cursor = batch.back().first;
  }
  FS_TRY(txn->put(t().meta, decl_key(p, todo->spec.name), encode_decl(*todo)));
  forget_index_cache(p);
  FS_TRY(txn->commit());
  return true;
}

Result<IndexInfo> Store::create_index(const ProjectId& project, const IndexSpec& spec) {
  auto paths = check_spec(spec);
  if (!paths) return paths.error();
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto set = impl_->index_set(*txn, project);
  if (!set) return set.error();
  for (const auto& d : *set) {
    if (d.spec.name != spec.name) continue;
    if (d.spec == spec) return IndexInfo{d.spec, d.ready, 0, {}};
    return make_error(Errc::already_exists, "index " + quote_input(spec.name) +
                                                " exists with other fields or collection");
  }
  if (set->size() >= impl_->opts.max_indexes)
    return make_error(Errc::failed_precondition,
                      "the project has " + std::to_string(set->size()) +
                          " indexes, storage.max_indexes; drop one first");
  auto next = txn->get(impl_->t().meta, kIndexNumberKey);
  if (!next) return next.error();
  Store::Impl::IndexDef d;
  d.spec = spec;
  d.paths = std::move(*paths);
  d.number = *next ? static_cast<std::uint32_t>(read_u64(**next)) : 1;
  FS_TRY(txn->put(impl_->t().meta, kIndexNumberKey, u64_bytes(d.number + 1ull)));
  FS_TRY(txn->put(impl_->t().meta, decl_key(project, spec.name), encode_decl(d)));
  auto counter = impl_->change_counter(*txn, project);
  if (!counter) return counter.error();
  FS_TRY(txn->put(impl_->t().meta, through_key(project), u64_bytes(*counter)));
  impl_->forget_index_cache(project);
  FS_TRY(txn->commit());
  impl_->wake_index_builder();
  return IndexInfo{d.spec, false, 0, {}};
}

Status Store::drop_index(const ProjectId& project, std::string_view name) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto set = impl_->index_set(*txn, project);
  if (!set) return set.error();
  auto it = std::find_if(set->begin(), set->end(),
                         [&](const Store::Impl::IndexDef& d) { return d.spec.name == name; });
  if (it == set->end())
    return make_error(Errc::not_found, "no index " + quote_input(name) + " in the project");
  FS_TRY(txn->del(impl_->t().meta, decl_key(project, name)));
  FS_TRY(delete_prefix(*txn, impl_->t().indexes, entry_prefix(project, it->number)));
  FS_TRY(delete_prefix(*txn, impl_->t().indexes, reverse_prefix(project, it->number)));
  if (set->size() == 1) FS_TRY(txn->del(impl_->t().meta, through_key(project)));
  impl_->forget_index_cache(project);
  return txn->commit();
}

Result<std::vector<IndexInfo>> Store::indexes(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<std::string> unreadable;
  auto set = impl_->index_set(*txn, project, &unreadable);
  if (!set) return set.error();
  std::vector<IndexInfo> out;
  for (auto& name : unreadable) {
    IndexInfo info;
    info.spec.name = std::move(name);
    info.error = "its record does not read back: drop it and declare it again";
    out.push_back(std::move(info));
  }
  for (const auto& d : *set) {
    IndexInfo info{d.spec, d.ready, 0, {}};
    Key prefix = reverse_prefix(project, d.number);
    LmdbCursor c(*txn, impl_->t().indexes);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) ++info.entries;
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace fieldsync::storage
