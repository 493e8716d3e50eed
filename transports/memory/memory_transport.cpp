#include "transports/memory/memory_transport.hpp"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <random>

namespace fieldsync::transports {

namespace asio = boost::asio;

namespace {

struct Pipe;

struct MemoryEnd final : Stream, std::enable_shared_from_this<MemoryEnd> {
  std::shared_ptr<Pipe> pipe;
  int side = 0;  // 0 or 1
  DeviceId other;
  bool out = false;
  std::string remote_name;

  void read_some(std::span<std::uint8_t> buf,
                 std::function<void(Status, std::size_t)> done) override;
  void write(ByteView data, std::function<void(Status)> done) override;
  void shutdown(std::function<void()> done) override;
  void close() override;
  bool is_open() const override;
  const DeviceId& peer() const override { return other; }
  const Bytes& channel_binding() const override;
  std::pair<std::uint64_t, std::uint64_t> wire_bytes() const override;
  LinkClass link_class() const override;
  bool outgoing() const override { return out; }
  std::string remote() const override { return remote_name; }
};

struct Pipe : std::enable_shared_from_this<Pipe> {
  asio::io_context& io;
  MemoryLinkOptions opt;
  Bytes binding;
  std::uint64_t transferred = 0;  // both directions
  bool cut = false;
  struct Side {
    Bytes inbox;
    std::size_t inbox_at = 0;
    std::span<std::uint8_t> read_buf;
    std::function<void(Status, std::size_t)> read_done;
    bool closed = false;
    std::uint64_t sent = 0, received = 0;
    std::unique_ptr<asio::steady_timer> timer;  // throttled write in flight
    Bytes writing;                              // the write in flight
    std::size_t written = 0;
    std::function<void(Status)> write_done;
  } sides[2];

  Pipe(asio::io_context& i, MemoryLinkOptions o) : io(i), opt(o) {
    std::random_device rd;
    binding.resize(32);
    for (auto& b : binding) b = static_cast<std::uint8_t>(rd());
    for (auto& s : sides) s.timer = std::make_unique<asio::steady_timer>(io);
  }

  // Completes side `s`'s pending read if it can.
  void deliver(int s) {
    Side& d = sides[s];
    if (!d.read_done) return;
    std::size_t avail = d.inbox.size() - d.inbox_at;
    if (avail > 0) {
      std::size_t n = std::min(avail, d.read_buf.size());
      std::copy_n(d.inbox.begin() + static_cast<std::ptrdiff_t>(d.inbox_at), n, d.read_buf.begin());
      d.inbox_at += n;
      if (d.inbox_at == d.inbox.size()) {
        d.inbox.clear();
        d.inbox_at = 0;
      }
      d.received += n;
      auto cb = std::move(d.read_done);
      d.read_done = nullptr;
      asio::post(io, [cb = std::move(cb), n] { cb({}, n); });
      return;
    }
    const char* why = d.closed              ? "closed"
                      : cut                 ? "link cut"
                      : sides[1 - s].closed ? "end of stream"
                                            : nullptr;
    if (!why) return;
    auto cb = std::move(d.read_done);
    d.read_done = nullptr;
    asio::post(io, [cb = std::move(cb), why] { cb(make_error(Errc::unavailable, why), 0); });
  }

  // Moves the next slice of side `s`'s write to the other side: all of it when unthrottled,
  // else 10 ms worth per step (so a slow link trickles, as a real one does), stopping at the
  // cut point.
  void write_step(int s) {
    Side& me = sides[s];
    std::size_t left = me.writing.size() - me.written;
    std::size_t n = left;
    if (opt.bytes_per_second)
      n = std::min<std::size_t>(n, std::max<std::uint64_t>(1, opt.bytes_per_second / 100));
    auto land = [self = shared_from_this(), s, n]() mutable {
      Pipe& p = *self;
      Side& mine = p.sides[s];
      Side& them = p.sides[1 - s];
      if (!mine.write_done) return;
      auto finish = [&](Status st) {
        auto cb = std::move(mine.write_done);
        mine.write_done = nullptr;
        mine.writing.clear();
        cb(std::move(st));
      };
      if (mine.closed || p.cut)
        return finish(make_error(Errc::unavailable, p.cut ? "link cut" : "closed"));
      // Both directions count towards the cut point, so it is checked when the bytes land.
      bool cut_here = false;
      if (p.opt.cut_after_bytes && p.transferred + n >= p.opt.cut_after_bytes) {
        n = p.opt.cut_after_bytes > p.transferred
                ? static_cast<std::size_t>(p.opt.cut_after_bytes - p.transferred)
                : 0;
        cut_here = true;
      }
      if (!them.closed) append(them.inbox, ByteView(mine.writing).subspan(mine.written, n));
      mine.written += n;
      mine.sent += n;
      p.transferred += n;
      p.deliver(1 - s);
      if (cut_here) {
        p.cut_now();
        return finish(make_error(Errc::unavailable, "link cut"));
      }
      if (mine.written == mine.writing.size()) return finish({});
      p.write_step(s);
    };
    if (!opt.bytes_per_second) {
      asio::post(io, std::move(land));
      return;
    }
    auto us = static_cast<std::int64_t>(n * 1'000'000ull / opt.bytes_per_second);
    me.timer->expires_after(std::chrono::microseconds(us));
    me.timer->async_wait([land = std::move(land)](boost::system::error_code) mutable { land(); });
  }

  void cut_now() {
    cut = true;
    deliver(0);
    deliver(1);
  }
};

void MemoryEnd::read_some(std::span<std::uint8_t> buf,
                          std::function<void(Status, std::size_t)> done) {
  auto& d = pipe->sides[side];
  d.read_buf = buf;
  d.read_done = std::move(done);
  pipe->deliver(side);
}

void MemoryEnd::write(ByteView data, std::function<void(Status)> done) {
  Pipe& p = *pipe;
  auto& me = p.sides[side];
  if (me.closed || p.cut || p.sides[1 - side].closed) {
    asio::post(p.io, [done = std::move(done), cut = p.cut] {
      done(make_error(Errc::unavailable, cut ? "link cut" : "closed"));
    });
    return;
  }
  me.writing = Bytes(data.begin(), data.end());
  me.written = 0;
  me.write_done = std::move(done);
  p.write_step(side);
}

void MemoryEnd::shutdown(std::function<void()> done) {
  close();
  asio::post(pipe->io, std::move(done));
}

void MemoryEnd::close() {
  Pipe& p = *pipe;
  auto& me = p.sides[side];
  if (me.closed) return;
  me.closed = true;
  me.timer->cancel();
  // A write in flight completes with an error now: the pipe keeps no callback (and nothing
  // it captured) once the end is closed.
  if (auto done = std::move(me.write_done)) {
    me.write_done = nullptr;
    me.writing.clear();
    asio::post(p.io, [done = std::move(done)] { done(make_error(Errc::unavailable, "closed")); });
  }
  p.deliver(side);
  p.deliver(1 - side);
}

bool MemoryEnd::is_open() const { return !pipe->sides[side].closed && !pipe->cut; }
const Bytes& MemoryEnd::channel_binding() const { return pipe->binding; }
std::pair<std::uint64_t, std::uint64_t> MemoryEnd::wire_bytes() const {
  return {pipe->sides[side].sent, pipe->sides[side].received};
}
LinkClass MemoryEnd::link_class() const { return pipe->opt.link_class; }

}  // namespace

MemoryPair memory_pair(asio::io_context& io, const DeviceId& a, const DeviceId& b,
                       MemoryLinkOptions options) {
  auto pipe = std::make_shared<Pipe>(io, options);
  auto ea = std::make_shared<MemoryEnd>();
  ea->pipe = pipe;
  ea->side = 0;
  ea->other = b;
  ea->out = true;
  ea->remote_name = "mem://" + b.short_str();
  auto eb = std::make_shared<MemoryEnd>();
  eb->pipe = pipe;
  eb->side = 1;
  eb->other = a;
  eb->remote_name = "mem://" + a.short_str();
  return {ea, eb};
}

MemoryTransport::MemoryTransport(asio::io_context& io, MemoryNetwork& net, DeviceId self,
                                 std::string name)
    : io_(io), net_(net), self_(std::move(self)), name_(std::move(name)) {}

MemoryTransport::MemoryTransport(asio::io_context& io, MemoryNetwork& net, DeviceId self,
                                 std::string name, std::string scheme, LinkClass link)
    : io_(io),
      net_(net),
      self_(std::move(self)),
      name_(std::move(name)),
      scheme_(std::move(scheme)),
      link_(link) {}

MemoryTransport::~MemoryTransport() { stop(); }

Status MemoryTransport::listen(HandshakeBudget& budget, IncomingHandler incoming) {
  std::string uri = scheme_ + "://" + name_;
  if (net_.listeners.count(uri)) return make_error(Errc::unavailable, uri + " is taken");
  net_.listeners[uri] = this;
  listening_ = true;
  budget_ = &budget;
  incoming_ = std::move(incoming);
  return {};
}

std::vector<Address> MemoryTransport::listen_addresses() const {
  if (!listening_) return {};
  return {Address{scheme_, name_}};
}

void MemoryTransport::dial(const Address& address, const DeviceId& expected, StreamHandler done) {
  auto it = address.scheme == scheme_ ? net_.listeners.find(address.str()) : net_.listeners.end();
  if (it == net_.listeners.end()) {
    asio::post(io_, [done = std::move(done), a = address.str()] {
      done(make_error(Errc::unavailable, "nobody listens at " + a));
    });
    return;
  }
  MemoryTransport& there = *it->second;
  if (there.self_ != expected) {
    asio::post(io_, [done = std::move(done), a = address.str(), there = there.self_, expected] {
      done(make_error(Errc::unauthenticated, "address " + a + " answered as device " + there.str() +
                                                 ", expected " + expected.str()));
    });
    return;
  }
  ++net_.links_made;
  MemoryLinkOptions link = net_.link_options;
  link.link_class = link_class();
  auto pair = memory_pair(io_, self_, there.self_, link);
  std::static_pointer_cast<MemoryEnd>(pair.a)->remote_name = address.str();
  std::static_pointer_cast<MemoryEnd>(pair.b)->remote_name = scheme_ + "://" + name_;
  auto slot = there.budget_->take(scheme_ + "://" + name_);
  if (slot) {
    std::weak_ptr<Stream> weak = pair.b;
    slot->on_evict([weak] {
      if (auto s = weak.lock()) s->close();
    });
    asio::post(io_, [in = there.incoming_, b = pair.b, slot] { in(b, slot); });
  } else {
    pair.b->close();
  }
  asio::post(io_, [done = std::move(done), a = pair.a] { done(a); });
}

void MemoryTransport::stop() {
  if (!listening_) return;
  listening_ = false;
  if (auto it = net_.listeners.find(scheme_ + "://" + name_);
      it != net_.listeners.end() && it->second == this)
    net_.listeners.erase(it);
}

}  // namespace fieldsync::transports
