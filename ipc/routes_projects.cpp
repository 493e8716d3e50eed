// /v1/projects, /v1/projects/{pid}, /v1/projects/{pid}/collections
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>

#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "storage/store.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

// Reads "name" (string) and "settings" (object, raw text) from a project envelope.
struct ProjectFields {
  std::optional<std::string> name;
  std::optional<std::string> settings;
};

Result<ProjectFields> project_fields(const std::string& body, std::uint32_t max_depth) {
  auto obj = parse_object(body, "request body", max_depth);
  if (!obj) return obj.error();
  FS_TRY(check_fields(*obj, {"name", "settings"}, "project"));
  ProjectFields f;
  if (auto* n = obj->if_contains("name")) {
    if (!n->is_string() || n->as_string().empty())
      return make_error(Errc::invalid_argument, "'name' must be a non-empty string");
    f.name = std::string(n->as_string());
  }
  if (auto* s = obj->if_contains("settings")) {
    if (!s->is_object())
      return make_error(Errc::invalid_argument, "'settings' must be a JSON object");
    f.settings = std::string(*raw_member(body, "settings"));
  }
  return f;
}

}  // namespace

void register_project_routes(Router& router, ApiContext& ctx) {
  router.add("GET", "/v1/projects", [&ctx](ApiRequest&) {
    std::vector<storage::ProjectProblem> unreadable;
    auto list = ctx.store.list_projects(&unreadable);
    if (!list) return fail(list.error());
    std::string s = "{\"projects\":[";
    for (std::size_t i = 0; i < list->size(); ++i) s += (i ? "," : "") + project_json((*list)[i]);
    // A project whose record cannot be read is listed with an error instead of failing the list.
    for (std::size_t i = 0; i < unreadable.size(); ++i)
      s += (list->empty() && i == 0 ? "" : ",") + project_problem_json(unreadable[i]);
    return json_response(200, s + "]}");
  });

  router.add("POST", "/v1/projects", [&ctx](ApiRequest& req) {
    auto f = project_fields(req.body, ctx.options.max_json_depth);
    if (!f) return fail(f.error());
    if (!f->name) return fail(make_error(Errc::invalid_argument, "'name' is required"));
    auto p = ctx.store.create_project(*f->name, f->settings.value_or("{}"));
    if (!p) return fail(p.error());
    return json_response(201, project_json(*p));
  });

  router.add("GET", "/v1/projects/{pid}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto p = ctx.store.get_project(*pid);
    if (!p) return fail(p.error());
    auto sub = ctx.store.subscription(*pid);
    if (!sub) return fail(sub.error());
    return json_response(200, splice_member(project_json(*p), "subscription", sub->canonical()));
  });

  router.add("PATCH", "/v1/projects/{pid}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto f = project_fields(req.body, ctx.options.max_json_depth);
    if (!f) return fail(f.error());
    auto p = ctx.store.update_project(*pid, f->name, f->settings);
    if (!p) return fail(p.error());
    return json_response(200, project_json(*p));
  });

  router.add("GET", "/v1/projects/{pid}/collections", [&ctx](ApiRequest& request) {
    // A read: on a reader thread (ipc/reader_pool.hpp).
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      auto list = ctx.store.list_collections(*pid);
      if (!list) return fail(list.error());
      json::array a;
      for (auto& c : *list) a.emplace_back(c);
      return json_response(200, "{\"collections\":" + json::serialize(a) + "}");
    });
  });
}

}  // namespace fieldsync::ipc
