// Text encodings for ids: lowercase hex and RFC 4648 base32 (lowercase, no padding).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.hpp"

namespace fieldsync {

std::string to_hex(ByteView b);
std::optional<Bytes> from_hex(std::string_view s);
std::string to_base32(ByteView b);
std::optional<Bytes> from_base32(std::string_view s);

}  // namespace fieldsync
