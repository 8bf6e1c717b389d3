#pragma once
// The data the policy engine works on: what dped observed (Observed), what the engine
// remembers between calls (EscalationState, persisted by dped as JSON after every decision)
// and what it asks dped to do (Action). Plain values, no behaviour; see policy.h.

#include "common/clock.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::policy {

// ---- Observed -------------------------------------------------------------------------------

enum class Membership { Out, In, Draining, Parked }; // what we last asked the referee for

enum class DesiredState { Running, Stopped };
enum class DomainState { Unknown, Running, Paused, Shutoff, Crashed, Missing };
enum class ServiceState { Unknown, Active, Activating, Deactivating, Inactive, Failed, NotFound };

struct ObservedService {
    ServiceState state = ServiceState::Unknown;
    std::string raw;                  // the string the agent sent, kept for event reasons
    std::optional<Millis> changed_at; // when the agent saw the state change
    std::optional<bool> probe_ready;  // readiness probe verdict; nullopt = no verdict yet
    bool operator==(const ObservedService&) const = default;
};

struct ObservedAssembly {
    DomainState domain = DomainState::Unknown;
    bool suspect = false;     // guest channel EOF seen, not confirmed yet
    bool frozen = false;      // the qemu process is stopped (SIGSTOP, a debugger): nothing
                              // inside runs; drained at once, a failure at the timeout
    bool qemu_exited = false; // pidfd proved the qemu process is gone
    // How long the host kept this guest's qemu waiting to run (runnable, on the host's run
    // queue: the most-starved thread's wait in /proc/PID/task/*/schedstat) while its
    // heartbeat was overdue. Time the guest could not use is no evidence that it hung: the
    // heartbeat deadline is extended by it, up to 2 x heartbeat_timeout.
    Millis starved_ms = 0;
    bool agent_connected = false;
    std::uint64_t heartbeat_seq = 0;
    std::optional<Millis> last_heartbeat;            // host receive time of the newest heartbeat
    std::map<std::string, ObservedService> services; // absent = no report yet
    // The agent's reports reach dped through the message hub (an agent over TCP), not over
    // a channel dped terminates itself: a lost bus then silences it without it being hung.
    bool agent_via_bus = false;
    // Host receive time of the newest full state from the agent (hello, or the unit list of
    // a watch reply). Since the observer started, this is what "judged" means.
    std::optional<Millis> hello_at;
    // What the referee actually serves for this assembly, read when the observer started
    // (nullopt: unknown or no referee). The starting point until the assembly is judged.
    std::optional<Membership> referee;
    // The last StartDomain libvirt refused (or whose qemu died before it ran): when dped
    // heard so, and libvirt's words. A refusal at or after the start of the current
    // start/restart is that attempt's failure, handled at once rather than at
    // domain_start_deadline.
    std::optional<Millis> start_failed_at;
    std::string start_error;
    bool operator==(const ObservedAssembly&) const = default;
};

struct Observed {
    DesiredState desired = DesiredState::Running;
    bool infra_ok = true; // dped's libvirt connection to the host is up
    bool bus_ok = true;   // dped's connection to the message hub is up
    // When this observer (dped) started watching. Before that it saw nothing, so heartbeat
    // ages and deadlines count from here, and an assembly keeps the membership it has until
    // its agent's full state arrives (hello_at) or 2 x heartbeat_timeout have passed.
    std::optional<Millis> observer_since;
    // The observer itself was stopped (SIGSTOP, a host stall) and resumed at this time after
    // a gap of observer_paused_ms: every age it sees is inflated by the gap, none is evidence.
    std::optional<Millis> observer_resumed_at;
    Millis observer_paused_ms = 0;
    // Leadership fencing (docs/ha.md "Epoch fencing"): the epoch this dped acts under (its
    // cped's; 0 = the unfenced single node) and the highest epoch that a host-side receiver
    // of its commands (a pcloud-node) named when it refused one as stale, or that its cped
    // named when it stepped down (its own epoch + 1: whoever leads next leads above it). A
    // receiver epoch above this dped's own means a newer leader has acted, or may act, on
    // those hosts: this dped must not act until its cped raises its epoch again. Guests' refusals
    // never count here: an agent is untrusted, and a forged refusal must not silence the
    // deployable's recovery.
    std::uint64_t epoch = 0;
    std::uint64_t receiver_epoch = 0;
    std::map<std::string, ObservedAssembly> assemblies; // absent = nothing known
    bool operator==(const Observed&) const = default;
};

// ---- EscalationState ------------------------------------------------------------------------

// Where an entity is in its life cycle, as far as the engine is concerned.
enum class Phase {
    Fresh,          // not started by us yet (or reset by park / planned stop / VM restart)
    Starting,       // StartService/StartDomain issued at phase_since, waiting for it to run
    Up,             // running; failures are detected from here
    RestartPending, // failed, restart due at `due` (backoff)
    Restarting,     // restart issued at phase_since, waiting for it to come back
    Stopping,       // planned stop issued at phase_since
    Stopped,        // planned stop done
    Failed,         // given up: not installed (service) or left stopped (assembly)
};

struct Recovery {
    std::vector<Millis> failures; // sliding window, oldest first
    int restarts = 0;             // consecutive restarts (backoff exponent)
    std::optional<Millis> last_restart;
    std::optional<Millis> stable_since; // came back up at; reset_after counts from here
    bool operator==(const Recovery&) const = default;
};

struct ServiceTrack {
    Phase phase = Phase::Fresh;
    Millis phase_since = 0;
    std::optional<Millis> due; // RestartPending: when the restart is due
    std::string cause_id;      // failure the current recovery belongs to
    Recovery recovery;
    std::string reported; // last state an event was emitted for ("" = none)
    bool operator==(const ServiceTrack&) const = default;
};

struct AssemblyTrack {
    Phase phase = Phase::Fresh;
    Millis phase_since = 0;
    std::optional<Millis> due;
    std::string cause_id;
    bool seen_running = false; // domain seen running since the last start/restart was issued
    bool stop_forced = false;  // planned stop: graceful shutdown timed out, destroy issued
    Recovery recovery;
    Membership membership = Membership::Out;
    std::string reported;
    std::map<std::string, ServiceTrack> services;
    bool operator==(const AssemblyTrack&) const = default;
};

struct DeployableTrack {
    std::vector<Millis> failures; // assembly escalations in the deployable's window
    bool outcome_applied = false; // StopDeployable done; cleared by a planned stop
    std::string outcome_cause;
    bool infra_down = false;
    std::optional<Millis> infra_recovered_at;
    std::optional<Millis> observer_resumed_at; // the last observer pause already handled
    bool bus_down = false;
    std::optional<Millis> bus_recovered_at; // ages of agents over the bus restart here
    // Fenced off by a newer leader: the receiver epoch that did it (0 = not fenced). While
    // fenced the engine decides nothing; when the fence lifts (this dped's epoch caught up)
    // every deadline and heartbeat age restarts at fence_lifted_at, as after a pause.
    std::uint64_t fenced_by = 0;
    std::optional<Millis> fence_lifted_at;
    std::string reported;
    bool operator==(const DeployableTrack&) const = default;
};

struct EscalationState {
    DeployableTrack deployable;
    std::map<std::string, AssemblyTrack> assemblies;
    bool operator==(const EscalationState&) const = default;
};

// ---- Actions --------------------------------------------------------------------------------

enum class ActionKind {
    RestartService,
    StartService,
    StopService, // part of the vocabulary for executors; decide() does not emit it today
    StartDomain,
    StopDomain,     // virDomainDestroy: idempotent, also clears a crashed domain
    ShutdownDomain, // graceful (virDomainShutdown, ACPI); a planned stop; destroy after timeout
    MarkFailed, // give up on assembly (service set: on that service; empty assembly: deployable)
    Escalate,
    RefereeDrain,
    RefereeRemove,
    RefereeAdd,
    EmitEvent,
};

enum class Level { Service, Assembly, Deployable };

// One tagged struct rather than a variant: easy to print, compare and serialize. Fields not
// used by a kind stay empty. `cause_id` links every recovery action and event to the failure
// that caused it ("<assembly>/<service>@<ms>" or "<assembly>@<ms>").
struct Action {
    ActionKind kind = ActionKind::EmitEvent;
    std::string assembly; // empty for deployable-wide events / MarkFailed
    std::string service;
    std::string cause_id;
    Level from = Level::Service; // Escalate
    Level to = Level::Service;   // Escalate
    std::string state;           // EmitEvent: new state ("failed", "running", ...)
    std::string reason;          // EmitEvent/MarkFailed: why, in words
    bool operator==(const Action&) const = default;
};

struct Decision {
    std::vector<Action> actions;     // execute in this order
    EscalationState state;           // persist, pass to the next decide()
    std::optional<Millis> next_wake; // call decide() again at this time at the latest
};

const char* toString(DesiredState s);
const char* toString(DomainState s);
const char* toString(ServiceState s);
const char* toString(Phase p);
const char* toString(Membership m);
const char* toString(ActionKind k);
const char* toString(Level l);
// Unknown strings map to DomainState::Unknown / ServiceState::Unknown (never an error:
// garbage from the agent must be handled safely).
DomainState parseDomainState(const std::string& s);
ServiceState parseServiceState(const std::string& s);
bool parsePhase(const std::string& s, Phase& out);
bool parseMembership(const std::string& s, Membership& out);
bool parseActionKind(const std::string& s, ActionKind& out);
bool parseLevel(const std::string& s, Level& out);

} // namespace pcloud::policy
