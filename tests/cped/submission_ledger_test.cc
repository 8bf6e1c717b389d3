// SubmissionLedger: a dped's resent events are journaled once, whatever order the copies
// come in, within fixed memory.
#include "cped/submission_ledger.h"

#include <gtest/gtest.h>

using pcloud::cped::SubmissionLedger;

TEST(SubmissionLedger, ACopyOfAJournaledNumberIsKnownInAnyOrder) {
    SubmissionLedger l;
    EXPECT_FALSE(l.journaled("d1", 1));
    l.record("d1", 1);
    l.record("d1", 3); // 2 is still on its way (or lost with a hub)
    EXPECT_TRUE(l.journaled("d1", 1));
    EXPECT_FALSE(l.journaled("d1", 2)) << "a number never journaled must be taken";
    EXPECT_TRUE(l.journaled("d1", 3));
    EXPECT_FALSE(l.journaled("d1", 4));
    l.record("d1", 2);
    EXPECT_TRUE(l.journaled("d1", 2));
    // Sources are apart: another dped instance's 1 is new.
    EXPECT_FALSE(l.journaled("d2", 1));
}

TEST(SubmissionLedger, AGapOlderThanTheWindowIsGivenUp) {
    SubmissionLedger l(16, 4);
    l.record("d1", 1);
    for (std::uint64_t n = 3; n <= 7; ++n) // 2 never comes: its dped dropped it
        l.record("d1", n);
    // Five numbers above the floor exceed the window of 4: the floor jumps past 2.
    EXPECT_TRUE(l.journaled("d1", 2));
    EXPECT_TRUE(l.journaled("d1", 7));
    EXPECT_FALSE(l.journaled("d1", 8));
}

TEST(SubmissionLedger, TheLeastRecentlyUsedSourceIsForgottenBeyondTheBound) {
    SubmissionLedger l(2);
    l.record("a", 1);
    l.record("b", 1);
    l.record("a", 2); // a is used more recently than b
    l.record("c", 1);
    EXPECT_EQ(l.sources(), 2u);
    EXPECT_TRUE(l.journaled("a", 2));
    EXPECT_TRUE(l.journaled("c", 1));
    EXPECT_FALSE(l.journaled("b", 1)) << "b was the least recently used";
}
