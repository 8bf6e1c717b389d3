#pragma once
// JSON form of the data model. Used by pcloud-simulate and the policy golden cases, and by
// anything that needs to hand a Model around as text. The store keeps its own XML format.
//
// Conventions: durations are written as "30s"-style strings (formatDuration) and accepted as
// such strings or as integer milliseconds; "INFINITY" means unlimited for Escalation failures
// and periods. Missing keys keep the defaults of model.h. Unknown keys are rejected so a typo
// does not silently fall back to a default. Errors name the JSON path, e.g.
// "assemblies.node01.resources[0].escalation.failures: expected an integer or INFINITY".

#include "common/result.h"
#include "model/model.h"

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <optional>
#include <string>

namespace pcloud::model {

nlohmann::json toJson(const Escalation& e);
nlohmann::json toJson(const Backoff& b);
nlohmann::json toJson(const Probe& p);
nlohmann::json toJson(const Resource& r);
nlohmann::json toJson(const Assembly& a);
nlohmann::json toJson(const RefereeConfig& r);
nlohmann::json toJson(const Deployable& d);
nlohmann::json toJson(const Host& h);
// {"deployables": {NAME: {...}}, "assemblies": {NAME: {...}}}; names are the map keys.
nlohmann::json toJson(const Model& m);

// `path` is the JSON path of `j` used in error messages ("" for the document root).
Result<Escalation> escalationFromJson(const nlohmann::json& j, const std::string& path = "");
Result<Backoff> backoffFromJson(const nlohmann::json& j, const std::string& path = "");
Result<Probe> probeFromJson(const nlohmann::json& j, const std::string& path = "");
Result<Resource> resourceFromJson(const nlohmann::json& j, const std::string& path = "");
Result<Assembly> assemblyFromJson(const nlohmann::json& j, const std::string& name,
                                  const std::string& path = "");
Result<RefereeConfig> refereeFromJson(const nlohmann::json& j, const std::string& path = "");
// A missing "node" defaults to "node:NAME".
Result<Host> hostFromJson(const nlohmann::json& j, const std::string& name,
                          const std::string& path = "");
Result<Deployable> deployableFromJson(const nlohmann::json& j, const std::string& name,
                                      const std::string& path = "");
// Also checks cross references: every assembly a deployable lists exists, belongs to only
// one deployable, and every name is valid (isValidName).
Result<Model> modelFromJson(const nlohmann::json& j, const std::string& path = "");

// A small reader for JSON objects that remembers the first error together with its path.
// Getters leave `out` alone when the key is absent. Shared with the policy JSON codecs.
class JsonReader {
public:
    JsonReader(const nlohmann::json& j, std::string path);
    bool ok() const { return !error_.has_value(); }
    const Error& error() const { return *error_; }
    std::optional<Error> takeError() { return std::move(error_); }
    const nlohmann::json* get(const char* key);   // marks the key as known
    std::string at(const std::string& key) const; // "path.key"

    void str(const char* key, std::string& out);
    void boolean(const char* key, bool& out);
    void integer(const char* key, int& out, int min = INT32_MIN);
    void integer64(const char* key, std::int64_t& out, std::int64_t min = INT64_MIN);
    void number(const char* key, double& out, double min);
    // "30s"-style string or integer milliseconds; allowInfinite accepts "INFINITY" (-1).
    void duration(const char* key, Millis& out, bool allowInfinite = false);
    // Integer >= 0 or "INFINITY" (kUnlimitedFailures).
    void failures(const char* key, int& out);
    void fail(const std::string& where, const std::string& what);
    void fail(const Error& nested); // keeps the first error only
    // Errors on any key of the object not read by a getter / get().
    void rejectUnknown(std::initializer_list<const char*> alsoAllowed = {});

private:
    const nlohmann::json& j_;
    std::string path_;
    std::vector<std::string> known_;
    std::optional<Error> error_;
};

// "a.b" / "[3]" joining used in error paths.
std::string jsonPath(const std::string& base, const std::string& key);
std::string jsonIndex(const std::string& base, size_t index);

// Parses a duration JSON value ("30s", 1500 = ms). Error text names `where`.
Result<Millis> durationFromJson(const nlohmann::json& v, const std::string& where,
                                bool allowInfinite = false);

} // namespace pcloud::model
