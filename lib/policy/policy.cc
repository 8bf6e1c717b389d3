#include "policy/policy.h"

#include "common/time_format.h"
#include "policy/window.h"

#include <algorithm>
#include <limits>

namespace pcloud::policy {

Millis RandomJitter::jitter(Millis delay) {
    if (delay <= 0)
        return 0;
    // splitmix64
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    auto range = static_cast<std::uint64_t>(delay / 10) + 1;
    return static_cast<Millis>(z % range);
}

namespace {

constexpr Millis kMinTime = std::numeric_limits<Millis>::min();

bool domainDown(DomainState d) {
    return d == DomainState::Shutoff || d == DomainState::Missing || d == DomainState::Crashed;
}

// Agent strings end up in events (JSON, logs): keep them printable and short.
std::string printable(const std::string& raw) {
    std::string s;
    for (unsigned char c : raw) {
        if (s.size() >= 64) {
            s += "...";
            break;
        }
        s += (c >= 0x20 && c < 0x7f && c != '\'' && c != '"') ? static_cast<char>(c) : '?';
    }
    return s;
}

Action make(ActionKind kind, const std::string& assembly, const std::string& service,
            const std::string& cause) {
    Action a;
    a.kind = kind;
    a.assembly = assembly;
    a.service = service;
    a.cause_id = cause;
    return a;
}

enum class Health { Ready, NotReady, Down };

// Everything one decide() call works with.
struct Engine {
    const model::Model& model;
    const model::Deployable& dep;
    const Observed& obs;
    EscalationState st;
    Millis now;
    JitterSource& jitter;
    const Tunables& tun;
    std::vector<Action> out;
    std::optional<Millis> wake;
    bool referee = false;

    void wakeAt(Millis t) {
        if (!wake || t < *wake)
            wake = t;
    }
    // Deadlines and heartbeat ages do not run while the infrastructure was down, before this
    // observer started, while the observer itself was paused or while it was fenced off:
    // none of those gaps is evidence about a guest.
    Millis since(Millis t) const {
        const auto& ds = st.deployable;
        return std::max(
            {t, ds.infra_recovered_at.value_or(kMinTime), obs.observer_since.value_or(kMinTime),
             ds.observer_resumed_at.value_or(kMinTime), ds.fence_lifted_at.value_or(kMinTime)});
    }
    // The same for one assembly: an agent that reports through the hub was also silenced by
    // a bus outage, so its ages restart when the bus came back.
    Millis since(Millis t, const ObservedAssembly& oa) const {
        Millis s = since(t);
        return oa.agent_via_bus ? std::max(s, st.deployable.bus_recovered_at.value_or(kMinTime))
                                : s;
    }
    // The agent cannot be heard right now for reasons that say nothing about the guest.
    bool busBlind(const ObservedAssembly& oa) const {
        return oa.agent_via_bus && st.deployable.bus_down;
    }
    // Not judged yet: this observer started recently and has not had the agent's full state
    // since. Such an assembly keeps the referee membership it has (only a positive finding,
    // such as a dead qemu, a park or a planned stop, takes it out), so a restarted dped
    // changes nothing the balancer serves.
    Millis judgeBy() const {
        return obs.observer_since.value_or(kMinTime) + 2 * dep.heartbeat_timeout;
    }
    // An assembly that came up under this observer's eyes (entered Up after it started,
    // which takes a fresh heartbeat) is judged too.
    bool unjudged(const ObservedAssembly& oa, const AssemblyTrack& at) const {
        if (!obs.observer_since)
            return false;
        if (oa.hello_at && *oa.hello_at >= *obs.observer_since)
            return false;
        if (at.phase == Phase::Up && at.phase_since > *obs.observer_since)
            return false;
        return now <= judgeBy();
    }
    std::string causeId(const std::string& assembly, const std::string& service = {}) const {
        return assembly + (service.empty() ? "" : "/" + service) + "@" + std::to_string(now);
    }
    const ObservedAssembly& observed(const std::string& name) const {
        static const ObservedAssembly kNone;
        auto it = obs.assemblies.find(name);
        return it == obs.assemblies.end() ? kNone : it->second;
    }

    static void event(std::vector<Action>& v, const std::string& assembly,
                      const std::string& service, const std::string& state,
                      const std::string& reason, const std::string& cause) {
        Action a = make(ActionKind::EmitEvent, assembly, service, cause);
        a.state = state;
        a.reason = reason;
        v.push_back(std::move(a));
    }
    // Events for observed conditions: only when the reported state changes.
    static void report(std::vector<Action>& v, std::string& reported, const std::string& assembly,
                       const std::string& service, const std::string& state,
                       const std::string& reason, const std::string& cause) {
        if (reported == state)
            return;
        reported = state;
        event(v, assembly, service, state, reason, cause);
    }

    Decision run();
    void passive();
    void plannedStop();
    void running();
    bool runAssembly(const model::Assembly& a, AssemblyTrack& at, std::string& stopCause);
    void stopDeployable(const std::string& cause);
};

// Per-assembly scratch: actions of this assembly, so referee removal can be put before the
// first destructive action and referee add after everything else.
struct AsmRun {
    Engine& e;
    const model::Assembly& a;
    AssemblyTrack& at;
    const ObservedAssembly& oa;
    std::vector<Action> body;
    std::string lastCause;
    bool stopDeployable = false;
    std::string stopCause;

    void resetServices() {
        for (auto& [_, s] : at.services) {
            s.phase = Phase::Fresh;
            s.due.reset();
        }
    }

    void scheduleRestartDelay(Recovery& r, Millis& delay) {
        const auto& b = e.dep.backoff;
        if (r.stable_since && e.now - *r.stable_since >= b.reset_after)
            r.restarts = 0;
        r.stable_since.reset();
        delay = backoffDelay(b, r.restarts);
        if (delay > 0)
            delay += std::max<Millis>(0, e.jitter.jitter(delay));
    }

    // ---- services -----------------------------------------------------------------------

    void issueServiceRestart(const model::Resource& r, ServiceTrack& s) {
        body.push_back(make(ActionKind::RestartService, a.name, r.name, s.cause_id));
        s.recovery.restarts++;
        s.recovery.last_restart = e.now;
        s.phase = Phase::Restarting;
        s.phase_since = e.now;
        s.due.reset();
        e.wakeAt(e.now + e.tun.service_start_deadline + 1);
    }

    void serviceUp(const model::Resource& r, ServiceTrack& s, const std::string& reason) {
        s.phase = Phase::Up;
        s.phase_since = e.now;
        s.due.reset();
        s.recovery.stable_since = e.now;
        s.reported = "active";
        if (!s.cause_id.empty())
            lastCause = s.cause_id;
        Engine::event(body, a.name, r.name, "active", reason, s.cause_id);
    }

    void notInstalled(const model::Resource& r, ServiceTrack& s) {
        if (s.phase == Phase::Failed)
            return;
        s.phase = Phase::Failed;
        s.due.reset();
        s.cause_id = e.causeId(a.name, r.name);
        lastCause = s.cause_id;
        s.reported = "not-installed";
        std::string why = "unit '" + (r.unit.empty() ? r.name : r.unit) +
                          "' not installed: restarting cannot help, fix the image";
        Engine::event(body, a.name, r.name, "not-installed", why, s.cause_id);
        Action m = make(ActionKind::MarkFailed, a.name, r.name, s.cause_id);
        m.reason = why;
        body.push_back(std::move(m));
    }

    // Returns true when the service budget is used up (escalate to the assembly).
    bool serviceFailure(const model::Resource& r, ServiceTrack& s, const std::string& reason) {
        s.cause_id = e.causeId(a.name, r.name);
        lastCause = s.cause_id;
        int count = recordFailure(s.recovery.failures, r.escalation, e.now);
        if (budgetUsedUp(count, r.escalation)) {
            s.reported = "failed";
            Engine::event(body, a.name, r.name, "failed", reason, s.cause_id);
            s.recovery.failures.clear();
            return true;
        }
        Millis delay = 0;
        scheduleRestartDelay(s.recovery, delay);
        s.reported = "failed";
        if (delay == 0) {
            Engine::event(body, a.name, r.name, "failed", reason, s.cause_id);
            issueServiceRestart(r, s);
        } else {
            Engine::event(body, a.name, r.name, "failed",
                          reason + "; restart in " + formatDuration(delay) + " (backoff)",
                          s.cause_id);
            s.phase = Phase::RestartPending;
            s.due = e.now + delay;
            e.wakeAt(*s.due);
        }
        return false;
    }

    // Returns the health of the service for the referee; sets `escalate` when its budget is
    // used up.
    Health runService(const model::Resource& r, ServiceTrack& s, bool& escalate) {
        static const ObservedService kNone;
        auto it = oa.services.find(r.name);
        bool present = it != oa.services.end();
        const ObservedService& os = present ? it->second : kNone;
        bool probeOk = !r.probe || os.probe_ready == true;
        auto unknownReport = [&] {
            if (present && os.state == ServiceState::Unknown)
                Engine::report(body, s.reported, a.name, r.name, "unknown",
                               "unknown state '" + printable(os.raw) + "' reported; waiting", "");
        };

        switch (s.phase) {
        case Phase::Fresh:
        case Phase::Stopping:
        case Phase::Stopped:
            if (os.state == ServiceState::Active) {
                serviceUp(r, s, "started");
                break;
            }
            if (os.state == ServiceState::Inactive || os.state == ServiceState::Failed) {
                s.cause_id = e.causeId(a.name, r.name);
                s.phase = Phase::Starting;
                s.phase_since = e.now;
                s.reported = "starting";
                Engine::event(body, a.name, r.name, "starting",
                              std::string("starting (was ") + toString(os.state) + ")", s.cause_id);
                body.push_back(make(ActionKind::StartService, a.name, r.name, s.cause_id));
                e.wakeAt(e.now + e.tun.service_start_deadline + 1);
                return Health::NotReady;
            }
            if (os.state == ServiceState::NotFound) {
                notInstalled(r, s);
                return Health::Down;
            }
            unknownReport();
            return Health::NotReady;

        case Phase::Starting:
        case Phase::Restarting: {
            bool restart = s.phase == Phase::Restarting;
            if (os.state == ServiceState::Active) {
                serviceUp(r, s, restart ? "restarted" : "started");
                break;
            }
            if (os.state == ServiceState::NotFound) {
                notInstalled(r, s);
                return Health::Down;
            }
            if (os.state == ServiceState::Failed && os.changed_at &&
                *os.changed_at > s.phase_since) {
                escalate = serviceFailure(r, s, restart ? "restart failed" : "start failed");
                return Health::Down;
            }
            Millis deadline = e.since(s.phase_since) + e.tun.service_start_deadline;
            if (e.now > deadline) {
                escalate = serviceFailure(
                    r, s,
                    std::string(restart ? "restart" : "start") + " did not complete within " +
                        formatDuration(e.tun.service_start_deadline) + " (still " +
                        (present ? toString(os.state) : "unreported") + ")");
                return Health::Down;
            }
            e.wakeAt(deadline + 1);
            return restart ? Health::Down : Health::NotReady;
        }

        case Phase::RestartPending:
            if (os.state == ServiceState::Active) {
                serviceUp(r, s, "recovered before its restart was due");
                break;
            }
            if (s.due && e.now >= *s.due) {
                issueServiceRestart(r, s);
            } else if (s.due) {
                e.wakeAt(*s.due);
            } else {
                issueServiceRestart(r, s); // broken state: due lost; restart now
            }
            return Health::Down;

        case Phase::Up:
            switch (os.state) {
            case ServiceState::Active:
                break;
            case ServiceState::Failed:
                escalate = serviceFailure(r, s, "monitor failed");
                return Health::Down;
            case ServiceState::Inactive:
                escalate = serviceFailure(r, s, "monitor failed: not running");
                return Health::Down;
            case ServiceState::NotFound:
                notInstalled(r, s);
                return Health::Down;
            case ServiceState::Activating:
            case ServiceState::Deactivating:
                Engine::report(body, s.reported, a.name, r.name, toString(os.state),
                               std::string(toString(os.state)) + ": not ready", "");
                return Health::NotReady;
            case ServiceState::Unknown:
                unknownReport();
                return Health::NotReady;
            }
            break;

        case Phase::Failed:
            if (os.state == ServiceState::Active) {
                serviceUp(r, s, "found again");
                break;
            }
            return Health::Down;
        }

        // Up and active: readiness only decides referee membership, never a failure.
        if (!probeOk) {
            if (os.probe_ready == false)
                Engine::report(body, s.reported, a.name, r.name, "not-ready",
                               "probe failed: out of the referee, not a failure", "");
            return Health::NotReady;
        }
        if (s.reported != "active")
            Engine::report(body, s.reported, a.name, r.name, "active",
                           s.reported == "not-ready" ? "probe ready" : "active", "");
        return Health::Ready;
    }

    // ---- assembly -----------------------------------------------------------------------

    void issueVmRestart() {
        body.push_back(make(ActionKind::StopDomain, a.name, "", at.cause_id));
        body.push_back(make(ActionKind::StartDomain, a.name, "", at.cause_id));
        at.recovery.restarts++;
        at.recovery.last_restart = e.now;
        at.phase = Phase::Restarting;
        at.phase_since = e.now;
        at.due.reset();
        at.seen_running = false;
        resetServices();
        e.wakeAt(e.now + e.tun.domain_start_deadline + 1);
    }

    void scheduleVmRestart(const std::string& note) {
        Millis delay = 0;
        scheduleRestartDelay(at.recovery, delay);
        if (delay == 0) {
            Engine::event(body, a.name, "", "restarting", note, at.cause_id);
            issueVmRestart();
        } else {
            Engine::event(body, a.name, "", "restarting",
                          note + "; restart in " + formatDuration(delay) + " (backoff)",
                          at.cause_id);
            at.phase = Phase::RestartPending;
            at.due = e.now + delay;
            e.wakeAt(*at.due);
        }
        at.reported = "restarting";
    }

    void assemblyFailure(const std::string& reason, const std::string& cause) {
        at.cause_id = cause;
        lastCause = cause;
        at.reported = "failed";
        Engine::event(body, a.name, "", "failed", reason, cause);
        resetServices();
        int count = recordFailure(at.recovery.failures, a.escalation, e.now);
        if (!budgetUsedUp(count, a.escalation)) {
            scheduleVmRestart("restarting the domain");
            return;
        }
        Action esc = make(ActionKind::Escalate, a.name, "", cause);
        esc.from = Level::Assembly;
        esc.to = Level::Deployable;
        body.push_back(esc);
        Engine::event(body, a.name, "", "escalated", "assembly failure escalated to deployable",
                      cause);
        at.recovery.failures.clear();
        auto& ds = e.st.deployable;
        int dcount = recordFailure(ds.failures, e.dep.escalation, e.now);
        if (!budgetUsedUp(dcount, e.dep.escalation)) {
            scheduleVmRestart("deployable recovery: restarting the domain with a fresh budget");
            return;
        }
        if (e.dep.outcome == model::DeployableOutcome::StopDeployable) {
            stopDeployable = true;
            stopCause = cause;
            return;
        }
        // LeaveStopped
        body.push_back(make(ActionKind::StopDomain, a.name, "", cause));
        Action m = make(ActionKind::MarkFailed, a.name, "", cause);
        m.reason = "deployable failure budget used up: assembly left stopped";
        body.push_back(m);
        Engine::event(body, a.name, "", "left-stopped",
                      "deployable failure budget used up: assembly left stopped", cause);
        at.reported = "left-stopped";
        at.phase = Phase::Failed;
        at.phase_since = e.now;
        at.due.reset();
    }

    // Domain dead? Returns the reason or "".
    std::string deadReason() const {
        if (oa.qemu_exited)
            return "qemu exited";
        switch (oa.domain) {
        case DomainState::Crashed:
            return "domain crashed";
        case DomainState::Shutoff:
            return "domain stopped unexpectedly";
        case DomainState::Missing:
            return "domain disappeared";
        default:
            return "";
        }
    }

    void startDomain(const std::string& reason) {
        at.cause_id = e.causeId(a.name);
        lastCause = at.cause_id;
        at.reported = "starting";
        Engine::event(body, a.name, "", "starting", reason, at.cause_id);
        if (oa.domain == DomainState::Crashed || oa.qemu_exited)
            body.push_back(make(ActionKind::StopDomain, a.name, "", at.cause_id));
        body.push_back(make(ActionKind::StartDomain, a.name, "", at.cause_id));
        at.phase = Phase::Starting;
        at.phase_since = e.now;
        at.seen_running = false;
        resetServices();
        e.wakeAt(e.now + e.tun.domain_start_deadline + 1);
    }

    void enterUp(const std::string& reason) {
        at.phase = Phase::Up;
        at.phase_since = e.now;
        at.due.reset();
        at.recovery.stable_since = e.now;
        at.reported = "running";
        if (!at.cause_id.empty())
            lastCause = at.cause_id;
        Engine::event(body, a.name, "", "running", reason, at.cause_id);
    }

    bool heartbeatFresh() const {
        return oa.agent_connected && oa.last_heartbeat &&
               e.now - *oa.last_heartbeat <= e.dep.heartbeat_timeout;
    }

    // While unjudged, waiting for the agent is no reason to change the membership.
    Membership waiting(Membership want) const {
        if (e.unjudged(oa, at)) {
            e.wakeAt(e.judgeBy() + 1);
            return at.membership;
        }
        return want;
    }

    // Returns the wanted referee membership.
    Membership run() {
        // Until judged, what the balancer actually serves is the starting point (it may
        // differ from what we remembered: an operator's change, or no state file at all).
        if (e.unjudged(oa, at) && oa.referee && *oa.referee != Membership::Parked)
            at.membership = *oa.referee;
        if (a.parked) {
            if (at.phase != Phase::Failed) {
                at.phase = Phase::Fresh;
                at.due.reset();
                resetServices();
            }
            Engine::report(body, at.reported, a.name, "", "parked",
                           "parked: out of the referee, failures not acted on", "");
            return Membership::Parked;
        }
        if (at.reported == "parked") {
            at.reported = "unparked";
            Engine::event(body, a.name, "", "unparked", "unparked", "");
        }
        if (at.phase == Phase::Failed)
            return Membership::Out;

        switch (at.phase) {
        case Phase::Fresh:
        case Phase::Stopped:
        case Phase::Stopping:
            if (oa.domain == DomainState::Running && !oa.qemu_exited) {
                if (heartbeatFresh()) {
                    at.cause_id.clear();
                    enterUp("running");
                    break; // go on with the services
                }
                if (at.phase != Phase::Starting) {
                    at.phase = Phase::Starting;
                    at.phase_since = e.now;
                    at.seen_running = true;
                    at.cause_id = e.causeId(a.name);
                    at.reported = "starting";
                    Engine::event(body, a.name, "", "starting",
                                  "domain already running; waiting for the agent", at.cause_id);
                    e.wakeAt(e.now + e.tun.domain_start_deadline + 1);
                }
                return waiting(Membership::Out);
            }
            if (domainDown(oa.domain) || oa.qemu_exited) {
                startDomain("starting");
                return Membership::Out;
            }
            if (oa.domain == DomainState::Paused)
                Engine::report(body, at.reported, a.name, "", "paused", "domain paused; waiting",
                               "");
            return Membership::Out;

        case Phase::Starting:
        case Phase::Restarting: {
            bool restart = at.phase == Phase::Restarting;
            if (oa.domain == DomainState::Running && !oa.qemu_exited)
                at.seen_running = true;
            if (oa.domain == DomainState::Running && !oa.qemu_exited && oa.agent_connected &&
                oa.last_heartbeat && *oa.last_heartbeat >= at.phase_since) {
                enterUp(restart ? "restarted" : "started");
                break;
            }
            std::string dead = deadReason();
            if (at.seen_running && !dead.empty()) {
                assemblyFailure(dead + (restart ? " while restarting" : " while starting"),
                                e.causeId(a.name));
                return Membership::Out;
            }
            // The host connection went down after this start was issued, so the start may
            // never have reached libvirt, or failed with the connection (pcloud-cts: a qemu
            // killed as libvirtd restarts; seed 20261211: libvirtd restarted during the
            // define+start, which failed with "client socket is closed"). Once the connection
            // is back and the domain is still down, start it again under the same cause; that
            // is no new failure. Checked before a refusal, which the lost connection explains;
            // the next attempt starts a new phase, so one that libvirt refuses again counts.
            const auto& recovered = e.st.deployable.infra_recovered_at;
            if (!at.seen_running && domainDown(oa.domain) && recovered &&
                *recovered > at.phase_since) {
                Engine::event(body, a.name, "", restart ? "restarting" : "starting",
                              "the host connection came back before the domain ran; starting "
                              "it again",
                              at.cause_id);
                if (oa.domain == DomainState::Crashed)
                    body.push_back(make(ActionKind::StopDomain, a.name, "", at.cause_id));
                body.push_back(make(ActionKind::StartDomain, a.name, "", at.cause_id));
                at.phase_since = e.now;
                e.wakeAt(e.now + e.tun.domain_start_deadline + 1);
                return waiting(Membership::Out);
            }
            // libvirt refused this attempt's start, or its qemu died before it ran (pcloud-cts:
            // "domain is no longer running" right after a destroy): the attempt has failed
            // now, not at domain_start_deadline. A failure like any other: counted, and the
            // next attempt follows the backoff, so a start that always fails ends in the
            // outcome instead of a loop.
            if (!at.seen_running && oa.start_failed_at && *oa.start_failed_at >= at.phase_since &&
                domainDown(oa.domain)) {
                assemblyFailure(std::string(restart ? "restart" : "start") +
                                    " failed: libvirt refused to start the domain" +
                                    (oa.start_error.empty() ? "" : ": " + oa.start_error),
                                e.causeId(a.name));
                return Membership::Out;
            }
            Millis deadline = e.since(at.phase_since, oa) + e.tun.domain_start_deadline;
            if (e.now > deadline && !e.busBlind(oa)) {
                assemblyFailure(std::string(restart ? "restart" : "start") +
                                    " did not complete within " +
                                    formatDuration(e.tun.domain_start_deadline) + " (domain " +
                                    toString(oa.domain) +
                                    (oa.agent_connected ? "" : ", agent not connected") + ")",
                                e.causeId(a.name));
                return Membership::Out;
            }
            e.wakeAt(deadline + 1);
            return waiting(Membership::Out);
        }

        case Phase::RestartPending:
            if (!at.due || e.now >= *at.due)
                issueVmRestart();
            else
                e.wakeAt(*at.due);
            return Membership::Out;

        case Phase::Up:
            break;
        case Phase::Failed:
            return Membership::Out;
        }

        // Up: detect assembly failures first; the higher level wins over services.
        std::string dead = deadReason();
        if (!dead.empty()) {
            assemblyFailure(dead, e.causeId(a.name));
            return Membership::Out;
        }
        // Not judged yet (the agent's full state has not arrived since we started): silence
        // and missing reports are no evidence, so the member stays where the balancer has
        // it. A service that reports a failure is evidence and is acted on as usual.
        const bool unjudged = e.unjudged(oa, at);
        if (unjudged)
            e.wakeAt(e.judgeBy() + 1);
        Millis hbRef = std::max(oa.last_heartbeat.value_or(kMinTime), e.since(at.phase_since, oa));
        // Time the host kept the guest from running is not the guest's silence: it extends
        // the deadline, but by at most 2 x the timeout, so a guest that hangs while the host
        // is overloaded is still declared hung (at the latest at 3 x the timeout).
        const Millis starvedCredit =
            std::clamp<Millis>(oa.starved_ms, 0, 2 * e.dep.heartbeat_timeout);
        const Millis silence = e.now - hbRef;
        const bool pastTimeout = silence > e.dep.heartbeat_timeout;
        if (e.busBlind(oa) || unjudged) {
            // Its heartbeats cross the hub, which is gone, or we have only just started to
            // listen: silence is no evidence. Services are judged on what they reported.
        } else if (silence - starvedCredit > e.dep.heartbeat_timeout) {
            assemblyFailure("heartbeat timeout: no heartbeat for " + formatDuration(silence) +
                                " (timeout " + formatDuration(e.dep.heartbeat_timeout) +
                                (starvedCredit > 0
                                     ? ", extended by the " + formatDuration(starvedCredit) +
                                           " the host kept the guest from running"
                                     : std::string()) +
                                ")",
                            e.causeId(a.name));
            return Membership::Out;
        }
        const Millis hbWake = hbRef + e.dep.heartbeat_timeout + starvedCredit + 1;
        if (pastTimeout && starvedCredit > 0 && !e.busBlind(oa) && !unjudged) {
            // Silent past the timeout, but the host did not let it run: drained (it cannot
            // serve either), not failed. At the new deadline dped measures the wait again, so
            // a guest still starved gets more time (up to the cap).
            e.wakeAt(hbWake);
            Engine::report(body, at.reported, a.name, "", "starved",
                           "no heartbeat for " + formatDuration(silence) +
                               ", but the host kept the guest from running for " +
                               formatDuration(starvedCredit) + ": drained, deadline extended",
                           "");
            return Membership::Draining;
        }
        if (oa.suspect && !unjudged) {
            e.wakeAt(hbWake);
            Engine::report(body, at.reported, a.name, "", "not-reachable",
                           "not reachable: guest channel closed, waiting for confirmation", "");
            return Membership::Draining;
        }
        if (oa.frozen) {
            // Its qemu is stopped: no new traffic now, a failure only if it stays stopped
            // past the heartbeat timeout (a short SIGSTOP or a debugger's pause is survived).
            e.wakeAt(hbWake);
            Engine::report(body, at.reported, a.name, "", "frozen",
                           "qemu is stopped: drained, a failure if it stays stopped past the "
                           "heartbeat timeout",
                           "");
            return Membership::Draining;
        }
        if (!oa.agent_connected && !e.busBlind(oa) && !unjudged) {
            // The agent's connection closed while the guest runs: the agent itself restarted
            // (or is restarting). Its services keep their last state and the member stays
            // where it is; a guest that is really gone misses the heartbeat timeout.
            e.wakeAt(hbWake);
            Engine::report(body, at.reported, a.name, "", "not-reachable",
                           "agent disconnected; member kept until the heartbeat timeout", "");
            return at.membership;
        }
        if (oa.domain == DomainState::Paused) {
            e.wakeAt(hbWake);
            Engine::report(body, at.reported, a.name, "", "paused", "domain paused", "");
            return Membership::Draining;
        }
        if (at.reported != "running")
            Engine::report(body, at.reported, a.name, "", "running", "reachable again", "");

        const std::optional<Millis> wakeBefore = e.wake; // service wakes die with escalation
        const auto servicesBefore = at.services;
        bool allReady = true, anyDown = false, anyUnheard = false;
        std::string escalateFrom, escalateCause;
        for (const auto& r : a.resources) {
            auto& s = at.services[r.name];
            bool escalate = false;
            anyUnheard = anyUnheard || !oa.services.count(r.name);
            Health h = runService(r, s, escalate);
            if (escalate && escalateFrom.empty()) {
                escalateFrom = r.name;
                escalateCause = s.cause_id;
            }
            allReady = allReady && h == Health::Ready;
            anyDown = anyDown || h == Health::Down;
        }
        if (!escalateFrom.empty()) {
            e.wake = wakeBefore;
            // Restarts dropped here did not happen: keep the backoff counters as they were.
            for (auto& [sn, sv] : at.services) {
                auto it = servicesBefore.find(sn);
                if (it == servicesBefore.end())
                    continue;
                sv.recovery.restarts = it->second.recovery.restarts;
                sv.recovery.last_restart = it->second.recovery.last_restart;
            }
            // The assembly restart supersedes service-level recovery issued in this pass.
            body.erase(std::remove_if(body.begin(), body.end(),
                                      [](const Action& x) {
                                          return x.kind == ActionKind::RestartService ||
                                                 x.kind == ActionKind::StartService;
                                      }),
                       body.end());
            Action esc = make(ActionKind::Escalate, a.name, escalateFrom, escalateCause);
            esc.from = Level::Service;
            esc.to = Level::Assembly;
            body.push_back(esc);
            Engine::event(body, a.name, escalateFrom, "escalated", "escalating service failure",
                          escalateCause);
            assemblyFailure("service " + escalateFrom + " failure budget used up", escalateCause);
            return Membership::Out;
        }
        if (!e.busBlind(oa) && !unjudged)
            e.wakeAt(hbWake);
        if (allReady)
            return Membership::In;
        if (anyDown)
            return Membership::Out;
        return unjudged && anyUnheard ? at.membership : Membership::Draining;
    }

    // Puts referee changes in order: out before the first destructive action, in last.
    void finish(Membership want, std::vector<Action>& out) {
        std::optional<Action> before, after;
        std::string cause = lastCause.empty() ? at.cause_id : lastCause;
        if (e.referee) {
            switch (want) {
            case Membership::In:
                if (at.membership != Membership::In)
                    after = make(ActionKind::RefereeAdd, a.name, "", cause);
                at.membership = Membership::In;
                break;
            case Membership::Draining:
                if (at.membership == Membership::In) {
                    before = make(ActionKind::RefereeDrain, a.name, "", cause);
                    at.membership = Membership::Draining;
                } else if (at.membership == Membership::Parked) {
                    at.membership = Membership::Out;
                }
                break;
            case Membership::Out:
            case Membership::Parked:
                if (at.membership == Membership::In || at.membership == Membership::Draining)
                    before = make(ActionKind::RefereeRemove, a.name, "", cause);
                at.membership = want;
                break;
            }
        }
        if (before) {
            auto it = std::find_if(body.begin(), body.end(),
                                   [](const Action& x) { return x.kind != ActionKind::EmitEvent; });
            body.insert(it, *before);
        }
        if (after)
            body.push_back(*after);
        out.insert(out.end(), body.begin(), body.end());
    }
};

Decision Engine::run() {
    auto& ds = st.deployable;
    // Forget assemblies that left the deployable (model reload).
    for (auto it = st.assemblies.begin(); it != st.assemblies.end();) {
        if (std::find(dep.assemblies.begin(), dep.assemblies.end(), it->first) ==
            dep.assemblies.end())
            it = st.assemblies.erase(it);
        else
            ++it;
    }
    // Fenced off by a newer leader (a node refused this dped's epoch as stale, or its cped
    // stepped down and said so): another dped may act on these guests now, so this one does
    // nothing at all, not even count what it sees. Comparing the two epochs, not a flag, makes a
    // refusal that was in flight when cped raised this dped's epoch harmless. The fence is
    // remembered (fenced_by), so a dped that the old leader starts again with its old epoch stays
    // fenced.
    if (const std::uint64_t newer = std::max(obs.receiver_epoch, ds.fenced_by); newer > obs.epoch) {
        if (ds.fenced_by != newer)
            event(out, "", "", "fenced",
                  "fenced off by a newer leader: epoch " + std::to_string(newer) +
                      " is above this dped's epoch " + std::to_string(obs.epoch) +
                      " (a node refused one of its commands as stale, or its cped stepped "
                      "down); it takes no action (no restart, no balancer change, nothing "
                      "counted) until its cped leads again with a newer epoch",
                  "");
        ds.fenced_by = newer;
        ds.reported = "fenced";
        return Decision{std::move(out), std::move(st), std::nullopt};
    }
    if (ds.fenced_by != 0) {
        event(out, "", "", "fence-lifted",
              "this dped's epoch " + std::to_string(obs.epoch) + " is not below the epoch " +
                  std::to_string(ds.fenced_by) +
                  " that fenced it: acting again; deadlines and heartbeat ages restart now",
              "");
        ds.fenced_by = 0;
        ds.fence_lifted_at = now;
        ds.reported = "fence-lifted";
    }
    if (!obs.infra_ok) {
        if (!ds.infra_down) {
            ds.infra_down = true;
            ds.reported = "infra-down";
            event(out, "", "", "infra-down",
                  "infrastructure failure: host connection lost; waiting, nothing counted", "");
        }
        return Decision{std::move(out), std::move(st), std::nullopt};
    }
    if (ds.infra_down) {
        ds.infra_down = false;
        ds.infra_recovered_at = now;
        ds.reported = "infra-up";
        event(out, "", "", "infra-up", "infrastructure recovered; deadlines restart now", "");
    }
    if (obs.observer_resumed_at &&
        (!ds.observer_resumed_at || *obs.observer_resumed_at > *ds.observer_resumed_at)) {
        ds.observer_resumed_at = obs.observer_resumed_at;
        event(out, "", "", "observer-paused",
              "dped itself was not running for " + formatDuration(obs.observer_paused_ms) +
                  " (stopped or stalled): deadlines and heartbeat ages restart now, nothing "
                  "counted",
              "");
    }
    if (!obs.bus_ok && !ds.bus_down) {
        ds.bus_down = true;
        event(out, "", "", "bus-down",
              "message bus lost: agents that report through it are not judged until it is "
              "back; nothing counted",
              "");
    } else if (obs.bus_ok && ds.bus_down) {
        ds.bus_down = false;
        ds.bus_recovered_at = now;
        event(out, "", "", "bus-up", "message bus back; heartbeat ages restart now", "");
    }
    if (dep.monitor == model::MonitorMode::Passive)
        passive();
    else if (obs.desired == DesiredState::Stopped)
        plannedStop();
    else if (!ds.outcome_applied)
        running();
    return Decision{std::move(out), std::move(st), wake};
}

void Engine::passive() {
    for (const auto& name : dep.assemblies) {
        const auto* a = model.findAssembly(name);
        if (!a)
            continue;
        auto& at = st.assemblies[name];
        const auto& oa = observed(name);
        std::string label, reason;
        bool up = false;
        if (oa.qemu_exited)
            label = "failed", reason = "qemu exited";
        else if (oa.domain == DomainState::Crashed)
            label = "failed", reason = "domain crashed";
        else if (oa.domain == DomainState::Shutoff || oa.domain == DomainState::Missing)
            label = "stopped", reason = std::string("domain ") + toString(oa.domain);
        else if (oa.domain == DomainState::Paused)
            label = "paused", reason = "domain paused";
        else if (oa.domain == DomainState::Running) {
            if (oa.last_heartbeat && now - *oa.last_heartbeat > dep.heartbeat_timeout) {
                label = "failed", reason = "heartbeat timeout";
            } else if (oa.suspect || !oa.agent_connected || !oa.last_heartbeat) {
                label = "not-reachable", reason = "not reachable";
            } else {
                label = "running", reason = "running";
                up = true;
                wakeAt(*oa.last_heartbeat + dep.heartbeat_timeout + 1);
            }
        }
        if (!label.empty())
            report(out, at.reported, name, "", label,
                   reason + (label == "failed" ? " (passive: no action)" : ""), "");
        if (!up)
            continue;
        for (const auto& r : a->resources) {
            auto it = oa.services.find(r.name);
            if (it == oa.services.end())
                continue;
            const auto& os = it->second;
            auto& s = at.services[r.name];
            std::string sl, sr;
            switch (os.state) {
            case ServiceState::Active:
                if (r.probe && os.probe_ready == false)
                    sl = "not-ready", sr = "probe failed";
                else
                    sl = "active", sr = "active";
                break;
            case ServiceState::Failed:
                sl = "failed", sr = "monitor failed (passive: no action)";
                break;
            case ServiceState::NotFound:
                sl = "not-installed", sr = "unit not installed";
                break;
            case ServiceState::Unknown:
                sl = "unknown", sr = "unknown state '" + printable(os.raw) + "'";
                break;
            default:
                sl = toString(os.state), sr = toString(os.state);
                break;
            }
            report(out, s.reported, name, r.name, sl, sr, "");
        }
    }
}

void Engine::plannedStop() {
    auto& ds = st.deployable;
    ds.outcome_applied = false;
    ds.outcome_cause.clear();
    bool allStopped = true;
    for (const auto& name : dep.assemblies) {
        const auto* a = model.findAssembly(name);
        if (!a)
            continue;
        auto& at = st.assemblies[name];
        const auto& oa = observed(name);
        AsmRun run{*this, *a, at, oa, {}, {}, false, {}};
        run.resetServices();
        at.due.reset();
        bool down = domainDown(oa.domain) || oa.qemu_exited;
        // Graceful first (ShutdownDomain); destroy (StopDomain) only once dep.stop_timeout
        // has passed, then re-issued every domain_stop_deadline. One stop, one cause.
        auto issueStop = [&](bool graceful, const std::string& reason) {
            if (at.phase != Phase::Stopping)
                at.cause_id = causeId(name);
            run.lastCause = at.cause_id;
            at.reported = "stopping";
            event(run.body, name, "", "stopping", reason, at.cause_id);
            run.body.push_back(make(graceful ? ActionKind::ShutdownDomain : ActionKind::StopDomain,
                                    name, "", at.cause_id));
            at.phase = Phase::Stopping;
            at.phase_since = now;
            at.stop_forced = !graceful;
            wakeAt(now + (graceful ? dep.stop_timeout : tun.domain_stop_deadline) + 1);
            allStopped = false;
        };
        if (down) {
            std::string how = "stopped";
            if (at.phase == Phase::Stopping)
                how = at.stop_forced ? "destroyed (not shut down gracefully)"
                                     : "shut down gracefully";
            if (at.phase != Phase::Stopped) {
                at.phase = Phase::Stopped;
                at.phase_since = now;
            }
            at.stop_forced = false;
            report(run.body, at.reported, name, "", "stopped", how, at.cause_id);
        } else if (at.phase == Phase::Stopping) {
            Millis limit = at.stop_forced ? tun.domain_stop_deadline : dep.stop_timeout;
            Millis deadline = since(at.phase_since) + limit;
            if (now > deadline && !at.stop_forced) {
                issueStop(false, "graceful shutdown did not complete within " +
                                     formatDuration(limit) + "; destroying");
            } else if (now > deadline) {
                issueStop(false, "destroy did not complete within " + formatDuration(limit) +
                                     "; destroying again");
            } else {
                wakeAt(deadline + 1);
                allStopped = false;
            }
        } else if (at.phase == Phase::Stopped && oa.domain == DomainState::Unknown) {
            // Nothing known: keep believing the last confirmed state.
        } else if (oa.domain == DomainState::Paused) {
            // A paused guest cannot act on a shutdown request.
            issueStop(false, "planned stop: domain paused, cannot shut down gracefully; "
                             "destroying");
        } else {
            issueStop(true,
                      std::string(at.phase == Phase::Stopped ? "domain running again while stopped"
                                                             : "planned stop") +
                          ": graceful shutdown, destroy after " + formatDuration(dep.stop_timeout));
        }
        run.finish(a->parked ? Membership::Parked : Membership::Out, out);
    }
    if (allStopped)
        report(out, ds.reported, "", "", "stopped", "deployable stopped", "");
    else if (ds.reported != "stopping")
        report(out, ds.reported, "", "", "stopping", "planned stop", "");
}

void Engine::running() {
    auto& ds = st.deployable;
    if (ds.reported == "stopped" || ds.reported == "stopping")
        report(out, ds.reported, "", "", "starting", "deployable starting", "");
    for (const auto& name : dep.assemblies) {
        const auto* a = model.findAssembly(name);
        if (!a)
            continue;
        auto& at = st.assemblies[name];
        AsmRun run{*this, *a, at, observed(name), {}, {}, false, {}};
        Membership want = run.run();
        run.finish(want, out);
        if (run.stopDeployable) {
            stopDeployable(run.stopCause);
            return;
        }
    }
}

void Engine::stopDeployable(const std::string& cause) {
    // The deployable outcome supersedes everything decided in this pass except the record
    // of what happened (events, escalations).
    out.erase(std::remove_if(out.begin(), out.end(),
                             [](const Action& x) {
                                 return x.kind != ActionKind::EmitEvent &&
                                        x.kind != ActionKind::Escalate &&
                                        x.kind != ActionKind::RefereeRemove &&
                                        x.kind != ActionKind::RefereeDrain;
                             }),
              out.end());
    const std::string reason = "deployable failure budget used up: stopping the deployable";
    event(out, "", "", "failed", "assembly failure escalated to deployable: stopping all", cause);
    for (const auto& name : dep.assemblies) {
        const auto* a = model.findAssembly(name);
        if (!a)
            continue;
        auto& at = st.assemblies[name];
        AsmRun run{*this, *a, at, observed(name), {}, cause, false, {}};
        run.resetServices();
        run.body.push_back(make(ActionKind::StopDomain, name, "", cause));
        at.phase = Phase::Failed;
        at.phase_since = now;
        at.due.reset();
        at.cause_id = cause;
        report(run.body, at.reported, name, "", "stopped", reason, cause);
        run.finish(a->parked ? Membership::Parked : Membership::Out, out);
    }
    Action m = make(ActionKind::MarkFailed, "", "", cause);
    m.reason = reason;
    out.push_back(m);
    st.deployable.outcome_applied = true;
    st.deployable.outcome_cause = cause;
    st.deployable.reported = "failed";
    wake.reset();
}

} // namespace

Decision decide(const model::Model& model, const std::string& deployable, const Observed& observed,
                const EscalationState& state, Millis now, JitterSource& jitter,
                const Tunables& tunables) {
    const auto* dep = model.findDeployable(deployable);
    if (!dep) {
        Decision d;
        d.state = state;
        Action a = make(ActionKind::EmitEvent, "", "", "");
        a.state = "error";
        a.reason = "deployable '" + deployable + "' is not in the model";
        d.actions.push_back(a);
        return d;
    }
    Engine e{model, *dep, observed, state, now, jitter, tunables, {}, {}, false};
    e.referee = !dep->referee.driver.empty();
    return e.run();
}

} // namespace pcloud::policy
