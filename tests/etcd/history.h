#pragma once
// A Jepsen-style check of what the zone's receivers accepted (docs/ha.md "The zone harness"):
// every command a dped (or node) took, with the epoch it carried and when. Pure: the zone
// test reads the records from the receivers' logs and asserts that the check finds nothing.
#include <cstdint>
#include <string>
#include <vector>

namespace pcloud::etcdtest {

struct Accepted {
    std::string receiver; // who accepted it ("h1/dped web")
    std::string sender;   // who sent it ("cped:h1")
    std::int64_t epoch = 0;
    std::int64_t at_ms = 0; // wall clock, ms since 1970 (one machine's clock)
    std::string what;       // the command and its id, for the report
    // A `fence`: it only stops its receiver (it raises the receiver's floor above the
    // sender's epoch), so it may arrive after a newer leader acted without two acting.
    bool fence = false;
};

// What is wrong with `history`, one sentence per violation naming the records; empty when
// it holds:
// - at each receiver, in the order it accepted them, epochs never go backwards;
// - an epoch has one sender (two senders with one epoch are two leaders in one term);
// - across receivers, no command under an epoch is accepted after (a later millisecond) a
//   command under a higher epoch was: the older leader's commands all took effect before
//   the newer leader's first one, so no two leaders' commands took effect at once. A fence
//   is exempt from this rule (it acts on nothing), not from the first two.
std::vector<std::string> checkHistory(const std::vector<Accepted>& history);

// The records of dped's "Accepted a command" log lines in `log` (cped's log, which carries
// its dpeds' output), with `host` prefixed to the receiver. Lines that do not parse are
// skipped: the caller compares the count with what it expects.
std::vector<Accepted> parseAccepted(const std::string& log, const std::string& host);

// "2026-12-04T04:27:25.176Z" -> ms since 1970; -1 when it is not that form.
std::int64_t parseLogTime(const std::string& stamp);

} // namespace pcloud::etcdtest
