// What a new leader does to its copy of the zone's journal (lib/cped/zone_journal.h): the
// pure plan, case by case, with the words it logs; and the etcd keys of events.
#include "cped/zone_journal.h"

#include <gtest/gtest.h>

using namespace pcloud::cped;
using Kind = JournalCatchUp::Kind;

namespace {

TEST(ZoneJournalKeys, SortAsNumbersAndReadBack) {
    EXPECT_EQ(zoneJournalEventKey(42), "/pcloud/journal/e/00000000000000000042");
    EXPECT_LT(zoneJournalEventKey(9), zoneJournalEventKey(10));
    EXPECT_EQ(zoneJournalSeqOf(zoneJournalEventKey(18'446'744'073'709'551'615ull)),
              18'446'744'073'709'551'615ull);
    EXPECT_EQ(zoneJournalSeqOf(zoneJournalEventKey(7)), 7u);
    for (const char* bad :
         {"/pcloud/journal/e/42", "/pcloud/journal/e/0000000000000000004x", "/pcloud/journal/last",
          "/pcloud/journal/e/00000000000000000000", "/pcloud/journal/f/00000000000000000042"})
        EXPECT_FALSE(zoneJournalSeqOf(bad).has_value()) << bad;
}

struct Case {
    const char* name;
    std::uint64_t local;
    std::optional<ZoneJournalHead> zone;
    std::optional<bool> sameLast;
    JournalCatchUp want;
    const char* words;
};

TEST(ZoneJournalCatchUp, GoldenCases) {
    const Case cases[] = {
        {"a zone without a journal starts after the first leader's",
         12,
         std::nullopt,
         std::nullopt,
         {Kind::Seed, 0, 0, 0},
         "the zone has no journal yet: it starts after this copy's last seq, 12"},
        {"up to date",
         9,
         ZoneJournalHead{9, 1},
         true,
         {Kind::UpToDate, 0, 0, 0},
         "this copy has the zone's last seq, 9"},
        {"behind: copy what is missing",
         4,
         ZoneJournalHead{9, 1},
         true,
         {Kind::Copy, 5, 9, 0},
         "copy seqs 5..9 from the zone's journal"},
        {"an empty copy takes everything",
         0,
         ZoneJournalHead{9, 1},
         std::nullopt,
         {Kind::Copy, 1, 9, 0},
         "copy seqs 1..9 from the zone's journal"},
        {"behind further than etcd keeps",
         4,
         ZoneJournalHead{20'000, 10'001},
         std::nullopt,
         {Kind::Copy, 10'001, 20'000, 9'996},
         "copy seqs 10001..20000 from the zone's journal; 9996 older ones are no longer in "
         "etcd and are not in this copy"},
        {"seeded after this copy's last: nothing to copy, the gap said",
         3,
         ZoneJournalHead{7, 8},
         std::nullopt,
         {Kind::Copy, 8, 7, 4},
         "nothing to copy from the zone's journal (its last seq is 7); 4 older ones are no "
         "longer in etcd and are not in this copy"},
        {"past a zone seeded with none: set aside, nothing to copy",
         12,
         ZoneJournalHead{5, 6},
         std::nullopt,
         {Kind::SetAsideThenCopy, 6, 5, 5},
         "this copy's last event, seq 12, is past the zone's last (5): its files are set "
         "aside, then nothing is copied; 5 older ones are no longer in etcd and are not in this "
         "copy"},
        {"past the zone's last: set aside",
         12,
         ZoneJournalHead{9, 1},
         std::nullopt,
         {Kind::SetAsideThenCopy, 1, 9, 0},
         "this copy's last event, seq 12, is past the zone's last (9): its files are set "
         "aside, then seqs 1..9 are copied"},
        {"same seq, another event: set aside",
         9,
         ZoneJournalHead{9, 1},
         false,
         {Kind::SetAsideThenCopy, 1, 9, 0},
         "this copy's last event, seq 9, is not the zone's event of that seq: its files are "
         "set aside, then seqs 1..9 are copied"},
        {"behind, and its last is not the zone's: set aside",
         4,
         ZoneJournalHead{9, 3},
         false,
         {Kind::SetAsideThenCopy, 3, 9, 2},
         "this copy's last event, seq 4, is not the zone's event of that seq: its files are "
         "set aside, then seqs 3..9 are copied; 2 older ones are no longer in etcd and are not "
         "in this copy"},
    };
    for (const auto& c : cases) {
        const JournalCatchUp got = planJournalCatchUp(c.local, c.zone, c.sameLast);
        EXPECT_EQ(got, c.want) << c.name;
        EXPECT_EQ(describe(got, c.local), c.words) << c.name;
    }
}

} // namespace
