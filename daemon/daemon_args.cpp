#include "daemon/daemon_args.hpp"

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include <boost/program_options.hpp>

#include "config/config_loader.hpp"

namespace fieldsync::daemon {
namespace {

namespace po = boost::program_options;

// Every option, once: parse_args() reads them and usage() prints them.
po::options_description options() {
  po::options_description o("options", 100, 40);
  o.add_options()
      // clang-format off
      ("config,c", po::value<std::string>()->value_name("FILE"),
       "config file (default /etc/fieldsync/fieldsyncd.conf if it exists)")
      ("data-dir", po::value<std::string>()->value_name("DIR"), "data directory (daemon.data_dir)")
      ("log-level", po::value<std::string>()->value_name("LEVEL"),
       "trace, debug, info, warn or error (daemon.log_level)")
      ("set", po::value<std::vector<std::string>>()->value_name("KEY=VALUE")->composing(),
       "override any config key, e.g. --set api.http_port=0; repeatable; VALUE is a TOML "
       "value (0, true, \"a b\") or else a string")
      ("check-config", "check the config file and options as a start would, print \"config OK\" "
       "and its notices, and exit (status 2 if not OK)")
      ("print-config", "print the configuration (file and options) as a TOML config file and "
       "exit, e.g. to convert a file of the previous format")
      ("version", "print the version and exit")
      ("help,h", "this text");
  // clang-format on
  return o;
}

}  // namespace

std::string usage() {
  std::ostringstream out;
  out << "usage: fieldsyncd [--config FILE] [--data-dir DIR] [--log-level LEVEL] [--set "
         "KEY=VALUE]... [--check-config | --print-config]\n\n"
      << options()
      << "\nSIGHUP reloads the config file: the log level and the static peers change at once,\n"
         "other changed keys are logged as needing a restart.\n";
  return out.str();
}

Result<DaemonArgs> parse_args(int argc, char** argv) {
  po::variables_map vm;
  try {
    // Options are spelled out: no abbreviations (--conf for --config), no option files.
    const int style = po::command_line_style::unix_style ^ po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(argc, argv).options(options()).style(style).run(), vm);
  } catch (const po::error& e) {
    return make_error(Errc::invalid_argument, e.what());
  }
  DaemonArgs a;
  auto text = [&vm](const char* name) -> std::optional<std::string> {
    if (!vm.count(name)) return std::nullopt;
    return vm[name].as<std::string>();
  };
  a.help = vm.count("help") > 0;
  a.version = vm.count("version") > 0;
  a.check_config = vm.count("check-config") > 0;
  a.print_config = vm.count("print-config") > 0;
  a.config_path = text("config");
  a.data_dir = text("data-dir");
  a.log_level = text("log-level");
  if (vm.count("set")) {
    for (const auto& kv : vm["set"].as<std::vector<std::string>>()) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        return make_error(Errc::invalid_argument, "--set expects KEY=VALUE, got '" + kv + "'");
      a.settings.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
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
