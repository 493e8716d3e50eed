// fieldsyncd: wires the command line, config, logging and the Daemon. Exit codes:
// 0 clean shutdown, 1 runtime failure (store, socket, port), 2 usage or configuration error.
// --check-config and --print-config: 0 when the configuration is valid, 2 when not.
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
  config::ConfigFormat format = config::ConfigFormat::toml;
  auto cfg = daemon::build_config(*args, &format);
  if (!cfg) {
    std::cerr << "fieldsyncd: configuration error: " << cfg.error().message << "\n";
    return 2;
  }
  auto file = daemon::config_file(*args);
  std::string source = file ? file->string() : "no config file";
  std::string previous_format = file && format == config::ConfigFormat::previous
                                    ? config::previous_format_warning(*file)
                                    : "";
  if (args->print_config) {
    // The file and the command line as they were given (checked as a start would), without
    // the defaults a start derives from the environment: a config file to keep.
    auto effective = daemon::effective_config(*args);
    if (!effective) return 2;  // not reached: build_config read the same
    if (!previous_format.empty()) std::cerr << "fieldsyncd: warning: " << previous_format << "\n";
    std::cout << config::to_config_text(*effective);
    return 0;
  }
  if (args->check_config) {
    // Checked as a start would, then nothing opened, bound or written.
    std::cout << "config OK (" << source << ")\n";
    if (!previous_format.empty()) std::cout << "warning: " << previous_format << "\n";
    for (const auto& notice : config::config_notices(*cfg))
      std::cout << "notice: " << notice << "\n";
    return 0;
  }
  if (auto st = daemon::setup_logging(cfg->log_level); !st) {
    std::cerr << "fieldsyncd: configuration error: " << st.error().message << "\n";
    return 2;
  }
  if (!previous_format.empty()) spdlog::warn("{}", previous_format);
  daemon::Daemon d(std::move(*cfg));
  d.set_reload([a = *args] { return daemon::build_config(a); }, source);
  if (auto st = d.run(); !st) {
    spdlog::critical("{}: {}", errc_name(st.error().code), st.error().message);
    return 1;
  }
  return 0;
}
