#include "peers/session_driver.hpp"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace fieldsync::peers {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

struct SessionDriver::Impl {
  asio::steady_timer deadline;
  asio::steady_timer keepalive;
  explicit Impl(asio::io_context& io) : deadline(io), keepalive(io) {}
};

SessionDriver::SessionDriver(asio::io_context& io, std::shared_ptr<transports::Stream> stream,
                             std::unique_ptr<sync::Session> session, Options options, Events events)
    : timers_(std::make_unique<Impl>(io)),
      stream_(std::move(stream)),
      session_(std::move(session)),
      opt_(options),
      events_(std::move(events)) {}

SessionDriver::~SessionDriver() = default;

std::shared_ptr<SessionDriver> SessionDriver::start(asio::io_context& io,
                                                    std::shared_ptr<transports::Stream> stream,
                                                    std::unique_ptr<sync::Session> session,
                                                    Options options, Events events) {
  std::shared_ptr<SessionDriver> d(
      new SessionDriver(io, std::move(stream), std::move(session), options, std::move(events)));
  d->session_->set_resume_hook([weak = std::weak_ptr<SessionDriver>(d)] {
    auto self = weak.lock();
    if (!self || self->closed_) return;
    if (self->events_.input) self->events_.input(*self);
    if (self->closed_) return;
    if (self->session_->state() == sync::SessionState::active && !self->session_->finished())
      self->set_deadline(self->opt_.idle_timeout_ms);
    self->pump();
    if (self->read_paused_ && !self->session_->busy() && !self->session_->finished()) {
      self->read_paused_ = false;
      self->read();
    }
  });
  d->session_->start();
  d->set_deadline(d->opt_.handshake_timeout_ms);
  d->arm_keepalive();
  d->read();
  d->pump();
  return d;
}

void SessionDriver::set_deadline(std::uint32_t ms) {
  deadline_ = Clock::now() + std::chrono::milliseconds(ms);
  if (armed_at_ && *armed_at_ <= deadline_) return;  // fires first, then waits for the rest
  arm_deadline();
}

void SessionDriver::arm_deadline() {
  armed_at_ = deadline_;
  timers_->deadline.expires_at(deadline_);  // a pending wait ends with operation_aborted
  timers_->deadline.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->closed_) return;
    self->armed_at_.reset();
    if (Clock::now() < self->deadline_) return self->arm_deadline();  // moved on meanwhile
    if (self->shutting_down_ || self->session_->finished()) {
      if (!self->failure_ && !self->session_->error())
        self->failure_ = make_error(Errc::unavailable, "timed out");
      return self->close();
    }
    self->fail(make_error(Errc::unavailable, "timed out"));
  });
}

void SessionDriver::arm_keepalive() {
  auto every = std::max<std::uint32_t>(opt_.idle_timeout_ms / 3, 100);
  timers_->keepalive.expires_after(std::chrono::milliseconds(every));
  timers_->keepalive.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->closed_) return;
    if (self->session_->state() == sync::SessionState::active) {
      self->session_->ping();
      self->pump();
    }
    self->arm_keepalive();
  });
}

void SessionDriver::read() {
  stream_->read_some(rbuf_, [self = shared_from_this()](Status st, std::size_t n) {
    if (self->closed_) return;
    if (!st) return self->lost(st.error().message);
    self->session_->receive(ByteView(self->rbuf_.data(), n));
    // The session checks HELLO against the key too; the driver does not rely on it.
    if (self->session_->peer_known() && self->session_->peer() != self->stream_->peer())
      return self->fail(
          make_error(Errc::unauthenticated, "HELLO device id differs from the transport's key"));
    if (self->events_.input) self->events_.input(*self);
    if (self->closed_) return;
    if (self->session_->state() == sync::SessionState::active && !self->session_->finished())
      self->set_deadline(self->opt_.idle_timeout_ms);
    self->pump();
    if (self->session_->finished()) return;
    if (self->session_->busy()) {
      self->read_paused_ = true;  // the resume hook reads again
      return;
    }
    self->read();
  });
}

void SessionDriver::pump() {
  if (closed_ || writing_ || shutting_down_) return;
  wbuf_ = session_->take_output(opt_.write_chunk_bytes);
  if (wbuf_.empty()) {
    if (session_->finished()) {
      shutting_down_ = true;
      set_deadline(opt_.goodbye_timeout_ms);  // a peer that does not answer is cut off
      stream_->shutdown([self = shared_from_this()] { self->close(); });
    }
    return;
  }
  writing_ = true;
  stream_->write(wbuf_, [self = shared_from_this()](Status st) {
    self->writing_ = false;
    if (self->closed_) return;
    if (!st) return self->lost(st.error().message);
    self->pump();
  });
}

void SessionDriver::lost(const std::string& reason) {
  session_->transport_closed(reason);
  if (!failure_) failure_ = make_error(Errc::unavailable, "connection lost: " + reason);
  close();
}

void SessionDriver::fail(Error e) {
  if (closed_) return;
  if (!session_->finished()) {
    session_->abort(e);
    // Try to tell the peer (bounded by a short deadline), then close.
    pump();
    set_deadline(opt_.goodbye_timeout_ms);
    return;
  }
  if (!failure_) failure_ = std::move(e);
  close();
}

void SessionDriver::end(const std::string& reason) {
  if (closed_) return;
  if (!session_->finished()) session_->close(reason);
  pump();
  set_deadline(opt_.goodbye_timeout_ms);
}

void SessionDriver::close() {
  if (closed_) return;
  closed_ = true;
  error_code ec;
  timers_->deadline.cancel();
  timers_->keepalive.cancel();
  stream_->close();
  if (auto closed = std::move(events_.closed)) closed(*this);
  events_.input = nullptr;
}

}  // namespace fieldsync::peers
