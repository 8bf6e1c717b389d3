// The floating IP's pure parts: the ARP frames byte for byte, and FloatingIp's schedule on
// a fake link driven with explicit times (no sleeping). The real netlink and AF_PACKET
// link runs in network namespaces in floating_ip_netns_test.cc.
#include "cped/floating_ip.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::cped;

namespace {

const MacAddress kMac = {0x02, 0x00, 0x5e, 0x10, 0x20, 0x30};
const std::uint32_t kIp = (10u << 24) | (9u << 16) | 100u; // 10.9.0.100

TEST(FloatingIpFrames, AGratuitousArpIsABroadcastRequestForItsOwnAddress) {
    const std::array<std::uint8_t, 42> want = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
        0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // source: the interface
        0x08, 0x06,                         // ARP
        0x00, 0x01, 0x08, 0x00, 6,    4,    // Ethernet, IPv4, lengths 6 and 4
        0x00, 0x01,                         // request
        0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // sender MAC
        10,   9,    0,    100,              // sender IP
        0,    0,    0,    0,    0,    0,    // target MAC: zero (RFC 5227 §3)
        10,   9,    0,    100,              // target IP == sender IP
    };
    EXPECT_EQ(gratuitousArpFrame(kMac, kIp), want);
}

TEST(FloatingIpFrames, AProbeAsksFromAddressZero) {
    auto f = arpProbeFrame(kMac, kIp);
    EXPECT_EQ((std::array<std::uint8_t, 4>{f[28], f[29], f[30], f[31]}),
              (std::array<std::uint8_t, 4>{0, 0, 0, 0}));
    EXPECT_EQ((std::array<std::uint8_t, 4>{f[38], f[39], f[40], f[41]}),
              (std::array<std::uint8_t, 4>{10, 9, 0, 100}));
    EXPECT_EQ(f[21], 1); // a request
    EXPECT_EQ(toString(kMac), "02:00:5e:10:20:30");
}

// What the fake link saw and what it answers; owned by the test, so it outlives FloatingIp.
struct LinkState {
    bool present = false;
    bool fail_add = false;
    bool fail_remove = false;
    int adds = 0;
    int removes = 0;
    int probes = 0;
    int garps = 0;
    std::vector<MacAddress> claims;
};

class FakeLink final : public AddressLink {
public:
    explicit FakeLink(LinkState& s) : s_(s) {}
    Result<bool> hasAddress() override { return s_.present; }
    Status addAddress() override {
        ++s_.adds;
        if (s_.fail_add)
            return makeError("cannot add: Operation not permitted");
        s_.present = true;
        return Status::success();
    }
    Status removeAddress() override {
        ++s_.removes;
        if (s_.fail_remove)
            return makeError("cannot delete: Operation not permitted");
        s_.present = false;
        return Status::success();
    }
    Status sendGratuitousArp() override {
        ++s_.garps;
        return Status::success();
    }
    Status sendProbe() override {
        ++s_.probes;
        return Status::success();
    }
    std::vector<MacAddress> takeClaimsByOthers() override { return std::exchange(s_.claims, {}); }

private:
    LinkState& s_;
};

struct Fixture {
    LinkState link;
    FloatingIp fip{"10.9.0.100/24", "eth0", std::make_unique<FakeLink>(link)};
};

TEST(FloatingIpSchedule, FiveGratuitousArpsAt0To800MsThenNoneUntilTheRecheck) {
    Fixture f;
    f.fip.acquire(0);
    EXPECT_TRUE(f.fip.held());
    EXPECT_EQ(f.link.probes, 1); // asked before adding
    EXPECT_EQ(f.link.adds, 1);
    EXPECT_TRUE(f.link.present);
    std::vector<Millis> sentAt = {0};
    int seen = f.link.garps;
    EXPECT_EQ(seen, 1);
    // Every ms for 6 s: a GARP only on the 200 ms grid, exactly five in all.
    for (Millis now = 1; now <= 6000; ++now) {
        f.fip.tick(now);
        if (f.link.garps != seen) {
            sentAt.push_back(now);
            seen = f.link.garps;
        }
    }
    EXPECT_EQ(sentAt, (std::vector<Millis>{0, 200, 400, 600, 800}));
    EXPECT_EQ(f.fip.garpsSent(), 5);
    EXPECT_EQ(f.link.adds, 1); // the rechecks at 5 s found it there
    EXPECT_TRUE(f.fip.conflicts().empty());
}

TEST(FloatingIpSchedule, TickSaysWhenItIsDueNext) {
    Fixture f;
    EXPECT_EQ(f.fip.tick(0), 5000); // not leading: it looks every 5 s that the address is not here
    f.fip.acquire(1000);
    EXPECT_EQ(f.fip.tick(1000), 200);
    EXPECT_EQ(f.fip.tick(1150), 50);
    EXPECT_EQ(f.fip.tick(1200), 200);
    f.fip.tick(1400);
    f.fip.tick(1600);
    EXPECT_EQ(f.fip.tick(1800), 4200); // the burst is over: the recheck at 6000
    f.fip.release();
    EXPECT_EQ(f.fip.tick(2000), 4000);
}

TEST(FloatingIpSchedule, ARemovedAddressIsAddedAgainAtTheNextRecheckWithANewBurst) {
    Fixture f;
    f.fip.acquire(0);
    for (Millis now = 200; now <= 800; now += 200)
        f.fip.tick(now);
    f.link.present = false; // `ip addr del` by someone
    f.fip.tick(4999);
    EXPECT_EQ(f.link.adds, 1);
    f.fip.tick(5000);
    EXPECT_EQ(f.link.adds, 2);
    EXPECT_TRUE(f.link.present);
    EXPECT_EQ(f.link.garps, 6); // the new burst starts at once
    for (Millis now = 5200; now <= 6000; now += 200)
        f.fip.tick(now);
    EXPECT_EQ(f.link.garps, 10);
}

TEST(FloatingIpSchedule, AFailedAddIsTriedAgainEveryFiveSeconds) {
    Fixture f;
    f.link.fail_add = true;
    f.fip.acquire(0);
    EXPECT_FALSE(f.fip.held());
    EXPECT_EQ(f.link.garps, 0); // no announcement of an address it does not have
    EXPECT_EQ(f.fip.tick(100), 4900);
    f.link.fail_add = false;
    f.fip.tick(5000);
    EXPECT_TRUE(f.fip.held());
    EXPECT_EQ(f.link.adds, 2);
    EXPECT_EQ(f.link.garps, 1);
}

TEST(FloatingIpConflicts, AnAddressAlreadyThereIsAConflictAndIsTakenOver) {
    Fixture f;
    f.link.present = true; // left by a killed cped, or set by hand
    f.fip.acquire(0);
    EXPECT_EQ(f.fip.conflicts(), (std::vector<std::string>{"present"}));
    EXPECT_EQ(f.link.adds, 0);
    EXPECT_TRUE(f.fip.held());
    EXPECT_EQ(f.link.garps, 1); // it announces it all the same: this node leads
    f.fip.release();
    EXPECT_EQ(f.link.removes, 1);
    EXPECT_FALSE(f.link.present);
}

TEST(FloatingIpConflicts, AnotherHostClaimingTheAddressIsLoggedOncePerTerm) {
    Fixture f;
    f.fip.acquire(0);
    const MacAddress other = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    f.link.claims = {other, other};
    f.fip.tick(200);
    f.link.claims = {other};
    f.fip.tick(400);
    EXPECT_EQ(f.fip.conflicts(), (std::vector<std::string>{"52:54:00:12:34:56"}));
    f.fip.release();
    f.fip.acquire(1000); // a new term logs it again
    f.link.claims = {other};
    f.fip.tick(1200);
    EXPECT_EQ(f.fip.conflicts().size(), 2u);
}

TEST(FloatingIpConflicts, ClaimsHeardWhileNotLeadingAreTheLeadersOwnAndNotConflicts) {
    Fixture f;
    const MacAddress leader = {0x52, 0x54, 0, 0xaa, 0xbb, 0xcc};
    f.link.claims = {leader}; // the current leader's gratuitous ARPs
    f.fip.tick(0);
    EXPECT_TRUE(f.link.claims.empty()); // read, so that they do not pile up
    f.link.claims = {leader};           // its last ones, queued when this node takes over
    f.fip.acquire(100);
    f.fip.tick(300);
    EXPECT_TRUE(f.fip.conflicts().empty());
}

TEST(FloatingIpRelease, ReleaseDeletesAtOnceAndStopsTheBurst) {
    Fixture f;
    f.fip.acquire(0);
    f.fip.tick(200);
    f.fip.release();
    EXPECT_FALSE(f.fip.held());
    EXPECT_FALSE(f.link.present);
    EXPECT_EQ(f.link.removes, 1);
    for (Millis now = 400; now <= 10000; now += 200)
        f.fip.tick(now);
    EXPECT_EQ(f.link.garps, 2);
    EXPECT_EQ(f.link.adds, 1); // not added again: it is not wanted
    f.fip.release();           // nothing held: nothing to delete
    EXPECT_EQ(f.link.removes, 1);
}

TEST(FloatingIpRelease, AFailedDeleteIsRetriedByTick) {
    Fixture f;
    f.fip.acquire(0);
    f.link.fail_remove = true;
    f.fip.release();
    EXPECT_TRUE(f.fip.held());
    EXPECT_EQ(f.link.removes, 1);
    EXPECT_EQ(f.fip.tick(100), 5000); // tried again at once, then every 5 s
    EXPECT_EQ(f.link.removes, 2);
    EXPECT_EQ(f.fip.tick(200), 4900);
    EXPECT_EQ(f.link.removes, 2);
    f.link.fail_remove = false;
    f.fip.tick(5100);
    EXPECT_EQ(f.link.removes, 3);
    EXPECT_FALSE(f.fip.held());
    EXPECT_FALSE(f.link.present);
    EXPECT_EQ(f.fip.tick(5200), 4900);
}

TEST(FloatingIpRelease, ANodeThatDoesNotLeadDeletesALeftoverAddress) {
    Fixture f;
    f.link.present = true; // its cped was killed with -9 while it led
    f.fip.tick(0);
    EXPECT_FALSE(f.link.present);
    EXPECT_EQ(f.link.removes, 1);
    EXPECT_EQ(f.fip.conflicts(), (std::vector<std::string>{"present"}));
    f.link.present = true; // set by hand later: found at the next look
    f.fip.tick(4999);
    EXPECT_TRUE(f.link.present);
    f.fip.tick(5000);
    EXPECT_FALSE(f.link.present);
    EXPECT_EQ(f.link.adds, 0);
}

TEST(FloatingIpRelease, TheDestructorReleases) {
    LinkState link;
    {
        FloatingIp fip("10.9.0.100/24", "eth0", std::make_unique<FakeLink>(link));
        fip.acquire(0);
        EXPECT_TRUE(link.present);
    }
    EXPECT_FALSE(link.present);
    EXPECT_EQ(link.removes, 1);
}

TEST(FloatingIpConfig, NoFloatingIpConfiguredMeansNone) {
    auto r = makeFloatingIp(hostconfig::HostConfig{});
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->get(), nullptr);
}

} // namespace
