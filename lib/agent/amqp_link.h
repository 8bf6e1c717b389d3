#pragma once
// AmqpLink: the agent's AMQP 1.0 connection, driven by proton::io::connection_driver (no
// proton container, no threads) over either a TCP socket or a virtio-serial port fd, inside
// the agent's poll() loop. Bytes in, bytes out, tick(now).
//
// TCP: non-blocking connect, reconnect with exponential backoff (100 ms .. 5 s).
// virtio: the port is found by name under /sys/class/virtio-ports/*/name. While no host side
// is connected, poll() reports POLLHUP: the AMQP state is dropped and a fresh connection (new
// protocol header) starts once POLLHUP clears; the port is re-checked with a short backoff.
//
// On every connection it opens a sender to <prefix>pcloud.reports.<assembly> and a receiver
// from <prefix>pcloud.agent.<assembly>, tells AgentCore (which queues hello), and drains
// AgentCore's outbox as credit allows.

#include "agent/agent_core.h"
#include "agent/config.h"
#include "agent/event_loop.h"

#include <proton/connection.hpp>
#include <proton/io/connection_driver.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/sender.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace pcloud::agent {

// /sys/class/virtio-ports/*/name == name -> "/dev/vportNpM"; empty when absent.
std::string findVirtioPort(const std::string& name,
                           const std::string& sysRoot = "/sys/class/virtio-ports",
                           const std::string& devRoot = "/dev");

class AmqpLink : public Source, private proton::messaging_handler {
public:
    AmqpLink(Endpoint endpoint, std::string reportsAddress, std::string commandsAddress,
             std::string containerId, std::size_t maxMessageSize, AgentCore& core,
             const Clock& clock);
    ~AmqpLink() override;

    bool open() const { return driver_ != nullptr && sender_open_; }
    // The AMQP user-id set on every report: who this agent logged in as, which the broker
    // checks (docs/security.md "Senders"). "" = none (a plain bus).
    void sendAs(std::string userId) { user_id_ = std::move(userId); }
    // Commands are passed on only when `allowed(user-id)`; the others are dropped, logged
    // once per sender (the first 64) and counted. Unset = every command.
    void acceptCommandsFrom(std::function<bool(const std::string&)> allowed, std::string expected) {
        allowed_ = std::move(allowed);
        expected_ = std::move(expected);
    }
    std::uint64_t refusedSenders() const { return refused_senders_; }
    std::uint64_t connects() const { return connects_; }

    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

private:
    enum class State { Idle, Connecting, WaitHost, Open };

    void startConnect(Millis now);
    void startDriver(Millis now);
    void teardown(const std::string& why, Millis now);
    void scheduleRetry(Millis now);
    void readInput(Millis now);
    void writeOutput(Millis now);
    void pump(Millis now); // dispatch events, move the outbox into the sender, write
    void checkPartialDelivery(Millis now);

    // proton::messaging_handler
    void on_connection_open(proton::connection& c) override;
    void on_sender_open(proton::sender& s) override;
    void on_sendable(proton::sender& s) override;
    void on_message(proton::delivery& d, proton::message& m) override;
    void on_transport_error(proton::transport& t) override;
    void on_connection_error(proton::connection& c) override;
    void on_receiver_close(proton::receiver& r) override;
    void on_sender_close(proton::sender& s) override;

    Endpoint ep_;
    std::string reports_addr_, commands_addr_, container_id_;
    std::size_t max_message_size_;
    AgentCore& core_;
    const Clock& clock_;

    State state_ = State::Idle;
    int fd_ = -1;
    std::unique_ptr<proton::io::connection_driver> driver_;
    proton::sender sender_;
    proton::receiver receiver_;
    bool sender_open_ = false;
    bool want_write_ = false;
    bool failed_ = false;
    std::string fail_reason_;
    Millis retry_at_ = 0;
    Millis backoff_ = 100;
    Millis next_tick_ = kNever;
    std::size_t poll_index_ = 0;
    bool polled_ = false;
    std::uint64_t connects_ = 0;
    std::string virtio_path_;
    std::string user_id_;
    std::function<bool(const std::string&)> allowed_;
    std::string expected_;
    std::set<std::string> refused_logged_;
    std::uint64_t refused_senders_ = 0;
};

} // namespace pcloud::agent
