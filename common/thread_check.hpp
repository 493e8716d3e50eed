// ThreadCheck: the thread rules of a class, checked in debug builds. An object that must be used
// from one thread (an io_context's, a session's strand) holds one and calls check() at the top
// of its entry points: the first call binds it to the calling thread, and a later call from
// another thread prints what was called and aborts. Release builds (NDEBUG) check nothing and
// cost nothing.
//
// Thread-safety: check() may be called from any thread (that is what it detects).
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace fieldsync {

class ThreadCheck {
 public:
  void check([[maybe_unused]] const char* what) const {
#ifndef NDEBUG
    const std::thread::id me = std::this_thread::get_id();
    std::thread::id expected{};
    if (owner_.compare_exchange_strong(expected, me) || expected == me) return;
    std::fprintf(stderr, "fieldsync: thread rule broken: %s called off its owning thread\n", what);
    std::abort();
#endif
  }
  // Moves the object to the calling thread (e.g. after it was set up on another).
  void rebind() const {
#ifndef NDEBUG
    owner_.store(std::thread::id{});
#endif
  }

 private:
#ifndef NDEBUG
  mutable std::atomic<std::thread::id> owner_{};
#endif
};

}  // namespace fieldsync
