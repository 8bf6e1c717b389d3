#pragma once
// Helpers for the bus tests: a hub on a free loopback port, and waiting on conditions with a
// deadline (no fixed sleeps: the condition is polled in short steps until it holds).

#include "bus/client.h"
#include "bus/hub.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
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

inline std::string numbered(int i) {
    return R"({"v":1,"type":"test","n":)" + std::to_string(i) + "}";
}

} // namespace pcloud::bus::test
