#pragma once
// Hypervisor: what dped needs from libvirt, behind a small interface so the policy side can
// be tested without one (STYLE.md section 3). LibvirtHypervisor (libvirt_hypervisor.h) is
// the real implementation.
//
// Domain lookups never fail for an unknown domain: they answer DomainState::Missing. Errors
// are for broken connections and for input libvirt rejects; their message carries libvirt's
// own text and the domain name.

#include "common/clock.h"
#include "common/result.h"

#include <cstdint>
#include <string>
#include <sys/types.h>

namespace pcloud::virt {

enum class DomainState {
    Missing,      // no such domain (never defined, or transient and gone)
    Running,      // includes libvirt's "blocked" (running, waiting on a resource)
    Paused,       // includes pmsuspended
    ShuttingDown, // guest is shutting down
    Shutoff,      // defined but not running (shut down, destroyed, failed to start ...)
    Crashed,      // libvirt says crashed, or shut off because it crashed
    Unknown,
};

const char* toString(DomainState state);

struct DomainInfo {
    std::string name;
    std::string uuid; // empty when Missing
    DomainState state = DomainState::Missing;
    std::string reason; // libvirt's state reason, e.g. "booted", "destroyed", "crashed"
    int id = -1;        // libvirt domain id while active, else -1
    bool persistent = false;
};

// Maps libvirt's virDomainState + reason (as virDomainGetState returns them) to our state
// and a reason word. Pure, so it is tested on its own.
struct MappedState {
    DomainState state;
    std::string reason;
};
MappedState mapDomainState(int libvirtState, int libvirtReason);

// A lifecycle or reboot event as libvirt reported it.
enum class DomainEventKind {
    Defined,
    Undefined,
    Started,
    Suspended,
    Resumed,
    Stopped,
    Shutdown,
    PMSuspended,
    Crashed,
    Reboot, // from VIR_DOMAIN_EVENT_ID_REBOOT (the guest rebooted; qemu stays)
    Unknown,
};
const char* toString(DomainEventKind kind);

struct DomainEvent {
    std::string domain; // name
    std::string uuid;
    DomainEventKind kind = DomainEventKind::Unknown;
    std::string detail;     // e.g. "destroyed", "crashed", "failed", "booted", "shutdown"
    Millis monotonicMs = 0; // steady clock when the callback ran (the observation time)
    std::int64_t monotonicUs = 0;
};

// Maps libvirt's lifecycle event + detail (virConnectDomainEventCallback) to ours. Pure.
DomainEvent mapLifecycleEvent(int libvirtEvent, int libvirtDetail);

// Receives events. Callbacks run on the libvirt event-loop thread (see
// LibvirtHypervisor); keep them short and hand work to your own thread.
class HypervisorListener {
public:
    virtual ~HypervisorListener() = default;
    virtual void onDomainEvent(const DomainEvent& event) = 0;
    // The connection to the hypervisor is lost ("infrastructure down"); reconnecting.
    virtual void onInfrastructureDown(const std::string& reason) {}
    // Connected again, events re-registered. Re-read every domain: events were missed.
    virtual void onInfrastructureUp() {}
};

class Hypervisor {
public:
    virtual ~Hypervisor() = default;

    // Current state of the domain called `name`; Missing (not an error) when unknown.
    virtual Result<DomainInfo> lookup(const std::string& name) = 0;

    // Defines (or redefines) a persistent domain from `xml` and starts it. Persistent is
    // pcloud's choice: after a crash the domain stays visible as shut off with libvirt's
    // reason, `virsh list --all` shows what pcloud manages, and restarting needs no XML.
    // Errors name the domain and quote libvirt.
    virtual Result<DomainInfo> defineAndStart(const std::string& xml) = 0;
    // Starts a transient domain (gone from libvirt once it stops). For tests and one-offs.
    virtual Result<DomainInfo> createTransient(const std::string& xml) = 0;
    // Starts an already defined domain.
    virtual Status start(const std::string& name) = 0;
    // Hard stop (virDomainDestroy). A domain that is not running is not an error.
    virtual Status destroy(const std::string& name) = 0;
    // Asks the guest to shut down (virDomainShutdownFlags with libvirt's default method:
    // the QEMU guest agent if the domain has one, else the ACPI power button) and returns
    // at once; the domain stops later, or never if the guest ignores it. A domain that is
    // missing or not running is not an error.
    virtual Status shutdown(const std::string& name) = 0;
    // Removes a persistent definition; a missing domain is not an error.
    virtual Status undefine(const std::string& name) = 0;

    // The host pid of the running domain's QEMU process (local qemu URIs only).
    virtual Result<pid_t> qemuPid(const std::string& name) = 0;

    // Where events go; nullptr stops delivery. Not owned; must outlive its registration.
    virtual void setListener(HypervisorListener* listener) = 0;
};

} // namespace pcloud::virt
