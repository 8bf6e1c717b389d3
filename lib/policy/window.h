#pragma once
// The two counting rules of the engine, kept apart so they can be tested on their own.

#include "common/clock.h"
#include "model/model.h"

#include <vector>

namespace pcloud::policy {

// Sliding failure window. A failure at time t is inside the window at `now` when
// now - period <= t <= now (both ends inclusive: "N failures within T" includes failures
// exactly T apart). Records `now`, drops what fell out of the window and returns the count.
// The vector never grows beyond max(failures, 1) entries, even with an unlimited period;
// an unlimited budget keeps the newest kUnlimitedRemembered, which is all status needs to
// say how often it failed (it never escalates).
inline constexpr std::size_t kUnlimitedRemembered = 100;
int recordFailure(std::vector<Millis>& failures, const model::Escalation& budget, Millis now);
int countInWindow(const std::vector<Millis>& failures, const model::Escalation& budget, Millis now);
// The budget is used up once the window holds `failures` failures (never when unlimited).
bool budgetUsedUp(int count, const model::Escalation& budget);

// Delay before the next restart when `restarts` consecutive restarts happened already:
// 0 for the first, then base, base*factor, ... capped at cap. Jitter is added by the caller.
Millis backoffDelay(const model::Backoff& backoff, int restarts);

} // namespace pcloud::policy
