#include "systemd/sd_notify.hpp"

#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace fieldsync::systemd {
namespace {

std::string one_line(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

std::optional<std::uint64_t> parse_number(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t value{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string with_status(std::string msg, std::string_view status) {
  if (!status.empty()) msg += "STATUS=" + one_line(status) + "\n";
  return msg;
}

}  // namespace

Status notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return {};  // not started by systemd: nothing to tell
  // sd_notify() returns > 0 when sent, 0 without $NOTIFY_SOCKET, -errno on failure.
  int r = ::sd_notify(0, std::string(state).c_str());
  if (r >= 0) return {};
  if (r == -EINVAL || r == -EAFNOSUPPORT)
    return make_error(Errc::invalid_argument,
                      std::string("NOTIFY_SOCKET is not a usable AF_UNIX path: ") + path);
  return make_error(Errc::unavailable,
                    std::string("sd_notify to ") + path + ": " + std::strerror(-r));
}

Status notify_ready(std::string_view status) {
  return notify("READY=1\nSTATUS=" + one_line(status) + "\nMAINPID=" + std::to_string(::getpid()) +
                "\n");
}

Status notify_status(std::string_view status) {
  return notify("STATUS=" + one_line(status) + "\n");
}

Status notify_reloading(std::string_view status) {
  return notify(with_status(
      "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) + "\n", status));
}

Status notify_stopping(std::string_view status) {
  return notify(with_status("STOPPING=1\n", status));
}

Status notify_watchdog() { return notify("WATCHDOG=1\n"); }

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

std::optional<std::chrono::microseconds> watchdog_ping_interval() {
  std::uint64_t usec = 0;
  // > 0: on and meant for this process; 0: off or for another pid; < 0: malformed variables.
  if (::sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  // Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping is not fatal.
  return std::chrono::microseconds(usec / 2);
}

bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  std::string_view v(js);
  auto colon = v.find(':');
  if (colon == std::string_view::npos) return false;
  auto d = parse_number(v.substr(0, colon));
  auto i = parse_number(v.substr(colon + 1));
  struct stat st {};
  if (!d || !i || ::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<std::uint64_t>(st.st_dev) == *d && static_cast<std::uint64_t>(st.st_ino) == *i;
}

}  // namespace fieldsync::systemd
