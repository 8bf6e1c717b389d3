#include "referee/referee.h"

#include "referee/apache_referee.h"
#include "referee/command.h"
#include "referee/haproxy_referee.h"
#include "referee/logging_referee.h"
#include "referee/nginx_referee.h"

#include <algorithm>
#include <arpa/inet.h>
#include <map>
#include <set>

namespace pcloud::referee {

const char* toString(MemberState s) {
    switch (s) {
    case MemberState::Ready:
        return "ready";
    case MemberState::Drain:
        return "drain";
    case MemberState::Out:
        return "out";
    }
    return "?";
}

std::string Drift::describe() const {
    std::string text = "member " + member;
    if (!actual && wanted)
        return text + " was missing, wanted " + toString(*wanted);
    if (actual && !wanted)
        return text + " was " + toString(*actual) + ", wanted removed";
    bool said = false;
    if (actual && wanted && *actual != *wanted) {
        text += std::string(" was ") + toString(*actual) + ", wanted " + toString(*wanted);
        said = true;
    }
    if (actual_address != wanted_address) {
        text += std::string(said ? " and" : "") + " had address " + actual_address + ", wanted " +
                wanted_address;
    }
    return text;
}

std::string DriftReport::describe() const {
    std::string text;
    if (restarted)
        text = restart_note;
    for (const auto& d : drifts) {
        if (!text.empty())
            text += "; ";
        text += d.describe();
    }
    return text.empty() ? "no drift" : text;
}

bool splitAddress(const std::string& address, std::string& host, int& port) {
    std::string portText;
    if (!address.empty() && address[0] == '[') {
        auto close = address.find(']');
        if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
            return false;
        host = address.substr(1, close - 1);
        portText = address.substr(close + 2);
        in6_addr a6{};
        if (::inet_pton(AF_INET6, host.c_str(), &a6) != 1)
            return false;
    } else {
        auto colon = address.rfind(':');
        if (colon == std::string::npos)
            return false;
        host = address.substr(0, colon);
        portText = address.substr(colon + 1);
        in_addr a4{};
        if (::inet_pton(AF_INET, host.c_str(), &a4) != 1)
            return false;
    }
    if (portText.empty() || portText.size() > 5)
        return false;
    port = 0;
    for (char c : portText) {
        if (c < '0' || c > '9')
            return false;
        port = port * 10 + (c - '0');
    }
    return port > 0 && port <= 65535;
}

Status validateBalancerName(const std::string& setting, const std::string& name) {
    if (name.empty())
        return makeError("referee " + setting + " is empty");
    for (char c : name) {
        bool okChar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
        if (!okChar)
            return makeError("referee " + setting + " '" + name +
                             "' may hold only letters, digits, '_', '-' and '.'");
    }
    return {};
}

Status validateMembers(const std::vector<Member>& desired) {
    std::set<std::string> seen;
    for (const auto& m : desired) {
        if (m.name.empty())
            return makeError("referee member with an empty name");
        for (char c : m.name) {
            bool okChar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
            if (!okChar)
                return makeError("referee member '" + m.name +
                                 "': name may hold only letters, digits, '_', '-' and '.'");
        }
        if (!seen.insert(m.name).second)
            return makeError("referee member '" + m.name + "' is listed twice");
        std::string host;
        int port = 0;
        // An Out member may have no address yet (never learned from the agent).
        if (m.address.empty() && m.desired == MemberState::Out)
            continue;
        if (!splitAddress(m.address, host, port))
            return makeError("referee member '" + m.name + "': address '" + m.address +
                             "' is not IP:PORT (set it with the assembly's address)");
    }
    return {};
}

std::vector<Drift> diffMembers(const std::vector<Member>& desired,
                               const std::vector<ActualMember>& actual) {
    std::map<std::string, const ActualMember*> byName;
    for (const auto& a : actual)
        byName[a.name] = &a;
    std::set<std::string> wantedNames;
    std::vector<Drift> out;
    for (const auto& d : desired) {
        wantedNames.insert(d.name);
        auto it = byName.find(d.name);
        if (it == byName.end()) {
            if (d.desired != MemberState::Out)
                out.push_back(Drift{d.name, std::nullopt, d.desired, {}, {}});
            continue;
        }
        const ActualMember& a = *it->second;
        bool stateDiffers = a.state != d.desired;
        bool addressDiffers = d.desired != MemberState::Out && a.address != d.address;
        if (!stateDiffers && !addressDiffers)
            continue;
        Drift drift{d.name, a.state, d.desired, {}, {}};
        if (addressDiffers) {
            drift.actual_address = a.address;
            drift.wanted_address = d.address;
        }
        out.push_back(std::move(drift));
    }
    for (const auto& a : actual) {
        if (wantedNames.count(a.name) == 0 && a.state != MemberState::Out)
            out.push_back(Drift{a.name, a.state, std::nullopt, {}, {}});
    }
    std::sort(out.begin(), out.end(),
              [](const Drift& x, const Drift& y) { return x.member < y.member; });
    return out;
}

Result<std::unique_ptr<Referee>> makeReferee(const model::RefereeConfig& config,
                                             const Options& options) {
    if (config.driver.empty())
        return std::unique_ptr<Referee>{};
    if (config.driver == "log")
        return std::unique_ptr<Referee>(new LoggingReferee());
    if (config.driver == "haproxy") {
        if (config.socket.empty())
            return makeError("referee driver haproxy needs socket= (the runtime API socket, "
                             "e.g. /run/haproxy/admin.sock)");
        if (config.backend.empty())
            return makeError("referee driver haproxy needs backend= (the backend pcloud owns)");
        return std::unique_ptr<Referee>(
            new HaproxyReferee(config.socket, config.backend, options.io_timeout_ms));
    }
    if (config.driver == "apache") {
        if (config.config_file.empty())
            return makeError("referee driver apache needs config_file= (the managed include "
                             "file)");
        if (config.cluster.empty())
            return makeError("referee driver apache needs cluster= (balancer://CLUSTER)");
        if (auto st = validateBalancerName("cluster", config.cluster); !st)
            return st.error();
        ApacheReferee::Settings s;
        s.config_file = config.config_file;
        s.cluster = config.cluster;
        s.alias = config.alias;
        s.apachectl = config.apachectl;
        s.command_timeout_ms = options.command_timeout_ms;
        return std::unique_ptr<Referee>(new ApacheReferee(std::move(s)));
    }
    if (config.driver == "nginx") {
        if (config.config_file.empty())
            return makeError("referee driver nginx needs config_file= (the managed include "
                             "file holding the upstream block)");
        if (config.upstream.empty())
            return makeError("referee driver nginx needs upstream= (the upstream NAME that "
                             "proxy_pass http://NAME uses)");
        if (auto st = validateBalancerName("upstream", config.upstream); !st)
            return st.error();
        if (splitCommandLine(config.nginx).empty())
            return makeError("referee driver nginx needs nginx= (the nginx command, e.g. "
                             "\"nginx\" or \"nginx -c /srv/web/nginx.conf\")");
        NginxReferee::Settings s;
        s.config_file = config.config_file;
        s.upstream = config.upstream;
        s.nginx = config.nginx;
        s.command_timeout_ms = options.command_timeout_ms;
        return std::unique_ptr<Referee>(new NginxReferee(std::move(s)));
    }
    return makeError("unknown referee driver '" + config.driver +
                     "' (expected haproxy, apache, nginx, log, or empty for none)");
}

} // namespace pcloud::referee
