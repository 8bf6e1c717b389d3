// ReactorLoop: the order of one pass of dped's reactor thread, with a recording target and a
// manual clock. The point is the pause check right before every decision.
#include "dped/reactor_loop.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using pcloud::ManualClock;
using pcloud::Millis;
using pcloud::dped::Inbox;
using pcloud::dped::PauseDetector;
using pcloud::dped::ReactorLoop;

// Records what the loop asks of the reactor, in order.
struct Recorder {
    std::vector<std::string> calls;
    std::optional<Millis> wake;
    bool done = false;
    void onObserverPaused(Millis ms) { calls.push_back("paused " + std::to_string(ms)); }
    std::optional<Millis> nextWake() const { return wake; }
    void step() { calls.push_back("step"); }
    bool finished() const { return done; }
};

struct ReactorLoopTest : ::testing::Test {
    ManualClock clock;
    Inbox inbox;
    PauseDetector pause{250};
    Recorder target;
    ReactorLoop<Recorder> loop{target, inbox, clock, pause};
};

TEST_F(ReactorLoopTest, AnInputIsFollowedByADecision) {
    inbox.post([this] { target.calls.push_back("input"); });
    EXPECT_EQ(loop.runOnce(1000), ReactorLoop<Recorder>::Pass::Again);
    EXPECT_EQ(target.calls, (std::vector<std::string>{"input", "step"}));
}

// dped stopped (SIGSTOP) while it ran an input: the decision right after must already know,
// or it reads every heartbeat age 9.7 s too old (pcloud-cts seed 20261205, iteration 914).
TEST_F(ReactorLoopTest, AStopWhileInputsRunIsReportedBeforeTheDecision) {
    inbox.post([this] {
        target.calls.push_back("input");
        clock.advance(9694);
    });
    loop.runOnce(1000);
    EXPECT_EQ(target.calls, (std::vector<std::string>{"input", "paused 9694", "step"}));
}

TEST_F(ReactorLoopTest, AFastInputIsNoPause) {
    inbox.post([this] { clock.advance(100); });
    loop.runOnce(1000);
    EXPECT_EQ(target.calls, (std::vector<std::string>{"step"}));
}

// A stop between passes (after the last decision, before the wait) is reported at the start
// of the next pass, and that pass decides even with no input.
TEST_F(ReactorLoopTest, AStopBetweenPassesIsReportedAndDecidedOn) {
    inbox.post([] {});
    loop.runOnce(1000);
    target.calls.clear();
    clock.advance(5000);
    inbox.post([] {});
    loop.runOnce(1000);
    EXPECT_EQ(target.calls, (std::vector<std::string>{"paused 5000", "step"}));
}

TEST_F(ReactorLoopTest, AQuietWakeBeforeTheReactorsDeadlineDecidesNothing) {
    target.wake = clock.nowMs() + 60'000;
    EXPECT_EQ(loop.runOnce(0), ReactorLoop<Recorder>::Pass::Again);
    EXPECT_TRUE(target.calls.empty());
}

TEST_F(ReactorLoopTest, TheReactorsDeadlineIsADecision) {
    target.wake = clock.nowMs();
    loop.runOnce(1000);
    EXPECT_EQ(target.calls, (std::vector<std::string>{"step"}));
}

TEST_F(ReactorLoopTest, AStopRequestEndsTheLoopWithoutADecision) {
    inbox.post([this] { target.calls.push_back("input"); });
    inbox.requestStop();
    EXPECT_EQ(loop.runOnce(1000), ReactorLoop<Recorder>::Pass::Stopped);
    EXPECT_TRUE(target.calls.empty());
}

TEST_F(ReactorLoopTest, AFinishedReactorEndsTheLoop) {
    target.done = true;
    inbox.post([] {});
    EXPECT_EQ(loop.runOnce(1000), ReactorLoop<Recorder>::Pass::Finished);
}

} // namespace
