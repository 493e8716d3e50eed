// syncctl status
#include <filesystem>
#include <ostream>

#include <boost/json/serialize.hpp>

#include <boost/json/object.hpp>

#include "cli/command.hpp"

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

int run_backup(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("backup");
  if (argv.size() != 1) return usage_error(ctx, self, "backup takes one directory");
  std::error_code ec;
  auto dest = std::filesystem::absolute(argv[0], ec);
  if (ec) return usage_error(ctx, self, "bad directory " + argv[0]);
  boost::json::object req;
  req["path"] = dest.lexically_normal().string();
  boost::json::value v;
  if (int rc = ctx.call("POST", "/v1/backup", boost::json::serialize(req), v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  ctx.out
      << "backup of device " << str(o.at("device_id")) << " in " << str(o.at("path")) << " ("
      << str(o.at("bytes")) << " bytes of data)\n"
      << "It holds the device key: keep it as safe as the device. To restore: stop fieldsyncd,\n"
      << "replace the data directory with a copy of this directory, start fieldsyncd; the\n"
      << "restored device continues under a new identity and gets back from its peers what it\n"
      << "wrote after this backup.\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"status", "status",
                              "device id, version, uptime, projects, API endpoints", run_status});
FIELDSYNC_CLI_COMMAND(Command{
    "backup", "backup <dir>",
    "consistent copy of this device's data and keys into <dir> (new or empty)", run_backup});

}  // namespace
}  // namespace fieldsync::cli
