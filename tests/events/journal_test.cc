#include "common/fs.h"
#include "events/journal.h"

#include <fstream>
#include <gtest/gtest.h>
#include <sys/stat.h>

using namespace pcloud;
using namespace pcloud::events;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-journal-XXXXXX";
    return ::mkdtemp(tmpl);
}

Event ev(std::string dep, std::string state = "started") {
    Event e;
    e.deployable = std::move(dep);
    e.assembly = "a1";
    e.state = std::move(state);
    e.reason = "test";
    return e;
}

std::unique_ptr<EventJournal> openOk(const std::string& dir, const Clock& clock,
                                     JournalOptions o = {}) {
    auto j = EventJournal::open(dir, o, clock);
    EXPECT_TRUE(j.ok()) << (j.ok() ? "" : j.error().describe());
    return std::move(j.value());
}

std::vector<std::uint64_t> seqs(const ReplayResult& r) {
    std::vector<std::uint64_t> out;
    for (const auto& e : r.events)
        out.push_back(e.seq);
    return out;
}

void appendRaw(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << text;
}

} // namespace

TEST(Journal, AssignsSeqAndTime) {
    ManualClock clock;
    auto dir = tempDir();
    auto j = openOk(dir, clock);
    auto a = j->append(ev("d"));
    auto b = j->append(ev("d"));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->seq, 1u);
    EXPECT_EQ(b->seq, 2u);
    EXPECT_EQ(a->time, clock.nowMs());
    EXPECT_EQ(j->lastSeq(), 2u);
}

TEST(Journal, SeqSurvivesReopen) {
    ManualClock clock;
    auto dir = tempDir();
    {
        auto j = openOk(dir, clock);
        for (int i = 0; i < 5; ++i)
            ASSERT_TRUE(j->append(ev("d")).ok());
    }
    auto j = openOk(dir, clock);
    EXPECT_EQ(j->lastSeq(), 5u);
    EXPECT_EQ(j->append(ev("d"))->seq, 6u);
}

TEST(Journal, TornLastLineIsIgnoredWithWarning) {
    ManualClock clock;
    auto dir = tempDir();
    {
        auto j = openOk(dir, clock);
        for (int i = 0; i < 3; ++i)
            ASSERT_TRUE(j->append(ev("d")).ok());
    }
    appendRaw(dir + "/events.jsonl", R"({"v":1,"type":"event","seq":4,"time":"2026-)");
    auto j = openOk(dir, clock);
    EXPECT_EQ(j->lastSeq(), 3u);
    auto w = j->takeWarnings();
    ASSERT_EQ(w.size(), 1u);
    EXPECT_NE(w[0].find("events.jsonl:4"), std::string::npos) << w[0];
    EXPECT_NE(w[0].find("torn"), std::string::npos) << w[0];
    // The next event starts on its own line and replays fine.
    EXPECT_EQ(j->append(ev("d"))->seq, 4u);
    auto r = j->replay({});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(seqs(*r), (std::vector<std::uint64_t>{1, 2, 3, 4}));
}

TEST(Journal, GarbageLinesAreSkipped) {
    ManualClock clock;
    auto dir = tempDir();
    {
        auto j = openOk(dir, clock);
        ASSERT_TRUE(j->append(ev("d")).ok());
    }
    appendRaw(dir + "/events.jsonl", "this is not json\n{\"v\":1}\n\n");
    auto j = openOk(dir, clock);
    EXPECT_EQ(j->takeWarnings().size(), 2u);
    ASSERT_TRUE(j->append(ev("d")).ok());
    auto r = j->replay({});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(seqs(*r), (std::vector<std::uint64_t>{1, 2}));
}

TEST(Journal, RotatesBySizeAndKeepsKFiles) {
    ManualClock clock;
    auto dir = tempDir();
    JournalOptions o;
    o.max_bytes = 400; // a couple of events per file
    o.keep_files = 2;
    auto j = openOk(dir, clock, o);
    for (int i = 0; i < 20; ++i)
        ASSERT_TRUE(j->append(ev("d")).ok());
    EXPECT_TRUE(fs::exists(dir + "/events.jsonl.1"));
    EXPECT_TRUE(fs::exists(dir + "/events.jsonl.2"));
    EXPECT_FALSE(fs::exists(dir + "/events.jsonl.3"));
    struct stat st {};
    ASSERT_EQ(::stat((dir + "/events.jsonl").c_str(), &st), 0);
    EXPECT_LE(st.st_size, 400);
    // Replay reads across the rotated files in order, newest last, no gaps within them.
    auto r = j->replay({});
    ASSERT_TRUE(r.ok());
    auto s = seqs(*r);
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s.back(), 20u);
    for (size_t i = 1; i < s.size(); ++i)
        EXPECT_EQ(s[i], s[i - 1] + 1);
}

TEST(Journal, RotatesByAge) {
    ManualClock clock;
    auto dir = tempDir();
    JournalOptions o;
    o.max_age = 60'000;
    auto j = openOk(dir, clock, o);
    ASSERT_TRUE(j->append(ev("d")).ok());
    clock.advance(30'000);
    ASSERT_TRUE(j->append(ev("d")).ok());
    EXPECT_FALSE(fs::exists(dir + "/events.jsonl.1"));
    clock.advance(30'000);
    ASSERT_TRUE(j->append(ev("d")).ok());
    EXPECT_TRUE(fs::exists(dir + "/events.jsonl.1"));
    auto r = j->replay({});
    EXPECT_EQ(seqs(*r), (std::vector<std::uint64_t>{1, 2, 3}));
}

TEST(Journal, SeqSurvivesReopenRightAfterRotation) {
    ManualClock clock;
    auto dir = tempDir();
    JournalOptions o;
    o.max_age = 1000;
    {
        auto j = openOk(dir, clock, o);
        ASSERT_TRUE(j->append(ev("d")).ok());
        ASSERT_TRUE(j->append(ev("d")).ok());
    }
    // Current file empty, the events only in .1 (rotation happened, nothing appended yet).
    ASSERT_EQ(::rename((dir + "/events.jsonl").c_str(), (dir + "/events.jsonl.1").c_str()), 0);
    auto j = openOk(dir, clock, o);
    EXPECT_EQ(j->lastSeq(), 2u);
}

TEST(Journal, ReplayFilters) {
    ManualClock clock;
    auto dir = tempDir();
    JournalOptions o;
    o.max_bytes = 300;
    auto j = openOk(dir, clock, o);
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(j->append(ev(i % 2 ? "odd" : "even")).ok());
        clock.advance(1000);
    }
    ReplayQuery q;
    q.since_seq = 4;
    EXPECT_EQ(seqs(*j->replay(q)), (std::vector<std::uint64_t>{5, 6, 7, 8, 9, 10}));
    q.deployable = "odd";
    EXPECT_EQ(seqs(*j->replay(q)), (std::vector<std::uint64_t>{6, 8, 10}));
    ReplayQuery t;
    t.since_time = clock.nowMs() - 3000; // events 8, 9, 10
    EXPECT_EQ(seqs(*j->replay(t)), (std::vector<std::uint64_t>{8, 9, 10}));
    ReplayQuery page;
    page.limit = 3;
    auto p = j->replay(page);
    EXPECT_EQ(seqs(*p), (std::vector<std::uint64_t>{1, 2, 3}));
    EXPECT_TRUE(p->more);
    page.newest = true;
    auto tail = j->replay(page);
    EXPECT_EQ(seqs(*tail), (std::vector<std::uint64_t>{8, 9, 10}));
    EXPECT_EQ(tail->last_seq, 10u);
}

// A zone's events are numbered by its journal in etcd; this node's copy takes them as they
// are: after its last seq (gaps allowed: events it never had), never before, never untimed.
TEST(Journal, AnEventNumberedElsewhereGoesAfterTheLastAndKeepsItsSeqAndTime) {
    ManualClock clock;
    auto dir = tempDir();
    auto j = openOk(dir, clock);
    ASSERT_TRUE(j->append(ev("web")).ok());
    Event e = ev("web", "failed");
    e.seq = 5;
    e.time = 1'700'000'123'456;
    auto w = j->appendNumbered(e);
    ASSERT_TRUE(w.ok()) << w.error().describe();
    EXPECT_EQ(*w, e);
    EXPECT_EQ(j->lastSeq(), 5u);
    auto again = j->appendNumbered(e);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().describe(),
              dir + "/events.jsonl: event seq 5 is not after the journal's last (5)");
    e.seq = 6;
    e.time = 0;
    auto untimed = j->appendNumbered(e);
    ASSERT_FALSE(untimed.ok());
    EXPECT_EQ(untimed.error().message, "event seq 6 has no time");
    EXPECT_EQ(seqs(*j->replay({})), (std::vector<std::uint64_t>{1, 5}));
    // The next local append goes on after the numbered one, and a reopen finds it.
    EXPECT_EQ(j->append(ev("web"))->seq, 6u);
    j.reset();
    EXPECT_EQ(openOk(dir, clock)->lastSeq(), 6u);
}

// A copy whose seqs the zone gave to other events is renamed, whole, and an empty journal
// starts: nothing of it is lost, nothing of it is served as the zone's.
TEST(Journal, SetAsideRenamesEveryFileAndStartsEmpty) {
    ManualClock clock;
    auto dir = tempDir();
    JournalOptions o;
    o.max_bytes = 300; // a few rotated files
    auto j = openOk(dir, clock, o);
    for (int i = 0; i < 8; ++i)
        ASSERT_TRUE(j->append(ev("web")).ok());
    ASSERT_TRUE(fs::exists(j->rotatedPath(1)));
    auto aside = j->setAside("diverged-42");
    ASSERT_TRUE(aside.ok()) << aside.error().describe();
    EXPECT_EQ(*aside, dir + "/events-diverged-42.jsonl");
    EXPECT_TRUE(fs::exists(dir + "/events-diverged-42.jsonl.1"));
    EXPECT_FALSE(fs::exists(j->rotatedPath(1)));
    EXPECT_EQ(j->lastSeq(), 0u);
    EXPECT_TRUE(j->replay({})->events.empty());
    EXPECT_EQ(j->append(ev("web"))->seq, 1u);
    std::size_t lines = 0;
    for (int n = 0; n == 0 || fs::exists(*aside + "." + std::to_string(n)); ++n) {
        std::ifstream in(n == 0 ? *aside : *aside + "." + std::to_string(n));
        for (std::string l; std::getline(in, l);)
            ++lines;
    }
    EXPECT_EQ(lines, 8u) << "every event set aside is kept";
    auto twice = j->setAside("diverged-42");
    ASSERT_FALSE(twice.ok());
    EXPECT_NE(twice.error().message.find("events-diverged-42.jsonl exists"), std::string::npos)
        << twice.error().message;
    EXPECT_FALSE(j->setAside("../x").ok());
}
