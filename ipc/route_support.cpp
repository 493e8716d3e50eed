#include "ipc/route_support.hpp"

#include <charconv>
#include <limits>

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "ipc/http_error.hpp"
#include "ipc/json_text.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;

ApiResponse json_response(int status, std::string body) {
  ApiResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

ApiResponse fail(const Error& e) { return error_response(e); }

Result<ProjectId> project_param(const ApiRequest& req) {
  const std::string& text = req.param("pid");
  auto id = ProjectId::parse(text);
  if (!id)
    return make_error(Errc::invalid_argument,
                      "bad project id " + quote_input(text) + " (32 hex chars)");
  return *id;
}

Result<std::uint64_t> uint_query(const ApiRequest& req, std::string_view name,
                                 std::uint64_t fallback, std::uint64_t max) {
  auto v = req.query_value(name);
  if (!v) return fallback;
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size() || v->empty() || n > max)
    return make_error(Errc::invalid_argument, "query parameter '" + std::string(name) +
                                                  "' must be an integer 0.." + std::to_string(max) +
                                                  ", got " + quote_input(*v));
  return n;
}

Result<std::uint64_t> json_uint(const json::value& v, std::string_view what, std::uint64_t min,
                                std::uint64_t max) {
  std::optional<std::uint64_t> n;
  if (v.is_uint64()) n = v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0) n = static_cast<std::uint64_t>(v.as_int64());
  if (!n || *n < min || *n > max)
    return make_error(Errc::invalid_argument, std::string(what) + " must be an integer " +
                                                  std::to_string(min) + ".." + std::to_string(max));
  return *n;
}

Result<std::uint32_t> schema_query(const ApiRequest& req) {
  auto n = uint_query(req, "schema", 1, kMaxSchema);
  if (!n) return n.error();
  return static_cast<std::uint32_t>(*n);
}

Result<std::uint32_t> page_limit(const ApiRequest& req, const ApiContext& ctx,
                                 std::uint32_t fallback) {
  auto n = uint_query(req, "limit", std::min(fallback, ctx.options.max_page_size),
                      std::numeric_limits<std::uint64_t>::max());
  if (!n) return n.error();
  if (*n == 0) return make_error(Errc::invalid_argument, "limit must be at least 1");
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(*n, ctx.options.max_page_size));
}

ApiResponse on_reader(ApiContext& ctx, std::function<ApiResponse()> work) {
  if (!ctx.read || !ctx.post) return work();
  ApiResponse r;
  r.deferred = std::make_shared<DeferredResponse>();
  r.deferred->timeout = std::chrono::milliseconds(ctx.options.request_timeout_ms);
  r.deferred->on_timeout = [] {
    return fail(make_error(Errc::unavailable,
                           "the request took longer than api.request_timeout_ms on a reader "
                           "thread (a query over too much; narrow it)"));
  };
  r.deferred->start = [&ctx, work = std::move(work)](std::function<void(ApiResponse)> reply) {
    ctx.read([&ctx, work, reply = std::move(reply)] {
      auto out = std::make_shared<ApiResponse>(work());
      ctx.post([reply, out] { reply(std::move(*out)); });
    });
  };
  return r;
}

ApiRequest take_request(ApiRequest& request) {
  std::string body = std::move(request.body);
  ApiRequest copy = request;
  copy.body = std::move(body);
  return copy;
}

ApiResponse on_writer(ApiContext& ctx, std::function<ApiResponse()> work, bool alone) {
  if (!ctx.write || !ctx.post) return work();
  ApiResponse r;
  r.deferred = std::make_shared<DeferredResponse>();
  r.deferred->timeout = std::chrono::milliseconds(ctx.options.request_timeout_ms);
  r.deferred->on_timeout = [] {
    return fail(make_error(Errc::unavailable,
                           "the write was not committed within api.request_timeout_ms (a slow "
                           "disk, or many writes queued); it may still be: read it back"));
  };
  r.deferred->start = [&ctx, alone,
                       work = std::move(work)](std::function<void(ApiResponse)> reply) {
    auto slot = std::make_shared<ApiResponse>();
    ctx.write([slot, work] { *slot = work(); }, alone,
              [&ctx, slot, reply = std::move(reply)](const Status& committed) {
                if (!committed) *slot = fail(committed.error());
                ctx.post([reply, slot] { reply(std::move(*slot)); });
              });
  };
  return r;
}

Result<std::shared_ptr<const storage::Subscription>> selector_query(const ApiRequest& req,
                                                                    const ApiContext& ctx) {
  auto text = req.query_value("selector");
  if (!text) return std::shared_ptr<const storage::Subscription>{};
  auto v = parse_value(*text, "selector", ctx.options.max_json_depth);
  if (!v) return v.error();
  boost::json::object wrap;
  wrap["where"] = std::move(*v);
  auto s = storage::Subscription::parse(boost::json::serialize(wrap));
  if (!s) return make_error(Errc::invalid_argument, "selector: " + s.error().message);
  return std::make_shared<const storage::Subscription>(std::move(*s));
}

Status known_query(const ApiRequest& req, std::initializer_list<std::string_view> accepted) {
  for (const auto& [name, value] : req.query) {
    bool ok = false;
    for (auto a : accepted) ok = ok || a == name;
    if (ok) continue;
    std::string list;
    for (auto a : accepted) list += (list.empty() ? "" : ", ") + std::string(a);
    return make_error(Errc::invalid_argument,
                      "unknown query parameter " + quote_input(name, 64) +
                          " (accepted: " + (list.empty() ? std::string("none") : list) + ")");
  }
  return {};
}

Result<bool> flag_query(const ApiRequest& req, std::string_view name) {
  auto v = req.query_value(name);
  if (!v) return false;
  if (v->empty() || *v == "1" || *v == "true") return true;
  if (*v == "0" || *v == "false") return false;
  return make_error(Errc::invalid_argument, "query parameter '" + std::string(name) +
                                                "' must be 1/true or 0/false, got " +
                                                quote_input(*v));
}

Result<VersionId> parse_version(std::string_view text, std::string_view what) {
  auto v = VersionId::parse(text);
  if (!v)
    return make_error(Errc::invalid_argument, "bad version id in " + std::string(what) + ": " +
                                                  quote_input(text) + " (64 hex chars)");
  return *v;
}

Status set_write_base(const ApiRequest& req, storage::WriteRequest& w, bool allow_if_none_match) {
  auto base = req.query_value("base");
  auto match = req.header("if-match");
  auto none_match = allow_if_none_match ? req.header("if-none-match") : std::nullopt;
  if (base && (match || none_match))
    return make_error(Errc::invalid_argument,
                      "give the base either as ?base= or as If-Match / If-None-Match, not both");
  if (match && none_match)
    return make_error(Errc::invalid_argument, "If-Match and If-None-Match together");
  if (base) {
    auto v = parse_version(*base, "?base");
    if (!v) return v.error();
    w.parents = {*v};
    return {};
  }
  if (none_match) {
    if (*none_match != "*")
      return make_error(Errc::invalid_argument,
                        "If-None-Match on a write must be * (create only if absent)");
    w.must_not_exist = true;
    w.strict = true;
    return {};
  }
  if (!match) {
    w.use_current = true;
    return {};
  }
  std::string_view t = *match;
  w.strict = true;
  if (t == "*") {
    w.use_current = true;
    return {};
  }
  if (t.substr(0, 2) == "W/") t.remove_prefix(2);
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
  if (t.find(',') != std::string_view::npos)
    return make_error(Errc::invalid_argument, "If-Match on a write names one version");
  auto v = parse_version(t, "If-Match");
  if (!v) return v.error();
  w.parents = {*v};
  return {};
}

Result<std::vector<VersionId>> version_list(const json::value& v, std::string_view what) {
  if (!v.is_array())
    return make_error(Errc::invalid_argument,
                      std::string(what) + " must be an array of version ids");
  std::vector<VersionId> out;
  for (const auto& e : v.as_array()) {
    if (!e.is_string())
      return make_error(Errc::invalid_argument,
                        std::string(what) + " must hold version id strings");
    auto id = parse_version(std::string_view(e.as_string()), what);
    if (!id) return id.error();
    out.push_back(*id);
  }
  return out;
}

std::string versions_json(const std::vector<VersionId>& ids, std::size_t from) {
  std::string s = "[";
  for (std::size_t i = from; i < ids.size(); ++i) {
    if (i > from) s += ',';
    s += '"' + ids[i].str() + '"';
  }
  return s + "]";
}

std::string project_json(const storage::ProjectInfo& p) {
  json::object o;
  o["id"] = p.id.str();
  o["name"] = p.name;
  o["created_hlc"] = p.created_hlc;
  return splice_member(json::serialize(o), "settings",
                       p.settings_json.empty() ? std::string_view("{}") : p.settings_json);
}

std::string project_problem_json(const storage::ProjectProblem& p) {
  json::object o;
  o["id"] = p.id;
  o["error"] = p.error;
  return json::serialize(o);
}

std::string document_json(const storage::DocumentState& d, const storage::MergeResult* merge) {
  json::object o;
  o["id"] = d.doc_id;
  o["collection"] = d.collection;
  o["version"] = d.winner.str();
  o["author"] = d.author.str();
  o["hlc"] = d.hlc;
  o["schema"] = d.schema;
  o["deleted"] = d.deleted;
  o["purged"] = d.purged;
  o["local_seq"] = d.local_seq;
  std::string s = json::serialize(o);
  s = splice_member(std::move(s), "heads", versions_json(d.heads));
  s = splice_member(std::move(s), "conflicts", versions_json(d.heads, 1));
  if (merge) {
    json::object m;
    m["clean"] = merge->clean();
    json::array fields;
    for (const auto& f : merge->conflicting_fields) fields.emplace_back(f);
    m["conflicting_fields"] = std::move(fields);
    std::string ms = json::serialize(m);
    ms = splice_member(std::move(ms), "heads", versions_json(merge->heads));
    ms = splice_member(std::move(ms), "body", merge->body.empty() ? "null" : merge->body);
    s = splice_member(std::move(s), "merge", ms);
  }
  return splice_member(std::move(s), "body",
                       d.body && !d.deleted ? std::string_view(*d.body) : std::string_view("null"));
}

void append_write_result_json(std::string& out, const storage::WriteResult& w) {
  // Built in place: a batch answers with one of these per document.
  out += "{\"id\":";
  append_json_quoted(out, w.doc_id);
  out += ",\"collection\":";
  append_json_quoted(out, w.collection);
  out += ",\"version\":\"";
  out += w.version.str();
  out += "\",\"local_seq\":";
  out += std::to_string(w.local_seq);
  out += w.conflict ? ",\"conflict\":true" : ",\"conflict\":false";
  if (w.conflict)
    out +=
        ",\"message\":\"the document has concurrent versions: a concurrent version was kept, "
        "nothing was overwritten; read it to see the conflicts and resolve them with POST "
        ".../resolve\"";
  out += ",\"heads\":[";
  for (std::size_t i = 0; i < w.heads.size(); ++i) {
    if (i) out += ',';
    out += '"';
    out += w.heads[i].str();
    out += '"';
  }
  out += "]}";
}

std::string write_result_json(const storage::WriteResult& w) {
  std::string s;
  append_write_result_json(s, w);
  return s;
}

std::string version_json(const storage::Version& v) {
  json::object o;
  o["version"] = v.id.str();
  o["author"] = v.header.author.str();
  o["hlc"] = v.header.hlc;
  o["schema"] = v.header.schema;
  o["deleted"] = v.header.kind == storage::VersionKind::tombstone;
  o["body_size"] = v.header.body_size;
  std::string s = splice_member(json::serialize(o), "parents", versions_json(v.header.parents));
  return splice_member(std::move(s), "body",
                       v.body ? std::string_view(*v.body) : std::string_view("null"));
}

std::string change_json(const storage::Change& c) {
  json::object o;
  o["seq"] = c.seq;
  o["collection"] = c.collection;
  o["id"] = c.doc_id;
  o["version"] = c.version.str();
  o["author"] = c.author.str();
  o["deleted"] = c.deleted;
  o["local"] = c.local;
  return json::serialize(o);
}

}  // namespace fieldsync::ipc
