// The status page (docs/api.md "Status page"): GET /ui/ with /ui/app.js and /ui/app.css,
// POST /ui/session (a login ticket for a page session), POST /v1/ui/login (the login ticket,
// for syncctl ui).
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "common/clock.hpp"
#include "ipc/api_access.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "ipc/ui_assets.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

// Only the page's own files run; it reaches nothing but this origin; nobody frames it.
constexpr const char* kUiPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

ApiResponse ui_file(std::string_view body, const char* type) {
  ApiResponse r;
  r.content_type = type;
  r.body = std::string(body);
  r.headers = {{"Content-Security-Policy", kUiPolicy},
               {"X-Content-Type-Options", "nosniff"},
               {"X-Frame-Options", "DENY"},
               {"Referrer-Policy", "no-referrer"}};
  return r;
}

// The address a browser on this machine opens: the loopback of the listener's family.
std::string page_url(const ApiContext& ctx) {
  const auto& a = ctx.listen.http_address;
  const std::string host = a.find(':') != std::string::npos ? "[::1]" : "127.0.0.1";
  return "http://" + host + ":" + std::to_string(ctx.listen.http_port) + "/ui/";
}

}  // namespace

void register_ui_routes(Router& router, ApiContext& ctx) {
  router.add("GET", "/ui",
             [](ApiRequest&) { return ui_file(kUiIndexHtml, "text/html; charset=utf-8"); });
  router.add("GET", "/ui/app.js",
             [](ApiRequest&) { return ui_file(kUiAppJs, "text/javascript; charset=utf-8"); });
  router.add("GET", "/ui/app.css",
             [](ApiRequest&) { return ui_file(kUiAppCss, "text/css; charset=utf-8"); });
  // A one-time login ticket for the page (token or Unix socket needed, like any /v1 route).
  router.add("POST", "/v1/ui/login", [&ctx](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    if (!ctx.listen.http_enabled)
      return fail(make_error(Errc::unavailable,
                             "the status page needs the HTTP API (api.http_enabled = false)"));
    const std::int64_t now = unix_ms();
    const std::uint32_t ttl = ctx.options.ticket_ttl_ms;
    const std::string login = ctx.ui_logins.issue(now, ttl);
    json::object o;
    o["login"] = login;
    o["url"] = page_url(ctx) + "#login=" + login;
    o["expires_ms"] = now + ttl;
    return json_response(201, json::serialize(o));
  });
  // The page exchanges its login ticket for a session (a bearer credential limited to what
  // the page shows, api_access.hpp ui_session_may). Only from the page's own origin.
  router.add("POST", "/ui/session", [&ctx](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    if (req.transport == Transport::tcp && !is_own_origin(req, req.header("origin").value_or("")))
      return fail(make_error(Errc::permission_denied,
                             "a status page login is only taken from the page's own origin"));
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"login"}, "login"); !st) return fail(st.error());
    const auto* login = obj->if_contains("login");
    if (!login || !login->is_string())
      return fail(make_error(Errc::invalid_argument, "'login' must be the ticket's 64 hex"));
    const std::int64_t now = unix_ms();
    if (!ctx.ui_logins.redeem(std::string_view(login->as_string()), now))
      return fail(make_error(Errc::unauthenticated,
                             "unknown, used or expired login: run syncctl ui for a new link"));
    json::object o;
    o["session"] = ctx.ui_sessions.issue(now, kUiSessionMs);
    o["expires_ms"] = now + kUiSessionMs;
    return json_response(201, json::serialize(o));
  });
}

}  // namespace fieldsync::ipc
