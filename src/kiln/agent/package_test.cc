#include "kiln/agent/package.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// ---------------------------------------------------------------------------------------
// Handcrafted archives: written with libarchive directly, so they can hold whatever a
// hostile client could send.

struct RawEntry {
  std::string name;
  mode_t type = AE_IFREG;
  std::string data;
  mode_t perm = 0644;
  std::string link;  // Symlink target, or hard link target when `hardlink`.
  bool hardlink = false;
  int64_t zeros = 0;  // Extra zero bytes after `data` (zip bombs).
};

la_ssize_t Append(archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string BuildTarGz(const std::vector<RawEntry>& entries) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_set_bytes_in_last_block(a, 1);
  EXPECT_EQ(archive_write_open(a, &out, nullptr, Append, nullptr), ARCHIVE_OK);
  for (const RawEntry& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_filetype(entry, e.type);
    archive_entry_set_perm(entry, e.perm);
    if (e.hardlink) {
      archive_entry_set_hardlink(entry, e.link.c_str());
    } else if (e.type == AE_IFLNK) {
      archive_entry_set_symlink(entry, e.link.c_str());
    }
    if (e.type == AE_IFREG && !e.hardlink) {
      archive_entry_set_size(entry, static_cast<int64_t>(e.data.size()) + e.zeros);
    }
    EXPECT_GE(archive_write_header(a, entry), ARCHIVE_WARN) << archive_error_string(a);
    if (!e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    std::string block(1 << 20, '\0');
    for (int64_t left = e.zeros; left > 0; left -= static_cast<int64_t>(block.size())) {
      archive_write_data(a, block.data(),
                         static_cast<size_t>(std::min<int64_t>(left, block.size())));
    }
    archive_entry_free(entry);
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
  return out;
}

// Entry names of a .tar.gz, in archive order.
std::vector<std::string> ListArchive(const std::string& tar_gz) {
  std::vector<std::string> names;
  archive* a = archive_read_new();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar_gz.data(), tar_gz.size()), ARCHIVE_OK);
  archive_entry* entry;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK)
    names.push_back(archive_entry_pathname(entry));
  archive_read_free(a);
  return names;
}

// ---------------------------------------------------------------------------------------

class PackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_package_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    src_ = root_ + "/src";
    dest_ = root_ + "/dest";
    outside_ = root_ + "/outside";
    for (const std::string& d : {src_, dest_, outside_}) KILN_ASSERT_OK(base::MakeDirs(d));
  }
  void TearDown() override { KILN_EXPECT_OK(base::RemoveAll(root_)); }

  void Write(const std::string& rel, const std::string& content, int mode = 0644) {
    std::string path = src_ + "/" + rel;
    KILN_ASSERT_OK(base::MakeDirs(path.substr(0, path.rfind('/'))));
    KILN_ASSERT_OK(base::WriteFileAtomically(path, content, mode));
  }
  void Link(const std::string& rel, const std::string& target) {
    std::string path = src_ + "/" + rel;
    KILN_ASSERT_OK(base::MakeDirs(path.substr(0, path.rfind('/'))));
    ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
  }

  // Every entry below `dir`: "dir", "link:<target>", or "<mode>:<content>" for files.
  static std::map<std::string, std::string> Tree(const std::string& dir) {
    std::map<std::string, std::string> out;
    std::vector<std::string> pending = {""};
    while (!pending.empty()) {
      std::string rel = pending.back();
      pending.pop_back();
      DIR* d = ::opendir((dir + "/" + rel).c_str());
      if (d == nullptr) continue;
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        std::string child = rel.empty() ? name : rel + "/" + name;
        std::string path = dir + "/" + child;
        struct stat st;
        ::lstat(path.c_str(), &st);
        if (S_ISDIR(st.st_mode)) {
          out[child] = "dir";
          pending.push_back(child);
        } else if (S_ISLNK(st.st_mode)) {
          char buf[PATH_MAX];
          ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
          out[child] = "link:" + std::string(buf, n > 0 ? n : 0);
        } else {
          char mode[8];
          std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
          out[child] = std::string(mode) + ":" + base::ReadFile(path).value_or("?");
        }
      }
      ::closedir(d);
    }
    return out;
  }

  std::string root_, src_, dest_, outside_;
};

// ---------------------------------------------------------------------------------------
// CreatePackage + ExtractPackage

TEST_F(PackageTest, RoundTripKeepsTreeExecutableBitAndInsideLinks) {
  Write("train.py", "print('hi')\n");
  Write("run.sh", "#!/bin/sh\n", 0755);
  Write("pkg/model/net.py", "class Net: pass\n", 0600);
  Write("pkg/__init__.py", "");
  Write("d\xc3\xa4ta.txt", "non-ASCII name\n");
  Link("pkg/model/latest.py", "net.py");
  Link("up.py", "pkg/../train.py");
  ASSERT_EQ(::mkdir((src_ + "/empty").c_str(), 0755), 0);

  KILN_ASSERT_OK_AND_ASSIGN(std::string package, CreatePackage(src_));
  EXPECT_TRUE(LooksLikeGzip(package));
  KILN_ASSERT_OK(ExtractPackage(package, dest_));
  EXPECT_THAT(
      Tree(dest_),
      ElementsAre(Pair("d\xc3\xa4ta.txt", "0644:non-ASCII name\n"), Pair("empty", "dir"),
                  Pair("pkg", "dir"), Pair("pkg/__init__.py", "0644:"), Pair("pkg/model", "dir"),
                  Pair("pkg/model/latest.py", "link:net.py"),
                  Pair("pkg/model/net.py", "0644:class Net: pass\n"),
                  Pair("run.sh", "0755:#!/bin/sh\n"), Pair("train.py", "0644:print('hi')\n"),
                  Pair("up.py", "link:pkg/../train.py")));
}

TEST_F(PackageTest, EntriesAreRelativeWithoutDotSlash) {
  Write("a/b.txt", "x");
  KILN_ASSERT_OK_AND_ASSIGN(std::string package, CreatePackage(src_));
  EXPECT_THAT(ListArchive(package), ElementsAre("a/", "a/b.txt"));
}

TEST_F(PackageTest, SkipsBuiltInAndKilnignorePatterns) {
  Write("train.py", "x");
  Write(".git/HEAD", "ref");
  Write("pkg/__pycache__/m.cpython-311.pyc", "c");
  Write("pkg/m.pyc", "c");
  Write("build/out.o", "o");
  Write("pkg/build/x", "o");
  Write("build.py", "kept: build/ matches directories only");
  Write(".kiln/state", "s");
  Write(".kilnignore",
        "# comments and blank lines are ignored\n\n*.log\ndata/\n/top.txt\npkg/*.tmp\n  "
        "spaced.txt  \r\n");
  Write("run.log", "l");
  Write("pkg/deep/run.log", "l");
  Write("data/big.bin", "b");
  Write("pkg/data", "a file named data is kept");
  Write("top.txt", "t");
  Write("pkg/top.txt", "kept: /top.txt is anchored");
  Write("pkg/a.tmp", "t");
  Write("pkg/deep/a.tmp", "kept: pkg/*.tmp does not cross '/'");
  Write("spaced.txt", "s");

  KILN_ASSERT_OK_AND_ASSIGN(std::string package, CreatePackage(src_));
  EXPECT_THAT(ListArchive(package),
              UnorderedElementsAre(".kilnignore", "build.py", "pkg/", "pkg/data", "pkg/deep/",
                                   "pkg/deep/a.tmp", "pkg/top.txt", "train.py"));
}

TEST_F(PackageTest, RefusesLinksLeadingOutside) {
  Write("train.py", "x");
  Link("etc", "/etc");
  EXPECT_THAT(CreatePackage(src_), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr("\"etc\""), HasSubstr(".kilnignore"))));
  ASSERT_EQ(::unlink((src_ + "/etc").c_str()), 0);
  Link("sub/up", "../../outside");
  EXPECT_THAT(CreatePackage(src_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"sub/up\"")));
  ASSERT_EQ(::unlink((src_ + "/sub/up").c_str()), 0);
  // Each link alone looks inside; together they leave.
  Link("a", ".");
  Link("b", "a/..");
  EXPECT_THAT(CreatePackage(src_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"b\"")));
  // An ignored link is not looked at.
  Write(".kilnignore", "b\n");
  KILN_EXPECT_OK(CreatePackage(src_));
}

TEST_F(PackageTest, CreateRefusesMissingOrNonDirectory) {
  EXPECT_THAT(CreatePackage(root_ + "/nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  Write("file", "x");
  EXPECT_THAT(CreatePackage(src_ + "/file"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a directory")));
}

TEST_F(PackageTest, CompressedSizeLimitNamesTheLargestFiles) {
  std::mt19937 rng(7);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  };
  Write("small.py", "x");
  Write("weights/a.bin", random_bytes(64 << 10));
  Write("weights/b.bin", random_bytes(48 << 10));
  Write("data.npy", random_bytes(32 << 10));
  Write("d.bin", random_bytes(1 << 10));
  PackageLimits limits;
  limits.max_compressed_bytes = 100 << 10;
  EXPECT_THAT(
      CreatePackage(src_, limits),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("100.0 KiB"), HasSubstr("weights/a.bin (64.0 KiB)"),
                     HasSubstr("weights/b.bin (48.0 KiB)"), HasSubstr("data.npy (32.0 KiB)"),
                     ::testing::Not(HasSubstr("d.bin")), HasSubstr(".kilnignore"))));
}

TEST_F(PackageTest, CreateRefusesTreesOverEntryOrByteLimits) {
  for (int i = 0; i < 5; ++i) Write("f" + std::to_string(i), std::string(100, 'z'));
  PackageLimits few_entries;
  few_entries.max_entries = 4;
  EXPECT_THAT(CreatePackage(src_, few_entries),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("5 files and folders")));
  PackageLimits few_bytes;
  few_bytes.max_total_bytes = 300;
  EXPECT_THAT(CreatePackage(src_, few_bytes),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("500 B")));
}

// ---------------------------------------------------------------------------------------
// ExtractPackage refusals

TEST_F(PackageTest, RefusesDotDotEntries) {
  std::string evil =
      BuildTarGz({{.name = "ok.txt", .data = "fine"}, {.name = "../evil", .data = "x"}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"../evil\""), HasSubstr("\"..\""))));
  EXPECT_THAT(Tree(root_ + "/outside"), IsEmpty());
  EXPECT_NE(::access((root_ + "/evil").c_str(), F_OK), 0);

  std::string nested = BuildTarGz({{.name = "a/../../evil2", .data = "x"}});
  EXPECT_THAT(ExtractPackage(nested, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"..\"")));
  EXPECT_NE(::access((root_ + "/evil2").c_str(), F_OK), 0);
}

TEST_F(PackageTest, RefusesAbsolutePaths) {
  std::string evil = BuildTarGz({{.name = outside_ + "/x", .data = "x"}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
  EXPECT_THAT(Tree(outside_), IsEmpty());
  std::string etc = BuildTarGz({{.name = "/etc/x", .data = "x"}});
  EXPECT_THAT(ExtractPackage(etc, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"/etc/x\"")));
}

TEST_F(PackageTest, RefusesAbsoluteSymlinkAndNeverWritesThroughIt) {
  std::string evil = BuildTarGz({{.name = "link", .type = AE_IFLNK, .link = outside_},
                                 {.name = "link/passwd", .data = "pwned"}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"link\""), HasSubstr("absolute"))));
  EXPECT_THAT(Tree(outside_), IsEmpty());
  EXPECT_THAT(Tree(dest_), IsEmpty());

  std::string etc = BuildTarGz({{.name = "link", .type = AE_IFLNK, .link = "/etc"},
                                {.name = "link/passwd", .data = "pwned"}});
  EXPECT_THAT(ExtractPackage(etc, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
}

TEST_F(PackageTest, RefusesRelativeSymlinkEscapingDest) {
  std::string evil = BuildTarGz({{.name = "sub/up", .type = AE_IFLNK, .link = "../../outside"},
                                 {.name = "sub/up/x", .data = "pwned"}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"sub/up\""), HasSubstr("outside the package"))));
  EXPECT_THAT(Tree(outside_), IsEmpty());
}

TEST_F(PackageTest, RefusesEntriesThroughAnInsideSymlink) {
  // Links are created last, so `link/passwd` makes a real directory and the link then
  // clashes with it: refused either way, nothing written through a link.
  std::string evil = BuildTarGz({{.name = "sub", .type = AE_IFDIR, .perm = 0755},
                                 {.name = "link", .type = AE_IFLNK, .link = "sub"},
                                 {.name = "link/passwd", .data = "x"}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"link\"")));
  EXPECT_THAT(Tree(dest_ + "/sub"), IsEmpty());
}

TEST_F(PackageTest, NeverFollowsSymlinksAlreadyInDest) {
  ASSERT_EQ(::symlink(outside_.c_str(), (dest_ + "/pre").c_str()), 0);
  std::string package = BuildTarGz({{.name = "pre/file", .data = "pwned"}});
  EXPECT_THAT(ExtractPackage(package, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"pre/file\""), HasSubstr("symlink"))));
  EXPECT_THAT(Tree(outside_), IsEmpty());

  // A file entry replaces the link itself rather than writing to where it points.
  ASSERT_EQ(::symlink((outside_ + "/target").c_str(), (dest_ + "/victim").c_str()), 0);
  KILN_ASSERT_OK(ExtractPackage(BuildTarGz({{.name = "victim", .data = "mine"}}), dest_));
  EXPECT_THAT(Tree(outside_), IsEmpty());
  EXPECT_EQ(base::ReadFile(dest_ + "/victim").value_or(""), "mine");
}

TEST_F(PackageTest, RefusesSymlinkChainsThatEscapeTogether) {
  std::string evil = BuildTarGz({{.name = "a", .type = AE_IFLNK, .link = "."},
                                 {.name = "b", .type = AE_IFLNK, .link = "a/.."}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"b\""), HasSubstr("through other links"))));
  EXPECT_THAT(Tree(dest_), IsEmpty()) << "the links are removed";

  std::string deeper = BuildTarGz({{.name = "d/e/up", .type = AE_IFLNK, .link = "../.."},
                                   {.name = "x", .type = AE_IFLNK, .link = "d/e/up/../outside"}});
  EXPECT_THAT(ExtractPackage(deeper, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"x\"")));
  EXPECT_THAT(Tree(dest_), ElementsAre(Pair("d", "dir"), Pair("d/e", "dir")));
}

TEST_F(PackageTest, RefusesHardLinks) {
  std::string evil = BuildTarGz(
      {{.name = "a", .data = "x"}, {.name = "b", .type = AE_IFREG, .link = "a", .hardlink = true}});
  EXPECT_THAT(ExtractPackage(evil, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"b\""), HasSubstr("hard link"))));
}

TEST_F(PackageTest, RefusesFifosAndDevices) {
  EXPECT_THAT(ExtractPackage(BuildTarGz({{.name = "pipe", .type = AE_IFIFO}}), dest_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"pipe\""), HasSubstr("fifos"))));
  EXPECT_THAT(ExtractPackage(BuildTarGz({{.name = "null", .type = AE_IFCHR}}), dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("devices")));
  EXPECT_THAT(Tree(dest_), IsEmpty());
}

TEST_F(PackageTest, RefusesTooManyEntries) {
  std::vector<RawEntry> entries;
  for (int i = 0; i < 6; ++i) entries.push_back({.name = "f" + std::to_string(i), .data = "x"});
  PackageLimits limits;
  limits.max_entries = 5;
  EXPECT_THAT(ExtractPackage(BuildTarGz(entries), dest_, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 5 entries")));
  entries.pop_back();
  KILN_EXPECT_OK(ExtractPackage(BuildTarGz(entries), dest_, limits));
}

TEST_F(PackageTest, StopsAZipBombAtTheByteLimit) {
  // 16 MiB of zeros compress to ~16 KiB.
  std::string bomb = BuildTarGz({{.name = "zeros", .zeros = 16 << 20}});
  ASSERT_LT(bomb.size(), 1u << 20);
  PackageLimits limits;
  limits.max_total_bytes = 1 << 20;
  EXPECT_THAT(ExtractPackage(bomb, dest_, limits),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"zeros\""), HasSubstr("1.0 MiB"))));
  struct stat st;
  if (::stat((dest_ + "/zeros").c_str(), &st) == 0) {
    EXPECT_LE(st.st_size, 1 << 20);
  }

  // Many files each under the limit, together over it.
  std::vector<RawEntry> many;
  for (int i = 0; i < 8; ++i) many.push_back({.name = "z" + std::to_string(i), .zeros = 200 << 10});
  EXPECT_THAT(ExtractPackage(BuildTarGz(many), dest_, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"z5\"")));
  int64_t written = 0;
  for (const auto& [name, desc] : Tree(dest_)) {
    if (::stat((dest_ + "/" + name).c_str(), &st) == 0) written += st.st_size;
  }
  EXPECT_LE(written, 1 << 20);
}

TEST_F(PackageTest, RefusesCorruptTruncatedAndNonGzipInput) {
  Write("train.py", std::string(5000, 'a') + "tail");
  Write("b.py", "b");
  KILN_ASSERT_OK_AND_ASSIGN(std::string package, CreatePackage(src_));

  auto not_valid =
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("package is not a valid .tar.gz"));
  EXPECT_THAT(ExtractPackage(package.substr(0, package.size() / 2), dest_), not_valid);
  EXPECT_THAT(ExtractPackage(package.substr(0, package.size() - 6), dest_), not_valid);
  EXPECT_THAT(ExtractPackage("", dest_), not_valid);
  EXPECT_THAT(ExtractPackage("plain text", dest_), not_valid);
  EXPECT_THAT(ExtractPackage(std::string("\x1f\x8b garbage after the magic"), dest_), not_valid);
  std::string flipped = package;
  flipped[flipped.size() / 2] ^= 0x55;
  EXPECT_THAT(ExtractPackage(flipped, dest_), not_valid);
  // gzip of something that is not a tar.
  std::string gz_text;
  {
    archive* a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    archive_write_open(a, &gz_text, nullptr, Append, nullptr);
    archive_entry* e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    archive_write_header(a, e);
    std::string text(2000, 'q');
    archive_write_data(a, text.data(), text.size());
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
  }
  ASSERT_TRUE(LooksLikeGzip(gz_text));
  EXPECT_THAT(ExtractPackage(gz_text, dest_), not_valid);
}

TEST_F(PackageTest, RefusesPackagesOverTheCompressedLimit) {
  Write("train.py", "x");
  KILN_ASSERT_OK_AND_ASSIGN(std::string package, CreatePackage(src_));
  PackageLimits limits;
  limits.max_compressed_bytes = 10;
  EXPECT_THAT(ExtractPackage(package, dest_, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST_F(PackageTest, DropsSetuidAndKeepsOnlyTheExecutableBit) {
  std::string package = BuildTarGz({{.name = "suid", .data = "x", .perm = 06755},
                                    {.name = "private", .data = "y", .perm = 0600},
                                    {.name = "ro_dir", .type = AE_IFDIR, .perm = 0500},
                                    {.name = "ro_dir/f", .data = "z", .perm = 0444}});
  KILN_ASSERT_OK(ExtractPackage(package, dest_));
  EXPECT_THAT(Tree(dest_), ElementsAre(Pair("private", "0644:y"), Pair("ro_dir", "dir"),
                                       Pair("ro_dir/f", "0644:z"), Pair("suid", "0755:x")));
  struct stat st;
  ASSERT_EQ(::stat((dest_ + "/ro_dir").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

TEST_F(PackageTest, ExtractsIntoANonEmptyDestReplacingFiles) {
  KILN_ASSERT_OK(base::WriteFileAtomically(dest_ + "/config.json", "{}"));
  KILN_ASSERT_OK(base::WriteFileAtomically(dest_ + "/train.py", "old"));
  KILN_ASSERT_OK(ExtractPackage(BuildTarGz({{.name = "./train.py", .data = "new"},
                                            {.name = "./", .type = AE_IFDIR, .perm = 0755}}),
                                dest_));
  EXPECT_THAT(Tree(dest_),
              ElementsAre(Pair("config.json", "0644:{}"), Pair("train.py", "0644:new")));
  // A file may not replace a directory.
  ASSERT_EQ(::mkdir((dest_ + "/d").c_str(), 0755), 0);
  EXPECT_THAT(ExtractPackage(BuildTarGz({{.name = "d", .data = "x"}}), dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"d\"")));
}

TEST_F(PackageTest, ExtractNeedsAnExistingDest) {
  EXPECT_THAT(ExtractPackage(BuildTarGz({{.name = "a", .data = "x"}}), root_ + "/missing"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(PackageTest, RefusesOverlongNamesAsBadInput) {
  std::string package = BuildTarGz({{.name = std::string(300, 'n'), .data = "x"}});
  EXPECT_THAT(ExtractPackage(package, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(LooksLikeGzipTest, ChecksTheMagic) {
  EXPECT_TRUE(LooksLikeGzip(std::string("\x1f\x8b\x08", 3)));
  EXPECT_FALSE(LooksLikeGzip(std::string("\x1f", 1)));
  EXPECT_FALSE(LooksLikeGzip("PK\x03\x04"));
  EXPECT_FALSE(LooksLikeGzip(""));
}

// ---------------------------------------------------------------------------------------
// PlaceSingleFile

TEST_F(PackageTest, PlacesASingleFile) {
  KILN_ASSERT_OK(PlaceSingleFile("print(1)\n", "WMLA_HPO_pytorch.py", dest_));
  KILN_ASSERT_OK(PlaceSingleFile("print(2)\n", "WMLA_HPO_pytorch.py", dest_));
  EXPECT_THAT(Tree(dest_), ElementsAre(Pair("WMLA_HPO_pytorch.py", "0644:print(2)\n")));
}

TEST_F(PackageTest, SingleFileNameMustBePlain) {
  for (const std::string& name :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
        std::string("/etc/passwd"), std::string("../x"), std::string("x\0y", 3)}) {
    EXPECT_THAT(PlaceSingleFile("x", name, dest_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("plain file name")))
        << name;
  }
  EXPECT_THAT(Tree(dest_), IsEmpty());
  EXPECT_THAT(PlaceSingleFile("x", "a.py", root_ + "/missing"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(PackageTest, SingleFileReplacesALinkInsteadOfFollowingIt) {
  ASSERT_EQ(::symlink((outside_ + "/t").c_str(), (dest_ + "/a.py").c_str()), 0);
  KILN_ASSERT_OK(PlaceSingleFile("x", "a.py", dest_));
  EXPECT_THAT(Tree(outside_), IsEmpty());
  EXPECT_THAT(Tree(dest_), ElementsAre(Pair("a.py", "0644:x")));
}

// ---------------------------------------------------------------------------------------
// CopyFolder

TEST_F(PackageTest, CopiesAFolderWithIgnoreRulesAndInsideLinks) {
  Write("train.py", "t");
  Write("bin/run", "r", 0755);
  Write(".git/config", "g");
  Write("logs/x.log", "l");
  Write(".kilnignore", "*.log\n");
  Link("bin/train.py", "../train.py");
  std::string copy = root_ + "/copy/nested";
  KILN_ASSERT_OK(CopyFolder(src_, copy));
  EXPECT_THAT(Tree(copy),
              ElementsAre(Pair(".kilnignore", "0644:*.log\n"), Pair("bin", "dir"),
                          Pair("bin/run", "0755:r"), Pair("bin/train.py", "link:../train.py"),
                          Pair("logs", "dir"), Pair("train.py", "0644:t")));
}

TEST_F(PackageTest, CopyRefusesOutsideLinksAndMissingSource) {
  Write("train.py", "t");
  Link("data", outside_);
  EXPECT_THAT(CopyFolder(src_, dest_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"data\"")));
  EXPECT_THAT(CopyFolder(root_ + "/nope", dest_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

}  // namespace
}  // namespace kiln::agent
