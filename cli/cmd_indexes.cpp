// syncctl indexes PROJECT [create NAME COLLECTION FIELD... [--wait] [--timeout SECONDS] |
// drop NAME]
// The indexes declared on a project's collections (docs/api.md "Indexes"): lists them, one line
// each, declares one (and with --wait polls until it is built over the documents already held)
// or drops one.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <ostream>
#include <thread>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"

namespace fieldsync::cli {
namespace {

namespace json = boost::json;

// One index as the cells of its line: name, collection, [fields], ready|building, N entries;
// an index whose declaration does not read back: name and its error.
std::vector<std::string> index_cells(const json::value& v) {
  const auto& o = v.as_object();
  if (const auto* e = o.if_contains("error")) return {str(o.at("name")), "error: " + str(*e)};
  std::string fields = "[";
  for (const auto& f : o.at("fields").as_array())
    fields += (fields.size() > 1 ? ", " : "") + str(f);
  fields += "]";
  const auto& n = o.at("entries");
  return {str(o.at("name")), str(o.at("collection")), fields,
          o.at("ready").as_bool() ? "ready" : "building",
          str(n) + (n.is_number() && n.to_number<std::uint64_t>() == 1 ? " entry" : " entries")};
}

// The lines, their columns aligned (no header: one line per index).
void print_indexes(CliContext& ctx, const std::vector<json::value>& list) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::size_t> width;
  for (const auto& v : list) {
    rows.push_back(index_cells(v));
    for (std::size_t i = 0; i < rows.back().size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], rows.back()[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i)
      line += r[i] + (i + 1 < r.size() ? std::string(width[i] - r[i].size() + 2, ' ') : "");
    ctx.out << line << "\n";
  }
}

std::string quoted(const std::string& name) { return "'" + str(json::value(name)) + "'"; }

// Polls GET .../indexes until `name` is ready (into `index`); exit 1 after `timeout_s`, or if
// the index is gone or unreadable.
int wait_ready(CliContext& ctx, const std::string& pid, const std::string& name, double timeout_s,
               json::value& index) {
  auto end = std::chrono::steady_clock::now() +
             std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
  for (auto pause = std::chrono::milliseconds(10);;
       pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    json::value v;
    if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/indexes", {}, v)) return rc;
    const json::value* found = nullptr;
    for (const auto& i : v.at("indexes").as_array())
      if (i.at("name") == json::value(name)) found = &i;
    if (!found) {
      ctx.err << "syncctl: index " << quoted(name) << " was dropped while building\n";
      return kDaemonError;
    }
    if (const auto* e = found->as_object().if_contains("error")) {
      ctx.err << "syncctl: index " << quoted(name) << " is not kept: " << str(*e) << "\n";
      return kDaemonError;
    }
    if (found->at("ready").as_bool()) {
      index = *found;
      return kOk;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= end) {
      ctx.err << "syncctl: index " << quoted(name) << " not ready after " << timeout_s << " s ("
              << str(found->at("entries")) << " entries so far)\n";
      return kDaemonError;
    }
    // The interval between polls, never past the deadline.
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, end - now));
  }
}

int run_indexes(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("indexes");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.empty()) return usage_error(ctx, self, "indexes needs a PROJECT");
  bool create = pos.size() > 1 && pos[1] == "create";
  if ((args->flag("wait") || args->value("timeout")) && !create)
    return usage_error(ctx, self, "--wait and --timeout go with create");
  if (args->value("timeout") && !args->flag("wait"))
    return usage_error(ctx, self, "--timeout goes with --wait");
  auto timeout = seconds_arg(args->value("timeout"), 600);
  if (!timeout) return usage_error(ctx, self, timeout.error().message);
  const double timeout_s = *timeout;
  if (create && pos.size() < 5)
    return usage_error(ctx, self, "create takes NAME COLLECTION FIELD [FIELD...]");
  bool drop = pos.size() > 1 && pos[1] == "drop";
  if (pos.size() > 1 && !create && !(drop && pos.size() == 3))
    return usage_error(ctx, self,
                       "expected PROJECT, PROJECT create NAME COLLECTION FIELD [FIELD...] or "
                       "PROJECT drop NAME");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[0], pid)) return rc;
  const std::string base = "/v1/projects/" + pid + "/indexes";
  json::value v;
  if (pos.size() == 1) {
    if (int rc = ctx.call("GET", base, {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    const auto& list = v.at("indexes").as_array();
    if (list.empty())
      ctx.out << "no indexes (declare one: syncctl indexes " << pos[0]
              << " create NAME COLLECTION FIELD [FIELD...])\n";
    else
      print_indexes(ctx, {list.begin(), list.end()});
    return kOk;
  }
  const std::string target = base + "/" + url_encode(pos[2]);
  if (drop) {
    if (int rc = ctx.call("DELETE", target, {}, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "dropped index " << str(v.at("name")) << "\n";
    return kOk;
  }
  json::object body;
  body["collection"] = pos[3];
  json::array fields;
  for (std::size_t i = 4; i < pos.size(); ++i) fields.emplace_back(pos[i]);
  body["fields"] = std::move(fields);
  if (int rc = ctx.call("PUT", target, json::serialize(body), v)) return rc;
  if (args->flag("wait") && !v.at("ready").as_bool())
    if (int rc = wait_ready(ctx, pid, pos[2], timeout_s, v)) return rc;
  if (ctx.json)
    ctx.print_json(v);
  else
    print_indexes(ctx, {v});
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{
    "indexes",
    "indexes PROJECT [create NAME COLLECTION FIELD... [--wait] [--timeout SECONDS] | drop NAME]",
    "list, declare or drop the indexes that serve a project's queries",
    run_indexes,
    {{"wait", "", "create: wait until the index is built over the documents already here"},
     {"timeout", "SECONDS", "with --wait: give up after this long (default 600)"}}});

}  // namespace
}  // namespace fieldsync::cli
