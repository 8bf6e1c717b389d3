// The dped reactor with fakes of the hypervisor, the bus and the host watchers, and a
// ManualClock: observation mapping, actions executed, status JSON, commands, persistence.
#include "dped/pause_detector.h"
#include "dped/reactor.h"
#include "fakes.h"

#include "common/fs.h"
#include "policy/policy_json.h"
#include "proto/agent_messages.h"
#include "store/store.h"
#include "virt/guest_xml.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unistd.h>

using namespace pcloud;
using nlohmann::json;
using namespace pcloud::dped::testfakes;

namespace {

class FakeReferee : public dped::RefereeSink {
public:
    std::vector<std::vector<referee::Member>> applied;
    std::optional<std::vector<referee::ActualMember>> actual; // what current() returns
    int holds = 0; // hold() calls: a fenced dped leaves the balancer alone
    void setDesired(const std::vector<referee::Member>& m) override { applied.push_back(m); }
    std::optional<std::vector<referee::ActualMember>> current() override { return actual; }
    void hold() override { ++holds; }
    // Every membership the balancer was ever asked for, for `member`.
    std::vector<referee::MemberState> history(const std::string& member) const {
        std::vector<referee::MemberState> out;
        for (const auto& set : applied)
            for (const auto& m : set)
                if (m.name == member)
                    out.push_back(m.desired);
        return out;
    }
};

// Holds the libvirt jobs until the test runs them, as dped's job lanes do while libvirt
// works: the reactor goes on handling inputs meanwhile.
class DeferredJobs : public dped::JobRunner {
public:
    struct Job {
        std::string key;
        std::function<void()> work, done;
    };
    std::vector<Job> queue;
    void run(const std::string& key, std::function<void()> job,
             std::function<void()> done) override {
        queue.push_back({key, std::move(job), std::move(done)});
    }
    // Runs the oldest job of `key` and its completion; false when there is none.
    bool runNext(const std::string& key) {
        for (auto it = queue.begin(); it != queue.end(); ++it) {
            if (it->key != key)
                continue;
            Job j = std::move(*it);
            queue.erase(it);
            j.work();
            j.done();
            return true;
        }
        return false;
    }
    void runAll() {
        while (!queue.empty())
            runNext(queue.front().key);
    }
};

model::Model makeModel() {
    model::Model m;
    model::Deployable d;
    d.name = "web";
    d.assemblies = {"node01", "node02"};
    d.heartbeat_timeout = 3'000;
    d.backoff.base = 0;
    d.referee.driver = "log";
    m.deployables["web"] = d;
    for (std::string n : {"node01", "node02"}) {
        model::Assembly a;
        a.name = n;
        a.uuid = "";
        a.address = n == "node01" ? "127.0.0.1:18001" : "127.0.0.1:18002";
        a.domain_xml = "<domain type='qemu'><name>" + n + "-dom</name><devices/></domain>";
        model::Resource r;
        r.name = "httpd";
        r.klass = model::ResourceClass::Process;
        r.unit = "/bin/busybox httpd -f -p 80";
        a.resources.push_back(r);
        m.assemblies[n] = a;
    }
    return m;
}

struct Fixture : ::testing::Test {
    std::string dir;
    ManualClock clock{1'700'000'000'000};
    FakeHv hv;
    FakeBus bus;
    FakeWatch watch;
    FakeReferee ref;
    policy::ZeroJitter jitter;
    DeferredJobs deferred;
    bool defer = false;      // set before make(): libvirt jobs wait in `deferred`
    std::uint64_t epoch = 0; // set before make(): the epoch dped acts under (--epoch)
    std::unique_ptr<dped::Reactor> r;

    void SetUp() override {
        dir = "/tmp/dped-test-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    hostconfig::HostConfig host; // what the domain XML may ask of the host (safe default)
    void make(model::Model m = makeModel()) {
        dped::ReactorConfig rc{"web", dir, {}, host};
        rc.epoch = epoch;
        r = std::make_unique<dped::Reactor>(rc, m, clock, hv, bus, watch, &ref, jitter,
                                            defer ? &deferred : nullptr);
    }
    void report(const std::string& a, const std::string& body) {
        bus.subs.at("pcloud.reports." + a)(bus::Message{"pcloud.reports." + a, body});
        r->step();
    }
    // Both assemblies up: a first heartbeat and their service active, 100 ms after start.
    void startBothHealthy() {
        make();
        ASSERT_TRUE(r->start().ok());
        clock.advance(100);
        heartbeat("node01", 1);
        heartbeat("node02", 1);
        service("node01", "active");
        service("node02", "active");
    }
    void heartbeat(const std::string& a, std::uint64_t seq) {
        proto::Heartbeat h;
        h.seq = seq;
        report(a, proto::encodeHeartbeat(h));
    }
    void service(const std::string& a, const std::string& state) {
        proto::UnitState u;
        u.unit = "httpd";
        u.active_state = state;
        report(a, proto::encodeService(u));
    }
    bool hasEvent(const std::string& assembly, const std::string& state) {
        for (const auto& e : bus.events())
            if (e.value("assembly", "") == assembly && e.value("state", "") == state)
                return true;
        return false;
    }
};

TEST_F(Fixture, StartsMissingDomainsWithTheAgentChannelInjected) {
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"start node01-dom", "start node02-dom"}));
    EXPECT_NE(hv.last_xml.find("org.pcloud.agent.0"), std::string::npos);
    EXPECT_NE(hv.last_xml.find(dir + "/channels/node02.sock"), std::string::npos);
    EXPECT_EQ(watch.pids.size(), 2u);
    EXPECT_EQ(watch.channels["node01"], dir + "/channels/node01.sock");
    EXPECT_TRUE(hasEvent("", "dped-started"));
    EXPECT_TRUE(hasEvent("node01", "starting"));
    EXPECT_TRUE(std::filesystem::exists(dped::escalationPath(dir, "web")));
}

TEST_F(Fixture, ChannelKeysAreTheNameAndTheUuid) {
    auto m = makeModel();
    m.assemblies["node01"].uuid = "6f1c0d52-0000-4000-8000-000000000001";
    make(m);
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(watch.channel_keys["node01"],
              (std::vector<std::string>{"node01", "6f1c0d52-0000-4000-8000-000000000001"}));
    EXPECT_EQ(watch.channel_keys["node02"], std::vector<std::string>{"node02"});
}

TEST_F(Fixture, BusDownAndUpSetBusOk) {
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_TRUE(r->observed().bus_ok);
    r->onBusDown();
    EXPECT_FALSE(r->observed().bus_ok);
    r->onBusUp();
    EXPECT_TRUE(r->observed().bus_ok);
}

TEST_F(Fixture, AdoptsRunningDomainNeverStartsASecondInstance) {
    hv.domains["node01-dom"] = virt::DomainState::Running;
    hv.domains["node02-dom"] = virt::DomainState::Running;
    hv.pids["node01-dom"] = 10;
    hv.pids["node02-dom"] = 11;
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_TRUE(hv.calls.empty());
    EXPECT_EQ(watch.pids["node01"], 10);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    EXPECT_TRUE(hasEvent("node01", "running"));
    EXPECT_TRUE(hv.calls.empty());
}

TEST_F(Fixture, HelloSendsWatchWithProcessCommandsAndServiceStartFollows) {
    make();
    ASSERT_TRUE(r->start().ok());
    proto::Hello h;
    h.assembly = "node01";
    h.backend = "process";
    proto::UnitState u;
    u.unit = "httpd";
    u.active_state = "inactive";
    h.units.push_back(u);
    report("node01", proto::encodeHello(h));
    auto cmds = bus.to("pcloud.agent.node01");
    ASSERT_FALSE(cmds.empty());
    EXPECT_EQ(cmds[0]["type"], "watch");
    EXPECT_EQ(cmds[0]["commands"]["httpd"], "/bin/busybox httpd -f -p 80");
    EXPECT_EQ(cmds[0]["heartbeat_ms"], 1000); // the deployable's heartbeat_interval
    clock.advance(100);
    heartbeat("node01", 1);
    // Domain up with a fresh heartbeat, service inactive -> start it through the agent.
    cmds = bus.to("pcloud.agent.node01");
    bool started = false;
    for (const auto& c : cmds)
        started = started || (c["type"] == "start" && c["unit"] == "httpd");
    EXPECT_TRUE(started);
    service("node01", "active");
    auto st = r->statusJson();
    EXPECT_EQ(st["assemblies"][0]["services"][0]["state"], "active");
    EXPECT_EQ(st["assemblies"][0]["agent"], "connected");
}

// A hello on pcloud.reports.node01 that names another assembly (a forgery: authz pins an
// agent to its own report address, so only the address is authenticated) is dropped: no
// "agent connected", no watch sent, no units taken from it. One naming node01 by its uuid,
// in any case, is node01's own.
TEST_F(Fixture, BusHelloNamingAnotherAssemblyIsDropped) {
    auto m = makeModel();
    m.assemblies["node01"].uuid = "6f1c0d52-0000-4000-8000-000000000001";
    make(m);
    ASSERT_TRUE(r->start().ok());
    proto::Hello h;
    h.assembly = "node02";
    h.backend = "process";
    proto::UnitState u;
    u.unit = "httpd";
    u.active_state = "failed";
    h.units.push_back(u);
    report("node01", proto::encodeHello(h));
    EXPECT_TRUE(bus.to("pcloud.agent.node01").empty());
    EXPECT_TRUE(bus.to("pcloud.agent.node02").empty());
    auto st = r->statusJson();
    for (const auto& a : st["assemblies"])
        EXPECT_NE(a["agent"], "connected") << a.dump();
    h.assembly = "6F1C0D52-0000-4000-8000-000000000001";
    report("node01", proto::encodeHello(h));
    auto cmds = bus.to("pcloud.agent.node01");
    ASSERT_FALSE(cmds.empty());
    EXPECT_EQ(cmds[0]["type"], "watch");
}

TEST_F(Fixture, ServiceFailureRestartsInPlaceWithCause) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    service("node01", "active");
    clock.advance(100);
    heartbeat("node01", 2);
    ASSERT_TRUE(hasEvent("node01", "running"));
    bus.sent.clear();
    clock.advance(100);
    service("node01", "failed");
    bool restart = false;
    for (const auto& c : bus.to("pcloud.agent.node01"))
        restart = restart || (c["type"] == "restart" && c["unit"] == "httpd");
    EXPECT_TRUE(restart);
    bool failedEvent = false;
    for (const auto& e : bus.events())
        if (e.value("service", "") == "httpd" && !e.value("cause_id", "").empty())
            failedEvent = true;
    EXPECT_TRUE(failedEvent);
    EXPECT_TRUE(hv.calls.size() == 2); // no domain restart
}

TEST_F(Fixture, PidExitDestroysAndStartsTheDomainAgain) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    clock.advance(100);
    r->onPidExit("node01", 0);
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
    EXPECT_EQ(watch.pids["node01"], 1002);
    auto st = r->statusJson();
    EXPECT_EQ(st["assemblies"][0]["failures"]["used"], 1);
}

// One qemu death reaches dped three times (channel EOF, pidfd, libvirt's late STOPPED event),
// and the pidfd exit of the old qemu can be delivered again after the restart: it is one
// failure. The EOF must not ask libvirt (libvirtd holds a dying domain for seconds).
TEST_F(Fixture, OneCrashSeenByEverySignalCountsOnce) {
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    ASSERT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    pid_t oldPid = watch.pids.at("node01");
    hv.calls.clear();
    clock.advance(100);
    r->onChannelEvent("node01", false, "peer closed");
    r->step();
    EXPECT_TRUE(hv.calls.empty()); // a suspicion: drained, nothing destroyed yet
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Drain);
    r->onPidExit("node01", 0, oldPid);
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
    r->onDomainEvent(
        virt::DomainEvent{.domain = "node01-dom", .kind = virt::DomainEventKind::Stopped});
    r->onPidExit("node01", 0, oldPid);                 // stale: the previous qemu
    r->onChannelEvent("node01", false, "peer closed"); // the old socket's EOF, late
    r->step();
    clock.advance(100);
    heartbeat("node01", 2);
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 1);
    int failed = 0;
    for (const auto& e : bus.events())
        if (e.value("assembly", "") == "node01" && e.value("state", "") == "failed")
            ++failed;
    EXPECT_EQ(failed, 1);
    EXPECT_EQ(hv.calls.size(), 2u);
}

// libvirt calls run off the reactor thread. While node01's destroy+start waits on libvirt,
// node02's service failure is handled at once; node01's domain reads unknown, so neither the
// old agent's last heartbeat nor libvirt's STOPPED event for the destroy counts as anything.
TEST_F(Fixture, DomainRestartInFlightHoldsBackNothingAndIsNotMisread) {
    defer = true;
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_TRUE(hv.calls.empty()); // queued, not run on the reactor thread
    EXPECT_EQ(r->statusJson()["assemblies"][0]["libvirt_jobs"], json::array({"start"}));
    deferred.runAll();
    r->step();
    EXPECT_EQ(hv.calls.size(), 2u);
    EXPECT_FALSE(r->statusJson()["assemblies"][0].contains("libvirt_jobs"));
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    service("node01", "active");
    service("node02", "active");
    ASSERT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    hv.calls.clear();

    clock.advance(100);
    r->onPidExit("node01", 0, watch.pids.at("node01"));
    r->step();
    EXPECT_TRUE(hv.calls.empty());
    EXPECT_EQ(r->statusJson()["assemblies"][0]["libvirt_jobs"], json::array({"destroy", "start"}));
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Out);

    // node02 is not held back by node01's restart.
    bus.sent.clear();
    clock.advance(100);
    service("node02", "failed");
    bool restart = false;
    for (const auto& c : bus.to("pcloud.agent.node02"))
        restart = restart || (c["type"] == "restart" && c["unit"] == "httpd");
    EXPECT_TRUE(restart);

    // Noise about node01 while its jobs wait.
    heartbeat("node01", 2); // the dying agent's last beat
    service("node01", "active");
    r->onDomainEvent(
        virt::DomainEvent{.domain = "node01-dom", .kind = virt::DomainEventKind::Stopped});
    r->step();
    EXPECT_EQ(r->statusJson()["assemblies"][0]["domain"], "unknown");
    EXPECT_EQ(r->statusJson()["assemblies"][0]["agent"], "disconnected");

    ASSERT_TRUE(deferred.runNext("node01")); // the destroy
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom"}));
    EXPECT_EQ(r->statusJson()["assemblies"][0]["domain"], "unknown"); // start still queued
    ASSERT_TRUE(deferred.runNext("node01"));                          // the start
    r->step();
    EXPECT_EQ(r->statusJson()["assemblies"][0]["domain"], "running");
    EXPECT_EQ(watch.pids.at("node01"), 1002);
    EXPECT_NE(ref.applied.back()[0].desired, referee::MemberState::Ready); // no agent yet

    clock.advance(100);
    heartbeat("node01", 1); // the new agent
    service("node01", "active");
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 1);
    int failed = 0;
    for (const auto& e : bus.events())
        if (e.value("assembly", "") == "node01" && e.value("service", "").empty() &&
            e.value("state", "") == "failed")
            ++failed;
    EXPECT_EQ(failed, 0); // cleared by sent.clear(); nothing new while in flight
    EXPECT_EQ(hv.calls.size(), 2u);
}

// A planned stop is finished only when libvirt has really destroyed every domain.
TEST_F(Fixture, PlannedStopWaitsForTheDestroyJobs) {
    defer = true;
    make();
    ASSERT_TRUE(r->start().ok());
    deferred.runAll();
    r->step();
    ASSERT_EQ(json::parse(r->onCommand(R"({"command":"stop"})"))["ok"], true);
    r->step();
    EXPECT_FALSE(r->finished());
    EXPECT_EQ(deferred.queue.size(), 2u);
    deferred.runNext("node01");
    r->step();
    EXPECT_FALSE(r->finished());
    deferred.runNext("node02");
    r->step();
    EXPECT_TRUE(r->finished());
    EXPECT_TRUE(hasEvent("", "stopped"));
}

TEST_F(Fixture, HeartbeatTimeoutIsAFailureOnlyAfterTheTimeout) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    ASSERT_TRUE(r->nextWake());
    clock.advance(2'000); // one missed beat is no failure
    heartbeat("node02", 2);
    EXPECT_TRUE(hv.calls.empty());
    clock.set(*r->nextWake());
    r->step();
    clock.advance(1'100);
    heartbeat("node02", 3);
    // A hung guest is destroyed, then started again.
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
}

TEST_F(Fixture, RejectedDomainXmlIsAnEventAndTheOtherAssemblyStarts) {
    hv.reject = "XML error: bad thing";
    make();
    ASSERT_TRUE(r->start().ok());
    bool errorEvent = false;
    for (const auto& e : bus.events())
        if (e["state"] == "error" &&
            e["reason"].get<std::string>().find("XML error: bad thing") != std::string::npos)
            errorEvent = true;
    EXPECT_TRUE(errorEvent);
    EXPECT_EQ(hv.calls.size(), 2u); // both tried; neither stopped the other
}

// libvirt refuses a restart's start (pcloud-cts: the new qemu died at once, "domain is no
// longer running"): the attempt fails at once and is counted, and the next start follows
// the backoff (none in this model), instead of waiting for domain_start_deadline (2 min).
TEST_F(Fixture, ARefusedStartFailsAtOnceAndIsRetriedWithoutWaitingForTheDeadline) {
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    hv.calls.clear();
    hv.reject = "operation failed: domain is no longer running";
    clock.advance(100);
    r->onPidExit("node01", 0);
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
    hv.reject.clear();
    r->step(); // the refusal: a failure now, and the next attempt at once (backoff 0)
    bool refused = false;
    for (const auto& e : bus.events())
        refused = refused || (e["state"] == "failed" &&
                              e["reason"] == "restart failed: libvirt refused to start the domain: "
                                             "operation failed: domain is no longer running");
    EXPECT_TRUE(refused);
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom",
                                                  "destroy node01-dom", "start node01-dom"}));
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 2);
    // That attempt ran: the old refusal fails nothing more, and the agent's heartbeat
    // brings node01 up again.
    r->step();
    clock.advance(500);
    heartbeat("node01", 2);
    EXPECT_EQ(hv.calls.size(), 4u);
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 2);
    EXPECT_EQ(r->statusJson()["assemblies"][0]["phase"], "up");
}

// A store file edited by hand after cped accepted it: dped checks the domain XML against
// the host configuration again and never hands libvirt what the host does not allow.
TEST_F(Fixture, DomainXmlTheHostDoesNotAllowIsNeverDefined) {
    auto m = makeModel();
    m.assemblies["node02"].domain_xml =
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>node02-dom</name><qemu:commandline><qemu:arg value='-netdev'/>"
        "<qemu:arg value='user,id=n0'/></qemu:commandline></domain>";
    make(m);
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"start node01-dom"}));
    bool errorEvent = false;
    for (const auto& e : bus.events())
        if (e["assembly"] == "node02" && e["state"] == "error" &&
            e["reason"].get<std::string>().find("<qemu:commandline>") != std::string::npos &&
            e["reason"].get<std::string>().find("qemu_commandline = netdev-user") !=
                std::string::npos)
            errorEvent = true;
    EXPECT_TRUE(errorEvent);
}

TEST_F(Fixture, DomainXmlTheHostAllowsExplicitlyIsDefined) {
    auto m = makeModel();
    m.assemblies["node02"].domain_xml =
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>node02-dom</name><qemu:commandline><qemu:arg value='-netdev'/>"
        "<qemu:arg value='user,id=n0'/></qemu:commandline></domain>";
    host.qemu_commandline = hostconfig::QemuCommandline::NetdevUser;
    make(m);
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"start node01-dom", "start node02-dom"}));
}

// Pacemaker Cloud files (and assembly_create --image) give an image and no domain XML: the
// XML is generated when the domain is defined, and a missing image is an error event naming
// the host and the path; nothing is defined for it.
TEST_F(Fixture, AssemblyFromAnImageIsDefinedFromGeneratedXml) {
    const std::string images = dir + "/images";
    std::filesystem::create_directories(images);
    { std::ofstream(images + "/node01.qcow2") << "not really qcow2"; }
    host.image_dirs = {images};
    auto m = makeModel();
    for (const char* n : {"node01", "node02"}) {
        m.assemblies[n].domain_xml.clear();
        m.assemblies[n].image = images + "/" + n + ".qcow2";
        m.assemblies[n].memory_mib = 256;
    }
    make(m);
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"start node01"}));
    EXPECT_NE(hv.last_xml.find("<source file=\"" + images + "/node01.qcow2\""), std::string::npos)
        << hv.last_xml;
    EXPECT_NE(hv.last_xml.find("<memory unit=\"MiB\">256</memory>"), std::string::npos);
    EXPECT_NE(hv.last_xml.find("org.pcloud.agent.0"), std::string::npos);
    bool missing = false;
    for (const auto& e : bus.events())
        if (e["assembly"] == "node02" && e["state"] == "error") {
            const std::string reason = e["reason"];
            missing = reason.find("image " + images + "/node02.qcow2 is missing on host ") !=
                      std::string::npos;
            EXPECT_TRUE(missing) << reason;
        }
    EXPECT_TRUE(missing);
}

TEST_F(Fixture, EscalationStateSurvivesARestart) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    clock.advance(100);
    r->onPidExit("node01", 0);
    r->step();
    auto before = r->state();
    EXPECT_EQ(before.assemblies.at("node01").recovery.failures.size(), 1u);
    r.reset();
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(r->state().assemblies.at("node01").recovery.failures.size(), 1u);
}

TEST_F(Fixture, CorruptEscalationFileIsAnErrorNamingIt) {
    ASSERT_TRUE(fs::writeAtomic(dped::escalationPath(dir, "web"), "{not json").ok());
    make();
    auto st = r->start();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("escalation-web.json"), std::string::npos);
}

TEST_F(Fixture, StatusCommandAndBadCommands) {
    make();
    ASSERT_TRUE(r->start().ok());
    auto rep = json::parse(r->onCommand(R"({"v":1,"type":"command","id":"7","command":"status"})"));
    EXPECT_EQ(rep["ok"], true);
    EXPECT_EQ(rep["id"], "7");
    EXPECT_EQ(rep["result"]["deployable"], "web");
    EXPECT_EQ(rep["result"]["assemblies"].size(), 2u);
    auto a = rep["result"]["assemblies"][0];
    for (const char* k : {"name", "domain", "agent", "heartbeat_age_ms", "services", "failures",
                          "backoff_remaining_ms", "referee"})
        EXPECT_TRUE(a.contains(k)) << k;
    EXPECT_EQ(a["failures"]["budget"], 3);
    EXPECT_EQ(json::parse(r->onCommand("nope"))["error"]["code"], "malformed");
    EXPECT_EQ(json::parse(r->onCommand(R"({"command":"frob"})"))["error"]["code"],
              "unknown-command");
}

TEST_F(Fixture, PlannedStopDestroysDomainsWithoutCountingFailures) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    auto rep = json::parse(r->onCommand(R"({"command":"stop"})"));
    EXPECT_EQ(rep["ok"], true);
    r->step();
    EXPECT_TRUE(r->finished());
    for (const auto& [n, at] : r->state().assemblies)
        EXPECT_TRUE(at.recovery.failures.empty());
    EXPECT_TRUE(hasEvent("", "stopped"));
}

// A planned stop asks the guests to shut down; a cooperative guest is never destroyed.
TEST_F(Fixture, PlannedStopShutsDownGracefully) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    ASSERT_EQ(json::parse(r->onCommand(R"({"command":"stop"})"))["ok"], true);
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"shutdown node01-dom", "shutdown node02-dom"}));
    r->step();
    EXPECT_TRUE(r->finished());
    bool graceful = false;
    for (const auto& e : bus.events())
        graceful = graceful || (e.value("assembly", "") == "node01" && e["state"] == "stopped" &&
                                e["reason"] == "shut down gracefully");
    EXPECT_TRUE(graceful);
}

// A guest that ignores the shutdown is destroyed once the deployable's stop_timeout has
// passed, not before.
TEST_F(Fixture, GuestIgnoringShutdownIsDestroyedAfterTheStopTimeout) {
    auto m = makeModel();
    m.deployables["web"].stop_timeout = 10'000;
    m.deployables["web"].assemblies = {"node01"};
    hv.ignore_shutdown = true;
    make(m);
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    hv.calls.clear();
    ASSERT_EQ(json::parse(r->onCommand(R"({"command":"stop"})"))["ok"], true);
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"shutdown node01-dom"}));
    const Millis stopAt = clock.nowMs();
    clock.set(stopAt + 10'000); // at the deadline: still waiting
    heartbeat("node01", 2);
    EXPECT_EQ(hv.calls.size(), 1u);
    EXPECT_FALSE(r->finished());
    ASSERT_TRUE(r->nextWake());
    EXPECT_EQ(*r->nextWake(), stopAt + 10'001);
    clock.set(*r->nextWake());
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"shutdown node01-dom", "destroy node01-dom"}));
    r->step();
    EXPECT_TRUE(r->finished());
    std::vector<std::string> reasons;
    for (const auto& e : bus.events())
        if (e.value("assembly", "") == "node01" &&
            (e["state"] == "stopping" || e["state"] == "stopped"))
            reasons.push_back(e["reason"]);
    EXPECT_EQ(reasons,
              (std::vector<std::string>{"planned stop: graceful shutdown, destroy after 10s",
                                        "graceful shutdown did not complete within 10s; destroying",
                                        "destroyed (not shut down gracefully)"}));
}

TEST_F(Fixture, RefereeGetsMembersFromMembership) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    service("node01", "active");
    clock.advance(10);
    heartbeat("node01", 2);
    ASSERT_FALSE(ref.applied.empty());
    auto last = ref.applied.back();
    ASSERT_EQ(last.size(), 2u);
    EXPECT_EQ(last[0].name, "node01");
    EXPECT_EQ(last[0].desired, referee::MemberState::Ready);
    EXPECT_EQ(last[1].desired, referee::MemberState::Out);
}

// The state a dped leaves behind when both members were healthy and in the balancer.
void persistHealthyState(const std::string& dir, Millis at) {
    policy::EscalationState st;
    for (std::string n : {"node01", "node02"}) {
        auto& a = st.assemblies[n];
        a.phase = policy::Phase::Up;
        a.phase_since = at;
        a.membership = policy::Membership::In;
        a.reported = "running";
        a.services["httpd"].phase = policy::Phase::Up;
        a.services["httpd"].reported = "active";
    }
    ASSERT_TRUE(fs::writeAtomic(dped::escalationPath(dir, "web"), policy::toJson(st).dump()).ok());
}

// A dped restarted (kill -9, or adopted after a cped restart) with both guests running: the
// balancer must not see a single change before the agents are heard, and none after.
TEST_F(Fixture, RestartedDpedChangesNothingTheBalancerServes) {
    persistHealthyState(dir, clock.nowMs() - 60'000);
    hv.domains["node01-dom"] = virt::DomainState::Running;
    hv.domains["node02-dom"] = virt::DomainState::Running;
    hv.pids["node01-dom"] = 10;
    hv.pids["node02-dom"] = 11;
    ref.actual = std::vector<referee::ActualMember>{
        {"node01", "127.0.0.1:18001", referee::MemberState::Ready, "up"},
        {"node02", "127.0.0.1:18002", referee::MemberState::Ready, "up"}};
    make();
    ASSERT_TRUE(r->start().ok());
    // Agents over TCP send no new hello after a dped restart: dped asks with a watch.
    EXPECT_EQ(bus.to("pcloud.agent.node01").at(0)["type"], "watch");
    EXPECT_EQ(bus.to("pcloud.agent.node02").at(0)["type"], "watch");
    clock.advance(2'500); // almost the heartbeat timeout (3 s) with nothing heard
    r->step();
    // node01's agent reconnects over the channel: hello.
    proto::Hello h;
    h.assembly = "node01";
    h.backend = "process";
    proto::UnitState u;
    u.unit = "httpd";
    u.active_state = "active";
    h.units.push_back(u);
    report("node01", proto::encodeHello(h));
    heartbeat("node01", 1);
    // node02's agent answers the watch with its units.
    std::string watchId = bus.to("pcloud.agent.node02").at(0)["id"];
    report("node02",
           R"({"v":1,"type":"reply","id":")" + watchId +
               R"(","ok":true,"result":{"units":[{"unit":"httpd","active_state":"active"}]}})");
    heartbeat("node02", 1);
    clock.advance(2'000);
    heartbeat("node01", 2);
    heartbeat("node02", 2);
    for (std::string n : {"node01", "node02"})
        for (auto m : ref.history(n))
            EXPECT_EQ(m, referee::MemberState::Ready) << n;
    EXPECT_FALSE(ref.applied.empty());
    EXPECT_TRUE(hv.calls.empty());
    EXPECT_EQ(r->statusJson()["assemblies"][1]["services"][0]["state"], "active");
}

// The same restart, but node02's agent never answers: after 2 x heartbeat timeout it is a
// hung guest. Before that it stays in the balancer.
TEST_F(Fixture, RestartedDpedJudgesASilentAgentAfterTheGrace) {
    persistHealthyState(dir, clock.nowMs() - 60'000);
    hv.domains["node01-dom"] = virt::DomainState::Running;
    hv.domains["node02-dom"] = virt::DomainState::Running;
    hv.pids["node01-dom"] = 10;
    hv.pids["node02-dom"] = 11;
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(5'900);
    heartbeat("node01", 1);
    EXPECT_TRUE(hv.calls.empty());
    for (auto m : ref.history("node02"))
        EXPECT_EQ(m, referee::MemberState::Ready);
    clock.set(*r->nextWake());
    heartbeat("node01", 2);
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node02-dom", "start node02-dom"}));
    EXPECT_EQ(ref.applied.back()[1].desired, referee::MemberState::Out);
}

// A node refused a command of this dped as stale: a newer leader (epoch 5) has acted on its
// hosts. From then on this dped (epoch 4) neither restarts a guest nor counts a failure nor
// touches the balancer, whatever it sees; when its cped raises its epoch past the fence, it
// acts again on what it sees then. A refusal still in flight from before the raise (naming 5)
// does not fence it again.
TEST_F(Fixture, AFencedDpedActsOnNothingUntilItsEpochCatchesUp) {
    epoch = 4;
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    ASSERT_FALSE(ref.applied.empty());
    const size_t applied = ref.applied.size();
    hv.calls.clear();

    r->onReceiverEpoch(5);
    r->step();
    EXPECT_TRUE(hasEvent("", "fenced"));
    EXPECT_EQ(ref.holds, 1);
    EXPECT_EQ(r->statusJson()["fenced_by"], 5);

    clock.advance(100);
    r->onPidExit("node01", 0);
    r->step();
    clock.advance(20'000); // node02's heartbeat is long overdue too
    r->step();
    EXPECT_TRUE(hv.calls.empty()) << hv.calls.front();
    EXPECT_FALSE(hasEvent("node01", "failed"));
    EXPECT_FALSE(hasEvent("node02", "failed"));
    EXPECT_EQ(ref.applied.size(), applied);
    EXPECT_EQ(ref.holds, 1);
    auto st = r->statusJson();
    EXPECT_EQ(st["assemblies"][0]["failures"]["used"], 0);
    EXPECT_EQ(st["assemblies"][1]["failures"]["used"], 0);

    auto raised = json::parse(r->onCommand(R"({"id":"e1","command":"epoch","args":{"epoch":6}})"));
    ASSERT_EQ(raised.value("ok", false), true) << raised.dump();
    r->step();
    EXPECT_TRUE(hasEvent("", "fence-lifted"));
    EXPECT_FALSE(r->statusJson().contains("fenced_by"));
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
    EXPECT_TRUE(hasEvent("node01", "failed"));
    EXPECT_GT(ref.applied.size(), applied); // the balancer gets the set again
    // node02's silence counts from the lift, not from its last heartbeat.
    EXPECT_FALSE(hasEvent("node02", "failed"));

    r->onReceiverEpoch(5); // a refusal of a command sent under epoch 4, read late
    r->step();
    EXPECT_EQ(ref.holds, 1);
    EXPECT_FALSE(r->statusJson().contains("fenced_by"));
}

// cped stepped down and sends "fence" naming its epoch + 1: the dped stops acting at once, as
// when a node refuses it. A fence at or below its own epoch holds nothing; a bad one is an
// error naming the field, and changes nothing.
TEST_F(Fixture, CpedsFenceOnStepDownStopsTheDpedAndABadOneIsRefused) {
    epoch = 4;
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    hv.calls.clear();

    for (const char* bad :
         {R"({"id":"f0","command":"fence"})", R"({"id":"f1","command":"fence","args":{"epoch":0}})",
          R"({"id":"f2","command":"fence","args":{"epoch":"5"}})",
          R"({"id":"f3","command":"fence","args":{"epoch":-5}})"}) {
        auto reply = json::parse(r->onCommand(bad));
        EXPECT_EQ(reply.value("ok", true), false) << bad;
        EXPECT_EQ(reply["error"]["code"], "bad-field") << bad;
        EXPECT_NE(reply["error"]["message"].get<std::string>().find(
                      "fence needs args.epoch, a whole number from 1 to"),
                  std::string::npos)
            << reply.dump();
    }
    auto late = json::parse(r->onCommand(R"({"id":"f4","command":"fence","args":{"epoch":4}})"));
    ASSERT_EQ(late.value("ok", false), true) << late.dump();
    EXPECT_EQ(late["result"]["fenced_by"], 0);
    EXPECT_FALSE(hasEvent("", "fenced"));

    auto fenced = json::parse(r->onCommand(R"({"id":"f5","command":"fence","args":{"epoch":5}})"));
    ASSERT_EQ(fenced.value("ok", false), true) << fenced.dump();
    EXPECT_EQ(fenced["result"]["fenced_by"], 5);
    EXPECT_EQ(fenced["result"]["epoch"], 4);
    EXPECT_TRUE(hasEvent("", "fenced"));
    clock.advance(100);
    r->onPidExit("node01", 0);
    r->step();
    EXPECT_TRUE(hv.calls.empty()) << hv.calls.front();

    // The next term's raise lifts it at once (no further input needed).
    auto raised = json::parse(r->onCommand(R"({"id":"e1","command":"epoch","args":{"epoch":7}})"));
    ASSERT_EQ(raised.value("ok", false), true) << raised.dump();
    EXPECT_TRUE(hasEvent("", "fence-lifted"));
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
}

// dped was stopped (SIGSTOP) for longer than the heartbeat timeout: on resume the runtime
// reports the pause before the queued inputs, and nothing is restarted.
TEST_F(Fixture, OwnPauseRestartsNoGuest) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    clock.advance(12'000);
    r->onObserverPaused(12'000);
    r->step();
    EXPECT_TRUE(hv.calls.empty());
    EXPECT_TRUE(hasEvent("", "observer-paused"));
    heartbeat("node01", 2); // read from the socket after the resume
    clock.advance(3'001);
    heartbeat("node01", 3);
    // node02 stayed silent after the resume: that is a real hang, detected one timeout later.
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node02-dom", "start node02-dom"}));
}

// The wall clock jumps 44 s while monotonic time does not (what a pcloud-cts run saw when
// the machine it ran on, itself a VM, was paused): every heartbeat age grows by 44 s at once.
// The runtime's PauseDetector reports the step like a pause, and nothing is restarted.
TEST_F(Fixture, AWallClockStepRestartsNoGuest) {
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    hv.calls.clear();
    dped::PauseDetector pause(750);
    ASSERT_FALSE(pause.check(clock.monotonicMs(), clock.nowMs()));
    clock.set(clock.nowMs() + 44'000);
    auto gap = pause.check(clock.monotonicMs(), clock.nowMs());
    ASSERT_TRUE(gap && gap->clock_step);
    r->onObserverPaused(gap->ms);
    r->step();
    EXPECT_TRUE(hv.calls.empty());
    EXPECT_TRUE(hasEvent("", "observer-paused"));
    heartbeat("node01", 2);
    clock.advance(3'001);
    heartbeat("node01", 3);
    // node02 stayed silent after the step: a real hang, detected one timeout later.
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node02-dom", "start node02-dom"}));
}

// The hub is gone: agents that report through it fall silent, which is not a guest failure,
// but a qemu crash (pidfd) during the outage is still recovered at once.
TEST_F(Fixture, BusOutageCountsNothingButACrashIsStillRecovered) {
    make();
    ASSERT_TRUE(r->start().ok());
    clock.advance(100);
    heartbeat("node01", 1);
    heartbeat("node02", 1);
    hv.calls.clear();
    r->onBusDown();
    r->step();
    EXPECT_TRUE(hasEvent("", "bus-down"));
    clock.advance(10'000);
    r->step();
    EXPECT_TRUE(hv.calls.empty());
    r->onPidExit("node01", 0, watch.pids.at("node01"));
    r->step();
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
    EXPECT_EQ(r->statusJson()["assemblies"][1]["failures"]["used"], 0);
    r->onBusUp();
    r->step();
    EXPECT_TRUE(hasEvent("", "bus-up"));
    heartbeat("node02", 2);
    EXPECT_EQ(r->statusJson()["assemblies"][1]["failures"]["used"], 0);
}

// A SIGSTOPped qemu: nothing inside runs. Once a heartbeat is overdue dped looks at the qemu
// process, drains the member at once and fails it only at the heartbeat timeout; a qemu that
// runs again before that is put back, nothing counted. Healthy guests are never checked.
TEST_F(Fixture, StoppedQemuIsDrainedAtOnceAndFailsOnlyAtTheTimeout) {
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    ASSERT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    hv.calls.clear();
    // Heartbeats every second (the deployable's interval): no process check while on time.
    clock.advance(900);
    heartbeat("node01", 2);
    heartbeat("node02", 2);
    EXPECT_EQ(watch.stop_checks, 0);
    // node01's qemu is stopped; its next heartbeat never comes. The check is due 1.1 s after
    // the last one (an interval plus 10%): dped wakes then.
    watch.stopped.insert(watch.pids.at("node01"));
    ASSERT_TRUE(r->nextWake());
    EXPECT_LE(*r->nextWake(), clock.nowMs() + 1'101);
    clock.set(*r->nextWake());
    heartbeat("node02", 3);
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Drain);
    EXPECT_EQ(ref.applied.back()[1].desired, referee::MemberState::Ready);
    EXPECT_TRUE(hasEvent("node01", "frozen"));
    EXPECT_TRUE(hv.calls.empty());
    // SIGCONT before the timeout: back in, no failure.
    watch.stopped.clear();
    clock.advance(200);
    heartbeat("node01", 3);
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 0);
    // Stopped again, and this time for longer than the 3 s timeout: a hung guest.
    watch.stopped.insert(watch.pids.at("node01"));
    clock.advance(1'600);
    heartbeat("node02", 4);
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Drain);
    clock.advance(1'500);
    heartbeat("node02", 5);
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
}

// A host that keeps a guest's qemu from running (its threads wait on the run queue) silences
// the guest without it being hung: dped measures the wait while the heartbeat is overdue,
// and past the timeout the member is drained and the deadline extended instead of the VM
// restarted; the heartbeat that comes when the host lets it run puts it back in.
TEST_F(Fixture, AGuestStarvedByTheHostIsNotRestarted) {
    ASSERT_NO_FATAL_FAILURE(startBothHealthy());
    const pid_t q1 = watch.pids.at("node01");
    watch.run_queue_wait_ns[q1] = 5'000'000'000; // its past, irrelevant
    hv.calls.clear();
    // node01 stops beating; the first look at the overdue heartbeat is the baseline.
    clock.advance(1'200);
    heartbeat("node02", 2);
    // The host starves it: 2.5 s more of run-queue wait by the 3 s timeout.
    watch.run_queue_wait_ns[q1] += 2'500'000'000;
    clock.advance(1'000);
    heartbeat("node02", 3);
    clock.advance(1'000);
    heartbeat("node02", 4);
    EXPECT_EQ(r->observed().assemblies.at("node01").starved_ms, 2'500);
    EXPECT_TRUE(hv.calls.empty()) << "a starved guest was restarted";
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Drain);
    EXPECT_TRUE(hasEvent("node01", "starved"));
    EXPECT_EQ(r->statusJson()["assemblies"][0]["failures"]["used"], 0);
    // It runs again: its heartbeat arrives, it is back in, nothing counted.
    clock.advance(500);
    heartbeat("node01", 2);
    EXPECT_EQ(ref.applied.back()[0].desired, referee::MemberState::Ready);
    EXPECT_EQ(r->observed().assemblies.at("node01").starved_ms, 0);
    EXPECT_TRUE(hv.calls.empty());

    // The same silence without run-queue wait is a hung guest, restarted at the timeout.
    clock.advance(3'100);
    heartbeat("node02", 5);
    EXPECT_EQ(hv.calls, (std::vector<std::string>{"destroy node01-dom", "start node01-dom"}));
}

TEST_F(Fixture, ReloadPicksUpParkedFlag) {
    auto m = makeModel();
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    make(m);
    ASSERT_TRUE(r->start().ok());
    m.assemblies["node02"].parked = true;
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    auto rep = json::parse(r->onCommand(R"({"command":"reload"})"));
    EXPECT_EQ(rep["ok"], true) << rep.dump();
    EXPECT_TRUE(hasEvent("node02", "parked"));
}

} // namespace

namespace {
bus::Message pingRequest(const std::string& assembly, long timeoutMs = 2000) {
    bus::Message m;
    m.address = "pcloud.dped.web";
    m.replyTo = "reply-addr-1";
    m.correlationId = "cped-9";
    m.body = json{{"v", 1},
                  {"type", "command"},
                  {"id", "cped-9"},
                  {"command", "ping"},
                  {"args", {{"assembly", assembly}, {"timeout_ms", timeoutMs}}}}
                 .dump();
    return m;
}
} // namespace

TEST_F(Fixture, PingIsAnsweredWhenTheAgentRepliesWithMonotonicRtt) {
    make();
    ASSERT_TRUE(r->start().ok());
    EXPECT_FALSE(r->onRequest(pingRequest("node02")).has_value()); // answered later
    r->step();
    EXPECT_TRUE(bus.replies.empty());
    auto cmds = bus.to("pcloud.agent.node02");
    ASSERT_FALSE(cmds.empty());
    auto ping = cmds.back();
    EXPECT_EQ(ping["type"], "ping");
    EXPECT_EQ(ping["deadline"], 2000);
    std::string pingId = ping["id"];
    // The deadline is a wake-up, so a lost reply is answered without any other input.
    ASSERT_TRUE(r->nextWake().has_value());
    EXPECT_LE(*r->nextWake(), clock.nowMs() + 2000);
    clock.advance(7);
    proto::Reply rep;
    rep.id = pingId;
    rep.ok = true;
    report("node02", proto::encodeReply(rep));
    ASSERT_EQ(bus.replies.size(), 1u);
    EXPECT_EQ(bus.replies[0].reply_to, "reply-addr-1");
    EXPECT_EQ(bus.replies[0].correlation_id, "cped-9");
    EXPECT_EQ(bus.replies[0].body["id"], "cped-9");
    EXPECT_EQ(bus.replies[0].body["ok"], true);
    EXPECT_EQ(bus.replies[0].body["result"]["rtt_ms"], 7);
    EXPECT_EQ(bus.replies[0].body["result"]["assembly"], "node02");
    // A duplicate agent reply answers nothing twice.
    report("node02", proto::encodeReply(rep));
    EXPECT_EQ(bus.replies.size(), 1u);
}

TEST_F(Fixture, PingTimesOutAndUnknownAssemblyIsAnError) {
    make();
    ASSERT_TRUE(r->start().ok());
    auto unknown = r->onRequest(pingRequest("nodeXX"));
    ASSERT_TRUE(unknown.has_value());
    auto u = json::parse(*unknown);
    EXPECT_EQ(u["ok"], false);
    EXPECT_EQ(u["error"]["code"], "not-found");
    EXPECT_NE(u["error"]["message"].get<std::string>().find("nodeXX"), std::string::npos);
    auto bad = json::parse(*r->onRequest(pingRequest("node01", 0)));
    EXPECT_EQ(bad["error"]["code"], "bad-field");

    EXPECT_FALSE(r->onRequest(pingRequest("node01", 500)).has_value());
    clock.advance(499);
    r->step();
    EXPECT_TRUE(bus.replies.empty());
    clock.advance(1);
    r->step();
    ASSERT_EQ(bus.replies.size(), 1u);
    EXPECT_EQ(bus.replies[0].body["ok"], false);
    EXPECT_EQ(bus.replies[0].body["error"]["message"], "no reply within 500 ms");
    // Other commands still answer at once.
    bus::Message st = pingRequest("node01");
    st.body = R"({"v":1,"type":"command","id":"s1","command":"status"})";
    auto now = r->onRequest(st);
    ASSERT_TRUE(now.has_value());
    EXPECT_EQ(json::parse(*now)["ok"], true);
}

TEST_F(Fixture, StatusSaysRefereeNoneWhenNoRefereeIsConfigured) {
    auto m = makeModel();
    make(m);
    ASSERT_TRUE(r->start().ok());
    EXPECT_EQ(
        json::parse(r->onCommand(R"({"command":"status"})"))["result"]["assemblies"][0]["referee"],
        "out"); // a referee is configured, the member is not in yet
    m.deployables["web"].referee.driver = "";
    make(m);
    ASSERT_TRUE(r->start().ok());
    auto st = json::parse(r->onCommand(R"({"command":"status"})"));
    EXPECT_EQ(st["result"]["assemblies"][0]["referee"], "none");
    EXPECT_EQ(st["result"]["assemblies"][1]["referee"], "none");
}
