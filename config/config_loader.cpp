#include "config/config_loader.hpp"

#include <arpa/inet.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#include <toml++/toml.h>

#include "common/ids.hpp"
#include "common/text.hpp"

#ifndef FIELDSYNC_SYSCONFDIR
#define FIELDSYNC_SYSCONFDIR "/etc"
#endif

namespace fieldsync::config {
namespace {

constexpr std::size_t kMaxStaticPeers = 1000;
constexpr std::size_t kMaxDeviceNameBytes = 63;  // one DNS-SD label, so discovery can show it
constexpr std::uint64_t kDayMs = 24ull * 3600 * 1000;

// --- small text helpers -------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A value as it may be shown in an error message: control characters escaped, long values cut.
std::string shown(std::string_view v) {
  std::string out;
  for (unsigned char c : v.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (v.size() > 80) out += "...";
  return out;
}

Error bad_value(std::string_view key, std::string_view expected, std::string_view got) {
  return make_error(
      Errc::invalid_argument,
      std::string(key) + ": expected " + std::string(expected) + ", got '" + shown(got) + "'");
}

// Text a config file can hold and print back: valid UTF-8 (TOML files are UTF-8) without
// control characters.
bool has_control_chars(std::string_view v) { return !is_clean_text(v, std::string_view::npos); }

// mirror.schema: a name PostgreSQL takes unquoted and folds to itself.
bool valid_sql_name(std::string_view v) {
  if (v.empty() || v.size() > 63 || (v[0] >= '0' && v[0] <= '9')) return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// scheme://host[:port] with scheme http or https: what a browser sends in Origin.
bool valid_origin(std::string_view v) {
  std::string lower(v.substr(0, 8));
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view rest;
  if (lower.rfind("http://", 0) == 0)
    rest = v.substr(7);
  else if (lower.rfind("https://", 0) == 0)
    rest = v.substr(8);
  else
    return false;
  if (rest.empty() || rest.size() > 255) return false;
  return std::all_of(rest.begin(), rest.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
           c == '[' || c == ']';
  });
}

bool valid_origin_list(std::string_view v) {
  if (trim(v).empty()) return true;
  std::size_t n = 0;
  for (std::size_t start = 0; start <= v.size();) {
    auto end = v.find(',', start);
    if (end == std::string_view::npos) end = v.size();
    if (!valid_origin(trim(v.substr(start, end - start))) || ++n > 64) return false;
    start = end + 1;
  }
  return true;
}

// mirror.projects: "all" or project ids separated by commas (spaces around them allowed).
bool valid_project_list(std::string_view v) {
  if (v == "all") return true;
  if (v.empty() || v.size() > 65536) return false;
  for (const auto& id : split_project_list(v))
    if (!ProjectId::parse(id)) return false;
  return true;
}

std::optional<std::uint64_t> parse_uint(std::string_view v) {
  if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::uint64_t out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size()) return std::nullopt;
  return out;
}

// "512", "64k", "8M", "16G", "1T": powers of 1024.
std::optional<std::uint64_t> parse_size(std::string_view v) {
  std::uint64_t mult = 1;
  if (!v.empty()) {
    switch (v.back()) {
      case 'k':
      case 'K': mult = 1ull << 10; break;
      case 'm':
      case 'M': mult = 1ull << 20; break;
      case 'g':
      case 'G': mult = 1ull << 30; break;
      case 't':
      case 'T': mult = 1ull << 40; break;
      default: break;
    }
    if (mult != 1) v.remove_suffix(1);
  }
  auto n = parse_uint(v);
  if (!n || *n > std::numeric_limits<std::uint64_t>::max() / mult) return std::nullopt;
  return *n * mult;
}

std::string format_size(std::uint64_t n) {
  static constexpr std::pair<char, int> units[] = {{'T', 40}, {'G', 30}, {'M', 20}, {'k', 10}};
  if (n != 0) {
    for (auto [suffix, shift] : units) {
      if (n % (1ull << shift) == 0) return std::to_string(n >> shift) + suffix;
    }
  }
  return std::to_string(n);
}

std::string format_octal(std::uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode);
  return buf;
}

bool is_ip_literal(std::string_view v) {
  std::string s(v);
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool is_loopback(std::string_view v) {
  std::string s(v);
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return false;
}

// host:port with port 1..65535; host a DNS name, an IPv4 address or a bracketed IPv6 address.
bool is_host_port(std::string_view v) {
  std::string_view host, port;
  if (!v.empty() && v.front() == '[') {
    auto close = v.find(']');
    if (close == std::string_view::npos || close + 1 >= v.size() || v[close + 1] != ':')
      return false;
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
    std::string h(host);
    unsigned char buf[sizeof(in6_addr)];
    if (inet_pton(AF_INET6, h.c_str(), buf) != 1) return false;
  } else {
    auto colon = v.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (host.empty() || host.size() > 253) return false;
    bool ok = std::all_of(host.begin(), host.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '.';
    });
    if (!ok) return false;
  }
  auto p = parse_uint(port);
  return p && *p >= 1 && *p <= 65535;
}

bool is_group_name(std::string_view v) {
  if (v.empty() || v.size() > 32) return false;
  if (!((v[0] >= 'a' && v[0] <= 'z') || v[0] == '_')) return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool is_peer_name(std::string_view v) {
  if (v.empty() || v.size() > 64) return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// A TOML basic string: "..." with the escapes TOML requires.
std::string toml_quote(std::string_view v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + '"';
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// --- the key table ---------------------------------------------------------------------------

// The TOML type a key takes (docs/operations.md "Configuration"): sizes are an integer number
// of bytes or a string with a suffix ("8M"); socket_mode a string of octal digits or 0o660.
enum class Kind { integer, size, boolean, string, mode };

// One key: `set` checks and stores its value given as text (the previous format's spelling,
// which a TOML value is turned into by apply_value), `get` gives it back as such text.
struct KeySpec {
  std::string_view name;
  Kind kind;
  std::function<Status(Config&, std::string_view)> set;
  std::function<std::string(const Config&)> get;
};

// `access` is a lambda Config& -> field&; the getter reuses it on a const Config.
template <class Access>
auto& field(Access access, const Config& c) {
  return access(const_cast<Config&>(c));
}

template <class Access>
KeySpec uint_key(std::string_view name, Access access, std::uint64_t min, std::uint64_t max) {
  return {name, Kind::integer,
          [=](Config& c, std::string_view v) -> Status {
            auto n = parse_uint(v);
            if (!n || *n < min || *n > max)
              return bad_value(name,
                               "an integer " + std::to_string(min) + ".." + std::to_string(max), v);
            using T = std::remove_reference_t<decltype(access(c))>;
            access(c) = static_cast<T>(*n);
            return {};
          },
          [=](const Config& c) { return std::to_string(field(access, c)); }};
}

template <class Access>
KeySpec ms_key(std::string_view name, Access access, std::uint64_t min, std::uint64_t max) {
  KeySpec k = uint_key(name, access, min, max);
  k.set = [=](Config& c, std::string_view v) -> Status {
    auto n = parse_uint(v);
    if (!n || *n < min || *n > max)
      return bad_value(
          name, "milliseconds as an integer " + std::to_string(min) + ".." + std::to_string(max),
          v);
    using T = std::remove_reference_t<decltype(access(c))>;
    access(c) = static_cast<T>(*n);
    return {};
  };
  return k;
}

template <class Access>
KeySpec size_key(std::string_view name, Access access, std::uint64_t min, std::uint64_t max) {
  return {name, Kind::size,
          [=](Config& c, std::string_view v) -> Status {
            auto n = parse_size(v);
            if (!n || *n < min || *n > max)
              return bad_value(name,
                               "a size " + format_size(min) + ".." + format_size(max) +
                                   " (bytes, or with a k, M, G or T suffix)",
                               v);
            using T = std::remove_reference_t<decltype(access(c))>;
            access(c) = static_cast<T>(*n);
            return {};
          },
          [=](const Config& c) { return format_size(field(access, c)); }};
}

template <class Access>
KeySpec bool_key(std::string_view name, Access access) {
  return {name, Kind::boolean,
          [=](Config& c, std::string_view v) -> Status {
            if (v == "true" || v == "yes" || v == "on" || v == "1") {
              access(c) = true;
            } else if (v == "false" || v == "no" || v == "off" || v == "0") {
              access(c) = false;
            } else {
              return bad_value(name, "true or false (or yes/no, on/off, 1/0)", v);
            }
            return {};
          },
          [=](const Config& c) { return std::string(field(access, c) ? "true" : "false"); }};
}

// A string field checked by `valid`; `expected` describes valid values for the error.
template <class Access, class Valid>
KeySpec string_key(std::string_view name, Access access, std::string_view expected, Valid valid) {
  return {name, Kind::string,
          [=](Config& c, std::string_view v) -> Status {
            if (!valid(v)) return bad_value(name, expected, v);
            access(c) = std::string(v);
            return {};
          },
          [=](const Config& c) { return std::string(field(access, c)); }};
}

// A blob policy (storage::BlobPolicy); `lowest` is the least the key accepts.
template <class Access>
KeySpec policy_key(std::string_view name, Access access, storage::BlobPolicy lowest) {
  return {
      name, Kind::string,
      [=](Config& c, std::string_view v) -> Status {
        auto p = storage::parse_blob_policy(v);
        if (!p || *p < lowest)
          return bad_value(name,
                           lowest == storage::BlobPolicy::none
                               ? "one of none, on-demand, thumbnails, phone, archive"
                               : "one of on-demand, thumbnails, phone, archive",
                           v);
        access(c) = *p;
        return {};
      },
      [=](const Config& c) { return std::string(storage::blob_policy_name(field(access, c))); }};
}

template <class Access>
KeySpec path_key(std::string_view name, Access access) {
  return {name, Kind::string,
          [=](Config& c, std::string_view v) -> Status {
            if (has_control_chars(v) || v.size() > 4095)
              return bad_value(name, "a path (empty for the default)", v);
            access(c) = std::filesystem::path(std::string(v));
            return {};
          },
          [=](const Config& c) { return field(access, c).string(); }};
}

const std::vector<KeySpec>& key_table() {
  static const std::vector<KeySpec> table = [] {
    std::vector<KeySpec> t;
    // [daemon]
    t.push_back(path_key(
        "daemon.data_dir", [](Config & c) -> auto& { return c.data_dir; }));
    t.push_back(string_key(
        "daemon.log_level", [](Config & c) -> auto& { return c.log_level; },
        "one of trace, debug, info, warn, error",
        [](std::string_view v) {
          return v == "trace" || v == "debug" || v == "info" || v == "warn" || v == "error";
        }));
    t.push_back(string_key(
        "daemon.device_name", [](Config & c) -> auto& { return c.device_name; },
        "a name of at most 63 bytes of UTF-8 without control characters (empty: the host name)",
        [](std::string_view v) {
          return v.size() <= kMaxDeviceNameBytes && !has_control_chars(v);
        }));
    // [api]
    t.push_back(path_key(
        "api.socket_path", [](Config & c) -> auto& { return c.api.socket_path; }));
    t.push_back({"api.socket_mode", Kind::mode,
                 [](Config& c, std::string_view v) -> Status {
                   std::string_view digits = v.substr(v.substr(0, 2) == "0o" ? 2 : 0);
                   bool octal = !digits.empty() && digits.size() <= 5 &&
                                std::all_of(digits.begin(), digits.end(),
                                            [](char ch) { return ch >= '0' && ch <= '7'; });
                   unsigned long mode =
                       octal ? std::strtoul(std::string(digits).c_str(), nullptr, 8) : 0;
                   if (!octal || mode > 0777)
                     return bad_value("api.socket_mode", "an octal file mode 0000..0777", v);
                   c.api.socket_mode = static_cast<std::uint32_t>(mode);
                   return {};
                 },
                 [](const Config& c) { return format_octal(c.api.socket_mode); }});
    t.push_back(string_key(
        "api.socket_group", [](Config & c) -> auto& { return c.api.socket_group; },
        "a group name ([a-z_][a-z0-9_-]*, at most 32 characters; empty: the daemon's group)",
        [](std::string_view v) { return v.empty() || is_group_name(v); }));
    t.push_back(string_key(
        "api.token_group", [](Config & c) -> auto& { return c.api.token_group; },
        "a group name ([a-z_][a-z0-9_-]*, at most 32 characters; empty: owner only)",
        [](std::string_view v) { return v.empty() || is_group_name(v); }));
    t.push_back(bool_key(
        "api.http_enabled", [](Config & c) -> auto& { return c.api.http_enabled; }));
    t.push_back(string_key(
        "api.http_address", [](Config & c) -> auto& { return c.api.http_address; },
        "an IPv4 or IPv6 address such as 127.0.0.1 or ::1", is_ip_literal));
    t.push_back(uint_key(
        "api.http_port", [](Config & c) -> auto& { return c.api.http_port; }, 0, 65535));
    t.push_back(size_key(
        "api.max_body_bytes", [](Config & c) -> auto& { return c.api.max_body_bytes; }, 1024,
        1ull << 30));
    t.push_back(size_key(
        "api.max_stream_bytes", [](Config & c) -> auto& { return c.api.max_stream_bytes; }, 1024,
        1ull << 40));
    t.push_back(string_key(
        "api.cors_origins", [](Config & c) -> auto& { return c.api.cors_origins; },
        "comma-separated origins such as http://localhost:5173 (scheme http or https, a host, "
        "an optional port, nothing after it)",
        valid_origin_list));
    t.push_back(ms_key(
        "api.ticket_ttl_ms", [](Config & c) -> auto& { return c.api.ticket_ttl_ms; }, 1000,
        600000));
    t.push_back(uint_key(
        "api.max_connections", [](Config & c) -> auto& { return c.api.max_connections; }, 1,
        100000));
    t.push_back(uint_key(
        "api.max_page_size", [](Config & c) -> auto& { return c.api.max_page_size; }, 1, 100000));
    t.push_back(uint_key(
        "api.max_sort_docs", [](Config & c) -> auto& { return c.api.max_sort_docs; }, 1, 10000000));
    t.push_back(uint_key(
        "api.reader_threads", [](Config & c) -> auto& { return c.api.reader_threads; }, 0, 64));
    t.push_back(uint_key(
        "api.max_group_writes", [](Config & c) -> auto& { return c.api.max_group_writes; }, 0,
        10000));
    t.push_back(uint_key(
        "api.max_json_depth", [](Config & c) -> auto& { return c.api.max_json_depth; }, 1, 1000));
    t.push_back(ms_key(
        "api.request_timeout_ms", [](Config & c) -> auto& { return c.api.request_timeout_ms; }, 1,
        kDayMs));
    t.push_back(ms_key(
        "api.longpoll_timeout_ms", [](Config & c) -> auto& { return c.api.longpoll_timeout_ms; }, 1,
        kDayMs));
    t.push_back(ms_key(
        "api.sse_heartbeat_ms", [](Config & c) -> auto& { return c.api.sse_heartbeat_ms; }, 1,
        kDayMs));
    t.push_back(ms_key(
        "api.shutdown_grace_ms", [](Config & c) -> auto& { return c.api.shutdown_grace_ms; }, 1,
        kDayMs));
    t.push_back(size_key(
        "api.max_header_bytes", [](Config & c) -> auto& { return c.api.max_header_bytes; }, 1024,
        1u << 20));
    t.push_back(size_key(
        "api.max_chunk_extension_bytes",
        [](Config & c) -> auto& { return c.api.max_chunk_extension_bytes; }, 16, 64u << 10));
    t.push_back(size_key(
        "api.max_trailer_bytes", [](Config & c) -> auto& { return c.api.max_trailer_bytes; }, 16,
        1u << 20));
    t.push_back(uint_key(
        "api.max_unix_connections", [](Config & c) -> auto& { return c.api.max_unix_connections; },
        1, 100000));
    t.push_back(uint_key(
        "api.max_streams", [](Config & c) -> auto& { return c.api.max_streams; }, 0, 100000));
    t.push_back(ms_key(
        "api.header_timeout_ms", [](Config & c) -> auto& { return c.api.header_timeout_ms; }, 1,
        kDayMs));
    t.push_back(ms_key(
        "api.accept_retry_max_ms", [](Config & c) -> auto& { return c.api.accept_retry_max_ms; },
        10, 60000));
    t.push_back(size_key(
        "api.max_stream_buffer_bytes",
        [](Config & c) -> auto& { return c.api.max_stream_buffer_bytes; }, 4096, 1u << 30));
    // [sync]
    t.push_back(bool_key(
        "sync.enabled", [](Config & c) -> auto& { return c.sync.enabled; }));
    t.push_back(string_key(
        "sync.listen_address", [](Config & c) -> auto& { return c.sync.listen_address; },
        "an IPv4 or IPv6 address such as 0.0.0.0 or ::", is_ip_literal));
    t.push_back(uint_key(
        "sync.listen_port", [](Config & c) -> auto& { return c.sync.listen_port; }, 0, 65535));
    t.push_back(size_key(
        "sync.max_frame_bytes", [](Config & c) -> auto& { return c.sync.max_frame_bytes; }, 4096,
        1ull << 30));
    t.push_back(uint_key(
        "sync.batch_entries", [](Config & c) -> auto& { return c.sync.batch_entries; }, 1,
        1000000));
    t.push_back(size_key(
        "sync.batch_bytes", [](Config & c) -> auto& { return c.sync.batch_bytes; }, 1024,
        1ull << 30));
    t.push_back(uint_key(
        "sync.window_batches", [](Config & c) -> auto& { return c.sync.window_batches; }, 1, 1024));
    t.push_back(ms_key(
        "sync.handshake_timeout_ms",
        [](Config & c) -> auto& { return c.sync.handshake_timeout_ms; }, 1, kDayMs));
    t.push_back(ms_key(
        "sync.idle_timeout_ms", [](Config & c) -> auto& { return c.sync.idle_timeout_ms; }, 1,
        kDayMs));
    t.push_back(ms_key(
        "sync.connect_timeout_ms", [](Config & c) -> auto& { return c.sync.connect_timeout_ms; }, 1,
        kDayMs));
    t.push_back(uint_key(
        "sync.max_peers", [](Config & c) -> auto& { return c.sync.max_peers; }, 1, 10000));
    t.push_back(uint_key(
        "sync.max_handshakes", [](Config & c) -> auto& { return c.sync.max_handshakes; }, 1,
        10000));
    t.push_back(ms_key(
        "sync.tls_handshake_timeout_ms",
        [](Config & c) -> auto& { return c.sync.tls_handshake_timeout_ms; }, 1, kDayMs));
    t.push_back(uint_key(
        "sync.max_pending_devices", [](Config & c) -> auto& { return c.sync.max_pending_devices; },
        1, 10000));
    t.push_back(ms_key(
        "sync.accept_backoff_max_ms",
        [](Config & c) -> auto& { return c.sync.accept_backoff_max_ms; }, 10, 60000));
    t.push_back(uint_key(
        "sync.log_lines_per_key", [](Config & c) -> auto& { return c.sync.log_lines_per_key; }, 1,
        1000000));
    t.push_back(ms_key(
        "sync.log_interval_ms", [](Config & c) -> auto& { return c.sync.log_interval_ms; }, 1,
        kDayMs));
    t.push_back(uint_key(
        "sync.max_projects", [](Config & c) -> auto& { return c.sync.max_projects; }, 1, 100000));
    t.push_back(uint_key(
        "sync.compression_level", [](Config & c) -> auto& { return c.sync.compression_level; }, 0,
        19));
    t.push_back(size_key(
        "sync.write_chunk_bytes", [](Config & c) -> auto& { return c.sync.write_chunk_bytes; },
        4096, 64ull << 20));
    t.push_back(string_key(
        "sync.trust_policy", [](Config & c) -> auto& { return c.sync.trust_policy; }, "auto or ask",
        [](std::string_view v) { return v == "auto" || v == "ask"; }));
    t.push_back(ms_key(
        "sync.retry_min_ms", [](Config & c) -> auto& { return c.sync.retry_min_ms; }, 1, kDayMs));
    t.push_back(ms_key(
        "sync.retry_max_ms", [](Config & c) -> auto& { return c.sync.retry_max_ms; }, 1, kDayMs));
    // [discovery]
    t.push_back(bool_key(
        "discovery.enabled", [](Config & c) -> auto& { return c.discovery.enabled; }));
    t.push_back(ms_key(
        "discovery.refresh_ms", [](Config & c) -> auto& { return c.discovery.refresh_ms; }, 100,
        kDayMs));
    t.push_back(ms_key(
        "discovery.ttl_ms", [](Config & c) -> auto& { return c.discovery.ttl_ms; }, 1, kDayMs));
    t.push_back(uint_key(
        "discovery.max_devices", [](Config & c) -> auto& { return c.discovery.max_devices; }, 1,
        10000));
    t.push_back(uint_key(
        "discovery.max_announced_projects",
        [](Config & c) -> auto& { return c.discovery.max_announced_projects; }, 1, 64));
    t.push_back(ms_key(
        "discovery.avahi_retry_ms", [](Config & c) -> auto& { return c.discovery.avahi_retry_ms; },
        100, kDayMs));
    // [ble]
    t.push_back(bool_key(
        "ble.enabled", [](Config & c) -> auto& { return c.ble.enabled; }));
    t.push_back(string_key(
        "ble.adapter", [](Config & c) -> auto& { return c.ble.adapter; },
        "an adapter name such as hci0",
        [](std::string_view v) {
          return !v.empty() && v.size() <= 16 && std::all_of(v.begin(), v.end(), [](char ch) {
            return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
          });
        }));
    t.push_back(bool_key(
        "ble.advertise", [](Config & c) -> auto& { return c.ble.advertise; }));
    t.push_back(bool_key(
        "ble.scan", [](Config & c) -> auto& { return c.ble.scan; }));
    t.push_back(uint_key(
        "ble.window", [](Config & c) -> auto& { return c.ble.window; }, 1, 64));
    t.push_back(ms_key(
        "ble.retransmit_ms", [](Config & c) -> auto& { return c.ble.retransmit_ms; }, 100, 600000));
    t.push_back(ms_key(
        "ble.connect_timeout_ms", [](Config & c) -> auto& { return c.ble.connect_timeout_ms; }, 100,
        600000));
    t.push_back(ms_key(
        "ble.handshake_timeout_ms", [](Config & c) -> auto& { return c.ble.handshake_timeout_ms; },
        100, 600000));
    t.push_back(ms_key(
        "ble.retry_ms", [](Config & c) -> auto& { return c.ble.retry_ms; }, 100, kDayMs));
    t.push_back(uint_key(
        "ble.max_links", [](Config & c) -> auto& { return c.ble.max_links; }, 1, 64));
    t.push_back(ms_key(
        "ble.refresh_ms", [](Config & c) -> auto& { return c.ble.refresh_ms; }, 100, kDayMs));
    t.push_back(bool_key(
        "ble.ip_hint", [](Config & c) -> auto& { return c.ble.ip_hint; }));
    t.push_back(ms_key(
        "ble.tcp_retry_ms", [](Config & c) -> auto& { return c.ble.tcp_retry_ms; }, 100, kDayMs));
    t.push_back(uint_key(
        "ble.batch_entries", [](Config & c) -> auto& { return c.sync.slow_batch_entries; }, 1,
        1000000));
    t.push_back(size_key(
        "ble.batch_bytes", [](Config & c) -> auto& { return c.sync.slow_batch_bytes; }, 1024,
        1ull << 30));
    t.push_back(uint_key(
        "ble.window_batches", [](Config & c) -> auto& { return c.sync.slow_window_batches; }, 1,
        1024));
    // [hub]
    t.push_back(ms_key(
        "hub.receipt_interval_ms", [](Config & c) -> auto& { return c.hub.receipt_interval_ms; },
        100, kDayMs));
    t.push_back(string_key(
        "hub.cleanup_projects", [](Config & c) -> auto& { return c.hub.cleanup_projects; },
        "empty (none), all, or project ids separated by commas",
        [](std::string_view v) { return v.empty() || valid_project_list(v); }));
    t.push_back(ms_key(
        "hub.cleanup_min_age_ms", [](Config & c) -> auto& { return c.hub.cleanup_min_age_ms; }, 0,
        3650ull * kDayMs));
    t.push_back(size_key(
        "hub.cleanup_free_below",
        [](Config & c) -> auto& { return c.hub.cleanup_free_below_bytes; }, 0, 1ull << 50));
    // [mirror]
    t.push_back(string_key(
        "mirror.postgres", [](Config & c) -> auto& { return c.mirror.postgres; },
        "a libpq connection string or postgresql:// URI (empty: no mirror)",
        [](std::string_view v) { return v.size() <= 4096 && !has_control_chars(v); }));
    t.push_back(path_key(
        "mirror.password_file", [](Config & c) -> auto& { return c.mirror.password_file; }));
    t.push_back(string_key(
        "mirror.projects", [](Config & c) -> auto& { return c.mirror.projects; },
        "all, or project ids separated by commas", valid_project_list));
    t.push_back(string_key(
        "mirror.schema", [](Config & c) -> auto& { return c.mirror.schema; },
        "a lower-case SQL name (a-z, 0-9, _; at most 63 characters, not starting with a digit)",
        valid_sql_name));
    t.push_back(uint_key(
        "mirror.batch_changes", [](Config & c) -> auto& { return c.mirror.batch_changes; }, 1,
        100000));
    t.push_back(ms_key(
        "mirror.retry_min_ms", [](Config & c) -> auto& { return c.mirror.retry_min_ms; }, 10,
        kDayMs));
    t.push_back(ms_key(
        "mirror.retry_max_ms", [](Config & c) -> auto& { return c.mirror.retry_max_ms; }, 10,
        kDayMs));
    t.push_back(ms_key(
        "mirror.connect_timeout_ms",
        [](Config & c) -> auto& { return c.mirror.connect_timeout_ms; }, 1000, 600000));
    t.push_back(ms_key(
        "mirror.statement_timeout_ms",
        [](Config & c) -> auto& { return c.mirror.statement_timeout_ms; }, 1000, kDayMs));
    // [bundle] (chunk bounds: bundle::kMinChunkBytes..kMaxChunkBytes)
    t.push_back(size_key(
        "bundle.chunk_bytes", [](Config & c) -> auto& { return c.bundle.chunk_bytes; }, 1u << 10,
        1u << 20));
    t.push_back(size_key(
        "bundle.max_record_bytes", [](Config & c) -> auto& { return c.bundle.max_record_bytes; },
        64u << 10, 1u << 30));
    // [blob]
    t.push_back(size_key(
        "blob.max_blob_bytes", [](Config & c) -> auto& { return c.storage.blobs.max_blob_bytes; },
        0, 1ull << 44));
    t.push_back(size_key(
        "blob.project_quota_bytes",
        [](Config & c) -> auto& { return c.storage.blobs.project_quota_bytes; }, 0, 1ull << 44));
    t.push_back(ms_key(
        "blob.unreferenced_grace_ms",
        [](Config & c) -> auto& { return c.storage.blobs.unreferenced_grace_ms; }, 0,
        3650 * kDayMs));
    t.push_back(ms_key(
        "blob.gc_interval_ms", [](Config & c) -> auto& { return c.storage.blobs.gc_interval_ms; },
        1000, 30 * kDayMs));
    t.push_back(policy_key(
        "blob.policy", [](Config & c) -> auto& { return c.storage.blobs.policy; },
        storage::BlobPolicy::on_demand));
    t.push_back(policy_key(
        "blob.slow_link_policy", [](Config & c) -> auto& { return c.sync.slow_link_blobs; },
        storage::BlobPolicy::none));
    t.push_back(ms_key(
        "blob.demand_ttl_ms", [](Config & c) -> auto& { return c.storage.blobs.demand_ttl_ms; },
        1000, 30 * kDayMs));
    t.push_back(uint_key(
        "blob.max_demands", [](Config & c) -> auto& { return c.storage.blobs.max_demands; }, 0,
        1000000));
    t.push_back(ms_key(
        "blob.keep_fetched_ms", [](Config & c) -> auto& { return c.storage.blobs.keep_fetched_ms; },
        0, 3650 * kDayMs));
    t.push_back(ms_key(
        "blob.fetch_wait_ms", [](Config & c) -> auto& { return c.storage.blobs.fetch_wait_ms; }, 0,
        3600 * 1000));
    t.push_back(bool_key(
        "blob.make_variants", [](Config & c) -> auto& { return c.storage.blobs.make_variants; }));
    t.push_back(uint_key(
        "blob.max_peer_blobs", [](Config & c) -> auto& { return c.storage.blobs.max_peer_blobs; },
        0, 16u << 20));
    // [storage]
    t.push_back(size_key(
        "storage.map_size", [](Config & c) -> auto& { return c.storage.map_size_bytes; },
        1ull << 20, 1ull << 44));
    t.push_back(size_key(
        "storage.max_body_bytes", [](Config & c) -> auto& { return c.storage.max_body_bytes; }, 64,
        storage::kMaxBodyBytesCeiling));
    t.push_back(uint_key(
        "storage.max_batch_docs", [](Config & c) -> auto& { return c.storage.max_batch_docs; }, 1,
        1000000));
    t.push_back(uint_key(
        "storage.checkpoint_interval",
        [](Config & c) -> auto& { return c.storage.checkpoint_interval; }, 1, 1000000));
    t.push_back(bool_key(
        "storage.durable", [](Config & c) -> auto& { return c.storage.durable; }));
    t.push_back(ms_key(
        "storage.max_clock_skew_ms",
        [](Config & c) -> auto& { return c.storage.max_clock_skew_ms; }, 0, 3650 * kDayMs));
    t.push_back(uint_key(
        "storage.max_imported_bundles",
        [](Config & c) -> auto& { return c.storage.max_imported_bundles; }, 1, 1000000));
    t.push_back(uint_key(
        "storage.max_indexes", [](Config & c) -> auto& { return c.storage.max_indexes; }, 0, 1000));
    t.push_back(uint_key(
        "storage.body_compression_level",
        [](Config & c) -> auto& { return c.storage.body_compression_level; }, 0, 19));
    t.push_back(size_key(
        "storage.body_dictionary_bytes",
        [](Config & c) -> auto& { return c.storage.body_dictionary_bytes; }, 0, 1u << 20));
    return t;
  }();
  return table;
}

const KeySpec* find_key(std::string_view name) {
  for (const auto& k : key_table())
    if (k.name == name) return &k;
  return nullptr;
}

Error unknown_key(std::string_view key) {
  std::string msg = std::string(key) + ": unknown key";
  std::string_view best;
  std::size_t best_d = 3;  // suggest only close misspellings
  for (const auto& k : key_table()) {
    std::size_t d = edit_distance(key, k.name);
    if (d < best_d) {
      best_d = d;
      best = k.name;
    }
  }
  if (!best.empty()) msg += " (did you mean " + std::string(best) + "?)";
  return make_error(Errc::invalid_argument, std::move(msg));
}

// "peer.<name>.<field>" -> name, field.
bool split_peer_key(std::string_view key, std::string_view& name, std::string_view& field_name) {
  if (key.substr(0, 5) != "peer.") return false;
  std::string_view rest = key.substr(5);
  auto dot = rest.rfind('.');
  if (dot == std::string_view::npos) return false;
  name = rest.substr(0, dot);
  field_name = rest.substr(dot + 1);
  return true;
}

Status apply_peer(Config& c, std::string_view key, std::string_view value) {
  std::string_view name, field_name;
  if (!split_peer_key(key, name, field_name))
    return make_error(Errc::invalid_argument,
                      std::string(key) +
                          ": unknown key (peer keys are peer.<name>.address "
                          "and peer.<name>.device)");
  if (!is_peer_name(name))
    return make_error(Errc::invalid_argument, std::string(key) + ": peer name '" + shown(name) +
                                                  "' must be 1..64 letters, digits, '-' or '_'");
  if (field_name != "address" && field_name != "device")
    return make_error(Errc::invalid_argument,
                      std::string(key) + ": unknown key (a peer has only address and device)");
  if (field_name == "address" && !is_host_port(value))
    return bad_value(key, "host:port with port 1..65535 (IPv6 as [addr]:port)", value);
  if (field_name == "device" && !DeviceId::parse(value))
    return bad_value(key, "a device id (52 base32 characters, as shown by syncctl status)", value);

  auto it = std::find_if(c.peers.begin(), c.peers.end(),
                         [&](const StaticPeer& p) { return p.name == name; });
  if (it == c.peers.end()) {
    if (c.peers.size() >= kMaxStaticPeers)
      return make_error(Errc::invalid_argument, std::string(key) +
                                                    ": too many static peers (at most " +
                                                    std::to_string(kMaxStaticPeers) + ")");
    c.peers.push_back(StaticPeer{std::string(name), {}, {}});
    it = c.peers.end() - 1;
  }
  (field_name == "address" ? it->address : it->device_id) = std::string(value);
  return {};
}

bool known_section(std::string_view s) {
  if (s == "daemon" || s == "api" || s == "sync" || s == "discovery" || s == "ble" ||
      s == "bundle" || s == "blob" || s == "storage" || s == "mirror" || s == "hub")
    return true;
  return s.substr(0, 5) == "peer." && is_peer_name(s.substr(5));
}

constexpr std::string_view kSections =
    "daemon, api, sync, discovery, ble, bundle, blob, storage, mirror, hub, peer.<name>";

// --- TOML ------------------------------------------------------------------------------------

// A TOML value in TOML syntax, for error messages.
std::string toml_text(const toml::node& node) {
  if (auto s = node.as_string()) return toml_quote(s->get());
  std::ostringstream os;
  node.visit([&os](auto&& v) { os << v; });
  return os.str();
}

// A key's value (its setter's text) in TOML syntax.
std::string toml_text(Kind kind, const std::string& text) {
  switch (kind) {
    case Kind::integer:
    case Kind::boolean: return text;
    case Kind::size: return parse_uint(text) ? text : toml_quote(text);
    case Kind::string:
    case Kind::mode: break;
  }
  return toml_quote(text);
}

// Sets `key` from a TOML value: the value must have the key's type, then its text goes through
// the key's setter (the same checks as for the previous format).
Status apply_value(Config& c, std::string_view key, const toml::node& v) {
  const KeySpec* spec = key.substr(0, 5) == "peer." ? nullptr : find_key(key);
  if (!spec && key.substr(0, 5) != "peer.") return unknown_key(key);
  auto set = [&](std::string_view text) {
    return spec ? spec->set(c, text) : apply_peer(c, key, text);
  };
  if (!spec) {  // a peer key: apply_peer names a bad peer name or field before the value
    auto s = v.as_string();
    return set(s ? std::string_view(s->get()) : std::string_view(toml_text(v)));
  }
  switch (spec->kind) {
    case Kind::boolean:
      if (auto b = v.as_boolean()) return set(b->get() ? "true" : "false");
      return bad_value(key, "true or false", toml_text(v));
    case Kind::string:
      if (auto s = v.as_string()) return set(s->get());
      return bad_value(key, "a string in double quotes", toml_text(v));
    case Kind::mode:
      if (auto s = v.as_string()) return set(s->get());
      if (auto i = v.as_integer();
          i && !!(i->flags() & toml::value_flags::format_as_octal) && i->get() >= 0)
        return set(
            format_octal(static_cast<std::uint32_t>(std::min<std::int64_t>(i->get(), 07777))));
      return bad_value(key, "an octal file mode as a string such as \"0660\" (or 0o660)",
                       toml_text(v));
    case Kind::size:
      if (auto s = v.as_string()) return set(s->get());
      [[fallthrough]];
    case Kind::integer:
      if (auto i = v.as_integer()) return set(std::to_string(i->get()));
      return set(toml_text(v));  // not a number: refused by the setter, which names the range
  }
  return {};
}

Error at_line(std::string_view source, const toml::node& n, std::string_view msg) {
  return make_error(
      Errc::invalid_argument,
      std::string(source) + ":" + std::to_string(n.source().begin.line) + ": " + std::string(msg));
}

// Applies a parsed TOML document: tables are sections, [peer.NAME] tables static peers.
Status apply_toml(Config& c, const toml::table& root, std::string_view source) {
  for (auto&& [name, node] : root) {
    const toml::table* section = node.as_table();
    std::string sec(name.str());
    if (!section)
      return at_line(source, node,
                     shown(sec) +
                         ": key outside a section (put it under [daemon], [api], "
                         "[sync], [storage]... or write it as section.key)");
    if (sec != "peer" && !known_section(sec))
      return at_line(
          source, node,
          "unknown section [" + shown(sec) + "] (sections: " + std::string(kSections) + ")");
    for (auto&& [key, value] : *section) {
      std::string full = sec + "." + std::string(key.str());
      if (sec == "peer") {
        const toml::table* peer = value.as_table();
        if (!peer)
          return at_line(source, value, shown(full) + ": expected a table [" + shown(full) + "]");
        for (auto&& [field_name, v] : *peer) {
          std::string peer_key = full + "." + std::string(field_name.str());
          if (auto st = apply_value(c, peer_key, v); !st.ok())
            return at_line(source, v, st.error().message);
        }
      } else if (auto st = apply_value(c, full, value); !st.ok()) {
        return at_line(source, value, st.error().message);
      }
    }
  }
  return {};
}

// --- the format before TOML --------------------------------------------------------------------

// The INI-like format of the releases before TOML, kept so that their config files still start
// the daemon (docs/operations.md "Upgrading"): "[section]", "key = value" with the value as
// text, '#' or ';' comments at the start of a line or after a space, "..." keeping spaces and
// comment characters (\" and \\ escape), a dotted key naming its section itself.
Status parse_previous(std::string_view text, std::string_view source, Config& config) {
  std::string section;
  std::map<std::string, std::size_t, std::less<>> seen;  // key -> line it was set on
  std::size_t line_no = 0;
  auto fail = [&](const std::string& msg) {
    return make_error(Errc::invalid_argument,
                      std::string(source) + ":" + std::to_string(line_no) + ": " + msg);
  };
  auto comment_at = [](std::string_view s, std::size_t i) {
    return (s[i] == '#' || s[i] == ';') && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t');
  };
  auto strip_comment = [&](std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i)
      if (comment_at(s, i)) return trim(s.substr(0, i));
    return trim(s);
  };
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      line = strip_comment(line);
      if (line.back() != ']') return fail("expected '[section]', got '" + shown(line) + "'");
      section = std::string(trim(line.substr(1, line.size() - 2)));
      if (!known_section(section))
        return fail("unknown section [" + shown(section) +
                    "] (sections: " + std::string(kSections) + ")");
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return fail("expected 'key = value' or '[section]', got '" + shown(line) + "'");
    std::string_view key = trim(line.substr(0, eq));
    std::string full = key.find('.') != std::string_view::npos || section.empty()
                           ? std::string(key)
                           : section + "." + std::string(key);
    if (full.find('.') == std::string::npos) return fail(shown(full) + ": key outside a section");
    std::string value;
    std::string_view raw = trim(line.substr(eq + 1));
    if (!raw.empty() && raw.front() == '"') {
      std::size_t i = 1;
      for (; i < raw.size() && raw[i] != '"'; ++i) {
        if (raw[i] == '\\' && i + 1 < raw.size() && (raw[i + 1] == '"' || raw[i + 1] == '\\'))
          ++i;
        else if (raw[i] == '\\')
          return fail(full + ": badly escaped quoted value");
        value += raw[i];
      }
      if (i >= raw.size() || !strip_comment(raw.substr(i + 1)).empty())
        return fail(full + ": unterminated quoted value, or text after it");
    } else {
      value = std::string(strip_comment(raw));
    }
    if (auto it = seen.find(full); it != seen.end())
      return fail(full + ": set twice (first on line " + std::to_string(it->second) + ")");
    seen.emplace(full, line_no);
    const KeySpec* spec = full.substr(0, 5) == "peer." ? nullptr : find_key(full);
    Status st = spec                           ? spec->set(config, value)
                : full.substr(0, 5) == "peer." ? apply_peer(config, full, value)
                                               : Status(unknown_key(full));
    if (!st.ok()) return fail(st.error().message);
  }
  return {};
}

// Checks across the keys of one file (finalize checks them again after the command line), and
// puts the static peers in name order, as TOML tables are.
Status check_file(Config& config, std::string_view source) {
  std::string at(source);
  if (config.mirror.retry_min_ms > config.mirror.retry_max_ms)
    return make_error(Errc::invalid_argument,
                      at + ": mirror.retry_min_ms: " + std::to_string(config.mirror.retry_min_ms) +
                          " is larger than mirror.retry_max_ms (" +
                          std::to_string(config.mirror.retry_max_ms) + ")");
  if (!config.mirror.password_file.empty() && config.mirror.password_file.is_relative())
    return make_error(Errc::invalid_argument,
                      at + ": mirror.password_file: must be an absolute path");
  std::sort(config.peers.begin(), config.peers.end(),
            [](const StaticPeer& a, const StaticPeer& b) { return a.name < b.name; });
  for (const auto& p : config.peers) {
    if (p.address.empty() || p.device_id.empty())
      return make_error(Errc::invalid_argument, std::string(source) + ": [peer." + p.name +
                                                    "]: needs both address and device");
  }
  return {};
}

}  // namespace

std::filesystem::path default_config_path() {
  return std::filesystem::path(FIELDSYNC_SYSCONFDIR) / "fieldsync" / "fieldsyncd.conf";
}

Status apply_setting(Config& config, std::string_view key, std::string_view value) {
  Kind kind = Kind::string;  // peer keys
  if (key.substr(0, 5) != "peer.") {
    const KeySpec* spec = find_key(key);
    if (!spec) return unknown_key(key);
    kind = spec->kind;
  }
  // The value as TOML when it is a TOML value (0, true, "a b", 0o660), else as a string, so
  // that --set daemon.log_level=debug needs no quotes. A string key takes the text as it is
  // unless it is quoted.
  std::string doc = "v = " + std::string(value);
  auto parsed = value.find_first_of("\r\n") == std::string_view::npos
                    ? toml::parse(std::string_view(doc), std::string_view("--set"))
                    : toml::parse_result{};
  const toml::node* node = parsed ? parsed.table().get("v") : nullptr;
  if (node && parsed.table().size() != 1) node = nullptr;
  if (node && (kind == Kind::string || kind == Kind::mode) && !node->is_string()) node = nullptr;
  if (node) return apply_value(config, key, *node);
  return apply_value(config, key, toml::value<std::string>(std::string(value)));
}

Status apply_assignment(Config& config, std::string_view assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string_view::npos)
    return make_error(Errc::invalid_argument,
                      "expected key=value (e.g. api.http_port=0), got '" + shown(assignment) + "'");
  return apply_setting(config, trim(assignment.substr(0, eq)), trim(assignment.substr(eq + 1)));
}

Result<std::string> get_setting(const Config& config, std::string_view key) {
  std::string_view name, field_name;
  if (split_peer_key(key, name, field_name)) {
    for (const auto& p : config.peers) {
      if (p.name != name) continue;
      if (field_name == "address") return toml_quote(p.address);
      if (field_name == "device") return toml_quote(p.device_id);
    }
    return make_error(Errc::not_found, std::string(key) + ": no such peer key");
  }
  const KeySpec* spec = find_key(key);
  if (!spec) return unknown_key(key);
  return toml_text(spec->kind, spec->get(config));
}

std::vector<std::string_view> setting_keys() {
  std::vector<std::string_view> out;
  for (const auto& k : key_table()) out.push_back(k.name);
  return out;
}

std::string to_config_text(const Config& config) {
  std::string out;
  std::string_view section;
  for (const auto& k : key_table()) {
    std::string_view sec = k.name.substr(0, k.name.find('.'));
    if (sec != section) {
      if (!section.empty()) out += '\n';
      out += "[" + std::string(sec) + "]\n";
      section = sec;
    }
    out += std::string(k.name.substr(sec.size() + 1)) + " = " + toml_text(k.kind, k.get(config)) +
           "\n";
  }
  for (const auto& p : config.peers) {
    out += "\n[peer." + p.name + "]\n";
    out += "address = " + toml_quote(p.address) + "\n";
    out += "device = " + toml_quote(p.device_id) + "\n";
  }
  return out;
}

// toml++ 3.3.0 asserts (and in a clang release build assumes) that a table header's key
// starts with a key character or a quote, but does not check it: "[#", "[[[" or "[" at the end
// of a line abort the daemon (marzer/tomlplusplus#301). Such a header, and "[[" (the
// configuration has no arrays of tables), are refused before toml++ sees the text. Returns the
// line number of the first one, or 0.
std::size_t bad_header_line(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // toml++ skips a BOM
  std::size_t line_no = 1;
  bool line_start = true;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') {
      ++line_no;
      line_start = true;
    } else if (c != ' ' && c != '\t') {
      if (line_start && c == '[') {
        std::size_t j = i + 1;
        while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j;
        if (j < text.size()) {
          char k = text[j];
          bool key_start = (k >= 'a' && k <= 'z') || (k >= 'A' && k <= 'Z') ||
                           (k >= '0' && k <= '9') || k == '_' || k == '-' || k == '"' ||
                           k == '\'' || k == ']';
          if (!key_start) return line_no;
        }
      }
      line_start = false;
    }
  }
  return 0;
}

Result<Config> parse_config(std::string_view text, std::string_view source, ConfigFormat* format) {
  if (format) *format = ConfigFormat::toml;
  std::string toml_error;
  if (std::size_t line = bad_header_line(text)) {
    toml_error = std::string(source) + ":" + std::to_string(line) +
                 ": not valid TOML: a table header must be [name] (the configuration has no "
                 "[[arrays of tables]])";
  } else {
    auto parsed = toml::parse(text, source);
    if (parsed) {
      Config config;
      FS_TRY(apply_toml(config, parsed.table(), source));
      FS_TRY(check_file(config, source));
      return config;
    }
    const auto& e = parsed.error();
    toml_error = std::string(source) + ":" + std::to_string(e.source().begin.line) +
                 ": not valid TOML (column " + std::to_string(e.source().begin.column) +
                 "): " + std::string(e.description());
  }
  // Not TOML: a file of the previous format still reads.
  Config previous;
  Status old = parse_previous(text, source, previous);
  if (old.ok()) old = check_file(previous, source);
  if (!old.ok())
    return make_error(
        Errc::invalid_argument,
        toml_error + "; nor a config file of the previous format: " + old.error().message);
  if (format) *format = ConfigFormat::previous;
  return previous;
}

std::string previous_format_warning(const std::filesystem::path& path) {
  return path.string() +
         " is in the config format of the releases before TOML; it is still read, but convert "
         "it: fieldsyncd --print-config --config " +
         path.string() + " prints it as TOML (docs/operations.md \"Upgrading\")";
}

Result<Config> load_config(const std::filesystem::path& path, ConfigFormat* format) {
  std::string name = path.string();
  std::FILE* f = std::fopen(name.c_str(), "rb");
  if (!f) {
    int err = errno;
    Errc code = err == ENOENT   ? Errc::not_found
                : err == EACCES ? Errc::permission_denied
                                : Errc::invalid_argument;
    return make_error(code, "cannot read config file " + name + ": " + std::strerror(err));
  }
  std::string text;
  char buf[8192];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxConfigFileBytes) {
      std::fclose(f);
      return make_error(Errc::too_large, "config file " + name + " is larger than " +
                                             format_size(kMaxConfigFileBytes) +
                                             " bytes; is it the right file?");
    }
  }
  int read_error = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (read_error)
    return make_error(Errc::invalid_argument,
                      "cannot read config file " + name + ": " + std::strerror(read_error));
  if (text.find('\0') != std::string::npos)
    return make_error(Errc::invalid_argument,
                      "config file " + name + " contains a NUL byte; is it a text file?");
  return parse_config(text, name, format);
}

Environment Environment::current() {
  Environment env;
  auto get = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
  env.home = get("HOME");
  env.xdg_data_home = get("XDG_DATA_HOME");
  env.state_directory = get("STATE_DIRECTORY");
  env.runtime_directory = get("RUNTIME_DIRECTORY");
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) env.hostname = host;
  return env;
}

Status finalize(Config& config, bool is_root) {
  return finalize(config, is_root, Environment::current());
}

Status finalize(Config& config, bool is_root, const Environment& env) {
  // systemd may list several directories separated by ':'; ours is the first.
  auto first = [](const std::string& list) { return list.substr(0, list.find(':')); };
  auto absolute = [](const std::filesystem::path& p) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(p, ec);
    return (ec ? p : abs).lexically_normal();
  };

  if (config.data_dir.empty()) {
    if (env.state_directory) {
      config.data_dir = first(*env.state_directory);
    } else if (is_root) {
      config.data_dir = "/var/lib/fieldsync";
    } else if (env.xdg_data_home && env.xdg_data_home->front() == '/') {
      config.data_dir = std::filesystem::path(*env.xdg_data_home) / "fieldsync";
    } else if (env.home) {
      config.data_dir = std::filesystem::path(*env.home) / ".local/share/fieldsync";
    } else {
      return make_error(Errc::failed_precondition,
                        "daemon.data_dir: not set, and $HOME is unset to derive a default");
    }
  }
  config.data_dir = absolute(config.data_dir);
  if (config.data_dir.has_filename() == false && config.data_dir != "/")
    config.data_dir = config.data_dir.parent_path();  // drop a trailing '/'
  config.storage.data_dir = config.data_dir;

  bool socket_defaulted = config.api.socket_path.empty();
  if (socket_defaulted) {
    if (env.runtime_directory) {
      config.api.socket_path = std::filesystem::path(first(*env.runtime_directory)) / "api.sock";
    } else if (is_root) {
      config.api.socket_path = "/run/fieldsync/api.sock";
    } else {
      config.api.socket_path = config.data_dir / "api.sock";
    }
  }
  config.api.socket_path = absolute(config.api.socket_path);
  std::size_t max_socket = sizeof(sockaddr_un{}.sun_path) - 1;
  if (config.api.socket_path.string().size() > max_socket) {
    return make_error(Errc::invalid_argument,
                      "api.socket_path: '" + config.api.socket_path.string() + "' is " +
                          std::to_string(config.api.socket_path.string().size()) +
                          " bytes, but a Unix socket path may have at most " +
                          std::to_string(max_socket) +
                          (socket_defaulted ? " (it defaults to <data_dir>/api.sock; set "
                                              "api.socket_path to a shorter path)"
                                            : ""));
  }

  if (config.device_name.empty()) {
    std::string host = env.hostname.substr(0, kMaxDeviceNameBytes);
    config.device_name = host.empty() ? "fieldsync" : host;
  }

  if (config.sync.retry_min_ms > config.sync.retry_max_ms)
    return make_error(Errc::invalid_argument,
                      "sync.retry_min_ms: " + std::to_string(config.sync.retry_min_ms) +
                          " is larger than sync.retry_max_ms (" +
                          std::to_string(config.sync.retry_max_ms) + ")");
  if (config.mirror.retry_min_ms > config.mirror.retry_max_ms)
    return make_error(Errc::invalid_argument,
                      "mirror.retry_min_ms: " + std::to_string(config.mirror.retry_min_ms) +
                          " is larger than mirror.retry_max_ms (" +
                          std::to_string(config.mirror.retry_max_ms) + ")");
  if (!config.mirror.password_file.empty() && config.mirror.password_file.is_relative())
    return make_error(Errc::invalid_argument, "mirror.password_file: must be an absolute path");
  for (const auto& p : config.peers) {
    if (p.address.empty() || p.device_id.empty())
      return make_error(Errc::invalid_argument, "peer." + p.name + ": needs both peer." + p.name +
                                                    ".address and peer." + p.name + ".device");
  }
  return {};
}

std::vector<std::string> config_notices(const Config& config) {
  std::vector<std::string> out;
  if (config.api.http_enabled && !is_loopback(config.api.http_address))
    out.push_back("api.http_address = " + config.api.http_address +
                  " is not a loopback address: the HTTP API is reachable from the network "
                  "(every request still needs the bearer token)");
  if (!config.storage.durable)
    out.push_back(
        "storage.durable = false: a power loss can lose the most recently acknowledged writes");
  if (config.api.max_streams >=
      std::min(config.api.max_connections, config.api.max_unix_connections))
    out.push_back("api.max_streams = " + std::to_string(config.api.max_streams) +
                  " is not below both connection budgets (api.max_connections, "
                  "api.max_unix_connections): open streams can leave no room for other requests");
  if (config.mirror.postgres.find("password") != std::string::npos)
    out.push_back(
        "mirror.postgres holds a password: keep it in mirror.password_file (mode 0600) or "
        "~/.pgpass instead, the config file is readable by more people");
  return out;
}

std::vector<std::string> split_project_list(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim(list.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace fieldsync::config
