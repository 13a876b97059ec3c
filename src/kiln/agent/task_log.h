// task_log.h
//
// The format of a task's `output.log`, written by `kiln-shim` and tailed by the agent:
// one record per line, `<micros_since_epoch> <o|e> <text>\n`, where `o` is stdout and `e`
// is stderr. Text keeps every byte of the task's output except the newline; a line longer
// than `kMaxRecordText` is split into several records. `TaskLogWriter` is the shim's side
// (line assembly, the size cap); `ReadLogRecords` is the agent's side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::agent {

// The longest text one record carries; longer lines continue in the next record.
inline constexpr size_t kMaxRecordText = 16 * 1024;

// One line of a task's output.
struct LogRecord {
  int64_t time_micros = 0;  // when the shim read the line's end
  char stream = 'o';        // 'o' (stdout) or 'e' (stderr)
  std::string text;         // without the newline
};

// A batch of records and where the next read should start.
struct LogChunk {
  std::vector<LogRecord> records;
  int64_t next_offset = 0;
};

// Formats one record line, newline included. `text` must not contain '\n'.
std::string FormatLogRecord(int64_t time_micros, char stream, std::string_view text);

// Reads the complete records of `path` that start at byte `offset`, looking at no more than
// `max_bytes` of the file. Returns them with the offset just past the last complete record;
// a partial last line is left for the next call. `max_bytes` is raised to the longest valid
// record if smaller, so the reader always makes progress; a malformed line longer than that
// is returned in pieces. Malformed lines are returned as stream 'e' with the raw line as text
// and time 0, never dropped. Returns NotFound if the file does not exist yet,
// InvalidArgument for a negative offset, Internal on other I/O errors. Does not block beyond
// the disk read.
[[nodiscard]] absl::StatusOr<LogChunk> ReadLogRecords(const std::string& path, int64_t offset,
                                                      size_t max_bytes);

// The shim's writer: turns the raw bytes of the task's stdout and stderr into records and
// appends them to `output.log` with one write(2) per `Flush`, so that the agent tailing the
// file sees output promptly. Once the file would grow past `max_bytes` it writes a single
// marker record and drops everything after it; the file then never exceeds `max_bytes`
// (unless `max_bytes` is smaller than the marker itself).
//
// Memory is bounded: at most `kMaxRecordText` pending bytes per stream plus one batch.
// Not thread-safe; the shim uses it from its single thread.
class TaskLogWriter {
 public:
  // Opens (creating, appending to) `path`. Returns the errno-derived Status on failure.
  [[nodiscard]] static absl::StatusOr<TaskLogWriter> Open(const std::string& path,
                                                          int64_t max_bytes);

  TaskLogWriter(TaskLogWriter&& other) noexcept;
  TaskLogWriter& operator=(TaskLogWriter&& other) noexcept;
  TaskLogWriter(const TaskLogWriter&) = delete;
  TaskLogWriter& operator=(const TaskLogWriter&) = delete;
  ~TaskLogWriter();

  // Adds raw bytes read from `stream` ('o' or 'e') at `now_micros`. Complete lines become
  // records in the pending batch; an incomplete tail waits for more bytes.
  void Append(char stream, std::string_view bytes, int64_t now_micros);

  // Ends `stream`: an incomplete last line becomes a record (the task's output did not end
  // in a newline).
  void FinishStream(char stream, int64_t now_micros);

  // Adds one record with `text` as is (split if long), e.g. the shim's own messages.
  void AppendRecord(char stream, std::string_view text, int64_t now_micros);

  // Writes the pending batch to the file. Returns Internal on a write error; the batch is
  // then dropped (the shim keeps draining the task regardless).
  [[nodiscard]] absl::Status Flush();

  // True once the size cap was reached and output is being dropped.
  bool limit_reached() const { return limit_reached_; }
  // Bytes in the file, counting the pending batch.
  int64_t size() const { return size_; }

 private:
  TaskLogWriter(int fd, int64_t size, int64_t max_bytes);

  // Adds one record of text shorter than kMaxRecordText to the batch, or the marker when
  // it would not fit under the cap.
  void EmitRecord(char stream, std::string_view text, int64_t now_micros);
  std::string& PendingLine(char stream) { return stream == 'o' ? pending_out_ : pending_err_; }

  int fd_ = -1;
  int64_t size_ = 0;
  int64_t max_bytes_ = 0;
  bool limit_reached_ = false;
  std::string marker_text_;
  std::string batch_;
  std::string pending_out_;
  std::string pending_err_;
};

}  // namespace kiln::agent
