// syncctl blobs put PROJECT FILE [--type TYPE]
// syncctl blobs get PROJECT ID FILE|-
// syncctl blobs ls PROJECT
// syncctl blobs gc PROJECT
// syncctl blobs policy PROJECT [LEVEL|default] [--peer DEVICE=LEVEL|DEVICE=default ...]
// Attachments (docs/api.md "Blobs (attachments)"). syncctl reads and writes the files; the
// daemon streams the bytes through the API.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <ostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "cli/command.hpp"
#include "common/json_parse.hpp"
#include "common/text.hpp"

namespace fieldsync::cli {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

const char* kBlobsUsage =
    "blobs put PROJECT FILE [--type TYPE]\n"
    "       syncctl blobs get PROJECT ID FILE|-\n"
    "       syncctl blobs ls PROJECT\n"
    "       syncctl blobs gc PROJECT\n"
    "       syncctl blobs policy PROJECT [LEVEL|default] [--peer DEVICE=LEVEL|DEVICE=default]...";

// The media type of a file by its extension; application/octet-stream when unknown.
std::string guess_type(const fs::path& file) {
  std::string ext = file.extension().string();
  if (!ext.empty()) ext.erase(0, 1);
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::pair<const char*, const char*> kTypes[] = {
      {"jpg", "image/jpeg"},  {"jpeg", "image/jpeg"},       {"png", "image/png"},
      {"webp", "image/webp"}, {"gif", "image/gif"},         {"mp4", "video/mp4"},
      {"m4a", "audio/mp4"},   {"ogg", "audio/ogg"},         {"pdf", "application/pdf"},
      {"txt", "text/plain"},  {"json", "application/json"},
  };
  for (const auto& [e, t] : kTypes)
    if (ext == e) return t;
  return "application/octet-stream";
}

int run_put(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 3) return usage_error(ctx, self, "blobs put takes PROJECT FILE");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  const fs::path file = pos[2];
  const std::string type = args.value("type").value_or(guess_type(file));
  json::value v;
  if (int rc = ctx.handle_reply(
          ctx.http.upload_file("POST", "/v1/projects/" + pid + "/blobs", file, type), v))
    return rc;
  // The reference, ready to put into a document's body.
  ctx.print_json(ctx.json ? v : v.at("ref"));
  return kOk;
}

int run_get(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 4) return usage_error(ctx, self, "blobs get takes PROJECT ID FILE");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  std::string target = "/v1/projects/" + pid + "/blobs/" + url_encode(pos[2]);
  if (auto variant = args.value("variant")) target += "?variant=" + url_encode(*variant);
  const std::string& file = pos[3];
  // A blob not on this device yet is fetched from the peers: 202 with progress until it
  // arrives (each request waits up to blob.fetch_wait_ms for it).
  Result<HttpReply> r = make_error(Errc::internal, "no request");
  std::string last;
  for (;;) {
    r = file == "-" ? ctx.http.download("GET", target, STDOUT_FILENO)
                    : ctx.http.download_to_file("GET", target, file);
    if (!r || r->status != 202) break;
    if (!ctx.json) {
      std::string line = "not on this device yet: asking the peers";
      boost::system::error_code ec;
      json::value parsed = parse_json(r->body, ec);
      if (!ec && parsed.is_object()) {
        const auto& o = parsed.as_object();
        if (o.contains("state") && str(o.at("state")) == "fetching")
          line = "fetching from a peer: " +
                 human_bytes(o.at("received_bytes").to_number<std::uint64_t>()) + " of " +
                 human_bytes(o.at("size").to_number<std::uint64_t>());
      }
      if (line != last) ctx.err << line << "\n";
      last = line;
    }
  }
  json::value v;
  if (int rc = ctx.handle_reply(r, v)) return rc;
  if (file != "-")
    ctx.err << "wrote " << escape_for_terminal(file) << " (" << human_bytes(r->body_bytes) << ")\n";
  return kOk;
}

int run_ls(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 2) return usage_error(ctx, self, "blobs ls takes PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  json::array all;
  json::value usage;
  std::string after;
  while (true) {
    std::string target = "/v1/projects/" + pid + "/blobs?limit=1000";
    if (!after.empty()) target += "&after=" + url_encode(after);
    json::value v;
    if (int rc = ctx.call("GET", target, {}, v)) return rc;
    for (const auto& b : v.at("blobs").as_array()) all.push_back(b);
    usage = v.at("usage");
    const auto& next = v.at("next");
    if (!next.is_string() || v.at("blobs").as_array().empty()) break;
    after = str(next);
  }
  if (ctx.json) {
    json::object o;
    o["blobs"] = std::move(all);
    o["usage"] = usage;
    ctx.print_json(o);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& b : all)
    rows.push_back({str(b.at("id")), str(b.at("size")), str(b.at("type")),
                    b.at("held").as_bool() ? "yes" : "no", str(b.at("refs"))});
  print_table(ctx.out, {"ID", "SIZE", "TYPE", "HELD", "REFS"}, rows);
  const auto& u = usage.as_object();
  const auto quota = u.at("quota_bytes").to_number<std::uint64_t>();
  ctx.out << str(u.at("held_count")) << " held ("
          << human_bytes(u.at("held_bytes").to_number<std::uint64_t>()) << " of "
          << (quota ? human_bytes(quota) : std::string("no quota")) << "), "
          << str(u.at("wanted_count")) << " referred to but not here\n";
  return kOk;
}

int run_gc(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 2) return usage_error(ctx, self, "blobs gc takes PROJECT");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  json::value v;
  if (int rc = ctx.call("POST", "/v1/projects/" + pid + "/blobs/gc", {}, v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << "released " << str(v.at("released")) << " blob(s), deleted "
          << str(v.at("files_deleted")) << " file(s), freed "
          << human_bytes(v.at("bytes_freed").to_number<std::uint64_t>()) << "\n";
  return kOk;
}

// Shows the policy (after setting it, when asked to).
int run_policy(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 2 && pos.size() != 3)
    return usage_error(ctx, self, "blobs policy takes PROJECT [LEVEL|default]");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  const std::string target = "/v1/projects/" + pid + "/blob-policy";
  json::value v;
  if (int rc = ctx.call("GET", target, {}, v)) return rc;
  const auto peers = args.values("peer");
  if (pos.size() == 3 || !peers.empty()) {
    json::object body;
    body["policy"] = v.at("policy");
    if (pos.size() == 3) {
      if (pos[2] == "default")
        body["policy"] = nullptr;
      else
        body["policy"] = pos[2];
    }
    json::object ps = v.at("peers").as_object();
    for (const auto& p : peers) {
      auto eq = p.find('=');
      if (eq == std::string::npos)
        return usage_error(ctx, self, "--peer takes DEVICE=LEVEL (or DEVICE=default)");
      std::string device = p.substr(0, eq), level = p.substr(eq + 1);
      if (level == "default")
        ps.erase(device);
      else
        ps[device] = level;
    }
    body["peers"] = std::move(ps);
    if (int rc = ctx.call("PUT", target, json::serialize(body), v)) return rc;
  }
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << "fetches by itself: " << str(v.at("effective"))
          << (v.at("policy").is_null() ? " (blob.policy)" : "") << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& [device, level] : v.at("peers").as_object())
    rows.push_back({std::string(device), str(level)});
  if (!rows.empty()) print_table(ctx.out, {"PEER", "LEVEL"}, rows);
  return kOk;
}

int run_blobs(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("blobs");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.empty()) return usage_error(ctx, self, "blobs needs put, get, ls, gc or policy");
  if (pos[0] != "put" && args->value("type"))
    return usage_error(ctx, self, "--type applies to blobs put");
  if (pos[0] != "get" && args->value("variant"))
    return usage_error(ctx, self, "--variant applies to blobs get");
  if (pos[0] != "policy" && args->value("peer"))
    return usage_error(ctx, self, "--peer applies to blobs policy");
  if (pos[0] == "put") return run_put(ctx, self, *args);
  if (pos[0] == "get") return run_get(ctx, self, *args);
  if (pos[0] == "ls") return run_ls(ctx, self, *args);
  if (pos[0] == "gc") return run_gc(ctx, self, *args);
  if (pos[0] == "policy") return run_policy(ctx, self, *args);
  return usage_error(ctx, self, "unknown blobs subcommand '" + pos[0] + "'");
}

FIELDSYNC_CLI_COMMAND(Command{
    "blobs",
    kBlobsUsage,
    "attachments: upload, download (fetched from peers if need be), "
    "list, collect garbage, choose what this device fetches",
    run_blobs,
    {{"type", "TYPE", "blobs put: the media type (default: from the file name)"},
     {"variant", "NAME", "blobs get: a variant (e.g. thumbnail) instead of the original"},
     {"peer", "DEVICE=LEVEL",
      "blobs policy: what one peer device may fetch (LEVEL or default); repeatable"}}});

}  // namespace
}  // namespace fieldsync::cli
