#include "dped/reactor.h"

#include "common/fs.h"
#include "common/log.h"
#include "common/time_format.h"
#include "events/event.h"
#include "policy/epoch_fence.h"
#include "policy/policy_json.h"
#include "proto/agent_messages.h"
#include "store/domain_check.h"
#include "store/image_domain.h"
#include "store/store.h"
#include "virt/guest_xml.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <unistd.h>

namespace pcloud::dped {

using nlohmann::json;
using policy::ActionKind;

namespace {

// One unit as the agent reported it, as the engine sees it ("reloading" still serves).
policy::ObservedService toObserved(const proto::UnitState& u) {
    policy::ObservedService s;
    s.raw = u.active_state;
    s.state = u.active_state == "reloading" ? policy::ServiceState::Active
                                            : policy::parseServiceState(u.active_state);
    if (u.changed_at > 0)
        s.changed_at = u.changed_at;
    s.probe_ready = u.ready;
    return s;
}

std::int64_t monoUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

json errorReply(const std::string& id, const std::string& code, const std::string& message) {
    return json{{"v", 1},
                {"type", "reply"},
                {"id", id},
                {"ok", false},
                {"error", {{"code", code}, {"message", message}}}};
}

} // namespace

std::string agentUnitFor(const model::Resource& r) {
    if (r.klass == model::ResourceClass::Process || r.unit.empty())
        return r.name;
    return r.unit;
}

std::string domainNameFor(const model::Assembly& a) {
    if (!a.domain_xml.empty())
        if (auto n = virt::domainNameOf(a.domain_xml))
            return *n;
    return a.name;
}

policy::DomainState toPolicyState(virt::DomainState s) {
    switch (s) {
    case virt::DomainState::Missing:
        return policy::DomainState::Missing;
    case virt::DomainState::Running:
        return policy::DomainState::Running;
    case virt::DomainState::ShuttingDown:
        return policy::DomainState::Running;
    case virt::DomainState::Paused:
        return policy::DomainState::Paused;
    case virt::DomainState::Shutoff:
        return policy::DomainState::Shutoff;
    case virt::DomainState::Crashed:
        return policy::DomainState::Crashed;
    case virt::DomainState::Unknown:
        return policy::DomainState::Unknown;
    }
    return policy::DomainState::Unknown;
}

std::vector<referee::Member> desiredMembers(const model::Model& model,
                                            const std::string& deployable,
                                            const policy::EscalationState& state) {
    std::vector<referee::Member> out;
    const auto* d = model.findDeployable(deployable);
    if (!d)
        return out;
    for (const auto& name : d->assemblies) {
        const auto* a = model.findAssembly(name);
        if (!a || a->address.empty())
            continue;
        referee::Member m{name, a->address, referee::MemberState::Out};
        auto it = state.assemblies.find(name);
        if (it != state.assemblies.end()) {
            switch (it->second.membership) {
            case policy::Membership::In:
                m.desired = referee::MemberState::Ready;
                break;
            case policy::Membership::Draining:
                m.desired = referee::MemberState::Drain;
                break;
            default:
                m.desired = referee::MemberState::Out;
                break;
            }
        }
        out.push_back(std::move(m));
    }
    std::sort(out.begin(), out.end(),
              [](const referee::Member& x, const referee::Member& y) { return x.name < y.name; });
    return out;
}

std::string escalationPath(const std::string& stateDir, const std::string& deployable) {
    return store::escalationStatePath(stateDir, deployable);
}

Reactor::Reactor(ReactorConfig config, model::Model model, const Clock& clock,
                 virt::Hypervisor& hypervisor, Messenger& messenger, HostWatch& watch,
                 RefereeSink* referee, policy::JitterSource& jitter, JobRunner* jobs)
    : cfg_(std::move(config)), model_(std::move(model)), clock_(clock), hv_(hypervisor),
      bus_(messenger), watch_(watch), referee_(referee), jitter_(jitter),
      jobs_(jobs ? *jobs : inline_jobs_) {}

Status Reactor::start() {
    if (!dep())
        return makeError("deployable '" + cfg_.deployable + "' is not in the model (" +
                         cfg_.state_dir + "/" + store::kDeployablesFile + ")");
    std::string path = escalationPath(cfg_.state_dir, cfg_.deployable);
    if (fs::exists(path)) {
        auto text = fs::readFile(path);
        if (!text)
            return text.error();
        auto j = json::parse(*text, nullptr, false);
        if (j.is_discarded())
            return makeError("escalation state is not valid JSON; move it away to start with "
                             "no failure history",
                             path);
        auto st = policy::escalationStateFromJson(j);
        if (!st)
            return makeError(st.error().message, path);
        state_ = std::move(*st);
        persisted_ = state_;
        PCLOUD_LOG(Notice, "Loaded escalation state",
                   {{"deployable", cfg_.deployable}, {"file", path}});
    }
    // dped's own observation had a gap (it was not running): the engine counts heartbeat
    // ages and deadlines from now, and keeps every member where the balancer has it until
    // its agent's full state arrives (policy: observer_since), so a restarted dped changes
    // nothing a healthy guest or the balancer sees.
    observed_.observer_since = clock_.nowMs();
    observed_.epoch = cfg_.epoch;
    readRefereeMembership();
    for (const auto& name : dep()->assemblies)
        if (const auto* a = model_.findAssembly(name))
            subscribeReports(*a);
    refreshAll();
    // An agent that reaches the hub over TCP kept its connection while dped was away and
    // sends no new hello: ask for its full state (the watch reply carries it).
    for (const auto& [name, oa] : observed_.assemblies)
        if (oa.domain == policy::DomainState::Running)
            sendWatch(name);
    emitEvent("", "", "dped-started", "dped started (pid " + std::to_string(::getpid()) + ")", "");
    step();
    return Status::success();
}

const model::Assembly* Reactor::assemblyOfDomain(const std::string& domain) const {
    const auto* d = dep();
    if (!d)
        return nullptr;
    for (const auto& name : d->assemblies)
        if (const auto* a = model_.findAssembly(name); a && domainNameFor(*a) == domain)
            return a;
    return nullptr;
}

void Reactor::subscribeReports(const model::Assembly& a) {
    auto sub = [this](const std::string& key, const std::string& assembly) {
        if (!subscribed_.insert(key).second)
            return;
        bus_.subscribe("pcloud.reports." + key,
                       [this, assembly](const bus::Message& m) { onReport(assembly, m.body); });
    };
    sub(a.name, a.name);
    if (!a.uuid.empty() && a.uuid != a.name)
        sub(a.uuid, a.name);
}

std::string Reactor::channelPath(const model::Assembly& a) const {
    std::string p = a.domain_xml.empty() ? "" : virt::agentChannelPath(a.domain_xml);
    return p.empty() ? cfg_.state_dir + "/channels/" + a.name + ".sock" : p;
}

void Reactor::agentGone(policy::ObservedAssembly& oa, const std::string& assembly) {
    oa.agent_connected = false;
    oa.services.clear();
    last_report_.erase(assembly);
    awaiting_heartbeat_.insert(assembly);
}

void Reactor::refreshDomain(const std::string& assembly) {
    const auto* a = model_.findAssembly(assembly);
    if (!a)
        return;
    if (jobBusy(assembly))
        return; // jobDone() looks again
    auto info = hv_.lookup(domainNameFor(*a));
    if (!info) {
        PCLOUD_LOG(Warning, "Domain lookup failed",
                   {{"assembly", assembly}, {"error", info.error().describe()}});
        return;
    }
    auto& oa = observed_.assemblies[assembly];
    auto before = oa.domain;
    oa.domain = toPolicyState(info->state);
    if (oa.domain == policy::DomainState::Running) {
        auto pid = hv_.qemuPid(domainNameFor(*a));
        if (pid) {
            auto it = pids_.find(assembly);
            if (it == pids_.end() || it->second != *pid) {
                pids_[assembly] = *pid;
                watch_.watchPid(assembly, *pid);
                oa.qemu_exited = false;
                oa.suspect = false;
                PCLOUD_LOG(Notice, "Domain running",
                           {{"assembly", assembly},
                            {"pid", std::to_string(*pid)},
                            {"mono_us", std::to_string(monoUs())}});
            }
        } else if (!oa.qemu_exited) {
            // Not local qemu (test:///default): there is no pid; the domain state is the proof.
            oa.qemu_exited = false;
        }
        std::vector<std::string> keys{a->name};
        if (!a->uuid.empty() && a->uuid != a->name)
            keys.push_back(a->uuid);
        watch_.ensureChannel(assembly, channelPath(*a), keys);
    } else {
        if (pids_.erase(assembly))
            watch_.unwatchPid(assembly);
        if (before == policy::DomainState::Running)
            agentGone(oa, assembly);
        oa.suspect = false;
        if (oa.domain != policy::DomainState::Unknown)
            oa.qemu_exited = false;
    }
}

void Reactor::refreshAll() {
    if (const auto* d = dep())
        for (const auto& name : d->assemblies)
            refreshDomain(name);
}

void Reactor::onDomainEvent(const virt::DomainEvent& event) {
    const auto* a = assemblyOfDomain(event.domain);
    if (!a)
        return;
    PCLOUD_LOG(Info, "libvirt event",
               {{"assembly", a->name},
                {"event", virt::toString(event.kind)},
                {"detail", event.detail},
                {"mono_us", std::to_string(event.monotonicUs)}});
    if (event.kind == virt::DomainEventKind::Stopped ||
        event.kind == virt::DomainEventKind::Crashed)
        PCLOUD_LOG(Notice, "libvirt reports domain stopped",
                   {{"assembly", a->name},
                    {"detail", event.detail},
                    {"mono_us", std::to_string(event.monotonicUs)}});
    // Level-triggered: the event only says "look again". An old STOPPED event arriving after
    // we already restarted the domain then reads "running" and changes nothing.
    refreshDomain(a->name);
}

void Reactor::onInfrastructureDown(const std::string& reason) {
    observed_.infra_ok = false;
    PCLOUD_LOG(Warning, "Hypervisor connection lost", {{"reason", reason}});
}

void Reactor::onInfrastructureUp() {
    observed_.infra_ok = true;
    PCLOUD_LOG(Notice, "Hypervisor connection back; re-reading every domain", {});
    // Watch every qemu anew: a restarted pcloud-node has lost its pidfd watches (a local
    // watch is simply replaced).
    pids_.clear();
    refreshAll();
}

void Reactor::onBusDown() {
    if (!observed_.bus_ok)
        return;
    observed_.bus_ok = false;
    PCLOUD_LOG(Warning,
               "Message hub connection lost; channel agents are still supervised, agents that "
               "report through the hub are not judged, events are held until it is back",
               {{"deployable", cfg_.deployable}});
}

void Reactor::onBusUp() {
    if (observed_.bus_ok)
        return;
    observed_.bus_ok = true;
    PCLOUD_LOG(Notice, "Message hub connection back", {{"deployable", cfg_.deployable}});
}

void Reactor::onPidExit(const std::string& assembly, std::int64_t monotonicUs, pid_t pid,
                        int signal) {
    auto it = pids_.find(assembly);
    if (it == pids_.end())
        return; // an exit we caused (planned stop) or a stale watch
    if (pid != 0 && it->second != pid)
        return; // the previous qemu, already dealt with
    const char* name = signal ? sigabbrev_np(signal) : nullptr;
    PCLOUD_LOG(Notice, "qemu process exited",
               {{"assembly", assembly},
                {"pid", std::to_string(it->second)},
                {"signal", name ? std::string("SIG") + name : std::to_string(signal)}, // 0: pidfd
                {"mono_us", std::to_string(monotonicUs)}});
    pids_.erase(it);
    auto& oa = observed_.assemblies[assembly];
    oa.qemu_exited = true;
    agentGone(oa, assembly);
}

void Reactor::onChannelEvent(const std::string& assembly, bool connected, const std::string& detail,
                             std::int64_t monotonicUs) {
    auto& oa = observed_.assemblies[assembly];
    if (connected) {
        oa.suspect = false;
        return;
    }
    if (oa.domain == policy::DomainState::Running && !oa.qemu_exited && !oa.suspect) {
        PCLOUD_LOG(Notice, "Guest channel closed; suspecting the domain",
                   {{"assembly", assembly},
                    {"detail", detail},
                    {"mono_us", std::to_string(monotonicUs ? monotonicUs : monoUs())}});
        // Only a suspicion: the engine drains the member at once. Proof comes from the pidfd
        // (local qemu) or libvirt's own event. Do NOT ask libvirt here: while libvirtd handles
        // a dead qemu it holds the domain for 1.2-2 s and virDomainGetState waits that long,
        // which would stall this thread and hold back the pidfd exit queued behind it.
        oa.suspect = true;
    }
}

void Reactor::readRefereeMembership() {
    if (!referee_)
        return;
    auto actual = referee_->current();
    if (!actual) {
        PCLOUD_LOG(Warning,
                   "Cannot read the balancer's membership; keeping the remembered one until "
                   "each agent is heard",
                   {{"deployable", cfg_.deployable}});
        return;
    }
    std::map<std::string, policy::Membership> seen;
    for (const auto& m : *actual)
        seen[m.name] = m.state == referee::MemberState::Ready   ? policy::Membership::In
                       : m.state == referee::MemberState::Drain ? policy::Membership::Draining
                                                                : policy::Membership::Out;
    for (const auto& name : dep()->assemblies) {
        auto it = seen.find(name);
        observed_.assemblies[name].referee =
            it == seen.end() ? policy::Membership::Out : it->second;
    }
    PCLOUD_LOG(Info, "Read the balancer's membership as the starting point",
               {{"deployable", cfg_.deployable}, {"members", std::to_string(actual->size())}});
}

void Reactor::fullState(const std::string& assembly, const std::vector<proto::UnitState>& units,
                        Millis now) {
    auto& oa = observed_.assemblies[assembly];
    const auto* a = model_.findAssembly(assembly);
    oa.services.clear();
    oa.hello_at = now;
    if (!a)
        return;
    for (const auto& u : units)
        for (const auto& r : a->resources)
            if (agentUnitFor(r) == u.unit)
                oa.services[r.name] = toObserved(u);
}

void Reactor::onReceiverEpoch(std::uint64_t epoch) {
    noteNewerEpoch(epoch, "A newer leader has acted on this deployable's hosts; fenced off");
}

void Reactor::noteNewerEpoch(std::uint64_t epoch, const char* why) {
    if (epoch <= observed_.receiver_epoch)
        return;
    observed_.receiver_epoch = epoch;
    if (epoch > cfg_.epoch)
        PCLOUD_LOG(Error, why,
                   {{"deployable", cfg_.deployable},
                    {"epoch", std::to_string(cfg_.epoch)},
                    {"receiver_epoch", std::to_string(epoch)}});
}

void Reactor::onObserverPaused(Millis gapMs) {
    observed_.observer_resumed_at = clock_.nowMs();
    observed_.observer_paused_ms = gapMs;
    PCLOUD_LOG(Warning, "dped was not running for a while; re-arming every deadline",
               {{"deployable", cfg_.deployable}, {"gap_ms", std::to_string(gapMs)}});
}

void Reactor::onReport(const std::string& assembly, const std::string& body, bool viaBus) {
    if (deaf_.count(assembly)) {
        PCLOUD_LOG(Debug, "Dropping a report from an agent whose domain is being destroyed",
                   {{"assembly", assembly}});
        return;
    }
    auto rep = proto::decodeReport(body);
    if (!rep) {
        PCLOUD_LOG(Warning, "Ignoring a malformed agent report",
                   {{"assembly", assembly}, {"error", rep.error().describe()}});
        return;
    }
    const auto* a = model_.findAssembly(assembly);
    if (auto* h = std::get_if<proto::Hello>(&rep->body)) {
        // A hello names its assembly; it must be the one whose address it came on (name or
        // uuid, any case), as the channel session checks for channel agents. Over the bus
        // only the address is authenticated (authz pins agent:A to pcloud.reports.A), so a
        // hello naming another assembly is a forgery or a misconfigured agent: drop it.
        auto lower = [](std::string s) {
            for (auto& c : s)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return s;
        };
        std::string named = lower(h->assembly);
        if (named != lower(assembly) && (!a || a->uuid.empty() || named != lower(a->uuid))) {
            if (hello_mismatch_logged_.insert(assembly).second)
                PCLOUD_LOG(Warning,
                           "Dropping a hello that names another assembly (logged once per "
                           "assembly)",
                           {{"assembly", assembly}, {"named", h->assembly}});
            return;
        }
    }
    Millis now = clock_.nowMs();
    auto& oa = observed_.assemblies[assembly];
    auto resourceOf = [&](const std::string& unit) -> std::string {
        if (!a)
            return {};
        for (const auto& r : a->resources)
            if (agentUnitFor(r) == unit)
                return r.name;
        return {};
    };
    auto setService = [&](const proto::UnitState& u) {
        std::string res = resourceOf(u.unit);
        if (!res.empty())
            oa.services[res] = toObserved(u);
    };
    bool wasConnected = last_report_.count(assembly) > 0;
    last_report_[assembly] = now;
    oa.agent_connected = true;
    oa.agent_via_bus = viaBus;
    if (auto* hb = std::get_if<proto::Heartbeat>(&rep->body)) {
        // The agent's hello usually comes first, so "first" is per agent connection.
        bool first = awaiting_heartbeat_.erase(assembly) > 0;
        if (first || !oa.last_heartbeat || !wasConnected)
            PCLOUD_LOG(Notice, "First heartbeat from the agent",
                       {{"assembly", assembly},
                        {"seq", std::to_string(hb->seq)},
                        {"mono_us", std::to_string(monoUs())}});
        oa.heartbeat_seq = hb->seq;
        oa.last_heartbeat = now;
    } else if (auto* u = std::get_if<proto::UnitState>(&rep->body)) {
        setService(*u);
    } else if (auto* h = std::get_if<proto::Hello>(&rep->body)) {
        PCLOUD_LOG(Notice, "Agent connected",
                   {{"assembly", assembly}, {"backend", h->backend}, {"boot_id", h->boot_id}});
        fullState(assembly, h->units, now);
        sendWatch(assembly);
    } else if (auto* r = std::get_if<proto::Reply>(&rep->body)) {
        if (auto pit = pending_pings_.find(r->id); pit != pending_pings_.end()) {
            const PendingPing& p = pit->second;
            json reply{{"v", 1}, {"type", "reply"}, {"id", p.request_id}};
            if (r->ok) {
                reply["ok"] = true;
                reply["result"] = {{"assembly", p.assembly},
                                   {"rtt_ms", clock_.monotonicMs() - p.sent_mono}};
            } else {
                reply = errorReply(p.request_id, r->error ? r->error->code : "agent-error",
                                   "agent refused the ping: " +
                                       (r->error ? r->error->message : std::string("?")));
            }
            finishPing(r->id, reply);
            return;
        }
        auto it = pending_cmds_.find(r->id);
        std::string what = it == pending_cmds_.end() ? assembly : it->second;
        if (it != pending_cmds_.end())
            pending_cmds_.erase(it);
        // A watch reply lists every watched unit: as good as a hello for judging the agent.
        if (r->ok && what == assembly + " watch" && r->result.is_object() &&
            r->result.contains("units") && r->result["units"].is_array()) {
            std::vector<proto::UnitState> units;
            for (const auto& uj : r->result["units"])
                if (auto u = proto::unitStateFromJson(uj))
                    units.push_back(*u);
            fullState(assembly, units, now);
        }
        if (!r->ok)
            PCLOUD_LOG(Warning, "Agent command failed; the engine's deadline will handle it",
                       {{"target", what},
                        {"id", r->id},
                        {"code", r->error ? r->error->code : ""},
                        {"error", r->error ? r->error->message : ""}});
        else
            PCLOUD_LOG(Info, "Agent command done", {{"target", what}, {"id", r->id}});
    }
}

Status Reactor::sendToAgent(const std::string& assembly, const proto::Command& c) {
    std::string body = proto::encodeCommand(c);
    if (cfg_.signer) {
        envelope::Fields f;
        f.target = "agent:" + assembly;
        f.action = proto::toString(c.type);
        f.msgtime = clock_.nowMs();
        f.ttl = cfg_.command_ttl;
        f.epoch = cfg_.epoch;
        auto signedBody = cfg_.signer->sign(f, body);
        if (!signedBody) // fail closed: an unsigned command would be refused anyway
            return makeError("cannot sign the command: " + signedBody.error().message);
        body = std::move(*signedBody);
    }
    return bus_.send("pcloud.agent." + assembly, body, {{"correlation-id", c.id}});
}

void Reactor::sendWatch(const std::string& assembly) {
    const auto* a = model_.findAssembly(assembly);
    if (!a)
        return;
    proto::Command c;
    c.type = proto::CommandType::Watch;
    c.id = assembly + "-watch-" + std::to_string(next_cmd_++);
    c.deadline = 10'000;
    for (const auto& r : a->resources) {
        std::string unit = agentUnitFor(r);
        c.units.push_back(unit);
        if (r.klass == model::ResourceClass::Process)
            c.commands[unit] = r.unit;
        if (r.probe)
            c.probes[unit] = *r.probe;
    }
    // The agent beats at the deployable's period, so heartbeat_timeout (checked here) and
    // the period are set in one place.
    if (const auto* d = dep())
        c.heartbeat_interval =
            std::clamp(d->heartbeat_interval, proto::kMinHeartbeatMs, proto::kMaxHeartbeatMs);
    pending_cmds_[c.id] = assembly + " watch";
    auto st = sendToAgent(assembly, c);
    if (!st)
        PCLOUD_LOG(Warning, "Could not send watch",
                   {{"assembly", assembly}, {"error", st.error().describe()}});
}

void Reactor::step() {
    expirePings();
    const auto* d = dep();
    if (!d)
        return;
    Millis now = clock_.nowMs();
    // Agent connected = a report within the heartbeat timeout.
    for (auto& [name, oa] : observed_.assemblies) {
        auto it = last_report_.find(name);
        oa.agent_connected = it != last_report_.end() && now - it->second <= d->heartbeat_timeout;
    }
    checkFrozen(now);
    auto decision =
        policy::decide(model_, cfg_.deployable, observed_, state_, now, jitter_, cfg_.tunables);
    state_ = std::move(decision.state);
    // Hand the referee its wish before acting: StopDomain/StartDomain wait on libvirt for
    // seconds, and a crashed member must be drained now, not after the restart.
    updateReferee();
    for (const auto& action : decision.actions)
        execute(action);
    persist();
    next_wake_ = decision.next_wake;
    // Look again when an agent's newest report gets too old to call it connected (once: an
    // expiry already past would make the loop spin).
    for (const auto& [name, t] : last_report_) {
        Millis expiry = t + d->heartbeat_timeout + 1;
        if (expiry > now && (!next_wake_ || expiry < *next_wake_))
            next_wake_ = expiry;
    }
    for (const auto& [id, p] : pending_pings_)
        if (!next_wake_ || p.deadline < *next_wake_)
            next_wake_ = p.deadline;
    // Look at the qemu process as soon as a heartbeat is overdue (checkFrozen).
    for (const auto& [name, oa] : observed_.assemblies) {
        if (!oa.last_heartbeat || oa.frozen || !pids_.count(name))
            continue;
        Millis check = *oa.last_heartbeat + frozenAfter() + 1;
        if (check > now && (!next_wake_ || check < *next_wake_))
            next_wake_ = check;
    }
    checkStopDone();
}

// The check is exact (the process is stopped or it is not), so a late heartbeat that
// triggers it for nothing costs one /proc read and never a drain: look as soon as the
// heartbeat is late by more than its usual jitter. Every millisecond here is traffic sent to
// a frozen guest (bench/failover "hang").
Millis Reactor::frozenAfter() const {
    const auto* d = dep();
    Millis interval = d ? d->heartbeat_interval : 1000;
    return interval + std::max<Millis>(20, interval / 10);
}

// The earliest sign of a frozen guest: its qemu process is stopped (SIGSTOP, a debugger), so
// no heartbeat can come. Checked only once a heartbeat is overdue, so a fleet costs one
// /proc read per late heartbeat. The engine drains a frozen assembly at once and fails it
// only at the heartbeat timeout; a qemu that runs again clears it.
void Reactor::checkFrozen(Millis now) {
    for (auto& [name, oa] : observed_.assemblies) {
        auto pit = pids_.find(name);
        if (pit == pids_.end() || oa.domain != policy::DomainState::Running || oa.qemu_exited) {
            oa.frozen = false;
            oa.starved_ms = 0;
            starve_.erase(name);
            continue;
        }
        bool overdue = oa.last_heartbeat && now - *oa.last_heartbeat > frozenAfter();
        if (!overdue) {
            oa.starved_ms = 0;
            starve_.erase(name);
        } else if (auto waits = watch_.runQueueWaits(pit->second)) {
            // The first look at an overdue heartbeat is the baseline; later looks measure how
            // long the host has kept the qemu from running since (the policy credits it).
            auto& s = starve_[name];
            if (s.heartbeat != *oa.last_heartbeat || s.waits.empty()) {
                s = {*oa.last_heartbeat, std::move(*waits)};
                oa.starved_ms = 0;
            } else {
                Millis starved = virt::maxWaitGrowthMs(s.waits, *waits);
                const Millis notable = dep() ? dep()->heartbeat_timeout / 2 : 1'000;
                if (starved >= notable && oa.starved_ms < notable) // once per starvation
                    PCLOUD_LOG(Warning, "The host keeps the guest's qemu from running",
                               {{"assembly", name},
                                {"pid", std::to_string(pit->second)},
                                {"starved_ms", std::to_string(starved)},
                                {"heartbeat_age_ms", std::to_string(now - *oa.last_heartbeat)}});
                oa.starved_ms = starved;
            }
        }
        if (!overdue && !oa.frozen)
            continue;
        bool stopped = watch_.processStopped(pit->second).value_or(false);
        if (stopped && !oa.frozen)
            PCLOUD_LOG(Warning, "qemu is stopped; draining the assembly",
                       {{"assembly", name},
                        {"pid", std::to_string(pit->second)},
                        {"heartbeat_age_ms", std::to_string(now - *oa.last_heartbeat)},
                        {"mono_us", std::to_string(monoUs())}});
        else if (!stopped && oa.frozen)
            PCLOUD_LOG(Notice, "qemu runs again", {{"assembly", name}});
        oa.frozen = stopped;
    }
}

void Reactor::updateReferee() {
    if (!referee_)
        return;
    if (state_.deployable.fenced_by != 0) {
        if (last_members_)
            referee_->hold();
        last_members_.reset(); // the fence's end hands the referee the set again
        return;
    }
    auto members = desiredMembers(model_, cfg_.deployable, state_);
    if (!last_members_ || *last_members_ != members) {
        last_members_ = members;
        referee_->setDesired(members);
    }
}

void Reactor::execute(const policy::Action& action) {
    switch (action.kind) {
    case ActionKind::EmitEvent:
        emitEvent(action.assembly, action.service, action.state, action.reason, action.cause_id);
        break;
    case ActionKind::StartDomain:
        startDomain(action);
        break;
    case ActionKind::StopDomain:
        stopDomain(action);
        break;
    case ActionKind::ShutdownDomain:
        shutdownDomain(action);
        break;
    case ActionKind::RestartService:
    case ActionKind::StartService:
    case ActionKind::StopService:
        serviceCommand(action);
        break;
    case ActionKind::MarkFailed:
    case ActionKind::Escalate:
        PCLOUD_LOG(Warning, "Policy decision",
                   {{"action", policy::describe(action, cfg_.deployable)}});
        break;
    case ActionKind::RefereeDrain:
    case ActionKind::RefereeRemove:
    case ActionKind::RefereeAdd:
        // The membership is applied by level after the decision (desiredMembers()).
        PCLOUD_LOG(Info, "Referee change", {{"action", policy::describe(action, cfg_.deployable)}});
        break;
    }
}

void Reactor::jobQueued(const std::string& assembly, const std::string& what) {
    jobs_inflight_[assembly].push_back(what);
    auto& oa = observed_.assemblies[assembly];
    oa.domain = policy::DomainState::Unknown;
    oa.qemu_exited = false; // about the qemu being replaced; the new one is watched afresh
    oa.suspect = false;
}

void Reactor::jobDone(const std::string& assembly) {
    auto it = jobs_inflight_.find(assembly);
    if (it == jobs_inflight_.end())
        return;
    if (!it->second.empty())
        it->second.erase(it->second.begin());
    if (!it->second.empty())
        return;
    jobs_inflight_.erase(it);
    refreshDomain(assembly);
}

std::string Reactor::imageDomainFor(const model::Assembly& a, std::optional<std::string>& xml) {
    if (auto st = store::checkImagePath(a.image, cfg_.host); !st)
        return st.error().message;
    char buf[256] = {};
    std::string here = ::gethostname(buf, sizeof buf - 1) == 0 ? buf : "localhost";
    if (!a.host.empty())
        here = a.host + " (" + here + ")";
    if (auto st = store::imageExists(a.image, here); !st)
        return st.error().message;
    auto gen = store::imageDomainXml(a, ::access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "qemu");
    if (!gen)
        return gen.error().message;
    if (auto st = store::checkDomainXml(*gen, cfg_.host); !st)
        return st.error().message;
    (void)fs::makeDirs(cfg_.state_dir + "/channels", 0700);
    auto x = virt::injectAgentChannel(*gen, channelPath(a), a.uuid, "assembly " + a.name);
    if (!x)
        return x.error().describe();
    xml = std::move(*x);
    return {};
}

void Reactor::startDomain(const policy::Action& action) {
    const auto* a = model_.findAssembly(action.assembly);
    if (!a)
        return;
    std::string name = domainNameFor(*a);
    std::optional<std::string> xml;
    std::string xmlError;
    // Checked again here, not only by cped: the store file may have been edited by hand.
    if (auto st =
            a->domain_xml.empty() ? Status{} : store::checkDomainXml(a->domain_xml, cfg_.host);
        !st) {
        xmlError = st.error().message;
    } else if (!a->domain_xml.empty()) {
        (void)fs::makeDirs(cfg_.state_dir + "/channels", 0700);
        auto x = virt::injectAgentChannel(a->domain_xml, channelPath(*a), a->uuid,
                                          "assembly " + a->name);
        if (x)
            xml = std::move(*x);
        else
            xmlError = x.error().describe();
    } else if (!a->image.empty()) {
        // An assembly from an image (assembly_create --image, Pacemaker Cloud files): its
        // domain XML is generated here, on the host that runs it, which is this one until
        // pcloud-node exists (docs/hosts.md).
        xmlError = imageDomainFor(*a, xml);
    }
    struct Outcome {
        bool adopted = false;
        std::optional<Status> started;
    };
    auto out = std::make_shared<Outcome>();
    virt::Hypervisor* hv = &hv_;
    jobQueued(a->name, "start");
    jobs_.run(
        a->name,
        [hv, name, xml, out] {
            // Never start a second instance of a domain that is really running.
            auto info = hv->lookup(name);
            if (info && info->state == virt::DomainState::Running) {
                out->adopted = true;
                return;
            }
            if (!xml)
                return;
            auto started = hv->defineAndStart(*xml);
            out->started = started ? Status::success() : Status(started.error());
        },
        [this, assembly = a->name, name, hasXml = !a->domain_xml.empty() || !a->image.empty(),
         xmlError, out, cause = action.cause_id] {
            if (out->adopted) {
                PCLOUD_LOG(Notice, "Domain already running; adopting it", {{"assembly", assembly}});
            } else if (!hasXml) {
                emitEvent(assembly, "", "error",
                          "cannot start: the assembly has no domain XML (set one with "
                          "assembly_create)",
                          cause);
            } else if (!xmlError.empty()) {
                emitEvent(assembly, "", "error", "bad domain XML: " + xmlError, cause);
            } else if (out->started && !out->started->ok()) {
                const auto& err = out->started->error();
                PCLOUD_LOG(Error, "libvirt refused to start the domain",
                           {{"assembly", assembly}, {"error", err.describe()}});
                emitEvent(assembly, "", "error", "libvirt rejected the domain: " + err.describe(),
                          cause);
                // The engine fails this attempt now and retries after the backoff.
                auto& oa = observed_.assemblies[assembly];
                oa.start_failed_at = clock_.nowMs();
                oa.start_error = err.message;
            } else if (out->started) {
                PCLOUD_LOG(Notice, "Domain started",
                           {{"assembly", assembly}, {"domain", name}, {"cause_id", cause}});
            }
            jobDone(assembly);
        });
}

void Reactor::stopDomain(const policy::Action& action) {
    const auto* a = model_.findAssembly(action.assembly);
    if (!a)
        return;
    if (pids_.erase(a->name))
        watch_.unwatchPid(a->name);
    agentGone(observed_.assemblies[a->name], a->name);
    deaf_.insert(a->name);
    auto result = std::make_shared<Status>(Status::success());
    virt::Hypervisor* hv = &hv_;
    jobQueued(a->name, "destroy");
    jobs_.run(
        a->name, [hv, name = domainNameFor(*a), result] { *result = hv->destroy(name); },
        [this, assembly = a->name, result, cause = action.cause_id] {
            if (!result->ok()) {
                PCLOUD_LOG(Warning, "Domain destroy failed",
                           {{"assembly", assembly}, {"error", result->error().describe()}});
            } else {
                PCLOUD_LOG(Notice, "Domain destroyed",
                           {{"assembly", assembly}, {"cause_id", cause}});
            }
            deaf_.erase(assembly);
            // Whatever the agent said while its VM was being killed is void.
            agentGone(observed_.assemblies[assembly], assembly);
            jobDone(assembly);
        });
}

// Graceful: only asks the guest (libvirt returns at once). The agent keeps reporting while
// its guest shuts down, and the qemu pid stays watched: its exit is the proof of the stop.
// The engine destroys the domain if it has not stopped by the deployable's stop_timeout.
void Reactor::shutdownDomain(const policy::Action& action) {
    const auto* a = model_.findAssembly(action.assembly);
    if (!a)
        return;
    auto result = std::make_shared<Status>(Status::success());
    virt::Hypervisor* hv = &hv_;
    bool exited = observed_.assemblies[a->name].qemu_exited;
    jobQueued(a->name, "shutdown");
    observed_.assemblies[a->name].qemu_exited = exited; // the same qemu, still watched
    jobs_.run(
        a->name, [hv, name = domainNameFor(*a), result] { *result = hv->shutdown(name); },
        [this, assembly = a->name, result, cause = action.cause_id] {
            if (!result->ok()) {
                PCLOUD_LOG(Warning,
                           "Domain shutdown request failed; destroy follows at the "
                           "stop timeout",
                           {{"assembly", assembly}, {"error", result->error().describe()}});
            } else {
                PCLOUD_LOG(Notice, "Domain shutdown requested",
                           {{"assembly", assembly}, {"cause_id", cause}});
            }
            jobDone(assembly);
        });
}

void Reactor::serviceCommand(const policy::Action& action) {
    const auto* a = model_.findAssembly(action.assembly);
    if (!a)
        return;
    const auto* r = a->findResource(action.service);
    if (!r)
        return;
    proto::Command c;
    c.type = action.kind == ActionKind::RestartService ? proto::CommandType::Restart
             : action.kind == ActionKind::StartService ? proto::CommandType::Start
                                                       : proto::CommandType::Stop;
    c.id = a->name + "-" + std::to_string(next_cmd_++);
    c.deadline = cfg_.tunables.service_start_deadline;
    c.unit = agentUnitFor(*r);
    pending_cmds_[c.id] = a->name + "/" + r->name;
    if (pending_cmds_.size() > 1000)
        pending_cmds_.erase(pending_cmds_.begin());
    auto st = sendToAgent(a->name, c);
    PCLOUD_LOG(Notice, "Agent command sent",
               {{"assembly", a->name},
                {"service", r->name},
                {"command", proto::toString(c.type)},
                {"id", c.id},
                {"cause_id", action.cause_id},
                {"sent", st ? "yes" : st.error().message}});
}

void Reactor::emitEvent(const std::string& assembly, const std::string& service,
                        const std::string& state, const std::string& reason,
                        const std::string& cause) {
    events::Event e;
    e.time = clock_.nowMs();
    e.deployable = cfg_.deployable;
    e.assembly = assembly;
    if (!service.empty())
        e.service = service;
    e.state = state;
    e.reason = reason;
    e.cause_id = cause;
    PCLOUD_LOG(Notice, "Event",
               {{"deployable", cfg_.deployable},
                {"assembly", assembly},
                {"service", service},
                {"state", state},
                {"reason", reason},
                {"cause_id", cause}});
    auto st = bus_.send("pcloud.journal", events::toJson(e).dump());
    if (!st)
        PCLOUD_LOG(Warning, "Could not queue an event", {{"error", st.error().describe()}});
}

void Reactor::persist() {
    if (persisted_ && *persisted_ == state_)
        return;
    std::string path = escalationPath(cfg_.state_dir, cfg_.deployable);
    auto st = fs::writeAtomic(path, policy::toJson(state_).dump(1) + "\n");
    if (!st) {
        PCLOUD_LOG(Error,
                   "Could not persist escalation state; failure history would be lost "
                   "on restart",
                   {{"file", path}, {"error", st.error().describe()}});
        return;
    }
    persisted_ = state_;
}

void Reactor::checkStopDone() {
    if (!stop_requested_ || finished_)
        return;
    if (!jobs_inflight_.empty())
        return; // a destroy is still under way
    for (const auto& [name, oa] : observed_.assemblies) {
        if (oa.domain == policy::DomainState::Running || oa.domain == policy::DomainState::Paused)
            return;
    }
    finished_ = true;
    emitEvent("", "", "stopped", "deployable stopped (planned)", "");
}

nlohmann::json Reactor::statusJson() const {
    Millis now = clock_.nowMs();
    json out;
    out["deployable"] = cfg_.deployable;
    out["epoch"] = cfg_.epoch;
    if (state_.deployable.fenced_by != 0)
        out["fenced_by"] = state_.deployable.fenced_by; // a node's newer epoch: not acting
    std::string st = observed_.desired == policy::DesiredState::Stopped
                         ? (finished_ ? "stopped" : "stopping")
                         : (state_.deployable.outcome_applied ? "failed" : "running");
    if (!observed_.infra_ok)
        st = "infrastructure-down";
    out["state"] = st;
    json list = json::array();
    const auto* d = dep();
    if (d) {
        for (const auto& name : d->assemblies) {
            const auto* a = model_.findAssembly(name);
            static const policy::ObservedAssembly kNone;
            static const policy::AssemblyTrack kNoTrack;
            auto oit = observed_.assemblies.find(name);
            const auto& oa = oit == observed_.assemblies.end() ? kNone : oit->second;
            auto tit = state_.assemblies.find(name);
            const auto& at = tit == state_.assemblies.end() ? kNoTrack : tit->second;
            json j;
            j["name"] = name;
            j["domain"] = oa.qemu_exited ? "crashed" : policy::toString(oa.domain);
            j["agent"] = oa.agent_connected ? "connected" : "disconnected";
            j["heartbeat_age_ms"] =
                oa.last_heartbeat ? json(now - *oa.last_heartbeat) : json(nullptr);
            j["heartbeat_seq"] = oa.heartbeat_seq;
            j["phase"] = policy::toString(at.phase);
            if (auto jit = jobs_inflight_.find(name); jit != jobs_inflight_.end())
                j["libvirt_jobs"] = jit->second; // e.g. ["destroy", "start"] mid-restart
            json svcs = json::array();
            if (a) {
                for (const auto& r : a->resources) {
                    json s{{"name", r.name}};
                    auto sit = oa.services.find(r.name);
                    if (sit == oa.services.end()) {
                        s["state"] = "unknown";
                        s["ready"] = false;
                    } else {
                        s["state"] = sit->second.raw.empty() ? policy::toString(sit->second.state)
                                                             : sit->second.raw;
                        bool active = sit->second.state == policy::ServiceState::Active;
                        s["ready"] = active && sit->second.probe_ready.value_or(true);
                    }
                    svcs.push_back(std::move(s));
                }
            }
            j["services"] = std::move(svcs);
            model::Escalation esc = a ? a->escalation : model::Escalation{};
            int used = 0;
            for (Millis f : at.recovery.failures)
                if (esc.period == model::kUnlimitedPeriod || f > now - esc.period)
                    ++used;
            j["failures"] = {{"used", used}, {"budget", esc.failures}, {"period_ms", esc.period}};
            j["backoff_remaining_ms"] =
                at.phase == policy::Phase::RestartPending && at.due && *at.due > now ? *at.due - now
                                                                                     : 0;
            // No load balancer configured: "out" would read as "drained"; say there is none.
            j["referee"] = d->referee.driver.empty() ? std::string("none")
                                                     : std::string(policy::toString(at.membership));
            list.push_back(std::move(j));
        }
    }
    out["assemblies"] = std::move(list);
    return out;
}

std::string Reactor::onCommand(const std::string& body, const std::string& correlationId) {
    auto j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return errorReply(correlationId, "malformed", "request body is not a JSON object").dump();
    std::string id = j.value("id", correlationId);
    if (!j.contains("command") || !j["command"].is_string())
        return errorReply(id, "bad-field", "missing string field 'command'").dump();
    std::string cmd = j["command"];
    json reply{{"v", 1}, {"type", "reply"}, {"id", id}, {"ok", true}};
    if (cmd == "status") {
        reply["result"] = statusJson();
    } else if (cmd == "reload") {
        std::vector<Error> warnings;
        auto m = store::loadModel(cfg_.state_dir, &warnings);
        if (!m)
            return errorReply(id, "config", m.error().describe()).dump();
        if (!m->findDeployable(cfg_.deployable))
            return errorReply(id, "not-found",
                              "deployable '" + cfg_.deployable + "' is no longer in the model")
                .dump();
        model_ = std::move(*m);
        for (const auto& name : dep()->assemblies)
            if (const auto* a = model_.findAssembly(name))
                subscribeReports(*a);
        for (auto it = observed_.assemblies.begin(); it != observed_.assemblies.end();) {
            const auto& names = dep()->assemblies;
            if (std::find(names.begin(), names.end(), it->first) == names.end())
                it = observed_.assemblies.erase(it);
            else
                ++it;
        }
        refreshAll();
        PCLOUD_LOG(Notice, "Model reloaded", {{"deployable", cfg_.deployable}});
        emitEvent("", "", "reloaded", "model reloaded", "");
        step();
        reply["result"] = {{"reloaded", true}};
    } else if (cmd == "stop") {
        observed_.desired = policy::DesiredState::Stopped;
        stop_requested_ = true;
        PCLOUD_LOG(Notice, "Planned stop requested", {{"deployable", cfg_.deployable}});
        step();
        reply["result"] = {{"state", finished_ ? "stopped" : "stopping"}};
    } else if (cmd == "start") {
        observed_.desired = policy::DesiredState::Running;
        stop_requested_ = false;
        finished_ = false;
        step();
        reply["result"] = {{"state", "running"}};
    } else if (cmd == "ping") {
        return errorReply(id, "bad-field", "ping must arrive as a bus request with a reply address")
            .dump();
    } else if (cmd == "epoch") {
        return raiseEpoch(j, id).dump();
    } else if (cmd == "fence") {
        return fence(j, id).dump();
    } else {
        return errorReply(id, "unknown-command",
                          "unknown command '" + cmd +
                              "' (status, reload, stop, start, ping, epoch, fence)")
            .dump();
    }
    return reply.dump();
}

namespace {

// args.epoch of an "epoch" or "fence" request: a whole number from 1 to kMaxEpoch.
std::optional<std::uint64_t> epochArg(const json& request) {
    json args = request.value("args", json::object());
    const json* e = args.is_object() && args.contains("epoch") ? &args["epoch"] : nullptr;
    if (!e || !e->is_number_unsigned() || e->get<std::uint64_t>() == 0 ||
        e->get<std::uint64_t>() > policy::kMaxEpoch)
        return std::nullopt;
    return e->get<std::uint64_t>();
}

std::string epochArgError(const std::string& command) {
    return command + " needs args.epoch, a whole number from 1 to " +
           std::to_string(policy::kMaxEpoch);
}

} // namespace

// Only cped may send to pcloud.dped.<name> (bus/authz.h): the raise comes from a cped that
// has become the leader and adopted this dped, or that leads again with a newer epoch.
json Reactor::raiseEpoch(const json& request, const std::string& id) {
    const auto arg = epochArg(request);
    if (!arg)
        return errorReply(id, "bad-field", epochArgError("epoch"));
    const std::uint64_t epoch = *arg;
    const std::uint64_t before = cfg_.epoch;
    auto c = policy::checkEpoch(before, epoch);
    if (!c.accepted()) {
        PCLOUD_LOG(Warning, "Refused to lower the leadership epoch",
                   {{"deployable", cfg_.deployable},
                    {"epoch", std::to_string(before)},
                    {"asked", std::to_string(epoch)}});
        return errorReply(id, "stale-epoch",
                          "refused to lower the epoch: " +
                              policy::staleEpochMessage(epoch, before, "dped " + cfg_.deployable));
    }
    json reply{{"v", 1}, {"type", "reply"}, {"id", id}, {"ok", true}};
    if (c.verdict == policy::EpochVerdict::Raise) {
        cfg_.epoch = c.floor;
        observed_.epoch = cfg_.epoch; // lifts a fence by an epoch up to this one
        if (cfg_.epoch_raised)
            cfg_.epoch_raised(cfg_.epoch);
        PCLOUD_LOG(Notice, "Leadership epoch raised; the next commands carry it",
                   {{"deployable", cfg_.deployable},
                    {"from", std::to_string(before)},
                    {"to", std::to_string(cfg_.epoch)}});
        step(); // a fence this epoch reaches lifts now, not at the next observation
    }
    reply["result"] = {{"epoch", cfg_.epoch}, {"previous", before}};
    return reply;
}

// cped stepped down (its lease is gone): whoever leads next leads with a higher epoch than
// the one this dped acts under, so cped names its own epoch + 1 and this dped stops acting
// at once rather than at its first command that a newer leader's node refuses. The request
// is signed at cped's epoch like any other (openSignedRequest), so only this dped's own
// cped, at an epoch this dped accepts, can fence it. A fence at or below this dped's epoch
// (a late one, after a raise) changes nothing; the reply says whether it holds.
json Reactor::fence(const json& request, const std::string& id) {
    const auto epoch = epochArg(request);
    if (!epoch)
        return errorReply(id, "bad-field", epochArgError("fence"));
    noteNewerEpoch(*epoch, "This dped's cped stepped down; fenced off until it leads again");
    step();
    json reply{{"v", 1}, {"type", "reply"}, {"id", id}, {"ok", true}};
    reply["result"] = {{"epoch", cfg_.epoch}, {"fenced_by", state_.deployable.fenced_by}};
    return reply;
}

std::optional<std::string> Reactor::onRequest(const bus::Message& m) {
    std::string body = m.body;
    if (cfg_.request_trust) {
        auto opened = openSignedRequest(m);
        if (auto* refusal = std::get_if<json>(&opened))
            return refusal->dump();
        body = std::move(std::get<std::string>(opened));
    } else if (auto p = envelope::parse(m.body); std::holds_alternative<envelope::Parsed>(p)) {
        body = std::move(std::get<envelope::Parsed>(p).body); // no CA: only unwrapped
    }
    auto j = json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("command") && j["command"] == "ping")
        return startPing(j, j.value("id", m.correlationId), m);
    return onCommand(body, m.correlationId);
}

std::variant<std::string, json> Reactor::openSignedRequest(const bus::Message& m) {
    auto refuse = [&](const std::string& id, const std::string& code, const std::string& why,
                      const std::string& sender) {
        PCLOUD_LOG(Warning, "Refused a request that failed verification",
                   {{"deployable", cfg_.deployable},
                    {"id", id},
                    {"code", code},
                    {"sender", sender},
                    {"reason", why}});
        return errorReply(id, code, why);
    };
    auto v = envelope::verify(m.body, *cfg_.request_trust, clock_.nowMs(), request_replay_);
    if (auto* r = std::get_if<envelope::Rejection>(&v))
        return refuse(envelope::replyIdOf(m.body, *r, m.correlationId), envelope::toString(r->code),
                      r->message, r->sender);
    auto& ok = std::get<envelope::Verified>(v);
    const auto& f = ok.fields;
    auto j = json::parse(ok.body, nullptr, false);
    std::string id = m.correlationId, command;
    if (j.is_object()) {
        if (auto it = j.find("id"); it != j.end() && it->is_string())
            id = it->get<std::string>();
        if (auto it = j.find("command"); it != j.end() && it->is_string())
            command = it->get<std::string>();
    }
    if (Status action = envelope::actionIsCommand(f, command); !action)
        return refuse(id, "bad-field", action.error().message, f.sender);
    if (f.sender.rfind("cped:", 0) == 0) {
        if (!policy::checkEpoch(cfg_.epoch, f.epoch).accepted())
            return refuse(id, "stale-epoch",
                          policy::staleEpochMessage(f.epoch, cfg_.epoch, "dped " + cfg_.deployable),
                          f.sender);
        // A cped runs on this host, so one clock: a command it signed while leading a zone
        // is valid for as long as no newer leader can have acted (its ttl, docs/ha.md
        // "Epoch fencing", 7). Past that, without the skew every receiver allows for other
        // hosts' clocks, it may be a resumed old leader's and is not run.
        if (const Millis now = clock_.nowMs(); now > f.msgtime + f.ttl)
            return refuse(id, "expired",
                          "signed " + std::to_string(now - f.msgtime) +
                              " ms ago, past its ttl of " + std::to_string(f.ttl) +
                              " ms: its sender's term may have ended and a newer leader acted",
                          f.sender);
        // The audit trail of what each leader made this dped do: the zone's history check
        // (tests/etcd/zone_ha_test.cc) reads it to prove no two leaders' commands overlap.
        PCLOUD_LOG(Info, "Accepted a command",
                   {{"deployable", cfg_.deployable},
                    {"id", id},
                    {"command", command},
                    {"sender", f.sender},
                    {"epoch", std::to_string(f.epoch)}});
    }
    return std::move(ok.body);
}

std::optional<std::string> Reactor::startPing(const json& request, const std::string& id,
                                              const bus::Message& m) {
    json args = request.value("args", json::object());
    if (!args.is_object())
        return errorReply(id, "bad-field", "'args' must be an object").dump();
    if (!args.contains("assembly") || !args["assembly"].is_string())
        return errorReply(id, "bad-field", "ping needs args.assembly (a string)").dump();
    std::string assembly = args["assembly"];
    const auto* d = dep();
    if (!d ||
        std::find(d->assemblies.begin(), d->assemblies.end(), assembly) == d->assemblies.end())
        return errorReply(id, "not-found",
                          "assembly '" + assembly + "' is not in deployable '" + cfg_.deployable +
                              "'")
            .dump();
    Millis timeout = 2'000;
    if (args.contains("timeout_ms")) {
        if (!args["timeout_ms"].is_number_integer())
            return errorReply(id, "bad-field", "args.timeout_ms must be an integer").dump();
        timeout = args["timeout_ms"].get<Millis>();
    }
    if (timeout <= 0 || timeout > 60'000)
        return errorReply(id, "bad-field", "args.timeout_ms must be 1..60000").dump();
    if (m.replyTo.empty())
        return errorReply(id, "bad-field", "ping must arrive as a bus request with a reply address")
            .dump();
    proto::Command c;
    c.type = proto::CommandType::Ping;
    c.id = assembly + "-ping-" + std::to_string(next_cmd_++);
    c.deadline = timeout;
    PendingPing p;
    p.reply_to = m.replyTo;
    p.correlation_id = m.correlationId.empty() ? id : m.correlationId;
    p.request_id = id;
    p.assembly = assembly;
    p.timeout = timeout;
    p.deadline = clock_.nowMs() + timeout;
    p.sent_mono = clock_.monotonicMs();
    auto st = sendToAgent(assembly, c);
    if (!st)
        return errorReply(id, "unavailable", "could not send the ping: " + st.error().describe())
            .dump();
    PCLOUD_LOG(Info, "Ping sent",
               {{"assembly", assembly}, {"id", c.id}, {"timeout_ms", std::to_string(timeout)}});
    pending_pings_[c.id] = std::move(p);
    return std::nullopt;
}

void Reactor::finishPing(const std::string& pingId, const json& reply) {
    auto it = pending_pings_.find(pingId);
    if (it == pending_pings_.end())
        return;
    PendingPing p = std::move(it->second);
    pending_pings_.erase(it);
    auto st = bus_.reply(p.reply_to, p.correlation_id, reply.dump());
    if (!st)
        PCLOUD_LOG(Warning, "Could not send the ping reply",
                   {{"assembly", p.assembly}, {"error", st.error().describe()}});
}

void Reactor::expirePings() {
    Millis now = clock_.nowMs();
    std::vector<std::string> expired;
    for (const auto& [id, p] : pending_pings_)
        if (now >= p.deadline)
            expired.push_back(id);
    for (const auto& id : expired) {
        const PendingPing& p = pending_pings_.at(id);
        PCLOUD_LOG(Info, "Ping timed out", {{"assembly", p.assembly}, {"id", id}});
        finishPing(id, errorReply(p.request_id, "timeout",
                                  "no reply within " + std::to_string(p.timeout) + " ms"));
    }
}

} // namespace pcloud::dped
