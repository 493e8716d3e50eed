// ThreadCheck: the owning thread passes, another thread aborts the process (debug builds).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <thread>

#include "common/thread_check.hpp"

using fieldsync::ThreadCheck;

TEST_CASE("a thread rule holds on its thread and aborts on another", "[common]") {
  ThreadCheck owner;
  owner.check("first");  // binds
  owner.check("again");
#ifdef NDEBUG
  SUCCEED("release build: nothing is checked");
#else
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::thread other([&] { owner.check("from another thread"); });
    other.join();
    ::_exit(0);  // not reached when the check works
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  // rebind() hands the object to the next thread that uses it.
  owner.rebind();
  std::thread next([&] { owner.check("after rebind"); });
  next.join();
#endif
}
