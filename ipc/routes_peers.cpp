// /v1/peers, /v1/peers/{id}, /v1/peers/{id}/sync, /v1/projects/{pid}/sync,
// /v1/projects/import and /v1/projects/{pid}/secret (project transfer, docs/api.md "Peers and
// sync").
#include "ipc/routes_peers.hpp"

#include <map>
#include <set>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "common/encoding.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "transports/address.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

json::value error_json(const std::optional<Error>& e) {
  if (!e) return nullptr;
  json::object o;
  o["error"] = errc_name(e->code);
  o["message"] = e->message;
  return o;
}

json::value reason_json(const std::optional<peers::PeerReason>& r) {
  if (!r) return nullptr;
  json::object o;
  o["code"] = peers::peer_reason_name(r->code);
  o["message"] = r->message;
  o["project"] = r->project ? json::value(r->project->str()) : json::value(nullptr);
  return o;
}

json::object project_progress_json(const sync::ProjectProgress& p) {
  json::object o;
  o["project"] = p.project.str();
  o["to_send"] = p.to_send;
  o["to_receive"] = p.to_receive;
  o["sent"] = p.sent;
  o["received"] = p.received;
  o["applied"] = p.applied;
  o["bytes_sent"] = p.bytes_sent;
  o["bytes_received"] = p.bytes_received;
  o["rate_bytes_per_s"] = p.rate_bytes_per_s;
  o["in_sync"] = p.in_sync;
  o["last_sync_ms"] = p.last_sync_ms;
  o["blob_bytes_sent"] = p.blob_bytes_sent;
  o["blob_bytes_received"] = p.blob_bytes_received;
  o["blobs_received"] = p.blobs_received;
  if (!p.blob_policy.empty()) {
    json::object b;
    b["policy"] = p.blob_policy;
    b["to_receive"] = p.blobs_to_receive;
    b["bytes_to_receive"] = p.blob_bytes_to_receive;
    b["to_send"] = p.blobs_to_send;
    b["bytes_to_send"] = p.blob_bytes_to_send;
    b["received"] = p.blobs_received;
    b["bytes_received"] = p.blob_bytes_received;
    b["bytes_sent"] = p.blob_bytes_sent;
    if (p.blob_fetching) {
      json::object f;
      f["blob"] = *p.blob_fetching;
      f["size"] = p.blob_fetching_size;
      f["bytes"] = p.blob_fetching_bytes;
      b["fetching"] = std::move(f);
    } else {
      b["fetching"] = nullptr;
    }
    o["blobs"] = std::move(b);
  } else {
    o["blobs"] = nullptr;
  }
  return o;
}

json::object peer_json(const peers::PeerStatus& s) {
  json::object o;
  o["device_id"] = s.device.str();
  o["short_id"] = s.device.short_str();
  o["name"] = s.name;
  o["address"] = s.address;
  o["configured"] = s.configured;
  o["connected"] = s.connected;
  o["direction"] =
      s.connected ? json::value(s.outgoing ? "outgoing" : "incoming") : json::value(nullptr);
  o["state"] = peers::peer_state_name(s.state);
  o["last_sync_ms"] = s.last_sync_ms;
  o["next_retry_ms"] = s.next_retry_ms;
  o["failures"] = s.failures;
  o["last_error"] = error_json(s.last_error);
  o["reason"] = reason_json(s.reason);
  o["transport"] = s.transport.empty() ? json::value(nullptr) : json::value(s.transport);
  o["remote"] = s.remote.empty() ? json::value(nullptr) : json::value(s.remote);
  o["link"] = s.link ? json::value(transports::link_class_name(*s.link)) : json::value(nullptr);
  o["wire_bytes_sent"] = s.wire_bytes_sent;
  o["wire_bytes_received"] = s.wire_bytes_received;
  o["approved"] = s.approved;
  json::array pending;
  for (const auto& p : s.pending_projects) pending.emplace_back(p.str());
  o["pending_projects"] = std::move(pending);
  o["verification_code"] = s.verification_code;
  if (s.session) {
    json::object ss;
    ss["state"] = sync::session_state_name(s.session->state);
    ss["protocol"] = s.session->protocol;
    ss["bytes_sent"] = s.session->bytes_sent;
    ss["bytes_received"] = s.session->bytes_received;
    json::array projects;
    for (const auto& p : s.session->projects) projects.push_back(project_progress_json(p));
    ss["projects"] = std::move(projects);
    ss["error"] = error_json(s.session->error);
    o["session"] = std::move(ss);
  } else {
    o["session"] = nullptr;
  }
  return o;
}

json::object discovered_json(const DiscoveredPeerInfo& d) {
  json::object o;
  json::array addrs, projects;
  for (const auto& a : d.addresses) addrs.emplace_back("tcp://" + a);
  for (const auto& p : d.projects) projects.emplace_back(p.str());
  o["addresses"] = std::move(addrs);
  o["projects"] = std::move(projects);
  o["first_seen_ms"] = d.first_seen_ms;
  o["last_seen_ms"] = d.last_seen_ms;
  o["auto"] = d.auto_peer;
  o["local"] = d.local;
  return o;
}

// A discovered device the sync layer does not know yet: same shape as peer_json.
json::object discovered_peer_json(const DiscoveredPeerInfo& d) {
  json::object o;
  o["device_id"] = d.device.str();
  o["short_id"] = d.device.short_str();
  o["name"] = d.name;
  o["address"] = d.addresses.empty() ? std::string() : "tcp://" + d.addresses.front();
  o["configured"] = false;
  o["connected"] = false;
  o["direction"] = nullptr;
  o["state"] = "discovered";
  o["last_sync_ms"] = 0;
  o["next_retry_ms"] = 0;
  o["failures"] = 0;
  o["last_error"] = nullptr;
  o["reason"] = nullptr;
  o["transport"] = nullptr;
  o["remote"] = nullptr;
  o["link"] = nullptr;
  o["wire_bytes_sent"] = 0;
  o["wire_bytes_received"] = 0;
  o["approved"] = false;
  o["pending_projects"] = json::array();
  o["verification_code"] = nullptr;  // GET /v1/verification/{device} computes it
  o["session"] = nullptr;
  o["discovered"] = discovered_json(d);
  return o;
}

json::object peer_json(const peers::PeerStatus& s, const DiscoveredPeers& disc) {
  json::object o = peer_json(s);
  std::optional<DiscoveredPeerInfo> d;
  if (disc.find) d = disc.find(s.device);
  o["discovered"] = d ? json::value(discovered_json(*d)) : json::value(nullptr);
  return o;
}

Result<DeviceId> device_param(const ApiRequest& req) {
  const std::string& text = req.param("id");
  auto id = DeviceId::parse(text);
  if (!id)
    return make_error(Errc::invalid_argument,
                      "bad device id " + quote_input(text) + " (52 base32 chars)");
  return *id;
}

Error sync_disabled() {
  return make_error(Errc::unavailable, "sync is disabled (sync.enabled = false)");
}

}  // namespace

std::string peers_status_json(const peers::PeerManager* sync) {
  json::object o;
  o["enabled"] = sync != nullptr;
  std::uint64_t known = 0, connected = 0, in_sync = 0;
  if (sync) {
    for (const auto& p : sync->peers()) {
      ++known;
      connected += p.connected;
      in_sync += p.state == peers::PeerState::in_sync;
    }
    json::array addrs;
    std::uint16_t tcp_port = 0;
    for (const auto& a : sync->listen_addresses()) {
      addrs.emplace_back(a.str());
      if (auto hp = transports::split_host_port(a.rest); a.scheme == "tcp" && hp && !tcp_port)
        tcp_port = hp->second;
    }
    o["listen_port"] = tcp_port;
    o["listen_addresses"] = std::move(addrs);
  }
  o["known"] = known;
  o["connected"] = connected;
  o["in_sync"] = in_sync;
  return json::serialize(o);
}

void write_peer_metrics(MetricsWriter& w, const peers::PeerManager* sync) {
  if (!sync) return;
  std::map<peers::PeerState, std::uint64_t> by_state;
  for (auto st : peers::kPeerStates) by_state[st] = 0;
  for (const auto& p : sync->peers()) ++by_state[p.state];
  w.family("fieldsync_peers", "gauge", "Peers the sync engine knows, by state.");
  for (const auto& [st, n] : by_state)
    w.sample("fieldsync_peers", {{"state", std::string(peers::peer_state_name(st))}}, n);
  const auto totals = sync->transfer_totals();
  auto counter = [&](const char* name, const char* help,
                     std::uint64_t peers::TransferTotals::*member) {
    w.family(name, "counter", help);
    for (const auto& [scheme, t] : totals) w.sample(name, {{"transport", scheme}}, t.*member);
  };
  counter("fieldsync_sync_bytes_sent_total", "Sync frame bytes sent to peers.",
          &peers::TransferTotals::bytes_sent);
  counter("fieldsync_sync_bytes_received_total", "Sync frame bytes received from peers.",
          &peers::TransferTotals::bytes_received);
  counter("fieldsync_sync_wire_bytes_sent_total",
          "Bytes sent on the transport's medium (encryption included).",
          &peers::TransferTotals::wire_bytes_sent);
  counter("fieldsync_sync_wire_bytes_received_total",
          "Bytes received on the transport's medium (encryption included).",
          &peers::TransferTotals::wire_bytes_received);
  counter("fieldsync_sync_versions_sent_total", "Versions sent to peers.",
          &peers::TransferTotals::versions_sent);
  counter("fieldsync_sync_versions_received_total",
          "Versions received from peers (newly applied or already held).",
          &peers::TransferTotals::versions_received);
  counter("fieldsync_sync_connections_closed_total", "Peer connections that ended.",
          &peers::TransferTotals::connections_closed);
}

void register_peer_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync,
                          DiscoveredPeers disc) {
  router.add("GET", "/v1/peers", [sync, disc](ApiRequest&) {
    if (!sync) return fail(sync_disabled());
    json::array list;
    std::set<DeviceId> known;
    for (const auto& p : sync->peers()) {
      known.insert(p.device);
      list.push_back(peer_json(p, disc));
    }
    if (disc.list)
      for (const auto& d : disc.list())
        if (!known.count(d.device)) list.push_back(discovered_peer_json(d));
    json::object o;
    o["peers"] = std::move(list);
    return json_response(200, json::serialize(o));
  });

  router.add("POST", "/v1/peers", [&ctx, sync, disc](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"address", "device_id", "name"}, "peer"); !st)
      return fail(st.error());
    auto* addr = obj->if_contains("address");
    auto* dev = obj->if_contains("device_id");
    if ((addr && !addr->is_string()) || !dev || !dev->is_string())
      return fail(make_error(Errc::invalid_argument,
                             "'device_id' (string) is required, and 'address' "
                             "(string) unless the device was discovered"));
    auto id = DeviceId::parse(dev->as_string());
    if (!id) return fail(make_error(Errc::invalid_argument, "bad device_id (52 base32 chars)"));
    std::string address;
    if (addr) {
      address = std::string(addr->as_string());
    } else {
      // No address: the device was picked from the discovered list; take where it was seen.
      std::optional<DiscoveredPeerInfo> d;
      if (disc.find) d = disc.find(*id);
      if (!d || d->addresses.empty())
        return fail(
            make_error(Errc::not_found, "device " + id->short_str() +
                                            " has not been discovered on the local network; "
                                            "give its 'address'"));
      address = d->addresses.front();
    }
    std::string name;
    if (auto* n = obj->if_contains("name"); n && n->is_string()) name = std::string(n->as_string());
    if (auto st = sync->add_peer(address, *id, name, /*persist=*/true); !st)
      return fail(st.error());
    return json_response(201, json::serialize(peer_json(*sync->peer(*id), disc)));
  });

  router.add("GET", "/v1/peers/{id}", [&ctx, sync, disc](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto id = device_param(req);
    if (!id) return fail(id.error());
    auto p = sync->peer(*id);
    if (!p && disc.find)
      if (auto d = disc.find(*id))
        return json_response(200, json::serialize(discovered_peer_json(*d)));
    // Per project: what the device is known to hold (recorded by sessions, kept across
    // restarts) and so what it lacks of ours, with or without a connection.
    json::array projects;
    if (auto list = ctx.store.list_projects(); list.ok()) {
      for (const auto& proj : *list) {
        auto lacks = ctx.store.peer_lacks(*id, proj.id);
        if (!lacks.ok() || !lacks->known) continue;
        json::object po;
        po["project"] = proj.id.str();
        po["name"] = proj.name;
        po["lacks_entries"] = lacks->entries;
        po["lacks_bytes"] = lacks->bytes;
        po["lacks_authors"] = lacks->authors;
        projects.push_back(std::move(po));
      }
    }
    // A device that is not in the peer list now (it dialed us before a restart) but whose
    // holdings are recorded: shown idle, with what it lacks.
    if (!p && projects.empty()) return fail(p.error());
    peers::PeerStatus idle;
    idle.device = *id;
    idle.verification_code = sync::verification_code(ctx.store.device_id(), *id);
    json::object o = peer_json(p ? *p : idle, disc);
    o["projects"] = std::move(projects);
    return json_response(200, json::serialize(o));
  });

  router.add("DELETE", "/v1/peers/{id}", [sync](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto id = device_param(req);
    if (!id) return fail(id.error());
    if (auto st = sync->remove_peer(*id); !st) return fail(st.error());
    return json_response(200, "{\"removed\":" + json_quote(id->str()) + "}");
  });

  // trust_policy = ask: the user compared the verification code and trusts the device.
  router.add("POST", "/v1/peers/{id}/approve", [sync, disc](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto id = device_param(req);
    if (!id) return fail(id.error());
    if (auto st = sync->approve_peer(*id); !st) return fail(st.error());
    return json_response(200, json::serialize(peer_json(*sync->peer(*id), disc)));
  });

  router.add("POST", "/v1/peers/{id}/sync", [sync, disc](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto id = device_param(req);
    if (!id) return fail(id.error());
    if (auto st = sync->sync_now(*id); !st) return fail(st.error());
    return json_response(202, json::serialize(peer_json(*sync->peer(*id), disc)));
  });

  router.add("GET", "/v1/projects/{pid}/sync", [&ctx, sync](ApiRequest& req) {
    if (!sync) return fail(sync_disabled());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    if (auto p = ctx.store.get_project(*pid); !p) return fail(p.error());
    json::array peers;
    bool all_in_sync = true;
    std::uint64_t to_send = 0, to_receive = 0;
    for (const auto& s : sync->peers()) {
      if (!s.connected || !s.session) continue;
      for (const auto& p : s.session->projects) {
        if (p.project != *pid) continue;
        json::object o = project_progress_json(p);
        o.erase("project");
        o["device_id"] = s.device.str();
        o["name"] = s.name;
        o["state"] = peers::peer_state_name(s.state);
        peers.push_back(std::move(o));
        all_in_sync = all_in_sync && p.in_sync;
        to_send += p.to_send;
        to_receive += p.to_receive;
      }
    }
    json::object o;
    o["project"] = pid->str();
    o["in_sync"] = all_in_sync && !peers.empty();
    o["to_send"] = to_send;
    o["to_receive"] = to_receive;
    o["peers"] = std::move(peers);
    return json_response(200, json::serialize(o));
  });

  // Project transfer: copy a project to another device with its secret, without an invite.
  router.add("GET", "/v1/projects/{pid}/secret", [&ctx](ApiRequest& req) {
    if (req.transport != Transport::unix_socket)
      return fail(make_error(Errc::permission_denied,
                             "the project secret is only served on the Unix socket"));
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto p = ctx.store.get_project(*pid);
    if (!p) return fail(p.error());
    auto secret = ctx.store.project_secret(*pid);
    if (!secret) return fail(secret.error());
    json::object o;
    o["id"] = p->id.str();
    o["name"] = p->name;
    o["secret"] = to_hex(*secret);
    o["creator"] = p->creator.str();
    return json_response(200, json::serialize(o));
  });

  // Subscriptions (docs/api.md "Subscriptions"): this device's own choice, never synced.
  auto subscription_json = [](const storage::Subscription& s) {
    return "{\"subscription\":" + s.canonical() +
           ",\"everything\":" + (s.everything() ? "true" : "false");
  };
  router.add("GET", "/v1/projects/{pid}/subscription", [&ctx, subscription_json](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto s = ctx.store.subscription(*pid);
    if (!s) return fail(s.error());
    return json_response(200, subscription_json(*s) + "}");
  });
  auto set_subscription = [&ctx, sync, subscription_json](ApiRequest& req,
                                                          const storage::Subscription& s) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto ch = ctx.store.set_subscription(*pid, s);
    if (!ch) return fail(ch.error());
    if (sync) sync->subscription_changed(*pid);
    return json_response(200, subscription_json(s) + ",\"documents_removed\":" +
                                  std::to_string(ch->documents_removed) +
                                  ",\"documents_kept\":" + std::to_string(ch->documents_kept) +
                                  ",\"asks_again\":" + (ch->asks_again ? "true" : "false") + "}");
  };
  router.add("PUT", "/v1/projects/{pid}/subscription", [&ctx, set_subscription](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    // Strict JSON first (duplicate keys, depth), then the subscription's own rules.
    if (auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth); !obj)
      return fail(obj.error());
    auto s = storage::Subscription::parse(req.body);
    if (!s) return fail(s.error());
    return set_subscription(req, *s);
  });
  router.add("DELETE", "/v1/projects/{pid}/subscription", [set_subscription](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    return set_subscription(req, storage::Subscription{});
  });

  // Selections: the most this device gives one peer (docs/api.md "Subscriptions").
  router.add("GET", "/v1/projects/{pid}/selections", [&ctx](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto sels = ctx.store.selections(*pid);
    if (!sels) return fail(sels.error());
    std::string s = "{\"selections\":{";
    bool first = true;
    for (const auto& [dev, sel] : *sels) {
      s += std::string(first ? "" : ",") + json_quote(dev.str()) + ":" + sel.canonical();
      first = false;
    }
    return json_response(200, s + "}}");
  });
  auto set_selection = [&ctx, sync](ApiRequest& req, const storage::Subscription& s) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto dev = DeviceId::parse(req.param("device"));
    if (!dev)
      return fail(make_error(Errc::invalid_argument,
                             "not a device id: " + quote_input(std::string(req.param("device")))));
    if (auto st = ctx.store.set_selection(*pid, *dev, s); !st) return fail(st.error());
    if (sync) sync->subscription_changed(*pid);
    return json_response(200, "{\"device\":" + json_quote(dev->str()) +
                                  ",\"selection\":" + s.canonical() +
                                  ",\"everything\":" + (s.everything() ? "true" : "false") + "}");
  };
  router.add(
      "PUT", "/v1/projects/{pid}/selections/{device}", [&ctx, set_selection](ApiRequest& req) {
        if (auto q = known_query(req, {}); !q) return fail(q.error());
        if (auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth); !obj)
          return fail(obj.error());
        auto s = storage::Subscription::parse(req.body);
        if (!s) return fail(s.error());
        return set_selection(req, *s);
      });
  router.add("DELETE", "/v1/projects/{pid}/selections/{device}", [set_selection](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    return set_selection(req, storage::Subscription{});
  });

  router.add("POST", "/v1/projects/import", [&ctx, sync](ApiRequest& req) {
    if (req.transport != Transport::unix_socket)
      return fail(
          make_error(Errc::permission_denied, "projects are only imported on the Unix socket"));
    auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
    if (!obj) return fail(obj.error());
    if (auto st = check_fields(*obj, {"id", "name", "secret", "creator"}, "project import"); !st)
      return fail(st.error());
    auto get = [&](const char* k) -> std::optional<std::string> {
      auto* v = obj->if_contains(k);
      if (!v || !v->is_string()) return std::nullopt;
      return std::string(v->as_string());
    };
    auto id_text = get("id"), name = get("name"), secret_text = get("secret"),
         creator_text = get("creator");
    if (!id_text || !name || !secret_text || !creator_text)
      return fail(make_error(Errc::invalid_argument,
                             "'id', 'name', 'secret' and 'creator' (strings) are required"));
    auto creator = DeviceId::parse(*creator_text);
    if (!creator) return fail(make_error(Errc::invalid_argument, "bad 'creator' device id"));
    auto id = ProjectId::parse(*id_text);
    if (!id) return fail(make_error(Errc::invalid_argument, "bad project id (32 hex chars)"));
    auto secret = from_hex(*secret_text);
    if (!secret || secret->size() != 32)
      return fail(make_error(Errc::invalid_argument, "'secret' must be 64 hex chars"));
    storage::ProjectInfo info;
    info.id = *id;
    info.name = *name;
    info.creator = *creator;
    auto p = ctx.store.add_project(info, *secret);
    if (!p) return fail(p.error());
    if (sync) sync->projects_changed();  // live sessions pick the project up
    return json_response(201, project_json(*p));
  });
}

}  // namespace fieldsync::ipc
