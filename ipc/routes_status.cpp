// GET /v1/status
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "storage/store.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

void register_status_routes(Router& router, ApiContext& ctx) {
  router.add("GET", "/v1/status", [&ctx](ApiRequest&) {
    std::vector<storage::ProjectProblem> unreadable;
    auto projects = ctx.store.list_projects(&unreadable);
    if (!projects) return fail(projects.error());
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - ctx.started);
    json::object o;
    o["device_id"] = ctx.store.device_id().str();
    o["device_id_short"] = ctx.store.device_id().short_str();
    o["device_name"] = ctx.device_name;
    o["version"] = ctx.version;
    o["uptime_s"] = uptime.count();
    o["projects"] = projects->size();
    json::array bad;
    for (const auto& p : unreadable) {
      json::object e;
      e["id"] = p.id;
      e["error"] = p.error;
      bad.emplace_back(std::move(e));
    }
    o["unreadable_projects"] = std::move(bad);
    json::object api;
    api["socket"] = ctx.listen.socket_path;
    json::object http;
    http["enabled"] = ctx.listen.http_enabled;
    http["address"] = ctx.listen.http_address;
    http["port"] = ctx.listen.http_port;
    api["http"] = std::move(http);
    api["max_body_bytes"] = ctx.options.max_body_bytes;
    api["max_stream_bytes"] = ctx.options.max_stream_bytes;
    api["max_page_size"] = ctx.options.max_page_size;
    api["max_connections"] = ctx.options.max_connections;
    api["connections"] = ctx.listen.connections ? ctx.listen.connections() : 0;
    api["streams"] = ctx.listen.streams ? ctx.listen.streams() : 0;
    api["stream_bytes"] = ctx.listen.stream_bytes ? ctx.listen.stream_bytes() : 0;
    o["api"] = std::move(api);
    // Identity renewals and devices seen with two histories (docs/storage.md "One identity,
    // one history").
    json::object identity;
    json::array retired;
    for (const auto& id : ctx.store.retired_ids()) retired.push_back(json::value(id.str()));
    identity["previous"] = std::move(retired);
    if (auto change = ctx.store.last_identity_change()) {
      identity["renewed_from"] = change->previous.str();
      identity["renewed_at_ms"] = change->at_ms;
      identity["reason"] = change->reason;
    }
    identity["renewal_pending"] = ctx.store.identity_renewal_pending();
    o["identity"] = std::move(identity);
    json::array forks;
    for (const auto& p : *projects) {
      auto list = ctx.store.forks(p.id);
      if (!list) continue;
      for (const auto& f : *list) {
        json::object fo;
        fo["project"] = p.id.str();
        fo["device"] = f.author.str();
        fo["seq"] = f.seq;
        fo["seen_ms"] = f.seen_ms;
        fo["resolved"] = f.resolved;
        if (f.successor) fo["successor"] = f.successor->str();
        forks.push_back(std::move(fo));
      }
    }
    o["diverged_logs"] = std::move(forks);
    std::string body = json::serialize(o);
    for (const auto& [name, producer] : ctx.status_sections)
      body = splice_member(body, name, producer());
    return json_response(200, std::move(body));
  });

  // A consistent hot copy of the device's data (docs/operations.md "Backup and restore").
  router.add("POST", "/v1/backup", [&ctx](ApiRequest& req) {
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"path"}, "backup request"); !st) return fail(st.error());
    auto* path = obj->if_contains("path");
    if (!path || !path->is_string())
      return fail(
          make_error(Errc::invalid_argument, "\"path\" (an absolute directory) is required"));
    auto info = ctx.store.backup(std::string(path->as_string()));
    if (!info) return fail(info.error());
    json::object o;
    o["path"] = info->path.string();
    o["bytes"] = info->bytes;
    o["device_id"] = ctx.store.device_id().str();
    return json_response(200, json::serialize(o));
  });
}

}  // namespace fieldsync::ipc
