#pragma once
// Tells dped that it was itself not running for a while: SIGSTOP, a debugger, a host that
// stalled, a reactor pass that took far too long. After such a gap every heartbeat age dped
// computes is inflated by the gap, and without this it would take healthy guests for hung
// ones. The detector only measures; what a pause means is the policy engine's business
// (Observed::observer_resumed_at, golden case observer-paused).
//
// The reactor loop says by when it expects to run again (waiting()), and check()s the
// monotonic clock each time it does run: running later than expected by more than the
// threshold is a pause. Monotonic time keeps counting while the process is stopped.

#include "common/clock.h"

#include <optional>

namespace pcloud::dped {

class PauseDetector {
public:
    explicit PauseDetector(Millis thresholdMs) : threshold_(thresholdMs) {}

    // The loop is about to wait; it will run again by `untilMonoMs` at the latest.
    void waiting(Millis untilMonoMs) { expected_ = untilMonoMs; }

    // The loop runs now. Returns how late it is when that is more than the threshold. Until
    // the next waiting(), the loop is expected to keep running (processing is measured too).
    std::optional<Millis> check(Millis nowMonoMs) {
        std::optional<Millis> gap;
        if (expected_ && nowMonoMs - *expected_ > threshold_)
            gap = nowMonoMs - *expected_;
        expected_ = nowMonoMs;
        return gap;
    }

    Millis threshold() const { return threshold_; }

private:
    Millis threshold_;
    std::optional<Millis> expected_;
};

} // namespace pcloud::dped
