#include "model/model.h"

namespace pcloud::model {

const char* toString(ResourceClass c) {
    switch (c) {
    case ResourceClass::Systemd:
        return "systemd";
    case ResourceClass::Lsb:
        return "lsb";
    case ResourceClass::Process:
        return "process";
    }
    return "?";
}
const char* toString(MonitorMode m) {
    return m == MonitorMode::Active ? "active" : "passive";
}
const char* toString(DeployableOutcome o) {
    return o == DeployableOutcome::LeaveStopped ? "leave-stopped" : "stop-deployable";
}
const char* toString(ProbeKind k) {
    return k == ProbeKind::Http ? "http" : "tcp";
}

bool parseResourceClass(const std::string& s, ResourceClass& out) {
    if (s == "systemd")
        out = ResourceClass::Systemd;
    else if (s == "lsb")
        out = ResourceClass::Lsb;
    else if (s == "process")
        out = ResourceClass::Process;
    else
        return false;
    return true;
}
bool parseMonitorMode(const std::string& s, MonitorMode& out) {
    if (s == "active")
        out = MonitorMode::Active;
    else if (s == "passive")
        out = MonitorMode::Passive;
    else
        return false;
    return true;
}
bool parseDeployableOutcome(const std::string& s, DeployableOutcome& out) {
    if (s == "leave-stopped")
        out = DeployableOutcome::LeaveStopped;
    else if (s == "stop-deployable")
        out = DeployableOutcome::StopDeployable;
    else
        return false;
    return true;
}
bool parseProbeKind(const std::string& s, ProbeKind& out) {
    if (s == "http")
        out = ProbeKind::Http;
    else if (s == "tcp")
        out = ProbeKind::Tcp;
    else
        return false;
    return true;
}

const char* toString(HostState s) {
    switch (s) {
    case HostState::Up:
        return "up";
    case HostState::Suspect:
        return "suspect";
    case HostState::Fencing:
        return "fencing";
    case HostState::Fenced:
        return "fenced";
    case HostState::Down:
        return "down";
    case HostState::Maintenance:
        return "maintenance";
    }
    return "?";
}
const char* toString(AssemblyOutcome o) {
    switch (o) {
    case AssemblyOutcome::Escalate:
        return "escalate";
    case AssemblyOutcome::Relocate:
        return "relocate";
    case AssemblyOutcome::Replace:
        return "replace";
    }
    return "?";
}
bool parseHostState(const std::string& s, HostState& out) {
    for (HostState h : {HostState::Up, HostState::Suspect, HostState::Fencing, HostState::Fenced,
                        HostState::Down, HostState::Maintenance})
        if (s == toString(h)) {
            out = h;
            return true;
        }
    return false;
}
bool parseAssemblyOutcome(const std::string& s, AssemblyOutcome& out) {
    for (AssemblyOutcome o :
         {AssemblyOutcome::Escalate, AssemblyOutcome::Relocate, AssemblyOutcome::Replace})
        if (s == toString(o)) {
            out = o;
            return true;
        }
    return false;
}

bool isValidFenceAgentName(const std::string& name) {
    if (name.size() < 7 || name.size() > 64 || name.rfind("fence_", 0) != 0)
        return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    return true;
}

bool isValidFenceParamName(const std::string& name) {
    if (name.empty() || name.size() > 64 || name == "action" || name == "option")
        return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    return true;
}

bool isValidNodeIdentity(const std::string& id) {
    return id.rfind("node:", 0) == 0 && isValidName(id.substr(5));
}

bool isValidName(const std::string& name) {
    if (name.empty() || name.size() > 64)
        return false;
    if (name[0] == '-' || name[0] == '.')
        return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

} // namespace pcloud::model
