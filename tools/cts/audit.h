#pragma once
// pcloud-cts, the pure half: which fault to inject next (seeded, replayable) and the audits
// run on what the driver observed (journal events, qemu process counts, HAProxy's
// membership, client request outcomes). Nothing here does I/O or reads a clock, so every
// audit is unit-tested on hand-made observations (tests/cts).

#include "common/clock.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace pcloud::cts {

enum class FaultKind {
    ServiceKill,     // SIGKILL of the web server inside a guest
    AgentKill,       // SIGKILL of pcloud-agent inside a guest (its init restarts it)
    QemuKill,        // SIGKILL of a guest's qemu
    QemuStop,        // SIGSTOP of a guest's qemu, SIGCONT after 0-2 x heartbeat timeout
    DpedKill,        // kill -9 of dped (cped restarts it)
    CpedKill,        // kill -9 of cped, then a restart the way an operator would
    CpedTerm,        // SIGTERM of cped, then a restart
    PcloudStop,      // SIGSTOP of dped or cped for 0-10 s, then SIGCONT
    LibvirtdRestart, // libvirtd stopped and started again
    HaproxyReload,   // a seamless reload (-sf, listeners passed with -x)
    HaproxyRestart,  // a new HAProxy process with the old one stopped at once (-st)
    Double,          // two of the above at once
};
const char* toString(FaultKind k);
std::optional<FaultKind> parseFaultKind(const std::string& s);
std::vector<FaultKind> allFaultKinds();
// Faults of pcloud itself and of the infrastructure it runs on: they must cost users
// nothing (no VM restart, no budget, no failed request).
bool isPcloudFault(FaultKind k);

// splitmix64: small, seedable, the same sequence on every machine.
class Rng {
public:
    explicit Rng(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next();
    // Uniform in [0, n).
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }

private:
    std::uint64_t state_;
};

struct Fault {
    FaultKind kind = FaultKind::QemuKill;
    std::string victim;       // the assembly, for guest faults
    std::string target;       // "dped" or "cped" for PcloudStop
    Millis pause_ms = 0;      // QemuStop, PcloudStop: how long it stays stopped; CpedKill/Term:
                              // how long cped stays down before the restart
    std::vector<Fault> parts; // Double: the two faults
    nlohmann::json toJson() const;
    std::string describe() const;
};

// Picks the next fault among `enabled`. A Double is two different non-Double faults.
Fault pickFault(Rng& rng, const std::vector<FaultKind>& enabled,
                const std::vector<std::string>& assemblies, Millis heartbeatTimeoutMs,
                Millis maxPcloudStopMs);

// Does this fault (or one of its parts) hurt a guest? Then a VM restart or a service restart
// of that victim is expected, and counted against the fault.
bool hurtsGuest(const Fault& f);
std::set<std::string> guestVictims(const Fault& f);

// One journal line as the audits need it.
struct JournalEvent {
    std::uint64_t seq = 0;
    std::string time, deployable, assembly, service, state, reason, cause_id;
};
std::optional<JournalEvent> parseJournalLine(const std::string& line);

// Audit 2: seq numbers strictly increasing by one from `expectFirst` (0: from the first
// line), and no event twice (the same time, place, state and cause under two seqs).
std::vector<std::string> auditJournal(const std::vector<JournalEvent>& events,
                                      std::uint64_t expectFirst = 0);

// Audit 1: `maxQemu` is the largest number of qemu processes seen at once per domain.
std::vector<std::string> auditNeverTwo(const std::map<std::string, int>& maxQemu);

// Audit 3: the balancer serves exactly the assemblies that are healthy and not parked.
// `haproxyReady`: servers that are ready and up; `healthy`: assemblies whose domain runs,
// whose agent is connected and whose services are all active.
std::vector<std::string> auditMembership(const std::set<std::string>& haproxyReady,
                                         const std::set<std::string>& healthy);

// What one iteration did to the guests, from the journal events in its window and from the
// qemu pids before and after.
struct GuestImpact {
    int vm_restarts = 0;      // domains whose qemu pid changed, or "restarting" events
    int failures = 0;         // "failed" events of assemblies or services (budget use)
    int service_restarts = 0; // service "failed" events followed by "active"
    std::set<std::string> restarted;
};
GuestImpact impactOf(const std::vector<JournalEvent>& window,
                     const std::map<std::string, long>& pidsBefore,
                     const std::map<std::string, long>& pidsAfter);

// Audits 4 and 5: a pcloud fault caused no VM restart and no failure; a guest fault caused
// failures only for its victims, each recovered through a chain linked by one cause id
// (failed -> restarting -> running for an assembly, failed -> active for a service).
std::vector<std::string> auditImpact(const Fault& f, const std::vector<JournalEvent>& window,
                                     const GuestImpact& impact);

// One client request of the load, as audit 6 needs it (times on the driver's steady clock).
struct ClientRequest {
    double scheduled_ms = 0;
    bool ok = true;
    bool reset = false; // the connection was closed or reset before an answer came
    std::string what;   // how it failed, for the detail: "reset", "timeout", "status 503"
};

// Audit 6 input: the requests scheduled in [fromMs, toMs] are charged to the fault. A hard
// HAProxy restart (-st) stops the old process at once, and the connections it holds are cut
// whatever pcloud does: a reset of a request scheduled before the old process was gone
// (`oldBalancerGoneMs`) is counted as `cut`, not as `failed`. Any other failure is failed:
// a 503 or a timeout, or a reset after the new process alone serves, is pcloud's to answer.
struct RequestTally {
    int requests = 0;
    int failed = 0;
    int cut = 0;
    std::vector<std::string> failed_detail; // the first 10: "timeout@+1234ms"
};
RequestTally tallyRequests(const std::vector<ClientRequest>& all, double fromMs, double toMs,
                           std::optional<double> oldBalancerGoneMs);

// One iteration as recorded in the JSON lines file and summed up in the table.
struct IterationRecord {
    int n = 0;
    Fault fault;
    bool converged = false;
    double recovery_ms = 0;
    int failed_requests = 0;
    int cut_requests = 0; // cut in flight by a hard HAProxy restart (tallyRequests)
    int requests = 0;
    std::vector<std::string> failed_detail; // the first few: "timeout@+1234ms"
    GuestImpact impact;
    std::vector<std::string> problems;
    // Guest faults that must be noticed (a killed qemu or service): the time from the kill
    // to the victim's `failed` event in the journal, ms (journal times have ms resolution).
    std::vector<double> detect_ms;
    nlohmann::json toJson() const;
};

// The time from `killedAtMs` (wall clock, ms since the epoch) to the first `failed` event
// of `victim` in `window`: an assembly-level failure when `service` is false, a failure
// of one of its services when true. Never negative (the journal truncates to the ms);
// nullopt when there is none or its time does not parse.
std::optional<double> detectionMs(const std::vector<JournalEvent>& window,
                                  const std::string& victim, bool service, double killedAtMs);

// The table per fault kind: count, recovery p50/p99, failed requests, requests cut in
// flight by a hard balancer restart, VM restarts, budget use, audit failures. A Double counts under
// "double".
std::string formatTable(const std::vector<IterationRecord>& records);

// Nearest-rank percentile of `v` (p in [0, 100]); 0 for an empty vector.
double percentile(std::vector<double> v, double p);

} // namespace pcloud::cts
