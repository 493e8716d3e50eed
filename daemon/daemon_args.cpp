#include "daemon/daemon_args.hpp"

#include <unistd.h>

#include <cstring>
#include <filesystem>

#if defined(FIELDSYNC_HAVE_CONFIG_LOADER) && __has_include("config/config_loader.hpp")
#define FIELDSYNC_USE_CONFIG_LOADER 1
#include "config/config_loader.hpp"
#else
#include <charconv>
#include <fstream>

#include "ipc/api_paths.hpp"
#endif

namespace fieldsync::daemon {

std::string usage() {
  return "usage: fieldsyncd [--config FILE] [--data-dir DIR] [--log-level LEVEL] [--set KEY=VALUE]...\n"
         "\n"
         "  --config FILE      config file (default /etc/fieldsync/fieldsyncd.conf if it exists)\n"
         "  --data-dir DIR     data directory (daemon.data_dir)\n"
         "  --log-level LEVEL  trace, debug, info, warn or error (daemon.log_level)\n"
         "  --set KEY=VALUE    override any config key, e.g. --set api.http_port=0; repeatable\n"
         "  --version          print the version and exit\n"
         "  --help             this text\n";
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

#ifdef FIELDSYNC_USE_CONFIG_LOADER

Result<config::Config> build_config(const DaemonArgs& args) {
  config::Config cfg;
  if (args.config_path) {
    auto loaded = config::load_config(*args.config_path);
    if (!loaded) return loaded.error();
    cfg = std::move(*loaded);
  } else if (std::filesystem::exists(kDefaultConfigPath)) {
    auto loaded = config::load_config(kDefaultConfigPath);
    if (!loaded) return loaded.error();
    cfg = std::move(*loaded);
  }
  if (args.data_dir) FS_TRY(config::apply_setting(cfg, "daemon.data_dir", *args.data_dir));
  if (args.log_level) FS_TRY(config::apply_setting(cfg, "daemon.log_level", *args.log_level));
  for (const auto& [k, v] : args.settings) FS_TRY(config::apply_setting(cfg, k, v));
  FS_TRY(config::finalize(cfg, ::geteuid() == 0));
  return cfg;
}

#else
// Stand-in used until config/config_loader.hpp exists: the keys fieldsyncd needs to run,
// from --set only (a config file is refused rather than half-read).
namespace {

template <class T>
Status parse_uint(const std::string& key, const std::string& v, T& out, int base = 10) {
  unsigned long long n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty() ||
      n > static_cast<unsigned long long>(std::numeric_limits<T>::max()))
    return make_error(Errc::invalid_argument, key + ": not a valid number: '" + v + "'");
  out = static_cast<T>(n);
  return {};
}
Status parse_bool(const std::string& key, const std::string& v, bool& out) {
  if (v == "true" || v == "1" || v == "yes") out = true;
  else if (v == "false" || v == "0" || v == "no") out = false;
  else return make_error(Errc::invalid_argument, key + ": expected true or false, got '" + v + "'");
  return {};
}

Status apply(config::Config& c, const std::string& k, const std::string& v) {
  auto& a = c.api;
  if (k == "daemon.data_dir") c.data_dir = v;
  else if (k == "daemon.log_level") c.log_level = v;
  else if (k == "daemon.device_name") c.device_name = v;
  else if (k == "api.socket_path") a.socket_path = v;
  else if (k == "api.socket_mode") return parse_uint(k, v, a.socket_mode, 8);
  else if (k == "api.socket_group") a.socket_group = v;
  else if (k == "api.http_enabled") return parse_bool(k, v, a.http_enabled);
  else if (k == "api.http_address") a.http_address = v;
  else if (k == "api.http_port") return parse_uint(k, v, a.http_port);
  else if (k == "api.max_body_bytes") return parse_uint(k, v, a.max_body_bytes);
  else if (k == "api.max_connections") return parse_uint(k, v, a.max_connections);
  else if (k == "api.max_page_size") return parse_uint(k, v, a.max_page_size);
  else if (k == "api.request_timeout_ms") return parse_uint(k, v, a.request_timeout_ms);
  else if (k == "api.longpoll_timeout_ms") return parse_uint(k, v, a.longpoll_timeout_ms);
  else if (k == "api.sse_heartbeat_ms") return parse_uint(k, v, a.sse_heartbeat_ms);
  else if (k == "api.shutdown_grace_ms") return parse_uint(k, v, a.shutdown_grace_ms);
  else if (k == "storage.durable") return parse_bool(k, v, c.storage.durable);
  else if (k == "storage.max_body_bytes") return parse_uint(k, v, c.storage.max_body_bytes);
  else if (k == "storage.map_size") return parse_uint(k, v, c.storage.map_size_bytes);
  else return make_error(Errc::invalid_argument, "unknown config key '" + k + "'");
  return {};
}

}  // namespace

Result<config::Config> build_config(const DaemonArgs& args) {
  config::Config cfg;
  if (args.config_path)
    return make_error(Errc::unsupported, "config files are not supported by this build; use --set");
  if (args.data_dir) FS_TRY(apply(cfg, "daemon.data_dir", *args.data_dir));
  if (args.log_level) FS_TRY(apply(cfg, "daemon.log_level", *args.log_level));
  for (const auto& [k, v] : args.settings) FS_TRY(apply(cfg, k, v));
  if (cfg.data_dir.empty()) cfg.data_dir = ipc::default_data_dir();
  cfg.storage.data_dir = cfg.data_dir;
  if (cfg.device_name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    cfg.device_name = host;
  }
  return cfg;
}
#endif

}  // namespace fieldsync::daemon
