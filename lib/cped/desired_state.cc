#include "cped/desired_state.h"

#include "common/fs.h"

#include <nlohmann/json.hpp>

namespace pcloud::cped {

Result<DesiredState> DesiredState::load(const std::string& stateDir) {
    const std::string path = stateDir + "/" + kFile;
    DesiredState d;
    if (!fs::exists(path))
        return d;
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("not a JSON object; fix or remove it (it only lists started deployables)",
                         path);
    auto it = j.find("started");
    if (it == j.end())
        return d;
    if (!it->is_array())
        return makeError("\"started\" is not a list of names", path);
    for (const auto& n : *it) {
        if (!n.is_string())
            return makeError("\"started\" holds a non-string", path);
        d.started_.insert(n.get<std::string>());
    }
    return d;
}

Status DesiredState::save(const std::string& stateDir) const {
    nlohmann::json j = {{"v", 1}, {"started", started_}};
    return fs::writeAtomic(stateDir + "/" + kFile, j.dump(2) + "\n");
}

} // namespace pcloud::cped
