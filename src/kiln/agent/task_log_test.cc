#include "kiln/agent/task_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TaskLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln_task_log.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/output.log";
  }
  void TearDown() override { KILN_EXPECT_OK(base::RemoveAll(dir_)); }

  std::string dir_;
  std::string path_;
};

MATCHER_P3(Record, time, stream, text, "") {
  return arg.time_micros == time && arg.stream == stream && arg.text == text;
}

TEST(FormatLogRecordTest, WritesTimeStreamTextAndNewline) {
  EXPECT_EQ(FormatLogRecord(1700000000123456, 'o', "hello world"),
            "1700000000123456 o hello world\n");
  EXPECT_EQ(FormatLogRecord(5, 'e', ""), "5 e \n");
}

TEST_F(TaskLogTest, ReadReturnsNotFoundBeforeTheFileExists) {
  EXPECT_THAT(ReadLogRecords(path_, 0, 1024), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
}

TEST_F(TaskLogTest, ReadLeavesAPartialLastLineForNextTime) {
  std::string first = FormatLogRecord(10, 'o', "a b  c\r");
  std::string second = FormatLogRecord(11, 'e', "err");
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, first + second + "12 o unfin"));

  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1 << 20));
  EXPECT_THAT(chunk.records, ElementsAre(Record(10, 'o', "a b  c\r"), Record(11, 'e', "err")));
  EXPECT_EQ(chunk.next_offset, static_cast<int64_t>(first.size() + second.size()));

  // Nothing new yet: same offset, no records.
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk again, ReadLogRecords(path_, chunk.next_offset, 1 << 20));
  EXPECT_TRUE(again.records.empty());
  EXPECT_EQ(again.next_offset, chunk.next_offset);

  KILN_ASSERT_OK(base::WriteFileAtomically(path_, first + second + "12 o unfinished\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk rest, ReadLogRecords(path_, chunk.next_offset, 1 << 20));
  EXPECT_THAT(rest.records, ElementsAre(Record(12, 'o', "unfinished")));
}

TEST_F(TaskLogTest, ReadStopsAtMaxBytesOnARecordBoundary) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += FormatLogRecord(1000 + i, 'o', std::string(100, 'x'));
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, data));
  int64_t offset = 0;
  size_t total = 0;
  int rounds = 0;
  while (offset < static_cast<int64_t>(data.size())) {
    KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, offset, 20 * 1024));
    ASSERT_FALSE(chunk.records.empty());
    EXPECT_EQ(chunk.records.front().time_micros, 1000 + static_cast<int64_t>(total));
    total += chunk.records.size();
    offset = chunk.next_offset;
    ++rounds;
  }
  EXPECT_EQ(total, 1000u);
  EXPECT_GT(rounds, 1);
}

TEST_F(TaskLogTest, ReadReturnsMalformedLinesAsStderrText) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, "garbage line\n7 x nope\n8 o ok\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1024));
  EXPECT_THAT(chunk.records, ElementsAre(Record(0, 'e', "garbage line"), Record(0, 'e', "7 x nope"),
                                         Record(8, 'o', "ok")));
}

TEST_F(TaskLogTest, WriterJoinsLinesAcrossAppendsPerStream) {
  KILN_ASSERT_OK_AND_ASSIGN(TaskLogWriter writer, TaskLogWriter::Open(path_, 1 << 20));
  writer.Append('o', "hel", 1);
  writer.Append('e', "warn", 2);
  writer.Append('o', "lo\nwor", 3);
  writer.Append('e', "ing\n", 4);
  writer.Append('o', "ld\n\n", 5);
  writer.Append('o', "tail", 6);
  writer.FinishStream('o', 7);
  writer.FinishStream('e', 7);
  KILN_ASSERT_OK(writer.Flush());
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1 << 20));
  EXPECT_THAT(chunk.records,
              ElementsAre(Record(3, 'o', "hello"), Record(4, 'e', "warning"),
                          Record(5, 'o', "world"), Record(5, 'o', ""), Record(7, 'o', "tail")));
}

TEST_F(TaskLogTest, WriterSplitsLongLinesIntoRecordSizedPieces) {
  KILN_ASSERT_OK_AND_ASSIGN(TaskLogWriter writer, TaskLogWriter::Open(path_, 1 << 20));
  std::string line(2 * kMaxRecordText + 100, 'a');
  // Arrives in odd-sized pieces, as from a pipe.
  for (size_t pos = 0; pos < line.size(); pos += 1000) {
    writer.Append('o', std::string_view(line).substr(pos, 1000), 1);
  }
  writer.Append('o', "\n", 2);
  writer.Append('o', std::string(kMaxRecordText, 'b') + "\n", 3);
  KILN_ASSERT_OK(writer.Flush());
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1 << 20));
  ASSERT_EQ(chunk.records.size(), 4u);
  EXPECT_EQ(chunk.records[0].text.size(), kMaxRecordText);
  EXPECT_EQ(chunk.records[1].text.size(), kMaxRecordText);
  EXPECT_EQ(chunk.records[2].text, std::string(100, 'a'));
  EXPECT_EQ(chunk.records[3].text, std::string(kMaxRecordText, 'b'));
}

TEST_F(TaskLogTest, WriterStopsAtTheCapWithOneMarker) {
  constexpr int64_t kCap = 4096;
  KILN_ASSERT_OK_AND_ASSIGN(TaskLogWriter writer, TaskLogWriter::Open(path_, kCap));
  for (int i = 0; i < 1000; ++i) {
    writer.Append(i % 2 ? 'e' : 'o', "some output line\n", 1700000000000000 + i);
    KILN_ASSERT_OK(writer.Flush());
  }
  EXPECT_TRUE(writer.limit_reached());
  KILN_ASSERT_OK_AND_ASSIGN(std::string data, base::ReadFile(path_));
  EXPECT_LE(static_cast<int64_t>(data.size()), kCap);
  EXPECT_GT(static_cast<int64_t>(data.size()), kCap - 200);
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1 << 20));
  ASSERT_GT(chunk.records.size(), 2u);
  EXPECT_EQ(chunk.records.back().stream, 'e');
  EXPECT_EQ(chunk.records.back().text,
            "[kiln] log limit of 4096 bytes reached; further output is dropped");
  for (size_t i = 0; i + 1 < chunk.records.size(); ++i) {
    EXPECT_EQ(chunk.records[i].text, "some output line");
  }
}

TEST_F(TaskLogTest, WriterAppendsToAnExistingFileAndCountsIt) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, FormatLogRecord(1, 'o', "before")));
  KILN_ASSERT_OK_AND_ASSIGN(TaskLogWriter writer, TaskLogWriter::Open(path_, 1 << 20));
  EXPECT_EQ(writer.size(), static_cast<int64_t>(FormatLogRecord(1, 'o', "before").size()));
  writer.AppendRecord('e', "[kiln] note", 2);
  KILN_ASSERT_OK(writer.Flush());
  KILN_ASSERT_OK_AND_ASSIGN(LogChunk chunk, ReadLogRecords(path_, 0, 1 << 20));
  EXPECT_THAT(chunk.records, ElementsAre(Record(1, 'o', "before"), Record(2, 'e', "[kiln] note")));
}

}  // namespace
}  // namespace kiln::agent
