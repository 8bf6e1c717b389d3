// pcloud-cts: a randomized fault injector with audits, in the spirit of Pacemaker's CTS.
// It runs against a live pcloud (cped with the embedded hub, its dped, real QEMU guests with
// the agent, HAProxy in front with open-loop HTTP load through it), injects one fault per
// iteration, waits (bounded) for the system to converge and audits what happened. The
// environment is set up by bench/cts/run.sh; the audits themselves are in audit.{h,cc}.
//
//   pcloud-cts --state-dir D --deployable N --broker URL --pcloudsh CMD --cped-cmd CMD
//              --cped-pidfile F --cped-log F --haproxy-cfg F --haproxy-pidfile F
//              --haproxy-socket S --backend B --frontend PORT --assembly NAME:PORT ...
//              [--seed N] [--iterations N] [--rate 50] [--faults a,b,...]
//              [--hb-timeout-ms 1000] [--max-pcloud-stop-ms 10000]
//              [--converge-timeout-ms 90000] [--out FILE.jsonl]
//
// Exit status: 0 when every audit passed, 1 on any audit failure (the seed and the
// iteration are printed), 2 on bad arguments.
#include "cts/audit.h"

#include "common/lock_file.h"
#include "referee/haproxy_referee.h"
#include "referee/runtime_api.h"
#include "support/load.h"
#include "support/test_support.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Options {
    std::string state_dir, deployable, broker, pcloudsh, cped_cmd, cped_pidfile, cped_log;
    std::string haproxy_cfg, haproxy_pidfile, haproxy_socket, backend;
    int frontend = 0;
    std::vector<std::pair<std::string, int>> assemblies; // name (= domain), guest web port
    std::uint64_t seed = 0;
    int iterations = 30;
    double rate = 50;
    std::vector<cts::FaultKind> faults = cts::allFaultKinds();
    Millis hb_timeout_ms = 1000;
    Millis max_pcloud_stop_ms = 10'000;
    Millis converge_timeout_ms = 90'000;
    std::string out;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr, "pcloud-cts: %s (see the header of tools/cts/main.cc)\n", why.c_str());
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    o.seed =
        static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (i + 1 >= argc)
            usage("option " + k + " needs a value");
        std::string v = argv[++i];
        if (k == "--state-dir")
            o.state_dir = v;
        else if (k == "--deployable")
            o.deployable = v;
        else if (k == "--broker")
            o.broker = v;
        else if (k == "--pcloudsh")
            o.pcloudsh = v;
        else if (k == "--cped-cmd")
            o.cped_cmd = v;
        else if (k == "--cped-pidfile")
            o.cped_pidfile = v;
        else if (k == "--cped-log")
            o.cped_log = v;
        else if (k == "--haproxy-cfg")
            o.haproxy_cfg = v;
        else if (k == "--haproxy-pidfile")
            o.haproxy_pidfile = v;
        else if (k == "--haproxy-socket")
            o.haproxy_socket = v;
        else if (k == "--backend")
            o.backend = v;
        else if (k == "--frontend")
            o.frontend = std::atoi(v.c_str());
        else if (k == "--assembly") {
            auto c = v.find(':');
            if (c == std::string::npos)
                usage("--assembly wants NAME:PORT, got '" + v + "'");
            o.assemblies.emplace_back(v.substr(0, c), std::atoi(v.c_str() + c + 1));
        } else if (k == "--seed")
            o.seed = std::strtoull(v.c_str(), nullptr, 10);
        else if (k == "--iterations")
            o.iterations = std::atoi(v.c_str());
        else if (k == "--rate")
            o.rate = std::atof(v.c_str());
        else if (k == "--hb-timeout-ms")
            o.hb_timeout_ms = std::atoll(v.c_str());
        else if (k == "--max-pcloud-stop-ms")
            o.max_pcloud_stop_ms = std::atoll(v.c_str());
        else if (k == "--converge-timeout-ms")
            o.converge_timeout_ms = std::atoll(v.c_str());
        else if (k == "--out")
            o.out = v;
        else if (k == "--faults") {
            o.faults.clear();
            std::stringstream ss(v);
            for (std::string f; std::getline(ss, f, ',');) {
                auto kind = cts::parseFaultKind(f);
                if (!kind)
                    usage("unknown fault '" + f + "'");
                o.faults.push_back(*kind);
            }
        } else
            usage("unknown option " + k);
    }
    for (auto* req :
         {&o.state_dir, &o.deployable, &o.broker, &o.pcloudsh, &o.cped_cmd, &o.cped_pidfile,
          &o.haproxy_cfg, &o.haproxy_pidfile, &o.haproxy_socket, &o.backend})
        if (req->empty())
            usage("missing a required option");
    if (o.assemblies.empty() || o.frontend <= 0)
        usage("need --assembly NAME:PORT and --frontend PORT");
    return o;
}

void say(const std::string& s) {
    std::fprintf(stderr, "cts: %s\n", s.c_str());
}

long readPid(const std::string& file) {
    std::ifstream in(file);
    long pid = 0;
    in >> pid;
    return pid;
}

// The whole of a small /proc file ("" when the process is gone; never throws).
std::string readProcFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return {};
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
}

// Alive = exists and is not a zombie. A daemon that exited (the HAProxy that -st stopped)
// stays a zombie until init reaps it, which on these machines can take a second.
bool alive(long pid) {
    if (pid <= 0)
        return false;
    // cped restarted by us is our child: reap it, or its zombie would look alive.
    ::waitpid(static_cast<pid_t>(pid), nullptr, WNOHANG);
    if (::kill(static_cast<pid_t>(pid), 0) != 0)
        return false;
    std::string stat = readProcFile("/proc/" + std::to_string(pid) + "/stat");
    auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size())
        return false; // gone between the two looks
    char state = stat[paren + 2];
    return state != 'Z' && state != 'X';
}

bool waitGone(long pid, std::chrono::milliseconds timeout) {
    return testsupport::waitFor([&] { return !alive(pid); }, timeout, 20ms);
}

// In a child about to exec: nothing of ours stays open. Daemons we start (cped, libvirtd,
// HAProxy) must not inherit a descriptor such as the caller's flock(1) lock, or they would
// hold it for their whole life.
void closeInherited() {
    for (int fd = 3; fd < 1024; ++fd)
        ::close(fd);
}

// Starts `cmd` through /bin/sh in its own session, output appended to `log`.
long spawnDetached(const std::string& cmd, const std::string& log) {
    pid_t pid = ::fork();
    if (pid == 0) {
        closeInherited();
        ::setsid();
        int fd = ::open(log.empty() ? "/dev/null" : log.c_str(),
                        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            ::dup2(devnull, 0);
        ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    return pid;
}

// Runs `cmd` (which daemonizes: libvirtd -d, haproxy -D) with no inherited descriptors and
// waits for it. Returns its exit status, or -1.
int runClean(const std::string& cmd, const std::string& log) {
    long pid = spawnDetached(cmd, log);
    int status = 0;
    if (pid <= 0 || ::waitpid(static_cast<pid_t>(pid), &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The number of qemu processes whose command line names `domain` (-name guest=DOMAIN,...).
std::map<std::string, int> countQemus(const std::vector<std::string>& domains) {
    std::map<std::string, int> n;
    for (const auto& d : domains)
        n[d] = 0;
    DIR* dir = ::opendir("/proc");
    if (!dir)
        return n;
    while (auto* e = ::readdir(dir)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        std::string cmd = readProcFile(std::string("/proc/") + e->d_name + "/cmdline");
        if (cmd.find("qemu-system") == std::string::npos)
            continue;
        for (const auto& d : domains)
            if (cmd.find("guest=" + d + ",") != std::string::npos)
                n[d]++;
    }
    ::closedir(dir);
    return n;
}

// Watches the process table all the time: the largest number of qemus per domain since the
// last take().
class QemuSampler {
public:
    explicit QemuSampler(std::vector<std::string> domains)
        : domains_(std::move(domains)), thread_([this] { run(); }) {}
    ~QemuSampler() {
        stop_ = true;
        thread_.join();
    }
    std::map<std::string, int> take() {
        std::lock_guard lock(mu_);
        auto m = max_;
        max_.clear();
        return m;
    }

private:
    void run() {
        while (!stop_) {
            auto n = countQemus(domains_);
            {
                std::lock_guard lock(mu_);
                for (const auto& [d, c] : n)
                    max_[d] = std::max(max_[d], c);
            }
            std::this_thread::sleep_for(25ms);
        }
    }
    std::vector<std::string> domains_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::map<std::string, int> max_;
    std::thread thread_;
};

// Follows STATE/events.jsonl across rotations (the rotated file is read to its end first).
class JournalReader {
public:
    explicit JournalReader(std::string path) : path_(std::move(path)) {}
    std::vector<cts::JournalEvent> readNew() {
        std::vector<cts::JournalEvent> out;
        for (int round = 0; round < 2; ++round) {
            if (!in_.is_open()) {
                in_.open(path_);
                struct stat st {};
                if (::stat(path_.c_str(), &st) == 0)
                    inode_ = st.st_ino;
            }
            std::string line;
            while (std::getline(in_, line)) {
                if (in_.eof()) { // a line still being written: read it again next time
                    in_.clear();
                    in_.seekg(-static_cast<std::streamoff>(line.size()), std::ios::cur);
                    break;
                }
                if (auto e = cts::parseJournalLine(line))
                    out.push_back(*e);
            }
            in_.clear();
            struct stat st {};
            if (::stat(path_.c_str(), &st) == 0 && st.st_ino != inode_) {
                in_.close(); // rotated: the old file is read to its end, now the new one
                continue;
            }
            break;
        }
        return out;
    }

private:
    std::string path_;
    std::ifstream in_;
    ino_t inode_ = 0;
};

struct Health {
    bool cped_answers = false;
    bool dped_running = false;
    std::set<std::string> healthy;       // domain running, agent connected, services active
    std::set<std::string> haproxy_ready; // ready and up in HAProxy
    std::map<std::string, int> failures_used;
};

class Driver {
public:
    explicit Driver(Options o)
        : opt_(std::move(o)), journal_(opt_.state_dir + "/events.jsonl"), sampler_(domains()),
          load_(opt_.frontend, opt_.rate, 1000) {}

    int run();

private:
    std::vector<std::string> domains() const {
        std::vector<std::string> d;
        for (const auto& [name, port] : opt_.assemblies)
            d.push_back(name);
        return d;
    }
    int portOf(const std::string& a) const {
        for (const auto& [name, port] : opt_.assemblies)
            if (name == a)
                return port;
        return 0;
    }
    Health look();
    bool converged(const Health& h) const {
        return h.cped_answers && h.dped_running && h.healthy.size() == opt_.assemblies.size() &&
               h.haproxy_ready == h.healthy;
    }
    std::map<std::string, long> qemuPids() const {
        std::map<std::string, long> m;
        for (const auto& [name, port] : opt_.assemblies)
            m[name] = testsupport::qemuPidOf(name);
        return m;
    }
    void inject(const cts::Fault& f);
    // A kill that must be noticed, at the wall-clock time the journal's events use.
    struct Kill {
        std::string victim;
        bool service = false;
        double at_ms = 0;
    };
    void noteKill(const std::string& victim, bool service) {
        double now = static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count()) /
                     1000.0;
        std::lock_guard lock(kills_mu_);
        kills_.push_back({victim, service, now});
    }
    std::mutex kills_mu_;
    std::mutex haproxy_mu_; // haproxyNew: one new HAProxy at a time
    // When the HAProxy stopped by this iteration's -st had exited (set by haproxyNew).
    std::optional<double> old_balancer_gone_ms_;
    std::vector<Kill> kills_;
    void restartCped(Millis downMs, int sig);
    void haproxyNew(const char* how);
    void restartLibvirtd();

    Options opt_;
    JournalReader journal_;
    QemuSampler sampler_;
    bench::LoadGenerator load_;
};

Health Driver::look() {
    Health h;
    auto r = testsupport::runCommand(opt_.pcloudsh + " --broker " + opt_.broker +
                                     " --json --timeout 3 deployable_status " + opt_.deployable +
                                     " 2>/dev/null");
    if (r.rc == 0) {
        auto j = json::parse(r.out, nullptr, false);
        if (!j.is_discarded()) {
            h.cped_answers = true;
            const json& res = j.contains("result") ? j["result"] : j;
            h.dped_running = res.contains("dped") && res["dped"].value("state", "") == "running";
            if (res.contains("status") && res["status"].contains("assemblies"))
                for (const auto& a : res["status"]["assemblies"]) {
                    bool ok =
                        a.value("domain", "") == "running" && a.value("agent", "") == "connected";
                    if (a.contains("services"))
                        for (const auto& s : a["services"])
                            ok = ok && s.value("state", "") == "active" &&
                                 !(s.contains("ready") && s["ready"] == false);
                    if (ok)
                        h.healthy.insert(a.value("name", ""));
                }
        }
    }
    auto text = referee::runtimeApiExchange(opt_.haproxy_socket,
                                            "show servers state " + opt_.backend + "\n", 1000);
    if (text)
        if (auto members = referee::parseServersState(*text, opt_.backend))
            for (const auto& m : *members)
                if (m.state == referee::MemberState::Ready && m.health == "up")
                    h.haproxy_ready.insert(m.name);
    return h;
}

void Driver::restartCped(Millis downMs, int sig) {
    long pid = readPid(opt_.cped_pidfile);
    if (alive(pid)) {
        ::kill(static_cast<pid_t>(pid), sig);
        if (!waitGone(pid, 15s))
            say("cped pid " + std::to_string(pid) + " did not exit");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(downMs));
    long np = spawnDetached(opt_.cped_cmd, opt_.cped_log);
    std::ofstream(opt_.cped_pidfile) << np << "\n";
}

// A new HAProxy from the same config: the listeners are passed over (-x), the servers'
// states carried over through the state file (server-state-file in the config), the old
// process finishes its connections (-sf, a reload) or is stopped at once (-st, a restart).
void Driver::haproxyNew(const char* how) {
    // One at a time (a double fault can be two of these): both would read the same old pid
    // and start a new HAProxy each, and the one nobody stops keeps listening on the frontend
    // (SO_REUSEPORT) with stale servers, beyond the referee's reach. The 1000-iteration run
    // of 2026-12-02 had exactly that after double(haproxy-restart + haproxy-reload).
    std::lock_guard lock(haproxy_mu_);
    long old = readPid(opt_.haproxy_pidfile);
    auto state = referee::runtimeApiExchange(opt_.haproxy_socket, "show servers state\n", 1000);
    if (state)
        std::ofstream(opt_.state_dir + "/haproxy.state") << *state;
    std::string cmd = "haproxy -q -D -f " + opt_.haproxy_cfg + " -p " + opt_.haproxy_pidfile +
                      " -x " + opt_.haproxy_socket + " " + how + " " + std::to_string(old);
    if (int rc = runClean(cmd, opt_.state_dir + "/haproxy.log"); rc != 0)
        say("haproxy " + std::string(how) + " failed (exit " + std::to_string(rc) + "); see " +
            opt_.state_dir + "/haproxy.log");
    // Until the old process is gone it may still accept a connection on the shared listener
    // and then cut it; from then on the new one alone serves (audit 6, tallyRequests).
    if (std::string_view(how) == "-st") {
        if (!waitGone(old, 5s))
            say("the old haproxy (pid " + std::to_string(old) + ") did not stop after -st");
        old_balancer_gone_ms_ = bench::steadyMs();
    }
}

void Driver::restartLibvirtd() {
    auto pids = testsupport::runCapture("pidof libvirtd");
    long pid = std::atol(pids.c_str());
    if (alive(pid)) {
        ::kill(static_cast<pid_t>(pid), SIGTERM);
        waitGone(pid, 30s);
    }
    runClean("libvirtd -d", "");
    testsupport::waitFor(
        [] {
            return testsupport::runCommand("virsh -c qemu:///system version >/dev/null 2>&1").rc ==
                   0;
        },
        30s, 100ms);
}

void Driver::inject(const cts::Fault& f) {
    using cts::FaultKind;
    switch (f.kind) {
    case FaultKind::ServiceKill:
        // The CGI kills httpd as it answers: the kill is within ms of the reply's arrival
        // (bench/failover measures it the same way), so the clock starts then.
        testsupport::httpRequest(portOf(f.victim), "/cgi-bin/die", 3s);
        noteKill(f.victim, true);
        break;
    case FaultKind::AgentKill:
        testsupport::httpRequest(portOf(f.victim), "/cgi-bin/kill-agent", 3s);
        break;
    case FaultKind::QemuKill:
        if (pid_t p = testsupport::qemuPidOf(f.victim); p > 0) {
            noteKill(f.victim, false);
            ::kill(p, SIGKILL);
        }
        break;
    case FaultKind::QemuStop:
        if (pid_t p = testsupport::qemuPidOf(f.victim); p > 0) {
            ::kill(p, SIGSTOP);
            std::this_thread::sleep_for(std::chrono::milliseconds(f.pause_ms));
            ::kill(p, SIGCONT);
        }
        break;
    case FaultKind::DpedKill:
        if (auto p = LockFile::holder(dpedLockPath(opt_.state_dir, opt_.deployable)); p && *p > 0)
            ::kill(*p, SIGKILL);
        break;
    case FaultKind::CpedKill:
        restartCped(f.pause_ms, SIGKILL);
        break;
    case FaultKind::CpedTerm:
        restartCped(f.pause_ms, SIGTERM);
        break;
    case FaultKind::PcloudStop: {
        long pid = 0;
        if (f.target == "cped")
            pid = readPid(opt_.cped_pidfile);
        else if (auto p = LockFile::holder(dpedLockPath(opt_.state_dir, opt_.deployable)))
            pid = *p;
        if (alive(pid)) {
            ::kill(static_cast<pid_t>(pid), SIGSTOP);
            std::this_thread::sleep_for(std::chrono::milliseconds(f.pause_ms));
            ::kill(static_cast<pid_t>(pid), SIGCONT);
        }
        break;
    }
    case FaultKind::LibvirtdRestart:
        restartLibvirtd();
        break;
    case FaultKind::HaproxyReload:
        haproxyNew("-sf");
        break;
    case FaultKind::HaproxyRestart:
        haproxyNew("-st");
        break;
    case FaultKind::Double: {
        std::vector<std::thread> t;
        for (const auto& p : f.parts)
            t.emplace_back([this, p] { inject(p); });
        for (auto& th : t)
            th.join();
        break;
    }
    }
}

int Driver::run() {
    std::ofstream out;
    if (!opt_.out.empty())
        out.open(opt_.out, std::ios::app);
    say("seed " + std::to_string(opt_.seed) + ", " + std::to_string(opt_.iterations) +
        " iterations, " + std::to_string(opt_.rate) +
        " req/s through 127.0.0.1:" + std::to_string(opt_.frontend));
    cts::Rng rng(opt_.seed);
    std::vector<std::string> names = domains();
    // Start from a converged system, with the journal read up to now.
    Health h;
    if (!testsupport::waitFor([&] { return converged(h = look()); },
                              std::chrono::milliseconds(opt_.converge_timeout_ms), 200ms)) {
        say("the system is not healthy before the first fault; nothing injected");
        return 1;
    }
    auto before = journal_.readNew();
    std::uint64_t nextSeq = before.empty() ? 0 : before.back().seq + 1;
    load_.start();
    std::this_thread::sleep_for(1s);
    sampler_.take();
    std::vector<cts::IterationRecord> records;
    int firstBad = 0;
    for (int n = 1; n <= opt_.iterations; ++n) {
        cts::IterationRecord rec;
        rec.n = n;
        rec.fault =
            cts::pickFault(rng, opt_.faults, names, opt_.hb_timeout_ms, opt_.max_pcloud_stop_ms);
        auto pidsBefore = qemuPids();
        // Events journaled since the last look (late ones of the previous fault) are audited
        // for continuity with the rest, but not charged to this fault.
        auto late = journal_.readNew();
        kills_.clear();
        old_balancer_gone_ms_.reset();
        double t0 = bench::steadyMs();
        inject(rec.fault);
        // Converged = healthy and in the balancer for a second in a row (a member that is
        // about to be taken out must not count).
        std::optional<double> stableSince;
        double deadline = t0 + static_cast<double>(opt_.converge_timeout_ms);
        while (bench::steadyMs() < deadline) {
            h = look();
            if (converged(h)) {
                if (!stableSince)
                    stableSince = bench::steadyMs();
                else if (bench::steadyMs() - *stableSince >= 1000)
                    break;
            } else {
                stableSince.reset();
            }
            std::this_thread::sleep_for(100ms);
        }
        rec.converged = stableSince && bench::steadyMs() - *stableSince >= 1000;
        double tEnd = bench::steadyMs();
        rec.recovery_ms = (stableSince ? *stableSince : tEnd) - t0;
        std::this_thread::sleep_for(500ms); // late journal lines (events flushed after cped)
        auto window = journal_.readNew();
        auto pidsAfter = qemuPids();
        // Audits.
        auto add = [&](std::vector<std::string> v) {
            rec.problems.insert(rec.problems.end(), v.begin(), v.end());
        };
        if (!rec.converged)
            rec.problems.push_back("did not converge within " +
                                   std::to_string(opt_.converge_timeout_ms) + " ms");
        add(cts::auditNeverTwo(sampler_.take()));
        std::vector<cts::JournalEvent> journaled = late;
        journaled.insert(journaled.end(), window.begin(), window.end());
        add(cts::auditJournal(journaled, nextSeq));
        if (!journaled.empty())
            nextSeq = journaled.back().seq + 1;
        add(cts::auditMembership(h.haproxy_ready, h.healthy));
        rec.impact = cts::impactOf(window, pidsBefore, pidsAfter);
        for (const auto& k : kills_)
            if (auto d = cts::detectionMs(window, k.victim, k.service, k.at_ms))
                rec.detect_ms.push_back(*d);
        add(cts::auditImpact(rec.fault, window, rec.impact));
        std::vector<cts::ClientRequest> requests;
        for (const auto& r : load_.records())
            requests.push_back({r.scheduled_ms, r.outcome == bench::Outcome::Ok,
                                r.outcome == bench::Outcome::Reset,
                                std::string(bench::toString(r.outcome)) +
                                    (r.status ? " status " + std::to_string(r.status) : "")});
        auto tally = cts::tallyRequests(requests, t0, tEnd, old_balancer_gone_ms_);
        rec.requests = tally.requests;
        rec.failed_requests = tally.failed;
        rec.cut_requests = tally.cut;
        rec.failed_detail = tally.failed_detail;
        // Audit 6: pcloud's own faults (the agent's included) must cost users nothing. Not
        // charged: guest faults, and the connections a hard HAProxy restart (-st) cut in
        // flight by itself (counted as cut); any other failed request is.
        bool pcloudOnly = !cts::hurtsGuest(rec.fault);
        if (pcloudOnly && rec.failed_requests > 0) {
            std::string detail;
            for (const auto& d : rec.failed_detail)
                detail += (detail.empty() ? "" : ", ") + d;
            rec.problems.push_back("requests: " + std::to_string(rec.failed_requests) +
                                   " client requests failed during " + rec.fault.describe() + " (" +
                                   detail + ")");
        }
        if (out.is_open())
            out << rec.toJson().dump() << "\n" << std::flush;
        std::fprintf(stderr,
                     "cts: [%d/%d] %-40s %s recovery %.0f ms, %d/%d requests failed%s, "
                     "%d VM restarts, %d failures%s\n",
                     n, opt_.iterations, rec.fault.describe().c_str(),
                     rec.converged ? "converged," : "NOT CONVERGED,", rec.recovery_ms,
                     rec.failed_requests, rec.requests,
                     rec.cut_requests
                         ? (" (" + std::to_string(rec.cut_requests) + " cut by -st)").c_str()
                         : "",
                     rec.impact.vm_restarts, rec.impact.failures,
                     rec.problems.empty() ? "" : "  AUDIT FAILED");
        for (const auto& p : rec.problems)
            std::fprintf(stderr, "cts:     %s\n", p.c_str());
        if (!rec.problems.empty() && !firstBad)
            firstBad = n;
        records.push_back(std::move(rec));
        // The next fault starts from a system that has been stable for 1.5 s already
        // (convergence above plus the journal's grace); a short gap keeps its first
        // requests apart from this iteration's last ones.
        std::this_thread::sleep_for(250ms);
    }
    load_.stop();
    std::cout << cts::formatTable(records);
    int problems = 0;
    for (const auto& r : records)
        problems += static_cast<int>(r.problems.size());
    std::cout << "seed " << opt_.seed << ": " << records.size() << " iterations, " << problems
              << " audit failures";
    if (firstBad)
        std::cout << " (first at iteration " << firstBad << "; replay with --seed " << opt_.seed
                  << ")";
    std::cout << "\n";
    return problems ? 1 : 0;
}

} // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    Driver d(parse(argc, argv));
    return d.run();
}
