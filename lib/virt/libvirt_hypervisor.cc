#include "virt/libvirt_hypervisor.h"

#include "common/log.h"
#include "virt/guest_xml.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <mutex>
#include <thread>

namespace pcloud::virt {

namespace {

std::int64_t monotonicUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string lastError() {
    const char* m = virGetLastErrorMessage();
    return m != nullptr ? m : "unknown libvirt error";
}

bool lastErrorIs(int code) {
    virErrorPtr e = virGetLastError();
    return e != nullptr && e->code == code;
}

// libvirt's default event loop, one per process (see the header).
void ensureEventLoop() {
    static std::once_flag once;
    std::call_once(once, [] {
        // libvirt prints every error to stderr by default; we report them ourselves.
        virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
        virInitialize();
        if (virEventRegisterDefaultImpl() < 0) {
            PCLOUD_LOG(Error, "Cannot register the libvirt event loop", {{"error", lastError()}});
            return;
        }
        std::thread([] {
            for (;;) {
                if (virEventRunDefaultImpl() < 0) {
                    PCLOUD_LOG(Warning, "libvirt event loop iteration failed",
                               {{"error", lastError()}});
                }
            }
        }).detach();
    });
}

template <size_t N> std::string pick(const char* const (&names)[N], int i) {
    if (i >= 0 && static_cast<size_t>(i) < N)
        return names[i];
    return "unknown";
}

// A counted reference to the current connection, released on scope exit.
class ConnRef {
public:
    explicit ConnRef(virConnectPtr c) : c_(c) {}
    ~ConnRef() {
        if (c_ != nullptr)
            virConnectClose(c_);
    }
    ConnRef(const ConnRef&) = delete;
    ConnRef& operator=(const ConnRef&) = delete;
    virConnectPtr get() const { return c_; }
    explicit operator bool() const { return c_ != nullptr; }

private:
    virConnectPtr c_;
};

class DomRef {
public:
    explicit DomRef(virDomainPtr d) : d_(d) {}
    ~DomRef() {
        if (d_ != nullptr)
            virDomainFree(d_);
    }
    DomRef(const DomRef&) = delete;
    DomRef& operator=(const DomRef&) = delete;
    virDomainPtr get() const { return d_; }
    explicit operator bool() const { return d_ != nullptr; }

private:
    virDomainPtr d_;
};

const char* closeReason(int reason) {
    switch (reason) {
    case VIR_CONNECT_CLOSE_REASON_ERROR:
        return "connection error";
    case VIR_CONNECT_CLOSE_REASON_EOF:
        return "libvirtd closed the connection";
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE:
        return "keepalive timeout";
    case VIR_CONNECT_CLOSE_REASON_CLIENT:
        return "closed by client";
    default:
        return "unknown";
    }
}

} // namespace

const char* toString(DomainState s) {
    switch (s) {
    case DomainState::Missing:
        return "missing";
    case DomainState::Running:
        return "running";
    case DomainState::Paused:
        return "paused";
    case DomainState::ShuttingDown:
        return "shutting-down";
    case DomainState::Shutoff:
        return "shutoff";
    case DomainState::Crashed:
        return "crashed";
    case DomainState::Unknown:
        return "unknown";
    }
    return "unknown";
}

const char* toString(DomainEventKind k) {
    switch (k) {
    case DomainEventKind::Defined:
        return "defined";
    case DomainEventKind::Undefined:
        return "undefined";
    case DomainEventKind::Started:
        return "started";
    case DomainEventKind::Suspended:
        return "suspended";
    case DomainEventKind::Resumed:
        return "resumed";
    case DomainEventKind::Stopped:
        return "stopped";
    case DomainEventKind::Shutdown:
        return "shutdown";
    case DomainEventKind::PMSuspended:
        return "pmsuspended";
    case DomainEventKind::Crashed:
        return "crashed";
    case DomainEventKind::Reboot:
        return "reboot";
    case DomainEventKind::Unknown:
        return "unknown";
    }
    return "unknown";
}

MappedState mapDomainState(int state, int reason) {
    static const char* const running[] = {
        "unknown",       "booted",   "migrated",           "restored",
        "from-snapshot", "unpaused", "migration-canceled", "save-canceled",
        "wakeup",        "crashed",  "postcopy",           "postcopy-failed"};
    static const char* const paused[] = {"unknown",       "user",
                                         "migration",     "save",
                                         "dump",          "ioerror",
                                         "watchdog",      "from-snapshot",
                                         "shutting-down", "snapshot",
                                         "crashed",       "starting-up",
                                         "postcopy",      "postcopy-failed",
                                         "api-error"};
    static const char* const shutoff[] = {"unknown", "shutdown",      "destroyed",
                                          "crashed", "migrated",      "saved",
                                          "failed",  "from-snapshot", "daemon"};
    static const char* const crashed[] = {"unknown", "panicked"};
    switch (state) {
    case VIR_DOMAIN_RUNNING:
        return {DomainState::Running, pick(running, reason)};
    case VIR_DOMAIN_BLOCKED:
        return {DomainState::Running, "blocked"};
    case VIR_DOMAIN_PAUSED:
        if (reason == VIR_DOMAIN_PAUSED_CRASHED)
            return {DomainState::Crashed, "crashed"};
        return {DomainState::Paused, pick(paused, reason)};
    case VIR_DOMAIN_SHUTDOWN:
        return {DomainState::ShuttingDown, reason == 1 ? "user" : "unknown"};
    case VIR_DOMAIN_SHUTOFF:
        if (reason == VIR_DOMAIN_SHUTOFF_CRASHED)
            return {DomainState::Crashed, "crashed"};
        return {DomainState::Shutoff, pick(shutoff, reason)};
    case VIR_DOMAIN_CRASHED:
        return {DomainState::Crashed, pick(crashed, reason)};
    case VIR_DOMAIN_PMSUSPENDED:
        return {DomainState::Paused, "pmsuspended"};
    default:
        return {DomainState::Unknown, "nostate"};
    }
}

DomainEvent mapLifecycleEvent(int event, int detail) {
    static const char* const defined[] = {"added", "updated", "renamed", "from-snapshot"};
    static const char* const undefined[] = {"removed", "renamed"};
    static const char* const started[] = {"booted", "migrated", "restored", "from-snapshot",
                                          "wakeup"};
    static const char* const suspended[] = {"paused",    "migrated", "ioerror",
                                            "watchdog",  "restored", "from-snapshot",
                                            "api-error", "postcopy", "postcopy-failed"};
    static const char* const resumed[] = {"unpaused", "migrated", "from-snapshot", "postcopy",
                                          "postcopy-failed"};
    static const char* const stopped[] = {"shutdown", "destroyed", "crashed",      "migrated",
                                          "saved",    "failed",    "from-snapshot"};
    static const char* const shutdown[] = {"finished", "guest", "host"};
    static const char* const pmsuspended[] = {"memory", "disk"};
    static const char* const crashed[] = {"panicked", "crashloaded"};
    DomainEvent e;
    switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED:
        e.kind = DomainEventKind::Defined;
        e.detail = pick(defined, detail);
        break;
    case VIR_DOMAIN_EVENT_UNDEFINED:
        e.kind = DomainEventKind::Undefined;
        e.detail = pick(undefined, detail);
        break;
    case VIR_DOMAIN_EVENT_STARTED:
        e.kind = DomainEventKind::Started;
        e.detail = pick(started, detail);
        break;
    case VIR_DOMAIN_EVENT_SUSPENDED:
        e.kind = DomainEventKind::Suspended;
        e.detail = pick(suspended, detail);
        break;
    case VIR_DOMAIN_EVENT_RESUMED:
        e.kind = DomainEventKind::Resumed;
        e.detail = pick(resumed, detail);
        break;
    case VIR_DOMAIN_EVENT_STOPPED:
        e.kind = DomainEventKind::Stopped;
        e.detail = pick(stopped, detail);
        break;
    case VIR_DOMAIN_EVENT_SHUTDOWN:
        e.kind = DomainEventKind::Shutdown;
        e.detail = pick(shutdown, detail);
        break;
    case VIR_DOMAIN_EVENT_PMSUSPENDED:
        e.kind = DomainEventKind::PMSuspended;
        e.detail = pick(pmsuspended, detail);
        break;
    case VIR_DOMAIN_EVENT_CRASHED:
        e.kind = DomainEventKind::Crashed;
        e.detail = pick(crashed, detail);
        break;
    default:
        e.kind = DomainEventKind::Unknown;
        e.detail = "unknown";
        break;
    }
    return e;
}

// ---------------------------------------------------------------------------------------

struct LibvirtHypervisor::Impl : std::enable_shared_from_this<Impl> {
    std::string uri;

    mutable std::mutex mu; // guards conn and the callback ids
    virConnectPtr conn = nullptr;
    int lifecycleId = -1;
    int rebootId = -1;
    bool closeRegistered = false;

    std::mutex listenerMu; // held while a callback runs, so setListener(nullptr) waits
    HypervisorListener* listener = nullptr;

    std::mutex reconnectMu;
    std::condition_variable reconnectCv;
    bool lost = false;
    bool stopping = false;
    std::thread reconnectThread;

    // The opaque pointer libvirt keeps: a weak reference, freed by libvirt's free callback.
    static void* opaque(const std::shared_ptr<Impl>& self) { return new std::weak_ptr<Impl>(self); }
    static void freeOpaque(void* p) { delete static_cast<std::weak_ptr<Impl>*>(p); }
    static std::shared_ptr<Impl> from(void* p) {
        return static_cast<std::weak_ptr<Impl>*>(p)->lock();
    }

    void deliver(DomainEvent e) {
        std::lock_guard lock(listenerMu);
        if (listener != nullptr)
            listener->onDomainEvent(e);
    }

    static int onLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* op) {
        const std::int64_t us = monotonicUs();
        auto self = from(op);
        if (!self)
            return 0;
        DomainEvent e = mapLifecycleEvent(event, detail);
        e.monotonicUs = us;
        e.monotonicMs = us / 1000;
        if (const char* n = virDomainGetName(dom))
            e.domain = n;
        char uuid[VIR_UUID_STRING_BUFLEN] = {};
        if (virDomainGetUUIDString(dom, uuid) == 0)
            e.uuid = uuid;
        self->deliver(std::move(e));
        return 0;
    }

    static void onReboot(virConnectPtr, virDomainPtr dom, void* op) {
        const std::int64_t us = monotonicUs();
        auto self = from(op);
        if (!self)
            return;
        DomainEvent e;
        e.kind = DomainEventKind::Reboot;
        e.detail = "reboot";
        e.monotonicUs = us;
        e.monotonicMs = us / 1000;
        if (const char* n = virDomainGetName(dom))
            e.domain = n;
        char uuid[VIR_UUID_STRING_BUFLEN] = {};
        if (virDomainGetUUIDString(dom, uuid) == 0)
            e.uuid = uuid;
        self->deliver(std::move(e));
    }

    static void onClose(virConnectPtr, int reason, void* op) {
        auto self = from(op);
        if (!self)
            return;
        self->markLost(closeReason(reason));
    }

    void markLost(const std::string& reason) {
        {
            std::lock_guard lock(reconnectMu);
            if (lost || stopping)
                return;
            lost = true;
        }
        PCLOUD_LOG(Warning, "Hypervisor connection lost; reconnecting",
                   {{"uri", uri}, {"reason", reason}});
        {
            std::lock_guard lock(listenerMu);
            if (listener != nullptr)
                listener->onInfrastructureDown(reason);
        }
        reconnectCv.notify_all();
    }

    // Registers events, keepalive and the close callback on a fresh connection.
    Status setup(virConnectPtr c) {
        auto self = shared_from_this();
        // Keepalive only exists on remote-protocol connections (qemu:///system goes through
        // libvirtd's socket); 1 means "not supported by this driver", which is fine.
        if (virConnectSetKeepAlive(c, 5, 3) < 0) {
            PCLOUD_LOG(Info, "Keepalive not enabled", {{"uri", uri}, {"error", lastError()}});
        }
        int lid = virConnectDomainEventRegisterAny(c, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                   VIR_DOMAIN_EVENT_CALLBACK(onLifecycle),
                                                   opaque(self), freeOpaque);
        if (lid < 0)
            return makeError("Cannot register libvirt lifecycle events on " + uri + ": " +
                             lastError());
        int rid = virConnectDomainEventRegisterAny(c, nullptr, VIR_DOMAIN_EVENT_ID_REBOOT,
                                                   VIR_DOMAIN_EVENT_CALLBACK(onReboot),
                                                   opaque(self), freeOpaque);
        if (rid < 0) {
            std::string err = lastError();
            virConnectDomainEventDeregisterAny(c, lid);
            return makeError("Cannot register libvirt reboot events on " + uri + ": " + err);
        }
        bool closeOk = virConnectRegisterCloseCallback(c, onClose, opaque(self), freeOpaque) == 0;
        std::lock_guard lock(mu);
        conn = c;
        lifecycleId = lid;
        rebootId = rid;
        closeRegistered = closeOk;
        return {};
    }

    // Detaches and closes the current connection (if any).
    void teardown() {
        virConnectPtr c = nullptr;
        int lid = -1, rid = -1;
        bool closeReg = false;
        {
            std::lock_guard lock(mu);
            std::swap(c, conn);
            std::swap(lid, lifecycleId);
            std::swap(rid, rebootId);
            std::swap(closeReg, closeRegistered);
        }
        if (c == nullptr)
            return;
        if (lid >= 0)
            virConnectDomainEventDeregisterAny(c, lid);
        if (rid >= 0)
            virConnectDomainEventDeregisterAny(c, rid);
        if (closeReg)
            virConnectUnregisterCloseCallback(c, onClose);
        virConnectClose(c);
    }

    Status connectOnce() {
        virConnectPtr c = virConnectOpen(uri.c_str());
        if (c == nullptr)
            return makeError("Cannot connect to libvirt at " + uri + ": " + lastError());
        Status s = setup(c);
        if (!s.ok())
            virConnectClose(c);
        return s;
    }

    void reconnectLoop() {
        using namespace std::chrono;
        for (;;) {
            {
                std::unique_lock lock(reconnectMu);
                reconnectCv.wait(lock, [&] { return lost || stopping; });
                if (stopping)
                    return;
            }
            teardown();
            milliseconds delay{100};
            for (;;) {
                Status s = connectOnce();
                if (s.ok())
                    break;
                PCLOUD_LOG(Info, "Reconnect to libvirt failed; retrying",
                           {{"uri", uri},
                            {"error", s.error().message},
                            {"retry_ms", std::to_string(delay.count())}});
                std::unique_lock lock(reconnectMu);
                if (reconnectCv.wait_for(lock, delay, [&] { return stopping; }))
                    return;
                delay = std::min<milliseconds>(delay * 2, milliseconds{5000});
            }
            {
                std::lock_guard lock(reconnectMu);
                lost = false;
            }
            PCLOUD_LOG(Notice, "Hypervisor connection restored", {{"uri", uri}});
            std::lock_guard lock(listenerMu);
            if (listener != nullptr)
                listener->onInfrastructureUp();
        }
    }

    ConnRef acquire() const {
        std::lock_guard lock(mu);
        if (conn == nullptr)
            return ConnRef(nullptr);
        virConnectRef(conn);
        return ConnRef(conn);
    }

    Error notConnected(const std::string& what) const {
        return makeError("Cannot " + what + ": not connected to libvirt at " + uri +
                         " (reconnecting)");
    }
};

LibvirtHypervisor::LibvirtHypervisor() : impl_(std::make_shared<Impl>()) {}

LibvirtHypervisor::~LibvirtHypervisor() {
    {
        std::lock_guard lock(impl_->reconnectMu);
        impl_->stopping = true;
    }
    impl_->reconnectCv.notify_all();
    if (impl_->reconnectThread.joinable())
        impl_->reconnectThread.join();
    setListener(nullptr);
    impl_->teardown();
}

Status LibvirtHypervisor::open(const std::string& uri) {
    if (impl_->reconnectThread.joinable())
        return makeError("LibvirtHypervisor::open called twice");
    ensureEventLoop();
    impl_->uri = uri;
    Status s = impl_->connectOnce();
    if (!s.ok())
        return s;
    impl_->reconnectThread = std::thread([impl = impl_.get()] { impl->reconnectLoop(); });
    PCLOUD_LOG(Info, "Connected to libvirt", {{"uri", uri}});
    return {};
}

bool LibvirtHypervisor::connected() const {
    std::lock_guard lock(impl_->mu);
    return impl_->conn != nullptr;
}

const std::string& LibvirtHypervisor::uri() const {
    return impl_->uri;
}

void LibvirtHypervisor::setListener(HypervisorListener* listener) {
    std::lock_guard lock(impl_->listenerMu);
    impl_->listener = listener;
}

void LibvirtHypervisor::simulateConnectionLoss() {
    impl_->markLost("simulated connection loss");
}

static DomainInfo infoOf(virDomainPtr d, const std::string& name) {
    DomainInfo info;
    info.name = name;
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(d, uuid) == 0)
        info.uuid = uuid;
    int state = 0, reason = 0;
    if (virDomainGetState(d, &state, &reason, 0) < 0) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN)) {
            info.state = DomainState::Missing;
            info.uuid.clear();
            return info;
        }
        info.state = DomainState::Unknown;
        info.reason = lastError();
        return info;
    }
    MappedState m = mapDomainState(state, reason);
    info.state = m.state;
    info.reason = m.reason;
    unsigned int id = virDomainGetID(d);
    info.id = id == static_cast<unsigned int>(-1) ? -1 : static_cast<int>(id);
    info.persistent = virDomainIsPersistent(d) == 1;
    return info;
}

Result<DomainInfo> LibvirtHypervisor::lookup(const std::string& name) {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("look up domain " + name);
    DomRef d(virDomainLookupByName(c.get(), name.c_str()));
    if (!d) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN)) {
            DomainInfo info;
            info.name = name;
            info.state = DomainState::Missing;
            info.reason = "no such domain";
            return info;
        }
        return makeError("Cannot look up domain " + name + " on " + impl_->uri + ": " +
                         lastError());
    }
    return infoOf(d.get(), name);
}

Result<std::vector<std::string>> LibvirtHypervisor::runningDomains() {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("list the running domains");
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(c.get(), &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    if (n < 0)
        return makeError("Cannot list the domains on " + impl_->uri + ": " + lastError());
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
        if (const char* name = virDomainGetName(doms[i]))
            names.emplace_back(name);
        virDomainFree(doms[i]);
    }
    ::free(doms);
    std::sort(names.begin(), names.end());
    return names;
}

Result<DomainInfo> LibvirtHypervisor::defineAndStart(const std::string& xml) {
    const std::string name = domainNameOf(xml).value_or("<unnamed>");
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("define domain " + name);
    DomRef d(virDomainDefineXML(c.get(), xml.c_str()));
    if (!d) {
        return makeError("libvirt rejected the XML of domain " + name + ": " + lastError());
    }
    if (virDomainCreate(d.get()) < 0) {
        return makeError("Domain " + name + " failed to start: " + lastError());
    }
    PCLOUD_LOG(Notice, "Domain started", {{"domain", name}, {"uri", impl_->uri}});
    return infoOf(d.get(), name);
}

Result<DomainInfo> LibvirtHypervisor::createTransient(const std::string& xml) {
    const std::string name = domainNameOf(xml).value_or("<unnamed>");
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("create domain " + name);
    DomRef d(virDomainCreateXML(c.get(), xml.c_str(), 0));
    if (!d) {
        return makeError("libvirt could not create domain " + name + ": " + lastError());
    }
    PCLOUD_LOG(Notice, "Transient domain started", {{"domain", name}, {"uri", impl_->uri}});
    return infoOf(d.get(), name);
}

Status LibvirtHypervisor::start(const std::string& name) {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("start domain " + name);
    DomRef d(virDomainLookupByName(c.get(), name.c_str()));
    if (!d)
        return makeError("Cannot start domain " + name + ": " + lastError());
    if (virDomainCreate(d.get()) < 0) {
        return makeError("Domain " + name + " failed to start: " + lastError());
    }
    return {};
}

Status LibvirtHypervisor::destroy(const std::string& name) {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("destroy domain " + name);
    DomRef d(virDomainLookupByName(c.get(), name.c_str()));
    if (!d) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot destroy domain " + name + ": " + lastError());
    }
    // virDomainDestroy sends qemu SIGTERM and waits up to 10 s before SIGKILL. A hung
    // (e.g. SIGSTOPped) qemu never acts on SIGTERM, so recovery of a hung guest would wait
    // out that whole delay. Destroy is a hard power-off anyway: on a local hypervisor kill
    // the qemu process ourselves first, and let libvirt clean up after it at once.
    if (Result<pid_t> pid = qemuPid(name); pid.ok())
        ::kill(*pid, SIGKILL);
    if (virDomainDestroy(d.get()) < 0) {
        // Not running (or already gone) is the state we wanted.
        if (lastErrorIs(VIR_ERR_OPERATION_INVALID) || lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot destroy domain " + name + ": " + lastError());
    }
    return {};
}

Status LibvirtHypervisor::shutdown(const std::string& name) {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("shut down domain " + name);
    DomRef d(virDomainLookupByName(c.get(), name.c_str()));
    if (!d) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot shut down domain " + name + ": " + lastError());
    }
    // Drivers word "not running" differently (qemu: operation invalid; test: internal
    // error), so ask first.
    if (virDomainIsActive(d.get()) == 0)
        return {};
    if (virDomainShutdownFlags(d.get(), 0) < 0) {
        // Not running: already where a shutdown would take it.
        if (lastErrorIs(VIR_ERR_OPERATION_INVALID) || lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot shut down domain " + name + ": " + lastError());
    }
    return {};
}

Status LibvirtHypervisor::undefine(const std::string& name) {
    ConnRef c = impl_->acquire();
    if (!c)
        return impl_->notConnected("undefine domain " + name);
    DomRef d(virDomainLookupByName(c.get(), name.c_str()));
    if (!d) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot undefine domain " + name + ": " + lastError());
    }
    if (virDomainIsPersistent(d.get()) != 1)
        return {};
    if (virDomainUndefine(d.get()) < 0) {
        if (lastErrorIs(VIR_ERR_NO_DOMAIN))
            return {};
        return makeError("Cannot undefine domain " + name + ": " + lastError());
    }
    return {};
}

std::string LibvirtHypervisor::qemuPidFile(const std::string& uri, const std::string& name) {
    if (uri == "qemu:///system" || uri == "qemu+unix:///system") {
        return "/run/libvirt/qemu/" + name + ".pid";
    }
    return {};
}

Result<pid_t> LibvirtHypervisor::qemuPid(const std::string& name) {
    const std::string file = qemuPidFile(impl_->uri, name);
    if (file.empty()) {
        return makeError("No qemu pid for domain " + name + ": " + impl_->uri +
                         " is not a local qemu:///system URI");
    }
    Result<DomainInfo> info = lookup(name);
    if (!info.ok())
        return info.error();
    if (info->state != DomainState::Running && info->state != DomainState::Paused) {
        return makeError("No qemu pid for domain " + name + ": it is " + toString(info->state));
    }
    std::ifstream in(file);
    long pid = 0;
    if (!(in >> pid) || pid <= 1) {
        return makeError("Cannot read the qemu pid of domain " + name, file);
    }
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
        return makeError("The qemu process of domain " + name + " (pid " + std::to_string(pid) +
                             ") is gone",
                         file);
    }
    return static_cast<pid_t>(pid);
}

} // namespace pcloud::virt
