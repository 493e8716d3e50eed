// ApiService: the local API without its transport: the Router with every /v1 route group and
// the shared ApiContext. ApiServer feeds it parsed requests; unit tests call handle() directly.
//
// Ownership: holds a reference to the Store (which must outlive it).
// Thread-safety: add routes / status sections before serving; handle() (and the router's
// takes_stream() / open_sink()) are then called from the server's single thread, as are the
// BodySource and BodySink callbacks handlers return (handlers call the thread-safe Store).
// Read-only routes answer from the reader threads (api.reader_threads, ipc/reader_pool.hpp)
// and document writes from the writer thread (api.max_group_writes, ipc/writer_queue.hpp),
// once the server has set ApiContext::post.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/thread_check.hpp"
#include "ipc/api_context.hpp"
#include "ipc/api_types.hpp"
#include "ipc/reader_pool.hpp"
#include "ipc/router.hpp"
#include "ipc/writer_queue.hpp"

namespace fieldsync::ipc {

class ApiService {
 public:
  ApiService(storage::Store& store, const config::ApiOptions& options, std::string device_name);

  ApiContext& context() { return ctx_; }
  Router& router() { return router_; }

  // Adds (or replaces) a member of GET /v1/status, e.g. ("peers", engine summary as JSON).
  void set_status_section(std::string name, std::function<std::string()> json_producer);

  ApiResponse handle(ApiRequest& request) const {
    thread_.check("ApiService::handle");
    return router_.dispatch(request);
  }

  // The writer thread (null when api.max_group_writes = 0): sync sessions apply their received
  // batches through it too, grouped with the API's writes.
  WriterQueue* writer() { return writer_.get(); }

 private:
  ApiContext ctx_;
  Router router_;
  ThreadCheck thread_;  // handle(): the server's thread only
  // Declared last: destroyed (its threads joined) before the routes and context it runs.
  std::unique_ptr<ReaderPool> readers_;
  std::unique_ptr<WriterQueue> writer_;
};

}  // namespace fieldsync::ipc
