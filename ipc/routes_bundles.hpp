// Route group of bundles (sync by USB stick, docs/api.md "Bundles"):
//   GET  /v1/bundles                      this device's bundle file name per project
//   GET  /v1/projects/{pid}/bundle?for=   a new bundle of the project, streamed (chunked)
//   POST /v1/bundles                      import a bundle, streamed in (api.max_stream_bytes)
// The daemon never opens the user's file: syncctl reads or writes it and streams it through
// the API. Registered by the daemon with the bundle and sync limits of its configuration.
// Handlers, sources and sinks run on the API server's thread (one bundle batch of store reads
// or one verified batch applied per call).
#pragma once

#include "bundle/bundle.hpp"
#include "ipc/api_context.hpp"
#include "ipc/router.hpp"

namespace fieldsync::ipc {

// The most devices one ?for= names (a longer list is invalid_argument).
inline constexpr std::size_t kMaxBundleForDevices = 1024;

struct BundleRouteOptions {
  bundle::ExportOptions export_options;  // for_devices is filled per request
  bundle::ImportOptions import_options;
};

void register_bundle_routes(Router& router, ApiContext& ctx, BundleRouteOptions options);

}  // namespace fieldsync::ipc
