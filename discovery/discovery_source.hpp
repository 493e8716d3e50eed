// DiscoverySource: where services are announced and found: the system's avahi-daemon in
// production (AvahiSource), a small in-memory fake in tests.
//
// The source announces at most one service (ours) and browses + resolves `_fieldsync._tcp`.
// It reports through the Listener given to start(); every call of the Listener happens on the
// owner's thread (the source posts to it), never on an internal thread, so the owner needs no
// locks. After stop() (or destruction) the Listener is not called again.
// Thread-safety: every method is called from the owner's thread.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace fieldsync::discovery {

// One service instance as seen on one interface and protocol (a device reachable over two
// interfaces is two instances).
struct ServiceKey {
  int interface = -1;
  int protocol = -1;  // 0 IPv4, 1 IPv6 (Avahi's numbering)
  std::string name;   // the service instance name (the device name, made unique by Avahi)
  auto operator<=>(const ServiceKey&) const = default;
};

struct ResolvedService {
  ServiceKey key;
  std::string host;     // the target host name, e.g. "pi-hub.local"
  std::string address;  // numeric IP text; IPv6 link-local carries "%<interface>"
  bool ipv6 = false;
  std::uint16_t port = 0;
  std::vector<std::string> txt;
  bool local = false;  // published on this machine (maybe by another daemon)
};

struct ServiceRemoved {
  ServiceKey key;
};

enum class SourceState {
  off,         // not started or stopped
  connecting,  // waiting for avahi-daemon (absent, starting or restarting)
  running,     // connected: announcing (if asked to) and browsing
  failed,      // cannot talk to the system bus or the daemon; retried periodically
};
std::string_view source_state_name(SourceState s);

struct SourceStateChanged {
  SourceState state;
  std::string message;  // why (for the log), empty when running
};

// Our announcement is live under `name` (after a name collision: a new name).
struct Announced {
  std::string name;
};

using SourceEvent = std::variant<ResolvedService, ServiceRemoved, SourceStateChanged, Announced>;

struct Announcement {
  std::string name;  // wanted instance name
  std::uint16_t port = 0;
  std::vector<std::string> txt;
  bool operator==(const Announcement&) const = default;
};

class DiscoverySource {
 public:
  using Listener = std::function<void(SourceEvent)>;
  virtual ~DiscoverySource() = default;

  virtual void start(Listener listener) = 0;
  virtual void stop() = 0;
  // Announces or updates our service (a TXT-only change is an in-place update).
  virtual void announce(const Announcement& a) = 0;
  // Withdraws our service (a goodbye packet tells peers at once).
  virtual void withdraw() = 0;
};

}  // namespace fieldsync::discovery
