// libfs_fault_fs.so: an LD_PRELOAD shim (tests only) that makes a power cut reproducible.
//
// For every regular file under FIELDSYNC_FAULT_DIR it records, before each write or truncate,
// the bytes and the size about to be overwritten into an undo journal in
// FIELDSYNC_FAULT_JOURNAL (format: undo_journal.hpp). fsync/fdatasync of a file (msync, sync,
// syncfs too) empties the file's journal, since what was synced survives a power cut; a write
// through an O_DSYNC/O_SYNC descriptor (or with RWF_DSYNC) is marked durable as it returns.
// After the process is killed (kill -9), fs_power_cut replays the journals newest first: the
// files then hold exactly what had been synced, as after losing the page cache.
//
// Environment:
//   FIELDSYNC_FAULT_DIR          the watched directory (absolute); unset: the shim does nothing
//   FIELDSYNC_FAULT_JOURNAL      where the journals go (outside the watched directory)
//   FIELDSYNC_FAULT_IGNORE_SYNC  1: syncs make nothing durable (a disk that ignores flushes);
//                                the negative control that proves a test can see loss
//   FIELDSYNC_FAULT_EXCLUDE      comma-separated file names not watched (default lock.mdb:
//                                LMDB's reader table, rebuilt on open and written through a
//                                shared mapping)
//   FIELDSYNC_FAULT_KILL_AFTER_WRITES  N > 0: the process kills itself (SIGKILL) right after
//                                its Nth write to a watched file that no sync has covered yet,
//                                so the power cut that follows is sure to undo something
//   FIELDSYNC_FAULT_SYNC_DELAY_MS  N > 0: every sync of a watched file waits N ms first (a
//                                slow card or disk), so most of a commit's time is spent with
//                                its writes not yet durable and a kill lands there
// Seen: write, pwrite, writev, pwritev(2) (and their 64 forms), ftruncate, truncate,
// fallocate, fsync, fdatasync, msync, sync, syncfs, called through the dynamic symbol table
// (what LMDB does). Not seen: writes through a writable shared mapping (LMDB's MDB_WRITEMAP,
// which fieldsync does not use), stdio's internal writes, renames and directory entries.
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "undo_journal.hpp"

namespace {

namespace fj = fieldsync::test::fault;

template <typename F>
F real(const char* name) {
  void* p = ::dlsym(RTLD_NEXT, name);
  if (!p) {
    std::fprintf(stderr, "fault_fs: no next %s\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(p);
}

#define REAL(name) static const auto real_##name = real<decltype(&::name)>(#name)

struct Config {
  bool active = false;
  bool ignore_sync = false;
  std::string dir;  // with a trailing '/'
  std::string journal_dir;
  std::vector<std::string> exclude;
  unsigned long kill_after_writes = 0;  // 0: never
  unsigned long sync_delay_ms = 0;      // 0: none
};

const Config& config() {
  static const Config c = [] {
    Config k;
    const char* d = std::getenv("FIELDSYNC_FAULT_DIR");
    const char* j = std::getenv("FIELDSYNC_FAULT_JOURNAL");
    if (!d || !*d || !j || !*j) return k;
    char buf[PATH_MAX];
    k.dir = ::realpath(d, buf) ? buf : d;
    if (k.dir.back() != '/') k.dir += '/';
    k.journal_dir = j;
    const char* ig = std::getenv("FIELDSYNC_FAULT_IGNORE_SYNC");
    k.ignore_sync = ig && std::strcmp(ig, "1") == 0;
    const char* ex = std::getenv("FIELDSYNC_FAULT_EXCLUDE");
    std::string list = ex ? ex : "lock.mdb";
    std::size_t at = 0;
    while (at <= list.size()) {
      std::size_t comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      if (comma > at) k.exclude.push_back(list.substr(at, comma - at));
      at = comma + 1;
    }
    if (const char* ka = std::getenv("FIELDSYNC_FAULT_KILL_AFTER_WRITES"))
      k.kill_after_writes = std::strtoul(ka, nullptr, 10);
    if (const char* sd = std::getenv("FIELDSYNC_FAULT_SYNC_DELAY_MS"))
      k.sync_delay_ms = std::strtoul(sd, nullptr, 10);
    k.active = true;
    return k;
  }();
  return c;
}

struct Watched {
  bool watched = false;
  int journal = -1;  // O_APPEND descriptor of its journal
  int reader = -1;   // the file opened for reading: a writer's descriptor may be O_WRONLY
};

std::mutex g_mu;
std::map<std::pair<dev_t, ino_t>, Watched> g_files;  // guarded by g_mu
unsigned long g_writes = 0;                          // watched, not durable; guarded by g_mu

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fault_fs: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

// Raw syscalls for the journal itself, so that the shim never sees its own writes.
void journal_append(int jfd, const std::string& rec) {
  std::size_t done = 0;
  while (done < rec.size()) {
    long n = ::syscall(SYS_write, jfd, rec.data() + done, rec.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("journal write");
    done += static_cast<std::size_t>(n);
  }
}

// The journal entry of fd's file when the file is watched (call with g_mu held).
Watched* lookup(int fd, struct stat* st) {
  if (!config().active || ::fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return nullptr;
  auto key = std::make_pair(st->st_dev, st->st_ino);
  auto it = g_files.find(key);
  if (it == g_files.end()) {
    Watched w;
    char link[64], path[PATH_MAX];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(link, path, sizeof path - 1);
    if (n > 0) {
      std::string p(path, static_cast<std::size_t>(n));
      const auto& c = config();
      std::string base = p.substr(p.rfind('/') + 1);
      bool excluded = false;
      for (const auto& e : c.exclude) excluded = excluded || base == e;
      if (p.compare(0, c.dir.size(), c.dir) == 0 && !excluded) {
        std::string j = c.journal_dir + "/" + fj::hex_encode(p) + fj::kJournalSuffix;
        w.journal = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, j.c_str(),
                                               O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        if (w.journal < 0) die(j.c_str());
        w.reader =
            static_cast<int>(::syscall(SYS_openat, AT_FDCWD, p.c_str(), O_RDONLY | O_CLOEXEC));
        if (w.reader < 0) die(p.c_str());
        w.watched = true;
      }
    }
    it = g_files.emplace(key, w).first;
  }
  return it->second.watched ? &it->second : nullptr;
}

bool fd_is_dsync(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_DSYNC) != 0;
}

std::uint64_t position(int fd, const struct stat& st) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_APPEND)) return static_cast<std::uint64_t>(st.st_size);
  off_t at = ::lseek(fd, 0, SEEK_CUR);
  return at < 0 ? 0 : static_cast<std::uint64_t>(at);
}

// Journals the pre-image of [off, off + len) of a watched file.
void record_write(const Watched& w, const struct stat& st, std::uint64_t off, std::uint64_t len) {
  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  std::uint64_t pre = off < size ? std::min(len, size - off) : 0;
  std::string bytes(pre, '\0');
  std::uint64_t got = 0;
  while (got < pre) {
    long n = ::syscall(SYS_pread64, w.reader, bytes.data() + got, pre - got, off + got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("pre-image read");
    got += static_cast<std::uint64_t>(n);
  }
  journal_append(w.journal, fj::encode_record('W', off, len, size, bytes.data(), bytes.size()));
}

void record_durable(const Watched& w, std::uint64_t off, ssize_t written) {
  if (written > 0 && !config().ignore_sync)
    journal_append(w.journal,
                   fj::encode_record('D', off, static_cast<std::uint64_t>(written), 0, nullptr, 0));
}

void clear_journal(const Watched& w) {
  if (config().ignore_sync) return;
  if (::syscall(SYS_ftruncate, w.journal, 0) != 0) die("journal truncate");
}

std::uint64_t iov_len(const struct iovec* iov, int n) {
  std::uint64_t t = 0;
  for (int i = 0; i < n; ++i) t += iov[i].iov_len;
  return t;
}

// Whether fd is a regular file (only those can be watched); checked before taking g_mu, so
// that writes to sockets and pipes never wait for it.
bool regular_file(int fd) {
  struct stat st;
  return config().active && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

// One write of `len` bytes at `off` (or at the file position when off < 0). For a watched file
// the journal entry and the write happen under g_mu, in the order of the writes.
template <typename Write>
ssize_t guarded_write(int fd, std::int64_t off, std::uint64_t len, bool dsync_flag, Write&& wr) {
  if (!regular_file(fd)) return wr();
  std::unique_lock lock(g_mu);
  struct stat st;
  Watched* w = lookup(fd, &st);
  if (!w) {
    lock.unlock();
    return wr();
  }
  const std::uint64_t at = off >= 0 ? static_cast<std::uint64_t>(off) : position(fd, st);
  record_write(*w, st, at, len);
  const bool dsync = dsync_flag || fd_is_dsync(fd);
  ssize_t r = wr();
  if (dsync) {
    record_durable(*w, at, r);
  } else if (r > 0 && config().kill_after_writes && ++g_writes >= config().kill_after_writes) {
    ::kill(::getpid(), SIGKILL);  // the write is in the journal and not synced
  }
  return r;
}

void record_resize(int fd, std::uint64_t new_size) {
  struct stat st;
  Watched* w = lookup(fd, &st);
  if (!w) return;
  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  std::string tail;
  if (new_size < size) {
    tail.assign(size - new_size, '\0');
    std::uint64_t got = 0;
    while (got < tail.size()) {
      long n =
          ::syscall(SYS_pread64, w->reader, tail.data() + got, tail.size() - got, new_size + got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("pre-image read");
      got += static_cast<std::uint64_t>(n);
    }
  }
  journal_append(w->journal, fj::encode_record('T', new_size, 0, size, tail.data(), tail.size()));
}

bool watched(int fd) {
  std::lock_guard lock(g_mu);
  struct stat st;
  return lookup(fd, &st) != nullptr;
}

// A sync of fd's file: for a watched file the sync and the emptying of its journal happen
// under g_mu, so that no write of another thread slips between them.
template <typename Sync>
int guarded_sync(int fd, Sync&& sync) {
  if (!regular_file(fd)) return sync();
  if (config().sync_delay_ms > 0 && watched(fd)) {  // a slow disk: waits outside g_mu
    struct timespec ts {
      static_cast<time_t>(config().sync_delay_ms / 1000),
          static_cast<long>(config().sync_delay_ms % 1000) * 1000000L
    };
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  std::unique_lock lock(g_mu);
  struct stat st;
  Watched* w = lookup(fd, &st);
  if (!w) {
    lock.unlock();
    return sync();
  }
  int r = sync();
  if (r == 0) clear_journal(*w);
  return r;
}

// sync()/syncfs(): every watched file is synced (call with g_mu held).
void synced_all() {
  for (auto& [key, w] : g_files)
    if (w.watched) clear_journal(w);
}

// The file mapped at addr, opened read-only so that guarded_sync() can find its journal.
int fd_of_mapping(const void* addr) {
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return -1;
  char line[PATH_MAX + 128];
  int fd = -1;
  const auto a = reinterpret_cast<unsigned long>(addr);
  while (fd < 0 && std::fgets(line, sizeof line, maps)) {
    unsigned long lo = 0, hi = 0;
    int path_at = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) < 2) continue;
    if (a < lo || a >= hi || path_at <= 0 || line[path_at] != '/') continue;
    std::string p(line + path_at);
    while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
    fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, p.c_str(), O_RDONLY | O_CLOEXEC));
  }
  std::fclose(maps);
  return fd;
}

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write);
  return guarded_write(fd, -1, n, false, [&] { return real_write(fd, buf, n); });
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite);
  return guarded_write(fd, off, n, false, [&] { return real_pwrite(fd, buf, n, off); });
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  REAL(pwrite64);
  return guarded_write(fd, off, n, false, [&] { return real_pwrite64(fd, buf, n, off); });
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  REAL(writev);
  return guarded_write(fd, -1, iov_len(iov, cnt), false, [&] { return real_writev(fd, iov, cnt); });
}

ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
  REAL(pwritev);
  return guarded_write(fd, off, iov_len(iov, cnt), false,
                       [&] { return real_pwritev(fd, iov, cnt, off); });
}

ssize_t pwritev64(int fd, const struct iovec* iov, int cnt, off64_t off) {
  REAL(pwritev64);
  return guarded_write(fd, off, iov_len(iov, cnt), false,
                       [&] { return real_pwritev64(fd, iov, cnt, off); });
}

ssize_t pwritev2(int fd, const struct iovec* iov, int cnt, off_t off, int flags) {
  REAL(pwritev2);
  return guarded_write(fd, off, iov_len(iov, cnt), (flags & (RWF_DSYNC | RWF_SYNC)) != 0,
                       [&] { return real_pwritev2(fd, iov, cnt, off, flags); });
}

ssize_t pwritev64v2(int fd, const struct iovec* iov, int cnt, off64_t off, int flags) {
  REAL(pwritev64v2);
  return guarded_write(fd, off, iov_len(iov, cnt), (flags & (RWF_DSYNC | RWF_SYNC)) != 0,
                       [&] { return real_pwritev64v2(fd, iov, cnt, off, flags); });
}

int ftruncate(int fd, off_t len) __THROW {
  REAL(ftruncate);
  if (len >= 0 && regular_file(fd)) {
    std::lock_guard lock(g_mu);
    record_resize(fd, static_cast<std::uint64_t>(len));
    return real_ftruncate(fd, len);
  }
  return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) __THROW { return ftruncate(fd, static_cast<off_t>(len)); }

int truncate(const char* path, off_t len) __THROW {
  int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC));
  if (fd < 0) return -1;
  int r = ftruncate(fd, len);
  int e = errno;
  ::close(fd);
  errno = e;
  return r;
}

int truncate64(const char* path, off64_t len) __THROW {
  return truncate(path, static_cast<off_t>(len));
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  REAL(fallocate);
  if (!(mode & FALLOC_FL_KEEP_SIZE) && regular_file(fd)) {
    std::lock_guard lock(g_mu);
    struct stat st;
    if (lookup(fd, &st) && off + len > st.st_size)
      record_resize(fd, static_cast<std::uint64_t>(off + len));
    return real_fallocate(fd, mode, off, len);
  }
  return real_fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len) {
  return fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len));
}

int fsync(int fd) {
  REAL(fsync);
  return guarded_sync(fd, [&] { return real_fsync(fd); });
}

int fdatasync(int fd) {
  REAL(fdatasync);
  return guarded_sync(fd, [&] { return real_fdatasync(fd); });
}

int msync(void* addr, size_t len, int flags) {
  REAL(msync);
  int fd = (flags & MS_SYNC) && config().active ? fd_of_mapping(addr) : -1;
  if (fd < 0) return real_msync(addr, len, flags);
  int r = guarded_sync(fd, [&] { return real_msync(addr, len, flags); });
  int e = errno;
  ::close(fd);
  errno = e;
  return r;
}

void sync() __THROW {
  REAL(sync);
  if (!config().active) return real_sync();
  std::lock_guard lock(g_mu);
  real_sync();
  synced_all();
}

int syncfs(int fd) __THROW {
  REAL(syncfs);
  if (!config().active) return real_syncfs(fd);
  std::lock_guard lock(g_mu);
  int r = real_syncfs(fd);
  if (r == 0) synced_all();
  return r;
}

}  // extern "C"
