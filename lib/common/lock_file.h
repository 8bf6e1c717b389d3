#pragma once
// The one-dped-per-deployable guarantee: dped holds an exclusive flock(2) on
// STATE_DIR/dped-NAME.lock for its whole life, with its pid written inside. The kernel drops
// the lock when the process dies, however it dies, so a stale file never blocks a restart.
// cped uses probe() to tell "a dped is running (adopt it)" from "none is (start one)".

#include "common/result.h"

#include <optional>
#include <string>
#include <sys/types.h>

namespace pcloud {

class LockFile {
public:
    // Takes the lock without waiting and writes our pid into the file. Fails when another
    // process holds it; then `*holder` (when given) is set to that process's pid, if known.
    static Result<LockFile> acquire(const std::string& path, pid_t* holder = nullptr);

    // Who holds the lock at `path`: the pid written in the file while the lock is held
    // (0 when held but no pid is written yet), nullopt when nobody holds it (or there is no
    // file). The probe takes a shared lock for an instant, so a dped starting at that very
    // moment can see "locked": dped should retry acquire() briefly before exiting Locked.
    static std::optional<pid_t> holder(const std::string& path);

    LockFile(LockFile&& other) noexcept;
    LockFile& operator=(LockFile&& other) noexcept;
    LockFile(const LockFile&) = delete;
    LockFile& operator=(const LockFile&) = delete;
    ~LockFile(); // releases the lock (the file stays)

    const std::string& path() const { return path_; }
    int fd() const { return fd_; }

private:
    LockFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
    std::string path_;
    int fd_ = -1;
};

// STATE_DIR/dped-NAME.lock
std::string dpedLockPath(const std::string& stateDir, const std::string& deployable);

} // namespace pcloud
