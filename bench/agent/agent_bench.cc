// Kill-to-report latency of pcloud-agent against real systemd (see run.sh). Prints figures,
// asserts nothing.
#include "footprint.h"
#include "nspawn_guest.h"
#include "test_peer.h"

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

using namespace pcloud;
using namespace pcloud::testing;
using namespace pcloud::bench;
using namespace std::chrono;

namespace {

double pct(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    std::size_t i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

} // namespace

int main(int argc, char** argv) {
    int kills = argc > 1 ? std::atoi(argv[1]) : 100;
    int idleSeconds = argc > 2 ? std::atoi(argv[2]) : 10;
    std::string why = NspawnGuest::unavailableReason();
    if (!why.empty()) {
        std::printf("agent_bench: cannot run: %s\n", why.c_str());
        return 77;
    }
    TestPeer peer;
    std::string machine = "pcloud-agent-bench" + std::to_string(::getpid());
    NspawnGuest guest(machine, {{PCLOUD_AGENT_BIN, "/opt/pcloud/pcloud-agent"}});
    if (auto st = guest.boot(); !st) {
        std::printf("agent_bench: guest did not boot: %s\n", st.error().describe().c_str());
        return 1;
    }
    // Let nginx be started as often as the benchmark wants.
    guest.run("mkdir -p /etc/systemd/system/nginx.service.d && "
              "printf \"[Unit]\\nStartLimitIntervalSec=0\\n\" > "
              "/etc/systemd/system/nginx.service.d/bench.conf && "
              "systemctl daemon-reload");
    std::string log = "/tmp/" + machine + ".agent.log";
    pid_t nsenter =
        guest.spawn({"/opt/pcloud/pcloud-agent", "--connect", peer.url(), "--assembly", "bench01",
                     "--heartbeat-interval", "2s", "--watch", "nginx.service"},
                    log);
    auto hello = peer.waitHello(60s);
    if (!hello || hello->units.empty() || !peer.waitCommandLink(10s)) {
        std::printf("agent_bench: no hello from the agent (log: %s)\n", log.c_str());
        return 1;
    }
    pid_t agentPid = -1;
    for (int i = 0; i < 100 && agentPid <= 0; ++i) {
        agentPid = NspawnGuest::childPid(nsenter, "pcloud-agent");
        if (agentPid <= 0)
            std::this_thread::sleep_for(20ms);
    }
    std::int64_t mainPid = hello->units[0].main_pid;

    std::vector<double> lat;      // ms, kill -> 'failed'
    std::vector<double> firstLat; // ms, kill -> first report that nginx is no longer active
    int misses = 0;
    for (int i = 0; i < kills; ++i) {
        pid_t host = guest.hostPid(static_cast<pid_t>(mainPid));
        if (host <= 0) {
            ++misses;
            break;
        }
        peer.skipAll();
        auto t0 = steady_clock::now();
        ::kill(host, SIGKILL);
        TestPeer::Clock::time_point firstAt, at;
        auto first = peer.waitService(
            "nginx.service", [](auto& s) { return s.active_state != "active"; }, 10s, &firstAt);
        if (first)
            firstLat.push_back(duration<double, std::milli>(firstAt - t0).count());
        if (first && first->active_state == "failed")
            at = firstAt;
        auto failed = first && first->active_state == "failed"
                          ? first
                          : peer.waitService(
                                "nginx.service", [](auto& s) { return s.active_state == "failed"; },
                                10s, &at);
        if (!failed) {
            ++misses;
        } else {
            lat.push_back(duration<double, std::milli>(at - t0).count());
        }
        std::string id = "r" + std::to_string(i);
        peer.send(commandBody("restart", id, "nginx.service"));
        auto active = peer.waitService(
            "nginx.service", [](auto& s) { return s.active_state == "active" && s.main_pid > 0; },
            10s);
        if (!active) {
            std::printf("agent_bench: nginx did not come back after restart %d\n", i);
            break;
        }
        mainPid = active->main_pid;
        peer.waitReply(id, 10s);
    }

    // Idle: nothing happens but heartbeats (every 2 s).
    std::this_thread::sleep_for(1s);
    ProcStat a = procStat(agentPid);
    std::this_thread::sleep_for(seconds(idleSeconds));
    ProcStat b = procStat(agentPid);

    std::printf("pcloud-agent benchmark (real systemd in systemd-nspawn, AMQP to a host peer on "
                "loopback)\n");
    if (!lat.empty()) {
        double sum = 0;
        for (double v : lat)
            sum += v;
        std::printf("  SIGKILL nginx -> 'failed' report at the peer: n=%zu misses=%d\n", lat.size(),
                    misses);
        std::printf("    median %.2f ms   p99 %.2f ms   max %.2f ms   min %.2f ms   mean %.2f ms\n",
                    pct(lat, 0.5), pct(lat, 0.99), *std::max_element(lat.begin(), lat.end()),
                    *std::min_element(lat.begin(), lat.end()),
                    sum / static_cast<double>(lat.size()));
        std::printf("  SIGKILL nginx -> first report (deactivating, result=signal): n=%zu\n",
                    firstLat.size());
        std::printf("    median %.2f ms   p99 %.2f ms   max %.2f ms\n", pct(firstLat, 0.5),
                    pct(firstLat, 0.99), *std::max_element(firstLat.begin(), firstLat.end()));
    } else {
        std::printf("  no kill measurements (misses=%d)\n", misses);
    }
    std::printf("  agent RSS: %ld kB (anonymous %ld kB; the rest is mapped shared libraries), "
                "%ld thread(s)\n",
                b.rss_kb, b.rss_anon_kb, b.threads);
    if (const char* e = std::getenv("AGENT_BENCH_SMAPS"); e && *e == '1')
        printSmaps(agentPid);
    std::printf("  agent idle over %d s: %s, %ld context switches (heartbeat every 2 s)\n",
                idleSeconds, idleCpu(a, b, idleSeconds).c_str(), b.ctx_switches - a.ctx_switches);
    if (const char* e = std::getenv("AGENT_BENCH_HOLD"); e && *e == '1') {
        std::printf("  holding; agent host pid %d; press Enter to stop\n", agentPid);
        std::fflush(stdout);
        std::getchar();
    }
    guest.teardown();
    ::waitpid(nsenter, nullptr, 0);
    std::remove(log.c_str());
    std::remove(("/tmp/" + machine + ".nspawn.log").c_str());
    return 0;
}
