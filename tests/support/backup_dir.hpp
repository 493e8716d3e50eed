// Writes a store's streamed backup (Store::open_backup) into a directory, as syncctl backup
// does (without the archive framing): for tests of what a restored backup does.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "storage/store.hpp"

namespace fieldsync::test {

// The files written, with their sizes.
inline std::map<std::string, std::uint64_t> write_backup_dir(const storage::Store& store,
                                                             const std::filesystem::path& dir) {
  auto reader = store.open_backup();
  REQUIRE(reader.ok());
  std::map<std::string, std::uint64_t> files;
  std::filesystem::create_directories(dir);
  while (true) {
    auto path = (*reader)->next_file();
    REQUIRE(path.ok());
    if (!*path) break;
    auto file = dir / **path;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream out(file, std::ios::binary);
    std::uint64_t size = 0;
    while (true) {
      auto piece = (*reader)->read(100000);
      REQUIRE(piece.ok());
      if (piece->empty()) break;
      out.write(reinterpret_cast<const char*>(piece->data()),
                static_cast<std::streamsize>(piece->size()));
      size += piece->size();
    }
    REQUIRE(out.good());
    files[**path] = size;
  }
  return files;
}

}  // namespace fieldsync::test
