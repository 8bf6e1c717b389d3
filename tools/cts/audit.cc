#include "cts/audit.h"

#include "common/time_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace pcloud::cts {

using nlohmann::json;

namespace {

struct KindName {
    FaultKind kind;
    const char* name;
};
constexpr KindName kKinds[] = {
    {FaultKind::ServiceKill, "service-kill"},
    {FaultKind::AgentKill, "agent-kill"},
    {FaultKind::QemuKill, "qemu-kill"},
    {FaultKind::QemuStop, "qemu-stop"},
    {FaultKind::DpedKill, "dped-kill"},
    {FaultKind::CpedKill, "cped-kill"},
    {FaultKind::CpedTerm, "cped-term"},
    {FaultKind::PcloudStop, "pcloud-stop"},
    {FaultKind::LibvirtdRestart, "libvirtd-restart"},
    {FaultKind::HaproxyReload, "haproxy-reload"},
    {FaultKind::HaproxyRestart, "haproxy-restart"},
    {FaultKind::Double, "double"},
};

bool assemblyLevelFailure(const JournalEvent& e) {
    return e.state == "failed" && !e.assembly.empty() && e.service.empty();
}

} // namespace

const char* toString(FaultKind k) {
    for (const auto& kn : kKinds)
        if (kn.kind == k)
            return kn.name;
    return "?";
}

std::optional<FaultKind> parseFaultKind(const std::string& s) {
    for (const auto& kn : kKinds)
        if (s == kn.name)
            return kn.kind;
    return std::nullopt;
}

std::vector<FaultKind> allFaultKinds() {
    std::vector<FaultKind> v;
    for (const auto& kn : kKinds)
        v.push_back(kn.kind);
    return v;
}

bool isPcloudFault(FaultKind k) {
    switch (k) {
    case FaultKind::ServiceKill:
    case FaultKind::AgentKill: // pcloud's own process, but inside the guest: audited apart
    case FaultKind::QemuKill:
    case FaultKind::QemuStop:
    case FaultKind::Double:
        return false;
    default:
        return true;
    }
}

std::uint64_t Rng::next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

json Fault::toJson() const {
    json j{{"kind", cts::toString(kind)}};
    if (!victim.empty())
        j["victim"] = victim;
    if (!target.empty())
        j["target"] = target;
    if (pause_ms)
        j["pause_ms"] = pause_ms;
    if (!parts.empty()) {
        j["parts"] = json::array();
        for (const auto& p : parts)
            j["parts"].push_back(p.toJson());
    }
    return j;
}

std::string Fault::describe() const {
    if (kind == FaultKind::Double)
        return "double(" +
               (parts.size() == 2 ? parts[0].describe() + " + " + parts[1].describe()
                                  : std::string("?")) +
               ")";
    std::string s = cts::toString(kind);
    if (!victim.empty())
        s += " " + victim;
    if (!target.empty())
        s += " " + target;
    if (pause_ms)
        s += " " + std::to_string(pause_ms) + "ms";
    return s;
}

Fault pickFault(Rng& rng, const std::vector<FaultKind>& enabled,
                const std::vector<std::string>& assemblies, Millis heartbeatTimeoutMs,
                Millis maxPcloudStopMs) {
    Fault f;
    if (enabled.empty())
        return f;
    f.kind = enabled[rng.below(enabled.size())];
    auto victim = [&] {
        return assemblies.empty() ? std::string() : assemblies[rng.below(assemblies.size())];
    };
    switch (f.kind) {
    case FaultKind::ServiceKill:
    case FaultKind::AgentKill:
    case FaultKind::QemuKill:
        f.victim = victim();
        break;
    case FaultKind::QemuStop:
        f.victim = victim();
        f.pause_ms = static_cast<Millis>(rng.below(2 * heartbeatTimeoutMs + 1));
        break;
    case FaultKind::PcloudStop:
        f.target = rng.below(2) ? "cped" : "dped";
        f.pause_ms = static_cast<Millis>(rng.below(maxPcloudStopMs + 1));
        break;
    case FaultKind::CpedKill:
    case FaultKind::CpedTerm:
        f.pause_ms = static_cast<Millis>(rng.below(maxPcloudStopMs + 1));
        break;
    case FaultKind::Double: {
        std::vector<FaultKind> singles;
        for (auto k : enabled)
            if (k != FaultKind::Double)
                singles.push_back(k);
        if (singles.empty())
            singles = {FaultKind::QemuKill, FaultKind::DpedKill};
        Fault a = pickFault(rng, singles, assemblies, heartbeatTimeoutMs, maxPcloudStopMs);
        Fault b = a;
        // Two different faults: redraw a few times (the sequence stays replayable).
        for (int i = 0; i < 8 && b.kind == a.kind; ++i)
            b = pickFault(rng, singles, assemblies, heartbeatTimeoutMs, maxPcloudStopMs);
        f.parts = {a, b};
        break;
    }
    default:
        break;
    }
    return f;
}

bool hurtsGuest(const Fault& f) {
    if (f.kind == FaultKind::Double)
        return std::any_of(f.parts.begin(), f.parts.end(), hurtsGuest);
    return f.kind == FaultKind::ServiceKill || f.kind == FaultKind::QemuKill ||
           f.kind == FaultKind::QemuStop;
}

std::set<std::string> guestVictims(const Fault& f) {
    std::set<std::string> out;
    if (f.kind == FaultKind::Double) {
        for (const auto& p : f.parts) {
            auto v = guestVictims(p);
            out.insert(v.begin(), v.end());
        }
    } else if (hurtsGuest(f) && !f.victim.empty()) {
        out.insert(f.victim);
    }
    return out;
}

std::optional<JournalEvent> parseJournalLine(const std::string& line) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("seq") || !j["seq"].is_number_unsigned())
        return std::nullopt;
    JournalEvent e;
    e.seq = j["seq"].get<std::uint64_t>();
    auto str = [&](const char* k) {
        return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    e.time = str("time");
    e.deployable = str("deployable");
    e.assembly = str("assembly");
    e.service = str("service");
    e.state = str("state");
    e.reason = str("reason");
    e.cause_id = str("cause_id");
    return e;
}

std::vector<std::string> auditJournal(const std::vector<JournalEvent>& events,
                                      std::uint64_t expectFirst) {
    std::vector<std::string> problems;
    std::uint64_t want = expectFirst;
    std::set<std::string> seen;
    for (const auto& e : events) {
        if (want != 0 && e.seq != want)
            problems.push_back("journal: seq " + std::to_string(e.seq) + " where " +
                               std::to_string(want) + " was due" +
                               (e.seq > want ? " (a gap)" : " (out of order or repeated)"));
        want = e.seq + 1;
        std::string key = e.time + "|" + e.deployable + "|" + e.assembly + "|" + e.service + "|" +
                          e.state + "|" + e.reason + "|" + e.cause_id;
        if (!seen.insert(key).second)
            problems.push_back("journal: event at seq " + std::to_string(e.seq) +
                               " is there twice (" + e.assembly + " " + e.state + " at " + e.time +
                               ")");
    }
    return problems;
}

std::vector<std::string> auditNeverTwo(const std::map<std::string, int>& maxQemu) {
    std::vector<std::string> problems;
    for (const auto& [domain, n] : maxQemu)
        if (n > 1)
            problems.push_back("never two: " + std::to_string(n) + " qemu processes of domain " +
                               domain + " ran at once");
    return problems;
}

std::vector<std::string> auditMembership(const std::set<std::string>& haproxyReady,
                                         const std::set<std::string>& healthy) {
    std::vector<std::string> problems;
    for (const auto& a : haproxyReady)
        if (!healthy.count(a))
            problems.push_back("membership: " + a + " is in the balancer but not healthy");
    for (const auto& a : healthy)
        if (!haproxyReady.count(a))
            problems.push_back("membership: " + a + " is healthy but not in the balancer");
    return problems;
}

GuestImpact impactOf(const std::vector<JournalEvent>& window,
                     const std::map<std::string, long>& pidsBefore,
                     const std::map<std::string, long>& pidsAfter) {
    GuestImpact g;
    for (const auto& [a, before] : pidsBefore) {
        auto it = pidsAfter.find(a);
        long after = it == pidsAfter.end() ? 0 : it->second;
        if (before != after) {
            g.vm_restarts++;
            g.restarted.insert(a);
        }
    }
    for (const auto& e : window) {
        if (e.state != "failed")
            continue;
        g.failures++;
        if (!e.service.empty())
            g.service_restarts++;
    }
    return g;
}

std::vector<std::string> auditImpact(const Fault& f, const std::vector<JournalEvent>& window,
                                     const GuestImpact& impact) {
    std::vector<std::string> problems;
    const auto victims = guestVictims(f);
    for (const auto& a : impact.restarted)
        if (!victims.count(a))
            problems.push_back("impact: VM " + a + " restarted, but " + f.describe() +
                               " did not hurt it");
    for (const auto& e : window) {
        if (e.state != "failed")
            continue;
        if (e.assembly.empty() || !victims.count(e.assembly)) {
            problems.push_back("impact: " + (e.assembly.empty() ? e.deployable : e.assembly) +
                               (e.service.empty() ? "" : "/" + e.service) + " failed (" + e.reason +
                               "), but " + f.describe() + " did not hurt it");
            continue;
        }
        // The recovery chain: the same cause id ends in running (assembly) or active. A later
        // failure of the same thing supersedes this one (its own chain is checked in turn).
        bool superseded = std::any_of(window.begin(), window.end(), [&](const JournalEvent& l) {
            return l.seq > e.seq && l.state == "failed" && l.assembly == e.assembly &&
                   l.service == e.service;
        });
        if (superseded)
            continue;
        bool recovered = false;
        bool restarting = e.service.empty() ? false : true;
        for (const auto& later : window) {
            if (later.seq <= e.seq || later.cause_id != e.cause_id || e.cause_id.empty())
                continue;
            if (later.state == "restarting")
                restarting = true;
            if ((e.service.empty() && later.state == "running") ||
                (!e.service.empty() && (later.state == "active" || later.state == "running")))
                recovered = recovered || restarting;
        }
        if (!recovered)
            problems.push_back("chain: " + e.assembly + (e.service.empty() ? "" : "/" + e.service) +
                               " failed with cause " + e.cause_id +
                               " but no recovery under that cause followed");
    }
    // A killed qemu or service must be noticed; a SIGSTOP only when it outlasted the timeout
    // (the driver marks those with `expect_failure` in its own record).
    auto mustFail = [&](const Fault& p) {
        return p.kind == FaultKind::QemuKill || p.kind == FaultKind::ServiceKill;
    };
    std::vector<Fault> parts = f.kind == FaultKind::Double ? f.parts : std::vector<Fault>{f};
    for (const auto& p : parts) {
        if (!mustFail(p))
            continue;
        bool seen = std::any_of(window.begin(), window.end(), [&](const JournalEvent& e) {
            return e.state == "failed" && e.assembly == p.victim &&
                   (p.kind == FaultKind::ServiceKill || assemblyLevelFailure(e));
        });
        if (!seen)
            problems.push_back("chain: " + p.describe() + " produced no failed event");
    }
    return problems;
}

json IterationRecord::toJson() const {
    json j{{"n", n},
           {"fault", fault.toJson()},
           {"converged", converged},
           {"recovery_ms", std::round(recovery_ms)},
           {"requests", requests},
           {"failed_requests", failed_requests},
           {"cut_requests", cut_requests},
           {"failed_detail", failed_detail},
           {"vm_restarts", impact.vm_restarts},
           {"failures", impact.failures},
           {"problems", problems}};
    if (!detect_ms.empty())
        j["detect_ms"] = detect_ms;
    return j;
}

RequestTally tallyRequests(const std::vector<ClientRequest>& all, double fromMs, double toMs,
                           std::optional<double> oldBalancerGoneMs) {
    RequestTally t;
    for (const auto& r : all) {
        if (r.scheduled_ms < fromMs || r.scheduled_ms > toMs)
            continue;
        t.requests++;
        if (r.ok)
            continue;
        if (r.reset && oldBalancerGoneMs && r.scheduled_ms < *oldBalancerGoneMs) {
            t.cut++;
            continue;
        }
        t.failed++;
        if (t.failed_detail.size() < 10)
            t.failed_detail.push_back(
                r.what + "@+" + std::to_string(static_cast<long>(r.scheduled_ms - fromMs)) + "ms");
    }
    return t;
}

std::optional<double> detectionMs(const std::vector<JournalEvent>& window,
                                  const std::string& victim, bool service, double killedAtMs) {
    for (const auto& e : window) {
        if (e.state != "failed" || e.assembly != victim || e.service.empty() != !service)
            continue;
        auto t = parseRfc3339(e.time);
        if (!t)
            return std::nullopt;
        return std::max(0.0, static_cast<double>(*t) - killedAtMs);
    }
    return std::nullopt;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

std::string formatTable(const std::vector<IterationRecord>& records) {
    struct Row {
        int count = 0, failed = 0, cut = 0, requests = 0, restarts = 0, failures = 0, audit = 0;
        std::vector<double> recovery, detect;
    };
    std::map<std::string, Row> rows;
    for (const auto& r : records) {
        auto& row = rows[toString(r.fault.kind)];
        row.count++;
        row.failed += r.failed_requests;
        row.cut += r.cut_requests;
        row.requests += r.requests;
        row.restarts += r.impact.vm_restarts;
        row.failures += r.impact.failures;
        row.audit += static_cast<int>(r.problems.size());
        row.recovery.push_back(r.recovery_ms);
        row.detect.insert(row.detect.end(), r.detect_ms.begin(), r.detect_ms.end());
    }
    std::ostringstream o;
    char line[256];
    std::snprintf(line, sizeof line, "%-17s %5s %10s %10s %8s %5s %8s %9s %8s %6s %11s\n", "fault",
                  "count", "rec p50", "rec p99", "failed", "cut", "of reqs", "VM rest.", "budget",
                  "audit", "detect p50/p99");
    o << line;
    for (const auto& [kind, row] : rows) {
        char detect[64] = "-";
        if (!row.detect.empty())
            std::snprintf(detect, sizeof detect, "%.0f/%.0fms", percentile(row.detect, 50),
                          percentile(row.detect, 99));
        std::snprintf(line, sizeof line, "%-17s %5d %8.0fms %8.0fms %8d %5d %8d %9d %8d %6d %11s\n",
                      kind.c_str(), row.count, percentile(row.recovery, 50),
                      percentile(row.recovery, 99), row.failed, row.cut, row.requests, row.restarts,
                      row.failures, row.audit, detect);
        o << line;
    }
    o << "cut: requests in flight in an HAProxy stopped at once (-st), reset by HAProxy itself\n"
         "detect: from the kill to the victim's failed event in the journal (qemu-kill: the\n"
         "assembly, service-kill: its service; in a double, each kill counts under double)\n";
    return o.str();
}

} // namespace pcloud::cts
