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
//
// A step of the wall clock is the same kind of lie: heartbeat ages are wall-clock
// differences, so an NTP step forward, an operator's `date -s`, or a hypervisor host that is
// itself a VM and was paused (its monotonic clock stops, its wall clock is corrected on
// resume: seen in a pcloud-cts run as a 44 s "heartbeat timeout" of a healthy guest) makes
// every guest look silent. check() also compares how far each clock moved since the last
// check; a difference above the threshold is reported as a step.

#include "common/clock.h"

#include <optional>

namespace pcloud::dped {

class PauseDetector {
public:
    explicit PauseDetector(Millis thresholdMs) : threshold_(thresholdMs) {}

    // The loop is about to wait; it will run again by `untilMonoMs` at the latest.
    void waiting(Millis untilMonoMs) { expected_ = untilMonoMs; }

    struct Gap {
        Millis ms = 0;           // how long ages were inflated (or deflated, for a step back)
        bool clock_step = false; // the wall clock jumped; monotonic time did not
    };

    // The loop runs now. Returns how late it is when that is more than the threshold. Until
    // the next waiting(), the loop is expected to keep running (processing is measured too).
    std::optional<Millis> check(Millis nowMonoMs) {
        std::optional<Millis> gap;
        if (expected_ && nowMonoMs - *expected_ > threshold_)
            gap = nowMonoMs - *expected_;
        expected_ = nowMonoMs;
        return gap;
    }

    // The same, plus a step of the wall clock against the monotonic one since the last check.
    std::optional<Gap> check(Millis nowMonoMs, Millis nowWallMs) {
        std::optional<Gap> out;
        if (auto late = check(nowMonoMs))
            out = Gap{*late, false};
        Millis offset = nowWallMs - nowMonoMs;
        if (offset_) {
            Millis step = offset - *offset_;
            Millis size = step < 0 ? -step : step;
            if (size > threshold_ && (!out || size > out->ms))
                out = Gap{size, true};
        }
        offset_ = offset;
        return out;
    }

    Millis threshold() const { return threshold_; }

private:
    Millis threshold_;
    std::optional<Millis> expected_;
    std::optional<Millis> offset_; // wall - monotonic at the last two-clock check
};

} // namespace pcloud::dped
