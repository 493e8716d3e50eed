// syncctl conflicts PROJECT; syncctl resolve PROJECT COLLECTION ID (--merge | --body JSON
// [--parents V,V])
#include <optional>
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

int run_conflicts(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("conflicts");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "conflicts takes a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  std::string q;
  if (auto l = args->value("limit"))
    q += (q.empty() ? "?" : "&") + std::string("limit=") + url_encode(*l);
  if (auto a = args->value("after"))
    q += (q.empty() ? "?" : "&") + std::string("after=") + url_encode(*a);
  boost::json::value v;
  if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/conflicts" + q, {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : v.at("docs").as_array()) {
    std::string heads;
    for (const auto& h : d.at("heads").as_array())
      heads += (heads.empty() ? "" : ",") + short_id(str(h));
    rows.push_back({str(d.at("collection")), str(d.at("id")), heads});
  }
  print_table(ctx.out, {"COLLECTION", "ID", "HEADS"}, rows);
  if (!v.at("next").is_null()) ctx.out << "more: --after " << str(v.at("next")) << "\n";
  return kOk;
}

int run_resolve(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("resolve");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.size() != 3) return usage_error(ctx, self, "resolve takes PROJECT COLLECTION ID");
  int modes = (args->flag("merge") ? 1 : 0) + (args->value("body") ? 1 : 0) +
              (args->flag("delete") ? 1 : 0);
  if (modes != 1)
    return usage_error(ctx, self, "give exactly one of --merge, --body JSON or --delete");
  if (args->flag("merge") && args->value("parents"))
    return usage_error(ctx, self, "--merge takes no --parents");
  std::optional<std::string> body;
  if (auto b = args->value("body")) {
    auto text = read_json_arg(*b);
    if (!text) return usage_error(ctx, self, text.error().message);
    body = std::move(*text);
  }
  std::string pid;
  if (int rc = ctx.resolve_project(pos[0], pid)) return rc;
  boost::json::value v;
  const std::string doc =
      "/v1/projects/" + pid + "/docs/" + url_encode(pos[1]) + "/" + url_encode(pos[2]);
  const std::string path = doc + "/resolve";
  std::string req;
  if (args->flag("merge")) {
    req = "{\"strategy\":\"merge\"}";
  } else {
    req = "{";
    if (auto p = args->value("parents")) {
      // Whole version ids or unique prefixes, as syncctl prints them.
      req += "\"parents\":[";
      std::string list = *p;
      std::size_t start = 0;
      bool first = true;
      while (start <= list.size()) {
        auto comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        std::string version;
        if (int rc = ctx.resolve_version(doc, list.substr(start, comma - start), version))
          return rc;
        req += (first ? "" : ",") + ipc::json_quote(version);
        first = false;
        start = comma + 1;
      }
      req += "],";
    }
    if (args->flag("delete")) {
      req += "\"delete\":true}";
    } else {
      req += "\"body\":" + *body + "}";
    }
  }
  if (int rc = ctx.call("POST", path, req, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << "resolved " << str(v.at("collection")) << "/" << str(v.at("id")) << " version "
          << short_id(str(v.at("version"))) << " (" << v.at("heads").as_array().size() << " head"
          << (v.at("heads").as_array().size() == 1 ? "" : "s") << ")\n";
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{
    "conflicts",
    "conflicts PROJECT [--limit N] [--after CURSOR]",
    "documents with concurrent versions, in every collection",
    run_conflicts,
    {{"limit", "N", "at most N documents"},
     {"after", "CURSOR", "continue after this cursor (from the previous page)"}}});
FIELDSYNC_CLI_COMMAND(Command{
    "resolve",
    "resolve PROJECT COLLECTION ID (--merge | --body JSON|-|@FILE | --delete) [--parents V1,V2]",
    "resolve a conflict: automatic field merge, or a body over the given (default: all) heads",
    run_resolve,
    {{"merge", "", "merge the heads field by field"},
     {"body", "JSON|-|@FILE", "the resolved body (text, - for stdin, @FILE)"},
     {"delete", "", "resolve by deleting the document"},
     {"parents", "V1,V2", "the heads the resolution replaces (default: all)"}}});

}  // namespace
}  // namespace fieldsync::cli
