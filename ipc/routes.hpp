// The route groups of the /v1 API. Each group lives in its own routes_<group>.cpp and is
// registered once by ApiService (or by the daemon for groups owned by other components).
// Handlers capture the ApiContext by reference; it must outlive the Router.
#pragma once

#include "ipc/api_context.hpp"
#include "ipc/router.hpp"

namespace fieldsync::ipc {

void register_status_routes(Router& router, ApiContext& ctx);    // /v1/status
void register_project_routes(Router& router, ApiContext& ctx);   // /v1/projects...
void register_document_routes(Router& router, ApiContext& ctx);  // .../docs, conflicts, batch
void register_changes_routes(Router& router, ApiContext& ctx);   // .../changes
void register_metrics_routes(Router& router, ApiContext& ctx);   // /metrics, /v1/health
void register_ui_routes(Router& router, ApiContext& ctx);        // /ui/..., /v1/ui/login

}  // namespace fieldsync::ipc
