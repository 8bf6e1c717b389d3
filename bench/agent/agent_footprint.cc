// The agent's footprint with the process backend, on this host (no container): starts
// pcloud-agent watching one /bin/sleep, connected over AMQP to a peer on loopback, waits for
// its hello, then prints its RSS by mapping and its CPU over IDLE_SECONDS of idling.
//   agent_footprint [IDLE_SECONDS=10] [--hold]
// --hold keeps the agent running afterwards until Enter is pressed (for gdb or smaps by hand).
#include "footprint.h"
#include "test_peer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace pcloud;
using namespace pcloud::testing;
using namespace pcloud::bench;
using namespace std::chrono;

int main(int argc, char** argv) {
    int idleSeconds = 10;
    bool hold = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--hold") == 0)
            hold = true;
        else
            idleSeconds = std::atoi(argv[i]);
    }
    TestPeer peer;
    char dir[] = "/tmp/pcloud-agent-footprint-XXXXXX";
    if (!::mkdtemp(dir)) {
        std::perror("agent_footprint: mkdtemp");
        return 1;
    }
    std::string conf = std::string(dir) + "/agent.conf", log = std::string(dir) + "/agent.log";
    std::ofstream(conf) << "connect = " << peer.url() << "\n"
                        << "assembly = footprint01\n"
                        << "backend = process\n"
                        << "heartbeat_interval = 2s\n"
                        << "watch = sleeper\n"
                        << "process.sleeper = /bin/sleep 100000\n";
    pid_t agent = ::fork();
    if (agent == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execl(PCLOUD_AGENT_BIN, PCLOUD_AGENT_BIN, "--config", conf.c_str(), nullptr);
        _exit(127);
    }
    int rc = 0;
    auto hello = peer.waitHello(10s);
    if (!hello || !peer.waitCommandLink(5s)) {
        std::printf("agent_footprint: no hello from the agent (log: %s)\n", log.c_str());
        rc = 1;
    } else {
        std::this_thread::sleep_for(1s);
        ProcStat a = procStat(agent);
        std::this_thread::sleep_for(seconds(idleSeconds));
        ProcStat b = procStat(agent);
        std::printf("pcloud-agent footprint (process backend, on the host, AMQP to a peer on "
                    "loopback)\n");
        std::printf("  agent pid %d RSS: %ld kB (anonymous %ld kB), %ld thread(s)\n", agent,
                    b.rss_kb, b.rss_anon_kb, b.threads);
        printSmaps(agent);
        std::printf("  agent idle over %d s: %s, %ld context switches (heartbeat every 2 s)\n",
                    idleSeconds, idleCpu(a, b, idleSeconds).c_str(),
                    b.ctx_switches - a.ctx_switches);
        std::fflush(stdout);
        if (hold) {
            std::printf("  holding; press Enter to stop the agent\n");
            std::fflush(stdout);
            std::getchar();
        }
    }
    ::kill(agent, SIGTERM);
    ::waitpid(agent, nullptr, 0);
    std::system(("rm -rf " + std::string(dir)).c_str());
    return rc;
}
