// The fieldsyncd configuration file and the functions that fill a Config from it.
//
// The file is TOML (docs/operations.md "Configuration", example in config/fieldsyncd.conf):
//   [api]                        a section; keys below it are "api.<key>"
//   http_port = 7890             integers, booleans (true/false) and "strings" are typed
//   max_body_bytes = "8M"        sizes: an integer number of bytes, or a string with a k, M,
//                                G or T suffix (powers of 1024)
//   socket_mode = "0660"         octal digits in a string (or the TOML octal integer 0o660)
//   [peer.hub]                   a static peer named "hub" with keys address and device
// Every key is known in advance: an unknown section or key, a key set twice, a value of the
// wrong type or out of range is an error that names the file, the line and the key, e.g.
//   "fieldsyncd.conf:12: api.http_port: expected an integer 0..65535, got '\"abc\"'".
// A file that is not valid TOML is read in the INI-like format of the releases before (bare values,
// ';' comments, yes/no booleans), with the same keys and checks, so that an upgrade keeps a running
// device's config (ConfigFormat::previous; the daemon logs previous_format_warning()).
//
// Thread-safety: all functions are pure apart from reading the file (load_config) and the
// environment (finalize); they may be called from any thread.
// Errors: invalid_argument for syntax and values, not_found / permission_denied /
// too_large when the file cannot be read, failed_precondition from finalize.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"

namespace fieldsync::config {

// Where `cmake --install` puts the example config (the daemon's default --config).
std::filesystem::path default_config_path();

// The upper bound on a config file; anything bigger is certainly not a config file.
inline constexpr std::uintmax_t kMaxConfigFileBytes = 1u << 20;

// Which format a file was read in: TOML, or the format of the releases before TOML.
enum class ConfigFormat { toml, previous };

// Reads `path` and applies its settings on top of the defaults of Config{}; `format` (when
// given) tells which format it was in. Does not call finalize(): command-line overrides come
// first.
Result<Config> load_config(const std::filesystem::path& path, ConfigFormat* format = nullptr);

// Parses config text; `source` names it in error messages (usually the file name).
Result<Config> parse_config(std::string_view text, std::string_view source,
                            ConfigFormat* format = nullptr);

// The warning for a file read in the previous format, with how to convert it.
std::string previous_format_warning(const std::filesystem::path& path);

// Sets one key from a command-line value (--set): a TOML value (0, true, "a b", 0o660), or,
// when the text is not one, a string, so ("api.http_port", "0"), ("daemon.log_level", "debug")
// and ("peer.hub.address", "10.0.0.2:7891") all work. A string key takes the text as it is
// unless it is a quoted TOML string. Errors name the key but no file or line.
Status apply_setting(Config& config, std::string_view key, std::string_view value);

// apply_setting for a "key=value" string, as given to the daemon's --set.
Status apply_assignment(Config& config, std::string_view assignment);

// The current value of a key in TOML syntax (as a file's value or a --set value it reads back
// as the same value).
Result<std::string> get_setting(const Config& config, std::string_view key);

// Every key that may be set (peer keys excluded: they are "peer.<name>.address|device").
std::vector<std::string_view> setting_keys();

// The whole configuration as a TOML config file that parse_config() reads back to an equal
// Config (fieldsyncd --print-config).
std::string to_config_text(const Config& config);

// The parts of the environment finalize() depends on.
struct Environment {
  std::optional<std::string> home;               // $HOME
  std::optional<std::string> xdg_data_home;      // $XDG_DATA_HOME
  std::optional<std::string> state_directory;    // $STATE_DIRECTORY (systemd StateDirectory=)
  std::optional<std::string> runtime_directory;  // $RUNTIME_DIRECTORY (systemd RuntimeDirectory=)
  std::string hostname;                          // gethostname()
  static Environment current();
};

// Fills the defaults that depend on the environment and checks cross-key rules:
//  data_dir:  as set, else $STATE_DIRECTORY, else /var/lib/fieldsync (root), else
//             $XDG_DATA_HOME/fieldsync, else ~/.local/share/fieldsync; made absolute.
//  api.socket_path: as set, else $RUNTIME_DIRECTORY/api.sock, else /run/fieldsync/api.sock
//             (root), else <data_dir>/api.sock; must fit a Unix socket address (107 bytes).
//  daemon.device_name: as set, else the host name.
//  storage.data_dir = data_dir.
// Call it once, after the file and the command-line overrides were applied.
Status finalize(Config& config, bool is_root);
Status finalize(Config& config, bool is_root, const Environment& env);

// Settings that are allowed but worth a line in the log (e.g. the HTTP API on a
// non-loopback address). One human-readable sentence per notice.
std::vector<std::string> config_notices(const Config& config);

// The entries of a comma-separated list (mirror.projects, api.cors_origins), trimmed, empty
// ones dropped.
std::vector<std::string> split_project_list(std::string_view list);

}  // namespace fieldsync::config
