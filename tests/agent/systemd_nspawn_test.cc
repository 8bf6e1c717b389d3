// pcloud-agent against REAL systemd: a Debian guest booted with systemd-nspawn (systemd as
// PID 1, its own system D-Bus, nginx), the freshly built agent bind-mounted in and run inside
// with nsenter, talking AMQP to a peer on the host's loopback. Waits are for real messages
// with deadlines, never fixed sleeps. Exits 77 (ctest: skipped) when no guest can be booted.
#include "nspawn_guest.h"
#include "test_peer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

using namespace pcloud;
using namespace pcloud::testing;
using namespace std::chrono_literals;

namespace {

bool isState(const proto::UnitState& s, const char* active) {
    return s.active_state == active;
}

// Polls `pred` every 100 ms until it holds or `deadline` passes.
template <class Pred> bool eventuallyTrue(Pred pred, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= end)
            return false;
        std::this_thread::sleep_for(100ms);
    }
    return true;
}

class SystemdAgent : public ::testing::Test {
protected:
    static inline std::unique_ptr<TestPeer> peer;
    static inline std::unique_ptr<NspawnGuest> guest;
    static inline pid_t nsenter = -1;
    static inline std::string agentLog;
    static inline std::string bootError;
    static inline int cmdSeq = 0;
    static inline bool anyFailed = false;
    static inline std::string machineName;

    static void SetUpTestSuite() {
        peer = std::make_unique<TestPeer>();
        std::string machine = "pcloud-agent-t" + std::to_string(::getpid());
        machineName = machine;
        guest = std::make_unique<NspawnGuest>(machine,
                                              std::vector<std::pair<std::string, std::string>>{
                                                  {PCLOUD_AGENT_BIN, "/opt/pcloud/pcloud-agent"}});
        if (auto st = guest->boot(); !st) {
            bootError = st.error().describe();
            return;
        }
        agentLog = "/tmp/" + machine + ".agent.log";
        nsenter = guest->spawn({"/opt/pcloud/pcloud-agent", "--connect", peer->url(), "--assembly",
                                "nspawn01", "--heartbeat-interval", "1s", "--log-level", "info",
                                "--watch", "nginx.service", "nosuch.service", "late.service"},
                               agentLog);
    }
    static void TearDownTestSuite() {
        guest.reset(); // kills the guest, and the agent with it
        if (nsenter > 0)
            ::waitpid(nsenter, nullptr, 0);
        peer.reset();
        if (!anyFailed) { // keep the logs only when they explain a failure
            std::remove(agentLog.c_str());
            std::remove(("/tmp/" + machineName + ".nspawn.log").c_str());
        }
    }
    void SetUp() override { ASSERT_TRUE(bootError.empty()) << bootError; }
    void TearDown() override {
        if (HasFailure())
            anyFailed = true;
        if (HasFailure() && !agentLog.empty()) {
            std::ifstream log(agentLog);
            std::cerr << "---- agent log (" << agentLog << ") ----\n" << log.rdbuf() << "\n";
        }
    }

    static std::string nextId() { return "c" + std::to_string(++cmdSeq); }
    // Sends a command and returns its reply.
    static std::optional<proto::Reply> command(const std::string& type,
                                               const std::string& unit = {}) {
        std::string id = nextId();
        if (!peer->send(commandBody(type, id, unit)))
            return std::nullopt;
        return peer->waitReply(id, 30s);
    }
    static pid_t nginxMainPid() {
        auto st = command("status", "nginx.service");
        if (!st || !st->ok)
            return -1;
        return st->result["main_pid"].get<pid_t>();
    }
};

} // namespace

TEST_F(SystemdAgent, HelloReportsNginxActiveAndUnknownUnitNotFound) {
    auto hello = peer->waitHello(30s);
    ASSERT_TRUE(hello) << "no hello from the agent in the guest";
    EXPECT_EQ(hello->assembly, "nspawn01");
    EXPECT_EQ(hello->backend, "systemd");
    ASSERT_EQ(hello->units.size(), 3u);
    EXPECT_EQ(hello->units[0].unit, "nginx.service");
    EXPECT_EQ(hello->units[0].active_state, "active");
    EXPECT_GT(hello->units[0].main_pid, 0);
    EXPECT_EQ(hello->units[1].unit, "nosuch.service");
    EXPECT_EQ(hello->units[1].load_state, "not-found");
    EXPECT_EQ(hello->units[1].active_state, "not-found");
    ASSERT_TRUE(peer->waitCommandLink(10s));
}

TEST_F(SystemdAgent, SigkillNginxReportsFailedAndRestartBringsItBack) {
    pid_t inGuest = nginxMainPid();
    ASSERT_GT(inGuest, 0);
    pid_t host = guest->hostPid(inGuest);
    ASSERT_GT(host, 0);
    peer->skipAll();
    ASSERT_EQ(::kill(host, SIGKILL), 0);
    auto failed = peer->waitService(
        "nginx.service", [](auto& s) { return isState(s, "failed"); }, 30s);
    ASSERT_TRUE(failed) << "no failed report after SIGKILL";
    EXPECT_EQ(failed->result, "signal");
    EXPECT_EQ(failed->exit_code, 128 + SIGKILL);

    std::string id = nextId();
    ASSERT_TRUE(peer->send(commandBody("restart", id, "nginx.service")));
    auto active = peer->waitService(
        "nginx.service", [](auto& s) { return isState(s, "active"); }, 30s);
    ASSERT_TRUE(active) << "no active report after restart";
    auto rep = peer->waitReply(id, 30s);
    ASSERT_TRUE(rep);
    EXPECT_TRUE(rep->ok) << (rep->error ? rep->error->message : "");
    EXPECT_EQ(rep->result["job_result"], "done");
    EXPECT_NE(nginxMainPid(), inGuest);
}

TEST_F(SystemdAgent, DaemonReloadKeepsReportingAndPicksUpUnitsAddedLater) {
    std::string out;
    ASSERT_EQ(guest->run("printf \"[Service]\\nExecStart=/bin/sleep 100000\\n\" > "
                         "/etc/systemd/system/late.service && "
                         "systemctl daemon-reload",
                         &out),
              0)
        << out;
    auto loaded = peer->waitService(
        "late.service", [](auto& s) { return s.load_state == "loaded"; }, 30s);
    ASSERT_TRUE(loaded) << "late.service not reported as loaded after daemon-reload";
    EXPECT_EQ(loaded->active_state, "inactive");

    std::string id = nextId();
    ASSERT_TRUE(peer->send(commandBody("start", id, "late.service")));
    ASSERT_TRUE(peer->waitService(
        "late.service", [](auto& s) { return isState(s, "active"); }, 30s));
    auto started = peer->waitReply(id, 30s);
    ASSERT_TRUE(started);
    EXPECT_TRUE(started->ok);

    // Changes still arrive after the reload.
    peer->skipAll();
    ASSERT_EQ(guest->run("systemctl stop nginx", &out), 0) << out;
    ASSERT_TRUE(peer->waitService(
        "nginx.service", [](auto& s) { return isState(s, "inactive"); }, 30s));
    auto rep = command("start", "nginx.service");
    ASSERT_TRUE(rep);
    EXPECT_TRUE(rep->ok);
}

TEST_F(SystemdAgent, GarbageCommandsGetErrorRepliesAndRestartNothing) {
    pid_t before = nginxMainPid();
    ASSERT_GT(before, 0);
    peer->skipAll();
    peer->send("\x01\x02 not json");
    peer->send(R"({"v":1,"type":"format-disk","id":"g1"})");
    peer->send(R"({"v":1,"type":"restart","id":"g2"})");
    peer->send(R"({"v":1,"type":"restart","id":"g3","unit":"sshd.service"})");
    peer->send(R"({"v":1,"type":"watch","id":"g4","units":"nginx"})");
    peer->send(std::string(100'000, 'x'));
    for (const char* id : {"g1", "g2", "g3", "g4"}) {
        auto r = peer->waitReply(id, 30s);
        ASSERT_TRUE(r) << id;
        EXPECT_FALSE(r->ok) << id;
        EXPECT_TRUE(r->error.has_value()) << id;
    }
    // The oversized message ended that connection; the agent comes back with a hello.
    auto pong = [&] {
        for (int i = 0; i < 100; ++i) {
            if (peer->waitCommandLink(1s)) {
                std::string id = nextId();
                peer->send(commandBody("ping", id));
                if (auto r = peer->waitReply(id, 2s))
                    return r;
            }
        }
        return std::optional<proto::Reply>{};
    }();
    ASSERT_TRUE(pong);
    EXPECT_TRUE(pong->ok);
    EXPECT_EQ(nginxMainPid(), before);
}

TEST_F(SystemdAgent, HubRestartGetsAFreshHelloWithState) {
    int port = peer->port();
    peer.reset();
    peer = std::make_unique<TestPeer>(port);
    auto hello = peer->waitHello(60s);
    ASSERT_TRUE(hello) << "agent did not reconnect to the restarted hub";
    ASSERT_EQ(hello->units.size(), 3u);
    EXPECT_EQ(hello->units[0].active_state, "active");
    EXPECT_EQ(hello->units[2].unit, "late.service");
    EXPECT_EQ(hello->units[2].active_state, "active");
    ASSERT_TRUE(peer->waitCommandLink(10s));
}

TEST_F(SystemdAgent, DaemonReexecKeepsReporting) {
    std::string out;
    ASSERT_EQ(guest->run("systemctl daemon-reexec", &out), 0) << out;
    // Wait until systemd answers again, then make a change and expect its report.
    ASSERT_EQ(guest->run("systemctl is-active nginx", &out), 0) << out;
    peer->skipAll();
    ASSERT_EQ(guest->run("systemctl stop late.service", &out), 0) << out;
    ASSERT_TRUE(peer->waitService(
        "late.service", [](auto& s) { return isState(s, "inactive"); }, 30s))
        << "no report after daemon-reexec";
}

// The system bus itself restarts (a dbus upgrade does this): the agent's connection is
// cut, it reconnects with backoff, subscribes again and re-reads every unit, so a change
// made while it was away and one made after are both reported.
TEST_F(SystemdAgent, SystemBusRestartIsSurvived) {
    std::string out;
    ASSERT_EQ(guest->run("systemctl start late.service", &out), 0) << out;
    ASSERT_TRUE(peer->waitService(
        "late.service", [](auto& s) { return isState(s, "active"); }, 30s));
    peer->skipAll();
    ASSERT_EQ(guest->run("systemctl restart dbus.service", &out), 0) << out;
    // Changed right after the restart: the agent may or may not be connected yet; either
    // the signal or the re-read after reconnecting must report it.
    ASSERT_EQ(guest->run("systemctl stop late.service", &out), 0) << out;
    ASSERT_TRUE(peer->waitService(
        "late.service", [](auto& s) { return isState(s, "inactive"); }, 60s))
        << "the stop made around the bus restart was never reported";
    ASSERT_TRUE(eventuallyTrue(
        [&] {
            std::ifstream log(agentLog);
            std::string all((std::istreambuf_iterator<char>(log)), {});
            auto lost = all.rfind("Lost the system D-Bus");
            return lost != std::string::npos &&
                   all.find("Connected to the system D-Bus", lost) != std::string::npos;
        },
        60s))
        << "the agent never noticed the bus restart, or never reconnected";
    // Signals flow again on the new connection.
    peer->skipAll();
    ASSERT_EQ(guest->run("systemctl start late.service", &out), 0) << out;
    ASSERT_TRUE(peer->waitService(
        "late.service", [](auto& s) { return isState(s, "active"); }, 30s))
        << "no report after the bus came back";
    auto st = command("status", "nginx.service");
    ASSERT_TRUE(st && st->ok) << "status over the new D-Bus connection failed";
    EXPECT_EQ(st->result["active_state"], "active");
}

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    std::string why = NspawnGuest::unavailableReason();
    if (!why.empty()) {
        std::cout << "SKIPPED: systemd guest not available: " << why << "\n";
        return 77;
    }
    return RUN_ALL_TESTS();
}
