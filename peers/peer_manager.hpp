// PeerManager: the devices this daemon syncs with, over whatever transports it has
// (transports/transport.hpp; TCP + TLS today). It keeps the peer registry (configured,
// approved, pending and merely connected devices), dials configured peers by their address
// URIs and reconnects with exponential backoff (sync.retry_min_ms .. retry_max_ms,
// jittered, never while a session is up), runs one sync::Session per peer device through a
// SessionDriver, pushes local changes to every live session (notify_change), handles
// invite joins, and reports transport-neutral status. Simultaneous connections are
// deduplicated deterministically: of two connections between the same devices, the one
// dialed by the lower device id survives. Incoming connections hold a slot of the
// handshake budget (sync.max_handshakes) until their session proves something; sessions
// past that count against sync.max_peers. A device that proves nothing leaves no state. A
// configured peer that cannot be reached and has renewed its identity (a membership record of
// a successor vouched for by its old key) is followed to the successor, at start and after a
// failed dial.
//
// Ownership: borrows the io_context and the Store (both outlive the manager). Owns the
// transports added to it, its sessions and timers.
// Thread-safety: every method except notify_change() and projects_changed() must be called
// on the io_context's thread (the daemon runs one io_context on one thread); those two are
// safe from any thread (they post); checked in debug builds. Store calls run on that thread
// and are short LMDB transactions, except the received batches and what peers hold, which
// sessions write through set_writer()'s thread when one is set.
// Errors: start() returns a transport's listen error (unavailable when a port is taken);
// add_peer returns invalid_argument for a bad address or one no transport serves,
// already_exists for a known device, and failed_precondition for our own id;
// remove_peer/unconfigure_peer/sync_now return not_found.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"
#include "storage/store.hpp"
#include "sync/invite_code.hpp"
#include "sync/progress.hpp"
#include "transports/transport.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::sync {
class Session;
}

namespace fieldsync::peers {

enum class PeerState : std::uint8_t {
  idle,        // no connection and none planned (an incoming-only peer, or stopped)
  connecting,  // TCP connect or TLS handshake under way
  handshake,   // TLS up, sync HELLO / membership proofs under way
  syncing,     // session active, versions flowing
  in_sync,     // session active, both sides hold the same versions; live pushes continue
  backoff,     // waiting before the next dial
  pending,     // session open, but every project it proved waits for approval (trust_policy = ask)
  waiting,     // session open, but the peer holds projects until its user approves this device
};
std::string_view peer_state_name(PeerState s);
// Every PeerState, in declaration order (metrics list each one).
inline constexpr PeerState kPeerStates[] = {
    PeerState::idle,    PeerState::connecting, PeerState::handshake, PeerState::syncing,
    PeerState::in_sync, PeerState::backoff,    PeerState::pending,   PeerState::waiting,
};

// Why a peer is where it is, when that is more than "syncing" (docs/api.md "reason"):
enum class PeerReasonCode : std::uint8_t {
  peer_shut_down,     // its last session ended because the peer shut down: not a failure
  removed,            // the peer refuses this device: removed from a project (NOTICE removed)
  awaiting_approval,  // the peer holds projects until its user approves this device
  approval_needed,    // it proved projects that wait for the user here (trust_policy = ask)
  wrong_device,       // its address answered as another device (the TLS key differs)
  failed,             // its last connection failed (last_error)
};
std::string_view peer_reason_name(PeerReasonCode c);

struct PeerReason {
  PeerReasonCode code = PeerReasonCode::failed;
  std::string message;               // for people: names the devices and projects involved
  std::optional<ProjectId> project;  // removed, awaiting_approval: the project concerned
};

struct PeerStatus {
  DeviceId device;
  std::string name;         // the peer's device name from HELLO, or the configured name
  std::string address;      // the address URI we dial (tcp://host:port); empty if we do not
  bool configured = false;  // we dial it (config or API) vs it only dialed us
  bool connected = false;
  bool outgoing = false;  // the live connection was dialed by us
  PeerState state = PeerState::idle;
  std::int64_t last_sync_ms = 0;   // unix ms of the last time every project was in sync
  std::int64_t next_retry_ms = 0;  // unix ms of the next dial when in backoff
  std::uint32_t failures = 0;      // consecutive failed attempts
  std::optional<Error> last_error;
  // Why it is in this state (nullopt: nothing to explain, e.g. syncing or in sync).
  std::optional<PeerReason> reason;
  // Bytes on the medium of the live (or last) connection, encryption included.
  std::uint64_t wire_bytes_sent = 0;
  std::uint64_t wire_bytes_received = 0;
  std::optional<sync::SessionProgress> session;  // the live (or last) session's progress
  bool approved = false;                         // the user approved it (or we joined through it)
  std::vector<ProjectId> pending_projects;       // proven projects waiting for approval
  std::string verification_code;                 // sync::verification_code(us, it)
  std::string transport;  // scheme of the live (or last) connection ("tcp"); empty if none
  // Link class of the live (or last) connection (transports::LinkClass); nullopt if none.
  std::optional<transports::LinkClass> link;
  std::string remote;  // the other end of the live (or last) connection, as a URI
};

// What the connections of one transport moved over the manager's life: the totals of closed
// connections plus the progress of live ones so far, so every member only grows.
struct TransferTotals {
  std::uint64_t bytes_sent = 0;  // sync frames (SessionProgress::bytes_sent)
  std::uint64_t bytes_received = 0;
  std::uint64_t wire_bytes_sent = 0;  // on the medium, encryption included
  std::uint64_t wire_bytes_received = 0;
  std::uint64_t versions_sent = 0;  // ProjectProgress::sent, every project
  std::uint64_t versions_received = 0;
  std::uint64_t connections_closed = 0;
};

class PeerManager {
 public:
  PeerManager(boost::asio::io_context& io, storage::Store& store, config::SyncOptions options,
              std::string device_name);
  ~PeerManager();
  PeerManager(const PeerManager&) = delete;
  PeerManager& operator=(const PeerManager&) = delete;

  // Adds a transport (before start()): it dials addresses of its scheme and, when `listen`,
  // accepts connections. Returns it (owned by the manager). One transport per scheme.
  transports::Transport& add_transport(std::unique_ptr<transports::Transport> t,
                                       bool listen = true);
  // Sessions apply the batches they receive through `post_write` (before start()): it runs
  // `work` on a writer thread and then `done` there with the status of the commit that made
  // the work durable (the daemon's ipc::WriterQueue, grouped with the API's writes). Without
  // it, batches are applied on the io_context thread.
  using PostWrite =
      std::function<void(std::function<void()> work, std::function<void(const Status&)> done)>;
  void set_writer(PostWrite post_write);
  // With a writer, sessions prepare each received batch (Store::prepare_log) through
  // `post_prepare` (before start()): it runs `work` on a worker thread, then `done` there; the
  // next batch is then checked and packed while one commits. Without it, within the apply.
  using PostPrepare = std::function<void(std::function<void()> work, std::function<void()> done)>;
  void set_preparer(PostPrepare post_prepare);
  // Starts the transports' listeners and dials known peers (those added so far and those
  // the store remembers).
  Status start();
  // Closes the listeners and every connection (bounded: streams are force-closed).
  void stop();
  // Closes the listeners and ends every session cleanly: peers that understand NOTICE are
  // told this device shuts down (no failure for them); `done` runs on the io_context thread
  // once every connection is closed (within SessionDriver's goodbye timeout).
  void stop(std::function<void()> done);
  // Where other devices can reach us, over every listening transport, best first (what
  // invite codes and discovery advertise).
  std::vector<transports::Address> listen_addresses() const;

  // `address`: a URI (tcp://host:port) or a bare host:port (tcp). persist: remember the peer
  // in the store (Store::save_peer) so it is dialed again after a restart (peers from the
  // config file are added with persist = false on every start).
  Status add_peer(const std::string& address, const DeviceId& device, std::string name = {},
                  bool persist = false);
  // A new address for a configured peer (discovery saw it move). Keeps its backoff state and
  // any live session; the next dial uses the new address. not_found / invalid_argument.
  Status set_peer_address(const DeviceId& device, const std::string& address);
  // A faster way to a peer we sync with over a slower link (a Bluetooth LE device that also
  // listens on TCP): dials `address` while the live session goes on. Once that connection is
  // up it replaces the slower one (both devices keep the faster of two connections; the
  // session goes on over it from what each side holds) and becomes the peer's address. A
  // failed attempt changes nothing else: no backoff, no error on the peer. Without a live
  // connection it is set_peer_address() and a dial now. `done` runs once, on the io_context
  // thread. Errors: not_found (not a configured peer), invalid_argument (the address),
  // failed_precondition (not faster than the live connection), already_exists (an attempt
  // is under way), and the dial's own.
  void handover(const DeviceId& device, const std::string& address,
                std::function<void(Status)> done);
  // Forgets the peer (also in the store) and closes its session.
  Status remove_peer(const DeviceId& device);
  // A peer added with persist = false (the config file's) is no longer configured (the file
  // was reloaded without it): it is no longer dialed and its connection is closed, as if the
  // daemon had restarted without it. A peer the store remembers with an address (added through
  // the API, joined or approved) stays dialed, as it would after a restart; its approval and
  // what it proved stay either way. not_found when it is not a configured peer.
  Status unconfigure_peer(const DeviceId& device);
  std::vector<PeerStatus> peers() const;
  // Per transport scheme ("tcp"; every added transport is listed): what its connections moved
  // (TransferTotals). Cheap: no store access.
  std::map<std::string, TransferTotals> transfer_totals() const;
  Result<PeerStatus> peer(const DeviceId& device) const;
  // Trusts the device (trust_policy = ask): remembered in the store, and projects its live
  // session holds for approval start syncing. not_found for a device never seen.
  Status approve_peer(const DeviceId& device);
  // Dials now (skipping any backoff) if not connected; a live session is already syncing.
  Status sync_now(const DeviceId& device);
  // Joins the project of an invite code (docs/protocol.md "Joining"): over the live session
  // with code.inviter if there is one, else by dialing the code's addresses in order (TLS
  // pinned to code.inviter); JOIN, then the project from JOINED syncs on the same session.
  // The inviter becomes a remembered, approved peer at the address that worked. `done` runs
  // once, on the io_context thread, within join_timeout(code).
  // Errors: the inviter's refusal (failed_precondition "invite already used" / "invite
  // expired", permission_denied, not_found), unavailable (no address worked: each reason).
  struct JoinOutcome {
    storage::ProjectInfo project;
    std::string address;  // where the inviter was reached
    std::string inviter_name;
  };
  void join(const sync::InviteCode& code, std::function<void(Result<JoinOutcome>)> done);
  // Upper bound for join() to call back: every address dialed, each with its timeouts.
  std::uint32_t join_timeout_ms(const sync::InviteCode& code) const;
  // This device joined a project: live sessions re-announce their memberships (any thread).
  void projects_changed();
  // The store gained versions of `project` (any thread).
  void notify_change(const ProjectId& project);
  // This device's subscription of `project` changed (any thread): live sessions that sync it
  // end, and the next ones start over with it.
  void subscription_changed(const ProjectId& project);

  struct Impl;  // opaque outside peer_manager.cpp

 private:
  void for_each_session(std::function<void(sync::Session&)> fn);
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::peers
