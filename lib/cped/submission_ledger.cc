#include "cped/submission_ledger.h"

#include <algorithm>

namespace pcloud::cped {

bool SubmissionLedger::journaled(const std::string& source, std::uint64_t n) const {
    auto it = by_source_.find(source);
    if (it == by_source_.end())
        return false;
    return n <= it->second.floor || it->second.above.count(n) > 0;
}

void SubmissionLedger::record(const std::string& source, std::uint64_t n) {
    auto it = by_source_.find(source);
    if (it == by_source_.end()) {
        if (by_source_.size() >= max_sources_) {
            auto oldest = by_source_.begin();
            for (auto i = by_source_.begin(); i != by_source_.end(); ++i)
                if (i->second.used < oldest->second.used)
                    oldest = i;
            by_source_.erase(oldest);
        }
        it = by_source_.emplace(source, Seen{}).first;
    }
    Seen& s = it->second;
    s.used = ++clock_;
    if (n <= s.floor)
        return;
    s.above.insert(n);
    if (s.above.size() > window_)
        s.floor = *s.above.begin(); // the numbers below it were dropped by the dped
    while (!s.above.empty() && *s.above.begin() <= s.floor + 1) {
        s.floor = std::max(s.floor, *s.above.begin());
        s.above.erase(s.above.begin());
    }
}

} // namespace pcloud::cped
