#pragma once
// ProcessBackend: for guests without systemd (a busybox initramfs). The agent starts each
// resource's command itself (fork/exec, its own process group) and watches it with a pidfd,
// so an exit is seen at once, without SIGCHLD races or polling. Reports use the same
// states systemd would: active/running, failed (exit_code), inactive/dead after a stop.
//
// Adoption: with a run directory, every started process is recorded there (pid, process
// group, start time, command line). When the agent is killed its processes live on; the next
// agent adopts each one that is still the same process (same boot, start time and command
// line) instead of starting a second copy. It watches an adopted process through a pidfd too,
// but it is not its child, so its exit status is unknown (result "unknown"). A recorded
// process of this boot that died while no agent watched it is a failure too: it is reported
// failed (result "unknown") and left to dped, which restarts it and counts it like any
// other service failure, instead of being started again as if nothing had happened.

#include "agent/backend.h"
#include "agent/process_state.h"
#include "common/clock.h"

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::agent {

class ProcessBackend : public UnitBackend {
public:
    // How long a stop waits after SIGTERM before SIGKILL.
    static constexpr Millis kStopTimeout = 5'000;
    // How long a starting agent waits for the run directory's lock held by a dying agent's
    // not-yet-exec'd child, and how often it tries.
    static constexpr int kRunDirLockWaitMs = 2'000;
    static constexpr int kRunDirLockPollMs = 20;

    // runDir empty: nothing is recorded and nothing adopted. bootId: this boot's
    // /proc/sys/kernel/random/boot_id (a record from another boot is stale).
    ProcessBackend(const Clock& clock, std::map<std::string, std::string> commands,
                   std::string runDir = {}, std::string bootId = {});
    ~ProcessBackend() override;

    const char* name() const override { return "process"; }
    void setWatch(const std::vector<std::string>& units,
                  const std::map<std::string, std::string>& commands) override;
    std::vector<std::string> watched() const override { return order_; }
    std::optional<proto::UnitState> state(const std::string& unit) const override;
    void runJob(JobKind kind, const std::string& unit, JobCallback done) override;
    bool adopted(const std::string& unit) const override;
    void shutdown() override;

    // Starts every watched unit that has a command and is not running (at agent start);
    // first adopts those a previous agent left running (see above).
    void startAll();
    // The state file in the run directory ("" without one).
    std::string stateFile() const;

    // How a started child exits when the agent died before recording it: it never execs.
    static constexpr int kUnreleasedExit = 126;
    // Called in the agent right after each fork, before the child is recorded and released
    // to exec: where tests kill the agent to prove no service runs unrecorded.
    void setSpawnObserver(std::function<void(pid_t child)> observer) {
        spawn_observer_ = std::move(observer);
    }

    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

private:
    struct Proc {
        std::string command;
        proto::UnitState st;
        pid_t pid = 0;
        int pidfd = -1;
        pid_t pgid = 0;
        std::uint64_t start_time = 0; // /proc/PID/stat field 22, recorded in the state file
        bool adopted = false;         // not our child: no waitpid, exit status unknown
        bool stopping = false;
        Millis kill_at = 0; // monotonic: SIGKILL the group if still alive
        bool restart_after_stop = false;
        std::vector<JobCallback> waiting; // stop/restart callers
        std::size_t poll_index = 0;
        bool polled = false;
        bool died_unwatched = false; // reported failed at start; not started until asked
    };

    bool spawn(const std::string& unit, Proc& p, std::string& why);
    // status nullopt: an adopted process, whose exit status nobody can know.
    void reaped(const std::string& unit, Proc& p, std::optional<int> status);
    // Non-blocking: whether the process is gone (and reaped, for a child).
    bool gone(Proc& p, int& status);
    // SIGKILLs the group and waits for the end (setWatch removal, shutdown).
    void killNow(Proc& p);
    bool openRunDir();
    void adoptAll();
    enum class Adoption { Adopted, Died, NotAdopted };
    Adoption adopt(const std::string& unit, Proc& p, const RecordedProcess& r, std::string& why);
    void saveState();
    void emit(const Proc& p);
    void setState(Proc& p, const char* active, const char* sub);

    const Clock& clock_;
    std::map<std::string, std::string> commands_;
    std::map<std::string, Proc> procs_;
    std::vector<std::string> order_;
    std::string run_dir_;
    std::string boot_id_;
    bool persist_ = false; // the run directory is usable and ours (locked)
    int lock_fd_ = -1;
    std::function<void(pid_t)> spawn_observer_;
};

} // namespace pcloud::agent
