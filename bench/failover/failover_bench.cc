// failover_bench: the C++ half of bench/failover/run.sh (docs/bench-failover.md).
//
//   failover_bench hub --port-file F --journal F
//       An AMQP hub for dped (standing in for cped), logging pcloud.journal events.
//   failover_bench model --state-dir D --deployable NAME --guest-dir G
//       --assembly NAME:HTTP_PORT ... [--referee log|haproxy --socket S --backend B]
//       [--hb-interval MS --hb-timeout MS]
//       Writes the deployable (tiny guests, one busybox httpd each) into D.
//   failover_bench wait-ready --socket S --backend B --servers N [--stable-ms 2000]
//       [--timeout-ms 300000]   Waits until N servers are ready+up for stable-ms.
//   failover_bench trial --arm A --kind service|hang|crash --frontend PORT --socket S
//       --backend B --victim NAME --victim-port P [--rate 200] [--timeout-ms 1000]
//       [--pre-ms 2000] [--window-ms 20000]
//       One failure under load; prints one JSON line.
//   failover_bench report FILE      The side-by-side table from the trial lines.
#include "support/journal_standin.h"
#include "support/load.h"

#include "bus/client.h"
#include "bus/hub.h"
#include "common/fs.h"
#include "model/model.h"
#include "referee/haproxy_referee.h"
#include "referee/runtime_api.h"
#include "store/store.h"
#include "support/test_support.h"
#include "virt/guest_xml.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using nlohmann::json;
using testsupport::qemuPidOf;
using namespace std::chrono_literals;

namespace {

// --name value pairs; repeated names accumulate.
struct Args {
    std::multimap<std::string, std::string> kv;
    std::string get(const std::string& k, const std::string& def = "") const {
        auto it = kv.find(k);
        return it == kv.end() ? def : it->second;
    }
    std::vector<std::string> all(const std::string& k) const {
        std::vector<std::string> out;
        auto [b, e] = kv.equal_range(k);
        for (auto it = b; it != e; ++it)
            out.push_back(it->second);
        return out;
    }
    double num(const std::string& k, double def) const {
        auto v = get(k);
        return v.empty() ? def : std::atof(v.c_str());
    }
    std::string need(const std::string& k) const {
        auto v = get(k);
        if (v.empty()) {
            std::fprintf(stderr, "failover_bench: --%s is required\n", k.c_str());
            std::exit(2);
        }
        return v;
    }
};

Args parseArgs(int argc, char** argv, int from) {
    Args a;
    for (int i = from; i < argc; ++i) {
        std::string k = argv[i];
        if (k.rfind("--", 0) != 0 || i + 1 >= argc) {
            std::fprintf(stderr, "failover_bench: bad argument '%s' (want --name value)\n",
                         k.c_str());
            std::exit(2);
        }
        a.kv.emplace(k.substr(2), argv[++i]);
    }
    return a;
}

void sleepMs(double ms) {
    if (ms > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(ms * 1000)));
}

// ---------------------------------------------------------------------------------- hub
int cmdHub(const Args& a) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    bus::Hub hub{bus::insecureHubOptions()}; // plain amqp://, not about TLS
    auto st = hub.start("amqp://127.0.0.1:0");
    if (!st) {
        std::fprintf(stderr, "failover_bench hub: %s\n", st.error().describe().c_str());
        return 1;
    }
    std::ofstream journal(a.need("journal"), std::ios::app);
    std::mutex mu;
    bus::Client client;
    if (!client.connect("amqp://127.0.0.1:" + std::to_string(hub.boundPort())) ||
        !client.waitConnected(10s)) {
        std::fprintf(stderr, "failover_bench hub: cannot connect to own hub\n");
        return 1;
    }
    auto sub = testsupport::serveJournal(client, [&](const bus::Message& m) {
        std::lock_guard lock(mu);
        journal << json{{"recv_steady_ms", bench::steadyMs()},
                        {"event", json::parse(m.body, nullptr, false)}}
                       .dump()
                << "\n"
                << std::flush;
    });
    client.waitSubscribed(sub, 10s);
    // Written last: its presence means the hub is ready.
    auto portFile = a.need("port-file");
    auto w = fs::writeAtomic(portFile, std::to_string(hub.boundPort()) + "\n");
    if (!w) {
        std::fprintf(stderr, "failover_bench hub: %s\n", w.error().describe().c_str());
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    client.close();
    hub.stop();
    return 0;
}

// -------------------------------------------------------------------------------- model
int cmdModel(const Args& a) {
    const std::string dir = a.need("state-dir"), dep = a.need("deployable");
    const std::string guestDir = a.need("guest-dir");
    model::Model m;
    model::Deployable d;
    d.name = dep;
    d.heartbeat_interval = static_cast<Millis>(a.num("hb-interval", 100));
    d.heartbeat_timeout = static_cast<Millis>(a.num("hb-timeout", 400));
    // Every failure is handled the same way, however many the benchmark injects: restart
    // the service in place, restart the VM; never escalate or give up.
    d.escalation = {model::kUnlimitedFailures, 3'600'000};
    d.backoff = {200, 2.0, 2'000, 5'000};
    d.referee.driver = a.get("referee", "log");
    if (d.referee.driver == "haproxy") {
        d.referee.socket = a.need("socket");
        d.referee.backend = a.need("backend");
    }
    for (const auto& spec : a.all("assembly")) {
        auto colon = spec.find(':');
        if (colon == std::string::npos) {
            std::fprintf(stderr, "failover_bench model: --assembly wants NAME:PORT, got '%s'\n",
                         spec.c_str());
            return 2;
        }
        std::string name = spec.substr(0, colon);
        int port = std::atoi(spec.c_str() + colon + 1);
        auto g = virt::tinyGuestIn(name, guestDir, dir, port);
        auto xml = virt::renderTinyGuestXml(g);
        if (!xml) {
            std::fprintf(stderr, "failover_bench model: %s\n", xml.error().describe().c_str());
            return 1;
        }
        model::Assembly as;
        as.name = name;
        as.uuid = g.uuid;
        as.domain_xml = *xml;
        as.address = "127.0.0.1:" + std::to_string(port);
        as.escalation = {model::kUnlimitedFailures, 600'000};
        model::Resource r;
        r.name = "httpd"; // the same name and command as the guest's agent.conf
        r.type = "busybox-httpd";
        r.klass = model::ResourceClass::Process;
        r.unit = "/bin/busybox httpd -f -p 80 -h /www";
        r.monitor_interval = 1'000;
        r.escalation = {model::kUnlimitedFailures, 600'000};
        model::Probe p;
        p.kind = model::ProbeKind::Http;
        p.port = 80;
        p.path = "/";
        p.interval = 500;
        p.timeout = 500;
        p.threshold = 2;
        r.probe = p;
        as.resources.push_back(r);
        m.assemblies[name] = as;
        d.assemblies.push_back(name);
    }
    m.deployables[dep] = d;
    auto st = fs::makeDirs(dir + "/channels");
    if (st)
        st = store::saveModel(dir, m);
    if (!st) {
        std::fprintf(stderr, "failover_bench model: %s\n", st.error().describe().c_str());
        return 1;
    }
    return 0;
}

// --------------------------------------------------------------------------- wait-ready
int cmdWaitReady(const Args& a) {
    const std::string sock = a.need("socket"), backend = a.need("backend");
    const std::size_t n = static_cast<std::size_t>(a.num("servers", 2));
    const double stable = a.num("stable-ms", 2000), timeout = a.num("timeout-ms", 300000);
    double start = bench::steadyMs();
    std::optional<double> allInSince;
    std::string last;
    while (bench::steadyMs() - start < timeout) {
        auto text = referee::runtimeApiExchange(sock, "show servers state " + backend + "\n", 1000);
        std::size_t in = 0;
        last.clear();
        if (text) {
            if (auto members = referee::parseServersState(*text, backend)) {
                for (const auto& m : *members) {
                    bool ok = m.state == referee::MemberState::Ready && m.health == "up";
                    in += ok;
                    last += m.name + "=" + referee::toString(m.state) + "/" + m.health + " ";
                }
            }
        } else {
            last = text.error().describe();
        }
        double now = bench::steadyMs();
        if (in >= n) {
            if (!allInSince)
                allInSince = now;
            if (now - *allInSince >= stable) {
                std::fprintf(stderr, "wait-ready: all in after %.1f s: %s\n", (now - start) / 1000,
                             last.c_str());
                return 0;
            }
        } else {
            allInSince.reset();
        }
        sleepMs(50);
    }
    std::fprintf(stderr, "wait-ready: timed out after %.0f s; last: %s\n", timeout / 1000,
                 last.c_str());
    return 1;
}

// -------------------------------------------------------------------------------- trial
// GET /cgi-bin/die straight at the guest's forward (not through HAProxy): the CGI kills
// the guest's httpd listener with SIGKILL from inside the guest.
std::string killService(int port, double& doneMs) {
    auto r = testsupport::httpRequest(port, "/cgi-bin/die", 2s);
    if (!r.connected)
        return std::string("connect failed: ") + std::strerror(r.error);
    // The CGI writes its answer, then kills; the connection closes once it exits.
    doneMs = bench::steadyMs();
    return r.text;
}

int cmdTrial(const Args& a) {
    const std::string arm = a.need("arm"), kind = a.need("kind"), sock = a.need("socket");
    const std::string backend = a.need("backend"), victim = a.need("victim");
    const int frontend = std::atoi(a.need("frontend").c_str());
    const int victimPort = std::atoi(a.need("victim-port").c_str());
    const double rate = a.num("rate", 200), timeoutMs = a.num("timeout-ms", 1000);
    const double preMs = a.num("pre-ms", 2000), windowMs = a.num("window-ms", 20000);
    if (kind != "service" && kind != "hang" && kind != "crash") {
        std::fprintf(stderr, "failover_bench trial: --kind must be service|hang|crash\n");
        return 2;
    }
    pid_t qemu = qemuPidOf(victim);
    if (kind != "service" && qemu <= 0) {
        std::fprintf(stderr, "failover_bench trial: no qemu pid for domain %s\n", victim.c_str());
        return 1;
    }

    bench::StatePoller poller(sock, backend, victim, 5);
    bench::LoadGenerator load(frontend, rate, timeoutMs);
    poller.start();
    load.start();
    sleepMs(preMs);

    std::string injectNote;
    double tKillDone = 0;
    double tFail = bench::steadyMs();
    std::thread injector;
    if (kind == "service") {
        injector = std::thread([&] { injectNote = killService(victimPort, tKillDone); });
    } else if (kind == "hang") {
        if (::kill(qemu, SIGSTOP) != 0)
            injectNote = std::string("SIGSTOP: ") + std::strerror(errno);
    } else {
        if (::kill(qemu, SIGKILL) != 0)
            injectNote = std::string("SIGKILL: ") + std::strerror(errno);
    }
    sleepMs(tFail + windowMs - bench::steadyMs());
    if (kind == "hang") {
        // The hang ends with the window (if pcloud has not replaced the VM by then).
        if (::kill(qemu, SIGCONT) != 0)
            injectNote = std::string("SIGCONT: ") + std::strerror(errno);
        else
            injectNote = "SIGCONT sent to the original qemu";
    }
    double tEnd = bench::steadyMs();
    load.stop();
    poller.stop();
    if (injector.joinable())
        injector.join();

    auto recs = load.records();
    auto trans = poller.transitions();
    std::size_t sent = 0, failedPre = 0, failed = 0;
    std::map<std::string, std::size_t> byOutcome;
    json failTimes = json::array();
    double firstFail = -1, lastFail = -1;
    for (const auto& r : recs) {
        if (r.scheduled_ms >= tEnd)
            continue;
        bool bad = r.outcome != bench::Outcome::Ok;
        if (r.scheduled_ms < tFail) {
            failedPre += bad;
            continue;
        }
        ++sent;
        if (!bad)
            continue;
        ++failed;
        byOutcome[r.outcome == bench::Outcome::BadStatus
                      ? "http-" + std::to_string(r.status)
                      : std::string(bench::toString(r.outcome))]++;
        double rel = r.scheduled_ms - tFail;
        if (firstFail < 0)
            firstFail = rel;
        lastFail = std::max(lastFail, rel);
        if (failTimes.size() < 2000)
            failTimes.push_back(std::round(rel));
    }
    // For a killed service the failure is the SIGKILL inside the guest, which comes after the
    // CGI request was sent by however long the guest takes to fork and run the CGI (a few
    // hundred ms under TCG); the CGI's answer ending marks it (within a few ms).
    double tOut0 = tFail;
    if (kind == "service" && tKillDone > 0)
        tOut0 = tKillDone;
    bool inAtFail = false;
    std::optional<double> outAt, backAt;
    json timeline = json::array();
    for (const auto& s : trans) {
        if (s.t_ms <= tFail)
            inAtFail = s.in;
        else {
            if (!outAt && !s.in)
                outAt = s.t_ms - tOut0;
            if (outAt && !backAt && s.in)
                backAt = s.t_ms - tFail;
        }
        timeline.push_back({{"t_ms", std::round((s.t_ms - tFail) * 10) / 10},
                            {"in", s.in},
                            {"state", s.state},
                            {"health", s.health}});
    }
    json out{{"arm", arm},
             {"kind", kind},
             {"victim", victim},
             {"rate", rate},
             {"window_ms", windowMs},
             {"sent", sent},
             {"failed", failed},
             {"failed_before_injection", failedPre},
             {"by_outcome", byOutcome},
             {"first_fail_ms", firstFail},
             {"last_fail_ms", lastFail},
             {"victim_in_at_injection", inAtFail},
             {"kill_confirmed_ms",
              kind == "service" && tKillDone > 0 ? json(std::round(tKillDone - tFail)) : json()},
             {"time_to_out_ms", outAt ? json(std::round(*outAt * 10) / 10) : json()},
             {"time_to_back_in_ms", backAt ? json(std::round(*backAt)) : json()},
             {"polls", poller.polls()},
             {"poll_errors", poller.errors()},
             {"inject_note", injectNote.substr(0, 200)},
             {"member_timeline", timeline},
             {"fail_times_ms", failTimes}};
    std::cout << out.dump() << std::endl;
    return 0;
}

// ------------------------------------------------------------------------------- report
double percentile(std::vector<double> v, double p) {
    if (v.empty())
        return NAN;
    std::sort(v.begin(), v.end());
    // Nearest rank.
    std::size_t rank =
        static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::min(v.size(), std::max<std::size_t>(rank, 1)) - 1];
}

int cmdReport(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: failover_bench report RESULTS.jsonl\n");
        return 2;
    }
    std::ifstream in(argv[2]);
    if (!in) {
        std::fprintf(stderr, "failover_bench report: cannot read %s\n", argv[2]);
        return 1;
    }
    struct Agg {
        std::vector<double> failed, tto, back;
        std::size_t missingOut = 0, notInAtStart = 0, pre = 0;
        double rate = 0;
    };
    std::map<std::string, std::map<std::string, Agg>> agg; // kind -> arm -> agg
    std::string line;
    while (std::getline(in, line)) {
        auto j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("kind"))
            continue;
        Agg& g = agg[j["kind"]][j["arm"]];
        g.failed.push_back(j["failed"].get<double>());
        g.pre += j["failed_before_injection"].get<std::size_t>();
        g.rate = j["rate"].get<double>();
        if (!j["victim_in_at_injection"].get<bool>())
            g.notInAtStart++;
        if (j["time_to_out_ms"].is_null())
            g.missingOut++;
        else
            g.tto.push_back(j["time_to_out_ms"].get<double>());
        if (!j["time_to_back_in_ms"].is_null())
            g.back.push_back(j["time_to_back_in_ms"].get<double>());
    }
    auto mean = [](const std::vector<double>& v) {
        double s = 0;
        for (double x : v)
            s += x;
        return v.empty() ? NAN : s / static_cast<double>(v.size());
    };
    std::printf(
        "\nFailed or timed-out client requests per failure, and time from the failure to the\n"
        "member being out of HAProxy (show servers state polled every 5 ms).\n"
        "baseline = HAProxy checks alone (inter 2s fall 3 rise 2, redispatch, retries 3);\n"
        "pcloud   = the same plus pcloud's referee (dped, driver haproxy).\n\n");
    std::printf("%-8s %-9s %3s %10s %9s %9s %11s %11s %11s %7s\n", "failure", "arm", "n",
                "failed/f", "min", "max", "out med ms", "out p99 ms", "back med s", "ratio");
    for (const char* kind : {"service", "hang", "crash"}) {
        auto k = agg.find(kind);
        if (k == agg.end())
            continue;
        double base = NAN;
        for (const char* arm : {"baseline", "pcloud"}) {
            auto g = k->second.find(arm);
            if (g == k->second.end())
                continue;
            const Agg& x = g->second;
            double m = mean(x.failed);
            if (std::string(arm) == "baseline")
                base = m;
            std::string ratio = "";
            if (std::string(arm) == "pcloud" && !std::isnan(base)) {
                char buf[32];
                if (m > 0)
                    std::snprintf(buf, sizeof buf, "%.1fx", base / m);
                else
                    std::snprintf(buf, sizeof buf, "inf");
                ratio = buf;
            }
            // "never": not out (or not back) within the window in more than half the trials.
            auto cell = [&](const std::vector<double>& v, double p, double scale, const char* fmt) {
                if (v.size() * 2 <= x.failed.size())
                    return std::string("never");
                char buf[32];
                std::snprintf(buf, sizeof buf, fmt, percentile(v, p) / scale);
                return std::string(buf);
            };
            std::printf("%-8s %-9s %3zu %10.1f %9.0f %9.0f %11s %11s %11s %7s", kind, arm,
                        x.failed.size(), m, percentile(x.failed, 0), percentile(x.failed, 100),
                        cell(x.tto, 50, 1, "%.0f").c_str(), cell(x.tto, 99, 1, "%.0f").c_str(),
                        cell(x.back, 50, 1000, "%.1f").c_str(), ratio.c_str());
            if (x.missingOut)
                std::printf("  (%zu not out in the window)", x.missingOut);
            if (x.notInAtStart)
                std::printf("  (%zu not in at injection)", x.notInAtStart);
            if (x.pre)
                std::printf("  (%zu failed before injections)", x.pre);
            std::printf("\n");
        }
    }
    std::printf(
        "\nratio = baseline failed/f over pcloud failed/f. p99 is nearest-rank over the n trials\n"
        "(with n < 100 it is the worst trial). back = failure to member back in (median).\n"
        "never = not out (or not back in) within the window in most trials.\n");
    return 0;
}

int usage() {
    std::fprintf(stderr, "usage: failover_bench hub|model|wait-ready|trial|report ... "
                         "(see bench/failover/failover_bench.cc)\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        return usage();
    std::string cmd = argv[1];
    if (cmd == "report")
        return cmdReport(argc, argv);
    Args a = parseArgs(argc, argv, 2);
    if (cmd == "hub")
        return cmdHub(a);
    if (cmd == "model")
        return cmdModel(a);
    if (cmd == "wait-ready")
        return cmdWaitReady(a);
    if (cmd == "trial")
        return cmdTrial(a);
    return usage();
}
