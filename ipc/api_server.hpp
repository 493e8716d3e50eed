// ApiServer: the HTTP/1.1 transport of the local API (Boost.Beast, C++20 coroutines), on one
// io_context, listening on the Unix socket (api.socket_path, mode api.socket_mode, group
// api.socket_group) and, when api.http_enabled, on TCP api.http_address:api.http_port.
//
// Requests are parsed into ApiRequest and handed to ApiService; TCP requests first pass the
// access policy (ipc/api_access.hpp), checked from the header before any body is read.
// Limits (docs/api.md "Request framing", "Connections"): api.max_header_bytes,
// api.max_chunk_extension_bytes, api.max_trailer_bytes (400), api.max_body_bytes (413);
// connection budgets api.max_connections (TCP) and api.max_unix_connections, with
// api.header_timeout_ms for a first authenticated header (pending and idle connections make
// room for new ones; 503 when all are busy); api.max_streams per listener (503);
// api.request_timeout_ms (idle/slow connections are closed); api.accept_retry_max_ms (accept
// backoff at fd exhaustion, with a spare descriptor to answer 503). Malformed framing: 400.
// Long-poll and SSE responses wait on the changes feed, woken by notify_change(); an SSE
// subscriber more than api.max_stream_buffer_bytes behind is disconnected. SSE streams of a
// project at the same cursor and page size share one read and rendering of each page: the
// server keeps a page while a stream is still at its cursor and the project has not changed
// since; each stream holds the pages it took until it has sent them (the last frees them).
// Leaving a project (the leave route) ends its streams with not_found.
// Streamed bodies (docs/api.md "Streamed bodies"): a response with a BodySource is sent chunked,
// one piece pulled per piece written (each write within api.request_timeout_ms; an error
// part-way closes the connection without the final chunk); a route added with
// Router::add_streamed() gets its body piece by piece in a BodySink, up to api.max_stream_bytes
// (413), each read within api.request_timeout_ms; a sink with `ready` paces the reading (the
// next piece is read once it called resume, from any thread, within api.request_timeout_ms).
// A source with a known length is sent with Content-Length instead of chunked. Their callbacks
// run on the io_context thread. ApiContext::post (filled by start()) runs a job on that thread
// from any thread, until the server is destroyed.
//
// Ownership: borrows the io_context and the ApiService, which must outlive it. Creates
// <data_dir>/api.token (0600; 0640 with the group api.token_group) and <data_dir>/api.port
// (the same mode; the bound TCP port; failing to write it is logged, not fatal).
// Thread-safety: start()/stop() on the io_context's thread (or before it runs);
// notify_change() from any thread. The io_context must be run by exactly one thread, which
// alone touches the connections, streams and shared pages (and calls ChangeStream::fetch).
// Errors (start): invalid_argument (bad address, socket path too long), already_exists
// (another daemon listens on the socket), unavailable (port in use), internal (I/O).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>

#include "common/ids.hpp"
#include "common/result.hpp"
#include "config/config.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::ipc {

class ApiService;

class ApiServer {
 public:
  ApiServer(boost::asio::io_context& io, ApiService& service, const config::ApiOptions& options,
            std::filesystem::path data_dir);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds both listeners and starts accepting (served once the io_context runs).
  Status start();

  const std::filesystem::path& socket_path() const;
  std::uint16_t http_port() const;  // 0 when TCP is disabled
  std::filesystem::path token_path() const;

  // Wakes long-poll and SSE clients of `project`. Thread-safe (posts to the io_context).
  void notify_change(const ProjectId& project, std::uint64_t last_seq);

  // Graceful stop: closes the listeners and idle connections, ends SSE streams and long-polls,
  // lets requests in progress finish; after `grace` force-closes the rest. `done` runs on the
  // io thread once no connection is left. Removes the socket file.
  void stop(std::chrono::milliseconds grace, std::function<void()> done);

  std::size_t connection_count() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::ipc
