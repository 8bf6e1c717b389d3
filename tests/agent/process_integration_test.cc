// The process backend on the host, against a real AMQP peer (Proton C++ container) on
// loopback: the agent binary starts real processes, sees them die through pidfd, restarts
// them on command, answers garbage with errors, and probes a real HTTP server.
#include "test_peer.h"

#include "agent/config.h"
#include "agent/process_backend.h"
#include "agent/process_state.h"
#include "common/clock.h"
#include "common/fs.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

using namespace pcloud;
using namespace pcloud::testing;
using namespace std::chrono_literals;

namespace {

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

// Alive and not a zombie, child of ours or not.
bool running(pid_t pid) {
    auto st = agent::readProcStat(pid);
    return st && st->state != 'Z' && st->state != 'X';
}

// Running processes whose argv is exactly `argv`.
int countProcesses(const std::vector<std::string>& argv) {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        pid_t pid = std::stoi(name);
        auto cmd = agent::readCmdline(pid);
        if (cmd && *cmd == argv && running(pid))
            ++n;
    }
    return n;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

std::string bootId() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

// A process of the test's own, /bin/sleep ARG, once it has exec'd.
pid_t spawnSleep(const std::string& arg) {
    pid_t pid = ::fork();
    if (pid == 0) {
        ::execl("/bin/sleep", "/bin/sleep", arg.c_str(), nullptr);
        _exit(127);
    }
    eventually(
        [&] {
            auto cmd = agent::readCmdline(pid);
            return cmd && *cmd == std::vector<std::string>{"/bin/sleep", arg};
        },
        5s);
    return pid;
}

std::size_t countOf(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
        ++n;
    return n;
}

class ProcessAgent : public ::testing::Test {
protected:
    void SetUp() override {
        char dir[] = "/tmp/pcloud-agent-proc-XXXXXX";
        ASSERT_NE(::mkdtemp(dir), nullptr);
        dir_ = dir;
        std::ofstream(dir_ + "/index.html") << "hello\n";
        httpPort_ = testsupport::freePort();
        peer_ = std::make_unique<TestPeer>();
        std::ofstream conf(dir_ + "/agent.conf");
        conf << "# written by process_integration_test\n"
             << "connect = " << peer_->url() << "\n"
             << "assembly = proc01\n"
             << "backend = process\n"
             << "heartbeat_interval = 200ms\n"
             << "max_message_size = 4096\n"
             << "watch = sleeper web\n"
             << "run_dir = " << dir_ << "/run\n"
             << "process.sleeper = " << sleeperCommand() << "\n"
             << "process.web = /usr/bin/python3 -m http.server " << httpPort_
             << " --bind 127.0.0.1 --directory " << dir_ << "\n"
             << "probe.web = http 127.0.0.1 " << httpPort_
             << " /index.html 200 interval=100ms timeout=300ms threshold=2\n";
        conf.close();
        if (autostart_)
            startAgent();
    }
    void TearDown() override {
        if (agent_ > 0 && alive(agent_)) {
            ::kill(agent_, SIGTERM);
            int status = 0;
            ::waitpid(agent_, &status, 0);
        }
        if (HasFailure()) {
            for (const auto& path : logs_) {
                std::ifstream log(path);
                std::cerr << "---- " << path << " ----\n" << log.rdbuf() << "\n";
            }
        }
        for (pid_t pid : cleanup_) { // processes an agent killed in the test left behind
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0); // ours (a decoy) or ECHILD at once
            }
        }
        peer_.reset();
        std::system(("rm -rf " + dir_).c_str());
    }

    // Unique per test, so that counting its processes sees no other test's.
    std::string sleeperCommand() const {
        return "/bin/sleep " + std::to_string(100000 + httpPort_);
    }
    std::string webCommand() const {
        return "/usr/bin/python3 -m http.server " + std::to_string(httpPort_) +
               " --bind 127.0.0.1 --directory " + dir_;
    }
    void startAgent() {
        std::string log = dir_ + "/agent" + std::to_string(logs_.size() + 1) + ".log";
        logs_.push_back(log);
        agent_ = spawnAgent(
            {PCLOUD_AGENT_BIN, "--config", dir_ + "/agent.conf", "--log-level", "info"}, log);
    }
    std::string lastLog() const {
        std::ifstream in(logs_.back());
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    // kill -9 of the agent: what its init would see before restarting it.
    void killAgent() {
        ASSERT_GT(agent_, 0);
        ::kill(agent_, SIGKILL);
        int status = 0;
        ASSERT_EQ(::waitpid(agent_, &status, 0), agent_);
        ASSERT_TRUE(WIFSIGNALED(status));
        agent_ = -1;
    }

    bool autostart_ = true;
    std::vector<std::string> logs_;
    std::vector<pid_t> cleanup_;

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

// kill -9 of the agent leaves its processes running; the next agent with the same run_dir
// adopts them (same pids, one instance each, active in its hello) and can stop and restart
// them; an adopted process that dies is failed with an unknown exit status.
TEST_F(ProcessAgent, AdoptsItsProcessesAcrossAKill9) {
    using agent::splitWords;
    auto hello = peer_->waitHello(10s);
    ASSERT_TRUE(hello);
    ASSERT_EQ(hello->units.size(), 2u);
    ASSERT_EQ(hello->units[0].unit, "sleeper");
    pid_t sleeper = static_cast<pid_t>(hello->units[0].main_pid);
    ASSERT_GT(sleeper, 0);
    auto web0 = peer_->waitService(
        "web", [](const proto::UnitState& s) { return s.ready == true; }, 15s);
    ASSERT_TRUE(web0);
    pid_t web = static_cast<pid_t>(web0->main_pid);
    struct stat st {};
    ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);

    killAgent();
    cleanup_ = {sleeper, web};
    ASSERT_TRUE(running(sleeper));
    ASSERT_TRUE(running(web));
    peer_->skipAll();
    startAgent();
    auto h2 = peer_->waitHello(10s);
    ASSERT_TRUE(h2) << "the new agent sent no hello";
    ASSERT_EQ(h2->units.size(), 2u);
    for (const auto& u : h2->units)
        EXPECT_EQ(u.active_state, "active") << u.unit;
    EXPECT_EQ(h2->units[0].main_pid, sleeper);
    EXPECT_EQ(h2->units[1].main_pid, web);
    EXPECT_EQ(countProcesses(splitWords(sleeperCommand())), 1);
    EXPECT_EQ(countProcesses(splitWords(webCommand())), 1);
    EXPECT_EQ(countOf(lastLog(), "Adopted the process a previous agent started"), 2u) << lastLog();
    // The hello waited for the adopted web server's first probe success (kAdoptedProbeWait),
    // so it does not say "not proven ready" about a server that served all along.
    EXPECT_EQ(h2->units[1].ready, true);
    ASSERT_TRUE(peer_->waitCommandLink(5s));

    // Stop of an adopted process: SIGTERM to its group, the exit seen through its pidfd.
    ASSERT_TRUE(peer_->send(commandBody("stop", "s1", "sleeper")));
    ASSERT_TRUE(peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "inactive"; }, 10s));
    auto rep = peer_->waitReply("s1", 5s);
    ASSERT_TRUE(rep && rep->ok);
    EXPECT_FALSE(running(sleeper));

    // Restart of an adopted process: the old one ends, a new child of this agent runs.
    ASSERT_TRUE(peer_->send(commandBody("restart", "r1", "web")));
    auto w2 = peer_->waitService(
        "web",
        [web](const proto::UnitState& s) {
            return s.active_state == "active" && s.main_pid != 0 && s.main_pid != web;
        },
        10s);
    ASSERT_TRUE(w2);
    rep = peer_->waitReply("r1", 5s);
    ASSERT_TRUE(rep && rep->ok);
    EXPECT_FALSE(running(web));
    EXPECT_TRUE(eventually([&] { return countProcesses(splitWords(webCommand())) == 1; }, 5s));
    pid_t web2 = static_cast<pid_t>(w2->main_pid);

    ASSERT_TRUE(peer_->send(commandBody("start", "st1", "sleeper")));
    auto s2 = peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "active"; }, 10s);
    ASSERT_TRUE(s2);
    pid_t sleeper2 = static_cast<pid_t>(s2->main_pid);

    // A second kill: the third agent adopts what the second one started.
    killAgent();
    cleanup_ = {sleeper2, web2};
    peer_->skipAll();
    startAgent();
    auto h3 = peer_->waitHello(10s);
    ASSERT_TRUE(h3);
    ASSERT_EQ(h3->units.size(), 2u);
    EXPECT_EQ(h3->units[0].main_pid, sleeper2);
    EXPECT_EQ(h3->units[0].active_state, "active");
    EXPECT_EQ(h3->units[1].main_pid, web2);

    // An adopted process that dies is a failure; not our child, so its status is unknown.
    ::kill(sleeper2, SIGKILL);
    auto failed = peer_->waitService(
        "sleeper", [](const proto::UnitState& s) { return s.active_state == "failed"; }, 5s);
    ASSERT_TRUE(failed) << "the death of an adopted process went unnoticed";
    EXPECT_EQ(failed->result, "unknown");
    EXPECT_EQ(failed->main_pid, 0);

    // SIGTERM to the agent stops the adopted web server too, and leaves nothing to adopt.
    ::kill(agent_, SIGTERM);
    int status = 0;
    ASSERT_EQ(::waitpid(agent_, &status, 0), agent_);
    agent_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_FALSE(running(web2)) << "adopted web server outlived the agent";
    auto text = fs::readFile(dir_ + "/run/processes.json");
    ASSERT_TRUE(text);
    auto recorded = agent::decodeProcessState(*text, "processes.json");
    ASSERT_TRUE(recorded) << recorded.error().describe();
    EXPECT_TRUE(recorded->units.empty()) << *text;
}

class ProcessAgentNotStarted : public ProcessAgent {
protected:
    ProcessAgentNotStarted() { autostart_ = false; }
    void writeState(const agent::ProcessState& s) {
        ASSERT_EQ(::mkdir((dir_ + "/run").c_str(), 0700), 0);
        std::ofstream(dir_ + "/run/processes.json") << agent::encodeProcessState(s);
    }
};

// A record whose process died while no agent watched it (its pid is gone, or now runs
// another command line, or has another start time) is a service failure: the unit is
// reported failed with an unknown result and is not started behind dped's back (dped
// restarts it and counts the failure); the other process is left alone. A record whose
// configured command changed is not a failure: that unit is started anew.
TEST_F(ProcessAgentNotStarted, ProcessesThatDiedUnwatchedAreReportedFailed) {
    using agent::splitWords;
    pid_t other = spawnSleep("4242" + std::to_string(httpPort_)); // another command line
    cleanup_.push_back(other);
    auto otherStat = agent::readProcStat(other);
    ASSERT_TRUE(otherStat);
    pid_t gonePid = ::fork();
    if (gonePid == 0)
        _exit(0);
    ASSERT_EQ(::waitpid(gonePid, nullptr, 0), gonePid);

    agent::ProcessState s;
    s.boot_id = bootId();
    s.units["sleeper"] = {other, other, otherStat->start_time, sleeperCommand()};
    s.units["web"] = {gonePid, gonePid, 1, webCommand()};
    writeState(s);
    startAgent();
    auto hello = peer_->waitHello(10s);
    ASSERT_TRUE(hello);
    ASSERT_EQ(hello->units.size(), 2u);
    for (const auto& u : hello->units) {
        EXPECT_EQ(u.active_state, "failed") << u.unit;
        EXPECT_EQ(u.result, "unknown") << u.unit;
        EXPECT_EQ(u.main_pid, 0) << u.unit;
    }
    EXPECT_TRUE(running(other)) << "the agent touched a process that is not its own";
    EXPECT_EQ(countProcesses(splitWords(sleeperCommand())), 0) << "started behind dped's back";
    std::string log = lastLog();
    EXPECT_EQ(countOf(log, "died while no agent watched it"), 2u) << log;
    EXPECT_NE(log.find("the pid runs another command line"), std::string::npos) << log;
    EXPECT_NE(log.find("the process is gone"), std::string::npos) << log;
    auto text = fs::readFile(dir_ + "/run/processes.json");
    ASSERT_TRUE(text);
    auto now = agent::decodeProcessState(*text, "processes.json");
    ASSERT_TRUE(now) << now.error().describe();
    EXPECT_TRUE(now->units.empty()) << *text; // nothing runs, nothing to adopt

    // dped's restart (a start here) runs it, recorded for the next agent.
    ASSERT_TRUE(peer_->send(commandBody("start", "st1", "sleeper")));
    auto started = peer_->waitService(
        "sleeper", [](const proto::UnitState& u) { return u.active_state == "active"; }, 10s);
    ASSERT_TRUE(started);
    // "active" is reported at the fork; the child shows the command line once it has exec'd.
    EXPECT_TRUE(eventually([&] { return countProcesses(splitWords(sleeperCommand())) == 1; }, 5s));

    // The same command line under a pid with another start time: a later process that
    // got the pid; it is not the one recorded, and it is left alone.
    ::kill(agent_, SIGTERM);
    ASSERT_EQ(::waitpid(agent_, nullptr, 0), agent_);
    agent_ = -1;
    pid_t twin = spawnSleep(splitWords(sleeperCommand())[1]);
    cleanup_.push_back(twin);
    auto twinStat = agent::readProcStat(twin);
    ASSERT_TRUE(twinStat);
    agent::ProcessState s2;
    s2.boot_id = bootId();
    s2.units["sleeper"] = {twin, twin, twinStat->start_time + 1, sleeperCommand()};
    // web's record names a command that is no longer configured: a new configuration, so
    // web is started anew rather than reported failed.
    s2.units["web"] = {twin, twin, twinStat->start_time, "/bin/true old-command"};
    ::unlink((dir_ + "/run/processes.json").c_str());
    std::ofstream(dir_ + "/run/processes.json") << agent::encodeProcessState(s2);
    peer_->skipAll();
    startAgent();
    hello = peer_->waitHello(10s);
    ASSERT_TRUE(hello);
    ASSERT_EQ(hello->units.size(), 2u);
    EXPECT_EQ(hello->units[0].active_state, "failed");
    EXPECT_EQ(hello->units[0].main_pid, 0);
    EXPECT_EQ(hello->units[1].active_state, "active");
    EXPECT_GT(hello->units[1].main_pid, 0);
    EXPECT_TRUE(running(twin));
    EXPECT_EQ(countProcesses(splitWords(sleeperCommand())), 1); // the twin only
    EXPECT_NE(lastLog().find("the pid now belongs to another process (start time"),
              std::string::npos)
        << lastLog();
    EXPECT_NE(lastLog().find("the configured command changed"), std::string::npos) << lastLog();
}

TEST_F(ProcessAgentNotStarted, CorruptStateFileIsIgnoredWithAWarning) {
    ASSERT_EQ(::mkdir((dir_ + "/run").c_str(), 0700), 0);
    std::string file = dir_ + "/run/processes.json";
    std::ofstream(file) << "{\"v\":1,\"boot_id\":\"x\",\"units\":{\"web\":{\"pid\":\"";
    startAgent();
    auto hello = peer_->waitHello(10s);
    ASSERT_TRUE(hello);
    ASSERT_EQ(hello->units.size(), 2u);
    for (const auto& u : hello->units)
        EXPECT_EQ(u.active_state, "active") << u.unit;
    std::string log = lastLog();
    auto at = log.find("Ignoring a corrupt process state file");
    ASSERT_NE(at, std::string::npos) << log;
    EXPECT_NE(log.find(file, at), std::string::npos) << log;
    EXPECT_TRUE(alive(agent_));
    auto text = fs::readFile(file); // rewritten with what runs now
    ASSERT_TRUE(text);
    EXPECT_TRUE(agent::decodeProcessState(*text, file).ok()) << *text;
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

// The agent is SIGKILLed between the fork of a service and its record (the CTS found the
// window: the next agent could not adopt the process and started a second copy). The
// child must never exec: it exits kUnreleasedExit once its agent is gone. The control run,
// where the agent lives on, proves the same service does start.
class ProcessBackendSpawn : public ::testing::Test {
protected:
    void SetUp() override {
        char d[] = "/tmp/pcloud-agent-spawn-XXXXXX";
        ASSERT_NE(::mkdtemp(d), nullptr);
        dir = d;
        marker = dir + "/ran";
        script = dir + "/svc.sh";
        std::ofstream(script) << "#!/bin/sh\ntouch " << marker << "\nexec sleep 60\n";
        ::chmod(script.c_str(), 0755);
        // Orphaned grandchildren come back to us, so the test can reap the service.
        ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    }
    void TearDown() override {
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
        std::filesystem::remove_all(dir);
    }

    // Forks an agent that starts "web"; `killAgent` SIGKILLs it in the spawn observer.
    // Returns the service's pid as the observer saw it and the agent's wait status.
    std::pair<pid_t, int> runAgent(bool killAgent) {
        int fds[2];
        EXPECT_EQ(::pipe(fds), 0);
        pid_t agentPid = ::fork();
        if (agentPid == 0) {
            ::close(fds[0]);
            SystemClock clock;
            agent::ProcessBackend b(clock, {{"web", script}}, dir + "/run", bootId());
            b.setWatch({"web"}, {});
            b.setSpawnObserver([&](pid_t child) {
                [[maybe_unused]] auto n = ::write(fds[1], &child, sizeof child);
                if (killAgent)
                    ::kill(::getpid(), SIGKILL);
            });
            b.startAll();
            _exit(0); // the service stays, as after any agent exit without shutdown
        }
        ::close(fds[1]);
        pid_t child = -1;
        EXPECT_EQ(::read(fds[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
        ::close(fds[0]);
        int status = 0;
        EXPECT_EQ(::waitpid(agentPid, &status, 0), agentPid);
        return {child, status};
    }

    std::string dir, marker, script;
};

TEST_F(ProcessBackendSpawn, AChildTheAgentDidNotRecordNeverRuns) {
    auto [child, agentStatus] = runAgent(true);
    ASSERT_TRUE(WIFSIGNALED(agentStatus) && WTERMSIG(agentStatus) == SIGKILL);
    ASSERT_GT(child, 0);
    int status = 0;
    bool ended = eventually([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 5s);
    if (!ended) { // it exec'd: end it so the failure is quick
        ::kill(-child, SIGKILL);
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
    }
    ASSERT_TRUE(ended) << "the orphan still runs 5 s after its agent died";
    EXPECT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), agent::ProcessBackend::kUnreleasedExit);
    EXPECT_FALSE(std::filesystem::exists(marker)) << "the service ran unrecorded";
}

TEST_F(ProcessBackendSpawn, ARecordedChildRuns) {
    auto [child, agentStatus] = runAgent(false);
    ASSERT_TRUE(WIFEXITED(agentStatus) && WEXITSTATUS(agentStatus) == 0);
    ASSERT_GT(child, 0);
    EXPECT_TRUE(eventually([&] { return std::filesystem::exists(marker); }, 5s));
    // It runs because it was recorded first: the record names this very process.
    auto text = fs::readFile(dir + "/run/processes.json");
    ASSERT_TRUE(text) << text.error().describe();
    auto saved = agent::decodeProcessState(*text, "state");
    ASSERT_TRUE(saved) << saved.error().describe();
    ASSERT_TRUE(saved->units.count("web"));
    EXPECT_EQ(saved->units.at("web").pid, child);
    ::kill(-child, SIGKILL);
    ::waitpid(child, nullptr, 0);
}
