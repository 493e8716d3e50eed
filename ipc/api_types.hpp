// ApiRequest / ApiResponse: the transport-neutral request and response the route handlers see.
//
// The HTTP server (ipc/http_server.cpp, the only Beast code) parses the wire request into an
// ApiRequest and serialises the ApiResponse back, so handlers compile without Beast and can be
// unit-tested without sockets. A response is either complete (status + body), carries a
// ChangeStream, which the server drives asynchronously (long-poll and Server-Sent Events), is
// deferred (the server waits, bounded, for the handler's later answer), or has a BodySource
// (a large body sent in pieces as it is produced). A route registered with
// Router::add_streamed() receives its request body in pieces through a BodySink.
// Plain data; not thread-safe by itself. Every callback in these types is called on the
// server's thread (the io_context's single thread), never concurrently, and the server drops
// its references to them there too. The only exception is the `resume` function the server
// hands to BodySink::ready, which may be called from any thread. Work done on another thread
// (e.g. the blob worker) answers through ApiContext::post, which runs a job on the server's
// thread: DeferredResponse's reply() must be called there.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::ipc {

enum class Transport { unix_socket, tcp };

struct ApiRequest {
  std::string method;                             // "GET", "POST", ...
  std::string target;                             // raw request target, for logs
  std::vector<std::string> segments;              // decoded path segments: {"v1","projects",...}
  std::multimap<std::string, std::string> query;  // decoded query parameters
  std::map<std::string, std::string> headers;     // lower-case names; only those handlers use
  std::string body;
  Transport transport = Transport::unix_socket;
  std::map<std::string, std::string> params;  // path placeholders, filled by the Router

  std::optional<std::string> query_value(std::string_view name) const {
    auto it = query.find(std::string(name));
    if (it == query.end()) return std::nullopt;
    return it->second;
  }
  std::vector<std::string> query_values(std::string_view name) const {
    std::vector<std::string> out;
    auto [b, e] = query.equal_range(std::string(name));
    for (auto it = b; it != e; ++it) out.push_back(it->second);
    return out;
  }
  std::optional<std::string> header(std::string_view lower_name) const {
    auto it = headers.find(std::string(lower_name));
    if (it == headers.end()) return std::nullopt;
    return it->second;
  }
  const std::string& param(const std::string& name) const {
    static const std::string empty;
    auto it = params.find(name);
    return it == params.end() ? empty : it->second;
  }
};

// One batch of events read from the changes feed after a cursor.
struct ChangeChunk {
  std::vector<std::pair<std::uint64_t, std::string>> events;  // (seq, JSON object text)
  std::uint64_t last_seq = 0;  // cursor after these events (unchanged if none)
};

// A response that waits on a project's changes feed; the server runs it.
struct ChangeStream {
  enum class Mode { longpoll, sse };
  Mode mode = Mode::longpoll;
  ProjectId project;
  std::uint64_t since = 0;
  std::chrono::milliseconds timeout{0};    // longpoll: how long to wait for a first change
  std::chrono::milliseconds heartbeat{0};  // sse: comment line interval
  // Page size of fetch(): streams of a project with the same cursor and limit read the same
  // page, which the server reads and renders once for them all (0: never shared).
  std::uint32_t limit = 0;
  // Reads the changes after `after` (called on the server's thread).
  std::function<Result<ChangeChunk>(std::uint64_t after)> fetch;
  // longpoll: renders the final JSON body from what was fetched (possibly nothing).
  std::function<std::string(const ChangeChunk&)> render;
};

struct ApiResponse;

// A response that is only known later (e.g. after a network exchange, or work on another
// thread): the server calls start(reply) once on its thread and sends what reply() gets, or
// on_timeout() if reply() did not come within `timeout`. reply() must be called on the
// server's thread (from another thread: through ApiContext::post); calls after the first (or
// after the timeout) are ignored. A BodySink's finish() may answer with one (e.g. the answer
// comes once a worker has stored the body).
struct DeferredResponse {
  std::function<void(std::function<void(ApiResponse)> reply)> start;
  std::chrono::milliseconds timeout{0};
  std::function<ApiResponse()> on_timeout;
};

// A response body produced piece by piece (e.g. an export of hundreds of MB): the server sends
// it with `Transfer-Encoding: chunked` and calls next() for a piece only after the previous one
// was written to the socket, so a slow reader holds the daemon to one piece (plus the socket's
// buffers). Each write has api.request_timeout_ms. An empty piece ends the body.
// - next() returning an error before anything was sent: the client gets the mapped error
//   response instead. Later: the connection is closed without the terminating chunk, so the
//   client sees an incomplete body, never a short one that looks complete; the server logs it.
// - done(status), if set, is called exactly once when the server is finished with the source:
//   ok when the whole body (with its terminating chunk) was written, otherwise why it stopped
//   (next() failed, the client went away or stopped reading, the server stopped). The server
//   then releases the source, so resources captured by next() are freed with it.
// Pieces are best kept at 64 KiB..1 MiB; larger ones are written in slices of at most 256 KiB,
// each within the write deadline. HTTP/1.0 clients (no chunked coding) get 501.
// With `length` set the body is exactly that many bytes and is sent with Content-Length
// instead (HTTP/1.0 clients too); a source that ends early or produces more fails (the
// connection is closed: the client sees a body shorter than announced). The response's
// status and headers are sent as they are (e.g. 206 with Content-Range).
struct BodySource {
  std::function<Result<Bytes>()> next;
  std::function<void(const Status&)> done;
  std::optional<std::uint64_t> length;
};

// The receiving end of a streamed request body (a route added with Router::add_streamed()).
// The server calls write() for each piece as it arrives (pieces of at most 64 KiB; never empty),
// then finish() once after the last byte, and sends what finish() answers. If the body does not
// arrive whole, the server calls abort() instead of finish(), so the sink can clean up: the
// client went away or stopped sending (api.request_timeout_ms without a byte), the body exceeds
// api.max_stream_bytes (413), its framing is malformed (400), or write() failed. A write() error
// stops the reading: the client gets the error mapped to HTTP and the connection is closed.
// Exactly one of finish() and abort() is called, once; abort may be empty. (Only when the
// daemon is stopped hard, its io_context abandoned, is a sink or source destroyed without
// them: keep what must not outlive an unfinished transfer in objects their destructors clean.)
// refuse, if set, makes the answer to a write() error (e.g. with what was done before it);
// otherwise the error is mapped by error_response.
// ready, if set, paces the body (backpressure, e.g. while another thread writes it to disk):
// after each successful write() the server calls ready(resume) and reads no more of the body
// (nor calls finish()) until resume() was called. resume may be called from any thread, at
// once or later, more than once (only the first call counts); the server waits for it at most
// api.request_timeout_ms, then treats the body as cut (abort(), like a stalled client).
// Calling resume after the request ended does nothing.
struct BodySink {
  std::function<Status(ByteView)> write;
  std::function<ApiResponse()> finish;
  std::function<void()> abort;
  std::function<ApiResponse(const Error&)> refuse;
  std::function<void(std::function<void()> resume)> ready;
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  std::shared_ptr<ChangeStream> stream;                      // set: the server drives it
  std::shared_ptr<DeferredResponse> deferred;                // set: the server waits for it
  std::shared_ptr<BodySource> source;  // set: the body is sent from it (not `body`)

  // A 200 response whose body comes from `source`, with the given content type.
  static ApiResponse streamed(std::shared_ptr<BodySource> source,
                              std::string content_type = "application/octet-stream") {
    ApiResponse r;
    r.content_type = std::move(content_type);
    r.source = std::move(source);
    return r;
  }
};

}  // namespace fieldsync::ipc
