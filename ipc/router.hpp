// Router: maps (method, path) to a handler. Patterns are path templates such as
// "/v1/projects/{pid}/docs/{coll}"; "{name}" matches one non-empty segment and is passed to
// the handler in ApiRequest::params. Unknown paths give 404, known paths with another method 405.
//
// A route added with add_streamed() takes its request body as a stream (large uploads): its
// handler runs once the request header is complete (after authentication, before any body byte
// is read) and returns a BodySink the server feeds as the body arrives, bounded by
// api.max_stream_bytes instead of api.max_body_bytes.
//
// A route group is one function `void register_xxx_routes(Router&, ...)` in its own file; the
// daemon calls it once at start-up (e.g. the peers routes of the sync engine).
// Not thread-safe for add(); dispatch() is const and may run concurrently once set up.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipc/api_types.hpp"

namespace fieldsync::ipc {

class Router {
 public:
  using Handler = std::function<ApiResponse(ApiRequest&)>;
  // Sees the request without its body (ApiRequest::body is empty) and returns the sink for the
  // body, or an error that is answered at once (mapped by error_response; the body is not read).
  using StreamHandler = std::function<Result<std::shared_ptr<BodySink>>(ApiRequest&)>;

  // Registers a handler. A duplicate (method, pattern) replaces the earlier one (of either kind).
  void add(std::string method, std::string_view pattern, Handler handler);
  // Registers a route whose request body is streamed into the sink its handler returns.
  void add_streamed(std::string method, std::string_view pattern, StreamHandler handler);

  // True when the request goes to a route added with add_streamed() (the server then reads the
  // body through open_sink() instead of buffering it for dispatch()).
  bool takes_stream(const ApiRequest& request) const;
  // Finds the streamed route, fills request.params and runs its handler. not_found when the
  // request is not for such a route; an exception or a null sink becomes internal.
  Result<std::shared_ptr<BodySink>> open_sink(ApiRequest& request) const;

  // Finds the route, fills request.params and runs the handler. Handlers return errors as
  // responses (error_response); an exception escaping a handler becomes a 500 here.
  // A streamed route gets request.body as one piece (write, then finish), for tests and
  // callers without a socket.
  ApiResponse dispatch(ApiRequest& request) const;

  std::size_t size() const { return routes_.size(); }
  // (method, pattern) of every route, in registration order (docs and tests use it).
  std::vector<std::pair<std::string, std::string>> routes() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& r : routes_) out.emplace_back(r.method, r.pattern);
    return out;
  }

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> parts;  // "{x}" = placeholder
    Handler handler;
    StreamHandler stream_handler;  // set instead of `handler` by add_streamed()
  };
  // The best route for the request; nullptr, with the methods allowed on the path in
  // `allowed`, when there is none.
  const Route* find(const ApiRequest& request, std::string* allowed) const;
  static bool match(const Route& route, const std::vector<std::string>& segments,
                    std::map<std::string, std::string>* params);
  std::vector<Route> routes_;
};

}  // namespace fieldsync::ipc
