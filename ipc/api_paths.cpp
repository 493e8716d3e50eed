#include "ipc/api_paths.hpp"

#include <unistd.h>

#include <cstdlib>

namespace fieldsync::ipc {

std::filesystem::path default_data_dir() {
  if (::geteuid() == 0) return "/var/lib/fieldsync";
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
    return std::filesystem::path(xdg) / "fieldsync";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::filesystem::path(home) / ".local/share/fieldsync";
  return "fieldsync-data";
}

std::filesystem::path default_socket_path(const std::filesystem::path& data_dir) {
  if (::geteuid() == 0) return "/run/fieldsync/api.sock";
  return data_dir / "api.sock";
}

std::filesystem::path resolve_socket_path(const std::filesystem::path& configured,
                                          const std::filesystem::path& data_dir) {
  return configured.empty() ? default_socket_path(data_dir) : configured;
}

}  // namespace fieldsync::ipc
