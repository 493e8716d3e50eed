#include "sync/session_options.hpp"

#include "config/config.hpp"

namespace fieldsync::sync {

std::string_view trust_policy_name(TrustPolicy policy) {
  switch (policy) {
    case TrustPolicy::automatic: return "auto";
    case TrustPolicy::ask: return "ask";
  }
  return "unknown";
}

SessionOptions session_options(const config::SyncOptions& sync) {
  SessionOptions o;
  o.max_frame_bytes = sync.max_frame_bytes;
  o.batch_entries = sync.batch_entries;
  o.batch_bytes = sync.batch_bytes;
  o.window_batches = sync.window_batches;
  o.max_projects = sync.max_projects;
  o.compression_level = sync.compression_level;
  o.log_lines_per_key = sync.log_lines_per_key;
  o.log_interval_ms = sync.log_interval_ms;
  // The loader accepts "auto" and "ask" only (config_loader.cpp); "ask" is the one that holds
  // devices back, so only that spelling turns it on, as before.
  o.trust_policy = sync.trust_policy == trust_policy_name(TrustPolicy::ask)
                       ? TrustPolicy::ask
                       : TrustPolicy::automatic;
  o.slow_link_blobs = sync.slow_link_blobs;
  o.slow_batch_entries = sync.slow_batch_entries;
  o.slow_batch_bytes = sync.slow_batch_bytes;
  o.slow_window_batches = sync.slow_window_batches;
  return o;
}

}  // namespace fieldsync::sync
