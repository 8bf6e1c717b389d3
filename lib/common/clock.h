#pragma once
// Time is injected (Envoy's TimeSource, Seastar's manual_clock). Code that needs "now"
// takes a Clock&; tests pass a ManualClock and advance it instead of sleeping.

#include <chrono>
#include <cstdint>

namespace pcloud {

// Milliseconds are the unit of every duration and instant in the model and the policy
// engine. Instants are milliseconds since the Unix epoch (wall clock) so they can be
// persisted and compared across daemon restarts.
using Millis = std::int64_t;

class Clock {
public:
    virtual ~Clock() = default;
    // Wall-clock milliseconds since the Unix epoch.
    virtual Millis nowMs() const = 0;
    // Monotonic milliseconds, for measuring intervals within one process.
    virtual Millis monotonicMs() const = 0;
};

class SystemClock final : public Clock {
public:
    Millis nowMs() const override {
        using namespace std::chrono;
        return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    }
    Millis monotonicMs() const override {
        using namespace std::chrono;
        return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
    }
};

// A clock that moves only when the test says so.
class ManualClock final : public Clock {
public:
    explicit ManualClock(Millis start = 1'700'000'000'000) : now_(start), mono_(0) {}
    Millis nowMs() const override { return now_; }
    Millis monotonicMs() const override { return mono_; }
    void advance(Millis ms) {
        now_ += ms;
        mono_ += ms;
    }
    void set(Millis ms) { now_ = ms; }

private:
    Millis now_;
    Millis mono_;
};

} // namespace pcloud
