// Creating the daemon's directories with owner-only permissions, whatever the umask.
#pragma once

#include <filesystem>

#include "common/result.hpp"

namespace fieldsync {

// Creates `dir` and any missing parents. Every directory created here is made 0700 with an
// explicit chmod (mkdir's mode is filtered by the umask, so umask 000 would leave 0777).
// An existing `dir` itself is tightened to 0700; existing parents are left as they are.
Status create_private_dirs(const std::filesystem::path& dir);

// fsync of a directory, so that an entry created, renamed or removed in it is durable:
// 0, or the errno of the failure.
int sync_dir(const std::filesystem::path& dir);

}  // namespace fieldsync
