// Where the local API lives on disk; shared by fieldsyncd and syncctl so both pick the same
// defaults. Stateless functions; thread-safe.
#pragma once

#include <filesystem>

namespace fieldsync::ipc {

// daemon.data_dir default: /var/lib/fieldsync for root, else $XDG_DATA_HOME/fieldsync or
// ~/.local/share/fieldsync.
std::filesystem::path default_data_dir();
// api.socket_path default: /run/fieldsync/api.sock for root, else <data_dir>/api.sock.
std::filesystem::path default_socket_path(const std::filesystem::path& data_dir);
// The configured socket path, or the default when `configured` is empty.
std::filesystem::path resolve_socket_path(const std::filesystem::path& configured,
                                          const std::filesystem::path& data_dir);
inline std::filesystem::path token_file(const std::filesystem::path& data_dir) {
  return data_dir / "api.token";
}
inline std::filesystem::path port_file(const std::filesystem::path& data_dir) {
  return data_dir / "api.port";
}

}  // namespace fieldsync::ipc
