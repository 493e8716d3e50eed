// ReaderPool: the API's reader threads (api.reader_threads). Read-only requests (a document,
// a list or query, history, the changes feed with feed=normal) run here instead of on the server's
// event loop, so a query over tens of thousands of documents delays neither other requests
// nor sync (the event loop also runs the peers' sessions and the systemd watchdog). LMDB
// read transactions run concurrently with each other and with the single writer.
//
// Ownership: owns its threads; the destructor drops queued jobs and joins the threads after
// the running ones return. Thread-safety: post() from any thread; jobs run on the pool's
// threads in no particular order and must only read the thread-safe Store and render.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fieldsync::ipc {

class ReaderPool {
 public:
  // The nice value of the reader threads, relative to the process (setpriority per thread):
  // the event loop is scheduled first when the cores are busy.
  static constexpr int kReaderNice = 10;
  explicit ReaderPool(std::uint32_t threads);
  ~ReaderPool();
  ReaderPool(const ReaderPool&) = delete;
  ReaderPool& operator=(const ReaderPool&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace fieldsync::ipc
