// syncctl projects [create NAME [--settings JSON] | show PROJECT]
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

void print_projects(CliContext& ctx, const boost::json::array& list) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : list)
    rows.push_back({str(p.at("id")), str(p.at("name")), json_text(p.at("settings"))});
  print_table(ctx.out, {"ID", "NAME", "SETTINGS"}, rows);
}

int run_projects(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("projects");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  boost::json::value v;
  if (pos.empty()) {
    if (int rc = ctx.call("GET", "/v1/projects", {}, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      print_projects(ctx, v.at("projects").as_array());
    return kOk;
  }
  if (pos[0] == "create") {
    if (pos.size() != 2) return usage_error(ctx, self, "projects create needs a NAME");
    std::string body = "{\"name\":" + ipc::json_quote(pos[1]);
    if (auto s = args->value("settings")) {
      auto text = read_json_arg(*s);
      if (!text) return usage_error(ctx, self, "--settings: " + text.error().message);
      body += ",\"settings\":" + *text;
    }
    body += "}";
    if (int rc = ctx.call("POST", "/v1/projects", body, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "created project " << str(v.at("name")) << " " << str(v.at("id")) << "\n";
    return kOk;
  }
  if (pos[0] == "show") {
    if (pos.size() != 2) return usage_error(ctx, self, "projects show needs a PROJECT");
    std::string id;
    if (int rc = ctx.resolve_project(pos[1], id)) return rc;
    if (int rc = ctx.call("GET", "/v1/projects/" + id, {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    print_projects(ctx, boost::json::array{v});
    // What this device holds of it (docs/api.md "Subscriptions").
    if (const auto* sub = v.as_object().if_contains("subscription")) {
      bool all = sub->is_object() && sub->as_object().empty();
      ctx.out << "holds: " << (all ? std::string("everything") : json_text(*sub)) << "\n";
    }
    return kOk;
  }
  return usage_error(ctx, self, "unknown projects subcommand '" + pos[0] + "'");
}

FIELDSYNC_CLI_COMMAND(Command{"projects",
                              "projects [create NAME [--settings JSON] | show PROJECT]",
                              "list projects, create one, or show one",
                              run_projects,
                              {{"settings", "JSON", "projects create: the project's settings"}}});

}  // namespace
}  // namespace fieldsync::cli
