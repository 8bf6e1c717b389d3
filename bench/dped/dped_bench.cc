// dped on real libvirtd + QEMU tiny guests with the real agent (an in-process hub stands in
// for cped, as in tests/e2e). Measures, asserting nothing:
//   - SIGKILL of a qemu, KILLS times: kill -> dped sees the pidfd exit / the channel EOF
//     (earliest signal), kill -> libvirt's STOPPED event as dped receives it, kill -> the
//     domain runs again, kill -> the agent's first heartbeat, kill -> the "failed" event at
//     a subscriber;
//   - SIGSTOP of a qemu (a hung guest), STOPS times: -> declared failed, and the excess over
//     the heartbeat timeout;
//   - overlapping crashes, PAIRS times (needs 2 assemblies): SIGKILL guest A's qemu, and as
//     soon as dped has seen it (A's destroy+start is then under way), SIGKILL guest B's;
//     B's kill -> dped sees B's pidfd exit, and -> B's "failed" event. Shows whether one
//     assembly's slow libvirt calls hold back another's recovery;
//   - dped's RSS per supervised assembly.
// dped logs mono_us= (CLOCK_MONOTONIC, shared by all processes) on the lines parsed here.
// DPED_BIN=/path/to/dped benchmarks another dped build (a baseline arm) against this one's
// agent and guest.
//   usage: dped_bench [KILLS=10] [STOPS=3] [ASSEMBLIES=2] [HEARTBEAT_TIMEOUT_MS=3000] [PAIRS=5]
#include "bus/client.h"
#include "bus/hub.h"
#include "common/fs.h"
#include "model/model.h"
#include "store/store.h"
#include "support/bench_stats.h"
#include "support/journal_standin.h"
#include "support/test_support.h"
#include "virt/guest_xml.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using nlohmann::json;
using pcloud::bench::monoUs;
using pcloud::bench::stats;
using pcloud::bench::Stats;
using namespace std::chrono_literals;

namespace {

const std::string kBin = PCLOUD_BIN_DIR;
const std::string kSrc = PCLOUD_SOURCE_DIR;

long rssKb(pid_t pid) {
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/status");
    if (!text)
        return -1;
    auto pos = text->find("VmRSS:");
    return pos == std::string::npos ? -1 : std::atol(text->c_str() + pos + 6);
}

void printRow(const char* what, const std::vector<double>& v) {
    auto s = stats(v);
    if (s.n == 0)
        std::printf("%-44s %10s %10s %10s %4s\n", what, "-", "-", "-", "0");
    else
        std::printf("%-44s %10.1f %10.1f %10.1f %4zu\n", what, s.median, s.p99, s.max, s.n);
}

// First line at/after byte `from` of the log containing `what` and `assembly=A ` with a
// mono_us >= `after`; returns its mono_us.
std::optional<std::int64_t> logMono(const std::string& log, std::size_t from,
                                    const std::string& what, const std::string& assembly,
                                    std::int64_t after) {
    std::size_t pos = from;
    while (pos < log.size()) {
        auto end = log.find('\n', pos);
        if (end == std::string::npos)
            end = log.size();
        std::string_view line(log.data() + pos, end - pos);
        pos = end + 1;
        if (line.find(what) == std::string_view::npos)
            continue;
        if (line.find("assembly=" + assembly + " ") == std::string_view::npos)
            continue;
        auto m = line.find("mono_us=");
        if (m == std::string_view::npos)
            continue;
        std::int64_t us = std::atoll(std::string(line.substr(m + 8, 24)).c_str());
        if (us >= after)
            return us;
    }
    return std::nullopt;
}

class Bench {
public:
    int run(int kills, int stops, int assemblies, Millis hbTimeout, int pairs);

private:
    bool setUp(int assemblies, Millis hbTimeout);
    void tearDown();
    json status();
    bool healthy(const std::string& name);
    bool allHealthy();
    std::optional<std::int64_t> eventAt(const std::string& assembly, const std::string& state,
                                        const std::string& reasonPart, std::int64_t after,
                                        std::string* reason = nullptr) {
        std::lock_guard lock(mu_);
        for (const auto& [us, e] : events_)
            if (us >= after && e.value("assembly", "") == assembly &&
                e.value("state", "") == state &&
                e.value("reason", "").find(reasonPart) != std::string::npos) {
                if (reason)
                    *reason = e.value("reason", "");
                return us;
            }
        return std::nullopt;
    }

    bus::Hub hub_{bus::insecureHubOptions()}; // plain amqp://, not about TLS
    bus::Client client_;
    std::mutex mu_;
    std::vector<std::pair<std::int64_t, json>> events_; // receive mono_us, event
    std::string dep_, dir_, log_;
    std::vector<std::string> names_;
    std::string readLog() {
        auto t = fs::readFile(log_);
        return t ? *t : std::string();
    }
    pid_t dped_ = -1;
};

bool Bench::setUp(int assemblies, Millis hbTimeout) {
    std::string out = runCapture(kSrc + "/scripts/build-guest.sh " + kBin + "/pcloud-agent 2>&1");
    auto pos = out.rfind("GUEST_DIR=");
    if (pos == std::string::npos) {
        std::fprintf(stderr, "dped_bench: could not build the guest:\n%s\n", out.c_str());
        return false;
    }
    std::string guest = out.substr(pos + 10);
    while (!guest.empty() && isspace(static_cast<unsigned char>(guest.back())))
        guest.pop_back();

    dep_ = "pcb" + std::to_string(::getpid());
    dir_ = "/tmp/" + dep_;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/channels");
    if (!hub_.start("amqp://127.0.0.1:0").ok())
        return false;
    if (!client_.connect("amqp://127.0.0.1:" + std::to_string(hub_.boundPort())).ok() ||
        !client_.waitConnected(10s))
        return false;
    auto sub = testsupport::serveJournal(client_, [this](const bus::Message& m) {
        auto now = monoUs();
        auto j = json::parse(m.body, nullptr, false);
        if (j.is_discarded())
            return;
        std::lock_guard lock(mu_);
        events_.emplace_back(now, j);
    });
    if (!client_.waitSubscribed(sub, 10s))
        return false;

    model::Model m;
    model::Deployable d;
    d.name = dep_;
    d.heartbeat_interval = 1'000;
    d.heartbeat_timeout = hbTimeout;
    d.backoff = {0, 1.0, 0, 300'000}; // restart at once every time: measure, not back off
    d.escalation = {100'000, 3'600'000};
    d.referee.driver = "log";
    for (int i = 0; i < assemblies; ++i) {
        std::string name = dep_ + "-" + std::to_string(i);
        auto g = virt::tinyGuestIn(name, guest, dir_, freePort());
        model::Assembly a;
        a.name = name;
        a.uuid = g.uuid;
        a.domain_xml = virt::renderTinyGuestXml(g).value();
        a.escalation = {100'000, 3'600'000};
        a.address = "127.0.0.1:" + std::to_string(g.httpPort);
        model::Resource r;
        r.name = "web";
        r.klass = model::ResourceClass::Process;
        r.unit = "/bin/busybox httpd -f -p 80 -h /www";
        a.resources.push_back(r);
        m.assemblies[name] = a;
        d.assemblies.push_back(name);
        names_.push_back(name);
    }
    m.deployables[dep_] = d;
    if (!store::saveModel(dir_, m).ok())
        return false;

    log_ = dir_ + "/dped.log";
    const char* other = std::getenv("DPED_BIN");
    std::string bin = other && *other ? other : kBin + "/dped";
    std::printf("dped_bench: dped binary %s\n", bin.c_str());
    dped_ = spawnDped(bin, dep_, dir_, hub_.boundPort(), log_,
                      {"--config", writeTinyGuestHostConfig(dir_)});
    return true;
}

void Bench::tearDown() {
    if (dped_ > 0) {
        ::kill(dped_, SIGKILL);
        ::waitpid(dped_, nullptr, 0);
    }
    for (const auto& n : names_) {
        (void)::system(("virsh -c qemu:///system destroy " + n + " >/dev/null 2>&1").c_str());
        (void)::system(("virsh -c qemu:///system undefine " + n + " >/dev/null 2>&1").c_str());
    }
    client_.close();
    hub_.stop();
    std::filesystem::remove_all(dir_);
}

json Bench::status() {
    auto r = client_.request("pcloud.dped." + dep_,
                             R"({"v":1,"type":"command","id":"s","command":"status"})", 5s);
    if (!r)
        return json();
    auto j = json::parse(r->body, nullptr, false);
    return j.is_discarded() ? json() : j.value("result", json());
}

bool Bench::healthy(const std::string& name) {
    auto st = status();
    if (!st.is_object())
        return false;
    for (const auto& a : st["assemblies"])
        if (a["name"] == name)
            return a["domain"] == "running" && a["agent"] == "connected" && a["phase"] == "up" &&
                   !a["services"].empty() && a["services"][0]["state"] == "active";
    return false;
}

bool Bench::allHealthy() {
    for (const auto& n : names_)
        if (!healthy(n))
            return false;
    return true;
}

int Bench::run(int kills, int stops, int assemblies, Millis hbTimeout, int pairs) {
    if (!setUp(assemblies, hbTimeout)) {
        tearDown();
        return 1;
    }
    std::printf("dped_bench: %d tiny TCG guest(s), heartbeat timeout %lld ms, state %s\n",
                assemblies, static_cast<long long>(hbTimeout), dir_.c_str());
    if (!waitFor([&] { return allHealthy(); }, 180s, 50ms)) {
        std::fprintf(stderr, "dped_bench: guests did not become healthy; see %s\n", log_.c_str());
        tearDown();
        return 1;
    }
    long rssStart = rssKb(dped_);

    std::vector<double> pidfd, eof, earliest, libvirtEv, running, heartbeat, failedEv;
    const std::string& target = names_[0];
    std::printf("\n%-5s %9s %9s %9s %11s %10s %10s %9s\n", "kill", "pidfd", "chan_eof", "earliest",
                "libvirt_ev", "running", "heartbeat", "event");
    for (int i = 0; i < kills; ++i) {
        pid_t qemu = qemuPidOf(target);
        auto logSize = readLog().size();
        std::int64_t t0 = monoUs();
        if (qemu <= 0 || ::kill(qemu, SIGKILL) != 0) {
            std::fprintf(stderr, "kill %d: no qemu pid for %s\n", i + 1, target.c_str());
            break;
        }
        bool ok = waitFor([&] { return qemuPidOf(target) != qemu && healthy(target); }, 180s, 50ms);
        // The libvirt event may trail the restart; give it its own bounded wait.
        std::string log;
        waitFor(
            [&] {
                log = readLog();
                return logMono(log, logSize, "libvirt reports domain stopped", target, t0)
                    .has_value();
            },
            10s, 50ms);
        auto ms = [&](std::optional<std::int64_t> us) { return us ? (*us - t0) / 1000.0 : -1.0; };
        auto p = logMono(log, logSize, "qemu process exited", target, t0);
        auto c = logMono(log, logSize, "Guest channel closed", target, t0);
        auto l = logMono(log, logSize, "libvirt reports domain stopped", target, t0);
        auto r = logMono(log, logSize, "Domain running", target, t0);
        auto h = logMono(log, logSize, "First heartbeat", target, t0);
        auto f = eventAt(target, "failed", "", t0);
        std::optional<std::int64_t> first;
        for (const std::optional<std::int64_t>& v : {p, c})
            if (v && (!first || *v < *first))
                first = v;
        std::printf("%-5d %9.1f %9.1f %9.1f %11.1f %10.1f %10.1f %9.1f%s\n", i + 1, ms(p), ms(c),
                    ms(first), ms(l), ms(r), ms(h), ms(f), ok ? "" : "  (not healthy again!)");
        if (p)
            pidfd.push_back(ms(p));
        if (c)
            eof.push_back(ms(c));
        if (first)
            earliest.push_back(ms(first));
        if (l)
            libvirtEv.push_back(ms(l));
        if (r)
            running.push_back(ms(r));
        if (h)
            heartbeat.push_back(ms(h));
        if (f)
            failedEv.push_back(ms(f));
        if (!ok)
            break;
        // Let the other guests settle too, so each kill starts from a healthy deployable.
        waitFor([&] { return allHealthy(); }, 60s, 50ms);
    }

    std::vector<double> hangTotal, hangExcess;
    std::printf("\n%-5s %16s %24s\n", "stop", "sigstop->failed", "excess over timeout(dped)");
    for (int i = 0; i < stops; ++i) {
        pid_t qemu = qemuPidOf(target);
        std::int64_t t0 = monoUs();
        if (qemu <= 0 || ::kill(qemu, SIGSTOP) != 0)
            break;
        std::string reason;
        bool declared = waitFor(
            [&] { return eventAt(target, "failed", "heartbeat timeout", t0, &reason).has_value(); },
            std::chrono::milliseconds(hbTimeout + 30'000), 50ms);
        auto at = eventAt(target, "failed", "heartbeat timeout", t0);
        // "heartbeat timeout: no heartbeat for 3012ms (timeout 3s)": dped's own measure.
        double excess = -1;
        if (auto p = reason.find("no heartbeat for "); p != std::string::npos)
            excess = std::atof(reason.c_str() + p + 17) - static_cast<double>(hbTimeout);
        double total = at ? (*at - t0) / 1000.0 : -1;
        std::printf("%-5d %16.1f %24.1f\n", i + 1, total, excess);
        if (!declared) {
            ::kill(qemu, SIGCONT);
            break;
        }
        hangTotal.push_back(total);
        hangExcess.push_back(excess);
        ::kill(qemu, SIGCONT); // dped destroys it anyway; do not leave a stopped process
        if (!waitFor([&] { return qemuPidOf(target) != qemu && allHealthy(); }, 180s, 50ms))
            break;
    }
    std::vector<double> otherPidfd, otherFailed;
    int overlapped = 0;
    if (pairs > 0 && names_.size() >= 2) {
        const std::string& a = names_[0];
        const std::string& b = names_[1];
        std::printf("\n%-5s %14s %14s %18s\n", "pair", "B:pidfd_seen", "B:failed_ev",
                    "A:running_after_B");
        for (int i = 0; i < pairs; ++i) {
            if (!waitFor([&] { return allHealthy(); }, 120s, 50ms))
                break;
            pid_t qa = qemuPidOf(a), qb = qemuPidOf(b);
            if (qa <= 0 || qb <= 0)
                break;
            auto logSize = readLog().size();
            std::int64_t tA = monoUs();
            ::kill(qa, SIGKILL);
            // B dies once dped has taken in A's death, i.e. while A's recovery is starting.
            std::string log;
            if (!waitFor(
                    [&] {
                        log = readLog();
                        return logMono(log, logSize, "qemu process exited", a, tA).has_value();
                    },
                    10s, 2ms))
                break;
            std::int64_t tB = monoUs();
            ::kill(qb, SIGKILL);
            bool ok =
                waitFor([&] { return qemuPidOf(a) != qa && qemuPidOf(b) != qb && allHealthy(); },
                        180s, 50ms);
            log = readLog();
            auto ms = [&](std::optional<std::int64_t> us) {
                return us ? (*us - tB) / 1000.0 : -1.0;
            };
            auto bp = logMono(log, logSize, "qemu process exited", b, tB);
            auto bf = eventAt(b, "failed", "", tB);
            auto ar = logMono(log, logSize, "Domain running", a, tA);
            // The pair tests the overlap only if A was not running again before B died.
            bool overlap = ar && *ar > tB;
            overlapped += overlap ? 1 : 0;
            std::printf("%-5d %14.1f %14.1f %18.1f%s\n", i + 1, ms(bp), ms(bf), ms(ar),
                        ok ? "" : "  (not healthy again!)");
            if (bp)
                otherPidfd.push_back(ms(bp));
            if (bf)
                otherFailed.push_back(ms(bf));
            if (!ok)
                break;
        }
    }
    long rssEnd = rssKb(dped_);
    long rssSelf = rssKb(::getpid());

    std::printf("\nSIGKILL qemu -> (ms after the kill), TCG tiny guest, qemu:///system\n");
    std::printf("%-44s %10s %10s %10s %4s\n", "signal", "median", "p99", "max", "n");
    printRow("earliest signal (min of pidfd, channel EOF)", earliest);
    printRow("  pidfd exit seen by dped", pidfd);
    printRow("  channel EOF seen by dped", eof);
    printRow("libvirt STOPPED event seen by dped", libvirtEv);
    printRow("'failed' event at a subscriber", failedEv);
    printRow("domain running again", running);
    printRow("agent's first heartbeat", heartbeat);
    std::printf("\nSIGSTOP qemu (hung guest), heartbeat timeout %lld ms\n",
                static_cast<long long>(hbTimeout));
    printRow("SIGSTOP -> 'failed' event", hangTotal);
    printRow("excess over the timeout (dped's measure)", hangExcess);
    if (pairs > 0 && names_.size() >= 2) {
        std::printf("\nOverlapping crashes: B killed while A's restart is under way "
                    "(%d of %zu pairs overlapped)\n",
                    overlapped, otherFailed.size());
        printRow("B's kill -> dped sees B's pidfd exit", otherPidfd);
        printRow("B's kill -> B's 'failed' event", otherFailed);
    }
    std::printf("\nRSS (kB): dped %ld at start, %ld at end, %d assemblies -> %.0f kB/assembly\n",
                rssStart, rssEnd, assemblies, static_cast<double>(rssEnd) / assemblies);
    std::printf("RSS (kB): this process (in-process hub standing in for cped + client) %ld\n",
                rssSelf);
    if (fs::exists(kBin + "/cped"))
        std::printf("cped: %s/cped exists but is not driven by this bench (not measured)\n",
                    kBin.c_str());
    else
        std::printf("cped: not built (%s/cped missing); hub measured in-process only\n",
                    kBin.c_str());
    tearDown();
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    int kills = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
    int stops = argc > 2 ? std::max(0, std::atoi(argv[2])) : 3;
    int assemblies = argc > 3 ? std::max(1, std::atoi(argv[3])) : 2;
    Millis hb = argc > 4 ? std::max(1000, std::atoi(argv[4])) : 3000;
    int pairs = argc > 5 ? std::max(0, std::atoi(argv[5])) : 5;
    if (::geteuid() != 0) {
        std::fprintf(stderr, "dped_bench: needs root (qemu:///system)\n");
        return 77;
    }
    if (std::system("virsh -c qemu:///system version >/dev/null 2>&1") != 0) {
        std::fprintf(stderr, "dped_bench: libvirtd is not running (scripts/setup-libvirt.sh)\n");
        return 69;
    }
    std::signal(SIGPIPE, SIG_IGN);
    Bench b;
    return b.run(kills, stops, assemblies, hb, pairs);
}
