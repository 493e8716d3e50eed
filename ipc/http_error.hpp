// The one mapping from fieldsync::Errc to an HTTP status and JSON error body
// {"error": "<errc name>", "message": "..."}. Every error response of the API comes from here.
// Stateless; thread-safe.
#pragma once

#include <string_view>

#include "common/error.hpp"
#include "ipc/api_types.hpp"

namespace fieldsync::ipc {

int http_status(Errc code);

// The JSON error response for `error`. `extra_json_members`, if not empty, is inserted as
// further members of the error object (e.g. "\"conflicting_fields\":[...]").
ApiResponse error_response(const Error& error, std::string_view extra_json_members = {});

// The error response for storing what a request sent (blob uploads): as error_response(), but
// resource_exhausted (the disk is full, blob.project_quota_bytes is reached) is 507
// Insufficient Storage, which says that retrying the same request will not help.
ApiResponse storage_error_response(const Error& error);

// 405: the path exists but not with this method (an HTTP-level refusal with no Errc of its own).
ApiResponse method_not_allowed(std::string_view method, std::string_view allowed);

}  // namespace fieldsync::ipc
