#include "ipc/writer_queue.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <vector>

#include "storage/store.hpp"

namespace fieldsync::ipc {

WriterQueue::WriterQueue(storage::Store& store, std::uint32_t max_group)
    : store_(store), max_group_(max_group > 0 ? max_group : 1), thread_([this] { run(); }) {}

WriterQueue::~WriterQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

void WriterQueue::post(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void WriterQueue::run() {
  // Below the event loop, above the readers (ipc/reader_pool.hpp).
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kWriterNice);
  while (true) {
    std::vector<Job> group;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      // What queued meanwhile, up to an `alone` job (which goes by itself).
      do {
        group.push_back(std::move(jobs_.front()));
        jobs_.pop_front();
      } while (!jobs_.empty() && !group.front().alone && !jobs_.front().alone &&
               group.size() < max_group_);
    }
    Status committed = store_.write_group([&] {
      for (auto& job : group) job.work();
    });
    for (auto& job : group) job.done(committed);
  }
}

}  // namespace fieldsync::ipc
