// UnixHttpClient: a minimal HTTP/1.1 client over fieldsyncd's Unix socket (one request per
// connection, `Connection: close`), enough for syncctl; the daemon is local, so no TLS, no
// proxies, no redirects. Not thread-safe; one object per request is fine.
// Errors: unavailable (no socket / nobody listening), permission_denied (socket mode/group),
// internal (malformed response, I/O).
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "common/result.hpp"

namespace fieldsync::cli {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

class UnixHttpClient {
 public:
  explicit UnixHttpClient(std::filesystem::path socket_path) : path_(std::move(socket_path)) {}

  Result<HttpReply> request(const std::string& method, const std::string& target,
                            const std::string& body = {});

  // Sends a GET and hands the response body to `on_data` as it arrives (for SSE), until the
  // server closes or on_data returns false. The status and headers come first via `on_head`.
  Status stream(const std::string& target, const std::function<void(const HttpReply&)>& on_head,
                const std::function<bool(std::string_view)>& on_data);

  const std::filesystem::path& socket_path() const { return path_; }

 private:
  Result<int> connect_socket();
  std::filesystem::path path_;
};

// Percent-encodes one path segment or query value.
std::string url_encode(std::string_view s);

}  // namespace fieldsync::cli
