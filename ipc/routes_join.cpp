// POST /v1/join {"code": "FS1:..."}: decode the invite code, reach the inviter, join.
#include "ipc/routes_join.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <ctime>

#include "common/clock.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "sync/invite_code.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

std::string utc_text(std::int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string joined_json(const peers::PeerManager::JoinOutcome& out, const sync::InviteCode& code) {
  json::object inviter;
  inviter["device_id"] = code.inviter.str();
  inviter["short_id"] = code.inviter.short_str();
  inviter["name"] = out.inviter_name;
  inviter["address"] = out.address;
  // The project is rendered by the shared helper; splice it in as raw JSON text.
  return "{\"project\":" + project_json(out.project) + ",\"inviter\":" + json::serialize(inviter) +
         "}";
}

}  // namespace

void register_join_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync) {
  router.add("POST", "/v1/join", [&ctx, sync](ApiRequest& req) {
    if (req.transport != Transport::unix_socket)
      return fail(
          make_error(Errc::permission_denied, "projects are only joined on the Unix socket"));
    if (!sync)
      return fail(
          make_error(Errc::unavailable, "sync is disabled (sync.enabled = false): cannot join"));
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"code"}, "join"); !st) return fail(st.error());
    auto* text = obj->if_contains("code");
    if (!text || !text->is_string())
      return fail(make_error(Errc::invalid_argument,
                             "'code' (string, the FS1:... invite code) is required"));
    auto code = sync::InviteCode::decode(std::string_view(text->as_string()));
    if (!code) return fail(code.error());
    // The code's own expiry: no need to bother the inviter (it checks again with its clock).
    if (code->expires_ms <= unix_ms())
      return fail(
          make_error(Errc::invalid_argument,
                     "invite expired at " + utc_text(code->expires_ms) + ": ask for a new code"));
    if (code->inviter == ctx.store.device_id())
      return fail(make_error(Errc::invalid_argument, "this invite was made on this device"));
    if (auto have = ctx.store.get_project(code->project); have.ok())
      return fail(make_error(Errc::already_exists, "this device already has project " +
                                                       quote_input(have->name) + " (" +
                                                       code->project.str() + ")"));
    ApiResponse r;
    r.deferred = std::make_shared<DeferredResponse>();
    // Safety net only: the sync service answers within its own bound.
    r.deferred->timeout = std::chrono::milliseconds(sync->join_timeout_ms(*code) + 2000);
    r.deferred->start = [sync, code = *code](std::function<void(ApiResponse)> reply) {
      sync->join(code, [reply, code](Result<peers::PeerManager::JoinOutcome> out) {
        if (!out) return reply(fail(out.error()));
        reply(json_response(200, joined_json(*out, code)));
      });
    };
    r.deferred->on_timeout = [] {
      return fail(make_error(Errc::unavailable,
                             "joining did not finish in time: the inviter did not answer"));
    };
    return r;
  });
}

}  // namespace fieldsync::ipc
