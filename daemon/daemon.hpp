// Daemon: fieldsyncd's lifecycle. Opens the Store, serves the local API on one io_context,
// tells systemd when it is ready (and pings its watchdog), and shuts down gracefully on
// SIGTERM/SIGINT: stop accepting, finish in-flight requests for api.shutdown_grace_ms, close
// SSE streams, close the store. A second signal during shutdown stops at once. SIGHUP reloads
// the configuration (set_reload): the log level and the static peers change at once, other
// changed keys are logged as needing a restart, a configuration that fails leaves the running
// one in place.
//
// Ownership: owns the io_context, the Store and the API. Single-threaded: run() blocks on the
// calling thread until shutdown. Other components (sync) attach to io_context()/store()
// before run().
// Errors (run): the Store's open errors, the API's bind errors.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/result.hpp"
#include "config/config.hpp"

namespace fieldsync::daemon {

class Daemon {
 public:
  explicit Daemon(config::Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // How SIGHUP builds the configuration again (the same file and command line as at start,
  // through the same checks). `source` names it in the log. Without it SIGHUP only logs that
  // there is nothing to reload. Call before run().
  void set_reload(std::function<Result<config::Config>()> load, std::string source);

  // Runs until a shutdown signal; returns once everything is closed. When another copy of
  // this device is detected, closes everything, reopens the store (which renews the
  // identity) and serves again on the same ports.
  Status run();

 private:
  Status run_once(bool first);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::daemon
