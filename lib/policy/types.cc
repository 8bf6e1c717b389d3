#include "policy/types.h"

namespace pcloud::policy {

const char* toString(DesiredState s) {
    return s == DesiredState::Running ? "running" : "stopped";
}

const char* toString(DomainState s) {
    switch (s) {
    case DomainState::Unknown:
        return "unknown";
    case DomainState::Running:
        return "running";
    case DomainState::Paused:
        return "paused";
    case DomainState::Shutoff:
        return "shutoff";
    case DomainState::Crashed:
        return "crashed";
    case DomainState::Missing:
        return "missing";
    }
    return "unknown";
}

const char* toString(ServiceState s) {
    switch (s) {
    case ServiceState::Unknown:
        return "unknown";
    case ServiceState::Active:
        return "active";
    case ServiceState::Activating:
        return "activating";
    case ServiceState::Deactivating:
        return "deactivating";
    case ServiceState::Inactive:
        return "inactive";
    case ServiceState::Failed:
        return "failed";
    case ServiceState::NotFound:
        return "not-found";
    }
    return "unknown";
}

const char* toString(Phase p) {
    switch (p) {
    case Phase::Fresh:
        return "fresh";
    case Phase::Starting:
        return "starting";
    case Phase::Up:
        return "up";
    case Phase::RestartPending:
        return "restart-pending";
    case Phase::Restarting:
        return "restarting";
    case Phase::Stopping:
        return "stopping";
    case Phase::Stopped:
        return "stopped";
    case Phase::Failed:
        return "failed";
    }
    return "fresh";
}

const char* toString(Membership m) {
    switch (m) {
    case Membership::Out:
        return "out";
    case Membership::In:
        return "in";
    case Membership::Draining:
        return "draining";
    case Membership::Parked:
        return "parked";
    }
    return "out";
}

const char* toString(ActionKind k) {
    switch (k) {
    case ActionKind::RestartService:
        return "restart-service";
    case ActionKind::StartService:
        return "start-service";
    case ActionKind::StopService:
        return "stop-service";
    case ActionKind::StartDomain:
        return "start-domain";
    case ActionKind::StopDomain:
        return "stop-domain";
    case ActionKind::ShutdownDomain:
        return "shutdown-domain";
    case ActionKind::MarkFailed:
        return "mark-failed";
    case ActionKind::Escalate:
        return "escalate";
    case ActionKind::RefereeDrain:
        return "referee-drain";
    case ActionKind::RefereeRemove:
        return "referee-remove";
    case ActionKind::RefereeAdd:
        return "referee-add";
    case ActionKind::EmitEvent:
        return "event";
    }
    return "event";
}

const char* toString(Level l) {
    switch (l) {
    case Level::Service:
        return "service";
    case Level::Assembly:
        return "assembly";
    case Level::Deployable:
        return "deployable";
    }
    return "service";
}

DomainState parseDomainState(const std::string& s) {
    for (auto v : {DomainState::Running, DomainState::Paused, DomainState::Shutoff,
                   DomainState::Crashed, DomainState::Missing})
        if (s == toString(v))
            return v;
    return DomainState::Unknown;
}

ServiceState parseServiceState(const std::string& s) {
    for (auto v : {ServiceState::Active, ServiceState::Activating, ServiceState::Deactivating,
                   ServiceState::Inactive, ServiceState::Failed, ServiceState::NotFound})
        if (s == toString(v))
            return v;
    return ServiceState::Unknown;
}

template <typename E, typename... Vs>
static bool parseEnum(const std::string& s, E& out, Vs... vs) {
    for (E v : {vs...})
        if (s == toString(v)) {
            out = v;
            return true;
        }
    return false;
}

bool parsePhase(const std::string& s, Phase& out) {
    return parseEnum(s, out, Phase::Fresh, Phase::Starting, Phase::Up, Phase::RestartPending,
                     Phase::Restarting, Phase::Stopping, Phase::Stopped, Phase::Failed);
}
bool parseMembership(const std::string& s, Membership& out) {
    return parseEnum(s, out, Membership::Out, Membership::In, Membership::Draining,
                     Membership::Parked);
}
bool parseActionKind(const std::string& s, ActionKind& out) {
    return parseEnum(s, out, ActionKind::RestartService, ActionKind::StartService,
                     ActionKind::StopService, ActionKind::StartDomain, ActionKind::StopDomain,
                     ActionKind::ShutdownDomain, ActionKind::MarkFailed, ActionKind::Escalate,
                     ActionKind::RefereeDrain, ActionKind::RefereeRemove, ActionKind::RefereeAdd,
                     ActionKind::EmitEvent);
}
bool parseLevel(const std::string& s, Level& out) {
    return parseEnum(s, out, Level::Service, Level::Assembly, Level::Deployable);
}

} // namespace pcloud::policy
