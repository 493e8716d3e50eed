// syncctl docs get|put|list|delete|history ...
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

const char* kUsage =
    "docs list PROJECT COLLECTION [--where FIELD=JSON]... [--limit N] [--after CURSOR] "
    "[--include-deleted] [--conflicts]\n"
    "       syncctl docs get PROJECT COLLECTION ID\n"
    "       syncctl docs put PROJECT COLLECTION [ID] JSON|-|@FILE [--base VERSION]\n"
    "       syncctl docs delete PROJECT COLLECTION ID [--base VERSION]\n"
    "       syncctl docs history PROJECT COLLECTION ID [--limit N]";

std::string doc_path(const std::string& pid, const std::string& coll) {
  return "/v1/projects/" + pid + "/docs/" + url_encode(coll);
}

void print_write(CliContext& ctx, const boost::json::value& v, const char* verb) {
  ctx.out << verb << " " << str(v.at("collection")) << "/" << str(v.at("id")) << " version "
          << short_id(str(v.at("version"))) << " seq " << str(v.at("local_seq")) << "\n";
  if (v.at("conflict").as_bool()) ctx.out << "conflict: " << str(v.at("message")) << "\n";
}

int run_docs(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("docs");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.size() < 3)
    return usage_error(ctx, self, "docs needs a subcommand, a PROJECT and a COLLECTION");
  const std::string& sub = pos[0];
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  const std::string base_path = doc_path(pid, pos[2]);
  boost::json::value v;
  // ?base= for put and delete: a whole version id or a unique prefix of one (as printed).
  auto base_query = [&](const std::string& doc, std::string& q) -> int {
    q.clear();
    auto given = args->value("base");
    if (!given) return kOk;
    std::string version;
    if (int rc = ctx.resolve_version(doc, *given, version)) return rc;
    q = "?base=" + version;
    return kOk;
  };

  if (sub == "list") {
    if (pos.size() != 3) return usage_error(ctx, self, "docs list takes PROJECT COLLECTION");
    std::string q;
    auto add = [&q](const std::string& k, const std::string& val) {
      q += (q.empty() ? "?" : "&") + k + "=" + url_encode(val);
    };
    for (const auto& w : args->values("where")) add("where", w);
    if (auto l = args->value("limit")) add("limit", *l);
    if (auto a = args->value("after")) add("after", *a);
    if (args->flag("include-deleted")) add("include_deleted", "1");
    if (args->flag("conflicts")) add("conflicts", "1");
    if (int rc = ctx.call("GET", base_path + q, {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& d : v.at("docs").as_array()) {
      std::string body = json_text(d.at("body"));
      if (body.size() > 60) body = body.substr(0, 57) + "...";
      rows.push_back({str(d.at("id")), short_id(str(d.at("version"))),
                      std::to_string(d.at("heads").as_array().size()),
                      d.at("deleted").as_bool() ? "deleted" : body});
    }
    print_table(ctx.out, {"ID", "VERSION", "HEADS", "BODY"}, rows);
    if (!v.at("next").is_null()) ctx.out << "more: --after " << str(v.at("next")) << "\n";
    return kOk;
  }
  if (sub == "get" || sub == "history") {
    if (pos.size() != 4)
      return usage_error(ctx, self, "docs " + sub + " takes PROJECT COLLECTION ID");
    std::string path = base_path + "/" + url_encode(pos[3]);
    if (sub == "history") {
      path += "/history";
      if (auto l = args->value("limit")) path += "?limit=" + url_encode(*l);
    }
    if (int rc = ctx.call("GET", path, {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    if (sub == "history") {
      std::vector<std::vector<std::string>> rows;
      for (const auto& h : v.at("versions").as_array()) {
        std::string parents;
        for (const auto& p : h.at("parents").as_array())
          parents += (parents.empty() ? "" : ",") + short_id(str(p));
        rows.push_back({short_id(str(h.at("version"))), parents.empty() ? "-" : parents,
                        short_id(str(h.at("author")), 8), str(h.at("hlc")),
                        h.at("deleted").as_bool() ? "deleted" : "put"});
      }
      print_table(ctx.out, {"VERSION", "PARENTS", "AUTHOR", "HLC", "KIND"}, rows);
      return kOk;
    }
    ctx.out << "id        " << str(v.at("collection")) << "/" << str(v.at("id")) << "\n"
            << "version   " << str(v.at("version")) << "\n"
            << "author    " << str(v.at("author")) << "\n"
            << "deleted   " << (v.at("deleted").as_bool() ? "yes" : "no") << "\n";
    const auto& conflicts = v.at("conflicts").as_array();
    if (!conflicts.empty()) {
      ctx.out << "CONFLICT  " << conflicts.size() + 1 << " heads; other heads:";
      for (const auto& c : conflicts) ctx.out << " " << short_id(str(c));
      ctx.out << "\n          resolve with: syncctl resolve " << pos[1] << " " << pos[2] << " "
              << pos[3] << " --merge | --body JSON\n";
    }
    // The body exactly as stored (numbers as written), from the daemon's own text.
    auto raw = ipc::raw_member(ctx.last_body, "body");
    ctx.out << (raw ? escape_json_for_terminal(*raw) : json_text(v.at("body"))) << "\n";
    return kOk;
  }
  if (sub == "put") {
    if (pos.size() != 4 && pos.size() != 5)
      return usage_error(ctx, self, "docs put takes PROJECT COLLECTION [ID] JSON");
    auto body = read_json_arg(pos.back());
    if (!body) return usage_error(ctx, self, body.error().message);
    int rc;
    if (pos.size() == 5) {
      const std::string doc = base_path + "/" + url_encode(pos[3]);
      std::string q;
      if ((rc = base_query(doc, q))) return rc;
      rc = ctx.call("PUT", doc + q, *body, v);
    } else {
      if (args->value("base")) return usage_error(ctx, self, "--base needs a document ID");
      rc = ctx.call("POST", base_path, *body, v);
    }
    if (rc) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      print_write(ctx, v, pos.size() == 5 ? "updated" : "created");
    return kOk;
  }
  if (sub == "delete") {
    if (pos.size() != 4) return usage_error(ctx, self, "docs delete takes PROJECT COLLECTION ID");
    const std::string doc = base_path + "/" + url_encode(pos[3]);
    std::string q;
    if (int rc = base_query(doc, q)) return rc;
    if (int rc = ctx.call("DELETE", doc + q, {}, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      print_write(ctx, v, "deleted");
    return kOk;
  }
  return usage_error(ctx, self, "unknown docs subcommand '" + sub + "'");
}

FIELDSYNC_CLI_COMMAND(Command{
    "docs",
    kUsage,
    "read, write, list and delete documents",
    run_docs,
    {{"where", "FIELD=JSON", "docs list: only documents whose FIELD equals JSON; repeatable"},
     {"limit", "N", "docs list, docs history: at most N entries"},
     {"after", "CURSOR", "docs list: continue after this cursor"},
     {"include-deleted", "", "docs list: deleted documents too"},
     {"conflicts", "", "docs list: only documents with concurrent versions"},
     {"base", "VERSION",
      "docs put, docs delete: the version the write is based on (an id or a unique prefix)"}}});

}  // namespace
}  // namespace fieldsync::cli
