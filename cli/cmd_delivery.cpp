// syncctl destinations | delivery: a project's destinations (hubs) and what of this device's
// writes they hold (docs/api.md "Destinations and delivery").
#include <charconv>
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

void print_destinations(CliContext& ctx, const boost::json::array& list) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : list) {
    const auto& o = d.as_object();
    const auto& r = o.at("receipt");
    rows.push_back({str(o.at("short_id")), str(o.at("name")),
                    r.is_object() ? str(r.at("holds_of_this_device")) : "-",
                    r.is_object() ? utc_time(r.at("at_ms")) : "no receipt yet",
                    str(o.at("device_id"))});
  }
  print_table(ctx.out, {"DEVICE", "NAME", "HOLDS OF MINE", "RECEIPT", "DEVICE ID"}, rows);
}

int run_destinations(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("destinations");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.empty()) return usage_error(ctx, self, "destinations needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[0], pid)) return rc;
  boost::json::value v;
  if (pos.size() == 1) {
    if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/destinations", {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    if (v.at("destinations").as_array().empty())
      ctx.out << "no destinations (a coordinator names one: syncctl destinations " << pos[0]
              << " add DEVICE [NAME])\n";
    else
      print_destinations(ctx, v.at("destinations").as_array());
    return kOk;
  }
  if (pos[1] == "add" && (pos.size() == 3 || pos.size() == 4)) {
    boost::json::object body;
    if (pos.size() == 4) body["name"] = pos[3];
    if (int rc = ctx.call("PUT", "/v1/projects/" + pid + "/destinations/" + url_encode(pos[2]),
                          boost::json::serialize(body), v))
      return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "named " << str(v.at("short_id")) << " a destination of the project\n";
    return kOk;
  }
  if (pos[1] == "remove" && pos.size() == 3) {
    if (int rc = ctx.call("DELETE", "/v1/projects/" + pid + "/destinations/" + url_encode(pos[2]),
                          {}, v))
      return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << str(v.at("short_id")) << " is no longer a destination of the project\n";
    return kOk;
  }
  return usage_error(ctx, self,
                     "expected PROJECT, PROJECT add DEVICE [NAME] or PROJECT remove "
                     "DEVICE");
}

int run_delivery(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("delivery");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "delivery needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/delivery", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  const auto& dests = o.at("destinations").as_array();
  if (dests.empty()) {
    ctx.out << "no destination named for this project: nothing can confirm delivery\n";
    return kOk;
  }
  if (o.at("undelivered").to_number<std::uint64_t>() == 0)
    ctx.out << "all delivered: a destination holds all " << str(o.at("written_seq"))
            << " writes of this device\n";
  else
    ctx.out << str(o.at("undelivered")) << " of " << str(o.at("written_seq"))
            << " writes of this device not confirmed by a destination yet (oldest written "
            << utc_time(o.at("oldest_undelivered_ms")) << ")\n";
  print_destinations(ctx, dests);
  if (const auto* c = o.if_contains("cleanup"); c && c->is_object()) {
    const auto& co = c->as_object();
    if (co.at("documents_removed").to_number<std::uint64_t>() > 0)
      ctx.out << "clean-up: " << str(co.at("documents_removed"))
              << " delivered documents removed from this device (" << str(co.at("bytes_freed"))
              << " bytes), the last at " << utc_time(co.at("last_removed_ms")) << "\n";
  }
  return kOk;
}

int run_cleanup(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("cleanup");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "cleanup needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::object body;
  if (auto m = args->value("min-age")) {
    std::uint64_t ms = 0;
    auto [end, ec] = std::from_chars(m->data(), m->data() + m->size(), ms);
    if (ec != std::errc{} || end != m->data() + m->size() || ms > (1ull << 62))
      return usage_error(ctx, self, "--min-age takes milliseconds (an integer)");
    body["min_age_ms"] = ms;
  }
  boost::json::value v;
  if (int rc =
          ctx.call("POST", "/v1/projects/" + pid + "/cleanup", boost::json::serialize(body), v))
    return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& o = v.as_object();
  ctx.out << "removed " << str(o.at("documents_removed")) << " delivered documents ("
          << str(o.at("bytes_freed")) << " bytes); kept " << str(o.at("documents_undelivered"))
          << " not confirmed by a destination yet and " << str(o.at("documents_too_new"))
          << " younger than the minimum age\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"destinations",
                              "destinations PROJECT [add DEVICE [NAME] | remove DEVICE]",
                              "list, name or un-name the project's destinations (hubs)",
                              run_destinations,
                              {}});
FIELDSYNC_CLI_COMMAND(Command{
    "cleanup",
    "cleanup PROJECT [--min-age MS]",
    "remove from this device the documents a destination confirmed it holds",
    run_cleanup,
    {{"min-age", "MS",
      "only documents whose newest version is at least this old (default: the daemon's "
      "hub.cleanup_min_age_ms)"}}});
FIELDSYNC_CLI_COMMAND(Command{"delivery",
                              "delivery PROJECT",
                              "what of this device's writes the destinations confirm they hold",
                              run_delivery,
                              {}});

}  // namespace
}  // namespace fieldsync::cli
