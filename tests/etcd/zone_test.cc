// Zone membership, live (docs/ha.md "Zone membership"): a real 3-member etcd cluster on
// loopback, one real cped --cluster over all three endpoints, driven by the real pcloudsh:
// cluster_status, cluster_add of a fourth member that the test then starts with the printed
// --initial-cluster, cluster_remove of a member, and the refusals (a removal that would
// lose the quorum, an unknown name, a bad URL, etcd's own refusal within 5 s of a start).
// What etcd holds is checked with lib/etcd's MemberList, not through cped.
#include "common/fs.h"
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using nlohmann::json;
using pcloud::etcdtest::EtcdCluster;
using namespace std::chrono_literals;

namespace {

class Zone : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(etcd_.start(), "");
        char tmpl[] = "/tmp/pcloud-zone-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        dir_ = root_ + "/a";
        ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
        tls_ = std::make_unique<TestTls>(root_ + "/pki");
        auto st = tls_->setUp("a");
        ASSERT_TRUE(st.ok()) << st.error().describe();
        ASSERT_TRUE(fs::writeAtomic(dir_ + "/pcloud.conf", tls_->hostConfig("a"), {}, 0644).ok());
        auto c = etcd::Client::create(etcd::ClientOptions{etcd_.endpoints(), 2000, 1000});
        ASSERT_TRUE(c.ok()) << c.error().message;
        client_ = std::move(*c);
        port_ = freePort();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = ::open((dir_ + "/cped.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<std::string> argv = {
                CPED_BIN,   "--state-dir",         dir_,          "--listen",    amqpsUrl(port_),
                "--config", dir_ + "/pcloud.conf", "--dped-path", FAKE_DPED,     "--node-name",
                "a",        "--cluster",           etcd_.url(),   "--log-level", "info"};
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(CPED_BIN, args.data());
            ::_exit(127);
        }
        ASSERT_TRUE(waitFor([&] { return shell("deployable_list").rc == 0; }, 15s, 100ms))
            << shell("deployable_list").out;
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (HasFailure())
            std::printf("---- cped ----\n%s\n", etcdtest::tail(dir_ + "/cped.log", 3000).c_str());
        runCommand("rm -rf '" + root_ + "'");
    }
    // cped's lease (TTL 2 s) can lapse on a loaded machine; a not-leader answer changes
    // nothing, so the command is sent again until cped leads again (at most 10 s).
    CommandResult shell(const std::string& words) {
        CommandResult r;
        waitFor(
            [&] {
                r = runCommand(std::string(PCLOUDSH_BIN) + " --broker " + amqpsUrl(port_) +
                               " --config " + dir_ + "/pcloud.conf --timeout 10 " + words +
                               " 2>&1");
                return r.out.find("not-leader") == std::string::npos;
            },
            10s, 100ms);
        return r;
    }
    json status() {
        auto r = shell("--json cluster_status");
        EXPECT_EQ(r.rc, 0) << r.out;
        auto j = json::parse(r.out, nullptr, false);
        EXPECT_TRUE(j.is_object()) << r.out;
        return r.rc == 0 && j.is_object() ? j : json{{"members", json::array()}};
    }
    const json* member(const json& st, const std::string& name) {
        for (const auto& m : st["members"])
            if (m.value("name", "") == name)
                return &m;
        return nullptr;
    }
    // "name=id,..." of what etcd itself holds, sorted.
    std::string etcdMembers() {
        auto l = client_->memberList();
        EXPECT_TRUE(l.ok()) << l.error().message;
        if (!l)
            return "";
        std::vector<std::string> v;
        for (const auto& m : l->members)
            v.push_back((m.name.empty() ? "?" : m.name) + "=" + std::to_string(m.id));
        std::sort(v.begin(), v.end());
        std::string s;
        for (const auto& x : v)
            s += (s.empty() ? "" : ",") + x;
        return s;
    }
    // etcd refuses a membership change for 5 s after a member (re)connected ("unhealthy
    // cluster", EtcdsOwnRefusal... below), and cped while the members name a leader that
    // just died ("retry in a moment"). Such a refusal changes nothing: checked, and the
    // change asked again until it is taken or refused otherwise.
    CommandResult change(const std::string& words) {
        const std::string before = etcdMembers();
        CommandResult r;
        waitFor(
            [&] {
                r = shell(words);
                if (r.out.find("unhealthy cluster (etcd takes a membership change only") ==
                        std::string::npos &&
                    r.out.find("retry in a moment") == std::string::npos)
                    return true;
                EXPECT_EQ(etcdMembers(), before) << r.out;
                return false;
            },
            20s, 250ms);
        return r;
    }
    std::string journal() {
        auto text = fs::readFile(dir_ + "/events.jsonl");
        return text ? *text : "";
    }

    EtcdCluster etcd_{3};
    std::string root_, dir_;
    std::unique_ptr<TestTls> tls_;
    std::unique_ptr<etcd::Client> client_;
    int port_ = 0;
    pid_t pid_ = -1;
};

TEST_F(Zone, StatusListsThreeHealthyMembersTheEtcdLeaderAndThePcloudLeader) {
    ASSERT_EQ(shell("deployable_create web --uri test:///default").rc, 0); // an event
    auto r = shell("cluster_status");
    ASSERT_EQ(r.rc, 0) << r.out;
    std::printf("%s", r.out.c_str()); // what an operator reads (docs/ha.md shows one)
    EXPECT_NE(r.out.find("pcloud leader: a, epoch "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("quorum: 3 of 3 voting members healthy, 2 needed"), std::string::npos)
        << r.out;
    for (const char* n : {"m0", "m1", "m2"})
        EXPECT_NE(r.out.find(n), std::string::npos) << r.out;
    auto st = status();
    ASSERT_EQ(st["members"].size(), 3u) << st.dump();
    EXPECT_GT(st["leader"].value("epoch", 0), 0) << st.dump();
    int leaders = 0;
    for (const auto& m : st["members"]) {
        EXPECT_TRUE(m.value("healthy", false)) << m.dump();
        EXPECT_FALSE(m.value("learner", true)) << m.dump();
        EXPECT_EQ(m["peer_urls"].size(), 1u) << m.dump();
        EXPECT_EQ(m["client_urls"].size(), 1u) << m.dump();
        EXPECT_EQ(m["status"].value("version", ""), "3.4.23") << m.dump();
        EXPECT_GT(m["status"].value("raft_index", 0), 0) << m.dump();
        EXPECT_GT(m["status"].value("db_size", 0), 0) << m.dump();
        EXPECT_TRUE(m.contains("lag")) << m.dump();
        leaders += m.value("is_leader", false) ? 1 : 0;
    }
    EXPECT_EQ(leaders, 1) << st.dump();
    EXPECT_EQ(st.value("etcd_leader", ""), etcd_.member(etcd_.leaderIndex()).name) << st.dump();
    // The zone's journal and this node's copy: the same last seq; etcd holds all of it.
    const auto& j = st["journal"];
    const auto last = j.value("zone_last", std::uint64_t(0));
    EXPECT_GT(last, 0u) << st.dump();
    EXPECT_EQ(j.value("copy_last", std::uint64_t(0)), last) << st.dump();
    EXPECT_EQ(j.value("etcd_oldest", std::uint64_t(0)), 1u) << st.dump();
    const std::string n = std::to_string(last);
    EXPECT_NE(r.out.find("journal: zone's last seq " + n + " (etcd keeps 1.." + n +
                         "); this node's copy: last seq " + n),
              std::string::npos)
        << r.out;
}

TEST_F(Zone, AddAFourthMemberStartItWithThePrintedLineAndSeeItJoin) {
    const int i = etcd_.addMember();
    const std::string peer = etcd_.peerUrl(i);
    auto text = change("cluster_add m3 " + peer);
    ASSERT_EQ(text.rc, 0) << text.out;
    EXPECT_NE(text.out.find("--initial-cluster-state existing"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("warning: the zone will have 4 voting members, an even count"),
              std::string::npos)
        << text.out;
    EXPECT_NE(text.out.find("cped --cluster etcd://"), std::string::npos) << text.out;
    // Added, not started: no name yet, one unstarted member; a second add is refused.
    auto st = status();
    ASSERT_EQ(st["members"].size(), 4u) << st.dump();
    auto second = shell("cluster_add m4 http://127.0.0.1:1");
    EXPECT_EQ(second.rc, 1) << second.out;
    EXPECT_NE(second.out.find("was added but has not started yet"), std::string::npos)
        << second.out;

    // The --initial-cluster line the operator gets, as is.
    const std::string key = "--initial-cluster ";
    auto at = text.out.find(key);
    ASSERT_NE(at, std::string::npos) << text.out;
    const std::string line =
        text.out.substr(at + key.size(), text.out.find(' ', at + key.size()) - at - key.size());
    EXPECT_NE(line.find("m3=" + peer), std::string::npos) << line;
    ASSERT_EQ(etcd_.startJoining(i, line), "");
    ASSERT_TRUE(waitFor(
        [&] {
            auto s = status();
            const json* m = member(s, "m3");
            return m && m->value("healthy", false);
        },
        20s, 200ms))
        << status().dump();
    EXPECT_NE(shell("cluster_status").out.find("4 of 4 voting members healthy, 3 needed"),
              std::string::npos);
    EXPECT_NE(journal().find("\"deployable\":\"zone:m3\""), std::string::npos) << journal();
    EXPECT_NE(journal().find("\"state\":\"member-added\""), std::string::npos) << journal();
}

// A learner: added without voting (the quorum stays 2 of 3), started with the printed line,
// then promoted once etcd has it in sync: the zone has 4 voting members, all healthy.
TEST_F(Zone, ALearnerJoinsWithoutVotingAndVotesOncePromoted) {
    const int i = etcd_.addMember();
    const std::string peer = etcd_.peerUrl(i);
    auto text = change("cluster_add m3 " + peer + " --learner");
    ASSERT_EQ(text.rc, 0) << text.out;
    EXPECT_NE(text.out.find("ok: etcd learner m3 added"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("does not vote"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("cluster_promote m3"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find("even count"), std::string::npos) << "a learner does not vote";
    // Unstarted, it has no name yet: its id, as the reply gave it.
    const auto idAt = text.out.find("(id ");
    ASSERT_NE(idAt, std::string::npos) << text.out;
    auto early = shell("cluster_promote " + text.out.substr(idAt + 4, 16));
    EXPECT_NE(early.rc, 0) << early.out;
    EXPECT_NE(early.out.find("has not started yet"), std::string::npos) << early.out;

    const std::string key = "--initial-cluster ";
    auto at = text.out.find(key);
    ASSERT_NE(at, std::string::npos) << text.out;
    const std::string line =
        text.out.substr(at + key.size(), text.out.find(' ', at + key.size()) - at - key.size());
    ASSERT_EQ(etcd_.startJoining(i, line), "");
    ASSERT_TRUE(waitFor(
        [&] {
            auto s = status();
            const json* m = member(s, "m3");
            return m && m->value("healthy", false) && m->value("learner", false);
        },
        20s, 200ms))
        << status().dump();
    EXPECT_NE(shell("cluster_status").out.find("3 of 3 voting members healthy, 2 needed"),
              std::string::npos)
        << shell("cluster_status").out;
    // etcd promotes a learner only once its log is in sync with the leader's; until then it
    // refuses, and the refusal says to retry.
    CommandResult promoted;
    ASSERT_TRUE(waitFor(
        [&] {
            promoted = change("cluster_promote m3");
            return promoted.rc == 0 || promoted.out.find("in sync") == std::string::npos;
        },
        20s, 500ms));
    ASSERT_EQ(promoted.rc, 0) << promoted.out;
    EXPECT_NE(promoted.out.find("ok: etcd learner m3 (id "), std::string::npos) << promoted.out;
    EXPECT_NE(promoted.out.find("the zone has 4 voting members"), std::string::npos)
        << promoted.out;
    EXPECT_NE(promoted.out.find("warning: the zone will have 4 voting members"), std::string::npos)
        << promoted.out;
    auto st = status();
    const json* m = member(st, "m3");
    ASSERT_NE(m, nullptr) << st.dump();
    EXPECT_FALSE(m->value("learner", true)) << st.dump();
    ASSERT_TRUE(waitFor(
        [&] {
            return shell("cluster_status").out.find("4 of 4 voting members healthy, 3 needed") !=
                   std::string::npos;
        },
        10s, 200ms))
        << shell("cluster_status").out;
    EXPECT_NE(journal().find("\"state\":\"member-promoted\""), std::string::npos) << journal();
    auto again = shell("cluster_promote m3");
    EXPECT_NE(again.rc, 0);
    EXPECT_NE(again.out.find("'m3' is a voting member already"), std::string::npos) << again.out;
}

// m0 is the first of cped's etcd endpoints, the one its client talks to: the member that
// takes the removal is the one removed, and it leaves at once, closing the connection
// under the reply. cped finds the change applied in the member list and says it was.
TEST_F(Zone, RemoveAMemberLiveEvenTheOneCpedTalksTo) {
    auto r = change("cluster_remove m0");
    ASSERT_EQ(r.rc, 0) << r.out;
    EXPECT_NE(r.out.find("ok: etcd member m0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("warning: the zone will have 2 voting members"), std::string::npos)
        << r.out;
    const std::string after = etcdMembers();
    EXPECT_EQ(after.find("m0="), std::string::npos) << after;
    EXPECT_NE(after.find("m1="), std::string::npos) << after;
    EXPECT_NE(after.find("m2="), std::string::npos) << after;
    EXPECT_EQ(status()["members"].size(), 2u);
    EXPECT_NE(journal().find("\"deployable\":\"zone:m0\""), std::string::npos) << journal();
    EXPECT_NE(journal().find("\"state\":\"member-removed\""), std::string::npos) << journal();
    // The zone still works: cped (on its other endpoints) leads and serves. When m0 was
    // etcd's raft leader the two left elect one first (one to two election timeouts), and
    // cped's term may end meanwhile; the next term serves once it has read the zone's model.
    ASSERT_TRUE(waitFor(
        [&] {
            auto r = shell("--json cluster_status");
            auto j = json::parse(r.out, nullptr, false);
            if (r.rc != 0 || !j.is_object())
                return false;
            const std::string leader = j.value("etcd_leader", "");
            return leader == "m1" || leader == "m2"; // and cped answered: it leads
        },
        20s, 200ms))
        << shell("--json cluster_status").out;
    auto create = shell("deployable_create web --uri test:///default");
    EXPECT_EQ(create.rc, 0) << create.out;
}

TEST_F(Zone, ARemovalThatWouldLoseTheQuorumIsRefusedAndNothingChanges) {
    const std::string before = etcdMembers();
    // m2 goes down; m0 or m1 may be cped's endpoint or etcd's leader: either way the two
    // left are a quorum of three, not of the two that removing one of them would leave.
    etcd_.kill(2);
    // Down, and (if it led) replaced: until then the others still name it as their leader.
    ASSERT_TRUE(waitFor(
        [&] {
            auto s = status();
            const json* m = member(s, "m2");
            const std::string leader = s.value("etcd_leader", "");
            return m && !m->value("healthy", true) && !leader.empty() && leader != "m2";
        },
        10s, 200ms))
        << status().dump();
    auto r = shell("cluster_remove m1");
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("refusing to remove 'm1': the 2 voting members left would have 1 "
                         "healthy (m0), fewer than their quorum of 2 (not healthy: m2: "),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("(conflict)"), std::string::npos) << r.out;
    EXPECT_EQ(etcdMembers(), before);
    // Adding is refused too: 2 healthy of 4 is no quorum of 4.
    auto add = shell("cluster_add m3 http://127.0.0.1:" + std::to_string(freePort()));
    EXPECT_EQ(add.rc, 1) << add.out;
    EXPECT_NE(add.out.find("the zone would lose its quorum until 'm3' starts"), std::string::npos)
        << add.out;
    EXPECT_EQ(etcdMembers(), before);
    EXPECT_NE(shell("cluster_status").out.find("m2: etcd 127.0.0.1:"), std::string::npos);
    // The member that is down may go.
    auto down = change("cluster_remove m2");
    EXPECT_EQ(down.rc, 0) << down.out;
    EXPECT_EQ(etcdMembers().find("m2="), std::string::npos);
    EXPECT_EQ(journal().find("zone:m1"), std::string::npos) << journal();
}

TEST_F(Zone, UnknownNamesAndBadArgumentsAreRefusedNamingThem) {
    const std::string before = etcdMembers();
    auto r = shell("cluster_remove m9");
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("no member named 'm9' in the zone (members: m0, m1, m2)"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("(not-found)"), std::string::npos) << r.out;
    r = shell("cluster_add m3 127.0.0.1:2380");
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("argument PEER_URL: '127.0.0.1:2380' is not a peer URL: it does not "
                         "start with http:// or https://"),
              std::string::npos)
        << r.out;
    r = shell("cluster_add m3 http://127.0.0.1:99999");
    EXPECT_NE(r.out.find("its port '99999' is not a number from 1 to 65535"), std::string::npos)
        << r.out;
    r = shell("cluster_add \"m 3\" http://127.0.0.1:2380");
    EXPECT_NE(r.out.find("argument NAME: 'm 3' is not a member name: it holds a space"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("(invalid-argument)"), std::string::npos) << r.out;
    r = shell("cluster_add m0 http://127.0.0.1:2");
    EXPECT_NE(r.out.find("a member named 'm0' is in the zone already"), std::string::npos) << r.out;
    r = shell("cluster_remove");
    EXPECT_EQ(r.rc, 2) << r.out;
    EXPECT_EQ(etcdMembers(), before);
    EXPECT_EQ(journal().find("zone:"), std::string::npos) << journal();
}

// etcd refuses a membership change until the member that takes it has been connected to
// its peers for 5 s (its HealthInterval): etcd 3.4.23 answers "unhealthy cluster", as
// UNAVAILABLE. cped's own rules see every member healthy, so etcd's refusal is what the
// operator gets, in etcd's words, and not as "no etcd endpoint answered" (the client used to
// take that UNAVAILABLE for an endpoint that is down and try the others).
TEST_F(Zone, EtcdsOwnRefusalWithinFiveSecondsOfAStartIsSaidAsIs) {
    const std::string before = etcdMembers();
    // A follower restarts (restarting the raft leader would cost an election first).
    const int leader = etcd_.leaderIndex();
    ASSERT_GE(leader, 0);
    const int restarted = leader == 2 ? 1 : 2;
    const int removed = 3 - leader - restarted;
    ASSERT_EQ(etcd_.restart(restarted), "");
    const auto started = std::chrono::steady_clock::now();
    std::string why;
    ASSERT_TRUE(waitFor(
        [&] {
            auto s = client_->memberStatus(etcd_.member(restarted).endpoint());
            why = s ? "leader " + std::to_string(s->leader) : s.error().message;
            return s.ok() && s->leader != 0;
        },
        20s, 20ms))
        << why << "\n"
        << etcdtest::tail(etcd_.member(restarted).log);
    const std::string name = etcd_.member(removed).name;
    auto r = shell("cluster_remove " + name);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    ASSERT_LT(ms, 4500) << "too slow to be within etcd's 5 s: " << r.out;
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("etcd refused to remove member '" + name + "' (id "), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find(": unhealthy cluster (etcd takes a membership change only once the "
                         "member that received it has been connected for 5 s"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("nothing was changed, retry in a few seconds (asked etcd 127.0.0.1:"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("(unavailable)"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("no etcd endpoint answered"), std::string::npos) << r.out;
    EXPECT_EQ(etcdMembers(), before);
    // Once etcd's 5 s are over, the same removal goes through.
    auto later = change("cluster_remove " + name);
    EXPECT_EQ(later.rc, 0) << later.out;
}

// The words for etcd's refusals, from the client's error text.
TEST(ZoneWords, EtcdsRefusalsAreSaidInItsWordsWithWhatTheyMean) {
    const std::string what = "remove member 'm1' (id 00000000000000aa)";
    EXPECT_EQ(etcd::explainMemberError(
                  what, "etcd 127.0.0.1:2379: MemberRemove: FAILED_PRECONDITION: etcdserver: "
                        "re-configuration failed due to not enough started members"),
              "etcd refused to remove member 'm1' (id 00000000000000aa): re-configuration failed "
              "due to not enough started members (etcd counts the members that have started at "
              "least once, and an added member that never started is not one: with this "
              "change, fewer than a quorum would have started); nothing was changed (asked etcd "
              "127.0.0.1:2379)");
    EXPECT_EQ(
        etcd::explainMemberError(
            what, "etcd 10.0.0.1:2379: MemberRemove: NOT_FOUND: etcdserver: member not found"),
        "etcd refused to remove member 'm1' (id 00000000000000aa): member not found "
        "(removed meanwhile?) (asked etcd 10.0.0.1:2379)");
    const auto late = etcd::explainMemberError(
        "add a member with peer URL http://h:2380",
        "etcd 127.0.0.1:2379: MemberAdd: DEADLINE_EXCEEDED: Deadline Exceeded");
    EXPECT_EQ(late.rfind("etcd did not answer in time when asked to add a member with peer URL "
                         "http://h:2380; the change may have been applied: look at "
                         "cluster_status before trying again",
                         0),
              0u)
        << late;
    EXPECT_EQ(
        etcd::explainMemberError(
            what, "etcd 127.0.0.1:2379: MemberRemove: UNAVAILABLE: etcdserver: server stopped"),
        "etcd answered 'server stopped' when asked to remove member 'm1' (id "
        "00000000000000aa): the change may have been applied: look at cluster_status "
        "before trying again (asked etcd 127.0.0.1:2379)");
    EXPECT_EQ(etcd::explainMemberError(what, "no etcd endpoint answered: etcd a:1: MemberRemove: "
                                             "UNAVAILABLE: connection refused"),
              "cannot remove member 'm1' (id 00000000000000aa): no etcd endpoint answered: etcd "
              "a:1: MemberRemove: UNAVAILABLE: connection refused");
}

} // namespace
