#pragma once
// JSON codecs of the policy types. dped persists EscalationState with these after every
// decision (so a restart loses no failure window, backoff or in-flight recovery); the
// simulator reads Observed and writes Decisions. Instants are integer milliseconds since
// the epoch. Errors name the JSON path. Garbage service/domain state strings are not errors:
// they decode to Unknown (the raw string is kept in ObservedService::raw).

#include "common/result.h"
#include "policy/policy.h"
#include "policy/types.h"

#include <nlohmann/json.hpp>

namespace pcloud::policy {

nlohmann::json toJson(const Observed& o);
Result<Observed> observedFromJson(const nlohmann::json& j, const std::string& path = "");

nlohmann::json toJson(const EscalationState& s);
Result<EscalationState> escalationStateFromJson(const nlohmann::json& j,
                                                const std::string& path = "");

nlohmann::json toJson(const Action& a);
nlohmann::json toJson(const Decision& d); // {"actions": [...], "next_wake": ms|null}

nlohmann::json toJson(const Tunables& t);
Result<Tunables> tunablesFromJson(const nlohmann::json& j, const std::string& path = "");

// One line for humans: "restart-service node01/httpd cause=node01/httpd@5000".
// `deployable` labels deployable-wide events and MarkFailed.
std::string describe(const Action& a, const std::string& deployable);

} // namespace pcloud::policy
