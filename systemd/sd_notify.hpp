// sd_notify: the systemd service notification protocol, through libsystemd (sd-daemon(3)).
// This is the only file pair that includes systemd's headers or calls libsystemd
// (scripts/check-deps.sh keeps <systemd/...> in systemd/).
//
// Under a Type=notify unit, systemd passes the path of a datagram socket in $NOTIFY_SOCKET.
// fieldsyncd sends READY=1 once its API listens, WATCHDOG=1 at watchdog_ping_interval() from
// its event loop, RELOADING=1 when a SIGHUP reload starts and READY=1 again when it is done,
// STATUS=... when something worth showing in `systemctl status` changes, STOPPING=1 when it
// starts shutting down. Without $NOTIFY_SOCKET (not started by systemd) every call is a no-op
// that succeeds, so callers need no "am I under systemd" branches.
//
// Threads: every notify_* function may be called from any thread, concurrently (libsystemd
// opens a socket per message and keeps no state). watchdog_ping_interval() and
// stderr_is_journal() read the environment: call them while no thread changes it (setenv),
// i.e. at startup. fieldsyncd calls everything from its event loop thread, so that a wedged
// loop stops the WATCHDOG=1 pings.
// Errors: unavailable when $NOTIFY_SOCKET is set but the send fails; invalid_argument when
// $NOTIFY_SOCKET is not a usable AF_UNIX address. Callers log the error and carry on: a failed
// notification must never stop the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/result.hpp"

namespace fieldsync::systemd {

// Sends `state` (newline-separated VAR=value lines, e.g. "STATUS=syncing\n") as one message.
Status notify(std::string_view state);

// READY=1, STATUS=<status>, MAINPID=<our pid>: call once every listener is open, and again
// when a reload is done.
Status notify_ready(std::string_view status);

// STATUS=<status>: a one-line human-readable state (newlines become spaces).
Status notify_status(std::string_view status);

// RELOADING=1 and MONOTONIC_USEC=<CLOCK_MONOTONIC now> (and STATUS=<status> when not empty):
// call when a reload starts; notify_ready() when it ends (also when it failed).
Status notify_reloading(std::string_view status = {});

// STOPPING=1 (and STATUS=<status> when not empty): call when shutdown begins.
Status notify_stopping(std::string_view status = {});

// WATCHDOG=1: call every watchdog_ping_interval() from the event loop, so a hung loop is
// noticed by systemd.
Status notify_watchdog();

// CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= carries it.
std::uint64_t monotonic_usec();

// Half the watchdog timeout systemd set (sd_watchdog_enabled: $WATCHDOG_USEC, for this
// process when $WATCHDOG_PID is set); nullopt when the watchdog is off, meant for another
// process, or the variables are malformed.
std::optional<std::chrono::microseconds> watchdog_ping_interval();

// True when stderr is connected to the journal ($JOURNAL_STREAM names stderr's device and
// inode), so logs can drop their own timestamps and use "<N>" priority prefixes.
bool stderr_is_journal();

}  // namespace fieldsync::systemd
