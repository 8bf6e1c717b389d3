#include "common/lock_file.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud {
namespace {

std::optional<pid_t> readPid(int fd) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return std::nullopt;
    char* end = nullptr;
    long v = std::strtol(buf, &end, 10);
    if (end == buf || v <= 0)
        return std::nullopt;
    return static_cast<pid_t>(v);
}

// Has `pid` the file open as `fd` open too? The lock belongs to an open file description
// that the holder keeps open (dped itself, or a shell that took it with flock(1)); a process
// that merely got a dead holder's pid has no such descriptor. nullopt when /proc/PID/fd
// cannot be read (another user's process, no /proc).
std::optional<bool> hasFileOpen(pid_t pid, int fd) {
    struct stat mine {};
    if (::fstat(fd, &mine) != 0)
        return std::nullopt;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return errno == ENOENT ? std::optional<bool>(false) : std::nullopt;
    bool found = false;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        struct stat st {};
        if (::stat((dir + "/" + e->d_name).c_str(), &st) == 0 && st.st_dev == mine.st_dev &&
            st.st_ino == mine.st_ino) {
            found = true;
            break;
        }
    }
    ::closedir(d);
    return found;
}

} // namespace

std::string dpedLockPath(const std::string& stateDir, const std::string& deployable) {
    return stateDir + "/dped-" + deployable + ".lock";
}

Result<LockFile> LockFile::acquire(const std::string& path, pid_t* holderOut) {
    // No O_TRUNC: the holder's pid must stay readable until we own the lock.
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return makeError(std::string("cannot open the lock file: ") + std::strerror(errno), path);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        auto pid = readPid(fd);
        if (pid && hasFileOpen(*pid, fd) == false) // a previous holder's pid (see holder())
            pid.reset();
        ::close(fd);
        if (holderOut && pid)
            *holderOut = *pid;
        if (err == EWOULDBLOCK)
            return makeError(
                "already locked by " +
                    (pid ? "pid " + std::to_string(*pid) : std::string("another process")) +
                    ": another instance is running",
                path);
        return makeError(std::string("cannot lock: ") + std::strerror(err), path);
    }
    std::string text = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) < 0) {
        int err = errno;
        ::close(fd);
        return makeError(
            std::string("cannot write our pid into the lock file: ") + std::strerror(err), path);
    }
    return LockFile(path, fd);
}

std::optional<pid_t> LockFile::holder(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return std::nullopt;
    std::optional<pid_t> out;
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
        ::flock(fd, LOCK_UN); // nobody holds it
    } else if (errno == EWOULDBLOCK) {
        out = readPid(fd);
        // A new holder writes its pid only after it got the lock, so for a moment the file
        // still names the previous holder, who may be dead, its pid reused by any process
        // (pids wrap within minutes on a busy host). Only a pid that has this file open is
        // returned; otherwise the pid is "not (yet) written".
        if (!out || hasFileOpen(*out, fd) == false)
            out = 0; // held, pid not (yet) written
    }
    ::close(fd);
    return out;
}

LockFile::LockFile(LockFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0)
            ::close(fd_);
        path_ = std::move(other.path_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

LockFile::~LockFile() {
    if (fd_ >= 0)
        ::close(fd_);
}

} // namespace pcloud
