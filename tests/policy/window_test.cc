#include "policy/policy.h"
#include "policy/window.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::policy;

TEST(SlidingWindow, CountsFailuresWithinPeriodInclusive) {
    model::Escalation b{3, 10'000};
    std::vector<Millis> w;
    EXPECT_EQ(recordFailure(w, b, 0), 1);
    EXPECT_EQ(recordFailure(w, b, 5'000), 2);
    EXPECT_EQ(recordFailure(w, b, 10'000), 3); // exactly T after the first: still inside
    EXPECT_TRUE(budgetUsedUp(3, b));
}

TEST(SlidingWindow, FailureOneMillisecondOutsideSlidesOut) {
    model::Escalation b{3, 10'000};
    std::vector<Millis> w;
    recordFailure(w, b, 0);
    recordFailure(w, b, 5'000);
    EXPECT_EQ(recordFailure(w, b, 10'001), 2);
    EXPECT_FALSE(budgetUsedUp(2, b));
    EXPECT_EQ(countInWindow(w, b, 15'001), 1);
}

TEST(SlidingWindow, UnlimitedFailuresNeverUsedUpAndStayBounded) {
    model::Escalation b{model::kUnlimitedFailures, model::kUnlimitedPeriod};
    std::vector<Millis> w;
    EXPECT_EQ(recordFailure(w, b, 0), 1);
    EXPECT_EQ(recordFailure(w, b, 1), 2); // counted, for status, though never used up
    for (int i = 2; i < 1000; ++i)
        recordFailure(w, b, i);
    EXPECT_FALSE(budgetUsedUp(1000, b));
    EXPECT_EQ(w.size(), kUnlimitedRemembered);
    EXPECT_EQ(w.back(), 999); // the newest are kept
    model::Escalation hourly{model::kUnlimitedFailures, 3'600'000};
    std::vector<Millis> h;
    recordFailure(h, hourly, 0);
    EXPECT_EQ(recordFailure(h, hourly, 3'600'001), 1); // an unlimited count still slides
}

TEST(SlidingWindow, UnlimitedPeriodCountsForever) {
    model::Escalation b{2, model::kUnlimitedPeriod};
    std::vector<Millis> w;
    recordFailure(w, b, 0);
    EXPECT_EQ(recordFailure(w, b, 1'000'000'000), 2);
    EXPECT_TRUE(budgetUsedUp(2, b));
}

TEST(SlidingWindow, ZeroBudgetEscalatesOnFirstFailure) {
    model::Escalation b{0, 1000};
    std::vector<Millis> w;
    EXPECT_TRUE(budgetUsedUp(recordFailure(w, b, 5), b));
}

TEST(SlidingWindow, ClockGoingBackwardsKeepsFailures) {
    model::Escalation b{3, 1000};
    std::vector<Millis> w{5000};
    EXPECT_EQ(recordFailure(w, b, 4000), 2);
}

TEST(Backoff, FirstImmediateThenGrowsAndCaps) {
    model::Backoff b{1000, 2.0, 5000, 60'000};
    EXPECT_EQ(backoffDelay(b, 0), 0);
    EXPECT_EQ(backoffDelay(b, 1), 1000);
    EXPECT_EQ(backoffDelay(b, 2), 2000);
    EXPECT_EQ(backoffDelay(b, 3), 4000);
    EXPECT_EQ(backoffDelay(b, 4), 5000);
    EXPECT_EQ(backoffDelay(b, 1000000), 5000); // no overflow
}

TEST(Backoff, FactorOneIsConstant) {
    model::Backoff b{750, 1.0, 60'000, 1};
    EXPECT_EQ(backoffDelay(b, 7), 750);
}

TEST(Jitter, RandomJitterStaysWithinATenth) {
    RandomJitter j(42);
    for (int i = 0; i < 1000; ++i) {
        Millis x = j.jitter(10'000);
        EXPECT_GE(x, 0);
        EXPECT_LE(x, 1000);
    }
    EXPECT_EQ(j.jitter(0), 0);
}
