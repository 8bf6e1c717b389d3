// The election (lib/etcd/election.h) against real etcd started by the test: candidates as
// threads in this process and as separate processes (tests/etcd/etcd_candidate.cc) that
// the test kills, stops and resumes. Timings measured here are printed for docs/ha.md.
#include "etcd/client.h"
#include "etcd/election.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::etcd;
using pcloud::etcdtest::EtcdCluster;
using namespace std::chrono_literals;

namespace {

Millis monoNow() {
    return SystemClock().monotonicMs();
}

std::unique_ptr<Client> makeClient(const std::vector<std::string>& eps) {
    auto c = Client::create(ClientOptions{eps, 1000, 500});
    return c ? std::move(*c) : nullptr;
}

// One in-process candidate.
struct Candidate {
    std::unique_ptr<Client> client;
    std::unique_ptr<Election> election;
};

Candidate makeCandidate(const std::vector<std::string>& eps, const std::string& name,
                        const Clock& clock) {
    Candidate c;
    c.client = makeClient(eps);
    ElectionOptions o;
    o.node_name = name;
    c.election = std::make_unique<Election>(*c.client, o, clock);
    return c;
}

int countLeaders(std::vector<Candidate>& cs, int* who = nullptr) {
    int n = 0;
    for (size_t i = 0; i < cs.size(); ++i)
        if (cs[i].election->isLeader()) {
            ++n;
            if (who)
                *who = static_cast<int>(i);
        }
    return n;
}

TEST(Election, ThreeCandidatesElectExactlyOneWithItsKeysRevisionAsEpoch) {
    EtcdCluster etcd{1};
    ASSERT_EQ(etcd.start(), "");
    SystemClock clock;
    std::vector<Candidate> cs;
    for (const char* n : {"n1", "n2", "n3"})
        cs.push_back(makeCandidate(etcd.endpoints(), n, clock));
    for (auto& c : cs)
        c.election->start();
    int leader = -1;
    ASSERT_TRUE(testsupport::waitFor([&] { return countLeaders(cs, &leader) == 1; }, 5s, 20ms));
    // Never two at once, sampled for 3 s (six keep-alive periods).
    auto end = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < end) {
        ASSERT_LE(countLeaders(cs), 1);
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(countLeaders(cs, &leader), 1);
    auto s = cs[static_cast<size_t>(leader)].election->state();
    auto check = makeClient(etcd.endpoints());
    auto keys = check->range("/pcloud/leader/", true);
    ASSERT_TRUE(keys.ok());
    ASSERT_EQ(keys->kvs.size(), 3u);
    std::int64_t lowest = keys->kvs[0].create_revision;
    std::string lowestName = keys->kvs[0].value;
    for (const auto& kv : keys->kvs)
        if (kv.create_revision < lowest) {
            lowest = kv.create_revision;
            lowestName = kv.value;
        }
    EXPECT_EQ(s.epoch, lowest);
    EXPECT_EQ(s.leader_name, lowestName);
    // The leader's commands are valid until the lease's surest end: more than the margin
    // (it leads, so its deadline is ahead), never more than the TTL (2 s).
    EXPECT_GT(s.valid_for_ms, 500);
    EXPECT_LE(s.valid_for_ms, 2000);
    // Followers know who leads, and their guarded writes are refused locally, naming it.
    auto& follower = cs[static_cast<size_t>((leader + 1) % 3)];
    EXPECT_EQ(follower.election->state().leader_name, lowestName);
    EXPECT_EQ(follower.election->state().valid_for_ms, 0);
    auto refused = follower.election->guardedTxn(Txn{{}, {Op::put("/pcloud/x", "1")}, {}});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().message.rfind("not-leader: ", 0), 0u) << refused.error().message;
    EXPECT_NE(refused.error().message.find("leader: " + lowestName), std::string::npos)
        << refused.error().message;
    // The leader's guarded write goes through.
    std::int64_t used = 0;
    auto ok = cs[static_cast<size_t>(leader)].election->guardedTxn(
        Txn{{}, {Op::put("/pcloud/x", "1")}, {}}, &used);
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_TRUE(ok->succeeded);
    EXPECT_EQ(used, s.epoch);
}

TEST(Election, ResignHandsOverWithAHigherEpochAndTheOldEpochIsRefused) {
    EtcdCluster etcd{1};
    ASSERT_EQ(etcd.start(), "");
    SystemClock clock;
    std::vector<Candidate> cs;
    for (const char* n : {"n1", "n2"})
        cs.push_back(makeCandidate(etcd.endpoints(), n, clock));
    cs[0].election->start();
    ASSERT_TRUE(testsupport::waitFor([&] { return cs[0].election->isLeader(); }, 5s, 20ms));
    cs[1].election->start();
    ASSERT_TRUE(testsupport::waitFor([&] { return cs[1].election->state().leader_name == "n1"; },
                                     5s, 20ms));
    auto old = cs[0].election->state();
    auto t0 = monoNow();
    cs[0].election->stop(true); // revokes the lease
    ASSERT_TRUE(testsupport::waitFor([&] { return cs[1].election->isLeader(); }, 3s, 5ms));
    auto handover = monoNow() - t0;
    auto now = cs[1].election->state();
    EXPECT_GT(now.epoch, old.epoch);
    std::printf("[ measured ] resign -> new leader: %lld ms\n", static_cast<long long>(handover));
    EXPECT_LT(handover, 1500) << "a resignation is seen on the watch, not after a TTL";
    // A write guarded by the old leadership: etcd refuses it.
    auto stale = cs[1].election->guardedTxnAs(old.own_key, old.epoch,
                                              Txn{{}, {Op::put("/pcloud/y", "old")}, {}});
    ASSERT_FALSE(stale.ok());
    EXPECT_EQ(stale.error().message.rfind("stale-epoch: ", 0), 0u) << stale.error().message;
    auto check = makeClient(etcd.endpoints());
    EXPECT_TRUE(check->range("/pcloud/y")->kvs.empty()) << "the refused write left nothing";
    // The caller's own failing compare is not mistaken for a lost leadership.
    Txn cond;
    cond.compare.push_back(Compare::createRevision("/pcloud/absent", 42));
    cond.success.push_back(Op::put("/pcloud/z", "1"));
    auto r = cs[1].election->guardedTxn(cond);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_FALSE(r->succeeded);
}

TEST(Election, LeaseRevokedUnderTheLeaderStepsDownAtOnce) {
    EtcdCluster etcd{1};
    ASSERT_EQ(etcd.start(), "");
    SystemClock clock;
    std::vector<LeaderState> changes; // outlives the election, which calls back until stopped
    std::mutex m;
    auto c = makeCandidate(etcd.endpoints(), "n1", clock);
    c.election->start();
    ASSERT_TRUE(testsupport::waitFor([&] { return c.election->isLeader(); }, 5s, 20ms));
    auto s = c.election->state();
    auto check = makeClient(etcd.endpoints());
    auto kv = check->range(s.own_key);
    ASSERT_TRUE(kv.ok());
    ASSERT_EQ(kv->kvs.size(), 1u);
    c.election->onChange([&](const LeaderState& st) {
        std::lock_guard lock(m);
        changes.push_back(st);
    });
    auto t0 = monoNow();
    ASSERT_TRUE(check->leaseRevoke(kv->kvs[0].lease).ok());
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            std::lock_guard lock(m);
            return !changes.empty() && !changes[0].leader;
        },
        2s, 5ms));
    auto stepDown = monoNow() - t0;
    std::printf("[ measured ] lease revoked -> leader steps down: %lld ms\n",
                static_cast<long long>(stepDown));
    EXPECT_LT(stepDown, 1000);
    // It campaigns again with a new key, and leads again with a higher epoch.
    ASSERT_TRUE(testsupport::waitFor([&] { return c.election->isLeader(); }, 5s, 20ms));
    EXPECT_GT(c.election->state().epoch, s.epoch);
    EXPECT_NE(c.election->state().own_key, s.own_key);
}

// ---- candidate processes ----

struct Proc {
    pid_t pid = -1;
    std::string name;
    std::string out;
};

Proc spawnCandidate(const std::string& url, const std::string& name, const std::string& dir,
                    std::vector<std::string> extra = {}) {
    Proc p;
    p.name = name;
    p.out = dir + "/" + name + ".out";
    std::vector<std::string> args = {ETCD_CANDIDATE, "--endpoints", url, "--name", name};
    for (auto& e : extra)
        args.push_back(e);
    p.pid = ::fork();
    if (p.pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int errFd = ::open((p.out + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(errFd, 2);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    return p;
}

void reap(Proc& p, int sig = SIGKILL) {
    if (p.pid <= 0)
        return;
    ::kill(p.pid, SIGCONT);
    ::kill(p.pid, sig);
    int st;
    ::waitpid(p.pid, &st, 0);
    p.pid = -1;
}

std::vector<std::string> readLines(const std::string& path, size_t fromByte = 0) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    std::vector<std::string> out;
    if (fromByte > s.size())
        return out;
    std::istringstream in(s.substr(fromByte));
    std::string l;
    while (std::getline(in, l))
        if (!l.empty())
            out.push_back(l);
    return out;
}

size_t fileSize(const std::string& path) {
    std::ifstream f(path, std::ios::ate);
    return f ? static_cast<size_t>(f.tellg()) : 0;
}

std::string field(const std::string& line, const std::string& key) {
    auto at = line.find(" " + key + "=");
    if (at == std::string::npos)
        return "";
    at += key.size() + 2;
    return line.substr(at, line.find(' ', at) - at);
}

// The last "state" line of a candidate: {leader?, epoch}.
std::pair<bool, std::int64_t> lastState(const Proc& p) {
    std::pair<bool, std::int64_t> r{false, 0};
    for (const auto& l : readLines(p.out))
        if (l.rfind("state ", 0) == 0)
            r = {field(l, "leader") == "1", std::stoll(field(l, "epoch"))};
    return r;
}

int leaderAmong(const std::vector<Proc>& ps, std::int64_t* epoch = nullptr) {
    int who = -1, n = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
        if (ps[i].pid <= 0)
            continue;
        auto s = lastState(ps[i]);
        if (s.first) {
            ++n;
            who = static_cast<int>(i);
            if (epoch)
                *epoch = s.second;
        }
    }
    return n == 1 ? who : (n == 0 ? -1 : -2);
}

// The revision at which the candidate key of `node` (the one created at `epoch`) was
// deleted, from etcd's history (a watch replayed from revision 1); 0 if not found.
std::int64_t deleteRevisionOf(Client& c, std::int64_t epoch) {
    auto w = c.watch("/pcloud/leader/", true, 1);
    if (!w)
        return 0;
    std::string key;
    auto end = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < end) {
        auto b = (*w)->next(500);
        if (!b)
            continue;
        for (const auto& e : b->events) {
            if (e.type == WatchEvent::Type::Put && e.kv.create_revision == epoch)
                key = e.kv.key;
            if (e.type == WatchEvent::Type::Delete && !key.empty() && e.kv.key == key)
                return e.kv.mod_revision;
        }
    }
    return 0;
}

class ElectionProcesses : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::access(ETCD_CANDIDATE, X_OK), 0) << ETCD_CANDIDATE;
        char tmpl[] = "/tmp/pcloud-cand-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        for (auto& p : procs_)
            reap(p);
        if (HasFailure())
            for (auto& p : procs_)
                std::printf("---- %s ----\n%s\n", p.name.c_str(),
                            etcdtest::tail(p.out, 3000).c_str());
        testsupport::runCommand("rm -rf '" + dir_ + "'");
    }
    std::string dir_;
    std::vector<Proc> procs_;
};

// kill -9 of the leading process, with etcd's default timers (TTL 2 s) and with
// --heartbeat-interval=50 --election-timeout=500 (TTL 1 s).
struct KillCase {
    const char* label;
    std::vector<std::string> etcd_args;
    std::string ttl;
    Millis bound_ms;
};

void PrintTo(const KillCase& k, std::ostream* os) {
    *os << k.label;
}

class ElectionKill : public ElectionProcesses, public ::testing::WithParamInterface<KillCase> {};

TEST_P(ElectionKill, KillMinusNineOfTheLeaderElectsAnotherWithAHigherEpoch) {
    const auto& kc = GetParam();
    EtcdCluster etcd{1, kc.etcd_args};
    ASSERT_EQ(etcd.start(), "");
    for (const char* n : {"p1", "p2", "p3"})
        procs_.push_back(spawnCandidate(etcd.url(), n, dir_, {"--ttl", kc.ttl}));
    std::int64_t epoch1 = 0;
    ASSERT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_, &epoch1) >= 0; }, 10s));
    int first = leaderAmong(procs_);
    // Once the followers name it too, kill it with no chance to resign.
    const std::string firstName = procs_[static_cast<size_t>(first)].name;
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            for (size_t i = 0; i < procs_.size(); ++i) {
                if (static_cast<int>(i) == first)
                    continue;
                std::string named;
                for (const auto& l : readLines(procs_[i].out))
                    if (l.rfind("state ", 0) == 0)
                        named = field(l, "leader_name");
                if (named != firstName)
                    return false;
            }
            return true;
        },
        5s));
    ASSERT_EQ(leaderAmong(procs_), first) << "exactly one leader";
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            for (const auto& l : readLines(procs_[static_cast<size_t>(first)].out))
                if (l.rfind("write ", 0) == 0 && field(l, "result") == "ok")
                    return true;
            return false;
        },
        3s))
        << "the leader makes guarded writes";
    auto t0 = monoNow();
    reap(procs_[static_cast<size_t>(first)]);
    std::int64_t epoch2 = 0;
    ASSERT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_, &epoch2) >= 0; }, 6s, 10ms))
        << "no new leader within 6 s of kill -9";
    auto failover = monoNow() - t0;
    std::printf("[ measured ] kill -9 of the leader -> new leader (%s, TTL %s s): %lld ms\n",
                kc.label, kc.ttl.c_str(), static_cast<long long>(failover));
    EXPECT_GT(epoch2, epoch1);
    EXPECT_LT(failover, kc.bound_ms) << "bounded by the TTL plus a renewal and a read";
    // History check: every write of the dead leader was applied before its key expired,
    // every write of the new one after: the two leaderships never overlap in etcd.
    auto check = makeClient(etcd.endpoints());
    std::int64_t gone = deleteRevisionOf(*check, epoch1);
    ASSERT_GT(gone, 0) << "the dead leader's key was never deleted";
    const std::string deadName = "/" + firstName + "-";
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            auto now = check->range("/pcloud/test/w/", true);
            if (!now)
                return false;
            for (const auto& kv : now->kvs)
                if (kv.key.find(deadName) == std::string::npos)
                    return true;
            return false;
        },
        3s))
        << "the new leader makes guarded writes";
    auto ws = check->range("/pcloud/test/w/", true);
    ASSERT_TRUE(ws.ok());
    int dead = 0, alive = 0;
    for (const auto& kv : ws->kvs) {
        if (kv.key.find(deadName) != std::string::npos) {
            ++dead;
            EXPECT_LT(kv.mod_revision, gone) << kv.key;
        } else {
            ++alive;
            EXPECT_GT(kv.mod_revision, gone) << kv.key;
        }
    }
    EXPECT_GT(dead, 0) << "the first leader made guarded writes while it led";
    EXPECT_GT(alive, 0) << "the new leader made guarded writes";
}

INSTANTIATE_TEST_SUITE_P(
    Timers, ElectionKill,
    ::testing::Values(
        KillCase{"etcd defaults", {}, "2", 3500},
        KillCase{"etcd tuned", {"--heartbeat-interval=50", "--election-timeout=500"}, "1", 2500}),
    [](const auto& info) { return info.index == 0 ? "Defaults" : "Tuned"; });

TEST_F(ElectionProcesses, StoppedLeaderResumesPastItsTtlAndStepsDownWithoutActing) {
    EtcdCluster etcd{1};
    ASSERT_EQ(etcd.start(), "");
    procs_.push_back(spawnCandidate(etcd.url(), "z1", dir_, {"--try-old-epoch"}));
    std::int64_t epoch1 = 0;
    ASSERT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_, &epoch1) == 0; }, 10s));
    procs_.push_back(spawnCandidate(etcd.url(), "z2", dir_, {"--try-old-epoch"}));
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            for (const auto& l : readLines(procs_[1].out))
                if (l.rfind("state ", 0) == 0 && field(l, "leader_name") == "z1")
                    return true;
            return false;
        },
        5s));
    // Writes flow; then stop the leader in the middle of them.
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            for (const auto& l : readLines(procs_[0].out))
                if (l.rfind("write ", 0) == 0 && field(l, "result") == "ok")
                    return true;
            return false;
        },
        3s));
    ASSERT_EQ(::kill(procs_[0].pid, SIGSTOP), 0);
    auto t0 = monoNow();
    std::int64_t epoch2 = 0;
    ASSERT_TRUE(testsupport::waitFor(
        [&] { return lastState(procs_[1]).first && (epoch2 = lastState(procs_[1]).second); }, 6s,
        10ms))
        << "the other candidate must take over while the leader is stopped";
    std::printf("[ measured ] SIGSTOP of the leader -> new leader: %lld ms\n",
                static_cast<long long>(monoNow() - t0));
    EXPECT_GT(epoch2, epoch1);
    // Keep it stopped well past its TTL (10 s in the harness; 4 s is 2 TTLs here).
    std::this_thread::sleep_for(2s);
    size_t before = fileSize(procs_[0].out);
    Millis resumedAt = monoNow();
    ASSERT_EQ(::kill(procs_[0].pid, SIGCONT), 0);
    // After the resume it reports not-leader, and its old-epoch write is refused by etcd.
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            for (const auto& l : readLines(procs_[0].out, before))
                if (l.rfind("zombie ", 0) == 0)
                    return true;
            return false;
        },
        5s))
        << "the resumed candidate never tried its old epoch";
    auto after = readLines(procs_[0].out, before);
    std::set<std::string> attemptedAfter;
    bool sawNotLeader = false;
    for (const auto& l : after)
        std::printf("[ resumed  ] %s\n", l.c_str());
    for (const auto& l : after) {
        if (l.rfind("attempt ", 0) == 0)
            attemptedAfter.insert(field(l, "seq"));
        if (l.rfind("state ", 0) == 0 && field(l, "leader") == "0")
            sawNotLeader = true;
        if (l.rfind("write ", 0) == 0) {
            // A write attempted after the resume is refused before it reaches etcd.
            if (attemptedAfter.count(field(l, "seq"))) {
                EXPECT_EQ(field(l, "result"), "not-leader") << l;
                sawNotLeader = true;
            }
        }
        if (l.rfind("zombie ", 0) == 0) {
            EXPECT_EQ(field(l, "result"), "stale-epoch") << l;
            EXPECT_EQ(field(l, "epoch"), std::to_string(epoch1)) << l;
        }
    }
    EXPECT_TRUE(sawNotLeader) << "the resumed leader must say it is not the leader";
    // History check in etcd: every write of the stopped leader was applied before its key
    // expired; every write of the new leader after.
    auto check = makeClient(etcd.endpoints());
    std::int64_t gone = deleteRevisionOf(*check, epoch1);
    ASSERT_GT(gone, 0) << "the stopped leader's key was never deleted";
    auto ws = check->range("/pcloud/test/w/", true);
    ASSERT_TRUE(ws.ok());
    int old = 0, fresh = 0;
    for (const auto& kv : ws->kvs) {
        if (kv.key.find("/z1-") != std::string::npos) {
            ++old;
            EXPECT_LT(kv.mod_revision, gone) << kv.key << " written by the stopped leader";
        } else {
            ++fresh;
            EXPECT_GT(kv.mod_revision, gone) << kv.key;
        }
    }
    EXPECT_GT(old, 0);
    EXPECT_GT(fresh, 0);
    EXPECT_TRUE(check->range("/pcloud/test/w/z1-zombie")->kvs.empty());
    // Exactly one leader afterwards: the new one (z1 campaigns again behind it).
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            std::string named;
            for (const auto& l : readLines(procs_[0].out))
                if (l.rfind("state ", 0) == 0)
                    named = field(l, "leader_name");
            return named == "z2";
        },
        5s));
    EXPECT_EQ(leaderAmong(procs_), 1);
    (void)resumedAt;
}

// kill -9 or SIGSTOP (etcd#14641's case) of the member that is etcd's raft leader.
class ElectionEtcdLoss : public ElectionProcesses, public ::testing::WithParamInterface<bool> {};

TEST_P(ElectionEtcdLoss, ThreeMemberEtcdLosesItsRaftLeaderAndTheElectionGoesOn) {
    const bool stop = GetParam();
    EtcdCluster etcd{3, {"--heartbeat-interval=50", "--election-timeout=500"}};
    ASSERT_EQ(etcd.start(), "");
    for (const char* n : {"c1", "c2", "c3"})
        procs_.push_back(spawnCandidate(etcd.url(), n, dir_));
    std::int64_t epoch1 = 0;
    ASSERT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_, &epoch1) >= 0; }, 10s));
    int raftLeader = -1;
    ASSERT_TRUE(testsupport::waitFor([&] { return (raftLeader = etcd.leaderIndex()) >= 0; }, 5s));
    auto t0 = monoNow();
    if (stop)
        etcd.signal(raftLeader, SIGSTOP);
    else
        etcd.kill(raftLeader);
    // Within a bound, exactly one candidate leads again and its guarded writes succeed.
    auto okWriteAfter = [&](Millis since) {
        for (const auto& p : procs_)
            for (const auto& l : readLines(p.out))
                if (l.rfind("write ", 0) == 0 && field(l, "result") == "ok" &&
                    std::stoll(field(l, "t")) > since)
                    return true;
        return false;
    };
    ASSERT_TRUE(testsupport::waitFor([&] { return okWriteAfter(t0 + 100); }, 10s, 20ms))
        << "no guarded write succeeded within 10 s of losing etcd's raft leader";
    std::printf("[ measured ] etcd raft leader %s -> next accepted guarded write: %lld ms\n",
                stop ? "SIGSTOPped" : "killed", static_cast<long long>(monoNow() - t0));
    EXPECT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_) >= 0; }, 3s))
        << "exactly one leader";
    if (stop) {
        // The member comes back; the zone keeps one leader and keeps writing.
        etcd.signal(raftLeader, SIGCONT);
        auto t1 = monoNow();
        ASSERT_TRUE(testsupport::waitFor([&] { return okWriteAfter(t1 + 500); }, 5s, 20ms));
        EXPECT_TRUE(testsupport::waitFor([&] { return leaderAmong(procs_) >= 0; }, 3s));
    }
}

INSTANTIATE_TEST_SUITE_P(EtcdMember, ElectionEtcdLoss, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Stopped" : "Killed"; });

} // namespace
