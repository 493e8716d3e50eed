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
      return;
    }
  }
  routes_.push_back(
      Route{std::move(method), std::string(pattern), split_pattern(pattern), std::move(handler)});
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

ApiResponse Router::dispatch(ApiRequest& request) const {
  // A literal segment beats a placeholder: prefer the route with the most literal matches.
  const Route* best = nullptr;
  int best_literals = -1;
  std::string allowed;
  for (const auto& r : routes_) {
    if (!match(r, request.segments, nullptr)) continue;
    if (r.method != request.method) {
      if (allowed.find(r.method) == std::string::npos)
        allowed += (allowed.empty() ? "" : ", ") + r.method;
      continue;
    }
    int literals = 0;
    for (const auto& p : r.parts) literals += is_placeholder(p) ? 0 : 1;
    if (literals > best_literals) {
      best = &r;
      best_literals = literals;
    }
  }
  if (!best) {
    if (!allowed.empty()) return method_not_allowed(request.method, allowed);
    std::string path;
    for (auto& seg : request.segments) path += "/" + seg;
    return error_response(make_error(
        Errc::not_found, "no such endpoint: " + quote_input(request.method + " " + path, 200)));
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
