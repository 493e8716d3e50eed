#include "ipc/reader_pool.hpp"

#include <sys/resource.h>
#include <unistd.h>

namespace fieldsync::ipc {

ReaderPool::ReaderPool(std::uint32_t threads) {
  threads_.reserve(threads);
  for (std::uint32_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

ReaderPool::~ReaderPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ReaderPool::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void ReaderPool::run() {
  // Below the event loop: on a busy machine the loop (sync sessions, the watchdog, status)
  // gets the CPU first, and a long query waits instead.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kReaderNice);
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace fieldsync::ipc
