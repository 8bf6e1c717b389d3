#include "policy/simulation.h"

#include "common/fs.h"
#include "common/time_format.h"
#include "model/model_json.h"
#include "policy/policy_json.h"
#include "policy/scenario_reader.h"

#include <sys/stat.h>

#include <sstream>

namespace pcloud::policy {

using model::jsonIndex;
using model::jsonPath;
using nlohmann::json;

int lineOfOffset(const std::string& text, size_t offset) {
    int line = 1;
    for (size_t i = 0; i < offset && i < text.size(); ++i)
        if (text[i] == '\n')
            ++line;
    return line;
}

std::string formatRelative(Millis ms) {
    std::string sign = ms < 0 ? "-" : "+";
    Millis a = ms < 0 ? -ms : ms;
    std::string s = sign + std::to_string(a / 1000);
    if (a % 1000) {
        char buf[8];
        std::snprintf(buf, sizeof buf, ".%03d", static_cast<int>(a % 1000));
        std::string frac = buf;
        while (frac.back() == '0')
            frac.pop_back();
        s += frac;
    }
    return s + "s";
}

namespace {

// parseDuration plus decimal seconds ("1.5s", "5.001s"), the form formatRelative writes.
Result<Millis> parseOffset(const std::string& text) {
    auto dot = text.find('.');
    if (dot == std::string::npos || text.size() < dot + 3 || text.back() != 's')
        return parseDuration(text);
    std::string whole = text.substr(0, dot), frac = text.substr(dot + 1, text.size() - dot - 2);
    if (whole.empty() || frac.empty() || frac.size() > 3)
        return makeError("bad decimal seconds");
    for (char c : whole + frac)
        if (c < '0' || c > '9')
            return makeError("bad decimal seconds");
    while (frac.size() < 3)
        frac += '0';
    // Bounded like parseDuration (found by fuzzing: std::stoll threw out_of_range on
    // "+288888888888888888888888888888888888805.01s").
    if (whole.size() > 12 || std::stoll(whole) > kMaxDurationMs / 1000)
        return makeError("decimal seconds longer than 100 years");
    return std::stoll(whole) * 1000 + std::stoll(frac);
}

// "+5s" / "-1s" relative to start, "now", "now-2s", "now+1s", or integer ms (absolute).
Result<Millis> parseTime(const json& v, Millis start, std::optional<Millis> now,
                         const std::string& where) {
    // Absolute times stay within what RFC 3339 writes, so adding a duration (at most 100
    // years) cannot overflow in the policy engine.
    auto inRange = [&](Millis t) -> Result<Millis> {
        if (t < kMinRfc3339Ms || t > kMaxRfc3339Ms)
            return makeError(where + ": time out of range (want milliseconds from year 0000 "
                                     "to 9999)");
        return t;
    };
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(kMaxRfc3339Ms))
        return inRange(kMaxRfc3339Ms + 1);
    if (v.is_number_integer())
        return inRange(v.get<Millis>());
    if (!v.is_string())
        return makeError(where +
                         ": expected a time (\"+5s\", \"now\", \"now-2s\" or integer "
                         "milliseconds), got " +
                         std::string(v.type_name()));
    std::string s = v.get<std::string>();
    Millis base = start;
    std::string rest = s;
    if (s.rfind("now", 0) == 0) {
        if (!now)
            return makeError(where + ": \"now\" is only allowed inside a step");
        base = *now;
        rest = s.substr(3);
        if (rest.empty())
            return base;
    }
    if (rest.empty() || (rest[0] != '+' && rest[0] != '-'))
        return makeError(where +
                         ": expected a time (\"+5s\", \"now\", \"now-2s\" or integer "
                         "milliseconds), got '" +
                         s + "'");
    auto d = parseOffset(rest.substr(1));
    if (!d || *d == kInfinite)
        return makeError(where + ": bad offset in '" + s + "' (want e.g. +5s or now-500ms)");
    return inRange(rest[0] == '+' ? base + *d : base - *d);
}

// Rewrites time strings under the time keys of an observation ("last_heartbeat",
// "changed_at", "hello_at", "observer_since", "observer_resumed_at", "start_failed_at")
// into integer ms.
Status resolveTimes(json& j, Millis start, std::optional<Millis> now, const std::string& where) {
    if (!j.is_object())
        return {};
    for (auto& [k, v] : j.items()) {
        std::string p = jsonPath(where, k);
        if ((k == "last_heartbeat" || k == "changed_at" || k == "hello_at" ||
             k == "observer_since" || k == "observer_resumed_at" || k == "start_failed_at") &&
            !v.is_null()) {
            auto t = parseTime(v, start, now, p);
            if (!t)
                return t.error();
            v = *t;
        } else if (v.is_object()) {
            if (auto s = resolveTimes(v, start, now, p); !s)
                return s;
        }
    }
    return {};
}

std::string phaseSummary(const AssemblyTrack& at, bool referee, Millis start) {
    std::string s = toString(at.phase);
    if (referee)
        s += std::string(",") + toString(at.membership);
    s += ",f=" + std::to_string(at.recovery.failures.size());
    s += ",r=" + std::to_string(at.recovery.restarts);
    if (at.due)
        s += ",due=" + formatRelative(*at.due - start);
    return s;
}

} // namespace

Result<Millis> parseScenarioTime(const json& v, Millis start, std::optional<Millis> now,
                                 const std::string& where) {
    return parseTime(v, start, now, where);
}

Result<Scenario> parseScenario(const std::string& text, const std::string& file) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::parse_error& e) {
        std::string what = e.what();
        if (auto pos = what.find("] "); pos != std::string::npos)
            what = what.substr(pos + 2);
        size_t offset = e.byte > 0 ? e.byte - 1 : 0;
        return makeError("invalid JSON: " + what, file, lineOfOffset(text, offset));
    } catch (const json::exception& e) {
        // A number too large for a double ("1e999") is an out_of_range, not a parse_error
        // (found by fuzzing: pcloud-simulate died on it). Its message quotes the number.
        std::string what = e.what();
        if (auto pos = what.find("] "); pos != std::string::npos)
            what = what.substr(pos + 2);
        int line = 0;
        if (auto open = what.find('\''), close = what.rfind('\'');
            open != std::string::npos && close > open + 1)
            if (auto at = text.find(what.substr(open + 1, close - open - 1));
                at != std::string::npos)
                line = lineOfOffset(text, at);
        return makeError("invalid JSON: " + what, file, line);
    }
    if (j.is_object() && j.contains("layer")) {
        if (j["layer"] != "hosts")
            return makeError("layer: expected \"hosts\" (or no layer for the assembly engine)",
                             file);
        return parseHostScenario(j, file);
    }
    Scenario sc;
    sc.file = file;
    model::JsonReader r(j, "");
    r.str("description", sc.description);
    r.str("deployable", sc.deployable);
    if (auto* v = r.get("start"); v && r.ok()) {
        if (v->is_number_integer()) {
            sc.start = v->get<Millis>();
            const bool tooBig = v->is_number_unsigned()
                                    ? v->get<std::uint64_t>() > std::uint64_t(kMaxRfc3339Ms)
                                    : sc.start > kMaxRfc3339Ms;
            if (tooBig || sc.start < kMinRfc3339Ms)
                r.fail(r.at("start"), "out of range (want milliseconds from year 0000 to 9999)");
        } else if (v->is_string()) {
            auto t = parseRfc3339(v->get<std::string>());
            if (!t)
                r.fail(r.at("start"), t.error().message);
            else
                sc.start = *t;
        } else {
            r.fail(r.at("start"), "expected integer milliseconds or an RFC 3339 time");
        }
    }
    r.duration("jitter", sc.jitter);
    if (auto* v = r.get("tunables"); v && r.ok()) {
        auto t = tunablesFromJson(*v, "tunables");
        if (!t)
            r.fail(t.error());
        else
            sc.tunables = *t;
    }
    const json* mj = r.get("model");
    if (r.ok() && !mj)
        r.fail("model", "missing: the scenario needs a model");
    if (r.ok()) {
        sc.model = *mj;
        auto m = model::modelFromJson(sc.model, "model");
        if (!m)
            r.fail(m.error());
        else if (sc.deployable.empty()) {
            if (m->deployables.size() == 1)
                sc.deployable = m->deployables.begin()->first;
            else
                r.fail("deployable", "missing: the model has " +
                                         std::to_string(m->deployables.size()) +
                                         " deployables, say which one to decide for");
        } else if (!m->findDeployable(sc.deployable)) {
            r.fail("deployable", "'" + sc.deployable + "' is not in the model");
        }
    }
    if (auto* v = r.get("state"); v && r.ok()) {
        auto s = escalationStateFromJson(*v, "state");
        if (!s)
            r.fail(s.error());
        else
            sc.initial = *s;
    }
    readObservationAndSteps(r, sc, resolveTimes, [](const json& o, const std::string& where) {
        auto parsed = observedFromJson(o, where);
        return parsed ? Status{} : Status{parsed.error()};
    });
    r.rejectUnknown();
    if (!r.ok())
        return inScenarioFile(r.error(), file);
    return sc;
}

Result<Scenario> loadScenario(const std::string& fileOrDir) {
    std::string file = fileOrDir;
    struct stat sb {};
    if (::stat(fileOrDir.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode))
        file = fileOrDir + (fileOrDir.back() == '/' ? "" : "/") + "scenario.json";
    auto text = fs::readFile(file);
    if (!text) {
        Error e = text.error();
        if (e.file.empty())
            e.file = file;
        return e;
    }
    return parseScenario(*text, file);
}

Result<std::vector<StepOutcome>> runScenario(const Scenario& sc) {
    if (sc.layer == "hosts")
        return runHostScenario(sc);
    std::vector<StepOutcome> outcomes;
    json modelJson = sc.model;
    auto model = model::modelFromJson(modelJson, "model");
    if (!model)
        return inScenarioFile(model.error(), sc.file);
    json observeJson = sc.observe;
    EscalationState state = sc.initial;
    FixedJitter jitter(sc.jitter);
    for (size_t i = 0; i < sc.steps.size(); ++i) {
        const auto& step = sc.steps[i];
        std::string where = jsonIndex("steps", i);
        if (!step.model.is_null()) {
            modelJson.merge_patch(step.model);
            model = model::modelFromJson(modelJson, where + ".model (merged)");
            if (!model)
                return inScenarioFile(model.error(), sc.file);
            if (!model->findDeployable(sc.deployable))
                return makeError(where + ".model: deployable '" + sc.deployable + "' removed",
                                 sc.file);
        }
        if (!step.observe.is_null())
            observeJson.merge_patch(step.observe);
        auto observed = observedFromJson(observeJson, where + ".observe (merged)");
        if (!observed)
            return inScenarioFile(observed.error(), sc.file);
        Decision d = decide(*model, sc.deployable, *observed, state, step.at, jitter, sc.tunables);
        // Persist and reload the state exactly as dped does; a difference is a codec bug.
        auto reloaded = escalationStateFromJson(json::parse(toJson(d.state).dump()), "state");
        if (!reloaded)
            return makeError(
                where + ": escalation state does not reload: " + reloaded.error().message, sc.file);
        if (!(*reloaded == d.state))
            return makeError(where + ": escalation state changed through its JSON codec", sc.file);
        state = *reloaded;
        outcomes.push_back(StepOutcome{step.at, step.comment, std::move(d)});
    }
    return outcomes;
}

std::string formatText(const Scenario& sc, const std::vector<StepOutcome>& steps) {
    if (sc.layer == "hosts")
        return formatHostText(sc, steps);
    std::ostringstream o;
    if (!sc.description.empty()) {
        std::istringstream in(sc.description);
        for (std::string line; std::getline(in, line);)
            o << "# " << line << "\n";
    }
    auto model = model::modelFromJson(sc.model);
    bool referee = model && model->findDeployable(sc.deployable) &&
                   !model->findDeployable(sc.deployable)->referee.driver.empty();
    for (const auto& st : steps) {
        o << "\nat " << formatRelative(st.at - sc.start);
        if (!st.comment.empty())
            o << "  (" << st.comment << ")";
        o << "\n";
        if (st.decision.actions.empty())
            o << "  (no actions)\n";
        for (const auto& a : st.decision.actions)
            o << "  " << describe(a, sc.deployable) << "\n";
        o << "  state:";
        for (const auto& [an, at] : st.decision.state.assemblies) {
            o << " " << an << "[" << phaseSummary(at, referee, sc.start) << "]";
            for (const auto& [sn, s] : at.services) {
                o << " " << sn << "[" << toString(s.phase) << ",f=" << s.recovery.failures.size()
                  << ",r=" << s.recovery.restarts;
                if (s.due)
                    o << ",due=" << formatRelative(*s.due - sc.start);
                o << "]";
            }
        }
        const auto& ds = st.decision.state.deployable;
        if (!ds.failures.empty())
            o << " deployable[f=" << ds.failures.size() << "]";
        if (ds.outcome_applied)
            o << " deployable[outcome-applied]";
        if (ds.infra_down)
            o << " deployable[infra-down]";
        if (ds.bus_down)
            o << " deployable[bus-down]";
        o << "\n  next wake: "
          << (st.decision.next_wake ? formatRelative(*st.decision.next_wake - sc.start) : "none")
          << "\n";
    }
    return o.str();
}

json formatJson(const Scenario& sc, const std::vector<StepOutcome>& steps) {
    if (sc.layer == "hosts")
        return formatHostJson(sc, steps);
    json arr = json::array();
    for (const auto& st : steps) {
        json j = toJson(st.decision);
        j["at"] = st.at;
        if (!st.comment.empty())
            j["comment"] = st.comment;
        j["state"] = toJson(st.decision.state);
        arr.push_back(j);
    }
    return {{"file", sc.file}, {"deployable", sc.deployable}, {"steps", arr}};
}

void readObservationAndSteps(model::JsonReader& r, Scenario& sc,
                             const ResolveScenarioTimes& resolve, const CheckObservation& check) {
    if (auto* v = r.get("observe"); v && r.ok()) {
        sc.observe = *v;
        if (auto s = resolve(sc.observe, sc.start, std::nullopt, "observe"); !s)
            r.fail(s.error());
        else if (auto c = check(sc.observe, "observe"); !c)
            r.fail(c.error());
    }
    if (sc.observe.is_null())
        sc.observe = json::object();
    const json* steps = r.get("steps");
    if (r.ok() && (!steps || !steps->is_array() || steps->empty()))
        r.fail("steps", "expected a non-empty array of steps");
    if (!r.ok())
        return;
    Millis prev = sc.start;
    for (size_t i = 0; i < steps->size() && r.ok(); ++i) {
        std::string where = jsonIndex("steps", i);
        model::JsonReader sr((*steps)[i], where);
        ScenarioStep st;
        const json* at = sr.get("at");
        if (sr.ok() && !at)
            sr.fail(sr.at("at"), "missing: when this step happens (\"+5s\")");
        if (sr.ok()) {
            auto t = parseTime(*at, sc.start, std::nullopt, sr.at("at"));
            if (!t)
                sr.fail(t.error());
            else if (*t < prev)
                sr.fail(sr.at("at"), "steps must not go back in time (previous step at " +
                                         formatRelative(prev - sc.start) + ")");
            else
                st.at = prev = *t;
        }
        sr.str("comment", st.comment);
        if (auto* v = sr.get("observe"); v && sr.ok()) {
            if (!v->is_object()) {
                sr.fail(sr.at("observe"), "expected an object (a partial observation)");
            } else {
                st.observe = *v;
                if (auto s = resolve(st.observe, sc.start, st.at, sr.at("observe")); !s)
                    sr.fail(s.error());
            }
        }
        if (auto* v = sr.get("model"); v && sr.ok()) {
            if (!v->is_object())
                sr.fail(sr.at("model"), "expected an object (a merge patch)");
            else
                st.model = *v;
        }
        sr.rejectUnknown();
        if (!sr.ok())
            r.fail(sr.error());
        else
            sc.steps.push_back(std::move(st));
    }
}

Error inScenarioFile(Error e, const std::string& file) {
    e.file = file;
    return e;
}

} // namespace pcloud::policy
