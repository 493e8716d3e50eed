// syncctl bundle export PROJECT FILE [--for DEVICE]... [--blobs all|variants|none]
// syncctl bundle import FILE
// syncctl bundle sync DIR [--blobs all|variants|none]
// Sync by USB stick (docs/api.md "Bundles", docs/operations.md "Sync by USB stick"). syncctl
// reads and writes the files; the daemon streams bundles through the API and never opens them.
// DEVICE: a member's device id, its short form, a unique prefix, its name, or "members".
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <set>

#include <boost/json/object.hpp>

#include "cli/command.hpp"
#include "common/json_parse.hpp"
#include "common/text.hpp"

namespace fieldsync::cli {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

const char* kBundleUsage =
    "bundle export PROJECT FILE|- [--for DEVICE|members]... [--blobs all|variants|none]\n"
    "       syncctl bundle import FILE\n"
    "       syncctl bundle sync DIR [--blobs all|variants|none]";

// --blobs: which blobs a bundle carries (default: all for export, variants for sync, whose
// files are rewritten at every visit of the stick). "" when the value is not one of them.
std::string blobs_value(const Args& args, const std::string& fallback) {
  auto v = args.values("blobs");
  if (v.empty()) return fallback;
  const std::string& b = v.back();
  return b == "all" || b == "variants" || b == "none" ? b : "";
}

// --for values -> device ids (or "members"), resolved against the project's members.
int resolve_for(CliContext& ctx, const std::string& pid, const std::vector<std::string>& wanted,
                std::string& out) {
  if (wanted.empty()) return kOk;
  json::value v;
  if (int rc = ctx.call("GET", "/v1/projects/" + pid + "/members", {}, v)) return rc;
  const auto& members = v.at("members").as_array();
  for (const auto& w : wanted) {
    std::string id;
    if (w == "members") {
      id = w;
    } else {
      std::vector<std::string> hits;
      for (const auto& m : members) {
        std::string dev = str(m.at("device_id"));
        if (dev == w || str(m.at("short_id")) == w || str(m.at("name")) == w ||
            (w.size() >= 4 && dev.compare(0, w.size(), w) == 0))
          hits.push_back(dev);
      }
      std::sort(hits.begin(), hits.end());
      hits.erase(std::unique(hits.begin(), hits.end()), hits.end());
      // A device that is no member record (e.g. one that only imported the project's
      // secret) is given by its full id.
      if (hits.empty() && w.size() == 52) hits.push_back(w);
      if (hits.size() != 1) {
        ctx.err << "syncctl: --for " << escape_for_terminal(w) << ": "
                << (hits.empty() ? "no member of the project matches"
                                 : "several members match; give the device id")
                << "\n";
        return kUsage;
      }
      id = hits[0];
    }
    out += (out.empty() ? "" : ",") + id;
  }
  return kOk;
}

// GET .../bundle into `file` ("-": stdout). Prints the outcome unless quiet.
int export_bundle(CliContext& ctx, const std::string& pid, const std::string& for_list,
                  const std::string& blobs, const std::string& file, bool quiet) {
  std::string target = "/v1/projects/" + pid + "/bundle?blobs=" + blobs;
  if (!for_list.empty()) target += "&for=" + url_encode(for_list);
  Result<HttpReply> r = file == "-" ? ctx.http.download("GET", target, STDOUT_FILENO)
                                    : ctx.http.download_to_file("GET", target, file);
  json::value v;
  if (int rc = ctx.handle_reply(r, v)) return rc;
  if (!quiet && file != "-")
    ctx.err << "wrote " << escape_for_terminal(file) << " (" << human_bytes(r->body_bytes) << ")\n";
  return kOk;
}

std::string imported_line(const json::value& v) {
  std::string who = str(v.at("producer_name"));
  std::string s =
      "from " +
      (who.empty() ? str(v.at("producer_short")) : who + " (" + str(v.at("producer_short")) + ")") +
      ": " + str(v.at("entries")) + " entries, " + str(v.at("applied")) + " new";
  if (v.at("duplicates").as_int64() > 0) s += ", " + str(v.at("duplicates")) + " already here";
  if (v.at("skipped").as_int64() > 0)
    s += ", " + str(v.at("skipped")) + " skipped (another history of their author)";
  if (const auto* o = v.as_object().if_contains("blobs"); o && o->is_object()) {
    const auto& b = o->as_object();
    std::int64_t imported = b.at("imported").as_int64(), held = b.at("held").as_int64(),
                 skipped = b.at("skipped").as_int64();
    if (imported + held + skipped > 0) {
      s += "; blobs: " + std::to_string(imported) + " imported (" +
           human_bytes(static_cast<std::uint64_t>(b.at("bytes").as_int64())) + ")";
      if (held > 0) s += ", " + std::to_string(held) + " already here";
      if (skipped > 0) {
        s += ", " + std::to_string(skipped) + " skipped";
        if (b.at("problem").is_string())
          s += " (" + escape_for_terminal(str(b.at("problem"))) + ")";
      }
    }
  }
  return s;
}

int run_export(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 3) return usage_error(ctx, self, "bundle export takes PROJECT FILE");
  std::string pid;
  if (int rc = ctx.resolve_project(pos[1], pid)) return rc;
  std::string for_list;
  if (int rc = resolve_for(ctx, pid, args.values("for"), for_list)) return rc;
  return export_bundle(ctx, pid, for_list, blobs_value(args, "all"), pos[2], false);
}

int run_import(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 2) return usage_error(ctx, self, "bundle import takes FILE");
  json::value v;
  if (int rc = ctx.handle_reply(ctx.http.upload_file("POST", "/v1/bundles", pos[1]), v)) return rc;
  if (ctx.json) {
    ctx.print_json(v);
    return kOk;
  }
  ctx.out << "imported " << escape_for_terminal(pos[1]) << " " << imported_line(v) << "\n";
  return kOk;
}

// Imports every other device's bundle in DIR, then writes (replaces) this device's own, one
// per project, made for every member of the project.
int run_sync(CliContext& ctx, const Command& self, const Args& args) {
  const auto& pos = args.positional();
  if (pos.size() != 2) return usage_error(ctx, self, "bundle sync takes DIR");
  const fs::path dir = pos[1];
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    ctx.err << "syncctl: " << escape_for_terminal(dir.string()) << " is not a directory\n";
    return kUsage;
  }
  json::value mine;
  if (int rc = ctx.call("GET", "/v1/bundles", {}, mine)) return rc;
  std::set<std::string> own;
  for (const auto& p : mine.at("projects").as_array()) own.insert(str(p.at("file")));

  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() == ".bundle" && it->is_regular_file(ec) && !own.count(p.filename().string()))
      files.push_back(p);
  }
  if (ec) {
    ctx.err << "syncctl: cannot read " << escape_for_terminal(dir.string()) << ": " << ec.message()
            << "\n";
    return kDaemonError;
  }
  std::sort(files.begin(), files.end());

  int failures = 0;
  json::array results;
  for (const auto& f : files) {
    auto r = ctx.http.upload_file("POST", "/v1/bundles", f);
    std::string name = escape_for_terminal(f.filename().string());
    if (!r) {
      ctx.err << "syncctl: " << r.error().message << "\n";
      return r.error().code == Errc::unavailable ? kUnreachable : kDaemonError;
    }
    boost::system::error_code jec;
    json::value v = parse_json(r->body, jec);
    std::string code = r->status >= 400 && v.is_object() && v.as_object().contains("error")
                           ? str(v.at("error"))
                           : "";
    std::string outcome;
    if (r->status == 200 && !jec) {
      outcome = "imported";
      if (!ctx.json) ctx.out << name << ": imported " << imported_line(v) << "\n";
    } else if (code == "already_exists") {
      outcome = "already_imported";
      if (!ctx.json) ctx.out << name << ": already imported\n";
    } else if (code == "failed_precondition") {
      // Made for devices that hold more: this device's own bundle, written below, tells the
      // others what it holds, and their next bundles carry what it lacks.
      outcome = "later";
      if (!ctx.json)
        ctx.out << name << ": made for devices that hold more than this one; its next version "
                << "will include what this device lacks\n";
    } else if (code == "not_found") {
      outcome = "other_project";  // no project on this device matches its tag
      if (!ctx.json) ctx.out << name << ": not for a project on this device\n";
    } else {
      outcome = "failed";
      ++failures;
      if (!ctx.json)
        ctx.err << name << ": "
                << (v.is_object() && v.as_object().contains("message")
                        ? str(v.at("message")) + " (" + code + ")"
                        : "HTTP " + std::to_string(r->status))
                << "\n";
    }
    json::object o;
    o["file"] = f.filename().string();
    o["outcome"] = outcome;
    if (!jec) o["answer"] = v;
    results.push_back(std::move(o));
  }

  // Our own bundles last, so they carry what was just imported to the members who lack it
  // (an import adds no project: the list read above still holds).
  json::array written;
  for (const auto& p : mine.at("projects").as_array()) {
    fs::path out = dir / str(p.at("file"));
    std::string target = "/v1/projects/" + str(p.at("project")) +
                         "/bundle?for=members&blobs=" + blobs_value(args, "variants");
    auto r = ctx.http.download_to_file("GET", target, out);
    json::value v;
    if (int rc = ctx.handle_reply(r, v)) {
      if (rc == kUnreachable) return rc;
      ++failures;
      continue;
    }
    if (!ctx.json)
      ctx.out << escape_for_terminal(out.filename().string()) << ": wrote project "
              << str(p.at("name")) << " (" << human_bytes(r->body_bytes) << ")\n";
    json::object o;
    o["file"] = out.filename().string();
    o["project"] = p.at("project");
    o["bytes"] = r->body_bytes;
    written.push_back(std::move(o));
  }
  if (ctx.json) {
    json::object o;
    o["imported"] = std::move(results);
    o["written"] = std::move(written);
    ctx.print_json(o);
  }
  return failures ? kDaemonError : kOk;
}

int run_bundle(CliContext& ctx, const std::vector<std::string>& argv) {
  const auto& self = find_command("bundle");
  auto args = Args::parse(argv, self);
  if (!args) return usage_error(ctx, self, args.error().message);
  const auto& pos = args->positional();
  if (pos.empty()) return usage_error(ctx, self, "bundle needs export, import or sync");
  if (pos[0] != "export" && !args->values("for").empty())
    return usage_error(ctx, self, "--for applies to bundle export");
  if (!args->values("blobs").empty()) {
    if (pos[0] != "export" && pos[0] != "sync")
      return usage_error(ctx, self, "--blobs applies to bundle export and bundle sync");
    if (blobs_value(*args, "").empty())
      return usage_error(ctx, self, "--blobs must be all, variants or none");
  }
  if (pos[0] == "export") return run_export(ctx, self, *args);
  if (pos[0] == "import") return run_import(ctx, self, *args);
  if (pos[0] == "sync") return run_sync(ctx, self, *args);
  return usage_error(ctx, self, "unknown bundle subcommand '" + pos[0] + "'");
}

FIELDSYNC_CLI_COMMAND(Command{
    "bundle",
    kBundleUsage,
    "sync by USB stick: export, import, sync a folder",
    run_bundle,
    {{"for", "DEVICE|members",
      "bundle export: the devices the bundle is for (a device id, or members); repeatable"},
     {"blobs", "all|variants|none",
      "which attachments the bundle carries (default: all for export, variants for sync)"}}});

}  // namespace
}  // namespace fieldsync::cli
