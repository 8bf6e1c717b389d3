// The single-node Coordinator (lib/cped/coordinator.h): always the leader once campaigning,
// an epoch raised by one at every start and persisted, keys persisted, bad files refused
// with their name.
#include "common/fs.h"
#include "cped/coordinator.h"

#include <gtest/gtest.h>

#include <cstdlib>

using namespace pcloud;
using namespace pcloud::cped;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-coord-XXXXXX";
    return ::mkdtemp(tmpl);
}

TEST(CoordinatorKey, Validation) {
    EXPECT_EQ(*coordinatorKey("model/web"), "/pcloud/model/web");
    EXPECT_FALSE(coordinatorKey("").ok());
    EXPECT_FALSE(coordinatorKey("/abs").ok());
    EXPECT_FALSE(coordinatorKey("a/../b").ok());
    EXPECT_FALSE(coordinatorKey("a b").ok());
    auto leader = coordinatorKey("leader/123");
    ASSERT_FALSE(leader.ok());
    EXPECT_NE(leader.error().message.find("election"), std::string::npos);
}

TEST(LocalCoordinator, LeadsOnceCampaigningWithAnEpochThatRisesAtEveryStart) {
    auto dir = tempDir();
    std::int64_t first = 0;
    {
        auto c = makeLocalCoordinator(dir, "solo");
        ASSERT_TRUE(c.ok()) << c.error().describe();
        EXPECT_FALSE((*c)->isLeader()) << "not before campaign()";
        std::vector<LeadershipInfo> seen;
        (*c)->onLeadershipChange([&](const LeadershipInfo& li) { seen.push_back(li); });
        EXPECT_FALSE((*c)->put("x", "1").ok()) << "a write before campaigning is refused";
        ASSERT_TRUE((*c)->campaign().ok());
        ASSERT_EQ(seen.size(), 1u);
        EXPECT_TRUE(seen[0].leader);
        EXPECT_EQ(seen[0].leader_name, "solo");
        first = (*c)->epoch();
        EXPECT_GE(first, 1);
        ASSERT_TRUE((*c)->put("desired/web", "started").ok());
        EXPECT_EQ(*(*c)->get("desired/web").value(), "started");
        EXPECT_FALSE((*c)->get("desired/none").value().has_value());
    }
    auto again = makeLocalCoordinator(dir, "solo");
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE((*again)->campaign().ok());
    EXPECT_EQ((*again)->epoch(), first + 1);
    EXPECT_EQ(*(*again)->get("desired/web").value(), "started") << "keys survive a restart";
    ASSERT_TRUE((*again)->erase("desired/web").ok());
    EXPECT_FALSE((*again)->get("desired/web").value().has_value());
    (*again)->resign();
    auto refused = (*again)->put("x", "1");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().message.rfind("not-leader", 0), 0u);
    std::system(("rm -rf " + dir).c_str());
}

TEST(LocalCoordinator, BadEpochFileIsAnErrorNamingIt) {
    auto dir = tempDir();
    ASSERT_TRUE(fs::writeAtomic(dir + "/epoch", "seven\n").ok());
    auto c = makeLocalCoordinator(dir, "solo");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().describe().find(dir + "/epoch:1: "), std::string::npos)
        << c.error().describe();
    EXPECT_EQ(*fs::readFile(dir + "/epoch"), "seven\n") << "the file is left as it was";
    ASSERT_TRUE(fs::writeAtomic(dir + "/epoch", "4\n").ok());
    ASSERT_TRUE(fs::writeAtomic(dir + "/coordinator.json", "[1,2]").ok());
    auto k = makeLocalCoordinator(dir, "solo");
    ASSERT_FALSE(k.ok());
    EXPECT_NE(k.error().describe().find("coordinator.json"), std::string::npos);
    std::system(("rm -rf " + dir).c_str());
}

} // namespace
