// syncctl status
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <set>

#include <boost/json/serialize.hpp>

#include <boost/json/object.hpp>

#include "cli/command.hpp"
#include "ipc/backup_archive.hpp"

namespace fieldsync::cli {
namespace {

// "mirror       current: PostgreSQL has every change (dbname=...)", then a line per project
// that is behind or not mirrored, and the last error while retrying.
void print_mirror(CliContext& ctx, const boost::json::object& m) {
  if (!m.at("enabled").as_bool()) return;
  ctx.out << "mirror       " << str(m.at("state")) << ": " << str(m.at("message"));
  if (auto* db = m.if_contains("database")) ctx.out << " (" << str(*db) << ")";
  ctx.out << "\n";
  if (auto* err = m.if_contains("last_error");
      err && err->is_object() && str(m.at("state")) == "retrying")
    ctx.out << "             last error: " << str(err->as_object().at("message")) << "\n";
  if (auto* ps = m.if_contains("projects"); ps && ps->is_array())
    for (const auto& p : ps->as_array()) {
      const auto& po = p.as_object();
      if (po.at("problem").is_string())
        ctx.out << "             project " << str(po.at("project"))
                << " not mirrored: " << str(po.at("problem")) << "\n";
      else if (po.at("behind").to_number<std::uint64_t>() > 0)
        ctx.out << "             project " << str(po.at("project")) << ": " << str(po.at("behind"))
                << " changes not yet in PostgreSQL\n";
    }
}

// "bluetooth    running on hci0: advertising, scanning, 1 device seen, 0 links", or why it
// is idle: "bluetooth    no adapter hci0: BlueZ has no adapter hci0" (GET /v1/status "ble").
void print_ble(CliContext& ctx, const boost::json::object& b) {
  const auto* enabled = b.if_contains("enabled");
  if (!enabled || !enabled->is_bool() || !enabled->as_bool()) {
    ctx.out << "bluetooth    off";
    if (const auto* m = b.if_contains("message"); m && m->is_string() && !m->as_string().empty())
      ctx.out << ": " << str(*m);
    ctx.out << "\n";
    return;
  }
  const std::string state = str(b.at("state"));
  const std::string adapter = b.if_contains("adapter") ? str(b.at("adapter")) : std::string();
  const std::string message = b.if_contains("message") ? str(b.at("message")) : std::string();
  auto flag = [&](const char* key) {
    const auto* v = b.if_contains(key);
    return v && v->is_bool() && v->as_bool();
  };
  ctx.out << "bluetooth    ";
  if (state == "running") {
    ctx.out << "running on " << adapter << ": "
            << (flag("advertising") ? "advertising" : "not advertising") << ", "
            << (flag("scanning") ? "scanning" : "not scanning");
    if (!flag("gatt_registered")) ctx.out << ", GATT service not registered";
    if (const auto* n = b.if_contains("devices"))
      ctx.out << ", " << str(*n) << (str(*n) == "1" ? " device" : " devices") << " seen";
    if (const auto* n = b.if_contains("links"))
      ctx.out << ", " << str(*n) << (str(*n) == "1" ? " link" : " links");
    ctx.out << "\n";
    return;
  }
  if (state == "no_bus")
    ctx.out << "no system bus";
  else if (state == "no_adapter")
    ctx.out << "no adapter " << adapter;
  else if (state == "powered_off")
    ctx.out << "adapter " << adapter << " powered off";
  else
    ctx.out << state;
  if (!message.empty()) ctx.out << ": " << message;
  ctx.out << "\n";
}

int run_status(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("status");
  if (!argv.empty()) return usage_error(ctx, self, "status takes no arguments");
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/status", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  const auto& api = o.at("api").as_object();
  const auto& http = api.at("http").as_object();
  ctx.out << "device       " << str(o.at("device_id_short")) << "  (" << str(o.at("device_name"))
          << ")\n"
          << "device id    " << str(o.at("device_id")) << "\n"
          << "version      " << str(o.at("version")) << "\n"
          << "uptime       " << str(o.at("uptime_s")) << " s\n"
          << "projects     " << str(o.at("projects")) << "\n"
          << "api socket   " << str(api.at("socket")) << "\n"
          << "api http     "
          << (http.at("enabled").as_bool() ? str(http.at("address")) + ":" + str(http.at("port"))
                                           : "disabled")
          << "\n";
  if (auto* peers = o.if_contains("peers");
      peers && peers->is_object() && !peers->as_object().empty()) {
    ctx.out << "peers        " << str(*peers) << "\n";
    // Each peer with something to explain (GET /v1/peers "reason"): why it is not syncing.
    boost::json::value list;
    if (const auto* on = peers->as_object().if_contains("enabled");
        on && on->is_bool() && on->as_bool() && ctx.call("GET", "/v1/peers", {}, list) == kOk)
      for (const auto& pv : list.at("peers").as_array()) {
        const auto& p = pv.as_object();
        const auto* r = p.if_contains("reason");
        if (!r || !r->is_object()) continue;
        ctx.out << "peer         " << str(p.at("short_id")) << " (" << str(p.at("name")) << ") "
                << str(p.at("state")) << ": " << str(r->at("message")) << "\n";
      }
  }
  if (auto* disc = o.if_contains("discovery"); disc && disc->is_object())
    ctx.out << "discovery    " << str(*disc) << "\n";
  if (auto* b = o.if_contains("ble"); b && b->is_object()) print_ble(ctx, b->as_object());
  if (auto* m = o.if_contains("mirror"); m && m->is_object()) print_mirror(ctx, m->as_object());
  if (auto* id = o.if_contains("identity"); id && id->is_object()) {
    const auto& io = id->as_object();
    if (auto* from = io.if_contains("renewed_from"))
      ctx.out << "identity     renewed from " << str(*from) << " ("
              << (io.if_contains("reason") ? str(io.at("reason")) : std::string()) << ")\n";
  }
  if (auto* forks = o.if_contains("diverged_logs"); forks && forks->is_array()) {
    for (const auto& f : forks->as_array()) {
      const auto& fo = f.as_object();
      ctx.out << "diverged     device " << str(fo.at("device")) << " in project "
              << str(fo.at("project")) << " from seq " << str(fo.at("seq"))
              << (fo.if_contains("successor")
                      ? ": repaired, its writes are re-published by " + str(fo.at("successor"))
                      : ": waiting for that device to reconnect (its other data keeps syncing)")
              << "\n";
    }
  }
  return kOk;
}

// syncctl backup DIR: GET /v1/backup (docs/api.md "Backup") written into DIR by syncctl (as
// the user who runs it), never by the daemon. The archive is checked as it arrives and
// written into DIR.partial (0700, files 0600), which becomes DIR only once the archive is
// complete and its trailer matched; after any failure DIR.partial is removed and DIR is left
// as it was, so a directory named DIR is always a whole backup.
class BackupDir {
 public:
  explicit BackupDir(std::filesystem::path root) : root_(std::move(root)) {}
  ~BackupDir() { close_file(); }

  Status begin(const std::string& rel) {
    close_file();
    std::filesystem::path path = root_ / rel;
    // Parent directories: only the archive's own (db/, retired/, blobs/xx/), 0700.
    std::filesystem::path dir = root_;
    const std::filesystem::path relp(rel);
    for (auto it = relp.begin(); std::next(it) != relp.end(); ++it) {
      dir /= *it;
      if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("create", dir);
      struct stat st {};
      if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return make_error(Errc::internal, dir.string() + " is not a directory");
      if (::chmod(dir.c_str(), 0700) != 0) return sys_error("set the mode of", dir);
      dirs_.insert(dir);
    }
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0) return sys_error("create", path);
    if (::fchmod(fd_, 0600) != 0) return sys_error("set the mode of", path);
    path_ = path;
    return {};
  }
  Status data(fieldsync::ByteView piece) {
    const auto* p = reinterpret_cast<const char*>(piece.data());
    std::size_t left = piece.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_error("write", path_);
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    return {};
  }
  Status end() {
    if (::fsync(fd_) != 0) return sys_error("write to disk", path_);
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return sys_error("write", path_);
    return {};
  }
  // The directories' entries reach the disk too.
  void sync_dirs() {
    dirs_.insert(root_);
    for (const auto& d : dirs_) {
      int dfd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
      }
    }
  }

 private:
  static Error sys_error(const std::string& what, const std::filesystem::path& p) {
    int e = errno;
    return make_error(
        e == ENOSPC || e == EDQUOT || e == EFBIG ? Errc::resource_exhausted : Errc::internal,
        "cannot " + what + " " + p.string() + ": " + std::strerror(e));
  }
  void close_file() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::filesystem::path root_, path_;
  std::set<std::filesystem::path> dirs_;
  int fd_ = -1;
};

int local_error(CliContext& ctx, const std::string& message) {
  ctx.err << "syncctl: " << message << "\n";
  return kDaemonError;
}

int run_backup(CliContext& ctx, const std::vector<std::string>& argv) {
  namespace fs = std::filesystem;
  const auto& self = find_command("backup");
  if (argv.size() != 1) return usage_error(ctx, self, "backup takes one directory");
  std::error_code ec;
  fs::path dest = fs::absolute(argv[0], ec).lexically_normal();
  if (ec || dest.filename().empty()) dest = dest.parent_path();
  if (ec || dest.empty() || dest == dest.root_path())
    return usage_error(ctx, self, "bad directory " + argv[0]);
  struct stat st {};
  if (::lstat(dest.c_str(), &st) == 0 && (!S_ISDIR(st.st_mode) || !fs::is_empty(dest, ec) || ec))
    return local_error(ctx, dest.string() + " exists and is not an empty directory");
  fs::path partial = dest;
  partial += ".partial";
  if (::mkdir(partial.c_str(), 0700) != 0) {
    if (errno == EEXIST)
      return local_error(
          ctx, partial.string() + " exists (left by an interrupted backup?): remove it first");
    return local_error(ctx, "cannot create " + partial.string() + ": " + std::strerror(errno));
  }
  auto discard = [&](const std::string& why) {
    fs::remove_all(partial, ec);
    return why + "; removed " + partial.string() + ", nothing was written to " + dest.string();
  };
  if (::chmod(partial.c_str(), 0700) != 0) return local_error(ctx, discard("cannot set its mode"));

  std::uint64_t db_bytes = 0;
  std::string current;
  int rc = kOk;
  {
    BackupDir out(partial);
    ipc::BackupArchiveReader reader({
        [&](const std::string& path) -> Status {
          current = path;
          return out.begin(path);
        },
        [&](ByteView data) -> Status {
          if (current == "db/data.mdb") db_bytes += data.size();
          return out.data(data);
        },
        [&]() -> Status { return out.end(); },
    });
    auto r = ctx.http.download_to("GET", "/v1/backup", [&](std::string_view piece) {
      return reader.feed(
          ByteView(reinterpret_cast<const std::uint8_t*>(piece.data()), piece.size()));
    });
    if (r && r->status != 200) {
      fs::remove_all(partial, ec);
      boost::json::value v;
      return ctx.handle_reply(r, v);
    }
    Status done = r ? reader.finish() : Status(r.error());
    if (!done) {
      Error e = done.error();
      rc = e.code == Errc::unavailable || e.code == Errc::permission_denied ? kUnreachable
                                                                            : kDaemonError;
      ctx.err << "syncctl: backup failed: " << discard(e.message) << "\n";
      return rc;
    }
    out.sync_dirs();
    if (::rename(partial.c_str(), dest.c_str()) != 0)
      return local_error(ctx, discard("cannot rename " + partial.string() + " to " + dest.string() +
                                      ": " + std::strerror(errno)));
    int dfd = ::open(dest.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    std::string device;
    if (auto h = r->headers.find("x-fieldsync-device"); h != r->headers.end()) device = h->second;
    boost::json::object o;
    o["path"] = dest.string();
    o["device_id"] = device;
    o["files"] = reader.files();
    o["bytes"] = reader.file_bytes();
    o["db_bytes"] = db_bytes;
    if (ctx.json) {
      ctx.print_json(o);
      return kOk;
    }
    ctx.out
        << "backup of device " << str(o.at("device_id")) << " in " << str(o.at("path")) << " ("
        << reader.files() << " files, " << human_bytes(reader.file_bytes()) << ")\n"
        << "It holds the device key: keep it as safe as the device. To restore: stop fieldsyncd,\n"
        << "replace the data directory with a copy of this directory, start fieldsyncd; the\n"
        << "restored device continues under a new identity and gets back from its peers what it\n"
        << "wrote after this backup, as far as they had received it.\n";
  }
  return rc;
}

FIELDSYNC_CLI_COMMAND(Command{
    "status", "status", "device id, version, uptime, projects, API endpoints", run_status, {}});
FIELDSYNC_CLI_COMMAND(Command{
    "backup",
    "backup <dir>",
    "consistent copy of this device's data and keys, streamed into <dir> (new or empty)",
    run_backup,
    {}});

}  // namespace
}  // namespace fieldsync::cli
