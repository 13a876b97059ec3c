// files.h
//
// Small filesystem helpers with Status errors. `WriteFileAtomically` is how every
// process in Kiln publishes a file another process reads (exit records, tokens): the
// reader sees the old file or the whole new one, never a torn write.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::base {

// Returns the file's bytes; NotFound if it does not exist, Internal on other errors.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to a temp file beside `path`, fsyncs it and renames it over `path`.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data, int mode = 0644);

// Creates `path` and its parents (mode 0755 unless given); OK if it exists.
absl::Status MakeDirs(const std::string& path, int mode = 0755);

// Removes `path` recursively; OK if it does not exist.
absl::Status RemoveAll(const std::string& path);

// Errno as a Status, with `what` (e.g. "open /x/y") in front.
absl::Status ErrnoStatus(std::string_view what, int err);

}  // namespace kiln::base
