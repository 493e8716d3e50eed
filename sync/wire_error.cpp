#include "sync/wire_error.hpp"

namespace fieldsync::sync {

namespace {
// Index = wire code. Never reorder; append only.
constexpr Errc kTable[] = {
    Errc::ok,                   // 0
    Errc::invalid_argument,     // 1
    Errc::not_found,            // 2
    Errc::already_exists,       // 3
    Errc::failed_precondition,  // 4
    Errc::too_large,            // 5
    Errc::resource_exhausted,   // 6
    Errc::unauthenticated,      // 7
    Errc::permission_denied,    // 8
    Errc::verification_failed,  // 9
    Errc::unavailable,          // 10
    Errc::unsupported,          // 11
    Errc::data_loss,            // 12
    Errc::internal,             // 13
    Errc::aborted,              // 14
};
constexpr std::uint16_t kCount = sizeof kTable / sizeof kTable[0];
}  // namespace

std::uint16_t to_wire_code(Errc code) {
  for (std::uint16_t i = 0; i < kCount; ++i)
    if (kTable[i] == code) return i;
  return 13;
}

Errc from_wire_code(std::uint16_t code) { return code < kCount ? kTable[code] : Errc::internal; }

}  // namespace fieldsync::sync
