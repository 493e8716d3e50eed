// syncctl status
#include <ostream>

#include <boost/json/object.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

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
  ctx.out << "device       " << str(o.at("device_id_short")) << "  (" << str(o.at("device_name")) << ")\n"
          << "device id    " << str(o.at("device_id")) << "\n"
          << "version      " << str(o.at("version")) << "\n"
          << "uptime       " << str(o.at("uptime_s")) << " s\n"
          << "projects     " << str(o.at("projects")) << "\n"
          << "api socket   " << str(api.at("socket")) << "\n"
          << "api http     "
          << (http.at("enabled").as_bool() ? str(http.at("address")) + ":" + str(http.at("port")) : "disabled")
          << "\n";
  if (auto* peers = o.if_contains("peers"); peers && peers->is_object() && !peers->as_object().empty())
    ctx.out << "peers        " << str(*peers) << "\n";
  if (auto* disc = o.if_contains("discovery"); disc && disc->is_object())
    ctx.out << "discovery    " << str(*disc) << "\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"status", "status", "device id, version, uptime, projects, API endpoints", run_status});

}  // namespace
}  // namespace fieldsync::cli
