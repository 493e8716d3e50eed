// syncctl peers [add ADDRESS DEVICE_ID [--name NAME] | add PEER | rm PEER | show PEER | approve
// PEER]
// ("add PEER" with one argument picks a device discovered on the local network.)
// syncctl sync PEER [--wait] [--timeout SECONDS]
// PEER: a device id, its short form, a unique prefix of the id, or the peer's name.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ostream>
#include <thread>

#include <boost/json/object.hpp>

#include "cli/command.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::cli {
namespace {

namespace json = boost::json;

std::string ago(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "never";
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  auto s = std::max<std::int64_t>(0, (now - unix_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  return std::to_string(s / 3600) + "h ago";
}

std::string error_text(const json::value& e) {
  if (!e.is_object()) return "";
  return str(e.at("error")) + ": " + str(e.at("message"));
}

// Why the peer is where it is (GET /v1/peers "reason"): its message, or "" when none.
std::string reason_text(const json::object& p) {
  const auto* r = p.if_contains("reason");
  if (!r || !r->is_object()) return "";
  return str(r->at("message"));
}

void print_peers(CliContext& ctx, const json::array& list) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : list) {
    const auto& p = v.as_object();
    // Discovered on the local network: when it was last seen there ("-" if not).
    const auto* disc = p.if_contains("discovered");
    std::string seen = disc && disc->is_object()
                           ? ago(disc->as_object().at("last_seen_ms").to_number<std::int64_t>())
                           : "-";
    rows.push_back({str(p.at("short_id")), str(p.at("name")), str(p.at("address")),
                    str(p.at("state")), ago(p.at("last_sync_ms").to_number<std::int64_t>()), seen,
                    reason_text(p)});
  }
  print_table(ctx.out, {"DEVICE", "NAME", "ADDRESS", "STATE", "LAST SYNC", "SEEN", "REASON"}, rows);
}

// Per project of the live (or last) session: attachments left each way, and the one coming.
void print_blob_progress(CliContext& ctx, const json::object& p) {
  const auto* session = p.if_contains("session");
  if (!session || !session->is_object()) return;
  for (const auto& pp : session->at("projects").as_array()) {
    const auto& o = pp.as_object();
    const auto* b = o.if_contains("blobs");
    if (!b || !b->is_object()) continue;
    const auto& x = b->as_object();
    auto n = [&](const char* k) { return x.at(k).to_number<std::uint64_t>(); };
    ctx.out << "blobs of " << str(o.at("project"))
            << " (this device fetches: " << str(x.at("policy")) << "): to receive "
            << n("to_receive") << " (" << human_bytes(n("bytes_to_receive")) << "), to send "
            << n("to_send") << " (" << human_bytes(n("bytes_to_send")) << "); received "
            << n("received") << " (" << human_bytes(n("bytes_received")) << "), sent "
            << human_bytes(n("bytes_sent"));
    if (const auto& f = x.at("fetching"); f.is_object())
      ctx.out << "; fetching " << str(f.at("blob")).substr(0, 12) << " "
              << human_bytes(f.at("bytes").to_number<std::uint64_t>()) << " of "
              << human_bytes(f.at("size").to_number<std::uint64_t>());
    ctx.out << "\n";
  }
}

// PEER argument -> full device id (prints the error otherwise).
int resolve_peer(CliContext& ctx, const std::string& arg, std::string& id) {
  json::value v;
  if (int rc = ctx.call("GET", "/v1/peers", {}, v)) return rc;
  std::vector<std::string> hits;
  for (const auto& p : v.at("peers").as_array()) {
    std::string dev = str(p.at("device_id"));
    if (dev == arg || str(p.at("short_id")) == arg || str(p.at("name")) == arg) {
      id = dev;
      return kOk;
    }
    if (arg.size() >= 4 && dev.compare(0, arg.size(), arg) == 0) hits.push_back(dev);
  }
  if (hits.size() == 1) {
    id = hits[0];
    return kOk;
  }
  ctx.err << "syncctl: " << (hits.empty() ? "no peer matches '" : "several peers match '") << arg
          << "'\n";
  return kDaemonError;
}

int run_peers(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("peers");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  json::value v;
  if (pos.empty()) {
    if (int rc = ctx.call("GET", "/v1/peers", {}, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      print_peers(ctx, v.at("peers").as_array());
    return kOk;
  }
  if (pos[0] == "add") {
    if (pos.size() != 2 && pos.size() != 3)
      return usage_error(ctx, self, "peers add needs ADDRESS and DEVICE_ID, or a discovered PEER");
    std::string body;
    if (pos.size() == 2) {  // a discovered device: the daemon takes the address it was seen at
      std::string id;
      if (int rc = resolve_peer(ctx, pos[1], id)) return rc;
      body = "{\"device_id\":" + ipc::json_quote(id);
    } else {
      body =
          "{\"address\":" + ipc::json_quote(pos[1]) + ",\"device_id\":" + ipc::json_quote(pos[2]);
    }
    if (auto n = args->value("name")) body += ",\"name\":" + ipc::json_quote(*n);
    body += "}";
    if (int rc = ctx.call("POST", "/v1/peers", body, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "added peer " << str(v.at("short_id")) << " at " << str(v.at("address")) << "\n";
    return kOk;
  }
  if (pos[0] == "approve") {
    if (pos.size() != 2) return usage_error(ctx, self, "peers approve needs a PEER");
    std::string id;
    if (int rc = resolve_peer(ctx, pos[1], id)) return rc;
    if (int rc = ctx.call("POST", "/v1/peers/" + id + "/approve", "{}", v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "approved " << str(v.at("short_id")) << " (verification code "
              << str(v.at("verification_code")) << ")\n";
    return kOk;
  }
  if (pos[0] == "rm" || pos[0] == "show") {
    if (pos.size() != 2) return usage_error(ctx, self, "peers " + pos[0] + " needs a PEER");
    std::string id;
    if (int rc = resolve_peer(ctx, pos[1], id)) return rc;
    if (int rc = ctx.call(pos[0] == "rm" ? "DELETE" : "GET", "/v1/peers/" + id, {}, v)) return rc;
    if (ctx.json)
      ctx.print_json(v);
    else if (pos[0] == "rm")
      ctx.out << "removed peer " << id << "\n";
    else {
      print_peers(ctx, json::array{v});
      if (const auto& r = v.at("reason"); r.is_object())
        ctx.out << "reason: " << str(r.at("code")) << ": " << str(r.at("message")) << "\n";
      if (const auto& e = v.at("last_error"); e.is_object())
        ctx.out << "last error: " << error_text(e) << "\n";
      ctx.out << "verification code: " << str(v.at("verification_code")) << "\n";
      print_blob_progress(ctx, v.as_object());
    }
    return kOk;
  }
  return usage_error(ctx, self, "unknown peers subcommand '" + pos[0] + "'");
}

// One progress line: versions done / total over all projects of the session.
std::string progress_line(const json::object& p) {
  std::uint64_t done = 0, left = 0;
  double rate = 0;
  if (p.at("session").is_object()) {
    for (const auto& pp : p.at("session").at("projects").as_array()) {
      const auto& o = pp.as_object();
      done += o.at("sent").to_number<std::uint64_t>() + o.at("received").to_number<std::uint64_t>();
      left += o.at("to_send").to_number<std::uint64_t>() +
              o.at("to_receive").to_number<std::uint64_t>();
      rate += o.at("rate_bytes_per_s").to_number<double>();
    }
  }
  std::uint64_t total = done + left;
  int pct = total ? static_cast<int>(done * 100 / total) : 100;
  std::string bar(30, '.');
  for (int i = 0; i < pct * 30 / 100; ++i) bar[static_cast<std::size_t>(i)] = '#';
  char buf[200];
  std::snprintf(buf, sizeof buf, "[%s] %3d%% %llu/%llu versions %.1f MB/s %s", bar.c_str(), pct,
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                rate / 1e6, str(p.at("state")).c_str());
  std::string line = buf;
  // Why it does not progress, when the daemon knows (waiting for approval, shut down, ...).
  if (auto why = reason_text(p); !why.empty()) line += ": " + why;
  return line;
}

int run_sync(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("sync");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.size() != 1) return usage_error(ctx, self, "sync needs a PEER");
  auto timeout = seconds_arg(args->value("timeout"), 600);
  if (!timeout) return usage_error(ctx, self, timeout.error().message);
  const double timeout_s = *timeout;
  std::string id;
  if (int rc = resolve_peer(ctx, pos[0], id)) return rc;
  json::value v;
  if (int rc = ctx.call("POST", "/v1/peers/" + id + "/sync", "{}", v)) return rc;
  if (!args->flag("wait")) {
    if (ctx.json)
      ctx.print_json(v);
    else
      ctx.out << "sync with " << str(v.at("short_id")) << " started (" << str(v.at("state"))
              << ")\n";
    return kOk;
  }
  bool tty = !ctx.json && ::isatty(STDOUT_FILENO);
  auto end = std::chrono::steady_clock::now() +
             std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  for (;;) {
    if (int rc = ctx.call("GET", "/v1/peers/" + id, {}, v)) return rc;
    const auto& p = v.as_object();
    bool done = str(p.at("state")) == "in_sync";
    if (tty) ctx.out << "\r" << progress_line(p) << std::flush;
    if (done) {
      if (tty) ctx.out << "\n";
      if (ctx.json)
        ctx.print_json(v);
      else
        ctx.out << "in sync with " << str(p.at("short_id")) << "\n";
      return kOk;
    }
    if (std::chrono::steady_clock::now() > end) {
      if (tty) ctx.out << "\n";
      ctx.err << "syncctl: not in sync after " << timeout_s << " s (state " << str(p.at("state"));
      if (auto why = reason_text(p);
          !why.empty() && str(p.at("reason").at("code")) != "failed")  // failed: last_error's
        ctx.err << ": " << why;
      if (p.at("last_error").is_object())
        ctx.err << ", last error " << error_text(p.at("last_error"));
      ctx.err << ")\n";
      return kDaemonError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

FIELDSYNC_CLI_COMMAND(Command{
    "peers",
    "peers [add ADDRESS DEVICE_ID [--name NAME] | add PEER | rm PEER | show PEER | approve PEER]",
    "list sync and discovered peers, add (or pick a discovered one), remove, show or approve one",
    run_peers,
    {{"name", "NAME", "peers add: a name for the peer"}}});
FIELDSYNC_CLI_COMMAND(Command{
    "sync",
    "sync PEER [--wait] [--timeout SECONDS]",
    "sync with a peer now; --wait until both hold the same data",
    run_sync,
    {{"wait", "", "wait until both hold the same data"},
     {"timeout", "SECONDS", "with --wait: give up after this long (default 600)"}}});

}  // namespace
}  // namespace fieldsync::cli
