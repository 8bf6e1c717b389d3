#include "policy/hosts.h"

#include "common/time_format.h"
#include "model/model_json.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace pcloud::policy::hosts {

using model::HostState;
using nlohmann::json;

namespace {

std::string secs(Millis ms) {
    return formatDuration(ms);
}

std::string joinNames(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v)
        s += (s.empty() ? "" : ",") + x;
    return s;
}

int vcpusOf(const model::Assembly& a) {
    return a.vcpus > 0 ? a.vcpus : 1;
}

class Decider {
public:
    Decider(const model::Model& m, const HostObserved& o, const HostLayerState& s, Millis now,
            const HostTunables& t)
        : m_(m), o_(o), now_(now), t_(t) {
        d_.state = s;
    }

    HostDecision run() {
        auto& st = d_.state;
        // Hosts removed from the model are forgotten; new ones start up, as of now.
        for (auto it = st.hosts.begin(); it != st.hosts.end();)
            it = m_.hosts.count(it->first) ? std::next(it) : st.hosts.erase(it);
        for (auto it = st.assemblies.begin(); it != st.assemblies.end();)
            it = m_.assemblies.count(it->first) ? std::next(it) : st.assemblies.erase(it);

        if (!o_.bus_ok && !st.bus_down) {
            st.bus_down = true;
            hostEvent("", "bus-down",
                      "the hub is unreachable, so node heartbeats cannot arrive: no host is "
                      "judged until it is back",
                      "");
        } else if (o_.bus_ok && st.bus_down) {
            st.bus_down = false;
            st.bus_recovered_at = now_;
            hostEvent("", "bus-up", "the hub is back: node heartbeat ages restart now", "");
        }
        // Evidence counts from the latest of: observer start, observer resume, bus recovery.
        // Before that the observer could not have heard anything, so silence proves nothing.
        for (const auto& t : {o_.observer_since, o_.observer_resumed_at, st.bus_recovered_at})
            if (t && (!floor_ || *t > *floor_))
                floor_ = t;

        for (const auto& [name, host] : m_.hosts)
            judgeHost(name, host);
        for (const auto& [name, _] : m_.hosts)
            relocateFrom(name);
        for (const auto& [a, at] : o_.budget_exhausted)
            budgetOutcome(a, at);
        // A relocation is done once the assembly is seen on its new host.
        for (auto& [a, at] : st.assemblies) {
            auto p = o_.placement.find(a);
            if (!at.moving_to.empty() && p != o_.placement.end() && p->second == at.moving_to) {
                at.moving_to.clear();
                at.moving_from.clear();
                at.moving_since.reset();
            }
        }
        return std::move(d_);
    }

private:
    const model::Model& m_;
    const HostObserved& o_;
    Millis now_;
    const HostTunables& t_;
    HostDecision d_;
    std::optional<Millis> floor_;
    std::map<std::string, std::string> pending_; // relocations issued in this call

    void wake(Millis at) {
        if (at > now_ && (!d_.next_wake || at < *d_.next_wake))
            d_.next_wake = at;
    }
    void push(HostAction a) { d_.actions.push_back(std::move(a)); }
    void hostEvent(const std::string& host, const std::string& state, const std::string& reason,
                   const std::string& cause) {
        HostAction a;
        a.host = host;
        a.state = state;
        a.reason = reason;
        a.cause_id = cause;
        push(a);
    }
    void assemblyEvent(const std::string& assembly, const std::string& state,
                       const std::string& reason, const std::string& cause) {
        HostAction a;
        a.assembly = assembly;
        a.state = state;
        a.reason = reason;
        a.cause_id = cause;
        push(a);
    }
    void alert(const std::string& host, const std::string& assembly, const std::string& reason,
               const std::string& cause) {
        HostAction a;
        a.kind = HostActionKind::Alert;
        a.host = host;
        a.assembly = assembly;
        a.reason = reason;
        a.cause_id = cause;
        push(a);
    }

    // Age of a signal, counted from the evidence floor; nullopt = never heard, no floor.
    std::optional<Millis> since(std::optional<Millis> t) const {
        if (floor_ && (!t || *t < *floor_))
            return floor_;
        return t;
    }

    std::vector<std::string> placedOn(const std::string& host) const {
        std::vector<std::string> out;
        for (const auto& [a, h] : o_.placement)
            if (h == host && m_.assemblies.count(a))
                out.push_back(a);
        return out;
    }

    void setState(HostTrack& ht, HostState s) {
        ht.state = s;
        ht.since = now_;
    }

    void judgeHost(const std::string& name, const model::Host& host) {
        HostTrack& ht = d_.state.hosts[name];
        const bool inFencingFlow = ht.state == HostState::Suspect ||
                                   ht.state == HostState::Fencing || ht.state == HostState::Fenced;
        // Maintenance is the operator's: not judged. It cannot be turned on for a host the
        // layer is fencing (host_maintenance refuses), and the flow is never cut short.
        if (host.state == HostState::Maintenance && !inFencingFlow) {
            if (ht.state != HostState::Maintenance)
                setState(ht, HostState::Maintenance);
            return;
        }
        if (ht.state == HostState::Maintenance)
            setState(ht, HostState::Up);

        static const HostSignals none;
        auto sit = o_.hosts.find(name);
        const HostSignals& sig = sit == o_.hosts.end() ? none : sit->second;
        const auto nodeSince = since(sig.node_heartbeat);
        const bool nodeHeard = nodeSince && now_ - *nodeSince <= t_.node_timeout;
        if (nodeHeard)
            wake(*nodeSince + t_.node_timeout + 1);
        const bool judging = o_.bus_ok;

        // Other evidence that the host itself is alive.
        std::vector<std::string> agentsHeard;
        for (const auto& a : placedOn(name)) {
            auto hb = o_.agent_heartbeats.find(a);
            if (hb == o_.agent_heartbeats.end())
                continue;
            const auto* owner = m_.owner(a);
            const Millis timeout = owner ? owner->heartbeat_timeout : t_.node_timeout;
            const auto s = since(hb->second);
            if (s && now_ - *s <= timeout) {
                agentsHeard.push_back(a);
                wake(*s + timeout + 1);
            }
        }
        const bool libvirtAlive = sig.libvirt_alive.value_or(false);

        switch (ht.state) {
        case HostState::Up:
        case HostState::Down:
        case HostState::Maintenance:
            if (nodeHeard) {
                if (ht.state == HostState::Down) {
                    setState(ht, HostState::Up);
                    hostEvent(name, "up", "node heard again", ht.cause_id);
                }
                return;
            }
            if (!judging || ht.state == HostState::Down)
                return;
            setState(ht, HostState::Suspect);
            ht.cause_id = "host:" + name + "@" + std::to_string(now_);
            ht.node_restart_requested = false;
            hostEvent(name, "suspect",
                      "node " + host.node + " silent" +
                          (nodeSince ? " for " + secs(now_ - *nodeSince) : std::string()) +
                          " (timeout " + secs(t_.node_timeout) + ")",
                      ht.cause_id);
            [[fallthrough]];
        case HostState::Suspect: {
            if (nodeHeard) {
                setState(ht, HostState::Up);
                hostEvent(name, "up", "node heard again: not a host failure", ht.cause_id);
                return;
            }
            if (!judging)
                return;
            if (!agentsHeard.empty() || libvirtAlive) {
                // The host answers, its node does not: a dead node process. Relocating would
                // start a second copy of VMs that still run.
                if (!ht.node_restart_requested) {
                    ht.node_restart_requested = true;
                    std::string why = !agentsHeard.empty()
                                          ? "agents of " + joinNames(agentsHeard) + " still heard"
                                          : std::string("libvirt connection to it alive");
                    HostAction r;
                    r.kind = HostActionKind::RestartNode;
                    r.host = name;
                    r.cause_id = ht.cause_id;
                    push(r);
                    alert(name, "",
                          "node " + host.node + " silent but " + why +
                              ": the node process died, not the host; restarting it, "
                              "relocating nothing",
                          ht.cause_id);
                }
                return;
            }
            if (now_ - ht.since < t_.fence_confirm) {
                wake(ht.since + t_.fence_confirm);
                return;
            }
            const auto placed = placedOn(name);
            if (placed.empty()) {
                setState(ht, HostState::Down);
                hostEvent(name, "down",
                          "every signal lost and nothing runs there: down, no fencing needed",
                          ht.cause_id);
                return;
            }
            setState(ht, HostState::Fencing);
            ht.fence_attempts = 0;
            ht.fence_due = now_;
            fenceNow(name, host, ht,
                     "every signal lost for " + secs(t_.fence_confirm) + " (node silent, " +
                         (sig.libvirt_alive ? "libvirt connection lost"
                                            : "no libvirt connection configured") +
                         ", no agent heard); " + "its assemblies (" + joinNames(placed) +
                         ") stay down until it is off");
            return;
        }
        case HostState::Fencing:
            fencing(name, host, ht, sig, nodeHeard, judging);
            return;
        case HostState::Fenced:
            if (nodeHeard) {
                setState(ht, HostState::Up);
                hostEvent(name, "up", "node heard again after fencing (host restarted)",
                          ht.cause_id);
            }
            return;
        }
    }

    void fenceNow(const std::string& name, const model::Host& host, HostTrack& ht,
                  const std::string& why) {
        ++ht.fence_attempts;
        ht.fence_issued = now_;
        ht.fence_due.reset();
        hostEvent(
            name, "fencing",
            why + (why.empty() ? "" : "; ") + "fencing with " +
                (host.fence.agent.empty() ? std::string("no agent configured") : host.fence.agent) +
                " (attempt " + std::to_string(ht.fence_attempts) + ")",
            ht.cause_id);
        HostAction f;
        f.kind = HostActionKind::Fence;
        f.host = name;
        f.cause_id = ht.cause_id;
        push(f);
        wake(now_ + t_.fence_deadline + 1);
    }

    void fencing(const std::string& name, const model::Host& host, HostTrack& ht,
                 const HostSignals& sig, bool nodeHeard, bool judging) {
        if (ht.fence_issued) {
            const bool answered = sig.fence && sig.fence->attempt == ht.fence_attempts &&
                                  sig.fence->at >= *ht.fence_issued;
            if (answered && sig.fence->ok) {
                setState(ht, HostState::Fenced);
                ht.fence_issued.reset();
                hostEvent(
                    name, "fenced",
                    (host.fence.agent.empty() ? std::string("the fence agent") : host.fence.agent) +
                        " confirmed the host off (attempt " + std::to_string(ht.fence_attempts) +
                        "); its assemblies may start "
                        "elsewhere",
                    ht.cause_id);
                return;
            }
            const bool late = now_ - *ht.fence_issued > t_.fence_deadline;
            if (!answered && !late) {
                wake(*ht.fence_issued + t_.fence_deadline + 1);
                return;
            }
            const std::string err =
                answered ? (sig.fence->error.empty() ? std::string("the agent failed")
                                                     : sig.fence->error)
                         : "no result within " + secs(t_.fence_deadline);
            double delay = double(t_.fence_retry_base) *
                           std::pow(t_.fence_retry_factor, double(ht.fence_attempts - 1));
            const Millis d = std::min<Millis>(t_.fence_retry_cap, Millis(delay));
            ht.fence_issued.reset();
            ht.fence_due = now_ + d;
            const auto placed = placedOn(name);
            hostEvent(name, "fence-failed",
                      "attempt " + std::to_string(ht.fence_attempts) + ": " + err + "; retry in " +
                          secs(d),
                      ht.cause_id);
            alert(name, "",
                  "fencing " + name + " failed (" + err + "); " +
                      (placed.empty() ? std::string("nothing runs there")
                                      : "its assemblies (" + joinNames(placed) + ") stay down") +
                      ": nothing is started elsewhere before the host is confirmed off",
                  ht.cause_id);
            wake(*ht.fence_due);
            return;
        }
        // Between attempts.
        if (nodeHeard) {
            setState(ht, HostState::Up);
            ht.fence_due.reset();
            ht.fence_attempts = 0;
            hostEvent(name, "up",
                      "node heard again after a failed fence: fencing stopped; nothing of it "
                      "was started elsewhere",
                      ht.cause_id);
            return;
        }
        if (ht.fence_due && now_ >= *ht.fence_due) {
            if (!judging)
                return;
            fenceNow(name, host, ht, "");
            return;
        }
        if (ht.fence_due)
            wake(*ht.fence_due);
    }

    std::map<std::string, std::string> placementNow() const {
        auto p = o_.placement;
        for (const auto& [a, h] : pending_)
            p[a] = h;
        for (const auto& [a, at] : d_.state.assemblies)
            if (!at.moving_to.empty())
                p[a] = at.moving_to;
        return p;
    }

    void relocate(const std::string& a, const std::string& from, const std::string& to,
                  const std::string& cause, const std::string& reason) {
        auto& at = d_.state.assemblies[a];
        at.moving_to = to;
        at.moving_from = from;
        at.moving_since = now_;
        at.cause_id = cause;
        pending_[a] = to;
        assemblyEvent(a, "relocating", reason, cause);
        HostAction r;
        r.kind = HostActionKind::Relocate;
        r.assembly = a;
        r.from = from;
        r.to = to;
        r.cause_id = cause;
        push(r);
        wake(now_ + t_.relocate_deadline + 1);
    }

    void relocateFrom(const std::string& host) {
        const HostTrack& ht = d_.state.hosts[host];
        if (ht.state != HostState::Fenced)
            return;
        for (const auto& a : placedOn(host)) {
            auto& at = d_.state.assemblies[a];
            if (!at.moving_to.empty() && at.moving_from == host && at.moving_since) {
                if (now_ - *at.moving_since <= t_.relocate_deadline) {
                    wake(*at.moving_since + t_.relocate_deadline + 1);
                    continue;
                }
            }
            auto target =
                placeAssembly(m_, a, placementNow(), effectiveStates(m_, d_.state), {host});
            if (!target) {
                if (at.cause_id != ht.cause_id) {
                    at.cause_id = ht.cause_id;
                    assemblyEvent(a, "not-placed",
                                  "host " + host + " fenced, but " + target.error().message,
                                  ht.cause_id);
                    alert(host, a, "assembly " + a + " stays down: " + target.error().message,
                          ht.cause_id);
                }
                continue;
            }
            relocate(a, host, *target, ht.cause_id,
                     "host " + host + " fenced: starting it on " + *target + " (from " + host +
                         " to " + *target + ")");
        }
    }

    void escalate(const std::string& a, const std::string& cause, const std::string& why) {
        HostAction e;
        e.kind = HostActionKind::Escalate;
        e.assembly = a;
        e.cause_id = cause;
        e.reason = why;
        push(e);
    }

    void budgetOutcome(const std::string& a, Millis exhaustedAt) {
        const model::Assembly* as = m_.findAssembly(a);
        if (!as || as->outcome == model::AssemblyOutcome::Escalate)
            return;
        auto& at = d_.state.assemblies[a];
        if (at.handled_exhausted && *at.handled_exhausted >= exhaustedAt)
            return;
        at.handled_exhausted = exhaustedAt;
        const std::string cause = a + "@" + std::to_string(exhaustedAt);
        auto p = o_.placement.find(a);
        const std::string current = p == o_.placement.end() ? "" : p->second;
        std::set<std::string> exclude;
        if (!current.empty())
            exclude.insert(current);
        const std::string where = current.empty() ? std::string("") : " on " + current;
        if (as->outcome == model::AssemblyOutcome::Relocate) {
            auto& r = at.relocations;
            r.erase(std::remove_if(r.begin(), r.end(),
                                   [&](Millis t) { return t < now_ - as->relocate_period; }),
                    r.end());
            if (int(r.size()) >= as->max_relocate) {
                escalate(a, cause,
                         "restart budget used up" + where + " and max_relocate " +
                             std::to_string(as->max_relocate) + " within " +
                             secs(as->relocate_period) + " used up");
                return;
            }
            auto target =
                placeAssembly(m_, a, placementNow(), effectiveStates(m_, d_.state), exclude);
            if (!target) {
                escalate(a, cause,
                         "restart budget used up" + where +
                             "; cannot relocate: " + target.error().message);
                return;
            }
            r.push_back(now_);
            relocate(a, current, *target, cause,
                     "restart budget used up" + where + ": relocating to " + *target +
                         " with a fresh budget (relocation " + std::to_string(r.size()) + " of " +
                         std::to_string(as->max_relocate) + " within " + secs(as->relocate_period) +
                         ")");
            return;
        }
        // Replace: a spare cloned from it starts elsewhere; the failed one stays stopped.
        auto target = placeAssembly(m_, a, placementNow(), effectiveStates(m_, d_.state), exclude);
        if (!target) {
            escalate(a, cause,
                     "restart budget used up" + where +
                         "; cannot place a replacement: " + target.error().message);
            return;
        }
        int n = at.replacements + 1;
        std::string spare;
        do {
            spare = a + "-r" + std::to_string(n++);
        } while (m_.assemblies.count(spare));
        at.replacements = n - 1;
        pending_[spare] = *target;
        assemblyEvent(a, "replacing",
                      "restart budget used up" + where + ": starting spare " + spare +
                          " (cloned from " + a + ") on " + *target + "; " + a + " stays stopped",
                      cause);
        HostAction r;
        r.kind = HostActionKind::Replace;
        r.assembly = a;
        r.spare = spare;
        r.from = current;
        r.to = *target;
        r.cause_id = cause;
        push(r);
    }
};

} // namespace

HostDecision decideHosts(const model::Model& model, const HostObserved& observed,
                         const HostLayerState& state, Millis now, const HostTunables& tunables) {
    return Decider(model, observed, state, now, tunables).run();
}

std::map<std::string, HostState> effectiveStates(const model::Model& model,
                                                 const HostLayerState& state) {
    std::map<std::string, HostState> out;
    for (const auto& [n, h] : model.hosts) {
        auto it = state.hosts.find(n);
        HostState s = it == state.hosts.end() ? HostState::Up : it->second.state;
        if (h.state == HostState::Maintenance && s != HostState::Suspect &&
            s != HostState::Fencing && s != HostState::Fenced)
            s = HostState::Maintenance;
        out[n] = s;
    }
    return out;
}

Result<std::string> placeAssembly(const model::Model& model, const std::string& assembly,
                                  const std::map<std::string, std::string>& placement,
                                  const std::map<std::string, HostState>& states,
                                  const std::set<std::string>& exclude) {
    const model::Assembly* a = model.findAssembly(assembly);
    if (!a)
        return makeError("no assembly named '" + assembly + "'");
    std::vector<std::string> candidates;
    if (!a->host.empty())
        candidates = {a->host};
    else if (!a->hosts.empty())
        candidates = a->hosts;
    else
        for (const auto& [n, _] : model.hosts)
            candidates.push_back(n);
    if (candidates.empty())
        return makeError("no hosts are defined (host_add)");
    const model::Deployable* owner = model.owner(assembly);
    const bool spread = owner && owner->spread;

    std::vector<std::string> why;
    std::optional<std::tuple<int, int, std::string>> best;
    for (const auto& c : candidates) {
        const model::Host* h = model.findHost(c);
        if (!h) {
            why.push_back(c + " is not defined");
            continue;
        }
        auto st = states.find(c);
        const HostState s = st == states.end() ? HostState::Up : st->second;
        if (s != HostState::Up) {
            why.push_back(c + (s == HostState::Maintenance ? " is in maintenance"
                                                           : " is " + std::string(toString(s))));
            continue;
        }
        if (exclude.count(c)) {
            why.push_back(c + " is where it ran");
            continue;
        }
        int vcpus = 0, mem = 0, same = 0, total = 0;
        for (const auto& [other, oh] : placement) {
            if (oh != c || other == assembly)
                continue;
            const model::Assembly* oa = model.findAssembly(other);
            if (!oa)
                continue;
            vcpus += vcpusOf(*oa);
            mem += oa->memory_mib;
            ++total;
            if (owner && model.owner(other) == owner)
                ++same;
        }
        if (h->capacity.vcpus > 0 && vcpus + vcpusOf(*a) > h->capacity.vcpus) {
            why.push_back(c + " has no room (" + std::to_string(vcpus) + "+" +
                          std::to_string(vcpusOf(*a)) + " of " + std::to_string(h->capacity.vcpus) +
                          " vcpus)");
            continue;
        }
        if (h->capacity.mem_mib > 0 && mem + a->memory_mib > h->capacity.mem_mib) {
            why.push_back(c + " has no room (" + std::to_string(mem) + "+" +
                          std::to_string(a->memory_mib) + " of " +
                          std::to_string(h->capacity.mem_mib) + " MiB)");
            continue;
        }
        auto key = std::make_tuple(spread ? same : 0, total, c);
        if (!best || key < *best)
            best = key;
    }
    if (best)
        return std::get<2>(*best);
    std::string pin = !a->host.empty()    ? " (pinned to " + a->host + ")"
                      : !a->hosts.empty() ? " (allowed: " + joinNames(a->hosts) + ")"
                                          : "";
    std::string reasons;
    for (const auto& w : why)
        reasons += (reasons.empty() ? "" : "; ") + w;
    return makeError("no host can take " + assembly + pin + ": " + reasons);
}

// ---- text and codecs ------------------------------------------------------------------------

const char* toString(HostActionKind k) {
    switch (k) {
    case HostActionKind::Fence:
        return "fence";
    case HostActionKind::RestartNode:
        return "restart-node";
    case HostActionKind::Alert:
        return "alert";
    case HostActionKind::Relocate:
        return "relocate";
    case HostActionKind::Replace:
        return "replace";
    case HostActionKind::Escalate:
        return "escalate";
    case HostActionKind::EmitEvent:
        return "event";
    }
    return "?";
}

std::string describe(const HostAction& a) {
    std::string who = !a.assembly.empty() ? a.assembly
                      : !a.host.empty()   ? "host:" + a.host
                                          : "[hosts]";
    std::string line = std::string(toString(a.kind)) + " ";
    switch (a.kind) {
    case HostActionKind::Fence:
    case HostActionKind::RestartNode:
        line += a.host;
        break;
    case HostActionKind::Alert:
        line += who + " \"" + a.reason + "\"";
        break;
    case HostActionKind::Relocate:
        line += a.assembly + " " + (a.from.empty() ? "-" : a.from) + "->" + a.to;
        break;
    case HostActionKind::Replace:
        line += a.assembly + " with " + a.spare + " on " + a.to;
        break;
    case HostActionKind::Escalate:
        line += a.assembly + " assembly->deployable \"" + a.reason + "\"";
        break;
    case HostActionKind::EmitEvent:
        line += who + " " + a.state + " \"" + a.reason + "\"";
        break;
    }
    if (!a.cause_id.empty())
        line += " cause=" + a.cause_id;
    return line;
}

namespace {

json optMs(const std::optional<Millis>& t) {
    return t ? json(*t) : json(nullptr);
}

void readOptMs(model::JsonReader& r, const char* key, std::optional<Millis>& out) {
    if (auto* v = r.get(key); v && r.ok() && !v->is_null()) {
        if (!v->is_number_integer())
            r.fail(r.at(key), "expected integer milliseconds");
        else
            out = v->get<Millis>();
    }
}

template <typename T> Result<T> done(model::JsonReader& r, T v) {
    r.rejectUnknown();
    if (!r.ok())
        return *r.takeError();
    return v;
}

} // namespace

json toJson(const HostLayerState& s) {
    json hs = json::object();
    for (const auto& [n, h] : s.hosts)
        hs[n] = {{"state", model::toString(h.state)},
                 {"since", h.since},
                 {"cause_id", h.cause_id},
                 {"fence_attempts", h.fence_attempts},
                 {"fence_issued", optMs(h.fence_issued)},
                 {"fence_due", optMs(h.fence_due)},
                 {"node_restart_requested", h.node_restart_requested}};
    json as = json::object();
    for (const auto& [n, a] : s.assemblies)
        as[n] = {{"relocations", a.relocations},
                 {"replacements", a.replacements},
                 {"handled_exhausted", optMs(a.handled_exhausted)},
                 {"moving_to", a.moving_to},
                 {"moving_from", a.moving_from},
                 {"moving_since", optMs(a.moving_since)},
                 {"cause_id", a.cause_id}};
    return {{"hosts", hs},
            {"assemblies", as},
            {"bus_down", s.bus_down},
            {"bus_recovered_at", optMs(s.bus_recovered_at)}};
}

Result<HostLayerState> hostLayerStateFromJson(const json& j, const std::string& path) {
    model::JsonReader r(j, path);
    HostLayerState s;
    if (auto* v = r.get("hosts"); v && r.ok() && v->is_object())
        for (const auto& [n, hv] : v->items()) {
            model::JsonReader h(hv, model::jsonPath(r.at("hosts"), n));
            HostTrack t;
            std::string state = model::toString(t.state);
            h.str("state", state);
            if (h.ok() && !model::parseHostState(state, t.state))
                h.fail(h.at("state"), "unknown host state '" + state + "'");
            h.integer64("since", t.since);
            h.str("cause_id", t.cause_id);
            h.integer("fence_attempts", t.fence_attempts, 0);
            readOptMs(h, "fence_issued", t.fence_issued);
            readOptMs(h, "fence_due", t.fence_due);
            h.boolean("node_restart_requested", t.node_restart_requested);
            auto ht = done(h, t);
            if (!ht)
                return ht.error();
            s.hosts[n] = *ht;
        }
    if (auto* v = r.get("assemblies"); v && r.ok() && v->is_object())
        for (const auto& [n, av] : v->items()) {
            model::JsonReader a(av, model::jsonPath(r.at("assemblies"), n));
            AssemblyHostTrack t;
            if (auto* rv = a.get("relocations"); rv && a.ok()) {
                if (!rv->is_array())
                    a.fail(a.at("relocations"), "expected an array of ms");
                else
                    for (const auto& x : *rv)
                        if (x.is_number_integer())
                            t.relocations.push_back(x.get<Millis>());
            }
            a.integer("replacements", t.replacements, 0);
            readOptMs(a, "handled_exhausted", t.handled_exhausted);
            a.str("moving_to", t.moving_to);
            a.str("moving_from", t.moving_from);
            readOptMs(a, "moving_since", t.moving_since);
            a.str("cause_id", t.cause_id);
            auto at = done(a, t);
            if (!at)
                return at.error();
            s.assemblies[n] = *at;
        }
    r.boolean("bus_down", s.bus_down);
    readOptMs(r, "bus_recovered_at", s.bus_recovered_at);
    return done(r, s);
}

Result<HostObserved> hostObservedFromJson(const json& j, const std::string& path) {
    model::JsonReader r(j, path);
    HostObserved o;
    r.boolean("bus_ok", o.bus_ok);
    readOptMs(r, "observer_since", o.observer_since);
    readOptMs(r, "observer_resumed_at", o.observer_resumed_at);
    r.integer64("observer_paused_ms", o.observer_paused_ms, 0);
    if (auto* v = r.get("hosts"); v && r.ok()) {
        if (!v->is_object())
            r.fail(r.at("hosts"), "expected an object keyed by host name");
        else
            for (const auto& [n, hv] : v->items()) {
                model::JsonReader h(hv, model::jsonPath(r.at("hosts"), n));
                HostSignals sg;
                readOptMs(h, "node_heartbeat", sg.node_heartbeat);
                if (auto* lv = h.get("libvirt"); lv && h.ok() && !lv->is_null()) {
                    if (*lv == "alive")
                        sg.libvirt_alive = true;
                    else if (*lv == "lost")
                        sg.libvirt_alive = false;
                    else
                        h.fail(h.at("libvirt"), "expected \"alive\", \"lost\" or null (none)");
                }
                if (auto* fv = h.get("fence"); fv && h.ok() && !fv->is_null()) {
                    model::JsonReader f(*fv, h.at("fence"));
                    FenceResult fr;
                    f.integer("attempt", fr.attempt, 1);
                    f.boolean("ok", fr.ok);
                    f.integer64("at", fr.at);
                    f.str("error", fr.error);
                    auto x = done(f, fr);
                    if (!x)
                        return x.error();
                    sg.fence = *x;
                }
                auto x = done(h, sg);
                if (!x)
                    return x.error();
                o.hosts[n] = *x;
            }
    }
    auto strMap = [&](const char* key, std::map<std::string, std::string>& out) {
        if (auto* v = r.get(key); v && r.ok()) {
            if (!v->is_object()) {
                r.fail(r.at(key), "expected an object of assembly -> host");
                return;
            }
            for (const auto& [k, x] : v->items()) {
                if (x.is_null())
                    continue;
                if (!x.is_string()) {
                    r.fail(model::jsonPath(r.at(key), k), "expected a host name");
                    return;
                }
                out[k] = x.get<std::string>();
            }
        }
    };
    auto msMap = [&](const char* key, std::map<std::string, Millis>& out) {
        if (auto* v = r.get(key); v && r.ok()) {
            if (!v->is_object()) {
                r.fail(r.at(key), "expected an object of assembly -> time");
                return;
            }
            for (const auto& [k, x] : v->items()) {
                if (x.is_null())
                    continue;
                if (!x.is_number_integer()) {
                    r.fail(model::jsonPath(r.at(key), k), "expected a time");
                    return;
                }
                out[k] = x.get<Millis>();
            }
        }
    };
    strMap("placement", o.placement);
    msMap("agent_heartbeats", o.agent_heartbeats);
    msMap("budget_exhausted", o.budget_exhausted);
    return done(r, o);
}

json toJson(const HostTunables& t) {
    return {{"node_timeout", formatDuration(t.node_timeout)},
            {"fence_confirm", formatDuration(t.fence_confirm)},
            {"fence_deadline", formatDuration(t.fence_deadline)},
            {"fence_retry_base", formatDuration(t.fence_retry_base)},
            {"fence_retry_factor", t.fence_retry_factor},
            {"fence_retry_cap", formatDuration(t.fence_retry_cap)},
            {"relocate_deadline", formatDuration(t.relocate_deadline)}};
}

Result<HostTunables> hostTunablesFromJson(const json& j, const std::string& path) {
    model::JsonReader r(j, path);
    HostTunables t;
    r.duration("node_timeout", t.node_timeout);
    r.duration("fence_confirm", t.fence_confirm);
    r.duration("fence_deadline", t.fence_deadline);
    r.duration("fence_retry_base", t.fence_retry_base);
    r.number("fence_retry_factor", t.fence_retry_factor, 1.0);
    r.duration("fence_retry_cap", t.fence_retry_cap);
    r.duration("relocate_deadline", t.relocate_deadline);
    if (r.ok() && t.node_timeout <= 0)
        r.fail(r.at("node_timeout"), "must be greater than 0");
    return done(r, t);
}

json toJson(const HostAction& a) {
    json j = {{"kind", toString(a.kind)}};
    for (const auto& [k, v] : {std::pair<const char*, const std::string*>{"host", &a.host},
                               {"assembly", &a.assembly},
                               {"from", &a.from},
                               {"to", &a.to},
                               {"spare", &a.spare},
                               {"cause_id", &a.cause_id},
                               {"state", &a.state},
                               {"reason", &a.reason}})
        if (!v->empty())
            j[k] = *v;
    return j;
}

} // namespace pcloud::policy::hosts
