// The one sdbus-c++ translation unit of fieldsync (BlueZ over D-Bus), and the "ble"
// transport's streams: BleFramer frames carried by GATT writes and notifications, TLS 1.3 on
// top through asio::ssl over a small pipe layer.
#include "transports/ble/ble_transport.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sdbus-c++/sdbus-c++.h>
#include <boost/asio.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "crypto/tls_context.hpp"
#include "transports/ble/ble_framing.hpp"

namespace fieldsync::transports {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using ble::BleFramer;

namespace {

constexpr const char* kBluez = "org.bluez";
constexpr const char* kAdapterIface = "org.bluez.Adapter1";
constexpr const char* kDeviceIface = "org.bluez.Device1";
constexpr const char* kAdvManagerIface = "org.bluez.LEAdvertisingManager1";
constexpr const char* kAdvIface = "org.bluez.LEAdvertisement1";
constexpr const char* kGattManagerIface = "org.bluez.GattManager1";
constexpr const char* kServiceIface = "org.bluez.GattService1";
constexpr const char* kCharIface = "org.bluez.GattCharacteristic1";
constexpr const char* kObjectManagerIface = "org.freedesktop.DBus.ObjectManager";
constexpr const char* kPropertiesIface = "org.freedesktop.DBus.Properties";

// fieldsync's GATT service (docs/protocol.md "Bluetooth LE").
constexpr const char* kServiceUuid = "6f9e0001-5b1a-4c8e-9d3b-2f1a0c7e4d21";
constexpr const char* kRxUuid = "6f9e0002-5b1a-4c8e-9d3b-2f1a0c7e4d21";  // central writes
constexpr const char* kTxUuid = "6f9e0003-5b1a-4c8e-9d3b-2f1a0c7e4d21";  // peripheral notifies
constexpr const char* kIdUuid = "6f9e0004-5b1a-4c8e-9d3b-2f1a0c7e4d21";  // identity, read

constexpr const char* kAppPath = "/org/fieldsync/ble";
constexpr const char* kServicePath = "/org/fieldsync/ble/service0";
constexpr const char* kRxPath = "/org/fieldsync/ble/service0/rx";
constexpr const char* kTxPath = "/org/fieldsync/ble/service0/tx";
constexpr const char* kIdPath = "/org/fieldsync/ble/service0/id";
constexpr const char* kAdvPath = "/org/fieldsync/ble/advertisement0";

constexpr std::uint16_t kDefaultMtu = 23;
constexpr const char* kAlreadyExists = "org.bluez.Error.AlreadyExists";
constexpr std::uint32_t kCallTimeoutMs = 10000;
// An idle GATT connection we made is closed after this long.
constexpr std::uint32_t kLingerMs = 3000;

using Props = std::map<std::string, sdbus::Variant>;
using Interfaces = std::map<std::string, Props>;
using ManagedObjects = std::map<sdbus::ObjectPath, Interfaces>;

std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
          .count());
}

template <typename T>
std::optional<T> prop(const Props& p, const std::string& name) {
  auto it = p.find(name);
  if (it == p.end() || !it->second.containsValueOfType<T>()) return std::nullopt;
  try {
    return it->second.get<T>();
  } catch (const sdbus::Error&) {
    return std::nullopt;
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

bool valid_bdaddr(std::string_view a) {
  if (a.size() != 17) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    bool hex = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
    if (i % 3 == 2 ? c != ':' : !hex) return false;
  }
  return true;
}

// ble://<adapter>/<AA:BB:CC:DD:EE:FF> -> (adapter, address upper case).
std::optional<std::pair<std::string, std::string>> split_ble(const Address& a) {
  if (a.scheme != "ble") return std::nullopt;
  auto slash = a.rest.find('/');
  if (slash == std::string::npos || slash == 0) return std::nullopt;
  std::string adapter = a.rest.substr(0, slash);
  std::string addr = a.rest.substr(slash + 1);
  if (!valid_bdaddr(addr)) return std::nullopt;
  for (auto& c : addr) c = static_cast<char>(c >= 'a' && c <= 'f' ? c - 'a' + 'A' : c);
  for (char c : adapter)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return std::nullopt;
  return std::make_pair(adapter, addr);
}

std::string device_path(const std::string& adapter_path, std::string addr) {
  for (auto& c : addr)
    if (c == ':') c = '_';
  return adapter_path + "/dev_" + addr;
}

Error sd_error(const std::string& what, const sdbus::Error& e) {
  return make_error(Errc::unavailable, what + ": " + e.getName() + ": " + e.getMessage());
}

}  // namespace

BleOptions ble_options(const config::BleOptions& b) {
  BleOptions o;
  o.adapter = b.adapter;
  o.advertise = b.advertise;
  o.scan = b.scan;
  o.window = static_cast<std::uint16_t>(b.window);
  o.retransmit_ms = b.retransmit_ms;
  o.connect_timeout_ms = b.connect_timeout_ms;
  o.handshake_timeout_ms = b.handshake_timeout_ms;
  o.retry_ms = b.retry_ms;
  o.max_links = b.max_links;
  return o;
}

std::string_view ble_state_name(BleState s) {
  switch (s) {
    case BleState::off: return "off";
    case BleState::no_bus: return "no_bus";
    case BleState::no_adapter: return "no_adapter";
    case BleState::powered_off: return "powered_off";
    case BleState::running: return "running";
  }
  return "off";
}

struct BleLink;

// The lower layer asio::ssl::stream runs over: bytes in and out of a link's framer.
class PipeLayer {
 public:
  using executor_type = asio::io_context::executor_type;
  using lowest_layer_type = PipeLayer;
  PipeLayer(asio::io_context& io, BleLink* link) : io_(&io), link_(link) {}
  executor_type get_executor() { return io_->get_executor(); }
  lowest_layer_type& lowest_layer() { return *this; }
  const lowest_layer_type& lowest_layer() const { return *this; }

  template <typename MutableBuffers, typename Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler);
  template <typename ConstBuffers, typename Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler);

 private:
  asio::io_context* io_;
  BleLink* link_;
};

using IoDone = std::function<void(error_code, std::size_t)>;

struct Central;

struct BleLink final : Stream, std::enable_shared_from_this<BleLink> {
  std::shared_ptr<BleTransport::Impl> t;
  bool out;
  std::string device;  // BlueZ object path of the other device
  std::string remote_uri;
  BleFramer framer;
  ssl::stream<PipeLayer> tls;
  asio::steady_timer frame_timer;
  asio::steady_timer deadline_timer;
  std::function<void()> on_deadline;
  std::function<void(Bytes)> transmit;
  DeviceId peer_id;
  Bytes binding;
  bool closed = false;
  std::string why;  // what closed the link, for the errors its reads and writes return
  std::uint64_t sent = 0, received = 0;
  std::shared_ptr<HandshakeBudget::Slot> slot;
  // The pipe's one outstanding read and write (asio::ssl issues at most one of each).
  asio::mutable_buffer pipe_rbuf;
  IoDone pipe_read;
  IoDone pipe_write;
  std::size_t pipe_write_n = 0;

  BleLink(std::shared_ptr<BleTransport::Impl> tt, asio::io_context& io, ssl::context& ctx,
          bool outgoing, std::uint16_t link, ble::FramerOptions fo)
      : t(std::move(tt)),
        out(outgoing),
        framer(link, fo),
        tls(PipeLayer(io, this), ctx),
        frame_timer(io),
        deadline_timer(io) {}

  // --- Stream ---
  void read_some(std::span<std::uint8_t> buf,
                 std::function<void(Status, std::size_t)> done) override {
    if (closed) {
      asio::post(tls.get_executor(), [done = std::move(done), e = error({})] { done(e, 0); });
      return;
    }
    tls.async_read_some(
        asio::buffer(buf.data(), buf.size()),
        [self = shared_from_this(), done = std::move(done)](error_code ec, std::size_t n) {
          if (ec || self->closed) return done(self->error(ec), 0);
          done({}, n);
        });
  }

  void write(ByteView data, std::function<void(Status)> done) override {
    if (closed) {
      asio::post(tls.get_executor(), [done = std::move(done), e = error({})] { done(e); });
      return;
    }
    asio::async_write(
        tls, asio::buffer(data.data(), data.size()),
        [self = shared_from_this(), done = std::move(done)](error_code ec, std::size_t) {
          if (ec || self->closed) return done(self->error(ec));
          done({});
        });
  }

  void shutdown(std::function<void()> done) override;
  void close() override;
  // Closes the link saying why (the first reason given is kept).
  void close(const std::string& reason) {
    if (!closed && why.empty()) why = reason;
    close();
  }
  Error error(error_code ec) const {
    if (closed)
      return make_error(Errc::unavailable, "Bluetooth LE link with " + remote_uri + " closed" +
                                               (why.empty() ? std::string() : ": " + why));
    return make_error(Errc::unavailable, ec.message());
  }
  bool is_open() const override { return !closed; }
  const DeviceId& peer() const override { return peer_id; }
  const Bytes& channel_binding() const override { return binding; }
  std::pair<std::uint64_t, std::uint64_t> wire_bytes() const override { return {sent, received}; }
  LinkClass link_class() const override { return LinkClass::slow; }
  bool outgoing() const override { return out; }
  std::string remote() const override { return remote_uri; }

  // --- the framer ---
  void on_frame(ByteView f) {
    if (closed) return;
    received += f.size();
    auto st = framer.receive(f, now_ms());
    if (!st) {
      spdlog::info("ble: link {:04x} with {}: {}", framer.link(), remote_uri, st.error().message);
      // A RESET from the peer needs no RESET back.
      if (st.error().code == Errc::unavailable) transmit = nullptr;
      return close(st.error().message);
    }
    pump();
  }

  void pump() {
    if (closed) return;
    for (auto& f : framer.poll(now_ms())) {
      sent += f.size();
      if (transmit) transmit(std::move(f));
    }
    if (auto e = framer.failed()) {
      spdlog::info("ble: link {:04x} with {}: {}", framer.link(), remote_uri, e->message);
      return close(e->message);
    }
    if (pipe_read && framer.readable() > 0) {
      std::size_t n = framer.read(
          std::span<std::uint8_t>(static_cast<std::uint8_t*>(pipe_rbuf.data()), pipe_rbuf.size()));
      auto h = std::exchange(pipe_read, nullptr);
      asio::post(tls.get_executor(), [h = std::move(h), n] { h({}, n); });
      // Reading may have made an acknowledgement due.
      for (auto& f : framer.poll(now_ms())) {
        sent += f.size();
        if (transmit) transmit(std::move(f));
      }
    }
    if (pipe_write && framer.unsent_bytes() == 0) {
      auto h = std::exchange(pipe_write, nullptr);
      asio::post(tls.get_executor(), [h = std::move(h), n = pipe_write_n] { h({}, n); });
    }
    arm_frame_timer();
  }

  void arm_frame_timer() {
    auto at = framer.next_deadline();
    frame_timer.cancel();
    if (!at) return;
    std::uint64_t now = now_ms();
    auto delay = std::chrono::milliseconds(*at > now ? *at - now : 0);
    frame_timer.expires_after(delay);
    frame_timer.async_wait([weak = weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->closed) return;
      self->pump();
    });
  }

  void pipe_read_some(asio::mutable_buffer b, IoDone h) {
    if (closed) {
      asio::post(tls.get_executor(), [h = std::move(h)] { h(asio::error::connection_aborted, 0); });
      return;
    }
    // asio::ssl reads zero bytes to complete an operation that needed no I/O.
    if (b.size() == 0) {
      asio::post(tls.get_executor(), [h = std::move(h)] { h({}, 0); });
      return;
    }
    if (framer.readable() > 0) {
      std::size_t n =
          framer.read(std::span<std::uint8_t>(static_cast<std::uint8_t*>(b.data()), b.size()));
      asio::post(tls.get_executor(), [h = std::move(h), n] { h({}, n); });
      pump();
      return;
    }
    pipe_rbuf = b;
    pipe_read = std::move(h);
  }

  void pipe_write_some(asio::const_buffer b, IoDone h) {
    if (closed) {
      asio::post(tls.get_executor(), [h = std::move(h)] { h(asio::error::connection_aborted, 0); });
      return;
    }
    framer.send(ByteView(static_cast<const std::uint8_t*>(b.data()), b.size()));
    pipe_write_n = b.size();
    pipe_write = std::move(h);
    pump();
  }

  void set_deadline(std::uint32_t ms, std::function<void()> fire) {
    on_deadline = std::move(fire);
    deadline_timer.expires_after(std::chrono::milliseconds(ms));
    deadline_timer.async_wait([weak = weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->closed) return;
      if (auto f = std::move(self->on_deadline)) f();
    });
  }
  void clear_deadline() {
    on_deadline = nullptr;
    deadline_timer.cancel();
  }

  Status authenticate() {
    void* ssl = tls.native_handle();
    auto dev = crypto::tls_peer_device(ssl);
    auto b = crypto::tls_channel_binding(ssl);
    if (!dev || !b.ok()) return make_error(Errc::unauthenticated, "no usable peer certificate");
    peer_id = *dev;
    binding = std::move(*b);
    return {};
  }
};

template <typename MutableBuffers, typename Handler>
auto PipeLayer::async_read_some(const MutableBuffers& buffers, Handler&& handler) {
  return asio::async_initiate<Handler, void(error_code, std::size_t)>(
      [this](auto h, const MutableBuffers& bufs) {
        auto hp = std::make_shared<std::decay_t<decltype(h)>>(std::move(h));
        asio::mutable_buffer first = *asio::buffer_sequence_begin(bufs);
        link_->pipe_read_some(first, [hp](error_code ec, std::size_t n) { (*hp)(ec, n); });
      },
      handler, buffers);
}

template <typename ConstBuffers, typename Handler>
auto PipeLayer::async_write_some(const ConstBuffers& buffers, Handler&& handler) {
  return asio::async_initiate<Handler, void(error_code, std::size_t)>(
      [this](auto h, const ConstBuffers& bufs) {
        auto hp = std::make_shared<std::decay_t<decltype(h)>>(std::move(h));
        asio::const_buffer first = *asio::buffer_sequence_begin(bufs);
        link_->pipe_write_some(first, [hp](error_code ec, std::size_t n) { (*hp)(ec, n); });
      },
      handler, buffers);
}

// A GATT connection we made to another device's service (we are the central).
struct Central {
  std::string path;  // BlueZ Device1 object
  Address address;
  enum class State { connecting, resolving, ready } state = State::connecting;
  std::string rx, tx, id;  // characteristic object paths
  std::uint16_t mtu = kDefaultMtu;
  std::unique_ptr<sdbus::IProxy> device, rx_proxy, tx_proxy, id_proxy;
  std::vector<std::function<void(Status)>> waiters;
  std::unique_ptr<asio::steady_timer> timer;
  std::deque<Bytes> writes;
  bool writing = false;
  bool notify_starting = false;
  std::map<std::uint16_t, std::weak_ptr<BleLink>> links;
  std::uint32_t users = 0;  // identity reads under way
};

struct BleTransport::Impl : std::enable_shared_from_this<BleTransport::Impl> {
  asio::io_context& io;
  ssl::context tls;
  BleOptions opt;
  std::string adapter_path;
  BleState state = BleState::off;
  std::string message;
  bool running = false;
  HandshakeBudget* budget = nullptr;
  IncomingHandler incoming;
  std::function<void(const BleSighting&)> sighting;
  Bytes adv_data, identity;

  // D-Bus.
  std::unique_ptr<sdbus::IConnection> conn;
  asio::posix::stream_descriptor watch;
  asio::steady_timer bus_timer;
  asio::steady_timer retry_timer;
  asio::steady_timer stop_timer;  // stopped: the bus goes once the links closed, or then
  bool read_waiting = false, write_waiting = false, kick_posted = false;
  std::vector<sdbus::Slot> matches;
  std::unique_ptr<sdbus::IProxy> root, adapter;
  std::map<std::string, Interfaces> mirror;  // BlueZ's objects
  std::set<std::string> sighted;             // devices reported since BlueZ found them
  bool mirror_loaded = false, mirror_loading = false;
  std::unique_ptr<sdbus::IObject> app, service, rx, tx, id, adv;
  Bytes tx_value;
  bool app_registered = false, app_registering = false;
  bool adv_registered = false, adv_registering = false, adv_dirty = false;
  bool discovery_on = false, discovery_starting = false;
  std::uint64_t generation = 0;  // bumps when the bus or BlueZ goes away: stale replies

  std::map<std::string, std::shared_ptr<Central>> centrals;
  std::map<std::pair<std::string, std::uint16_t>, std::weak_ptr<BleLink>> incoming_links;
  std::set<std::shared_ptr<BleLink>> pending;  // in their TLS handshake

  Impl(asio::io_context& i, SSL_CTX* ctx, BleOptions o)
      : io(i),
        tls(ctx),
        opt(std::move(o)),
        adapter_path("/org/bluez/" + opt.adapter),
        watch(i),
        bus_timer(i),
        retry_timer(i),
        stop_timer(i) {}

  ble::FramerOptions framer_options(std::uint16_t mtu) const {
    ble::FramerOptions f;
    f.frame_bytes =
        std::clamp<std::size_t>(mtu > 3 ? mtu - 3u : 20u, ble::kMinFrameBytes, ble::kMaxFrameBytes);
    f.window = opt.window;
    f.ack_delay_ms = opt.ack_delay_ms;
    f.retransmit_ms = opt.retransmit_ms;
    return f;
  }

  std::size_t open_links() const {
    std::size_t n = pending.size();
    for (const auto& [k, w] : incoming_links)
      if (auto l = w.lock(); l && !l->closed) ++n;
    for (const auto& [p, c] : centrals)
      for (const auto& [k, w] : c->links)
        if (auto l = w.lock(); l && !l->closed) ++n;
    return n;
  }

  void set_state(BleState s, std::string why) {
    if (s == state && why == message) return;
    if (s == BleState::running)
      spdlog::info("ble: adapter {} ready", opt.adapter);
    else
      spdlog::warn("ble: idle ({}): {}", ble_state_name(s), why);
    state = s;
    message = std::move(why);
  }

  // ---- the D-Bus connection on the io_context ----

  void kick() {
    if (kick_posted || !conn) return;
    kick_posted = true;
    asio::post(io, [weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->kick_posted = false;
        self->process();
      }
    });
  }

  void process() {
    if (!conn) return;
    try {
      while (conn && conn->processPendingRequest()) {
      }
    } catch (const sdbus::Error& e) {
      return bus_lost(e.getMessage());
    }
    arm_bus();
  }

  void arm_bus() {
    if (!conn) return;
    sdbus::IConnection::PollData pd{};
    try {
      pd = conn->getEventLoopPollData();
    } catch (const sdbus::Error& e) {
      return bus_lost(e.getMessage());
    }
    auto weak = weak_from_this();
    if (!read_waiting) {
      read_waiting = true;
      watch.async_wait(asio::posix::descriptor_base::wait_read, [weak](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        self->read_waiting = false;
        if (!ec) self->process();
      });
    }
    if ((pd.events & POLLOUT) && !write_waiting) {
      write_waiting = true;
      watch.async_wait(asio::posix::descriptor_base::wait_write, [weak](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        self->write_waiting = false;
        if (!ec) self->process();
      });
    }
    if (pd.timeout_usec != UINT64_MAX) {
      auto at = Clock::time_point(std::chrono::microseconds(pd.timeout_usec));
      auto limit = Clock::now() + std::chrono::seconds(60);
      bus_timer.expires_at(std::min(at, limit));
      bus_timer.async_wait([weak](error_code ec) {
        if (auto self = weak.lock(); self && !ec) self->process();
      });
    }
  }

  void connect_bus() {
    try {
      conn = sdbus::createSystemBusConnection();
    } catch (const sdbus::Error& e) {
      conn.reset();
      set_state(BleState::no_bus, "cannot connect to the system bus: " + e.getMessage());
      return;
    }
    int fd = -1;
    try {
      fd = ::dup(conn->getEventLoopPollData().fd);
    } catch (const sdbus::Error&) {
    }
    if (fd < 0) {
      conn.reset();
      set_state(BleState::no_bus, "cannot watch the system bus connection");
      return;
    }
    watch.assign(fd);
    auto weak = weak_from_this();
    try {
      root = sdbus::createProxy(*conn, kBluez, "/");
      adapter = sdbus::createProxy(*conn, kBluez, adapter_path);
      matches.push_back(conn->addMatch(
          "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager'",
          [weak](sdbus::Message& m) {
            if (auto self = weak.lock()) self->on_object_manager(m);
          }));
      matches.push_back(conn->addMatch(
          "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
          "member='PropertiesChanged'",
          [weak](sdbus::Message& m) {
            if (auto self = weak.lock()) self->on_properties_changed(m);
          }));
      matches.push_back(conn->addMatch(
          "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
          [weak](sdbus::Message&) {
            auto self = weak.lock();
            if (!self) return;
            asio::post(self->io, [weak] {
              if (auto s = weak.lock()) s->bluez_restarted();
            });
          }));
      make_objects();
    } catch (const sdbus::Error& e) {
      return bus_lost(e.getMessage());
    }
    ++generation;
    arm_bus();
  }

  void bus_lost(const std::string& why) {
    // Never tear the connection down inside its own processing: post it.
    asio::post(io, [weak = weak_from_this(), why] {
      auto self = weak.lock();
      if (!self || !self->conn) return;
      self->teardown_bus();
      self->set_state(BleState::no_bus, "lost the system bus: " + why);
    });
  }

  void teardown_bus() {
    forget_bluez("the system bus went away");
    error_code ec;
    watch.cancel(ec);
    watch.close(ec);
    bus_timer.cancel();
    app.reset();
    service.reset();
    rx.reset();
    tx.reset();
    id.reset();
    adv.reset();
    matches.clear();
    root.reset();
    adapter.reset();
    conn.reset();
    read_waiting = write_waiting = false;
  }

  // BlueZ went away (or restarted): everything it held for us is gone.
  void forget_bluez(const std::string& why) {
    ++generation;
    mirror.clear();
    sighted.clear();
    mirror_loaded = mirror_loading = false;
    app_registered = app_registering = false;
    adv_registered = adv_registering = false;
    discovery_on = discovery_starting = false;
    auto cs = std::move(centrals);
    centrals.clear();
    for (auto& [p, c] : cs) {
      fail_central(*c, make_error(Errc::unavailable, why));
      // Dropping the proxies cancels their pending calls (whose callbacks hold the central).
      c->device.reset();
      c->rx_proxy.reset();
      c->tx_proxy.reset();
      c->id_proxy.reset();
    }
    auto in = std::move(incoming_links);
    incoming_links.clear();
    for (auto& [k, w] : in)
      if (auto l = w.lock()) l->close(why);
  }

  void bluez_restarted() {
    if (!conn) return;
    spdlog::info("ble: BlueZ (org.bluez) changed owner; registering again");
    forget_bluez("BlueZ restarted");
    check();
  }

  // ---- our objects: the GATT application and the advertisement ----

  void make_objects() {
    auto weak = weak_from_this();
    app = sdbus::createObject(*conn, kAppPath);
    app->addObjectManager();
    app->finishRegistration();

    service = sdbus::createObject(*conn, kServicePath);
    service->registerProperty("UUID").onInterface(kServiceIface).withGetter([] {
      return std::string(kServiceUuid);
    });
    service->registerProperty("Primary").onInterface(kServiceIface).withGetter([] { return true; });
    service->finishRegistration();

    rx = sdbus::createObject(*conn, kRxPath);
    register_char_props(*rx, kRxUuid, {"write", "write-without-response"}, [] { return Bytes{}; });
    rx->registerMethod("WriteValue")
        .onInterface(kCharIface)
        .implementedAs([weak](const std::vector<std::uint8_t>& value, const Props& options) {
          auto self = weak.lock();
          if (!self) return;
          std::string dev;
          if (auto d = prop<sdbus::ObjectPath>(options, "device")) dev = *d;
          std::uint16_t mtu = prop<std::uint16_t>(options, "mtu").value_or(kDefaultMtu);
          asio::post(self->io, [weak, dev, mtu, value] {
            if (auto s = weak.lock()) s->on_write(dev, mtu, value);
          });
        });
    rx->registerMethod("ReadValue").onInterface(kCharIface).implementedAs([](const Props&) {
      throw sdbus::Error("org.bluez.Error.NotPermitted", "write only");
      return std::vector<std::uint8_t>{};
    });
    rx->finishRegistration();

    tx = sdbus::createObject(*conn, kTxPath);
    register_char_props(*tx, kTxUuid, {"notify"}, [weak] {
      auto self = weak.lock();
      return self ? self->tx_value : Bytes{};
    });
    tx->registerProperty("Notifying").onInterface(kCharIface).withGetter([] { return true; });
    tx->registerMethod("StartNotify").onInterface(kCharIface).implementedAs([] {});
    tx->registerMethod("StopNotify").onInterface(kCharIface).implementedAs([] {});
    tx->finishRegistration();

    id = sdbus::createObject(*conn, kIdPath);
    register_char_props(*id, kIdUuid, {"read"}, [weak] {
      auto self = weak.lock();
      return self ? self->identity : Bytes{};
    });
    id->registerMethod("ReadValue").onInterface(kCharIface).implementedAs([weak](const Props& o) {
      auto self = weak.lock();
      Bytes v = self ? self->identity : Bytes{};
      std::size_t off = prop<std::uint16_t>(o, "offset").value_or(0);
      if (off > v.size())
        throw sdbus::Error("org.bluez.Error.InvalidOffset", "offset beyond the value");
      return std::vector<std::uint8_t>(v.begin() + static_cast<std::ptrdiff_t>(off), v.end());
    });
    id->finishRegistration();

    adv = sdbus::createObject(*conn, kAdvPath);
    adv->registerProperty("Type").onInterface(kAdvIface).withGetter(
        [] { return std::string("peripheral"); });
    adv->registerProperty("ManufacturerData").onInterface(kAdvIface).withGetter([weak] {
      std::map<std::uint16_t, sdbus::Variant> m;
      if (auto self = weak.lock())
        m.emplace(kBleManufacturerId, sdbus::Variant(std::vector<std::uint8_t>(self->adv_data)));
      return m;
    });
    adv->registerMethod("Release").onInterface(kAdvIface).implementedAs([weak] {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->io, [weak] {
        if (auto s = weak.lock()) {
          s->adv_registered = false;
          s->check();
        }
      });
    });
    adv->finishRegistration();
  }

  template <typename Getter>
  void register_char_props(sdbus::IObject& o, const char* uuid, std::vector<std::string> flags,
                           Getter value) {
    o.registerProperty("UUID").onInterface(kCharIface).withGetter([uuid] {
      return std::string(uuid);
    });
    o.registerProperty("Service").onInterface(kCharIface).withGetter([] {
      return sdbus::ObjectPath(kServicePath);
    });
    o.registerProperty("Flags").onInterface(kCharIface).withGetter([flags] { return flags; });
    o.registerProperty("Value").onInterface(kCharIface).withGetter([value] {
      Bytes v = value();
      return std::vector<std::uint8_t>(v.begin(), v.end());
    });
  }

  // ---- what BlueZ has: the mirror of its ObjectManager ----

  void on_object_manager(sdbus::Message& m) {
    try {
      sdbus::ObjectPath path;
      if (m.getMemberName() == "InterfacesAdded") {
        Interfaces ifs;
        m >> path >> ifs;
        asio::post(io, [weak = weak_from_this(), path, ifs = std::move(ifs)]() mutable {
          auto self = weak.lock();
          if (!self || !self->mirror_loaded) return;
          auto& entry = self->mirror[path];
          for (auto& [i, p] : ifs) entry[i] = std::move(p);
          self->object_changed(path, ifs.count(kDeviceIface) > 0);
        });
      } else if (m.getMemberName() == "InterfacesRemoved") {
        std::vector<std::string> ifs;
        m >> path >> ifs;
        asio::post(io, [weak = weak_from_this(), path, ifs] {
          auto self = weak.lock();
          if (!self || !self->mirror_loaded) return;
          auto it = self->mirror.find(path);
          if (it == self->mirror.end()) return;
          for (const auto& i : ifs) it->second.erase(i);
          if (it->second.empty()) self->mirror.erase(it);
          self->object_removed(path);
        });
      }
    } catch (const sdbus::Error& e) {
      spdlog::debug("ble: bad ObjectManager signal: {}", e.getMessage());
    }
  }

  void on_properties_changed(sdbus::Message& m) {
    try {
      std::string iface;
      Props changed;
      m >> iface >> changed;
      std::string path = m.getPath();
      asio::post(io, [weak = weak_from_this(), path, iface, changed = std::move(changed)] {
        auto self = weak.lock();
        if (!self || !self->mirror_loaded) return;
        self->properties_changed(path, iface, changed);
      });
    } catch (const sdbus::Error& e) {
      spdlog::debug("ble: bad PropertiesChanged signal: {}", e.getMessage());
    }
  }

  void properties_changed(const std::string& path, const std::string& iface, const Props& changed) {
    // A notification of a characteristic we subscribed to: frames for our links.
    if (iface == kCharIface) {
      if (auto v = prop<std::vector<std::uint8_t>>(changed, "Value")) {
        for (auto& [dp, c] : centrals) {
          if (c->tx != path) continue;
          auto link = BleFramer::link_of(*v);
          if (!link) continue;
          auto it = c->links.find(*link);
          if (it == c->links.end()) continue;  // another central's link
          if (auto l = it->second.lock()) l->on_frame(*v);
          return;
        }
        return;  // not mirrored: values change too often to keep
      }
    }
    auto it = mirror.find(path);
    if (it == mirror.end()) return;
    auto& props = it->second[iface];
    for (const auto& [k, v] : changed) props[k] = v;
    object_changed(path, iface == kDeviceIface);
  }

  void object_changed(const std::string& path, bool device) {
    if (path == adapter_path) return check();
    if (device) {
      device_seen(path);
      // A device that disconnected takes its links with it.
      auto d = mirror[path].find(kDeviceIface);
      if (d != mirror[path].end() && prop<bool>(d->second, "Connected") == false) {
        if (auto c = centrals.find(path);
            c != centrals.end() && c->second->state != Central::State::connecting) {
          auto central = c->second;
          centrals.erase(c);
          fail_central(*central, make_error(Errc::unavailable, "the device disconnected"));
        }
        close_incoming(path, "the device disconnected");
      }
    }
    // Characteristics appearing under a device we are connecting to.
    for (auto& [dp, c] : centrals)
      if (c->state == Central::State::resolving && path.rfind(dp, 0) == 0) resolve(c);
  }

  void object_removed(const std::string& path) {
    if (!mirror.count(path)) sighted.erase(path);
    if (path == adapter_path) return check();
    for (auto it = centrals.begin(); it != centrals.end(); ++it) {
      if (path == it->first || (it->second->tx == path)) {
        auto c = it->second;
        centrals.erase(it);
        fail_central(*c, make_error(Errc::unavailable,
                                    "the device is gone (out of range, or its adapter removed)"));
        break;
      }
    }
    close_incoming(path, "the device is gone (out of range, or its adapter removed)");
  }

  void close_incoming(const std::string& device, const std::string& why) {
    for (auto it = incoming_links.begin(); it != incoming_links.end();) {
      if (it->first.first == device) {
        auto l = it->second.lock();
        it = incoming_links.erase(it);
        if (l) {
          l->transmit = nullptr;
          l->close(why);
        }
      } else {
        ++it;
      }
    }
  }

  void device_seen(const std::string& path) {
    auto it = mirror.find(path);
    if (it == mirror.end()) return;
    auto d = it->second.find(kDeviceIface);
    if (d == it->second.end()) return;
    if (prop<sdbus::ObjectPath>(d->second, "Adapter").value_or(sdbus::ObjectPath()) != adapter_path)
      return;
    auto md = prop<std::map<std::uint16_t, sdbus::Variant>>(d->second, "ManufacturerData");
    if (!md) return;
    auto m = md->find(kBleManufacturerId);
    if (m == md->end() || !m->second.containsValueOfType<std::vector<std::uint8_t>>()) return;
    auto addr = prop<std::string>(d->second, "Address");
    if (!addr || !valid_bdaddr(*addr)) return;
    BleSighting s;
    s.address = Address{"ble", opt.adapter + "/" + *addr};
    auto v = m->second.get<std::vector<std::uint8_t>>();
    s.data.assign(v.begin(), v.end());
    s.rssi = prop<std::int16_t>(d->second, "RSSI").value_or(0);
    s.fresh = sighted.insert(path).second;
    if (sighting) sighting(s);
  }

  // ---- the state machine: bus, BlueZ, adapter, registrations ----

  void arm_retry() {
    retry_timer.expires_after(std::chrono::milliseconds(opt.retry_ms));
    retry_timer.async_wait([weak = weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (ec || !self || !self->running) return;
      self->check();
      self->arm_retry();
    });
  }

  void check() {
    if (!running) return;
    if (!conn) connect_bus();
    if (!conn) return;
    if (!mirror_loaded) {
      if (mirror_loading) return;
      mirror_loading = true;
      auto gen = generation;
      try {
        root->callMethodAsync("GetManagedObjects")
            .onInterface(kObjectManagerIface)
            .withTimeout(std::chrono::milliseconds(kCallTimeoutMs))
            .uponReplyInvoke(
                [weak = weak_from_this(), gen](const sdbus::Error* e, ManagedObjects objs) {
                  auto self = weak.lock();
                  if (!self) return;
                  std::optional<std::string> err;
                  if (e) {
                    // Nobody owns org.bluez: bluetoothd is not running (or restarting).
                    if (e->getName() == "org.freedesktop.DBus.Error.ServiceUnknown" ||
                        e->getName() == "org.freedesktop.DBus.Error.NameHasNoOwner")
                      err = "BlueZ is not running (no org.bluez on the system bus)";
                    else
                      err = "BlueZ does not answer on the system bus (" + e->getName() + ": " +
                            e->getMessage() + ")";
                  }
                  asio::post(self->io, [weak, gen, err, objs = std::move(objs)]() mutable {
                    auto s = weak.lock();
                    if (!s || s->generation != gen) return;
                    s->mirror_loading = false;
                    if (err) return s->set_state(BleState::no_adapter, *err);
                    s->mirror.clear();
                    for (auto& [p, i] : objs) s->mirror[p] = std::move(i);
                    s->mirror_loaded = true;
                    for (const auto& [p, i] : s->mirror)
                      if (i.count(kDeviceIface)) s->device_seen(p);
                    s->check();
                  });
                });
      } catch (const sdbus::Error& e) {
        mirror_loading = false;
        return bus_lost(e.getMessage());
      }
      kick();
      return;
    }
    auto a = mirror.find(adapter_path);
    if (a == mirror.end() || !a->second.count(kAdapterIface)) {
      app_registered = adv_registered = discovery_on = false;
      return set_state(BleState::no_adapter, "BlueZ has no adapter " + opt.adapter);
    }
    const Props& ap = a->second[kAdapterIface];
    if (!prop<bool>(ap, "Powered").value_or(false)) {
      app_registered = adv_registered = discovery_on = false;
      return set_state(BleState::powered_off, "adapter " + opt.adapter + " is powered off");
    }
    set_state(BleState::running, "");
    discovery_on = prop<bool>(ap, "Discovering").value_or(discovery_on);
    if (!app_registered && !app_registering) register_app();
    if (opt.advertise && (!adv_registered || adv_dirty) && !adv_registering) register_adv();
    if (opt.scan && !discovery_on && !discovery_starting) start_discovery();
  }

  void call_adapter(const std::string& iface, const std::string& method,
                    std::function<void(sdbus::AsyncMethodInvoker&)> args,
                    std::function<void(Impl&, std::optional<std::string>)> done) {
    try {
      auto inv = adapter->callMethodAsync(method);
      inv.onInterface(iface).withTimeout(std::chrono::milliseconds(kCallTimeoutMs));
      if (args) args(inv);
      inv.uponReplyInvoke([weak = weak_from_this(), gen = generation,
                           done = std::move(done)](const sdbus::Error* e) {
        auto self = weak.lock();
        if (!self) return;
        std::optional<std::string> err;
        if (e) err = e->getName() + ": " + e->getMessage();
        asio::post(self->io, [weak, gen, err, done] {
          auto s = weak.lock();
          if (!s || s->generation != gen || !s->running) return;
          done(*s, err);
        });
      });
    } catch (const sdbus::Error& e) {
      return bus_lost(e.getMessage());
    }
    kick();
  }

  void register_app() {
    app_registering = true;
    call_adapter(
        kGattManagerIface, "RegisterApplication",
        [](sdbus::AsyncMethodInvoker& i) { i.withArguments(sdbus::ObjectPath(kAppPath), Props{}); },
        [](Impl& s, std::optional<std::string> err) {
          s.app_registering = false;
          // BlueZ keeps what we registered while the adapter is powered off: ours still.
          if (err && err->rfind(kAlreadyExists, 0) == 0) {
            spdlog::debug("ble: GATT service still registered on {}", s.opt.adapter);
            err.reset();
          }
          if (err) {
            spdlog::warn("ble: RegisterApplication failed: {}", *err);
            return;
          }
          s.app_registered = true;
          spdlog::info("ble: GATT service registered on {}", s.opt.adapter);
        });
  }

  void register_adv() {
    if (adv_data.empty()) {
      if (adv_registered) unregister_adv();
      return;
    }
    if (adv_registered) return unregister_adv();  // then registers the new data
    adv_registering = true;
    adv_dirty = false;
    call_adapter(
        kAdvManagerIface, "RegisterAdvertisement",
        [](sdbus::AsyncMethodInvoker& i) { i.withArguments(sdbus::ObjectPath(kAdvPath), Props{}); },
        [](Impl& s, std::optional<std::string> err) {
          s.adv_registering = false;
          if (err && err->rfind(kAlreadyExists, 0) == 0) {
            // Still registered from before the adapter was powered off, perhaps with older
            // data: registered again with the current data.
            spdlog::debug("ble: advertisement still registered on {}", s.opt.adapter);
            s.adv_registered = true;
            s.adv_dirty = true;
            return s.check();
          }
          if (err) {
            spdlog::warn("ble: RegisterAdvertisement failed: {}", *err);
            return;
          }
          s.adv_registered = true;
          spdlog::info("ble: advertising on {} ({} bytes of manufacturer data)", s.opt.adapter,
                       s.adv_data.size());
          if (s.adv_dirty) s.check();
        });
  }

  void unregister_adv() {
    adv_registering = true;
    call_adapter(
        kAdvManagerIface, "UnregisterAdvertisement",
        [](sdbus::AsyncMethodInvoker& i) { i.withArguments(sdbus::ObjectPath(kAdvPath)); },
        [](Impl& s, std::optional<std::string> err) {
          s.adv_registering = false;
          s.adv_registered = false;
          if (err) spdlog::debug("ble: UnregisterAdvertisement: {}", *err);
          s.adv_dirty = true;
          s.check();
        });
  }

  void start_discovery() {
    discovery_starting = true;
    call_adapter(
        kAdapterIface, "SetDiscoveryFilter",
        [](sdbus::AsyncMethodInvoker& i) {
          Props filter;
          filter["Transport"] = sdbus::Variant(std::string("le"));
          filter["DuplicateData"] = sdbus::Variant(true);
          i.withArguments(filter);
        },
        [](Impl& s, std::optional<std::string> err) {
          if (err) spdlog::debug("ble: SetDiscoveryFilter: {}", *err);
          s.call_adapter(kAdapterIface, "StartDiscovery", nullptr,
                         [](Impl& s2, std::optional<std::string> e2) {
                           s2.discovery_starting = false;
                           if (e2) {
                             spdlog::warn("ble: StartDiscovery failed: {}", *e2);
                             return;
                           }
                           s2.discovery_on = true;
                           spdlog::info("ble: scanning on {}", s2.opt.adapter);
                         });
        });
  }

  // ---- central: connecting to another device's service ----

  void with_central(const Address& address,
                    std::function<void(Result<std::shared_ptr<Central>>)> cb) {
    auto fail_later = [this, &cb](Error e) {
      asio::post(io, [cb = std::move(cb), e = std::move(e)] { cb(e); });
    };
    auto parts = split_ble(address);
    if (!parts)
      return fail_later(make_error(Errc::invalid_argument, "bad address " + address.str()));
    if (parts->first != opt.adapter)
      return fail_later(make_error(
          Errc::unavailable, "adapter " + parts->first + " is not ours (" + opt.adapter + ")"));
    if (state != BleState::running)
      return fail_later(make_error(Errc::unavailable, "Bluetooth LE is idle: " + message));
    std::string path = device_path(adapter_path, parts->second);
    auto existing = centrals.find(path);
    if (existing != centrals.end()) {
      auto c = existing->second;
      if (c->state == Central::State::ready) {
        asio::post(io, [cb = std::move(cb), c] { cb(c); });
        return;
      }
      c->waiters.push_back([cb = std::move(cb), c](Status st) mutable {
        if (!st) return cb(st.error());
        cb(c);
      });
      return;
    }
    auto m = mirror.find(path);
    if (m == mirror.end() || !m->second.count(kDeviceIface))
      return fail_later(make_error(Errc::unavailable, address.str() + " is not in range"));
    auto c = std::make_shared<Central>();
    c->path = path;
    c->address = address;
    c->timer = std::make_unique<asio::steady_timer>(io);
    c->waiters.push_back([cb = std::move(cb), c](Status st) mutable {
      if (!st) return cb(st.error());
      cb(c);
    });
    centrals[path] = c;
    c->timer->expires_after(std::chrono::milliseconds(opt.connect_timeout_ms));
    c->timer->async_wait([weak = weak_from_this(), c](error_code ec) {
      auto self = weak.lock();
      if (ec || !self || c->state == Central::State::ready) return;
      self->drop_central(c, make_error(Errc::unavailable, "GATT connect timed out"));
    });
    try {
      c->device = sdbus::createProxy(*conn, kBluez, path);
      bool connected = prop<bool>(m->second[kDeviceIface], "Connected").value_or(false);
      if (connected) {
        c->state = Central::State::resolving;
        resolve(c);
        return;
      }
      c->device->callMethodAsync("Connect")
          .onInterface(kDeviceIface)
          .withTimeout(std::chrono::milliseconds(opt.connect_timeout_ms))
          .uponReplyInvoke([weak = weak_from_this(), c](const sdbus::Error* e) {
            auto self = weak.lock();
            if (!self) return;
            std::optional<std::string> err;
            if (e) err = e->getName() + ": " + e->getMessage();
            asio::post(self->io, [weak, c, err] {
              auto s = weak.lock();
              if (!s || s->centrals.count(c->path) == 0 || s->centrals[c->path] != c) return;
              if (err) return s->drop_central(c, make_error(Errc::unavailable, "connect: " + *err));
              c->state = Central::State::resolving;
              s->resolve(c);
            });
          });
    } catch (const sdbus::Error& e) {
      drop_central(c, sd_error("connect", e));
      return;
    }
    kick();
  }

  void resolve(const std::shared_ptr<Central>& c) {
    if (c->state != Central::State::resolving || c->notify_starting) return;
    std::string prefix = c->path + "/";
    for (const auto& [p, ifs] : mirror) {
      if (p.rfind(prefix, 0) != 0) continue;
      auto ch = ifs.find(kCharIface);
      if (ch == ifs.end()) continue;
      std::string uuid = lower(prop<std::string>(ch->second, "UUID").value_or(""));
      if (uuid == kRxUuid) {
        c->rx = p;
        c->mtu = prop<std::uint16_t>(ch->second, "MTU").value_or(kDefaultMtu);
      } else if (uuid == kTxUuid) {
        c->tx = p;
      } else if (uuid == kIdUuid) {
        c->id = p;
      }
    }
    if (c->rx.empty() || c->tx.empty() || c->id.empty()) return;  // wait for more objects
    c->notify_starting = true;
    try {
      c->rx_proxy = sdbus::createProxy(*conn, kBluez, c->rx);
      c->tx_proxy = sdbus::createProxy(*conn, kBluez, c->tx);
      c->id_proxy = sdbus::createProxy(*conn, kBluez, c->id);
      c->tx_proxy->callMethodAsync("StartNotify")
          .onInterface(kCharIface)
          .withTimeout(std::chrono::milliseconds(kCallTimeoutMs))
          .uponReplyInvoke([weak = weak_from_this(), c](const sdbus::Error* e) {
            auto self = weak.lock();
            if (!self) return;
            std::optional<std::string> err;
            if (e) err = e->getName() + ": " + e->getMessage();
            asio::post(self->io, [weak, c, err] {
              auto s = weak.lock();
              if (!s || s->centrals.count(c->path) == 0 || s->centrals[c->path] != c) return;
              if (err)
                return s->drop_central(c, make_error(Errc::unavailable, "StartNotify: " + *err));
              c->state = Central::State::ready;
              c->timer->cancel();
              spdlog::info("ble: connected to {} (ATT MTU {})", c->address.str(), c->mtu);
              auto w = std::move(c->waiters);
              c->waiters.clear();
              for (auto& f : w) f({});
            });
          });
    } catch (const sdbus::Error& e) {
      return drop_central(c, sd_error("StartNotify", e));
    }
    kick();
  }

  void fail_central(Central& c, const Error& e) {
    c.state = Central::State::connecting;
    if (c.timer) c.timer->cancel();
    auto w = std::move(c.waiters);
    c.waiters.clear();
    for (auto& f : w) f(e);
    auto links = std::move(c.links);
    c.links.clear();
    for (auto& [k, wl] : links)
      if (auto l = wl.lock()) {
        l->transmit = nullptr;
        l->close(e.message);
      }
  }

  void drop_central(const std::shared_ptr<Central>& c, const Error& e) {
    if (auto it = centrals.find(c->path); it != centrals.end() && it->second == c)
      centrals.erase(it);
    spdlog::info("ble: {}: {}", c->address.str(), e.message);
    fail_central(*c, e);
    disconnect(c);
  }

  // Whether the other device's links to our service (it is the central) are open: they run
  // over the same LE connection as ours to its service.
  bool has_incoming(const std::string& device) const {
    for (const auto& [k, w] : incoming_links)
      if (auto l = w.lock(); k.first == device && l && !l->closed) return true;
    return false;
  }

  // Ends the LE connection to the device, unless the other device's own links to our service
  // still use it (two devices have one LE connection, whichever connected: BlueZ's Disconnect
  // would end its sessions with us too). It then ends when the other device lets it go.
  void disconnect(const std::shared_ptr<Central>& c) {
    if (!c->device || !conn) return;
    if (has_incoming(c->path)) {
      spdlog::debug("ble: {}: left connected, it has links to our service", c->address.str());
      return;
    }
    try {
      c->device->callMethodAsync("Disconnect")
          .onInterface(kDeviceIface)
          .withTimeout(std::chrono::milliseconds(kCallTimeoutMs))
          .uponReplyInvoke([c](const sdbus::Error*) {});
    } catch (const sdbus::Error&) {
    }
    kick();
  }

  // The last link over a central connection closed, and nobody reads: let it go after a
  // moment (an identity read is usually followed at once by a dial over the same connection).
  void maybe_release(const std::string& path) {
    auto it = centrals.find(path);
    if (it == centrals.end()) return;
    auto c = it->second;
    if (c->state != Central::State::ready) return;
    c->timer->expires_after(std::chrono::milliseconds(kLingerMs));
    c->timer->async_wait([weak = weak_from_this(), c](error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      auto at = self->centrals.find(c->path);
      if (at == self->centrals.end() || at->second != c) return;
      for (auto l = c->links.begin(); l != c->links.end();) {
        auto x = l->second.lock();
        l = !x || x->closed ? c->links.erase(l) : std::next(l);
      }
      if (!c->links.empty() || c->users > 0) return;
      self->centrals.erase(at);
      self->disconnect(c);
    });
  }

  void central_write(const std::shared_ptr<Central>& c, Bytes frame) {
    c->writes.push_back(std::move(frame));
    central_write_next(c);
  }

  void central_write_next(const std::shared_ptr<Central>& c) {
    if (c->writing || c->writes.empty() || !c->rx_proxy) return;
    c->writing = true;
    Bytes f = std::move(c->writes.front());
    c->writes.pop_front();
    try {
      Props o;
      o["type"] = sdbus::Variant(std::string("request"));
      c->rx_proxy->callMethodAsync("WriteValue")
          .onInterface(kCharIface)
          .withTimeout(std::chrono::milliseconds(kCallTimeoutMs))
          .withArguments(std::vector<std::uint8_t>(f.begin(), f.end()), o)
          .uponReplyInvoke([weak = weak_from_this(), c](const sdbus::Error* e) {
            auto self = weak.lock();
            if (!self) return;
            std::optional<std::string> err;
            if (e) err = e->getName() + ": " + e->getMessage();
            asio::post(self->io, [weak, c, err] {
              auto s = weak.lock();
              if (!s) return;
              c->writing = false;
              if (err) {
                if (s->centrals.count(c->path) && s->centrals[c->path] == c)
                  return s->drop_central(c, make_error(Errc::unavailable, "write: " + *err));
                return s->fail_central(*c, make_error(Errc::unavailable, "write: " + *err));
              }
              s->central_write_next(c);
            });
          });
    } catch (const sdbus::Error& e) {
      c->writing = false;
      return drop_central(c, sd_error("write", e));
    }
    kick();
  }

  // ---- peripheral: frames written to our service ----

  void on_write(const std::string& device, std::uint16_t mtu, const std::vector<std::uint8_t>& v) {
    ByteView f(v.data(), v.size());
    auto link = BleFramer::link_of(f);
    if (!link) return;
    auto key = std::make_pair(device, *link);
    if (auto it = incoming_links.find(key); it != incoming_links.end()) {
      if (auto l = it->second.lock(); l && !l->closed) return l->on_frame(f);
      incoming_links.erase(it);
    }
    if (!running) return;  // stopped: only the links there are still carry their goodbyes
    // A new link starts with its first DATA frame.
    if (f.size() <= ble::kFrameHeaderBytes || f[0] != ble::kFrameData || f[3] != 0 || f[4] != 0)
      return;
    if (open_links() >= opt.max_links) {
      spdlog::info("ble: refusing a link from {}: ble.max_links ({}) reached", device,
                   opt.max_links);
      return notify(BleFramer::reset_frame(*link));
    }
    std::string addr;
    if (auto m = mirror.find(device); m != mirror.end())
      addr = prop<std::string>(m->second[kDeviceIface], "Address").value_or("");
    std::string remote = "ble://" + opt.adapter + "/" + (addr.empty() ? device : addr);
    auto slot =
        budget->take(remote, [](const std::string& line) { spdlog::info("ble: {}", line); });
    if (!slot) return notify(BleFramer::reset_frame(*link));
    auto l =
        std::make_shared<BleLink>(shared_from_this(), io, tls, false, *link, framer_options(mtu));
    l->device = device;
    l->remote_uri = remote;
    l->slot = slot;
    std::weak_ptr<Impl> weak = weak_from_this();
    l->transmit = [weak](Bytes frame) {
      if (auto s = weak.lock()) s->notify(std::move(frame));
    };
    incoming_links[key] = l;
    pending.insert(l);
    std::weak_ptr<BleLink> wl = l;
    slot->on_evict([wl] {
      if (auto x = wl.lock()) x->close();
    });
    l->set_deadline(opt.handshake_timeout_ms, [l] { l->close(); });
    l->tls.async_handshake(ssl::stream_base::server, [l](error_code ec) {
      auto& im = *l->t;
      if (l->closed || !im.pending.erase(l)) return;
      if (!ec) {
        if (auto st = l->authenticate(); !st) ec = asio::error::access_denied;
      }
      if (ec) {
        spdlog::info("ble: TLS handshake from {} failed: {}", l->remote_uri, ec.message());
        return l->close();
      }
      l->clear_deadline();
      auto held = std::move(l->slot);
      if (!held || !held->held()) return l->close();
      if (im.incoming) im.incoming(l, std::move(held));
    });
    l->on_frame(f);
  }

  void notify(Bytes frame) {
    if (!tx) return;
    tx_value = std::move(frame);
    try {
      tx->emitPropertiesChangedSignal(kCharIface, {"Value"});
    } catch (const sdbus::Error& e) {
      return bus_lost(e.getMessage());
    }
    kick();
  }

  void link_closed(BleLink& l) {
    pending.erase(l.shared_from_this());
    if (!running && conn)
      asio::post(io, [weak = weak_from_this()] {
        if (auto s = weak.lock(); s && !s->running && s->open_links() == 0) s->finish_stop();
      });
    if (!l.out) {
      incoming_links.erase(std::make_pair(l.device, l.framer.link()));
      return;
    }
    asio::post(io, [weak = weak_from_this(), path = l.device] {
      if (auto s = weak.lock()) s->maybe_release(path);
    });
  }

  // After stop(): leaves the bus (BlueZ drops our service and advertisement with it).
  void finish_stop() {
    if (running || !conn) return;
    stop_timer.cancel();
    // Best effort: tell BlueZ we are gone.
    for (auto& [p, c] : centrals) disconnect(c);
    try {
      process();
    } catch (...) {
    }
    teardown_bus();
  }
};

void BleLink::shutdown(std::function<void()> done) {
  if (closed) {
    asio::post(tls.get_executor(), std::move(done));
    return;
  }
  auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
  set_deadline(t->opt.shutdown_timeout_ms, [self = shared_from_this(), shared_done] {
    self->close();
    if (*shared_done) std::exchange(*shared_done, nullptr)();
  });
  tls.async_shutdown([self = shared_from_this(), shared_done](error_code) {
    self->close();
    if (*shared_done) std::exchange(*shared_done, nullptr)();
  });
}

void BleLink::close() {
  if (closed) return;
  closed = true;
  const auto& st = framer.stats();
  spdlog::info(
      "ble: link {:04x} with {} closed ({} bytes sent, {} received; {} retransmitted, {} "
      "duplicate, {} reordered frames)",
      framer.link(), remote_uri, sent, received, st.retransmits, st.duplicates, st.reordered);
  if (transmit) {
    // Tell the other end the link is gone (frames still queued are dropped with it).
    transmit(BleFramer::reset_frame(framer.link()));
    transmit = nullptr;
  }
  if (slot) slot->release();
  on_deadline = nullptr;
  deadline_timer.cancel();
  frame_timer.cancel();
  if (auto h = std::exchange(pipe_read, nullptr))
    asio::post(tls.get_executor(), [h = std::move(h)] { h(asio::error::connection_aborted, 0); });
  if (auto h = std::exchange(pipe_write, nullptr))
    asio::post(tls.get_executor(), [h = std::move(h)] { h(asio::error::connection_aborted, 0); });
  t->link_closed(*this);
}

// --- BleTransport ---

Result<std::unique_ptr<BleTransport>> BleTransport::create(asio::io_context& io,
                                                           const crypto::SigningKey& key,
                                                           BleOptions options) {
  auto ctx = crypto::TlsContext::create(key, options.renewals);
  if (!ctx.ok()) return ctx.error();
  auto impl =
      std::make_shared<Impl>(io, static_cast<SSL_CTX*>(ctx->new_reference()), std::move(options));
  return std::unique_ptr<BleTransport>(new BleTransport(std::move(impl)));
}

BleTransport::BleTransport(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

BleTransport::~BleTransport() { stop(); }

Status BleTransport::listen(HandshakeBudget& budget, IncomingHandler incoming) {
  Impl& im = *impl_;
  im.budget = &budget;
  im.incoming = std::move(incoming);
  if (im.running) return {};
  im.running = true;
  spdlog::info("ble: starting on adapter {} (advertise {}, scan {})", im.opt.adapter,
               im.opt.advertise, im.opt.scan);
  im.check();
  im.arm_retry();
  return {};
}

void BleTransport::dial(const Address& address, const DeviceId& expected, StreamHandler done) {
  Impl& im = *impl_;
  auto finish = std::make_shared<StreamHandler>(std::move(done));
  im.with_central(address, [weak = std::weak_ptr<Impl>(impl_), expected,
                            finish](Result<std::shared_ptr<Central>> c) {
    auto s = weak.lock();
    if (!s) return;
    if (!c.ok()) return (*finish)(c.error());
    auto central = *c;
    if (!s->centrals.count(central->path) || s->centrals[central->path] != central)
      return (*finish)(make_error(Errc::unavailable, "the GATT connection went away"));
    std::uint16_t id = 0;
    while (id == 0 || central->links.count(id)) {
      auto r = crypto::random_bytes(2);
      id = static_cast<std::uint16_t>((r[0] << 8) | r[1]);
    }
    auto l = std::make_shared<BleLink>(s, s->io, s->tls, true, id, s->framer_options(central->mtu));
    l->device = central->path;
    l->remote_uri = central->address.str();
    l->peer_id = expected;
    std::weak_ptr<Central> wc = central;
    l->transmit = [weak, wc](Bytes frame) {
      auto self = weak.lock();
      auto cc = wc.lock();
      if (self && cc) self->central_write(cc, std::move(frame));
    };
    central->links[id] = l;
    s->pending.insert(l);
    crypto::tls_expect_peer(l->tls.native_handle(), expected);
    auto fail = [l, finish](Error e) {
      l->close();
      if (*finish) std::exchange(*finish, nullptr)(std::move(e));
    };
    l->set_deadline(s->opt.handshake_timeout_ms,
                    [fail] { fail(make_error(Errc::unavailable, "TLS over BLE timed out")); });
    l->tls.async_handshake(ssl::stream_base::client, [l, finish, fail](error_code ec) {
      if (l->closed) return fail(make_error(Errc::unavailable, "link closed"));
      if (ec) {
        // Another device at this address (the pin refused its key); else a link fault.
        if (auto other = crypto::tls_rejected_peer(l->tls.native_handle()))
          return fail(make_error(Errc::unauthenticated, "address " + l->remote() +
                                                            " answered as device " + other->str() +
                                                            ", expected " + l->peer().str()));
        return fail(
            make_error(Errc::unavailable, "TLS handshake over BLE failed: " + ec.message()));
      }
      if (auto st = l->authenticate(); !st) return fail(st.error());
      l->clear_deadline();
      l->t->pending.erase(l);
      if (*finish) std::exchange(*finish, nullptr)(std::shared_ptr<Stream>(l));
    });
  });
}

void BleTransport::stop() {
  Impl& im = *impl_;
  if (!im.running) return;
  im.running = false;
  im.retry_timer.cancel();
  im.state = BleState::off;
  auto pending = std::move(im.pending);
  im.pending.clear();
  for (const auto& l : pending) l->close();
  // Streams handed out stay theirs to end: their sessions say goodbye over them (a peer
  // learns that this device shuts down). The bus goes once they closed, or after a bound.
  if (!im.conn) return;
  if (std::size_t n = im.open_links(); n > 0) {
    spdlog::info("ble: stopping once its {} link(s) closed", n);
    im.stop_timer.expires_after(std::chrono::milliseconds(2 * im.opt.shutdown_timeout_ms));
    im.stop_timer.async_wait([weak = std::weak_ptr<Impl>(impl_)](error_code ec) {
      if (auto s = weak.lock(); s && !ec) s->finish_stop();
    });
    return;
  }
  im.finish_stop();
}

void BleTransport::set_advertisement(Bytes manufacturer_data, Bytes identity) {
  Impl& im = *impl_;
  im.identity = std::move(identity);
  if (manufacturer_data == im.adv_data) return;
  im.adv_data = std::move(manufacturer_data);
  im.adv_dirty = true;
  im.check();
}

void BleTransport::set_sighting_handler(std::function<void(const BleSighting&)> handler) {
  impl_->sighting = std::move(handler);
}

void BleTransport::read_identity(const Address& address, std::function<void(Result<Bytes>)> done) {
  Impl& im = *impl_;
  im.with_central(address, [weak = std::weak_ptr<Impl>(impl_),
                            done = std::move(done)](Result<std::shared_ptr<Central>> c) mutable {
    auto s = weak.lock();
    if (!s) return;
    if (!c.ok()) return done(c.error());
    auto central = *c;
    ++central->users;
    auto finish = std::make_shared<std::function<void(Result<Bytes>)>>(
        [weak, central, done = std::move(done)](Result<Bytes> r) mutable {
          --central->users;
          done(std::move(r));
          if (auto s2 = weak.lock()) s2->maybe_release(central->path);
        });
    try {
      Props o;
      central->id_proxy->callMethodAsync("ReadValue")
          .onInterface(kCharIface)
          .withTimeout(std::chrono::milliseconds(kCallTimeoutMs))
          .withArguments(o)
          .uponReplyInvoke([weak, finish](const sdbus::Error* e, std::vector<std::uint8_t> v) {
            auto self = weak.lock();
            if (!self) return;
            std::optional<std::string> err;
            if (e) err = e->getName() + ": " + e->getMessage();
            asio::post(self->io, [finish, err, v = std::move(v)] {
              if (err) return (*finish)(make_error(Errc::unavailable, "read identity: " + *err));
              (*finish)(Bytes(v.begin(), v.end()));
            });
          });
    } catch (const sdbus::Error& e) {
      return (*finish)(sd_error("read identity", e));
    }
    s->kick();
  });
}

BleStatus BleTransport::status() const {
  const Impl& im = *impl_;
  BleStatus s;
  s.state = im.state;
  s.message = im.message;
  s.adapter = im.opt.adapter;
  s.advertising = im.adv_registered;
  s.scanning = im.discovery_on;
  s.gatt_registered = im.app_registered;
  s.links = im.open_links();
  for (const auto& [path, ifs] : im.mirror) {
    auto d = ifs.find(kDeviceIface);
    if (d == ifs.end()) continue;
    auto md = prop<std::map<std::uint16_t, sdbus::Variant>>(d->second, "ManufacturerData");
    if (md && md->count(kBleManufacturerId)) ++s.devices;
  }
  return s;
}

}  // namespace fieldsync::transports
