// ApiContext: what the route handlers share. Owned by ApiService; the Store outlives it.
// Read-only after start-up except `listen` (set once by the server before serving) and
// `metrics` (the server's answers, recorded on its thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/ids.hpp"
#include "config/config.hpp"
#include "ipc/api_access.hpp"
#include "ipc/metrics.hpp"

namespace fieldsync::storage {
class Store;
struct BlobInfo;
}  // namespace fieldsync::storage

namespace fieldsync::ipc {

struct ApiContext {
  ApiContext(storage::Store& s, const config::ApiOptions& o, std::string v, std::string name)
      : store(s), options(o), version(std::move(v)), device_name(std::move(name)) {}

  storage::Store& store;
  config::ApiOptions options;
  std::string version;      // fieldsync version string
  std::string device_name;  // daemon.device_name
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Extra members of GET /v1/status: name -> producer of a JSON value's text. "peers" is
  // "{}" until the sync engine registers its own producer.
  std::vector<std::pair<std::string, std::function<std::string()>>> status_sections;
  // Extra families of GET /metrics, written after the API's own (e.g. the sync engine's peers
  // and transports). Called on the server's thread; must be cheap (no scans).
  std::vector<std::function<void(MetricsWriter&)>> metrics_sections;
  // Extra checks of GET /v1/health: a reason the daemon is not healthy, or empty. Called on
  // the server's thread; must be cheap.
  std::vector<std::function<std::string()>> health_checks;
  // The API's answers by status class and their latency (recorded by the server).
  ApiMetrics metrics;
  // Stream tickets: issued by POST /v1/tickets, redeemed by the server's access check.
  StreamTickets tickets;
  // The status page (docs/api.md "Status page"): one-time login tickets (POST /v1/ui/login)
  // and the sessions they are exchanged for (POST /ui/session), checked by the access check.
  StreamTickets ui_logins;
  StreamTickets ui_sessions;
  // Where the API actually listens (filled by ApiServer).
  struct Listen {
    std::string socket_path;
    bool http_enabled = false;
    std::string http_address;
    std::uint16_t http_port = 0;
    // Live counters for GET /v1/status: open connections, and long-polls/SSE streams waiting
    // on the changes feed. Called on the server's thread.
    std::function<std::size_t()> connections;
    std::function<std::size_t()> streams;
    // Bytes of change pages rendered for SSE streams and not yet sent by all of them (a page
    // shared by several streams counts once). Called on the server's thread.
    std::function<std::size_t()> stream_bytes;
    // The project left this device: its long-polls and SSE streams read the feed again (and
    // end with not_found). Called on the server's thread, by the leave route.
    std::function<void(const ProjectId&)> project_left;
  } listen;
  // Runs `job` on the server's thread (filled by ApiServer::start). May be called from any
  // thread: this is how work finished elsewhere (e.g. on the blob worker) answers a
  // DeferredResponse or touches anything else of the server's. Jobs posted once the server
  // is destroyed are dropped, never run. Empty until the server starts (unit tests that
  // dispatch without a server).
  std::function<void(std::function<void()> job)> post;
  // Runs `job` on one of the API's reader threads (ipc/reader_pool.hpp; route_support's
  // on_reader() uses it). Empty: api.reader_threads = 0, or no server (unit tests); read
  // routes then run on the server's thread.
  std::function<void(std::function<void()> job)> read;
  // Runs a document write on the writer thread, grouped with the writes queued with it
  // (ipc/writer_queue.hpp; route_support's on_writer() uses it); `done` is called there after
  // the group's commit, with its status. Empty: api.max_group_writes = 0, or no server: writes
  // run inline.
  std::function<void(std::function<void()> work, bool alone,
                     std::function<void(const Status&)> done)>
      write;
  // An app's upload (POST /v1/projects/{pid}/blobs) was stored: the daemon makes the
  // variants of an image (daemon/variant_maker.hpp). Called on the server's thread; must only
  // queue work. Empty: nothing is made (unit tests).
  std::function<void(const ProjectId&, const storage::BlobInfo&)> blob_uploaded;
};

}  // namespace fieldsync::ipc
