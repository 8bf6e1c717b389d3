#pragma once
// Helpers for the bus tests: a hub on a free loopback port, and waiting on conditions with a
// deadline (no fixed sleeps: the condition is polled in short steps until it holds).

#include "bus/client.h"
#include "bus/hub.h"

#include <gtest/gtest.h>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/transport.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace pcloud::bus::test {

using namespace std::chrono_literals;

inline constexpr auto kDeadline = 10s;

inline bool waitUntil(const std::function<bool()>& cond,
                      std::chrono::milliseconds limit = kDeadline) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (cond())
            return true;
        std::this_thread::sleep_for(2ms);
    }
    return cond();
}

// Options for a plain amqp:// hub (the tests that are not about authentication).
inline HubOptions insecureOptions(HubOptions o = {}) {
    o.allowInsecure = true;
    return o;
}

inline std::string hubUrl(const Hub& hub) {
    return "amqp://127.0.0.1:" + std::to_string(hub.boundPort());
}

inline AddressCounters countersOf(const Hub& hub, const std::string& address) {
    auto all = hub.counters();
    auto it = all.find(address);
    return it == all.end() ? AddressCounters{} : it->second;
}

// Collects bodies received by a callback, thread-safely.
class Inbox {
public:
    MessageCallback callback() {
        return [this](const Message& m) {
            std::lock_guard lock(mutex_);
            messages_.push_back(m);
        };
    }
    std::size_t size() const {
        std::lock_guard lock(mutex_);
        return messages_.size();
    }
    std::vector<std::string> bodies() const {
        std::lock_guard lock(mutex_);
        std::vector<std::string> out;
        for (const auto& m : messages_)
            out.push_back(m.body);
        return out;
    }
    std::vector<Message> messages() const {
        std::lock_guard lock(mutex_);
        return messages_;
    }
    bool waitFor(std::size_t n, std::chrono::milliseconds limit = kDeadline) const {
        return waitUntil([&] { return size() >= n; }, limit);
    }

private:
    mutable std::mutex mutex_;
    std::vector<Message> messages_;
};

// Sends this process's stderr to a temporary file for the object's lifetime.
class StderrCapture {
public:
    StderrCapture() {
        char tmpl[] = "/tmp/pcloud-hub-log-XXXXXX";
        fd_ = ::mkstemp(tmpl);
        path_ = tmpl;
        std::fflush(stderr);
        saved_ = ::dup(2);
        ::dup2(fd_, 2);
    }
    ~StderrCapture() {
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    std::string text() const {
        std::string out;
        int fd = ::open(path_.c_str(), O_RDONLY);
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0)
            out.append(buf, static_cast<size_t>(n));
        ::close(fd);
        return out;
    }
    // The first line containing `needle`, waited for up to the deadline; "" if none came.
    std::string waitForLine(const std::string& needle) const {
        std::string found;
        waitUntil([&] {
            std::istringstream in(text());
            for (std::string line; std::getline(in, line);) {
                if (line.find(needle) != std::string::npos) {
                    found = line;
                    return true;
                }
            }
            return false;
        });
        return found;
    }

private:
    int fd_ = -1;
    int saved_ = -1;
    std::string path_;
};

inline std::string numbered(int i) {
    return R"({"v":1,"type":"test","n":)" + std::to_string(i) + "}";
}

// A Proton peer that connects once with the given options and records what happened.
class Probe : public proton::messaging_handler {
public:
    Probe(std::string url, proton::connection_options opts)
        : url_(std::move(url)), opts_(std::move(opts)) {}
    void on_container_start(proton::container& c) override { c.connect(url_, opts_); }
    void on_connection_open(proton::connection& c) override {
        opened = true;
        c.close();
    }
    void on_transport_error(proton::transport& t) override { error = t.error().what(); }
    void on_connection_error(proton::connection& c) override { error = c.error().what(); }
    // Runs until the connection is over (the container stops when it has none left).
    void run() {
        proton::container c(*this);
        c.run();
    }
    bool opened = false;
    std::string error;

private:
    std::string url_;
    proton::connection_options opts_;
};

} // namespace pcloud::bus::test
