#include "common/lock_file.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
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
        if (!out)
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
