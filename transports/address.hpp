// Address: where a device can be reached, as a URI whose scheme names the transport:
//   tcp://10.0.0.5:7891   tcp://[fe80::1%eth0]:7891   tcp://hub.local:7891
//   mem://alpha           (the in-memory transport of the tests)
// A bare "host:port" (the form of older configs, invite codes and the API) means tcp.
// Limits: kMaxAddressBytes for the whole text; a scheme is 1..16 of [a-z0-9+.-] starting
// with a letter; the rest is printable ASCII without spaces.
// Thread-safety: value types, no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.hpp"

namespace fieldsync::transports {

inline constexpr std::size_t kMaxAddressBytes = 255;

struct Address {
  std::string scheme;  // "tcp"
  std::string rest;    // after "://": "10.0.0.5:7891"

  std::string str() const { return scheme + "://" + rest; }
  friend bool operator==(const Address&, const Address&) = default;
  friend auto operator<=>(const Address&, const Address&) = default;
};

// Parses a URI, or a bare "host:port" as tcp. Only the syntax common to every scheme is
// checked here; each transport checks its own part when dialing. invalid_argument.
Result<Address> parse_address(std::string_view text);

// "host:port" / "[v6]:port" -> (host without brackets, port 1..65535).
std::optional<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view hp);

}  // namespace fieldsync::transports
