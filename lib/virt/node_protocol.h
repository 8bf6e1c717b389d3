#pragma once
// The node protocol: how dped (or any controller) drives the hypervisor of one host through
// that host's pcloud-node, over the bus (docs/protocol/node.md).
//
//   requests  -> "pcloud.node.<host>" (a queue the node serves), JSON, reply to reply_to;
//   events    <- "pcloud.nodes.<host>" (a topic): domain lifecycle events, qemu exits seen
//               by the node's pidfd watch, libvirt connection loss, and the node's heartbeat
//               with the host's facts.
//
// Every request names its sender and carries the controller's epoch; the node refuses an
// epoch lower than the highest it has accepted ("stale-epoch"), so a controller that lost
// its leadership cannot act any more (issue 12). The encoders and decoders are pure; the
// decoders check every field and name the one that is wrong.
#include "common/clock.h"
#include "common/result.h"
#include "virt/hypervisor.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::virt::node {

inline constexpr const char* kRequestPrefix = "pcloud.node.";
inline constexpr const char* kEventsPrefix = "pcloud.nodes.";
std::string requestAddress(const std::string& host);
std::string eventsAddress(const std::string& host);

enum class Op {
    Lookup,
    DefineAndStart,
    CreateTransient,
    Start,
    Destroy,
    Shutdown,
    Undefine,
    QemuPid,
    WatchPid,   // watch the domain's qemu (pidfd); its exit comes as a pid-exit event
    UnwatchPid, // stop watching it
    Facts,      // the host's facts now (also in every heartbeat)
};
const char* toString(Op op);
std::optional<Op> parseOp(const std::string& text);

struct Request {
    std::string id; // correlation, echoed in the reply
    Op op = Op::Lookup;
    std::string sender;      // identity of the controller, e.g. "dped:web"
    std::uint64_t epoch = 0; // the controller's leadership epoch (0: single node)
    std::string domain;      // every op but Facts, DefineAndStart and CreateTransient
    std::string xml;         // DefineAndStart, CreateTransient
    std::int64_t pid = 0;    // WatchPid (the qemu pid the controller was told)
};
std::string encode(const Request& request);
Result<Request> decodeRequest(const std::string& body);

struct HostFacts {
    int cpus = 0;
    std::int64_t memory_mib = 0;
    std::int64_t memory_available_mib = 0;
    std::vector<std::string> running; // names of the running domains
    std::string libvirt_uri;
    bool libvirt_ok = true;
};

// A reply: ok with what the op returns, or an error with a code and a message.
struct Reply {
    std::string id;
    bool ok = false;
    std::string code;    // on error: "stale-epoch", "bad-request", "refused", "libvirt", ...
    std::string message; // on error
    std::optional<DomainInfo> domain;
    std::optional<std::int64_t> pid;
    std::optional<HostFacts> facts;
    std::uint64_t epoch = 0; // the highest epoch the node has accepted
};
std::string encode(const Reply& reply);
Result<Reply> decodeReply(const std::string& body);
// The error of a failed reply as a Status for the Hypervisor interface.
Error replyError(const Reply& reply, const std::string& host);

enum class EventKind { Domain, PidExit, InfraDown, InfraUp, Heartbeat };
const char* toString(EventKind kind);

struct Event {
    std::string node;
    std::uint64_t seq = 0; // per node process, +1 per event (gaps = lost events)
    std::string boot;      // the node process's random id: a new one means a restarted node
    EventKind kind = EventKind::Heartbeat;
    DomainEvent domain;     // Domain (monotonic times are the node's; receivers re-stamp)
    std::string key;        // PidExit: the watch key (the domain)
    std::int64_t pid = 0;   // PidExit
    int signal = 0;         // PidExit: the fatal signal when heard as it died (PidWatcher)
    std::string reason;     // InfraDown
    HostFacts facts;        // Heartbeat
    Millis interval_ms = 0; // Heartbeat: the node's heartbeat interval
};
std::string encode(const Event& event);
Result<Event> decodeEvent(const std::string& body);

std::optional<DomainState> parseDomainState(const std::string& text);
std::optional<DomainEventKind> parseDomainEventKind(const std::string& text);

} // namespace pcloud::virt::node
