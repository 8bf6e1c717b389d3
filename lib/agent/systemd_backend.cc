#include "agent/systemd_backend.h"

#include "common/log.h"

#include <time.h>

#include <algorithm>
#include <cstdint>

namespace pcloud::agent {
namespace {

constexpr const char* kDest = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManagerIface = "org.freedesktop.systemd1.Manager";
constexpr const char* kUnitIface = "org.freedesktop.systemd1.Unit";
constexpr const char* kServiceIface = "org.freedesktop.systemd1.Service";
constexpr const char* kPropsIface = "org.freedesktop.DBus.Properties";
constexpr std::uint64_t kCallTimeoutUsec = 10'000'000;

std::uint64_t monotonicUsec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000 +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

template <typename T>
bool take(const std::map<std::string, sdbus::Variant>& m, const char* k, T& out) {
    auto it = m.find(k);
    if (it == m.end() || !it->second.containsValueOfType<T>())
        return false;
    out = it->second.get<T>();
    return true;
}

} // namespace

std::string normalizeUnitName(const std::string& name) {
    static const char* suffixes[] = {".service", ".socket", ".target",   ".mount",
                                     ".timer",   ".path",   ".scope",    ".slice",
                                     ".swap",    ".device", ".automount"};
    for (const char* s : suffixes) {
        std::string suf(s);
        if (name.size() > suf.size() &&
            name.compare(name.size() - suf.size(), suf.size(), suf) == 0)
            return name;
    }
    return name + ".service";
}

SystemdBackend::SystemdBackend(const Clock& clock) : clock_(clock) {
    connect();
}

SystemdBackend::~SystemdBackend() {
    jobs_.clear();
    for (auto& [n, u] : units_) {
        u.match.reset();
        u.proxy.reset();
    }
    manager_match_.reset();
    owner_match_.reset();
    manager_.reset();
    bus_.reset();
}

bool SystemdBackend::connect() {
    try {
        bus_ = sdbus::createSystemBusConnection();
        manager_ = sdbus::createProxy(*bus_, kDest, kManagerPath);
        manager_match_ = bus_->addMatch(std::string("type='signal',path='") + kManagerPath +
                                            "',interface='" + kManagerIface + "'",
                                        [this](sdbus::Message& m) { onManagerSignal(m); });
        owner_match_ = bus_->addMatch(
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            "member='NameOwnerChanged',arg0='org.freedesktop.systemd1'",
            [this](sdbus::Message& m) {
                std::string name, oldOwner, newOwner;
                m >> name >> oldOwner >> newOwner;
                if (!newOwner.empty()) {
                    PCLOUD_LOG(Notice,
                               "systemd took its bus name again (daemon-reexec?); re-reading units",
                               {{"owner", newOwner}});
                    resolve_all_ = true;
                }
            });
        auto call = manager_->createMethodCall(kManagerIface, "Subscribe");
        call.send(kCallTimeoutUsec);
    } catch (const sdbus::Error& e) {
        PCLOUD_LOG(Warning, "Cannot use the system D-Bus; will retry",
                   {{"error", e.getName()}, {"message", e.getMessage()}});
        manager_match_.reset();
        owner_match_.reset();
        manager_.reset();
        bus_.reset();
        reconnect_at_ = clock_.monotonicMs() + backoff_;
        backoff_ = std::min<Millis>(backoff_ * 2, 5'000);
        return false;
    }
    backoff_ = 100;
    PCLOUD_LOG(Notice, "Connected to the system D-Bus and subscribed to systemd");
    for (auto& [n, u] : units_) {
        u.path.clear();
        u.match.reset();
        u.proxy.reset();
    }
    resolveAll();
    return true;
}

void SystemdBackend::disconnect(const std::string& why) {
    PCLOUD_LOG(Warning, "Lost the system D-Bus; reconnecting", {{"error", why}});
    failAllJobs("lost the system D-Bus: " + why);
    for (auto& [n, u] : units_) {
        u.match.reset();
        u.proxy.reset();
        u.path.clear();
    }
    manager_match_.reset();
    owner_match_.reset();
    manager_.reset();
    bus_.reset();
    pending_reads_ = 0;
    reconnect_at_ = clock_.monotonicMs() + backoff_;
    resync_ = true;
}

void SystemdBackend::failAllJobs(const std::string& why) {
    auto jobs = std::move(jobs_);
    jobs_.clear();
    for (auto& [path, cb] : jobs)
        cb(JobResult{false, proto::kErrBackend, why, "unknown"});
}

void SystemdBackend::setWatch(const std::vector<std::string>& units,
                              const std::map<std::string, std::string>&) {
    std::vector<std::string> order;
    for (const auto& u : units)
        if (std::find(order.begin(), order.end(), u) == order.end())
            order.push_back(u);
    for (auto it = units_.begin(); it != units_.end();) {
        if (std::find(order.begin(), order.end(), it->first) == order.end())
            it = units_.erase(it);
        else
            ++it;
    }
    order_ = order;
    for (const auto& name : order_) {
        auto [it, inserted] = units_.try_emplace(name);
        if (!inserted)
            continue;
        Unit& u = it->second;
        u.watched_name = name;
        u.systemd_name = normalizeUnitName(name);
        u.st.unit = name;
        u.st.load_state = "unknown";
        u.st.active_state = "unknown";
        u.st.sub_state = "unknown";
        if (bus_)
            resolve(u);
    }
}

std::optional<proto::UnitState> SystemdBackend::state(const std::string& unit) const {
    auto it = units_.find(unit);
    if (it == units_.end())
        return std::nullopt;
    return it->second.st;
}

void SystemdBackend::resolveAll() {
    for (const auto& name : order_) {
        auto it = units_.find(name);
        if (it != units_.end())
            resolve(it->second);
    }
}

void SystemdBackend::resolve(Unit& u) {
    if (!bus_)
        return;
    try {
        auto load = manager_->createMethodCall(kManagerIface, "LoadUnit");
        load << u.systemd_name;
        auto reply = load.send(kCallTimeoutUsec);
        sdbus::ObjectPath path;
        reply >> path;
        if (path != u.path || !u.match) {
            u.path = path;
            u.proxy = sdbus::createProxy(*bus_, kDest, u.path);
            std::string watched = u.watched_name;
            u.match = bus_->addMatch(
                "type='signal',path='" + u.path + "',interface='" + std::string(kPropsIface) +
                    "',member='PropertiesChanged'",
                [this, watched](sdbus::Message& m) { onPropertiesChanged(watched, m); });
        }
        // The properties are read with asynchronous calls on purpose: their replies are
        // processed in wire order with the PropertiesChanged signals, so a reply can never
        // be overtaken by an older signal (a synchronous call would jump ahead of signals
        // already queued and make the state bounce back).
        bool isService = u.systemd_name.size() > 8 &&
                         u.systemd_name.compare(u.systemd_name.size() - 8, 8, ".service") == 0;
        std::string watched = u.watched_name;
        std::string unitPath = u.path;
        auto handle = [this, watched,
                       unitPath](bool last, const sdbus::Error* err,
                                 const std::map<std::string, sdbus::Variant>& props) {
            if (last && pending_reads_ > 0)
                --pending_reads_;
            auto it = units_.find(watched);
            if (it == units_.end() || it->second.path != unitPath)
                return; // stale reply
            Unit& unit = it->second;
            if (!err)
                applyProps(unit, props);
            else if (!last)
                PCLOUD_LOG(Warning, "Could not read unit properties",
                           {{"unit", unit.systemd_name}, {"error", err->getName()}});
            if (!last)
                return;
            PCLOUD_LOG(Debug, "Unit re-read",
                       {{"unit", unit.systemd_name},
                        {"active", unit.st.active_state},
                        {"sub", unit.st.sub_state}});
            finishState(unit);
            emit(unit);
        };
        ++pending_reads_;
        u.proxy->callMethodAsync("GetAll")
            .onInterface(kPropsIface)
            .withArguments(std::string(kUnitIface))
            .uponReplyInvoke([handle, isService](const sdbus::Error* err,
                                                 std::map<std::string, sdbus::Variant> props) {
                handle(!isService, err, props);
            });
        if (isService)
            u.proxy->callMethodAsync("GetAll")
                .onInterface(kPropsIface)
                .withArguments(std::string(kServiceIface))
                .uponReplyInvoke(
                    [handle](const sdbus::Error* err, std::map<std::string, sdbus::Variant> props) {
                        handle(true, err, props);
                    });
    } catch (const sdbus::Error& e) {
        PCLOUD_LOG(Warning, "Could not read unit from systemd",
                   {{"unit", u.systemd_name}, {"error", e.getName()}, {"message", e.getMessage()}});
        if (e.getName() == "org.freedesktop.DBus.Error.NoReply" ||
            e.getName() == "org.freedesktop.DBus.Error.Disconnected" ||
            e.getName() == "System.Error.ECONNRESET" || e.getName() == "System.Error.ENOTCONN")
            return; // handled when processing notices the dead bus
        u.st.load_state = "error";
        u.st.active_state = "unknown";
        u.st.changed_at = clock_.nowMs();
        emit(u);
    }
}

void SystemdBackend::applyProps(Unit& u, const std::map<std::string, sdbus::Variant>& props) {
    take(props, "LoadState", u.st.load_state);
    take(props, "ActiveState", u.st.active_state);
    take(props, "SubState", u.st.sub_state);
    take(props, "Result", u.st.result);
    std::uint32_t pid = 0;
    if (take(props, "MainPID", pid))
        u.st.main_pid = pid;
    std::int32_t code = 0, status = 0;
    if (take(props, "ExecMainCode", code))
        u.exec_code = code;
    if (take(props, "ExecMainStatus", status))
        u.exec_status = status;
}

void SystemdBackend::finishState(Unit& u) {
    // CLD_KILLED = 2, CLD_DUMPED = 3: the status is a signal number.
    u.st.exit_code = (u.exec_code == 2 || u.exec_code == 3) ? 128 + u.exec_status : u.exec_status;
    if (u.st.load_state == "not-found") {
        u.st.active_state = "not-found";
    }
    u.st.changed_at = clock_.nowMs();
}

void SystemdBackend::emit(Unit& u) {
    if (listener_)
        listener_->onUnitState(u.st);
}

void SystemdBackend::onPropertiesChanged(const std::string& watched, sdbus::Message& msg) {
    auto it = units_.find(watched);
    if (it == units_.end())
        return;
    Unit& u = it->second;
    std::string iface;
    std::map<std::string, sdbus::Variant> changed;
    std::vector<std::string> invalidated;
    msg >> iface >> changed >> invalidated;
    if (log::level() >= log::Level::Debug) {
        std::string keys;
        for (const auto& [k, v] : changed)
            keys += k +
                    (v.containsValueOfType<std::string>() ? "=" + v.get<std::string>()
                                                          : std::string()) +
                    ",";
        std::string inv;
        for (const auto& k : invalidated)
            inv += k + ",";
        PCLOUD_LOG(Debug, "PropertiesChanged",
                   {{"unit", watched}, {"iface", iface}, {"changed", keys}, {"invalidated", inv}});
    }
    applyProps(u, changed);
    // systemd sends the Service interface first, then Unit: report on the Unit signal, so a
    // transition goes out once, with its Result and exit status already known.
    if (iface == kUnitIface) {
        finishState(u);
        emit(u);
    } else if (iface == kServiceIface) {
        finishState(u);
        // A Service-only change (e.g. a new MainPID) is reported after this batch.
        pending_emit_.insert(watched);
    }
}

void SystemdBackend::onManagerSignal(sdbus::Message& msg) {
    std::string member = msg.getMemberName();
    if (member == "JobRemoved") {
        std::uint32_t id = 0;
        sdbus::ObjectPath job;
        std::string unit, result;
        msg >> id >> job >> unit >> result;
        auto it = jobs_.find(job);
        if (it == jobs_.end())
            return;
        auto cb = std::move(it->second);
        jobs_.erase(it);
        if (result == "done")
            cb(JobResult{true, {}, {}, result});
        else
            cb(JobResult{false, proto::kErrJobFailed,
                         "job for " + unit + " finished with result '" + result + "'", result});
    } else if (member == "Reloading") {
        bool active = false;
        msg >> active;
        if (!active) {
            PCLOUD_LOG(Info, "systemd finished reloading; re-reading watched units");
            resolve_all_ = true;
        }
    } else if (member == "UnitNew") {
        std::string id;
        sdbus::ObjectPath path;
        msg >> id >> path;
        for (auto& [name, u] : units_)
            if (u.systemd_name == id && u.path != path)
                to_resolve_.insert(name);
            else if (u.systemd_name == id && u.st.load_state != "loaded")
                to_resolve_.insert(name);
    }
}

void SystemdBackend::runJob(JobKind kind, const std::string& unit, JobCallback done) {
    auto it = units_.find(unit);
    if (it == units_.end()) {
        done(JobResult{false, proto::kErrNotFound, "unit '" + unit + "' is not watched", "failed"});
        return;
    }
    if (!bus_) {
        done(JobResult{false, proto::kErrBackend, "the system D-Bus is not connected", "failed"});
        return;
    }
    const char* method = kind == JobKind::Start  ? "StartUnit"
                         : kind == JobKind::Stop ? "StopUnit"
                                                 : "RestartUnit";
    try {
        auto call = manager_->createMethodCall(kManagerIface, method);
        call << it->second.systemd_name << std::string("replace");
        sdbus::ObjectPath job;
        auto reply = call.send(kCallTimeoutUsec);
        reply >> job;
        jobs_[job] = std::move(done);
        PCLOUD_LOG(Info, "systemd job queued", {{"unit", unit}, {"method", method}, {"job", job}});
    } catch (const sdbus::Error& e) {
        std::string code = e.getName() == "org.freedesktop.systemd1.NoSuchUnit"
                               ? proto::kErrNotFound
                               : proto::kErrJobFailed;
        done(JobResult{false, code, std::string(method) + " failed: " + e.getMessage(), "failed"});
    }
}

void SystemdBackend::processBus() {
    try {
        while (bus_ && bus_->processPendingRequest()) {
        }
        // Work that needs method calls runs outside the signal callbacks.
        for (int round = 0; bus_ && round < 4 && (resolve_all_ || !to_resolve_.empty()); ++round) {
            if (resolve_all_) {
                resolve_all_ = false;
                to_resolve_.clear();
                auto call = manager_->createMethodCall(kManagerIface, "Subscribe");
                try {
                    call.send(kCallTimeoutUsec);
                } catch (const sdbus::Error&) {
                    // Already subscribed (a plain reload keeps subscriptions).
                }
                resolveAll();
            } else {
                auto names = std::move(to_resolve_);
                to_resolve_.clear();
                for (const auto& n : names)
                    if (auto it = units_.find(n); it != units_.end())
                        resolve(it->second);
            }
            while (bus_ && bus_->processPendingRequest()) {
            }
        }
        auto names = std::move(pending_emit_);
        pending_emit_.clear();
        for (const auto& n : names)
            if (auto it = units_.find(n); it != units_.end())
                emit(it->second);
    } catch (const sdbus::Error& e) {
        disconnect(e.getName() + ": " + e.getMessage());
    }
}

void SystemdBackend::prepare(PollSet& ps, Millis now) {
    polled_ = false;
    if (!bus_) {
        ps.wakeAt(reconnect_at_);
        return;
    }
    try {
        auto pd = bus_->getEventLoopPollData();
        poll_index_ = ps.add(pd.fd, pd.events);
        polled_ = true;
        if (pd.timeout_usec != UINT64_MAX) {
            std::uint64_t nowUs = monotonicUsec();
            Millis wait = pd.timeout_usec <= nowUs
                              ? 0
                              : static_cast<Millis>((pd.timeout_usec - nowUs + 999) / 1000);
            ps.wakeAt(now + wait);
        }
    } catch (const sdbus::Error& e) {
        disconnect(e.getName() + ": " + e.getMessage());
        ps.wakeAt(reconnect_at_);
    }
}

void SystemdBackend::dispatch(const PollSet& ps, Millis now) {
    if (!bus_) {
        if (now >= reconnect_at_ && connect() && resync_) {
            resync_ = false;
            if (listener_)
                listener_->onResync();
        }
        return;
    }
    // Processing is cheap when nothing is pending; it also runs sd-bus timeouts.
    processBus();
}

} // namespace pcloud::agent
