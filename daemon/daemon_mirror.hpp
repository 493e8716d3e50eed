// DaemonMirror: the daemon's PostgreSQL mirror (hub/pg_mirror.hpp, docs/operations.md
// "PostgreSQL mirror"), when mirror.postgres is set. Adds the "mirror" member of
// GET /v1/status and the fieldsync_mirror_* families of GET /metrics.
//
// Ownership: borrows the Store (outlives it); owns the PgMirror and its worker thread.
// Thread-safety: construct, attach_api, start and stop on the daemon's thread; notify from
// any thread (the store's change listener).
// Errors: start() returns the mirror's configuration errors (bad connection string, unreadable
// password file); PostgreSQL being down is a state in the status, not an error.
#pragma once

#include <memory>

#include "common/result.hpp"
#include "config/config.hpp"

namespace fieldsync::storage {
class Store;
}
namespace fieldsync::ipc {
class ApiService;
}
namespace fieldsync::hub {
class PgMirror;
}

namespace fieldsync::daemon {

class DaemonMirror {
 public:
  DaemonMirror(storage::Store& store, const config::Config& cfg);
  ~DaemonMirror();

  Status start();
  void attach_api(ipc::ApiService& api);
  void notify();
  void stop();

 private:
  storage::Store& store_;
  config::MirrorOptions opt_;
  std::shared_ptr<hub::PgMirror> mirror_;
};

}  // namespace fieldsync::daemon
