// The blob routes through a real ApiServer, over an in-memory BlobStore whose worker thread
// can be slowed down or held: an upload never has more than kMaxUploadQueuedBytes queued to
// the worker (the server stops reading), the answer comes from the worker, refusals map to
// 413/507, a cut upload is aborted, and downloads honour Range and If-None-Match.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json/parse.hpp>

#include "crypto/crypto.hpp"
#include "ipc/routes_blobs.hpp"
#include "storage/blob_ref.hpp"
#include "storage/blob_store.hpp"
#include "support/api_server_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;
using fieldsync::test::ApiServerFixture;
using fieldsync::test::eventually;
using fieldsync::test::parse_response;
using fieldsync::test::RawConn;
using fieldsync::test::read_response;
using namespace std::chrono_literals;

namespace {

// An in-memory BlobStore with a worker thread. `hold` stops the worker until released.
class FakeBlobs : public storage::BlobStore {
 public:
  FakeBlobs() : worker_([this] { run(); }) {}
  ~FakeBlobs() override {
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      held_ = false;
    }
    cv_.notify_all();
    worker_.join();
  }

  const storage::BlobOptions& options() const override { return options_; }
  storage::BlobOptions options_;

  std::atomic<std::uint64_t> queued{0};      // bytes of writes not yet done
  std::atomic<std::uint64_t> max_queued{0};  // the most that ever were
  std::atomic<int> aborted{0};
  std::atomic<int> finished{0};

  void hold(bool on) {
    {
      std::lock_guard lock(mu_);
      held_ = on;
    }
    cv_.notify_all();
  }

  void add_project(const ProjectId& p) {
    std::lock_guard lock(data_mu_);
    projects_[p];
  }

  // An upload's bytes live in a state its worker jobs share (the upload may go first).
  struct UploadState {
    Bytes bytes;
    std::optional<Error> failed;
  };
  class Upload : public storage::BlobUpload {
   public:
    Upload(FakeBlobs& s, ProjectId p) : s_(s), project_(p) {}
    ~Upload() override { abort(); }
    void write(Bytes piece, std::function<void(Status)> done) override {
      const std::uint64_t n = piece.size();
      const std::uint64_t q = s_.queued += n;
      if (q > s_.max_queued) s_.max_queued = q;
      s_.post([&s = s_, st = st_, piece = std::move(piece), done, n] {
        if (!st->failed) {
          if (st->bytes.size() + n > s.options_.max_blob_bytes)
            st->failed = make_error(Errc::too_large, "blob exceeds blob.max_blob_bytes");
          else if (st->bytes.size() + n > s.options_.project_quota_bytes)
            st->failed = make_error(Errc::resource_exhausted,
                                    "project quota blob.project_quota_bytes reached");
          else
            st->bytes.insert(st->bytes.end(), piece.begin(), piece.end());
        }
        s.queued -= n;
        if (st->failed)
          done(*st->failed);
        else
          done(Status{});
      });
    }
    void finish(std::string media_type,
                std::function<void(Result<storage::BlobInfo>)> done) override {
      finishing_ = true;
      s_.post([&s = s_, st = st_, project = project_, media_type, done] {
        if (st->failed) return done(*st->failed);
        if (!storage::valid_media_type(media_type))
          return done(make_error(Errc::invalid_argument, "bad media type"));
        storage::BlobInfo info;
        info.id = crypto::sha256(ByteView(st->bytes.data(), st->bytes.size()));
        info.size = st->bytes.size();
        info.media_type = media_type;
        info.root = info.id;  // (not the real chunk root: the routes only pass it on)
        {
          std::lock_guard lock(s.data_mu_);
          s.blobs_[info.id] = {info, st->bytes};
          s.projects_[project].insert(info.id);
        }
        ++s.finished;
        done(info);
      });
    }
    void abort() override {
      if (finishing_ || aborted_) return;
      aborted_ = true;
      ++s_.aborted;
    }

   private:
    FakeBlobs& s_;
    ProjectId project_;
    std::shared_ptr<UploadState> st_ = std::make_shared<UploadState>();
    bool finishing_ = false;
    bool aborted_ = false;
  };

  class Reader : public storage::BlobReader {
   public:
    Reader(storage::BlobInfo info, Bytes bytes)
        : info_(std::move(info)), bytes_(std::move(bytes)) {}
    const storage::BlobInfo& info() const override { return info_; }
    const std::vector<crypto::Digest>& chunk_hashes() const override { return hashes_; }
    Result<Bytes> read(std::uint64_t offset, std::size_t max_bytes) override {
      if (offset >= bytes_.size()) return Bytes{};
      auto n = std::min<std::uint64_t>(max_bytes, bytes_.size() - offset);
      return Bytes(bytes_.begin() + static_cast<std::ptrdiff_t>(offset),
                   bytes_.begin() + static_cast<std::ptrdiff_t>(offset + n));
    }
    Result<ByteView> chunk(std::uint32_t index) override {
      const std::uint64_t at = std::uint64_t{index} * storage::kBlobChunkBytes;
      if (at >= bytes_.size()) return ByteView{};
      return ByteView(bytes_).subspan(
          at, std::min<std::uint64_t>(storage::kBlobChunkBytes, bytes_.size() - at));
    }

   private:
    storage::BlobInfo info_;
    Bytes bytes_;
    std::vector<crypto::Digest> hashes_;
  };

  Result<std::unique_ptr<storage::BlobUpload>> begin_upload(const ProjectId& project) override {
    std::lock_guard lock(data_mu_);
    if (!projects_.count(project)) return make_error(Errc::not_found, "no such project");
    return std::unique_ptr<storage::BlobUpload>(std::make_unique<Upload>(*this, project));
  }
  Result<std::unique_ptr<storage::BlobReader>> open(const ProjectId& project,
                                                    const storage::BlobId& id) const override {
    std::lock_guard lock(data_mu_);
    auto p = projects_.find(project);
    if (p == projects_.end() || !p->second.count(id))
      return make_error(Errc::not_found, "no such blob");
    const auto& [info, bytes] = blobs_.at(id);
    return std::unique_ptr<storage::BlobReader>(std::make_unique<Reader>(info, bytes));
  }
  Result<std::vector<storage::ProjectBlob>> list(const ProjectId& project,
                                                 std::optional<storage::BlobId> after,
                                                 std::uint32_t limit) const override {
    std::lock_guard lock(data_mu_);
    auto p = projects_.find(project);
    if (p == projects_.end()) return make_error(Errc::not_found, "no such project");
    std::vector<storage::ProjectBlob> out;
    for (const auto& id : p->second) {
      if (after && !(*after < id)) continue;
      if (out.size() >= limit) break;
      out.push_back({blobs_.at(id).first, true, 0, 1});
    }
    return out;
  }
  Result<std::optional<storage::ProjectBlob>> find(const ProjectId& project,
                                                   const storage::BlobId& id) const override {
    std::lock_guard lock(data_mu_);
    auto p = projects_.find(project);
    if (p == projects_.end()) return make_error(Errc::not_found, "no such project");
    if (!p->second.count(id)) return std::optional<storage::ProjectBlob>{};
    return std::optional<storage::ProjectBlob>{{blobs_.at(id).first, true, 0, 1}};
  }
  Result<storage::BlobUsage> usage(const ProjectId& project) const override {
    std::lock_guard lock(data_mu_);
    auto p = projects_.find(project);
    if (p == projects_.end()) return make_error(Errc::not_found, "no such project");
    storage::BlobUsage u;
    for (const auto& id : p->second) {
      u.held_bytes += blobs_.at(id).first.size;
      ++u.held_count;
    }
    u.quota_bytes = options_.project_quota_bytes;
    return u;
  }
  Result<storage::BlobInfo> put(const ProjectId& project, ByteView data,
                                std::string media_type) override {
    storage::BlobInfo info;
    info.id = crypto::sha256(data);
    info.size = data.size();
    info.media_type = std::move(media_type);
    info.root = info.id;
    std::lock_guard lock(data_mu_);
    if (!projects_.count(project)) return make_error(Errc::not_found, "no such project");
    blobs_[info.id] = {info, Bytes(data.begin(), data.end())};
    projects_[project].insert(info.id);
    return info;
  }
  // (Receiving from peers is not what these routes do.)
  Result<std::vector<storage::BlobInfo>> wanted(const ProjectId&, std::optional<storage::BlobId>,
                                                std::uint32_t, storage::BlobPolicy) const override {
    return std::vector<storage::BlobInfo>{};
  }
  Result<std::pair<std::uint64_t, std::uint64_t>> wanted_total(
      const ProjectId&, storage::BlobPolicy, const std::vector<storage::BlobId>&) const override {
    return std::pair<std::uint64_t, std::uint64_t>{0, 0};
  }
  Result<storage::ProjectBlobPolicy> policy(const ProjectId&) const override {
    return storage::ProjectBlobPolicy{};
  }
  storage::BlobPolicy policy_with(const ProjectId&, const DeviceId&) const override {
    return storage::BlobPolicy::archive;
  }
  Status set_policy(const ProjectId&, const storage::ProjectBlobPolicy&) override {
    return make_error(Errc::unsupported, "not in this test");
  }
  Result<storage::BlobDemand> demand(const ProjectId&, const storage::BlobId&) override {
    return make_error(Errc::not_found, "not in this test");
  }
  std::uint64_t refetchable_epoch() const override { return 0; }
  Status note_peer_blobs(const ProjectId&, const DeviceId&,
                         const std::vector<storage::BlobId>&) override {
    return {};
  }
  Result<std::vector<storage::BlobId>> peer_blobs(const ProjectId&,
                                                  const DeviceId&) const override {
    return std::vector<storage::BlobId>{};
  }
  std::vector<storage::BlobId> demanded(const ProjectId&) const override { return {}; }
  std::uint64_t watch_held(std::function<void(const ProjectId&, const storage::BlobId&)>) override {
    return 1;
  }
  void unwatch_held(std::uint64_t) override {}
  Result<std::unique_ptr<storage::BlobReceiver>> begin_receive(const ProjectId&,
                                                               const storage::BlobId&) override {
    return make_error(Errc::unsupported, "not in this test");
  }
  Status index(const ProjectId&) override { return {}; }
  Result<storage::GcResult> gc(std::int64_t) override {
    gc_thread = std::this_thread::get_id();
    return storage::GcResult{3, 2, 1000};
  }
  Status release_unreferenced(const ProjectId&, const std::vector<storage::BlobId>&) override {
    return {};
  }
  std::thread::id gc_thread;
  std::thread::id worker_id() const { return worker_.get_id(); }

  void post(std::function<void()> job) override {
    {
      std::lock_guard lock(mu_);
      if (closing_) return;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return closing_ || (!held_ && !jobs_.empty()); });
      if (closing_) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool held_ = false;
  bool closing_ = false;
  mutable std::mutex data_mu_;
  std::map<ProjectId, std::set<storage::BlobId>> projects_;
  std::map<storage::BlobId, std::pair<storage::BlobInfo, Bytes>> blobs_;
  std::thread worker_;
};

struct BlobFixture {
  BlobFixture() : f(options()) {
    register_blob_routes(f.router(), f.service->context(), blobs);
    pid = *ProjectId::parse("0123456789abcdef0123456789abcdef");
    blobs.add_project(pid);
    f.start();
  }
  static config::ApiOptions options() {
    config::ApiOptions o;
    o.request_timeout_ms = 10000;
    return o;
  }
  ~BlobFixture() { f.stop(); }

  std::string base() const { return "/v1/projects/" + pid.str() + "/blobs"; }
  std::string upload_header(std::uint64_t size, const std::string& type = "image/jpeg") const {
    return "POST " + base() + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
  }
  test::WireResponse get(const std::string& target, const std::string& extra = {}) {
    auto c = RawConn::unix_socket(f.socket_path());
    REQUIRE(c.send("GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
                   extra + "\r\n"));
    return parse_response(c.read_to_end());
  }

  FakeBlobs blobs;  // outlives the server (declared first, destroyed last)
  ApiServerFixture f;
  ProjectId pid;
};

std::string bytes_of(std::size_t n, std::uint32_t seed) {
  std::string s(n, '\0');
  for (auto& c : s) {
    seed = seed * 1103515245u + 12345u;
    c = static_cast<char>(seed >> 16);
  }
  return s;
}

std::string hex_sha256(const std::string& s) {
  return storage::digest_hex(crypto::sha256(as_bytes(s)));
}

}  // namespace

TEST_CASE("blob upload: the server reads no further than 1 MiB ahead of the worker") {
  BlobFixture b;
  const std::size_t size = 12u << 20;
  const auto data = bytes_of(size, 7);
  b.blobs.hold(true);  // the disk is stuck
  auto c = RawConn::unix_socket(b.f.socket_path());
  REQUIRE(c.send(b.upload_header(size)));
  std::thread sender([&] { c.send(data); });
  // The server queues up to the bound, then stops reading: nothing more arrives at the worker.
  REQUIRE(eventually([&] { return b.blobs.queued >= kMaxUploadQueuedBytes; }));
  const auto stuck_at = b.blobs.queued.load();
  CHECK(stuck_at <= kMaxUploadQueuedBytes + 64 * 1024);
  {
    // Meanwhile other requests are answered.
    auto r = b.get("/v1/status");
    CHECK(r.status == 200);
    CHECK(b.blobs.queued == stuck_at);
  }
  b.blobs.hold(false);
  sender.join();
  auto r = parse_response(read_response(c));
  REQUIRE(r.status == 201);
  CHECK(b.blobs.max_queued <= kMaxUploadQueuedBytes + 64 * 1024);
  auto v = boost::json::parse(r.body);
  CHECK(v.at("id").as_string() == hex_sha256(data));
  CHECK(v.at("size").as_int64() == static_cast<std::int64_t>(size));
  CHECK(v.at("type").as_string() == "image/jpeg");
  CHECK(v.at("ref").at("$blob") == v.at("id"));
  CHECK(b.blobs.finished == 1);
  CHECK(b.blobs.aborted == 0);
}

TEST_CASE("blob upload: a stuck worker cuts the upload at api.request_timeout_ms") {
  config::ApiOptions o;
  o.request_timeout_ms = 300;
  FakeBlobs blobs;
  ApiServerFixture f(o);
  register_blob_routes(f.router(), f.service->context(), blobs);
  auto pid = *ProjectId::parse("0123456789abcdef0123456789abcdef");
  blobs.add_project(pid);
  f.start();
  blobs.hold(true);
  auto c = RawConn::unix_socket(f.socket_path());
  const std::size_t size = 8u << 20;
  REQUIRE(c.send("POST /v1/projects/" + pid.str() +
                 "/blobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(size) +
                 "\r\n\r\n"));
  std::thread sender([&] { c.send(bytes_of(size, 3)); });  // fails once the server closes
  REQUIRE(eventually([&] { return blobs.aborted == 1; }));
  CHECK(blobs.finished == 0);
  CHECK(eventually([&] { return f.connections() == 0; }));
  sender.join();  // its send fails now that the server closed; only then is the socket closed
  c.close();
  blobs.hold(false);
  f.stop();
}

TEST_CASE("blob upload: quota and size refusals are 507 and 413, the upload aborted") {
  BlobFixture b;
  b.blobs.options_.project_quota_bytes = 1u << 20;
  {
    auto c = RawConn::unix_socket(b.f.socket_path());
    REQUIRE(c.send(b.upload_header(4u << 20)));
    const auto data = bytes_of(4u << 20, 5);
    for (std::size_t at = 0; at < data.size() && !c.readable(); at += 64 * 1024)
      if (!c.send(std::string_view(data).substr(at, 64 * 1024))) break;
    auto r = parse_response(read_response(c));
    CHECK(r.status == 507);
    CHECK(r.body.find("\"error\":\"resource_exhausted\"") != std::string::npos);
    CHECK(eventually([&] { return b.blobs.aborted == 1; }));
  }
  b.blobs.options_.max_blob_bytes = 1000;
  {
    auto c = RawConn::unix_socket(b.f.socket_path());
    REQUIRE(c.send(b.upload_header(2000)));
    auto r = parse_response(read_response(c));
    CHECK(r.status == 413);
    CHECK(r.body.find("blob.max_blob_bytes") != std::string::npos);
  }
  CHECK(b.blobs.finished == 0);
}

TEST_CASE("blob download: Range, If-None-Match, variants and strict query parameters") {
  BlobFixture b;
  const auto data = bytes_of(600000, 11);
  {
    auto c = RawConn::unix_socket(b.f.socket_path());
    REQUIRE(c.send(b.upload_header(data.size(), "image/png") + data));
    REQUIRE(parse_response(read_response(c)).status == 201);
  }
  const std::string id = hex_sha256(data);
  const std::string url = b.base() + "/" + id;
  auto whole = b.get(url);
  CHECK(whole.status == 200);
  CHECK(whole.body == data);
  CHECK_FALSE(whole.chunked);
  CHECK(whole.headers["content-length"] == "600000");
  CHECK(whole.headers["content-type"] == "image/png");
  CHECK(whole.headers["etag"] == "\"" + id + "\"");
  CHECK(whole.headers["accept-ranges"] == "bytes");

  auto part = b.get(url, "Range: bytes=262000-263000\r\n");
  CHECK(part.status == 206);
  CHECK(part.headers["content-range"] == "bytes 262000-263000/600000");
  CHECK(part.body == data.substr(262000, 1001));
  auto tail = b.get(url, "Range: bytes=-10\r\n");
  CHECK(tail.status == 206);
  CHECK(tail.body == data.substr(data.size() - 10));
  auto beyond = b.get(url, "Range: bytes=600000-\r\n");
  CHECK(beyond.status == 416);
  CHECK(beyond.headers["content-range"] == "bytes */600000");
  auto several = b.get(url, "Range: bytes=0-1,3-4\r\n");
  CHECK(several.status == 200);
  CHECK(several.body == data);
  auto cached = b.get(url, "If-None-Match: \"" + id + "\"\r\n");
  CHECK(cached.status == 304);
  CHECK(cached.body.empty());

  CHECK(b.get(url + "?variant=thumbnail").status == 404);
  CHECK(b.get(url + "?variant=poster").status == 400);
  auto unknown = b.get(url + "?size=1");
  CHECK(unknown.status == 400);
  CHECK(unknown.body.find("accepted: variant") != std::string::npos);
  CHECK(b.get(b.base() + "/" + std::string(64, 'a')).status == 404);
  CHECK(b.get(b.base() + "/nothex").status == 400);

  auto list = b.get(b.base() + "?limit=1");
  REQUIRE(list.status == 200);
  auto v = boost::json::parse(list.body);
  CHECK(v.at("blobs").as_array().size() == 1);
  CHECK(v.at("next").as_string() == id);
  CHECK(v.at("usage").at("held_bytes").as_int64() == 600000);
}

TEST_CASE("blob gc runs on the worker and answers from it") {
  BlobFixture b;
  auto c = RawConn::unix_socket(b.f.socket_path());
  REQUIRE(
      c.send("POST " + b.base() + "/gc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"));
  auto r = parse_response(read_response(c));
  CHECK(r.status == 200);
  CHECK(r.body == "{\"released\":3,\"files_deleted\":2,\"bytes_freed\":1000}");
  CHECK(b.blobs.gc_thread == b.blobs.worker_id());
}
