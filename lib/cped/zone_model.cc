#include "cped/zone_model.h"

#include "store/store.h"

#include <nlohmann/json.hpp>

namespace pcloud::cped {

using nlohmann::json;

std::string zoneModelFiles(const model::Model& model, const DesiredState& desired) {
    json files = {{store::kDeployablesFile, store::formatDeployables(model)},
                  {store::kAssembliesFile, store::formatAssemblies(model)},
                  {DesiredState::kFile, desired.text()}};
    if (!model.hosts.empty())
        files[store::kHostsFile] = store::formatHosts(model);
    return files.dump(); // keys sorted: one text per content
}

Result<std::string> formatZoneModel(const std::string& files, std::uint64_t generation,
                                    std::int64_t epoch, const std::string& writer) {
    json j = {{"v", 1},
              {"generation", generation},
              {"epoch", epoch},
              {"writer", writer},
              {"files", json::parse(files)}};
    std::string text = j.dump();
    if (text.size() > kZoneModelMaxBytes)
        return makeError("the model is " + std::to_string(text.size()) +
                         " bytes as one etcd value, more than the " +
                         std::to_string(kZoneModelMaxBytes) + " a zone keeps");
    return text;
}

Result<ZoneModel> parseZoneModel(const std::string& text, const std::string& where) {
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError(where + ": not a JSON object (the zone's model snapshot)");
    if (j.value("v", 0) != 1)
        return makeError(where + ": unknown snapshot version " +
                         (j.contains("v") ? j["v"].dump() : std::string("(none)")) +
                         "; this cped reads version 1");
    ZoneModel z;
    for (const char* n : {"generation", "epoch"})
        if (!j.contains(n) || !j[n].is_number_integer() || j[n].get<std::int64_t>() < 0)
            return makeError(where + ": \"" + n + "\" is missing or not a non-negative integer");
    if (!j.contains("writer") || !j["writer"].is_string())
        return makeError(where + ": \"writer\" is missing or not a string");
    if (!j.contains("files") || !j["files"].is_object())
        return makeError(where + ": \"files\" is missing or not an object");
    z.generation = j["generation"].get<std::uint64_t>();
    z.epoch = j["epoch"].get<std::int64_t>();
    z.writer = j["writer"].get<std::string>();
    const json& files = j["files"];
    for (const auto& [name, value] : files.items()) {
        if (name != store::kDeployablesFile && name != store::kAssembliesFile &&
            name != store::kHostsFile && name != DesiredState::kFile)
            return makeError(where + ": unknown file \"" + name + "\" in \"files\"");
        if (!value.is_string())
            return makeError(where + ": \"" + name + "\" is not a string");
    }
    auto file = [&](const char* name) -> std::optional<std::string> {
        if (auto it = files.find(name); it != files.end())
            return it->get<std::string>();
        return std::nullopt;
    };
    const std::string in = where + ": ";
    auto m = store::parseModel(file(store::kDeployablesFile), in + store::kDeployablesFile,
                               file(store::kAssembliesFile), in + store::kAssembliesFile,
                               file(store::kHostsFile), in + store::kHostsFile, nullptr);
    if (!m)
        return m.error();
    z.model = std::move(*m);
    if (auto d = file(DesiredState::kFile)) {
        auto desired = DesiredState::parse(*d, in + DesiredState::kFile);
        if (!desired)
            return desired.error();
        z.desired = std::move(*desired);
    }
    return z;
}

} // namespace pcloud::cped
