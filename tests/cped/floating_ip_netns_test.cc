// The floating IP on real interfaces: two network namespaces made by the test, joined by a
// veth pair (fip0 in A, fip1 in B). FloatingIp's real link (netlink, AF_PACKET) runs in A;
// a raw ARP socket on fip1 in B counts the gratuitous ARPs on the wire. The host's own
// interfaces are never touched. Then the real cped in A: it adds the address once it leads
// and deletes it on SIGTERM. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns): without
// it every test fails, saying so.
#include "common/fs.h"
#include "cped/floating_ip.h"
#include "support/netns.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <csignal>
#include <optional>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::cped;
using namespace pcloud::testsupport;
using namespace std::chrono_literals;

namespace {

const std::string kAddress = "10.9.0.100/24";
const std::uint32_t kIp = (10u << 24) | (9u << 16) | 100u;

class FloatingIpNetns : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u)
            << "this test needs root (CAP_NET_ADMIN) to make network namespaces; run it as root";
        a_ = netnsName("fipa");
        b_ = netnsName("fipb");
        ASSERT_EQ(runAll({"ip netns add " + a_, "ip netns add " + b_,
                          "ip -n " + a_ + " link add fip0 type veth peer name fip1 netns " + b_,
                          "ip -n " + a_ + " link set lo up", "ip -n " + a_ + " link set fip0 up",
                          "ip -n " + b_ + " link set lo up", "ip -n " + b_ + " link set fip1 up",
                          // Each end has its own static address, as hosts do. The hub needs
                          // one in A: proton resolves 127.0.0.1 with AI_ADDRCONFIG, which
                          // glibc refuses while the only address besides loopback is fip0's
                          // IPv6 link-local one.
                          "ip -n " + a_ + " addr add 10.9.0.1/24 dev fip0",
                          "ip -n " + b_ + " addr add 10.9.0.2/24 dev fip1"}),
                  "");
        // Until both ends have carrier the veth drops what is sent (noop qdisc).
        ASSERT_TRUE(
            waitFor([&] { return linkState(a_, "fip0") == "UP" && linkState(b_, "fip1") == "UP"; },
                    5s, 10ms))
            << linkState(a_, "fip0") << " " << linkState(b_, "fip1");
        ASSERT_EQ(capture_.open(b_, "fip1"), "");
    }
    void TearDown() override {
        for (const auto& ns : {a_, b_})
            if (!ns.empty())
                runCommand("ip netns del " + ns + " 2>/dev/null");
    }
    std::string addresses(const std::string& ns, const std::string& dev) {
        return runCommand("ip -n " + ns + " -4 addr show dev " + dev).out;
    }
    bool hasAddress(const std::string& ns, const std::string& dev) {
        return hasIpv4(ns, dev, kAddress);
    }
    std::unique_ptr<FloatingIp> openInA(const std::string& dev = "fip0") {
        std::optional<Result<std::unique_ptr<AddressLink>>> link;
        auto err = inNetns(
            a_, [&] { link.emplace(openNetlinkLink(*hostconfig::parseIpv4Cidr(kAddress), dev)); });
        EXPECT_EQ(err, "");
        if (!link || !*link) {
            ADD_FAILURE() << (link ? (*link).error().describe() : err);
            return nullptr;
        }
        return std::make_unique<FloatingIp>(kAddress, dev, std::move(**link));
    }

    std::string a_, b_;
    ArpCapture capture_;
};

TEST_F(FloatingIpNetns, AcquireAddsTheAddressAndFiveGratuitousArpsReachThePeer) {
    auto fip = openInA();
    ASSERT_TRUE(fip);
    EXPECT_FALSE(hasAddress(a_, "fip0"));
    fip->acquire(0);
    EXPECT_TRUE(hasAddress(a_, "fip0")) << addresses(a_, "fip0");
    for (Millis now = 200; now <= 800; now += 200)
        fip->tick(now);
    EXPECT_EQ(fip->garpsSent(), 5);
    // The peer sees them on the wire (the probe's sender is 0.0.0.0, so it is not counted).
    auto frames = capture_.read(kIp, 5, 3s);
    ASSERT_EQ(frames.size(), 5u);
    const std::string sender = linkMac(a_, "fip0");
    for (const auto& f : frames) {
        EXPECT_EQ(std::vector<std::uint8_t>(f.begin(), f.begin() + 6),
                  std::vector<std::uint8_t>(6, 0xff)); // broadcast
        EXPECT_EQ(f[21], 1);                           // request
        EXPECT_EQ(std::vector<std::uint8_t>(f.begin() + 28, f.begin() + 32),
                  std::vector<std::uint8_t>(f.begin() + 38, f.begin() + 42)); // sender == target
        EXPECT_EQ(arpSenderMac(f), sender);
    }
    // Exactly five: no sixth once the burst is over.
    fip->tick(1000);
    EXPECT_TRUE(capture_.read(kIp, 1, 300ms).empty());
    EXPECT_TRUE(fip->conflicts().empty());

    fip->release();
    EXPECT_FALSE(hasAddress(a_, "fip0")) << addresses(a_, "fip0");
    EXPECT_FALSE(fip->held());
}

TEST_F(FloatingIpNetns, AnAddressSomeoneRemovedIsAddedAgainAtTheRecheck) {
    auto fip = openInA();
    ASSERT_TRUE(fip);
    fip->acquire(0);
    for (Millis now = 200; now <= 800; now += 200)
        fip->tick(now);
    ASSERT_TRUE(hasAddress(a_, "fip0"));
    ASSERT_EQ(runCommand("ip -n " + a_ + " addr del " + kAddress + " dev fip0").rc, 0);
    fip->tick(4999);
    EXPECT_FALSE(hasAddress(a_, "fip0"));
    fip->tick(5000);
    EXPECT_TRUE(hasAddress(a_, "fip0")) << addresses(a_, "fip0");
    EXPECT_EQ(fip->garpsSent(), 6); // the new burst's first
    fip.reset();                    // the destructor releases
    EXPECT_FALSE(hasAddress(a_, "fip0"));
}

TEST_F(FloatingIpNetns, AnAddressAlreadyOnTheInterfaceIsAConflictTakenOver) {
    ASSERT_EQ(runCommand("ip -n " + a_ + " addr add " + kAddress + " dev fip0").rc, 0);
    auto fip = openInA();
    ASSERT_TRUE(fip);
    fip->acquire(0);
    EXPECT_EQ(fip->conflicts(), (std::vector<std::string>{"present"}));
    EXPECT_TRUE(fip->held());
    fip->release();
    EXPECT_FALSE(hasAddress(a_, "fip0"));
}

TEST_F(FloatingIpNetns, ANodeThatDoesNotLeadDeletesALeftoverAddress) {
    // Left by a cped killed with -9 while it led.
    ASSERT_EQ(runCommand("ip -n " + a_ + " addr add " + kAddress + " dev fip0").rc, 0);
    auto fip = openInA();
    ASSERT_TRUE(fip);
    fip->tick(0);
    EXPECT_FALSE(hasAddress(a_, "fip0")) << addresses(a_, "fip0");
    EXPECT_EQ(fip->conflicts(), (std::vector<std::string>{"present"}));
}

TEST_F(FloatingIpNetns, AnotherHostHoldingTheAddressAnswersTheProbeAndIsNamed) {
    ASSERT_EQ(runCommand("ip -n " + b_ + " addr add " + kAddress + " dev fip1").rc, 0);
    auto fip = openInA();
    ASSERT_TRUE(fip);
    fip->acquire(0);
    // B's kernel answers the probe within moments; tick at the same instant reads it (no
    // timer is due, so nothing else happens).
    EXPECT_TRUE(waitFor(
        [&] {
            fip->tick(0);
            return !fip->conflicts().empty();
        },
        3s, 10ms));
    EXPECT_EQ(fip->conflicts(), (std::vector<std::string>{linkMac(b_, "fip1")}));
}

TEST_F(FloatingIpNetns, AMissingInterfaceIsNamed) {
    std::optional<Result<std::unique_ptr<AddressLink>>> link;
    ASSERT_EQ(inNetns(a_,
                      [&] {
                          link.emplace(
                              openNetlinkLink(*hostconfig::parseIpv4Cidr(kAddress), "nosuch0"));
                      }),
              "");
    ASSERT_FALSE(link->ok());
    EXPECT_EQ(link->error().message, "floating_dev 'nosuch0': no such network interface");
    // lo is not Ethernet: no ARP to send there.
    ASSERT_EQ(
        inNetns(a_,
                [&] { link.emplace(openNetlinkLink(*hostconfig::parseIpv4Cidr(kAddress), "lo")); }),
        "");
    ASSERT_FALSE(link->ok());
    EXPECT_NE(link->error().message.find("'lo' is not an Ethernet interface"), std::string::npos)
        << link->error().message;
}

// The real cped (single node: it leads once it campaigns) in namespace A.
class CpedFloatingIp : public FloatingIpNetns {
protected:
    void SetUp() override {
        FloatingIpNetns::SetUp();
        if (HasFatalFailure())
            return;
        char tmpl[] = "/tmp/pcloud-fip-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (HasFailure())
            std::printf("---- cped ----\n%s\n",
                        runCommand("cat " + dir_ + "/cped.log").out.c_str());
        runCommand("rm -rf '" + dir_ + "'");
        FloatingIpNetns::TearDown();
    }
    void start(const std::string& dev) {
        ASSERT_TRUE(fs::writeAtomic(dir_ + "/pcloud.conf",
                                    "floating_ip = " + kAddress + "\nfloating_dev = " + dev + "\n",
                                    {}, 0644)
                        .ok());
        const std::string url = "amqp://127.0.0.1:" + std::to_string(freePort());
        pid_ = spawnInNetns(a_,
                            {CPED_BIN, "--state-dir", dir_ + "/state", "--listen", url,
                             "--insecure-listen", "--config", dir_ + "/pcloud.conf", "--dped-path",
                             FAKE_DPED},
                            dir_ + "/cped.log");
    }
    int stop(int sig) {
        ::kill(pid_, sig);
        int ws = 0;
        ::waitpid(pid_, &ws, 0);
        pid_ = -1;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    }
    std::string log() { return runCommand("cat " + dir_ + "/cped.log").out; }

    std::string dir_;
    pid_t pid_ = -1;
};

TEST_F(CpedFloatingIp, CpedHoldsTheAddressWhileItLeadsAndDeletesItOnSigterm) {
    start("fip0");
    ASSERT_TRUE(waitFor([&] { return hasAddress(a_, "fip0"); }, 15s, 50ms)) << log();
    EXPECT_EQ(capture_.read(kIp, 5, 5s).size(), 5u) << log();
    EXPECT_NE(log().find("Floating address added address=10.9.0.100/24 dev=fip0"),
              std::string::npos)
        << log();
    EXPECT_EQ(stop(SIGTERM), 0) << log();
    EXPECT_FALSE(hasAddress(a_, "fip0")) << addresses(a_, "fip0");
    EXPECT_NE(log().find("Floating address released"), std::string::npos) << log();
}

TEST_F(CpedFloatingIp, AMissingInterfaceIsAConfigurationError) {
    start("nosuch0");
    int ws = 0;
    ASSERT_EQ(::waitpid(pid_, &ws, 0), pid_);
    pid_ = -1;
    ASSERT_TRUE(WIFEXITED(ws));
    EXPECT_EQ(WEXITSTATUS(ws), 78) << log(); // EX_CONFIG: not respawned
    EXPECT_NE(log().find("cped: cannot start: " + dir_ +
                         "/pcloud.conf: floating_dev 'nosuch0': no such network interface"),
              std::string::npos)
        << log();
}

} // namespace
