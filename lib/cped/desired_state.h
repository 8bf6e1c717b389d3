#pragma once
// Which deployables the operator started: STATE_DIR/desired.json, {"v":1,"started":["web"]}.
// Kept apart from the db files (the model is what to run; this is whether to run it), and
// written with fs::writeAtomic so a crash leaves the old or the new list, never half.

#include "common/result.h"

#include <set>
#include <string>

namespace pcloud::cped {

class DesiredState {
public:
    static constexpr const char* kFile = "desired.json";

    // A missing file reads as "nothing started". A corrupt file is an error naming it.
    static Result<DesiredState> load(const std::string& stateDir);
    Status save(const std::string& stateDir) const;
    // The file's text, and back (errors name `where`): the zone's snapshot carries it.
    std::string text() const;
    static Result<DesiredState> parse(const std::string& text, const std::string& where);

    bool started(const std::string& deployable) const { return started_.count(deployable) > 0; }
    void setStarted(const std::string& deployable, bool on) {
        if (on)
            started_.insert(deployable);
        else
            started_.erase(deployable);
    }
    const std::set<std::string>& startedSet() const { return started_; }
    bool operator==(const DesiredState&) const = default;

private:
    std::set<std::string> started_;
};

} // namespace pcloud::cped
