// The zone harness (docs/ha.md "The zone harness"): three hosts h1..h3, each a network
// namespace with one etcd member and one cped, on a bridge in a fourth namespace, and a
// client namespace; addresses exist only inside those namespaces (10.77.0.0/24). The bus
// is amqps:// (one PKI: cped.h1..h3, operator.alice); the floating address 10.77.0.100/24
// follows the leader; each cped runs the real dped of deployable `web` (one assembly on
// libvirt's test driver) while it leads. The client asks `deployable_status web` through the
// floating address all along (the leader asks its dped, so every answer is a command a
// dped accepted under the leader's epoch).
//
// Each case breaks the leader (kill -9, SIGSTOP for 10 s, its link down, etcd's quorum
// lost) and then checks what must hold whatever happened:
//  - never two: at no sample did two running hosts hold the floating address, and the
//    history check (etcd/history.h) over every command any dped accepted finds no epoch
//    going backwards and no two leaders' commands taking effect at once;
//  - the zone comes back: a new leader serves through the floating address, and the
//    client's ARP entry names its MAC.
//
// The model is not shared in etcd yet (docs/ha.md "Not done yet"): the test makes it once
// on h1 and copies h1's model files to h2 and h3 before the zone starts. Needs root.
#include "common/fs.h"
#include "common/lock_file.h"
#include "etcd/etcd_fixture.h"
#include "etcd/history.h"
#include "support/netns.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using pcloud::etcdtest::EtcdCluster;
using namespace std::chrono_literals;

namespace {

constexpr int kHosts = 3;
const std::string kFloating = "10.77.0.100/24";
const std::string kFloatingIp = "10.77.0.100";
const std::string kClientAddr = "10.77.0.9/24";
constexpr int kHubPort = 5671;

std::int64_t nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Host {
    std::string name; // h1..h3: its cped's node name and cped.NAME identity
    std::string ns;
    std::string addr; // 10.77.0.N
    std::string dir;  // state dir, pcloud.conf, cped.log
    pid_t cped = -1;
    // SIGSTOPped or killed by the test: the host's kernel may still hold the address, but
    // no cped there acts on it (the new leader's gratuitous ARPs move the clients).
    bool inert = false;
    std::string log() const { return etcdtest::tail(dir + "/cped.log", 1'000'000); }
};

class ZoneHa : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the zone harness needs root (network namespaces)";
        sw_ = netnsName("zsw");
        client_ = netnsName("zcl");
        std::vector<std::string> cmds = {"ip netns add " + sw_,
                                         "ip netns add " + client_,
                                         "ip -n " + sw_ + " link set lo up",
                                         "ip -n " + client_ + " link set lo up",
                                         "ip -n " + sw_ + " link add br0 type bridge",
                                         "ip -n " + sw_ + " link set br0 up"};
        char tmpl[] = "/tmp/pcloud-zone-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (int i = 0; i < kHosts; ++i) {
            Host h;
            h.name = "h" + std::to_string(i + 1);
            h.ns = netnsName("z" + h.name + "-");
            h.addr = "10.77.0." + std::to_string(i + 1);
            h.dir = root_ + "/" + h.name;
            ASSERT_EQ(::mkdir(h.dir.c_str(), 0700), 0);
            const std::string port = "v" + std::to_string(i);
            cmds.insert(cmds.end(), {"ip netns add " + h.ns, "ip -n " + h.ns + " link set lo up",
                                     "ip -n " + h.ns + " link add eth0 type veth peer name " +
                                         port + " netns " + sw_,
                                     "ip -n " + sw_ + " link set " + port + " master br0",
                                     "ip -n " + sw_ + " link set " + port + " up",
                                     "ip -n " + h.ns + " addr add " + h.addr + "/24 dev eth0",
                                     "ip -n " + h.ns + " link set eth0 up"});
            hosts_.push_back(h);
        }
        cmds.insert(cmds.end(),
                    {"ip -n " + client_ + " link add eth0 type veth peer name vc netns " + sw_,
                     "ip -n " + sw_ + " link set vc master br0", "ip -n " + sw_ + " link set vc up",
                     "ip -n " + client_ + " addr add " + kClientAddr + " dev eth0",
                     "ip -n " + client_ + " link set eth0 up"});
        ASSERT_EQ(runAll(cmds), "");
        // Every link up (the bridge forwards at once: no STP) before etcd starts.
        ASSERT_TRUE(waitFor(
            [&] {
                for (const auto& h : hosts_)
                    if (linkState(h.ns, "eth0") != "UP")
                        return false;
                return linkState(client_, "eth0") == "UP";
            },
            10s, 20ms));

        for (int i = 0; i < kHosts; ++i)
            etcd_.place(i, hosts_[i].ns, hosts_[i].addr);
        ASSERT_EQ(etcd_.start(), "");

        tls_ = std::make_unique<TestTls>(root_ + "/pki");
        auto st = tls_->setUp("h1");
        ASSERT_TRUE(st.ok()) << st.error().describe();
        for (const auto& h : hosts_) {
            auto cert = tls_->issue({pki::Kind::Cped, h.name});
            ASSERT_TRUE(cert.ok()) << cert.error().describe();
            ASSERT_TRUE(fs::writeAtomic(h.dir + "/pcloud.conf",
                                        tls_->hostConfig(h.name) + "floating_ip = " + kFloating +
                                            "\nfloating_dev = eth0\n",
                                        {}, 0644)
                            .ok());
        }
        ASSERT_TRUE(fs::writeAtomic(root_ + "/n1.xml",
                                    "<domain type='test'><name>n1</name><memory "
                                    "unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n",
                                    {}, 0644)
                        .ok());

        // The model, made on h1 alone, then copied (see the top of the file).
        start(0);
        ASSERT_TRUE(waitFor([&] { return shell("deployable_list").rc == 0; }, 20s, 100ms))
            << shell("deployable_list").out << hosts_[0].log();
        for (const std::string& cmd :
             {std::string("deployable_create web --uri test:///default"),
              "assembly_create n1 --domain-xml " + root_ + "/n1.xml",
              std::string("deployable_assembly_add web n1"), std::string("deployable_start web")}) {
            auto r = shell(cmd);
            ASSERT_EQ(r.rc, 0) << cmd << ": " << r.out;
        }
        ASSERT_TRUE(waitFor([&] { return dpedAnswers(); }, 20s)) << hosts_[0].log();
        for (int i = 1; i < kHosts; ++i)
            ASSERT_EQ(runCommand("cp " + hosts_[0].dir + "/db_*.xml " + hosts_[0].dir +
                                 "/desired.json " + hosts_[i].dir + "/ 2>&1")
                          .rc,
                      0);
        for (int i = 1; i < kHosts; ++i)
            start(i);
        ASSERT_TRUE(waitFor(
            [&] {
                for (const auto& h : hosts_)
                    if (h.log().find("cped ready") == std::string::npos)
                        return false;
                return true;
            },
            20s, 100ms));
        startWatch();
    }

    void TearDown() override {
        stopWatch();
        for (auto& h : hosts_) {
            if (h.cped > 0) {
                ::kill(h.cped, SIGCONT);
                ::kill(h.cped, SIGKILL);
                ::waitpid(h.cped, nullptr, 0);
            }
            if (auto d = LockFile::holder(h.dir + "/dped-web.lock"); d && *d > 0)
                ::kill(*d, SIGKILL);
        }
        if (HasFailure())
            for (const auto& h : hosts_)
                std::printf("---- %s ----\n%s\n", h.name.c_str(),
                            etcdtest::tail(h.dir + "/cped.log", 6000).c_str());
        for (int i = 0; i < etcd_.size(); ++i)
            etcd_.kill(i);
        for (const auto& h : hosts_)
            runCommand("ip netns del " + h.ns + " 2>/dev/null");
        for (const auto& ns : {sw_, client_})
            if (!ns.empty())
                runCommand("ip netns del " + ns + " 2>/dev/null");
        if (!root_.empty())
            runCommand("rm -rf '" + root_ + "'");
    }

    // cped on host i, spawned from the test's main thread (PR_SET_PDEATHSIG follows the
    // thread that forks). Its own etcd member comes first in its list, as an operator sets
    // it: a host cut off from the others then fails its calls at once (no raft leader)
    // rather than timing out on an unreachable address.
    void start(int i) {
        auto& h = hosts_[i];
        std::string cluster = "etcd://" + etcd_.member(i).endpoint();
        for (int k = 0; k < kHosts; ++k)
            if (k != i)
                cluster += "," + etcd_.member(k).endpoint();
        h.cped = spawnInNetns(h.ns,
                              {CPED_BIN, "--state-dir", h.dir, "--listen",
                               "amqps://0.0.0.0:" + std::to_string(kHubPort), "--config",
                               h.dir + "/pcloud.conf", "--dped-path", DPED_BIN, "--cluster",
                               cluster, "--node-name", h.name, "--log-level", "info"},
                              h.dir + "/cped.log");
    }

    // pcloudsh in the client namespace, through the floating address (or `addr`).
    CommandResult shell(const std::string& words, const std::string& addr = kFloatingIp) {
        return runCommand("ip netns exec " + client_ + " " + PCLOUDSH_BIN + " --broker amqps://" +
                          addr + ":" + std::to_string(kHubPort) + " --config " + hosts_[0].dir +
                          "/pcloud.conf --timeout 2 " + words + " 2>&1");
    }
    bool dpedAnswers() {
        auto r = shell("deployable_status web");
        return r.rc == 0 && r.out.find("not answering") == std::string::npos;
    }
    // The index of the host whose cped leads, from its own cluster_status through the
    // floating address; -1 when none answers.
    int leader() {
        auto r = shell("cluster_status");
        for (int i = 0; i < kHosts; ++i)
            if (r.rc == 0 &&
                r.out.find("pcloud leader: " + hosts_[i].name + ",") != std::string::npos)
                return i;
        return -1;
    }
    bool holds(int i) { return hasIpv4(hosts_[i].ns, "eth0", kFloating); }
    // The MAC the client's ARP entry gives the floating address ("" when none).
    std::string clientArp() {
        auto r = runCommand("ip -n " + client_ + " neigh show " + kFloatingIp + " 2>/dev/null");
        auto at = r.out.find("lladdr ");
        return at == std::string::npos ? "" : r.out.substr(at + 7, 17);
    }

    // The watch: a thread samples who holds the floating address (every 50 ms) and
    // another asks deployable_status through it all along, noting each answer's time.
    void startWatch() {
        watching_ = true;
        sampler_ = std::thread([this] {
            while (watching_) {
                int n = 0;
                std::string who;
                for (int i = 0; i < kHosts; ++i)
                    if (!hosts_[i].inert && holds(i)) {
                        ++n;
                        who += hosts_[i].name + " ";
                    }
                if (n > 1) {
                    std::lock_guard lock(mutex_);
                    doubles_.push_back(std::to_string(nowMs()) + " ms: " + who);
                }
                std::this_thread::sleep_for(50ms);
            }
        });
        client_loop_ = std::thread([this] {
            while (watching_) {
                auto t = nowMs();
                bool ok = dpedAnswers();
                std::lock_guard lock(mutex_);
                (ok ? answered_ : unanswered_).push_back(t);
            }
        });
    }
    void stopWatch() {
        watching_ = false;
        if (sampler_.joinable())
            sampler_.join();
        if (client_loop_.joinable())
            client_loop_.join();
    }
    // Answers to the client after `t` (ms since 1970).
    std::size_t answeredAfter(std::int64_t t) {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (auto a : answered_)
            n += a > t;
        return n;
    }
    // The checks of every case (see the top of the file), after the zone settled.
    void checkNeverTwo(std::size_t minCommands) {
        stopWatch();
        {
            std::lock_guard lock(mutex_);
            EXPECT_TRUE(doubles_.empty())
                << "two hosts held the floating address at " << doubles_.front();
        }
        std::vector<etcdtest::Accepted> history;
        for (const auto& h : hosts_)
            for (auto& a : etcdtest::parseAccepted(h.log(), h.name))
                history.push_back(std::move(a));
        std::printf("[ measured ] history: %zu commands accepted by dpeds, %zu client answers, "
                    "%zu client requests unanswered\n",
                    history.size(), answered_.size(), unanswered_.size());
        EXPECT_GE(history.size(), minCommands);
        for (const auto& v : etcdtest::checkHistory(history))
            ADD_FAILURE() << v;
    }
    int awaitLeader(std::chrono::milliseconds within) {
        int l = -1;
        EXPECT_TRUE(waitFor([&] { return (l = leader()) >= 0; }, within, 50ms))
            << "no cped serves through the floating address";
        return l;
    }
    std::string mac(int i) { return linkMac(hosts_[i].ns, "eth0"); }

    std::string sw_, client_, root_;
    std::vector<Host> hosts_;
    EtcdCluster etcd_{kHosts};
    std::unique_ptr<TestTls> tls_;
    std::atomic<bool> watching_{false};
    std::thread sampler_, client_loop_;
    std::mutex mutex_;
    std::vector<std::string> doubles_;
    std::vector<std::int64_t> answered_, unanswered_;
};

TEST_F(ZoneHa, KillMinusNineOfTheLeaderMovesTheZoneToAnother) {
    const int old = awaitLeader(10s);
    ASSERT_GE(old, 0);
    ASSERT_TRUE(waitFor([&] { return dpedAnswers(); }, 20s));
    const auto t0 = nowMs();
    hosts_[old].inert = true;
    ::kill(hosts_[old].cped, SIGKILL);
    ::waitpid(hosts_[old].cped, nullptr, 0);
    hosts_[old].cped = -1;
    const int next = awaitLeader(10s);
    ASSERT_GE(next, 0);
    EXPECT_NE(next, old);
    std::printf("[ measured ] leader kill -9 -> a new leader serves through the floating "
                "address: %lld ms\n",
                static_cast<long long>(nowMs() - t0));
    // Nothing deleted the dead leader's address; its cped, restarted (as systemd does),
    // deletes it at once and follows.
    EXPECT_TRUE(holds(old));
    start(old);
    const auto restarted = nowMs();
    ASSERT_TRUE(waitFor([&] { return !holds(old); }, 10s, 10ms)) << hosts_[old].log();
    hosts_[old].inert = false;
    std::printf("[ measured ] the restarted cped deleted the address it left after %lld ms\n",
                static_cast<long long>(nowMs() - restarted));
    EXPECT_NE(hosts_[old].log().find("this cped does not lead (left by a cped that was killed"),
              std::string::npos);
    const auto since = nowMs();
    ASSERT_TRUE(waitFor([&] { return answeredAfter(since) > 0; }, 20s, 100ms))
        << "the new leader's dped never answered";
    EXPECT_EQ(clientArp(), mac(next));
    checkNeverTwo(5);
}

// A SIGSTOPped leader cannot drop its address or fence anyone: the others elect a leader
// after its lease expires, and when it resumes 10 s later its first look at the clock ends
// its term: it drops the address, serves nothing and its commands take effect nowhere.
TEST_F(ZoneHa, ALeaderStoppedForTenSecondsDoesNotActWhenItResumes) {
    const int old = awaitLeader(10s);
    ASSERT_GE(old, 0);
    ASSERT_TRUE(waitFor([&] { return dpedAnswers(); }, 20s));
    hosts_[old].inert = true;
    ::kill(hosts_[old].cped, SIGSTOP);
    const auto t0 = nowMs();
    int next = awaitLeader(10s);
    ASSERT_GE(next, 0);
    EXPECT_NE(next, old);
    std::printf("[ measured ] leader SIGSTOP -> a new leader serves: %lld ms\n",
                static_cast<long long>(nowMs() - t0));
    EXPECT_EQ(clientArp(), mac(next)); // the new leader's gratuitous ARP moved the client
    while (nowMs() - t0 < 10'000)
        std::this_thread::sleep_for(100ms); // the fault itself lasts 10 s
    ::kill(hosts_[old].cped, SIGCONT);
    const auto resumed = nowMs();
    ASSERT_TRUE(waitFor([&] { return !holds(old); }, 3s, 10ms)) << hosts_[old].log();
    hosts_[old].inert = false;
    std::printf("[ measured ] the resumed leader dropped the address after %lld ms\n",
                static_cast<long long>(nowMs() - resumed));
    EXPECT_NE(shell("deployable_list", hosts_[old].addr).rc, 0) << "the zombie serves";
    EXPECT_EQ(leader(), next);
    const auto since = nowMs();
    ASSERT_TRUE(waitFor([&] { return answeredAfter(since) > 0; }, 10s, 100ms));
    checkNeverTwo(5);
}

// The leader's link goes down (its port on the bridge): its etcd member is in a minority,
// so it cannot renew its lease and stops leading at its local deadline, dropping the
// address, while the other two elect a leader. Healed, it rejoins as a follower.
TEST_F(ZoneHa, APartitionedLeaderStepsDownAndTheMajorityGoesOn) {
    const int old = awaitLeader(10s);
    ASSERT_GE(old, 0);
    ASSERT_TRUE(waitFor([&] { return dpedAnswers(); }, 20s));
    const std::string port = "v" + std::to_string(old);
    const auto t0 = nowMs();
    ASSERT_EQ(runAll({"ip -n " + sw_ + " link set " + port + " down"}), "");
    ASSERT_TRUE(waitFor([&] { return !holds(old); }, 5s, 20ms)) << hosts_[old].log();
    std::printf("[ measured ] partitioned leader dropped the address after %lld ms\n",
                static_cast<long long>(nowMs() - t0));
    const int next = awaitLeader(15s);
    ASSERT_GE(next, 0);
    EXPECT_NE(next, old);
    std::printf("[ measured ] leader partitioned -> a new leader serves: %lld ms\n",
                static_cast<long long>(nowMs() - t0));
    ASSERT_EQ(runAll({"ip -n " + sw_ + " link set " + port + " up"}), "");
    ASSERT_TRUE(waitFor(
        [&] {
            auto r = shell("deployable_list", hosts_[old].addr);
            return r.out.find("not-leader") != std::string::npos;
        },
        20s, 200ms))
        << "the healed host does not answer as a follower";
    EXPECT_EQ(leader(), next);
    const auto since = nowMs();
    ASSERT_TRUE(waitFor([&] { return answeredAfter(since) > 0; }, 10s, 100ms));
    checkNeverTwo(5);
}

// Two of three etcd members die: no quorum. The leader cannot renew, so the zone stops
// acting: nobody holds the address or serves, and nothing is restarted because of it (the
// dped that ran is fenced, the same process throughout; no other dped starts). With the
// quorum back, a leader serves again.
TEST_F(ZoneHa, LosingQuorumStopsTheZoneAndRestartsNothing) {
    const int old = awaitLeader(10s);
    ASSERT_GE(old, 0);
    ASSERT_TRUE(waitFor([&] { return dpedAnswers(); }, 20s));
    const pid_t dped = LockFile::holder(hosts_[old].dir + "/dped-web.lock").value_or(0);
    ASSERT_GT(dped, 0);
    const int a = (old + 1) % kHosts, b = (old + 2) % kHosts;
    etcd_.kill(a);
    etcd_.kill(b);
    ASSERT_TRUE(waitFor([&] { return !holds(old); }, 5s, 20ms)) << hosts_[old].log();
    // Long enough for any wrong restart to show: the lease TTL (2 s) three times over.
    const auto lost = nowMs();
    while (nowMs() - lost < 6'000) {
        for (int i = 0; i < kHosts; ++i)
            EXPECT_FALSE(holds(i)) << hosts_[i].name << " holds the address without a quorum";
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_LT(leader(), 0);
    EXPECT_EQ(LockFile::holder(hosts_[old].dir + "/dped-web.lock").value_or(0), dped);
    EXPECT_EQ(::kill(dped, 0), 0);
    for (int i = 0; i < kHosts; ++i) {
        if (i == old)
            continue;
        auto h = LockFile::holder(hosts_[i].dir + "/dped-web.lock");
        EXPECT_TRUE(!h || *h <= 0 || ::kill(*h, 0) != 0)
            << hosts_[i].name << " started a dped without a quorum";
    }
    ASSERT_EQ(etcd_.restart(a), "");
    ASSERT_EQ(etcd_.restart(b), "");
    ASSERT_GE(awaitLeader(30s), 0);
    const auto since = nowMs();
    ASSERT_TRUE(waitFor([&] { return answeredAfter(since) > 0; }, 20s, 100ms));
    checkNeverTwo(5);
}

} // namespace
