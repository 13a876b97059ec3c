#include "kiln/agent/package.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"

namespace kiln::agent {
namespace {

using base::ErrnoStatus;

// Symlink hops allowed while resolving one link, as Linux's own limit (MAXSYMLINKS).
constexpr int kMaxSymlinkHops = 40;
constexpr size_t kCopyBufferBytes = 64 << 10;

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Closes now, reporting the error close(2) may carry for a written file.
  int Close() { return ::close(std::exchange(fd_, -1)); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view comp = path.substr(0, slash);
    if (!comp.empty()) out.emplace_back(comp);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

std::string JoinPath(const std::vector<std::string>& comps, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < comps.size(); ++i) {
    if (i > 0) out += '/';
    out += comps[i];
  }
  return out;
}

std::string JoinPath(const std::vector<std::string>& comps) {
  return JoinPath(comps, comps.size());
}

// Where `target`, a symlink's content, leads when the link sits in the directory
// `stack` (components relative to the root). Returns the resolved components, or
// nullopt when the target is absolute, climbs above the root, or loops.
// With `root_fd` >= 0, links met on the way are looked up in that tree and followed (a
// link that is harmless alone can escape through another: `b -> a/..` with `a -> .`);
// with -1 the resolution is purely lexical. Components that do not exist are taken
// lexically. Every component pushed is a real directory or absent, never a link, so the
// relative lookups below never traverse a link themselves.
std::optional<std::vector<std::string>> ResolveLink(int root_fd, std::vector<std::string> stack,
                                                    std::string_view target, int* hops) {
  if (target.empty() || target.front() == '/') return std::nullopt;
  for (const std::string& comp : SplitPath(target)) {
    if (comp == ".") continue;
    if (comp == "..") {
      if (stack.empty()) return std::nullopt;
      stack.pop_back();
      continue;
    }
    stack.push_back(comp);
    if (root_fd < 0) continue;
    std::string path = JoinPath(stack);
    struct stat st;
    if (::fstatat(root_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      // Absent: the rest is lexical. Any other failure (a path too long to look up) could
      // hide a link, so it counts as leaving.
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return std::nullopt;
    }
    if (!S_ISLNK(st.st_mode)) continue;
    if (++*hops > kMaxSymlinkHops) return std::nullopt;
    std::string next(PATH_MAX, '\0');
    ssize_t n = ::readlinkat(root_fd, path.c_str(), next.data(), next.size());
    if (n < 0 || static_cast<size_t>(n) >= next.size()) return std::nullopt;
    next.resize(static_cast<size_t>(n));
    stack.pop_back();
    auto resolved = ResolveLink(root_fd, std::move(stack), next, hops);
    if (!resolved.has_value()) return std::nullopt;
    stack = std::move(*resolved);
  }
  return stack;
}

bool LinkStaysInside(int root_fd, const std::vector<std::string>& link_comps,
                     std::string_view target) {
  std::vector<std::string> parent(link_comps.begin(), link_comps.end() - 1);
  int hops = 0;
  return ResolveLink(root_fd, std::move(parent), target, &hops).has_value();
}

// ---------------------------------------------------------------------------------------
// Ignore rules (see package.h).

class IgnoreRules {
 public:
  // Built-ins plus `root/.kilnignore` if present.
  static absl::StatusOr<IgnoreRules> Load(const std::string& root) {
    IgnoreRules rules;
    for (const char* p : {".git/", "__pycache__/", "*.pyc", "build/", ".kiln/"}) rules.Add(p);
    auto text = base::ReadFile(absl::StrCat(root, "/.kilnignore"));
    if (absl::IsNotFound(text.status())) return rules;
    KILN_RETURN_IF_ERROR(text.status());
    std::string_view rest = *text;
    while (!rest.empty()) {
      size_t nl = rest.find('\n');
      rules.Add(rest.substr(0, nl));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    return rules;
  }

  // `rel` is the path relative to the root; `name` its last component.
  bool Skips(const std::string& rel, const std::string& name, bool is_dir) const {
    for (const Glob& g : globs_) {
      if (g.dir_only && !is_dir) continue;
      if (g.match_path ? ::fnmatch(g.pattern.c_str(), rel.c_str(), FNM_PATHNAME) == 0
                       : ::fnmatch(g.pattern.c_str(), name.c_str(), 0) == 0) {
        return true;
      }
    }
    return false;
  }

 private:
  struct Glob {
    std::string pattern;
    bool dir_only;
    bool match_path;
  };

  void Add(std::string_view line) {
    constexpr std::string_view kSpace = " \t\r";
    size_t begin = line.find_first_not_of(kSpace);
    if (begin == std::string_view::npos) return;
    line = line.substr(begin, line.find_last_not_of(kSpace) - begin + 1);
    if (line.front() == '#') return;
    Glob g{"", false, false};
    while (!line.empty() && line.back() == '/') {
      g.dir_only = true;
      line.remove_suffix(1);
    }
    if (!line.empty() && line.front() == '/') {
      g.match_path = true;
      while (!line.empty() && line.front() == '/') line.remove_prefix(1);
    }
    if (line.empty()) return;
    if (line.find('/') != std::string_view::npos) g.match_path = true;
    g.pattern = std::string(line);
    globs_.push_back(std::move(g));
  }

  std::vector<Glob> globs_;
};

// ---------------------------------------------------------------------------------------
// Reading a source folder (CreatePackage, CopyFolder).

enum class Kind { kDir, kFile, kLink };

struct SourceEntry {
  std::string rel;  // Relative to the root, no leading "./".
  Kind kind;
  int64_t size = 0;
  mode_t mode = 0;
  int64_t mtime = 0;
  std::string link_target;
};

struct SourceTree {
  std::vector<SourceEntry> entries;
  int64_t total_bytes = 0;
};

absl::StatusOr<Fd> OpenRootDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", dir), errno);
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, " is not a directory"));
  }
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", dir), errno);
  return fd;
}

// Lists `dir` depth-first, parents before children, names sorted, applying the ignore
// rules and refusing symlinks that lead outside.
absl::StatusOr<SourceTree> WalkSource(const std::string& dir) {
  KILN_ASSIGN_OR_RETURN(Fd root, OpenRootDir(dir));
  KILN_ASSIGN_OR_RETURN(IgnoreRules rules, IgnoreRules::Load(dir));
  SourceTree tree;
  // Directories still to list, as paths relative to `dir` ("" is the root).
  std::vector<std::string> pending = {""};
  while (!pending.empty()) {
    std::string rel_dir = std::move(pending.back());
    pending.pop_back();
    std::string abs_dir = rel_dir.empty() ? dir : absl::StrCat(dir, "/", rel_dir);
    DIR* d = ::opendir(abs_dir.c_str());
    if (d == nullptr) return ErrnoStatus(absl::StrCat("open directory ", abs_dir), errno);
    std::vector<std::string> names;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    int read_err = errno;
    ::closedir(d);
    if (read_err != 0) return ErrnoStatus(absl::StrCat("read directory ", abs_dir), read_err);
    std::sort(names.begin(), names.end());

    std::vector<std::string> subdirs;
    for (const std::string& name : names) {
      std::string rel = rel_dir.empty() ? name : absl::StrCat(rel_dir, "/", name);
      std::string abs = absl::StrCat(dir, "/", rel);
      struct stat st;
      if (::lstat(abs.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", abs), errno);
      bool is_dir = S_ISDIR(st.st_mode);
      if (rules.Skips(rel, name, is_dir)) continue;
      SourceEntry entry{rel, Kind::kFile, 0, st.st_mode, static_cast<int64_t>(st.st_mtime), ""};
      if (is_dir) {
        entry.kind = Kind::kDir;
        subdirs.push_back(rel);
      } else if (S_ISREG(st.st_mode)) {
        entry.size = st.st_size;
        tree.total_bytes += st.st_size;
      } else if (S_ISLNK(st.st_mode)) {
        entry.kind = Kind::kLink;
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlink(abs.c_str(), target.data(), target.size());
        if (n < 0) return ErrnoStatus(absl::StrCat("readlink ", abs), errno);
        target.resize(static_cast<size_t>(n));
        if (!LinkStaysInside(root.get(), SplitPath(rel), target)) {
          return absl::InvalidArgumentError(
              absl::StrCat("symlink \"", rel, "\" -> \"", target, "\" leads outside ", dir,
                           "; replace it with what it points to, or add it to .kilnignore"));
        }
        entry.link_target = std::move(target);
      } else {
        continue;  // Sockets, fifos and devices are never code.
      }
      tree.entries.push_back(std::move(entry));
    }
    // Reversed so the stack pops them in sorted order.
    pending.insert(pending.end(), subdirs.rbegin(), subdirs.rend());
  }
  return tree;
}

std::string LargestFiles(const SourceTree& tree) {
  std::vector<const SourceEntry*> files;
  for (const SourceEntry& e : tree.entries) {
    if (e.kind == Kind::kFile) files.push_back(&e);
  }
  size_t n = std::min<size_t>(3, files.size());
  std::partial_sort(files.begin(), files.begin() + n, files.end(),
                    [](const SourceEntry* a, const SourceEntry* b) { return a->size > b->size; });
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    absl::StrAppend(&out, i > 0 ? ", " : "", files[i]->rel, " (", HumanBytes(files[i]->size), ")");
  }
  return out;
}

absl::Status CheckTreeLimits(const std::string& dir, const SourceTree& tree,
                             const PackageLimits& limits) {
  if (static_cast<int64_t>(tree.entries.size()) > limits.max_entries) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " holds ", tree.entries.size(), " files and folders; the limit is ",
                     limits.max_entries, ". Add what the code does not need to .kilnignore"));
  }
  if (tree.total_bytes > limits.max_total_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " holds ", HumanBytes(tree.total_bytes), " of files; the limit is ",
        HumanBytes(limits.max_total_bytes), ". The largest files: ", LargestFiles(tree),
        ". Add what the code does not need to .kilnignore"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Writing under a destination directory without ever leaving it.

// Creates entries below a root directory. Each path is walked one component at a time
// with O_NOFOLLOW, so neither a link in the archive nor one already in the destination
// can redirect a write. Not thread-safe; one per extraction.
class ConfinedWriter {
 public:
  explicit ConfinedWriter(Fd root) : root_(std::move(root)) {}

  int root_fd() const { return root_.get(); }

  absl::Status MakeDir(const std::vector<std::string>& comps) {
    KILN_ASSIGN_OR_RETURN(Fd parent, OpenParent(comps));
    const std::string& name = comps.back();
    if (::mkdirat(parent.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
      return EntryError(comps, "create directory", errno);
    }
    struct stat st;
    if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(absl::StrCat("stat ", JoinPath(comps)), errno);
    }
    if (!S_ISDIR(st.st_mode)) return Conflict(comps, "a file or link of that name exists");
    return absl::OkStatus();
  }

  // Creates (replacing any file or link of that name) a regular file with `mode`.
  absl::StatusOr<Fd> CreateFile(const std::vector<std::string>& comps, mode_t mode) {
    KILN_ASSIGN_OR_RETURN(Fd parent, OpenParent(comps));
    const std::string& name = comps.back();
    KILN_RETURN_IF_ERROR(RemoveExisting(parent.get(), comps));
    Fd fd(::openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   mode));
    if (!fd.valid()) return EntryError(comps, "create", errno);
    // fchmod, not the umask, decides: the executable bit must survive.
    if (::fchmod(fd.get(), mode) != 0) {
      return ErrnoStatus(absl::StrCat("chmod ", JoinPath(comps)), errno);
    }
    return fd;
  }

  absl::Status MakeSymlink(const std::vector<std::string>& comps, const std::string& target) {
    KILN_ASSIGN_OR_RETURN(Fd parent, OpenParent(comps));
    KILN_RETURN_IF_ERROR(RemoveExisting(parent.get(), comps));
    if (::symlinkat(target.c_str(), parent.get(), comps.back().c_str()) != 0) {
      return EntryError(comps, "create symlink", errno);
    }
    return absl::OkStatus();
  }

  // Removes the link at `comps` if it is one; best effort, used to undo.
  void RemoveLink(const std::vector<std::string>& comps) {
    auto parent = OpenParent(comps, /*create=*/false);
    if (!parent.ok()) return;
    struct stat st;
    if (::fstatat(parent->get(), comps.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode)) {
      ::unlinkat(parent->get(), comps.back().c_str(), 0);
    }
  }

 private:
  // Errors caused by what the entry is (a name too long, a clash) are the package's fault.
  static absl::Status EntryError(const std::vector<std::string>& comps, std::string_view what,
                                 int err) {
    if (err == ENAMETOOLONG || err == ENOTDIR || err == ELOOP || err == EEXIST || err == EISDIR ||
        err == EINVAL) {
      return absl::InvalidArgumentError(absl::StrCat(
          "entry \"", JoinPath(comps), "\": ", std::string(what), ": ", std::strerror(err)));
    }
    return ErrnoStatus(absl::StrCat(std::string(what), " ", JoinPath(comps)), err);
  }

  static absl::Status Conflict(const std::vector<std::string>& comps, std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry \"", JoinPath(comps), "\": ", std::string(why)));
  }

  // Opens the directory holding `comps.back()`, creating missing directories on the way.
  absl::StatusOr<Fd> OpenParent(const std::vector<std::string>& comps, bool create = true) {
    KILN_CHECK(!comps.empty());
    Fd dir(::dup(root_.get()));
    if (!dir.valid()) return ErrnoStatus("dup", errno);
    for (size_t i = 0; i + 1 < comps.size(); ++i) {
      const char* name = comps[i].c_str();
      if (create && ::mkdirat(dir.get(), name, 0755) != 0 && errno != EEXIST) {
        return EntryError(comps, "create parent directory", errno);
      }
      Fd next(::openat(dir.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.valid()) {
        if (errno == ELOOP || errno == ENOTDIR) {
          return Conflict(comps, absl::StrCat("its path goes through \"", JoinPath(comps, i + 1),
                                              "\", which is a symlink or a file"));
        }
        return EntryError(comps, "open parent directory", errno);
      }
      dir = std::move(next);
    }
    return dir;
  }

  static absl::Status RemoveExisting(int parent_fd, const std::vector<std::string>& comps) {
    if (::unlinkat(parent_fd, comps.back().c_str(), 0) == 0 || errno == ENOENT) {
      return absl::OkStatus();
    }
    if (errno == EISDIR || errno == EPERM)
      return Conflict(comps, "a directory of that name exists");
    return EntryError(comps, "replace", errno);
  }

  Fd root_;
};

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& what) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("write ", what), errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

struct PendingLink {
  std::vector<std::string> comps;
  std::string target;
};

// Links are created after everything else, so no entry is ever written through one, and
// then checked against the finished tree, where a chain of links could leave it. If any
// does, all of them are removed.
absl::Status CreateLinks(ConfinedWriter& writer, const std::vector<PendingLink>& links) {
  for (const PendingLink& link : links) {
    absl::Status s = writer.MakeSymlink(link.comps, link.target);
    if (!s.ok()) {
      for (const PendingLink& l : links) writer.RemoveLink(l.comps);
      return s;
    }
  }
  for (const PendingLink& link : links) {
    if (!LinkStaysInside(writer.root_fd(), link.comps, link.target)) {
      for (const PendingLink& l : links) writer.RemoveLink(l.comps);
      return absl::InvalidArgumentError(
          absl::StrCat("entry \"", JoinPath(link.comps), "\": symlink target \"", link.target,
                       "\" leads outside the package through other links"));
    }
  }
  return absl::OkStatus();
}

mode_t FileMode(mode_t source_mode) { return (source_mode & 0111) != 0 ? 0755 : 0644; }

// ---------------------------------------------------------------------------------------
// libarchive adapters.

struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

std::string ArchiveError(archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

absl::Status NotValidTarGz(std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("package is not a valid .tar.gz: ", std::string(why)));
}

// Compressed output collected in memory, refusing to grow past a limit.
struct OutputSink {
  std::string bytes;
  int64_t limit = 0;
  bool over_limit = false;
};

la_ssize_t AppendToSink(archive*, void* client, const void* buf, size_t n) {
  auto* sink = static_cast<OutputSink*>(client);
  if (static_cast<int64_t>(sink->bytes.size() + n) > sink->limit) {
    sink->over_limit = true;
    return -1;
  }
  sink->bytes.append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// Rejects entry names that could land outside the destination. Returns the path's
// components without "." and empty ones; empty for the root itself ("./").
absl::StatusOr<std::vector<std::string>> EntryComponents(std::string_view name) {
  if (!name.empty() && name.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("entry \"", std::string(name), "\": absolute paths are not allowed"));
  }
  std::vector<std::string> comps;
  for (std::string& comp : SplitPath(name)) {
    if (comp == ".") continue;
    if (comp == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("entry \"", std::string(name), "\": \"..\" components are not allowed"));
    }
    comps.push_back(std::move(comp));
  }
  return comps;
}

absl::Status Refuse(std::string_view name, std::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("entry \"", std::string(name), "\": ", std::string(rule)));
}

}  // namespace

bool LooksLikeGzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

absl::StatusOr<std::string> CreatePackage(const std::string& dir, const PackageLimits& limits) {
  KILN_ASSIGN_OR_RETURN(SourceTree tree, WalkSource(dir));
  KILN_RETURN_IF_ERROR(CheckTreeLimits(dir, tree, limits));

  std::unique_ptr<archive, ArchiveWriteDeleter> a(archive_write_new());
  if (a == nullptr) return absl::InternalError("archive_write_new failed");
  // Anything but ARCHIVE_OK means libarchive would shell out to an external gzip.
  if (archive_write_add_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a.get(), 1) != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up a .tar.gz writer: ", ArchiveError(a.get())));
  }
  OutputSink sink;
  sink.limit = limits.max_compressed_bytes;
  if (archive_write_open(a.get(), &sink, nullptr, AppendToSink, nullptr) != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot open a .tar.gz writer: ", ArchiveError(a.get())));
  }
  auto too_big = [&]() {
    return absl::FailedPreconditionError(absl::StrCat(
        "the package of ", dir, " is over the limit of ", HumanBytes(limits.max_compressed_bytes),
        " compressed (", HumanBytes(tree.total_bytes), " in ", tree.entries.size(),
        " entries before compression). The largest files: ", LargestFiles(tree),
        ". Add what the code does not need to .kilnignore"));
  };
  auto write_failed = [&](const std::string& what) {
    if (sink.over_limit) return too_big();
    return absl::InternalError(absl::StrCat("packing ", what, ": ", ArchiveError(a.get())));
  };

  std::vector<char> buf(kCopyBufferBytes);
  for (const SourceEntry& e : tree.entries) {
    std::unique_ptr<archive_entry, EntryDeleter> entry(archive_entry_new());
    archive_entry_set_pathname(entry.get(), e.rel.c_str());
    archive_entry_set_mtime(entry.get(), e.mtime, 0);
    Fd file;
    switch (e.kind) {
      case Kind::kDir:
        archive_entry_set_filetype(entry.get(), AE_IFDIR);
        archive_entry_set_perm(entry.get(), 0755);
        break;
      case Kind::kLink:
        archive_entry_set_filetype(entry.get(), AE_IFLNK);
        archive_entry_set_perm(entry.get(), 0777);
        archive_entry_set_symlink(entry.get(), e.link_target.c_str());
        break;
      case Kind::kFile: {
        std::string path = absl::StrCat(dir, "/", e.rel);
        file = Fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!file.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_perm(entry.get(), FileMode(e.mode));
        archive_entry_set_size(entry.get(), e.size);
        break;
      }
    }
    // ARCHIVE_WARN: a name not convertible to UTF-8 in this locale is stored as raw bytes.
    if (archive_write_header(a.get(), entry.get()) < ARCHIVE_WARN) return write_failed(e.rel);
    if (e.kind == Kind::kFile) {
      // The header promised e.size bytes: a file that grew is cut there, one that shrank
      // is padded with zeros by libarchive.
      int64_t left = e.size;
      while (left > 0) {
        ssize_t n = ::read(file.get(), buf.data(),
                           static_cast<size_t>(std::min<int64_t>(left, buf.size())));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ErrnoStatus(absl::StrCat("read ", dir, "/", e.rel), errno);
        if (n == 0) break;
        if (archive_write_data(a.get(), buf.data(), static_cast<size_t>(n)) != n) {
          return write_failed(e.rel);
        }
        left -= n;
      }
    }
    if (archive_write_finish_entry(a.get()) < ARCHIVE_WARN) return write_failed(e.rel);
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return write_failed("the end of the archive");
  return std::move(sink.bytes);
}

absl::Status ExtractPackage(std::string_view tar_gz_bytes, const std::string& dest,
                            const PackageLimits& limits) {
  if (static_cast<int64_t>(tar_gz_bytes.size()) > limits.max_compressed_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("package is ", HumanBytes(tar_gz_bytes.size()),
                                                   "; the limit is ",
                                                   HumanBytes(limits.max_compressed_bytes)));
  }
  if (!LooksLikeGzip(tar_gz_bytes)) return NotValidTarGz("it does not start with the gzip magic");
  KILN_ASSIGN_OR_RETURN(Fd root, OpenRootDir(dest));
  ConfinedWriter writer(std::move(root));

  std::unique_ptr<archive, ArchiveReadDeleter> a(archive_read_new());
  if (a == nullptr) return absl::InternalError("archive_read_new failed");
  // Only gzip and tar: no other decompressor's or format's parser sees untrusted bytes,
  // and anything but ARCHIVE_OK here would mean running an external gzip program.
  if (archive_read_support_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_read_support_format_tar(a.get()) != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up a .tar.gz reader: ", ArchiveError(a.get())));
  }
  if (archive_read_open_memory(a.get(), tar_gz_bytes.data(), tar_gz_bytes.size()) != ARCHIVE_OK) {
    return NotValidTarGz(ArchiveError(a.get()));
  }

  int64_t entries = 0;
  int64_t total_bytes = 0;
  std::vector<PendingLink> links;
  std::vector<char> buf(kCopyBufferBytes);
  while (true) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return NotValidTarGz(ArchiveError(a.get()));
    if (++entries > limits.max_entries) {
      return absl::InvalidArgumentError(
          absl::StrCat("package has more than ", limits.max_entries, " entries, the limit"));
    }
    const char* raw_name = archive_entry_pathname(entry);
    if (raw_name == nullptr) raw_name = archive_entry_pathname_utf8(entry);
    if (raw_name == nullptr || *raw_name == '\0') return NotValidTarGz("an entry has no name");
    std::string_view name = raw_name;
    KILN_ASSIGN_OR_RETURN(std::vector<std::string> comps, EntryComponents(name));

    if (archive_entry_hardlink(entry) != nullptr) {
      return Refuse(name, "hard links are not allowed");
    }
    mode_t type = archive_entry_filetype(entry);
    if (comps.empty()) {
      if (type == AE_IFDIR) continue;  // "./", the destination itself.
      return Refuse(name, "the entry has no file name");
    }
    if (type == AE_IFDIR) {
      KILN_RETURN_IF_ERROR(writer.MakeDir(comps));
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      if (target == nullptr || *target == '\0') return Refuse(name, "symlink with no target");
      if (*target == '/') {
        return Refuse(name, absl::StrCat("symlink target \"", target,
                                         "\" is absolute; only relative links are allowed"));
      }
      if (!LinkStaysInside(-1, comps, target)) {
        return Refuse(name,
                      absl::StrCat("symlink target \"", target, "\" leads outside the package"));
      }
      links.push_back({std::move(comps), target});
    } else if (type == AE_IFREG) {
      if (archive_entry_size_is_set(entry) &&
          archive_entry_size(entry) > limits.max_total_bytes - total_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("entry \"", std::string(name),
                                                       "\": package contents exceed the limit of ",
                                                       HumanBytes(limits.max_total_bytes)));
      }
      KILN_ASSIGN_OR_RETURN(Fd out, writer.CreateFile(comps, FileMode(archive_entry_perm(entry))));
      while (true) {
        la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) return NotValidTarGz(ArchiveError(a.get()));
        total_bytes += n;
        // Checked per block, so a zip bomb stops right after crossing the limit.
        if (total_bytes > limits.max_total_bytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              "entry \"", std::string(name), "\": package contents exceed the limit of ",
              HumanBytes(limits.max_total_bytes)));
        }
        KILN_RETURN_IF_ERROR(
            WriteAll(out.get(), buf.data(), static_cast<size_t>(n), std::string(name)));
      }
    } else {
      return Refuse(name, "devices, fifos and sockets are not allowed");
    }
  }
  return CreateLinks(writer, links);
}

absl::Status PlaceSingleFile(std::string_view bytes, const std::string& name,
                             const std::string& dest) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is not a plain file name for a single-file package"));
  }
  KILN_ASSIGN_OR_RETURN(Fd root, OpenRootDir(dest));
  ConfinedWriter writer(std::move(root));
  KILN_ASSIGN_OR_RETURN(Fd out, writer.CreateFile({name}, 0644));
  KILN_RETURN_IF_ERROR(WriteAll(out.get(), bytes.data(), bytes.size(), name));
  if (out.Close() != 0) return ErrnoStatus(absl::StrCat("write ", name), errno);
  return absl::OkStatus();
}

absl::Status CopyFolder(const std::string& src, const std::string& dest) {
  KILN_ASSIGN_OR_RETURN(SourceTree tree, WalkSource(src));
  KILN_RETURN_IF_ERROR(CheckTreeLimits(src, tree, PackageLimits{}));
  KILN_RETURN_IF_ERROR(base::MakeDirs(dest));
  KILN_ASSIGN_OR_RETURN(Fd root, OpenRootDir(dest));
  ConfinedWriter writer(std::move(root));
  std::vector<PendingLink> links;
  std::vector<char> buf(kCopyBufferBytes);
  for (const SourceEntry& e : tree.entries) {
    std::vector<std::string> comps = SplitPath(e.rel);
    switch (e.kind) {
      case Kind::kDir:
        KILN_RETURN_IF_ERROR(writer.MakeDir(comps));
        break;
      case Kind::kLink:
        links.push_back({std::move(comps), e.link_target});
        break;
      case Kind::kFile: {
        std::string path = absl::StrCat(src, "/", e.rel);
        Fd in(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!in.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
        KILN_ASSIGN_OR_RETURN(Fd out, writer.CreateFile(comps, FileMode(e.mode)));
        while (true) {
          ssize_t n = ::read(in.get(), buf.data(), buf.size());
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return ErrnoStatus(absl::StrCat("read ", path), errno);
          if (n == 0) break;
          KILN_RETURN_IF_ERROR(WriteAll(out.get(), buf.data(), static_cast<size_t>(n), e.rel));
        }
        break;
      }
    }
  }
  return CreateLinks(writer, links);
}

}  // namespace kiln::agent
