// End to end through the operator's door: the real cped (embedded hub, journal, dped
// supervisor) on a free loopback port with a temporary state dir, the real dped it starts,
// two tiny QEMU guests on real libvirtd running the real pcloud-agent, all driven only by
// build/bin/pcloudsh one-shot commands, as scripts/demo.sh does. In order, on the same
// guests (each boot costs seconds under TCG):
//   1. create + add + start; both guests running, agents connected, httpd active;
//   2. `pcloudsh ping A B` prints an rtt for both and exits 0;
//   3. SIGKILL of the dped -> cped starts a new one, which adopts: no qemu restarted,
//      failure counts unchanged;
//   4. SIGKILL of A's qemu -> `failed` "qemu exited", then running again; 1 failure;
//   5. the journal (`events --since 1 --json`) has strictly increasing seqs;
//   6. deployable_stop -> both domains shut off, dped gone, no failure recorded;
//   7. a domain XML libvirt rejects, in a second deployable -> an error event quoting
//      libvirt, and cped still answers.
// The bus is amqps:// as an operator sets it up (test_tls.h): a PKI in the state dir with
// cped.e2e and operator.alice, cped issuing the dped's certificate, pcloudsh presenting the
// operator's through pcloud.conf. Every wait polls up to a deadline. Domains, cped and dpeds are
// removed in TearDown even on failure; leftovers of a run killed by a ctest timeout (pcce2e<PID>-*
// with PID gone) are swept at the next start. Skips (with the reason) without root, libvirtd or the
// binaries.
#include "common/fs.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <netinet/in.h>
#include <regex>
#include <set>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string kBin = PCLOUD_BIN_DIR;
const std::string kSrc = PCLOUD_SOURCE_DIR;
const std::string kVirsh = "virsh -c qemu:///system ";
// Each poll runs pcloudsh (or virsh), so poll no faster than this.
constexpr auto kPoll = 200ms;

bool alive(pid_t pid) {
    return pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH);
}

// Pids of processes whose command line holds `needle` (a unique state dir path).
std::vector<pid_t> pidsWithArg(const std::string& needle) {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (!d)
        return out;
    while (auto* e = ::readdir(d)) {
        pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
        if (pid <= 0 || pid == ::getpid())
            continue;
        auto cmd = fs::readFile("/proc/" + std::string(e->d_name) + "/cmdline");
        if (!cmd)
            continue;
        for (auto& c : *cmd)
            if (c == '\0')
                c = ' ';
        if (cmd->find(needle) != std::string::npos)
            out.push_back(pid);
    }
    ::closedir(d);
    return out;
}

class CpedE2e : public ::testing::Test {
protected:
    static inline std::string guest_dir_;
    static inline std::string skip_;

    static void SetUpTestSuite() {
        if (::geteuid() != 0) {
            skip_ = "needs root for qemu:///system";
            return;
        }
        for (const char* b : {"cped", "dped", "pcloudsh", "pcloud-agent", "pcloud-guest-xml"})
            if (!fs::exists(kBin + "/" + b)) {
                skip_ = "build " + std::string(b) + " first";
                return;
            }
        if (::system((kVirsh + "version >/dev/null 2>&1").c_str()) != 0) {
            skip_ = "libvirtd is not running (run scripts/setup-libvirt.sh)";
            return;
        }
        sweepStale();
        auto r = runCommand(kSrc + "/scripts/build-guest.sh " + kBin + "/pcloud-agent 2>&1");
        auto pos = r.out.rfind("GUEST_DIR=");
        if (pos == std::string::npos) {
            skip_ = "could not build the tiny guest: " +
                    r.out.substr(r.out.size() > 400 ? r.out.size() - 400 : 0);
            return;
        }
        guest_dir_ = r.out.substr(pos + 10);
        while (!guest_dir_.empty() && isspace(guest_dir_.back()))
            guest_dir_.pop_back();
    }

    // What a run killed by a ctest timeout left behind: its dpeds (they outlive cped by
    // design) and its domains, named after a test pid that is gone.
    static void sweepStale() {
        std::string names = runCommand(kVirsh + "list --all --name 2>/dev/null").out;
        std::istringstream in(names);
        std::string n;
        std::set<std::string> deadTags;
        while (std::getline(in, n)) {
            if (n.rfind("pcce2e", 0) != 0)
                continue;
            auto dash = n.find('-');
            if (dash == std::string::npos)
                continue;
            pid_t owner = static_cast<pid_t>(std::atol(n.substr(6, dash - 6).c_str()));
            if (alive(owner))
                continue;
            deadTags.insert(n.substr(0, dash));
            std::fprintf(stderr, "removing stale domain %s of a dead test run\n", n.c_str());
        }
        for (const auto& tag : deadTags)
            for (pid_t p : pidsWithArg("/tmp/" + tag + " "))
                ::kill(p, SIGKILL);
        in = std::istringstream(names);
        while (std::getline(in, n)) {
            auto dash = n.find('-');
            if (dash == std::string::npos || !deadTags.count(n.substr(0, dash)))
                continue;
            (void)::system((kVirsh + "destroy " + n + " >/dev/null 2>&1").c_str());
            (void)::system((kVirsh + "undefine " + n + " >/dev/null 2>&1").c_str());
        }
    }

    void SetUp() override {
        if (!skip_.empty())
            GTEST_SKIP() << skip_;
        tag_ = "pcce2e" + std::to_string(::getpid());
        dir_ = "/tmp/" + tag_;
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
        port_ = freePort();
        broker_ = amqpsUrl(port_);
        cped_log_ = dir_ + "/cped.log";
        tls_ = std::make_unique<TestTls>(dir_ + "/pki");
        auto pki = tls_->setUp("e2e");
        ASSERT_TRUE(pki.ok()) << pki.error().describe();
        // The tiny guests' user-mode network, allowed explicitly, and the PKI; cped passes
        // the file to dped.
        config_ = writeTinyGuestHostConfig(dir_, tls_->hostConfig());
        cped_ = ::fork();
        if (cped_ == 0) {
            // cped never outlives the test; its dpeds are killed in TearDown (or swept).
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            ::setsid();
            int fd = ::open(cped_log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::execl((kBin + "/cped").c_str(), "cped", "--state-dir", dir_.c_str(), "--listen",
                    broker_.c_str(), "--log-level", "info", "--config", config_.c_str(), nullptr);
            _exit(127);
        }
        ASSERT_TRUE(waitFor([&] { return sh("deployable_list").rc == 0; }, 15s, kPoll))
            << "cped does not answer\n"
            << log(cped_log_);
    }

    void TearDown() override {
        if (cped_ > 0) {
            ::kill(cped_, SIGKILL);
            ::waitpid(cped_, nullptr, 0);
        }
        // dpeds outlive cped by design: kill ours (their command line names our state dir).
        for (pid_t p : pidsWithArg(dir_ + " "))
            ::kill(p, SIGKILL);
        for (const auto& d : domains_) {
            (void)::system((kVirsh + "destroy " + d + " >/dev/null 2>&1").c_str());
            (void)::system((kVirsh + "undefine " + d + " >/dev/null 2>&1").c_str());
        }
        if (!HasFailure())
            std::filesystem::remove_all(dir_);
        else if (!dir_.empty())
            std::fprintf(stderr, "state dir kept for inspection: %s\n", dir_.c_str());
    }

    static std::string log(const std::string& path) {
        auto t = fs::readFile(path);
        if (!t)
            return "(no " + path + ")";
        return "--- " + path + " (tail)\n" + t->substr(t->size() > 6000 ? t->size() - 6000 : 0);
    }
    std::string logs() {
        std::string s = log(cped_log_);
        for (const auto& e : std::filesystem::directory_iterator(dir_))
            if (e.path().filename().string().rfind("dped", 0) == 0 &&
                e.path().extension() == ".log")
                s += "\n" + log(e.path().string());
        return s + "\n--- events\n" + sh("events --since 0").out;
    }

    // One pcloudsh one-shot command (words contain no shell metacharacters). stderr joins stdout.
    std::string pcloudsh() const {
        return kBin + "/pcloudsh --broker " + broker_ + " --config " + config_ + " --timeout 20 ";
    }
    CommandResult sh(const std::string& words) { return runCommand(pcloudsh() + words + " 2>&1"); }
    json shJson(const std::string& words) {
        auto r = runCommand(pcloudsh() + "--json " + words + " 2>/dev/null");
        if (r.rc != 0)
            return json();
        auto j = json::parse(r.out, nullptr, false);
        return j.is_discarded() ? json() : j;
    }
    // Events with seq > `after` (--since is exclusive).
    std::vector<json> events(std::uint64_t after = 0) {
        auto r = runCommand(pcloudsh() + "--json events --since " + std::to_string(after) +
                            " --limit 100000 2>/dev/null");
        std::vector<json> out;
        std::istringstream in(r.out);
        std::string line;
        while (std::getline(in, line)) {
            auto j = json::parse(line, nullptr, false);
            if (j.is_object())
                out.push_back(j);
        }
        return out;
    }
    std::uint64_t lastSeq() {
        auto ev = events();
        return ev.empty() ? 0 : ev.back().value("seq", std::uint64_t(0));
    }

    json status(const std::string& dep) { return shJson("deployable_status " + dep); }
    static json assemblyOf(const json& st, const std::string& name) {
        if (!st.is_object() || !st.contains("status"))
            return json();
        for (const auto& a : st["status"].value("assemblies", json::array()))
            if (a.value("name", "") == name)
                return a;
        return json();
    }
    static bool healthy(const json& a) {
        if (!a.is_object() || a.value("domain", "") != "running" ||
            a.value("agent", "") != "connected")
            return false;
        for (const auto& s : a.value("services", json::array()))
            if (s.value("name", "") == "httpd")
                return s.value("state", "") == "active";
        return false;
    }
    bool allHealthy(const std::string& dep, const std::vector<std::string>& names) {
        auto st = status(dep);
        for (const auto& n : names)
            if (!healthy(assemblyOf(st, n)))
                return false;
        return true;
    }
    static int failuresOf(const json& st, const std::string& name) {
        auto a = assemblyOf(st, name);
        return a.is_object() ? a["failures"].value("used", -1) : -1;
    }
    static pid_t dpedPidOf(const json& st) {
        if (!st.is_object() || !st.contains("dped") || !st["dped"].is_object())
            return 0;
        return st["dped"].value("pid", pid_t(0));
    }
    // Persisted failure timestamps per assembly (STATE/escalation-DEP.json).
    std::map<std::string, std::size_t> persistedFailures(const std::string& dep) {
        std::map<std::string, std::size_t> out;
        auto text = fs::readFile(dir_ + "/escalation-" + dep + ".json");
        if (!text)
            return out;
        auto j = json::parse(*text, nullptr, false);
        if (j.is_discarded() || !j.contains("assemblies"))
            return out;
        for (const auto& [name, a] : j["assemblies"].items())
            out[name] =
                a.contains("recovery") ? a["recovery"].value("failures", json::array()).size() : 0;
        return out;
    }
    bool hasEvent(const std::vector<json>& evs, const std::string& assembly,
                  const std::string& state, const std::string& reasonPart = "") {
        for (const auto& e : evs)
            if (e.value("assembly", "") == assembly && e.value("state", "") == state &&
                e.value("reason", "").find(reasonPart) != std::string::npos)
                return true;
        return false;
    }
    std::string domState(const std::string& d) {
        auto r = runCommand(kVirsh + "domstate " + d + " 2>&1");
        while (!r.out.empty() && isspace(r.out.back()))
            r.out.pop_back();
        while (!r.out.empty() && r.out.find('\n') != std::string::npos)
            r.out = r.out.substr(0, r.out.find('\n'));
        return r.out;
    }

    // Writes the guest XML for `name` (serving http on `port`) and creates the assembly.
    void createAssembly(const std::string& name, int port, bool breakMemory = false) {
        domains_.push_back(name);
        std::string xmlPath = dir_ + "/" + name + ".xml";
        auto r =
            runCommand(kBin + "/pcloud-guest-xml " + name + " --http-port " + std::to_string(port) +
                       " --kernel " + guest_dir_ + "/vmlinuz" + " --initrd " + guest_dir_ +
                       "/initrd.img --console-log " + dir_ + "/" + name + ".console.log 2>&1");
        ASSERT_EQ(r.rc, 0) << r.out;
        std::string xml = r.out;
        if (breakMemory) {
            // Well-formed XML (cped accepts it) that libvirt refuses: a memory size of "lots".
            std::regex mem("<memory[^>]*>[^<]*</memory>");
            ASSERT_TRUE(std::regex_search(xml, mem)) << xml;
            xml = std::regex_replace(xml, mem, "<memory unit='KiB'>lots</memory>");
        }
        ASSERT_TRUE(fs::writeAtomic(xmlPath, xml).ok());
        auto c = sh("assembly_create " + name + " --domain-xml " + xmlPath +
                    " --address 127.0.0.1:" + std::to_string(port));
        ASSERT_EQ(c.rc, 0) << c.out;
        auto a = sh("assembly_resource_add httpd busybox-httpd " + name);
        ASSERT_EQ(a.rc, 0) << a.out;
    }

    std::string tag_, dir_, broker_, cped_log_, config_;
    std::unique_ptr<TestTls> tls_;
    int port_ = 0;
    pid_t cped_ = -1;
    std::vector<std::string> domains_;
};

TEST_F(CpedE2e, ShellDrivesCpedDpedAndTwoGuestsThroughCrashesAndStop) {
    const std::string dep = tag_, A = tag_ + "-a", B = tag_ + "-b";
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] {
        return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - t0)
                                  .count()) +
               " ms";
    };

    // 1. create, add, start; both healthy.
    ASSERT_EQ(sh("deployable_create " + dep + " --uri qemu:///system").rc, 0);
    createAssembly(A, freePort());
    createAssembly(B, freePort());
    ASSERT_EQ(sh("deployable_assembly_add " + dep + " " + A).rc, 0);
    ASSERT_EQ(sh("deployable_assembly_add " + dep + " " + B).rc, 0);
    auto started = sh("deployable_start " + dep);
    ASSERT_EQ(started.rc, 0) << started.out;
    ASSERT_TRUE(waitFor(
        [&] {
            return allHealthy(dep, {A, B});
        },
        90s, kPoll))
        << status(dep).dump(1) << "\n"
        << logs();
    std::fprintf(stderr, "[cped_e2e] both healthy after %s\n", elapsed().c_str());
    // The dped cped started presents the certificate cped issued for it.
    {
        auto text = fs::readFile(cped_log_);
        ASSERT_TRUE(text.ok());
        auto at = text->find("Hub peer authenticated");
        EXPECT_NE(text->find("identity=dped:" + dep + " ", at), std::string::npos) << *text;
    }
    EXPECT_TRUE(fs::exists(tls_->dir() + "/dped." + dep + ".crt"));
    {
        auto st = status(dep);
        for (const auto& n : {A, B})
            EXPECT_EQ(assemblyOf(st, n).value("referee", ""), "none") << "no referee configured";
    }

    // 2. ping both through cped -> dped -> agent.
    auto ping = sh("ping " + A + " " + B);
    EXPECT_EQ(ping.rc, 0) << ping.out;
    std::fprintf(stderr, "[cped_e2e] pcloudsh ping:\n%s", ping.out.c_str());
    for (const auto& n : {A, B})
        EXPECT_TRUE(std::regex_search(ping.out, std::regex(n + " +time=[0-9.]+ ms"))) << ping.out;

    // 3. SIGKILL the dped -> cped restarts it; the new one adopts the running guests.
    json before = status(dep);
    pid_t dped1 = dpedPidOf(before);
    ASSERT_GT(dped1, 0) << before.dump(1);
    {
        auto lock = fs::readFile(dir_ + "/dped-" + dep + ".lock");
        ASSERT_TRUE(lock.ok());
        EXPECT_EQ(std::atoi(lock->c_str()), dped1);
    }
    pid_t qa = qemuPidOf(A), qb = qemuPidOf(B);
    ASSERT_GT(qa, 0);
    ASSERT_GT(qb, 0);
    int failA = failuresOf(before, A), failB = failuresOf(before, B);
    ASSERT_EQ(failA, 0);
    ASSERT_EQ(failB, 0);
    ASSERT_EQ(::kill(dped1, SIGKILL), 0);
    pid_t dped2 = 0;
    ASSERT_TRUE(waitFor(
        [&] {
            auto st = status(dep);
            dped2 = dpedPidOf(st);
            return dped2 > 0 && dped2 != dped1 && st.contains("status") &&
                   healthy(assemblyOf(st, A)) && healthy(assemblyOf(st, B));
        },
        60s, kPoll))
        << status(dep).dump(1) << "\n"
        << logs();
    std::fprintf(stderr, "[cped_e2e] new dped %d adopted after %s\n", dped2, elapsed().c_str());
    EXPECT_FALSE(alive(dped1));
    EXPECT_EQ(qemuPidOf(A), qa) << "dped restart restarted a domain";
    EXPECT_EQ(qemuPidOf(B), qb) << "dped restart restarted a domain";
    {
        auto st = status(dep);
        EXPECT_EQ(failuresOf(st, A), failA);
        EXPECT_EQ(failuresOf(st, B), failB);
    }

    // 4. SIGKILL A's qemu -> failed "qemu exited" -> running again, one failure.
    std::uint64_t mark = lastSeq();
    ASSERT_EQ(::kill(qa, SIGKILL), 0);
    ASSERT_TRUE(waitFor(
        [&] {
            auto ev = events(mark);
            return hasEvent(ev, A, "failed", "qemu exited") && hasEvent(ev, A, "running");
        },
        60s, kPoll))
        << logs();
    ASSERT_TRUE(waitFor(
        [&] {
            return allHealthy(dep, {A, B});
        },
        60s, kPoll))
        << status(dep).dump(1) << "\n"
        << logs();
    std::fprintf(stderr, "[cped_e2e] A recovered from the qemu kill after %s\n", elapsed().c_str());
    {
        auto st = status(dep);
        EXPECT_EQ(failuresOf(st, A), 1) << st.dump(1);
        EXPECT_EQ(failuresOf(st, B), 0) << st.dump(1);
        EXPECT_NE(qemuPidOf(A), qa);
        EXPECT_EQ(qemuPidOf(B), qb) << "B must not be touched";
        // the failed event comes before the running event
        auto ev = events(mark);
        std::size_t failedAt = ev.size(), runningAt = ev.size();
        for (std::size_t i = 0; i < ev.size(); ++i) {
            if (ev[i].value("assembly", "") != A)
                continue;
            if (ev[i].value("state", "") == "failed" && failedAt == ev.size())
                failedAt = i;
            if (ev[i].value("state", "") == "running" && failedAt < i)
                runningAt = i;
        }
        EXPECT_LT(failedAt, runningAt);
        EXPECT_LT(runningAt, ev.size());
    }

    // 5. the journal: strictly increasing seqs, no duplicates.
    {
        auto ev = events(1); // `events --since 1 --json`
        ASSERT_GT(ev.size(), 5u);
        for (std::size_t i = 1; i < ev.size(); ++i)
            EXPECT_LT(ev[i - 1].value("seq", std::uint64_t(0)),
                      ev[i].value("seq", std::uint64_t(0)))
                << ev[i - 1].dump() << "\n"
                << ev[i].dump();
    }

    // 6. planned stop: both domains shut off, dped gone, no failure recorded.
    auto persistedBefore = persistedFailures(dep);
    pid_t dpedLast = dpedPidOf(status(dep));
    mark = lastSeq();
    auto stop = sh("deployable_stop " + dep);
    EXPECT_EQ(stop.rc, 0) << stop.out;
    EXPECT_TRUE(
        waitFor([&] { return domState(A) == "shut off" && domState(B) == "shut off"; }, 30s, kPoll))
        << domState(A) << " / " << domState(B);
    EXPECT_TRUE(waitFor([&] { return !alive(dpedLast); }, 10s, kPoll)) << "dped still running";
    {
        auto st = status(dep);
        EXPECT_EQ(dpedPidOf(st), 0) << st.dump(1);
        EXPECT_EQ(persistedFailures(dep), persistedBefore);
        auto ev = events(mark);
        for (const auto& e : ev)
            EXPECT_NE(e.value("state", ""), "failed") << e.dump();
    }
    std::fprintf(stderr, "[cped_e2e] stopped after %s\n", elapsed().c_str());

    // 7. bad input: libvirt rejects the third assembly's domain XML.
    const std::string dep2 = tag_ + "x", C = tag_ + "-c";
    ASSERT_EQ(sh("deployable_create " + dep2 + " --uri qemu:///system").rc, 0);
    createAssembly(C, freePort(), /*breakMemory=*/true);
    ASSERT_EQ(sh("deployable_assembly_add " + dep2 + " " + C).rc, 0);
    mark = lastSeq();
    auto started2 = sh("deployable_start " + dep2);
    EXPECT_EQ(started2.rc, 0) << started2.out;
    std::string reason;
    EXPECT_TRUE(waitFor(
        [&] {
            for (const auto& e : events(mark))
                if (e.value("assembly", "") == C && e.value("state", "") == "error") {
                    reason = e.value("reason", "");
                    return true;
                }
            return false;
        },
        30s, kPoll))
        << logs();
    EXPECT_NE(reason.find("libvirt rejected the domain"), std::string::npos) << reason;
    EXPECT_NE(reason.find("lots"), std::string::npos) << "libvirt's complaint: " << reason;
    std::fprintf(stderr, "[cped_e2e] rejected XML event: %s\n", reason.c_str());
    EXPECT_EQ(::waitpid(cped_, nullptr, WNOHANG), 0) << "cped exited\n" << log(cped_log_);
    EXPECT_EQ(sh("deployable_list").rc, 0) << "cped must stay up";
    EXPECT_EQ(sh("deployable_stop " + dep2).rc, 0);
    std::fprintf(stderr, "[cped_e2e] done after %s\n", elapsed().c_str());
}

} // namespace
