#include "storage/lmdb_env.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "common/private_dir.hpp"

namespace fieldsync::storage {
namespace {

MDB_val val(ByteView b) { return MDB_val{b.size(), const_cast<std::uint8_t*>(b.data())}; }
ByteView view(const MDB_val& v) { return {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size}; }

}  // namespace

Error lmdb_error(int rc, std::string_view what) {
  std::string msg = std::string(what) + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
      return make_error(Errc::resource_exhausted, msg + " (raise storage.map_size)");
    case ENOSPC:
    case EDQUOT: return make_error(Errc::resource_exhausted, msg + " (disk full)");
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH: return make_error(Errc::data_loss, msg);
    case EACCES: return make_error(Errc::permission_denied, msg);
    default: return make_error(Errc::internal, msg);
  }
}

Result<std::unique_ptr<LmdbEnv>> LmdbEnv::open(const std::filesystem::path& dir,
                                               std::uint64_t map_size, bool durable) {
  std::unique_ptr<LmdbEnv> env(new LmdbEnv);
  if (int rc = mdb_env_create(&env->env_)) return lmdb_error(rc, "mdb_env_create");
  mdb_env_set_maxdbs(env->env_, 32);
  mdb_env_set_maxreaders(env->env_, 256);
  if (int rc = mdb_env_set_mapsize(env->env_, map_size))
    return lmdb_error(rc, "mdb_env_set_mapsize");
  // MDB_NOTLS: read txns may be used by whichever thread runs the request.
  // MDB_NOSYNC only when the operator chose storage.durable = false: a crash of the
  // process still loses nothing (the OS has the pages), a power cut may lose the tail.
  unsigned flags = MDB_NOTLS | (durable ? 0u : MDB_NOSYNC);
  if (int rc = mdb_env_open(env->env_, dir.c_str(), flags, 0600))
    return lmdb_error(rc, "opening LMDB in " + dir.string());

  auto txn = LmdbTxn::begin(*env, true);
  if (!txn) return txn.error();
  auto open_dbi = [&](const char* name, MDB_dbi& dbi) -> Status {
    if (int rc = mdb_dbi_open(txn->raw(), name, MDB_CREATE, &dbi))
      return lmdb_error(rc, std::string("opening table ") + name);
    return {};
  };
  Tables& t = env->tables_;
  for (auto [name, dbi] : {std::pair{"meta", &t.meta},
                           {"projects", &t.projects},
                           {"superseded", &t.superseded},
                           {"docs", &t.docs},
                           {"docver", &t.docver},
                           {"logs", &t.logs},
                           {"heads", &t.heads},
                           {"checkpoints", &t.checkpoints},
                           {"changes", &t.changes},
                           {"invites", &t.invites},
                           {"peers", &t.peers},
                           {"peer_holds", &t.peer_holds},
                           {"blob_held", &t.blob_held},
                           {"blob_proj", &t.blob_proj},
                           {"blob_refs", &t.blob_refs},
                           {"indexes", &t.indexes}}) {
    FS_TRY(open_dbi(name, *dbi));
  }
  FS_TRY(txn->commit());
  return env;
}

LmdbEnv::~LmdbEnv() {
  if (env_) mdb_env_close(env_);
}

namespace {
// The write group open on this thread (LmdbGroup), if any.
thread_local const LmdbEnv* group_env = nullptr;
thread_local MDB_txn* group_txn = nullptr;
}  // namespace

Result<LmdbTxn> LmdbTxn::begin(const LmdbEnv& env, bool write) {
  MDB_txn* t = nullptr;
  if (write && group_env == &env) {
    if (int rc = mdb_txn_begin(env.raw(), group_txn, 0, &t))
      return lmdb_error(rc, "mdb_txn_begin (in a group)");
    return LmdbTxn(t, nullptr);  // its commit is the group's
  }
  if (int rc = mdb_txn_begin(env.raw(), nullptr, write ? 0 : MDB_RDONLY, &t))
    return lmdb_error(rc, "mdb_txn_begin");
  return LmdbTxn(t, write ? &env.commit_latency_ : nullptr);
}

LmdbGroup::LmdbGroup(const LmdbEnv& env) : env_(env) {
  if (group_env) {
    error_ = make_error(Errc::internal, "a write group is already open on this thread");
    return;
  }
  if (int rc = mdb_txn_begin(env.raw(), nullptr, 0, &txn_)) {
    txn_ = nullptr;
    error_ = lmdb_error(rc, "mdb_txn_begin (group)");
    return;
  }
  group_env = &env;
  group_txn = txn_;
}

LmdbGroup::~LmdbGroup() {
  if (!txn_) return;
  group_env = nullptr;
  group_txn = nullptr;
  mdb_txn_abort(txn_);
}

Status LmdbGroup::commit() {
  if (!txn_) return error_;
  group_env = nullptr;
  group_txn = nullptr;
  LmdbTxn whole(txn_, &env_.commit_latency_);  // commits as any write transaction does
  txn_ = nullptr;
  return whole.commit();
}

LmdbTxn::~LmdbTxn() {
  if (txn_) mdb_txn_abort(txn_);
}

Status LmdbTxn::commit() {
  MDB_env* env = mdb_txn_env(txn_);
  int rc = 0;
  {
    LatencyTimer timer(commits_);  // successful or not: a failed commit took its time too
    rc = mdb_txn_commit(txn_);
  }
  txn_ = nullptr;  // committed or not, the txn handle is gone
  // LMDB reports a short write as EIO. It writes at most 64 pages at a time, so a short write
  // with less free space than that left on the filesystem is the disk filling up.
  const char* path = nullptr;
  struct statvfs fs {};
  if (rc == EIO && mdb_env_get_path(env, &path) == 0 && path && ::statvfs(path, &fs) == 0 &&
      static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize <
          64u * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)))
    rc = ENOSPC;
  if (rc) return lmdb_error(rc, "commit");
  return {};
}

Result<std::optional<ByteView>> LmdbTxn::get(MDB_dbi dbi, ByteView key) const {
  MDB_val k = val(key), v{};
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<ByteView>{};
  if (rc) return lmdb_error(rc, "mdb_get");
  return std::optional<ByteView>{view(v)};
}

Status LmdbTxn::put(MDB_dbi dbi, ByteView key, ByteView value, unsigned flags) {
  MDB_val k = val(key), v = val(value);
  if (int rc = mdb_put(txn_, dbi, &k, &v, flags)) return lmdb_error(rc, "mdb_put");
  return {};
}

Status LmdbTxn::del(MDB_dbi dbi, ByteView key) {
  MDB_val k = val(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "mdb_del");
  return {};
}

LmdbCursor::LmdbCursor(const LmdbTxn& txn, MDB_dbi dbi) {
  rc_ = mdb_cursor_open(txn.raw(), dbi, &cur_);
}

LmdbCursor::~LmdbCursor() {
  if (cur_) mdb_cursor_close(cur_);
}

bool LmdbCursor::op(MDB_cursor_op o, ByteView k) {
  if (!cur_) return valid_ = false;
  MDB_val key = val(k), v{};
  rc_ = mdb_cursor_get(cur_, &key, &v, o);
  valid_ = rc_ == 0;
  if (valid_) {
    key_ = view(key);
    value_ = view(v);
  }
  return valid_;
}

// LMDB rejects a zero-length key for MDB_SET_RANGE (MDB_BAD_VALSIZE): seek({}) means "first".
bool LmdbCursor::seek(ByteView key) { return key.empty() ? op(MDB_FIRST) : op(MDB_SET_RANGE, key); }
bool LmdbCursor::last() { return op(MDB_LAST); }
bool LmdbCursor::next() { return op(MDB_NEXT); }
bool LmdbCursor::prev() { return op(MDB_PREV); }

Status LmdbCursor::del() {
  if (int rc = mdb_cursor_del(cur_, 0)) return lmdb_error(rc, "mdb_cursor_del");
  return {};
}

Status delete_prefix(LmdbTxn& txn, MDB_dbi dbi, ByteView prefix) {
  LmdbCursor c(txn, dbi);
  // Seek again after each delete: the cursor's position after mdb_cursor_del is the next key,
  // but seeking keeps this independent of that detail.
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix);) {
    FS_TRY(c.del());
    ok = c.seek(prefix);
  }
  return {};
}

Status LmdbEnv::copy_to_fd(int fd) const {
  int rc = mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  if (rc == ENOSPC)
    return make_error(Errc::resource_exhausted, "disk full while copying the database");
  if (rc != 0)
    return make_error(Errc::internal, std::string("cannot copy the database: ") + mdb_strerror(rc));
  return {};
}

Status LmdbEnv::copy_to_dir(const std::filesystem::path& dir) const {
  FS_TRY(create_private_dirs(dir));
  const auto tmp = dir / "data.mdb.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return lmdb_error(errno, "creating " + tmp.string());
  auto copied = copy_to_fd(fd);
  int rc = copied ? (::fsync(fd) == 0 ? 0 : errno) : 0;
  ::close(fd);
  if (!copied) return copied.error();
  if (rc != 0) return lmdb_error(rc, "fsync of " + tmp.string());
  if (::rename(tmp.c_str(), (dir / "data.mdb").c_str()) != 0)
    return lmdb_error(errno, "naming " + (dir / "data.mdb").string());
  if (rc = sync_dir(dir); rc != 0) return lmdb_error(rc, "fsync of " + dir.string());
  return {};
}

}  // namespace fieldsync::storage
