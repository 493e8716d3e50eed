// Runs an io_context until a condition holds, with a deadline: how the C++ tests wait for
// asynchronous outcomes (never a bare sleep).
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>

namespace fieldsync::test {

// Runs `io` in short slices until pred() holds (true) or `ms` pass (false).
template <class Pred>
bool run_until(boost::asio::io_context& io, Pred pred, int ms = 10000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    io.run_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace fieldsync::test
