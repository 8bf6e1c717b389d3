#pragma once
// The dped reactor: everything dped knows and does for one deployable, on one thread.
//
// Inputs (libvirt events, pidfd exits, channel events, agent reports, cped commands, timer
// ticks) arrive as calls to the on*() methods, which only update the observed state. Then
// step() re-reads the whole observed state (level-triggered), calls policy::decide(),
// executes the actions in order, persists the EscalationState to
// STATE_DIR/escalation-NAME.json when it changed, and hands the referee its desired set.
// The caller (runtime.cc, or a test) owns the threading: every method must be called from
// the same thread. The clock is injected, so tests drive it with a ManualClock.

#include "common/clock.h"
#include "common/host_config.h"
#include "dped/ports.h"
#include "envelope/envelope.h"
#include "model/model.h"
#include "policy/policy.h"
#include "policy/types.h"
#include "proto/agent_messages.h"
#include "virt/hypervisor.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

namespace pcloud::dped {

struct ReactorConfig {
    std::string deployable;
    std::string state_dir;
    policy::Tunables tunables;
    hostconfig::HostConfig host; // what domain XML may ask of this host
    // When set, every command to an agent is a signed envelope (docs/protocol/agent.md
    // "Signed commands") from this signer (dped:<deployable>), valid for command_ttl.
    std::shared_ptr<const envelope::Signer> signer;
    Millis command_ttl = 30'000;
    // The leadership epoch of the cped that commands this dped (--epoch; 0 = unfenced),
    // in every agent envelope. The "epoch" request from cped raises it (never lowers it);
    // `epoch_raised` is then told the new one (runtime.cc: the RemoteNode's requests).
    std::uint64_t epoch = 0;
    std::function<void(std::uint64_t)> epoch_raised;
    // When set (dped on a TLS bus: the bus CA), every request on pcloud.dped.<deployable>
    // must be a signed envelope for dped:<deployable> from cped:* or operator:*
    // (envelope::mayCommand), fresh and not replayed, whose action is the request's command;
    // a cped's must carry at least `epoch`, so a cped that no longer leads is refused.
    std::shared_ptr<const envelope::Trust> request_trust;
};

// Unit name the agent watches for a resource: for class process the resource name (the
// command goes in the watch command), else the systemd unit / lsb script.
std::string agentUnitFor(const model::Resource& r);
// libvirt domain name of an assembly: <name> in its domain XML, else the assembly name.
std::string domainNameFor(const model::Assembly& a);
policy::DomainState toPolicyState(virt::DomainState s);
// Referee members from the engine's remembered membership (In->Ready, Draining->Drain,
// Out/Parked->Out). Assemblies without an address are left out (nothing to route to).
std::vector<referee::Member> desiredMembers(const model::Model& model,
                                            const std::string& deployable,
                                            const policy::EscalationState& state);
// STATE_DIR/escalation-NAME.json
std::string escalationPath(const std::string& stateDir, const std::string& deployable);

class Reactor {
public:
    // `jobs` runs the slow libvirt calls (define+start, destroy); nullptr runs them inline,
    // which is what the unit tests of decisions want.
    Reactor(ReactorConfig config, model::Model model, const Clock& clock,
            virt::Hypervisor& hypervisor, Messenger& messenger, HostWatch& watch,
            RefereeSink* referee, policy::JitterSource& jitter, JobRunner* jobs = nullptr);

    // Loads the persisted escalation state (a corrupt file is an error naming it), subscribes
    // to the agents' reports, re-reads every domain (adopting running ones) and takes the
    // first decision.
    Status start();

    // ---- inputs --------------------------------------------------------------------------
    void onDomainEvent(const virt::DomainEvent& event);
    void onInfrastructureDown(const std::string& reason);
    void onInfrastructureUp();
    // The bus client's connection to the hub went down / came back (observed_.bus_ok).
    void onBusDown();
    void onBusUp();
    // `pid` is the exited process; an exit of an older qemu of the same assembly is ignored.
    // `signal` is the fatal signal when the kernel told of the death as it began (see
    // virt::PidWatcher), for the log; 0 when the pidfd told.
    void onPidExit(const std::string& assembly, std::int64_t monotonicUs, pid_t pid = 0,
                   int signal = 0);
    // `monotonicUs`: steady clock when the relay saw it (0: unknown), logged for benchmarks.
    void onChannelEvent(const std::string& assembly, bool connected, const std::string& detail,
                        std::int64_t monotonicUs = 0);
    // `viaBus`: the report came through the message hub (an agent over TCP, or today's channel
    // relay), so a lost bus silences this agent without it being hung.
    void onReport(const std::string& assembly, const std::string& body, bool viaBus = true);
    // dped itself was not running for `gapMs` (SIGSTOP, a host stall); see PauseDetector.
    void onObserverPaused(Millis gapMs);
    // A pcloud-node refused one of this dped's commands as stale: it has accepted `epoch`, a
    // newer leader's. Above this dped's own epoch that fences it: the engine decides
    // nothing and the balancer is left alone until cped raises the epoch to at least this.
    // Only host-side receivers may call this (an agent is untrusted, docs/ha.md).
    void onReceiverEpoch(std::uint64_t epoch);
    // A cped request body; returns the reply body. (ping needs onRequest: it answers later.)
    std::string onCommand(const std::string& body, const std::string& correlationId = {});
    // A cped request as received: returns the reply body now, or nullopt when the reply is
    // sent later through Messenger::reply (ping: when the agent answers or the ping times out).
    // With request_trust it must be a signed envelope; a refused one gets an error reply
    // whose code is envelope::toString of the reason ("unsigned", "replayed", ...).
    std::optional<std::string> onRequest(const bus::Message& request);

    // Decide, act, persist. Call after every input and when nextWake() is reached.
    void step();
    // Wall-clock ms at which step() must run again (nullopt: only on input).
    std::optional<Millis> nextWake() const { return next_wake_; }
    // True once a planned stop finished (every domain is down): dped exits 0.
    bool finished() const { return finished_; }

    nlohmann::json statusJson() const;
    const policy::Observed& observed() const { return observed_; }
    const policy::EscalationState& state() const { return state_; }
    const model::Model& model() const { return model_; }

private:
    const model::Deployable* dep() const { return model_.findDeployable(cfg_.deployable); }
    const model::Assembly* assemblyOfDomain(const std::string& domain) const;
    void subscribeReports(const model::Assembly& a);
    void refreshDomain(const std::string& assembly);
    void refreshAll();
    void agentGone(policy::ObservedAssembly& oa, const std::string& assembly);
    void execute(const policy::Action& action);
    void startDomain(const policy::Action& action);
    // Generates the domain XML of an assembly from its image; returns an error text or "".
    std::string imageDomainFor(const model::Assembly& a, std::optional<std::string>& xml);
    void stopDomain(const policy::Action& action);
    void shutdownDomain(const policy::Action& action);
    // A libvirt job for `assembly` is handed to jobs_. Until the last one is done the domain
    // reads Unknown: libvirt events and refreshes about it are ignored, because a state read
    // half-way through a destroy+start (still running, then shut off) would look like a
    // failure of the restart in progress. jobDone() re-reads the domain when none is left.
    void jobQueued(const std::string& assembly, const std::string& what);
    void jobDone(const std::string& assembly);
    bool jobBusy(const std::string& assembly) const { return jobs_inflight_.count(assembly) > 0; }
    void serviceCommand(const policy::Action& action);
    // Sends a command to an agent: its body, or with a signer a signed envelope of it.
    Status sendToAgent(const std::string& assembly, const proto::Command& c);
    void sendWatch(const std::string& assembly);
    void readRefereeMembership();
    // A heartbeat overdue by more than frozenAfter(): is the assembly's qemu stopped, and how
    // long has the host kept its threads waiting to run since then (starved_ms)?
    void checkFrozen(Millis now);
    struct StarveSample {
        Millis heartbeat = 0; // the overdue heartbeat this sample belongs to
        std::map<pid_t, std::uint64_t> waits;
    };
    std::map<std::string, StarveSample> starve_; // assembly -> first sample while overdue
    Millis frozenAfter() const;
    // The unit list of a hello or a watch reply: the agent's full state.
    void fullState(const std::string& assembly, const std::vector<proto::UnitState>& units,
                   Millis now);
    void emitEvent(const std::string& assembly, const std::string& service,
                   const std::string& state, const std::string& reason, const std::string& cause);
    std::string channelPath(const model::Assembly& a) const;
    void persist();
    void updateReferee();
    void checkStopDone();
    // ping: sends the agent a proto ping and remembers the request; nullopt if it went out.
    std::optional<std::string> startPing(const nlohmann::json& request, const std::string& id,
                                         const bus::Message& m);
    void finishPing(const std::string& pingId, const nlohmann::json& reply);
    // cped's "epoch" request: args.epoch, accepted only when not lower than the current one.
    nlohmann::json raiseEpoch(const nlohmann::json& request, const std::string& id);
    // cped's "fence" request: it stepped down, so a newer epoch than args.epoch - 1 may act.
    nlohmann::json fence(const nlohmann::json& request, const std::string& id);
    // Remembers `epoch` as a receiver's (the engine fences while it is above this dped's own)
    // and logs `why` the first time it fences.
    void noteNewerEpoch(std::uint64_t epoch, const char* why);
    void expirePings();
    // The request inside a signed envelope (request_trust), or the error reply refusing it.
    std::variant<std::string, nlohmann::json> openSignedRequest(const bus::Message& m);

    ReactorConfig cfg_;
    model::Model model_;
    const Clock& clock_;
    virt::Hypervisor& hv_;
    Messenger& bus_;
    HostWatch& watch_;
    RefereeSink* referee_;
    policy::JitterSource& jitter_;
    InlineJobRunner inline_jobs_;
    JobRunner& jobs_;

    policy::Observed observed_;
    policy::EscalationState state_;
    std::optional<policy::EscalationState> persisted_;
    std::optional<Millis> next_wake_;
    std::map<std::string, Millis> last_report_;           // assembly -> host time of newest report
    std::map<std::string, pid_t> pids_;                   // assembly -> watched qemu pid
    std::map<std::string, std::string> unit_to_resource_; // "assembly/unit" -> resource
    std::set<std::string> subscribed_;
    // assembly -> its queued libvirt jobs ("start", "destroy"), the running one first.
    std::map<std::string, std::vector<std::string>> jobs_inflight_;
    // Assemblies whose domain is being destroyed: reports are dropped until the destroy is
    // done, so a late heartbeat from the agent being killed cannot pass for the new one's.
    std::set<std::string> deaf_;
    std::set<std::string> hello_mismatch_logged_;     // assemblies whose foreign hello was logged
    std::set<std::string> awaiting_heartbeat_;        // agent gone: log its next first heartbeat
    std::map<std::string, std::string> pending_cmds_; // command id -> "assembly/service"
    struct PendingPing {
        std::string reply_to;       // the cped request's reply address
        std::string correlation_id; // the cped request's correlation id
        std::string request_id;     // the cped request's "id"
        std::string assembly;
        Millis sent_mono = 0; // monotonic ms when the agent ping went out
        Millis deadline = 0;  // wall ms (clock_.nowMs()) after which we answer "no reply"
        Millis timeout = 0;
    };
    std::map<std::string, PendingPing> pending_pings_; // agent ping id -> cped request
    // Request ids of verified requests (request_trust), for their ttl plus the skew. cped asks
    // for status on every `status` and `deployable_status`: room for ~1000 requests/s.
    envelope::ReplayCache request_replay_{65'536};
    std::optional<std::vector<referee::Member>> last_members_;
    std::uint64_t next_cmd_ = 1;
    bool finished_ = false;
    bool stop_requested_ = false;
};

} // namespace pcloud::dped
