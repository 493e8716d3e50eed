// syncctl members | invite | revoke | leave | verify: project membership (docs/api.md
// "Members, invites and verification").
#include <ostream>

#include <boost/json/object.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

// "90", "90s", "30m", "1h", "7d" -> seconds; nullopt when malformed.
std::optional<long long> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = text.substr(used);
  long long mult = unit.empty() || unit == "s" ? 1
                   : unit == "m"               ? 60
                   : unit == "h"               ? 3600
                   : unit == "d"               ? 86400
                                               : 0;
  if (!mult || n <= 0) return std::nullopt;
  return n * mult;
}

int run_members(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("members");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "members needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/members", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : v.at("members").as_array())
    rows.push_back(
        {str(m.at("short_id")), str(m.at("role")), str(m.at("name")), str(m.at("device_id"))});
  print_table(ctx.out, {"DEVICE", "ROLE", "NAME", "DEVICE ID"}, rows);
  return kOk;
}

int run_invite(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("invite");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "invite needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  std::string body = "{\"role\":" + ipc::json_quote(args->value("role").value_or("member"));
  if (auto e = args->value("expires")) {
    auto secs = parse_duration(*e);
    if (!secs) return usage_error(ctx, self, "--expires: use e.g. 90s, 30m, 1h or 7d");
    body += ",\"expires_in_s\":" + std::to_string(*secs);
  }
  body += "}";
  boost::json::value v;
  if (int rc = ctx.call("POST", "/v1/projects/" + pid + "/invites", body, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << str(v.at("code")) << "\n";
  ctx.err << "single use, role " << str(v.at("role"))
          << "; on the new device run: syncctl join <code>\n";
  return kOk;
}

int run_revoke(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("revoke");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 2)
    return usage_error(ctx, self, "revoke needs a PROJECT and a DEVICE id");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::value v;
  if (int rc =
          ctx.call("DELETE", "/v1/projects/" + pid + "/members/" + args->positional()[1], {}, v))
    return rc;
  if (ctx.json)
    ctx.print_json(v);
  else
    ctx.out << "removed " << str(v.at("short_id")) << " (versions after its log seq "
            << str(v.at("max_seq")) << " are ignored); the removal spreads by sync\n";
  return kOk;
}

int run_leave(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("leave");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "leave needs a PROJECT");
  if (!args->flag("yes"))
    return usage_error(ctx, self, "leave deletes the project's data on this device: add --yes");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::value v;
  if (int rc = ctx.call("POST", "/v1/projects/" + pid + "/leave", {}, v)) return rc;
  if (ctx.json)
    ctx.print_json(v);
  else
    ctx.out << "left project " << pid << "; its data on this device is deleted\n";
  return kOk;
}

int run_verify(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("verify");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "verify needs a DEVICE id");
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/verification/" + args->positional()[0], {}, v)) return rc;
  if (ctx.json)
    ctx.print_json(v);
  else
    ctx.out << str(v.at("code")) << "\n"
            << "compare with what `syncctl verify` shows on the other device; trust it only if "
               "they match\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{
    "members", "members PROJECT", "list a project's devices and roles", run_members, {}});
FIELDSYNC_CLI_COMMAND(Command{
    "invite",
    "invite PROJECT [--role member|coordinator] [--expires 1h]",
    "print a single-use invite code for a new device",
    run_invite,
    {{"role", "member|coordinator", "the new device's role (default member)"},
     {"expires", "DURATION", "how long the code is valid, e.g. 30m, 1h, 2d"}}});
FIELDSYNC_CLI_COMMAND(Command{"revoke",
                              "revoke PROJECT DEVICE",
                              "remove a device from a project (coordinators)",
                              run_revoke,
                              {}});
FIELDSYNC_CLI_COMMAND(Command{
    "leave",
    "leave PROJECT --yes",
    "leave a project and delete its data here",
    run_leave,
    {{"yes", "", "confirm: the project's data on this device is deleted"}}});
FIELDSYNC_CLI_COMMAND(Command{"verify",
                              "verify DEVICE",
                              "show the code to compare before trusting a device",
                              run_verify,
                              {}});

}  // namespace
}  // namespace fieldsync::cli
