// Blobs over a session (docs/protocol.md "Blobs"): after a project's documents are in sync,
// each side fetches the blobs its documents refer to and it does not hold, one at a time, in
// windows of chunks verified one by one; and serves the peer's requests whenever no BATCH is
// waiting, so a blob never delays the documents behind it.
#include "storage/blob_ref.hpp"
#include "sync/session_impl.hpp"

namespace fieldsync::sync {
namespace {

// Chunks asked for per BLOB_GET (2 MiB of 256 KiB chunks); up to two such windows are in
// flight.
constexpr std::uint32_t kBlobWindow = 8;
// Wanted blobs looked at per scan of a project.
constexpr std::uint32_t kWantedScan = 64;

}  // namespace

void Session::Impl::on_blob_get(BlobGet m) {
  if (!blobs_enabled)
    return fail(make_error(Errc::failed_precondition, "BLOB_GET without the blobs feature"), true);
  if (!project_of(m.project, "BLOB_GET")) return;
  if (serving.size() >= kMaxServing)
    return fail(make_error(Errc::resource_exhausted,
                           "more than " + std::to_string(kMaxServing) + " BLOB_GET outstanding"),
                true);
  auto reader = store.blobs().open(m.project, m.blob);
  const std::uint32_t n = reader ? static_cast<std::uint32_t>((*reader)->chunk_hashes().size()) : 0;
  // A list of hashes that does not fit the peer's frames is as good as not held.
  if (!reader ||
      (m.want_hashes && std::uint64_t{n} * 32 + 64 + kFrameHeaderBytes > peer_max_frame)) {
    encode_blob_head(control, BlobHead{m.project, m.blob, false, false, {}});
    if (!reader && told_not_held.size() < kMaxToldNotHeld) {
      // Told again once it is held here. A blob our documents refer to is asked for from our
      // other peers in turn (a demand relayed through the mesh; the store bounds them).
      told_not_held.insert({m.project, m.blob});
      if (reader.error().code == Errc::failed_precondition)
        (void)store.blobs().demand(m.project, m.blob);
    }
    return;
  }
  if (m.want_hashes)
    encode_blob_head(control, BlobHead{m.project, m.blob, true, false, (*reader)->chunk_hashes()});
  std::uint32_t first = std::min(m.first, n);
  std::uint32_t end =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t{first} + m.count, n));
  if (end > first) serving.push_back(BlobServe{m.project, m.blob, std::move(*reader), first, end});
}

void Session::Impl::on_blob_head(BlobHead m) {
  if (m.now_held) {  // the peer got a blob it lacked when we asked: ask again
    if (blob_skip.erase({m.project, m.blob})) want_scan = true;
    return;
  }
  if (!fetch || fetch->project != m.project || fetch->rx->info().id != m.blob)
    return fail(make_error(Errc::invalid_argument, "BLOB_HEAD for a blob not asked for"), true);
  if (!m.held) return give_up_fetch("the peer does not hold it", false);
  if (!fetch->hashes_asked)
    return fail(make_error(Errc::invalid_argument, "BLOB_HEAD with hashes not asked for"), true);
  fetch->hashes_asked = false;
  if (auto st = fetch->rx->set_chunk_hashes(std::move(m.hashes)); !st)
    return give_up_fetch(st.error().message, true);
}

void Session::Impl::on_blob_chunk(BlobChunk m) {
  const storage::BlobId& id = m.blob;
  if (abandoned && abandoned->project == m.project && abandoned->blob == id &&
      m.index >= abandoned->first && m.index < abandoned->end)
    return;  // the rest of a window given up on
  if (!fetch || fetch->project != m.project || fetch->rx->info().id != id ||
      m.index < fetch->first || m.index >= fetch->end || fetch->outstanding == 0)
    return fail(make_error(Errc::invalid_argument, "BLOB_CHUNK not asked for"), true);
  if (!fetch->rx->has_chunk_hashes())
    return fail(make_error(Errc::invalid_argument, "BLOB_CHUNK before its BLOB_HEAD"), true);
  --fetch->outstanding;
  if (auto it = projects.find(m.project); it != projects.end()) {
    it->second.stats.blob_bytes_received += m.data.size();
  }
  if (auto st = fetch->rx->put_chunk(m.index, m.data); !st)
    return give_up_fetch(st.error().message, true);
  if (!fetch->rx->complete()) return;
  if (auto it = projects.find(m.project); it != projects.end()) ++it->second.stats.blobs_received;
  finish_fetch();
}

void Session::Impl::on_blob_wants(BlobWants m) {
  ProjectSync* ps = project_of(m.project, "BLOB_WANTS");
  if (!ps) return;
  ps->stats.blobs_to_send = m.blobs;
  ps->stats.blob_bytes_to_send = m.bytes;
}

storage::BlobPolicy Session::Impl::blob_level(const ProjectId& project) const {
  return std::min(store.blobs().policy_with(project, peer_hello.device),
                  params.options.blob_link_policy);
}

bool Session::Impl::start_fetch(const ProjectId& project, const storage::BlobId& id, Bytes& out) {
  if (blob_skip.count({project, id})) return false;
  if (auto it = fetched.find({project, id}); it != fetched.end()) {
    if (it->second == store.blobs().refetchable_epoch()) return false;
    fetched.erase(it);
  }
  auto rx = store.blobs().begin_receive(project, id);
  if (!rx.ok()) {
    // Being received on another session: not skipped, the store wakes this session when
    // that transfer ends without the blob. Held by now: not listed as wanted any more (and
    // may be fetched again once released).
    if (rx.error().code != Errc::failed_precondition && rx.error().code != Errc::already_exists)
      blob_skip.insert({project, id});
    return false;
  }
  fetch = BlobFetch{project, std::move(*rx)};
  if (abandoned && abandoned->project == project && abandoned->blob == id)
    abandoned.reset();  // asked again: chunks of the old window are as good
  want_scan = true;     // look again once this one is done
  ask_next_window(out);
  return true;
}

void Session::Impl::count_wanted(ProjectSync& ps, storage::BlobPolicy level,
                                 const std::vector<storage::BlobId>& demanded, Bytes& out) {
  // Asked for on demand counts too (the current fetch among them).
  std::pair<std::uint64_t, std::uint64_t> total{0, 0};
  if (level != storage::BlobPolicy::none)
    if (auto t = store.blobs().wanted_total(ps.id, level, demanded); t.ok()) total = *t;
  ps.stats.blobs_to_receive = total.first;
  ps.stats.blob_bytes_to_receive = total.second;
  if (ps.wants_told == total) return;
  ps.wants_told = total;
  encode_blob_wants(out, BlobWants{ps.id, total.first, total.second});
}

void Session::Impl::finish_fetch() {
  // Being finished on the worker; should that fail, not asked for again on this session.
  fetched[{fetch->project, fetch->rx->info().id}] = store.blobs().refetchable_epoch();
  if (fetched.size() >= fetched_prune_at) {
    for (auto it = fetched.begin(); it != fetched.end();) {
      auto b = store.blobs().find(it->first.first, it->first.second);
      if (b.ok() && *b && (*b)->held)
        it = fetched.erase(it);
      else
        ++it;
    }
    fetched_prune_at = std::max<std::size_t>(1024, 2 * fetched.size());
  }
  fetch->rx->finish(nullptr);
  fetch.reset();
  want_scan = true;
}

void Session::Impl::give_up_fetch(const std::string& why, bool chunks_may_follow) {
  if (!fetch) return;
  const storage::BlobId id = fetch->rx->info().id;
  session_log().log(LogLevel::info, "blob",
                    "sync: blob " + storage::digest_hex(id).substr(0, 12) + " not fetched from " +
                        peer_label() + ": " + why);
  blob_skip.insert({fetch->project, id});
  // After "not held" no chunk follows; after a failed verification the rest of the window may.
  if (chunks_may_follow && fetch->outstanding > 0)
    abandoned = Abandoned{fetch->project, id, fetch->first, fetch->end};
  fetch.reset();  // the chunks already written stay for the next attempt
  want_scan = true;
}

void Session::Impl::ask_next_window(Bytes& out) {
  auto& f = *fetch;
  if (f.rx->complete()) return finish_fetch();  // an empty blob, or every chunk was here
  // Two windows in flight: the next is asked for while the last one's chunks still arrive,
  // so the link never idles for a round trip.
  auto first = f.rx->next_missing(f.outstanding > 0 ? f.end : 0);
  if (!first) return;
  std::uint32_t count = std::min(kBlobWindow, f.rx->chunk_count() - *first);
  f.hashes_asked = !f.rx->has_chunk_hashes();
  if (f.outstanding == 0) f.first = *first;
  f.end = *first + count;
  f.outstanding += count;
  encode_blob_get(out, BlobGet{f.project, f.rx->info().id, f.hashes_asked, *first, count});
}

void Session::Impl::produce_blob_frames(Bytes& out, std::size_t max_bytes) {
  // Blobs the peer asked for and we lacked, held now: say so (once each).
  if (recheck_told) {
    recheck_told = false;
    for (auto it = told_not_held.begin(); it != told_not_held.end();) {
      auto o = store.blobs().open(it->first, it->second);
      if (o.ok()) {
        encode_blob_head(out, BlobHead{it->first, it->second, false, true, {}});
        it = told_not_held.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Fetching: the next window of the current blob, or the next wanted blob of a project
  // whose documents are in sync with this peer.
  if (fetch) {
    if (fetch->outstanding <= kBlobWindow && !fetch->hashes_asked &&
        (fetch->outstanding == 0 || fetch->rx->has_chunk_hashes()))
      ask_next_window(out);
  } else if (want_scan) {
    want_scan = false;
    for (auto& [pid, ps] : projects) {
      if (!ps.was_in_sync) continue;
      // The store indexes references after commits on its worker; catch up here so that
      // documents just applied are seen (reads, and a commit only if references changed).
      if (!store.blobs().index(pid).ok()) continue;
      const storage::BlobPolicy level = blob_level(pid);
      ps.stats.blob_policy = std::string(storage::blob_policy_name(level));
      const auto demanded = store.blobs().demanded(pid);
      count_wanted(ps, level, demanded, out);
      if (fetch || level == storage::BlobPolicy::none) continue;
      // Blobs an app (here, or a peer through us) asked for come first.
      for (const auto& id : demanded)
        if (start_fetch(pid, id, out)) break;
      std::optional<storage::BlobId> after;
      while (!fetch) {
        auto wanted = store.blobs().wanted(pid, after, kWantedScan, level);
        if (!wanted.ok() || wanted->empty()) break;
        for (const auto& info : *wanted)
          if (start_fetch(pid, info.id, out)) break;
        if (wanted->size() < kWantedScan) break;
        after = wanted->back().id;
      }
    }
  }
  // Serving: only while no project has a BATCH to send (documents first, always).
  for (const auto& [pid, ps] : projects)
    if (ps.vv_received && has_more(ps)) return;
  while (!serving.empty() && out.size() < max_bytes) {
    BlobServe& s = serving.front();
    auto data = s.reader->chunk(s.next);  // verified; a view into the reader's buffer
    if (!data.ok()) {                     // damaged here: the peer looks elsewhere
      encode_blob_head(out, BlobHead{s.project, s.blob, false, false, {}});
      serving.pop_front();
      continue;
    }
    encode_blob_chunk(out, s.project, s.blob, s.next, *data);
    if (auto it = projects.find(s.project); it != projects.end())
      it->second.stats.blob_bytes_sent += data->size();
    if (++s.next == s.end) serving.pop_front();
  }
}

}  // namespace fieldsync::sync
