#pragma once
// The host layer of the policy engine (docs/hosts.md): from several signals per host, decide
// whether a hypervisor host is up, suspect, to be fenced, fenced or down, and where the
// assemblies of a fenced host (or of an assembly whose restart budget is used up, with
// outcome relocate/replace) start next. Pure, like decide(): no I/O, no clock, no throw;
// time is an argument and every call re-reads the whole observation (level-triggered), with
// in-flight work remembered in HostLayerState, so the same input issues an action once.
//
// The rule that matters most: nothing that ran on a host is started elsewhere until that
// host is fenced (a fence agent said "off"). A failed fence is retried with backoff and
// alerted; the assemblies stay down. Never a double run.

#include "common/clock.h"
#include "common/result.h"
#include "model/model.h"

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace pcloud::policy::hosts {

// ---- Observed -------------------------------------------------------------------------------

// The outcome of a fence action the executor ran (the newest one per host).
struct FenceResult {
    int attempt = 0; // HostTrack::fence_attempts of the action it answers
    bool ok = false; // the agent said off (exit status 0)
    Millis at = 0;
    std::string error; // why it failed, for the alert
    bool operator==(const FenceResult&) const = default;
};

struct HostSignals {
    std::optional<Millis> node_heartbeat; // receive time of the newest pcloud-node heartbeat
    // The libvirt connection to that host (keepalive), where one is configured:
    // nullopt = none configured (no evidence either way).
    std::optional<bool> libvirt_alive;
    std::optional<FenceResult> fence;
    bool operator==(const HostSignals&) const = default;
};

struct HostObserved {
    bool bus_ok = true; // the observer's connection to the hub (node heartbeats cross it)
    std::optional<Millis> observer_since;
    std::optional<Millis> observer_resumed_at;
    Millis observer_paused_ms = 0;
    std::map<std::string, HostSignals> hosts;
    // Where each assembly runs (or last ran) now: assembly -> host. Absent = not placed.
    std::map<std::string, std::string> placement;
    // Newest heartbeat of each assembly's agent that connects over TCP (through the hub,
    // not the host's channel): evidence that its host is alive even when its node is not.
    std::map<std::string, Millis> agent_heartbeats;
    // When decide() found an assembly's own restart budget used up (Escalate
    // assembly->deployable): with outcome relocate/replace the host layer answers it.
    std::map<std::string, Millis> budget_exhausted;
    bool operator==(const HostObserved&) const = default;
};

// ---- State ----------------------------------------------------------------------------------

struct HostTrack {
    model::HostState state = model::HostState::Up;
    Millis since = 0;
    std::string cause_id; // "host:h1@<ms>": every action of one host failure carries it
    int fence_attempts = 0;
    std::optional<Millis> fence_issued;  // the current attempt was issued at
    std::optional<Millis> fence_due;     // the next attempt is due (backoff)
    bool node_restart_requested = false; // this suspect episode already asked for it
    bool operator==(const HostTrack&) const = default;
};

struct AssemblyHostTrack {
    std::vector<Millis> relocations; // budget relocations, inside relocate_period
    int replacements = 0;
    std::optional<Millis> handled_exhausted; // the budget_exhausted already answered
    std::string moving_to;                   // a relocation was issued to this host...
    std::string moving_from;
    std::optional<Millis> moving_since; // ...at this time
    std::string cause_id;
    bool operator==(const AssemblyHostTrack&) const = default;
};

struct HostLayerState {
    std::map<std::string, HostTrack> hosts;
    std::map<std::string, AssemblyHostTrack> assemblies;
    bool bus_down = false;
    std::optional<Millis> bus_recovered_at;
    bool operator==(const HostLayerState&) const = default;
};

// ---- Actions --------------------------------------------------------------------------------

enum class HostActionKind {
    Fence,       // run the host's fence agent with action=off
    RestartNode, // the node process is dead, the host is not: restart pcloud-node there
    Alert,       // an operator must look (fence failed, nowhere to relocate to)
    Relocate,    // start `assembly` on `to` (it is not running anywhere: fenced or stopped)
    Replace,     // clone `assembly` as `spare` (assembly_clone) and start it on `to`
    Escalate,    // relocate/replace impossible: the deployable's budget takes over
    EmitEvent,
};

struct HostAction {
    HostActionKind kind = HostActionKind::EmitEvent;
    std::string host;     // the host concerned (Fence, RestartNode, host events)
    std::string assembly; // Relocate, Replace, Escalate, assembly events
    std::string from, to; // Relocate, Replace
    std::string spare;    // Replace: the new assembly's name
    std::string cause_id;
    std::string state;  // EmitEvent
    std::string reason; // EmitEvent, Alert, Escalate
    bool operator==(const HostAction&) const = default;
};

struct HostDecision {
    std::vector<HostAction> actions;
    HostLayerState state;
    std::optional<Millis> next_wake;
};

struct HostTunables {
    Millis node_timeout = 10'000;   // node heartbeat older than this (strictly): suspect
    Millis fence_confirm = 5'000;   // every signal lost this long while suspect: fence
    Millis fence_deadline = 90'000; // a fence with no result by then counts as failed
    Millis fence_retry_base = 5'000;
    double fence_retry_factor = 2.0;
    Millis fence_retry_cap = 300'000;
    Millis relocate_deadline = 120'000; // a relocation not seen placed by then is re-issued
    bool operator==(const HostTunables&) const = default;
};

HostDecision decideHosts(const model::Model& model, const HostObserved& observed,
                         const HostLayerState& state, Millis now,
                         const HostTunables& tunables = {});

// ---- Placement ------------------------------------------------------------------------------

// Where `assembly` may start now: among its allowed hosts (pinned, allowed set, or all),
// those whose effective state is up (not maintenance, suspect, fencing, fenced, down),
// with room for its vcpus/memory beside what `placement` already puts there (capacity 0 =
// not declared, no limit), not in `exclude`. With the deployable's spread on, the host
// with the fewest assemblies of the same deployable wins; then the fewest assemblies;
// then the name. The error says why there is none.
Result<std::string> placeAssembly(const model::Model& model, const std::string& assembly,
                                  const std::map<std::string, std::string>& placement,
                                  const std::map<std::string, model::HostState>& states,
                                  const std::set<std::string>& exclude = {});

// The state the host layer works with: the model's maintenance (operator) wins, else the
// remembered one (up when unknown).
std::map<std::string, model::HostState> effectiveStates(const model::Model& model,
                                                        const HostLayerState& state);

// ---- Codecs and text ------------------------------------------------------------------------

const char* toString(HostActionKind k);
std::string describe(const HostAction& a);

nlohmann::json toJson(const HostLayerState& s);
Result<HostLayerState> hostLayerStateFromJson(const nlohmann::json& j, const std::string& path);
// Times are integer ms (the simulator resolves "now"/"+5s" before calling this).
Result<HostObserved> hostObservedFromJson(const nlohmann::json& j, const std::string& path);
nlohmann::json toJson(const HostTunables& t);
Result<HostTunables> hostTunablesFromJson(const nlohmann::json& j, const std::string& path);
nlohmann::json toJson(const HostAction& a);

} // namespace pcloud::policy::hosts
