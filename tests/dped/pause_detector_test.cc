// PauseDetector: dped noticing that it was itself not running (SIGSTOP, a host stall).
#include "dped/pause_detector.h"

#include <gtest/gtest.h>

using pcloud::dped::PauseDetector;

TEST(PauseDetector, OnTimeWakeUpsAreNoPause) {
    PauseDetector d(250);
    EXPECT_FALSE(d.check(0)); // first run: nothing expected yet
    d.waiting(1'000);
    EXPECT_FALSE(d.check(400)); // woken early by an input
    d.waiting(1'400);
    EXPECT_FALSE(d.check(1'650)); // late by exactly the threshold: still on time
}

TEST(PauseDetector, ALateWakeUpIsAPauseOfThatLength) {
    PauseDetector d(250);
    d.waiting(1'000);
    auto gap = d.check(13'000); // SIGSTOP during the wait, SIGCONT 12 s later
    ASSERT_TRUE(gap);
    EXPECT_EQ(*gap, 12'000);
    EXPECT_FALSE(d.check(13'010)); // measured once
}

TEST(PauseDetector, AStallWhileProcessingIsAPauseToo) {
    PauseDetector d(250);
    d.waiting(1'000);
    EXPECT_FALSE(d.check(1'000));
    auto gap = d.check(1'900); // the pass itself took 900 ms
    ASSERT_TRUE(gap);
    EXPECT_EQ(*gap, 900);
}
