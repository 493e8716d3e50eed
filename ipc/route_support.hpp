// Small helpers shared by the route handlers: parameter parsing and JSON rendering of
// storage types. Internal to ipc/. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/result.hpp"
#include "ipc/api_context.hpp"
#include "ipc/api_types.hpp"
#include "storage/subscription.hpp"
#include "storage/types.hpp"

namespace fieldsync::ipc {

// Runs `work` on a reader thread (ApiContext::read) and answers with what it returns, from
// the server's thread; runs it inline without reader threads or a server. `work` may only
// read the Store and render (no ApiContext member but store and options).
ApiResponse on_reader(ApiContext& ctx, std::function<ApiResponse()> work);

// Runs a document write `work` on the writer thread (ApiContext::write), committed with the
// writes queued with it, and answers with what it returns once committed (or with the commit's
// error), from the server's thread; inline without a writer thread or a server. `alone`: it
// reads through a transaction of its own before writing (commits by itself). `work` may only
// use the Store and render.
ApiResponse on_writer(ApiContext& ctx, std::function<ApiResponse()> work, bool alone = false);
// The request for a deferred handler: its body moved (the server needs it no more), the rest
// copied (the server logs the method and target once answered).
ApiRequest take_request(ApiRequest& request);

// A JSON response with the given status.
ApiResponse json_response(int status, std::string body);
// Error response for a failed Result.
ApiResponse fail(const Error& e);

Result<ProjectId> project_param(const ApiRequest& req);
// The largest ?schema= / "schema" a version header holds (u32).
inline constexpr std::uint64_t kMaxSchema = 0xffffffffu;

// Unsigned integer query parameter; `fallback` when absent; invalid_argument when malformed
// or above `max` (never truncated).
Result<std::uint64_t> uint_query(const ApiRequest& req, std::string_view name,
                                 std::uint64_t fallback, std::uint64_t max);
// An integer JSON member in min..max; invalid_argument naming `what` otherwise.
Result<std::uint64_t> json_uint(const boost::json::value& v, std::string_view what,
                                std::uint64_t min, std::uint64_t max);
// ?schema=: 0..kMaxSchema, default 1.
Result<std::uint32_t> schema_query(const ApiRequest& req);
// ?limit= bounded by api.max_page_size (a larger value is clamped).
Result<std::uint32_t> page_limit(const ApiRequest& req, const ApiContext& ctx,
                                 std::uint32_t fallback = 100);
// invalid_argument naming the first query parameter of `req` not in `accepted`, and listing
// those that are ("unknown query parameter 'x' (accepted: after, limit)").
Status known_query(const ApiRequest& req, std::initializer_list<std::string_view> accepted);
// ?selector=JSON: one condition of the subscription language's "where" (eq, in, range, bbox,
// all, any on dot paths); null when absent; invalid_argument naming what is wrong.
Result<std::shared_ptr<const storage::Subscription>> selector_query(const ApiRequest& req,
                                                                    const ApiContext& ctx);
// Boolean query flag: absent=false, "1"/"true"/""=true, "0"/"false"=false.
Result<bool> flag_query(const ApiRequest& req, std::string_view name);
Result<VersionId> parse_version(std::string_view text, std::string_view what);
// How a PUT or DELETE picks its parents (docs/api.md "Conditional writes"), set on `w`:
//  ?base=V          parents {V}; a stale base keeps both versions;
//  If-Match: "V"    parents {V}, strict: V must be the current winner, else aborted (412);
//  If-Match: *      over the winner, strict: the document must exist;
//  If-None-Match: * (when `allow_if_none_match`, a PUT) create only, strict;
//  none of them     over the winner (use_current).
// invalid_argument for a bad version, a list of tags, or both ?base= and a header.
Status set_write_base(const ApiRequest& req, storage::WriteRequest& w, bool allow_if_none_match);
// A JSON array of version ids, e.g. from "parents".
Result<std::vector<VersionId>> version_list(const boost::json::value& v, std::string_view what);

std::string versions_json(const std::vector<VersionId>& ids, std::size_t from = 0);
std::string project_json(const storage::ProjectInfo& p);
// A project whose record cannot be read: {"id":..., "error":...}.
std::string project_problem_json(const storage::ProjectProblem& p);
// A document with its winner's body spliced in raw (never re-serialised).
std::string document_json(const storage::DocumentState& d,
                          const storage::MergeResult* merge = nullptr);
std::string write_result_json(const storage::WriteResult& w);
// write_result_json() appended to `out`.
void append_write_result_json(std::string& out, const storage::WriteResult& w);
std::string version_json(const storage::Version& v);
std::string change_json(const storage::Change& c);

}  // namespace fieldsync::ipc
