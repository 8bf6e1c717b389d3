#pragma once
// RemoteNode: dped's view of one host's pcloud-node over the bus. It is the Hypervisor the
// reactor drives (each call is a node request, answered from the node's job lane) and the
// source of that host's events: libvirt lifecycle events, qemu exits seen by the node's
// pidfd watch, and the node's heartbeat.
//
// The node's heartbeat is an infrastructure signal, never a guest one: a node that is silent
// past `silence_ms` (or a lost bus) is reported as onInfrastructureDown, which the policy
// treats like a lost libvirt connection (nothing counted, nothing restarted). When it is
// heard again, onInfrastructureUp makes the reactor look at every domain afresh, which also
// renews the pid watches a restarted node has lost. While the node is down, every call fails
// at once instead of waiting for a reply that cannot come.
#include "bus/client.h"
#include "common/clock.h"
#include "virt/hypervisor.h"
#include "virt/node_protocol.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pcloud::dped {

struct RemoteNodeOptions {
    std::string host;         // the node's name: pcloud.node.<host>, pcloud.nodes.<host>
    std::string sender;       // this controller's identity, e.g. "dped:web"
    std::uint64_t epoch = 0;  // the controller's leadership epoch (0: single node)
    Millis silence_ms = 3000; // node heartbeat silence that counts as the node lost
    std::chrono::milliseconds call_timeout{30'000}; // define+start, destroy: slow under TCG
    std::chrono::milliseconds quick_timeout{5'000}; // lookup, qemu pid, watch
};

class RemoteNode final : public virt::Hypervisor {
public:
    using PidExit = std::function<void(const std::string& key, pid_t pid, int signal)>;

    RemoteNode(bus::Client& client, RemoteNodeOptions options);
    ~RemoteNode() override; // stops the silence watchdog
    RemoteNode(const RemoteNode&) = delete;
    RemoteNode& operator=(const RemoteNode&) = delete;

    // Subscribes to the node's events and starts the silence watchdog. The node counts as
    // down until its first heartbeat.
    void start();
    bool nodeUp() const;
    // The last facts the node sent (empty until its first heartbeat).
    virt::node::HostFacts facts() const;
    // The epoch stamped on the next requests (cped raised it: docs/ha.md). Any thread.
    void setEpoch(std::uint64_t epoch) { epoch_ = epoch; }
    std::uint64_t epoch() const { return epoch_; }

    // virt::Hypervisor
    Result<virt::DomainInfo> lookup(const std::string& name) override;
    Result<virt::DomainInfo> defineAndStart(const std::string& xml) override;
    Result<virt::DomainInfo> createTransient(const std::string& xml) override;
    Status start(const std::string& name) override;
    Status destroy(const std::string& name) override;
    Status shutdown(const std::string& name) override;
    Status undefine(const std::string& name) override;
    Result<pid_t> qemuPid(const std::string& name) override;
    void setListener(virt::HypervisorListener* listener) override;

    // The node's pidfd watch of a domain's qemu; exits arrive through onPidExit. Asynchronous:
    // a refused watch is logged (libvirt's events still tell the stop).
    void watchPid(const std::string& domain, pid_t pid);
    void unwatchPid(const std::string& domain);
    void onPidExit(PidExit callback);
    // Told the node's epoch whenever the node refuses a request as stale (a newer leader has
    // commanded it), on the calling thread. Set before start().
    void onStaleEpoch(std::function<void(std::uint64_t nodeEpoch)> callback);

private:
    static virt::node::Request requestFor(virt::node::Op op, const std::string& domain,
                                          const std::string& xml = {});
    // With this controller's id, sender and epoch.
    virt::node::Request stamped(virt::node::Request request);
    Result<virt::node::Reply> call(virt::node::Request request, std::chrono::milliseconds timeout);
    Result<virt::DomainInfo> domainCall(virt::node::Request request,
                                        std::chrono::milliseconds timeout);
    Status plainCall(virt::node::Request request, std::chrono::milliseconds timeout);
    void onEvent(const bus::Message& message);
    void watchdog();
    void setUp(bool up, const std::string& reason);

    bus::Client& client_;
    RemoteNodeOptions opt_;
    std::atomic<std::uint64_t> epoch_;            // from opt_.epoch, then setEpoch()
    std::atomic<std::uint64_t> fenced_logged_{0}; // node epoch of the last stale-epoch error
    std::string address_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    virt::HypervisorListener* listener_ = nullptr;
    PidExit on_pid_exit_;
    std::function<void(std::uint64_t)> on_stale_epoch_;
    bool up_ = false;
    bool stopping_ = false;
    std::string boot_;
    std::uint64_t last_seq_ = 0;
    std::chrono::steady_clock::time_point last_heard_{};
    virt::node::HostFacts facts_;
    std::uint64_t next_id_ = 0;
    std::uint64_t subscription_ = 0;
    // The bus client may be inside the subscription's callback while this object goes away
    // (unsubscribe() does not wait for it): the callback reaches `this` only through this
    // guard, which the destructor clears under its lock.
    struct Guard {
        std::mutex mu;
        RemoteNode* self = nullptr;
    };
    std::shared_ptr<Guard> guard_ = std::make_shared<Guard>();
    std::thread watchdog_;
};

} // namespace pcloud::dped
