// The zone membership rules (lib/policy/zone.h) on observed zones written as one line per
// member: "m0 up", "m1 down", "m2 leaderless", "(new) unstarted", "l1 learner up", and the
// verdict of each cluster_add / cluster_remove as a transcript line.
#include "policy/zone.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

using namespace pcloud::policy;

namespace {

// "m0 up" -> a started, healthy voter with id 0x10+index, leader 0x10.
ZoneView zone(const std::vector<std::string>& lines) {
    ZoneView v;
    std::uint64_t id = 0x10;
    for (const auto& l : lines) {
        std::istringstream in(l);
        std::string name, a, b;
        in >> name >> a >> b;
        ZoneMember m;
        m.id = id++;
        m.peer_urls = {"http://127.0.0.1:" + std::to_string(2380 + (m.id - 0x10) * 10)};
        std::string state = a;
        if (a == "learner") {
            m.learner = true;
            state = b;
        }
        if (state != "unstarted") {
            m.name = name;
            m.client_urls = {"http://127.0.0.1:" + std::to_string(2379 + (m.id - 0x10) * 10)};
        }
        if (state == "up" || state == "leaderless" || state == "alarm") {
            m.answered = true;
            m.leader = state == "leaderless" ? 0 : 0x10;
            m.raft_applied_index = 100 - (m.id - 0x10);
            if (state == "alarm")
                m.errors = {"memberID:17 alarm:NOSPACE"};
        } else if (state == "down") {
            m.error = "etcd 127.0.0.1:2399: Status: UNAVAILABLE: connection refused";
        }
        v.members.push_back(m);
    }
    return v;
}

std::string verdict(const ZoneVerdict& v) {
    std::string s = v.allowed ? "allowed" : "refused: " + v.refusal;
    for (const auto& w : v.warnings)
        s += "\n  warning: " + w;
    return s;
}

std::string add(const std::vector<std::string>& z, const std::string& name,
                const std::string& url) {
    return verdict(checkAdd(zone(z), name, url));
}
std::string remove(const std::vector<std::string>& z, const std::string& who) {
    return verdict(checkRemove(zone(z), who));
}
std::string addLearner(const std::vector<std::string>& z, const std::string& name,
                       const std::string& url) {
    return verdict(checkAdd(zone(z), name, url, true));
}
std::string promote(const std::vector<std::string>& z, const std::string& who) {
    return verdict(checkPromote(zone(z), who));
}

} // namespace

TEST(Zone, QuorumAndHealthOfAnObservedZone) {
    auto h = zoneHealth(zone({"m0 up", "m1 down", "m2 up"}));
    EXPECT_EQ(h.voters, 3);
    EXPECT_EQ(h.healthy_voters, 2);
    EXPECT_EQ(h.quorum, 2);
    EXPECT_TRUE(h.has_quorum);
    EXPECT_EQ(h.leader, 0x10u);
    auto z = zone({"m0 up", "m1 up", "m2 up", "l3 learner up"});
    EXPECT_EQ(zoneHealth(z).voters, 3);
    EXPECT_EQ(lagOf(z, z.members[2]), 2u);
    EXPECT_EQ(lagOf(z, z.members[0]), 0u);
    EXPECT_FALSE(lagOf(zone({"m0 up", "m1 down"}), zone({"m0 up", "m1 down"}).members[1]));
    EXPECT_FALSE(zoneHealth(zone({"m0 up", "m1 down", "m2 leaderless"})).has_quorum);
    EXPECT_EQ(quorumOf(1), 1);
    EXPECT_EQ(quorumOf(4), 3);
    EXPECT_EQ(quorumOf(5), 3);
}

TEST(Zone, RemovingAHealthyMemberOfThreeWhileAnotherIsDownIsRefused) {
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 down"}, "m1"),
              "refused: refusing to remove 'm1': the 2 voting members left would have 1 "
              "healthy (m0), fewer than their quorum of 2 (not healthy: m2: etcd "
              "127.0.0.1:2399: Status: UNAVAILABLE: connection refused); bring the members that "
              "are down back, or remove one of them first");
    // The member that is down may go: the two healthy ones are a quorum of two.
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 down"}, "m2"),
              "allowed\n  warning: the zone will have 2 voting members, an even count: it "
              "tolerates 0 failure(s), as 1 would (quorum 2 of 2)");
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up"}, "m2"),
              "allowed\n  warning: the zone will have 2 voting members, an even count: it "
              "tolerates 0 failure(s), as 1 would (quorum 2 of 2)");
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up", "m3 up"}, "m3"), "allowed");
    // Five with two down still has its quorum of 3, but removing a healthy one leaves 2
    // healthy of 4.
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up", "m3 down", "m4 down"}, "m0")
                  .rfind("refused: refusing to remove 'm0': the 4 voting members left would have 2 "
                         "healthy (m1, m2), fewer than their quorum of 3 (not healthy: m3: ",
                         0),
              0u);
}

TEST(Zone, NoChangeWithoutAQuorumNow) {
    EXPECT_EQ(remove({"m0 up", "m1 down", "m2 leaderless"}, "m1"),
              "refused: refusing to remove 'm1': the zone has no quorum now: 1 of 3 voting "
              "members are healthy, a quorum is 2 (not healthy: m1: etcd 127.0.0.1:2399: "
              "Status: UNAVAILABLE: connection refused; m2: knows no raft leader); etcd cannot "
              "commit a membership change until enough of them are back");
    EXPECT_EQ(add({"m0 up", "m1 alarm", "m2 down"}, "m3", "http://127.0.0.1:2410"),
              "refused: the zone has no quorum now: 1 of 3 voting members are healthy, a quorum "
              "is 2 (not healthy: m1: reports memberID:17 alarm:NOSPACE; m2: etcd "
              "127.0.0.1:2399: Status: UNAVAILABLE: connection refused); etcd cannot commit a "
              "membership change until enough of them are back");
}

TEST(Zone, NoChangeWhileTheMembersNameALeaderThatIsGone) {
    // m0 (the leader in these views) died a moment ago: m1 and m2 still name it.
    auto z = zone({"m0 down", "m1 up", "m2 up"});
    EXPECT_TRUE(zoneHealth(z).has_quorum);
    EXPECT_TRUE(zoneHealth(z).leader_gone);
    EXPECT_EQ(verdict(checkRemove(z, "m0")),
              "refused: refusing to remove 'm0' now: the members still name m0 (etcd "
              "127.0.0.1:2399: Status: UNAVAILABLE: connection refused) as their raft leader, "
              "which does not answer: they elect another within an election timeout; retry in "
              "a moment");
    EXPECT_EQ(verdict(checkAdd(z, "m3", "http://127.0.0.1:2410"))
                  .rfind("refused: the members still name m0 (", 0),
              0u);
    EXPECT_FALSE(zoneHealth(zone({"m0 up", "m1 down", "m2 up"})).leader_gone);
}

TEST(Zone, AddingNeedsAQuorumOfTheGrownZoneAndOneUnstartedMemberAtATime) {
    EXPECT_EQ(add({"m0 up", "m1 up", "m2 up"}, "m3", "http://127.0.0.1:2410"),
              "allowed\n  warning: the zone will have 4 voting members, an even count: it "
              "tolerates 1 failure(s), as 3 would (quorum 3 of 4)");
    EXPECT_EQ(add({"m0 up", "m1 up", "m2 up", "m3 up"}, "m4", "https://h5:2380"), "allowed");
    EXPECT_EQ(add({"m0 up", "m1 up", "m2 down"}, "m3", "http://127.0.0.1:2410"),
              "refused: adding 'm3' makes 4 voting members, whose quorum is 3, but only 2 are "
              "healthy (m0, m1; not healthy: m2: etcd 127.0.0.1:2399: Status: UNAVAILABLE: "
              "connection refused): the zone would lose its quorum until 'm3' starts. Bring the "
              "members that are down back first");
    EXPECT_EQ(add({"m0 up", "new unstarted", "m2 up"}, "m3", "http://127.0.0.1:2410"),
              "refused: member 0000000000000011 (peer URL http://127.0.0.1:2390) was added but "
              "has not started yet; etcd takes one unstarted member at a time: start etcd there "
              "with --initial-cluster-state existing, or cluster_remove 0000000000000011, then "
              "add 'm3'");
    EXPECT_EQ(add({"m0 up"}, "m1", "http://127.0.0.1:2390"),
              "allowed\n  warning: a zone of one member grows to two: it has no quorum until "
              "'m1' starts, so start etcd there now\n  warning: the zone will have 2 voting "
              "members, an even count: it tolerates 0 failure(s), as 1 would (quorum 2 of 2)");
    EXPECT_EQ(add({"m0 up", "m1 up", "m2 up"}, "m1", "http://127.0.0.1:2410"),
              "refused: a member named 'm1' is in the zone already (id 0000000000000011); "
              "choose another name or cluster_remove it first");
    EXPECT_EQ(add({"m0 up", "m1 up", "m2 up"}, "m3", "http://127.0.0.1:2390"),
              "refused: member m1 already uses peer URL http://127.0.0.1:2390");
}

// A learner does not vote: adding one needs a quorum now but not of a grown zone (so a
// zone with a member down can still take one), no even-count warning, one at a time.
// Promoting it grows the voters: it must have started and be healthy, and the grown set
// must keep a healthy quorum, the learner counted.
TEST(Zone, ALearnerIsAddedWithoutGrowingTheQuorumAndPromotedOnlyWhenHealthy) {
    EXPECT_EQ(addLearner({"m0 up", "m1 up", "m2 up"}, "l3", "http://127.0.0.1:2410"), "allowed");
    EXPECT_EQ(addLearner({"m0 up", "m1 up", "m2 down"}, "l3", "http://127.0.0.1:2410"), "allowed");
    EXPECT_EQ(addLearner({"m0 up", "m1 down", "m2 down"}, "l3", "http://127.0.0.1:2410")
                  .rfind("refused: the zone has no quorum now: ", 0),
              0u)
        << addLearner({"m0 up", "m1 down", "m2 down"}, "l3", "http://127.0.0.1:2410");
    EXPECT_EQ(
        addLearner({"m0 up", "m1 up", "m2 up", "l3 learner up"}, "l4", "http://127.0.0.1:2420"),
        "refused: member l3 is a learner already; etcd 3.4 allows one: cluster_promote or "
        "cluster_remove it first");

    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up", "l3 learner up"}, "l3"),
              "allowed\n  warning: the zone will have 4 voting members, an even count: it "
              "tolerates 1 failure(s), as 3 would (quorum 3 of 4)");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up", "m3 up", "l4 learner up"}, "l4"), "allowed");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up"}, "m1"),
              "refused: 'm1' is a voting member already");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up", "l3 learner unstarted"}, "0000000000000013"),
              "refused: learner (unstarted 0000000000000013) has not started yet: start etcd "
              "there (the line cluster_add printed) and wait until cluster_status shows it "
              "healthy");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up", "l3 learner down"}, "l3"),
              "refused: learner 'l3' is not healthy (etcd 127.0.0.1:2399: Status: UNAVAILABLE: "
              "connection refused); promote it once it is");
    // 2 of 3 healthy is a quorum of 3, and 3 of 4 is needed once l3 votes: 2 + l3 = 3. (With
    // a quorum now and a healthy learner the grown set always keeps one; without a quorum
    // nothing changes.)
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 down", "l3 learner up"}, "l3"),
              "allowed\n  warning: the zone will have 4 voting members, an even count: it "
              "tolerates 1 failure(s), as 3 would (quorum 3 of 4)");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 down", "m3 down", "m4 up", "l5 learner up"}, "l5"),
              "allowed\n  warning: the zone will have 6 voting members, an even count: it "
              "tolerates 2 failure(s), as 5 would (quorum 4 of 6)");
    EXPECT_EQ(promote({"m0 up", "m1 down", "m2 down", "m3 up", "m4 up", "l5 learner up"}, "l5"),
              "allowed\n  warning: the zone will have 6 voting members, an even count: it "
              "tolerates 2 failure(s), as 5 would (quorum 4 of 6)");
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 down", "m3 down", "l4 learner up"}, "l4")
                  .rfind("refused: ", 0),
              0u);
    EXPECT_EQ(promote({"m0 up", "m1 up", "m2 up"}, "l9").rfind("refused: no member named 'l9'", 0),
              0u);
}

TEST(Zone, UnknownNamesAndUnstartedMembers) {
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up"}, "m9"),
              "refused: no member named 'm9' in the zone (members: m0, m1, m2); a member that "
              "has not started yet has no name: give its id or peer URL");
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up"}, "")
                  .rfind("refused: argument NAME: '' is not a member name: it is empty (", 0),
              0u);
    // An unstarted member goes by id or by peer URL; it is not healthy, so 3 of 4 stay.
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up", "x unstarted"}, "0000000000000013"), "allowed");
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 up", "x unstarted"}, "http://127.0.0.1:2410"),
              "allowed");
    EXPECT_EQ(remove({"m0 up"}, "m0"),
              "refused: 'm0' is the zone's only voting member; removing it would end the zone");
    // A learner goes without the quorum rule (it does not vote), but not without a quorum.
    EXPECT_EQ(remove({"m0 up", "m1 up", "m2 down", "l3 learner up"}, "l3"), "allowed");
}

TEST(Zone, NamesAndPeerUrlsAreCheckedNamingTheArgumentAndTheValue) {
    for (const char* ok : {"m0", "zone-a.b_c", "X~1"})
        EXPECT_TRUE(checkMemberName(ok).ok()) << ok;
    EXPECT_EQ(checkMemberName("a b").error().message,
              "argument NAME: 'a b' is not a member name: it holds a space (1-64 printable "
              "ASCII characters without spaces, '=' or ',')");
    EXPECT_NE(checkMemberName("a=b").error().message.find("it holds '=', which --initial-cluster"),
              std::string::npos);
    EXPECT_NE(checkMemberName("a\tb").error().message.find("not printable ASCII"),
              std::string::npos);
    EXPECT_NE(checkMemberName(std::string(65, 'a')).error().message.find("longer than 64"),
              std::string::npos);
    for (const char* ok : {"http://127.0.0.1:2380", "https://h1.example:2380", "http://[::1]:2380"})
        EXPECT_TRUE(checkPeerUrl(ok).ok()) << ok;
    EXPECT_EQ(checkPeerUrl("127.0.0.1:2380").error().message,
              "argument PEER_URL: '127.0.0.1:2380' is not a peer URL: it does not start with "
              "http:// or https:// (want http://HOST:PORT or https://HOST:PORT, e.g. "
              "http://10.0.0.4:2380)");
    struct Bad {
        const char* url;
        const char* why;
    };
    for (const auto& b : {Bad{"http://h1", "it has no port"}, Bad{"http://:2380", "it has no host"},
                          Bad{"http://h1:0", "its port '0'"}, Bad{"http://h1:65536", "its port"},
                          Bad{"http://h1:23x", "its port"}, Bad{"http://h1:2380/x", "a path"},
                          Bad{"http://::1:2380", "brackets"}, Bad{"ftp://h1:2380", "http://"}})
        EXPECT_NE(checkPeerUrl(b.url).error().message.find(b.why), std::string::npos)
            << b.url << ": " << checkPeerUrl(b.url).error().message;
    EXPECT_NE(add({"m0 up"}, "m1", "h1:2380").find("refused: argument PEER_URL: 'h1:2380'"),
              std::string::npos);
    EXPECT_NE(add({"m0 up"}, "m 1", "http://h1:2380").find("refused: argument NAME: 'm 1'"),
              std::string::npos);
}

TEST(Zone, TheInitialClusterLineOfTheNewMember) {
    auto z = zone({"m0 up", "m1 up", "m2 down", "new unstarted"});
    z.members[0].peer_urls.push_back("http://10.0.0.1:2380");
    EXPECT_EQ(initialCluster(z, "m3", "http://127.0.0.1:2410"),
              "m0=http://127.0.0.1:2380,m0=http://10.0.0.1:2380,m1=http://127.0.0.1:2390,"
              "m2=http://127.0.0.1:2400,m3=http://127.0.0.1:2410");
}

// A zone's leader runs a dped only for a URI that is the same libvirt from every host.
TEST(Zone, ADpedRunsInAZoneOnlyOnALibvirtUriThatNamesItsHost) {
    for (const char* ok :
         {"qemu+tls://hv1/system", "qemu+ssh://root@hv1.example/system",
          "qemu+tcp://10.0.0.7:16509/system", "qemu+tls://[fd00::7]/system", "test:///default"})
        EXPECT_EQ(zoneDpedRefusal(ok), "") << ok;
    struct Case {
        const char* uri;
        const char* says;
    };
    for (const Case& c :
         {Case{"qemu:///system", "names no host"}, Case{"qemu+unix:///system", "names no host"},
          Case{"qemu:///session", "names no host"}, Case{"", "names no host"},
          Case{"qemu+ssh://localhost/system", "names this host (localhost)"},
          Case{"qemu+tcp://127.0.0.1:16509/system", "names this host (127.0.0.1)"},
          Case{"qemu+tls://[::1]/system", "names this host (::1)"}}) {
        const std::string r = zoneDpedRefusal(c.uri);
        EXPECT_NE(r.find(std::string("its libvirt URI '") + c.uri + "' " + c.says),
                  std::string::npos)
            << c.uri << ": " << r;
        EXPECT_NE(r.find("start its domains a second time"), std::string::npos) << r;
    }
}
