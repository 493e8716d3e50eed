// The "mem" transport: devices in one process connected by in-memory byte pipes, for tests
// and benchmarks of everything above the transport (sessions, the peer manager) without
// sockets. A link can be cut after a given number of bytes (a peer vanishing mid-batch) and
// throttled to a bandwidth (a Bluetooth-class link), deterministically.
//
// Authentication is by declaration: each end is told the other's device id, and the channel
// binding is 32 random bytes both ends share. Nothing here is a security boundary: it exists
// only inside one test process.
//
// Ownership: a MemoryNetwork outlives the transports registered on it; streams keep their
// pipe alive. Thread-safety: one io_context thread (transport.hpp).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "transports/transport.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::transports {

struct MemoryLinkOptions {
  // Cut the link (both ends see an error) once this many bytes, counted over both
  // directions, have passed; bytes past that point are lost. 0 = never.
  std::uint64_t cut_after_bytes = 0;
  // Bytes per second in each direction; 0 = unlimited. A write completes when its bytes
  // have been delivered.
  std::uint64_t bytes_per_second = 0;
  LinkClass link_class = LinkClass::fast;
};

// Two connected streams: `a` is a's end (its peer() is b), `b` is b's end.
struct MemoryPair {
  std::shared_ptr<Stream> a;
  std::shared_ptr<Stream> b;
};
MemoryPair memory_pair(boost::asio::io_context& io, const DeviceId& a, const DeviceId& b,
                       MemoryLinkOptions options = {});

class MemoryTransport;

// Where mem:// names are registered.
class MemoryNetwork {
 public:
  // Applied to every link made from now on (link_class: of transports that have none of
  // their own).
  MemoryLinkOptions link_options;
  // Links made so far (tests: "did it dial?").
  std::uint64_t links_made = 0;

 private:
  friend class MemoryTransport;
  std::map<std::string, MemoryTransport*> listeners;  // by URI
};

class MemoryTransport final : public Transport {
 public:
  // Listens (once listen() is called) at mem://<name>.
  MemoryTransport(boost::asio::io_context& io, MemoryNetwork& net, DeviceId self, std::string name);
  // Another scheme on the same network (a second transport of one device, e.g. a slow one
  // beside a fast one): listens at <scheme>://<name>, and its links are of class `link`.
  MemoryTransport(boost::asio::io_context& io, MemoryNetwork& net, DeviceId self, std::string name,
                  std::string scheme, LinkClass link);
  ~MemoryTransport() override;

  std::string_view scheme() const override { return scheme_; }
  LinkClass link_class() const override { return link_ ? *link_ : net_.link_options.link_class; }
  Status listen(HandshakeBudget& budget, IncomingHandler incoming) override;
  std::vector<Address> listen_addresses() const override;
  void dial(const Address& address, const DeviceId& expected, StreamHandler done) override;
  void stop() override;

 private:
  boost::asio::io_context& io_;
  MemoryNetwork& net_;
  DeviceId self_;
  std::string name_;
  std::string scheme_ = "mem";
  std::optional<LinkClass> link_;
  bool listening_ = false;
  HandshakeBudget* budget_ = nullptr;
  IncomingHandler incoming_;
};

}  // namespace fieldsync::transports
