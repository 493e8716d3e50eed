// The one pair of functions mapping fieldsync::Errc to and from protocol error codes
// (the ERROR frame's u16 code; table in docs/protocol.md "Error codes"). Wire numbers
// are fixed forever; an unknown number from a newer peer maps to Errc::internal.
#pragma once

#include <cstdint>

#include "common/error.hpp"

namespace fieldsync::sync {

std::uint16_t to_wire_code(Errc code);
Errc from_wire_code(std::uint16_t code);

}  // namespace fieldsync::sync
