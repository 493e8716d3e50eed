#include "ipc/api_access.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/encoding.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::ipc {

namespace {
constexpr std::size_t kTokenBytes = 32;

bool valid_token(std::string_view t) {
  if (t.size() != kTokenBytes * 2) return false;
  for (char c : t)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}
}  // namespace

Result<std::string> load_or_create_token(const std::filesystem::path& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      std::string t = ss.str();
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      if (!valid_token(t))
        return make_error(Errc::data_loss, "API token file " + path.string() +
                                               " is corrupt; delete it to create a new token");
      ::chmod(path.c_str(), 0600);  // tighten a file copied with looser permissions
      return t;
    }
    std::string token = to_hex(crypto::random_bytes(kTokenBytes));
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // created concurrently: read it
      return make_error(Errc::internal, "cannot create API token file " + path.string() + ": " +
                                            std::strerror(errno));
    }
    std::string line = token + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (!ok) {
      ::unlink(path.c_str());
      return make_error(Errc::internal, "cannot write API token file " + path.string());
    }
    return token;
  }
  return make_error(Errc::internal, "cannot read API token file " + path.string());
}

bool is_loopback_host(std::string_view host) {
  std::string_view name = host;
  if (!name.empty() && name.front() == '[') {
    auto close = name.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = name.substr(close + 1);
    name = name.substr(0, close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    host = rest;
  } else {
    auto colon = name.find(':');
    std::string_view rest = colon == std::string_view::npos ? "" : name.substr(colon);
    name = name.substr(0, colon);
    host = rest;
  }
  // What follows the name, if anything, must be ":<digits>".
  if (!host.empty()) {
    if (host.size() < 2) return false;
    for (char c : host.substr(1))
      if (c < '0' || c > '9') return false;
  }
  std::string lower;
  for (char c : name)
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return lower == "localhost" || lower == "127.0.0.1" || lower == "[::1]";
}

Status check_tcp_access(const ApiRequest& request, std::string_view token) {
  auto host = request.header("host");
  if (!host || !is_loopback_host(*host))
    return make_error(Errc::permission_denied,
                      "Host header must be localhost, 127.0.0.1 or [::1] on the TCP API");
  auto auth = request.header("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!auth || auth->size() < kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), auth->begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
    return make_error(Errc::unauthenticated,
                      "missing bearer token: send 'Authorization: Bearer <token>' (the token is in "
                      "the data directory's api.token)");
  std::string_view given = std::string_view(*auth).substr(kBearer.size());
  while (!given.empty() && given.back() == ' ') given.remove_suffix(1);
  if (!crypto::constant_time_equal(as_bytes(given), as_bytes(token)))
    return make_error(Errc::unauthenticated, "wrong bearer token");
  return {};
}

}  // namespace fieldsync::ipc
