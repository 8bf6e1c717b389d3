// pcloud-cts's pure half: the fault sequence is a function of the seed, and every audit
// catches what it is there for.
#include "cts/audit.h"

#include <gtest/gtest.h>

using namespace pcloud::cts;

namespace {

JournalEvent ev(std::uint64_t seq, std::string assembly, std::string service, std::string state,
                std::string cause, std::string time = "") {
    JournalEvent e;
    e.seq = seq;
    e.deployable = "web";
    e.assembly = std::move(assembly);
    e.service = std::move(service);
    e.state = std::move(state);
    e.cause_id = std::move(cause);
    e.time = time.empty() ? "t" + std::to_string(seq) : time;
    return e;
}

} // namespace

TEST(CtsFaults, TheSameSeedGivesTheSameSequence) {
    Rng a(42), b(42), c(43);
    std::vector<std::string> as{"n1", "n2"};
    std::string sa, sb, sc;
    for (int i = 0; i < 50; ++i) {
        sa += pickFault(a, allFaultKinds(), as, 1000, 10'000).describe() + ";";
        sb += pickFault(b, allFaultKinds(), as, 1000, 10'000).describe() + ";";
        sc += pickFault(c, allFaultKinds(), as, 1000, 10'000).describe() + ";";
    }
    EXPECT_EQ(sa, sb);
    EXPECT_NE(sa, sc);
}

TEST(CtsFaults, BoundsAndDoubles) {
    Rng r(7);
    std::vector<std::string> as{"n1"};
    for (int i = 0; i < 500; ++i) {
        Fault f = pickFault(r, allFaultKinds(), as, 1000, 3000);
        if (f.kind == FaultKind::QemuStop)
            EXPECT_LE(f.pause_ms, 2000);
        if (f.kind == FaultKind::PcloudStop) {
            EXPECT_LE(f.pause_ms, 3000);
            EXPECT_TRUE(f.target == "dped" || f.target == "cped");
        }
        if (f.kind == FaultKind::Double) {
            ASSERT_EQ(f.parts.size(), 2u);
            EXPECT_NE(f.parts[0].kind, FaultKind::Double);
            EXPECT_NE(f.parts[1].kind, FaultKind::Double);
        }
    }
    for (const auto& k : allFaultKinds())
        EXPECT_EQ(parseFaultKind(toString(k)), k);
    EXPECT_FALSE(parseFaultKind("meteor"));
    EXPECT_TRUE(isPcloudFault(FaultKind::CpedKill));
    EXPECT_FALSE(isPcloudFault(FaultKind::QemuKill));
}

TEST(CtsAudit, JournalGapsAndDuplicates) {
    std::vector<JournalEvent> ok{ev(5, "n1", "", "failed", "c"), ev(6, "n1", "", "running", "c")};
    EXPECT_TRUE(auditJournal(ok, 5).empty());
    auto gap = auditJournal({ev(5, "a", "", "x", ""), ev(7, "a", "", "y", "")}, 5);
    ASSERT_EQ(gap.size(), 1u);
    EXPECT_NE(gap[0].find("a gap"), std::string::npos);
    EXPECT_EQ(auditJournal({ev(6, "a", "", "x", "")}, 5).size(), 1u); // seq 5 lost
    auto twice = auditJournal({ev(5, "a", "", "x", "c", "T"), ev(6, "a", "", "x", "c", "T")}, 5);
    ASSERT_EQ(twice.size(), 1u);
    EXPECT_NE(twice[0].find("twice"), std::string::npos);
}

TEST(CtsAudit, NeverTwoAndMembership) {
    EXPECT_TRUE(auditNeverTwo({{"n1", 1}, {"n2", 0}}).empty());
    EXPECT_EQ(auditNeverTwo({{"n1", 2}}).size(), 1u);
    EXPECT_TRUE(auditMembership({"n1", "n2"}, {"n1", "n2"}).empty());
    auto m = auditMembership({"n1"}, {"n2"});
    EXPECT_EQ(m.size(), 2u);
}

TEST(CtsAudit, ParsesJournalLines) {
    auto e = parseJournalLine(
        R"({"v":1,"type":"event","seq":42,"time":"2026","deployable":"web",)"
        R"("assembly":"n1","state":"failed","reason":"qemu exited","cause_id":"n1@1"})");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->seq, 42u);
    EXPECT_EQ(e->cause_id, "n1@1");
    EXPECT_FALSE(parseJournalLine("{not json"));
    EXPECT_FALSE(parseJournalLine(R"({"seq":"x"})"));
}

TEST(CtsAudit, PcloudFaultMustNotTouchGuests) {
    Fault f;
    f.kind = FaultKind::DpedKill;
    std::vector<JournalEvent> quiet{ev(1, "", "", "dped-started", "")};
    auto impact = impactOf(quiet, {{"n1", 100}}, {{"n1", 100}});
    EXPECT_TRUE(auditImpact(f, quiet, impact).empty());
    // The same fault, but a VM was restarted and a failure counted: both are reported.
    std::vector<JournalEvent> bad{ev(1, "n1", "", "failed", "n1@1"),
                                  ev(2, "n1", "", "restarting", "n1@1"),
                                  ev(3, "n1", "", "running", "n1@1")};
    impact = impactOf(bad, {{"n1", 100}}, {{"n1", 200}});
    EXPECT_EQ(impact.vm_restarts, 1);
    EXPECT_EQ(impact.failures, 1);
    auto p = auditImpact(f, bad, impact);
    EXPECT_EQ(p.size(), 2u); // the restart and the failure
}

TEST(CtsAudit, GuestFaultNeedsItsRecoveryChain) {
    Fault f;
    f.kind = FaultKind::QemuKill;
    f.victim = "n1";
    std::vector<JournalEvent> chain{ev(1, "n1", "", "failed", "n1@1"),
                                    ev(2, "n1", "", "restarting", "n1@1"),
                                    ev(3, "n1", "", "running", "n1@1")};
    auto impact = impactOf(chain, {{"n1", 100}, {"n2", 7}}, {{"n1", 200}, {"n2", 7}});
    EXPECT_TRUE(auditImpact(f, chain, impact).empty());
    // No running under the same cause: the chain is broken.
    std::vector<JournalEvent> broken{ev(1, "n1", "", "failed", "n1@1"),
                                     ev(2, "n1", "", "restarting", "n1@1"),
                                     ev(3, "n1", "", "running", "n1@9")};
    EXPECT_EQ(auditImpact(f, broken, impactOf(broken, {}, {})).size(), 1u);
    // The kill went unnoticed.
    EXPECT_EQ(auditImpact(f, {}, impactOf({}, {}, {})).size(), 1u);
    // Collateral damage: the other guest was restarted.
    impact = impactOf(chain, {{"n1", 100}, {"n2", 7}}, {{"n1", 200}, {"n2", 8}});
    EXPECT_EQ(auditImpact(f, chain, impact).size(), 1u);
    // A killed service recovers in place: failed -> active under one cause.
    Fault s;
    s.kind = FaultKind::ServiceKill;
    s.victim = "n2";
    std::vector<JournalEvent> svc{ev(1, "n2", "httpd", "failed", "n2/httpd@1"),
                                  ev(2, "n2", "httpd", "active", "n2/httpd@1")};
    EXPECT_TRUE(auditImpact(s, svc, impactOf(svc, {}, {})).empty());
    // The restarted service failed again at once: the first chain is superseded by the
    // second, which must itself recover.
    std::vector<JournalEvent> twice{ev(1, "n2", "httpd", "failed", "n2/httpd@1"),
                                    ev(2, "n2", "httpd", "failed", "n2/httpd@2"),
                                    ev(3, "n2", "httpd", "active", "n2/httpd@2")};
    EXPECT_TRUE(auditImpact(s, twice, impactOf(twice, {}, {})).empty());
    twice.pop_back();
    EXPECT_EQ(auditImpact(s, twice, impactOf(twice, {}, {})).size(), 1u);
}

TEST(CtsReport, TableAndPercentiles) {
    EXPECT_EQ(percentile({}, 50), 0);
    EXPECT_EQ(percentile({1, 2, 3, 4}, 50), 2);
    EXPECT_EQ(percentile({1, 2, 3, 100}, 99), 100);
    IterationRecord r;
    r.fault.kind = FaultKind::QemuKill;
    r.recovery_ms = 2500;
    r.failed_requests = 3;
    r.requests = 100;
    auto t = formatTable({r, r});
    EXPECT_NE(t.find("qemu-kill"), std::string::npos);
    EXPECT_NE(t.find("2500ms"), std::string::npos);
}

// kill -> failed: from the kill's wall-clock time to the victim's first failed event of the
// right level; other assemblies' failures, the wrong level and unparseable times don't count.
TEST(CtsReport, DetectionTimeIsTheVictimsFirstFailure) {
    // 2026-12-02T01:00:00.000Z
    const double kill = 1'796'173'200'000.0 + 0.4;
    std::vector<JournalEvent> w{
        ev(1, "n2", "", "failed", "n2@1", "2026-12-02T01:00:00.003Z"),      // another guest
        ev(2, "n1", "httpd", "failed", "n1@1", "2026-12-02T01:00:00.005Z"), // a service
        ev(3, "n1", "", "failed", "n1@2", "2026-12-02T01:00:00.012Z"),
        ev(4, "n1", "", "failed", "n1@3", "2026-12-02T01:00:00.900Z"), // a later one
    };
    auto d = detectionMs(w, "n1", /*service=*/false, kill);
    ASSERT_TRUE(d);
    EXPECT_NEAR(*d, 11.6, 1e-3); // ms since the epoch in a double: ~0.2 us of precision
    auto s = detectionMs(w, "n1", /*service=*/true, kill);
    ASSERT_TRUE(s);
    EXPECT_NEAR(*s, 4.6, 1e-3);
    EXPECT_FALSE(detectionMs(w, "n3", false, kill));
    // The journal truncates to the ms: an event in the kill's own ms is 0, never negative.
    std::vector<JournalEvent> same{ev(1, "n1", "", "failed", "c", "2026-12-02T01:00:00.000Z")};
    EXPECT_EQ(detectionMs(same, "n1", false, kill), 0.0);
    std::vector<JournalEvent> bad{ev(1, "n1", "", "failed", "c", "yesterday")};
    EXPECT_FALSE(detectionMs(bad, "n1", false, kill));

    IterationRecord r;
    r.fault.kind = FaultKind::QemuKill;
    r.detect_ms = {4, 9};
    IterationRecord r2 = r;
    r2.detect_ms = {30};
    auto t = formatTable({r, r2});
    EXPECT_NE(t.find("9/30ms"), std::string::npos) << t;
    EXPECT_EQ(r.toJson()["detect_ms"].size(), 2u);
    IterationRecord none;
    none.fault.kind = FaultKind::DpedKill;
    EXPECT_NE(formatTable({none}).find(" -\n"), std::string::npos) << formatTable({none});
}

// Audit 6's tally: only the requests of the window count; a reset scheduled before the old
// HAProxy of a -st restart was gone is HAProxy's cut, anything else that failed is failed.
TEST(CtsReport, RequestsCutByAHardRestartAreCountedApartFromFailures) {
    std::vector<ClientRequest> all{
        {990, false, true, "reset"},                   // before the window: not charged
        {1000, true, false, ""},                       // ok
        {1020, false, true, "reset"},                  // in flight in the old process: cut
        {1040, false, false, "bad-status status 503"}, // a 503 is never HAProxy's cut
        {1060, false, true, "reset"},                  // after the old one was gone: failed
        {1080, false, false, "timeout"},               // failed
        {1200, false, true, "reset"},                  // after the window: not charged
    };
    auto hard = tallyRequests(all, 1000, 1100, 1050.0);
    EXPECT_EQ(hard.requests, 5);
    EXPECT_EQ(hard.cut, 1);
    EXPECT_EQ(hard.failed, 3);
    ASSERT_EQ(hard.failed_detail.size(), 3u);
    EXPECT_EQ(hard.failed_detail[0], "bad-status status 503@+40ms");
    EXPECT_EQ(hard.failed_detail[1], "reset@+60ms");
    // Without a hard restart nothing is cut: every reset is a failure.
    auto plain = tallyRequests(all, 1000, 1100, std::nullopt);
    EXPECT_EQ(plain.cut, 0);
    EXPECT_EQ(plain.failed, 4);

    IterationRecord r;
    r.fault.kind = FaultKind::HaproxyRestart;
    r.cut_requests = hard.cut;
    r.failed_requests = hard.failed;
    EXPECT_EQ(r.toJson()["cut_requests"], 1);
    auto t = formatTable({r, r});
    // failed 6, cut 2 in the haproxy-restart row
    EXPECT_NE(t.find("haproxy-restart"), std::string::npos) << t;
    EXPECT_NE(t.find("       6     2 "), std::string::npos) << t;
}
