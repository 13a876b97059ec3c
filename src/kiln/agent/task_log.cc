#include "kiln/agent/task_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"

namespace kiln::agent {
namespace {

// A record line is at most: 20 digits, " o ", kMaxRecordText bytes of text, "\n".
constexpr size_t kMaxRecordLine = kMaxRecordText + 24;

LogRecord ParseRecordLine(std::string_view line) {
  LogRecord record;
  size_t digits = 0;
  while (digits < line.size() && line[digits] >= '0' && line[digits] <= '9') ++digits;
  int64_t time = 0;
  bool ok = digits > 0 && line.size() >= digits + 3 && line[digits] == ' ' &&
            (line[digits + 1] == 'o' || line[digits + 1] == 'e') && line[digits + 2] == ' ';
  if (ok) {
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + digits, time);
    ok = ec == std::errc() && ptr == line.data() + digits;
  }
  if (!ok) {
    record.time_micros = 0;
    record.stream = 'e';
    record.text = std::string(line);
    return record;
  }
  record.time_micros = time;
  record.stream = line[digits + 1];
  record.text = std::string(line.substr(digits + 3));
  return record;
}

std::string MarkerText(int64_t max_bytes) {
  return absl::StrCat("[kiln] log limit of ", max_bytes,
                      " bytes reached; further output is dropped");
}

}  // namespace

std::string FormatLogRecord(int64_t time_micros, char stream, std::string_view text) {
  std::string line = absl::StrCat(time_micros, " ");
  line.reserve(line.size() + text.size() + 3);
  line.push_back(stream);
  line.push_back(' ');
  line.append(text);
  line.push_back('\n');
  return line;
}

absl::StatusOr<LogChunk> ReadLogRecords(const std::string& path, int64_t offset, size_t max_bytes) {
  if (offset < 0) return absl::InvalidArgumentError(absl::StrCat("negative offset ", offset));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus(absl::StrCat("open ", path), errno);
  const size_t want = std::max(max_bytes, kMaxRecordLine);
  // The buffer holds what the file has now, not `max_bytes`: callers pass generous limits.
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return base::ErrnoStatus(absl::StrCat("stat ", path), err);
  }
  const int64_t available = std::max<int64_t>(0, st.st_size - offset);
  std::string buf(std::min(want, static_cast<size_t>(available)), '\0');
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, offset + static_cast<int64_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return base::ErrnoStatus(absl::StrCat("read ", path), err);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  buf.resize(got);

  LogChunk chunk;
  chunk.next_offset = offset;
  std::string_view data(buf);
  size_t end = data.rfind('\n');
  if (end == std::string_view::npos) {
    // No complete line. A full buffer without a newline cannot be a valid record: hand it
    // out as a malformed one so that the reader moves on instead of stalling forever.
    if (got == want) {
      chunk.records.push_back(ParseRecordLine(data));
      chunk.next_offset += static_cast<int64_t>(got);
    }
    return chunk;
  }
  size_t pos = 0;
  while (pos <= end) {
    size_t nl = data.find('\n', pos);
    chunk.records.push_back(ParseRecordLine(data.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  chunk.next_offset += static_cast<int64_t>(end + 1);
  return chunk;
}

absl::StatusOr<TaskLogWriter> TaskLogWriter::Open(const std::string& path, int64_t max_bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return base::ErrnoStatus(absl::StrCat("open ", path), errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return base::ErrnoStatus(absl::StrCat("stat ", path), err);
  }
  return TaskLogWriter(fd, st.st_size, max_bytes);
}

TaskLogWriter::TaskLogWriter(int fd, int64_t size, int64_t max_bytes)
    : fd_(fd), size_(size), max_bytes_(max_bytes), marker_text_(MarkerText(max_bytes)) {}

TaskLogWriter::TaskLogWriter(TaskLogWriter&& other) noexcept { *this = std::move(other); }

TaskLogWriter& TaskLogWriter::operator=(TaskLogWriter&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    max_bytes_ = other.max_bytes_;
    marker_text_ = std::move(other.marker_text_);
    limit_reached_ = other.limit_reached_;
    batch_ = std::move(other.batch_);
    pending_out_ = std::move(other.pending_out_);
    pending_err_ = std::move(other.pending_err_);
  }
  return *this;
}

TaskLogWriter::~TaskLogWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TaskLogWriter::Append(char stream, std::string_view bytes, int64_t now_micros) {
  if (limit_reached_) return;
  std::string& pending = PendingLine(stream);
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    bool line_ends = nl != std::string_view::npos;
    std::string_view piece = bytes.substr(0, nl);
    bytes.remove_prefix(line_ends ? nl + 1 : bytes.size());
    // A line longer than one record continues in the next; `pending` never holds more
    // than kMaxRecordText bytes, which bounds the shim's memory whatever the task prints.
    while (pending.size() + piece.size() > kMaxRecordText) {
      size_t take = kMaxRecordText - pending.size();
      pending.append(piece.substr(0, take));
      piece.remove_prefix(take);
      EmitRecord(stream, pending, now_micros);
      pending.clear();
    }
    pending.append(piece);
    if (line_ends) {
      EmitRecord(stream, pending, now_micros);
      pending.clear();
    }
  }
}

void TaskLogWriter::FinishStream(char stream, int64_t now_micros) {
  std::string& pending = PendingLine(stream);
  if (!pending.empty()) EmitRecord(stream, pending, now_micros);
  pending.clear();
}

void TaskLogWriter::AppendRecord(char stream, std::string_view text, int64_t now_micros) {
  do {
    std::string_view piece = text.substr(0, kMaxRecordText);
    EmitRecord(stream, piece, now_micros);
    text.remove_prefix(piece.size());
  } while (!text.empty());
}

void TaskLogWriter::EmitRecord(char stream, std::string_view text, int64_t now_micros) {
  if (limit_reached_) return;
  std::string line = FormatLogRecord(now_micros, stream, text);
  // Room for the marker is kept in reserve, so the file ends at or below the cap.
  int64_t marker_size = static_cast<int64_t>(line.size() - text.size() + marker_text_.size());
  if (size_ + static_cast<int64_t>(line.size()) + marker_size <= max_bytes_) {
    batch_.append(line);
    size_ += static_cast<int64_t>(line.size());
    return;
  }
  limit_reached_ = true;
  std::string marker = FormatLogRecord(now_micros, 'e', marker_text_);
  batch_.append(marker);
  size_ += static_cast<int64_t>(marker.size());
  pending_out_.clear();
  pending_err_.clear();
}

absl::Status TaskLogWriter::Flush() {
  std::string_view data(batch_);
  absl::Status status;
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      status = base::ErrnoStatus("write output.log", errno);
      break;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  batch_.clear();
  return status;
}

}  // namespace kiln::agent
