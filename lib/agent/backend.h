#pragma once
// UnitBackend: what the agent watches and controls. Two implementations: SystemdBackend
// (units over the system D-Bus) and ProcessBackend (commands the agent starts itself).
// Both are event-loop Sources; they push state changes to a Listener as they happen.

#include "agent/event_loop.h"
#include "proto/agent_messages.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::agent {

// The outcome of a start/stop/restart job.
struct JobResult {
    bool ok = true;
    std::string code;       // proto error code when !ok
    std::string message;    // a sentence when !ok
    std::string job_result; // systemd's JobRemoved result (done, failed, canceled, ...)
};
using JobCallback = std::function<void(const JobResult&)>;

enum class JobKind { Start, Stop, Restart };

class UnitBackend : public Source {
public:
    class Listener {
    public:
        virtual ~Listener() = default;
        // A watched unit changed (or was seen for the first time).
        virtual void onUnitState(const proto::UnitState& state) = 0;
        // The backend lost and regained its view (e.g. D-Bus reconnect): resend everything.
        virtual void onResync() = 0;
    };

    virtual const char* name() const = 0;
    void setListener(Listener* l) { listener_ = l; }
    // Replaces the watch set. commands: process backend only (unit -> command line).
    virtual void setWatch(const std::vector<std::string>& units,
                          const std::map<std::string, std::string>& commands) = 0;
    virtual std::vector<std::string> watched() const = 0;
    virtual std::optional<proto::UnitState> state(const std::string& unit) const = 0;
    // Runs the job; `done` is called exactly once, later or (on an immediate error) now.
    virtual void runJob(JobKind kind, const std::string& unit, JobCallback done) = 0;
    // False while the first reading of the watched units is still under way, so that the
    // first hello carries real states rather than "unknown".
    virtual bool settled() const { return true; }
    // Whether the unit's process was adopted from a previous agent (process backend): it
    // has served all along, so the first hello should carry its probe verdict too.
    virtual bool adopted(const std::string& unit) const {
        (void)unit;
        return false;
    }
    // Stop what the backend owns before the agent exits.
    virtual void shutdown() {}

protected:
    Listener* listener_ = nullptr;
};

} // namespace pcloud::agent
