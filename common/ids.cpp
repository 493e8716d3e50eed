#include "common/ids.hpp"

#include "common/encoding.hpp"

namespace fieldsync {

std::string DeviceId::str() const { return to_base32(view()); }

std::string DeviceId::short_str() const {
  std::string s = str().substr(0, 16);
  return s.substr(0, 4) + "-" + s.substr(4, 4) + "-" + s.substr(8, 4) + "-" + s.substr(12, 4);
}

std::optional<DeviceId> DeviceId::parse(std::string_view text) {
  if (text.size() != 52) return std::nullopt;
  auto b = from_base32(text);
  if (!b) return std::nullopt;
  return id_from_bytes<DeviceId>(*b);
}

std::string ProjectId::str() const { return to_hex(view()); }

std::optional<ProjectId> ProjectId::parse(std::string_view text) {
  auto b = from_hex(text);
  if (!b) return std::nullopt;
  return id_from_bytes<ProjectId>(*b);
}

std::string VersionId::str() const { return to_hex(view()); }

std::optional<VersionId> VersionId::parse(std::string_view text) {
  auto b = from_hex(text);
  if (!b) return std::nullopt;
  return id_from_bytes<VersionId>(*b);
}

}  // namespace fieldsync
