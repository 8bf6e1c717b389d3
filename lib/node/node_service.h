#pragma once
// pcloud-node's core: it owns what must be local to the VMs of one hypervisor host (the
// libvirt connection and its events, pidfd watches on qemu) and serves them to controllers
// over the bus with the node protocol (virt/node_protocol.h, docs/protocol/node.md).
//
// The service trusts nothing that arrives: every request is decoded and checked (names, the
// domain XML against the host's own configuration, the pid to watch against libvirt's), and
// its epoch against the highest one accepted so far, which is persisted. Slow libvirt calls
// run on one job lane per domain, never on the caller's (bus) thread.
#include "common/clock.h"
#include "common/host_config.h"
#include "common/job_runner.h"
#include "common/result.h"
#include "virt/hypervisor.h"
#include "virt/node_protocol.h"
#include "virt/pid_watcher.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace pcloud::node {

// The highest controller epoch this node has accepted, kept in a file so that a restarted
// node still refuses an old leader's commands.
class EpochFloor {
public:
    // Reads `path` (absent = 0). A damaged file is an error naming it: the node must not
    // start and accept epochs it may have refused before.
    static Result<EpochFloor> load(const std::string& path);
    // Accepts `epoch` if it is not lower than the floor, raising (and persisting) the floor.
    // Errors: stale (lower), or the file could not be written (then nothing is accepted).
    Status admit(std::uint64_t epoch);
    std::uint64_t value() const;

private:
    std::string path_;
    std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>(); // movable
    std::uint64_t floor_ = 0;
};

// What the service needs from its host besides the hypervisor: the facts and the running
// domains (libvirt), so a unit test can give fixed ones.
struct HostProbe {
    std::function<virt::node::HostFacts()> facts;
};

struct NodeServiceConfig {
    std::string name; // the host's name; events go to pcloud.nodes.<name>
    std::string boot; // this process's random id, in every event
    hostconfig::HostConfig host;
    Millis heartbeat_ms = 1000;
};

class NodeService final : public virt::HypervisorListener {
public:
    using Publish = std::function<void(const std::string& body)>;
    using Reply = std::function<void(const std::string& body)>;

    NodeService(NodeServiceConfig config, virt::Hypervisor& hv, JobRunner& jobs,
                EpochFloor& epochs, HostProbe probe, Publish publish);

    // Handles one request body. `reply` is called exactly once: at once for a request that
    // is refused, else from the domain's job lane when libvirt has answered.
    void handle(const std::string& body, Reply reply);

    // Publishes the heartbeat with the host's facts (the caller's timer, every heartbeat_ms).
    void heartbeat();

    // From the pid watcher (any thread).
    void onPidExit(const virt::PidExit& exit);

    // virt::HypervisorListener (libvirt's event thread).
    void onDomainEvent(const virt::DomainEvent& event) override;
    void onInfrastructureDown(const std::string& reason) override;
    void onInfrastructureUp() override;

    // Counters for status and tests.
    std::uint64_t refused() const;
    std::uint64_t staleEpochs() const;

    // What to watch: set by the caller that owns the pid watcher.
    std::function<Status(const std::string& key, pid_t pid)> watchPid;
    std::function<void(const std::string& key)> unwatchPid;

private:
    virt::node::Reply run(const virt::node::Request& request);
    void publish(virt::node::Event event);
    void refuse(const std::string& id, const std::string& code, const std::string& message,
                const Reply& reply);

    NodeServiceConfig cfg_;
    virt::Hypervisor& hv_;
    JobRunner& jobs_;
    EpochFloor& epochs_;
    HostProbe probe_;
    Publish publish_;
    mutable std::mutex mu_;
    std::uint64_t seq_ = 0;
    std::uint64_t refused_ = 0;
    std::uint64_t stale_ = 0;
};

} // namespace pcloud::node
