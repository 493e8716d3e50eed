// fs_power_cut <journal dir>: the power cut of the fault-injection file system (tests only).
// Run it after killing (kill -9) the process that wrote under libfs_fault_fs.so: it undoes
// every write that had not been synced, newest first, so the files hold what survives losing
// the page cache. Prints one line per file; exit 0 on success, 1 on an error, 2 on bad usage.
#include <cstdio>

#include "undo_journal.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fs_power_cut <journal dir>\n");
    return 2;
  }
  fieldsync::test::fault::CutResult result;
  bool ok = fieldsync::test::fault::power_cut(argv[1], result);
  for (const auto& m : result.messages) std::printf("power cut: %s\n", m.c_str());
  std::printf("power cut: %zu files, %zu records, %llu bytes restored, %zu files changed\n",
              result.files, result.records, static_cast<unsigned long long>(result.bytes_restored),
              result.files_changed);
  return ok ? 0 : 1;
}
