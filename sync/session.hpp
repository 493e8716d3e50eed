// Session: the sans-I/O sync protocol engine for one connection to one peer
// (docs/protocol.md). Feed it received bytes with receive(); take bytes to send with
// take_output(). It never touches sockets, timers or threads, so the same engine runs over
// TCP+TLS, an in-memory pipe in tests, and later BLE or a one-way file bundle.
//
// Flow: HELLO both ways (version negotiation) -> PROJECTS (membership proofs bound to the
// channel) -> for each project both prove: VV both ways -> each side streams, per author in
// log order, the entries the other lacks as BATCH frames; the receiver verifies and applies
// them (Store::apply_log) and answers ACK; at most window_batches unacknowledged batches are
// in flight, and batches are only read from the store when the transport asks for output,
// so memory stays bounded however slow the peer is. DONE marks "sent all I had". While the
// connection stays open, notify_local_change() pushes new versions (NEW + BATCH).
//
// Code: this class and the input loop in session.cpp, one file per exchange (handshake, log,
// join, trust: session_*.cpp) on shared state (session_impl.hpp), one table of which message
// is accepted in which state. Options: SessionOptions (sync/session_options.hpp).
//
// Ownership: borrows the Store (must outlive the session). Thread-safety: none; drive one
// session from one strand (every method, const ones too). Sessions on different threads
// share only the Store and the process-wide failure log, both safe from any thread. Store
// calls are synchronous and short (one LMDB transaction).
// Errors: a protocol violation, a batch that fails verification, or an ERROR from the peer
// moves the session to `failed` (after queuing an ERROR frame for the peer when the fault
// is ours to report). Batches applied before that stay applied.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/result.hpp"
#include "storage/store.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/invite_code.hpp"
#include "sync/messages.hpp"
#include "sync/progress.hpp"
#include "sync/session_options.hpp"

namespace fieldsync::sync {

// What the peer told this session with NOTICE (docs/protocol.md "NOTICE"): only from peers
// whose HELLO announced kFeatureNotices. Messages are the peer's, sanitized, for people.
struct PeerNotices {
  // The peer ended the session on purpose (it shuts down): not a failure.
  std::optional<std::string> closing;
  // Projects the peer says this device was removed from (it refuses them).
  std::map<ProjectId, std::string> removed;
  // Projects the peer holds until its user approves this device (trust_policy = ask there);
  // a project leaves once the peer sends its VV (approved).
  std::map<ProjectId, std::string> awaiting;
};

struct SessionParams {
  SessionOptions options;  // from the configuration: session_options(config::SyncOptions)
  std::string device_name;
  // Channel binding from the transport (TLS exporter); membership proofs cover it so
  // they cannot be replayed on another connection. Empty when the transport has none.
  Bytes channel_binding;
  // The peer's device as authenticated by the transport (TLS certificate key); HELLO must
  // match it. nullopt when the transport does not authenticate.
  std::optional<DeviceId> authenticated_peer;
  // The user approved this device (TrustPolicy::ask, options.trust_policy): its proven
  // projects sync even where it is not a listed member.
  bool peer_approved = false;
  // Wall clock in unix milliseconds (progress rates, last sync time); injectable for tests.
  std::function<std::int64_t()> clock;
  // Applies received batches off the session's thread: runs `work` (Store::apply_log, using
  // only the Store) on another thread, then `done` back on the session's thread with the status
  // of the commit that made what `work` wrote durable. Empty: batches are applied inline.
  std::function<void(std::function<void()> work, std::function<void(Status committed)> done)>
      offload;
  // With offload: prepares received batches (Store::prepare_log) on a worker thread ahead of
  // their apply, so the next batch is checked and packed while one commits: runs `work` (using
  // only the Store) there, then `done` on the session's thread. Up to
  // options.window_batches received batches are then on their way at once. Empty: each batch
  // is applied whole before the next is read.
  std::function<void(std::function<void()> work, std::function<void()> done)> prepare;
};

class Session {
 public:
  Session(storage::Store& store, SessionParams params);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Queues HELLO. Call once, before anything else.
  void start();
  // Thread rule: one thread calls every method (the driver's; checked in debug builds), and
  // SessionParams::offload's done runs there too.
  // Processes received bytes (any split). May queue output and change state. While busy(),
  // bytes are kept and processed once the batch being applied is done.
  void receive(ByteView bytes);
  // A received batch is being applied (SessionParams::offload): the driver reads no more
  // input until the session calls its resume hook.
  bool busy() const;
  // Called on the session's thread after an offloaded apply finished and the input kept
  // meanwhile was processed: the driver sends what it queued and reads again.
  void set_resume_hook(std::function<void()> hook);
  // Up to about max_bytes of frames to send now (at least one whole frame if any is
  // ready); empty when there is nothing to send until more input or a local change.
  Bytes take_output(std::size_t max_bytes);
  // The store gained versions for `project` (local write or another session's apply).
  void notify_local_change(const ProjectId& project);
  // This device joined (imported) a project: re-sends PROJECTS so a live session picks up
  // projects that became common without reconnecting.
  void projects_changed();
  // This device's subscription of `project` changed: a session that syncs it ends (the
  // next one starts over with the new subscription).
  void subscription_changed(const ProjectId& project);
  // Joins the project of an invite over this session (docs/protocol.md "Joining"): before
  // start() or while HELLO is awaited, JOIN replaces our first PROJECTS (sent once JOINED
  // added the project); on an active session JOIN goes out now and PROJECTS is re-sent
  // after JOINED. The peer must be code.inviter. Errors: failed_precondition (in the
  // middle of the handshake, ended, or a join already under way).
  Status join(const InviteCode& code);
  // The outcome of join(): nullopt while under way (or never asked); then the project added,
  // or why not (the inviter's refusal, e.g. "invite already used", or why the session ended).
  const std::optional<Result<storage::ProjectInfo>>& join_result() const;
  // Trust policy "ask": projects the peer proved but that wait for approve() because it is
  // neither a listed member nor approved. Nothing of them is exchanged meanwhile; the
  // session stays open (pending) even when they are all it has.
  std::vector<ProjectId> pending_projects() const;
  // The user approved the peer: its pending projects start syncing on this session.
  void approve();
  // Queues a keepalive PING (the driver calls this when the link is idle).
  void ping();
  // The transport ended. A session that is not already failed becomes failed(unavailable).
  void transport_closed(std::string reason);
  // Ends the session on our initiative: queues ERROR(code, reason) and fails.
  void abort(Error error);
  // Ends the session cleanly on our initiative (this device shuts down): a peer that
  // understands NOTICE is told it is no failure; the session is closed, not failed.
  void close(std::string reason);
  // What the peer told us with NOTICE so far.
  const PeerNotices& peer_notices() const;

  SessionState state() const;
  bool finished() const;  // closed or failed
  // True once HELLO arrived: peer() and peer_name() are then known.
  bool peer_known() const;
  const DeviceId& peer() const;
  const std::string& peer_name() const;
  const std::optional<Error>& error() const;
  SessionProgress progress() const;
  // True when every common project is in sync in both directions.
  bool in_sync() const;
  // Projects both sides proved membership of (known after PROJECTS).
  std::vector<ProjectId> common_projects() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::sync
