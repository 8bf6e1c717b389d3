#include "policy/policy_json.h"

#include "common/time_format.h"
#include "model/model_json.h"

namespace pcloud::policy {

using model::jsonIndex;
using model::jsonPath;
using model::JsonReader;
using nlohmann::json;

namespace {

json optTime(const std::optional<Millis>& t) {
    return t ? json(*t) : json(nullptr);
}

void readOptTime(JsonReader& r, const char* key, std::optional<Millis>& out) {
    if (auto* v = r.get(key)) {
        if (v->is_null())
            out.reset();
        else if (v->is_number_integer())
            out = v->get<Millis>();
        else
            r.fail(r.at(key), "expected integer milliseconds since the epoch or null");
    }
}

// A leadership epoch: a whole number from 0 (the unfenced single node) to kMaxEpoch.
void readEpoch(JsonReader& r, const char* key, std::uint64_t& out) {
    std::int64_t v = static_cast<std::int64_t>(out);
    r.integer64(key, v, 0);
    if (r.ok())
        out = static_cast<std::uint64_t>(v);
}

void readTime(JsonReader& r, const char* key, Millis& out) {
    r.integer64(key, out);
}

template <typename T, typename F>
void readObjectMap(JsonReader& r, const char* key, std::map<std::string, T>& out, F parse) {
    auto* v = r.get(key);
    if (!v || !r.ok())
        return;
    if (!v->is_object()) {
        r.fail(r.at(key), "expected an object keyed by name");
        return;
    }
    for (const auto& [k, item] : v->items()) {
        auto res = parse(item, jsonPath(r.at(key), k));
        if (!res) {
            r.fail(res.error());
            return;
        }
        out[k] = std::move(*res);
    }
}

void readTimes(JsonReader& r, const char* key, std::vector<Millis>& out) {
    auto* v = r.get(key);
    if (!v || !r.ok())
        return;
    if (!v->is_array()) {
        r.fail(r.at(key), "expected an array of integer milliseconds");
        return;
    }
    out.clear();
    for (size_t i = 0; i < v->size(); ++i) {
        if (!(*v)[i].is_number_integer()) {
            r.fail(jsonIndex(r.at(key), i), "expected integer milliseconds");
            return;
        }
        out.push_back((*v)[i].get<Millis>());
    }
}

template <typename E, typename P>
void readEnum(JsonReader& r, const char* key, E& out, P parse, const char* choices) {
    std::string s = toString(out);
    r.str(key, s);
    if (r.ok() && !parse(s, out))
        r.fail(r.at(key), std::string("expected one of ") + choices + ", got '" + s + "'");
}

template <typename T> Result<T> done(JsonReader& r, T v) {
    r.rejectUnknown();
    if (!r.ok())
        return r.error();
    return v;
}

Result<ObservedService> serviceFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    ObservedService s;
    if (auto* v = r.get("state")) {
        if (v->is_string())
            s.raw = v->get<std::string>();
        else
            s.raw = v->dump(); // garbage: keep it for the event, state stays Unknown
        s.state = parseServiceState(s.raw);
    }
    readOptTime(r, "changed_at", s.changed_at);
    if (auto* v = r.get("probe_ready")) {
        if (v->is_null())
            s.probe_ready.reset();
        else if (v->is_boolean())
            s.probe_ready = v->get<bool>();
        else
            r.fail(r.at("probe_ready"), "expected true, false or null");
    }
    return done(r, s);
}

Result<ObservedAssembly> observedAssemblyFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    ObservedAssembly a;
    if (auto* v = r.get("domain")) {
        // Garbage maps to unknown: the engine then waits instead of acting on it.
        a.domain = v->is_string() ? parseDomainState(v->get<std::string>()) : DomainState::Unknown;
    }
    r.boolean("suspect", a.suspect);
    r.boolean("frozen", a.frozen);
    r.boolean("qemu_exited", a.qemu_exited);
    r.integer64("starved_ms", a.starved_ms, 0);
    r.boolean("agent_connected", a.agent_connected);
    std::int64_t seq = static_cast<std::int64_t>(a.heartbeat_seq);
    r.integer64("heartbeat_seq", seq, 0);
    a.heartbeat_seq = static_cast<std::uint64_t>(seq);
    readOptTime(r, "last_heartbeat", a.last_heartbeat);
    readObjectMap(r, "services", a.services, serviceFromJson);
    r.boolean("agent_via_bus", a.agent_via_bus);
    readOptTime(r, "hello_at", a.hello_at);
    if (auto* v = r.get("referee"); v && !v->is_null()) {
        Membership m = Membership::Out;
        readEnum(r, "referee", m, parseMembership, "out, in, draining, parked");
        a.referee = m;
    }
    readOptTime(r, "start_failed_at", a.start_failed_at);
    r.str("start_error", a.start_error);
    return done(r, a);
}

json toJson(const Recovery& rc) {
    return {{"failures", rc.failures},
            {"restarts", rc.restarts},
            {"last_restart", optTime(rc.last_restart)},
            {"stable_since", optTime(rc.stable_since)}};
}

Result<Recovery> recoveryFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Recovery rc;
    readTimes(r, "failures", rc.failures);
    r.integer("restarts", rc.restarts, 0);
    readOptTime(r, "last_restart", rc.last_restart);
    readOptTime(r, "stable_since", rc.stable_since);
    return done(r, rc);
}

json toJson(const ServiceTrack& s) {
    return {{"phase", toString(s.phase)},     {"phase_since", s.phase_since},
            {"due", optTime(s.due)},          {"cause_id", s.cause_id},
            {"recovery", toJson(s.recovery)}, {"reported", s.reported}};
}

void readRecovery(JsonReader& r, Recovery& out) {
    if (auto* v = r.get("recovery"); v && r.ok()) {
        auto rc = recoveryFromJson(*v, r.at("recovery"));
        if (!rc)
            r.fail(rc.error());
        else
            out = *rc;
    }
}

Result<ServiceTrack> serviceTrackFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    ServiceTrack s;
    readEnum(r, "phase", s.phase, parsePhase,
             "fresh, starting, up, restart-pending, restarting, stopping, stopped, failed");
    readTime(r, "phase_since", s.phase_since);
    readOptTime(r, "due", s.due);
    r.str("cause_id", s.cause_id);
    readRecovery(r, s.recovery);
    r.str("reported", s.reported);
    return done(r, s);
}

json toJson(const AssemblyTrack& a) {
    json svcs = json::object();
    for (const auto& [n, s] : a.services)
        svcs[n] = toJson(s);
    return {{"phase", toString(a.phase)},     {"phase_since", a.phase_since},
            {"due", optTime(a.due)},          {"cause_id", a.cause_id},
            {"seen_running", a.seen_running}, {"stop_forced", a.stop_forced},
            {"recovery", toJson(a.recovery)}, {"membership", toString(a.membership)},
            {"reported", a.reported},         {"services", svcs}};
}

Result<AssemblyTrack> assemblyTrackFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    AssemblyTrack a;
    readEnum(r, "phase", a.phase, parsePhase,
             "fresh, starting, up, restart-pending, restarting, stopping, stopped, failed");
    readTime(r, "phase_since", a.phase_since);
    readOptTime(r, "due", a.due);
    r.str("cause_id", a.cause_id);
    r.boolean("seen_running", a.seen_running);
    r.boolean("stop_forced", a.stop_forced);
    readRecovery(r, a.recovery);
    readEnum(r, "membership", a.membership, parseMembership, "out, in, draining, parked");
    r.str("reported", a.reported);
    readObjectMap(r, "services", a.services, serviceTrackFromJson);
    return done(r, a);
}

} // namespace

json toJson(const Observed& o) {
    json asms = json::object();
    for (const auto& [n, a] : o.assemblies) {
        json svcs = json::object();
        for (const auto& [sn, s] : a.services) {
            json sj = {{"state", s.state == ServiceState::Unknown && !s.raw.empty()
                                     ? s.raw
                                     : std::string(toString(s.state))},
                       {"changed_at", optTime(s.changed_at)}};
            sj["probe_ready"] = s.probe_ready ? json(*s.probe_ready) : json(nullptr);
            svcs[sn] = sj;
        }
        asms[n] = {{"domain", toString(a.domain)},
                   {"suspect", a.suspect},
                   {"frozen", a.frozen},
                   {"qemu_exited", a.qemu_exited},
                   {"starved_ms", a.starved_ms},
                   {"agent_connected", a.agent_connected},
                   {"heartbeat_seq", a.heartbeat_seq},
                   {"last_heartbeat", optTime(a.last_heartbeat)},
                   {"services", svcs},
                   {"agent_via_bus", a.agent_via_bus},
                   {"hello_at", optTime(a.hello_at)},
                   {"referee", a.referee ? json(toString(*a.referee)) : json(nullptr)},
                   {"start_failed_at", optTime(a.start_failed_at)},
                   {"start_error", a.start_error}};
    }
    return {{"desired", toString(o.desired)},
            {"infra_ok", o.infra_ok},
            {"bus_ok", o.bus_ok},
            {"observer_since", optTime(o.observer_since)},
            {"observer_resumed_at", optTime(o.observer_resumed_at)},
            {"observer_paused_ms", o.observer_paused_ms},
            {"epoch", o.epoch},
            {"receiver_epoch", o.receiver_epoch},
            {"assemblies", asms}};
}

Result<Observed> observedFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Observed o;
    std::string desired = toString(o.desired);
    r.str("desired", desired);
    if (r.ok()) {
        if (desired == "running")
            o.desired = DesiredState::Running;
        else if (desired == "stopped")
            o.desired = DesiredState::Stopped;
        else
            r.fail(r.at("desired"), "expected \"running\" or \"stopped\", got '" + desired + "'");
    }
    r.boolean("infra_ok", o.infra_ok);
    r.boolean("bus_ok", o.bus_ok);
    readOptTime(r, "observer_since", o.observer_since);
    readOptTime(r, "observer_resumed_at", o.observer_resumed_at);
    r.integer64("observer_paused_ms", o.observer_paused_ms, 0);
    readEpoch(r, "epoch", o.epoch);
    readEpoch(r, "receiver_epoch", o.receiver_epoch);
    readObjectMap(r, "assemblies", o.assemblies, observedAssemblyFromJson);
    return done(r, o);
}

json toJson(const EscalationState& s) {
    json asms = json::object();
    for (const auto& [n, a] : s.assemblies)
        asms[n] = toJson(a);
    const auto& d = s.deployable;
    return {{"v", 1},
            {"deployable",
             {{"failures", d.failures},
              {"outcome_applied", d.outcome_applied},
              {"outcome_cause", d.outcome_cause},
              {"infra_down", d.infra_down},
              {"infra_recovered_at", optTime(d.infra_recovered_at)},
              {"observer_resumed_at", optTime(d.observer_resumed_at)},
              {"bus_down", d.bus_down},
              {"bus_recovered_at", optTime(d.bus_recovered_at)},
              {"fenced_by", d.fenced_by},
              {"fence_lifted_at", optTime(d.fence_lifted_at)},
              {"reported", d.reported}}},
            {"assemblies", asms}};
}

Result<EscalationState> escalationStateFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    EscalationState s;
    int version = 1;
    r.integer("v", version);
    if (r.ok() && version != 1)
        r.fail(r.at("v"), "unsupported state version " + std::to_string(version) + " (want 1)");
    if (auto* v = r.get("deployable"); v && r.ok()) {
        JsonReader dr(*v, r.at("deployable"));
        auto& d = s.deployable;
        readTimes(dr, "failures", d.failures);
        dr.boolean("outcome_applied", d.outcome_applied);
        dr.str("outcome_cause", d.outcome_cause);
        dr.boolean("infra_down", d.infra_down);
        readOptTime(dr, "infra_recovered_at", d.infra_recovered_at);
        readOptTime(dr, "observer_resumed_at", d.observer_resumed_at);
        dr.boolean("bus_down", d.bus_down);
        readOptTime(dr, "bus_recovered_at", d.bus_recovered_at);
        readEpoch(dr, "fenced_by", d.fenced_by);
        readOptTime(dr, "fence_lifted_at", d.fence_lifted_at);
        dr.str("reported", d.reported);
        dr.rejectUnknown();
        if (!dr.ok())
            return dr.error();
    }
    readObjectMap(r, "assemblies", s.assemblies, assemblyTrackFromJson);
    return done(r, s);
}

json toJson(const Action& a) {
    json j = {{"kind", toString(a.kind)}, {"cause_id", a.cause_id}};
    if (!a.assembly.empty())
        j["assembly"] = a.assembly;
    if (!a.service.empty())
        j["service"] = a.service;
    if (a.kind == ActionKind::Escalate) {
        j["from"] = toString(a.from);
        j["to"] = toString(a.to);
    }
    if (a.kind == ActionKind::EmitEvent)
        j["state"] = a.state;
    if (!a.reason.empty())
        j["reason"] = a.reason;
    return j;
}

json toJson(const Decision& d) {
    json acts = json::array();
    for (const auto& a : d.actions)
        acts.push_back(toJson(a));
    return {{"actions", acts}, {"next_wake", optTime(d.next_wake)}};
}

json toJson(const Tunables& t) {
    return {{"service_start_deadline", formatDuration(t.service_start_deadline)},
            {"domain_start_deadline", formatDuration(t.domain_start_deadline)},
            {"domain_stop_deadline", formatDuration(t.domain_stop_deadline)}};
}

Result<Tunables> tunablesFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Tunables t;
    r.duration("service_start_deadline", t.service_start_deadline);
    r.duration("domain_start_deadline", t.domain_start_deadline);
    r.duration("domain_stop_deadline", t.domain_stop_deadline);
    return done(r, t);
}

std::string describe(const Action& a, const std::string& deployable) {
    std::string who = a.assembly.empty() ? "[" + deployable + "]" : a.assembly;
    if (!a.service.empty())
        who += "/" + a.service;
    std::string line = std::string(toString(a.kind)) + " " + who;
    switch (a.kind) {
    case ActionKind::Escalate:
        line += std::string(" ") + toString(a.from) + "->" + toString(a.to);
        break;
    case ActionKind::EmitEvent:
        line += " " + a.state + " \"" + a.reason + "\"";
        break;
    case ActionKind::MarkFailed:
        line += " \"" + a.reason + "\"";
        break;
    default:
        break;
    }
    if (!a.cause_id.empty())
        line += " cause=" + a.cause_id;
    return line;
}

} // namespace pcloud::policy
