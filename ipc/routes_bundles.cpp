// /v1/bundles, /v1/projects/{pid}/bundle
#include "ipc/routes_bundles.hpp"

#include <spdlog/spdlog.h>

#include <mutex>
#include <optional>
#include <set>

#include "ipc/http_error.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "storage/blob_store.hpp"
#include "storage/store.hpp"

namespace fieldsync::ipc {
namespace {

// The devices a bundle for "members" is made for: every member record that is not removed
// and every device known to hold some of the project (from a session or an imported bundle),
// leaving out this device, its earlier identities, removed devices and identities a member
// continues (successor_of). One whose holdings are unknown counts as holding nothing; one not
// listed at all learns of its gap from the error when importing, and once its own bundle was
// read it is listed.
Result<std::vector<DeviceId>> team_devices(storage::Store& store, const ProjectId& pid) {
  auto members = store.members(pid);
  if (!members) return members.error();
  auto holders = store.peers_holding(pid);
  if (!holders) return holders.error();
  std::set<DeviceId> out(holders->begin(), holders->end());
  std::set<DeviceId> left_out;
  for (const auto& m : *members) {
    if (m.role == storage::Role::removed)
      left_out.insert(m.device);
    else
      out.insert(m.device);
    if (m.successor_of) left_out.insert(*m.successor_of);
  }
  left_out.insert(store.device_id());
  for (const auto& r : store.retired_ids()) left_out.insert(r);
  std::vector<DeviceId> v;
  for (const auto& d : out)
    if (!left_out.count(d)) v.push_back(d);
  return v;
}

// ?for=ID[,ID...] (repeatable) and the word "members" (team_devices). Empty: everything.
Result<std::vector<DeviceId>> for_devices(const ApiRequest& req, storage::Store& store,
                                          const ProjectId& pid) {
  std::set<DeviceId> out;
  for (const auto& value : req.query_values("for")) {
    std::size_t at = 0;
    while (at <= value.size()) {
      std::size_t comma = value.find(',', at);
      if (comma == std::string::npos) comma = value.size();
      std::string_view item(value.data() + at, comma - at);
      at = comma + 1;
      if (item.empty()) continue;
      if (item == "members") {
        auto team = team_devices(store, pid);
        if (!team) return team.error();
        out.insert(team->begin(), team->end());
      } else if (auto id = DeviceId::parse(item)) {
        out.insert(*id);
      } else {
        return make_error(Errc::invalid_argument,
                          "'for' must list device ids (52 base32 characters) or 'members'");
      }
      if (out.size() > kMaxBundleForDevices)
        return make_error(
            Errc::invalid_argument,
            "'for' names more than " + std::to_string(kMaxBundleForDevices) + " devices");
    }
  }
  return std::vector<DeviceId>(out.begin(), out.end());
}

std::string progress_members(const bundle::ImportReport& r) {
  std::string s =
      "\"entries\":" + std::to_string(r.entries) + ",\"applied\":" + std::to_string(r.applied) +
      ",\"duplicates\":" + std::to_string(r.duplicates) +
      ",\"skipped\":" + std::to_string(r.skipped) + ",\"batches\":" + std::to_string(r.batches);
  s += ",\"blobs\":{\"imported\":" + std::to_string(r.blobs_imported) +
       ",\"held\":" + std::to_string(r.blobs_held) +
       ",\"skipped\":" + std::to_string(r.blobs_skipped) +
       ",\"bytes\":" + std::to_string(r.blob_bytes) + ",\"problem\":" +
       (r.blob_problem.empty() ? std::string("null") : json_quote(r.blob_problem)) + "}";
  if (!r.project.is_zero()) s += ",\"project\":" + json_quote(r.project.str());
  if (!r.producer.is_zero()) {
    s += ",\"producer\":" + json_quote(r.producer.str()) +
         ",\"producer_short\":" + json_quote(r.producer.short_str()) +
         ",\"producer_name\":" + json_quote(r.producer_name) +
         ",\"created_ms\":" + std::to_string(r.created_ms);
  }
  return s;
}

// Adds what was applied before the error to its message, so a user sees it in any client.
Error with_progress(Error e, const bundle::ImportReport& r) {
  if (r.applied > 0)
    e.message +=
        "; " + std::to_string(r.applied) + " entries verified before it were applied and stay";
  else
    e.message += "; nothing was applied";
  return e;
}

// An import runs on the blob worker (BlobStore::post): its batches commit and its blobs are
// written and fsynced there, never on the server's thread. One piece of the body is in
// flight at a time (BodySink::ready); an error stops the import and is answered at the next
// piece or at the end.
struct ImportFlow {
  std::mutex mu;
  bool busy = false;  // a piece is being fed on the worker
  std::optional<Error> failed;
  std::function<void()> resume;
};

}  // namespace

void register_bundle_routes(Router& router, ApiContext& ctx, BundleRouteOptions options) {
  router.add("GET", "/v1/bundles", [&ctx](ApiRequest&) {
    auto list = ctx.store.list_projects();
    if (!list) return fail(list.error());
    std::string s = "{\"device_id\":" + json_quote(ctx.store.device_id().str()) + ",\"projects\":[";
    bool first = true;
    for (const auto& p : *list) {
      auto name = bundle::file_name(ctx.store, p.id);
      if (!name) continue;  // left meanwhile
      s += std::string(first ? "" : ",") + "{\"project\":" + json_quote(p.id.str()) +
           ",\"name\":" + json_quote(p.name) + ",\"file\":" + json_quote(*name) + "}";
      first = false;
    }
    return json_response(200, s + "]}");
  });

  router.add("GET", "/v1/projects/{pid}/bundle", [&ctx, options](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto devices = for_devices(req, ctx.store, *pid);
    if (!devices) return fail(devices.error());
    auto blobs = bundle::BlobSelection::all;
    if (auto b = req.query_value("blobs")) {
      auto sel = bundle::parse_blob_selection(*b);
      if (!sel)
        return fail(make_error(Errc::invalid_argument,
                               "'blobs' must be all, variants or none, got " + quote_input(*b)));
      blobs = *sel;
    }
    auto file = bundle::file_name(ctx.store, *pid);
    if (!file) return fail(file.error());
    bundle::ExportOptions eo = options.export_options;
    eo.for_devices = std::move(*devices);
    eo.blobs = blobs;
    const std::size_t for_count = eo.for_devices.size();
    auto writer = bundle::BundleWriter::create(ctx.store, *pid, std::move(eo));
    if (!writer) return fail(writer.error());
    std::shared_ptr<bundle::BundleWriter> w = std::move(*writer);
    auto source = std::make_shared<BodySource>();
    source->next = [w] { return w->next(); };
    source->done = [w, project = *pid, for_count](const Status& st) {
      const auto& s = w->stats();
      if (st.ok())
        spdlog::info(
            "bundle of project {} written{}: {} entries in {} batches, {} blobs ({} bytes{}), {} "
            "bytes",
            project.str(), for_count ? " for " + std::to_string(for_count) + " devices" : "",
            s.entries, s.batches, s.blobs, s.blob_bytes,
            s.blobs_unreadable
                ? ", " + std::to_string(s.blobs_unreadable) + " left out: damaged here"
                : std::string(),
            s.bytes);
      else
        spdlog::warn("bundle of project {} not written whole ({} entries, {} bytes): {}",
                     project.str(), s.entries, s.bytes, st.error().message);
    };
    auto r = ApiResponse::streamed(std::move(source), "application/vnd.fieldsync.bundle");
    r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + *file + "\"");
    return r;
  });

  router.add_streamed(
      "POST", "/v1/bundles", [&ctx, options](ApiRequest&) -> Result<std::shared_ptr<BodySink>> {
        auto reader = std::make_shared<bundle::BundleReader>(ctx.store, options.import_options);
        auto flow = std::make_shared<ImportFlow>();
        storage::BlobStore& worker = ctx.store.blobs();
        auto sink = std::make_shared<BodySink>();
        sink->write = [reader, flow, &worker](ByteView bytes) -> Status {
          {
            std::lock_guard lock(flow->mu);
            if (flow->failed) return *flow->failed;
            flow->busy = true;
          }
          worker.post([reader, flow, piece = Bytes(bytes.begin(), bytes.end())] {
            auto st = reader->feed(piece);
            if (!st)
              spdlog::warn("bundle import refused: {} ({} entries applied)", st.error().message,
                           reader->progress().applied);
            std::function<void()> resume;
            {
              std::lock_guard lock(flow->mu);
              flow->busy = false;
              if (!st) flow->failed = st.error();
              resume = std::move(flow->resume);
            }
            if (resume) resume();
          });
          return {};
        };
        sink->ready = [flow](std::function<void()> resume) {
          {
            std::lock_guard lock(flow->mu);
            if (flow->busy) {
              flow->resume = std::move(resume);
              return;
            }
          }
          resume();
        };
        // Called only between pieces (no feed in flight): the reader is not in use.
        sink->refuse = [reader](const Error& e) {
          const auto& p = reader->progress();
          return error_response(with_progress(e, p), progress_members(p));
        };
        sink->finish = [&ctx, reader, flow, &worker]() -> ApiResponse {
          {
            std::lock_guard lock(flow->mu);
            if (flow->failed) {
              const auto& p = reader->progress();
              return error_response(with_progress(*flow->failed, p), progress_members(p));
            }
          }
          ApiResponse r;
          r.deferred = std::make_shared<DeferredResponse>();
          r.deferred->timeout = std::chrono::milliseconds(ctx.options.request_timeout_ms);
          r.deferred->on_timeout = [] {
            return error_response(make_error(
                Errc::unavailable,
                "the bundle is still being imported (api.request_timeout_ms passed: its last "
                "blobs are being stored); GET /v1/projects/{pid}/blobs shows them once held"));
          };
          r.deferred->start = [&ctx, reader, &worker](std::function<void(ApiResponse)> reply) {
            auto post = ctx.post;
            if (!post) {
              reply(error_response(make_error(Errc::internal, "the API server is not running")));
              return;
            }
            // After every piece's job, and after the blobs they finished (the worker runs its
            // jobs in order): finish() does not wait.
            worker.post([reader, post, reply = std::move(reply)]() mutable {
              auto report = reader->finish();
              const bundle::ImportReport p = reader->progress();
              ApiResponse answer;
              if (!report) {
                spdlog::warn("bundle import refused: {} ({} entries applied)",
                             report.error().message, p.applied);
                // A truncated file is the client's (422, like a damaged one), not a fault of
                // the daemon's data (data_loss, 500); its message already tells what was
                // applied.
                if (report.error().code == Errc::data_loss)
                  answer =
                      error_response(make_error(Errc::verification_failed, report.error().message),
                                     progress_members(p));
                else
                  answer = error_response(with_progress(report.error(), p), progress_members(p));
              } else {
                spdlog::info(
                    "bundle from {} ({}) imported into project {}: {} entries, {} new, {} held; "
                    "blobs: {} imported ({} bytes), {} held, {} skipped{}",
                    report->producer.short_str(), report->producer_name, report->project.str(),
                    report->entries, report->applied, report->duplicates, report->blobs_imported,
                    report->blob_bytes, report->blobs_held, report->blobs_skipped,
                    report->blob_problem.empty() ? "" : " (" + report->blob_problem + ")");
                answer = json_response(200, "{" + progress_members(*report) + ",\"complete\":" +
                                                (report->complete ? "true" : "false") + "}");
              }
              post([reply = std::move(reply), answer = std::move(answer)]() mutable {
                reply(std::move(answer));
              });
            });
          };
          return r;
        };
        sink->abort = [reader, &worker] {
          // After the piece in flight, if any.
          worker.post([reader] {
            const auto& p = reader->progress();
            if (p.applied > 0 || p.blobs_imported > 0)
              spdlog::warn(
                  "bundle import cut short: {} verified entries and {} blobs applied and kept",
                  p.applied, p.blobs_imported);
          });
        };
        return sink;
      });
}

}  // namespace fieldsync::ipc
