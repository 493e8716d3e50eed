// The undo journal of the fault-injection file system (tests only): what libfs_fault_fs.so
// records before each write to a watched file, and how a simulated power cut replays it.
//
// One journal file per watched file, named <hex of the file's absolute path>.undo, a sequence
// of records. Each record is a 33-byte header (kind, three u64 fields, payload length) followed
// by its payload:
//   'W' write:    a = offset, b = bytes written, c = file size before; payload = the bytes
//                 [a, min(a + b, c)) held before the write (its pre-image)
//   'T' truncate: a = new size, c = size before; payload = the bytes [a, c) when it shrank
//   'D' durable:  a = offset, b = length: a write that was durable when it returned (O_DSYNC)
// An fsync/fdatasync of the file empties its journal: whatever it lists was not synced yet.
// Replaying the records newest first restores every unsynced byte and the synced size, except
// the ranges of later durable writes. A torn last record (the writer was killed while
// appending it) is ignored: its write had not started.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace fieldsync::test::fault {

inline constexpr std::size_t kRecordHeader = 1 + 4 * 8;
inline constexpr const char* kJournalSuffix = ".undo";

inline std::string hex_encode(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

inline std::string hex_decode(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

inline void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

inline std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

struct Record {
  char kind = 0;
  std::uint64_t a = 0, b = 0, c = 0;
  std::string payload;
};

inline std::string encode_record(char kind, std::uint64_t a, std::uint64_t b, std::uint64_t c,
                                 const char* payload, std::size_t len) {
  std::string out;
  out.reserve(kRecordHeader + len);
  out += kind;
  put_u64(out, a);
  put_u64(out, b);
  put_u64(out, c);
  put_u64(out, len);
  out.append(payload, len);
  return out;
}

inline std::vector<Record> parse_journal(const std::string& bytes) {
  std::vector<Record> out;
  std::size_t at = 0;
  while (bytes.size() - at >= kRecordHeader) {
    const char* p = bytes.data() + at;
    Record r;
    r.kind = p[0];
    r.a = get_u64(p + 1);
    r.b = get_u64(p + 9);
    r.c = get_u64(p + 17);
    std::uint64_t len = get_u64(p + 25);
    if (len > bytes.size() - at - kRecordHeader) break;  // torn tail
    r.payload.assign(p + kRecordHeader, len);
    out.push_back(std::move(r));
    at += kRecordHeader + len;
  }
  return out;
}

struct CutResult {
  std::size_t files = 0;
  std::size_t records = 0;
  std::uint64_t bytes_restored = 0;
  std::size_t files_changed = 0;      // files whose bytes or size the cut changed
  std::vector<std::string> messages;  // one line per file, for the log
};

// Restores `file` to what a power cut would leave: undoes every journalled write newest first.
// Returns false (with a message) when the file cannot be opened or written.
inline bool replay_one(const std::string& file, const std::vector<Record>& records,
                       CutResult& result) {
  int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    result.messages.push_back("cannot open " + file + ": " + std::strerror(errno));
    return false;
  }
  const std::uint64_t size_before = static_cast<std::uint64_t>(::lseek(fd, 0, SEEK_END));
  std::vector<std::pair<std::uint64_t, std::uint64_t>> durable;  // [begin, end) never undone
  std::uint64_t durable_size = 0;
  std::uint64_t restored = 0;
  bool ok = true;
  // Writes [off, off + bytes.size()) except the durable ranges.
  auto restore = [&](std::uint64_t off, const std::string& bytes) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> todo{{off, off + bytes.size()}};
    for (const auto& [db, de] : durable) {
      std::vector<std::pair<std::uint64_t, std::uint64_t>> next;
      for (const auto& [b, e] : todo) {
        if (de <= b || db >= e) {
          next.emplace_back(b, e);
          continue;
        }
        if (b < db) next.emplace_back(b, db);
        if (de < e) next.emplace_back(de, e);
      }
      todo.swap(next);
    }
    for (const auto& [b, e] : todo) {
      std::size_t n = e - b;
      if (::pwrite(fd, bytes.data() + (b - off), n, static_cast<off_t>(b)) !=
          static_cast<ssize_t>(n))
        ok = false;
      restored += n;
    }
  };
  auto resize = [&](std::uint64_t size) {
    if (::ftruncate(fd, static_cast<off_t>(std::max(size, durable_size))) != 0) ok = false;
  };
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    switch (it->kind) {
      case 'D':
        if (std::find(durable.begin(), durable.end(), std::make_pair(it->a, it->a + it->b)) ==
            durable.end())
          durable.emplace_back(it->a, it->a + it->b);
        durable_size = std::max(durable_size, it->a + it->b);
        break;
      case 'W':
        restore(it->a, it->payload);
        resize(it->c);
        break;
      case 'T':
        resize(it->c);
        restore(it->a, it->payload);
        break;
      default: result.messages.push_back(file + ": unknown record kind"); ok = false;
    }
  }
  if (::fsync(fd) != 0) ok = false;
  const std::uint64_t size_after = static_cast<std::uint64_t>(::lseek(fd, 0, SEEK_END));
  ::close(fd);
  if (restored > 0 || size_after != size_before) result.files_changed += 1;
  result.files += 1;
  result.records += records.size();
  result.bytes_restored += restored;
  result.messages.push_back(file + ": undid " + std::to_string(records.size()) + " records, " +
                            std::to_string(restored) + " bytes, size " +
                            std::to_string(size_before) + " -> " + std::to_string(size_after));
  return ok;
}

// The power cut: every journal in `journal_dir` is replayed and removed. Run it only after the
// writing process is dead (kill -9).
inline bool power_cut(const std::filesystem::path& journal_dir, CutResult& result) {
  bool ok = true;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(journal_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= std::strlen(kJournalSuffix) ||
        name.compare(name.size() - std::strlen(kJournalSuffix), std::string::npos,
                     kJournalSuffix) != 0)
      continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto records = parse_journal(bytes);
    const std::string file = hex_decode(name.substr(0, name.size() - std::strlen(kJournalSuffix)));
    if (!records.empty() && !replay_one(file, records, result)) ok = false;
    std::filesystem::remove(entry.path(), ec);
  }
  if (ec) {
    result.messages.push_back("cannot read " + journal_dir.string() + ": " + ec.message());
    ok = false;
  }
  return ok;
}

}  // namespace fieldsync::test::fault
