// GET /v1/projects/{pid}/changes?since=N&limit=&feed=normal|longpoll|sse&timeout=ms
//     &include_docs=1&collection=NAME&selector=JSON
#include <algorithm>
#include <limits>
#include <memory>
#include <set>
#include <string>

#include "common/clock.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "storage/store.hpp"
#include "storage/subscription.hpp"

namespace fieldsync::ipc {

namespace {

std::string render_changes(const ChangeChunk& chunk) {
  std::string s = "{\"changes\":[";
  for (std::size_t i = 0; i < chunk.events.size(); ++i)
    s += (i ? "," : "") + chunk.events[i].second;
  return s + "],\"last_seq\":" + std::to_string(chunk.last_seq) + "}";
}

}  // namespace

void register_changes_routes(Router& router, ApiContext& ctx) {
  // A stream ticket for a browser's EventSource (docs/api.md "Web apps").
  router.add("POST", "/v1/tickets", [&ctx](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    const std::int64_t now = unix_ms();
    const std::uint32_t ttl = ctx.options.ticket_ttl_ms;
    ApiResponse r;
    r.status = 201;
    r.body = "{\"ticket\":\"" + ctx.tickets.issue(now, ttl) +
             "\",\"expires_ms\":" + std::to_string(now + ttl) + "}";
    return r;
  });
  router.add("GET", "/v1/projects/{pid}/changes", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    // The project must exist before we wait on it.
    if (auto p = ctx.store.get_project(*pid); !p) return fail(p.error());
    if (auto k = known_query(
            req, {"since", "limit", "feed", "timeout", "include_docs", "collection", "selector"});
        !k)
      return fail(k.error());
    // include_docs=1: each change carries the document as it is now ("doc"; null once it is
    // no longer here). collection=NAME (repeatable): only changes of those collections.
    auto include_docs = flag_query(req, "include_docs");
    if (!include_docs) return fail(include_docs.error());
    std::set<std::string, std::less<>> collections;
    for (const auto& c : req.query_values("collection")) {
      if (c.empty())
        return fail(make_error(Errc::invalid_argument, "collection= needs a collection name"));
      collections.insert(c);
    }
    if (collections.size() > storage::kMaxSubscriptionCollections)
      return fail(make_error(Errc::invalid_argument,
                             "at most " + std::to_string(storage::kMaxSubscriptionCollections) +
                                 " collection= parameters"));
    // selector=JSON: only changes of documents whose version now (the winner) matches it; a
    // document deleted or gone no longer matches.
    auto selected = selector_query(req, ctx);
    if (!selected) return fail(selected.error());
    std::shared_ptr<const storage::Subscription> selector = std::move(*selected);
    std::string feed = req.query_value("feed").value_or("normal");
    if (feed != "normal" && feed != "longpoll" && feed != "sse")
      return fail(make_error(Errc::invalid_argument, "feed must be normal, longpoll or sse"));

    // Cursor: ?since=N or ?since=now; for SSE a Last-Event-ID header (reconnect) wins.
    std::uint64_t since = 0;
    auto since_text = req.query_value("since");
    if (feed == "sse" && req.header("last-event-id")) {
      req.query.erase("since");
      req.query.emplace("since", *req.header("last-event-id"));
      since_text = req.header("last-event-id");
    }
    auto last = ctx.store.last_change_seq(*pid);
    if (!last) return fail(last.error());
    if (since_text && *since_text == "now") {
      since = *last;
    } else {
      auto s = uint_query(req, "since", 0, std::numeric_limits<std::uint64_t>::max());
      if (!s) return fail(s.error());
      since = *s;
    }
    // A cursor is a sequence number this feed has handed out: one beyond the newest change
    // (up to 2^64-1) would make "the change after it" wrap around to the start of the feed.
    if (since > *last)
      return fail(make_error(Errc::invalid_argument,
                             "since (or Last-Event-ID) = " + std::to_string(since) +
                                 " is beyond the newest change of this project (last_seq = " +
                                 std::to_string(*last) + "); resume from 0 or 'now'"));
    auto limit = page_limit(req, ctx);
    if (!limit) return fail(limit.error());

    ProjectId project = *pid;
    std::uint32_t n = *limit;
    const bool docs = *include_docs;
    // Filtered pages are this stream's own; others are shared with same-cursor streams.
    const bool shared = !docs && collections.empty() && !selector;
    // With a filter, a page may hold fewer than `limit` changes (last_seq still moves past
    // those left out).
    auto fetch = [&ctx, project, n, docs, selector, collections = std::move(collections)](
                     std::uint64_t after) -> Result<ChangeChunk> {
      if (after == std::numeric_limits<std::uint64_t>::max()) return ChangeChunk{{}, after};
      auto changes = ctx.store.changes_since(project, after, n);
      if (!changes) return changes.error();
      ChangeChunk chunk;
      chunk.last_seq = after;
      for (const auto& c : *changes) {
        chunk.last_seq = std::max(chunk.last_seq, c.seq);
        if (!collections.empty() && !collections.count(c.collection)) continue;
        std::optional<Result<storage::DocumentState>> d;
        if (docs || selector) {
          d = ctx.store.get_document(project, c.collection, c.doc_id);
          if (!*d && (*d).error().code != Errc::not_found) return (*d).error();
        }
        if (selector && (!*d || !(**d).body || !selector->matches(c.collection, *(**d).body)))
          continue;
        std::string text = change_json(c);
        if (docs) {
          const auto& doc = *d;
          text.pop_back();  // the closing brace
          text += ",\"doc\":" + (doc ? document_json(*doc) : std::string("null")) + "}";
        }
        chunk.events.emplace_back(c.seq, std::move(text));
      }
      return chunk;
    };

    if (feed == "normal")  // a read: on a reader thread (ipc/reader_pool.hpp)
      return on_reader(ctx, [fetch, since]() -> ApiResponse {
        auto chunk = fetch(since);
        if (!chunk) return fail(chunk.error());
        return json_response(200, render_changes(*chunk));
      });
    auto stream = std::make_shared<ChangeStream>();
    stream->project = project;
    stream->since = since;
    stream->limit = shared ? n : 0;
    stream->fetch = fetch;
    stream->render = render_changes;
    if (feed == "longpoll") {
      // Above api.longpoll_timeout_ms the wait is shortened to it (documented), never wrapped.
      auto timeout = uint_query(req, "timeout", ctx.options.longpoll_timeout_ms,
                                std::numeric_limits<std::uint64_t>::max());
      if (!timeout) return fail(timeout.error());
      stream->mode = ChangeStream::Mode::longpoll;
      stream->timeout = std::chrono::milliseconds(
          std::min<std::uint64_t>(*timeout, ctx.options.longpoll_timeout_ms));
    } else {
      stream->mode = ChangeStream::Mode::sse;
      stream->heartbeat =
          std::chrono::milliseconds(std::max<std::uint32_t>(ctx.options.sse_heartbeat_ms, 10));
    }
    ApiResponse r;
    r.stream = std::move(stream);
    return r;
  });
}

}  // namespace fieldsync::ipc
