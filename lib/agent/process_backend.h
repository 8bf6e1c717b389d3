#pragma once
// ProcessBackend: for guests without systemd (a busybox initramfs). The agent starts each
// resource's command itself (fork/exec, its own process group) and watches it with a pidfd,
// so an exit is seen at once, without SIGCHLD races or polling. Reports use the same
// states systemd would: active/running, failed (exit_code), inactive/dead after a stop.

#include "agent/backend.h"
#include "common/clock.h"

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace pcloud::agent {

class ProcessBackend : public UnitBackend {
public:
    // How long a stop waits after SIGTERM before SIGKILL.
    static constexpr Millis kStopTimeout = 5'000;

    ProcessBackend(const Clock& clock, std::map<std::string, std::string> commands);
    ~ProcessBackend() override;

    const char* name() const override { return "process"; }
    void setWatch(const std::vector<std::string>& units,
                  const std::map<std::string, std::string>& commands) override;
    std::vector<std::string> watched() const override { return order_; }
    std::optional<proto::UnitState> state(const std::string& unit) const override;
    void runJob(JobKind kind, const std::string& unit, JobCallback done) override;
    void shutdown() override;

    // Starts every watched unit that has a command and is not running (at agent start).
    void startAll();

    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

private:
    struct Proc {
        std::string command;
        proto::UnitState st;
        pid_t pid = 0;
        int pidfd = -1;
        bool stopping = false;
        Millis kill_at = 0; // monotonic: SIGKILL the group if still alive
        bool restart_after_stop = false;
        std::vector<JobCallback> waiting; // stop/restart callers
        std::size_t poll_index = 0;
        bool polled = false;
    };

    bool spawn(const std::string& unit, Proc& p, std::string& why);
    void reaped(const std::string& unit, Proc& p, int status);
    void emit(const Proc& p);
    void setState(Proc& p, const char* active, const char* sub);

    const Clock& clock_;
    std::map<std::string, std::string> commands_;
    std::map<std::string, Proc> procs_;
    std::vector<std::string> order_;
};

} // namespace pcloud::agent
