// The backup archive (ipc/backup_archive.hpp): what the writer produces the reader takes back
// file by file; a cut, damaged or foreign archive is refused, wherever it is cut.
#include <catch2/catch.hpp>

#include <map>

#include "ipc/backup_archive.hpp"
#include "storage/types.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;

namespace {

class FakeReader final : public storage::BackupReader {
 public:
  explicit FakeReader(std::vector<std::pair<std::string, std::string>> files)
      : files_(std::move(files)) {}
  Result<std::optional<std::string>> next_file() override {
    ++i_;
    at_ = 0;
    if (i_ >= files_.size()) return std::optional<std::string>();
    return std::optional<std::string>(files_[i_].first);
  }
  Result<Bytes> read(std::size_t max) override {
    const std::string& s = files_[i_].second;
    std::size_t n = std::min(max, s.size() - at_);
    Bytes out(s.begin() + static_cast<std::ptrdiff_t>(at_),
              s.begin() + static_cast<std::ptrdiff_t>(at_ + n));
    at_ += n;
    return out;
  }
  const DeviceId& device() const override { return id_; }
  std::uint64_t db_bytes() const override { return 0; }

 private:
  std::vector<std::pair<std::string, std::string>> files_;
  std::size_t i_ = static_cast<std::size_t>(-1), at_ = 0;
  DeviceId id_{};
};

const std::string kBlob =
    "blobs/9f/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

std::string archive(std::vector<std::pair<std::string, std::string>> files) {
  BackupArchiveWriter w(std::make_unique<FakeReader>(std::move(files)));
  std::string out;
  while (true) {
    auto piece = w.next();
    REQUIRE(piece.ok());
    if (piece->empty()) break;
    CHECK(piece->size() <= kBackupWriterChunk + 300);
    out.append(piece->begin(), piece->end());
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> sample() {
  return {{"RESTORED", "marker\n"},
          {"device.key", "-----BEGIN PRIVATE KEY-----\n"},
          {"db/data.mdb", std::string(600000, 'd') + "end"},
          {kBlob, ""},
          {"blobs/ab/ab" + std::string(62, '0'), std::string(70000, 'b')}};
}

struct Read {
  std::map<std::string, std::string> files;
  Status fed, finished;
};

Read read_back(std::string_view a, std::size_t piece = 4096) {
  Read r;
  std::string current;
  bool open = false;
  BackupArchiveReader reader({[&](const std::string& p) -> Status {
                                CHECK(!open);
                                current = p;
                                open = true;
                                r.files[p];
                                return {};
                              },
                              [&](ByteView d) -> Status {
                                CHECK(open);
                                r.files[current].append(d.begin(), d.end());
                                return {};
                              },
                              [&]() -> Status {
                                open = false;
                                return {};
                              }});
  for (std::size_t at = 0; at < a.size() && r.fed.ok(); at += piece) {
    auto part = a.substr(at, piece);
    r.fed = reader.feed(ByteView(reinterpret_cast<const std::uint8_t*>(part.data()), part.size()));
  }
  r.finished = r.fed.ok() ? reader.finish() : r.fed;
  return r;
}

}  // namespace

TEST_CASE("a backup archive reads back file by file, in any split", "[ipc][backup]") {
  auto files = sample();
  std::string a = archive(files);
  for (std::size_t piece : {1u, 7u, 4096u, 1u << 20}) {
    auto r = read_back(a, piece);
    REQUIRE(r.finished.ok());
    CHECK(r.files.size() == files.size());
    for (const auto& [p, content] : files) CHECK(r.files.at(p) == content);
  }
}

TEST_CASE("a cut backup archive is refused wherever it is cut", "[ipc][backup]") {
  std::string a = archive(sample());
  for (std::size_t cut = 0; cut < a.size(); cut += (cut < 200 || a.size() - cut < 200) ? 1 : 997) {
    auto r = read_back(std::string_view(a).substr(0, cut));
    REQUIRE(!r.finished.ok());
    CHECK(r.finished.error().code == Errc::data_loss);
  }
  // Bytes after the end.
  CHECK(!read_back(a + "x").finished.ok());
}

TEST_CASE("a damaged or foreign backup archive is refused", "[ipc][backup]") {
  std::string a = archive(sample());
  // Any changed byte in the content or framing.
  for (std::size_t at :
       {std::size_t{20}, std::size_t{100}, a.size() / 2, a.size() - 40, a.size() - 1}) {
    std::string b = a;
    b[at] = static_cast<char>(b[at] ^ 0x01);
    auto r = read_back(b);
    CHECK(!r.finished.ok());
  }
  CHECK(read_back("not a backup at all").finished.error().code == Errc::data_loss);
  // A missing required file.
  auto no_key = sample();
  no_key.erase(no_key.begin() + 1);
  auto r = read_back(archive(no_key));
  REQUIRE(!r.finished.ok());
  CHECK(r.finished.error().message.find("device.key is missing") != std::string::npos);
  // Paths outside the backup's own.
  for (std::string bad :
       {"../device.key", "/etc/passwd", "db/../../x", "retired/x.key",
        "blobs/9g/9g86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "blobs/00/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "db/lock.mdb",
        "api.token", ""}) {
    CHECK(!backup_path_allowed(bad));
    auto files = sample();
    files.emplace_back(bad.empty() ? std::string("x") : bad, "evil");
    CHECK(!read_back(archive(files)).finished.ok());
  }
  CHECK(backup_path_allowed(kBlob));
  CHECK(backup_path_allowed("retired/" + std::string(52, 'a') + ".key"));
  // A file twice.
  auto twice = sample();
  twice.emplace_back("device.key", "other");
  CHECK(!read_back(archive(twice)).finished.ok());
}
