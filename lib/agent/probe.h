#pragma once
// Readiness probes: HTTP GET (expect a status) or TCP connect, run without blocking inside
// the agent's loop. "Active but not answering" becomes ready=false, which the controller
// treats as not-ready, distinct from failed.

#include "agent/event_loop.h"
#include "model/model.h"

#include <functional>
#include <map>
#include <optional>
#include <string>

namespace pcloud::agent {

// Pure verdict keeper: ready becomes true on a success, false after `threshold`
// consecutive failures, and is unknown (absent) while the unit is not active.
class ProbeTracker {
public:
    explicit ProbeTracker(int threshold) : threshold_(threshold < 1 ? 1 : threshold) {}
    // Returns true when ready() changed.
    bool record(bool success);
    // The unit became active: not proven ready yet.
    bool start();
    // The unit is no longer active: no verdict.
    bool reset();
    std::optional<bool> ready() const { return ready_; }
    int failures() const { return failures_; }

private:
    int threshold_;
    int failures_ = 0;
    std::optional<bool> ready_;
};

// Parses the status code out of an HTTP response's first line ("HTTP/1.1 200 OK").
// Returns 0 while the line is incomplete and -1 when it is not HTTP.
int parseHttpStatus(const std::string& head);

class ProbeRunner : public Source {
public:
    using ReadyCallback = std::function<void(const std::string& unit, std::optional<bool> ready)>;

    ProbeRunner(const Clock& clock, ReadyCallback cb) : clock_(clock), cb_(std::move(cb)) {}
    ~ProbeRunner() override;

    // Sets (or with nullopt removes) the probe of a unit.
    void setProbe(const std::string& unit, std::optional<model::Probe> probe);
    bool hasProbe(const std::string& unit) const { return probes_.count(unit) != 0; }
    // The unit's active state: probes run only while it is active.
    void setActive(const std::string& unit, bool active);
    std::optional<bool> ready(const std::string& unit) const;

    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

private:
    struct Entry {
        model::Probe spec;
        ProbeTracker tracker;
        bool active = false;
        Millis next_at = kNever;
        int fd = -1;
        Millis attempt_deadline = 0;
        bool connected = false;
        std::string out; // request bytes not yet written
        std::string in;  // response bytes so far
        std::size_t poll_index = 0;
        bool polled = false;
    };
    void begin(const std::string& unit, Entry& e, Millis now);
    void finish(const std::string& unit, Entry& e, bool success, Millis now);
    void step(const std::string& unit, Entry& e, short revents, Millis now);
    void closeFd(Entry& e);

    const Clock& clock_;
    ReadyCallback cb_;
    std::map<std::string, Entry> probes_;
};

} // namespace pcloud::agent
