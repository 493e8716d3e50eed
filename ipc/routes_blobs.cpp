// /v1/projects/{pid}/blobs...
#include "ipc/routes_blobs.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/clock.hpp"
#include "ipc/http_error.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "storage/blob_ref.hpp"
#include "storage/blob_store.hpp"
#include "storage/store.hpp"

namespace fieldsync::ipc {
namespace {

constexpr std::string_view kDefaultMediaType = "application/octet-stream";

Result<storage::BlobId> blob_param(const ApiRequest& req) {
  const std::string& text = req.param("id");
  auto id = storage::parse_digest_hex(text);
  if (!id)
    return make_error(Errc::invalid_argument,
                      "bad blob id " + quote_input(text) + " (64 lowercase hex digits)");
  return *id;
}

std::string info_members(const storage::BlobInfo& info) {
  return "\"id\":" + json_quote(storage::digest_hex(info.id)) +
         ",\"size\":" + std::to_string(info.size) + ",\"type\":" + json_quote(info.media_type) +
         ",\"root\":" + json_quote(storage::digest_hex(info.root));
}

std::string usage_json(const storage::BlobUsage& u) {
  return "{\"held_bytes\":" + std::to_string(u.held_bytes) +
         ",\"held_count\":" + std::to_string(u.held_count) +
         ",\"wanted_count\":" + std::to_string(u.wanted_count) +
         ",\"quota_bytes\":" + std::to_string(u.quota_bytes) + "}";
}

// ---------------------------------------------------------------- upload

// What the io thread and the blob worker share about one upload: bytes queued to the worker,
// the server waiting to read on, and the first write error.
struct UploadFlow {
  std::mutex mu;
  std::uint64_t queued = 0;
  std::function<void()> resume;
  std::optional<Error> failed;

  // Called on the worker once a piece is written (or failed).
  void written(std::uint64_t n, const Status& st) {
    std::function<void()> go;
    {
      std::lock_guard lock(mu);
      queued -= n;
      if (!st && !failed) failed = st.error();
      if (resume && (queued <= kMaxUploadQueuedBytes || failed)) {
        go = std::move(resume);
        resume = nullptr;
      }
    }
    if (go) go();
  }
};

// The upload itself lives on the io thread (its sink), and once finish() was asked, in the
// reply that is posted back there.
struct UploadHolder {
  std::unique_ptr<storage::BlobUpload> upload;
  std::string project;
};

// What to do once an upload's blob is stored, on the blob worker: the 201 body, or an error.
// Empty: an app's upload (its reference is the answer, and its variants are made).
using AfterStored = std::function<Result<std::string>(const storage::BlobInfo&)>;

std::shared_ptr<BodySink> upload_sink(ApiContext& ctx, std::unique_ptr<storage::BlobUpload> up,
                                      std::string media_type, const ProjectId& pid,
                                      AfterStored after = nullptr) {
  auto holder = std::make_shared<UploadHolder>();
  holder->upload = std::move(up);
  holder->project = pid.str();
  auto flow = std::make_shared<UploadFlow>();
  auto total = std::make_shared<std::uint64_t>(0);
  auto sink = std::make_shared<BodySink>();
  sink->write = [holder, flow, total](ByteView piece) -> Status {
    {
      std::lock_guard lock(flow->mu);
      if (flow->failed) return *flow->failed;
      flow->queued += piece.size();
    }
    *total += piece.size();
    const std::uint64_t n = piece.size();
    holder->upload->write(Bytes(piece.begin(), piece.end()),
                          [flow, n](Status st) { flow->written(n, st); });
    return {};
  };
  sink->ready = [flow](std::function<void()> resume) {
    {
      std::lock_guard lock(flow->mu);
      if (flow->queued > kMaxUploadQueuedBytes && !flow->failed) {
        flow->resume = std::move(resume);
        return;
      }
    }
    resume();
  };
  sink->refuse = [holder, total](const Error& e) {
    spdlog::info("blob upload into project {} refused after {} bytes: {}", holder->project, *total,
                 e.message);
    return storage_error_response(e);
  };
  sink->abort = [holder, total] {
    spdlog::info("blob upload into project {} cut after {} bytes; nothing kept", holder->project,
                 *total);
    if (holder->upload) holder->upload->abort();
  };
  sink->finish = [&ctx, holder, flow, media_type = std::move(media_type), pid,
                  after = std::move(after)]() -> ApiResponse {
    {
      std::lock_guard lock(flow->mu);
      if (flow->failed) {
        holder->upload->abort();
        return storage_error_response(*flow->failed);
      }
    }
    ApiResponse r;
    r.deferred = std::make_shared<DeferredResponse>();
    r.deferred->timeout = std::chrono::milliseconds(ctx.options.request_timeout_ms);
    r.deferred->on_timeout = [] {
      return error_response(make_error(
          Errc::unavailable,
          "the upload is still being stored (api.request_timeout_ms passed); it is listed "
          "by GET /v1/projects/{pid}/blobs once complete"));
    };
    r.deferred->start = [&ctx, holder, media_type, pid,
                         after](std::function<void(ApiResponse)> reply) {
      auto post = ctx.post;
      if (!post) {
        reply(error_response(make_error(Errc::internal, "the API server is not running")));
        return;
      }
      storage::BlobUpload& upload = *holder->upload;
      upload.finish(media_type, [&ctx, holder, post, pid, after,
                                 reply = std::move(reply)](Result<storage::BlobInfo> info) mutable {
        // On the worker: what follows the blob (a variant's record), then the answer (and the
        // upload) go back to the server's thread.
        Result<std::string> body = std::string();
        if (info && after) body = after(*info);
        post([&ctx, holder = std::move(holder), reply = std::move(reply), pid, app = !after,
              info = std::move(info), body = std::move(body)]() mutable {
          if (!info || !body) {
            const Error& e = info ? body.error() : info.error();
            spdlog::info("blob upload into project {} not stored: {}", holder->project, e.message);
            reply(storage_error_response(e));
            return;
          }
          spdlog::info("blob {} ({} bytes, {}) stored for project {}",
                       storage::digest_hex(info->id), info->size, info->media_type,
                       holder->project);
          if (app) {
            reply(json_response(201, "{" + info_members(*info) +
                                         ",\"ref\":" + storage::blob_ref_json(*info) + "}"));
            if (ctx.blob_uploaded) ctx.blob_uploaded(pid, *info);
          } else {
            reply(json_response(201, *body));
          }
          holder->upload.reset();
        });
      });
    };
    return r;
  };
  return sink;
}

// ---------------------------------------------------------------- download

// A byte range of a blob: [first, last], inclusive.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return n;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A Content-Length over blob.max_blob_bytes is refused before any byte is read.
Status check_declared_length(const ApiRequest& req, const storage::BlobStore& blobs) {
  if (auto len = req.header("content-length")) {
    auto n = parse_u64(trim(*len));
    if (n && *n > blobs.options().max_blob_bytes)
      return make_error(Errc::too_large, "blob of " + std::to_string(*n) +
                                             " bytes exceeds blob.max_blob_bytes = " +
                                             std::to_string(blobs.options().max_blob_bytes));
  }
  return {};
}

// What a Range header asks of a blob of `size` bytes (RFC 9110 14.2): one range, or nothing
// (a header that is malformed, not in bytes or asks for several ranges is ignored: the whole
// blob is sent). `unsatisfiable` is set when the one range lies beyond the blob.
struct RangeAsk {
  std::optional<ByteRange> range;
  bool unsatisfiable = false;
};

RangeAsk parse_range(std::string_view header, std::uint64_t size) {
  RangeAsk out;
  header = trim(header);
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() < kUnit.size()) return out;
  for (std::size_t i = 0; i < kUnit.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != kUnit[i]) return out;
  std::string_view spec = trim(header.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return out;  // several ranges: whole body
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return out;
  auto a = trim(spec.substr(0, dash));
  auto b = trim(spec.substr(dash + 1));
  if (a.empty()) {  // bytes=-n: the last n bytes
    auto n = parse_u64(b);
    if (!n) return out;
    if (*n == 0 || size == 0) {
      out.unsatisfiable = true;
      return out;
    }
    out.range = ByteRange{size - std::min(*n, size), size - 1};
    return out;
  }
  auto first = parse_u64(a);
  if (!first) return out;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    auto l = parse_u64(b);
    if (!l || *l < *first) return out;
    last = std::min(*l, last);
  }
  if (*first >= size) {
    out.unsatisfiable = true;
    return out;
  }
  out.range = ByteRange{*first, last};
  return out;
}

// Whether an If-None-Match header (a list of entity tags, or "*") matches `etag` (weak
// comparison, RFC 9110 13.1.2).
bool etag_listed(std::string_view header, std::string_view etag) {
  header = trim(header);
  if (header == "*") return true;
  while (!header.empty()) {
    auto comma = header.find(',');
    auto item = trim(header.substr(0, comma));
    if (item.substr(0, 2) == "W/") item.remove_prefix(2);
    if (item == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

ApiResponse download(const ApiRequest& req, std::unique_ptr<storage::BlobReader> opened) {
  std::shared_ptr<storage::BlobReader> reader = std::move(opened);
  const storage::BlobInfo& info = reader->info();
  const std::string etag = "\"" + storage::digest_hex(info.id) + "\"";
  std::vector<std::pair<std::string, std::string>> headers{
      {"ETag", etag},
      {"Accept-Ranges", "bytes"},
      {"Cache-Control", "private, max-age=" + std::to_string(kBlobMaxAgeSeconds) + ", immutable"},
      {"X-Content-Type-Options", "nosniff"},
      {"Content-Security-Policy", "sandbox"},
  };
  if (auto inm = req.header("if-none-match"); inm && etag_listed(*inm, etag)) {
    ApiResponse r;
    r.status = 304;
    r.content_type.clear();
    r.headers = std::move(headers);
    return r;
  }
  RangeAsk ask;
  if (auto range = req.header("range")) {
    // If-Range with another validator: the whole (changed) representation instead.
    auto if_range = req.header("if-range");
    if (!if_range || trim(*if_range) == etag) ask = parse_range(*range, info.size);
  }
  if (ask.unsatisfiable) {
    auto r = error_response(
        make_error(Errc::invalid_argument,
                   "range not satisfiable: the blob has " + std::to_string(info.size) + " bytes"));
    r.status = 416;
    r.headers = std::move(headers);
    r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(info.size));
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
  }
  const std::uint64_t first = ask.range ? ask.range->first : 0;
  const std::uint64_t end = ask.range ? ask.range->last + 1 : info.size;
  auto at = std::make_shared<std::uint64_t>(first);
  auto source = std::make_shared<BodySource>();
  source->length = end - first;
  source->next = [reader, at, end]() -> Result<Bytes> {
    if (*at >= end) return Bytes{};
    // One verified chunk per piece: pieces end at chunk boundaries.
    const std::uint64_t to_boundary = storage::kBlobChunkBytes - *at % storage::kBlobChunkBytes;
    const auto want = static_cast<std::size_t>(std::min(to_boundary, end - *at));
    auto piece = reader->read(*at, want);
    if (!piece) return piece.error();
    if (piece->empty() || piece->size() > want)
      return make_error(Errc::data_loss, "blob " + storage::digest_hex(reader->info().id) +
                                             " is shorter than recorded");
    *at += piece->size();
    return piece;
  };
  source->done = [reader](const Status& st) {
    if (!st && st.error().code != Errc::unavailable)
      spdlog::warn("download of blob {} failed: {}", storage::digest_hex(reader->info().id),
                   st.error().message);
  };
  auto r = ApiResponse::streamed(std::move(source), info.media_type.empty()
                                                        ? std::string(kDefaultMediaType)
                                                        : info.media_type);
  r.headers = std::move(headers);
  if (ask.range) {
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes " + std::to_string(ask.range->first) + "-" +
                                                std::to_string(ask.range->last) + "/" +
                                                std::to_string(info.size));
  }
  return r;
}

// ---------------------------------------------------------------- on demand

// Downloads waiting for a blob this device does not hold yet, woken when the store records it
// held (BlobStore::watch_held, posted to the server's thread). Lives as long as the routes.
class BlobWaiters : public std::enable_shared_from_this<BlobWaiters> {
 public:
  BlobWaiters(ApiContext& ctx, storage::BlobStore& blobs) : ctx_(ctx), blobs_(blobs) {}
  ~BlobWaiters() {
    if (token_) blobs_.unwatch_held(token_);
  }
  void start() {
    std::weak_ptr<BlobWaiters> weak = weak_from_this();
    ApiContext* ctx = &ctx_;
    token_ = blobs_.watch_held([weak, ctx](const ProjectId& p, const storage::BlobId& id) {
      if (weak.expired() || !ctx->post) return;
      ctx->post([weak, p, id] {
        if (auto self = weak.lock()) self->wake(p, id);
      });
    });
  }
  // On the server's thread: `fn` runs once the blob is held (or never, when `deadline` passed
  // first; the caller answers by then).
  void add(const ProjectId& p, const storage::BlobId& id,
           std::chrono::steady_clock::time_point deadline, std::function<void()> fn) {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      std::erase_if(it->second, [&](const auto& w) { return w.first <= now; });
      it = it->second.empty() ? waiting_.erase(it) : std::next(it);
    }
    waiting_[{p, id}].emplace_back(deadline, std::move(fn));
  }
  void wake(const ProjectId& p, const storage::BlobId& id) {
    auto it = waiting_.find({p, id});
    if (it == waiting_.end()) return;
    auto list = std::move(it->second);
    waiting_.erase(it);
    for (auto& w : list) w.second();
  }

 private:
  ApiContext& ctx_;
  storage::BlobStore& blobs_;
  std::uint64_t token_ = 0;
  std::map<std::pair<ProjectId, storage::BlobId>,
           std::vector<std::pair<std::chrono::steady_clock::time_point, std::function<void()>>>>
      waiting_;
};

// 202: the blob is on its way (or waiting for a peer that has it).
ApiResponse fetch_pending(const storage::BlobId& id, const storage::BlobDemand& d) {
  const std::int64_t left = d.until_ms > 0 ? std::max<std::int64_t>(0, d.until_ms - unix_ms()) : 0;
  std::string s =
      "{\"blob\":" + json_quote(storage::digest_hex(id)) +
      ",\"state\":" + json_quote(d.receiving ? "fetching" : "waiting") +
      ",\"size\":" + std::to_string(d.size) +
      ",\"received_bytes\":" + std::to_string(d.received_bytes) +
      ",\"demand_ms_left\":" + std::to_string(left) + ",\"message\":" +
      json_quote(d.receiving ? "fetching it from a peer; ask again"
                             : "not on this device yet; connected peers are asked for it "
                               "(and their peers in turn); ask again") +
      "}";
  ApiResponse r = json_response(202, std::move(s));
  r.headers.emplace_back("Retry-After", "1");
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

std::string policy_json(const storage::ProjectBlobPolicy& p, storage::BlobPolicy fallback) {
  std::string s = "{\"policy\":";
  s += p.policy ? json_quote(storage::blob_policy_name(*p.policy)) : std::string("null");
  s += ",\"effective\":" + json_quote(storage::blob_policy_name(p.policy.value_or(fallback)));
  s += ",\"default\":" + json_quote(storage::blob_policy_name(fallback)) + ",\"peers\":{";
  bool first = true;
  for (const auto& [dev, level] : p.peers) {
    s += std::string(first ? "" : ",") + json_quote(dev.str()) + ":" +
         json_quote(storage::blob_policy_name(level));
    first = false;
  }
  return s + "}}";
}

Result<storage::ProjectBlobPolicy> policy_fields(const std::string& body, std::uint32_t depth) {
  auto obj = parse_object(body, "request body", depth);
  if (!obj) return obj.error();
  FS_TRY(check_fields(*obj, {"policy", "peers"}, "blob policy"));
  storage::ProjectBlobPolicy p;
  auto level = [](const boost::json::value& v,
                  std::string_view what) -> Result<storage::BlobPolicy> {
    auto l =
        v.is_string() ? storage::parse_blob_policy(std::string_view(v.as_string())) : std::nullopt;
    if (!l)
      return make_error(
          Errc::invalid_argument,
          std::string(what) + " must be one of none, on-demand, thumbnails, phone, archive");
    return *l;
  };
  if (auto* v = obj->if_contains("policy"); v && !v->is_null()) {
    auto l = level(*v, "'policy'");
    if (!l) return l.error();
    p.policy = *l;
  }
  if (auto* v = obj->if_contains("peers"); v && !v->is_null()) {
    if (!v->is_object())
      return make_error(Errc::invalid_argument, "'peers' must be an object of device id: policy");
    for (const auto& [key, val] : v->as_object()) {
      auto dev = DeviceId::parse(std::string_view(key));
      if (!dev)
        return make_error(Errc::invalid_argument,
                          "'peers' key " + quote_input(std::string(key)) + " is not a device id");
      auto l = level(val, "the policy of a peer");
      if (!l) return l.error();
      p.peers[*dev] = *l;
    }
  }
  return p;
}

}  // namespace

void register_blob_routes(Router& router, ApiContext& ctx, storage::BlobStore& blobs) {
  auto waiters = std::make_shared<BlobWaiters>(ctx, blobs);
  waiters->start();

  router.add("GET", "/v1/projects/{pid}/blob-policy", [&blobs](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto p = blobs.policy(*pid);
    if (!p) return fail(p.error());
    return json_response(200, policy_json(*p, blobs.options().policy));
  });

  router.add("PUT", "/v1/projects/{pid}/blob-policy", [&ctx, &blobs](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto f = policy_fields(req.body, ctx.options.max_json_depth);
    if (!f) return fail(f.error());
    if (auto st = blobs.set_policy(*pid, *f); !st) return fail(st.error());
    return json_response(200, policy_json(*f, blobs.options().policy));
  });

  router.add_streamed("POST", "/v1/projects/{pid}/blobs",
                      [&ctx, &blobs](ApiRequest& req) -> Result<std::shared_ptr<BodySink>> {
                        FS_TRY(known_query(req, {}));
                        auto pid = project_param(req);
                        if (!pid) return pid.error();
                        std::string type(kDefaultMediaType);
                        if (auto ct = req.header("content-type"); ct && !trim(*ct).empty())
                          type = trim(*ct);
                        if (!storage::valid_media_type(type))
                          return make_error(
                              Errc::invalid_argument,
                              "Content-Type " + quote_input(type) +
                                  " is not a media type (type/subtype[;parameters], at most " +
                                  std::to_string(storage::kMaxMediaTypeBytes) + " bytes)");
                        FS_TRY(check_declared_length(req, blobs));
                        auto up = blobs.begin_upload(*pid);
                        if (!up) return up.error();
                        return upload_sink(ctx, std::move(*up), std::move(type), *pid);
                      });

  router.add("GET", "/v1/projects/{pid}/blobs", [&ctx, &blobs](ApiRequest& req) {
    if (auto q = known_query(req, {"after", "limit"}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    std::optional<storage::BlobId> after;
    if (auto a = req.query_value("after")) {
      after = storage::parse_digest_hex(*a);
      if (!after)
        return fail(make_error(
            Errc::invalid_argument,
            "'after' must be a blob id (64 lowercase hex digits), got " + quote_input(*a)));
    }
    auto limit = page_limit(req, ctx);
    if (!limit) return fail(limit.error());
    auto list = blobs.list(*pid, after, *limit);
    if (!list) return fail(list.error());
    auto usage = blobs.usage(*pid);
    if (!usage) return fail(usage.error());
    std::string s = "{\"blobs\":[";
    for (std::size_t i = 0; i < list->size(); ++i) {
      const auto& b = (*list)[i];
      s += std::string(i ? "," : "") + "{" + info_members(b.info) +
           ",\"held\":" + (b.held ? "true" : "false") + ",\"refs\":" + std::to_string(b.refs) +
           ",\"added_ms\":" + std::to_string(b.added_ms) + "}";
    }
    s += "],\"usage\":" + usage_json(*usage) + ",\"next\":";
    s += list->size() >= *limit && !list->empty()
             ? json_quote(storage::digest_hex(list->back().info.id))
             : std::string("null");
    return json_response(200, s + "}");
  });

  router.add("GET", "/v1/projects/{pid}/blobs/{id}", [&ctx, &blobs, waiters](ApiRequest& req) {
    if (auto q = known_query(req, {"variant", "wait"}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto id = blob_param(req);
    if (!id) return fail(id.error());
    const std::string variant = req.query_value("variant").value_or("original");
    if (variant != "original" && variant != "preview" && variant != "thumbnail")
      return fail(make_error(
          Errc::invalid_argument,
          "variant must be original, preview or thumbnail, got " + quote_input(variant)));
    // A variant is the blob its `_variants` document names (the original need not be here).
    storage::BlobId serve = *id;
    if (variant != "original") {
      auto named = ctx.store.blob_variants(*pid, *id);
      if (!named) return fail(named.error());
      const auto& ref = !*named                ? std::nullopt
                        : variant == "preview" ? (*named)->preview
                                               : (*named)->thumbnail;
      if (!ref)
        return fail(make_error(Errc::not_found,
                               "variant " + variant + " of blob " + storage::digest_hex(*id) +
                                   " not made yet (it is made after an upload of a JPEG, PNG or "
                                   "WebP image, or supplied with PUT .../variants/" +
                                   variant + "; ask for the original meanwhile)"));
      serve = ref->id;
    }
    // How long to wait for a blob that is not here yet (0: answer 202 at once).
    auto wait = uint_query(
        req, "wait",
        std::min<std::uint64_t>(blobs.options().fetch_wait_ms, ctx.options.request_timeout_ms),
        ctx.options.request_timeout_ms);
    if (!wait) return fail(wait.error());
    auto reader = blobs.open(*pid, serve);
    if (reader) return download(req, std::move(*reader));
    if (reader.error().code != Errc::failed_precondition) return fail(reader.error());
    // Referred to but not here: fetched on demand from the peers (and theirs).
    auto d = blobs.demand(*pid, serve);
    if (!d) return fail(d.error());
    if (*wait == 0 && !d->held) return fetch_pending(serve, *d);
    ApiResponse r;
    r.deferred = std::make_shared<DeferredResponse>();
    r.deferred->timeout = std::chrono::milliseconds(*wait);
    const ProjectId project = *pid;
    r.deferred->on_timeout = [&blobs, project, serve] {
      auto now = blobs.demand(project, serve);
      if (!now) return fail(now.error());
      return fetch_pending(serve, *now);
    };
    r.deferred->start = [&blobs, waiters, req, project, serve,
                         w = *wait](std::function<void(ApiResponse)> reply) {
      auto answer = [&blobs, req, project, serve, reply] {
        auto opened = blobs.open(project, serve);
        if (opened) return reply(download(req, std::move(*opened)));
        if (opened.error().code != Errc::failed_precondition) return reply(fail(opened.error()));
      };
      waiters->add(project, serve, std::chrono::steady_clock::now() + std::chrono::milliseconds(w),
                   answer);
      // Held between demand() and now: no wake-up comes for it.
      if (blobs.open(project, serve)) waiters->wake(project, serve);
    };
    return r;
  });

  router.add_streamed(
      "PUT", "/v1/projects/{pid}/blobs/{id}/variants/{kind}",
      [&ctx, &blobs](ApiRequest& req) -> Result<std::shared_ptr<BodySink>> {
        FS_TRY(known_query(req, {}));
        auto pid = project_param(req);
        if (!pid) return pid.error();
        auto id = blob_param(req);
        if (!id) return id.error();
        const std::string kind = req.param("kind");
        if (kind != "preview" && kind != "thumbnail")
          return make_error(Errc::invalid_argument,
                            "variant must be preview or thumbnail, got " + quote_input(kind));
        std::string type;
        if (auto ct = req.header("content-type")) type = trim(*ct);
        if (!storage::valid_media_type(type) || type.rfind("image/", 0) != 0)
          return make_error(Errc::invalid_argument,
                            "a variant's Content-Type must be an image media type (image/...), "
                            "got " +
                                quote_input(type));
        // The original must be here: its reference is part of the `_variants` document.
        auto original = blobs.open(*pid, *id);
        if (!original) {
          Error e = original.error();
          if (e.code == Errc::failed_precondition)
            e.message = "blob " + storage::digest_hex(*id) +
                        " is not held on this device: variants are supplied where the "
                        "original is";
          return e;
        }
        storage::BlobInfo of = (*original)->info();
        FS_TRY(check_declared_length(req, blobs));
        auto up = blobs.begin_upload(*pid);
        if (!up) return up.error();
        // Once stored (on the blob worker): recorded as the app's variant.
        AfterStored after = [&store = ctx.store, project = *pid, of,
                             kind](const storage::BlobInfo& info) -> Result<std::string> {
          std::optional<storage::BlobInfo> preview, thumbnail;
          (kind == "preview" ? preview : thumbnail) = info;
          auto v = store.set_blob_variants(project, of, preview, thumbnail, storage::kMadeByApp);
          if (!v) return v.error();
          spdlog::info("{} of blob {} supplied by an app: blob {}", kind,
                       storage::digest_hex(of.id), storage::digest_hex(info.id));
          return "{" + info_members(info) + ",\"ref\":" + storage::blob_ref_json(info) +
                 ",\"variants\":" + storage::blob_variants_json(*v) + "}";
        };
        return upload_sink(ctx, std::move(*up), std::move(type), *pid, std::move(after));
      });

  router.add("POST", "/v1/projects/{pid}/blobs/gc", [&ctx, &blobs](ApiRequest& req) {
    if (auto q = known_query(req, {}); !q) return fail(q.error());
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    // The project must exist (gc itself covers every project of this device).
    if (auto u = blobs.usage(*pid); !u) return fail(u.error());
    ApiResponse r;
    r.deferred = std::make_shared<DeferredResponse>();
    r.deferred->timeout = std::chrono::milliseconds(ctx.options.request_timeout_ms);
    r.deferred->on_timeout = [] {
      return error_response(make_error(
          Errc::unavailable, "blob gc did not finish within api.request_timeout_ms (it goes on)"));
    };
    r.deferred->start = [&ctx, &blobs, project = *pid](std::function<void(ApiResponse)> reply) {
      auto post = ctx.post;
      if (!post) {
        reply(error_response(make_error(Errc::internal, "the API server is not running")));
        return;
      }
      blobs.post([&blobs, project, post, reply = std::move(reply)]() mutable {
        // On the worker: the project's references first, so that gc sees its latest writes.
        Status indexed = blobs.index(project);
        Result<storage::GcResult> gc =
            indexed ? blobs.gc(unix_ms()) : Result<storage::GcResult>(indexed.error());
        post([reply = std::move(reply), gc = std::move(gc)]() mutable {
          if (!gc) {
            reply(error_response(gc.error()));
            return;
          }
          reply(json_response(200, "{\"released\":" + std::to_string(gc->released) +
                                       ",\"files_deleted\":" + std::to_string(gc->files_deleted) +
                                       ",\"bytes_freed\":" + std::to_string(gc->bytes_freed) +
                                       "}"));
        });
      });
    };
    return r;
  });
}

}  // namespace fieldsync::ipc
