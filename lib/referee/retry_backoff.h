#pragma once
// When to try a broken referee again. The caller (dped) keeps one per referee and asks
// due() on each pass; failures double the wait up to a ceiling, a success resets it.
// The clock is injected so tests advance it instead of sleeping.

#include "common/clock.h"

#include <algorithm>

namespace pcloud::referee {

class RetryBackoff {
public:
    explicit RetryBackoff(const Clock& clock, Millis initialMs = 1'000, Millis maxMs = 60'000)
        : clock_(clock), initial_ms_(initialMs), max_ms_(maxMs) {}

    bool due() const { return failures_ == 0 || clock_.monotonicMs() >= next_attempt_ms_; }
    // Monotonic instant of the next attempt (meaningful after a failure).
    Millis nextAttemptMs() const { return next_attempt_ms_; }
    int failures() const { return failures_; }
    Millis currentDelayMs() const { return delay_ms_; }

    void recordFailure() {
        delay_ms_ = failures_ == 0 ? initial_ms_ : std::min(max_ms_, delay_ms_ * 2);
        ++failures_;
        next_attempt_ms_ = clock_.monotonicMs() + delay_ms_;
    }
    void recordSuccess() {
        failures_ = 0;
        delay_ms_ = 0;
        next_attempt_ms_ = 0;
    }

private:
    const Clock& clock_;
    Millis initial_ms_;
    Millis max_ms_;
    int failures_ = 0;
    Millis delay_ms_ = 0;
    Millis next_attempt_ms_ = 0;
};

} // namespace pcloud::referee
