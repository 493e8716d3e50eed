// UnixHttpClient: a minimal HTTP/1.1 client over fieldsyncd's Unix socket (one request per
// connection, `Connection: close`), enough for syncctl; the daemon is local, so no TLS, no
// proxies, no redirects. Response bodies may be chunked or have a Content-Length.
// Large bodies stream through it without being held in memory: download() writes a response
// body to a file descriptor as it arrives, upload() sends a file's content as the request body.
// Not thread-safe; one object per request is fine.
// Errors: unavailable (no socket / nobody listening, connection lost), permission_denied
// (socket mode/group), data_loss (the daemon ended a body before it was complete),
// resource_exhausted (disk full while writing a download), internal (malformed response, I/O).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace fieldsync::cli {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;              // the whole body; for download(), only an error answer's body
  std::uint64_t body_bytes = 0;  // body bytes received (for download(): written to the fd)
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

  // Sends `method target` without a body and writes a 200 or 206 answer's body to `out_fd` as
  // it arrives (one read of at most 64 KiB in memory at a time). Another answer (an error, or
  // 202 with progress) is returned with its body in HttpReply::body and nothing is written to
  // `out_fd`.
  // Errors: data_loss when the daemon closed the connection before the body was complete (the
  // daemon aborts a body it cannot produce: what was written is not the whole body);
  // resource_exhausted when `out_fd` is full (disk full, quota); internal on other write errors.
  Result<HttpReply> download(const std::string& method, const std::string& target, int out_fd);

  // download() handing a 200 or 206 answer's body to `on_data` piece by piece (at most 64 KiB
  // each) instead of writing it to a descriptor; an error from on_data stops the transfer and
  // is returned. Same errors as download() otherwise.
  Result<HttpReply> download_to(const std::string& method, const std::string& target,
                                const std::function<Status(std::string_view)>& on_data);

  // download() into `file`: the body goes to `<file>.partial` (created anew, mode 0600), which
  // is fsync'd and renamed over `file` only once the body is complete; after a failure or an
  // error answer it is removed and `file` is left as it was.
  Result<HttpReply> download_to_file(const std::string& method, const std::string& target,
                                     const std::filesystem::path& file);

  // Sends exactly `size` bytes read from `in_fd` (from its current position) as the request
  // body, with Content-Length: size and `content_type`, read and sent in pieces of 64 KiB. If the
  // daemon answers before the whole body is sent (an error such as 413, 401 or 404), sending
  // stops and that answer is returned.
  // Errors: invalid_argument when the input ends before `size` bytes; internal when reading it
  // fails; unavailable when the connection is lost without an answer.
  Result<HttpReply> upload(const std::string& method, const std::string& target, int in_fd,
                           std::uint64_t size,
                           const std::string& content_type = "application/octet-stream");

  // upload() of a regular file's whole content (its size from fstat).
  Result<HttpReply> upload_file(const std::string& method, const std::string& target,
                                const std::filesystem::path& file,
                                const std::string& content_type = "application/octet-stream");

  const std::filesystem::path& socket_path() const { return path_; }

 private:
  Result<int> connect_socket();
  std::filesystem::path path_;
};

// Percent-encodes one path segment or query value.
std::string url_encode(std::string_view s);

}  // namespace fieldsync::cli
