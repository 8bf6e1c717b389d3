#include "virt/pid_watcher.h"

#include "common/log.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <sstream>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
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

// The connector reports pids as the host's initial pid namespace numbers them, which are
// not ours inside a container: there, its events would name unrelated processes.
// "NSpid:" in /proc/self/status lists our pid in each namespace from the host's down.
bool inInitialPidNamespace() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("NSpid:", 0) != 0)
            continue;
        std::istringstream words(line.substr(6));
        int count = 0;
        for (std::string w; words >> w;)
            ++count;
        return count == 1;
    }
    return false; // a kernel too old to say: don't guess
}

// Sends PROC_CN_MCAST_LISTEN or _IGNORE (the kernel counts listeners: each listen needs
// its ignore, or the kernel keeps generating events for nobody).
bool sendProcConnectorOp(int fd, proc_cn_mcast_op op) {
    // The kernel's wire format: nlmsghdr, then cn_msg, then the op.
    alignas(nlmsghdr) char buf[NLMSG_SPACE(sizeof(cn_msg) + sizeof(op))] = {};
    auto* nh = reinterpret_cast<nlmsghdr*>(buf);
    nh->nlmsg_len = NLMSG_LENGTH(sizeof(cn_msg) + sizeof(op));
    nh->nlmsg_type = NLMSG_DONE;
    auto* cn = static_cast<cn_msg*>(NLMSG_DATA(nh));
    cn->id.idx = CN_IDX_PROC;
    cn->id.val = CN_VAL_PROC;
    cn->len = sizeof(op);
    std::memcpy(cn->data, &op, sizeof(op));
    return ::send(fd, buf, nh->nlmsg_len, 0) == static_cast<ssize_t>(nh->nlmsg_len);
}

// The kernel's process events, or -1 where they cannot be had (not root, not the host's
// pid namespace, a network namespace other than the host's, no CONFIG_PROC_EVENTS). Raw
// netlink rather than libnl: connector messages all carry type NLMSG_DONE, which libnl
// takes for the end of a dump rather than for data.
int openProcConnector() {
    if (!inInitialPidNamespace())
        return -1;
    int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
    if (fd < 0)
        return -1;
    // Every exit of every thread on the host comes through: room for a fork storm. Where
    // the buffer overflows anyway, events are lost and the pidfds report those exits.
    int size = 4 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    sockaddr_nl self{};
    self.nl_family = AF_NETLINK;
    self.nl_groups = CN_IDX_PROC;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof self) < 0 ||
        !sendProcConnectorOp(fd, PROC_CN_MCAST_LISTEN)) {
        ::close(fd);
        return -1;
    }
    return fd;
}
} // namespace

PidWatcher::PidWatcher(Callback callback) : callback_(std::move(callback)) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd_;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    proc_fd_ = openProcConnector();
    if (proc_fd_ >= 0) {
        ev.data.fd = proc_fd_;
        if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, proc_fd_, &ev) < 0) {
            sendProcConnectorOp(proc_fd_, PROC_CN_MCAST_IGNORE);
            ::close(proc_fd_);
            proc_fd_ = -1;
        }
    }
    if (proc_fd_ < 0)
        PCLOUD_LOG(Warning,
                   "No kernel process events (needs root in the host's pid namespace): a "
                   "crashed qemu is seen only once the kernel has freed its memory",
                   {});
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
    if (proc_fd_ >= 0) {
        sendProcConnectorOp(proc_fd_, PROC_CN_MCAST_IGNORE);
        ::close(proc_fd_);
    }
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
    by_pid_[pid] = key;
    return {};
}

void PidWatcher::unwatch(const std::string& key) {
    std::lock_guard lock(mu_);
    gone_.erase(key);
    forgetLocked(key);
}

void PidWatcher::forgetLocked(const std::string& key) {
    auto it = by_key_.find(key);
    if (it == by_key_.end())
        return;
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
    ::close(it->second.fd);
    by_fd_.erase(it->second.fd);
    if (auto p = by_pid_.find(it->second.pid); p != by_pid_.end() && p->second == key)
        by_pid_.erase(p);
    by_key_.erase(it);
}

void PidWatcher::drainProcEvents(std::int64_t now, std::vector<PidExit>& fired) {
    alignas(nlmsghdr) char buf[16384];
    // A fork storm elsewhere on the host can fill the socket: read a bounded batch, then let
    // epoll (level-triggered) come back, so pidfds and watch() are not held up behind it.
    for (int batch = 0; batch < 64; ++batch) {
        sockaddr_nl from{};
        socklen_t fromLen = sizeof from;
        ssize_t n =
            ::recvfrom(proc_fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fromLen);
        if (n < 0 && (errno == EINTR || errno == ENOBUFS))
            continue; // ENOBUFS: events were lost; their pidfds still report them
        if (n <= 0)
            return; // EAGAIN: drained
        if (from.nl_pid != 0)
            continue; // only the kernel speaks for the kernel
        auto len = static_cast<unsigned>(n);
        for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, len);
             nh = NLMSG_NEXT(nh, len)) {
            // The union of proc_event differs between kernels: what an exit needs is enough.
            constexpr std::size_t kExitEvent =
                offsetof(proc_event, event_data) + sizeof(proc_event::event_data.exit);
            if (nh->nlmsg_type != NLMSG_DONE ||
                nh->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg) + kExitEvent))
                continue;
            const auto* cn = static_cast<const cn_msg*>(NLMSG_DATA(nh));
            if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC || cn->len < kExitEvent ||
                NLMSG_LENGTH(sizeof(cn_msg) + cn->len) > nh->nlmsg_len)
                continue;
            proc_event ev{};
            std::memcpy(&ev, cn->data, std::min<std::size_t>(cn->len, sizeof ev));
            if (ev.what != proc_event::PROC_EVENT_EXIT)
                continue;
            // exit_code is the wait status: a signal number in the low 7 bits means the
            // thread died of that signal, and so does the whole process. exit(n) leaves
            // them 0, so a thread that ends normally in a live process is not a death. The
            // one signal that can end a single thread is SIGSYS (seccomp's KILL_THREAD):
            // not a proof, the pidfd decides.
            const int signal = static_cast<int>(ev.event_data.exit.exit_code & 0x7f);
            if (signal == 0 || signal == 0x7f || signal == SIGSYS)
                continue;
            auto it = by_pid_.find(ev.event_data.exit.process_tgid);
            if (it == by_pid_.end())
                continue;
            const std::string key = it->second;
            fired.push_back(PidExit{key, it->first, now, false, signal});
            forgetLocked(key);
        }
    }
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
                if (fd == proc_fd_) {
                    drainProcEvents(now, fired);
                    continue;
                }
                auto it = by_fd_.find(fd);
                if (it == by_fd_.end())
                    continue; // unwatched meanwhile (or reported by the connector)
                const std::string key = it->second;
                fired.push_back(PidExit{key, by_key_[key].pid, now, false});
                forgetLocked(key);
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
