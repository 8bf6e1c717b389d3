// Times membership changes against a real HAProxy 2.6: 1000 changes sent as one batch
// (one line, one connection) versus one command per connection. Prints median and p99;
// asserts nothing. Usage: referee_bench [runs]   (bench/referee/run.sh builds and runs it)
#include "referee/haproxy_referee.h"
#include "referee/runtime_api.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace pcloud;
using namespace pcloud::referee;

namespace {

constexpr int kMembers = 1000;

double nowMs() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

std::string serverName(int i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "m%04d", i);
    return buf;
}

struct Stats {
    double median, p99, min, max;
};

Stats stats(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    };
    return {at(0.5), at(0.99), v.front(), v.back()};
}

void row(const char* what, int runs, const std::vector<double>& samples) {
    auto s = stats(samples);
    std::printf("%-58s %5d %9.2f %9.2f %9.2f %9.2f\n", what, runs, s.median, s.p99, s.min, s.max);
}

} // namespace

int main(int argc, char** argv) {
    const int runs = argc > 1 ? std::atoi(argv[1]) : 50;
    const int slowRuns = std::max(3, runs / 5);
    char tmpl[] = "/tmp/pcloud-referee-bench-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    const std::string sock = dir + "/admin.sock";
    {
        std::ofstream cfg(dir + "/haproxy.cfg");
        cfg << "global\n    stats socket " << sock << " mode 600 level admin\n"
            << "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
            << "    timeout server 5s\n"
            << "backend bench\n    balance roundrobin\n";
        for (int i = 1; i <= kMembers; ++i)
            cfg << "    server " << serverName(i) << " 127.0.0.1:" << 20000 + i << "\n";
        cfg << "backend dyn\n    balance roundrobin\n";
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        int log = ::open((dir + "/haproxy.log").c_str(), O_WRONLY | O_CREAT, 0644);
        ::dup2(log, 1);
        ::dup2(log, 2);
        ::execlp("haproxy", "haproxy", "-db", "-f", (dir + "/haproxy.cfg").c_str(), nullptr);
        ::_exit(127);
    }
    auto cleanup = [&] {
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
        std::system(("rm -rf " + dir).c_str());
    };
    double deadline = nowMs() + 10'000;
    while (!runtimeApiExchange(sock, "show info\n", 1000).ok()) {
        if (nowMs() > deadline) {
            std::fprintf(stderr, "haproxy did not start; see %s/haproxy.log\n", dir.c_str());
            cleanup();
            return 1;
        }
        ::usleep(20'000);
    }

    HaproxyReferee referee(sock, "bench", 5'000);
    std::vector<Member> ready, drain;
    for (int i = 1; i <= kMembers; ++i) {
        std::string addr = "127.0.0.1:" + std::to_string(20000 + i);
        ready.push_back({serverName(i), addr, MemberState::Ready});
        drain.push_back({serverName(i), addr, MemberState::Drain});
    }
    auto commandsFor = [&](const char* state) {
        std::vector<std::string> cmds;
        for (int i = 1; i <= kMembers; ++i)
            cmds.push_back("set server bench/" + serverName(i) + " state " + state);
        return cmds;
    };
    auto fail = [&](const std::string& what) {
        std::fprintf(stderr, "%s\n", what.c_str());
        cleanup();
        std::exit(1);
    };

    std::printf("HAProxy 2.6 runtime API, %d members, times in ms\n", kMembers);
    std::printf("%-58s %5s %9s %9s %9s %9s\n", "arm", "runs", "median", "p99", "min", "max");

    // 1. The raw batch: 1000 set-state commands, one line, one connection.
    std::vector<double> batch;
    for (int r = 0; r < runs; ++r) {
        auto cmds = commandsFor(r % 2 ? "ready" : "drain");
        double t = nowMs();
        auto answers = referee.send(cmds);
        batch.push_back(nowMs() - t);
        if (!answers)
            fail(answers.error().describe());
    }
    row("1000 state changes, one batch (send only)", runs, batch);

    // 2. The whole apply(): read state, 1000 changes in one batch, verify.
    std::vector<double> apply;
    for (int r = 0; r < runs; ++r) {
        double t = nowMs();
        auto st = referee.apply(r % 2 ? ready : drain);
        apply.push_back(nowMs() - t);
        if (!st)
            fail(st.error().describe());
    }
    row("1000 state changes, Referee::apply (read+batch+verify)", runs, apply);

    // 3. Side by side: the same 1000 changes, one command per connection.
    std::vector<double> single;
    for (int r = 0; r < slowRuns; ++r) {
        auto cmds = commandsFor(r % 2 ? "ready" : "drain");
        double t = nowMs();
        for (const auto& c : cmds) {
            auto out = runtimeApiExchange(sock, c + "\n", 1'000);
            if (!out)
                fail(out.error().describe());
        }
        single.push_back(nowMs() - t);
    }
    row("1000 state changes, one command per connection", slowRuns, single);

    // 4. Members that come and go: 1000 dynamic servers added, then removed.
    HaproxyReferee dyn(sock, "dyn", 5'000);
    std::vector<double> adds, dels;
    for (int r = 0; r < slowRuns; ++r) {
        double t = nowMs();
        auto st = dyn.apply(ready); // add server + set state ready, 2000 commands
        adds.push_back(nowMs() - t);
        if (!st)
            fail(st.error().describe());
        t = nowMs();
        st = dyn.apply({}); // set state maint + del server, 2000 commands
        dels.push_back(nowMs() - t);
        if (!st)
            fail(st.error().describe());
    }
    row("1000 members added (add server), Referee::apply", slowRuns, adds);
    row("1000 members removed (maint+del server), Referee::apply", slowRuns, dels);

    auto b = stats(batch), a = stats(apply);
    std::printf("goal: 1000 changes in one batch < 20 ms: send-only median %.2f ms, apply "
                "median %.2f ms (one-per-connection median %.2f ms)\n",
                b.median, a.median, stats(single).median);
    cleanup();
    return 0;
}
