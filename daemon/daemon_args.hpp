// DaemonArgs: fieldsyncd's command line, and how it becomes a Config: the config file
// (--config, else config::default_config_path() when it exists), then --data-dir, --log-level
// and every --set key=value in order, then defaults that depend on the others (finalize).
// Stateless functions; thread-safe.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"
#include "config/config_loader.hpp"

namespace fieldsync::daemon {

struct DaemonArgs {
  std::optional<std::string> config_path;
  std::optional<std::string> data_dir;
  std::optional<std::string> log_level;
  std::vector<std::pair<std::string, std::string>> settings;  // --set key=value
  bool help = false;
  bool version = false;
  bool check_config = false;  // --check-config: build the Config, report, exit
  bool print_config = false;  // --print-config: print effective_config() as TOML, exit
};

// Parses argv. invalid_argument (usage error) with a message naming the bad option.
Result<DaemonArgs> parse_args(int argc, char** argv);
std::string usage();

// The config file with the command line applied, before finalize (--print-config prints it).
// `format` (when given) tells the format the file was read in. invalid_argument names the bad
// key or file.
Result<config::Config> effective_config(const DaemonArgs& args,
                                        config::ConfigFormat* format = nullptr);

// effective_config() with the defaults that depend on the environment filled (finalize):
// what the daemon runs with.
Result<config::Config> build_config(const DaemonArgs& args, config::ConfigFormat* format = nullptr);

// The config file build_config reads (--config, else the default path when it exists), or
// nullopt when it reads none.
std::optional<std::filesystem::path> config_file(const DaemonArgs& args);

}  // namespace fieldsync::daemon
