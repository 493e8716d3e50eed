// WriterQueue: the daemon's writer thread. Document writes of the API (create, update,
// delete, batch, resolve, purge) and the batches sync sessions receive are applied here instead
// of on the event loop, so an fsync (8-10 ms on a small board) delays neither requests nor sync.
// The writes that queue up while one group commits are committed together as the next group
// (storage::Store::write_group): each in a nested transaction of its own, one fsync for all, so
// concurrent writers share the cost of durability instead of queueing behind one fsync each.
// Answers go back after the commit; a failed commit answers every write of the group with its error
// (none of them is written).
//
// A job marked `alone` (one that reads the store through a transaction of its own before it
// writes, e.g. a merge resolve) runs as a group of its own, after the writes queued before it.
//
// Ownership: owns its thread; the destructor calls no more done(), drops queued jobs and joins
// the thread after the running group. Thread-safety: post() from any thread; work() and
// done() run on the writer thread (done() posts on to the caller's own thread).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/result.hpp"

namespace fieldsync::storage {
class Store;
}

namespace fieldsync::ipc {

class WriterQueue {
 public:
  struct Job {
    std::function<void()> work;               // inside the group (uses only the Store)
    std::function<void(const Status&)> done;  // after the group's commit: its status
    bool alone = false;
  };
  // The writer thread's nice value (setpriority per thread): the event loop comes first when
  // the cores are busy, readers after the writer.
  static constexpr int kWriterNice = 5;
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
