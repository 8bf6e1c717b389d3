#pragma once
// One pass of the dped reactor thread: wait for inputs or the reactor's next wake, run the
// inputs, decide. It also tells the reactor when dped itself was not running (PauseDetector),
// and it looks right before every decision: dped can be stopped while it runs its inputs, and
// a decision taken after such a stop, before the reactor was told of it, would read every
// heartbeat age inflated by the stop and take healthy guests for hung ones. pcloud-cts seed
// 20261205, iteration 914, restarted a guest for "no heartbeat for 9805ms" across a 9.7 s
// SIGSTOP of dped that way, when the pause was only noticed on the pass after.
//
// A template over the reactor, so the order is tested with a recording target
// (tests/dped/reactor_loop_test.cc); dped's runtime uses it with the real Reactor.

#include "common/clock.h"
#include "dped/inbox.h"
#include "dped/pause_detector.h"

#include <algorithm>
#include <chrono>
#include <functional>

namespace pcloud::dped {

template <class Target> class ReactorLoop {
public:
    // `onGap` is told of every pause or wall-clock step before the target is (logging).
    ReactorLoop(Target& target, Inbox& inbox, const Clock& clock, PauseDetector& pause,
                std::function<void(const PauseDetector::Gap&)> onGap = {})
        : target_(target), inbox_(inbox), clock_(clock), pause_(pause), on_gap_(std::move(onGap)) {}

    enum class Pass { Again, Stopped, Finished };

    // The loop runs at least every `maxWaitMs`, so a pause of dped itself is noticed.
    Pass runOnce(Millis maxWaitMs) {
        bool due = checkPause();
        Millis waitMs = maxWaitMs;
        if (auto w = target_.nextWake())
            waitMs = std::clamp<Millis>(*w - clock_.nowMs(), 0, maxWaitMs);
        pause_.waiting(clock_.monotonicMs() + waitMs);
        bool stop = false;
        auto work =
            inbox_.wait(std::chrono::steady_clock::now() + std::chrono::milliseconds(waitMs), stop);
        if (stop)
            return Pass::Stopped;
        // Before the queued inputs: they were sent during the gap and are read as new.
        if (checkPause())
            due = true;
        for (auto& f : work)
            f();
        // And right before deciding: a stop while the inputs ran (see the header).
        if (checkPause())
            due = true;
        auto w = target_.nextWake();
        if (!due && work.empty() && (!w || *w > clock_.nowMs()))
            return Pass::Again; // a periodic wake with nothing to decide
        target_.step();
        return target_.finished() ? Pass::Finished : Pass::Again;
    }

private:
    bool checkPause() {
        auto gap = pause_.check(clock_.monotonicMs(), clock_.nowMs());
        if (!gap)
            return false;
        if (on_gap_)
            on_gap_(*gap);
        target_.onObserverPaused(gap->ms);
        return true;
    }

    Target& target_;
    Inbox& inbox_;
    const Clock& clock_;
    PauseDetector& pause_;
    std::function<void(const PauseDetector::Gap&)> on_gap_;
};

} // namespace pcloud::dped
