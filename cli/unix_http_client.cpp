#include "cli/unix_http_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace fieldsync::cli {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Parses "HTTP/1.1 200 OK\r\nName: value\r\n...\r\n\r\n" from the front of `buf`.
// Returns the header length, 0 if incomplete, or -1 if malformed.
long parse_head(const std::string& buf, HttpReply& reply) {
  auto end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return buf.size() > 64 * 1024 ? -1 : 0;
  std::string_view head(buf.data(), end);
  auto line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12) return -1;
  auto sp = status_line.find(' ');
  reply.status = std::atoi(std::string(status_line.substr(sp + 1, 3)).c_str());
  if (reply.status < 100) return -1;
  std::size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view line = head.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string name(line.substr(0, colon));
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      reply.headers[name] = std::string(value);
    }
    pos = e + 2;
  }
  return static_cast<long>(end + 4);
}

std::string build_request(const std::string& method, const std::string& target,
                          const std::string& body) {
  std::string r = method + " " + target +
                  " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: syncctl\r\n"
                  "Connection: close\r\n";
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")
    r +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  r += "\r\n";
  r += body;
  return r;
}

}  // namespace

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

Result<int> UnixHttpClient::connect_socket() {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const std::string& p = path_.native();
  if (p.size() >= sizeof sa.sun_path)
    return make_error(Errc::invalid_argument, "socket path too long: " + p);
  std::memcpy(sa.sun_path, p.data(), p.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(Errc::internal, std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ENOENT)
      return make_error(Errc::unavailable, "fieldsyncd is not running (no socket at " + p + ")");
    if (err == ECONNREFUSED)
      return make_error(Errc::unavailable,
                        "fieldsyncd is not running (nothing listens on " + p + ")");
    if (err == EACCES || err == EPERM)
      return make_error(Errc::permission_denied,
                        "permission denied on " + p +
                            " (ask for membership of the socket's group, see api.socket_group)");
    return make_error(Errc::unavailable, "cannot connect to " + p + ": " + std::strerror(err));
  }
  return fd;
}

Result<HttpReply> UnixHttpClient::request(const std::string& method, const std::string& target,
                                          const std::string& body) {
  auto c = connect_socket();
  if (!c) return c.error();
  Fd fd{*c};
  if (!send_all(fd.fd, build_request(method, target, body)))
    return make_error(Errc::unavailable,
                      std::string("sending to fieldsyncd failed: ") + std::strerror(errno));
  std::string buf;
  char tmp[65536];
  while (true) {
    ssize_t n = ::recv(fd.fd, tmp, sizeof tmp, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET && !buf.empty()) break;
      return make_error(Errc::unavailable,
                        std::string("reading from fieldsyncd failed: ") + std::strerror(errno));
    }
    if (n == 0) break;
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  HttpReply reply;
  long head = parse_head(buf, reply);
  if (head <= 0) return make_error(Errc::internal, "malformed response from fieldsyncd");
  reply.body = buf.substr(static_cast<std::size_t>(head));
  if (auto it = reply.headers.find("content-length"); it != reply.headers.end()) {
    auto len = static_cast<std::size_t>(std::strtoull(it->second.c_str(), nullptr, 10));
    if (reply.body.size() < len)
      return make_error(Errc::unavailable, "truncated response from fieldsyncd");
    reply.body.resize(len);
  }
  return reply;
}

Status UnixHttpClient::stream(const std::string& target,
                              const std::function<void(const HttpReply&)>& on_head,
                              const std::function<bool(std::string_view)>& on_data) {
  auto c = connect_socket();
  if (!c) return c.error();
  Fd fd{*c};
  if (!send_all(fd.fd, build_request("GET", target, {})))
    return make_error(Errc::unavailable, "sending to fieldsyncd failed");
  std::string buf;
  bool have_head = false;
  char tmp[16384];
  while (true) {
    ssize_t n = ::recv(fd.fd, tmp, sizeof tmp, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::unavailable,
                        std::string("connection to fieldsyncd lost: ") + std::strerror(errno));
    }
    if (n == 0) return {};
    if (!have_head) {
      buf.append(tmp, static_cast<std::size_t>(n));
      HttpReply reply;
      long head = parse_head(buf, reply);
      if (head < 0) return make_error(Errc::internal, "malformed response from fieldsyncd");
      if (head == 0) continue;
      have_head = true;
      on_head(reply);
      std::string rest = buf.substr(static_cast<std::size_t>(head));
      buf.clear();
      if (!rest.empty() && !on_data(rest)) return {};
    } else if (!on_data(std::string_view(tmp, static_cast<std::size_t>(n)))) {
      return {};
    }
  }
}

}  // namespace fieldsync::cli
