#pragma once
// The pcloud data model: what the operator asked for. It is persisted by the store
// (db_deployable.xml, db_assemblies.xml, db_hosts.xml) and read by the policy engine. Observed
// state and escalation history live elsewhere (policy/), never here.

#include "common/clock.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::model {

// "INFINITY" in Pacemaker Cloud files. It means "no limit", explicitly: an unlimited
// failure budget never escalates; an unlimited period means "N failures ever".
constexpr int kUnlimitedFailures = -1;
constexpr Millis kUnlimitedPeriod = -1;

// A failure budget: at most `failures` failures within a sliding window of `period`.
// When the failures counted inside the window reach `failures`, the budget is used up and
// the next level (service -> assembly -> deployable) takes over.
struct Escalation {
    int failures = 3;       // kUnlimitedFailures = never escalate
    Millis period = 60'000; // kUnlimitedPeriod = window never slides
    bool operator==(const Escalation&) const = default;
};

// Exponential backoff between consecutive restarts of the same thing.
struct Backoff {
    Millis base = 1'000; // delay before the 2nd restart in a row (1st is immediate)
    double factor = 2.0;
    Millis cap = 60'000;
    Millis reset_after = 300'000; // stable this long -> next restart is immediate again
    bool operator==(const Backoff&) const = default;
};

enum class ProbeKind { Http, Tcp };

// Optional readiness probe run by the agent inside the guest.
struct Probe {
    ProbeKind kind = ProbeKind::Http;
    std::string host = "127.0.0.1";
    int port = 80;
    std::string path = "/";  // http only
    int expect_status = 200; // http only
    Millis interval = 5'000;
    Millis timeout = 2'000;
    int threshold = 3; // consecutive failures before "not-ready"
    bool operator==(const Probe&) const = default;
};

enum class ResourceClass { Systemd, Lsb, Process };

struct Resource {
    std::string name; // unique within its assembly, e.g. "httpd"
    std::string type; // template name, e.g. "apache2"
    ResourceClass klass = ResourceClass::Systemd;
    std::string provider; // kept from Pacemaker Cloud files (e.g. "pacemaker")
    std::string unit;     // systemd unit or lsb script; for class=process the command
    Millis monitor_interval = 10'000;
    Escalation escalation;
    std::map<std::string, std::string> params;
    std::optional<Probe> probe;
    bool operator==(const Resource&) const = default;
};

// What an assembly does when its own restart budget is used up (docs/hosts.md).
enum class AssemblyOutcome {
    Escalate, // the deployable's budget takes over (default, as before hosts existed)
    Relocate, // restart it on another host with a fresh budget, at most max_relocate times
              // within relocate_period; then escalate
    Replace,  // start a spare cloned from it (assembly_clone) instead; then escalate
};

struct Assembly {
    std::string name;
    std::string uuid;
    std::string domain_xml; // libvirt domain XML as given by the operator
    std::string image;      // or a reference to an image (path), when no XML
    Escalation escalation{3, 600'000};
    std::vector<Resource> resources;
    std::string address; // balancer member "IP:PORT"; empty = learn from agent
    bool parked = false; // operator took it out of the referee (assembly_park)
    // Placement: `host` pins it to one host; otherwise `hosts` is the allowed set; both
    // empty = any host. Names refer to Model::hosts.
    std::string host;
    std::vector<std::string> hosts;
    int vcpus = 0;      // 0 = not declared (counts as 1 for capacity, 1 in generated XML)
    int memory_mib = 0; // 0 = not declared (counts as 0 for capacity, 512 in generated XML)
    // libvirt networks of the domain XML generated from `image` (no domain_xml given).
    std::vector<std::string> networks;
    AssemblyOutcome outcome = AssemblyOutcome::Escalate;
    int max_relocate = 1;
    Millis relocate_period = 3'600'000;
    bool operator==(const Assembly&) const = default;

    const Resource* findResource(const std::string& n) const {
        for (const auto& r : resources)
            if (r.name == n)
                return &r;
        return nullptr;
    }
};

enum class MonitorMode { Active, Passive }; // passive: observe and report, never act

// What happens when a deployable's own budget is used up.
enum class DeployableOutcome {
    LeaveStopped,   // leave the failing assembly stopped and alert (default)
    StopDeployable, // stop every assembly of the deployable and alert
};

struct RefereeConfig {
    std::string driver;      // "" (none), "log", "haproxy", "apache", "nginx"
    std::string socket;      // haproxy: runtime API unix socket
    std::string backend;     // haproxy: backend name
    std::string config_file; // apache, nginx: the managed include file
    std::string cluster;     // apache: balancer://CLUSTER
    std::string alias = "/"; // apache: ProxyPass /ALIAS
    std::string upstream;    // nginx: upstream NAME (config_file is the managed file)
    // The apachectl and nginx commands are NOT here: they come from the host configuration
    // (common/host_config.h), never from the bus or a store file.
    bool operator==(const RefereeConfig&) const = default;
};

struct Deployable {
    std::string name;
    std::string uuid;
    std::string uri = "qemu:///system";
    MonitorMode monitor = MonitorMode::Active;
    std::string infrastructure;          // kept from Pacemaker Cloud files
    std::string username;                // kept from Pacemaker Cloud files
    std::vector<std::string> assemblies; // names, in the order given
    Escalation escalation{3, 3'600'000};
    DeployableOutcome outcome = DeployableOutcome::LeaveStopped;
    Backoff backoff;
    Millis heartbeat_interval = 1'000;
    Millis heartbeat_timeout = 5'000; // several intervals: never a single missed beat
    Millis stop_timeout = 60'000;     // planned stop: graceful shutdown, destroy after this
    RefereeConfig referee;
    // Anti-affinity: place its assemblies on different hosts where possible.
    bool spread = true;
    bool operator==(const Deployable&) const = default;
};

// A hypervisor host (docs/hosts.md). Its state is kept in db_hosts.xml so that
// `maintenance` survives a restart; the other states are set by the host layer.
enum class HostState { Up, Suspect, Fencing, Fenced, Down, Maintenance };

struct FenceConfig {
    std::string agent; // a fence agent name ("fence_virsh"); never a path (host_config)
    std::map<std::string, std::string> params; // passed as key=value lines on its stdin
    bool operator==(const FenceConfig&) const = default;
};

struct Capacity {
    int vcpus = 0;   // 0 = not declared: no limit
    int mem_mib = 0; // 0 = not declared: no limit
    bool operator==(const Capacity&) const = default;
};

struct Host {
    std::string name;
    std::string node; // the bus identity of its pcloud-node: "node:NAME"
    FenceConfig fence;
    Capacity capacity;
    HostState state = HostState::Up;
    bool operator==(const Host&) const = default;
};

struct Model {
    std::map<std::string, Deployable> deployables;
    std::map<std::string, Assembly> assemblies;
    std::map<std::string, Host> hosts;
    // pcmkc-version="..." on the root elements of Pacemaker Cloud files, written back.
    std::string pcmkc_version_deployables;
    std::string pcmkc_version_assemblies;
    bool operator==(const Model&) const = default;

    const Host* findHost(const std::string& n) const {
        auto it = hosts.find(n);
        return it == hosts.end() ? nullptr : &it->second;
    }

    const Deployable* findDeployable(const std::string& n) const {
        auto it = deployables.find(n);
        return it == deployables.end() ? nullptr : &it->second;
    }
    const Assembly* findAssembly(const std::string& n) const {
        auto it = assemblies.find(n);
        return it == assemblies.end() ? nullptr : &it->second;
    }
    // The deployable an assembly belongs to, or nullptr.
    const Deployable* owner(const std::string& assembly) const {
        for (const auto& [_, d] : deployables)
            for (const auto& a : d.assemblies)
                if (a == assembly)
                    return &d;
        return nullptr;
    }
};

const char* toString(ResourceClass c);
const char* toString(MonitorMode m);
const char* toString(DeployableOutcome o);
const char* toString(ProbeKind k);
const char* toString(HostState s);
const char* toString(AssemblyOutcome o);
bool parseHostState(const std::string& s, HostState& out);
bool parseAssemblyOutcome(const std::string& s, AssemblyOutcome& out);
bool parseResourceClass(const std::string& s, ResourceClass& out);
bool parseMonitorMode(const std::string& s, MonitorMode& out);
bool parseDeployableOutcome(const std::string& s, DeployableOutcome& out);
bool parseProbeKind(const std::string& s, ProbeKind& out);

// Names end up in file names, AMQP addresses and libvirt domain names.
bool isValidName(const std::string& name);
// "node:NAME" with a valid NAME: the identity a host's pcloud-node has on the bus.
bool isValidNodeIdentity(const std::string& id);
// A fence agent is named, never given as a path: "fence_" + [A-Za-z0-9_-]. The host
// configuration says where agents live (docs/hosts.md).
bool isValidFenceAgentName(const std::string& name);
// The key of a key=value line on a fence agent's stdin; "action" is pcloud's own.
bool isValidFenceParamName(const std::string& name);

} // namespace pcloud::model
