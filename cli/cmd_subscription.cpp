// syncctl subscription PROJECT [JSON|-|@FILE|everything] [--for DEVICE]
// What this device wants of a project (docs/api.md "Subscriptions"): shows it (and the
// selections it gives peers), or sets it and says what left the device; with --for, the most
// this device gives one peer of the project.
#include <ostream>

#include <boost/json/value.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

const char* kUsage = "subscription PROJECT [JSON|-|@FILE|everything] [--for DEVICE]";

// `value` is "everything" (DELETE: no restriction) or a subscription's JSON (PUT).
int put_or_clear(CliContext& ctx, const Command& self, const std::string& target,
                 const std::string& value, boost::json::value& v) {
  if (value == "everything") return ctx.call("DELETE", target, "", v);
  auto body = read_json_arg(value);
  if (!body) return usage_error(ctx, self, body.error().message);
  return ctx.call("PUT", target, *body, v);
}

int run_selection(CliContext& ctx, const Command& self, const std::string& pid,
                  const std::string& device, const std::vector<std::string>& pos) {
  if (pos.size() != 2) return usage_error(ctx, self, "--for takes what to give the peer");
  const std::string target = "/v1/projects/" + pid + "/selections/" + url_encode(device);
  boost::json::value v;
  if (int rc = put_or_clear(ctx, self, target, pos[1], v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  ctx.out << "gives " << str(o.at("device")) << ": "
          << (o.at("everything").as_bool() ? std::string("whatever it wants")
                                           : json_text(o.at("selection")))
          << "\n";
  return kOk;
}

int run_subscription(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("subscription");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.size() != 1 && pos.size() != 2)
    return usage_error(ctx, self, "subscription takes PROJECT and optionally what to want");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[0], pid)) return rc;
  if (auto device = args->value("for")) return run_selection(ctx, self, pid, *device, pos);
  const std::string target = "/v1/projects/" + pid + "/subscription";
  boost::json::value v;
  if (int rc = pos.size() == 1 ? ctx.call("GET", target, "", v)
                               : put_or_clear(ctx, self, target, pos[1], v))
    return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  ctx.out << "wants: "
          << (o.at("everything").as_bool() ? std::string("everything")
                                           : json_text(o.at("subscription")))
          << "\n";
  if (o.contains("documents_removed")) {
    ctx.out << "documents that left this device: " << json_text(o.at("documents_removed")) << "\n";
    if (o.at("documents_kept").as_int64() > 0)
      ctx.out << "kept until delivered (written here): " << json_text(o.at("documents_kept"))
              << "\n";
    if (o.at("asks_again").as_bool())
      ctx.out << "documents left out before are asked for again at the next sync\n";
  } else {
    boost::json::value sels;
    if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/selections", "", sels)) return rc;
    std::vector<std::vector<std::string>> rows;
    for (const auto& [device, sel] : sels.at("selections").as_object())
      rows.push_back({std::string(device), json_text(sel)});
    if (!rows.empty()) print_table(ctx.out, {"GIVES PEER", "ONLY"}, rows);
  }
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{
    "subscription",
    kUsage,
    "what this device wants of a project: collections and a filter on fields (or everything)",
    run_subscription,
    {{"for", "DEVICE",
      "set or show the selection for DEVICE instead of this device's subscription"}}});

}  // namespace
}  // namespace fieldsync::cli
