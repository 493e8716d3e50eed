// The backup archive: the body of `GET /v1/backup` (docs/api.md "Backup"), a consistent hot
// backup of the device streamed as files, which syncctl writes into a directory.
//
//   magic    8 bytes "FSBACKUP", then u8 format version (1)
//   file     u8 'F', str16 path, then chunks: u32 length (1 .. kBackupMaxChunk) and that many
//            bytes; a u32 0 ends the file
//   trailer  u8 'E', u32 number of files, u64 bytes of all files, then the SHA-256 of every
//            byte of the archive before it (32 bytes); nothing follows
//
// Integers are big-endian. Paths are relative, '/'-separated and only these (anything else
// is refused): `RESTORED`, `device.key`, `retired/<device id>.key`, `db/data.mdb`,
// `blobs/<xx>/<blob id>` (xx: the id's first two hex digits). An archive without `RESTORED`,
// `device.key` or `db/data.mdb` is incomplete. A body cut anywhere (no trailer, a trailer
// whose counts or digest do not match) is detected by BackupArchiveReader::finish().
//
// BackupArchiveWriter produces it piece by piece from a storage::BackupReader (one piece in
// memory at a time); BackupArchiveReader checks it as it arrives. Neither is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/bytes.hpp"
#include "common/result.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::storage {
class BackupReader;
}

namespace fieldsync::ipc {

inline constexpr std::string_view kBackupMagic = "FSBACKUP";
inline constexpr std::uint8_t kBackupFormat = 1;
inline constexpr std::uint32_t kBackupMaxChunk = 1u << 20;     // a chunk's bytes at most
inline constexpr std::size_t kBackupWriterChunk = 256u << 10;  // the writer's chunks

// True for a path the archive may carry (see above).
bool backup_path_allowed(std::string_view path);

class BackupArchiveWriter {
 public:
  explicit BackupArchiveWriter(std::unique_ptr<storage::BackupReader> reader);
  ~BackupArchiveWriter();
  // The next piece of the archive (at most kBackupWriterChunk + a few bytes); empty at its end.
  Result<Bytes> next();
  std::uint64_t files() const { return files_; }
  std::uint64_t bytes() const { return bytes_; }  // of the archive so far

 private:
  std::unique_ptr<storage::BackupReader> reader_;
  crypto::Sha256 hash_;
  bool started_ = false, in_file_ = false, ended_ = false;
  std::uint64_t files_ = 0, file_bytes_ = 0, bytes_ = 0;
};

class BackupArchiveReader {
 public:
  struct Handler {
    std::function<Status(const std::string& path)> begin;  // a file starts
    std::function<Status(ByteView data)> data;             // its next bytes
    std::function<Status()> end;                           // it is complete
  };
  explicit BackupArchiveReader(Handler handler);
  // The next bytes of the archive as they arrive (any split). A format error, or an error of
  // the handler, stops the reading: every later call returns it again.
  // Errors: data_loss (not a backup archive, malformed, a path not allowed, a second copy of a
  // file), the handler's.
  Status feed(ByteView data);
  // After the last byte: data_loss unless the archive was complete and its trailer matched.
  Status finish();
  std::uint64_t files() const { return files_; }
  std::uint64_t file_bytes() const { return file_bytes_; }

 private:
  enum class State { magic, tag, path_len, path, chunk_len, chunk, trailer, done };
  Status fail(std::string message);
  Status step();  // handles a complete header in need_
  Handler h_;
  State state_ = State::magic;
  std::string need_;           // the header bytes gathered so far
  std::size_t need_size_ = 9;  // how many the current state needs
  std::uint32_t chunk_left_ = 0;
  std::string path_;
  std::set<std::string> seen_;
  crypto::Sha256 hash_;
  std::uint64_t files_ = 0, file_bytes_ = 0;
  std::optional<Error> failed_;
};

}  // namespace fieldsync::ipc
