// sd_notify: the systemd service notification protocol, written by hand (no libsystemd).
//
// Under a Type=notify unit, systemd passes the path of a datagram socket in $NOTIFY_SOCKET
// ("@name" for the abstract namespace); each message is newline-separated VAR=value lines.
// fieldsyncd sends READY=1 once its API listens, WATCHDOG=1 at watchdog_ping_interval(),
// STATUS=... when something worth showing in `systemctl status` changes, STOPPING=1 when it
// starts shutting down. Without $NOTIFY_SOCKET (not started by systemd) every call is a no-op
// that succeeds, so callers need no "am I under systemd" branches.
//
// Thread-safety: every function may be called from any thread (each send uses its own socket).
// Errors: unavailable when the socket exists in the environment but the send fails;
// invalid_argument when $NOTIFY_SOCKET is not a usable AF_UNIX address. Callers log the
// error and carry on: a failed notification must never stop the daemon.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

#include "common/result.hpp"

namespace fieldsync::systemd {

// Sends `state` (e.g. "STATUS=syncing\n") as one datagram to $NOTIFY_SOCKET.
Status notify(std::string_view state);

// READY=1, STATUS=<status>, MAINPID=<our pid>: call once every listener is open.
Status notify_ready(std::string_view status);

// STATUS=<status>: a one-line human-readable state (newlines become spaces).
Status notify_status(std::string_view status);

// STOPPING=1 (and STATUS=<status> when not empty): call when shutdown begins.
Status notify_stopping(std::string_view status = {});

// WATCHDOG=1: call every watchdog_ping_interval() from the event loop, so a hung loop is
// noticed by systemd.
Status notify_watchdog();

// Half the watchdog timeout systemd set ($WATCHDOG_USEC), when the watchdog is on and meant
// for this process ($WATCHDOG_PID absent or equal to our pid); nullopt otherwise.
std::optional<std::chrono::microseconds> watchdog_ping_interval();

// True when stderr is connected to the journal ($JOURNAL_STREAM names stderr's device and
// inode), so logs can drop their own timestamps and use "<N>" priority prefixes.
bool stderr_is_journal();

}  // namespace fieldsync::systemd
