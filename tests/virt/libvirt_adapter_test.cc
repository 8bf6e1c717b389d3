// The libvirt adapter on libvirt's in-process test:///default driver: every connection
// gets its own in-memory hypervisor, so these tests are fast and need no daemon.

#include "virt/guest_xml.h"
#include "virt/libvirt_hypervisor.h"

#include "test_util.h"

#include <libvirt/libvirt.h>

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::virt;
using namespace pcloud::virt::testing;
using namespace std::chrono_literals;

namespace {

std::string testDomainXml(const std::string& name) {
    return "<domain type='test'><name>" + name +
           "</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>";
}

class AdapterTest : public ::testing::Test {
protected:
    void SetUp() override {
        Status s = hv.open("test:///default");
        ASSERT_TRUE(s.ok()) << s.error().describe();
        hv.setListener(&listener);
    }
    void TearDown() override { hv.setListener(nullptr); }

    LibvirtHypervisor hv;
    RecordingListener listener;
};

auto eventIs(const std::string& domain, DomainEventKind kind) {
    return [=](const DomainEvent& e) { return e.domain == domain && e.kind == kind; };
}

} // namespace

TEST(DomainStateMapping, MapsStatesAndReasons) {
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_BOOTED).state,
              DomainState::Running);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_BOOTED).reason, "booted");
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_BLOCKED, 0).state, DomainState::Running);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_USER).state, DomainState::Paused);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_CRASHED).state,
              DomainState::Crashed);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_DESTROYED).state,
              DomainState::Shutoff);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_DESTROYED).reason, "destroyed");
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_CRASHED).state,
              DomainState::Crashed);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_DAEMON).reason, "daemon");
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_CRASHED, VIR_DOMAIN_CRASHED_PANICKED).state,
              DomainState::Crashed);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_PMSUSPENDED, 0).state, DomainState::Paused);
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_NOSTATE, 0).state, DomainState::Unknown);
    // Reasons newer than this code must not crash the mapping.
    EXPECT_EQ(mapDomainState(VIR_DOMAIN_SHUTOFF, 999).reason, "unknown");
    EXPECT_EQ(mapDomainState(42, 0).state, DomainState::Unknown);
}

TEST(DomainStateMapping, MapsLifecycleEvents) {
    DomainEvent e = mapLifecycleEvent(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_CRASHED);
    EXPECT_EQ(e.kind, DomainEventKind::Stopped);
    EXPECT_EQ(e.detail, "crashed");
    e = mapLifecycleEvent(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_FAILED);
    EXPECT_EQ(e.detail, "failed");
    e = mapLifecycleEvent(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_BOOTED);
    EXPECT_EQ(e.kind, DomainEventKind::Started);
    EXPECT_EQ(e.detail, "booted");
    e = mapLifecycleEvent(1234, 0);
    EXPECT_EQ(e.kind, DomainEventKind::Unknown);
    EXPECT_STREQ(toString(DomainEventKind::Stopped), "stopped");
}

TEST(LibvirtHypervisorTest, OpenBadUriFailsWithLibvirtsMessage) {
    LibvirtHypervisor hv;
    Status s = hv.open("nosuchdriver:///x");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("nosuchdriver:///x"), std::string::npos) << s.error().message;
    EXPECT_FALSE(hv.connected());
}

TEST_F(AdapterTest, LookupOfTheDefaultDomain) {
    auto info = hv.lookup("test"); // test:///default always has a running domain "test"
    ASSERT_TRUE(info.ok()) << info.error().describe();
    EXPECT_EQ(info->state, DomainState::Running);
    EXPECT_FALSE(info->uuid.empty());
    EXPECT_GE(info->id, 0);
}

TEST_F(AdapterTest, UnknownDomainIsMissingNotAnError) {
    auto info = hv.lookup("no-such-domain");
    ASSERT_TRUE(info.ok()) << info.error().describe();
    EXPECT_EQ(info->state, DomainState::Missing);
    EXPECT_EQ(info->name, "no-such-domain");
    // Destroy/undefine of a missing domain is the state we wanted: not an error.
    EXPECT_TRUE(hv.destroy("no-such-domain").ok());
    EXPECT_TRUE(hv.undefine("no-such-domain").ok());
    // The pid of a domain on a non-qemu URI is a clear error.
    auto pid = hv.qemuPid("no-such-domain");
    ASSERT_FALSE(pid.ok());
    EXPECT_NE(pid.error().message.find("no-such-domain"), std::string::npos);
}

TEST_F(AdapterTest, DefineStartDestroyUndefineWithEvents) {
    const std::string name = "pcloud-adapter-1";
    auto started = hv.defineAndStart(testDomainXml(name));
    ASSERT_TRUE(started.ok()) << started.error().describe();
    EXPECT_EQ(started->state, DomainState::Running);
    EXPECT_TRUE(started->persistent);
    auto ev = listener.events.waitFor(eventIs(name, DomainEventKind::Started), 5s);
    ASSERT_TRUE(ev.has_value()) << "no STARTED event";
    EXPECT_EQ(ev->uuid, started->uuid);
    EXPECT_GT(ev->monotonicUs, 0);
    EXPECT_TRUE(listener.events.waitFor(eventIs(name, DomainEventKind::Defined), 5s).has_value());

    ASSERT_TRUE(hv.destroy(name).ok());
    ev = listener.events.waitFor(eventIs(name, DomainEventKind::Stopped), 5s);
    ASSERT_TRUE(ev.has_value()) << "no STOPPED event";
    EXPECT_EQ(ev->detail, "destroyed");
    auto info = hv.lookup(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state, DomainState::Shutoff);
    EXPECT_EQ(info->reason, "destroyed");
    EXPECT_EQ(info->id, -1);
    // Destroying a stopped domain again is fine.
    EXPECT_TRUE(hv.destroy(name).ok());

    // start() again, then tear down fully.
    ASSERT_TRUE(hv.start(name).ok());
    EXPECT_EQ(hv.lookup(name)->state, DomainState::Running);
    ASSERT_TRUE(hv.destroy(name).ok());
    ASSERT_TRUE(hv.undefine(name).ok());
    EXPECT_TRUE(listener.events.waitFor(eventIs(name, DomainEventKind::Undefined), 5s).has_value());
    EXPECT_EQ(hv.lookup(name)->state, DomainState::Missing);
}

// virDomainShutdown: the test driver's guest obeys at once, as a cooperative guest would
// after a while; libvirt records the reason "shutdown", not "destroyed".
TEST_F(AdapterTest, ShutdownStopsTheDomainGracefully) {
    const std::string name = "pcloud-adapter-shutdown";
    ASSERT_TRUE(hv.defineAndStart(testDomainXml(name)).ok());
    Status st = hv.shutdown(name);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    auto ev = listener.events.waitFor(eventIs(name, DomainEventKind::Stopped), 5s);
    ASSERT_TRUE(ev.has_value()) << "no STOPPED event";
    EXPECT_EQ(ev->detail, "shutdown");
    auto info = hv.lookup(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state, DomainState::Shutoff);
    EXPECT_EQ(info->reason, "shutdown");
    // A domain that is already shut off, or missing, is not an error.
    st = hv.shutdown(name);
    EXPECT_TRUE(st.ok()) << st.error().describe();
    EXPECT_TRUE(hv.shutdown("no-such-domain").ok());
    EXPECT_TRUE(hv.undefine(name).ok());
}

TEST_F(AdapterTest, TransientDomainVanishesWhenDestroyed) {
    const std::string name = "pcloud-adapter-transient";
    auto started = hv.createTransient(testDomainXml(name));
    ASSERT_TRUE(started.ok()) << started.error().describe();
    EXPECT_FALSE(started->persistent);
    ASSERT_TRUE(hv.destroy(name).ok());
    EXPECT_TRUE(listener.events.waitFor(eventIs(name, DomainEventKind::Stopped), 5s).has_value());
    EXPECT_EQ(hv.lookup(name)->state, DomainState::Missing);
}

TEST_F(AdapterTest, StartingARunningDomainAgainIsRefused) {
    const std::string name = "pcloud-adapter-twice";
    ASSERT_TRUE(hv.defineAndStart(testDomainXml(name)).ok());
    auto again = hv.defineAndStart(testDomainXml(name));
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.error().message.find(name), std::string::npos) << again.error().message;
    EXPECT_EQ(hv.lookup(name)->state, DomainState::Running); // nothing else changed
    EXPECT_TRUE(hv.destroy(name).ok());
    EXPECT_TRUE(hv.undefine(name).ok());
}

TEST_F(AdapterTest, RejectedXmlNamesTheDomainAndQuotesLibvirt) {
    auto r =
        hv.defineAndStart("<domain type='no-such-type'><name>pcloud-bad</name><memory>1024</memory>"
                          "<os><type>hvm</type></os></domain>");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("pcloud-bad"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("no-such-type"), std::string::npos) << r.error().message;

    auto broken = hv.createTransient("<domain type='test'><name>half");
    ASSERT_FALSE(broken.ok());
    EXPECT_NE(broken.error().message.find("libvirt"), std::string::npos);

    // The connection is still usable afterwards.
    EXPECT_EQ(hv.lookup("test")->state, DomainState::Running);
    EXPECT_EQ(hv.lookup("pcloud-bad")->state, DomainState::Missing);
}

TEST_F(AdapterTest, ReconnectsAfterConnectionLossAndReportsDownUp) {
    hv.simulateConnectionLoss();
    ASSERT_TRUE(
        listener.infra.waitFor([](const std::string& s) { return s.rfind("down", 0) == 0; }, 5s));
    ASSERT_TRUE(listener.infra.waitFor([](const std::string& s) { return s == "up"; }, 10s));
    EXPECT_TRUE(hv.connected());
    // Events are registered again on the new connection.
    const std::string name = "pcloud-adapter-after-reconnect";
    ASSERT_TRUE(hv.createTransient(testDomainXml(name)).ok());
    EXPECT_TRUE(listener.events.waitFor(eventIs(name, DomainEventKind::Started), 5s).has_value());
}

TEST(QemuPidFile, OnlyForLocalQemuSystem) {
    EXPECT_EQ(LibvirtHypervisor::qemuPidFile("qemu:///system", "web1"),
              "/run/libvirt/qemu/web1.pid");
    EXPECT_EQ(LibvirtHypervisor::qemuPidFile("test:///default", "web1"), "");
    EXPECT_EQ(LibvirtHypervisor::qemuPidFile("qemu+ssh://h/system", "web1"), "");
}
