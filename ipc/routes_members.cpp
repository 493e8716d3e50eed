// /v1/projects/{pid}/members[/{device}], /v1/projects/{pid}/invites, /v1/projects/{pid}/leave,
// /v1/verification/{device} (docs/api.md "Members and invites"); /v1/projects/{pid}/destinations
// and /v1/projects/{pid}/delivery (docs/api.md "Destinations and delivery").
#include "ipc/routes_members.hpp"

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>

#include "common/clock.hpp"
#include "common/encoding.hpp"
#include "ipc/json_text.hpp"
#include "ipc/qr_svg.hpp"
#include "ipc/route_support.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "sync/invite_code.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

constexpr std::int64_t kDefaultInviteSeconds = 24 * 3600;
constexpr std::int64_t kMaxInviteSeconds = 30 * 24 * 3600;

json::object member_json(const storage::Member& m) {
  json::object o;
  o["device_id"] = m.device.str();
  o["short_id"] = m.device.short_str();
  o["role"] = storage::role_name(m.role);
  o["name"] = m.name;
  if (m.role == storage::Role::removed) o["max_seq"] = m.max_seq;
  if (m.successor_of) o["successor_of"] = m.successor_of->str();
  o["by"] = m.by.str();
  o["hlc"] = m.hlc;
  return o;
}

Result<DeviceId> device_param(const ApiRequest& req, const char* name) {
  const std::string& text = req.param(name);
  auto id = DeviceId::parse(text);
  if (!id)
    return make_error(Errc::invalid_argument,
                      "bad device id " + quote_input(text) + " (52 base32 chars)");
  return *id;
}

// Where this device can be reached for sync, as its listeners report it (best first). TCP
// addresses are written as host:port (shorter codes, readable by older versions).
std::vector<std::string> invite_addresses(const peers::PeerManager& sync) {
  std::vector<std::string> out;
  for (const auto& a : sync.listen_addresses()) {
    if (out.size() >= sync::InviteCode::kMaxAddresses) break;
    out.push_back(a.scheme == "tcp" ? a.rest : a.str());
  }
  return out;
}

json::object destination_json(const storage::Destination& d) {
  json::object o;
  o["device_id"] = d.device.str();
  o["short_id"] = d.device.short_str();
  o["name"] = d.name;
  o["named_by"] = d.named_by.str();
  return o;
}

// The destinations with what their latest receipt says of `author`'s log (`holds`, or
// `receipt` null when none arrived yet).
json::array destinations_json(const std::vector<storage::Destination>& dests,
                              const std::vector<storage::Receipt>& receipts,
                              const DeviceId& author) {
  json::array out;
  for (const auto& d : dests) {
    json::object o = destination_json(d);
    auto r = std::find_if(receipts.begin(), receipts.end(),
                          [&](const storage::Receipt& x) { return x.hub == d.device; });
    if (r == receipts.end()) {
      o["receipt"] = nullptr;
    } else {
      auto it = r->held.find(author);
      o["receipt"] = {{"at_ms", r->at_ms},
                      {"holds_of_this_device", it == r->held.end() ? 0 : it->second},
                      {"authors", r->held.size()}};
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace

void register_member_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync) {
  // Destinations (hubs) and delivery (docs/api.md "Destinations and delivery").
  router.add("GET", "/v1/projects/{pid}/destinations", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto dests = ctx.store.destinations(*pid);
    if (!dests) return fail(dests.error());
    auto receipts = ctx.store.receipts(*pid);
    if (!receipts) return fail(receipts.error());
    json::object o;
    o["destinations"] = destinations_json(*dests, *receipts, ctx.store.device_id());
    return json_response(200, json::serialize(o));
  });

  // Names a destination: {"name": "office"} (optional).
  router.add("PUT", "/v1/projects/{pid}/destinations/{device}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto device = device_param(req, "device");
    if (!device) return fail(device.error());
    auto obj = parse_object(req.body.empty() ? std::string("{}") : req.body, "request body",
                            ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"name"}, "destination"); !st) return fail(st.error());
    std::string name;
    if (auto* n = obj->if_contains("name")) {
      if (!n->is_string())
        return fail(make_error(Errc::invalid_argument, "'name' must be a string"));
      name = std::string(n->as_string());
    }
    auto d = ctx.store.set_destination(*pid, *device, name, true);
    if (!d) return fail(d.error());
    return json_response(200, json::serialize(destination_json(*d)));
  });

  router.add("DELETE", "/v1/projects/{pid}/destinations/{device}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto device = device_param(req, "device");
    if (!device) return fail(device.error());
    auto d = ctx.store.set_destination(*pid, *device, {}, false);
    if (!d) return fail(d.error());
    return json_response(200, json::serialize(destination_json(*d)));
  });

  router.add("GET", "/v1/projects/{pid}/delivery", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto d = ctx.store.delivery(*pid);
    if (!d) return fail(d.error());
    json::object o;
    o["written_seq"] = d->written;
    o["delivered_seq"] = d->delivered;
    o["undelivered"] = d->written - d->delivered;
    if (d->oldest_undelivered_ms) {
      o["oldest_undelivered_ms"] = d->oldest_undelivered_ms;
    } else {
      o["oldest_undelivered_ms"] = nullptr;
    }
    o["destinations"] = destinations_json(d->destinations, d->receipts, ctx.store.device_id());
    json::object c;
    c["documents_removed"] = d->cleaned_documents;
    c["bytes_freed"] = d->cleaned_bytes;
    if (d->cleaned_at_ms) {
      c["last_removed_ms"] = d->cleaned_at_ms;
    } else {
      c["last_removed_ms"] = nullptr;
    }
    o["cleanup"] = std::move(c);
    return json_response(200, json::serialize(o));
  });

  // Clean-up now (docs/api.md "Destinations and delivery"): {"min_age_ms"?: N} (default 0).
  router.add("POST", "/v1/projects/{pid}/cleanup", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    std::int64_t min_age = 0;
    if (!req.body.empty()) {
      auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
      if (!obj) return fail(obj.error());
      if (auto st = check_fields(*obj, {"min_age_ms"}, "clean-up request"); !st)
        return fail(st.error());
      if (auto* m = obj->if_contains("min_age_ms")) {
        if (!m->is_int64() || m->as_int64() < 0)
          return fail(
              make_error(Errc::invalid_argument, "'min_age_ms' must be a non-negative integer"));
        min_age = m->as_int64();
      }
    }
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    auto r = ctx.store.clean_up(*pid, min_age, now);
    if (!r) return fail(r.error());
    json::object o;
    o["documents_removed"] = r->documents_removed;
    o["versions_removed"] = r->versions_removed;
    o["bytes_freed"] = r->bytes_freed;
    o["documents_undelivered"] = r->documents_kept;
    o["documents_too_new"] = r->documents_too_new;
    return json_response(200, json::serialize(o));
  });

  router.add("GET", "/v1/projects/{pid}/members", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto members = ctx.store.members(*pid);
    if (!members) return fail(members.error());
    json::array list;
    for (const auto& m : *members) list.push_back(member_json(m));
    json::object o;
    o["members"] = std::move(list);
    return json_response(200, json::serialize(o));
  });

  // Sets a device's role: {"role": "coordinator"|"member"|"removed", "name": "..."}.
  router.add("PUT", "/v1/projects/{pid}/members/{device}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto device = device_param(req, "device");
    if (!device) return fail(device.error());
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"role", "name"}, "member"); !st) return fail(st.error());
    auto* role_v = obj->if_contains("role");
    auto role = role_v && role_v->is_string()
                    ? storage::parse_role(std::string_view(role_v->as_string()))
                    : std::nullopt;
    if (!role)
      return fail(
          make_error(Errc::invalid_argument, "'role' must be coordinator, member or removed"));
    std::string name;
    if (auto* n = obj->if_contains("name")) {
      if (!n->is_string())
        return fail(make_error(Errc::invalid_argument, "'name' must be a string"));
      name = std::string(n->as_string());
    }
    auto m = ctx.store.set_member(*pid, *device, *role, name);
    if (!m) return fail(m.error());
    return json_response(200, json::serialize(member_json(*m)));
  });

  // Revocation: the signed removal spreads by sync.
  router.add("DELETE", "/v1/projects/{pid}/members/{device}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto device = device_param(req, "device");
    if (!device) return fail(device.error());
    auto m = ctx.store.set_member(*pid, *device, storage::Role::removed);
    if (!m) return fail(m.error());
    return json_response(200, json::serialize(member_json(*m)));
  });

  // {"role": "member", "expires_in_s": 3600} -> {"code": "FS1:...", ...}
  router.add("POST", "/v1/projects/{pid}/invites", [&ctx, sync](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto obj = parse_object(req.body.empty() ? std::string("{}") : req.body, "request body",
                            ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"role", "expires_in_s"}, "invite"); !st)
      return fail(st.error());
    if (auto q = known_query(req, {"qr"}); !q) return fail(q.error());
    const auto qr = req.query_value("qr");
    if (qr && *qr != "svg")
      return fail(make_error(Errc::invalid_argument, "qr must be svg (the code as an SVG image)"));
    storage::Role role = storage::Role::member;
    if (auto* r = obj->if_contains("role")) {
      auto parsed =
          r->is_string() ? storage::parse_role(std::string_view(r->as_string())) : std::nullopt;
      if (!parsed || *parsed == storage::Role::removed)
        return fail(make_error(Errc::invalid_argument, "'role' must be member or coordinator"));
      role = *parsed;
    }
    std::int64_t secs = kDefaultInviteSeconds;
    if (auto* e = obj->if_contains("expires_in_s")) {
      if (!e->is_int64() || e->as_int64() <= 0 || e->as_int64() > kMaxInviteSeconds)
        return fail(make_error(Errc::invalid_argument,
                               "'expires_in_s' must be 1.." + std::to_string(kMaxInviteSeconds)));
      secs = e->as_int64();
    }
    if (!sync)
      return fail(make_error(Errc::unavailable,
                             "sync is disabled (sync.enabled = false): nobody could join"));
    auto project = ctx.store.get_project(*pid);
    if (!project) return fail(project.error());
    auto inv = ctx.store.create_invite(*pid, role, unix_ms() + secs * 1000);
    if (!inv) return fail(inv.error());
    sync::InviteCode code;
    code.inviter = ctx.store.device_id();
    code.project = *pid;
    code.project_name = project->name;
    code.invite_id = inv->id;
    code.secret = inv->secret;
    code.expires_ms = inv->expires_ms;
    code.addresses = invite_addresses(*sync);
    json::object o;
    o["code"] = code.encode();
    o["invite_id"] = to_hex(ByteView(inv->id));
    o["role"] = storage::role_name(role);
    o["expires_ms"] = inv->expires_ms;
    json::array addrs;
    for (const auto& a : code.addresses) addrs.push_back(json::value(a));
    o["addresses"] = std::move(addrs);
    if (qr) {
      auto svg = qr_svg(std::string_view(o["code"].as_string()));
      if (!svg) return fail(svg.error());
      o["qr_svg"] = *svg;
    }
    return json_response(201, json::serialize(o));
  });

  router.add("GET", "/v1/projects/{pid}/invites", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto list = ctx.store.list_invites(*pid);
    if (!list) return fail(list.error());
    json::array out;
    std::int64_t now = unix_ms();
    for (const auto& inv : *list) {
      json::object o;
      o["invite_id"] = to_hex(ByteView(inv.id));
      o["role"] = storage::role_name(inv.role);
      o["expires_ms"] = inv.expires_ms;
      o["state"] = inv.used_by ? "used" : (now > inv.expires_ms ? "expired" : "open");
      o["used_by"] = inv.used_by ? json::value(inv.used_by->str()) : json::value(nullptr);
      out.push_back(std::move(o));
    }
    json::object o;
    o["invites"] = std::move(out);
    return json_response(200, json::serialize(o));
  });

  router.add("POST", "/v1/projects/{pid}/leave", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    if (auto st = ctx.store.leave_project(*pid); !st) return fail(st.error());
    if (ctx.listen.project_left) ctx.listen.project_left(*pid);
    json::object o;
    o["left"] = pid->str();
    return json_response(200, json::serialize(o));
  });

  // The code two people compare before trusting each other's devices.
  router.add("GET", "/v1/verification/{device}", [&ctx](ApiRequest& req) {
    auto device = device_param(req, "device");
    if (!device) return fail(device.error());
    json::object o;
    o["device_id"] = device->str();
    o["code"] = sync::verification_code(ctx.store.device_id(), *device);
    return json_response(200, json::serialize(o));
  });
}

}  // namespace fieldsync::ipc
