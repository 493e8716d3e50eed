#include "storage/store.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <boost/json.hpp>

#include "common/encoding.hpp"
#include "common/private_dir.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace {

const Bytes kFormatKey = {'f', 'o', 'r', 'm', 'a', 't'};
const Bytes kHlcKey = {'h', 'l', 'c'};

// The write-side checks of a project record: the same bounds ProjectRecord::decode applies.
Status check_project_fields(std::optional<std::string_view> name,
                            std::optional<std::string_view> settings_json) {
  if (name && (name->empty() || name->size() > kMaxProjectNameBytes))
    return make_error(Errc::invalid_argument,
                      "project name must be 1.." + std::to_string(kMaxProjectNameBytes) + " bytes");
  if (settings_json) {
    if (settings_json->size() > kMaxProjectSettingsBytes)
      return make_error(Errc::too_large, "project settings are " +
                                             std::to_string(settings_json->size()) +
                                             " bytes; the limit is " +
                                             std::to_string(kMaxProjectSettingsBytes) + " (1 MiB)");
    FS_TRY(validate_json_object(*settings_json));
  }
  return {};
}

}  // namespace

// ---- Impl helpers shared by the other store_*.cpp files ----

Result<ProjectRecord> Store::Impl::project(const LmdbTxn& txn, const ProjectId& p) const {
  auto v = txn.get(t().projects, p.view());
  if (!v) return v.error();
  if (!*v) return make_error(Errc::not_found, "no project " + p.str());
  auto rec = ProjectRecord::decode(**v);
  if (!rec) return make_error(Errc::data_loss, "corrupt project record " + p.str());
  rec->info.id = p;
  return *rec;
}

Result<std::optional<DocRecord>> Store::Impl::doc(const LmdbTxn& txn, ByteView dk) const {
  auto v = txn.get(t().docs, dk);
  if (!v) return v.error();
  if (!*v) return std::optional<DocRecord>{};
  auto rec = DocRecord::decode(**v);
  if (!rec) return make_error(Errc::data_loss, "corrupt document record");
  return std::optional<DocRecord>{std::move(*rec)};
}

Result<LogRecord> Store::Impl::held_log(const LmdbTxn& txn, const ProjectId& p, const Location& at,
                                        bool unpack) const {
  auto v = txn.get(t().logs, log_key(p, at.author, at.seq));
  if (!v) return v.error();
  if (!*v)
    return make_error(Errc::data_loss, "missing log entry " + std::to_string(at.seq) + " of " +
                                           at.author.short_str());
  auto rec = unpack ? LogRecord::decode(**v, bodies) : LogRecord::decode_stored(**v);
  if (!rec) return make_error(Errc::data_loss, "corrupt log entry");
  return std::move(*rec);
}

Result<Version> Store::Impl::load_version(const LmdbTxn& txn, const ProjectId& p,
                                          const Location& at, bool with_body) const {
  auto rec = held_log(txn, p, at, with_body);
  if (!rec) return rec.error();
  auto h = decode_header(rec->header);
  if (!h)
    return make_error(Errc::data_loss,
                      "stored version " + rec->id.str() + ": " + h.error().message);
  Version out{rec->id, std::move(*h), std::nullopt};
  if (with_body && rec->body) out.body = std::string(as_chars(*rec->body));
  return out;
}

Result<std::vector<Store::Impl::Held>> Store::Impl::doc_versions(const LmdbTxn& txn, ByteView dk,
                                                                 const DocRecord& rec) const {
  std::vector<Held> out;
  for (const auto& h : rec.heads) out.push_back(Held{h.hlc, h.id, h.at});
  Key prefix = doc_sub_prefix(dk);
  LmdbCursor c(txn, t().docver);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    ByteReader r(c.key().subspan(prefix.b.size()));
    std::uint64_t hlc = r.u64();
    auto id = id_from_bytes<VersionId>(r.raw(VersionId::size));
    auto loc = decode_location(c.value());
    if (!r.ok() || !id || !loc) return make_error(Errc::data_loss, "corrupt history index");
    out.push_back(Held{hlc, *id, loc->first});
  }
  std::sort(out.begin(), out.end(), [](const Held& a, const Held& b) {
    return a.hlc != b.hlc ? a.hlc > b.hlc : a.id > b.id;
  });
  return out;
}

Result<std::optional<Location>> Store::Impl::find_version(const LmdbTxn& txn, ByteView dk,
                                                          const DocRecord& rec,
                                                          const VersionId& v) const {
  for (const auto& h : rec.heads)
    if (h.id == v) return std::optional<Location>{h.at};
  auto all = doc_versions(txn, dk, rec);
  if (!all) return all.error();
  for (const auto& h : *all)
    if (h.id == v) return std::optional<Location>{h.at};
  return std::optional<Location>{};
}

Result<DocRecord> Store::Impl::existing_doc(const LmdbTxn& txn, const ProjectId& p,
                                            std::string_view coll, std::string_view id) const {
  FS_TRY(project(txn, p));
  auto rec = doc(txn, doc_key(p, coll, id));
  if (!rec) return rec.error();
  if (!*rec)
    return make_error(Errc::not_found,
                      "no document " + quote_input(std::string(coll) + "/" + std::string(id)));
  return std::move(**rec);
}

Result<HeadValue> Store::Impl::head(const LmdbTxn& txn, const ProjectId& p,
                                    const DeviceId& a) const {
  auto v = txn.get(t().heads, author_key(p, a));
  if (!v) return v.error();
  if (!*v) return HeadValue{0, chain_genesis(p, a)};
  auto h = HeadValue::decode(**v);
  if (!h) return make_error(Errc::data_loss, "corrupt log head");
  return *h;
}

Result<std::uint64_t> Store::Impl::change_counter(const LmdbTxn& txn, const ProjectId& p) const {
  auto v = txn.get(t().meta, counter_key(p));
  if (!v) return v.error();
  return *v ? read_u64(**v) : 0;
}

Status Store::Impl::put_change_counter(LmdbTxn& txn, const ProjectId& p, std::uint64_t seq) const {
  FS_TRY(txn.put(t().meta, counter_key(p), u64_bytes(seq)));
  return note_indexed(txn, p, seq);
}

Status Store::Impl::persist_clock(LmdbTxn& txn) const {
  return txn.put(t().meta, kHlcKey, u64_bytes(clock.last()));
}

namespace {
// The changes of the write group open on this thread (Store::write_group): told after its
// commit.
struct GroupChange {
  ProjectId project;
  std::uint64_t seq;
  std::optional<std::uint64_t> ref_free_from;
};
thread_local std::vector<GroupChange>* group_changes = nullptr;
}  // namespace

Status Store::write_group(const std::function<void()>& body) {
  LmdbGroup group(*impl_->env);
  if (!group.ok()) return group.error();
  std::vector<GroupChange> changes;
  group_changes = &changes;
  body();
  group_changes = nullptr;
  FS_TRY(group.commit());
  for (const auto& c : changes) impl_->notify(c.project, c.seq, c.ref_free_from);
  return {};
}

void Store::Impl::notify(const ProjectId& p, std::uint64_t seq,
                         std::optional<std::uint64_t> ref_free_from) {
  if (group_changes) {
    group_changes->push_back(GroupChange{p, seq, ref_free_from});
    return;
  }
  std::lock_guard lock(listener_mu);
  if (listener) listener(p, seq);
  if (ref_free_from && *ref_free_from < seq)
    blobs_changed(p, std::make_pair(*ref_free_from, seq));
  else
    blobs_changed(p);
}

// ---- Store ----

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
  if (options.data_dir.empty()) return make_error(Errc::invalid_argument, "no data directory");
  FS_TRY(create_private_dirs(options.data_dir));
  auto impl = std::make_unique<Impl>(options);
  auto db_dir = options.data_dir / "db";
  FS_TRY(create_private_dirs(db_dir));
  auto env = LmdbEnv::open(db_dir, options.map_size_bytes, options.durable);
  if (!env) return env.error();
  impl->env = std::move(*env);

  // An older format is copied as it is before it is converted (docs/operations.md
  // "Upgrading"): without that copy nothing is converted.
  std::uint64_t found = kStorageFormat;
  {
    auto rtxn = impl->read_txn();
    if (!rtxn) return rtxn.error();
    auto fmt = rtxn->get(impl->t().meta, kFormatKey);
    if (!fmt) return fmt.error();
    if (*fmt) found = read_u64(**fmt);
  }
  if (found < kStorageFormat) {
    const auto copy = options.data_dir / "upgrade-backup" / ("format-" + std::to_string(found));
    if (auto st = impl->env->copy_to_dir(copy); !st)
      return make_error(st.error().code, "storage format " + std::to_string(found) +
                                             " is not converted without a copy of it first (" +
                                             copy.string() + "): " + st.error().message);
    impl->converted = StoreConversion{found, kStorageFormat, copy};
  }
  auto txn = impl->write_txn();
  if (!txn) return txn.error();
  auto fmt = txn->get(impl->t().meta, kFormatKey);
  if (!fmt) return fmt.error();
  if (!*fmt) {
    FS_TRY(txn->put(impl->t().meta, kFormatKey, u64_bytes(kStorageFormat)));
  } else if (read_u64(**fmt) == 1) {
    // Format 1 differs in the peer records: converted in this transaction (and as format 2,
    // its log records are all read as they are).
    FS_TRY(impl->upgrade_peers_format1(*txn));
    FS_TRY(txn->put(impl->t().meta, kFormatKey, u64_bytes(kStorageFormat)));
  } else if (read_u64(**fmt) == 2 || read_u64(**fmt) == 3) {
    // Format 2 stores every body as it is, and format 3 no proven log records; format 4 reads
    // both: only the number changes (so that an older daemon refuses the compressed bodies and
    // proven records written from now on).
    FS_TRY(txn->put(impl->t().meta, kFormatKey, u64_bytes(kStorageFormat)));
  } else if (read_u64(**fmt) != kStorageFormat) {
    return make_error(Errc::unsupported, "storage format " + std::to_string(read_u64(**fmt)) +
                                             " in " + db_dir.string() + " is not supported");
  }
  auto hlc = txn->get(impl->t().meta, kHlcKey);
  if (!hlc) return hlc.error();
  if (*hlc) impl->clock.restore(read_u64(**hlc));
  FS_TRY(txn->commit());
  // The identity comes after the environment: the store records which key wrote it.
  FS_TRY(impl->open_identity());
  FS_TRY(impl->load_body_dictionaries());
  FS_TRY(impl->check_indexes());
  std::unique_ptr<Store> owned(new Store(std::move(impl)));
  FS_TRY(owned->impl_->open_blobs(*owned));
  owned->impl_->start_index_builder();
  return owned;
}

const DeviceId& Store::device_id() const { return impl_->me(); }
const crypto::SigningKey& Store::signing_key() const { return *impl_->key; }
const StoreOptions& Store::options() const { return impl_->opts; }
const std::optional<StoreConversion>& Store::converted() const { return impl_->converted; }
LatencySnapshot Store::commit_latency() const { return impl_->env->commit_latency(); }
LatencySnapshot Store::fsync_latency() const { return impl_->fsyncs.snapshot(); }

void Store::set_change_listener(ChangeListener listener) {
  std::lock_guard lock(impl_->listener_mu);
  impl_->listener = std::move(listener);
}

Result<ProjectInfo> Store::create_project(std::string name, std::string settings_json) {
  ProjectInfo info;
  crypto::random_fill(info.id.bytes);
  info.name = std::move(name);
  info.settings_json = std::move(settings_json);
  info.created_hlc = impl_->clock.tick();
  info.creator = impl_->me();
  return add_project(info, crypto::random_bytes(32));
}

Result<ProjectInfo> Store::add_project(const ProjectInfo& info, ByteView secret) {
  FS_TRY(check_project_fields(info.name, info.settings_json));
  if (secret.size() != 32)
    return make_error(Errc::invalid_argument, "project secret must be 32 bytes");
  if (info.creator.is_zero())
    return make_error(Errc::invalid_argument, "project creator is missing");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  auto existing = txn->get(impl_->t().projects, info.id.view());
  if (!existing) return existing.error();
  if (*existing) return make_error(Errc::already_exists, "project " + info.id.str() + " exists");
  ProjectRecord rec{info, Bytes(secret.begin(), secret.end())};
  FS_TRY(txn->put(impl_->t().projects, info.id.view(), rec.encode()));
  FS_TRY(impl_->persist_clock(*txn));
  FS_TRY(txn->commit());
  return info;
}

Result<std::vector<ProjectInfo>> Store::list_projects(
    std::vector<ProjectProblem>* unreadable) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  std::vector<ProjectInfo> out;
  LmdbCursor c(*txn, impl_->t().projects);
  for (bool ok = c.seek({}); ok; ok = c.next()) {
    auto rec = ProjectRecord::decode(c.value());
    auto id = id_from_bytes<ProjectId>(c.key());
    if (!rec || !id) {
      // One unreadable record never hides the others: skipped here, reported to the caller.
      if (unreadable)
        unreadable->push_back(ProjectProblem{
            to_hex(c.key()),
            "corrupt project record (" + std::to_string(c.value().size()) + " bytes)"});
      continue;
    }
    rec->info.id = *id;
    out.push_back(rec->info);
  }
  return out;
}

Result<ProjectInfo> Store::get_project(const ProjectId& id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->project(*txn, id);
  if (!rec) return rec.error();
  return rec->info;
}

Result<ProjectInfo> Store::update_project(const ProjectId& id, std::optional<std::string> name,
                                          std::optional<std::string> settings_json) {
  if (name) FS_TRY(check_project_fields(*name, std::nullopt));
  if (settings_json) FS_TRY(check_project_fields(std::nullopt, *settings_json));
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  auto rec = impl_->project(*txn, id);
  if (!rec) return rec.error();
  if (name) rec->info.name = *name;
  if (settings_json) rec->info.settings_json = *settings_json;
  FS_TRY(txn->put(impl_->t().projects, id.view(), rec->encode()));
  FS_TRY(txn->commit());
  return rec->info;
}

Result<Bytes> Store::project_secret(const ProjectId& id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->project(*txn, id);
  if (!rec) return rec.error();
  return rec->secret;
}

}  // namespace fieldsync::storage
