// Logging setup for fieldsyncd: spdlog to stderr. Under systemd (stderr is the journal) lines are
// plain "<priority>message" so journald adds its own timestamps and maps the level; otherwise
// timestamped, coloured on a terminal. Call once at start, before other threads exist.
#pragma once

#include <string>

#include "common/result.hpp"

namespace fieldsync::daemon {

// invalid_argument for an unknown level name.
Status setup_logging(const std::string& level);

}  // namespace fieldsync::daemon
