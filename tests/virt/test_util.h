#pragma once
// Helpers shared by the virt tests: deadline waits on real events (no fixed sleeps as
// assertions), a recording listener, and a tiny loopback TCP server.

#include "support/test_support.h"
#include "virt/channel.h"
#include "virt/hypervisor.h"

#include <arpa/inet.h>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <sys/select.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace pcloud::virt::testing {

// Collects things from other threads; wait() blocks until a predicate holds or a deadline.
template <typename T> class Recorder {
public:
    void add(T item) {
        {
            std::lock_guard lock(mu_);
            items_.push_back(std::move(item));
        }
        cv_.notify_all();
    }
    // Waits until some recorded item matches; returns it (or nullopt at the deadline).
    std::optional<T> waitFor(const std::function<bool(const T&)>& match,
                             std::chrono::milliseconds deadline) {
        std::unique_lock lock(mu_);
        std::optional<T> found;
        cv_.wait_for(lock, deadline, [&] {
            for (const T& i : items_) {
                if (match(i)) {
                    found = i;
                    return true;
                }
            }
            return false;
        });
        return found;
    }
    std::vector<T> snapshot() {
        std::lock_guard lock(mu_);
        return items_;
    }
    void clear() {
        std::lock_guard lock(mu_);
        items_.clear();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<T> items_;
};

class RecordingListener : public HypervisorListener {
public:
    void onDomainEvent(const DomainEvent& e) override { events.add(e); }
    void onInfrastructureDown(const std::string& reason) override { infra.add("down: " + reason); }
    void onInfrastructureUp() override { infra.add("up"); }
    Recorder<DomainEvent> events;
    Recorder<std::string> infra;
};

// Waits for the condition by re-checking it every few ms up to the deadline.
inline bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds deadline,
                       std::chrono::milliseconds step = std::chrono::milliseconds(20)) {
    auto end = std::chrono::steady_clock::now() + deadline;
    for (;;) {
        if (cond())
            return true;
        if (std::chrono::steady_clock::now() >= end)
            return false;
        std::this_thread::sleep_for(step);
    }
}

// A loopback TCP listener on an ephemeral port, accepting one connection at a time.
class LoopbackServer {
public:
    LoopbackServer() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::listen(fd_, 4);
        socklen_t len = sizeof a;
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
    }
    ~LoopbackServer() {
        if (client_ >= 0)
            ::close(client_);
        ::close(fd_);
    }
    int port() const { return port_; }
    // Accepts a connection within the deadline.
    bool accept(std::chrono::milliseconds deadline) {
        if (!readable(fd_, deadline))
            return false;
        if (client_ >= 0)
            ::close(client_);
        received_.clear(); // received() is per connection
        client_ = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        return client_ >= 0;
    }
    // Reads until `needle` has been seen or the deadline; returns everything read.
    std::string readUntil(const std::string& needle, std::chrono::milliseconds deadline) {
        auto end = std::chrono::steady_clock::now() + deadline;
        while (received_.find(needle) == std::string::npos) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !readable(client_, left))
                break;
            char buf[4096];
            ssize_t n = ::read(client_, buf, sizeof buf);
            if (n <= 0)
                break;
            received_.append(buf, static_cast<size_t>(n));
        }
        return received_;
    }
    bool write(const std::string& s) {
        return ::send(client_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
    }
    void closeClient() {
        if (client_ >= 0)
            ::close(client_);
        client_ = -1;
        received_.clear();
    }
    // True when the accepted client has closed (EOF) within the deadline.
    bool waitClientEof(std::chrono::milliseconds deadline) {
        auto end = std::chrono::steady_clock::now() + deadline;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !readable(client_, left))
                return false;
            char buf[4096];
            ssize_t n = ::read(client_, buf, sizeof buf);
            if (n <= 0)
                return true;
            received_.append(buf, static_cast<size_t>(n));
        }
    }
    const std::string& received() const { return received_; }

    static bool readable(int fd, std::chrono::milliseconds timeout) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        timeval tv{static_cast<time_t>(timeout.count() / 1000),
                   static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
        return ::select(fd + 1, &set, nullptr, nullptr, &tv) > 0;
    }

private:
    int fd_ = -1;
    int client_ = -1;
    int port_ = 0;
    std::string received_;
};

using pcloud::testsupport::freePort;

} // namespace pcloud::virt::testing
