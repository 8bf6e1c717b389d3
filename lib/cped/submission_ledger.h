#pragma once
// SubmissionLedger: which journal submissions cped has journaled, by source and number, so an
// event a dped sent again (it got no answer: cped was paused, or died before it answered) is
// journaled once. Sources are dped instances (JournalGate stamps `source` and `source_seq`);
// their numbers start at 1 and rise, but copies may arrive in any order, so per source the
// ledger keeps a floor (every number up to it is journaled) and the journaled numbers above.
//
// Bounded: at most `maxSources` sources (the least recently used is forgotten) and `window`
// numbers above a floor (beyond it the floor jumps to the lowest kept number: a number that
// old was dropped by its dped and is never coming). Rebuilt at start from the journal's tail,
// so a cped restart does not forget what the last one journaled. Not thread-safe.

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace pcloud::cped {

class SubmissionLedger {
public:
    explicit SubmissionLedger(std::size_t maxSources = 4096, std::size_t window = 65'536)
        : max_sources_(maxSources ? maxSources : 1), window_(window ? window : 1) {}

    // Whether (source, n) is journaled already.
    bool journaled(const std::string& source, std::uint64_t n) const;
    // Notes that (source, n) is journaled now.
    void record(const std::string& source, std::uint64_t n);

    std::size_t sources() const { return by_source_.size(); }

private:
    struct Seen {
        std::uint64_t floor = 0;       // 1..floor are all journaled
        std::set<std::uint64_t> above; // journaled numbers > floor + 1
        std::uint64_t used = 0;        // for forgetting the least recently used
    };
    std::size_t max_sources_, window_;
    std::uint64_t clock_ = 0;
    std::map<std::string, Seen> by_source_;
};

} // namespace pcloud::cped
