#include "transports/address.hpp"
#include "transports/transport.hpp"

#include "common/error.hpp"

namespace fieldsync::transports {

namespace {

bool scheme_char(char c, bool first) {
  if (c >= 'a' && c <= 'z') return true;
  if (first) return false;
  return (c >= '0' && c <= '9') || c == '+' || c == '.' || c == '-';
}

}  // namespace

Result<Address> parse_address(std::string_view text) {
  auto bad = [&](std::string why) {
    return make_error(Errc::invalid_argument,
                      "bad address " + quote_input(text) + ": " + std::move(why));
  };
  if (text.empty()) return bad("empty");
  if (text.size() > kMaxAddressBytes)
    return bad("longer than " + std::to_string(kMaxAddressBytes) + " bytes");
  for (char c : text)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      return bad("only printable ASCII without spaces");
  Address a;
  auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    a.scheme = "tcp";
    a.rest = std::string(text);
  } else {
    a.scheme = std::string(text.substr(0, sep));
    a.rest = std::string(text.substr(sep + 3));
    if (a.scheme.empty() || a.scheme.size() > 16) return bad("scheme must be 1..16 characters");
    for (std::size_t i = 0; i < a.scheme.size(); ++i)
      if (!scheme_char(a.scheme[i], i == 0)) return bad("scheme must be lower case, like tcp://");
  }
  if (a.rest.empty()) return bad("nothing after the scheme");
  if (a.scheme == "tcp" && !split_host_port(a.rest))
    return bad("must be host:port (IPv6 as [addr]:port)");
  return a;
}

std::optional<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view a) {
  auto colon = a.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= a.size()) return std::nullopt;
  std::string_view host = a.substr(0, colon), port = a.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // an IPv6 address needs brackets
  }
  if (port.size() > 5) return std::nullopt;
  std::uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = p * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return std::nullopt;
  return std::make_pair(std::string(host), static_cast<std::uint16_t>(p));
}

}  // namespace fieldsync::transports

namespace fieldsync::transports {

std::string_view link_class_name(LinkClass c) {
  switch (c) {
    case LinkClass::fast: return "fast";
    case LinkClass::slow: return "slow";
    case LinkClass::one_way: return "one_way";
  }
  return "fast";
}

}  // namespace fieldsync::transports
