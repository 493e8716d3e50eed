// AvahiSource: the DiscoverySource backed by the system's avahi-daemon (avahi-client over
// D-Bus; DBUS_SYSTEM_BUS_ADDRESS selects the bus).
//
// Avahi runs its own thread (avahi_threaded_poll). Its callbacks never touch the owner's
// state: they turn what happened into a SourceEvent and hand it to `post`, which must run it
// on the owner's thread (the daemon posts to its io_context). Calls from the owner take the
// poll's lock around the Avahi API, as avahi_threaded_poll requires.
//
// Works without Avahi: the client is created with AVAHI_CLIENT_NO_FAIL, so an absent daemon
// is a "connecting" state, not an error; when the daemon goes away (restart) the client is
// recreated and, once the daemon is back, our service is registered again and browsing
// restarts. If the system bus itself cannot be reached, creating the client is retried every
// retry_ms. A name collision picks Avahi's alternative name ("name #2").
//
// Ownership: owns the poll thread and every Avahi object. Thread-safety: call every method
// from the owner's thread. stop() (or the destructor) joins the Avahi thread; events posted
// before that are dropped unseen.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "discovery/discovery_source.hpp"

namespace fieldsync::discovery {

class AvahiSource final : public DiscoverySource {
 public:
  using Post = std::function<void(std::function<void()>)>;
  struct Options {
    std::string service_type = "_fieldsync._tcp";
    std::uint32_t retry_ms = 5000;     // recreate the client when the bus is unreachable
    std::uint32_t max_services = 256;  // service instances resolved at once
  };

  AvahiSource(Post post, Options options);
  ~AvahiSource() override;
  AvahiSource(const AvahiSource&) = delete;
  AvahiSource& operator=(const AvahiSource&) = delete;

  void start(Listener listener) override;
  void stop() override;
  void announce(const Announcement& a) override;
  void withdraw() override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::discovery
