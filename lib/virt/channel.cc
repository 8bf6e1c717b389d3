#include "virt/channel.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

namespace pcloud::virt {

namespace {
std::int64_t monotonicUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}
constexpr std::uint64_t kWakeTag = 1, kTimerTag = 2, kChanTag = 3, kHubTag = 4;
} // namespace

const char* toString(ChannelEventKind k) {
    switch (k) {
    case ChannelEventKind::Connected:
        return "connected";
    case ChannelEventKind::Eof:
        return "eof";
    case ChannelEventKind::ConnectFailed:
        return "connect-failed";
    case ChannelEventKind::HubConnected:
        return "hub-connected";
    case ChannelEventKind::HubClosed:
        return "hub-closed";
    }
    return "unknown";
}

ChannelConnection::ChannelConnection(ChannelOptions options, ChannelCallbacks callbacks)
    : options_(std::move(options)), callbacks_(std::move(callbacks)) {}

ChannelConnection::~ChannelConnection() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    if (thread_.joinable()) {
        wake();
        thread_.join();
    }
    if (chan_fd_ >= 0)
        ::close(chan_fd_);
    if (hub_fd_ >= 0)
        ::close(hub_fd_);
    if (timer_fd_ >= 0)
        ::close(timer_fd_);
    if (wake_fd_ >= 0)
        ::close(wake_fd_);
    if (epoll_fd_ >= 0)
        ::close(epoll_fd_);
}

Status ChannelConnection::start() {
    if (thread_.joinable())
        return makeError("channel " + options_.key + ": already started");
    if (options_.socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
        return makeError("channel " + options_.key +
                         ": socket path too long: " + options_.socket_path);
    }
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (epoll_fd_ < 0 || wake_fd_ < 0 || timer_fd_ < 0) {
        return makeError("channel " + options_.key + ": " + std::strerror(errno));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    ev.data.u64 = kTimerTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev);
    {
        std::lock_guard lock(mu_);
        want_reconnect_ = true;
    }
    thread_ = std::thread([this] { run(); });
    wake();
    return {};
}

void ChannelConnection::wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ChannelConnection::reconnect() {
    {
        std::lock_guard lock(mu_);
        want_reconnect_ = true;
    }
    wake();
}

bool ChannelConnection::send(std::string_view bytes) {
    {
        std::lock_guard lock(mu_);
        if (!connected_)
            return false;
        outbox_.append(bytes);
    }
    wake();
    return true;
}

bool ChannelConnection::connected() const {
    std::lock_guard lock(mu_);
    return connected_;
}

void ChannelConnection::emit(ChannelEventKind kind, std::string detail) {
    if (!callbacks_.on_event)
        return;
    ChannelEvent e;
    e.key = options_.key;
    e.kind = kind;
    e.detail = std::move(detail);
    e.monotonicUs = monotonicUs();
    callbacks_.on_event(e);
}

void ChannelConnection::armTimer(int ms) {
    itimerspec its{};
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = static_cast<long>(ms % 1000) * 1'000'000L;
    if (ms <= 0)
        its.it_value.tv_nsec = 1; // "now"; all-zero would disarm
    timerfd_settime(timer_fd_, 0, &its, nullptr);
}

Result<int> connectChannelSocket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        std::string err = std::strerror(errno);
        if (fd >= 0)
            ::close(fd);
        return makeError(path + ": " + err);
    }
    return fd;
}

void ChannelConnection::tryConnect() {
    if (chan_fd_ >= 0)
        return;
    auto conn = connectChannelSocket(options_.socket_path);
    if (!conn) {
        if (!reported_connect_failure_) {
            reported_connect_failure_ = true;
            emit(ChannelEventKind::ConnectFailed, conn.error().message);
        }
        if (options_.retry_ms > 0)
            armTimer(options_.retry_ms);
        return;
    }
    chan_fd_ = *conn;
    reported_connect_failure_ = false;
    to_hub_.clear();
    to_chan_.clear();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kChanTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, chan_fd_, &ev);
    {
        std::lock_guard lock(mu_);
        connected_ = true;
        outbox_.clear();
    }
    emit(ChannelEventKind::Connected, options_.socket_path);
    if (options_.hub_port > 0)
        connectHub();
}

void ChannelConnection::connectHub() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(options_.hub_port));
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || inet_pton(AF_INET, options_.hub_host.c_str(), &addr.sin_addr) != 1 ||
        (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 &&
         errno != EINPROGRESS)) {
        std::string err =
            fd < 0 ? std::strerror(errno) : (errno ? std::strerror(errno) : "bad hub address");
        if (fd >= 0)
            ::close(fd);
        emit(ChannelEventKind::HubClosed,
             options_.hub_host + ":" + std::to_string(options_.hub_port) + ": " + err);
        closeAll(true, options_.hub_retry_ms);
        return;
    }
    hub_fd_ = fd;
    hub_connecting_ = true;
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLRDHUP;
    ev.data.u64 = kHubTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, hub_fd_, &ev);
}

void ChannelConnection::closeAll(bool scheduleRetry, int retryMs) {
    if (chan_fd_ >= 0) {
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, chan_fd_, nullptr);
        ::close(chan_fd_);
        chan_fd_ = -1;
    }
    if (hub_fd_ >= 0) {
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, hub_fd_, nullptr);
        ::close(hub_fd_);
        hub_fd_ = -1;
    }
    hub_connecting_ = false;
    to_hub_.clear();
    to_chan_.clear();
    {
        std::lock_guard lock(mu_);
        connected_ = false;
        outbox_.clear();
    }
    if (scheduleRetry && retryMs > 0)
        armTimer(retryMs);
}

void ChannelConnection::updateInterest() {
    const bool relay = options_.hub_port > 0;
    if (chan_fd_ >= 0) {
        epoll_event ev{};
        ev.events = EPOLLRDHUP;
        if (!relay || to_hub_.size() < options_.max_buffer)
            ev.events |= EPOLLIN;
        if (!to_chan_.empty())
            ev.events |= EPOLLOUT;
        ev.data.u64 = kChanTag;
        epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, chan_fd_, &ev);
    }
    if (hub_fd_ >= 0) {
        epoll_event ev{};
        ev.events = EPOLLRDHUP;
        if (hub_connecting_) {
            ev.events |= EPOLLOUT;
        } else {
            if (to_chan_.size() < options_.max_buffer)
                ev.events |= EPOLLIN;
            if (!to_hub_.empty())
                ev.events |= EPOLLOUT;
        }
        ev.data.u64 = kHubTag;
        epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, hub_fd_, &ev);
    }
}

// Reads what is available from fd into out (bounded). Returns false on error.
bool ChannelConnection::pump(int fd, std::string& out, bool& eof, std::string& err) {
    char buf[16384];
    while (out.size() < options_.max_buffer) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0) {
            eof = true;
            return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true;
        if (errno == EINTR)
            continue;
        err = std::strerror(errno);
        return false;
    }
    return true;
}

bool ChannelConnection::flush(int fd, std::string& buf, std::string& err) {
    while (!buf.empty()) {
        ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
        if (n > 0) {
            buf.erase(0, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n < 0 && errno == EINTR)
            continue;
        err = std::strerror(errno);
        return false;
    }
    return true;
}

void ChannelConnection::run() {
    epoll_event events[8];
    const bool relay = options_.hub_port > 0;
    for (;;) {
        int n = epoll_wait(epoll_fd_, events, 8, -1);
        if (n < 0 && errno != EINTR)
            return;
        bool connectNow = false;
        {
            std::lock_guard lock(mu_);
            if (stopping_)
                return;
            if (want_reconnect_) {
                want_reconnect_ = false;
                connectNow = true;
            }
            if (!outbox_.empty()) {
                to_chan_.append(outbox_);
                outbox_.clear();
            }
        }
        for (int i = 0; i < n; ++i) {
            const std::uint64_t tag = events[i].data.u64;
            const std::uint32_t ev = events[i].events;
            if (tag == kWakeTag) {
                std::uint64_t v;
                [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
            } else if (tag == kTimerTag) {
                std::uint64_t v;
                [[maybe_unused]] ssize_t r = ::read(timer_fd_, &v, sizeof v);
                connectNow = true;
            } else if (tag == kChanTag && chan_fd_ >= 0) {
                std::string err;
                bool eof = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
                if (!eof && (ev & EPOLLIN)) {
                    std::string data;
                    std::string& sink = relay ? to_hub_ : data;
                    if (!pump(chan_fd_, sink, eof, err))
                        eof = true;
                    if (!relay && !data.empty() && callbacks_.on_data)
                        callbacks_.on_data(data);
                }
                if (!eof && (ev & EPOLLOUT) && !flush(chan_fd_, to_chan_, err))
                    eof = true;
                if (eof) {
                    closeAll(true, options_.retry_ms);
                    emit(ChannelEventKind::Eof, err.empty() ? "peer closed" : err);
                    continue;
                }
            } else if (tag == kHubTag && hub_fd_ >= 0) {
                std::string err;
                bool closed = false;
                if (hub_connecting_ && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                    int soerr = 0;
                    socklen_t len = sizeof soerr;
                    getsockopt(hub_fd_, SOL_SOCKET, SO_ERROR, &soerr, &len);
                    if (soerr != 0) {
                        err = std::strerror(soerr);
                        closed = true;
                    } else {
                        hub_connecting_ = false;
                        emit(ChannelEventKind::HubConnected,
                             options_.hub_host + ":" + std::to_string(options_.hub_port));
                    }
                } else {
                    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                        bool eof = false;
                        if (!pump(hub_fd_, to_chan_, eof, err) || eof)
                            closed = true;
                    }
                    if (!closed && (ev & EPOLLOUT) && !flush(hub_fd_, to_hub_, err))
                        closed = true;
                }
                if (closed) {
                    // Give the guest what the hub said last, then end both sides.
                    std::string ignored;
                    if (chan_fd_ >= 0)
                        flush(chan_fd_, to_chan_, ignored);
                    closeAll(true, options_.hub_retry_ms);
                    emit(ChannelEventKind::HubClosed, err.empty() ? "hub closed" : err);
                    continue;
                }
            }
        }
        if (connectNow)
            tryConnect();
        // Move what is buffered as far as it goes without waiting for another event.
        std::string err;
        if (chan_fd_ >= 0 && !to_chan_.empty() && !flush(chan_fd_, to_chan_, err)) {
            closeAll(true, options_.retry_ms);
            emit(ChannelEventKind::Eof, err);
        }
        if (hub_fd_ >= 0 && !hub_connecting_ && !to_hub_.empty() && !flush(hub_fd_, to_hub_, err)) {
            closeAll(true, options_.hub_retry_ms);
            emit(ChannelEventKind::HubClosed, err);
        }
        updateInterest();
    }
}

} // namespace pcloud::virt
