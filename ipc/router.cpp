#include "ipc/router.hpp"

#include <exception>

#include "ipc/http_error.hpp"

namespace fieldsync::ipc {

namespace {
std::vector<std::string> split_pattern(std::string_view pattern) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < pattern.size()) {
    if (pattern[i] == '/') {
      ++i;
      continue;
    }
    std::size_t j = pattern.find('/', i);
    if (j == std::string_view::npos) j = pattern.size();
    parts.emplace_back(pattern.substr(i, j - i));
    i = j;
  }
  return parts;
}
bool is_placeholder(const std::string& p) {
  return p.size() >= 2 && p.front() == '{' && p.back() == '}';
}
}  // namespace

void Router::add(std::string method, std::string_view pattern, Handler handler) {
  for (auto& r : routes_) {
    if (r.method == method && r.pattern == pattern) {
      r.handler = std::move(handler);
      r.stream_handler = nullptr;
      return;
    }
  }
  routes_.push_back(Route{std::move(method), std::string(pattern), split_pattern(pattern),
                          std::move(handler), nullptr});
}

void Router::add_streamed(std::string method, std::string_view pattern, StreamHandler handler) {
  for (auto& r : routes_) {
    if (r.method == method && r.pattern == pattern) {
      r.handler = nullptr;
      r.stream_handler = std::move(handler);
      return;
    }
  }
  routes_.push_back(Route{std::move(method), std::string(pattern), split_pattern(pattern), nullptr,
                          std::move(handler)});
}

bool Router::match(const Route& route, const std::vector<std::string>& segments,
                   std::map<std::string, std::string>* params) {
  if (route.parts.size() != segments.size()) return false;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const auto& p = route.parts[i];
    if (is_placeholder(p)) {
      if (segments[i].empty()) return false;
      if (params) (*params)[p.substr(1, p.size() - 2)] = segments[i];
    } else if (p != segments[i]) {
      return false;
    }
  }
  return true;
}

const Router::Route* Router::find(const ApiRequest& request, std::string* allowed) const {
  // A literal segment beats a placeholder: prefer the route with the most literal matches.
  const Route* best = nullptr;
  int best_literals = -1;
  for (const auto& r : routes_) {
    if (!match(r, request.segments, nullptr)) continue;
    if (r.method != request.method) {
      if (allowed && allowed->find(r.method) == std::string::npos)
        *allowed += (allowed->empty() ? "" : ", ") + r.method;
      continue;
    }
    int literals = 0;
    for (const auto& p : r.parts) literals += is_placeholder(p) ? 0 : 1;
    if (literals > best_literals) {
      best = &r;
      best_literals = literals;
    }
  }
  return best;
}

bool Router::takes_stream(const ApiRequest& request) const {
  const Route* r = find(request, nullptr);
  return r && r->stream_handler;
}

Result<std::shared_ptr<BodySink>> Router::open_sink(ApiRequest& request) const {
  const Route* r = find(request, nullptr);
  if (!r || !r->stream_handler)
    return make_error(Errc::not_found, "no streamed-body endpoint for " +
                                           quote_input(request.method + " " + request.target, 200));
  request.params.clear();
  match(*r, request.segments, &request.params);
  try {
    auto sink = r->stream_handler(request);
    if (sink && (!*sink || !(*sink)->write || !(*sink)->finish))
      return make_error(Errc::internal, "the endpoint returned no usable body sink");
    return sink;
  } catch (const std::exception& e) {
    return make_error(Errc::internal, std::string("unexpected error: ") + e.what());
  }
}

ApiResponse Router::dispatch(ApiRequest& request) const {
  std::string allowed;
  const Route* best = find(request, &allowed);
  if (!best) {
    if (!allowed.empty()) return method_not_allowed(request.method, allowed);
    std::string path;
    for (auto& seg : request.segments) path += "/" + seg;
    return error_response(make_error(
        Errc::not_found, "no such endpoint: " + quote_input(request.method + " " + path, 200)));
  }
  if (best->stream_handler) {
    // The whole body at once through the sink, as the server would feed it in pieces.
    auto sink = open_sink(request);
    if (!sink) return error_response(sink.error());
    auto& s = **sink;
    Status written;
    try {
      if (!request.body.empty()) written = s.write(as_bytes(request.body));
    } catch (const std::exception& e) {
      written = make_error(Errc::internal, std::string("unexpected error: ") + e.what());
    }
    if (!written) {
      try {
        if (s.abort) s.abort();
      } catch (const std::exception&) {  // the error below is what the client needs to see
      }
      return s.refuse ? s.refuse(written.error()) : error_response(written.error());
    }
    try {
      return s.finish();
    } catch (const std::exception& e) {
      return error_response(
          make_error(Errc::internal, std::string("unexpected error: ") + e.what()));
    }
  }
  request.params.clear();
  match(*best, request.segments, &request.params);
  try {
    return best->handler(request);
  } catch (const std::exception& e) {
    return error_response(make_error(Errc::internal, std::string("unexpected error: ") + e.what()));
  }
}

}  // namespace fieldsync::ipc
