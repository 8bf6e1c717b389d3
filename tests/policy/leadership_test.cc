// The leader's deadline and step-down rules (lib/policy/leadership.h), as scripted
// timelines with a transcript each: every step is one input at a monotonic time, then the
// decision at that time. Times are ms; TTL 2000, margin 500, renewal every 500.
#include "policy/leadership.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

using namespace pcloud;
using namespace pcloud::policy;

namespace {

struct Step {
    Millis now;
    enum Kind { Grant, Renew, View, End, Look } kind;
    Millis sent_at = 0; // Grant, Renew
    Millis ttl = 0;     // Grant, Renew
    ElectionView view{};
    std::string reason{};
};

ElectionView own(std::int64_t rev, std::int64_t lowest, std::string name = "n1") {
    return ElectionView{true, rev, lowest, std::move(name)};
}

std::string run(const std::vector<Step>& steps) {
    Leadership l(LeadershipTiming{2000, 500, 500});
    std::ostringstream out;
    for (const auto& s : steps) {
        switch (s.kind) {
        case Step::Grant:
            l.beginTerm(s.sent_at, s.ttl);
            out << s.now << " grant sent=" << s.sent_at << " ttl=" << s.ttl;
            break;
        case Step::Renew:
            l.renewed(s.sent_at, s.ttl);
            out << s.now << " renew sent=" << s.sent_at << " ttl=" << s.ttl;
            break;
        case Step::View:
            l.observed(s.view);
            out << s.now << " view own=" << (s.view.own_present ? s.view.own_create_revision : 0)
                << " lowest=" << s.view.lowest_create_revision;
            break;
        case Step::End:
            l.end(s.reason);
            out << s.now << " end";
            break;
        case Step::Look:
            out << s.now << " look";
            break;
        }
        auto d = l.decide(s.now);
        out << " -> " << roleName(d.role);
        if (d.role == Role::Leader)
            out << " epoch=" << d.epoch;
        out << " deadline=" << d.deadline;
        if (!d.reason.empty())
            out << " (" << d.reason << ")";
        out << "\n";
    }
    return out.str();
}

struct Case {
    const char* name;
    std::vector<Step> steps;
    const char* expected;
};

class LeadershipCases : public ::testing::TestWithParam<Case> {};

TEST_P(LeadershipCases, Transcript) {
    EXPECT_EQ(run(GetParam().steps), GetParam().expected) << GetParam().name;
}

const Case kCases[] = {
    {"lowest key leads, epoch is its create_revision",
     {{1000, Step::Grant, 990, 2000}, {1010, Step::View, 0, 0, own(7, 7)}, {1500, Step::Look}},
     "1000 grant sent=990 ttl=2000 -> campaigning deadline=2490 (the candidate prefix was not "
     "read yet)\n"
     "1010 view own=7 lowest=7 -> leader epoch=7 deadline=2490\n"
     "1500 look -> leader epoch=7 deadline=2490\n"},
    {"an older key leads: campaigning, naming it",
     {{0, Step::Grant, 0, 2000}, {5, Step::View, 0, 0, own(9, 4, "n2")}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=9 lowest=4 -> campaigning deadline=1500 (another candidate's key is older)\n"},
    {"deadline counts from the SEND: a reply arriving late does not extend it past send+ttl",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      // keep-alive sent at 500, its reply only arrives at 1400
      {1400, Step::Renew, 500, 2000},
      {1999, Step::Look},
      {2000, Step::Look}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "1400 renew sent=500 ttl=2000 -> leader epoch=3 deadline=2000\n"
     "1999 look -> leader epoch=3 deadline=2000\n"
     "2000 look -> ended deadline=2000 (the local lease deadline passed (0 ms ago) without a "
     "renewal)\n"},
    {"an old reply after a newer one never moves the deadline back",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      {1100, Step::Renew, 1000, 2000},
      {1200, Step::Renew, 500, 2000}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "1100 renew sent=1000 ttl=2000 -> leader epoch=3 deadline=2500\n"
     "1200 renew sent=500 ttl=2000 -> leader epoch=3 deadline=2500\n"},
    {"SIGSTOP past the deadline: on resume, queued replies do not revive the term",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      // stopped from 100 to 6000; the reply to a request sent at 90 is read at 6000
      {6000, Step::Renew, 90, 2000},
      {6001, Step::View, 0, 0, own(3, 3)},
      {6002, Step::Renew, 6001, 2000}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "6000 renew sent=90 ttl=2000 -> ended deadline=1590 (the local lease deadline passed "
     "(4410 ms ago) without a renewal)\n"
     "6001 view own=3 lowest=3 -> ended deadline=1590 (the local lease deadline passed (4410 "
     "ms ago) without a renewal)\n"
     "6002 renew sent=6001 ttl=2000 -> ended deadline=1590 (the local lease deadline passed "
     "(4410 ms ago) without a renewal)\n"},
    {"keep-alive says TTL 0: the lease is gone, step down at once",
     {{0, Step::Grant, 0, 2000}, {5, Step::View, 0, 0, own(3, 3)}, {600, Step::Renew, 500, 0}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "600 renew sent=500 ttl=0 -> ended deadline=1500 (the lease is gone (keep-alive answered "
     "TTL 0))\n"},
    {"own key missing from a read: step down at once",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      {700, Step::View, 0, 0, ElectionView{false, 0, 8, "n2"}}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "700 view own=0 lowest=8 -> ended deadline=1500 (the candidate key is gone (lease expired "
     "or revoked))\n"},
    {"a new term after an ended one starts clean, with the new key's epoch",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      {1600, Step::Look},
      {1700, Step::Grant, 1650, 2000},
      {1710, Step::View, 0, 0, own(12, 12)}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "1600 look -> ended deadline=1500 (the local lease deadline passed (100 ms ago) without a "
     "renewal)\n"
     "1700 grant sent=1650 ttl=2000 -> campaigning deadline=3150 (the candidate prefix was not "
     "read yet)\n"
     "1710 view own=12 lowest=12 -> leader epoch=12 deadline=3150\n"},
    {"a TTL no longer than the margin cannot lead",
     {{0, Step::Grant, 0, 500}},
     "0 grant sent=0 ttl=500 -> ended deadline=0 (the granted TTL is not longer than the safety "
     "margin)\n"},
    {"an explicit end (stream broke) is final",
     {{0, Step::Grant, 0, 2000},
      {5, Step::View, 0, 0, own(3, 3)},
      {300, Step::End, 0, 0, {}, "keep-alive stream broke"},
      {310, Step::Renew, 250, 2000}},
     "0 grant sent=0 ttl=2000 -> campaigning deadline=1500 (the candidate prefix was not read "
     "yet)\n"
     "5 view own=3 lowest=3 -> leader epoch=3 deadline=1500\n"
     "300 end -> ended deadline=1500 (keep-alive stream broke)\n"
     "310 renew sent=250 ttl=2000 -> ended deadline=1500 (keep-alive stream broke)\n"},
};

INSTANTIATE_TEST_SUITE_P(Timelines, LeadershipCases, ::testing::ValuesIn(kCases));

TEST(Leadership, NoTermIsNotLeader) {
    Leadership l;
    EXPECT_EQ(l.decide(0).role, Role::Ended);
}

} // namespace

// What a command signed by the leader may be acted on until: the lease's surest end, the
// latest renewal's send time + TTL (the deadline + the margin), which no reply moves back.
TEST(Leadership, LeaseEndIsTheLatestSendPlusTtl) {
    Leadership l(LeadershipTiming{2000, 500, 500});
    EXPECT_EQ(l.decide(0).lease_end, 0);
    l.beginTerm(0, 2000);
    l.observed(own(3, 3));
    EXPECT_EQ(l.decide(10).lease_end, 2000);
    EXPECT_EQ(l.decide(10).deadline, 1500);
    l.renewed(600, 2000);
    EXPECT_EQ(l.decide(700).lease_end, 2600);
    l.renewed(400, 2000); // an older reply, late
    EXPECT_EQ(l.decide(800).lease_end, 2600);
}
