#include "discovery/avahi_source.hpp"

#include <net/if.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/thread-watch.h>
#include <avahi-common/timeval.h>
#include <spdlog/spdlog.h>

#include <map>
#include <optional>

namespace fieldsync::discovery {

std::string_view source_state_name(SourceState s) {
  switch (s) {
    case SourceState::off: return "off";
    case SourceState::connecting: return "connecting";
    case SourceState::running: return "running";
    case SourceState::failed: return "failed";
  }
  return "unknown";
}

namespace {

// Owner-thread side of the event path: the Listener, and whether it may still be called.
// Only the owner's thread reads or writes these; the Avahi thread only copies the pointer.
struct Gate {
  DiscoverySource::Listener listener;
  bool open = true;
};

AvahiStringList* string_list(const std::vector<std::string>& strings) {
  AvahiStringList* l = nullptr;
  // avahi_string_list_add prepends: add in reverse to keep the order.
  for (auto it = strings.rbegin(); it != strings.rend(); ++it)
    l = avahi_string_list_add_arbitrary(l, reinterpret_cast<const std::uint8_t*>(it->data()),
                                        it->size());
  return l;
}

}  // namespace

// Every member below is used only on the Avahi thread or under the poll lock.
struct AvahiSource::Impl {
  Post post;
  Options opt;
  std::shared_ptr<Gate> gate;
  AvahiThreadedPoll* poll = nullptr;
  AvahiClient* client = nullptr;
  AvahiEntryGroup* group = nullptr;
  AvahiServiceBrowser* browser = nullptr;
  AvahiTimeout* retry = nullptr;
  std::map<ServiceKey, AvahiServiceResolver*> resolvers;
  std::optional<Announcement> want;        // what the owner asked for
  std::optional<Announcement> registered;  // what the entry group holds (name = wanted name)
  std::string current_name;                // the name in use (after collisions)
  SourceState state = SourceState::off;
  bool warned_full = false;

  Impl(Post p, Options o) : post(std::move(p)), opt(std::move(o)) {}

  void emit(SourceEvent ev) {
    post([g = gate, ev = std::move(ev)]() mutable {
      if (g->open) g->listener(std::move(ev));
    });
  }

  void set_state(SourceState s, std::string message = {}) {
    if (s == state) return;
    state = s;
    emit(SourceStateChanged{s, std::move(message)});
  }

  // --- client lifecycle ---

  void create_client() {
    int err = 0;
    AvahiClient* c = avahi_client_new(avahi_threaded_poll_get(poll), AVAHI_CLIENT_NO_FAIL,
                                      &Impl::client_cb, this, &err);
    if (!c) {
      set_state(
          SourceState::failed,
          std::string("cannot reach avahi-daemon over the system bus: ") + avahi_strerror(err));
      schedule_retry();
      return;
    }
    client = c;
  }

  void drop_client() {
    for (auto& [k, r] : resolvers) avahi_service_resolver_free(r);
    resolvers.clear();
    if (browser) avahi_service_browser_free(browser);
    browser = nullptr;
    if (group) avahi_entry_group_free(group);
    group = nullptr;
    registered.reset();
    if (client) avahi_client_free(client);
    client = nullptr;
  }

  void schedule_retry() {
    const AvahiPoll* api = avahi_threaded_poll_get(poll);
    timeval tv{};
    avahi_elapse_time(&tv, opt.retry_ms, 0);
    if (retry)
      api->timeout_update(retry, &tv);
    else
      retry = api->timeout_new(api, &tv, &Impl::retry_cb, this);
  }

  static void retry_cb(AvahiTimeout*, void* ud) {
    auto* self = static_cast<Impl*>(ud);
    if (!self->client) self->create_client();
  }

  static void client_cb(AvahiClient* c, AvahiClientState s, void* ud) {
    auto* self = static_cast<Impl*>(ud);
    self->client = c;  // avahi_client_new calls back before it returns
    switch (s) {
      case AVAHI_CLIENT_S_RUNNING:
        self->set_state(SourceState::running);
        self->ensure_browser();
        self->register_service();
        break;
      case AVAHI_CLIENT_S_COLLISION:
      case AVAHI_CLIENT_S_REGISTERING:
        // The host name is being (re)established: drop our records, add them when running.
        if (self->group) avahi_entry_group_reset(self->group);
        self->registered.reset();
        break;
      case AVAHI_CLIENT_CONNECTING:
        self->set_state(SourceState::connecting, "avahi-daemon is not running; waiting for it");
        break;
      case AVAHI_CLIENT_FAILURE: {
        int err = avahi_client_errno(c);
        self->drop_client();
        if (err == AVAHI_ERR_DISCONNECTED) {
          // The daemon went away (restart, upgrade): wait for it with a fresh client.
          self->set_state(SourceState::connecting,
                          "avahi-daemon went away; waiting for it to return");
          self->create_client();
        } else {
          self->set_state(SourceState::failed,
                          std::string("avahi client failed: ") + avahi_strerror(err));
          self->schedule_retry();
        }
        break;
      }
    }
  }

  // --- announcing ---

  bool running() const {
    return client && avahi_client_get_state(client) == AVAHI_CLIENT_S_RUNNING;
  }

  void register_service() {
    if (!running() || !want) return;
    if (!group) {
      group = avahi_entry_group_new(client, &Impl::group_cb, this);
      if (!group) {
        spdlog::warn("discovery: cannot create an Avahi entry group: {}",
                     avahi_strerror(avahi_client_errno(client)));
        return;
      }
    }
    if (current_name.empty() || (registered && registered->name != want->name))
      current_name = want->name;
    avahi_entry_group_reset(group);
    for (int attempt = 0; attempt < 20; ++attempt) {
      AvahiStringList* txt = string_list(want->txt);
      int r = avahi_entry_group_add_service_strlst(
          group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, AvahiPublishFlags(0), current_name.c_str(),
          opt.service_type.c_str(), nullptr, nullptr, want->port, txt);
      avahi_string_list_free(txt);
      if (r == AVAHI_ERR_COLLISION) {
        rename();
        continue;
      }
      if (r < 0) {
        spdlog::warn("discovery: cannot add the service '{}': {}", current_name, avahi_strerror(r));
        return;
      }
      if ((r = avahi_entry_group_commit(group)) < 0) {
        spdlog::warn("discovery: cannot register the service: {}", avahi_strerror(r));
        return;
      }
      registered = want;
      return;
    }
  }

  void rename() {
    char* n = avahi_alternative_service_name(current_name.c_str());
    spdlog::info("discovery: service name '{}' is taken on this network; using '{}'", current_name,
                 n);
    current_name = n;
    avahi_free(n);
  }

  static void group_cb(AvahiEntryGroup* g, AvahiEntryGroupState s, void* ud) {
    auto* self = static_cast<Impl*>(ud);
    self->group = g;
    switch (s) {
      case AVAHI_ENTRY_GROUP_ESTABLISHED: self->emit(Announced{self->current_name}); break;
      case AVAHI_ENTRY_GROUP_COLLISION:
        self->rename();
        self->registered.reset();
        self->register_service();
        break;
      case AVAHI_ENTRY_GROUP_FAILURE:
        spdlog::warn("discovery: registering the service failed: {}",
                     avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
        break;
      default: break;
    }
  }

  void update_announcement() {
    if (!running()) return;  // registered when the client reaches "running"
    if (!want) {
      if (group) avahi_entry_group_reset(group);
      registered.reset();
      return;
    }
    if (registered && group && registered->name == want->name && registered->port == want->port) {
      if (registered->txt == want->txt) return;
      AvahiStringList* txt = string_list(want->txt);
      int r = avahi_entry_group_update_service_txt_strlst(
          group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, AvahiPublishFlags(0), current_name.c_str(),
          opt.service_type.c_str(), nullptr, txt);
      avahi_string_list_free(txt);
      if (r == 0) {
        registered = want;
        return;
      }
      spdlog::debug("discovery: TXT update failed ({}); registering again", avahi_strerror(r));
    }
    register_service();
  }

  // --- browsing ---

  void ensure_browser() {
    if (browser || !running()) return;
    browser = avahi_service_browser_new(client, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                        opt.service_type.c_str(), nullptr, AvahiLookupFlags(0),
                                        &Impl::browse_cb, this);
    if (!browser)
      spdlog::warn("discovery: cannot browse {}: {}", opt.service_type,
                   avahi_strerror(avahi_client_errno(client)));
  }

  static void browse_cb(AvahiServiceBrowser* b, AvahiIfIndex iface, AvahiProtocol proto,
                        AvahiBrowserEvent event, const char* name, const char* type,
                        const char* domain, AvahiLookupResultFlags, void* ud) {
    auto* self = static_cast<Impl*>(ud);
    switch (event) {
      case AVAHI_BROWSER_NEW: {
        ServiceKey key{iface, proto, name};
        if (self->resolvers.count(key)) break;
        if (self->resolvers.size() >= self->opt.max_services) {
          if (!self->warned_full)
            spdlog::warn(
                "discovery: more than {} services on the network; ignoring the rest "
                "(discovery.max_devices)",
                self->opt.max_services);
          self->warned_full = true;
          break;
        }
        // The resolver stays open: it reports TXT changes (tags rotate) until the service goes.
        auto* r = avahi_service_resolver_new(self->client, iface, proto, name, type, domain, proto,
                                             AvahiLookupFlags(0), &Impl::resolve_cb, self);
        if (r)
          self->resolvers[key] = r;
        else
          spdlog::debug("discovery: cannot resolve '{}': {}", name,
                        avahi_strerror(avahi_client_errno(self->client)));
        break;
      }
      case AVAHI_BROWSER_REMOVE: {
        ServiceKey key{iface, proto, name};
        if (auto it = self->resolvers.find(key); it != self->resolvers.end()) {
          avahi_service_resolver_free(it->second);
          self->resolvers.erase(it);
        }
        self->emit(ServiceRemoved{std::move(key)});
        break;
      }
      case AVAHI_BROWSER_FAILURE:
        spdlog::warn("discovery: browsing failed: {}",
                     avahi_strerror(avahi_client_errno(avahi_service_browser_get_client(b))));
        avahi_service_browser_free(b);
        self->browser = nullptr;
        break;
      default: break;  // ALL_FOR_NOW, CACHE_EXHAUSTED
    }
  }

  static void resolve_cb(AvahiServiceResolver* r, AvahiIfIndex iface, AvahiProtocol proto,
                         AvahiResolverEvent event, const char* name, const char*, const char*,
                         const char* host, const AvahiAddress* addr, uint16_t port,
                         AvahiStringList* txt, AvahiLookupResultFlags flags, void* ud) {
    auto* self = static_cast<Impl*>(ud);
    ServiceKey key{iface, proto, name};
    if (event != AVAHI_RESOLVER_FOUND) {
      spdlog::debug("discovery: resolving '{}' failed: {}", name,
                    avahi_strerror(avahi_client_errno(avahi_service_resolver_get_client(r))));
      if (auto it = self->resolvers.find(key); it != self->resolvers.end() && it->second == r)
        self->resolvers.erase(it);
      avahi_service_resolver_free(r);
      return;
    }
    ResolvedService s;
    s.key = std::move(key);
    s.host = host ? host : "";
    char buf[AVAHI_ADDRESS_STR_MAX];
    avahi_address_snprint(buf, sizeof buf, addr);
    s.address = buf;
    s.ipv6 = addr->proto == AVAHI_PROTO_INET6;
    if (s.ipv6 && addr->data.ipv6.address[0] == 0xfe &&
        (addr->data.ipv6.address[1] & 0xc0) == 0x80) {
      char ifname[IF_NAMESIZE] = {};
      if (if_indextoname(static_cast<unsigned>(iface), ifname))
        s.address += std::string("%") + ifname;
    }
    s.port = port;
    s.local = (flags & AVAHI_LOOKUP_RESULT_LOCAL) != 0;
    for (AvahiStringList* l = txt; l; l = avahi_string_list_get_next(l))
      s.txt.emplace_back(reinterpret_cast<const char*>(avahi_string_list_get_text(l)),
                         avahi_string_list_get_size(l));
    self->emit(std::move(s));
  }
};

AvahiSource::AvahiSource(Post post, Options options)
    : impl_(std::make_unique<Impl>(std::move(post), std::move(options))) {}

AvahiSource::~AvahiSource() { stop(); }

void AvahiSource::start(Listener listener) {
  Impl& im = *impl_;
  if (im.poll) return;
  im.gate = std::make_shared<Gate>(Gate{std::move(listener), true});
  im.poll = avahi_threaded_poll_new();
  if (!im.poll) {
    im.set_state(SourceState::failed, "cannot create the Avahi event loop");
    return;
  }
  im.state = SourceState::off;
  im.create_client();  // the poll thread is not running yet: no lock needed
  if (avahi_threaded_poll_start(im.poll) < 0) {
    im.drop_client();
    avahi_threaded_poll_free(im.poll);
    im.poll = nullptr;
    im.set_state(SourceState::failed, "cannot start the Avahi thread");
  }
}

void AvahiSource::stop() {
  Impl& im = *impl_;
  if (im.gate) im.gate->open = false;
  if (!im.poll) return;
  avahi_threaded_poll_stop(im.poll);  // joins the thread: from here on no lock is needed
  im.drop_client();
  if (im.retry) avahi_threaded_poll_get(im.poll)->timeout_free(im.retry);
  im.retry = nullptr;
  avahi_threaded_poll_free(im.poll);
  im.poll = nullptr;
  im.state = SourceState::off;
}

void AvahiSource::announce(const Announcement& a) {
  Impl& im = *impl_;
  if (!im.poll) {
    im.want = a;
    return;
  }
  avahi_threaded_poll_lock(im.poll);
  if (!im.want || !(*im.want == a)) {
    im.want = a;
    im.update_announcement();
  }
  avahi_threaded_poll_unlock(im.poll);
}

void AvahiSource::withdraw() {
  Impl& im = *impl_;
  if (!im.poll) {
    im.want.reset();
    return;
  }
  avahi_threaded_poll_lock(im.poll);
  if (im.want) {
    im.want.reset();
    im.update_announcement();
  }
  avahi_threaded_poll_unlock(im.poll);
}

}  // namespace fieldsync::discovery
