// The process backend on the host, against a real AMQP peer (Proton C++ container) on
// loopback: the agent binary starts real processes, sees them die through pidfd, restarts
// them on command, answers garbage with errors, and probes a real HTTP server.
#include "test_peer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

using namespace pcloud;
using namespace pcloud::testing;
using namespace std::chrono_literals;

namespace {

int freePort() {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&sa), &len);
    ::close(s);
    return ntohs(sa.sin_port);
}

pid_t spawnAgent(const std::vector<std::string>& args, const std::string& logPath) {
    pid_t pid = ::fork();
    if (pid == 0) {
        int fd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        std::vector<char*> argv;
        for (const auto& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        _exit(127);
    }
    return pid;
}

bool alive(pid_t pid) {
    return ::waitpid(pid, nullptr, WNOHANG) == 0;
}

class ProcessAgent : public ::testing::Test {
protected:
    void SetUp() override {
        char dir[] = "/tmp/pcloud-agent-proc-XXXXXX";
        ASSERT_NE(::mkdtemp(dir), nullptr);
        dir_ = dir;
        std::ofstream(dir_ + "/index.html") << "hello\n";
        httpPort_ = freePort();
        peer_ = std::make_unique<TestPeer>();
        std::ofstream conf(dir_ + "/agent.conf");
        conf << "# written by process_integration_test\n"
             << "connect = " << peer_->url() << "\n"
             << "assembly = proc01\n"
             << "backend = process\n"
             << "heartbeat_interval = 200ms\n"
             << "max_message_size = 4096\n"
             << "watch = sleeper web\n"
             << "process.sleeper = /bin/sleep 1000\n"
             << "process.web = /usr/bin/python3 -m http.server " << httpPort_
             << " --bind 127.0.0.1 --directory " << dir_ << "\n"
             << "probe.web = http 127.0.0.1 " << httpPort_
             << " /index.html 200 interval=100ms timeout=300ms threshold=2\n";
        conf.close();
        agent_ =
            spawnAgent({PCLOUD_AGENT_BIN, "--config", dir_ + "/agent.conf", "--log-level", "info"},
                       dir_ + "/agent.log");
    }
    void TearDown() override {
        if (agent_ > 0 && alive(agent_)) {
            ::kill(agent_, SIGTERM);
            int status = 0;
            ::waitpid(agent_, &status, 0);
        }
        if (HasFailure()) {
            std::ifstream log(dir_ + "/agent.log");
            std::cerr << "---- agent log ----\n" << log.rdbuf() << "\n";
        }
        peer_.reset();
        std::system(("rm -rf " + dir_).c_str());
    }

    std::string dir_;
    int httpPort_ = 0;
    std::unique_ptr<TestPeer> peer_;
    pid_t agent_ = -1;
};

} // namespace

TEST_F(ProcessAgent, KillRestartGarbageAndProbe) {
    auto hello = peer_->waitHello(10s);
    ASSERT_TRUE(hello) << "no hello from the agent";
    EXPECT_EQ(hello->assembly, "proc01");
    EXPECT_EQ(hello->backend, "process");
    ASSERT_EQ(hello->units.size(), 2u);
    ASSERT_TRUE(peer_->waitCommandLink(5s));

    // The sleeper runs; find its pid from status.
    ASSERT_TRUE(peer_->send(commandBody("status", "st1", "sleeper")));
    auto st = peer_->waitReply("st1", 5s);
    ASSERT_TRUE(st && st->ok);
    ASSERT_EQ(st->result["active_state"], "active");
    pid_t sleeper = st->result["main_pid"].get<pid_t>();
    ASSERT_GT(sleeper, 0);

    // The web server becomes ready through the HTTP probe.
    auto ready = peer_->waitService(
        "web", [](const proto::UnitState& s) { return s.ready == true; }, 15s);
    ASSERT_TRUE(ready) << "web never became ready";
    EXPECT_EQ(ready->active_state, "active");

    // Frozen web server: still active, but not answering -> ready=false, not failed.
    pid_t web = static_cast<pid_t>(ready->main_pid);
    ::kill(web, SIGSTOP);
    auto notReady = peer_->waitService(
        "web", [](const proto::UnitState& s) { return s.ready == false; }, 10s);
    ::kill(web, SIGCONT);
    ASSERT_TRUE(notReady);
    EXPECT_EQ(notReady->active_state, "active");
    ASSERT_TRUE(peer_->waitService(
        "web", [](const proto::UnitState& s) { return s.ready == true; }, 10s));

    // SIGKILL the sleeper: pidfd reports it at once as failed with 128+9.
    ::kill(sleeper, SIGKILL);
    auto failed = peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "failed"; }, 5s);
    ASSERT_TRUE(failed);
    EXPECT_EQ(failed->exit_code, 137);
    EXPECT_EQ(failed->result, "signal");

    // Restart on command -> active with a new pid, and exactly one ok reply.
    ASSERT_TRUE(peer_->send(commandBody("restart", "r1", "sleeper")));
    auto active = peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "active"; }, 5s);
    ASSERT_TRUE(active);
    EXPECT_NE(active->main_pid, sleeper);
    auto rep = peer_->waitReply("r1", 5s);
    ASSERT_TRUE(rep);
    EXPECT_TRUE(rep->ok);

    // Garbage: each gets an error reply; nothing restarts; the agent lives.
    peer_->skipAll();
    peer_->send("this is not json");
    peer_->send(R"({"v":1,"type":"reboot","id":"g1"})");
    peer_->send(R"({"v":7,"type":"ping","id":"g2"})");
    peer_->send(R"({"v":1,"type":"restart","id":"g3","unit":"nosuch"})");
    peer_->send(R"({"v":1,"type":"start","id":"g4"})");
    peer_->send(std::string(6000, '{')); // over max_message_size
    for (const char* id : {"g1", "g2", "g3", "g4"}) {
        auto r = peer_->waitReply(id, 5s);
        ASSERT_TRUE(r) << id;
        EXPECT_FALSE(r->ok) << id;
    }
    ASSERT_TRUE(peer_->send(commandBody("ping", "p1")));
    auto pong = peer_->waitReply("p1", 5s);
    ASSERT_TRUE(pong && pong->ok);
    EXPECT_TRUE(alive(agent_));
    ASSERT_TRUE(peer_->send(commandBody("status", "st2", "sleeper")));
    st = peer_->waitReply("st2", 5s);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->result["main_pid"], active->main_pid); // garbage restarted nothing

    // Heartbeats flow with increasing seq.
    auto hb1 = peer_->waitFor(
        [](const TestPeer::Received& r) { return r.report.type == "heartbeat"; }, 5s);
    auto hb2 = peer_->waitFor(
        [](const TestPeer::Received& r) { return r.report.type == "heartbeat"; }, 5s);
    ASSERT_TRUE(hb1 && hb2);
    EXPECT_LT(std::get<proto::Heartbeat>(hb1->report.body).seq,
              std::get<proto::Heartbeat>(hb2->report.body).seq);

    // Stop -> inactive; SIGTERM to the agent leaves no children behind.
    ASSERT_TRUE(peer_->send(commandBody("stop", "s1", "sleeper")));
    ASSERT_TRUE(peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "inactive"; }, 10s));
    ::kill(agent_, SIGTERM);
    int status = 0;
    ASSERT_EQ(::waitpid(agent_, &status, 0), agent_);
    agent_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_NE(::kill(web, 0), 0) << "web server outlived the agent";
}

TEST_F(ProcessAgent, ReconnectsAfterTheHubRestartsAndSendsHello) {
    ASSERT_TRUE(peer_->waitHello(10s));
    int port = peer_->port();
    peer_.reset(); // hub gone
    peer_ = std::make_unique<TestPeer>(port);
    auto hello = peer_->waitHello(15s);
    ASSERT_TRUE(hello) << "agent did not reconnect";
    ASSERT_EQ(hello->units.size(), 2u);
    EXPECT_EQ(hello->units[0].unit, "sleeper");
    EXPECT_EQ(hello->units[0].active_state, "active");
}

TEST(AgentCli, BadConfigLineExitsTwoNamingFileAndLine) {
    char path[] = "/tmp/pcloud-agent-bad-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ::close(fd);
    std::ofstream(path) << "assembly = a\nheartbeat_interval = never\n";
    std::string cmd = std::string(PCLOUD_AGENT_BIN) + " --config " + path + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[256];
    while (std::fgets(buf, sizeof buf, p))
        out += buf;
    int status = ::pclose(p);
    std::remove(path);
    EXPECT_EQ(WEXITSTATUS(status), 2);
    EXPECT_NE(out.find(std::string(path) + ":2:"), std::string::npos) << out;
}
