// PgMirror: keeps a PostgreSQL database current with this device's projects (docs/operations.md
// "PostgreSQL mirror"). Every document of a mirrored project is one row of
// <schema>.documents (winning body as jsonb, deleted and conflict flags, heads, author, time);
// <schema>.projects holds, per project, the changes-feed position already mirrored. Rows and
// position are written in one PostgreSQL transaction, so every change lands exactly once and the
// mirror resumes where it stopped after either side restarts or PostgreSQL was unreachable.
//
// One device mirrors a project into one database: a project whose row names another device is
// left alone (reported in the status) unless that device is this one's previous identity.
// When this device's changes feed is behind the stored position (the data directory was
// restored from a backup) the project is mirrored again from the start.
//
// Ownership: borrows the Store, which outlives it. Owns one worker thread and its libpq
// connection; no libpq type leaves hub/.
// Thread-safety: notify() and status() from any thread; start() and stop() from the owner's.
// stop() cancels a running statement and joins the worker.
// Errors: none returned after create(); PostgreSQL trouble is a state in the status, retried
// with backoff (mirror.retry_min_ms .. mirror.retry_max_ms). The password is never logged nor
// shown: `database` in the status is the connection string without it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"

namespace fieldsync::storage {
class Store;
}

namespace fieldsync::hub {

struct MirrorProjectStatus {
  std::string project;
  std::uint64_t mirrored_seq = 0;  // changes-feed position in PostgreSQL
  std::uint64_t feed_seq = 0;      // this device's last change
  std::uint64_t rows_written = 0;  // since the daemon started
  std::uint64_t rows_deleted = 0;  // rows of erased documents removed, since the daemon started
  std::int64_t last_commit_ms = 0;
  std::string problem;  // why it is not mirrored (another device mirrors it), or empty
  std::uint64_t behind() const { return feed_seq > mirrored_seq ? feed_seq - mirrored_seq : 0; }
};

struct MirrorStatus {
  // off | connecting | catching_up | current | retrying
  std::string state = "off";
  std::string message;
  std::string database;  // the connection settings without the password
  std::string last_error;
  std::int64_t last_error_ms = 0;
  std::int64_t next_retry_ms = 0;
  std::uint64_t rows_written = 0;
  std::uint64_t rows_deleted = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failures = 0;
  std::uint64_t bodies_refused = 0;  // bodies PostgreSQL refused (row kept, body_error says why)
  std::vector<MirrorProjectStatus> projects;
};

// The connection string with any password removed, for logs and the status. A string libpq
// cannot parse is shown as "(unparsable connection string)".
std::string redacted_conninfo(const std::string& conninfo);

class PgMirror {
 public:
  // invalid_argument when the connection string does not parse or the password file cannot be
  // read (named, never shown).
  static Result<std::unique_ptr<PgMirror>> create(storage::Store& store,
                                                  const config::MirrorOptions& options);
  ~PgMirror();
  PgMirror(const PgMirror&) = delete;
  PgMirror& operator=(const PgMirror&) = delete;

  void start();
  // Something was committed in `project`: mirror it soon. Cheap; any thread.
  void notify();
  MirrorStatus status() const;
  void stop();

  struct Impl;

 private:
  explicit PgMirror(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::hub
