#pragma once
// The small interfaces the dped reactor acts through, besides virt::Hypervisor. The real
// implementations live in runtime.cc (bus::Client, PidWatcher, ChannelConnection, a referee
// worker thread); tests pass fakes. None of these may block for long: the reactor calls them
// on its only thread.

#include "bus/message.h"
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
};

// Runs slow hypervisor calls away from the reactor thread: define+start takes ~1 s under
// TCG, and a destroy waits while libvirtd reaps a dead qemu (1-2 s). Done inline, one
// assembly's restart would hold back every other assembly's inputs for that long.
// Jobs with the same key (the assembly) run one at a time, in the order given; jobs with
// different keys may run at once. `done` runs on the reactor thread after its job.
class JobRunner {
public:
    virtual ~JobRunner() = default;
    virtual void run(const std::string& key, std::function<void()> job,
                     std::function<void()> done) = 0;
};

// Runs the job and then `done` at once, on the caller's thread: unit tests, and any caller
// that has no reactor thread to come back to.
class InlineJobRunner final : public JobRunner {
public:
    void run(const std::string&, std::function<void()> job, std::function<void()> done) override {
        job();
        done();
    }
};

// Applies referee membership off the reactor thread. setDesired() only records the wish.
class RefereeSink {
public:
    virtual ~RefereeSink() = default;
    virtual void setDesired(const std::vector<referee::Member>& members) = 0;
    // What the balancer serves right now, read once when dped starts so that a restarted dped
    // takes it as its starting point. nullopt: unknown (balancer down, or no read support);
    // the remembered membership is kept then. Called before the first setDesired().
    virtual std::optional<std::vector<referee::ActualMember>> current() { return std::nullopt; }
};

} // namespace pcloud::dped
