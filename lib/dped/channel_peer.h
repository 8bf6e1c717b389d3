#pragma once
// ChannelPeer: dped's end of a guest's org.pcloud.agent.0 virtio-serial channel. dped is the
// in-guest agent's AMQP 1.0 peer itself: it terminates the agent's connection over the
// unix socket QEMU binds for the channel (proton::io::connection_driver, no container), so
// the agent's heartbeats and reports reach the reactor without passing through the hub, and
// keep arriving while the hub or cped is down. The agent's protocol is unchanged: it opens
// a sender to pcloud.reports.<assembly> and a receiver from pcloud.agent.<assembly>.
//
// Two layers:
//  - AgentSession: the AMQP server side of one agent connection, without I/O (bytes in,
//    bytes out, tick), so tests can pair it with a client connection_driver in memory.
//  - ChannelPeer: the socket (connect, EOF = crash suspicion, reconnect, as the old byte
//    relay did) and an AgentSession per socket connection, on its own epoll thread.
//
// Trust boundary: the guest is untrusted. A session accepts only the two link addresses of
// its own assembly (anything else is refused with amqp:unauthorized-access), drops a hello
// naming another assembly (logged once per connection), caps frames (max-frame-size on
// open), messages and buffered bytes, and stops reading the socket while the reactor has
// too many of its reports unprocessed (throttle, logged once per burst). A connection that
// breaks the protocol is dropped, logged once per burst, and the socket is reconnected after
// a pause, so the agent starts a fresh AMQP connection.
//
// A restarted agent: QEMU's socket stays connected when the guest closes the port, so a
// killed agent's connection never ends on our side and its successor's AMQP protocol header
// arrives in the same byte stream, perhaps after half a frame of the old one. ChannelPeer
// looks for that header in what it reads once a session has had bytes: from it on, the bytes
// go to a new session (the old one is dropped with whatever it had), so the new agent is
// answered at once, with no drop, no reconnect pause and no wait for the agent to see the
// host side go away. A header split across two reads is not seen; the new bytes then break
// the old session's framing and the drop-and-reconnect path above takes over.

#include "common/clock.h"
#include "common/result.h"
#include "virt/channel.h"

#include <proton/connection.hpp>
#include <proton/io/connection_driver.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/sender.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pcloud::dped {

struct AgentSessionOptions {
    std::string assembly;                // for logs
    std::vector<std::string> keys;       // names the agent may use: the assembly's name and uuid
    std::string address_prefix;          // also accepted in front of the addresses (e.g. "/queue/")
    std::uint32_t max_frame = 64 * 1024; // max-frame-size we announce; larger frames end it
    std::size_t max_message = 256 * 1024; // one report, bytes
    std::size_t max_outbox = 256;         // commands waiting for the agent's credit
    std::uint32_t credit = 32;            // reports the agent may send ahead
    Millis idle_timeout = 30'000;         // AMQP idle timeout we announce
};

// Counters of what a session (or a peer, summed over its sessions) refused or dropped.
struct AgentSessionStats {
    std::uint64_t reports = 0;           // reports handed on
    std::uint64_t refused_links = 0;     // links to other addresses, refused
    std::uint64_t mismatched_hellos = 0; // hellos naming another assembly, dropped
    std::uint64_t commands_sent = 0;
    std::uint64_t commands_dropped = 0; // outbox full or no command link
};

class AgentSession : private proton::messaging_handler {
public:
    struct Callbacks {
        std::function<void(std::string body)> on_report{};
        std::function<void(bool attached)> on_attached{}; // both links open / closed
    };
    AgentSession(AgentSessionOptions options, Callbacks callbacks);
    ~AgentSession() override;
    AgentSession(const AgentSession&) = delete;
    AgentSession& operator=(const AgentSession&) = delete;

    // Bytes from the agent: fill readBuffer() (its size is the most it takes now), then
    // readDone(n). readClose() at EOF.
    proton::io::mutable_buffer readBuffer();
    void readDone(std::size_t n);
    void readClose();
    // Bytes for the agent.
    proton::io::const_buffer writeBuffer();
    void writeDone(std::size_t n);
    // Runs proton's timers (idle timeout); returns the next deadline (ms, 0 = none).
    Millis tick(Millis now);
    // Processes what arrived, moves queued commands into the command link. Returns false once
    // the connection is over (closed, or a protocol error: see error()).
    bool process();
    // Stops (false) or resumes (true) granting the agent credit for reports.
    void setCreditAllowed(bool allowed);
    // Queues a command body for the agent. False (and counted) when no command link is open
    // or the outbox is full.
    bool send(const std::string& body, const std::string& correlationId);
    bool attached() const { return reports_open_ && commands_open_; }
    // Why the connection ended; empty for a clean AMQP close.
    const std::string& error() const { return error_; }
    // True when the connection ended because the peer broke the protocol or a limit.
    bool misbehaved() const { return misbehaved_; }
    const AgentSessionStats& stats() const { return stats_; }

private:
    bool allowed(const std::string& address, const std::string& kind) const;
    void refuse(proton::link& link, const std::string& address);
    void flushOutbox();
    void grantCredit();
    void checkPartialDelivery();
    void fail(const std::string& why, bool misbehaved);
    void notifyAttached();

    void on_connection_open(proton::connection& c) override;
    void on_receiver_open(proton::receiver& r) override;
    void on_sender_open(proton::sender& s) override;
    void on_sendable(proton::sender& s) override;
    void on_message(proton::delivery& d, proton::message& m) override;
    void on_receiver_close(proton::receiver& r) override;
    void on_sender_close(proton::sender& s) override;
    void on_transport_error(proton::transport& t) override;
    void on_connection_error(proton::connection& c) override;
    void on_error(const proton::error_condition& e) override;

    AgentSessionOptions opt_;
    Callbacks cb_;
    std::unique_ptr<proton::io::connection_driver> driver_;
    proton::receiver reports_;
    proton::sender commands_;
    bool reports_open_ = false;
    bool commands_open_ = false;
    bool was_attached_ = false;
    bool credit_allowed_ = true;
    bool hello_mismatch_logged_ = false;
    bool misbehaved_ = false;
    std::string error_;
    struct Out {
        std::string body;
        std::string correlation_id;
    };
    std::deque<Out> outbox_;
    AgentSessionStats stats_;
};

struct ChannelPeerOptions {
    std::string socket_path;
    AgentSessionOptions session;
    int retry_ms = 1000;                  // reconnect period while the socket cannot be connected
    int reopen_ms = 200;                  // after the agent's connection ended cleanly
    int misbehave_ms = 1000;              // after we dropped a connection that broke the protocol
    std::size_t max_pending_reports = 64; // handed on, not yet reportDone()
    std::size_t max_pending_bytes = 1 << 20; // the same in bytes
    std::size_t max_write_buffer = 1 << 20;  // bytes for the agent not yet written
    Millis quiet_burst_ms = 10'000; // a throttle/drop this long after the last starts a burst
};

struct ChannelPeerCallbacks {
    // Connected / Eof (QEMU closed the socket: a crash suspicion) / ConnectFailed.
    std::function<void(const virt::ChannelEvent&)> on_event{};
    // A report from the agent, on the peer's thread. The receiver must call reportDone()
    // with body.size() once it has processed it: until then it counts against the caps.
    std::function<void(std::string body)> on_report{};
};

class ChannelPeer {
public:
    ChannelPeer(ChannelPeerOptions options, ChannelPeerCallbacks callbacks);
    ~ChannelPeer();
    ChannelPeer(const ChannelPeer&) = delete;
    ChannelPeer& operator=(const ChannelPeer&) = delete;

    Status start();
    void reconnect(); // connect now if not connected
    // Queues a command for the agent (thread-safe). Fails when no agent is attached.
    Status send(const std::string& body, const std::string& correlationId);
    void reportDone(std::size_t bytes); // thread-safe
    bool connected() const;             // the socket is connected
    bool agentAttached() const;         // an agent has both links open
    const ChannelPeerOptions& options() const { return opt_; }

    struct Stats {
        AgentSessionStats session; // summed over the sessions so far
        std::uint64_t sessions = 0;
        std::uint64_t throttles = 0;           // times reading stopped for the caps
        std::uint64_t dropped_connections = 0; // connections ended for misbehaving
        std::uint64_t restarted_sessions = 0;  // a new agent's header in a session's stream
        std::size_t pending_reports = 0;
        std::size_t pending_bytes = 0;
    };
    Stats stats() const;

private:
    void run();
    void wake();
    void emit(virt::ChannelEventKind kind, std::string detail);
    void tryConnect();
    void newSession();
    void restartSession();
    bool feed(const char* data, std::size_t n); // into session_, processing as it goes
    void foldSessionStats();
    void closeSocket(int retryMs);
    void armTimer(Millis atMono);
    void updateInterest();
    bool throttled() const;
    void readSocket(bool& eof, std::string& err);
    bool writeSocket(std::string& err);
    void endSession(const std::string& why, bool misbehaved);
    void noteBurst(bool drop, const std::string& detail);

    ChannelPeerOptions opt_;
    ChannelPeerCallbacks cb_;
    int epoll_fd_ = -1, wake_fd_ = -1, timer_fd_ = -1;
    std::thread thread_;

    // Peer-thread state.
    int fd_ = -1;
    std::unique_ptr<AgentSession> session_;
    std::uint64_t session_bytes_in_ = 0; // read into session_ so far
    Millis last_restart_log_ = 0;        // restartSession()'s bounded log line
    std::uint64_t restarts_not_logged_ = 0;
    bool reported_connect_failure_ = false;
    std::atomic<bool> reading_{true}; // read by reportDone() on other threads
    Millis retry_at_ = 0;             // monotonic ms; 0 = none
    Millis tick_at_ = 0;              // monotonic ms; 0 = none
    Millis last_burst_event_ = -1'000'000'000;
    std::uint64_t burst_suppressed_ = 0;

    // Shared.
    mutable std::mutex mu_;
    bool stopping_ = false;
    bool want_reconnect_ = false;
    bool connected_ = false;
    bool attached_ = false;
    std::deque<std::pair<std::string, std::string>> to_send_; // (body, correlation id)
    Stats stats_;
    std::atomic<std::size_t> pending_reports_{0};
    std::atomic<std::size_t> pending_bytes_{0};
};

} // namespace pcloud::dped
