// Forged traffic changes nothing (issue 10): dped on real libvirtd + two tiny QEMU guests
// with the real agent (taking only signed commands: `ca =` and `deployable =` in the image),
// an in-process hub standing in for cped with mutual TLS and authz on, exactly as cped runs
// it. A forger holding guest A's agent certificate (a compromised guest, an authenticated but
// untrusted identity) floods the hub with forged, replayed, malformed and oversized messages
// to every address it can name, plus unauthenticated TCP and TLS peers (forger.h). Prints:
//   - the actions dped and the agents took because of it (must be 0), counted from dped's
//     log and the journal and from the agents' logs (the guests' consoles), not from the
//     forger's view;
//   - crash latency, SIGKILL of guest B's qemu KILLS times without the flood and KILLS times
//     during it: kill -> dped sees the pidfd exit / channel EOF, kill -> "failed" event, side
//     by side with the ratio flood / no flood (the goal: <= 2x);
//   - the flood: messages/s, what the hub accepted, rejected and refused at attach; CPU of
//     the bench process (the hub), dped and the forger.
// docs/bench-forgery.md explains how to read it.
//   usage: forgery_bench [MESSAGES=1000000] [KILLS=10] [HEARTBEAT_TIMEOUT_MS=3000]
//          forgery_bench --forger PORT CA CERT KEY SELF VICTIM VICTIM_UUID DEPLOYABLE
//                        WRONG_KEY WRONG_CERT STATS_FILE      (the forger process, internal)
#include "bus/client.h"
#include "bus/hub.h"
#include "common/fs.h"
#include "forger.h"
#include "model/model.h"
#include "pki/pki.h"
#include "store/store.h"
#include "support/bench_stats.h"
#include "support/journal_standin.h"
#include "support/test_support.h"
#include "support/test_tls.h"
#include "virt/guest_xml.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sched.h>
#include <set>
#include <sys/stat.h>
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

// utime + stime of a process, in seconds.
double cpuSeconds(pid_t pid) {
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/stat");
    if (!text)
        return -1;
    auto close = text->rfind(')');
    if (close == std::string::npos)
        return -1;
    std::vector<std::string> f;
    std::size_t pos = close + 2;
    while (pos < text->size() && f.size() < 15) {
        auto sp = text->find(' ', pos);
        f.push_back(text->substr(pos, sp - pos));
        if (sp == std::string::npos)
            break;
        pos = sp + 1;
    }
    if (f.size() < 13)
        return -1;
    // fields after the comm: state(0) ... utime(11) stime(12)
    return (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) /
           static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void printPair(const char* what, const std::vector<double>& base,
               const std::vector<double>& flood) {
    auto b = stats(base), f = stats(flood);
    auto cell = [](const Stats& s, double v) {
        char buf[32];
        if (s.n == 0)
            std::snprintf(buf, sizeof buf, "%8s", "-");
        else
            std::snprintf(buf, sizeof buf, "%8.1f", v);
        return std::string(buf);
    };
    auto ratio = [](const Stats& x, const Stats& y, double a, double c) {
        char buf[32];
        if (x.n == 0 || y.n == 0 || a <= 0)
            std::snprintf(buf, sizeof buf, "%7s", "-");
        else
            std::snprintf(buf, sizeof buf, "%6.2fx", c / a);
        return std::string(buf);
    };
    std::printf("%-40s %s %s %3zu | %s %s %3zu | %s %s\n", what, cell(b, b.median).c_str(),
                cell(b, b.p99).c_str(), b.n, cell(f, f.median).c_str(), cell(f, f.p99).c_str(), f.n,
                ratio(b, f, b.median, f.median).c_str(), ratio(b, f, b.p99, f.p99).c_str());
}

// Lines of `log` from byte `from` on, up to byte `to`.
std::vector<std::string_view> linesOf(const std::string& log, std::size_t from, std::size_t to) {
    std::vector<std::string_view> out;
    std::size_t pos = std::min(from, log.size());
    to = std::min(to, log.size());
    while (pos < to) {
        auto end = log.find('\n', pos);
        if (end == std::string::npos || end > to)
            end = to;
        out.emplace_back(log.data() + pos, end - pos);
        pos = end + 1;
    }
    return out;
}

// First line at/after byte `from` containing `what` and `assembly=A ` with mono_us >= after.
std::optional<std::int64_t> logMono(const std::string& log, std::size_t from,
                                    const std::string& what, const std::string& assembly,
                                    std::int64_t after) {
    for (auto line : linesOf(log, from, log.size())) {
        if (line.find(what) == std::string_view::npos ||
            line.find("assembly=" + assembly + " ") == std::string_view::npos)
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

// dped's log lines that are actions (or the start of one) taken for an assembly.
const std::vector<std::string> kDpedActions = {"Domain started",
                                               "Domain destroyed",
                                               "Domain shutdown requested",
                                               "Agent command sent",
                                               "Event ",
                                               "Referee membership change",
                                               "Agent connected",
                                               "Planned stop requested",
                                               "Model reloaded",
                                               "Policy decision"};

struct ActionCount {
    std::map<std::string, int> byLine; // action line -> count
    int total() const {
        int n = 0;
        for (const auto& [_, c] : byLine)
            n += c;
        return n;
    }
};

ActionCount dpedActions(const std::string& log, std::size_t from, std::size_t to,
                        const std::string& assembly) {
    ActionCount a;
    for (auto line : linesOf(log, from, to)) {
        bool mine = line.find("assembly=" + assembly + " ") != std::string_view::npos ||
                    line.find("member=" + assembly + " ") != std::string_view::npos ||
                    line.find("member=" + assembly + "\"") != std::string_view::npos;
        bool global = line.find("Planned stop requested") != std::string_view::npos ||
                      line.find("Model reloaded") != std::string_view::npos;
        if (!mine && !global)
            continue;
        for (const auto& what : kDpedActions)
            if (line.find(": " + what) != std::string_view::npos) {
                ++a.byLine[what == "Event " ? "Event" : what];
                break;
            }
    }
    return a;
}

int countLines(const std::string& log, std::size_t from, std::size_t to, const std::string& what,
               const std::string& alsoContains = {}) {
    int n = 0;
    for (auto line : linesOf(log, from, to))
        if (line.find(what) != std::string_view::npos &&
            (alsoContains.empty() || line.find(alsoContains) != std::string_view::npos))
            ++n;
    return n;
}

// ---- the forger process ----
int forgerMain(int argc, char** argv) {
    if (argc < 13) {
        std::fprintf(stderr, "forgery_bench --forger: wrong arguments\n");
        return 2;
    }
    forgery::ForgerOptions o;
    o.port = std::atoi(argv[2]);
    o.caFile = argv[3];
    o.certFile = argv[4];
    o.keyFile = argv[5];
    o.self = argv[6];
    o.victim = argv[7];
    o.victimUuid = argv[8];
    o.deployable = argv[9];
    o.wrongSignerKey = argv[10];
    o.wrongSignerCert = argv[11];
    std::string statsFile = argv[12];
    o.total = 0; // until SIGTERM
    // FORGER_NICE=N lowers the forger's CPU priority by N (a guest's forger is bounded by its
    // vCPUs; on the host it competes with the hub and dped for the same cores).
    if (const char* n = std::getenv("FORGER_NICE"); n && *n)
        (void)!::nice(std::atoi(n));
    // FORGER_SCHED_IDLE=1: the forger runs only on CPU nobody else wants (a diagnostic arm:
    // what the flood costs pcloud when the attacker's own CPU does not compete with it).
    if (const char* n = std::getenv("FORGER_SCHED_IDLE"); n && std::string(n) == "1") {
        sched_param sp{};
        (void)sched_setscheduler(0, SCHED_IDLE, &sp);
    }
    // FORGER_REPLY_QUEUES=N: attaches to guessed reply queues pcloud.reply.1..N (default 8).
    if (const char* n = std::getenv("FORGER_REPLY_QUEUES"); n && *n)
        o.replyQueues = std::max(0, std::atoi(n));
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    forgery::Forger f(o);
    f.start();
    timespec step{0, 250'000'000};
    while (sigtimedwait(&sigs, nullptr, &step) < 0)
        (void)fs::writeAtomic(statsFile, f.stats().toJson(), {}, 0644);
    f.stop();
    (void)fs::writeAtomic(statsFile, f.stats().toJson(), {}, 0644);
    return 0;
}

// ---- the bench ----
class Bench {
public:
    int run(std::uint64_t messages, int kills, Millis hbTimeout);

private:
    struct KillSeries {
        std::vector<double> pidfd, eof, earliest, failed, running, heartbeat;
        std::vector<double> afterSeen; // earliest signal -> 'failed' event: dped + hub only
        int healthyAgain = 0;
    };
    bool setUp(Millis hbTimeout);
    void tearDown();
    json status();
    bool healthy(const std::string& name);
    bool allHealthy() {
        for (const auto& n : names_)
            if (!healthy(n))
                return false;
        return true;
    }
    void killSeries(const char* arm, int kills, KillSeries& out);
    std::optional<std::int64_t> eventAt(const std::string& assembly, const std::string& state,
                                        std::int64_t after) {
        std::lock_guard lock(mu_);
        for (const auto& [us, e] : events_)
            if (us >= after && e.value("assembly", "") == assembly && e.value("state", "") == state)
                return us;
        return std::nullopt;
    }
    std::string readFile(const std::string& p) {
        auto t = fs::readFile(p);
        return t ? *t : std::string();
    }
    json forgerStats() {
        auto j = json::parse(readFile(forgerStats_), nullptr, false);
        return j.is_discarded() ? json::object() : j;
    }

    std::unique_ptr<bus::Hub> hub_;
    bus::Client client_;
    std::mutex mu_;
    std::vector<std::pair<std::int64_t, json>> events_; // receive mono_us, event
    std::string dep_, dir_, pki_, log_, forgerStats_;
    std::vector<std::string> names_, uuids_;
    pid_t dped_ = -1, forger_ = -1;
};

bool Bench::setUp(Millis hbTimeout) {
    std::string out = runCapture(kSrc + "/scripts/build-guest.sh " + kBin + "/pcloud-agent 2>&1");
    auto pos = out.rfind("GUEST_DIR=");
    if (pos == std::string::npos) {
        std::fprintf(stderr, "forgery_bench: could not build the guest:\n%s\n", out.c_str());
        return false;
    }
    std::string base = out.substr(pos + 10);
    while (!base.empty() && isspace(static_cast<unsigned char>(base.back())))
        base.pop_back();

    dep_ = "pcf" + std::to_string(::getpid());
    dir_ = "/tmp/" + dep_;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/channels");
    ::chmod(dir_.c_str(), 0700);
    for (int i = 0; i < 2; ++i)
        names_.push_back(dep_ + "-" + std::string(1, static_cast<char>('a' + i)));

    // The run's PKI (lib/pki, as pcloud-pki makes it): the hub is cped:bench, dped presents
    // dped:DEP, the forger holds agent:A. A second CA issues a dped:DEP the forger signs with.
    pki_ = dir_ + "/pki";
    std::string other = dir_ + "/other-ca";
    auto issue = [](const std::string& dir, const std::string& id) {
        auto parsed = pki::parseIdentity(id);
        if (!parsed)
            return false;
        auto r = pki::issue(dir, *parsed);
        if (!r)
            std::fprintf(stderr, "forgery_bench: issue %s: %s\n", id.c_str(),
                         r.error().describe().c_str());
        return bool(r);
    };
    if (!pki::initCa(pki_) || !pki::initCa(other) || !issue(pki_, "cped:bench") ||
        !issue(pki_, "dped:" + dep_) || !issue(pki_, "agent:" + names_[0]) ||
        !issue(other, "dped:" + dep_))
        return false;

    out = runCommand(kSrc + "/bench/forgery/make-guest.sh " + base + " " + pki_ + "/ca.crt " +
                     dep_ + " " + dir_ + "/guest 2>&1")
              .out;
    if (out.find("GUEST_DIR=") == std::string::npos) {
        std::fprintf(stderr, "forgery_bench: make-guest.sh failed:\n%s\n", out.c_str());
        return false;
    }
    std::string guest = dir_ + "/guest";

    model::Model m;
    model::Deployable d;
    d.name = dep_;
    d.heartbeat_interval = 1'000;
    d.heartbeat_timeout = hbTimeout;
    d.backoff = {0, 1.0, 0, 300'000}; // restart at once every time: measure, not back off
    d.escalation = {100'000, 3'600'000};
    d.referee.driver = "log";
    for (const auto& name : names_) {
        auto g = virt::tinyGuestIn(name, guest, dir_, freePort());
        model::Assembly a;
        a.name = name;
        a.uuid = g.uuid;
        a.domain_xml = virt::renderTinyGuestXml(g).value();
        // The console (where the agent logs) is appended to across restarts, so the agent's
        // lines of every boot are there to count.
        std::string src = "<source path='" + g.consoleLog + "'/>";
        for (auto p = a.domain_xml.find(src); p != std::string::npos;
             p = a.domain_xml.find(src, p + 1))
            a.domain_xml.replace(p, src.size(),
                                 "<source path='" + g.consoleLog + "' append='on'/>");
        a.escalation = {100'000, 3'600'000};
        a.address = "127.0.0.1:" + std::to_string(g.httpPort);
        model::Resource r;
        r.name = "web";
        r.klass = model::ResourceClass::Process;
        r.unit = "/bin/busybox httpd -f -p 80 -h /www";
        a.resources.push_back(r);
        m.assemblies[name] = a;
        d.assemblies.push_back(name);
        uuids_.push_back(g.uuid);
    }
    m.deployables[dep_] = d;
    if (!store::saveModel(dir_, m).ok())
        return false;

    // The hub as cped runs it: amqps:// only, mutual TLS + SASL EXTERNAL, authz at attach
    // from the model.
    bus::HubOptions o;
    o.tls.caFile = pki_ + "/ca.crt";
    o.tls.certFile = pki_ + "/cped.bench.crt";
    o.tls.keyFile = pki_ + "/cped.bench.key";
    o.tls.denyListFile = pki_ + "/revoked";
    auto names = names_;
    auto uuids = uuids_;
    auto dep = dep_;
    o.authz.ownsAssembly = [names, uuids, dep](const std::string& dd, const std::string& a) {
        return dd == dep && (std::find(names.begin(), names.end(), a) != names.end() ||
                             std::find(uuids.begin(), uuids.end(), a) != uuids.end());
    };
    hub_ = std::make_unique<bus::Hub>(o);
    if (auto st = hub_->start("amqps://127.0.0.1:0"); !st) {
        std::fprintf(stderr, "forgery_bench: hub: %s\n", st.error().describe().c_str());
        return false;
    }
    bus::ClientOptions co;
    co.url = "amqps://127.0.0.1:" + std::to_string(hub_->boundPort());
    co.caFile = pki_ + "/ca.crt";
    co.certFile = pki_ + "/cped.bench.crt";
    co.keyFile = pki_ + "/cped.bench.key";
    if (!client_.connect(co).ok() || !client_.waitConnected(10s))
        return false;
    auto sub = testsupport::serveJournal(client_, [this](const bus::Message& msg) {
        auto now = monoUs();
        auto j = json::parse(msg.body, nullptr, false);
        if (j.is_discarded())
            return;
        std::lock_guard lock(mu_);
        events_.emplace_back(now, j);
    });
    if (!client_.waitSubscribed(sub, 10s))
        return false;

    log_ = dir_ + "/dped.log";
    std::string conf = writeTinyGuestHostConfig(dir_);
    dped_ =
        spawnLogged(kBin + "/dped",
                    {"dped", "--deployable", dep_, "--state-dir", dir_, "--broker",
                     "amqps://127.0.0.1:" + std::to_string(hub_->boundPort()), "--log-level",
                     "info", "--config", conf, "--bus-ca", pki_ + "/ca.crt", "--bus-cert",
                     pki_ + "/dped." + dep_ + ".crt", "--bus-key", pki_ + "/dped." + dep_ + ".key"},
                    log_);
    return dped_ > 0;
}

void Bench::tearDown() {
    if (forger_ > 0) {
        ::kill(forger_, SIGKILL);
        ::waitpid(forger_, nullptr, 0);
    }
    if (dped_ > 0) {
        ::kill(dped_, SIGKILL);
        ::waitpid(dped_, nullptr, 0);
    }
    for (const auto& n : names_) {
        (void)::system(("virsh -c qemu:///system destroy " + n + " >/dev/null 2>&1").c_str());
        (void)::system(("virsh -c qemu:///system undefine " + n + " >/dev/null 2>&1").c_str());
    }
    client_.close();
    if (hub_)
        hub_->stop();
    if (!std::getenv("FORGERY_KEEP"))
        std::filesystem::remove_all(dir_);
    else
        std::printf("state kept in %s (FORGERY_KEEP)\n", dir_.c_str());
}

json Bench::status() {
    // Signed by cped.bench, as cped signs what it asks a dped on a TLS bus.
    auto body = testsupport::signForDped(pki::clientFiles(pki_, {pki::Kind::Cped, "bench"}), dep_,
                                         R"({"v":1,"type":"command","id":"s","command":"status"})");
    if (!body)
        return json();
    auto r = client_.request("pcloud.dped." + dep_, *body, 5s);
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

void Bench::killSeries(const char* arm, int kills, KillSeries& out) {
    const std::string& target = names_[1];
    std::printf("\n[%s] SIGKILL of %s's qemu, ms after the kill\n", arm, target.c_str());
    std::printf("%-5s %9s %9s %9s %9s %10s %10s\n", "kill", "pidfd", "chan_eof", "earliest",
                "failed_ev", "running", "heartbeat");
    for (int i = 0; i < kills; ++i) {
        if (!waitFor([&] { return allHealthy(); }, 120s, 50ms)) {
            std::printf("%-5d not healthy before the kill; stopping this arm\n", i + 1);
            return;
        }
        pid_t qemu = qemuPidOf(target);
        auto logSize = readFile(log_).size();
        std::int64_t t0 = monoUs();
        if (qemu <= 0 || ::kill(qemu, SIGKILL) != 0) {
            std::printf("%-5d no qemu pid for %s\n", i + 1, target.c_str());
            return;
        }
        bool ok = waitFor([&] { return qemuPidOf(target) != qemu && healthy(target); }, 180s, 50ms);
        std::string log = readFile(log_);
        auto ms = [&](std::optional<std::int64_t> us) { return us ? (*us - t0) / 1000.0 : -1.0; };
        auto p = logMono(log, logSize, "qemu process exited", target, t0);
        auto c = logMono(log, logSize, "Guest channel closed", target, t0);
        auto r = logMono(log, logSize, "Domain running", target, t0);
        auto h = logMono(log, logSize, "First heartbeat", target, t0);
        auto f = eventAt(target, "failed", t0);
        std::optional<std::int64_t> first;
        for (const std::optional<std::int64_t>& v : {p, c})
            if (v && (!first || *v < *first))
                first = v;
        std::printf("%-5d %9.1f %9.1f %9.1f %9.1f %10.1f %10.1f%s\n", i + 1, ms(p), ms(c),
                    ms(first), ms(f), ms(r), ms(h), ok ? "" : "  (not healthy again!)");
        if (p)
            out.pidfd.push_back(ms(p));
        if (c)
            out.eof.push_back(ms(c));
        if (first)
            out.earliest.push_back(ms(first));
        if (f)
            out.failed.push_back(ms(f));
        if (f && first)
            out.afterSeen.push_back(ms(f) - ms(first));
        if (r)
            out.running.push_back(ms(r));
        if (h)
            out.heartbeat.push_back(ms(h));
        if (!ok)
            return;
        ++out.healthyAgain;
    }
}

int Bench::run(std::uint64_t messages, int kills, Millis hbTimeout) {
    if (!setUp(hbTimeout)) {
        tearDown();
        return 1;
    }
    const std::string& A = names_[0];
    const std::string& B = names_[1];
    std::printf("forgery_bench: 2 tiny TCG guests (%s, %s), agents with ca= and deployable=%s, "
                "hub amqps:// with authz, heartbeat timeout %lld ms, state %s\n",
                A.c_str(), B.c_str(), dep_.c_str(), static_cast<long long>(hbTimeout),
                dir_.c_str());
    if (!waitFor([&] { return allHealthy(); }, 180s, 50ms)) {
        std::fprintf(stderr, "forgery_bench: guests did not become healthy; see %s\n",
                     log_.c_str());
        tearDown();
        return 1;
    }
    const std::string consoleA = dir_ + "/" + A + ".console.log";
    const std::string consoleB = dir_ + "/" + B + ".console.log";
    std::string dlog = readFile(log_);
    bool signing = dlog.find("Commands to agents are signed") != std::string::npos;
    int verifiedAtStart = countLines(readFile(consoleA), 0, SIZE_MAX, "Signed command verified");
    std::printf("dped signs its commands: %s; agent %s verified %d signed command(s) at start\n",
                signing ? "yes" : "NO", A.c_str(), verifiedAtStart);
    pid_t qemuA = qemuPidOf(A);

    // ---- arm 1: no flood ----
    std::size_t base0 = readFile(log_).size();
    std::size_t baseEv0;
    {
        std::lock_guard lock(mu_);
        baseEv0 = events_.size();
    }
    KillSeries base;
    killSeries("no flood", kills, base);
    waitFor([&] { return allHealthy(); }, 60s, 50ms);
    std::size_t base1 = readFile(log_).size();

    // ---- arm 2: the same kills during the flood ----
    std::size_t consA0 = readFile(consoleA).size(), consB0 = readFile(consoleB).size();
    std::size_t flood0 = readFile(log_).size();
    std::size_t floodEv0;
    {
        std::lock_guard lock(mu_);
        floodEv0 = events_.size();
    }
    auto sec0 = hub_->security();
    auto cnt0 = hub_->counters();
    forgerStats_ = dir_ + "/forger.json";
    char self[4096];
    auto len = ::readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    forger_ =
        spawnLogged(self,
                    {"forgery_bench", "--forger", std::to_string(hub_->boundPort()),
                     pki_ + "/ca.crt", pki_ + "/agent." + A + ".crt", pki_ + "/agent." + A + ".key",
                     A, B, uuids_[1], dep_, dir_ + "/other-ca/dped." + dep_ + ".key",
                     dir_ + "/other-ca/dped." + dep_ + ".crt", forgerStats_},
                    dir_ + "/forger.log");
    double cpuSelf0 = cpuSeconds(::getpid()), cpuDped0 = cpuSeconds(dped_);
    auto wall0 = std::chrono::steady_clock::now();
    if (!waitFor([&] { return forgerStats().value("total", 0ull) > 20'000; }, 60s, 50ms)) {
        std::fprintf(stderr, "forgery_bench: the forger did not get going: %s\n",
                     readFile(dir_ + "/forger.log").c_str());
        tearDown();
        return 1;
    }
    KillSeries flood;
    killSeries("flood", kills, flood);
    // Flood on until MESSAGES are out, then past the heartbeat timeout, so a late effect of
    // a forged message would still be seen.
    waitFor([&] { return forgerStats().value("total", 0ull) >= messages; }, 1800s, 100ms);
    double cpuForger = cpuSeconds(forger_);
    ::kill(forger_, SIGTERM);
    int status = 0;
    ::waitpid(forger_, &status, 0);
    forger_ = -1;
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    double cpuSelf = cpuSeconds(::getpid()) - cpuSelf0, cpuDped = cpuSeconds(dped_) - cpuDped0;
    auto sec = hub_->security();
    auto cnt = hub_->counters();
    json fst = forgerStats();
    // Observe past the flood for twice the heartbeat timeout (a measurement window: a late
    // effect of a forged report would show up in it), then everything must be healthy.
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * hbTimeout));
    bool healthyAfter = waitFor([&] { return allHealthy(); }, 60s, 50ms);
    std::size_t flood1 = readFile(log_).size();
    std::string dl = readFile(log_);
    std::string ca = readFile(consoleA), cb = readFile(consoleB);

    // ---- the tables ----
    std::printf("\nCrash latency, SIGKILL of %s's qemu (ms after the kill); forger = agent:%s\n",
                B.c_str(), A.c_str());
    std::printf("%-40s %8s %8s %3s | %8s %8s %3s | %7s %7s\n", "", "no flood", "", "", "flood", "",
                "", "ratio", "");
    std::printf("%-40s %8s %8s %3s | %8s %8s %3s | %7s %7s\n", "signal", "median", "p99", "n",
                "median", "p99", "n", "median", "p99");
    printPair("earliest signal (pidfd / channel EOF)", base.earliest, flood.earliest);
    printPair("  pidfd exit seen by dped", base.pidfd, flood.pidfd);
    printPair("  channel EOF seen by dped", base.eof, flood.eof);
    printPair("'failed' event at a subscriber", base.failed, flood.failed);
    printPair("  of it after dped saw the crash", base.afterSeen, flood.afterSeen);
    printPair("domain running again", base.running, flood.running);
    printPair("agent's first heartbeat", base.heartbeat, flood.heartbeat);

    auto u = [&](const char* k) { return fst.value(k, 0ull); };
    double secs = fst.value("seconds", 0.0);
    std::printf("\nFlood: %llu forged messages in %.1f s = %.0f msg/s (forger's count; "
                "the hub's below)\n",
                static_cast<unsigned long long>(u("total")), secs,
                secs > 0 ? static_cast<double>(u("total")) / secs : 0.0);
    std::printf("  on the allowed link (pcloud.reports.%s): %llu sent, hub "
                "accepted %llu, rejected %llu (oversized/undecodable)\n",
                A.c_str(), static_cast<unsigned long long>(u("sent")),
                static_cast<unsigned long long>(u("accepted")),
                static_cast<unsigned long long>(u("rejected")));
    std::printf("  attaches to addresses agent:%s may not use: %llu, refused "
                "(amqp:unauthorized-access) %llu, other refusals %llu, credit granted %llu, "
                "messages received %llu\n",
                A.c_str(), static_cast<unsigned long long>(u("attaches")),
                static_cast<unsigned long long>(u("refused_unauthorized")),
                static_cast<unsigned long long>(u("refused_other")),
                static_cast<unsigned long long>(u("credit_on_denied")),
                static_cast<unsigned long long>(u("received_on_denied")));
    std::printf("  the hub closed the forger's connection %llu times for too many refused "
                "attaches (it reconnected %llu times; %llu attaches were in flight then)\n",
                static_cast<unsigned long long>(sec.closedForDenials - sec0.closedForDenials),
                static_cast<unsigned long long>(u("reconnects")),
                static_cast<unsigned long long>(u("lost_with_connection")));
    std::printf("  unauthenticated peers: %llu plain TCP (opened %llu), %llu TLS without a "
                "certificate (opened %llu); commands stolen from pcloud.agent.%s: %llu\n",
                static_cast<unsigned long long>(u("tcp_attempts")),
                static_cast<unsigned long long>(u("tcp_opened")),
                static_cast<unsigned long long>(u("nocert_attempts")),
                static_cast<unsigned long long>(u("nocert_opened")), A.c_str(),
                static_cast<unsigned long long>(u("stolen")));
    std::printf("  by kind:");
    int col = 0;
    const json kinds = fst.value("kinds", json::object());
    for (auto& [k, v] : kinds.items())
        std::printf("%s %s=%llu", col++ % 4 == 0 ? "\n   " : "", k.c_str(),
                    static_cast<unsigned long long>(v.get<std::uint64_t>()));
    std::printf("\n");
    auto delta = [&](const std::string& a, std::uint64_t bus::AddressCounters::*f) {
        auto x = cnt.count(a) ? cnt[a].*f : 0, y = cnt0.count(a) ? cnt0[a].*f : 0;
        return static_cast<unsigned long long>(x - y);
    };
    std::string rep = "pcloud.reports." + A;
    std::printf("  hub: %s in %llu, out to dped %llu, rejected %llu; denied links %llu, "
                "refused connections %llu, queue-cap refusals %llu\n",
                rep.c_str(), delta(rep, &bus::AddressCounters::in),
                delta(rep, &bus::AddressCounters::out), delta(rep, &bus::AddressCounters::rejected),
                static_cast<unsigned long long>(sec.deniedLinks - sec0.deniedLinks),
                static_cast<unsigned long long>(sec.refusedConnections - sec0.refusedConnections),
                static_cast<unsigned long long>(sec.queueCapRefusals - sec0.queueCapRefusals));
    unsigned long long repIn = 0, repOut = 0;
    for (const auto& [a, c] : cnt)
        if (a.rfind("pcloud.reply.", 0) == 0) {
            repIn += c.in - (cnt0.count(a) ? cnt0[a].in : 0);
            repOut += c.out - (cnt0.count(a) ? cnt0[a].out : 0);
        }
    std::printf("  hub: pcloud.reply.* in %llu, out %llu (forged replies and the bench's own)\n",
                repIn, repOut);
    unsigned long long forbiddenIn = 0;
    for (const std::string& a : std::vector<std::string>{
             "pcloud.agent." + A, "pcloud.agent." + B, "pcloud.reports." + B, "pcloud.cped",
             "pcloud.journal", "pcloud.events", "pcloud.node.h1", "pcloud.nodes.h1"}) {
        if (a == "pcloud.journal")
            continue; // dped's own events go there; counted below from their content
        forbiddenIn += delta(a, &bus::AddressCounters::in);
    }
    std::printf("  hub: messages accepted on agent:%s's forbidden addresses (pcloud.agent.*, "
                "pcloud.reports.%s, pcloud.cped, pcloud.events, pcloud.node(s).h1): %llu\n",
                A.c_str(), B.c_str(), forbiddenIn);
    std::printf("CPU during the flood (%.1f s wall): bench process (the hub, the bench's "
                "client) %.0f%%, dped %.0f%%, forger %.0f%% (of one core)\n",
                wall, 100 * cpuSelf / wall, 100 * cpuDped / wall, 100 * cpuForger / wall);

    // ---- actions ----
    auto aBase = dpedActions(dl, base0, base1, A), aFlood = dpedActions(dl, flood0, flood1, A);
    auto bBase = dpedActions(dl, base0, base1, B), bFlood = dpedActions(dl, flood0, flood1, B);
    std::printf("\nActions (from dped's log, the journal and the agents' consoles; not the "
                "forger's view)\n");
    std::printf("%-34s %12s %12s %12s %12s\n", "dped log line", "A no flood", "A flood",
                "B no flood", "B flood");
    std::set<std::string> keys;
    for (const auto* a : {&aBase, &aFlood, &bBase, &bFlood})
        for (const auto& [k, _] : a->byLine)
            keys.insert(k);
    auto get = [](const ActionCount& a, const std::string& k) {
        auto it = a.byLine.find(k);
        return it == a.byLine.end() ? 0 : it->second;
    };
    for (const auto& k : keys)
        std::printf("%-34s %12d %12d %12d %12d\n", k.c_str(), get(aBase, k), get(aFlood, k),
                    get(bBase, k), get(bFlood, k));
    int forged = 0;
    auto item = [&](const char* what, int n) {
        std::printf("  %-78s %d\n", what, n);
        forged += n;
    };
    std::printf("forged actions (each must be 0):\n");
    item("dped actions for A during the flood (A is never killed)", aFlood.total());
    int bStartsBase = get(bBase, "Domain started"), bStartsFlood = get(bFlood, "Domain started");
    item("B domain starts during the flood beyond one per kill",
         std::max(0, bStartsFlood - static_cast<int>(flood.pidfd.size())));
    std::vector<json> evFlood;
    {
        std::lock_guard lock(mu_);
        for (std::size_t i = floodEv0; i < events_.size(); ++i)
            evFlood.push_back(events_[i].second);
    }
    int evA = 0, evMarked = 0, failedB = 0;
    for (const auto& e : evFlood) {
        std::string text = e.dump();
        evA += e.value("assembly", "") == A;
        evMarked += text.find("forged") != std::string::npos;
        failedB += e.value("assembly", "") == B && e.value("state", "") == "failed";
    }
    item("journal events for A during the flood", evA);
    item("journal events with a forged cause (the forger's marker in any field)", evMarked);
    item("B 'failed' events during the flood beyond one per kill",
         std::max(0, failedB - static_cast<int>(flood.pidfd.size())));
    item("dped planned stop / model reload during the flood",
         countLines(dl, flood0, flood1, "Planned stop requested") +
             countLines(dl, flood0, flood1, "Model reloaded"));
    item("dped 'Agent connected' for a forged boot id",
         countLines(dl, flood0, flood1, "Agent connected", "boot_id=forged"));
    item("agent jobs run for a forged command id (A's and B's consoles)",
         countLines(ca, consA0, ca.size(), "Running job", "forged") +
             countLines(cb, consB0, cb.size(), "Running job", "forged"));
    const std::string otherSigner = "agent commands verified from a signer other than dped:" + dep_;
    item(otherSigner.c_str(),
         countLines(ca, consA0, ca.size(), "Signed command verified") -
             countLines(ca, consA0, ca.size(), "Signed command verified", "dped:" + dep_) +
             countLines(cb, consB0, cb.size(), "Signed command verified") -
             countLines(cb, consB0, cb.size(), "Signed command verified", "dped:" + dep_));
    pid_t qemuA2 = qemuPidOf(A);
    item("A's qemu replaced (pid changed) over the whole run", qemuA2 != qemuA ? 1 : 0);
    item("dped gone (exited) by the end", ::kill(dped_, 0) == 0 ? 0 : 1);
    item("hub: messages accepted on agent:A's forbidden addresses", static_cast<int>(forbiddenIn));
    item("forger: credit or messages on a refused link, unauthenticated peers opened",
         static_cast<int>(u("credit_on_denied") + u("received_on_denied") + u("tcp_opened") +
                          u("nocert_opened")));
    std::printf("ACTIONS FROM FORGED MESSAGES: %d\n", forged);
    std::printf("\nalso: forged commands refused by the agents (reached them at all): A %d, B %d; "
                "dped dropped bus reports for A while its channel agent was attached "
                "(warning lines) %d; healthy after the flood: %s; kills recovered %d/%d no "
                "flood, %d/%d flood\n",
                countLines(ca, consA0, ca.size(), "Refused a command that failed verification"),
                countLines(cb, consB0, cb.size(), "Refused a command that failed verification"),
                countLines(dl, 0, dl.size(), "Dropping reports from the bus"),
                healthyAfter ? "yes" : "NO", base.healthyAgain, kills, flood.healthyAgain, kills);
    (void)bStartsBase;
    (void)baseEv0;
    auto f = stats(flood.failed), b = stats(base.failed);
    bool goal = b.n && f.n && f.median <= 2 * b.median && f.p99 <= 2 * b.p99;
    std::printf("GOAL crash->failed under flood within 2x of without (median and p99): %s\n",
                goal ? "met" : "NOT met");
    tearDown();
    return forged == 0 && healthyAfter ? 0 : 3;
}

} // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--forger")
        return forgerMain(argc, argv);
    std::uint64_t messages = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
    int kills = argc > 2 ? std::max(1, std::atoi(argv[2])) : 10;
    Millis hb = argc > 3 ? std::max(1000, std::atoi(argv[3])) : 3000;
    if (::geteuid() != 0) {
        std::fprintf(stderr, "forgery_bench: needs root (qemu:///system)\n");
        return 77;
    }
    if (std::system("virsh -c qemu:///system version >/dev/null 2>&1") != 0) {
        std::fprintf(stderr, "forgery_bench: libvirtd is not running (scripts/setup-libvirt.sh)\n");
        return 69;
    }
    std::signal(SIGPIPE, SIG_IGN);
    Bench b;
    return b.run(messages, kills, hb);
}
