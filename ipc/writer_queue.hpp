// WriterQueue: the API's writer thread. Document writes (create, update, delete, batch,
// resolve, purge) run here instead of on the server's event loop, so an fsync (8-10 ms on a
// small board) delays neither other requests nor sync. The writes that queue up while one
// group commits are committed together as the next group (storage::Store::write_group): each in
// a nested transaction of its own, one fsync for all, so concurrent writers share the cost of
// durability instead of queueing behind one fsync each. Answers go back after the commit; a
// failed commit answers every write of the group with its error (none of them is written).
//
// A job marked `alone` (one that reads the store through a transaction of its own before it
// writes, e.g. a merge resolve) runs as a group of its own, after the writes queued before it.
//
// Ownership: owns its thread; the destructor answers nothing more, drops queued jobs and joins
// the thread after the running group. Thread-safety: post() from any thread; replies are
// called on the writer thread (the caller posts them on to its own).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "ipc/api_types.hpp"

namespace fieldsync::storage {
class Store;
}

namespace fieldsync::ipc {

class WriterQueue {
 public:
  struct Job {
    std::function<ApiResponse()> work;
    std::function<void(ApiResponse)> reply;
    bool alone = false;
  };
  // At most `max_group` writes per group (api.max_group_writes).
  WriterQueue(storage::Store& store, std::uint32_t max_group);
  ~WriterQueue();
  WriterQueue(const WriterQueue&) = delete;
  WriterQueue& operator=(const WriterQueue&) = delete;

  void post(Job job);

 private:
  void run();

  storage::Store& store_;
  const std::uint32_t max_group_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the rest is set
};

}  // namespace fieldsync::ipc
