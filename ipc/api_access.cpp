#include "ipc/api_access.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/encoding.hpp"
#include "config/config_loader.hpp"
#include "crypto/crypto.hpp"
#include "ipc/http_error.hpp"

namespace fieldsync::ipc {

namespace {
constexpr std::size_t kTokenBytes = 32;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool valid_token(std::string_view t) {
  if (t.size() != kTokenBytes * 2) return false;
  for (char c : t)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}
}  // namespace

Result<std::optional<unsigned>> token_group_id(const std::string& name) {
  if (name.empty()) return std::optional<unsigned>();
  struct group* g = ::getgrnam(name.c_str());
  if (!g)
    return make_error(Errc::invalid_argument, "api.token_group: no group named '" + name + "'");
  return std::optional<unsigned>(g->gr_gid);
}

namespace {
// Gives `path` to `group` (when set), then sets `mode`.
Status give_to_group(const std::filesystem::path& path, std::optional<unsigned> group,
                     unsigned mode) {
  if (group && ::chown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(*group)) != 0)
    return make_error(errno == EPERM ? Errc::permission_denied : Errc::internal,
                      "cannot give " + path.string() + " to group id " + std::to_string(*group) +
                          " (api.token_group): " + std::strerror(errno) +
                          "; the daemon's user must be a member of that group (systemd: "
                          "SupplementaryGroups=)");
  if (::chmod(path.c_str(), mode) != 0)
    return make_error(Errc::internal,
                      "cannot chmod " + path.string() + ": " + std::strerror(errno));
  return {};
}
}  // namespace

Status set_token_access(const std::filesystem::path& path, std::optional<unsigned> group) {
  return give_to_group(path, group, group ? 0640 : 0600);
}

Status open_dir_to_group(const std::filesystem::path& dir, std::optional<unsigned> group) {
  return group ? give_to_group(dir, group, 0710) : Status{};
}

Result<std::string> load_or_create_token(const std::filesystem::path& path,
                                         std::optional<unsigned> group) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      std::string t = ss.str();
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      if (!valid_token(t))
        return make_error(Errc::data_loss, "API token file " + path.string() +
                                               " is corrupt; delete it to create a new token");
      FS_TRY(set_token_access(path, group));  // also tightens a copy with looser permissions
      return t;
    }
    std::string token = to_hex(crypto::random_bytes(kTokenBytes));
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // created concurrently: read it
      return make_error(Errc::internal, "cannot create API token file " + path.string() + ": " +
                                            std::strerror(errno));
    }
    std::string line = token + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (!ok) {
      ::unlink(path.c_str());
      return make_error(Errc::internal, "cannot write API token file " + path.string());
    }
    FS_TRY(set_token_access(path, group));
    return token;
  }
  return make_error(Errc::internal, "cannot read API token file " + path.string());
}

bool is_loopback_host(std::string_view host) {
  std::string_view name = host;
  if (!name.empty() && name.front() == '[') {
    auto close = name.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = name.substr(close + 1);
    name = name.substr(0, close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    host = rest;
  } else {
    auto colon = name.find(':');
    std::string_view rest = colon == std::string_view::npos ? "" : name.substr(colon);
    name = name.substr(0, colon);
    host = rest;
  }
  // What follows the name, if anything, must be ":<digits>".
  if (!host.empty()) {
    if (host.size() < 2) return false;
    for (char c : host.substr(1))
      if (c < '0' || c > '9') return false;
  }
  std::string lower;
  for (char c : name)
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return lower == "localhost" || lower == "127.0.0.1" || lower == "[::1]";
}

std::string StreamTickets::issue(std::int64_t now_ms, std::uint32_t ttl_ms) {
  while (!live_.empty() && (live_.front().second <= now_ms || live_.size() >= kMaxOutstanding))
    live_.pop_front();
  std::string t = to_hex(crypto::random_bytes(32));
  live_.emplace_back(t, now_ms + ttl_ms);
  return t;
}

bool StreamTickets::redeem(std::string_view ticket, std::int64_t now_ms) {
  for (auto it = live_.begin(); it != live_.end(); ++it) {
    if (it->first.size() != ticket.size() ||
        !crypto::constant_time_equal(as_bytes(it->first), as_bytes(ticket)))
      continue;
    const bool live = it->second > now_ms;
    live_.erase(it);
    return live;
  }
  return false;
}

bool StreamTickets::holds(std::string_view ticket, std::int64_t now_ms) const {
  for (const auto& [t, expiry] : live_)
    if (t.size() == ticket.size() && crypto::constant_time_equal(as_bytes(t), as_bytes(ticket)))
      return expiry > now_ms;
  return false;
}

bool takes_stream_ticket(const ApiRequest& request) {
  const auto& s = request.segments;
  return request.method == "GET" && request.query.count("ticket") == 1 && s.size() == 4 &&
         s[0] == "v1" && s[1] == "projects" && s[3] == "changes";
}

Status check_tcp_host(const ApiRequest& request) {
  auto host = request.header("host");
  if (!host || !is_loopback_host(*host))
    return make_error(Errc::permission_denied,
                      "Host header must be localhost, 127.0.0.1 or [::1] on the TCP API");
  return {};
}

bool is_ui_public(const ApiRequest& request) {
  const auto& s = request.segments;
  if (s.empty() || s[0] != "ui") return false;
  if (request.method == "GET")
    return s.size() == 1 || (s.size() == 2 && (s[1] == "app.js" || s[1] == "app.css"));
  return request.method == "POST" && s.size() == 2 && s[1] == "session";
}

bool ui_session_may(const ApiRequest& request) {
  const auto& s = request.segments;
  if (s.empty() || s[0] != "v1") return false;
  if (request.method == "GET") {
    if (s.size() == 2) return s[1] == "status" || s[1] == "peers" || s[1] == "projects";
    return s.size() == 4 && s[1] == "projects" &&
           (s[3] == "sync" || s[3] == "conflicts" || s[3] == "invites");
  }
  return request.method == "POST" && s.size() == 4 && s[1] == "projects" && s[3] == "invites";
}

std::string own_origin(const ApiRequest& request) {
  return lower("http://" + request.header("host").value_or(""));
}

bool is_own_origin(const ApiRequest& request, std::string_view origin) {
  return lower(std::string(origin)) == own_origin(request);
}

Status check_tcp_access(ApiRequest& request, const TcpCredentials& creds, std::int64_t now_ms) {
  FS_TRY(check_tcp_host(request));
  if (is_ui_public(request)) return {};
  StreamTickets* tickets = creds.tickets;
  const std::string_view token = creds.token;
  if (tickets && !request.header("authorization") && takes_stream_ticket(request)) {
    const std::string ticket = *request.query_value("ticket");
    request.query.erase("ticket");
    if (!tickets->redeem(ticket, now_ms))
      return make_error(Errc::unauthenticated,
                        "unknown, used or expired stream ticket: ask POST /v1/tickets for a new "
                        "one");
    return {};
  }
  auto auth = request.header("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!auth || auth->size() < kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), auth->begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
    return make_error(Errc::unauthenticated,
                      "missing bearer token: send 'Authorization: Bearer <token>' (the token is in "
                      "the data directory's api.token)");
  std::string_view given = std::string_view(*auth).substr(kBearer.size());
  while (!given.empty() && given.back() == ' ') given.remove_suffix(1);
  if (crypto::constant_time_equal(as_bytes(given), as_bytes(token))) return {};
  if (creds.sessions && creds.sessions->holds(given, now_ms)) {
    if (!ui_session_may(request))
      return make_error(Errc::permission_denied,
                        "a status page session may only read status, peers, projects, their "
                        "sync, conflicts and invites, and create invites");
    const auto origin = request.header("origin");
    if (origin && !is_own_origin(request, *origin))
      return make_error(Errc::permission_denied,
                        "a status page session is only valid on the page's own origin");
    return {};
  }
  return make_error(Errc::unauthenticated, "wrong bearer token");
}

namespace {

bool allowed_origin(const std::vector<std::string>& allowed,
                    const std::optional<std::string>& origin) {
  return origin && std::find(allowed.begin(), allowed.end(), lower(*origin)) != allowed.end();
}

}  // namespace

std::vector<std::string> parse_origins(std::string_view list) {
  auto out = config::split_project_list(list);
  for (auto& o : out) o = lower(std::move(o));
  return out;
}

std::vector<std::pair<std::string, std::string>> cors_headers(
    const std::vector<std::string>& allowed, const std::optional<std::string>& origin) {
  if (!allowed_origin(allowed, origin)) return {};
  return {{"Access-Control-Allow-Origin", *origin},
          {"Vary", "Origin"},
          {"Access-Control-Expose-Headers", "ETag, Location, Content-Range, Retry-After"}};
}

ApiResponse cors_preflight(const std::vector<std::string>& allowed, const ApiRequest& request) {
  const auto origin = request.header("origin");
  if (!allowed_origin(allowed, origin)) {
    return error_response(
        make_error(Errc::permission_denied,
                   origin ? "origin " + quote_input(*origin, 100) + " is not in api.cors_origins"
                          : std::string("a CORS preflight without Origin")));
  }
  ApiResponse r;
  r.status = 204;
  r.content_type.clear();
  r.headers = cors_headers(allowed, origin);
  r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE");
  r.headers.emplace_back("Access-Control-Allow-Headers",
                         "Authorization, Content-Type, If-Match, If-None-Match, Last-Event-ID, "
                         "Range");
  r.headers.emplace_back("Access-Control-Max-Age", "600");
  return r;
}

}  // namespace fieldsync::ipc
