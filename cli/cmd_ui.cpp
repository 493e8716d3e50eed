// syncctl ui: the status page's login link (docs/api.md "Status page").
#include <ostream>

#include <boost/json/value.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

int run_ui(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("ui");
  if (!argv.empty()) return usage_error(ctx, self, "ui takes no arguments");
  boost::json::value v;
  if (int rc = ctx.call("POST", "/v1/ui/login", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << str(v.at("url")) << "\n";
  ctx.err << "Open this link in a browser on this device; it works once, and only until it expires "
             "(api.ticket_ttl_ms, 60 s by default).\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"ui",
                              "ui",
                              "a one-time link to the status page (peers, progress, conflicts, "
                              "invites with QR codes) for a browser on this device",
                              run_ui,
                              {}});

}  // namespace
}  // namespace fieldsync::cli
