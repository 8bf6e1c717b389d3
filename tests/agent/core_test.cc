// AgentCore and ProbeTracker with an injected clock and a fake backend: no sockets, no sleeps.
#include "agent/agent_core.h"
#include "agent/probe.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

using namespace pcloud;
using namespace pcloud::agent;

namespace {

class FakeBackend : public UnitBackend {
public:
    const char* name() const override { return "process"; }
    void setWatch(const std::vector<std::string>& units,
                  const std::map<std::string, std::string>&) override {
        units_ = units;
        for (const auto& u : units)
            if (!states_.count(u))
                set(u, "active");
    }
    std::vector<std::string> watched() const override { return units_; }
    std::optional<proto::UnitState> state(const std::string& u) const override {
        auto it = states_.find(u);
        if (it == states_.end())
            return std::nullopt;
        return it->second;
    }
    void runJob(JobKind kind, const std::string& unit, JobCallback done) override {
        jobs.push_back({kind, unit, std::move(done)});
    }
    bool adopted(const std::string& unit) const override { return adopted_units.count(unit); }
    std::set<std::string> adopted_units;
    void prepare(PollSet&, Millis) override {}
    void dispatch(const PollSet&, Millis) override {}

    void set(const std::string& unit, const std::string& active, int exitCode = 0) {
        proto::UnitState s;
        s.unit = unit;
        s.active_state = active;
        s.sub_state = active == "active" ? "running" : "dead";
        s.exit_code = exitCode;
        states_[unit] = s;
        if (listener_)
            listener_->onUnitState(s);
    }

    struct Job {
        JobKind kind;
        std::string unit;
        JobCallback done;
    };
    std::vector<Job> jobs;

private:
    std::vector<std::string> units_;
    std::map<std::string, proto::UnitState> states_;
};

struct CoreFixture : ::testing::Test {
    ManualClock clock;
    AgentConfig cfg;
    FakeBackend backend;
    std::unique_ptr<AgentCore> core;

    void SetUp() override {
        cfg.heartbeat_interval = 1000;
        cfg.max_message_size = 4096;
        Identity id;
        id.assembly = "node01";
        id.boot_id = "boot-1";
        id.seq_base = 5000;
        core = std::make_unique<AgentCore>(cfg, id, backend, nullptr, clock,
                                           [] { return Millis(77); });
        backend.setListener(core.get());
        backend.setWatch({"web", "db"}, {});
    }

    // Runs the timer part of the core at the clock's current time.
    void tick() {
        PollSet ps;
        core->prepare(ps, clock.monotonicMs());
        core->dispatch(ps, clock.monotonicMs());
    }
    std::vector<proto::Report> drain() {
        std::vector<proto::Report> out;
        for (auto& m : core->outbox()) {
            auto r = proto::decodeReport(m.body);
            EXPECT_TRUE(r.ok()) << m.body;
            if (r)
                out.push_back(*r);
        }
        core->outbox().clear();
        return out;
    }
    proto::Reply onlyReply() {
        auto out = drain();
        EXPECT_EQ(out.size(), 1u);
        if (out.size() != 1 || out[0].type != "reply") {
            return {};
        }
        return std::get<proto::Reply>(out[0].body);
    }
};

} // namespace

TEST_F(CoreFixture, NothingIsQueuedWhileDisconnected) {
    backend.set("web", "failed");
    tick();
    EXPECT_TRUE(core->outbox().empty());
}

TEST_F(CoreFixture, HelloCarriesLatestStateOnEveryConnect) {
    backend.set("web", "failed", 137);
    core->onLinkUp();
    tick();
    auto out = drain();
    ASSERT_GE(out.size(), 2u);
    EXPECT_EQ(out[0].type, "hello");
    auto hello = std::get<proto::Hello>(out[0].body);
    ASSERT_EQ(hello.units.size(), 2u);
    EXPECT_EQ(hello.units[0].unit, "web");
    EXPECT_EQ(hello.units[0].active_state, "failed");
    EXPECT_EQ(hello.units[0].exit_code, 137);
    EXPECT_EQ(out[1].type, "heartbeat");
    // Changes while disconnected collapse into the next hello.
    core->onLinkDown();
    backend.set("web", "activating");
    backend.set("web", "active");
    core->onLinkUp();
    out = drain();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(std::get<proto::Hello>(out[0].body).units[0].active_state, "active");
}

TEST_F(CoreFixture, EveryTransitionIsReportedOnceAndRepeatsAreDropped) {
    core->onLinkUp();
    drain();
    backend.set("web", "failed", 137);
    backend.set("web", "failed", 137); // nothing new
    backend.set("web", "activating");
    auto out = drain();
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(std::get<proto::UnitState>(out[0].body).active_state, "failed");
    EXPECT_EQ(std::get<proto::UnitState>(out[1].body).active_state, "activating");
}

TEST_F(CoreFixture, HeartbeatsAreTimedByTheClockWithMonotonicSeq) {
    core->onLinkUp();
    tick();
    drain(); // hello + first heartbeat (seq 5000)
    tick();
    EXPECT_TRUE(drain().empty());
    clock.advance(999);
    tick();
    EXPECT_TRUE(drain().empty());
    clock.advance(1);
    tick();
    auto out = drain();
    ASSERT_EQ(out.size(), 1u);
    auto hb = std::get<proto::Heartbeat>(out[0].body);
    EXPECT_EQ(hb.seq, 5001u);
    EXPECT_EQ(hb.boot_id, "boot-1");
    EXPECT_EQ(hb.uptime, 77);
    // A stall does not produce a burst of catch-up heartbeats.
    clock.advance(10'000);
    tick();
    tick();
    EXPECT_EQ(drain().size(), 1u);
    PollSet ps;
    core->prepare(ps, clock.monotonicMs());
    EXPECT_EQ(ps.wake_at, clock.monotonicMs() + 1000);
}

TEST_F(CoreFixture, JobGetsExactlyOneReplyEvenWhenTheDeadlineWinsTheRace) {
    core->onLinkUp();
    tick(); // hello + first heartbeat; the next one is 1000 ms away
    drain();
    core->onMessage(R"({"v":1,"type":"restart","id":"r1","unit":"web","deadline":500})");
    ASSERT_EQ(backend.jobs.size(), 1u);
    EXPECT_EQ(backend.jobs[0].kind, JobKind::Restart);
    EXPECT_TRUE(drain().empty());
    clock.advance(500);
    tick();
    auto rep = onlyReply();
    EXPECT_EQ(rep.id, "r1");
    EXPECT_FALSE(rep.ok);
    EXPECT_EQ(rep.error->code, "timeout");
    backend.jobs[0].done(JobResult{true, {}, {}, "done"}); // late: no second reply
    EXPECT_TRUE(drain().empty());

    core->onMessage(R"({"v":1,"type":"stop","id":"s1","unit":"db"})");
    backend.jobs[1].done(JobResult{false, "job-failed", "it broke", "failed"});
    rep = onlyReply();
    EXPECT_EQ(rep.id, "s1");
    EXPECT_EQ(rep.error->code, "job-failed");
    EXPECT_EQ(core->outbox().size(), 0u);
    EXPECT_EQ(core->pendingCommands(), 1u); // erased on the next tick
    tick();
    EXPECT_EQ(core->pendingCommands(), 0u);
}

TEST_F(CoreFixture, GarbageGetsErrorRepliesAndRunsNothing) {
    core->onLinkUp();
    drain();
    for (const char* body :
         {"", "garbage", "{\"v\":1}", "{\"v\":1,\"type\":\"reboot\",\"id\":\"g\"}",
          "{\"v\":1,\"type\":\"start\",\"id\":\"g2\",\"unit\":\"nosuch\"}"}) {
        core->onMessage(body);
        auto rep = onlyReply();
        EXPECT_FALSE(rep.ok) << body;
    }
    core->onMessage(std::string(5000, 'x'));
    EXPECT_EQ(onlyReply().error->code, "too-large");
    EXPECT_TRUE(backend.jobs.empty());
}

TEST_F(CoreFixture, StatusPingAndWatch) {
    core->onLinkUp();
    drain();
    core->onMessage(R"({"v":1,"type":"ping","id":"p"})");
    EXPECT_TRUE(onlyReply().ok);
    core->onMessage(R"({"v":1,"type":"status","id":"s","unit":"web"})");
    auto rep = onlyReply();
    ASSERT_TRUE(rep.ok);
    EXPECT_EQ(rep.result["active_state"], "active");
    core->onMessage(R"({"v":1,"type":"watch","id":"w","units":["db","cache"]})");
    auto out = drain();
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out.back().type, "reply");
    EXPECT_EQ(std::get<proto::Reply>(out.back().body).result["units"].size(), 2u);
    EXPECT_EQ(backend.watched(), (std::vector<std::string>{"db", "cache"}));
    core->onMessage(R"({"v":1,"type":"status","id":"s2","unit":"web"})");
    EXPECT_EQ(onlyReply().error->code, "not-found");
}

// The controller sets the period through watch: a shorter one takes effect at once, it
// outlives a reconnect, and a watch without it keeps the current one.
TEST_F(CoreFixture, WatchSetsTheHeartbeatPeriod) {
    core->onLinkUp();
    tick();
    drain(); // hello + first heartbeat; the next is due in 1000 ms
    ASSERT_EQ(core->heartbeatInterval(), 1000);
    clock.advance(100);
    core->onMessage(R"({"v":1,"type":"watch","id":"w","units":["web"],"heartbeat_ms":250})");
    auto rep = onlyReply();
    ASSERT_TRUE(rep.ok);
    EXPECT_EQ(rep.result["heartbeat_ms"], 250);
    EXPECT_EQ(core->heartbeatInterval(), 250);
    auto beatsAfter = [&](Millis ms) {
        clock.advance(ms);
        tick();
        std::size_t n = 0;
        for (const auto& m : drain())
            n += m.type == "heartbeat" ? 1 : 0;
        return n;
    };
    EXPECT_EQ(beatsAfter(249), 0u);
    EXPECT_EQ(beatsAfter(1), 1u); // 250 ms after the watch, not 1000 ms after the last beat
    EXPECT_EQ(beatsAfter(250), 1u);
    core->onLinkDown();
    core->onLinkUp();
    tick();
    drain(); // hello + first heartbeat of the new connection
    EXPECT_EQ(beatsAfter(250), 1u);
    core->onMessage(R"({"v":1,"type":"watch","id":"w2","units":["web"]})");
    EXPECT_EQ(onlyReply().result["heartbeat_ms"], 250);
    core->onMessage(R"({"v":1,"type":"watch","id":"w3","units":["web"],"heartbeat_ms":5})");
    EXPECT_EQ(onlyReply().error->code, "bad-field");
    EXPECT_EQ(core->heartbeatInterval(), 250);
}

TEST_F(CoreFixture, OutboxIsBounded) {
    core->onLinkUp();
    for (int i = 0; i < 5000; ++i)
        backend.set("web", i % 2 ? "active" : "failed", i);
    EXPECT_LE(core->outbox().size(), AgentCore::kOutboxLimit);
    // The newest state is still there to be sent.
    auto out = drain();
    auto last = std::get<proto::UnitState>(out.back().body);
    EXPECT_EQ(last.exit_code, 4999);
}

TEST(ProbeTracker, ReadyOnSuccessNotReadyAfterThresholdFailures) {
    ProbeTracker t(3);
    EXPECT_FALSE(t.ready().has_value());
    EXPECT_TRUE(t.start());
    EXPECT_EQ(t.ready(), false);
    EXPECT_TRUE(t.record(true));
    EXPECT_EQ(t.ready(), true);
    EXPECT_FALSE(t.record(false));
    EXPECT_FALSE(t.record(false));
    EXPECT_EQ(t.ready(), true);
    EXPECT_TRUE(t.record(false));
    EXPECT_EQ(t.ready(), false);
    EXPECT_TRUE(t.record(true));
    EXPECT_TRUE(t.reset());
    EXPECT_FALSE(t.ready().has_value());
}

TEST(ProbeTracker, HttpStatusLine) {
    EXPECT_EQ(parseHttpStatus("HTTP/1.1 200 OK\r\n"), 200);
    EXPECT_EQ(parseHttpStatus("HTTP/1.0 503 Service Unavailable\r\nX: y"), 503);
    EXPECT_EQ(parseHttpStatus("HTTP/1.1 20"), 0);
    EXPECT_EQ(parseHttpStatus("SSH-2.0-OpenSSH\r\n"), -1);
    EXPECT_EQ(parseHttpStatus("HTTP/1.1 abc\r\n"), -1);
}

TEST(ProbeRunner, TcpProbeFollowsARealListener) {
    // Real non-blocking connects to a loopback listener inside the loop; the kernel completes
    // the handshake from the backlog, so nobody has to accept().
    int ls = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(ls, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(ls, 64), 0);
    socklen_t len = sizeof sa;
    ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &len);

    SystemClock clock;
    int changes = 0;
    ProbeRunner runner(clock, [&](const std::string&, std::optional<bool>) { ++changes; });
    model::Probe p;
    p.kind = model::ProbeKind::Tcp;
    p.port = ntohs(sa.sin_port);
    p.threshold = 2;
    p.interval = 20;
    p.timeout = 1000;
    runner.setProbe("svc", p);
    runner.setActive("svc", true);
    EXPECT_EQ(runner.ready("svc"), false); // not proven yet
    EventLoop loop(clock);
    loop.add(&runner);
    for (int i = 0; i < 200 && runner.ready("svc") != true; ++i)
        loop.runOnce(100);
    EXPECT_EQ(runner.ready("svc"), true);
    // The controller sends the same watch again (every hello, a restarted dped): the verdict
    // stays, no change is reported. A different probe starts over.
    int before = changes;
    runner.setProbe("svc", p);
    EXPECT_EQ(runner.ready("svc"), true);
    EXPECT_EQ(changes, before);
    model::Probe slower = p;
    slower.interval = 30;
    runner.setProbe("svc", slower);
    EXPECT_EQ(runner.ready("svc"), false); // a new probe is not proven yet
    for (int i = 0; i < 200 && runner.ready("svc") != true; ++i)
        loop.runOnce(100);
    EXPECT_EQ(runner.ready("svc"), true);
    ::close(ls); // now refused: not-ready after two failures
    for (int i = 0; i < 200 && runner.ready("svc") != false; ++i)
        loop.runOnce(100);
    EXPECT_EQ(runner.ready("svc"), false);
    runner.setActive("svc", false);
    EXPECT_FALSE(runner.ready("svc").has_value());
}

// An adopted unit with a probe: the first hello waits (at most kAdoptedProbeWait) for the
// probe's first verdict, so a service that served all along is not taken out of the
// balancer by a hello saying "no verdict yet". Units started anew do not wait.
TEST(AgentCoreAdopted, FirstHelloWaitsBrieflyForTheProbeOfAnAdoptedUnit) {
    ManualClock clock;
    AgentConfig cfg;
    FakeBackend backend;
    ProbeRunner probes(clock, [](const std::string&, std::optional<bool>) {});
    model::Probe p;
    p.kind = model::ProbeKind::Tcp;
    p.host = "127.0.0.1";
    p.port = 9; // never run: the loop is not driven here
    probes.setProbe("web", p);
    backend.adopted_units = {"web"};
    AgentCore core(cfg, Identity{}, backend, &probes, clock, [] { return Millis(0); });
    backend.setListener(&core);
    backend.setWatch({"web", "db"}, {});
    Millis t0 = clock.monotonicMs();
    EXPECT_FALSE(core.readyToConnect(t0));
    EXPECT_EQ(core.settleDeadline(), t0 + AgentCore::kAdoptedProbeWait);
    core.onReady("web", true);
    EXPECT_TRUE(core.readyToConnect(t0));
    core.onLinkUp();
    auto hello = proto::decodeReport(core.outbox().front().body);
    ASSERT_TRUE(hello.ok());
    auto units = std::get<proto::Hello>(hello->body).units;
    ASSERT_EQ(units.size(), 2u);
    EXPECT_EQ(units[0].unit, "web");
    EXPECT_EQ(units[0].ready, true);

    // No verdict at all: the wait ends at kAdoptedProbeWait.
    FakeBackend b2;
    ProbeRunner probes2(clock, [](const std::string&, std::optional<bool>) {});
    probes2.setProbe("web", p);
    b2.adopted_units = {"web"};
    AgentCore core2(cfg, Identity{}, b2, &probes2, clock, [] { return Millis(0); });
    b2.setListener(&core2);
    b2.setWatch({"web"}, {});
    Millis t1 = clock.monotonicMs();
    EXPECT_FALSE(core2.readyToConnect(t1 + AgentCore::kAdoptedProbeWait - 1));
    EXPECT_TRUE(core2.readyToConnect(t1 + AgentCore::kAdoptedProbeWait));
    clock.advance(AgentCore::kAdoptedProbeWait);
    EXPECT_EQ(core2.settleDeadline(), t1 + AgentCore::kSettleWait); // no busy wake-ups

    // Not adopted: no wait for the probe.
    FakeBackend b3;
    ProbeRunner probes3(clock, [](const std::string&, std::optional<bool>) {});
    probes3.setProbe("web", p);
    AgentCore core3(cfg, Identity{}, b3, &probes3, clock, [] { return Millis(0); });
    b3.setListener(&core3);
    b3.setWatch({"web"}, {});
    EXPECT_TRUE(core3.readyToConnect(clock.monotonicMs()));
}
