// Transport: what the peer manager (peers/) needs from a way of reaching other devices.
//
// A transport turns an address into an authenticated, encrypted byte stream to one device
// (dial), and accepts such streams from others (listen). Everything above it (sessions,
// dial policy, backoff, duplicates, approval, joins) is transport-neutral and lives in
// peers/. TCP + TLS 1.3 is transports/tcp_tls; an in-memory pair for tests is
// transports/memory. Addresses are URIs whose scheme names the transport (address.hpp).
//
// A Stream is authenticated before anyone sees it: peer() is the device whose key the
// transport verified (TLS certificate key), and channel_binding() is secret material that
// both ends of this one stream share and no other stream has (membership proofs are bound
// to it, so they cannot be replayed elsewhere).
//
// Thread-safety: none. Every call, and every callback, happens on the io_context thread
// that the transport was created with. Callbacks are never invoked from inside the call
// that registered them (they are posted), so callers may hold state across a call.
// Errors: Status/Result with Errc::unavailable (cannot reach, connection lost, timed out;
// a stream's read/write errors carry the bare reason, e.g. "end of stream"),
// unauthenticated (the peer's key is not the expected one, no usable key),
// invalid_argument (an address this transport cannot use).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "transports/address.hpp"
#include "transports/handshake_budget.hpp"

namespace fieldsync::transports {

// How much a link can carry; the peer manager prefers faster links for the same peer and
// (later) holds large payloads back on slow ones.
enum class LinkClass : std::uint8_t {
  fast,     // LAN, loopback: megabytes per second
  slow,     // Bluetooth LE and the like: kilobytes per second
  one_way,  // a carried file: no answers
};
std::string_view link_class_name(LinkClass c);

class Stream {
 public:
  virtual ~Stream() = default;

  // Reads at least one byte into `buf` (up to its size). done(status, n): n > 0 with ok;
  // an error when the stream ended (also a clean end by the peer) or was closed. At most
  // one read outstanding.
  virtual void read_some(std::span<std::uint8_t> buf,
                         std::function<void(Status, std::size_t)> done) = 0;
  // Writes all of `data` (which must stay valid until done). At most one write outstanding.
  virtual void write(ByteView data, std::function<void(Status)> done) = 0;
  // Ends the stream politely (TLS close_notify), then closes; `done` runs once closed.
  // Bounded by the transport's own deadline.
  virtual void shutdown(std::function<void()> done) = 0;
  // Closes at once; outstanding operations complete with an error. Idempotent.
  virtual void close() = 0;
  virtual bool is_open() const = 0;

  // The authenticated device at the other end.
  virtual const DeviceId& peer() const = 0;
  // Secret bytes both ends of this stream share (membership proofs are bound to them).
  virtual const Bytes& channel_binding() const = 0;
  // Bytes on the medium so far (encryption and framing included), sent and received.
  virtual std::pair<std::uint64_t, std::uint64_t> wire_bytes() const = 0;
  virtual LinkClass link_class() const = 0;
  // True when we dialed it.
  virtual bool outgoing() const = 0;
  // Where the other end is, for logs and status (for TCP: its address and port as a URI).
  virtual std::string remote() const = 0;
};

using StreamHandler = std::function<void(Result<std::shared_ptr<Stream>>)>;

class Transport {
 public:
  virtual ~Transport() = default;

  // The URI scheme it serves ("tcp", "mem").
  virtual std::string_view scheme() const = 0;
  virtual LinkClass link_class() const = 0;

  // Starts accepting. Every accepted connection takes a slot of `budget` before its
  // handshake (a full budget evicts the oldest holder, or refuses when none can go); each
  // authenticated stream is passed to `incoming` with its slot, which the peer manager
  // keeps until it admits the peer. `budget` outlives the transport's listening.
  // Errors: unavailable (cannot listen, e.g. the port is taken), invalid_argument.
  using IncomingHandler =
      std::function<void(std::shared_ptr<Stream>, std::shared_ptr<HandshakeBudget::Slot>)>;
  virtual Status listen(HandshakeBudget& budget, IncomingHandler incoming) = 0;
  // Addresses other devices can dial to reach this listener, best first (what invite codes
  // and discovery advertise). Empty when not listening.
  virtual std::vector<Address> listen_addresses() const = 0;

  // Connects to `address` and authenticates the other end as `expected` (a different key
  // fails with unauthenticated, unless the other end proves that it renewed `expected`:
  // crypto/renewal.hpp; then the stream's peer() is the new key). `done` runs exactly once, within
  // the transport's own connect and handshake deadlines.
  virtual void dial(const Address& address, const DeviceId& expected, StreamHandler done) = 0;

  // Stops listening and closes every stream it still owns (bounded).
  virtual void stop() = 0;
};

}  // namespace fieldsync::transports
