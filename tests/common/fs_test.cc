#include "common/fs.h"

#include <cstdlib>
#include <filesystem>
#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace pcloud;

namespace {
std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-fs-XXXXXX";
    return ::mkdtemp(tmpl);
}
} // namespace

TEST(Fs, WriteAtomicReplacesContents) {
    auto dir = tempDir();
    auto path = dir + "/f.xml";
    ASSERT_TRUE(fs::writeAtomic(path, "one").ok());
    ASSERT_TRUE(fs::writeAtomic(path, "two").ok());
    EXPECT_EQ(*fs::readFile(path), "two");
}

TEST(Fs, CrashBeforeRenameLeavesOldFile) {
    auto dir = tempDir();
    auto path = dir + "/f.xml";
    ASSERT_TRUE(fs::writeAtomic(path, "old contents").ok());
    auto st = fs::writeAtomic(path, "new contents", [] { return false; });
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(*fs::readFile(path), "old contents");
}

TEST(Fs, ReadMissingFileNamesIt) {
    auto r = fs::readFile("/nonexistent/pcloud/x.xml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().describe().find("/nonexistent/pcloud/x.xml"), std::string::npos);
}

TEST(Fs, StateFilesArePrivate) {
    auto dir = tempDir();
    auto path = dir + "/f.xml";
    ::umask(0); // even with no umask, the file is 0600
    ASSERT_TRUE(fs::writeAtomic(path, "one").ok());
    ::umask(022);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    // A caller that wants a world-readable file (the balancer include) says so.
    ASSERT_TRUE(fs::writeAtomic(path, "two", {}, 0644).ok());
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u);
}

TEST(Fs, TempFileNamesAreNotPredictable) {
    auto dir = tempDir();
    auto path = dir + "/f.xml";
    // The old name was PATH.tmp.PID: a symlink planted there must not be written through.
    auto victim = dir + "/victim";
    ASSERT_TRUE(fs::writeAtomic(victim, "precious").ok());
    auto planted = path + ".tmp." + std::to_string(::getpid());
    ASSERT_EQ(::symlink(victim.c_str(), planted.c_str()), 0);
    std::vector<std::string> seen;
    ASSERT_TRUE(fs::writeAtomic(path, "new", [&] {
                    for (const auto& e : std::filesystem::directory_iterator(dir))
                        seen.push_back(e.path().filename());
                    return true;
                }).ok());
    EXPECT_EQ(*fs::readFile(victim), "precious");
    EXPECT_EQ(*fs::readFile(path), "new");
    // Just before the rename there was exactly one temp file besides the planted link,
    // with a random suffix.
    int temps = 0;
    for (const auto& n : seen)
        if (n.rfind("f.xml.tmp.", 0) == 0 && n != planted.substr(dir.size() + 1)) {
            ++temps;
            EXPECT_EQ(n.size(), std::string("f.xml.tmp.").size() + 16) << n;
        }
    EXPECT_EQ(temps, 1);
}

TEST(Fs, ReplacingASymlinkDoesNotWriteThroughIt) {
    auto dir = tempDir();
    auto victim = dir + "/victim";
    ASSERT_TRUE(fs::writeAtomic(victim, "precious").ok());
    auto path = dir + "/link";
    ASSERT_EQ(::symlink(victim.c_str(), path.c_str()), 0);
    ASSERT_TRUE(fs::writeAtomic(path, "new").ok());
    EXPECT_EQ(*fs::readFile(victim), "precious");
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST(Fs, MakePrivateDirIs0700EvenWhenItExisted) {
    auto dir = tempDir();
    auto state = dir + "/a/state";
    ASSERT_TRUE(fs::makePrivateDir(state).ok());
    struct stat st {};
    ASSERT_EQ(::stat(state.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(::chmod(state.c_str(), 0755), 0);
    ASSERT_TRUE(fs::makePrivateDir(state).ok());
    ASSERT_EQ(::stat(state.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    // A file in the way is an error naming it.
    ASSERT_TRUE(fs::writeAtomic(dir + "/file", "x").ok());
    auto r = fs::makePrivateDir(dir + "/file");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().describe().find(dir + "/file"), std::string::npos);
}
