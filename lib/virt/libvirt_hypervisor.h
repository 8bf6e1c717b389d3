#pragma once
// LibvirtHypervisor: the Hypervisor interface on a real libvirt connection.
//
// Threads:
//  - libvirt's default event loop (virEventRegisterDefaultImpl) runs on one process-wide
//    thread, started on first use and kept for the life of the process (libvirt offers no
//    way to unregister the default implementation). Every HypervisorListener callback,
//    domain events and onInfrastructureDown, runs on that thread.
//  - a reconnect thread per LibvirtHypervisor. When the connection closes (libvirtd died or
//    restarted; keepalive timed out) it reopens with exponential backoff (100 ms .. 5 s),
//    re-registers the events and calls onInfrastructureUp on that thread.
//  - the domain operations may be called from any thread (libvirt connections are
//    thread-safe); while disconnected they fail with "not connected".

#include "virt/hypervisor.h"

#include <memory>
#include <string>
#include <vector>

namespace pcloud::virt {

class LibvirtHypervisor final : public Hypervisor {
public:
    LibvirtHypervisor();
    ~LibvirtHypervisor() override;
    LibvirtHypervisor(const LibvirtHypervisor&) = delete;
    LibvirtHypervisor& operator=(const LibvirtHypervisor&) = delete;

    // Opens `uri` (e.g. qemu:///system, test:///default), starts the event loop if needed,
    // enables keepalive (5 s interval, 3 missed) where the driver supports it, registers
    // lifecycle/reboot events and the close callback. Fails with libvirt's message.
    Status open(const std::string& uri);
    bool connected() const;
    const std::string& uri() const;

    Result<DomainInfo> lookup(const std::string& name) override;
    Result<DomainInfo> defineAndStart(const std::string& xml) override;
    Result<DomainInfo> createTransient(const std::string& xml) override;
    Status start(const std::string& name) override;
    Status destroy(const std::string& name) override;
    Status shutdown(const std::string& name) override;
    Status undefine(const std::string& name) override;
    Result<pid_t> qemuPid(const std::string& name) override;
    // Names of the active domains, sorted (pcloud-node's host facts).
    Result<std::vector<std::string>> runningDomains();
    void setListener(HypervisorListener* listener) override;

    // Test hook: closes the connection as if libvirtd had gone away (drives the reconnect
    // path without killing the daemon other tests share).
    void simulateConnectionLoss();

    // The pid file libvirt keeps for a running domain of a local qemu URI, or "" when the
    // URI is not a local qemu one. Pure; exposed for tests.
    static std::string qemuPidFile(const std::string& uri, const std::string& name);

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

} // namespace pcloud::virt
