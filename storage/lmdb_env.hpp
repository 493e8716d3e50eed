// Thin RAII wrappers over LMDB, private to storage/: LmdbEnv (the environment and its
// named databases) and LmdbTxn (one read or write transaction). Nothing outside
// storage/ includes this header, so no LMDB type leaks out.
//
// Thread-safety: LmdbEnv is shared; an LmdbTxn belongs to the thread that began it
// (the env is opened with MDB_NOTLS so read txns are not tied to thread-local slots).
#pragma once

#include <lmdb.h>

#include <filesystem>
#include <optional>
#include <string_view>

#include "common/bytes.hpp"
#include "common/result.hpp"
#include "storage/latency.hpp"

namespace fieldsync::storage {

Error lmdb_error(int rc, std::string_view what);

// The named databases of the store (docs/storage.md "Tables").
struct Tables {
  MDB_dbi meta{}, projects{}, superseded{}, docs{}, docver{}, logs{}, heads{}, checkpoints{},
      changes{}, invites{}, peers{}, peer_holds{}, blob_held{}, blob_proj{}, blob_refs{}, indexes{};
};

class LmdbTxn;

class LmdbEnv {
 public:
  static Result<std::unique_ptr<LmdbEnv>> open(const std::filesystem::path& dir,
                                               std::uint64_t map_size, bool durable);
  ~LmdbEnv();
  const Tables& tables() const { return tables_; }
  MDB_env* raw() const { return env_; }
  // A consistent, compacted copy of the environment's data file written to `fd` (e.g. a
  // pipe), in one read transaction: writers carry on meanwhile. Blocks until the copy is
  // written whole or writing fails (EPIPE once a pipe's reading end is closed).
  Status copy_to_fd(int fd) const;
  // The same copy as `dir`/data.mdb (an environment directory of its own, 0700; the file 0600),
  // written under a temporary name, fsynced, then renamed over any earlier copy there.
  Status copy_to_dir(const std::filesystem::path& dir) const;
  // The time of every write transaction's mdb_txn_commit (with its fsync when durable).
  LatencySnapshot commit_latency() const { return commit_latency_.snapshot(); }

 private:
  friend class LmdbTxn;
  friend class LmdbGroup;
  LmdbEnv() = default;
  MDB_env* env_ = nullptr;
  Tables tables_;
  mutable LatencyHistogram commit_latency_;  // observed by LmdbTxn::commit() on any thread
};

class LmdbTxn {
 public:
  static Result<LmdbTxn> begin(const LmdbEnv& env, bool write);
  LmdbTxn(LmdbTxn&& o) noexcept : txn_(o.txn_), commits_(o.commits_) { o.txn_ = nullptr; }
  LmdbTxn& operator=(LmdbTxn&&) = delete;
  ~LmdbTxn();

  Status commit();
  MDB_txn* raw() const { return txn_; }

  // get: nullopt when absent; an error only for real failures.
  Result<std::optional<ByteView>> get(MDB_dbi dbi, ByteView key) const;
  Status put(MDB_dbi dbi, ByteView key, ByteView value, unsigned flags = 0);
  Status del(MDB_dbi dbi, ByteView key);

 private:
  friend class LmdbGroup;
  LmdbTxn(MDB_txn* t, LatencyHistogram* commits) : txn_(t), commits_(commits) {}
  MDB_txn* txn_ = nullptr;
  LatencyHistogram* commits_ = nullptr;  // the env's commit histogram; write transactions only
};

// A group of write transactions committed as one (Store::write_group): while a group is open
// on a thread, LmdbTxn::begin(env, true) on that thread begins a transaction nested in it, whose
// commit() joins the group (no fsync) and whose abort undoes only itself. The group's commit()
// writes all of them with one commit (one fsync when durable). Not movable: it is the thread's
// open group until it ends; destroyed uncommitted, it aborts everything in it.
class LmdbGroup {
 public:
  explicit LmdbGroup(const LmdbEnv& env);
  ~LmdbGroup();
  LmdbGroup(const LmdbGroup&) = delete;
  LmdbGroup& operator=(const LmdbGroup&) = delete;
  // Whether begin succeeded (else error() says why; nothing was begun).
  bool ok() const { return txn_ != nullptr; }
  const Error& error() const { return error_; }
  Status commit();

 private:
  const LmdbEnv& env_;
  MDB_txn* txn_ = nullptr;
  Error error_;
};

// A cursor positioned by seek(); iterates forward or backward over one table.
class LmdbCursor {
 public:
  LmdbCursor(const LmdbTxn& txn, MDB_dbi dbi);
  ~LmdbCursor();
  LmdbCursor(const LmdbCursor&) = delete;
  LmdbCursor& operator=(const LmdbCursor&) = delete;

  bool seek(ByteView key);  // first key >= key
  bool last();
  bool next();
  bool prev();
  bool valid() const { return valid_; }
  ByteView key() const { return key_; }
  ByteView value() const { return value_; }
  Status del();
  int error() const { return rc_; }

 private:
  bool op(MDB_cursor_op o, ByteView k = {});
  MDB_cursor* cur_ = nullptr;
  ByteView key_, value_;
  bool valid_ = false;
  int rc_ = 0;
};

inline bool has_prefix(ByteView key, ByteView prefix) {
  return key.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), key.begin());
}

// Deletes every key of `dbi` that starts with `prefix` (all of them for an empty prefix), in
// `txn` (a write transaction).
Status delete_prefix(LmdbTxn& txn, MDB_dbi dbi, ByteView prefix);

}  // namespace fieldsync::storage
