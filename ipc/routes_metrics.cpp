// GET /metrics (Prometheus text format 0.0.4) and GET /v1/health (docs/api.md "Metrics",
// "Health"). Both follow the API's access rules (ipc/api_access.hpp): no token on the Unix
// socket, the bearer token over TCP.
#include <chrono>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "ipc/metrics.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "storage/store.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

constexpr const char* kExpositionType = "text/plain; version=0.0.4; charset=utf-8";

// Per project: what the store keeps without a scan: the version vector (one head per author)
// and the changes feed position. A count of documents (or of documents in conflict) would need
// a scan of the project's documents, so it is not exposed.
Status write_project_metrics(MetricsWriter& w, const ApiContext& ctx) {
  std::vector<storage::ProjectProblem> unreadable;
  auto projects = ctx.store.list_projects(&unreadable);
  if (!projects) return projects.error();
  w.family("fieldsync_projects", "gauge", "Projects this device holds (readable ones).");
  w.sample("fieldsync_projects", {}, static_cast<std::uint64_t>(projects->size()));
  w.family("fieldsync_projects_unreadable", "gauge",
           "Projects whose record cannot be read (see GET /v1/status).");
  w.sample("fieldsync_projects_unreadable", {}, static_cast<std::uint64_t>(unreadable.size()));
  struct Row {
    std::string project;
    std::uint64_t versions = 0;
    std::uint64_t changes = 0;
  };
  std::vector<Row> rows;
  for (const auto& p : *projects) {
    Row r{p.id.str()};
    if (auto vv = ctx.store.version_vector(p.id))
      for (const auto& [author, seq] : *vv) r.versions += seq;
    if (auto seq = ctx.store.last_change_seq(p.id)) r.changes = *seq;
    rows.push_back(std::move(r));
  }
  w.family("fieldsync_project_versions", "gauge",
           "Versions of the project's device logs held here (the sum of its version vector: "
           "every write of any device, received or local).");
  for (const auto& r : rows)
    w.sample("fieldsync_project_versions", {{"project", r.project}}, r.versions);
  w.family("fieldsync_project_changes", "gauge",
           "Position of the project's changes feed: document changes recorded here.");
  for (const auto& r : rows)
    w.sample("fieldsync_project_changes", {{"project", r.project}}, r.changes);
  return {};
}

void write_latency(MetricsWriter& w, std::string_view name, std::string_view help,
                   const storage::LatencySnapshot& s) {
  w.family(name, "histogram", help);
  write_histogram(w, name, s.bounds, s.buckets, s.sum_seconds, s.count);
}

// The store's commit and fsync latency (atomic counters in storage/: no lock, no scan).
void write_storage_metrics(MetricsWriter& w, const ApiContext& ctx) {
  write_latency(w, "fieldsync_storage_commit_seconds",
                "Time of each write transaction's commit in the store (with its fsync when "
                "storage.durable = true).",
                ctx.store.commit_latency());
  write_latency(w, "fieldsync_storage_fsync_seconds",
                "Time of each fsync the store makes besides its commits (blob files and their "
                "directories).",
                ctx.store.fsync_latency());
}

}  // namespace

void register_metrics_routes(Router& router, ApiContext& ctx) {
  router.add("GET", "/metrics", [&ctx](ApiRequest& req) {
    if (auto st = known_query(req, {}); !st) return fail(st.error());
    MetricsWriter w;
    w.family("fieldsync_build_info", "gauge", "Always 1; the label names the daemon's version.");
    w.sample("fieldsync_build_info", {{"version", ctx.version}}, std::uint64_t{1});
    w.family("fieldsync_uptime_seconds", "gauge", "Seconds since the API started.");
    w.sample("fieldsync_uptime_seconds", {},
             std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.started).count());
    if (auto st = write_project_metrics(w, ctx); !st) return fail(st.error());
    write_storage_metrics(w, ctx);
    w.family("fieldsync_api_connections", "gauge", "Open API connections (both listeners).");
    w.sample("fieldsync_api_connections", {},
             static_cast<std::uint64_t>(ctx.listen.connections ? ctx.listen.connections() : 0));
    ctx.metrics.write(w);
    for (const auto& section : ctx.metrics_sections) section(w);
    ApiResponse r;
    r.content_type = kExpositionType;
    r.body = w.take();
    return r;
  });

  // For load balancers and service managers: 200 when the store answers a read and nothing
  // keeps the daemon from serving; 503 with the reasons otherwise. That this handler runs at
  // all shows the daemon's event loop answers.
  router.add("GET", "/v1/health", [&ctx](ApiRequest& req) {
    if (auto st = known_query(req, {}); !st) return fail(st.error());
    std::vector<std::string> reasons;
    if (auto projects = ctx.store.list_projects(); !projects)
      reasons.push_back("store unavailable: " + projects.error().message);
    if (ctx.store.identity_renewal_pending())
      reasons.push_back(
          "identity renewal pending: local writes fail until the store is reopened with a "
          "new device identity (docs/storage.md \"One identity, one history\")");
    for (const auto& check : ctx.health_checks)
      if (auto reason = check(); !reason.empty()) reasons.push_back(std::move(reason));
    if (!reasons.empty()) {
      std::string message;
      for (const auto& r : reasons) message += (message.empty() ? "" : "; ") + r;
      return fail(make_error(Errc::unavailable, "not healthy: " + message));
    }
    json::object o;
    o["status"] = "ok";
    o["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::steady_clock::now() - ctx.started)
                        .count();
    return json_response(200, json::serialize(o));
  });
}

}  // namespace fieldsync::ipc
