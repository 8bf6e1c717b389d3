// The floating IP follows the zone's leader: two real cpeds and a real etcd in one network
// namespace Z made by the test (they share its loopback), each cped holding the address on
// its own veth (fa0 for a, fb0 for b); the peer ends (fa1, fb1) are in namespace P, where
// raw ARP sockets count the gratuitous ARPs. A step-down (a's lease revoked under it, a
// keeps running) moves the address from fa0 to fb0, and a SIGTERM of the leader moves it
// back. Needs root; fails, saying so, without it.
#include "common/fs.h"
#include "etcd/etcd_fixture.h"
#include "support/netns.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using namespace std::chrono_literals;

namespace {

const std::string kAddress = "10.9.0.100/24";
const std::uint32_t kIp = (10u << 24) | (9u << 16) | 100u;

struct Cped {
    std::string name;
    std::string dev;  // its floating_dev in Z
    std::string peer; // the other end, in P
    std::string dir;
    pid_t pid = -1;
    std::string log() const { return etcdtest::tail(dir + "/cped.log", 4000); }
};

class CpedFloatingIpZone : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u)
            << "this test needs root (CAP_NET_ADMIN) to make network namespaces; run it as root";
        z_ = netnsName("fipz");
        p_ = netnsName("fipp");
        ASSERT_EQ(runAll({"ip netns add " + z_, "ip netns add " + p_,
                          "ip -n " + z_ + " link set lo up", "ip -n " + p_ + " link set lo up"}),
                  "");
        char tmpl[] = "/tmp/pcloud-fipz-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        int host = 11;
        for (const auto& [name, dev, peer] : {std::tuple{"a", "fa0", "fa1"}, {"b", "fb0", "fb1"}}) {
            Cped c{name, dev, peer, root_ + "/" + name};
            ASSERT_EQ(::mkdir(c.dir.c_str(), 0700), 0);
            ASSERT_TRUE(
                fs::writeAtomic(c.dir + "/pcloud.conf",
                                "floating_ip = " + kAddress + "\nfloating_dev = " + dev + "\n", {},
                                0644)
                    .ok());
            // Its own static address, as a host has (the hub's 127.0.0.1 needs one, see
            // tests/cped/floating_ip_netns_test.cc).
            ASSERT_EQ(runAll({"ip -n " + z_ + " link add " + dev + " type veth peer name " + peer +
                                  " netns " + p_,
                              "ip -n " + z_ + " addr add 10.9.0." + std::to_string(host++) +
                                  "/24 dev " + dev,
                              "ip -n " + z_ + " link set " + dev + " up",
                              "ip -n " + p_ + " link set " + peer + " up"}),
                      "");
            cpeds_.push_back(c);
        }
        ASSERT_TRUE(waitFor(
            [&] {
                for (const auto& c : cpeds_)
                    if (linkState(z_, c.dev) != "UP" || linkState(p_, c.peer) != "UP")
                        return false;
                return true;
            },
            5s, 10ms));
        for (size_t i = 0; i < cpeds_.size(); ++i)
            ASSERT_EQ(captures_[i].open(p_, cpeds_[i].peer), "");
        etcd_ = std::make_unique<etcdtest::EtcdCluster>(1, std::vector<std::string>{}, z_);
        ASSERT_EQ(etcd_->start(), "");
    }
    void TearDown() override {
        for (auto& c : cpeds_)
            if (c.pid > 0) {
                ::kill(c.pid, SIGKILL);
                ::waitpid(c.pid, nullptr, 0);
            }
        if (HasFailure())
            for (const auto& c : cpeds_)
                std::printf("---- cped %s ----\n%s\n", c.name.c_str(), c.log().c_str());
        etcd_.reset();
        for (const auto& ns : {z_, p_})
            if (!ns.empty())
                runCommand("ip netns del " + ns + " 2>/dev/null");
        if (!root_.empty())
            runCommand("rm -rf '" + root_ + "'");
    }
    void start(Cped& c) {
        c.pid =
            spawnInNetns(z_,
                         {CPED_BIN, "--state-dir", c.dir + "/state", "--listen",
                          "amqp://127.0.0.1:" + std::to_string(freePort()), "--insecure-listen",
                          "--config", c.dir + "/pcloud.conf", "--dped-path", FAKE_DPED, "--cluster",
                          etcd_->url(), "--node-name", c.name, "--log-level", "info"},
                         c.dir + "/cped.log");
    }
    int stop(Cped& c, int sig) {
        ::kill(c.pid, sig);
        int ws = 0;
        ::waitpid(c.pid, &ws, 0);
        c.pid = -1;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    }
    bool holds(const Cped& c) { return hasIpv4(z_, c.dev, kAddress); }
    std::string z_, p_, root_;
    std::vector<Cped> cpeds_;
    ArpCapture captures_[2];
    std::unique_ptr<etcdtest::EtcdCluster> etcd_;
};

TEST_F(CpedFloatingIpZone, TheAddressFollowsTheLeaderOnStepDownAndOnSigterm) {
    auto& a = cpeds_[0];
    auto& b = cpeds_[1];
    start(a);
    ASSERT_TRUE(waitFor([&] { return holds(a); }, 15s, 20ms)) << a.log();
    EXPECT_EQ(captures_[0].read(kIp, 5, 5s).size(), 5u);
    start(b);
    ASSERT_TRUE(waitFor(
        [&] {
            return a.log().find("cped ready") != std::string::npos &&
                   b.log().find("cped ready") != std::string::npos;
        },
        15s, 50ms));
    EXPECT_FALSE(holds(b)) << "a follower must not hold the address";

    // Step-down without exit: a's lease is revoked under it, b leads, a keeps running.
    // On a loaded machine a's lease may have expired on its own just before ("lease not
    // found"): a has stepped down either way, and b's key is then the oldest.
    const std::string revoke = etcd_->revokeLeaseOf("a");
    ASSERT_TRUE(waitFor([&] { return holds(b) && !holds(a); }, 10s, 20ms))
        << "a holds: " << holds(a) << ", b holds: " << holds(b) << "; revoke: " << revoke;
    EXPECT_EQ(::kill(a.pid, 0), 0) << "a stepped down; it must still run";
    EXPECT_NE(a.log().find("Floating address released"), std::string::npos) << a.log();
    auto garps = captures_[1].read(kIp, 5, 5s);
    ASSERT_EQ(garps.size(), 5u);
    EXPECT_EQ(arpSenderMac(garps[0]), linkMac(z_, b.dev));

    // SIGTERM of the leader: it deletes the address before it resigns, and a takes over.
    EXPECT_EQ(stop(b, SIGTERM), 0) << b.log();
    EXPECT_FALSE(holds(b));
    ASSERT_TRUE(waitFor([&] { return holds(a); }, 5s, 20ms)) << a.log();
}

} // namespace

// etcd stops answering (SIGSTOP): the leader cannot renew its lease, so it stops leading at
// its local deadline (TTL/4 before etcd could expire the lease) and drops the address
// while it keeps running, without any other node to take over.
TEST_F(CpedFloatingIpZone, ALeaderThatCannotRenewItsLeaseDropsTheAddress) {
    auto& a = cpeds_[0];
    start(a);
    ASSERT_TRUE(waitFor([&] { return holds(a); }, 15s, 20ms)) << a.log();
    auto t0 = std::chrono::steady_clock::now();
    etcd_->signal(0, SIGSTOP);
    ASSERT_TRUE(waitFor([&] { return !holds(a); }, 5s, 10ms)) << a.log();
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    std::printf("[ measured ] etcd frozen -> the leader drops the floating address: %lld ms\n",
                static_cast<long long>(ms));
    EXPECT_EQ(::kill(a.pid, 0), 0);
    EXPECT_NE(a.log().find("Floating address released"), std::string::npos) << a.log();
    etcd_->signal(0, SIGCONT);
}
