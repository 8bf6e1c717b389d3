#include "common/fs.h"

#include <cstdlib>
#include <gtest/gtest.h>
#include <string>

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
