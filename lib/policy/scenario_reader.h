#pragma once
// What the two scenario parsers (simulation.cc for the assembly engine, host_simulation.cc
// for the host layer) read the same way: the first observation and the timed steps. Each
// layer passes the function that turns its observation's time values ("now", "+5s") into
// milliseconds and the codec that checks its first observation.
#include "common/result.h"
#include "model/model_json.h"
#include "policy/simulation.h"

#include <functional>
#include <optional>
#include <string>

namespace pcloud::policy {

using ResolveScenarioTimes = std::function<Status(
    nlohmann::json& j, Millis start, std::optional<Millis> now, const std::string& where)>;
using CheckObservation = std::function<Status(const nlohmann::json& j, const std::string& where)>;

// Reads "observe" (optional; {} when absent) and "steps" (a non-empty array of {"at",
// "comment", "observe", "model"}, in time order) of the scenario object `r` into `sc`.
// sc.start must be set. Errors go to `r`, naming the key.
void readObservationAndSteps(model::JsonReader& r, Scenario& sc,
                             const ResolveScenarioTimes& resolve, const CheckObservation& check);

// `e` as found in the scenario file `file`.
Error inScenarioFile(Error e, const std::string& file);

} // namespace pcloud::policy
