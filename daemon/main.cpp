// fieldsyncd: wires the command line, config, logging and the Daemon. Exit codes:
// 0 clean shutdown, 1 runtime failure (store, socket, port), 2 usage or configuration error.
#include <cstdio>
#include <iostream>

#include <spdlog/spdlog.h>

#include "daemon/daemon.hpp"
#include "daemon/daemon_args.hpp"
#include "daemon/logging.hpp"

int main(int argc, char** argv) {
  using namespace fieldsync;
  auto args = daemon::parse_args(argc, argv);
  if (!args) {
    std::cerr << "fieldsyncd: " << args.error().message << "\n" << daemon::usage();
    return 2;
  }
  if (args->help) {
    std::cout << daemon::usage();
    return 0;
  }
  if (args->version) {
    std::cout << "fieldsyncd " << FIELDSYNC_VERSION << "\n";
    return 0;
  }
  auto cfg = daemon::build_config(*args);
  if (!cfg) {
    std::cerr << "fieldsyncd: configuration error: " << cfg.error().message << "\n";
    return 2;
  }
  if (auto st = daemon::setup_logging(cfg->log_level); !st) {
    std::cerr << "fieldsyncd: configuration error: " << st.error().message << "\n";
    return 2;
  }
  daemon::Daemon d(std::move(*cfg));
  if (auto st = d.run(); !st) {
    spdlog::critical("{}: {}", errc_name(st.error().code), st.error().message);
    return 1;
  }
  return 0;
}
