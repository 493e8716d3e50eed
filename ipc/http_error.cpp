#include "ipc/http_error.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace fieldsync::ipc {

int http_status(Errc code) {
  switch (code) {
    case Errc::ok: return 200;
    case Errc::invalid_argument: return 400;
    case Errc::unauthenticated: return 401;
    case Errc::permission_denied: return 403;
    case Errc::not_found: return 404;
    case Errc::already_exists: return 409;
    case Errc::failed_precondition: return 409;
    case Errc::aborted: return 412;  // Precondition Failed: If-Match / If-None-Match
    case Errc::too_large: return 413;
    case Errc::verification_failed: return 422;
    case Errc::unsupported: return 501;
    case Errc::resource_exhausted: return 503;  // connections, disk or map full: retry later
    case Errc::unavailable: return 503;
    case Errc::data_loss: return 500;
    case Errc::internal: return 500;
  }
  return 500;
}

namespace {
ApiResponse make(int status, std::string_view name, std::string_view message,
                 std::string_view extra) {
  ApiResponse r;
  r.status = status;
  r.body = "{\"error\":" + boost::json::serialize(boost::json::string(name)) +
           ",\"message\":" + boost::json::serialize(boost::json::string(message));
  if (!extra.empty()) {
    r.body += ',';
    r.body += extra;
  }
  r.body += "}";
  if (status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}
}  // namespace

ApiResponse error_response(const Error& error, std::string_view extra_json_members) {
  return make(http_status(error.code), errc_name(error.code), error.message, extra_json_members);
}

ApiResponse storage_error_response(const Error& error) {
  if (error.code != Errc::resource_exhausted) return error_response(error);
  return make(507, errc_name(error.code), error.message, {});
}

ApiResponse method_not_allowed(std::string_view method, std::string_view allowed) {
  ApiResponse r = make(405, errc_name(Errc::unsupported),
                       std::string("method ") + std::string(method) + " is not allowed here", {});
  r.headers.emplace_back("Allow", std::string(allowed));
  return r;
}

}  // namespace fieldsync::ipc
