// Route group of blobs (attachments, docs/api.md "Blobs (attachments)"):
//   POST /v1/projects/{pid}/blobs        upload the raw bytes (streamed); 201 with the reference
//   GET  /v1/projects/{pid}/blobs        list what the project holds or refers to (?after, ?limit)
//   GET  /v1/projects/{pid}/blobs/{id}   download (?variant, ?wait; Range, If-None-Match,
//                                        If-Range); a blob not held yet is asked for from the
//                                        peers (BlobStore::demand): the bytes once they come
//                                        within `wait`, else 202 with its progress
//   POST /v1/projects/{pid}/blobs/gc     release unreferenced blobs past their grace now
//   GET|PUT /v1/projects/{pid}/blob-policy  what this device fetches by itself
// Registered by the daemon with the store's BlobStore.
//
// Threads: handlers, sinks and sources run on the API server's thread. An upload's bytes are
// written by the blob worker: the sink keeps at most kMaxUploadQueuedBytes queued to it
// (BodySink::ready paces the client) and its answer comes back from the worker through
// ApiContext::post (a DeferredResponse). A download reads and verifies one chunk per piece on
// the server's thread. gc runs on the worker. Downloads waiting for a blob are kept on the
// server's thread and woken through BlobStore::watch_held (posted back with ApiContext::post).
#pragma once

#include <cstdint>

#include "ipc/api_context.hpp"
#include "ipc/router.hpp"

namespace fieldsync::storage {
class BlobStore;
}

namespace fieldsync::ipc {

// Bytes of one upload handed to the blob worker and not yet written; beyond it the server
// reads no more of the body until the worker catches up.
inline constexpr std::uint64_t kMaxUploadQueuedBytes = 1u << 20;
// Cache-Control max-age of a blob download: its bytes never change (the id is their hash).
inline constexpr std::uint32_t kBlobMaxAgeSeconds = 365u * 24 * 3600;

void register_blob_routes(Router& router, ApiContext& ctx, storage::BlobStore& blobs);

}  // namespace fieldsync::ipc
