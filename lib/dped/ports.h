#pragma once
// The small interfaces the dped reactor acts through, besides virt::Hypervisor. The real
// implementations live in runtime.cc (bus::Client, PidWatcher, ChannelConnection, a referee
// worker thread); tests pass fakes. None of these may block for long: the reactor calls them
// on its only thread.

#include "bus/message.h"
#include "common/job_runner.h"
#include "common/result.h"
#include "referee/referee.h"
#include "virt/pid_watcher.h"

#include <functional>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pcloud::dped {

// The bus as dped uses it. Callbacks given to subscribe() must come back to the reactor
// thread (the runtime posts them to the inbox).
class Messenger {
public:
    virtual ~Messenger() = default;
    virtual Status send(const std::string& address, const std::string& body,
                        const bus::Properties& properties = {}) = 0;
    virtual void subscribe(const std::string& address,
                           std::function<void(const bus::Message&)> callback) = 0;
    // The late reply to a request (reply_to used verbatim, correlation id set): commands
    // such as ping are answered when the agent replies, not by the serve handler.
    virtual Status reply(const std::string& replyTo, const std::string& correlationId,
                         const std::string& body) = 0;
};

// Earliest-signal detectors and the guest channel peer (channel_peer.h), per assembly.
class HostWatch {
public:
    virtual ~HostWatch() = default;
    // Watch the qemu process of `assembly` (replaces an earlier watch).
    virtual void watchPid(const std::string& assembly, pid_t pid) = 0;
    virtual void unwatchPid(const std::string& assembly) = 0;
    // Make sure the host side of the guest channel is connected (creates the connection the
    // first time, reconnect() afterwards). `keys` are the names the agent may call itself
    // on that channel (the assembly's name and uuid): its link addresses and hello.
    virtual void ensureChannel(const std::string& assembly, const std::string& socketPath,
                               const std::vector<std::string>& keys) = 0;
    // Is this (qemu) process stopped, i.e. the guest frozen? One read of /proc/PID/stat; asked
    // only when a heartbeat is overdue. nullopt: unknown.
    virtual std::optional<bool> processStopped(pid_t pid) { return virt::processStopped(pid); }
    // The run-queue wait of each of the process's threads (virt::threadRunQueueWaits); asked
    // only while a heartbeat is overdue. nullopt: unknown.
    virtual std::optional<std::map<pid_t, std::uint64_t>> runQueueWaits(pid_t pid) {
        return virt::threadRunQueueWaits(pid);
    }
};

// Slow hypervisor calls run away from the reactor thread (common/job_runner.h): define+start
// takes ~1 s under TCG, and a destroy waits while libvirtd reaps a dead qemu (1-2 s). Done
// inline, one assembly's restart would hold back every other assembly's inputs for that long.
using pcloud::InlineJobRunner;
using pcloud::JobRunner;

// Applies referee membership off the reactor thread. setDesired() only records the wish.
class RefereeSink {
public:
    virtual ~RefereeSink() = default;
    virtual void setDesired(const std::vector<referee::Member>& members) = 0;
    // What the balancer serves right now, read once when dped starts so that a restarted dped
    // takes it as its starting point. nullopt: unknown (balancer down, or no read support);
    // the remembered membership is kept then. Called before the first setDesired().
    virtual std::optional<std::vector<referee::ActualMember>> current() { return std::nullopt; }
    // This dped is fenced off by a newer leader: stop applying and reconciling the last
    // desired set (the newer leader's dped drives the balancer now) until the next
    // setDesired().
    virtual void hold() {}
};

} // namespace pcloud::dped
