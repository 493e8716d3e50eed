// Access policy of the local API.
//
// Unix socket: no token; the socket file's mode and group decide who may connect.
// TCP (loopback by default): every request needs `Authorization: Bearer <token>`, the token
// being 32 random bytes (hex) kept in <data_dir>/api.token (0600), compared in constant time;
// and its Host header must name the loopback (localhost, 127.0.0.1, [::1], any port), which
// stops a web page from reaching the API through DNS rebinding.
// Stateless functions; thread-safe.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "ipc/api_types.hpp"

namespace fieldsync::ipc {

// Reads the token file, or creates it (0600) with a fresh token when absent.
// Errors: data_loss when the file exists but holds no valid token; internal on I/O errors.
Result<std::string> load_or_create_token(const std::filesystem::path& path);

// True for localhost / 127.0.0.1 / [::1], with or without ":port".
bool is_loopback_host(std::string_view host);

// permission_denied for a foreign Host header, unauthenticated for a missing or wrong token.
Status check_tcp_access(const ApiRequest& request, std::string_view token);

}  // namespace fieldsync::ipc
