#pragma once
// The referee keeps a load balancer's membership truthful: which assemblies receive
// traffic (ready), finish what they have (drain) or get none (out). The policy engine
// decides the desired set; a Referee driver makes the balancer match it.
//
// Drivers are level-triggered (Kubernetes-style): apply() takes the WHOLE desired set,
// is idempotent, and batches every change into one exchange with the balancer.
// reconcile() re-reads the balancer's actual state, fixes any difference and reports
// what was wrong, so the caller can emit one event per drift. A broken balancer makes
// every call fail fast with an Error (socket I/O has a deadline); retrying is the
// caller's business (see RetryBackoff), and it must never hold up recovery.

#include "common/host_config.h"
#include "common/result.h"
#include "model/model.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::referee {

enum class MemberState {
    Ready, // receives new traffic
    Drain, // keeps existing sessions, gets no new ones (before a planned stop)
    Out,   // gets no traffic at all: failed, parked, or not yet ready (haproxy maint)
};
const char* toString(MemberState s);

// One balancer member = one assembly's service endpoint.
struct Member {
    std::string name;    // server name in the balancer; the assembly name
    std::string address; // "IP:PORT" (IPv6 as "[::1]:PORT")
    MemberState desired = MemberState::Ready;
    bool operator==(const Member&) const = default;
};

// What the balancer says it has right now.
struct ActualMember {
    std::string name;
    std::string address;
    MemberState state = MemberState::Ready;
    std::string health; // balancer's own view when it has one ("up", "down"), else ""
    bool operator==(const ActualMember&) const = default;
};

// One difference between desired and actual. A member absent from one side has no
// state there (nullopt). A member that is Out and absent counts as matching: neither
// sends it traffic.
struct Drift {
    std::string member;
    std::optional<MemberState> actual; // nullopt: not in the balancer
    std::optional<MemberState> wanted; // nullopt: not in the desired set (remove it)
    std::string actual_address;        // set when the address differs
    std::string wanted_address;
    // "member node02 was ready, wanted drain"
    std::string describe() const;
    bool operator==(const Drift&) const = default;
};

struct DriftReport {
    std::vector<Drift> drifts; // sorted by member name
    bool restarted = false;    // the balancer restarted/reloaded since the last look
    std::string restart_note;  // e.g. "haproxy restarted (pid 120 -> 180)"
    bool clean() const { return drifts.empty() && !restarted; }
    std::string describe() const;
};

class Referee {
public:
    virtual ~Referee() = default;
    // "haproxy socket=/run/haproxy/admin.sock backend=web", for logs.
    virtual std::string describe() const = 0;
    // Make the balancer match `desired` (the whole set; members not listed are removed).
    virtual Status apply(const std::vector<Member>& desired) = 0;
    // The balancer's membership as it is now, sorted by name.
    virtual Result<std::vector<ActualMember>> read() = 0;
    // read(), compare with `desired`, apply() if anything differs; returns what differed.
    virtual Result<DriftReport> reconcile(const std::vector<Member>& desired) = 0;
};

struct Options {
    Millis io_timeout_ms = 1'000;       // whole exchange with the haproxy socket
    Millis command_timeout_ms = 15'000; // apachectl -t / -k graceful, nginx -t / -s reload
};

// Checks a deployable's referee settings against their grammars and the host
// configuration; the error names the setting and the rule. These values end up in balancer
// config files and runtime-API command lines, and config_file is written as root:
//  - backend, cluster, upstream: [A-Za-z0-9_.-]{1,64}
//  - alias: "/" then [A-Za-z0-9_./-]*, no "..", at most 256 characters
//  - socket: an absolute path of [A-Za-z0-9_./-], no ".."
//  - config_file: the same, inside one of the host's referee_dir directories (its parent,
//    after resolving symlinks, is one of them or below one), and not itself a symlink.
// cped calls it when referee_set arrives; makeReferee calls it again before acting.
Status validateConfig(const model::RefereeConfig& config, const hostconfig::HostConfig& host);

// A driver from the deployable's referee settings, with the balancer commands taken from
// the host configuration. Driver "" gives a null pointer (no referee); an unknown driver, a
// missing setting or one validateConfig() refuses gives an Error naming the setting.
Result<std::unique_ptr<Referee>> makeReferee(const model::RefereeConfig& config,
                                             const hostconfig::HostConfig& host,
                                             const Options& options = {});

// Pure helpers shared by the drivers.
// Names must be [A-Za-z0-9_.-]+ and unique, addresses IP:PORT; the error names the member.
Status validateMembers(const std::vector<Member>& desired);
// Differences between desired and actual, sorted by member name.
std::vector<Drift> diffMembers(const std::vector<Member>& desired,
                               const std::vector<ActualMember>& actual);
// An apache cluster / nginx upstream / haproxy backend name: [A-Za-z0-9_.-]{1,64}; the
// error names `setting`.
Status validateBalancerName(const std::string& setting, const std::string& name);
// Splits "IP:PORT" / "[v6]:PORT" into host and port; false when malformed.
bool splitAddress(const std::string& address, std::string& host, int& port);

} // namespace pcloud::referee
