#pragma once
// ChannelConnection: the host side of a guest's org.pcloud.agent.0 virtio-serial channel,
// i.e. a client of the unix socket QEMU binds for it.
//
// Two jobs:
//  - Crash suspicion. When QEMU dies, the kernel closes its end of the socket and we read
//    EOF at once (the same few ms as the pidfd, long before libvirt's STOPPED event). EOF
//    alone is a suspicion, not proof: QEMU closes the socket on any exit.
//  - Relay. With a hub port set, every byte from the guest goes to a TCP connection to the
//    AMQP hub (127.0.0.1:PORT) and back, so the in-guest agent speaks plain AMQP through
//    the port without a network route. One channel connection = one hub connection: when
//    either side closes, both are closed, so the hub sees the AMQP connection end and the
//    guest sees POLLHUP and starts a fresh AMQP connection after we reconnect. Flow is
//    bounded: a side is not read while the other side's buffer is full.
//    Without a hub port, bytes from the guest go to onData and send() writes to the guest.
//    (dped no longer relays: it terminates the agent's AMQP on the channel itself with
//    dped::ChannelPeer. The relay stays for the virt tests and bench/virt.)
//
// Everything runs on one epoll thread per ChannelConnection; callbacks run on it. After EOF
// (or a failed connect) it reconnects when reconnect() is called (dped does so on the
// domain's STARTED event), and also every retry_ms if that is set (a timerfd, not a sleep).

#include "common/result.h"

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace pcloud::virt {

enum class ChannelEventKind {
    Connected,     // connected to the guest channel socket
    Eof,           // the channel socket closed under us (QEMU exited?): a crash suspicion
    ConnectFailed, // could not connect (first failure of each disconnected period only)
    HubConnected,  // relay: TCP connection to the hub is up
    HubClosed,     // relay: the hub closed or refused; the channel is closed too, then retried
};
const char* toString(ChannelEventKind kind);

struct ChannelEvent {
    std::string key; // ChannelOptions::key (e.g. the domain name)
    ChannelEventKind kind = ChannelEventKind::Eof;
    std::string detail;           // errno text etc.
    std::int64_t monotonicUs = 0; // steady clock when observed
};

struct ChannelOptions {
    std::string key;
    std::string socket_path;
    std::string hub_host = "127.0.0.1";
    int hub_port = 0;       // 0 = no relay
    int retry_ms = 0;       // 0 = reconnect only on reconnect()
    int hub_retry_ms = 200; // relay: delay before reconnecting after the hub went away
    size_t max_buffer = 256 * 1024;
};

struct ChannelCallbacks {
    std::function<void(const ChannelEvent&)> on_event{};
    std::function<void(std::string_view)> on_data{}; // only without relay
};

// A non-blocking, close-on-exec connection to the unix socket QEMU binds for a guest
// channel: the fd, or the error text ("PATH: reason"). Shared by the relay below and dped's
// ChannelPeer.
Result<int> connectChannelSocket(const std::string& path);

class ChannelConnection {
public:
    ChannelConnection(ChannelOptions options, ChannelCallbacks callbacks);
    ~ChannelConnection();
    ChannelConnection(const ChannelConnection&) = delete;
    ChannelConnection& operator=(const ChannelConnection&) = delete;

    // Starts the thread and the first connect attempt.
    Status start();
    // Connect now if not connected (no-op when connected).
    void reconnect();
    // Without relay: queue bytes for the guest. False when not connected (bytes dropped).
    bool send(std::string_view bytes);
    bool connected() const;
    const ChannelOptions& options() const { return options_; }

private:
    void run();
    void wake();
    void emit(ChannelEventKind kind, std::string detail = {});
    void tryConnect();
    void connectHub();
    void closeAll(bool scheduleRetry, int retryMs);
    void armTimer(int ms);
    void updateInterest();
    bool pump(int fd, std::string& out, bool& eof, std::string& err);
    bool flush(int fd, std::string& buf, std::string& err);

    ChannelOptions options_;
    ChannelCallbacks callbacks_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    int timer_fd_ = -1;
    std::thread thread_;

    // Loop-thread state.
    int chan_fd_ = -1;
    int hub_fd_ = -1;
    bool hub_connecting_ = false;
    bool reported_connect_failure_ = false;
    std::string to_hub_;  // guest -> hub
    std::string to_chan_; // hub (or send()) -> guest

    // Shared with other threads.
    mutable std::mutex mu_;
    bool stopping_ = false;       // guarded by mu_
    bool want_reconnect_ = false; // guarded by mu_
    bool connected_ = false;      // guarded by mu_
    std::string outbox_;          // guarded by mu_ (send())
};

} // namespace pcloud::virt
