#include "daemon/daemon_mirror.hpp"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>

#include "hub/pg_mirror.hpp"
#include "ipc/api_service.hpp"
#include "ipc/metrics.hpp"

namespace fieldsync::daemon {

DaemonMirror::DaemonMirror(storage::Store& store, const config::Config& cfg)
    : store_(store), opt_(cfg.mirror) {}

DaemonMirror::~DaemonMirror() { stop(); }

Status DaemonMirror::start() {
  if (opt_.postgres.empty()) return {};
  auto m = hub::PgMirror::create(store_, opt_);
  if (!m) return m.error();
  mirror_ = std::move(*m);
  mirror_->start();
  spdlog::info("mirror: projects ({}) into PostgreSQL ({}), schema {}", opt_.projects,
               hub::redacted_conninfo(opt_.postgres), opt_.schema);
  return {};
}

void DaemonMirror::attach_api(ipc::ApiService& api) {
  std::weak_ptr<hub::PgMirror> weak = mirror_;
  bool enabled = !opt_.postgres.empty();
  api.set_status_section("mirror", [weak, enabled] {
    boost::json::object o;
    o["enabled"] = enabled;
    auto m = weak.lock();
    if (!m) {
      o["state"] = "off";
      o["message"] = enabled ? "not started" : "mirror.postgres is not set";
      return boost::json::serialize(o);
    }
    auto s = m->status();
    o["state"] = s.state;
    o["message"] = s.message;
    o["database"] = s.database;
    o["rows_written"] = s.rows_written;
    o["rows_deleted"] = s.rows_deleted;
    o["transactions"] = s.transactions;
    o["failures"] = s.failures;
    o["bodies_refused"] = s.bodies_refused;
    if (s.last_error.empty()) {
      o["last_error"] = nullptr;
    } else {
      o["last_error"] = {{"message", s.last_error}, {"at_ms", s.last_error_ms}};
    }
    o["next_retry_ms"] = s.next_retry_ms;
    boost::json::array projects;
    for (const auto& p : s.projects) {
      boost::json::object j;
      j["project"] = p.project;
      j["mirrored_seq"] = p.mirrored_seq;
      j["feed_seq"] = p.feed_seq;
      j["behind"] = p.behind();
      j["rows_written"] = p.rows_written;
      j["rows_deleted"] = p.rows_deleted;
      j["last_commit_ms"] = p.last_commit_ms;
      if (p.problem.empty()) {
        j["problem"] = nullptr;
      } else {
        j["problem"] = p.problem;
      }
      projects.push_back(std::move(j));
    }
    o["projects"] = std::move(projects);
    return boost::json::serialize(o);
  });
  if (!mirror_) return;
  api.context().metrics_sections.emplace_back([weak](ipc::MetricsWriter& w) {
    auto m = weak.lock();
    if (!m) return;
    auto s = m->status();
    bool up = s.state == "current" || s.state == "catching_up";
    w.family("fieldsync_mirror_up", "gauge",
             "1 while the PostgreSQL mirror is connected and writing");
    w.sample("fieldsync_mirror_up", {}, std::uint64_t{up ? 1u : 0u});
    w.family("fieldsync_mirror_rows_total", "counter",
             "document rows written into PostgreSQL since the daemon started");
    w.sample("fieldsync_mirror_rows_total", {}, s.rows_written);
    w.family("fieldsync_mirror_failures_total", "counter",
             "failed connections or transactions of the PostgreSQL mirror");
    w.sample("fieldsync_mirror_failures_total", {}, s.failures);
    w.family("fieldsync_mirror_behind", "gauge", "changes of a project not yet in PostgreSQL");
    for (const auto& p : s.projects)
      w.sample("fieldsync_mirror_behind", {{"project", p.project}}, p.behind());
  });
}

void DaemonMirror::notify() {
  if (mirror_) mirror_->notify();
}

void DaemonMirror::stop() {
  if (mirror_) mirror_->stop();
}

}  // namespace fieldsync::daemon
