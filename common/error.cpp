#include "common/error.hpp"

namespace fieldsync {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::failed_precondition: return "failed_precondition";
    case Errc::too_large: return "too_large";
    case Errc::resource_exhausted: return "resource_exhausted";
    case Errc::unauthenticated: return "unauthenticated";
    case Errc::permission_denied: return "permission_denied";
    case Errc::verification_failed: return "verification_failed";
    case Errc::unavailable: return "unavailable";
    case Errc::unsupported: return "unsupported";
    case Errc::data_loss: return "data_loss";
    case Errc::internal: return "internal";
  }
  return "internal";
}

}  // namespace fieldsync
