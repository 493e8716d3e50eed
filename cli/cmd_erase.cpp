// syncctl erase | erasures: erase a document on every device (a coordinator), and list the
// project's erasures (docs/api.md "Erasure").
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

int run_erase(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("erase");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.size() != 3) return usage_error(ctx, self, "erase needs PROJECT COLLECTION ID");
  if (!args->flag("yes"))
    return usage_error(ctx, self,
                       "erasing removes the document from every device for good; add --yes");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[0], pid)) return rc;
  boost::json::object body;
  if (auto r = args->value("reason")) body["reason"] = *r;
  boost::json::value v;
  if (int rc = ctx.call("POST",
                        "/v1/projects/" + pid + "/docs/" + url_encode(pos[1]) + "/" +
                            url_encode(pos[2]) + "/erase",
                        boost::json::serialize(body), v))
    return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << "erased " << pos[1] << "/" << pos[2]
          << ": every device that syncs with this one removes it, and it cannot come back\n";
  return kOk;
}

int run_erasures(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("erasures");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "erasures needs a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/erasures", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  const auto& list = v.at("erasures").as_array();
  if (list.empty()) {
    ctx.out << "no document of this project was erased\n";
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : list) {
    const auto& o = e.as_object();
    rows.push_back({str(o.at("collection")) + "/" + str(o.at("id")), utc_time(o.at("erased_at_ms")),
                    str(o.at("by")).substr(0, 8), str(o.at("reason"))});
  }
  print_table(ctx.out, {"DOCUMENT", "ERASED", "BY", "REASON"}, rows);
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"erase",
                              "erase PROJECT COLLECTION ID --yes [--reason TEXT]",
                              "erase a document on every device, for good (coordinators)",
                              run_erase,
                              {{"yes", "", "confirm: the document is erased on every device"},
                               {"reason", "TEXT", "why, recorded with the erasure"}}});
FIELDSYNC_CLI_COMMAND(Command{
    "erasures", "erasures PROJECT", "the documents erased in the project", run_erasures, {}});

}  // namespace
}  // namespace fieldsync::cli
