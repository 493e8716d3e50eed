// Plain progress/status records of sync sessions, shown by the API and syncctl.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/ids.hpp"

namespace fieldsync::sync {

enum class SessionState : std::uint8_t {
  hello,    // waiting for the peer's HELLO
  proving,  // waiting for the peer's membership proofs
  active,   // exchanging vectors and batches; stays here while live
  closed,   // ended cleanly
  failed,   // ended with an error (see SessionProgress::error)
};
std::string_view session_state_name(SessionState s);

struct ProjectProgress {
  ProjectId project;
  std::uint64_t to_send = 0;     // versions the peer lacks (from the vectors)
  std::uint64_t to_receive = 0;  // versions we lack that the peer announced
  std::uint64_t sent = 0;        // versions sent in this session
  std::uint64_t received = 0;    // versions received (applied or duplicate)
  std::uint64_t applied = 0;     // versions newly applied
  std::uint64_t bytes_sent = 0;  // BATCH frame bytes
  std::uint64_t bytes_received = 0;
  double rate_bytes_per_s = 0;    // both directions, recent
  bool in_sync = false;           // both sides said DONE and every batch was acknowledged
  std::int64_t last_sync_ms = 0;  // unix ms when in_sync last became true; 0 never
  // Devices whose log this peer holds in another version than we do (docs/storage.md "One
  // identity, one history"): not exchanged on this session, everything else is.
  std::vector<DeviceId> diverged;
  // Blobs (attachments) on this session: chunk bytes each way, blobs received whole.
  std::uint64_t blob_bytes_sent = 0;
  std::uint64_t blob_bytes_received = 0;
  std::uint64_t blobs_received = 0;
  // Blobs still to receive: what this device wants of the project under its policy with
  // this peer (and asked for on demand), not held yet; and to send: what the peer said it
  // still wants (BLOB_WANTS). Only on sessions that exchange blobs.
  std::uint64_t blobs_to_receive = 0;
  std::uint64_t blob_bytes_to_receive = 0;
  std::uint64_t blobs_to_send = 0;
  std::uint64_t blob_bytes_to_send = 0;
  // The blob being fetched from this peer (nullopt: none): its id as 64 hex digits, size,
  // and verified bytes here.
  std::optional<std::string> blob_fetching;
  std::uint64_t blob_fetching_size = 0;
  std::uint64_t blob_fetching_bytes = 0;
  // The level this device fetches by itself from this peer (storage::blob_policy_name), the
  // link's limit applied; empty on sessions without blobs.
  std::string blob_policy;
};

struct SessionProgress {
  SessionState state = SessionState::hello;
  DeviceId peer;  // zero until HELLO
  std::string peer_name;
  std::uint16_t protocol = 0;    // negotiated version
  std::uint64_t bytes_sent = 0;  // all frames
  std::uint64_t bytes_received = 0;
  std::vector<ProjectProgress> projects;
  std::optional<Error> error;
};

}  // namespace fieldsync::sync
