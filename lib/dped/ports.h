#pragma once
// The small interfaces the dped reactor acts through, besides virt::Hypervisor. The real
// implementations live in runtime.cc (bus::Client, PidWatcher, ChannelConnection, a referee
// worker thread); tests pass fakes. None of these may block for long: the reactor calls them
// on its only thread.

#include "bus/message.h"
#include "common/result.h"
#include "referee/referee.h"

#include <functional>
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

// Earliest-signal detectors and the guest channel relay, per assembly.
class HostWatch {
public:
    virtual ~HostWatch() = default;
    // Watch the qemu process of `assembly` (replaces an earlier watch).
    virtual void watchPid(const std::string& assembly, pid_t pid) = 0;
    virtual void unwatchPid(const std::string& assembly) = 0;
    // Make sure the host side of the guest channel is connected (creates the connection the
    // first time, reconnect() afterwards).
    virtual void ensureChannel(const std::string& assembly, const std::string& socketPath) = 0;
};

// Applies referee membership off the reactor thread. setDesired() only records the wish.
class RefereeSink {
public:
    virtual ~RefereeSink() = default;
    virtual void setDesired(const std::vector<referee::Member>& members) = 0;
};

} // namespace pcloud::dped
