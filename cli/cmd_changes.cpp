// syncctl changes PROJECT [--since N] [--limit N] [--follow]
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"
#include "common/json_parse.hpp"

namespace fieldsync::cli {
namespace {

std::vector<std::string> change_row(const boost::json::value& c) {
  return {str(c.at("seq")),
          str(c.at("collection")),
          str(c.at("id")),
          short_id(str(c.at("version"))),
          c.at("deleted").as_bool() ? "delete" : "put",
          c.at("local").as_bool() ? "local" : "received"};
}

const std::vector<std::string> kHeaders = {"SEQ", "COLLECTION", "ID", "VERSION", "KIND", "ORIGIN"};

int run_changes(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("changes");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().size() != 1) return usage_error(ctx, self, "changes takes a PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(args->positional()[0], pid)) return rc;
  std::string q = "?since=" + url_encode(args->value("since").value_or("0"));
  if (auto l = args->value("limit")) q += "&limit=" + url_encode(*l);
  std::string path = "/v1/projects/" + pid + "/changes" + q;

  if (!args->flag("follow")) {
    boost::json::value v;
    if (int rc = ctx.call("GET", path, {}, v)) return rc;
    if (ctx.json) {
      ctx.print_json(v);
      return kOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& c : v.at("changes").as_array()) rows.push_back(change_row(c));
    print_table(ctx.out, kHeaders, rows);
    ctx.out << "last_seq " << str(v.at("last_seq")) << "\n";
    return kOk;
  }

  // --follow: Server-Sent Events; one line per change (a JSON line with --json).
  int status = 0;
  bool stopped_by_us = false, failed = false;
  std::string pending, error_body;
  if (!ctx.json) print_table(ctx.out, kHeaders, {});
  auto st = ctx.http.stream(
      path + "&feed=sse", [&](const HttpReply& head) { status = head.status; },
      [&](std::string_view data) {
        if (status != 200) {
          error_body.append(data);
          return true;
        }
        pending.append(data);
        std::size_t end;
        while ((end = pending.find("\n\n")) != std::string::npos) {
          std::string event = pending.substr(0, end);
          pending.erase(0, end + 2);
          std::size_t at = 0;
          while (at < event.size()) {
            auto nl = event.find('\n', at);
            if (nl == std::string::npos) nl = event.size();
            std::string line = event.substr(at, nl - at);
            at = nl + 1;
            if (line.rfind("data: ", 0) != 0) continue;
            std::string payload = line.substr(6);
            boost::system::error_code ec;
            auto v = parse_json(payload, ec);
            if (ec || !v.is_object()) continue;
            if (v.as_object().contains("error")) {
              ctx.err << "syncctl: " << str(v.at("message")) << "\n";
              stopped_by_us = true;
              failed = true;
              return false;
            }
            if (ctx.json) {
              ctx.out << json_text(v) << "\n";
            } else {
              auto row = change_row(v);
              std::string s;
              for (auto& cell : row) s += cell + "  ";
              ctx.out << s.substr(0, s.size() - 2) << "\n";
            }
            ctx.out.flush();
          }
        }
        return true;
      });
  if (!st) {
    ctx.err << "syncctl: " << st.error().message << "\n";
    return kUnreachable;
  }
  if (failed) return kDaemonError;
  if (status != 200) {
    boost::system::error_code ec;
    auto v = parse_json(error_body, ec);
    if (!ec && v.is_object() && v.as_object().contains("message"))
      ctx.err << "syncctl: " << str(v.at("message")) << " (" << str(v.at("error")) << ")\n";
    else
      ctx.err << "syncctl: fieldsyncd answered HTTP " << status << "\n";
    return kDaemonError;
  }
  if (!stopped_by_us) {
    ctx.err << "syncctl: fieldsyncd closed the change stream (shutting down?)\n";
    return kUnreachable;
  }
  return kOk;
}

FIELDSYNC_CLI_COMMAND(Command{"changes",
                              "changes PROJECT [--since N] [--limit N] [--follow]",
                              "the project's changes feed; --follow streams new changes live",
                              run_changes,
                              {{"since", "N", "start after this sequence number (default 0)"},
                               {"limit", "N", "at most N changes"},
                               {"follow", "", "keep streaming new changes as they happen"}}});

}  // namespace
}  // namespace fieldsync::cli
