// The one Asio + asio::ssl translation unit of the tcp transport: listener, dialer, TLS
// streams. Everything above the byte stream is in peers/.
#include "transports/tcp_tls/tcp_tls.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>

#include "crypto/tls_context.hpp"

namespace fieldsync::transports {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

TcpTlsOptions tcp_tls_options(const config::SyncOptions& s) {
  TcpTlsOptions o;
  o.listen_address = s.listen_address;
  o.listen_port = s.listen_port;
  o.connect_timeout_ms = s.connect_timeout_ms;
  o.handshake_timeout_ms = s.handshake_timeout_ms;
  o.tls_handshake_timeout_ms = s.tls_handshake_timeout_ms;
  o.accept_backoff_max_ms = s.accept_backoff_max_ms;
  o.log_lines_per_key = s.log_lines_per_key;
  o.log_interval_ms = s.log_interval_ms;
  return o;
}

namespace {

std::string endpoint_uri(const tcp::endpoint& ep) {
  auto a = ep.address();
  std::string host = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
  return "tcp://" + host + ":" + std::to_string(ep.port());
}

}  // namespace

struct TcpTls::Impl : std::enable_shared_from_this<TcpTls::Impl> {
  asio::io_context& io;
  ssl::context tls;
  TcpTlsOptions opt;
  tcp::acceptor acceptor;
  asio::steady_timer accept_timer;
  std::uint32_t accept_delay_ms = 0;
  std::uint16_t port = 0;
  bool running = false;
  // listen_addresses() of a listener on every interface, for kInterfaceCacheMs: reading the
  // interfaces is a netlink dump, and /v1/status asks for them on every request.
  mutable std::vector<Address> interfaces;
  mutable std::chrono::steady_clock::time_point interfaces_at{};
  HandshakeBudget* budget = nullptr;
  IncomingHandler incoming;
  RateLimitedLog rlog;
  // Streams not yet handed out (in their TCP connect or TLS handshake): closed by stop().
  std::set<std::shared_ptr<struct TcpStream>> pending;

  Impl(asio::io_context& i, SSL_CTX* ctx, TcpTlsOptions o)
      : io(i),
        tls(ctx),
        opt(std::move(o)),
        acceptor(i),
        accept_timer(i),
        rlog(opt.log_lines_per_key, std::chrono::milliseconds(opt.log_interval_ms)) {}

  void accept();
  void on_accept(tcp::socket sock);
};

struct TcpStream final : Stream, std::enable_shared_from_this<TcpStream> {
  std::shared_ptr<TcpTls::Impl> t;
  ssl::stream<tcp::socket> stream;
  bool out;
  std::string remote_uri;
  std::string host_port;  // for messages
  DeviceId peer_id;
  Bytes binding;
  asio::steady_timer deadline_timer;
  Clock::time_point deadline = Clock::time_point::max();
  std::function<void()> on_deadline;
  bool closed = false;
  std::pair<std::uint64_t, std::uint64_t> wire_at_close{0, 0};
  std::shared_ptr<HandshakeBudget::Slot> slot;  // incoming, until handed to the manager

  TcpStream(std::shared_ptr<TcpTls::Impl> tt, tcp::socket sock, bool outgoing)
      : t(std::move(tt)), stream(std::move(sock), t->tls), out(outgoing), deadline_timer(t->io) {}

  // --- Stream ---
  void read_some(std::span<std::uint8_t> buf,
                 std::function<void(Status, std::size_t)> done) override {
    if (closed) return post_error(std::move(done));
    stream.async_read_some(asio::buffer(buf.data(), buf.size()), [self = shared_from_this(),
                                                                  done = std::move(done)](
                                                                     error_code ec, std::size_t n) {
      if (ec || self->closed)
        return done(
            make_error(Errc::unavailable, self->closed ? std::string("closed") : ec.message()), 0);
      done({}, n);
    });
  }

  void write(ByteView data, std::function<void(Status)> done) override {
    if (closed) {
      asio::post(t->io,
                 [done = std::move(done)] { done(make_error(Errc::unavailable, "closed")); });
      return;
    }
    asio::async_write(
        stream, asio::buffer(data.data(), data.size()),
        [self = shared_from_this(), done = std::move(done)](error_code ec, std::size_t) {
          if (ec || self->closed)
            return done(
                make_error(Errc::unavailable, self->closed ? std::string("closed") : ec.message()));
          done({});
        });
  }

  void shutdown(std::function<void()> done) override {
    if (closed) {
      asio::post(t->io, std::move(done));
      return;
    }
    // A peer that does not answer close_notify is cut off at the deadline.
    auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
    set_deadline(t->opt.shutdown_timeout_ms, [self = shared_from_this(), shared_done] {
      self->close();
      if (*shared_done) std::exchange(*shared_done, nullptr)();
    });
    stream.async_shutdown([self = shared_from_this(), shared_done](error_code) {
      self->close();
      if (*shared_done) std::exchange(*shared_done, nullptr)();
    });
  }

  void close() override {
    if (closed) return;
    wire_at_close = kernel_wire_bytes();
    closed = true;
    if (slot) slot->release();
    // The deadline's action may hold this stream (or the dial's callback): drop it, so no
    // reference cycle outlives the stream.
    on_deadline = nullptr;
    error_code ec;
    deadline_timer.cancel();
    stream.lowest_layer().shutdown(tcp::socket::shutdown_both, ec);
    stream.lowest_layer().close(ec);
  }

  bool is_open() const override { return !closed; }
  const DeviceId& peer() const override { return peer_id; }
  const Bytes& channel_binding() const override { return binding; }
  std::pair<std::uint64_t, std::uint64_t> wire_bytes() const override {
    return closed ? wire_at_close : kernel_wire_bytes();
  }
  LinkClass link_class() const override { return LinkClass::fast; }
  bool outgoing() const override { return out; }
  std::string remote() const override { return remote_uri; }

  // --- internals ---
  void post_error(std::function<void(Status, std::size_t)> done) {
    asio::post(t->io,
               [done = std::move(done)] { done(make_error(Errc::unavailable, "closed"), 0); });
  }

  // TCP payload bytes so far (TLS records included), from the kernel.
  std::pair<std::uint64_t, std::uint64_t> kernel_wire_bytes() const {
    // glibc's struct tcp_info predates these fields; the kernel's layout puts
    // tcpi_bytes_acked at offset 120 and tcpi_bytes_received at 128 (Linux >= 4.2).
    alignas(8) std::uint8_t info[256] = {};
    socklen_t len = sizeof info;
    auto& sock = const_cast<ssl::stream<tcp::socket>&>(stream).lowest_layer();
    if (!sock.is_open() ||
        ::getsockopt(sock.native_handle(), IPPROTO_TCP, TCP_INFO, info, &len) != 0 || len < 136)
      return {0, 0};
    std::uint64_t acked = 0, received = 0;
    std::memcpy(&acked, info + 120, 8);
    std::memcpy(&received, info + 128, 8);
    return {acked, received};
  }

  void set_deadline(std::uint32_t ms, std::function<void()> fire) {
    deadline = Clock::now() + std::chrono::milliseconds(ms);
    on_deadline = std::move(fire);
    deadline_timer.expires_at(deadline);
    deadline_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed || Clock::now() < self->deadline) return;
      if (auto f = std::move(self->on_deadline)) f();
    });
  }

  void clear_deadline() {
    deadline = Clock::time_point::max();
    on_deadline = nullptr;
    deadline_timer.cancel();
  }

  // After the TLS handshake: the peer's key and the channel binding, or why not.
  Status authenticate() {
    void* ssl = stream.native_handle();
    auto device = crypto::tls_peer_device(ssl);
    auto b = crypto::tls_channel_binding(ssl);
    if (!device || !b.ok()) return make_error(Errc::unauthenticated, "no usable peer certificate");
    peer_id = *device;
    binding = std::move(*b);
    return {};
  }
};

// --- listening ---

void TcpTls::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](error_code ec, tcp::socket sock) {
    if (!self->running || ec == asio::error::operation_aborted) return;
    if (!ec) {
      self->accept_delay_ms = 0;
      self->on_accept(std::move(sock));
      return self->accept();
    }
    bool out_of_resources = ec == asio::error::no_descriptors ||
                            ec == boost::system::errc::too_many_files_open_in_system ||
                            ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
    if (!out_of_resources) {
      // A connection that went away before accept (ECONNABORTED and the like): next one.
      self->rlog.log(LogLevel::info, "accept failed", "sync: accept failed: " + ec.message());
      return self->accept();
    }
    // Out of file descriptors: the pending connection stays in the backlog and accept would
    // fail again at once. Pause, doubling up to accept_backoff_max_ms.
    self->accept_delay_ms =
        std::clamp<std::uint32_t>(self->accept_delay_ms * 2, 10, self->opt.accept_backoff_max_ms);
    self->rlog.log(LogLevel::warn, "accept out of resources",
                   "sync: cannot accept connections: " + ec.message() + "; retrying in " +
                       std::to_string(self->accept_delay_ms) + " ms");
    self->accept_timer.expires_after(std::chrono::milliseconds(self->accept_delay_ms));
    self->accept_timer.async_wait([self](error_code tec) {
      if (tec || !self->running) return;
      self->accept();
    });
  });
}

void TcpTls::Impl::on_accept(tcp::socket sock) {
  error_code ignored;
  auto remote = sock.remote_endpoint(ignored);
  std::string host_port = remote.address().to_string() + ":" + std::to_string(remote.port());
  auto slot = budget->take(host_port, [this](const std::string& line) {
    rlog.log(LogLevel::info, "handshake dropped", "sync: " + line);
  });
  if (!slot) {
    rlog.log(LogLevel::warn, "refused",
             "sync: refusing connection from " + host_port + ": sync.max_handshakes reached");
    sock.close(ignored);
    return;
  }
  auto s = std::make_shared<TcpStream>(shared_from_this(), std::move(sock), false);
  s->remote_uri = endpoint_uri(remote);
  s->host_port = host_port;
  s->slot = slot;
  pending.insert(s);
  std::weak_ptr<TcpStream> weak = s;
  slot->on_evict([weak] {
    if (auto st = weak.lock()) {
      st->t->pending.erase(st);
      st->close();
    }
  });
  s->set_deadline(opt.tls_handshake_timeout_ms, [s] {
    s->t->pending.erase(s);
    s->close();
  });
  s->stream.async_handshake(ssl::stream_base::server, [s](error_code hec) {
    auto& im = *s->t;
    if (s->closed || !im.pending.erase(s)) return;
    if (!hec) {
      if (auto st = s->authenticate(); !st) hec = asio::error::access_denied;
    }
    if (hec) {
      im.rlog.log(LogLevel::info, "tls failed",
                  "sync: TLS handshake from " + s->host_port + " failed: " + hec.message());
      return s->close();
    }
    s->clear_deadline();
    auto held = std::move(s->slot);
    if (!held->held()) return s->close();  // evicted meanwhile
    if (im.incoming) im.incoming(s, std::move(held));
  });
}

// --- TcpTls ---

Result<std::unique_ptr<TcpTls>> TcpTls::create(asio::io_context& io, const crypto::SigningKey& key,
                                               TcpTlsOptions options) {
  auto ctx = crypto::TlsContext::create(key, options.renewals);
  if (!ctx.ok()) return ctx.error();
  auto impl =
      std::make_shared<Impl>(io, static_cast<SSL_CTX*>(ctx->new_reference()), std::move(options));
  return std::unique_ptr<TcpTls>(new TcpTls(std::move(impl)));
}

TcpTls::TcpTls(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

TcpTls::~TcpTls() { stop(); }

Status TcpTls::listen(HandshakeBudget& budget, IncomingHandler incoming) {
  Impl& im = *impl_;
  error_code ec;
  auto addr = asio::ip::make_address(im.opt.listen_address, ec);
  if (ec)
    return make_error(Errc::invalid_argument,
                      "sync.listen_address: bad address " + im.opt.listen_address);
  tcp::endpoint ep(addr, im.opt.listen_port);
  im.acceptor.open(ep.protocol(), ec);
  if (!ec) im.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) im.acceptor.bind(ep, ec);
  if (!ec) im.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    im.acceptor.close(ignored);
    return make_error(Errc::unavailable, "cannot listen on " + im.opt.listen_address + ":" +
                                             std::to_string(im.opt.listen_port) + ": " +
                                             ec.message());
  }
  im.port = im.acceptor.local_endpoint().port();
  im.budget = &budget;
  im.incoming = std::move(incoming);
  im.running = true;
  spdlog::info("sync: listening on {}:{}", im.opt.listen_address, im.port);
  im.accept();
  return {};
}

std::uint16_t TcpTls::port() const { return impl_->port; }

std::vector<Address> TcpTls::listen_addresses() const {
  const Impl& im = *impl_;
  std::vector<Address> out;
  if (!im.running) return out;
  error_code ec;
  auto bound = im.acceptor.local_endpoint(ec);
  if (ec) return out;
  auto port = std::to_string(bound.port());
  if (!bound.address().is_unspecified()) {
    out.push_back(*parse_address(endpoint_uri(bound)));
    return out;
  }
  // Bound to every interface: each up address, LAN first (what another device dials), then
  // loopback (the same machine). IPv6 only when listening on ::. Read again after
  // kInterfaceCacheMs (an address that comes or goes shows within that).
  const auto now = std::chrono::steady_clock::now();
  if (now - im.interfaces_at < std::chrono::milliseconds(kInterfaceCacheMs) &&
      im.interfaces_at != std::chrono::steady_clock::time_point{})
    return im.interfaces;
  bool v6 = bound.address().is_v6();
  std::vector<Address> lan, loop;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i; i = i->ifa_next) {
      if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
      int family = i->ifa_addr->sa_family;
      char buf[INET6_ADDRSTRLEN];
      std::string host;
      if (family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
        if (!::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) continue;
        host = buf;
      } else if (family == AF_INET6 && v6) {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
        if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) continue;  // needs a scope to dial
        if (!::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf)) continue;
        host = "[" + std::string(buf) + "]";
      } else {
        continue;
      }
      Address a{"tcp", host + ":" + port};
      ((i->ifa_flags & IFF_LOOPBACK) ? loop : lan).push_back(std::move(a));
    }
    ::freeifaddrs(list);
  }
  // IPv4 before IPv6 within each group (shorter codes, and what most field LANs route).
  auto v4_first = [](const Address& a, const Address& b) {
    return (a.rest.front() == '[') < (b.rest.front() == '[');
  };
  std::stable_sort(lan.begin(), lan.end(), v4_first);
  std::stable_sort(loop.begin(), loop.end(), v4_first);
  out = std::move(lan);
  out.insert(out.end(), loop.begin(), loop.end());
  if (out.size() > kMaxListenAddresses) out.resize(kMaxListenAddresses);
  im.interfaces = out;
  im.interfaces_at = now;
  return out;
}

void TcpTls::dial(const Address& address, const DeviceId& expected, StreamHandler done) {
  Impl& im = *impl_;
  auto hp = address.scheme == "tcp" ? split_host_port(address.rest) : std::nullopt;
  if (!hp) {
    asio::post(im.io, [done = std::move(done), a = address.str()] {
      done(make_error(Errc::invalid_argument, "bad address " + a));
    });
    return;
  }
  auto s = std::make_shared<TcpStream>(impl_, tcp::socket(im.io), true);
  s->remote_uri = address.str();
  s->host_port = address.rest;
  s->peer_id = expected;
  im.pending.insert(s);
  crypto::tls_expect_peer(s->stream.native_handle(), expected);
  auto finish = std::make_shared<StreamHandler>(std::move(done));
  auto fail = [s, finish](Error e) {
    s->t->pending.erase(s);
    s->close();
    if (*finish) std::exchange(*finish, nullptr)(std::move(e));
  };
  s->set_deadline(im.opt.connect_timeout_ms,
                  [fail] { fail(make_error(Errc::unavailable, "timed out")); });
  auto resolver = std::make_shared<tcp::resolver>(im.io);
  resolver->async_resolve(
      hp->first, std::to_string(hp->second),
      [s, resolver, finish, fail](error_code ec, tcp::resolver::results_type r) {
        if (s->closed) return fail(make_error(Errc::unavailable, "closed"));
        if (ec)
          return fail(make_error(Errc::unavailable,
                                 "cannot resolve " + s->host_port + ": " + ec.message()));
        asio::async_connect(
            s->stream.lowest_layer(), r, [s, finish, fail](error_code cec, const tcp::endpoint&) {
              if (s->closed) return fail(make_error(Errc::unavailable, "closed"));
              if (cec)
                return fail(make_error(Errc::unavailable,
                                       "cannot connect to " + s->host_port + ": " + cec.message()));
              error_code ignored;
              s->stream.lowest_layer().set_option(tcp::no_delay(true), ignored);
              s->set_deadline(s->t->opt.handshake_timeout_ms,
                              [fail] { fail(make_error(Errc::unavailable, "timed out")); });
              s->stream.async_handshake(ssl::stream_base::client, [s, finish,
                                                                   fail](error_code hec) {
                if (s->closed) return fail(make_error(Errc::unavailable, "closed"));
                if (hec) {
                  // Another device at this address (the pin refused its key).
                  if (auto other = crypto::tls_rejected_peer(s->stream.native_handle()))
                    return fail(make_error(Errc::unauthenticated,
                                           "address " + s->remote_uri + " answered as device " +
                                               other->str() + ", expected " + s->peer_id.str()));
                  bool tls = hec.category() == asio::error::get_ssl_category();
                  return fail(make_error(tls ? Errc::unsupported : Errc::unavailable,
                                         (tls ? "TLS handshake failed (not a fieldsync device?): "
                                              : "TLS handshake failed: ") +
                                             hec.message()));
                }
                if (auto st = s->authenticate(); !st) return fail(st.error());
                s->clear_deadline();
                s->t->pending.erase(s);
                if (*finish) std::exchange(*finish, nullptr)(std::shared_ptr<Stream>(s));
              });
            });
      });
}

void TcpTls::stop() {
  Impl& im = *impl_;
  im.running = false;
  error_code ec;
  im.acceptor.close(ec);
  im.accept_timer.cancel();
  auto pending = std::move(im.pending);
  im.pending.clear();
  for (const auto& s : pending) s->close();
}

}  // namespace fieldsync::transports
