// A real Store for the fuzz targets that need one: opened once per process in a fresh
// directory under $TMPDIR (removed at exit), with one project of a fixed id that the seed
// inputs name (kFuzzProject), created by this device so it coordinates it.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "common/ids.hpp"
#include "fuzz/fuzz_support.hpp"
#include "storage/store.hpp"

namespace fieldsync::fuzz {

inline constexpr const char* kFuzzProject = "5eed0000000000000000000000000001";

// A directory removed when the process exits normally (libFuzzer's -max_total_time and
// -runs end with exit()).
inline std::filesystem::path make_temp_dir(const char* name) {
  static std::vector<std::filesystem::path>* dirs = nullptr;
  if (!dirs) {
    dirs = new std::vector<std::filesystem::path>();
    std::atexit([] {
      std::error_code ec;
      for (const auto& d : *dirs) std::filesystem::remove_all(d, ec);
    });
  }
  std::string tmpl =
      (std::filesystem::temp_directory_path() / (std::string(name) + "-XXXXXX")).string();
  FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  dirs->push_back(tmpl);
  return tmpl;
}

inline storage::StoreOptions fuzz_store_options(const std::filesystem::path& dir) {
  storage::StoreOptions o;
  o.data_dir = dir;
  o.durable = false;  // no fsync per commit: thousands of writes per second
  o.map_size_bytes = 256u << 20;
  o.max_body_bytes = 16u << 10;
  return o;
}

// kFuzzProject's secret (a bundle's key is derived from it).
inline Bytes fuzz_project_secret() { return Bytes(32, 0x5e); }

// Adds kFuzzProject, created by this device.
inline Status add_fuzz_project(storage::Store& store) {
  storage::ProjectInfo info;
  info.id = *ProjectId::parse(kFuzzProject);
  info.name = "fuzz";
  info.creator = store.device_id();
  auto added = store.add_project(info, fuzz_project_secret());
  if (!added) return added.error();
  return {};
}

// Opens the store and adds kFuzzProject; aborts on failure (the target cannot run).
inline std::unique_ptr<storage::Store> open_fuzz_store(const storage::StoreOptions& options) {
  auto store = storage::Store::open(options);
  FUZZ_CHECK(store.ok());
  FUZZ_CHECK(add_fuzz_project(**store).ok());
  return std::move(*store);
}

}  // namespace fieldsync::fuzz
