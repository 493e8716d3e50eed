// Measures (does not assert) the peak RSS of making the variants of a 24 MP photo: writes a
// 6000x4000 JPEG (baseline and progressive) and a 6000x4000 PNG to a temporary directory, then
// runs make_variants on each in a child process of its own and prints the child's peak RSS
// (VmHWM of its own address space: a child's ru_maxrss would include this parent's peak),
// next to that of a child that makes the variants of a 64x48 JPEG (libvips' fixed cost).
// Usage: media_variants_rss            (the child mode is internal: --one FILE MEDIA_TYPE)
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vips/vips.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "media/variants.hpp"

namespace fs = std::filesystem;
using fieldsync::media::make_variants;

extern char** environ;

namespace {

// This process's peak RSS in KiB (VmHWM), or -1.
long peak_kib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib;
}

int one(const char* file, const char* type) {
  auto start = std::chrono::steady_clock::now();
  auto v = make_variants(fs::path(file), type, fieldsync::media::VariantOptions{});
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  if (!v.ok()) {
    std::fprintf(stderr, "make_variants %s: %s\n", file, v.error().message.c_str());
    return 1;
  }
  std::printf("  peak RSS %.1f MiB; preview %dx%d (%zu bytes), thumbnail %dx%d, %lld ms\n",
              static_cast<double>(peak_kib()) / 1024, v->preview.width, v->preview.height,
              v->preview.data.size(), v->thumbnail.width, v->thumbnail.height,
              static_cast<long long>(ms));
  return 0;
}

// Runs this program with --one FILE TYPE: whether it succeeded.
bool run_child(const char* self, const std::string& file, const char* type) {
  std::vector<std::string> args{self, "--one", file, type};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  std::fflush(stdout);
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    return false;
  }
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool write_ramp(int w, int h, const fs::path& path, bool progressive) {
  VipsImage *grey = nullptr, *scaled = nullptr, *one = nullptr, *rgb = nullptr;
  bool ok = vips_grey(&grey, w, h, nullptr) == 0 &&
            vips_linear1(grey, &scaled, 255.0, 0.0, nullptr) == 0 &&
            vips_cast_uchar(scaled, &one, nullptr) == 0;
  if (ok) {
    VipsImage* bands[3] = {one, one, one};
    ok = vips_bandjoin(bands, &rgb, 3, nullptr) == 0;
  }
  if (ok) {
    ok = path.extension() == ".png"
             ? vips_pngsave(rgb, path.c_str(), "compression", 1, nullptr) == 0
             : vips_jpegsave(rgb, path.c_str(), "Q", 90, "interlace", progressive, nullptr) == 0;
  }
  for (VipsImage* i : {grey, scaled, one, rgb}) {
    if (i != nullptr) g_object_unref(i);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--one") return one(argv[2], argv[3]);
  if (VIPS_INIT(argv[0]) != 0) return 1;
  std::string tmpl = (fs::temp_directory_path() / "fieldsync-media-rss-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return 1;
  fs::path dir = tmpl;
  struct Case {
    const char* name;
    int w, h;
    bool progressive;
    const char* type;
  };
  const Case cases[] = {{"tiny.jpg", 64, 48, false, "image/jpeg"},
                        {"24mp.jpg", 6000, 4000, false, "image/jpeg"},
                        {"24mp-progressive.jpg", 6000, 4000, true, "image/jpeg"},
                        {"24mp.png", 6000, 4000, false, "image/png"}};
  int rc = 0;
  for (const auto& c : cases) {
    fs::path file = dir / c.name;
    if (!write_ramp(c.w, c.h, file, c.progressive)) {
      std::fprintf(stderr, "cannot write %s: %s\n", c.name, vips_error_buffer());
      rc = 1;
      break;
    }
    std::printf("variants of %s (%dx%d, %ju bytes):\n", c.name, c.w, c.h,
                static_cast<std::uintmax_t>(fs::file_size(file)));
    if (!run_child(argv[0], file.string(), c.type)) {
      rc = 1;
      break;
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return rc;
}
