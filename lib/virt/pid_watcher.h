#pragma once
// PidWatcher: the earliest proof that a local QEMU process is gone. It holds a pidfd
// (pidfd_open) per watched pid in one epoll set served by its own thread; a pidfd becomes
// readable once the process has exited, whoever killed it. Unlike a pid number, a pidfd
// cannot be fooled by pid reuse once it is open.
//
// A pidfd fires only after the kernel has torn the whole process down, and for QEMU that
// means freeing the guest's memory first: 6-25 ms for a 128 MiB test guest on our CI
// machines, far longer for a guest of many GiB. A process killed by a signal is dead from
// the moment its first thread exits, so the watcher also listens to the kernel's process
// events (the netlink proc connector): a thread of a watched process that exits because of
// a signal (SIGKILL, SIGSEGV, SIGABRT...: a fatal signal always ends the whole process;
// SIGSYS, which seccomp can aim at one thread, is left to the pidfd) reports the process
// at once, with the signal. Normal exits, and every exit when the
// connector is not available (no CAP_NET_ADMIN, or the watcher is not in the host's pid
// namespace, whose pid numbers the connector reports), are reported by the pidfd.
//
// Two rare kernel paths end a single thread with a signal code while the rest live on: a
// thread in seccomp's strict mode that breaks it, and a kernel oops in that thread. QEMU
// uses neither on purpose, and a qemu that lost a thread that way is broken: dped's answer
// to the report (destroy, then start) suits it as well.
//
// An early report means "it will be gone", not "it is gone": the kernel is still freeing
// the process. Nothing may start a replacement on the strength of it alone; dped restarts a
// domain through libvirt's destroy, which returns only once libvirt has reaped the qemu.
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
#include <vector>

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
    // The fatal signal, when the exit was seen as the first thread died of it (the proc
    // connector); 0 when the pidfd reported the exit.
    int signal = 0;
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
    // Does this watcher hear of signal deaths before the teardown (the proc connector)?
    bool hearsSignalDeaths() const { return proc_fd_ >= 0; }

private:
    void run();
    void wake();
    // Reads every pending proc connector message; deaths of watched pids go to `fired`.
    void drainProcEvents(std::int64_t now, std::vector<PidExit>& fired);
    void forgetLocked(const std::string& key);

    Callback callback_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    int proc_fd_ = -1; // netlink proc connector, -1 when not available
    mutable std::mutex mu_;
    struct Entry {
        int fd;
        pid_t pid;
    };
    std::map<std::string, Entry> by_key_; // guarded by mu_
    std::map<int, std::string> by_fd_;    // guarded by mu_
    std::map<pid_t, std::string> by_pid_; // guarded by mu_
    std::map<std::string, pid_t> gone_;   // already-exited watches to report; guarded
    bool stopping_ = false;               // guarded by mu_
    std::thread thread_;
};

} // namespace pcloud::virt
