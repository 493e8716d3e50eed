// Session::Impl: the state of one sync::Session, shared by its exchanges. Private to the
// session's files; nothing outside sync/session*.cpp includes it.
//
//   session.cpp            the public Session, the input loop, the message table, failing
//   session_handshake.cpp  HELLO (version negotiation), PROJECTS (membership proofs)
//   session_log.cpp        VV/TIPS/FORKED, BATCH/ACK windows, DONE, live push (NEW), and
//                          what the peer holds (Store::note_peer_holds)
//   session_join.cpp       JOIN/JOINED on either end (the crypto and the store: sync/join.hpp)
//   session_trust.cpp      the trust policy: pending projects, approval, removed members
//
// Every received frame goes through one table (message_rule(), session.cpp): per message
// type the states it is accepted in, its decoder and its handler. A frame in any other state,
// or of a type the table lacks, is refused in one place (refuse()), except that an active
// session skips unknown types marked ignorable; a payload that does not decode fails the
// session there too. So a handler runs only in the states of its row and only with a decoded
// message; adding a message is one row (plus its handler).
//
// Thread-safety: none, like Session: everything here runs inside one call of Session's, on
// the caller's strand. Sessions share only the Store (safe from any thread) and the
// process-wide failure log (session_log(), locked).
// Errors: a handler that finds a fault calls fail() and returns; callers check finished()
// after anything that may fail.
#pragma once

#include "common/thread_check.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <type_traits>

#include "common/rate_limited_log.hpp"
#include "sync/join.hpp"
#include "sync/session.hpp"

namespace fieldsync::sync {

struct Session::Impl {
  // Per-project state of one session (common projects only).
  struct ProjectSync {
    ProjectId id;
    // Our vector as offered to this peer (cached; refreshed on local change): capped where
    // our logs are not whole and the peer wants more than we hold (offer_vector()).
    storage::VersionVector mine;
    storage::VersionVector have;      // our vector itself (to-receive estimate)
    storage::VersionVector peer;      // what the peer is known to hold (VV, ACK, its batches)
    storage::VersionVector sent;      // highest seq sent per author (in flight or acked)
    storage::VersionVector peer_has;  // what the peer announced (VV, NEW): to-receive estimate
    storage::VersionVector peer_vv;   // the peer's VV as sent (TIPS follows its order)
    // What the peer showed it holds (its VV and NEW, batches it sent, its ACKs of ours; never
    // what we offered), kept in the store by record_holds(); `recorded`: what the store has.
    storage::VersionVector holds;
    storage::VersionVector recorded;
    bool holds_dirty = false;  // `holds` rose (or `mine` did) since the last record_holds()
    bool vv_received = false;
    bool done_owed = false;  // send DONE once everything for this project is sent
    bool peer_done = false;  // the peer sent DONE and announced nothing since
    bool was_in_sync = false;
    std::uint32_t unacked = 0;
    // Authors whose log the peer holds in another version (docs/storage.md "One identity,
    // one history"): neither sent nor taken on this session.
    std::set<DeviceId> diverged;
    // Authors with versions written while the session runs (SessionOptions::live_first),
    // the most recent first: sent before the backlog of the others, until the peer caught up
    // with them. (A relayed author that arrives with a long log is "live" too; the next new
    // write goes ahead of it.)
    std::vector<DeviceId> live;
    // The project's coordinators when the session began (offer_vector()): their logs go
    // ahead of the others' backlog, so the erasures and membership records they hold reach
    // the peer before the versions those records take out.
    std::optional<std::set<DeviceId>> authorities;
    ProjectProgress stats;
    // Blobs: what we last told the peer we want (BLOB_WANTS); nothing until told.
    std::pair<std::uint64_t, std::uint64_t> wants_told{0, 0};
    std::int64_t rate_sample_ms = 0;
    std::uint64_t rate_sample_bytes = 0;
    // Subscriptions (docs/storage.md "Subscriptions"): ours, and whether the peer wants no
    // more than we do (then entries left out here go to it as left out; else our logs are
    // given only as far as they are whole: `mine` is capped by Store::whole_heads()).
    storage::Subscription my_sub;
    storage::Subscription peer_sub;
    // What we give the peer: its subscription, within our selection for it (if any).
    storage::Subscription given;
    storage::Subscription my_selection;  // Store::selections()[peer]
    bool left_out_ok = true;
    // The peer gives us less than we want (its SUBSCRIPTION "gives"): what it leaves out is
    // asked for again from others (storage::ApplyOptions::judged = false).
    bool restricted = false;
  };

  // --- the message table ---

  // A set of SessionStates (bit i: the state with value i).
  using StateSet = std::uint8_t;
  template <class... S>
  static constexpr StateSet states(S... s) {
    return static_cast<StateSet>(((1u << static_cast<unsigned>(s)) | ...));
  }
  struct MessageRule {
    MsgType type;
    StateSet accepted;  // in any other state the frame is refused (refuse())
    // Decodes the payload with the row's decoder, then calls its handler (see run()).
    void (*run)(Impl& s, const Frame& frame);
  };
  // The row of a message type; nullptr for a type this build does not know.
  static const MessageRule* message_rule(std::uint8_t type);

  // One row's run: Decode(payload[, limits]) -> Result<M>, then (s.*Handle)(M). A payload
  // that does not decode fails the session and tells the peer.
  template <auto Decode, auto Handle>
  static void run(Impl& s, const Frame& frame) {
    auto m = [&] {
      if constexpr (std::is_invocable_v<decltype(Decode), ByteView, const DecodeLimits&>)
        return Decode(frame.payload, s.limits);
      else
        return Decode(frame.payload);
    }();
    if (!m.ok()) return s.fail(m.error(), true);
    (s.*Handle)(std::move(*m));
  }

  // Decoders of the table besides messages.hpp's and join.hpp's.
  struct Ping {};
  static Result<Ping> decode_ping(ByteView payload);  // any payload: PING carries nothing
  // ERROR is never refused for its payload: a malformed one still ends the session.
  struct PeerError {
    std::optional<WireError> sent;  // nullopt: malformed
  };
  static Result<PeerError> decode_peer_error(ByteView payload);
  // A BATCH and the size of its frame (progress counts frame bytes).
  struct ReceivedBatch {
    Batch batch;
    std::size_t frame_bytes = 0;
  };
  static Result<ReceivedBatch> decode_received_batch(ByteView payload, const DecodeLimits& limits);
  // A ZBATCH: the BATCH it carries, decompressed within limits.max_batch_payload; frame_bytes
  // counts the compressed frame (what crossed the wire).
  static Result<ReceivedBatch> decode_received_zbatch(ByteView payload, const DecodeLimits& limits);

  // --- shared state ---

  storage::Store& store;
  SessionParams params;
  DecodeLimits limits;
  FrameDecoder decoder;
  SessionState state = SessionState::hello;
  Bytes control;  // small frames waiting to be sent (ahead of batches)
  std::optional<Error> error;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;

  // Handshake: the peer's HELLO and what it negotiated.
  Hello peer_hello;
  bool have_peer = false;
  std::uint16_t protocol = 0;
  std::uint32_t peer_max_frame = 0;
  bool compress_batches = false;  // both HELLOs carry kFeatureZstdBatches: send ZBATCH
  bool blobs_enabled = false;     // both HELLOs carry kFeatureBlobs

  // Log exchange.
  std::uint32_t inflight = 0;                 // unacknowledged batches over all projects
  std::map<ProjectId, ProjectSync> projects;  // common projects only
  std::deque<ProjectId> rr;                   // round robin over projects for fairness
  // A retired identity of ours was offered at seq 0 (its whole log asked for); cleared once
  // a project is in sync unless a new divergence of one was seen meanwhile.
  std::set<DeviceId> asked_whole_log;
  bool retired_diverged = false;
  Bytes batch_scratch;  // a BATCH frame before compression (reused)

  // Joining with an invite (sync/join.hpp), joiner side: the code, JOIN sent and not yet
  // answered, the peer's PROJECTS held back until JOINED made the project ours, the outcome.
  std::optional<InviteCode> join_code;
  bool join_pending = false;
  std::optional<Projects> held_projects;
  std::optional<Result<storage::ProjectInfo>> join_result;

  // Trust policy "ask": proven projects held until approve(), and the peer's VV and TIPS
  // for each.
  std::set<ProjectId> pending;
  std::map<ProjectId, VectorMsg> held_vv;
  std::map<ProjectId, TipsMsg> held_tips;
  // The peer's SUBSCRIPTION per project (it comes before that project's VV); none: it wants
  // everything and its logs are whole.
  std::map<ProjectId, SubscriptionMsg> peer_subs;
  bool subscriptions_enabled = false;  // both HELLOs carry kFeatureSubscriptions
  // NOTICE: the peer's HELLO carries kFeatureNotices (we may send NOTICE), and what it told us.
  bool notices_enabled = false;
  PeerNotices notices;
  // Proven projects not synced because the peer was removed from them (ours, NOTICE removed)
  // or we were (the peer's NOTICE): what the peer sends for them before it knows is dropped.
  std::set<ProjectId> refused;

  // One thread drives the session (session.hpp): checked in debug builds.
  ThreadCheck thread;
  // Input waits in the decoder: batches_ahead() received batches are on their way to the
  // store, or a frame waits in `held_frame` for those before it.
  bool busy = false;
  // Received batches on their way to the store, in arrival order (SessionParams::offload): each
  // is prepared on a worker thread (SessionParams::prepare; else within its apply), then applied
  // on the writer's in this order, then answered here in this order.
  struct ApplyJob {
    ReceivedBatch in;
    storage::ApplyOptions options;
    std::optional<storage::PreparedLog> prepared;  // unset without SessionParams::prepare
    bool ready = false;                            // prepared
    bool posted = false;                           // handed to offload
    bool done = false;  // applied: `result` holds the outcome, the commit's status included
    Result<storage::ApplyResult> result = make_error(Errc::internal, "not applied");
  };
  std::deque<std::shared_ptr<ApplyJob>> applying;
  // A frame other than a batch that arrived while batches before it are applied: handled once
  // they all are (frames keep their order). Its payload views the decoder's buffer, which is
  // not fed again while busy.
  std::optional<Frame> held_frame;
  std::function<void()> resume_hook;
  // False once the session is gone: an offloaded apply finishing later touches nothing.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(storage::Store& s, SessionParams p);
  ~Impl() { *alive = false; }

  // --- session.cpp: input, refusal, ending ---

  // Failure lines of every session in the process, per kind.
  static RateLimitedLog& session_log();
  std::string peer_label() const;
  bool finished() const { return state == SessionState::failed || state == SessionState::closed; }
  void fail(Error e, bool tell_peer);
  void receive(ByteView bytes);
  // Handles the frames waiting in the decoder until none is whole, the session ends or an
  // apply is offloaded.
  void process_input();
  void handle(const Frame& f);
  // The one place a frame is refused: a known type outside its states, or an unknown one.
  void refuse(std::uint8_t type, bool known);
  void on_ping(Ping);
  void on_error(PeerError m);
  // NOTICE: sent only to a peer that announced kFeatureNotices; received ones are kept in
  // `notices` (a closing one ends the session cleanly).
  void notify(NoticeKind kind, const ProjectId& project, std::string message);
  void on_notice(NoticeMsg m);
  void drop_refused(const ProjectId& id);
  // Ends the session cleanly (no error): ours (`notify_peer`: NOTICE closing) or the peer's.
  void close_cleanly(const std::string& reason, bool notify_peer);
  // "<device name> (<short id>)" of this device, as NOTICE messages name it.
  std::string self_label() const;

  // --- session_handshake.cpp: HELLO, PROJECTS ---

  void send_hello();
  void on_hello(Hello m);
  void send_projects();
  // PROJECTS as received: held while our JOIN is unanswered, else on_projects().
  void on_projects_msg(Projects m);
  void on_projects(Projects m);
  // Our project list changed (a project was joined): tell the peer.
  void reannounce();
  // A session with the peer is up now (its record's last_seen_ms, when it is a kept peer).
  void note_seen();

  // --- session_log.cpp: vectors, batches, acknowledgements, DONE, live push ---

  static std::uint64_t get(const storage::VersionVector& v, const DeviceId& a);
  static void raise(storage::VersionVector& v, const DeviceId& a, std::uint64_t seq);
  // The common project a message names; fails the session (permission_denied) if it is not.
  ProjectSync* project_of(const ProjectId& id, std::string_view what);
  // VV then TIPS for a project that became common (after PROJECTS or approval).
  void send_vv(ProjectSync& ps);
  // Two histories under one device key (docs/storage.md "One identity, one history").
  void diverge(ProjectSync& ps, const DeviceId& a, std::uint64_t seq, bool tell_peer);
  void on_vv(VectorMsg m);
  void on_new(VectorMsg m);
  void on_vector(VectorMsg m, bool is_new);
  void on_tips(TipsMsg m);
  void on_forked(ForkedMsg m);
  void on_batch(ReceivedBatch in);
  // A batch of an author we said FORKED about (in flight when we did): answered with our head.
  bool answer_diverged(const Batch& m);
  // The received batches that may be on their way at once: window_batches with
  // SessionParams::prepare, else 1.
  std::size_t batches_ahead() const;
  // The pipeline of `applying`: hands the prepared jobs at its front to offload, in order.
  void post_prepared();
  // Answers the applied jobs at its front, then reads on when there is room again.
  void answer_applied();
  // What follows the apply of a received batch (inline, or when an offloaded one is done).
  void batch_applied(const ReceivedBatch& in, Result<storage::ApplyResult> r);
  void on_zbatch(ReceivedBatch in);  // refused unless we announced kFeatureZstdBatches
  void on_ack(Ack m);
  void on_done(Done m);
  void on_subscription(SubscriptionMsg m);
  void subscription_changed(const ProjectId& id);
  // The peer's subscription of a project (everything when it sent none).
  storage::Subscription peer_subscription(const ProjectId& id) const;
  // Our vector for the project, capped where our logs are not whole and the peer wants more
  // than we hold (never pose as holding what we left out).
  Result<storage::VersionVector> offer_vector(ProjectSync& ps);
  std::uint64_t next_from(const ProjectSync& ps, const DeviceId& a) const;
  bool has_more(const ProjectSync& ps) const;
  std::uint64_t to_send(const ProjectSync& ps) const;
  std::uint64_t to_receive(const ProjectSync& ps) const;
  void update_sync_flag(ProjectSync& ps);
  void sample_rate(ProjectSync& ps);
  bool produce_batch(ProjectSync& ps, Bytes& out);
  // One BATCH of author `a` (whose head is `head`) for `ps`: sent, nothing to send, or the
  // session failed.
  enum class Produced { batch, nothing, failed };
  Produced produce_batch_of(ProjectSync& ps, const DeviceId& a, std::uint64_t head, Bytes& out);
  std::size_t append_compressed(const Bytes& batch, Bytes& out) const;
  Bytes take_output(std::size_t max_bytes);
  void notify_local_change(const ProjectId& id);
  // What the peer holds, kept across sessions (Store::note_peer_holds).
  storage::VersionVector known_holds(const ProjectId& id) const;
  static void shows(ProjectSync& ps, const DeviceId& a, std::uint64_t seq);
  void record_holds();

  // --- session_blobs.cpp: fetching and serving blobs, after the documents ---

  // The blob this session fetches (one at a time): its receiver and the window asked for.
  struct BlobFetch {
    ProjectId project;
    std::unique_ptr<storage::BlobReceiver> rx;
    bool hashes_asked = false;
    std::uint32_t first = 0, end = 0;  // chunks asked for by the last BLOB_GET
    std::uint32_t outstanding = 0;     // of them, not yet received
  };
  std::optional<BlobFetch> fetch;
  // Blobs not to ask this peer for again on this session: it does not hold them, it sent a
  // chunk or hash list that failed verification, or they are being finished.
  std::set<std::pair<ProjectId, storage::BlobId>> blob_skip;
  // Blobs this session fetched (finished on the blob worker, or failed there), with the
  // store's refetchable_epoch() then: not asked for again unless gc released blobs since (a
  // phone lets go of the originals it fetched beyond its level, and may ask again).
  std::map<std::pair<ProjectId, storage::BlobId>, std::uint64_t> fetched;
  // When `fetched` reaches this size, the blobs held by now leave it (the store refuses to
  // receive a held blob anyway): a session that brings 100k photos keeps no entry per photo.
  std::size_t fetched_prune_at = 1024;
  // The peer's requests, served when no BATCH is waiting (documents first, always).
  struct BlobServe {
    ProjectId project;
    storage::BlobId blob{};
    std::unique_ptr<storage::BlobReader> reader;
    std::uint32_t next = 0, end = 0;
  };
  std::deque<BlobServe> serving;
  // The most BLOB_GETs of the peer queued at once (more is a protocol violation).
  static constexpr std::size_t kMaxServing = 4;

  void on_blob_get(BlobGet m);
  void on_blob_head(BlobHead m);
  void on_blob_chunk(BlobChunk m);
  void on_blob_wants(BlobWants m);
  // The level this session fetches by itself in a project (policy with this peer, capped by
  // the link's).
  storage::BlobPolicy blob_level(const ProjectId& project) const;
  // Starts fetching `id` of `project` (false: it cannot be received now: skipped).
  bool start_fetch(const ProjectId& project, const storage::BlobId& id, Bytes& out);
  // Recounts what we still want of a project's blobs; tells the peer when it changed.
  void count_wanted(ProjectSync& ps, storage::BlobPolicy level,
                    const std::vector<storage::BlobId>& demanded, Bytes& out);
  // Starts the next wanted blob of a project whose documents are in sync, or asks for the
  // next window of the current one; then serves chunks the peer asked for (no BATCH pending).
  void produce_blob_frames(Bytes& out, std::size_t max_bytes);
  void ask_next_window(Bytes& out);
  // The fetched blob is complete: finished (fsync, naming) on the blob worker, not asked for
  // again on this session.
  void finish_fetch();
  void give_up_fetch(const std::string& why, bool chunks_may_follow);
  // Chunks still on their way of a window given up on: dropped when they arrive.
  struct Abandoned {
    ProjectId project;
    storage::BlobId blob{};
    std::uint32_t first = 0, end = 0;
  };
  std::optional<Abandoned> abandoned;
  bool want_scan = true;  // look for wanted blobs (documents arrived or a fetch ended)
  // Blobs the peer asked for that we did not hold: told (BLOB_HEAD status 2) once we do.
  std::set<std::pair<ProjectId, storage::BlobId>> told_not_held;
  static constexpr std::size_t kMaxToldNotHeld = 1024;
  bool recheck_told = false;  // something may have become held since

  // --- session_join.cpp: JOIN, JOINED ---

  Status join(const InviteCode& code);
  void send_join();
  void hold_projects(Projects m);
  void on_join(Join m);
  void on_joined(Joined m);

  // --- session_trust.cpp: the trust policy ---

  bool must_ask(const storage::ProjectInfo& p);
  void admit_pending();
  void approve();
  bool peer_removed(const ProjectId& project) const;
  // The NOTICE removed message for project `p`.
  std::string removed_message(const storage::ProjectInfo& p) const;
};

}  // namespace fieldsync::sync
