// The backup archive (backup_archive.hpp, docs/api.md "Backup").
#include "ipc/backup_archive.hpp"

#include <algorithm>
#include <cstring>

#include "storage/types.hpp"

namespace fieldsync::ipc {
namespace {

bool lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::uint64_t be(std::string_view s) {
  std::uint64_t v = 0;
  for (char c : s) v = (v << 8) | static_cast<std::uint8_t>(c);
  return v;
}

const std::set<std::string_view> kRequired = {"RESTORED", "device.key", "db/data.mdb"};

}  // namespace

bool backup_path_allowed(std::string_view path) {
  if (path == "RESTORED" || path == "device.key" || path == "db/data.mdb") return true;
  constexpr std::string_view retired = "retired/", key = ".key", blobs = "blobs/";
  if (path.substr(0, retired.size()) == retired && path.size() > retired.size() + key.size() &&
      path.substr(path.size() - key.size()) == key) {
    auto id = path.substr(retired.size(), path.size() - retired.size() - key.size());
    return DeviceId::parse(id).has_value() && DeviceId::parse(id)->str() == id;
  }
  if (path.substr(0, blobs.size()) == blobs && path.size() == blobs.size() + 2 + 1 + 64) {
    auto dir = path.substr(blobs.size(), 2);
    auto id = path.substr(blobs.size() + 3);
    return path[blobs.size() + 2] == '/' && lower_hex(dir) && lower_hex(id) &&
           id.substr(0, 2) == dir;
  }
  return false;
}

// --- writer ---

BackupArchiveWriter::BackupArchiveWriter(std::unique_ptr<storage::BackupReader> reader)
    : reader_(std::move(reader)) {}

BackupArchiveWriter::~BackupArchiveWriter() = default;

Result<Bytes> BackupArchiveWriter::next() {
  if (ended_) return Bytes{};
  Bytes out;
  ByteWriter w(out);
  if (!started_) {
    started_ = true;
    w.raw(kBackupMagic);
    w.u8(kBackupFormat);
  }
  if (!in_file_) {
    auto path = reader_->next_file();
    if (!path) return path.error();
    if (!*path) {
      w.u8('E');
      w.u32(static_cast<std::uint32_t>(files_));
      w.u64(file_bytes_);
      hash_.update(out);
      auto digest = hash_.finish();
      w.raw(ByteView(digest.data(), digest.size()));
      ended_ = true;
      bytes_ += out.size();
      return out;
    }
    w.u8('F');
    w.str16(**path);
    in_file_ = true;
    ++files_;
  }
  auto piece = reader_->read(kBackupWriterChunk);
  if (!piece) return piece.error();
  w.u32(static_cast<std::uint32_t>(piece->size()));
  if (piece->empty()) {
    in_file_ = false;
  } else {
    w.raw(*piece);
    file_bytes_ += piece->size();
  }
  hash_.update(out);
  bytes_ += out.size();
  return out;
}

// --- reader ---

BackupArchiveReader::BackupArchiveReader(Handler handler) : h_(std::move(handler)) {}

Status BackupArchiveReader::fail(std::string message) {
  failed_ = Error{Errc::data_loss, "not a complete fieldsync backup: " + std::move(message)};
  return *failed_;
}

Status BackupArchiveReader::feed(ByteView data) {
  if (failed_) return *failed_;
  std::string_view in(reinterpret_cast<const char*>(data.data()), data.size());
  while (!in.empty()) {
    if (state_ == State::done) return fail("bytes after its end");
    if (state_ == State::chunk) {
      std::size_t n = std::min<std::size_t>(chunk_left_, in.size());
      ByteView piece(reinterpret_cast<const std::uint8_t*>(in.data()), n);
      hash_.update(piece);
      if (auto st = h_.data(piece); !st) {
        failed_ = st.error();
        return st;
      }
      file_bytes_ += n;
      chunk_left_ -= static_cast<std::uint32_t>(n);
      in.remove_prefix(n);
      if (chunk_left_ == 0) {
        state_ = State::chunk_len;
        need_size_ = 4;
      }
      continue;
    }
    std::size_t n = std::min(need_size_ - need_.size(), in.size());
    need_.append(in.substr(0, n));
    in.remove_prefix(n);
    if (need_.size() < need_size_) break;
    if (auto st = step(); !st) {
      if (!failed_) failed_ = st.error();
      return st;
    }
  }
  return {};
}

Status BackupArchiveReader::step() {
  std::string h = std::move(need_);
  need_.clear();
  if (state_ != State::trailer)
    hash_.update(ByteView(reinterpret_cast<const std::uint8_t*>(h.data()), h.size()));
  switch (state_) {
    case State::magic:
      if (h.substr(0, kBackupMagic.size()) != kBackupMagic)
        return fail("it does not start as one (wrong magic)");
      if (static_cast<std::uint8_t>(h[kBackupMagic.size()]) != kBackupFormat)
        return fail("backup format " + std::to_string(static_cast<std::uint8_t>(h.back())) +
                    " is not supported (this syncctl reads format " +
                    std::to_string(kBackupFormat) + ")");
      state_ = State::tag;
      need_size_ = 1;
      return {};
    case State::tag:
      if (h[0] == 'F') {
        state_ = State::path_len;
        need_size_ = 2;
      } else if (h[0] == 'E') {
        state_ = State::trailer;
        need_size_ = 4 + 8 + 32;
      } else {
        return fail("unknown entry");
      }
      return {};
    case State::path_len:
      need_size_ = static_cast<std::size_t>(be(h));
      if (need_size_ == 0 || need_size_ > 255) return fail("bad path length");
      state_ = State::path;
      return {};
    case State::path:
      if (!backup_path_allowed(h)) return fail("unexpected file in it");
      if (!seen_.insert(h).second) return fail("a file twice");
      path_ = h;
      ++files_;
      state_ = State::chunk_len;
      need_size_ = 4;
      return h_.begin(path_);
    case State::chunk_len: {
      auto n = static_cast<std::uint32_t>(be(h));
      if (n > kBackupMaxChunk) return fail("a chunk too large");
      if (n == 0) {
        state_ = State::tag;
        need_size_ = 1;
        return h_.end();
      }
      chunk_left_ = n;
      state_ = State::chunk;
      return {};
    }
    case State::trailer: {
      hash_.update(ByteView(reinterpret_cast<const std::uint8_t*>(h.data()), 12));
      auto digest = hash_.finish();
      if (be(h.substr(0, 4)) != files_ || be(h.substr(4, 8)) != file_bytes_ ||
          std::memcmp(h.data() + 12, digest.data(), digest.size()) != 0)
        return fail("its trailer does not match its content (damaged)");
      for (auto r : kRequired)
        if (!seen_.count(std::string(r))) return fail(std::string(r) + " is missing");
      state_ = State::done;
      return {};
    }
    case State::chunk:
    case State::done: break;
  }
  return fail("internal state");
}

Status BackupArchiveReader::finish() {
  if (failed_) return *failed_;
  if (state_ != State::done)
    return fail("the stream ended after " + std::to_string(files_) + " files (" +
                std::to_string(file_bytes_) + " bytes), before its end");
  return {};
}

}  // namespace fieldsync::ipc
