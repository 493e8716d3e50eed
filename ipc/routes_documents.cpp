// Documents: /v1/projects/{pid}/docs/{coll}[/{id}[/history|/resolve|/purge]],
// /v1/projects/{pid}/conflicts and /v1/projects/{pid}/batch.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "common/json_parse.hpp"
#include "ipc/http_error.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"
#include "ipc/routes.hpp"
#include "storage/hybrid_clock.hpp"
#include "storage/json_merge.hpp"
#include "storage/store.hpp"
#include "storage/subscription.hpp"

namespace fieldsync::ipc {

namespace json = boost::json;
using storage::VersionKind;
using storage::WriteRequest;

namespace {

json::object erasure_json(const storage::Erasure& e) {
  json::object o;
  o["collection"] = e.collection;
  o["id"] = e.doc_id;
  o["reason"] = e.reason;
  o["by"] = e.by.str();
  o["hlc"] = e.hlc;
  o["erased_at_ms"] = storage::HybridClock::physical_ms(e.hlc);
  return o;
}

// Validates that `text` is a JSON object (the document body, stored untouched).
Status check_body(const ApiContext& ctx, std::string_view text) {
  auto obj = parse_object(text, "document body", ctx.options.max_json_depth);
  if (!obj) return obj.error();
  return {};
}

ApiResponse list_page(const ApiContext& ctx, const ProjectId& pid, storage::ListQuery q) {
  auto page = ctx.store.list_documents(pid, q);
  if (!page) return fail(page.error());
  std::string s = "{\"docs\":[";
  for (std::size_t i = 0; i < page->docs.size(); ++i)
    s += (i ? "," : "") + document_json(page->docs[i]);
  s += "],\"next\":";
  s += page->next.empty() ? std::string("null") : json_quote(page->next);
  s += ",\"plan\":{\"index\":";
  s += page->plan.index.empty() ? std::string("null") : json_quote(page->plan.index);
  s += ",\"examined\":" + std::to_string(page->plan.examined) + "}";
  return json_response(200, s + "}");
}

std::string index_json(const storage::IndexInfo& i) {
  json::object o;
  o["name"] = i.spec.name;
  if (!i.error.empty()) {
    o["error"] = i.error;
    return json::serialize(o);
  }
  o["collection"] = i.spec.collection;
  json::array fields;
  for (const auto& f : i.spec.fields) fields.emplace_back(f);
  o["fields"] = std::move(fields);
  o["ready"] = i.ready;
  o["entries"] = i.entries;
  return json::serialize(o);
}

// The body of PUT .../indexes/{name}: {"collection": "obs", "fields": ["a", "b.c"]}.
Result<storage::IndexSpec> index_spec(const ApiContext& ctx, const ApiRequest& req) {
  auto obj = parse_object(req.body, "index declaration", ctx.options.max_json_depth);
  if (!obj) return obj.error();
  FS_TRY(check_fields(*obj, {"collection", "fields"}, "index declaration"));
  storage::IndexSpec spec;
  spec.name = req.param("name");
  const json::value* coll = obj->if_contains("collection");
  const json::value* fields = obj->if_contains("fields");
  if (!coll || !coll->is_string())
    return make_error(Errc::invalid_argument, "collection must be a collection name");
  if (!fields || !fields->is_array())
    return make_error(Errc::invalid_argument,
                      "fields must be an array of dot paths, e.g. [\"site.region\", \"ph\"]");
  spec.collection = std::string(coll->get_string());
  for (const auto& f : fields->get_array()) {
    if (!f.is_string())
      return make_error(Errc::invalid_argument, "fields holds dot paths (strings)");
    spec.fields.emplace_back(f.get_string());
  }
  return spec;
}

// The list query parameters shared by .../docs/{coll} and .../conflicts.
Status read_list_query(const ApiRequest& req, const ApiContext& ctx, storage::ListQuery& q) {
  auto limit = page_limit(req, ctx);
  if (!limit) return limit.error();
  q.limit = *limit;
  q.start_after = req.query_value("after").value_or("");
  auto del = flag_query(req, "include_deleted");
  if (!del) return del.error();
  q.include_deleted = *del;
  for (const auto& w : req.query_values("where")) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error(Errc::invalid_argument,
                        "where must be field=<JSON value>, e.g. where=category=\"wildlife\"");
    std::string value = w.substr(eq + 1);
    auto parsed = parse_value(value, "where value for " + quote_input(w.substr(0, eq)),
                              ctx.options.max_json_depth);
    if (!parsed)
      return make_error(Errc::invalid_argument,
                        parsed.error().message + " (strings in double quotes, e.g. where=k=\"v\")");
    q.filters.push_back({w.substr(0, eq), std::move(value)});
  }
  // selector=<JSON condition>: the subscription language's "where" (eq, in, range, bbox, all,
  // any on dot paths).
  auto selected = selector_query(req, ctx);
  if (!selected) return selected.error();
  q.selector = std::move(*selected);
  // sort=PATH or sort=-PATH (descending).
  if (auto sort = req.query_value("sort")) {
    std::string_view path = *sort;
    if (!path.empty() && path.front() == '-') {
      q.sort_descending = true;
      path.remove_prefix(1);
    }
    auto segs = storage::parse_dot_path(path, "sort");
    if (!segs) return segs.error();
    q.sort_path = std::move(*segs);
    q.max_sort_docs = ctx.options.max_sort_docs;
  }
  return {};
}

// ?keys=["id1","id2",...]: those documents in that order; one that is not here is
// {"collection", "id", "error": "not_found"} (a deleted one is returned, deleted).
ApiResponse bulk_get(const ApiRequest& req, const ApiContext& ctx, const ProjectId& pid,
                     const std::string& collection) {
  for (std::string_view other :
       {"after", "where", "selector", "sort", "conflicts", "include_deleted", "limit"})
    if (req.query_value(other))
      return fail(make_error(Errc::invalid_argument, "keys= takes no " + std::string(other) +
                                                         "= (it names the documents)"));
  auto v = parse_value(*req.query_value("keys"), "keys", ctx.options.max_json_depth);
  if (!v) return fail(v.error());
  if (!v->is_array())
    return fail(make_error(Errc::invalid_argument,
                           "keys must be a JSON array of document ids, e.g. keys=[\"a\",\"b\"]"));
  const auto& keys = v->as_array();
  if (keys.size() > ctx.options.max_page_size)
    return fail(make_error(Errc::invalid_argument, "keys names " + std::to_string(keys.size()) +
                                                       " documents; at most api.max_page_size = " +
                                                       std::to_string(ctx.options.max_page_size)));
  std::string s = "{\"docs\":[";
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!keys[i].is_string())
      return fail(make_error(Errc::invalid_argument,
                             "keys[" + std::to_string(i) + "] must be a string (a document id)"));
    std::string id(keys[i].as_string());
    auto d = ctx.store.get_document(pid, collection, id);
    if (i) s += ",";
    if (d) {
      s += document_json(*d);
    } else if (d.error().code == Errc::not_found) {
      s += "{\"collection\":" + json_quote(collection) + ",\"id\":" + json_quote(id) +
           ",\"error\":\"not_found\"}";
    } else {
      return fail(d.error());
    }
  }
  return json_response(200, s + "],\"next\":null}");
}

// Turns one batch write envelope into a WriteRequest. `raw` is its exact text, checked JSON
// (check_value): its members are parsed but for an object body, which is kept as text.
// `max_depth` is api.max_json_depth, which the text was checked with.
Result<WriteRequest> batch_write(std::string_view raw, std::size_t index, std::uint32_t max_depth) {
  std::string what = "writes[" + std::to_string(index) + "]";
  if (!checked_is_object(raw))
    return make_error(Errc::invalid_argument, what + " must be an object");
  json::object o;
  std::string_view body_text;
  for (const RawMember& m : raw_members(raw)) {
    FS_TRY(check_field(m.key, {"collection", "id", "body", "base", "if_match", "delete", "schema"},
                       what));
    if (m.key == "body" && checked_is_object(m.value)) {
      body_text = m.value;
      o[m.key] = json::object();
      continue;
    }
    boost::system::error_code ec;
    json::parse_options opt;
    opt.max_depth = max_depth;
    json::value v = parse_json(m.value, ec, {}, opt);
    if (ec)
      return make_error(Errc::internal, what + "." + m.key + ": the checked text did not parse");
    o[m.key] = std::move(v);
  }
  WriteRequest w;
  auto* coll = o.if_contains("collection");
  if (!coll || !coll->is_string())
    return make_error(Errc::invalid_argument, what + ".collection is required (a string)");
  w.collection = std::string(coll->as_string());
  if (auto* id = o.if_contains("id")) {
    if (!id->is_string()) return make_error(Errc::invalid_argument, what + ".id must be a string");
    w.doc_id = std::string(id->as_string());
  }
  if (auto* s = o.if_contains("schema")) {
    auto schema = json_uint(*s, what + ".schema", 0, kMaxSchema);
    if (!schema) return schema.error();
    w.schema = static_cast<std::uint32_t>(*schema);
  }
  bool del = false;
  if (auto* d = o.if_contains("delete")) {
    if (!d->is_bool())
      return make_error(Errc::invalid_argument, what + ".delete must be a boolean");
    del = d->as_bool();
  }
  // "base": a stale base keeps both versions; "if_match": the base must be the current winner
  // (else the whole batch fails with aborted, 412), as the If-Match header.
  for (std::string_view key : {"base", "if_match"}) {
    auto* b = o.if_contains(key);
    if (!b) continue;
    if (!w.parents.empty())
      return make_error(Errc::invalid_argument, what + ": base and if_match together");
    if (!b->is_string())
      return make_error(Errc::invalid_argument,
                        what + "." + std::string(key) + " must be a version id");
    auto id = parse_version(std::string_view(b->as_string()), what + "." + std::string(key));
    if (!id) return id.error();
    w.parents = {*id};
    w.strict = key == "if_match";
  }
  if (del) {
    if (w.doc_id.empty()) return make_error(Errc::invalid_argument, what + ": delete needs an id");
    w.kind = VersionKind::tombstone;
    if (w.parents.empty()) w.use_current = true;
  } else {
    auto* body = o.if_contains("body");
    if (!body || !body->is_object())
      return make_error(Errc::invalid_argument, what + ".body is required (a JSON object)");
    w.body = std::string(body_text);
    if (w.parents.empty()) {
      if (w.doc_id.empty())
        w.must_not_exist = true;
      else
        w.use_current = true;  // upsert over the current winner
    }
  }
  return w;
}

}  // namespace

void register_document_routes(Router& router, ApiContext& ctx) {
  const std::string docs = "/v1/projects/{pid}/docs/{coll}";
  const std::string doc = docs + "/{id}";
  const std::string indexes = "/v1/projects/{pid}/indexes";

  // Indexes (docs/api.md "Indexes"): declared, listed, dropped. A drop deletes every entry in
  // one transaction: on a reader thread, off the event loop.
  router.add("GET", indexes, [&ctx](ApiRequest& request) {
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto k = known_query(req, {}); !k) return fail(k.error());
      auto list = ctx.store.indexes(*pid);
      if (!list) return fail(list.error());
      std::string s = "{\"indexes\":[";
      for (std::size_t i = 0; i < list->size(); ++i) s += (i ? "," : "") + index_json((*list)[i]);
      return json_response(200, s + "]}");
    });
  });
  router.add("PUT", indexes + "/{name}", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    if (auto k = known_query(req, {}); !k) return fail(k.error());
    auto spec = index_spec(ctx, req);
    if (!spec) return fail(spec.error());
    auto info = ctx.store.create_index(*pid, *spec);
    if (!info) return fail(info.error());
    return json_response(200, index_json(*info));
  });
  router.add("DELETE", indexes + "/{name}", [&ctx](ApiRequest& request) {
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto k = known_query(req, {}); !k) return fail(k.error());
      if (auto st = ctx.store.drop_index(*pid, req.param("name")); !st) return fail(st.error());
      return json_response(200,
                           "{\"name\":" + json_quote(req.param("name")) + ",\"dropped\":true}");
    });
  });

  // Create. ?id= gives an app-chosen id; otherwise a random 128-bit id is assigned.
  router.add("POST", docs, [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(ctx, [&ctx, req = take_request(request)]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto st = check_body(ctx, req.body); !st) return fail(st.error());
      WriteRequest w;
      w.collection = req.param("coll");
      w.doc_id = req.query_value("id").value_or("");
      w.body = std::move(req.body);
      w.must_not_exist = true;
      auto schema = schema_query(req);
      if (!schema) return fail(schema.error());
      w.schema = *schema;
      auto r = ctx.store.write(*pid, w);
      if (!r) return fail(r.error());
      return json_response(201, write_result_json(*r));
    });
  });

  router.add("GET", docs, [&ctx](ApiRequest& request) {
    // A read: on a reader thread (ipc/reader_pool.hpp).
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto k = known_query(req, {"limit", "after", "include_deleted", "where", "selector",
                                     "sort", "conflicts", "keys"});
          !k)
        return fail(k.error());
      if (req.query_value("keys")) return bulk_get(req, ctx, *pid, req.param("coll"));
      storage::ListQuery q;
      q.collection = req.param("coll");
      if (auto st = read_list_query(req, ctx, q); !st) return fail(st.error());
      auto conflicts = flag_query(req, "conflicts");
      if (!conflicts) return fail(conflicts.error());
      q.conflicts_only = *conflicts;
      return list_page(ctx, *pid, std::move(q));
    });
  });

  router.add("GET", doc, [&ctx](ApiRequest& request) {
    // A read: on a reader thread (ipc/reader_pool.hpp).
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      auto d = ctx.store.get_document(*pid, req.param("coll"), req.param("id"));
      if (!d) return fail(d.error());
      ApiResponse r;
      if (d->in_conflict()) {
        auto m = ctx.store.merge_heads(*pid, req.param("coll"), req.param("id"));
        r = json_response(200, document_json(*d, m ? &*m : nullptr));
      } else {
        r = json_response(200, document_json(*d));
      }
      r.headers.emplace_back("ETag", "\"" + d->winner.str() + "\"");
      return r;
    });
  });

  // Update over ?base= (a stale base keeps both versions), If-Match (strict), or the winner.
  router.add("PUT", doc, [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(ctx, [&ctx, req = take_request(request)]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto st = check_body(ctx, req.body); !st) return fail(st.error());
      WriteRequest w;
      if (auto st = set_write_base(req, w, /*allow_if_none_match=*/true); !st)
        return fail(st.error());
      w.collection = req.param("coll");
      w.doc_id = req.param("id");
      w.body = std::move(req.body);
      auto schema = schema_query(req);
      if (!schema) return fail(schema.error());
      w.schema = *schema;
      auto r = ctx.store.write(*pid, w);
      if (!r) return fail(r.error());
      return json_response(200, write_result_json(*r));
    });
  });

  // Delete: a tombstone over ?base=, If-Match (strict), or all current heads.
  router.add("DELETE", doc, [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(ctx, [&ctx, req = take_request(request)]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      WriteRequest w;
      if (auto st = set_write_base(req, w, /*allow_if_none_match=*/false); !st)
        return fail(st.error());
      w.collection = req.param("coll");
      w.doc_id = req.param("id");
      w.kind = VersionKind::tombstone;
      auto r = ctx.store.write(*pid, w);
      if (!r) return fail(r.error());
      return json_response(200, write_result_json(*r));
    });
  });

  router.add("GET", doc + "/history", [&ctx](ApiRequest& request) {
    // A read: on a reader thread (ipc/reader_pool.hpp).
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      auto limit = page_limit(req, ctx);
      if (!limit) return fail(limit.error());
      auto h = ctx.store.history(*pid, req.param("coll"), req.param("id"), *limit);
      if (!h) return fail(h.error());
      std::string s = "{\"versions\":[";
      for (std::size_t i = 0; i < h->size(); ++i) s += (i ? "," : "") + version_json((*h)[i]);
      return json_response(200, s + "]}");
    });
  });

  // Resolve: {"parents":[...], "body":{...}} (or "delete":true), or {"strategy":"merge"}.
  router.add("POST", doc + "/resolve", [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(
        ctx,
        [&ctx, req = take_request(request)]() mutable -> ApiResponse {
          auto pid = project_param(req);
          if (!pid) return fail(pid.error());
          auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
          if (!obj) return fail(obj.error());
          if (auto st =
                  check_fields(*obj, {"parents", "body", "delete", "strategy"}, "resolve request");
              !st)
            return fail(st.error());
          const std::string& coll = req.param("coll");
          const std::string& id = req.param("id");
          WriteRequest w;
          w.collection = coll;
          w.doc_id = id;
          if (auto* strategy = obj->if_contains("strategy")) {
            if (!strategy->is_string() || strategy->as_string() != "merge")
              return fail(make_error(Errc::invalid_argument, "the only strategy is \"merge\""));
            if (obj->size() != 1)
              return fail(make_error(Errc::invalid_argument,
                                     "strategy \"merge\" takes no parents/body/delete"));
            auto m = ctx.store.merge_heads(*pid, coll, id);
            if (!m) return fail(m.error());
            if (!m->clean()) {
              json::array fields;
              for (auto& f : m->conflicting_fields) fields.emplace_back(f);
              std::string list;
              for (auto& f : m->conflicting_fields) list += (list.empty() ? "" : ", ") + f;
              return error_response(
                  make_error(Errc::failed_precondition,
                             "automatic merge impossible: the heads changed the same fields "
                             "differently (" +
                                 list + "); resolve with explicit parents and body"),
                  "\"conflicting_fields\":" + json::serialize(fields));
            }
            w.parents = m->heads;
            w.body = m->body;
          } else {
            if (auto* p = obj->if_contains("parents")) {
              auto parents = version_list(*p, "parents");
              if (!parents) return fail(parents.error());
              w.parents = std::move(*parents);
            } else {
              auto d = ctx.store.get_document(*pid, coll, id);
              if (!d) return fail(d.error());
              w.parents = d->heads;
            }
            bool del = false;
            if (auto* dv = obj->if_contains("delete")) {
              if (!dv->is_bool())
                return fail(make_error(Errc::invalid_argument, "'delete' must be a boolean"));
              del = dv->as_bool();
            }
            if (del) {
              if (obj->contains("body"))
                return fail(
                    make_error(Errc::invalid_argument, "give either 'body' or \"delete\": true"));
              w.kind = VersionKind::tombstone;
            } else {
              auto* b = obj->if_contains("body");
              if (!b || !b->is_object())
                return fail(
                    make_error(Errc::invalid_argument, "'body' (a JSON object) is required"));
              w.body = std::string(*raw_member(req.body, "body"));
            }
          }
          auto r = ctx.store.write(*pid, w);
          if (!r) return fail(r.error());
          return json_response(200, write_result_json(*r));
        },
        /*alone=*/true);
  });

  router.add("POST", doc + "/purge", [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(ctx, [&ctx, req = take_request(request)]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (!req.body.empty()) {
        auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
        if (!obj) return fail(obj.error());
        if (auto st = check_fields(*obj, {}, "purge request"); !st) return fail(st.error());
      }
      auto n = ctx.store.purge_document(*pid, req.param("coll"), req.param("id"));
      if (!n) return fail(n.error());
      return json_response(200, "{\"purged\":" + std::to_string(*n) + "}");
    });
  });

  // Erasure by a coordinator (docs/api.md "Erasure"): synced, and not undone.
  router.add("POST", doc + "/erase", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    std::string reason;
    if (!req.body.empty()) {
      auto obj = parse_object(req.body, "request body", ctx.options.max_json_depth);
      if (!obj) return fail(obj.error());
      if (auto st = check_fields(*obj, {"reason"}, "erase request"); !st) return fail(st.error());
      if (auto* r = obj->if_contains("reason")) {
        if (!r->is_string())
          return fail(make_error(Errc::invalid_argument, "'reason' must be a string"));
        reason = std::string(r->as_string());
      }
    }
    auto e = ctx.store.erase_document(*pid, req.param("coll"), req.param("id"), reason);
    if (!e) return fail(e.error());
    return json_response(200, json::serialize(erasure_json(*e)));
  });

  router.add("GET", "/v1/projects/{pid}/erasures", [&ctx](ApiRequest& req) {
    auto pid = project_param(req);
    if (!pid) return fail(pid.error());
    auto list = ctx.store.erasures(*pid);
    if (!list) return fail(list.error());
    json::array out;
    for (const auto& e : *list) out.push_back(erasure_json(e));
    json::object o;
    o["erasures"] = std::move(out);
    return json_response(200, json::serialize(o));
  });

  router.add("GET", "/v1/projects/{pid}/conflicts", [&ctx](ApiRequest& request) {
    // A read: on a reader thread (ipc/reader_pool.hpp).
    return on_reader(ctx, [&ctx, req = request]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      if (auto k =
              known_query(req, {"limit", "after", "include_deleted", "where", "selector", "sort"});
          !k)
        return fail(k.error());
      storage::ListQuery q;
      if (auto st = read_list_query(req, ctx, q); !st) return fail(st.error());
      q.conflicts_only = true;
      return list_page(ctx, *pid, std::move(q));
    });
  });

  // All-or-nothing batch of writes in one transaction.
  router.add("POST", "/v1/projects/{pid}/batch", [&ctx](ApiRequest& request) {
    // A write: on the writer thread, committed with the writes queued with it.
    return on_writer(ctx, [&ctx, req = take_request(request)]() mutable -> ApiResponse {
      auto pid = project_param(req);
      if (!pid) return fail(pid.error());
      // Checked once, then scanned: the documents' bodies are kept as text, never built as
      // values (they are checked again, as every body is, by the store).
      if (auto st = check_value(req.body, "request body", ctx.options.max_json_depth); !st)
        return fail(st.error());
      if (!checked_is_object(req.body))
        return fail(make_error(Errc::invalid_argument, "request body must be a JSON object"));
      std::optional<std::string_view> writes;
      for (const RawMember& m : raw_members(req.body)) {
        if (auto st = check_field(m.key, {"writes"}, "batch request"); !st) return fail(st.error());
        writes = m.value;
      }
      if (!writes || writes->empty() || writes->front() != '[')
        return fail(make_error(Errc::invalid_argument, "'writes' (an array) is required"));
      auto raws = raw_elements(*writes);
      std::vector<WriteRequest> reqs;
      reqs.reserve(raws.size());
      for (std::size_t i = 0; i < raws.size(); ++i) {
        auto w = batch_write(raws[i], i, ctx.options.max_json_depth);
        if (!w) return fail(w.error());
        reqs.push_back(std::move(*w));
      }
      auto r = ctx.store.write_batch(*pid, reqs);
      if (!r) return fail(r.error());
      std::string s = "{\"results\":[";
      s.reserve(s.size() + r->size() * 200);
      for (std::size_t i = 0; i < r->size(); ++i) {
        if (i) s += ',';
        append_write_result_json(s, (*r)[i]);
      }
      return json_response(200, s + "]}");
    });
  });
}

}  // namespace fieldsync::ipc
