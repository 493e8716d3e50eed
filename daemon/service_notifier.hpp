// ServiceNotifier: tells the service manager (systemd, Type=notify) about the daemon's state:
// READY=1 once the API listens, WATCHDOG=1 pings, STOPPING=1 on shutdown.
// Does nothing when NOTIFY_SOCKET is unset. Thread-safe (each call is one datagram).
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace fieldsync::daemon {

class ServiceNotifier {
 public:
  void ready(const std::string& status);
  void watchdog();
  void stopping();
  // Half the watchdog interval when the service manager asks for pings for this process.
  std::optional<std::chrono::milliseconds> watchdog_period() const;
};

}  // namespace fieldsync::daemon
