// SessionDriver: runs one sync::Session over one transports::Stream. It feeds received bytes
// to the session, writes what the session has to send (at most write_chunk_bytes per
// write, one write at a time, so a slow link holds back the session instead of filling
// memory), and keeps time: the handshake must finish within handshake_timeout_ms, a live
// link that stays silent for idle_timeout_ms is closed, and PINGs go out every third of that
// so a quiet but healthy link stays open. A session that fails tells the peer why (ERROR)
// and the stream is closed after a short grace period.
//
// Ownership: shared (callbacks of the stream keep it alive until it closes); owns the
// Session and shares the Stream. Thread-safety: the io_context thread only.
// Events run on that thread, never from inside start()/fail()/close() callers' frames except
// `closed`, which runs from close() (so the owner must not hold references it erases there).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "common/result.hpp"
#include "sync/session.hpp"
#include "transports/transport.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::peers {

class SessionDriver : public std::enable_shared_from_this<SessionDriver> {
 public:
  struct Options {
    std::uint32_t handshake_timeout_ms = 10000;
    std::uint32_t idle_timeout_ms = 120000;
    std::uint32_t write_chunk_bytes = 256u << 10;
    std::uint32_t goodbye_timeout_ms = 2000;  // telling the peer why, then closing
  };
  struct Events {
    // After each received chunk was processed (the session may have changed state).
    std::function<void(SessionDriver&)> input;
    // Once, when the stream is closed (by either side, a deadline, or close()).
    std::function<void(SessionDriver&)> closed;
  };

  // Starts the session (HELLO) and the read loop.
  static std::shared_ptr<SessionDriver> start(boost::asio::io_context& io,
                                              std::shared_ptr<transports::Stream> stream,
                                              std::unique_ptr<sync::Session> session,
                                              Options options, Events events);
  ~SessionDriver();

  sync::Session& session() { return *session_; }
  const sync::Session& session() const { return *session_; }
  transports::Stream& stream() { return *stream_; }
  const transports::Stream& stream() const { return *stream_; }

  // Sends what the session has queued (call after telling the session something).
  void pump();
  // Ends the session on our initiative: ERROR(e) to the peer, then close.
  void fail(Error e);
  // Ends the session cleanly on our initiative (this device shuts down): the peer is told it
  // is no failure (NOTICE, when it understands it), then the stream is shut down and closed
  // within goodbye_timeout_ms.
  void end(const std::string& reason);
  // Closes the stream now.
  void close();
  bool closed() const { return closed_; }
  // Why the link ended before or outside the session (timeouts, lost connection).
  const std::optional<Error>& failure() const { return failure_; }

  struct Impl;

 private:
  SessionDriver(boost::asio::io_context& io, std::shared_ptr<transports::Stream> stream,
                std::unique_ptr<sync::Session> session, Options options, Events events);
  void set_deadline(std::uint32_t ms);
  void arm_deadline();
  void arm_keepalive();
  void read();
  void lost(const std::string& reason);

  std::unique_ptr<Impl> timers_;
  std::shared_ptr<transports::Stream> stream_;
  std::unique_ptr<sync::Session> session_;
  Options opt_;
  Events events_;
  Bytes rbuf_ = Bytes(64 * 1024);
  Bytes wbuf_;
  bool writing_ = false;
  bool closed_ = false;
  // The session is applying a batch on the writer thread: no read is outstanding until it
  // resumes (the peer's window bounds what it sends meanwhile; TCP holds the rest).
  bool read_paused_ = false;
  bool shutting_down_ = false;
  std::optional<Error> failure_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  // The expiry of the timer's pending wait, if any: a later deadline_ leaves it be (it re-arms
  // for deadline_ when it fires), so input that moves the deadline costs no timer operation.
  std::optional<std::chrono::steady_clock::time_point> armed_at_;
};

}  // namespace fieldsync::peers
