// GET /v1/status
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <spdlog/spdlog.h>

#include "ipc/backup_archive.hpp"
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

  // A consistent hot backup of the device, streamed (docs/api.md "Backup", backup_archive.hpp).
  // It carries the device's private keys: served on the Unix socket only, like a project
  // secret; nothing of its content is logged.
  router.add("GET", "/v1/backup", [&ctx](ApiRequest& req) {
    if (req.transport != Transport::unix_socket)
      return fail(make_error(Errc::permission_denied,
                             "the backup holds the device keys: it is only served on the Unix "
                             "socket"));
    if (!req.query.empty())
      return fail(make_error(Errc::invalid_argument, "GET /v1/backup takes no parameters"));
    auto reader = ctx.store.open_backup();
    if (!reader) return fail(reader.error());
    const DeviceId device = (*reader)->device();
    auto w = std::make_shared<BackupArchiveWriter>(std::move(*reader));
    auto source = std::make_shared<BodySource>();
    source->next = [w] { return w->next(); };
    source->done = [w, device](const Status& st) {
      if (st.ok())
        spdlog::info("backup of device {} streamed: {} files, {} bytes", device.short_str(),
                     w->files(), w->bytes());
      else
        spdlog::warn("backup of device {} not streamed whole ({} files, {} bytes): {}",
                     device.short_str(), w->files(), w->bytes(), st.error().message);
    };
    auto r = ApiResponse::streamed(std::move(source), "application/vnd.fieldsync.backup");
    r.headers.emplace_back("X-Fieldsync-Device", device.str());
    return r;
  });
}

}  // namespace fieldsync::ipc
