// package_extract_fuzz.cc
//
// Feeds arbitrary bytes to `ExtractPackage` as an uploaded package. Inputs that do not
// start with the gzip magic are gzipped first, so mutations also reach the tar layer
// (names, links, types) instead of dying on a gzip CRC. Each input unpacks
// into a fresh directory inside a fresh parent; afterwards the parent must hold nothing
// but that directory, no file may carry setuid/setgid bits, and no symlink left in it may
// resolve outside it. Any violation aborts, which libFuzzer reports as a crash.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/agent/package.h"
#include "kiln/base/files.h"

namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "package_extract_fuzz: %s\n", what.c_str());
  std::abort();
}

// Checks every entry below `dest` (walked without following links).
void CheckTree(const std::string& dest, const std::string& real_dest) {
  std::vector<std::string> pending = {dest};
  while (!pending.empty()) {
    std::string dir = pending.back();
    pending.pop_back();
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) continue;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string path = dir + "/" + name;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        pending.push_back(path);
      } else if (S_ISLNK(st.st_mode)) {
        char resolved[PATH_MAX];
        if (::realpath(path.c_str(), resolved) != nullptr) {
          std::string r = resolved;
          if (r != real_dest && r.rfind(real_dest + "/", 0) != 0) {
            Fail("symlink " + path + " resolves outside the destination, to " + r);
          }
        }
      } else if (S_ISREG(st.st_mode)) {
        if ((st.st_mode & (S_ISUID | S_ISGID)) != 0) Fail("setuid/setgid file " + path);
      } else {
        Fail("special file " + path);
      }
    }
    ::closedir(d);
  }
}

la_ssize_t Append(archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string Gzip(std::string_view bytes) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_raw(a);
  archive_write_open(a, &out, nullptr, Append, nullptr);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_write_header(a, e);
  archive_write_data(a, bytes.data(), bytes.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string gzipped;
  if (!kiln::agent::LooksLikeGzip(input)) {
    gzipped = Gzip(input);
    input = gzipped;
  }
  // tmpfs where there is one: each input costs a few directory operations.
  std::string tmpl = std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                     "/kiln_package_fuzz.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Fail("mkdtemp");
  std::string parent = tmpl.c_str();
  std::string dest = parent + "/dest";
  if (::mkdir(dest.c_str(), 0755) != 0) Fail("mkdir");

  kiln::agent::PackageLimits limits;
  limits.max_total_bytes = 4 << 20;
  limits.max_entries = 2000;
  (void)kiln::agent::ExtractPackage(input, dest, limits);

  DIR* d = ::opendir(parent.c_str());
  if (d == nullptr) Fail("opendir " + parent);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != ".." && name != "dest") Fail("wrote outside dest: " + name);
  }
  ::closedir(d);
  char real_dest[PATH_MAX];
  if (::realpath(dest.c_str(), real_dest) == nullptr) Fail("realpath " + dest);
  CheckTree(dest, real_dest);

  if (!kiln::base::RemoveAll(parent).ok()) Fail("remove " + parent);
  return 0;
}
