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
    api["max_page_size"] = ctx.options.max_page_size;
    api["max_connections"] = ctx.options.max_connections;
    api["connections"] = ctx.listen.connections ? ctx.listen.connections() : 0;
    api["streams"] = ctx.listen.streams ? ctx.listen.streams() : 0;
    o["api"] = std::move(api);
    std::string body = json::serialize(o);
    for (const auto& [name, producer] : ctx.status_sections)
      body = splice_member(body, name, producer());
    return json_response(200, std::move(body));
  });
}

}  // namespace fieldsync::ipc
