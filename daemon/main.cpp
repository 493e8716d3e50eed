// fieldsyncd: wires the command line, config, logging and the Daemon. Exit codes:
// 0 clean shutdown, 1 runtime failure (store, socket, port), 2 usage or configuration error.
// --check-config: 0 when the configuration is valid, 2 when not.
#include <cstdio>
#include <iostream>
#include <string>

#include <spdlog/spdlog.h>

#include "config/config_loader.hpp"
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
  auto file = daemon::config_file(*args);
  std::string source = file ? file->string() : "no config file";
  if (args->check_config) {
    // Checked as a start would, then nothing opened, bound or written.
    std::cout << "config OK (" << source << ")\n";
    for (const auto& notice : config::config_notices(*cfg))
      std::cout << "notice: " << notice << "\n";
    return 0;
  }
  if (auto st = daemon::setup_logging(cfg->log_level); !st) {
    std::cerr << "fieldsyncd: configuration error: " << st.error().message << "\n";
    return 2;
  }
  daemon::Daemon d(std::move(*cfg));
  d.set_reload([a = *args] { return daemon::build_config(a); }, source);
  if (auto st = d.run(); !st) {
    spdlog::critical("{}: {}", errc_name(st.error().code), st.error().message);
    return 1;
  }
  return 0;
}
