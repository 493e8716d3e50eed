// SessionOptions: the settings one sync::Session runs with, as plain values owned by sync/.
// The daemon's configuration (config::SyncOptions, the sync.* keys of docs/operations.md)
// becomes these in exactly one place, session_options(); the config loader has already
// checked every value, so the conversion cannot fail. Tests and tools set the fields directly.
//
// Thread-safety: plain values; copy freely.
#pragma once

#include <cstdint>
#include <string_view>

#include "storage/blob_store.hpp"
#include "sync/messages.hpp"

namespace fieldsync::config {
struct SyncOptions;
}

namespace fieldsync::sync {

// sync.trust_policy (docs/protocol.md section 7 "Trust").
enum class TrustPolicy : std::uint8_t {
  automatic,  // "auto": any device that proves a project and is not removed from it syncs
  ask,        // "ask": a device neither the creator, a listed member nor approved waits as pending
};
// The config file's spelling: "auto" or "ask".
std::string_view trust_policy_name(TrustPolicy policy);

struct SessionOptions {
  std::uint32_t max_frame_bytes = 4u << 20;  // sync.max_frame_bytes: largest frame accepted
  std::uint32_t batch_entries = 2048;        // sync.batch_entries: log entries per BATCH
  std::uint64_t batch_bytes = 2u << 20;      // sync.batch_bytes: body bytes per BATCH
  std::uint32_t window_batches = 4;          // sync.window_batches: unacknowledged batches
  std::uint32_t max_projects = 1024;         // sync.max_projects: proofs in one PROJECTS
  // sync.compression_level: zstd level of BATCH payloads sent to peers that accept ZBATCH
  // (1..19); 0 = off (then kFeatureZstdBatches is not announced either).
  std::uint32_t compression_level = 3;
  // sync.log_lines_per_key per sync.log_interval_ms: failure lines a remote party can cause.
  std::uint32_t log_lines_per_key = 10;
  std::uint32_t log_interval_ms = 10000;
  TrustPolicy trust_policy = TrustPolicy::automatic;  // sync.trust_policy
  // Fetch and serve blobs on this session (kFeatureBlobs), fetching by itself at most
  // `blob_link_policy` (below the project's and peer's policy, storage::BlobStore::policy_with).
  // The peer manager sets both from the link class (transports::LinkClass): everything on a
  // fast link; on others blob.slow_link_policy (`slow_link_blobs`), none by default (then
  // exchange_blobs is off), so photos never clog a slow link unless configured.
  bool exchange_blobs = true;
  storage::BlobPolicy blob_link_policy = storage::BlobPolicy::archive;
  storage::BlobPolicy slow_link_blobs = storage::BlobPolicy::none;  // blob.slow_link_policy
  // What a session over a slow link runs with instead of batch_entries, batch_bytes and
  // window_batches (ble.batch_entries, ble.batch_bytes, ble.window_batches; the peer manager
  // applies them from the link class): small batches, so a new write waits behind at most a
  // few kilobytes of backlog that it cannot overtake.
  std::uint32_t slow_batch_entries = 64;
  std::uint64_t slow_batch_bytes = 16u << 10;
  std::uint32_t slow_window_batches = 2;
  // Live pushes first (set on slow links): the authors of versions written while the session
  // runs (notify_local_change) are sent before the catch-up backlog of other authors. Each
  // author's log still goes in order (the receiver verifies its hash chain).
  bool live_first = false;
  // The highest protocol version offered in HELLO (kProtocolMin..kProtocolMax); not a
  // configuration key: tests set it lower to play a device of the previous release.
  std::uint16_t protocol_max = kProtocolMax;

  bool operator==(const SessionOptions&) const = default;
};

// The session settings of the daemon's configuration. The defaults of both agree
// (session_options(config::SyncOptions{}) == SessionOptions{}; a test checks it).
SessionOptions session_options(const config::SyncOptions& sync);

}  // namespace fieldsync::sync
