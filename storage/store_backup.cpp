// Store::open_backup: a consistent hot backup of a running store, read as files
// (BackupReader in types.hpp; docs/operations.md "Backup and restore").
//
// The database is copied by mdb_env_copyfd2 (compacted, one read transaction) into a pipe on a
// thread of the reader's own, so neither the copy nor a whole file is ever held in memory or
// written to disk here: the reader takes it from the pipe as it is asked for pieces. Closing
// the pipe's reading end (the reader destroyed early) makes the copy fail with EPIPE and the
// thread end; the destructor joins it.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "storage/store_impl.hpp"

namespace fieldsync::storage {
namespace fs = std::filesystem;

namespace {

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The blob files under `root` (`<xx>/<64 hex>` whose name starts with <xx>), sorted; uploads
// in progress (incoming/) and partial downloads (partial/) are left out.
std::vector<std::string> blob_files(const fs::path& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(root, ec)) {
    const std::string d = dir.path().filename().string();
    if (d.size() != 2 || !is_hex(d) || !dir.is_directory(ec)) continue;
    std::error_code ec2;
    for (const auto& f : fs::directory_iterator(dir.path(), ec2)) {
      const std::string n = f.path().filename().string();
      if (n.size() != 64 || !is_hex(n) || n.compare(0, 2, d) != 0 || !f.is_regular_file(ec2))
        continue;
      out.push_back("blobs/" + d + "/" + n);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

class BackupReaderImpl final : public BackupReader {
 public:
  BackupReaderImpl(const LmdbEnv& env, fs::path data_dir, DeviceId device)
      : env_(env), dir_(std::move(data_dir)), device_(device) {}

  ~BackupReaderImpl() override {
    close_fd();
    if (copier_.joinable()) copier_.join();
  }

  // The keys are taken now, as they are (the daemon renews its identity only by reopening the
  // store, which ends every backup in progress first).
  void add_small(std::string path, std::string content) {
    small_.emplace_back(std::move(path), std::move(content));
  }

  Result<std::optional<std::string>> next_file() override {
    close_fd();
    ++index_;
    if (index_ < small_.size()) {
      at_ = 0;
      return std::optional<std::string>(small_[index_].first);
    }
    if (index_ == small_.size()) return start_copy();
    if (index_ == small_.size() + 1) {
      if (copier_.joinable()) copier_.join();  // the copy was read to its end, or failed
      blobs_ = blob_files(dir_ / "blobs");
    }
    // A blob removed since it was listed (gc) is left out.
    while (true) {
      std::size_t b = index_ - small_.size() - 1;
      if (b >= blobs_.size()) return std::optional<std::string>();
      const fs::path path = dir_ / blobs_[b];
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd_ >= 0) return std::optional<std::string>(blobs_[b]);
      if (errno != ENOENT)
        return make_error(Errc::internal,
                          "cannot read " + path.string() + ": " + std::strerror(errno));
      ++index_;
    }
  }

  Result<Bytes> read(std::size_t max) override {
    if (index_ < small_.size()) {
      const std::string& s = small_[index_].second;
      std::size_t n = std::min(max, s.size() - at_);
      Bytes out(s.begin() + static_cast<std::ptrdiff_t>(at_),
                s.begin() + static_cast<std::ptrdiff_t>(at_ + n));
      at_ += n;
      return out;
    }
    if (fd_ < 0) return Bytes{};
    Bytes out(max);
    std::size_t have = 0;
    while (have < max) {
      ssize_t n = ::read(fd_, out.data() + have, max - have);
      if (n < 0) {
        if (errno == EINTR) continue;
        return make_error(Errc::internal,
                          std::string("reading the backup: ") + std::strerror(errno));
      }
      if (n == 0) break;
      have += static_cast<std::size_t>(n);
    }
    out.resize(have);
    if (index_ == small_.size()) {
      db_bytes_ += have;
      if (have < max) {  // the end of the pipe: the copy is over, did it succeed?
        close_fd();
        copier_.join();
        if (!copy_status_) return copy_status_.error();
      }
    }
    return out;
  }

  const DeviceId& device() const override { return device_; }
  std::uint64_t db_bytes() const override { return db_bytes_; }

 private:
  Result<std::optional<std::string>> start_copy() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      return make_error(Errc::internal, std::string("pipe: ") + std::strerror(errno));
    fd_ = fds[0];
    const int wfd = fds[1];
    try {
      copier_ = std::thread([this, wfd] {
        // A reader that went away closes the pipe: the copy sees EPIPE, not a signal.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        copy_status_ = env_.copy_to_fd(wfd);
        ::close(wfd);
      });
    } catch (const std::system_error& e) {
      ::close(wfd);
      close_fd();
      return make_error(Errc::internal, std::string("cannot start the database copy: ") + e.what());
    }
    return std::optional<std::string>("db/data.mdb");
  }

  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  const LmdbEnv& env_;
  const fs::path dir_;
  const DeviceId device_;
  std::vector<std::pair<std::string, std::string>> small_;  // path, content
  std::size_t index_ = static_cast<std::size_t>(-1);        // the current file
  std::size_t at_ = 0;                                      // read so far of a small file
  int fd_ = -1;                                             // the pipe, or a blob file
  std::thread copier_;
  Status copy_status_;  // written by copier_, read after joining it
  std::uint64_t db_bytes_ = 0;
  std::vector<std::string> blobs_;
};

}  // namespace

Result<std::unique_ptr<BackupReader>> Store::open_backup() const {
  auto r = std::make_unique<BackupReaderImpl>(*impl_->env, impl_->opts.data_dir, impl_->me());
  r->add_small("RESTORED",
               "this directory is a backup of fieldsync device " + impl_->me().str() + "\n");
  r->add_small("device.key", impl_->key->private_pem());
  for (const auto& k : impl_->retired)
    r->add_small("retired/" + k.device_id().str() + ".key", k.private_pem());
  return std::unique_ptr<BackupReader>(std::move(r));
}

}  // namespace fieldsync::storage
