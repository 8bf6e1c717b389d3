#pragma once
// The policy engine: one pure function from (model, observations, remembered escalation
// state, now) to ordered actions, the new escalation state and the next wake-up time.
// It does no I/O, reads no clock, starts no threads and never throws (STYLE.md section 1).
//
// dped calls decide() after every observation change and when next_wake is reached,
// executes the actions in order, then persists Decision::state (policy_json.h) so a restart
// loses nothing. pcloud-simulate and the golden cases call the same function
// (simulation.h). Every call re-reads the whole observed state (level-triggered); in-flight
// recoveries are remembered in EscalationState, so calling decide() twice with the same
// input issues each action only once. The rules are described in docs/policy.md.

#include "common/clock.h"
#include "model/model.h"
#include "policy/types.h"

#include <cstdint>
#include <string>

namespace pcloud::policy {

// Randomness for backoff delays, injected so tests are deterministic.
class JitterSource {
public:
    virtual ~JitterSource() = default;
    // Extra milliseconds to add to a backoff `delay` (> 0); should be in [0, delay/10].
    virtual Millis jitter(Millis delay) = 0;
};

class ZeroJitter final : public JitterSource {
public:
    Millis jitter(Millis) override { return 0; }
};

class FixedJitter final : public JitterSource {
public:
    explicit FixedJitter(Millis ms) : ms_(ms) {}
    Millis jitter(Millis) override { return ms_; }

private:
    Millis ms_;
};

// Uniform in [0, delay/10] from a small PRNG (splitmix64); for dped.
class RandomJitter final : public JitterSource {
public:
    explicit RandomJitter(std::uint64_t seed) : state_(seed) {}
    Millis jitter(Millis delay) override;

private:
    std::uint64_t state_;
};

// Deadlines the model does not carry. A recovery that has not completed by its deadline
// counts as another failure. Deadlines are strict: at exactly phase_since + deadline it is
// still in time.
struct Tunables {
    Millis service_start_deadline = 30'000; // StartService/RestartService -> active
    Millis domain_start_deadline = 120'000; // StartDomain -> running + fresh heartbeat
    Millis domain_stop_deadline = 60'000;   // planned StopDomain -> shutoff (then re-issued)
    bool operator==(const Tunables&) const = default;
};

// Decide what to do for `deployable`. If the deployable is not in the model the decision
// has one EmitEvent (state "error") and the state is returned unchanged.
Decision decide(const model::Model& model, const std::string& deployable, const Observed& observed,
                const EscalationState& state, Millis now, JitterSource& jitter,
                const Tunables& tunables = {});

} // namespace pcloud::policy
