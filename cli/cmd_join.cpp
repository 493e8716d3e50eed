// syncctl join CODE [--wait] [--timeout SECONDS]: join a project with an invite code
// (docs/api.md "Joining a project"). A damaged or expired code is a usage error (exit 2).
#include <unistd.h>

#include <chrono>
#include <ostream>
#include <thread>

#include <boost/json/object.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

namespace json = boost::json;

int run_join(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("join");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  if (args->positional().empty()) return usage_error(ctx, self, "join needs the invite CODE");
  // A code read aloud or wrapped over lines may arrive as several words.
  std::string code;
  for (const auto& part : args->positional()) code += part;
  auto timeout = seconds_arg(args->value("timeout"), 600);
  if (!timeout) return usage_error(ctx, self, timeout.error().message);
  const double timeout_s = *timeout;
  json::value v;
  if (int rc = ctx.call("POST", "/v1/join", "{\"code\":" + ipc::json_quote(code) + "}", v)) {
    // The daemon says the code itself is bad (damaged, expired): the user's input, exit 2.
    bool bad_code = rc == kDaemonError && v.is_object() && v.as_object().contains("error") &&
                    str(v.at("error")) == "invalid_argument";
    return bad_code ? kUsage : rc;
  }
  const auto& project = v.at("project");
  const auto& inviter = v.at("inviter");
  std::string pid = str(project.at("id"));
  if (!args->flag("wait")) {
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "joined " << str(project.at("name")) << " (" << pid << ") via "
              << str(inviter.at("short_id")) << "\n";
    return kOk;
  }
  if (!ctx.json)
    ctx.out << "joined " << str(project.at("name")) << " (" << pid << ") via "
            << str(inviter.at("short_id")) << "\n"
            << std::flush;
  auto end = std::chrono::steady_clock::now() +
             std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  for (;;) {
    json::value s;
    if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/sync", {}, s)) return rc;
    if (s.at("in_sync").as_bool()) {
      if (ctx.json)
        ctx.print_json(v);
      else
        ctx.out << "in sync with " << str(inviter.at("short_id")) << "\n";
      return kOk;
    }
    if (std::chrono::steady_clock::now() > end) {
      ctx.err << "syncctl: joined, but not in sync after " << timeout_s << " s ("
              << str(s.at("to_receive")) << " versions still to receive)\n";
      return kDaemonError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

FIELDSYNC_CLI_COMMAND(Command{
    "join",
    "join CODE [--wait] [--timeout SECONDS]",
    "join a project with an invite code; --wait until its data is here",
    run_join,
    {{"wait", "", "wait until the project's data is here"},
     {"timeout", "SECONDS", "with --wait: give up after this long (default 600)"}}});

}  // namespace
}  // namespace fieldsync::cli
