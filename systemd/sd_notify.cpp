#include "systemd/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>

namespace fieldsync::systemd {
namespace {

std::string one_line(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

template <class T>
std::optional<T> parse_number(const char* text) {
  if (!text || !*text) return std::nullopt;
  T value{};
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

}  // namespace

Status notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return {};  // not started by systemd: nothing to tell

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::size_t len = std::strlen(path);
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path)
    return make_error(Errc::invalid_argument,
                      std::string("NOTIFY_SOCKET is not a usable AF_UNIX path: ") + path);
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace

  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(Errc::unavailable, std::string("sd_notify socket: ") + std::strerror(errno));
  auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                          reinterpret_cast<const sockaddr*>(&addr), addr_len);
  int err = errno;
  ::close(fd);
  if (sent < 0)
    return make_error(Errc::unavailable,
                      std::string("sd_notify to ") + path + ": " + std::strerror(err));
  if (static_cast<std::size_t>(sent) != state.size())
    return make_error(Errc::unavailable, std::string("sd_notify to ") + path + ": short send");
  return {};
}

Status notify_ready(std::string_view status) {
  return notify("READY=1\nSTATUS=" + one_line(status) + "\nMAINPID=" + std::to_string(::getpid()) +
                "\n");
}

Status notify_status(std::string_view status) {
  return notify("STATUS=" + one_line(status) + "\n");
}

Status notify_stopping(std::string_view status) {
  std::string msg = "STOPPING=1\n";
  if (!status.empty()) msg += "STATUS=" + one_line(status) + "\n";
  return notify(msg);
}

Status notify_watchdog() { return notify("WATCHDOG=1\n"); }

std::optional<std::chrono::microseconds> watchdog_ping_interval() {
  auto usec = parse_number<std::uint64_t>(std::getenv("WATCHDOG_USEC"));
  if (!usec || *usec == 0) return std::nullopt;
  if (const char* pid_text = std::getenv("WATCHDOG_PID"); pid_text && *pid_text) {
    auto pid = parse_number<pid_t>(pid_text);
    if (!pid || *pid != ::getpid()) return std::nullopt;  // meant for another process
  }
  // Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping is not fatal.
  return std::chrono::microseconds(*usec / 2);
}

bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  std::string_view v(js);
  auto colon = v.find(':');
  if (colon == std::string_view::npos) return false;
  std::string dev(v.substr(0, colon)), ino(v.substr(colon + 1));
  auto d = parse_number<std::uint64_t>(dev.c_str());
  auto i = parse_number<std::uint64_t>(ino.c_str());
  struct stat st {};
  if (!d || !i || ::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<std::uint64_t>(st.st_dev) == *d && static_cast<std::uint64_t>(st.st_ino) == *i;
}

}  // namespace fieldsync::systemd
