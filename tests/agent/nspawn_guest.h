#pragma once
// A real systemd guest for tests and benchmarks: boots the cached Debian root
// (scripts/setup-nspawn-root.sh) with systemd-nspawn --boot, with a volatile overlay so the
// cached root is never modified, and runs commands inside with nsenter. The destructor always
// tears the container down (SIGKILL of its PID 1 ends the whole PID namespace), and the
// nspawn process gets SIGTERM if the test process dies first.

#include "common/result.h"

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace pcloud::testing {

class NspawnGuest {
public:
    // PCLOUD_NSPAWN_ROOT or /var/cache/pcloud/nspawn-root.
    static std::string rootDir();
    // Empty when a guest can be booted here; otherwise why not (for GTEST_SKIP).
    static std::string unavailableReason();

    // binds: {host path, guest path}, read-only.
    NspawnGuest(std::string machine, std::vector<std::pair<std::string, std::string>> binds);
    ~NspawnGuest();
    NspawnGuest(const NspawnGuest&) = delete;
    NspawnGuest& operator=(const NspawnGuest&) = delete;

    // Boots and waits until systemd says running/degraded, up to timeoutMs.
    Status boot(int timeoutMs = 90'000);
    void teardown();
    pid_t leader() const { return leader_; }

    // Runs a shell command inside; returns its exit status, output in *out.
    int run(const std::string& command, std::string* out = nullptr) const;
    // Starts a command inside in the background (output to hostLogPath); returns the
    // host pid of the nsenter process, whose child is the command.
    pid_t spawn(const std::vector<std::string>& argv, const std::string& hostLogPath) const;
    // The pid of parent's child named comm (e.g. the agent under nsenter); -1 if none.
    static pid_t childPid(pid_t parent, const std::string& comm);
    // The host pid of a process known inside the guest as nsPid; -1 if none.
    pid_t hostPid(pid_t nsPid) const;

private:
    std::string machine_;
    std::vector<std::pair<std::string, std::string>> binds_;
    std::string log_;
    pid_t nspawn_ = -1;
    pid_t leader_ = -1;
};

} // namespace pcloud::testing
