#pragma once
// The state store: the operator's model persisted as two XML files in STATE_DIR, in the
// format Pacemaker Cloud (2012) used, so its files still load:
//   db_deployable.xml  <deployables><deployable ...><assembly name=""/></deployable></deployables>
//   db_assemblies.xml  <assemblies><assembly ...><resources><resource
//   .../></resources></assembly></assemblies>
// pcloud's own fields are extra attributes and child elements (docs/store.md).
//
// Nothing here throws. A file that is corrupt or invalid gives an Error naming the file, the
// line, the attribute and its value, and the file is left exactly as it was.

#include "common/result.h"
#include "model/model.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::store {

inline constexpr const char* kDeployablesFile = "db_deployable.xml";
inline constexpr const char* kAssembliesFile = "db_assemblies.xml";
// pcloud's own: the hypervisor hosts (docs/hosts.md). Absent = no hosts; written only once
// a host exists. Read before db_assemblies.xml, whose host=/hosts= must name its hosts.
inline constexpr const char* kHostsFile = "db_hosts.xml";

// STATE_DIR/escalation-NAME.json: the escalation state (failure history, budgets) dped
// saves for its deployable; in a zone cped shares it through etcd (docs/ha.md).
inline std::string escalationStatePath(const std::string& stateDir, const std::string& deployable) {
    return stateDir + "/escalation-" + deployable + ".json";
}

// Reads STATE_DIR/db_deployable.xml and STATE_DIR/db_assemblies.xml. A missing file reads
// as empty (so does a missing STATE_DIR); an empty or unparsable file is an error. Harmless
// oddities (unknown attributes, which would be dropped on the next save) are appended to
// `warnings` when given, and logged as warnings otherwise.
Result<model::Model> loadModel(const std::string& stateDir, std::vector<Error>* warnings = nullptr);

struct SaveOptions {
    // Test hook, called with each file's final path just before its temp file is renamed
    // over it. Returning false simulates a crash at that point (the save stops there).
    std::function<bool(const std::string& path)> beforeRename;
};

// Writes the files atomically (fs::writeAtomic: temp file, fsync, rename, fsync dir), after
// checking the model is valid and reads back identically. Crash consistency between the two
// files: db_assemblies.xml is written first, so a deployable on disk never names an
// assembly missing from disk. When assemblies are removed, the first write keeps the ones
// the on-disk deployables still name, and a third write drops them once the new
// deployables are in place. At every instant the pair on disk loads.
Status saveModel(const std::string& stateDir, const model::Model& model,
                 const SaveOptions& options = {});

// The pure halves of load and save (no I/O), also used by tools that read other files.
// The paths only name the texts in errors; nullopt = no such file (reads as empty).
Result<model::Model> parseModel(const std::optional<std::string>& deployablesXml,
                                const std::string& deployablesPath,
                                const std::optional<std::string>& assembliesXml,
                                const std::string& assembliesPath,
                                std::vector<Error>* warnings = nullptr);
// With db_hosts.xml (nullopt = no such file).
Result<model::Model> parseModel(const std::optional<std::string>& deployablesXml,
                                const std::string& deployablesPath,
                                const std::optional<std::string>& assembliesXml,
                                const std::string& assembliesPath,
                                const std::optional<std::string>& hostsXml,
                                const std::string& hostsPath, std::vector<Error>* warnings);
std::string formatDeployables(const model::Model& model);
std::string formatAssemblies(const model::Model& model);
std::string formatHosts(const model::Model& model);

// The rules parseModel enforces, for a model built in memory (names, references, ranges).
Status validateModel(const model::Model& model);

} // namespace pcloud::store
