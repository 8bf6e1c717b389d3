// Control-plane failover (docs/ha.md "bench/failover-cp"): on the zone harness (three hosts
// in network namespaces, each with an etcd member, a cped and the real dped; tests/etcd/
// zone.h), kill -9 the leading cped KILLS times and cut the leader's link PARTITIONS times,
// first with etcd's default timers (the baseline) and then with --heartbeat-interval=50
// --election-timeout=500 and cped --lease-ttl 1. For each fault it measures, from the fault:
//   elected   the next "Leadership acquired" in another cped's log;
//   address   the floating address accepts a TCP connection to the hub port again;
//   operator  the first deployable_list answered through the floating address;
//   dped      the first command the new leader's dped accepted under its epoch;
// and prints p50/p99 of each, baseline and tuned side by side with the ratio, with the
// commands refused as stale (stale-epoch, expired) counted from every log.
//
//   sudo bench/failover-cp/run.sh [KILLS] [PARTITIONS]     (default 50 and 20)
#include "etcd/history.h"
#include "etcd/zone.h"
#include "support/test_support.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace pcloud;
using namespace pcloud::etcdtest;
using namespace std::chrono_literals;

namespace {

struct Sample {
    double elected = NAN, address = NAN, op = NAN, dped = NAN; // ms after the fault
};

// The time of the first log line at or after `since` (wall ms) containing `needle` and
// ending with " epoch=EPOCH"; -1 when none.
std::int64_t firstAfter(const std::string& log, const std::string& needle, std::int64_t since,
                        const std::string& epoch) {
    const std::string tail = " epoch=" + epoch;
    std::istringstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        if (line.find(needle) == std::string::npos || line.size() < tail.size() ||
            line.compare(line.size() - tail.size(), tail.size(), tail) != 0)
            continue;
        auto t = parseLogTime(line.substr(0, line.find(' ')));
        if (t >= since)
            return t;
    }
    return -1;
}

// The epoch of the first "Leadership acquired node=N epoch=E" at or after `since` in `log`.
std::optional<std::pair<std::int64_t, std::string>>
acquired(const std::string& log, const std::string& node, std::int64_t since) {
    const std::string key = "Leadership acquired node=" + node + " epoch=";
    std::istringstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        auto at = line.find(key);
        if (at == std::string::npos)
            continue;
        auto t = parseLogTime(line.substr(0, line.find(' ')));
        if (t < since)
            continue;
        auto e = line.substr(at + key.size());
        return std::pair{t, e.substr(0, e.find(' '))};
    }
    return std::nullopt;
}

double percentile(std::vector<double> v, double p) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
    if (v.empty())
        return NAN;
    std::sort(v.begin(), v.end());
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::min(v.size(), std::max<std::size_t>(rank, 1)) - 1];
}

// A client loop: `probe` (a request through the floating address) again and again, noting
// when each one that succeeded was started and answered.
class Prober {
public:
    explicit Prober(std::function<bool()> probe) : probe_(std::move(probe)) {
        thread_ = std::thread([this] {
            while (running_) {
                const auto started = wallMs();
                if (probe_()) {
                    std::lock_guard lock(mutex_);
                    ok_.emplace_back(started, wallMs());
                } else {
                    std::this_thread::sleep_for(20ms);
                }
            }
        });
    }
    ~Prober() {
        running_ = false;
        thread_.join();
    }
    // When the first request started after `t` was answered; -1 when none yet. (One
    // started before `t` may have been answered by the old leader.)
    std::int64_t firstAfter(std::int64_t t) {
        std::lock_guard lock(mutex_);
        for (auto [started, answered] : ok_)
            if (started > t)
                return answered;
        return -1;
    }

private:
    std::function<bool()> probe_;
    std::atomic<bool> running_{true};
    std::mutex mutex_;
    std::vector<std::pair<std::int64_t, std::int64_t>> ok_;
    std::thread thread_;
};

struct Run {
    std::vector<Sample> kills, partitions;
    std::size_t stale = 0; // stale-epoch and expired refusals in every log
    std::string error;
};

// One fault on the current leader, and the wait for the zone to settle after it.
std::optional<Sample> fault(Zone& z, Prober& op, bool partition, std::string& error) {
    int old = -1;
    if (!testsupport::waitFor([&] { return (old = z.leader()) >= 0 && z.dpedAnswers(); }, 30s,
                              50ms)) {
        error = "no leader with an answering dped before the fault";
        return std::nullopt;
    }
    const std::int64_t t0 = wallMs();
    if (partition) {
        if (auto e = z.setLink(old, false); !e.empty()) {
            error = e;
            return std::nullopt;
        }
    } else {
        z.signalCped(old, SIGKILL);
    }
    Sample s;
    int next = -1;
    std::string epoch;
    std::int64_t tFip = -1;
    const bool done = testsupport::waitFor(
        [&] {
            for (int i = 0; next < 0 && i < Zone::kHosts; ++i)
                if (i != old)
                    if (auto a = acquired(z.host(i).log(), z.host(i).name, t0)) {
                        next = i;
                        epoch = a->second;
                        s.elected = static_cast<double>(a->first - t0);
                    }
            if (tFip < 0 && z.hubAnswers(100ms))
                tFip = wallMs();
            if (next < 0 || tFip < 0)
                return false;
            auto tOp = op.firstAfter(t0);
            // The new leader's dped's first command under the new epoch.
            auto tDped = firstAfter(z.host(next).log(), "info: Accepted a command deployable=web",
                                    t0, epoch);
            if (tOp < 0 || tDped < 0)
                return false;
            s.address = static_cast<double>(tFip - t0);
            s.op = static_cast<double>(tOp - t0);
            s.dped = static_cast<double>(tDped - t0);
            return true;
        },
        30s, 10ms);
    // Heal: the link back up, or the killed cped started again (as systemd would); it
    // rejoins as a follower (and deletes the address it left).
    if (partition) {
        if (auto e = z.setLink(old, true); !e.empty())
            error = e;
    } else {
        z.startCped(old);
    }
    if (!testsupport::waitFor(
            [&] {
                return !z.holds(old) &&
                       z.shell("deployable_list", z.host(old).addr).out.find("not-leader") !=
                           std::string::npos;
            },
            30s, 100ms)) {
        error = z.host(old).name + " did not rejoin as a follower after the fault";
        return std::nullopt;
    }
    if (!done) {
        error = "the zone did not recover within 30 s of the fault";
        return std::nullopt;
    }
    return s;
}

Run runOne(const ZoneOptions& o, int kills, int partitions, const char* label) {
    Run r;
    Zone z(o);
    if (auto e = z.start(); !e.empty()) {
        r.error = e;
        return r;
    }
    Prober op([&] { return z.shell("deployable_list").rc == 0; });
    // Keeps asking the leader's dped, so that its first command comes as soon as it can.
    Prober dped([&] { return z.dpedAnswers(); });
    for (int k = 0; k < kills + partitions && r.error.empty(); ++k) {
        const bool partition = k >= kills;
        auto s = fault(z, op, partition, r.error);
        if (!s)
            break;
        (partition ? r.partitions : r.kills).push_back(*s);
        std::fprintf(stderr,
                     "failover-cp %s %s %d: elected %.0f ms, address %.0f ms, operator %.0f ms, "
                     "dped %.0f ms\n",
                     label, partition ? "partition" : "kill", k + 1, s->elected, s->address, s->op,
                     s->dped);
    }
    for (int i = 0; i < Zone::kHosts; ++i) {
        const std::string log = z.host(i).log();
        for (const char* needle : {"code=stale-epoch", "code=expired"})
            for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1))
                ++r.stale;
    }
    return r;
}

void table(const char* what, const std::vector<Sample>& base, const std::vector<Sample>& tuned) {
    std::printf("\n%s (%zu baseline, %zu tuned)\n", what, base.size(), tuned.size());
    std::printf("%-40s %10s %10s %10s %10s %8s %8s\n", "from the fault to", "base p50", "base p99",
                "tuned p50", "tuned p99", "p50 x", "p99 x");
    auto row = [&](const char* name, double Sample::*m) {
        std::vector<double> b, t;
        for (const auto& s : base)
            b.push_back(s.*m);
        for (const auto& s : tuned)
            t.push_back(s.*m);
        double b50 = percentile(b, 50), b99 = percentile(b, 99);
        double t50 = percentile(t, 50), t99 = percentile(t, 99);
        std::printf("%-40s %8.0fms %8.0fms %8.0fms %8.0fms %8.2f %8.2f\n", name, b50, b99, t50, t99,
                    t50 / b50, t99 / b99);
    };
    row("a new leader elected", &Sample::elected);
    row("the floating address answers", &Sample::address);
    row("first operator command served", &Sample::op);
    row("first command its dped accepted", &Sample::dped);
}

} // namespace

int main(int argc, char** argv) {
    int kills = argc > 1 ? std::atoi(argv[1]) : 50;
    int partitions = argc > 2 ? std::atoi(argv[2]) : 20;
    if (kills < 0 || partitions < 0 || kills + partitions == 0) {
        std::fprintf(stderr, "usage: failover_cp_bench [KILLS] [PARTITIONS]\n");
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    Run base = runOne({}, kills, partitions, "baseline");
    if (!base.error.empty()) {
        std::fprintf(stderr, "failover-cp: baseline: %s\n", base.error.c_str());
        return 1;
    }
    Run tuned =
        runOne({{"--heartbeat-interval=50", "--election-timeout=500"}, {"--lease-ttl", "1"}}, kills,
               partitions, "tuned");
    if (!tuned.error.empty()) {
        std::fprintf(stderr, "failover-cp: tuned: %s\n", tuned.error.c_str());
        return 1;
    }
    std::printf("failover-cp: 3 hosts (network namespaces on one machine), etcd 3.4\n"
                "baseline: etcd defaults (heartbeat 100 ms, election 1000 ms), lease TTL 2 s\n"
                "tuned:    --heartbeat-interval=50 --election-timeout=500, lease TTL 1 s\n");
    table("leader cped killed (kill -9)", base.kills, tuned.kills);
    table("leader cut off (its link down)", base.partitions, tuned.partitions);
    std::printf("\ncommands refused as stale (stale-epoch, expired): baseline %zu, tuned %zu\n",
                base.stale, tuned.stale);
    std::printf("for comparison: keepalived about 3.6 s with its defaults (3 adverts of 1 s + "
                "skew); OpenNebula states 100 ms (not reachable with etcd leases: 1 s minimum)\n");
    return 0;
}
