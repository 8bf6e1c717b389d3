#include "virt/pid_watcher.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace pcloud::virt {

namespace {
std::int64_t monotonicUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}
} // namespace

PidWatcher::PidWatcher(Callback callback) : callback_(std::move(callback)) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd_;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    thread_ = std::thread([this] { run(); });
}

PidWatcher::~PidWatcher() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    wake();
    thread_.join();
    for (auto& [key, e] : by_key_)
        ::close(e.fd);
    ::close(wake_fd_);
    ::close(epoll_fd_);
}

std::optional<bool> processStopped(pid_t pid) {
    if (pid <= 0)
        return std::nullopt;
    std::string path = "/proc/" + std::to_string(pid) + "/stat";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return std::nullopt;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0)
        return std::nullopt;
    buf[n] = '\0';
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so look after the last ')'.
    const char* close = std::strrchr(buf, ')');
    if (!close || close[1] != ' ' || close[2] == '\0')
        return std::nullopt;
    return close[2] == 'T' || close[2] == 't';
}

std::optional<std::map<pid_t, std::uint64_t>> threadRunQueueWaits(pid_t pid) {
    if (pid <= 0)
        return std::nullopt;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return std::nullopt;
    std::map<pid_t, std::uint64_t> waits;
    while (dirent* e = ::readdir(d)) {
        char* end = nullptr;
        long tid = std::strtol(e->d_name, &end, 10);
        if (tid <= 0 || *end != '\0')
            continue;
        std::string path = dir + "/" + e->d_name + "/schedstat";
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; // the thread ended meanwhile
        char buf[128];
        ssize_t n = ::read(fd, buf, sizeof buf - 1);
        ::close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        // "RUN_NS WAIT_NS TIMESLICES"
        unsigned long long run = 0, wait = 0;
        if (std::sscanf(buf, "%llu %llu", &run, &wait) == 2)
            waits[static_cast<pid_t>(tid)] = wait;
    }
    ::closedir(d);
    if (waits.empty())
        return std::nullopt;
    return waits;
}

std::int64_t maxWaitGrowthMs(const std::map<pid_t, std::uint64_t>& before,
                             const std::map<pid_t, std::uint64_t>& after) {
    std::uint64_t most = 0;
    for (const auto& [tid, w] : after)
        if (auto it = before.find(tid); it != before.end() && w > it->second)
            most = std::max(most, w - it->second);
    return static_cast<std::int64_t>(most / 1'000'000);
}

void PidWatcher::wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

Status PidWatcher::watch(const std::string& key, pid_t pid) {
    unwatch(key);
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
        if (errno == ESRCH) {
            std::lock_guard lock(mu_);
            gone_[key] = pid;
            wake();
            return {};
        }
        return makeError("Cannot watch pid " + std::to_string(pid) + " (" + key +
                         "): pidfd_open: " + std::strerror(errno));
    }
    std::lock_guard lock(mu_);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        ::close(fd);
        return makeError("Cannot watch pid " + std::to_string(pid) + " (" + key +
                         "): epoll_ctl: " + std::strerror(err));
    }
    by_key_[key] = Entry{fd, pid};
    by_fd_[fd] = key;
    return {};
}

void PidWatcher::unwatch(const std::string& key) {
    std::lock_guard lock(mu_);
    gone_.erase(key);
    auto it = by_key_.find(key);
    if (it == by_key_.end())
        return;
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
    ::close(it->second.fd);
    by_fd_.erase(it->second.fd);
    by_key_.erase(it);
}

size_t PidWatcher::size() const {
    std::lock_guard lock(mu_);
    return by_key_.size();
}

void PidWatcher::run() {
    epoll_event events[16];
    for (;;) {
        int n = epoll_wait(epoll_fd_, events, 16, -1);
        const std::int64_t now = monotonicUs();
        if (n < 0 && errno != EINTR)
            return;
        std::vector<PidExit> fired;
        {
            std::lock_guard lock(mu_);
            if (stopping_)
                return;
            for (int i = 0; i < n; ++i) {
                int fd = events[i].data.fd;
                if (fd == wake_fd_) {
                    std::uint64_t v;
                    [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
                    continue;
                }
                auto it = by_fd_.find(fd);
                if (it == by_fd_.end())
                    continue; // unwatched meanwhile
                const std::string key = it->second;
                fired.push_back(PidExit{key, by_key_[key].pid, now, false});
                epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
                ::close(fd);
                by_fd_.erase(it);
                by_key_.erase(key);
            }
            for (auto& [key, pid] : gone_)
                fired.push_back(PidExit{key, pid, now, true});
            gone_.clear();
        }
        // Outside the lock, so a callback may call watch()/unwatch().
        for (const PidExit& e : fired)
            callback_(e);
    }
}

} // namespace pcloud::virt
