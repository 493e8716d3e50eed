// Access policy of the local API.
//
// Unix socket: no token; the socket file's mode and group decide who may connect.
// TCP (loopback by default): every request needs `Authorization: Bearer <token>`, the token
// being 32 random bytes (hex) kept in <data_dir>/api.token (0600, or 0640 with the group
// api.token_group so that apps of that group can read it), compared in constant time;
// and its Host header must name the loopback (localhost, 127.0.0.1, [::1], any port), which
// stops a web page from reaching the API through DNS rebinding.
// Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "ipc/api_types.hpp"

namespace fieldsync::ipc {

// api.token_group resolved: the group's id, or none when the key is empty.
// Errors: invalid_argument when no group has that name.
Result<std::optional<unsigned>> token_group_id(const std::string& name);

// The mode of a file apps may read (the token, api.port): with a group, given to that group
// and made 0640; without, made 0600 (a looser mode, or a group left from an earlier
// api.token_group, is taken back). Errors: permission_denied when the daemon may not give the
// file to the group (it is not a member), internal on other I/O errors.
Status set_token_access(const std::filesystem::path& path, std::optional<unsigned> group);

// With a group: gives the data directory to it as 0710, so that the group's members can open
// the token (and api.port) by name but list nothing and open nothing else there (every other
// file is 0600, every directory 0700). Without: nothing (the store keeps the directory 0700).
// Errors: as set_token_access.
Status open_dir_to_group(const std::filesystem::path& dir, std::optional<unsigned> group);

// Reads the token file, or creates it with a fresh token when absent; either way its mode is
// then set by set_token_access(path, group).
// Errors: data_loss when the file exists but holds no valid token; those of
// set_token_access; internal on I/O errors.
Result<std::string> load_or_create_token(const std::filesystem::path& path,
                                         std::optional<unsigned> group = std::nullopt);

// True for localhost / 127.0.0.1 / [::1], with or without ":port".
bool is_loopback_host(std::string_view host);

// Stream tickets (POST /v1/tickets, docs/api.md "Web apps"): a browser's EventSource cannot
// send an Authorization header, so a page asks for a ticket with its token and opens the
// changes stream with ?ticket=. A ticket is 32 random bytes (hex), used once, and expires after
// api.ticket_ttl_ms; at most kMaxOutstanding are live (issuing more drops the oldest). It is not
// the token: a URL that leaks (history, logs) is useless a minute later or once used.
// Thread-safety: the server's thread only (routes and the access check both run there).
class StreamTickets {
 public:
  static constexpr std::size_t kMaxOutstanding = 64;
  std::string issue(std::int64_t now_ms, std::uint32_t ttl_ms);
  // True, and the ticket is used up, when it was issued and has not expired.
  bool redeem(std::string_view ticket, std::int64_t now_ms);
  // True when the ticket was issued and has not expired; it stays usable (status page
  // sessions, below, are checked on every request).
  bool holds(std::string_view ticket, std::int64_t now_ms) const;

 private:
  std::deque<std::pair<std::string, std::int64_t>> live_;  // ticket, expiry (unix ms)
};

// Whether a request may be let in with a stream ticket instead of the token: GET of a
// project's changes feed (GET /v1/projects/{pid}/changes) carrying ?ticket=.
bool takes_stream_ticket(const ApiRequest& request);

// permission_denied for a Host header that is not the loopback (DNS rebinding).
Status check_tcp_host(const ApiRequest& request);

// The status page (GET /ui/, docs/api.md "Status page"). Its files hold no data and need no
// token (only the loopback Host): GET /ui/, /ui/app.js, /ui/app.css, and POST /ui/session,
// whose credential is a one-time login ticket in its body.
bool is_ui_public(const ApiRequest& request);
// What a status page session (a bearer credential of its own, issued by POST /ui/session) may
// call: reading status, peers, projects, their sync progress, conflicts and invites, and
// creating an invite. Nothing else.
bool ui_session_may(const ApiRequest& request);
// The page's own origin, "http://" + the Host header (lower-cased).
std::string own_origin(const ApiRequest& request);
// True when `origin` (an Origin header, any letter case) is own_origin(request).
bool is_own_origin(const ApiRequest& request, std::string_view origin);

// How long a status page session lives (or until the daemon stops). At most
// StreamTickets::kMaxOutstanding are live.
inline constexpr std::uint32_t kUiSessionMs = 8 * 3600 * 1000;

struct TcpCredentials {
  std::string_view token;                   // the API token
  StreamTickets* tickets = nullptr;         // stream tickets (redeemed here)
  const StreamTickets* sessions = nullptr;  // status page sessions (checked here)
};

// permission_denied for a foreign Host header, unauthenticated for a missing or wrong token.
// With `creds.tickets`, a request takes_stream_ticket() lets in may authenticate with a live
// ticket instead (redeemed here, and removed from the request's query). With
// `creds.sessions`, a bearer credential that is a live status page session is accepted where
// ui_session_may() allows it and from the page's own origin (permission_denied elsewhere).
// is_ui_public() requests need only the Host check.
Status check_tcp_access(ApiRequest& request, const TcpCredentials& creds, std::int64_t now_ms);
inline Status check_tcp_access(ApiRequest& request, std::string_view token) {
  return check_tcp_access(request, TcpCredentials{token}, 0);
}

// CORS (api.cors_origins): the origins as configured, lower-cased, whitespace trimmed.
std::vector<std::string> parse_origins(std::string_view list);
// The headers for a response to `origin` when it is one of `allowed` (empty otherwise).
std::vector<std::pair<std::string, std::string>> cors_headers(
    const std::vector<std::string>& allowed, const std::optional<std::string>& origin);
// The answer to a CORS preflight (OPTIONS with Access-Control-Request-Method): 204 with what
// may be sent when the origin is allowed, else 403. Needs no token (browsers send none).
ApiResponse cors_preflight(const std::vector<std::string>& allowed, const ApiRequest& request);

}  // namespace fieldsync::ipc
