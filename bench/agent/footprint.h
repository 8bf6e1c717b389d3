#pragma once
// The agent's footprint as the benches see it: /proc/PID/stat and status figures, and where
// the RSS goes per mapping (/proc/PID/smaps). Header-only; used by agent_bench and
// agent_footprint.

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace pcloud::bench {

struct ProcStat {
    double cpu_s = 0;
    long rss_kb = 0;
    long rss_anon_kb = 0; // the agent's own heap and stacks (the rest is shared libraries)
    long ctx_switches = 0;
    long threads = 0;
    long long run_ns = -1; // time on a CPU from /proc/PID/schedstat (ns); -1 if absent
};

inline ProcStat procStat(pid_t pid) {
    ProcStat s;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    auto rp = line.rfind(')');
    if (rp != std::string::npos) {
        std::istringstream in(line.substr(rp + 2));
        std::string f;
        long utime = 0, stime = 0;
        for (int i = 3; i <= 15; ++i) { // fields 3.. ; utime is 14, stime 15
            in >> f;
            if (i == 14)
                utime = std::atol(f.c_str());
            if (i == 15)
                stime = std::atol(f.c_str());
        }
        s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
    std::ifstream sched("/proc/" + std::to_string(pid) + "/schedstat");
    if (long long ns = 0; sched >> ns)
        s.run_ns = ns;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0)
            s.rss_kb = std::atol(line.c_str() + 6);
        if (line.rfind("RssAnon:", 0) == 0)
            s.rss_anon_kb = std::atol(line.c_str() + 8);
        if (line.rfind("Threads:", 0) == 0)
            s.threads = std::atol(line.c_str() + 8);
        if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
            s.ctx_switches += std::atol(line.c_str() + 24);
        if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
            s.ctx_switches += std::atol(line.c_str() + 27);
    }
    return s;
}

// Where the RSS goes: /proc/PID/smaps summed per mapped file ([heap], [stack] and anonymous
// mappings by name), largest first, with the private dirty part (what the agent itself wrote:
// heap, stacks, relocated data) and the clean part (file pages that could be shared).
inline void printSmaps(pid_t pid) {
    struct Sum {
        long rss = 0, priv_dirty = 0, clean = 0, anon = 0;
        int maps = 0;
    };
    std::map<std::string, Sum> by;
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
    std::string line, name;
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        bool header = !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
                      line.find('-') < line.find(' ') &&
                      (colon == std::string::npos || colon > line.find(' '));
        if (header) {
            std::istringstream h(line);
            std::string range, perms, off, dev, inode;
            h >> range >> perms >> off >> dev >> inode;
            std::getline(h, name);
            name.erase(0, name.find_first_not_of(' '));
            if (name.empty())
                name = "[anonymous]";
            auto slash = name.rfind('/');
            if (name[0] == '/' && slash != std::string::npos)
                name = name.substr(slash + 1);
            by[name].maps++;
            continue;
        }
        long kb = colon == std::string::npos ? 0 : std::atol(line.c_str() + colon + 1);
        if (line.rfind("Rss:", 0) == 0)
            by[name].rss += kb;
        else if (line.rfind("Private_Dirty:", 0) == 0)
            by[name].priv_dirty += kb;
        else if (line.rfind("Private_Clean:", 0) == 0 || line.rfind("Shared_Clean:", 0) == 0)
            by[name].clean += kb;
        else if (line.rfind("Anonymous:", 0) == 0)
            by[name].anon += kb;
    }
    std::vector<std::pair<std::string, Sum>> rows(by.begin(), by.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.rss > b.second.rss; });
    std::printf("  agent RSS by mapping (kB; AGENT_BENCH_SMAPS=1):\n");
    std::printf("    %8s %8s %8s %8s %5s  %s\n", "rss", "dirty", "clean", "anon", "maps",
                "mapping");
    Sum total;
    for (const auto& [n, v] : rows) {
        total.rss += v.rss;
        total.priv_dirty += v.priv_dirty;
        total.clean += v.clean;
        total.anon += v.anon;
        total.maps += v.maps;
        if (v.rss > 0)
            std::printf("    %8ld %8ld %8ld %8ld %5d  %s\n", v.rss, v.priv_dirty, v.clean, v.anon,
                        v.maps, n.c_str());
    }
    std::printf("    %8ld %8ld %8ld %8ld %5d  total\n", total.rss, total.priv_dirty, total.clean,
                total.anon, total.maps);
    std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::getline(rollup, line); // header
    std::printf("  smaps_rollup:");
    while (std::getline(rollup, line)) {
        auto colon = line.find(':');
        long kb = std::atol(line.c_str() + colon + 1);
        if (kb > 0)
            std::printf(" %s=%ld", line.substr(0, colon).c_str(), kb);
    }
    std::printf("\n");
}

// "CPU 0.42 ms (0.004% of one core)" between two samples, from schedstat when available
// (nanoseconds) and from the 10 ms ticks of /proc/PID/stat otherwise.
inline std::string idleCpu(const ProcStat& a, const ProcStat& b, int seconds) {
    double ms = a.run_ns >= 0 && b.run_ns >= 0 ? static_cast<double>(b.run_ns - a.run_ns) / 1e6
                                               : (b.cpu_s - a.cpu_s) * 1000.0;
    char buf[96];
    std::snprintf(buf, sizeof buf, "CPU %.2f ms (%.4f%% of one core)", ms,
                  100.0 * ms / 1000.0 / seconds);
    return buf;
}

} // namespace pcloud::bench
