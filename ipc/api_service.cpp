#include "ipc/api_service.hpp"

#include "ipc/routes.hpp"

#ifndef FIELDSYNC_VERSION
#define FIELDSYNC_VERSION "0.0.0"
#endif

namespace fieldsync::ipc {

ApiService::ApiService(storage::Store& store, const config::ApiOptions& options,
                       std::string device_name)
    : ctx_(store, options, FIELDSYNC_VERSION, std::move(device_name)) {
  ctx_.status_sections.emplace_back("peers", [] { return std::string("{}"); });
  register_status_routes(router_, ctx_);
  register_project_routes(router_, ctx_);
  register_document_routes(router_, ctx_);
  register_changes_routes(router_, ctx_);
  register_metrics_routes(router_, ctx_);
  register_ui_routes(router_, ctx_);
  if (options.reader_threads > 0) {
    readers_ = std::make_unique<ReaderPool>(options.reader_threads);
    ctx_.read = [pool = readers_.get()](std::function<void()> job) { pool->post(std::move(job)); };
  }
  if (options.max_group_writes > 0) {
    writer_ = std::make_unique<WriterQueue>(store, options.max_group_writes);
    ctx_.write = [w = writer_.get()](std::function<void()> work, bool alone,
                                     std::function<void(const Status&)> done) {
      w->post({std::move(work), std::move(done), alone});
    };
  }
}

void ApiService::set_status_section(std::string name, std::function<std::string()> json_producer) {
  for (auto& s : ctx_.status_sections) {
    if (s.first == name) {
      s.second = std::move(json_producer);
      return;
    }
  }
  ctx_.status_sections.emplace_back(std::move(name), std::move(json_producer));
}

}  // namespace fieldsync::ipc
