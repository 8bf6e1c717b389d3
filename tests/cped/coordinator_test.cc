// The single-node Coordinator (lib/cped/coordinator.h): always the leader once campaigning,
// an epoch raised by one at every start and persisted, keys persisted, bad files refused
// with their name. And the retry of a guarded write etcd did not answer, on a manual clock
// (tests/etcd/etcd_coordinator_test.cc has it on a real etcd that loses its leader).
#include "common/fs.h"
#include "cped/coordinator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

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

// A store that fails with `errors` in turn, then succeeds; every attempt and pause counted,
// pauses moving the manual clock.
struct FlakyStore {
    explicit FlakyStore(std::vector<std::string> e) : errors(std::move(e)) {}
    std::vector<std::string> errors;
    ManualClock clock;
    int attempts = 0;
    std::vector<Millis> pauses;
    bool term = true;
    Status run(WriteRetry retry = {}) {
        return retryUnansweredWrite(
            [&]() -> Status {
                ++attempts;
                clock.advance(10); // the call's own time
                if (static_cast<size_t>(attempts) <= errors.size())
                    return makeError(errors[static_cast<size_t>(attempts) - 1]);
                return Status::success();
            },
            [&] { return term; }, clock,
            [&](Millis ms) {
                pauses.push_back(ms);
                clock.advance(ms);
            },
            retry);
    }
};

constexpr const char* kTimeout = "etcd 127.0.0.1:2379: Txn: DEADLINE_EXCEEDED: Deadline Exceeded";
constexpr const char* kNoEndpoint =
    "no etcd endpoint answered: etcd 127.0.0.1:2379: Txn: UNAVAILABLE: Socket closed";

TEST(RetryUnansweredWrite, OnlyAStoreThatDidNotAnswerIsAskedAgain) {
    EXPECT_TRUE(isUnansweredWrite(makeError(kTimeout)));
    EXPECT_TRUE(isUnansweredWrite(makeError(kNoEndpoint)));
    // A member that could not serve it: removed under the call, or between raft leaders.
    EXPECT_TRUE(isUnansweredWrite(makeError("etcd 127.0.0.1:2379: Txn: ERROR: raft: stopped")));
    EXPECT_TRUE(isUnansweredWrite(
        makeError("etcd 127.0.0.1:2379: Txn: UNKNOWN: etcdserver: leader changed")));
    EXPECT_TRUE(isUnansweredWrite(
        makeError("etcd 127.0.0.1:2379: Txn: UNKNOWN: etcdserver: request timed out")));
    EXPECT_FALSE(isUnansweredWrite(
        makeError("etcd 127.0.0.1:2379: Txn: INVALID_ARGUMENT: etcdserver: too many operations "
                  "in txn request")));
    EXPECT_FALSE(isUnansweredWrite(makeError("stale-epoch: etcd refused the write of epoch 7")));
    EXPECT_FALSE(isUnansweredWrite(makeError("not-leader: a is not the leader (UNAVAILABLE)")));
    EXPECT_FALSE(isUnansweredWrite(makeError("coordinator key 'x y' has a space")));
}

TEST(RetryUnansweredWrite, AWriteEtcdDidNotAnswerIsSentAgainUntilItIsApplied) {
    FlakyStore s(std::vector<std::string>{kTimeout, kNoEndpoint});
    EXPECT_TRUE(s.run().ok());
    EXPECT_EQ(s.attempts, 3);
    EXPECT_EQ(s.pauses, (std::vector<Millis>{100, 100}));
}

TEST(RetryUnansweredWrite, ARefusalIsFinalAtOnce) {
    FlakyStore s(std::vector<std::string>{
        "stale-epoch: etcd refused the write of epoch 7: /pcloud/leader/1 is gone"});
    auto st = s.run();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().message,
              "stale-epoch: etcd refused the write of epoch 7: /pcloud/leader/1 is gone");
    EXPECT_EQ(s.attempts, 1);
    EXPECT_TRUE(s.pauses.empty());
}

TEST(RetryUnansweredWrite, NothingIsSentAgainOnceTheTermEnded) {
    FlakyStore s(std::vector<std::string>{kTimeout, kTimeout});
    s.term = false;
    auto st = s.run();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().message,
              std::string(kTimeout) + " (sent 1 time; this cped's term ended meanwhile)");
    EXPECT_EQ(s.attempts, 1);
}

TEST(RetryUnansweredWrite, TheBudgetBoundsTheAttemptsAndTheErrorSaysHowMany) {
    FlakyStore s(std::vector<std::string>(100, kTimeout));
    auto st = s.run(WriteRetry{1000, 100});
    ASSERT_FALSE(st.ok());
    // 10 ms per call, 100 ms per pause: the 10th attempt ends at 1000 ms, and one more
    // pause would pass the budget.
    EXPECT_EQ(s.attempts, 10);
    EXPECT_EQ(st.error().message,
              std::string(kTimeout) + " (sent 10 times; gave up after 1000 ms)");
}

} // namespace
