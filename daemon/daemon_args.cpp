#include "daemon/daemon_args.hpp"

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "config/config_loader.hpp"

namespace fieldsync::daemon {

std::string usage() {
  return "usage: fieldsyncd [--config FILE] [--data-dir DIR] [--log-level LEVEL] [--set "
         "KEY=VALUE]... [--check-config | --print-config]\n"
         "\n"
         "  --config FILE      config file (default /etc/fieldsync/fieldsyncd.conf if it exists)\n"
         "  --data-dir DIR     data directory (daemon.data_dir)\n"
         "  --log-level LEVEL  trace, debug, info, warn or error (daemon.log_level)\n"
         "  --set KEY=VALUE    override any config key, e.g. --set api.http_port=0; repeatable\n"
         "  --check-config     check the config file and options as a start would, print\n"
         "                     \"config OK\" and its notices, and exit (status 2 if not OK)\n"
         "  --print-config     print the configuration (file and options) as a TOML config\n"
         "                     file and exit, e.g. to convert a file of the previous format\n"
         "  --version          print the version and exit\n"
         "  --help             this text\n"
         "\n"
         "SIGHUP reloads the config file: the log level and the static peers change at once,\n"
         "other changed keys are logged as needing a restart.\n";
}

Result<DaemonArgs> parse_args(int argc, char** argv) {
  DaemonArgs a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto take = [&]() -> Result<std::string> {
      if (has_inline) return value;
      if (i + 1 >= argc) return make_error(Errc::invalid_argument, arg + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else if (arg == "--version") {
      a.version = true;
    } else if (arg == "--check-config") {
      a.check_config = true;
    } else if (arg == "--print-config") {
      a.print_config = true;
    } else if (arg == "--config" || arg == "-c") {
      auto v = take();
      if (!v) return v.error();
      a.config_path = *v;
    } else if (arg == "--data-dir") {
      auto v = take();
      if (!v) return v.error();
      a.data_dir = *v;
    } else if (arg == "--log-level") {
      auto v = take();
      if (!v) return v.error();
      a.log_level = *v;
    } else if (arg == "--set") {
      auto v = take();
      if (!v) return v.error();
      auto eq = v->find('=');
      if (eq == std::string::npos || eq == 0)
        return make_error(Errc::invalid_argument, "--set expects KEY=VALUE, got '" + *v + "'");
      a.settings.emplace_back(v->substr(0, eq), v->substr(eq + 1));
    } else {
      return make_error(Errc::invalid_argument, "unknown option '" + arg + "'");
    }
  }
  return a;
}

std::optional<std::filesystem::path> config_file(const DaemonArgs& args) {
  if (args.config_path) return std::filesystem::path(*args.config_path);
  if (std::filesystem::exists(config::default_config_path())) return config::default_config_path();
  return std::nullopt;
}

Result<config::Config> effective_config(const DaemonArgs& args, config::ConfigFormat* format) {
  config::Config cfg;
  if (format) *format = config::ConfigFormat::toml;
  if (auto file = config_file(args)) {
    auto loaded = config::load_config(*file, format);
    if (!loaded) return loaded.error();
    cfg = std::move(*loaded);
  }
  if (args.data_dir) FS_TRY(config::apply_setting(cfg, "daemon.data_dir", *args.data_dir));
  if (args.log_level) FS_TRY(config::apply_setting(cfg, "daemon.log_level", *args.log_level));
  for (const auto& [k, v] : args.settings) FS_TRY(config::apply_setting(cfg, k, v));
  return cfg;
}

Result<config::Config> build_config(const DaemonArgs& args, config::ConfigFormat* format) {
  auto cfg = effective_config(args, format);
  if (!cfg) return cfg.error();
  FS_TRY(config::finalize(*cfg, ::geteuid() == 0));
  return cfg;
}

}  // namespace fieldsync::daemon
