#include "systemd/sd_notify.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace fieldsync;

namespace {

// A datagram socket standing in for systemd's notification socket; sets $NOTIFY_SOCKET.
class FakeSystemd {
 public:
  explicit FakeSystemd(bool abstract) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    std::string name = "/tmp/fs-notify-" + std::to_string(::getpid()) + (abstract ? "-a" : "-p");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (abstract) {
      addr.sun_path[0] = '\0';
      env_ = "@" + name.substr(1);
    } else {
      ::unlink(name.c_str());
      path_ = name;
      env_ = name;
    }
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    ::setenv("NOTIFY_SOCKET", env_.c_str(), 1);
  }
  ~FakeSystemd() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  // The next datagram, or "" after a 5 s deadline.
  std::string receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return {};
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  bool empty() {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  std::string path_, env_;
};

}  // namespace

TEST_CASE("sd_notify sends the protocol messages to a path socket and an abstract one") {
  for (bool abstract : {false, true}) {
    FakeSystemd systemd(abstract);
    REQUIRE(systemd::notify_ready("listening on api.sock\nand 127.0.0.1:7890").ok());
    CHECK(systemd.receive() ==
          "READY=1\nSTATUS=listening on api.sock and 127.0.0.1:7890\nMAINPID=" +
              std::to_string(::getpid()) + "\n");
    REQUIRE(systemd::notify_status("3 peers").ok());
    CHECK(systemd.receive() == "STATUS=3 peers\n");
    REQUIRE(systemd::notify_watchdog().ok());
    CHECK(systemd.receive() == "WATCHDOG=1\n");
    REQUIRE(systemd::notify_stopping().ok());
    CHECK(systemd.receive() == "STOPPING=1\n");
    REQUIRE(systemd::notify_stopping("SIGTERM").ok());
    CHECK(systemd.receive() == "STOPPING=1\nSTATUS=SIGTERM\n");
    std::uint64_t before = systemd::monotonic_usec();
    REQUIRE(systemd::notify_reloading("reloading\nconfig").ok());
    std::uint64_t after = systemd::monotonic_usec();
    std::string reloading = systemd.receive();
    REQUIRE(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
    auto stamp_at = reloading.find('=', 12) + 1;
    auto stamp_end = reloading.find('\n', stamp_at);
    std::uint64_t stamp = std::stoull(reloading.substr(stamp_at, stamp_end - stamp_at));
    CHECK(before <= stamp);
    CHECK(stamp <= after);
    CHECK(reloading.substr(stamp_end) == "\nSTATUS=reloading config\n");
    CHECK(systemd.empty());
  }
}

TEST_CASE("sd_notify without NOTIFY_SOCKET is a successful no-op") {
  ::unsetenv("NOTIFY_SOCKET");
  CHECK(systemd::notify_ready("x").ok());
  ::setenv("NOTIFY_SOCKET", "", 1);
  CHECK(systemd::notify_watchdog().ok());
  ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("sd_notify reports unusable or absent sockets") {
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  auto st = systemd::notify_watchdog();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == Errc::invalid_argument);
  ::setenv("NOTIFY_SOCKET", ("/" + std::string(200, 'x')).c_str(), 1);
  CHECK_FALSE(systemd::notify_watchdog().ok());
  ::setenv("NOTIFY_SOCKET", "/nonexistent/fieldsync-notify", 1);
  st = systemd::notify_watchdog();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == Errc::unavailable);
  CHECK(st.error().message.find("/nonexistent/fieldsync-notify") != std::string::npos);
  ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("watchdog interval is half of WATCHDOG_USEC, for this process only") {
  ::unsetenv("WATCHDOG_PID");
  ::unsetenv("WATCHDOG_USEC");
  CHECK_FALSE(systemd::watchdog_ping_interval());
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  REQUIRE(systemd::watchdog_ping_interval());
  CHECK(*systemd::watchdog_ping_interval() == std::chrono::seconds(15));
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  CHECK(*systemd::watchdog_ping_interval() == std::chrono::seconds(15));
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
  CHECK_FALSE(systemd::watchdog_ping_interval());
  ::setenv("WATCHDOG_PID", "garbage", 1);
  CHECK_FALSE(systemd::watchdog_ping_interval());
  ::unsetenv("WATCHDOG_PID");
  for (auto bad : {"0", "", "-5", "12abc", "99999999999999999999999"}) {
    ::setenv("WATCHDOG_USEC", bad, 1);
    CHECK_FALSE(systemd::watchdog_ping_interval());
  }
  ::unsetenv("WATCHDOG_USEC");
}

TEST_CASE("stderr_is_journal matches JOURNAL_STREAM against stderr") {
  ::unsetenv("JOURNAL_STREAM");
  CHECK_FALSE(systemd::stderr_is_journal());
  struct stat st {};
  REQUIRE(::fstat(STDERR_FILENO, &st) == 0);
  std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
  CHECK(systemd::stderr_is_journal());
  std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  ::setenv("JOURNAL_STREAM", other.c_str(), 1);
  CHECK_FALSE(systemd::stderr_is_journal());
  ::setenv("JOURNAL_STREAM", "nonsense", 1);
  CHECK_FALSE(systemd::stderr_is_journal());
  ::unsetenv("JOURNAL_STREAM");
}
