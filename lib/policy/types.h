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
    bool qemu_exited = false; // pidfd proved the qemu process is gone
    bool agent_connected = false;
    std::uint64_t heartbeat_seq = 0;
    std::optional<Millis> last_heartbeat;            // host receive time of the newest heartbeat
    std::map<std::string, ObservedService> services; // absent = no report yet
    bool operator==(const ObservedAssembly&) const = default;
};

struct Observed {
    DesiredState desired = DesiredState::Running;
    bool infra_ok = true; // dped's libvirt connection to the host is up
    bool bus_ok = true;   // dped's connection to the message hub is up
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

enum class Membership { Out, In, Draining, Parked }; // what we last asked the referee for

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
    StopDomain, // virDomainDestroy: idempotent, also clears a crashed domain
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
