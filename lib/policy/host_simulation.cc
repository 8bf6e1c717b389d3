// The host layer's scenarios ("layer": "hosts"): the same step loop as simulation.cc, with
// a HostObserved as the observation and decideHosts() as the function (docs/hosts.md).

#include "model/model_json.h"
#include "policy/scenario_reader.h"
#include "policy/simulation.h"

#include <sstream>

namespace pcloud::policy {

using model::jsonIndex;
using model::jsonPath;
using nlohmann::json;

namespace {

// Time-valued keys of a host observation: node_heartbeat, observer_since,
// observer_resumed_at, fence.at, and every value of agent_heartbeats and budget_exhausted.
Status resolveHostTimes(json& j, Millis start, std::optional<Millis> now,
                        const std::string& where) {
    if (!j.is_object())
        return {};
    auto one = [&](json& v, const std::string& p) -> Status {
        if (v.is_null())
            return {};
        auto t = parseScenarioTime(v, start, now, p);
        if (!t)
            return t.error();
        v = *t;
        return {};
    };
    for (const char* k : {"observer_since", "observer_resumed_at"})
        if (j.contains(k))
            if (auto s = one(j[k], jsonPath(where, k)); !s)
                return s;
    if (j.contains("hosts") && j["hosts"].is_object())
        for (auto& [n, h] : j["hosts"].items()) {
            if (!h.is_object())
                continue;
            const std::string hp = jsonPath(jsonPath(where, "hosts"), n);
            if (h.contains("node_heartbeat"))
                if (auto s = one(h["node_heartbeat"], jsonPath(hp, "node_heartbeat")); !s)
                    return s;
            if (h.contains("fence") && h["fence"].is_object() && h["fence"].contains("at"))
                if (auto s = one(h["fence"]["at"], jsonPath(jsonPath(hp, "fence"), "at")); !s)
                    return s;
        }
    for (const char* k : {"agent_heartbeats", "budget_exhausted"})
        if (j.contains(k) && j[k].is_object())
            for (auto& [n, v] : j[k].items())
                if (auto s = one(v, jsonPath(jsonPath(where, k), n)); !s)
                    return s;
    return {};
}

} // namespace

Result<Scenario> parseHostScenario(const json& j, const std::string& file) {
    Scenario sc;
    sc.file = file;
    sc.layer = "hosts";
    model::JsonReader r(j, "");
    r.get("layer");
    r.str("description", sc.description);
    if (auto* v = r.get("start"); v && r.ok()) {
        if (!v->is_number_integer())
            r.fail(r.at("start"), "expected integer milliseconds");
        else
            sc.start = v->get<Millis>();
    }
    if (auto* v = r.get("host_tunables"); v && r.ok()) {
        auto t = hosts::hostTunablesFromJson(*v, "host_tunables");
        if (!t)
            r.fail(t.error());
        else
            sc.host_tunables = *t;
    }
    const json* mj = r.get("model");
    if (r.ok() && !mj)
        r.fail("model", "missing: the scenario needs a model");
    if (r.ok()) {
        sc.model = *mj;
        if (auto m = model::modelFromJson(sc.model, "model"); !m)
            r.fail(m.error());
    }
    if (auto* v = r.get("state"); v && r.ok()) {
        auto s = hosts::hostLayerStateFromJson(*v, "state");
        if (!s)
            r.fail(s.error());
        else
            sc.host_initial = *s;
    }
    readObservationAndSteps(r, sc, resolveHostTimes, [](const json& o, const std::string& where) {
        auto parsed = hosts::hostObservedFromJson(o, where);
        return parsed ? Status{} : Status{parsed.error()};
    });
    r.rejectUnknown();
    if (!r.ok())
        return inScenarioFile(r.error(), file);
    return sc;
}

Result<std::vector<StepOutcome>> runHostScenario(const Scenario& sc) {
    std::vector<StepOutcome> outcomes;
    json modelJson = sc.model;
    auto model = model::modelFromJson(modelJson, "model");
    if (!model)
        return inScenarioFile(model.error(), sc.file);
    json observeJson = sc.observe;
    hosts::HostLayerState state = sc.host_initial;
    for (size_t i = 0; i < sc.steps.size(); ++i) {
        const auto& step = sc.steps[i];
        std::string where = jsonIndex("steps", i);
        if (!step.model.is_null()) {
            modelJson.merge_patch(step.model);
            model = model::modelFromJson(modelJson, where + ".model (merged)");
            if (!model)
                return inScenarioFile(model.error(), sc.file);
        }
        if (!step.observe.is_null())
            observeJson.merge_patch(step.observe);
        auto observed = hosts::hostObservedFromJson(observeJson, where + ".observe (merged)");
        if (!observed)
            return inScenarioFile(observed.error(), sc.file);
        auto d = hosts::decideHosts(*model, *observed, state, step.at, sc.host_tunables);
        // Persist and reload the state as an executor would; a difference is a codec bug.
        auto reloaded =
            hosts::hostLayerStateFromJson(json::parse(hosts::toJson(d.state).dump()), "state");
        if (!reloaded)
            return makeError(where + ": host state does not reload: " + reloaded.error().message,
                             sc.file);
        if (!(*reloaded == d.state))
            return makeError(where + ": host state changed through its JSON codec", sc.file);
        state = *reloaded;
        StepOutcome out;
        out.at = step.at;
        out.comment = step.comment;
        out.host = std::move(d);
        outcomes.push_back(std::move(out));
    }
    return outcomes;
}

std::string formatHostText(const Scenario& sc, const std::vector<StepOutcome>& steps) {
    std::ostringstream o;
    if (!sc.description.empty()) {
        std::istringstream in(sc.description);
        for (std::string line; std::getline(in, line);)
            o << "# " << line << "\n";
    }
    for (const auto& st : steps) {
        o << "\nat " << formatRelative(st.at - sc.start);
        if (!st.comment.empty())
            o << "  (" << st.comment << ")";
        o << "\n";
        if (st.host.actions.empty())
            o << "  (no actions)\n";
        for (const auto& a : st.host.actions)
            o << "  " << hosts::describe(a) << "\n";
        o << "  hosts:";
        for (const auto& [n, h] : st.host.state.hosts) {
            o << " " << n << "[" << model::toString(h.state);
            if (h.fence_attempts)
                o << ",fence=" << h.fence_attempts;
            if (h.fence_due)
                o << ",retry=" << formatRelative(*h.fence_due - sc.start);
            o << "]";
        }
        for (const auto& [n, a] : st.host.state.assemblies) {
            if (a.moving_to.empty() && a.relocations.empty() && a.replacements == 0)
                continue;
            o << " " << n << "[";
            std::string sep;
            if (!a.moving_to.empty()) {
                o << (a.moving_from.empty() ? "-" : a.moving_from) << "->" << a.moving_to;
                sep = ",";
            }
            if (!a.relocations.empty()) {
                o << sep << "relocations=" << a.relocations.size();
                sep = ",";
            }
            if (a.replacements)
                o << sep << "replacements=" << a.replacements;
            o << "]";
        }
        if (st.host.state.bus_down)
            o << " [bus-down]";
        o << "\n  next wake: "
          << (st.host.next_wake ? formatRelative(*st.host.next_wake - sc.start) : "none") << "\n";
    }
    return o.str();
}

json formatHostJson(const Scenario& sc, const std::vector<StepOutcome>& steps) {
    json arr = json::array();
    for (const auto& st : steps) {
        json actions = json::array();
        for (const auto& a : st.host.actions)
            actions.push_back(hosts::toJson(a));
        json j = {{"at", st.at},
                  {"actions", actions},
                  {"state", hosts::toJson(st.host.state)},
                  {"next_wake", st.host.next_wake ? json(*st.host.next_wake) : json(nullptr)}};
        if (!st.comment.empty())
            j["comment"] = st.comment;
        arr.push_back(j);
    }
    return {{"file", sc.file}, {"layer", "hosts"}, {"steps", arr}};
}

} // namespace pcloud::policy
