#include "daemon/data_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/fmt/fmt.h>
#include <cerrno>
#include <cstring>

#include "common/private_dir.hpp"
#include "ipc/api_access.hpp"

namespace fieldsync::daemon {

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

std::string read_pid(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
  return digits ? s : std::string();
}

}  // namespace

Result<std::unique_ptr<DataDirLock>> DataDirLock::acquire(const std::filesystem::path& dir) {
  FS_TRY(create_private_dirs(dir));
  auto path = dir / kLockFileName;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return make_error(Errc::internal, "cannot open " + path.string() + ": " + std::strerror(errno));
  std::unique_ptr<DataDirLock> lock(new DataDirLock(fd));
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      std::string pid = read_pid(fd);
      return make_error(Errc::failed_precondition,
                        "data directory " + dir.string() + " is in use by another fieldsyncd (" +
                            (pid.empty() ? std::string("pid unknown") : "pid " + pid) + ", lock " +
                            path.string() + "); stop it or give this daemon its own --data-dir");
    }
    return make_error(Errc::internal, "cannot lock " + path.string() + ": " + std::strerror(errno));
  }
  ::fchmod(fd, 0600);
  std::string line = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size()))
    return make_error(Errc::internal,
                      "cannot write " + path.string() + ": " + std::strerror(errno));
  return lock;
}

Result<std::vector<std::string>> secure_data_files(const std::filesystem::path& dir,
                                                   std::optional<unsigned> token_group) {
  std::vector<std::string> notices;
  for (const char* name : {"device.key", "api.token"}) {
    auto path = dir / name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;  // created 0600 later
    if (!S_ISREG(st.st_mode))
      return make_error(Errc::permission_denied, path.string() + " is not a regular file");
    if (st.st_uid != ::geteuid())
      return make_error(Errc::permission_denied,
                        fmt::format("{} is owned by uid {}, not by this daemon's uid {}; refusing "
                                    "to use a secret another user controls",
                                    path.string(), st.st_uid, ::geteuid()));
    unsigned mode = st.st_mode & 07777;
    const bool shared = token_group && std::string_view(name) == "api.token";
    if (shared) {  // 0640 with the group, whatever it was
      FS_TRY(ipc::set_token_access(path, token_group));
      continue;
    }
    if (mode == 0600) continue;
    if (::chmod(path.c_str(), 0600) != 0)
      return make_error(Errc::internal,
                        "cannot chmod " + path.string() + ": " + std::strerror(errno));
    notices.push_back(fmt::format("{} had mode {:04o}; tightened to 0600", path.string(), mode));
  }
  return notices;
}

}  // namespace fieldsync::daemon
