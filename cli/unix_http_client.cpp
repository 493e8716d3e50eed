#include "cli/unix_http_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

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

// Pieces of an uploaded body are read and sent this size at a time.
constexpr std::size_t kPieceBytes = 64 * 1024;
// Longest chunk-size line (with extensions) or trailer line accepted in a chunked response.
constexpr std::size_t kMaxChunkLine = 4096;
// An error answer's body is kept up to this size (it is a short JSON object).
constexpr std::size_t kMaxErrorBody = 1 << 20;

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      if (e == ENOSPC || e == EDQUOT || e == EFBIG)
        return make_error(
            Errc::resource_exhausted,
            std::string("disk full: cannot write the body (") + std::strerror(e) + ")");
      return make_error(Errc::internal, std::string("cannot write the body: ") + std::strerror(e));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Error file_error(const std::string& what, int e) {
  Errc code = Errc::internal;
  if (e == ENOSPC || e == EDQUOT || e == EFBIG) code = Errc::resource_exhausted;
  if (e == EACCES || e == EPERM || e == EROFS) code = Errc::permission_denied;
  if (e == ENOENT || e == ENOTDIR) code = Errc::not_found;
  return make_error(code, what + ": " + std::strerror(e) +
                              (code == Errc::resource_exhausted ? " (disk full)" : ""));
}

bool has_token(std::string_view list, std::string_view token) {
  std::string lower(list);
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return lower.find(token) != std::string::npos;
}

// Reads one response from a connection: the head, then the body as framed by
// `Transfer-Encoding: chunked`, `Content-Length` or the end of the connection, handing the body
// to a callback piece by piece (never more than one read is buffered).
class ResponseReader {
 public:
  explicit ResponseReader(int fd) : fd_(fd) {}

  // Reads up to the end of the head (1xx interim answers are skipped).
  Status read_head(HttpReply& reply) {
    while (true) {
      auto end = buf_.find("\r\n\r\n", pos_);
      if (end != std::string::npos) {
        HttpReply r;
        long n = parse_head(buf_.substr(pos_, end + 4 - pos_), r);
        if (n <= 0) return make_error(Errc::internal, "malformed response from fieldsyncd");
        pos_ = end + 4;
        if (r.status / 100 == 1) continue;
        reply = std::move(r);
        return {};
      }
      if (buf_.size() - pos_ > 64 * 1024)
        return make_error(Errc::internal, "malformed response from fieldsyncd");
      auto n = fill();
      if (!n) return n.error();
      if (*n == 0)
        return make_error(
            Errc::unavailable,
            buf_.size() == pos_
                ? "fieldsyncd closed the connection without an answer (see the daemon's log)"
                : "malformed response from fieldsyncd (the connection ended inside the header)");
    }
  }

  // Reads the body after read_head(); reply.body_bytes counts it. A callback error stops.
  Status read_body(HttpReply& reply, const std::function<Status(std::string_view)>& on_body) {
    auto deliver = [&](std::size_t n) -> Status {
      std::string_view piece(buf_.data() + pos_, n);
      pos_ += n;
      reply.body_bytes += n;
      return on_body(piece);
    };
    auto incomplete = [&] {
      return make_error(Errc::data_loss,
                        "incomplete response body: fieldsyncd closed the connection after " +
                            std::to_string(reply.body_bytes) +
                            " bytes, before the body was complete (see the daemon's log)");
    };
    auto te = reply.headers.find("transfer-encoding");
    if (te != reply.headers.end() && has_token(te->second, "chunked")) {
      while (true) {
        auto line = read_line();
        if (!line) return line.error().code == Errc::data_loss ? incomplete() : line.error();
        std::string_view size_text(*line);
        size_text = size_text.substr(0, size_text.find(';'));
        while (!size_text.empty() && (size_text.back() == ' ' || size_text.back() == '\t'))
          size_text.remove_suffix(1);
        std::uint64_t size = 0;
        if (size_text.empty() || size_text.size() > 15)
          return make_error(Errc::internal, "malformed chunked body from fieldsyncd");
        for (char ch : size_text) {
          int v = std::isdigit(static_cast<unsigned char>(ch))
                      ? ch - '0'
                      : (std::tolower(static_cast<unsigned char>(ch)) >= 'a' &&
                                 std::tolower(static_cast<unsigned char>(ch)) <= 'f'
                             ? std::tolower(static_cast<unsigned char>(ch)) - 'a' + 10
                             : -1);
          if (v < 0) return make_error(Errc::internal, "malformed chunked body from fieldsyncd");
          size = size * 16 + static_cast<std::uint64_t>(v);
        }
        if (size == 0) {  // the last chunk: the trailer follows up to an empty line
          while (true) {
            auto trailer = read_line();
            if (!trailer)
              return trailer.error().code == Errc::data_loss ? incomplete() : trailer.error();
            if (trailer->empty()) return {};
          }
        }
        while (size > 0) {
          if (pos_ == buf_.size()) {
            auto n = fill();
            if (!n) return n.error();
            if (*n == 0) return incomplete();
          }
          auto take = static_cast<std::size_t>(std::min<std::uint64_t>(size, buf_.size() - pos_));
          FS_TRY(deliver(take));
          size -= take;
        }
        auto crlf = read_line();
        if (!crlf) return crlf.error().code == Errc::data_loss ? incomplete() : crlf.error();
        if (!crlf->empty())
          return make_error(Errc::internal, "malformed chunked body from fieldsyncd");
      }
    }
    auto cl = reply.headers.find("content-length");
    if (cl != reply.headers.end()) {
      std::uint64_t left = std::strtoull(cl->second.c_str(), nullptr, 10);
      while (left > 0) {
        if (pos_ == buf_.size()) {
          auto n = fill();
          if (!n) return n.error();
          if (*n == 0) return incomplete();
        }
        auto take = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf_.size() - pos_));
        FS_TRY(deliver(take));
        left -= take;
      }
      return {};
    }
    if (reply.status == 204 || reply.status == 304) return {};
    while (true) {  // delimited by the end of the connection
      if (pos_ < buf_.size()) FS_TRY(deliver(buf_.size() - pos_));
      auto n = fill();
      if (!n) return n.error();
      if (*n == 0) return {};
    }
  }

 private:
  // Appends what the socket has (0 at its end; a reset counts as the end).
  Result<std::size_t> fill() {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    } else if (pos_ >= kPieceBytes) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    char tmp[kPieceBytes];
    while (true) {
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return std::size_t{0};
        return make_error(Errc::unavailable,
                          std::string("reading from fieldsyncd failed: ") + std::strerror(errno));
      }
      buf_.append(tmp, static_cast<std::size_t>(n));
      return static_cast<std::size_t>(n);
    }
  }
  // One CRLF-terminated line (without the CRLF); data_loss when the connection ends first.
  Result<std::string> read_line() {
    while (true) {
      auto end = buf_.find("\r\n", pos_);
      if (end != std::string::npos) {
        std::string line = buf_.substr(pos_, end - pos_);
        pos_ = end + 2;
        return line;
      }
      if (buf_.size() - pos_ > kMaxChunkLine)
        return make_error(Errc::internal, "malformed chunked body from fieldsyncd");
      auto n = fill();
      if (!n) return n.error();
      if (*n == 0) return make_error(Errc::data_loss, "incomplete");
    }
  }

  int fd_;
  std::string buf_;
  std::size_t pos_ = 0;
};

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
  const bool sent = send_all(fd.fd, build_request(method, target, body));
  const int send_errno = errno;
  // An answer that came before the whole request was sent (e.g. 413) is still read.
  ResponseReader reader(fd.fd);
  HttpReply reply;
  if (auto head = reader.read_head(reply); !head) {
    if (!sent)
      return make_error(Errc::unavailable,
                        std::string("sending to fieldsyncd failed: ") + std::strerror(send_errno));
    return head.error();
  }
  FS_TRY(reader.read_body(reply, [&](std::string_view piece) -> Status {
    reply.body.append(piece);
    return {};
  }));
  return reply;
}

Result<HttpReply> UnixHttpClient::download(const std::string& method, const std::string& target,
                                           int out_fd) {
  return download_to(method, target,
                     [out_fd](std::string_view piece) { return write_all(out_fd, piece); });
}

Result<HttpReply> UnixHttpClient::download_to(
    const std::string& method, const std::string& target,
    const std::function<Status(std::string_view)>& on_data) {
  auto c = connect_socket();
  if (!c) return c.error();
  Fd fd{*c};
  if (!send_all(fd.fd, build_request(method, target, {})))
    return make_error(Errc::unavailable,
                      std::string("sending to fieldsyncd failed: ") + std::strerror(errno));
  ResponseReader reader(fd.fd);
  HttpReply reply;
  FS_TRY(reader.read_head(reply));
  // The bytes asked for: 200 or 206 (a 202 "on its way" carries JSON, kept like an error's).
  const bool success = reply.status == 200 || reply.status == 206;
  FS_TRY(reader.read_body(reply, [&](std::string_view piece) -> Status {
    if (!success) {
      if (reply.body.size() < kMaxErrorBody) reply.body.append(piece);
      return {};
    }
    return on_data(piece);
  }));
  return reply;
}

Result<HttpReply> UnixHttpClient::download_to_file(const std::string& method,
                                                   const std::string& target,
                                                   const std::filesystem::path& file) {
  std::filesystem::path partial = file;
  partial += ".partial";
  // A leftover of an earlier attempt is replaced: O_EXCL then guarantees a file of our own,
  // with our mode, and never one reached through a symlink planted there.
  if (::unlink(partial.c_str()) != 0 && errno != ENOENT)
    return file_error("cannot replace " + partial.string(), errno);
  int raw = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (raw < 0) return file_error("cannot create " + partial.string(), errno);
  Fd out{raw};
  auto discard = [&] {
    ::close(out.fd);
    out.fd = -1;
    ::unlink(partial.c_str());
  };
  if (::fchmod(out.fd, 0600) != 0) {  // a umask may have taken the owner's bits away
    int e = errno;
    discard();
    return file_error("cannot set the mode of " + partial.string(), e);
  }
  auto reply = download(method, target, out.fd);
  if (!reply) {
    discard();
    Error e = reply.error();
    if (e.code != Errc::unavailable && e.code != Errc::permission_denied)
      e.message += "; removed " + partial.string() + ", " + file.string() + " is unchanged";
    return e;
  }
  if (reply->status != 200 && reply->status != 206) {
    discard();
    return reply;
  }
  if (::fsync(out.fd) != 0) {
    int e = errno;
    discard();
    return file_error("cannot write " + partial.string() + " to disk (fsync)", e);
  }
  int closed = ::close(out.fd);
  out.fd = -1;
  if (closed != 0) {
    int e = errno;
    ::unlink(partial.c_str());
    return file_error("cannot write " + partial.string(), e);
  }
  if (::rename(partial.c_str(), file.c_str()) != 0) {
    int e = errno;
    ::unlink(partial.c_str());
    return file_error("cannot rename " + partial.string() + " to " + file.string(), e);
  }
  // The rename itself reaches the disk with the directory.
  auto dir = file.parent_path();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return reply;
}

Result<HttpReply> UnixHttpClient::upload(const std::string& method, const std::string& target,
                                         int in_fd, std::uint64_t size,
                                         const std::string& content_type) {
  auto c = connect_socket();
  if (!c) return c.error();
  Fd fd{*c};
  std::string head = method + " " + target +
                     " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: syncctl\r\n"
                     "Connection: close\r\nContent-Type: " +
                     content_type + "\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
  bool broken = !send_all(fd.fd, head);
  std::vector<char> piece(kPieceBytes);
  std::size_t have = 0, off = 0;
  std::uint64_t left = size;
  bool answered = false;  // the daemon answered (or closed) before taking the whole body
  while (!broken && !answered && (left > 0 || off < have)) {
    if (off == have) {
      ssize_t n = ::read(in_fd, piece.data(),
                         static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), left)));
      if (n < 0) {
        if (errno == EINTR) continue;
        return make_error(Errc::internal,
                          std::string("cannot read the input: ") + std::strerror(errno));
      }
      if (n == 0)
        return make_error(Errc::invalid_argument,
                          "the input ended after " + std::to_string(size - left) + " of " +
                              std::to_string(size) +
                              " bytes (did it change while it was sent?); fieldsyncd discards "
                              "the incomplete upload");
      have = static_cast<std::size_t>(n);
      off = 0;
      left -= have;
    }
    pollfd p{fd.fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::internal, std::string("poll: ") + std::strerror(errno));
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      answered = true;
      break;
    }
    if (!(p.revents & POLLOUT)) continue;
    ssize_t n = ::send(fd.fd, piece.data() + off, have - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      broken = true;
      break;
    }
    off += static_cast<std::size_t>(n);
  }
  const int send_errno = errno;
  ResponseReader reader(fd.fd);
  HttpReply reply;
  if (auto got = reader.read_head(reply); !got) {
    if (broken || answered)
      return make_error(Errc::unavailable,
                        std::string("fieldsyncd closed the connection while the body was sent") +
                            (broken ? std::string(": ") + std::strerror(send_errno) : ""));
    return got.error();
  }
  FS_TRY(reader.read_body(reply, [&](std::string_view data) -> Status {
    if (reply.body.size() < kMaxErrorBody) reply.body.append(data);
    return {};
  }));
  return reply;
}

Result<HttpReply> UnixHttpClient::upload_file(const std::string& method, const std::string& target,
                                              const std::filesystem::path& file,
                                              const std::string& content_type) {
  int raw = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return file_error("cannot open " + file.string(), errno);
  Fd in{raw};
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) return file_error("cannot read " + file.string(), errno);
  if (!S_ISREG(st.st_mode))
    return make_error(Errc::invalid_argument, file.string() + " is not a regular file");
  auto reply = upload(method, target, in.fd, static_cast<std::uint64_t>(st.st_size), content_type);
  if (!reply && reply.error().code == Errc::invalid_argument)
    return make_error(Errc::invalid_argument, file.string() + ": " + reply.error().message);
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
