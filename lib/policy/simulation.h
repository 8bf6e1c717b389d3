#pragma once
// The step loop shared by pcloud-simulate and the golden regression cases (Pacemaker's
// crm_simulate idea): a scenario file holds a model, an optional initial EscalationState and
// timed observation steps; each step merges its partial observation into the previous one
// (RFC 7386 JSON merge patch), calls decide() and carries the new state to the next step.
// The state goes through its JSON codec at every step, as it does in dped.
//
// scenario.json:
//   {"description": "...", "deployable": "web", "start": 0, "jitter": "0ms",
//    "tunables": {...}, "model": {...model_json...}, "state": {...EscalationState...},
//    "observe": {...initial Observed...},
//    "steps": [{"at": "+5s", "comment": "...", "observe": {...patch...},
//               "model": {...patch...}}]}
// Times inside "observe" (last_heartbeat, changed_at) may be "now", "now-2s", "+5s"
// (relative to start) or integer milliseconds. See docs/policy.md.
//
// "layer": "hosts" runs the host layer (policy/hosts.h) instead of decide(): the
// observation is a HostObserved, "host_tunables" replaces "tunables", "state" is a
// HostLayerState, and no deployable is needed (docs/hosts.md).

#include "common/result.h"
#include "model/model.h"
#include "policy/hosts.h"
#include "policy/policy.h"
#include "policy/types.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace pcloud::policy {

struct ScenarioStep {
    Millis at = 0;
    std::string comment;
    nlohmann::json observe; // merge patch (null = no change)
    nlohmann::json model;   // merge patch on the model JSON (null = no change)
};

struct Scenario {
    std::string file;
    std::string description;
    std::string deployable;
    Millis start = 0;
    Millis jitter = 0; // FixedJitter added to every backoff delay
    Tunables tunables;
    nlohmann::json model; // model JSON (validated by loadScenario)
    EscalationState initial;
    nlohmann::json observe; // initial observation (times resolved)
    std::vector<ScenarioStep> steps;
    std::string layer; // "" = decide(), "hosts" = decideHosts()
    hosts::HostTunables host_tunables;
    hosts::HostLayerState host_initial;
};

struct StepOutcome {
    Millis at = 0;
    std::string comment;
    Decision decision;
    hosts::HostDecision host; // layer "hosts"
};

// FILE, or a directory holding scenario.json. Errors name the file, and the line for JSON
// syntax errors.
Result<Scenario> loadScenario(const std::string& fileOrDir);
Result<Scenario> parseScenario(const std::string& text, const std::string& file);
Result<std::vector<StepOutcome>> runScenario(const Scenario& scenario);

// The human-readable form used by expected.txt: per step the time, the actions one per
// line, a summary of the remembered state and the next wake-up.
std::string formatText(const Scenario& scenario, const std::vector<StepOutcome>& steps);
nlohmann::json formatJson(const Scenario& scenario, const std::vector<StepOutcome>& steps);

// A scenario time: "+5s" (from start), "now", "now-2s" (inside a step) or integer ms.
Result<Millis> parseScenarioTime(const nlohmann::json& v, Millis start, std::optional<Millis> now,
                                 const std::string& where);

// The host layer's halves of the above (host_simulation.cc).
Result<Scenario> parseHostScenario(const nlohmann::json& j, const std::string& file);
Result<std::vector<StepOutcome>> runHostScenario(const Scenario& scenario);
std::string formatHostText(const Scenario& scenario, const std::vector<StepOutcome>& steps);
nlohmann::json formatHostJson(const Scenario& scenario, const std::vector<StepOutcome>& steps);

// "+5s", "+1.5s", "+0.001s": milliseconds relative to the scenario start.
std::string formatRelative(Millis ms);
// 1-based line of a byte offset (0-based) in text.
int lineOfOffset(const std::string& text, size_t offset);

} // namespace pcloud::policy
