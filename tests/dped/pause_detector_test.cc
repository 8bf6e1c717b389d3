// PauseDetector: dped noticing that it was itself not running (SIGSTOP, a host stall).
#include "dped/pause_detector.h"

#include <gtest/gtest.h>

using pcloud::Millis;
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

// Heartbeat ages are wall-clock differences: a wall clock that jumps while monotonic time
// does not (an NTP step, `date -s`, a hypervisor host that is itself a VM and was paused)
// is reported like a pause, whichever way it jumps; the ordinary drift between the two
// clocks is not.
TEST(PauseDetector, AWallClockStepIsReportedAsOne) {
    PauseDetector d(250);
    const Millis wall = 1'700'000'000'000;
    EXPECT_FALSE(d.check(0, wall));
    d.waiting(1'000);
    EXPECT_FALSE(d.check(1'000, wall + 1'000));
    d.waiting(2'000);
    EXPECT_FALSE(d.check(2'000, wall + 2'010)); // 10 ms of drift
    d.waiting(3'000);
    auto fwd = d.check(3'000, wall + 3'010 + 44'000); // 44 s forward, monotonic on time
    ASSERT_TRUE(fwd);
    EXPECT_TRUE(fwd->clock_step);
    EXPECT_EQ(fwd->ms, 44'000);
    d.waiting(4'000);
    EXPECT_FALSE(d.check(4'000, wall + 4'010 + 44'000)); // measured once
    d.waiting(5'000);
    auto back = d.check(5'000, wall + 5'010 + 44'000 - 5'000); // 5 s back
    ASSERT_TRUE(back);
    EXPECT_TRUE(back->clock_step);
    EXPECT_EQ(back->ms, 5'000);
    // A real pause moves both clocks: it is a pause, not a step.
    d.waiting(6'000);
    auto paused = d.check(18'000, wall + 18'010 + 39'000);
    ASSERT_TRUE(paused);
    EXPECT_FALSE(paused->clock_step);
    EXPECT_EQ(paused->ms, 12'000);
}
