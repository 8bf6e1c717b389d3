#pragma once
// PidWatcher: the earliest proof that a local QEMU process is gone. It holds a pidfd
// (pidfd_open) per watched pid in one epoll set served by its own thread; a pidfd becomes
// readable the moment the process exits, whoever killed it. Unlike a pid number, a pidfd
// cannot be fooled by pid reuse once it is open.
//
// Callbacks run on the watcher's thread. Each watch fires at most once, then is removed.

#include "common/result.h"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <thread>

namespace pcloud::virt {

// Is `pid` stopped (SIGSTOP, a debugger: state T or t in /proc/PID/stat)? A stopped qemu is
// a frozen guest: nothing inside it runs, whatever libvirt says (it still reads "running").
// nullopt when the process is gone or its stat cannot be read.
std::optional<bool> processStopped(pid_t pid);

// Per thread of `pid`: how long it has waited, runnable, on the host's run queue (ns, field 2
// of /proc/PID/task/TID/schedstat). A guest whose qemu threads wait there is starved by the
// host, not hung. nullopt when the process is gone or the kernel keeps no schedstats.
std::optional<std::map<pid_t, std::uint64_t>> threadRunQueueWaits(pid_t pid);

// The largest growth of one thread's wait between two samples, ms (threads in only one
// sample don't count: a new thread has no earlier wait to compare with).
std::int64_t maxWaitGrowthMs(const std::map<pid_t, std::uint64_t>& before,
                             const std::map<pid_t, std::uint64_t>& after);

struct PidExit {
    std::string key; // what the caller called it (e.g. the domain name)
    pid_t pid = 0;
    std::int64_t monotonicUs = 0; // steady clock when the exit was seen
    bool alreadyGone = false;     // the process had exited before the watch was added
};

class PidWatcher {
public:
    using Callback = std::function<void(const PidExit&)>;

    explicit PidWatcher(Callback callback);
    ~PidWatcher();
    PidWatcher(const PidWatcher&) = delete;
    PidWatcher& operator=(const PidWatcher&) = delete;

    // Starts watching `pid` under `key` (replacing an earlier watch of the same key). If the
    // process is already gone, the callback fires (alreadyGone = true) from the watcher
    // thread. Errors: pidfd_open unsupported, or no permission.
    Status watch(const std::string& key, pid_t pid);
    // Stops watching `key` (no callback). Unknown keys are fine.
    void unwatch(const std::string& key);
    size_t size() const;

private:
    void run();
    void wake();

    Callback callback_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    mutable std::mutex mu_;
    struct Entry {
        int fd;
        pid_t pid;
    };
    std::map<std::string, Entry> by_key_; // guarded by mu_
    std::map<int, std::string> by_fd_;    // guarded by mu_
    std::map<std::string, pid_t> gone_;   // already-exited watches to report; guarded
    bool stopping_ = false;               // guarded by mu_
    std::thread thread_;
};

} // namespace pcloud::virt
