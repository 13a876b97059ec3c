// package.h
//
// Code packages: how a user's training code travels from their machine to the working
// directory of every task (ARCHITECTURE.md §3). A package is one file, a gzip tar of a
// folder (what `kiln submit` builds with `CreatePackage`, and what WMLA's clients upload),
// or a folder on a shared filesystem (`CopyFolder`). Agents unpack untrusted archives, so
// `ExtractPackage` is written to be safe against crafted ones: it never writes outside the
// destination, whatever the archive says.
//
// Ignore rules, shared by `CreatePackage` and `CopyFolder`: `.git/`, `__pycache__/`,
// `*.pyc`, `build/` and `.kiln/` are always skipped, plus the globs in `<dir>/.kilnignore`,
// one per line (blank lines and lines starting with '#' are ignored). A glob is matched
// with fnmatch(3): with a '/' inside it (a leading '/' is dropped) against the path
// relative to the folder, without one against the name at any depth; a trailing '/'
// makes it match directories only. A skipped directory is skipped with all it holds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::agent {

// Bounds on a package, so a mistaken upload (a dataset, a virtualenv) or a zip bomb is
// refused with a message instead of filling an agent's disk.
struct PackageLimits {
  int64_t max_total_bytes = 2LL << 30;  // Uncompressed file contents, all files together.
  int64_t max_entries = 100000;         // Files, directories and links.
  int64_t max_compressed_bytes = 512 << 20;
};

// Packs the folder `dir` into a gzip tar in memory: entries relative to `dir` (no "./"),
// regular files (mode 0755 if any executable bit is set, else 0644) and directories;
// symlinks that stay inside `dir` are stored as links. Sockets, fifos and devices are
// skipped. The ignore rules above apply.
// Returns NotFound if `dir` does not exist, InvalidArgument if it is not a directory or
// holds a symlink that is absolute or leads outside it (the message names the link),
// FailedPrecondition if the package would exceed `limits` (the message gives the size,
// the limit, and the three largest files, to add to .kilnignore). Blocks on disk I/O.
[[nodiscard]] absl::StatusOr<std::string> CreatePackage(const std::string& dir,
                                                        const PackageLimits& limits = {});

// True when `bytes` start with the gzip magic (1f 8b).
bool LooksLikeGzip(std::string_view bytes);

// Unpacks a gzip tar into the existing directory `dest` (empty or not; an entry that
// exists is replaced, unless it is a directory). Regular files keep only the executable
// bit (0755 or 0644); directories are 0755; owners and setuid bits are never applied.
// Returns InvalidArgument naming the entry and the rule it breaks for an entry with an
// absolute path or a ".." component, a path through a symlink, a hard link, a symlink
// whose target is absolute or leads outside `dest` (also through other links), a device,
// fifo or socket, or when the archive has more than `limits.max_entries` entries or
// `limits.max_total_bytes` of contents (checked while unpacking, so a zip bomb stops as
// soon as it crosses the limit). Returns InvalidArgument "package is not a valid .tar.gz:
// ..." for input that is not gzip, corrupt, or truncated, or larger than
// `limits.max_compressed_bytes`. Returns NotFound if `dest` does not exist.
// Whatever the archive holds, nothing is written outside `dest`: every path is opened one
// component at a time without following symlinks, and links are created last. On error,
// `dest` may hold part of the package (never an escaping link); the caller removes it.
[[nodiscard]] absl::Status ExtractPackage(std::string_view tar_gz_bytes, const std::string& dest,
                                          const PackageLimits& limits = {});

// Writes a single-file package to `dest/name` (mode 0644), replacing a file of that name.
// Returns InvalidArgument if `name` is not a plain file name (empty, ".", "..", or holding
// '/' or NUL), NotFound if `dest` does not exist.
[[nodiscard]] absl::Status PlaceSingleFile(std::string_view bytes, const std::string& name,
                                           const std::string& dest);

// Copies the folder `src` (a package given as {"path": ...} on a shared filesystem) into
// `dest`, creating `dest` if needed, with the ignore rules above. Symlinks that stay
// inside `src` are copied as links; others are refused with InvalidArgument naming them.
// Returns NotFound if `src` does not exist, InvalidArgument if it is not a directory, and
// FailedPrecondition if it exceeds the default `PackageLimits` (entries and total bytes;
// the message lists the three largest files). Blocks on disk I/O.
[[nodiscard]] absl::Status CopyFolder(const std::string& src, const std::string& dest);

}  // namespace kiln::agent
