// The data directory at daemon start: created private (0700), locked for the lifetime of the
// process so that a second fieldsyncd on the same directory refuses to start, and its secret
// files checked (docs/operations.md "Data directory").
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace fieldsync::daemon {

// The lock file inside the data directory.
inline constexpr const char* kLockFileName = "fieldsyncd.lock";

// Holds an exclusive flock(2) on <data_dir>/fieldsyncd.lock, which holds our pid. The kernel
// releases the lock when the process ends (also on SIGKILL), so a stale file never blocks.
class DataDirLock {
 public:
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  // Creates `dir` (0700) if needed and takes the lock. failed_precondition naming the pid of
  // the process that holds it when another process has the directory open.
  static Result<std::unique_ptr<DataDirLock>> acquire(const std::filesystem::path& dir);

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Checks the secret files in the data directory: a device key or API token readable by
// others is tightened to 0600; one owned by another user is refused (permission_denied).
// With `token_group` (api.token_group) the token is instead 0640 with that group (the API
// server opens the directory to the group once the store has made it private:
// ipc::open_dir_to_group).
// Errors: permission_denied as above or when the daemon may not give a file to the group.
// Returns what it changed, for the log.
Result<std::vector<std::string>> secure_data_files(const std::filesystem::path& dir,
                                                   std::optional<unsigned> token_group = {});

}  // namespace fieldsync::daemon
