#include "policy/window.h"

#include <algorithm>

namespace pcloud::policy {

static bool inWindow(Millis t, const model::Escalation& b, Millis now) {
    if (t > now)
        return true; // clock went backwards: keep it, never lose a failure
    return b.period == model::kUnlimitedPeriod || now - t <= b.period;
}

int countInWindow(const std::vector<Millis>& failures, const model::Escalation& budget,
                  Millis now) {
    return static_cast<int>(std::count_if(failures.begin(), failures.end(),
                                          [&](Millis t) { return inWindow(t, budget, now); }));
}

int recordFailure(std::vector<Millis>& failures, const model::Escalation& budget, Millis now) {
    failures.erase(std::remove_if(failures.begin(), failures.end(),
                                  [&](Millis t) { return !inWindow(t, budget, now); }),
                   failures.end());
    failures.push_back(now);
    size_t keep = budget.failures == model::kUnlimitedFailures
                      ? kUnlimitedRemembered
                      : static_cast<size_t>(std::max(budget.failures, 1));
    if (failures.size() > keep)
        failures.erase(failures.begin(), failures.end() - static_cast<std::ptrdiff_t>(keep));
    return static_cast<int>(failures.size());
}

bool budgetUsedUp(int count, const model::Escalation& budget) {
    if (budget.failures == model::kUnlimitedFailures)
        return false;
    return count >= budget.failures;
}

Millis backoffDelay(const model::Backoff& backoff, int restarts) {
    if (restarts <= 0)
        return 0;
    double d = static_cast<double>(backoff.base);
    double cap = static_cast<double>(backoff.cap);
    for (int i = 1; i < restarts && d < cap; ++i)
        d *= backoff.factor;
    return static_cast<Millis>(std::min(d, cap));
}

} // namespace pcloud::policy
