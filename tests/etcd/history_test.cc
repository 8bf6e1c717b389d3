// The zone's history check (etcd/history.h) on written histories: each rule must find its
// violation, and a clean handover must pass.
#include "etcd/history.h"

#include <gtest/gtest.h>

using pcloud::etcdtest::Accepted;
using pcloud::etcdtest::checkHistory;
using pcloud::etcdtest::parseAccepted;
using pcloud::etcdtest::parseLogTime;

namespace {

Accepted at(const std::string& receiver, const std::string& sender, std::int64_t epoch,
            std::int64_t ms) {
    return Accepted{receiver, sender, epoch, ms, "status cped-" + std::to_string(ms)};
}

bool mentions(const std::vector<std::string>& v, const std::string& text) {
    for (const auto& s : v)
        if (s.find(text) != std::string::npos)
            return true;
    return false;
}

} // namespace

TEST(History, ACleanHandoverPasses) {
    EXPECT_TRUE(
        checkHistory({at("h1/dped web", "cped:h1", 5, 100), at("h1/dped web", "cped:h1", 5, 200),
                      at("h2/dped web", "cped:h2", 9, 300), at("h2/dped web", "cped:h2", 9, 400)})
            .empty());
    EXPECT_TRUE(checkHistory({}).empty());
}

TEST(History, AnOlderLeadersCommandAfterANewerOnesIsTwoLeadersActing) {
    auto v =
        checkHistory({at("h1/dped web", "cped:h1", 5, 100), at("h2/dped web", "cped:h2", 9, 300),
                      at("h1/dped web", "cped:h1", 5, 400)});
    ASSERT_EQ(v.size(), 1u);
    EXPECT_TRUE(mentions(v, "two leaders acted at once: h1/dped web accepted status cped-400 from "
                            "cped:h1 under epoch 5 at 400 ms, after h2/dped web accepted"))
        << v[0];
}

TEST(History, ReceiversAreCheckedInTheOrderTheyAccepted) {
    // h2 took epoch 9, then 5: backwards at that receiver, and two leaders acting.
    auto v =
        checkHistory({at("h2/dped web", "cped:h2", 9, 100), at("h2/dped web", "cped:h1", 5, 200)});
    EXPECT_TRUE(mentions(v, "epoch went backwards at h2/dped web")) << v.size();
    EXPECT_TRUE(mentions(v, "two leaders acted at once"));
    // Logged out of time order (same receiver, same ms): only the accept order counts there.
    v = checkHistory({at("h2/dped web", "cped:h2", 9, 100), at("h2/dped web", "cped:h2", 7, 100)});
    ASSERT_EQ(v.size(), 1u);
    EXPECT_TRUE(mentions(v, "epoch went backwards"));
}

// A resumed leader's fence reaches its dped after the newer leader acted: that only stops
// the dped, so it is no overlap; another command there would be.
TEST(History, ALateFenceIsNoOverlapButALateCommandIs) {
    auto fence = at("h1/dped web", "cped:h1", 5, 400);
    fence.what = "fence cped-9";
    fence.fence = true;
    EXPECT_TRUE(checkHistory({at("h1/dped web", "cped:h1", 5, 100),
                              at("h3/dped web", "cped:h3", 9, 300), fence})
                    .empty());
    auto v =
        checkHistory({at("h1/dped web", "cped:h1", 5, 100), at("h3/dped web", "cped:h3", 9, 300),
                      fence, at("h1/dped web", "cped:h1", 5, 500)});
    ASSERT_EQ(v.size(), 1u);
    EXPECT_TRUE(mentions(v, "status cped-500"));
    // Still one sender per epoch and no epoch backwards at its receiver.
    auto backwards = fence;
    backwards.epoch = 3;
    EXPECT_TRUE(mentions(checkHistory({at("h1/dped web", "cped:h1", 5, 100), backwards}),
                         "epoch went backwards"));
}

TEST(History, OneEpochHasOneSender) {
    auto v =
        checkHistory({at("h1/dped web", "cped:h1", 5, 100), at("h2/dped web", "cped:h2", 5, 200)});
    ASSERT_EQ(v.size(), 1u);
    EXPECT_TRUE(mentions(v, "two senders under epoch 5"));
}

TEST(History, TheSameMillisecondCannotBeOrderedAndIsNoViolation) {
    EXPECT_TRUE(
        checkHistory({at("h2/dped web", "cped:h2", 9, 300), at("h1/dped web", "cped:h1", 5, 300)})
            .empty());
}

TEST(History, ParsesDpedsAcceptedLinesAndSkipsTheRest) {
    const std::string log =
        "2026-12-04T04:27:25.176Z dped[web] info: Accepted a command deployable=web id=cped-7 "
        "command=status sender=cped:h1 epoch=5\n"
        "2026-12-04T04:27:25.180Z cped notice: dped fenced off until this cped leads again\n"
        "2026-12-04T04:27:25.2Z dped[web] info: Accepted a command deployable=web id=cped-8 "
        "command=status sender=cped:h1 epoch=5\n"
        "2026-12-04T04:27:26.001Z dped[web] info: Accepted a command deployable=web id=cped-9 "
        "command=fence sender=cped:h1 epoch=x5\n"
        "2026-12-04T04:27:26.002Z dped[web] info: Accepted a command deployable=web id=cped-10 "
        "command=fence sender=cped:h1 epoch=6\n";
    auto h = parseAccepted(log, "h1");
    ASSERT_EQ(h.size(), 2u);
    EXPECT_FALSE(h[0].fence);
    EXPECT_TRUE(h[1].fence);
    EXPECT_EQ(h[0].receiver, "h1/dped web");
    EXPECT_EQ(h[0].sender, "cped:h1");
    EXPECT_EQ(h[0].epoch, 5);
    EXPECT_EQ(h[0].what, "status cped-7");
    EXPECT_EQ(h[0].at_ms, parseLogTime("2026-12-04T04:27:25.176Z"));
    EXPECT_EQ(h[1].at_ms - h[0].at_ms, 826);
    EXPECT_EQ(h[1].epoch, 6);
    EXPECT_EQ(parseLogTime("2026-12-04T04:27:25.176"), -1);
    EXPECT_EQ(parseLogTime("1970-01-01T00:00:01.500Z"), 1500);
}
