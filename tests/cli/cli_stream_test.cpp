// syncctl's streaming helpers against a real ApiServer: download() / download_to_file() of a
// chunked response into a file, upload() / upload_file() of a file as a streamed request body.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iterator>

#include "cli/unix_http_client.hpp"
#include "support/api_server_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;
using fieldsync::cli::UnixHttpClient;
using fieldsync::test::ApiServerFixture;
using fieldsync::test::eventually;

namespace {

constexpr std::size_t kPiece = 64 * 1024;

// A test body: a pseudo-random block of a prime length, repeated.
constexpr std::size_t kPeriod = 1000003;
std::string body_text(std::uint64_t from, std::uint64_t n) {
  static const std::string pattern = [] {
    std::string p(kPeriod, '\0');
    std::uint32_t x = 2463534242u;
    for (auto& ch : p) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      ch = static_cast<char>(x);
    }
    return p;
  }();
  std::string s;
  s.reserve(n);
  while (s.size() < n) {
    auto at = static_cast<std::size_t>((from + s.size()) % kPeriod);
    s.append(pattern, at, std::min<std::size_t>(kPeriod - at, n - s.size()));
  }
  return s;
}

// `total` bytes in 64 KiB pieces; after `fail_after` bytes (if not 0) next() fails.
std::shared_ptr<BodySource> source(std::uint64_t total, std::uint64_t fail_after = 0) {
  auto src = std::make_shared<BodySource>();
  auto at = std::make_shared<std::uint64_t>(0);
  src->next = [at, total, fail_after]() -> Result<Bytes> {
    if (fail_after && *at >= fail_after) return make_error(Errc::data_loss, "record unreadable");
    auto n = std::min<std::uint64_t>(kPiece, total - *at);
    auto text = body_text(*at, n);
    *at += n;
    return Bytes(text.begin(), text.end());
  };
  return src;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Server {
  explicit Server(config::ApiOptions opt = {}) : f(opt) {
    f.router().add("GET", "/test/export", [](ApiRequest& r) {
      auto size = std::stoull(r.query_value("size").value_or("0"));
      auto fail = std::stoull(r.query_value("fail").value_or("0"));
      return ApiResponse::streamed(source(size, fail));
    });
    f.router().add_streamed("PUT", "/test/import",
                            [this](ApiRequest&) -> Result<std::shared_ptr<BodySink>> {
                              auto sink = std::make_shared<BodySink>();
                              sink->write = [this](ByteView piece) -> Status {
                                received.append(as_chars(piece));
                                return {};
                              };
                              sink->finish = [this] {
                                ++finished;
                                ApiResponse r;
                                r.status = 201;
                                r.body = "{\"bytes\":" + std::to_string(received.size()) + "}";
                                return r;
                              };
                              sink->abort = [this] { ++aborted; };
                              return sink;
                            });
    f.start();
  }
  UnixHttpClient client() { return UnixHttpClient(f.socket_path()); }
  // Only read once the request is over (the sink runs on the server's thread).
  std::string received;
  std::atomic<int> finished{0};
  std::atomic<int> aborted{0};
  ApiServerFixture f;
};

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("download_to_file streams a chunked body into a 0600 file, renamed when complete") {
  Server s;
  auto dir = s.f.dir.path();
  auto file = dir / "bundle.fsb";
  const std::uint64_t size = (20u << 20) + 12345;
  const mode_t old_umask = ::umask(0);  // a permissive umask must not loosen the file
  auto r = s.client().download_to_file("GET", "/test/export?size=" + std::to_string(size), file);
  ::umask(old_umask);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.empty());
  CHECK(r->body_bytes == size);
  CHECK(r->headers["transfer-encoding"] == "chunked");
  CHECK(slurp(file) == body_text(0, size));
  CHECK(mode_of(file) == 0600);
  CHECK_FALSE(std::filesystem::exists(dir / "bundle.fsb.partial"));
}

TEST_CASE("an incomplete download leaves no file and the old one unchanged") {
  Server s;
  auto dir = s.f.dir.path();
  auto file = dir / "bundle.fsb";
  { std::ofstream(file) << "previous export"; }
  auto r = s.client().download_to_file("GET", "/test/export?size=10000000&fail=3000000", file);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::data_loss);
  CHECK(r.error().message.find("incomplete response body") != std::string::npos);
  CHECK(r.error().message.find("unchanged") != std::string::npos);
  CHECK(slurp(file) == "previous export");
  CHECK_FALSE(std::filesystem::exists(dir / "bundle.fsb.partial"));
}

TEST_CASE("a download answered with an error writes nothing") {
  Server s;
  auto file = s.f.dir.path() / "x.fsb";
  auto r = s.client().download_to_file("GET", "/test/nothing-here", file);
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(r->body.find("\"error\":\"not_found\"") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(file));
  CHECK_FALSE(std::filesystem::exists(s.f.dir.path() / "x.fsb.partial"));
}

TEST_CASE("a stale .partial, even a symlink, is replaced and not followed") {
  Server s;
  auto dir = s.f.dir.path();
  auto victim = dir / "victim";
  { std::ofstream(victim) << "keep me"; }
  std::filesystem::create_symlink(victim, dir / "out.fsb.partial");
  auto r = s.client().download_to_file("GET", "/test/export?size=1000", dir / "out.fsb");
  REQUIRE(r);
  CHECK(slurp(dir / "out.fsb") == body_text(0, 1000));
  CHECK(slurp(victim) == "keep me");
  CHECK_FALSE(std::filesystem::exists(dir / "out.fsb.partial"));
}

TEST_CASE("a full disk while downloading is reported as such") {
  Server s;
  int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (full < 0) {
    WARN("no /dev/full: not tested");
    return;
  }
  auto r = s.client().download("GET", "/test/export?size=1000000", full);
  ::close(full);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::resource_exhausted);
  CHECK(r.error().message.find("disk full") != std::string::npos);
}

TEST_CASE("downloads and uploads without a daemon say it is not running") {
  test::TempDir dir;
  UnixHttpClient c(dir.path() / "api.sock");
  auto d = c.download_to_file("GET", "/x", dir.path() / "f");
  REQUIRE_FALSE(d);
  CHECK(d.error().code == Errc::unavailable);
  CHECK(d.error().message.find("not running") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path() / "f.partial"));
  { std::ofstream(dir.path() / "in") << "data"; }
  auto u = c.upload_file("PUT", "/x", dir.path() / "in");
  REQUIRE_FALSE(u);
  CHECK(u.error().message.find("not running") != std::string::npos);
}

TEST_CASE("upload_file streams a file as the request body") {
  Server s;
  auto file = s.f.dir.path() / "in.fsb";
  const std::uint64_t size = (20u << 20) + 777;
  auto content = body_text(0, size);
  { std::ofstream(file, std::ios::binary) << content; }
  auto r = s.client().upload_file("PUT", "/test/import", file);
  REQUIRE(r);
  CHECK(r->status == 201);
  CHECK(r->body == "{\"bytes\":" + std::to_string(size) + "}");
  CHECK(s.finished == 1);
  CHECK(s.received == content);
}

TEST_CASE("an upload refused part-way returns the daemon's answer") {
  config::ApiOptions opt;
  opt.max_stream_bytes = 1u << 20;
  Server s(opt);
  auto file = s.f.dir.path() / "in.fsb";
  { std::ofstream(file, std::ios::binary) << body_text(0, 4u << 20); }
  auto r = s.client().upload_file("PUT", "/test/import", file);
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(r->body.find("api.max_stream_bytes") != std::string::npos);
  CHECK(s.finished == 0);
}

TEST_CASE("an input shorter than announced fails the upload and the daemon aborts it") {
  Server s;
  auto file = s.f.dir.path() / "in.fsb";
  { std::ofstream(file, std::ios::binary) << body_text(0, 100000); }
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto r = s.client().upload("PUT", "/test/import", fd, 200000);
  ::close(fd);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::invalid_argument);
  CHECK(r.error().message.find("ended after 100000 of 200000 bytes") != std::string::npos);
  CHECK(eventually([&] { return s.aborted == 1; }));
  CHECK(s.finished == 0);
}

TEST_CASE("request() decodes a chunked answer") {
  Server s;
  auto r = s.client().request("GET", "/test/export?size=200000");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == body_text(0, 200000));
  auto broken = s.client().request("GET", "/test/export?size=900000&fail=300000");
  REQUIRE_FALSE(broken);
  CHECK(broken.error().code == Errc::data_loss);
}
