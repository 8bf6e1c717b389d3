#pragma once
// A tiny AMQP 1.0 peer for the agent's integration tests and benchmark: a Proton C++
// container on its own thread listening on 127.0.0.1. It records every message the agent
// sends (with its arrival time) and can send commands to the agent's receiver.

#include "proto/agent_messages.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::testing {

class TestPeer {
public:
    using Clock = std::chrono::steady_clock;
    struct Received {
        std::string address;
        std::string body;
        std::string correlation_id;
        Clock::time_point at;
        proto::Report report; // decoded; type empty if it did not decode
    };

    // port 0 picks a free port. Throws if the listener cannot be opened.
    explicit TestPeer(int port = 0);
    ~TestPeer();
    TestPeer(const TestPeer&) = delete;
    TestPeer& operator=(const TestPeer&) = delete;

    int port() const { return port_; }
    std::string url() const { return "amqp://127.0.0.1:" + std::to_string(port_); }

    // Waits until a received message (at or after the cursor) matches; moves the cursor
    // past it. nullopt on timeout.
    std::optional<Received> waitFor(const std::function<bool(const Received&)>& pred,
                                    std::chrono::milliseconds timeout);
    // Skip everything received so far.
    void skipAll();
    // Whether the agent's command receiver is attached.
    bool waitCommandLink(std::chrono::milliseconds timeout);
    // Sends a body to the agent (on its command link). False if no link.
    bool send(const std::string& body, const std::string& correlationId = {});
    std::size_t receivedCount() const;

    // Helpers on top of waitFor.
    std::optional<proto::UnitState>
    waitService(const std::string& unit, const std::function<bool(const proto::UnitState&)>& pred,
                std::chrono::milliseconds timeout, Clock::time_point* at = nullptr);
    std::optional<proto::Hello> waitHello(std::chrono::milliseconds timeout);
    std::optional<proto::Reply> waitReply(const std::string& id, std::chrono::milliseconds timeout);

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
    int port_ = 0;
};

// Builds a command body.
std::string commandBody(const std::string& type, const std::string& id,
                        const std::string& unit = {}, long deadlineMs = 30'000);

} // namespace pcloud::testing
