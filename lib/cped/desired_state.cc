#include "cped/desired_state.h"

#include "common/fs.h"

#include <nlohmann/json.hpp>

namespace pcloud::cped {

Result<DesiredState> DesiredState::load(const std::string& stateDir) {
    const std::string path = stateDir + "/" + kFile;
    if (!fs::exists(path))
        return DesiredState{};
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    return parse(*text, path);
}

Result<DesiredState> DesiredState::parse(const std::string& text, const std::string& where) {
    DesiredState d;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("not a JSON object; fix or remove it (it only lists started deployables)",
                         where);
    auto it = j.find("started");
    if (it == j.end())
        return d;
    if (!it->is_array())
        return makeError("\"started\" is not a list of names", where);
    for (const auto& n : *it) {
        if (!n.is_string())
            return makeError("\"started\" holds a non-string", where);
        d.started_.insert(n.get<std::string>());
    }
    return d;
}

std::string DesiredState::text() const {
    nlohmann::json j = {{"v", 1}, {"started", started_}};
    return j.dump(2) + "\n";
}

Status DesiredState::save(const std::string& stateDir) const {
    return fs::writeAtomic(stateDir + "/" + kFile, text());
}

} // namespace pcloud::cped
