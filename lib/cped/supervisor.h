#pragma once
// dped supervision: one `dped --deployable NAME ...` process per started deployable.
//
//  - A dped that exits while wanted is restarted with exponential backoff (model::Backoff
//    semantics: the first restart is immediate, then base, base*factor, ... up to cap; a
//    dped that ran for reset_after counts as healthy again). Exit statuses for which
//    shouldRespawn() is false (Config, Usage) are not restarted: the deployable is marked
//    failed with an event until the operator starts it again. Locked means another dped
//    holds the deployable's lock: it is adopted when alive.
//  - Never two dpeds for one deployable: dped holds STATE_DIR/dped-NAME.lock (LockFile).
//    Before starting one, the supervisor probes the lock; a live holder is adopted and
//    watched through a pidfd (its exit status is then unknown and treated as a crash).
//  - Children run in their own session, so cped's death (or a Ctrl-C to its terminal) does
//    not take them along; the next cped adopts them. The destructor never kills anyone.
//
// Time comes from the injected Clock; tick() does the work and says when it wants to run
// again, waitActivity() sleeps until a child exits, want()/unwant() are called, or the
// timeout passes. cped runs both in a loop on its own thread; tests call them directly.

#include "common/clock.h"
#include "common/result.h"
#include "events/event.h"
#include "model/model.h"

#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pcloud::cped {

struct SupervisorOptions {
    std::string dped_path; // the dped executable
    std::string state_dir;
    std::string broker_url;
    std::string address_prefix;
    std::vector<std::string> extra_args; // appended to every dped command line
    // Appended after them for one deployable (its bus certificate); unset = nothing.
    std::function<std::vector<std::string>(const std::string& deployable)> dped_args;
    // The leadership epoch a dped starts with (`--epoch N`, docs/ha.md "Epoch fencing"),
    // asked at each start; unset or 0 = no --epoch (unfenced).
    std::function<std::uint64_t()> epoch;
    // Whether a new dped may be started now; unset = always. A zone's follower may not: a
    // dped it started would act beside the leader's (docs/ha.md "Epoch fencing"). A due
    // start then waits, shown as state "held", until a tick after it may. A running dped
    // (the lock's live holder) is adopted all the same, so a follower can fence it.
    std::function<bool()> may_start;
    // A dped that ran 10 s is no crash loop: its next restart is immediate again (systemd's
    // default start-limit interval is 10 s too). One that keeps dying sooner waits 1, 2,
    // 4 ... 60 s.
    model::Backoff backoff{1'000, 2.0, 60'000, 10'000};
};

// Delay before restart number `consecutive` (1 = the first restart after a crash).
Millis restartDelay(int consecutive, const model::Backoff& b);

class Supervisor {
public:
    using EventSink = std::function<void(events::Event)>;
    Supervisor(SupervisorOptions options, const Clock& clock, EventSink sink);
    ~Supervisor();
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    // Desired running: adopt or start on the next tick (also clears a failed state).
    void want(const std::string& deployable);
    // Desired stopped: no more restarts. The process, if any, is left alone (the caller
    // asks dped to stop, then waits with waitExit()).
    void unwant(const std::string& deployable);
    bool wanted(const std::string& deployable) const;

    // Reaps exited dpeds and starts the due ones. Returns ms until it needs to run again
    // (-1: only when something happens).
    Millis tick();
    // Sleeps until a supervised process exits, want()/unwant()/wake() is called, or
    // `timeoutMs` (-1 = no timeout) passes.
    void waitActivity(Millis timeoutMs);
    void wake();

    // Waits (really: on the pidfd, bounded) until the current dped of `deployable` exits.
    // Returns its exit status (-1 when it was adopted, so unknown), nullopt on timeout.
    // Returns at once when no dped runs.
    std::optional<int> waitExit(const std::string& deployable, Millis timeoutMs);
    // SIGTERM (or another signal) to the current dped, if any.
    bool signal(const std::string& deployable, int sig);

    std::optional<pid_t> pid(const std::string& deployable) const;
    // The running dpeds whose epoch is below `epoch`: those adopted (their epoch is unknown
    // until noteEpoch) and those started or raised with a lower one. cped raises them.
    std::vector<std::string> belowEpoch(std::uint64_t epoch) const;
    // The current dped of `deployable` (pid `pid`) confirmed that it runs with `epoch`.
    void noteEpoch(const std::string& deployable, pid_t pid, std::uint64_t epoch);
    // {"state":"running|backoff|held|failed|stopped","pid":..,"adopted":..,"restarts":..,...}
    nlohmann::json info(const std::string& deployable) const;

private:
    struct Entry {
        bool wanted = false;
        pid_t pid = 0;
        pid_t last_pid = 0; // the dped that exited last
        int pidfd = -1;
        bool adopted = false;
        bool failed = false; // exited with a do-not-respawn status
        int consecutive = 0; // crashes in a row
        int restarts = 0;    // total restarts by this cped
        Millis started_mono = 0;
        std::optional<Millis> next_start_mono; // when to (re)start
        std::optional<int> last_exit;          // -1 = unknown (adopted)
        std::uint64_t exits = 0;               // bumped on every reap
        std::uint64_t epoch = 0; // what the running dped was given or confirmed (0: unknown)
        bool held = false;       // due, but may_start said no (logged once per hold)
    };

    void startOrAdopt(const std::string& name, Entry& e, std::vector<events::Event>& out);
    bool adopt(const std::string& name, Entry& e, pid_t pid);
    void reap(const std::string& name, Entry& e, std::vector<events::Event>& out);
    events::Event event(const std::string& dep, std::string state, std::string reason) const;

    SupervisorOptions options_;
    const Clock& clock_;
    EventSink sink_;
    mutable std::mutex mutex_;
    std::map<std::string, Entry> entries_;
    int wake_fd_ = -1;
};

} // namespace pcloud::cped
