#include "daemon/service_notifier.hpp"

#include <unistd.h>

#include <cstdlib>
#include <string>

#if __has_include("systemd/sd_notify.hpp") && defined(FIELDSYNC_HAVE_FS_SYSTEMD)
#define FIELDSYNC_USE_FS_SYSTEMD 1
#include "systemd/sd_notify.hpp"
#else
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#endif

namespace fieldsync::daemon {

namespace {

#ifndef FIELDSYNC_USE_FS_SYSTEMD
// The sd_notify protocol: one datagram of "KEY=VALUE" lines to $NOTIFY_SOCKET
// ('@' = abstract namespace). Used until the systemd component provides its own.
bool notify(const std::string& state) {
  const char* e = std::getenv("NOTIFY_SOCKET");
  if (!e || !*e) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::size_t n = std::strlen(e);
  if (n >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, e, n);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ssize_t r = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa),
                       static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n));
  ::close(fd);
  return r == static_cast<ssize_t>(state.size());
}
#else
bool notify(const std::string& state) { return fieldsync::systemd::sd_notify(state); }
#endif

}  // namespace

void ServiceNotifier::ready(const std::string& status) {
  notify("READY=1\nSTATUS=" + status + "\nMAINPID=" + std::to_string(::getpid()));
}
void ServiceNotifier::watchdog() { notify("WATCHDOG=1"); }
void ServiceNotifier::stopping() { notify("STOPPING=1"); }

std::optional<std::chrono::milliseconds> ServiceNotifier::watchdog_period() const {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (!usec || !*usec) return std::nullopt;
  if (const char* pid = std::getenv("WATCHDOG_PID"); pid && *pid && std::atol(pid) != ::getpid())
    return std::nullopt;
  long long us = std::atoll(usec);
  if (us <= 0) return std::nullopt;
  return std::chrono::milliseconds(std::max<long long>(us / 2000, 1));
}

}  // namespace fieldsync::daemon
