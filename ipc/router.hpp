// Router: maps (method, path) to a handler. Patterns are path templates such as
// "/v1/projects/{pid}/docs/{coll}"; "{name}" matches one non-empty segment and is passed to
// the handler in ApiRequest::params. Unknown paths give 404, known paths with another method 405.
//
// A route group is one function `void register_xxx_routes(Router&, ...)` in its own file; the
// daemon calls it once at start-up (e.g. the peers routes of the sync engine).
// Not thread-safe for add(); dispatch() is const and may run concurrently once set up.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipc/api_types.hpp"

namespace fieldsync::ipc {

class Router {
 public:
  using Handler = std::function<ApiResponse(ApiRequest&)>;

  // Registers a handler. A duplicate (method, pattern) replaces the earlier one.
  void add(std::string method, std::string_view pattern, Handler handler);

  // Finds the route, fills request.params and runs the handler. Handlers return errors as
  // responses (error_response); an exception escaping a handler becomes a 500 here.
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
  };
  static bool match(const Route& route, const std::vector<std::string>& segments,
                    std::map<std::string, std::string>* params);
  std::vector<Route> routes_;
};

}  // namespace fieldsync::ipc
