#include "referee/referee.h"
#include "common/utf8.h"

#include "referee/apache_referee.h"
#include "referee/command.h"
#include "referee/haproxy_referee.h"
#include "referee/logging_referee.h"
#include "referee/nginx_referee.h"

#include <algorithm>
#include <arpa/inet.h>
#include <climits>
#include <cstdlib>
#include <map>
#include <set>
#include <sys/stat.h>

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

namespace {

bool nameChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

bool pathChar(char c) {
    return nameChar(c) || c == '/';
}

bool hasDotDot(const std::string& path) {
    return path == ".." || path.find("/../") != std::string::npos || path.ends_with("/..") ||
           path.rfind("../", 0) == 0;
}

// An absolute path of [A-Za-z0-9_./-] without "..": nothing a config parser or a command
// line could read as more than a path.
Status validatePath(const std::string& setting, const std::string& path) {
    if (path.empty() || path[0] != '/')
        return makeError("referee " + setting + " '" + path + "' must be an absolute path");
    if (path.size() > 4096)
        return makeError("referee " + setting + " is longer than 4096 characters");
    for (char c : path)
        if (!pathChar(c))
            return makeError("referee " + setting + " '" + path +
                             "' may hold only letters, digits, '_', '-', '.' and '/'");
    if (hasDotDot(path))
        return makeError("referee " + setting + " '" + path + "' must not contain '..'");
    return {};
}

std::string realDir(const std::string& dir) {
    char buf[PATH_MAX];
    if (::realpath(dir.c_str(), buf) == nullptr)
        return {};
    return buf;
}

bool within(const std::string& path, const std::string& dir) {
    return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                           (dir == "/" || path[dir.size()] == '/'));
}

std::string joinDirs(const std::vector<std::string>& dirs) {
    std::string out;
    for (const auto& d : dirs)
        out += (out.empty() ? "" : " ") + d;
    return out;
}

// config_file: a regular file (or none yet) whose real parent directory lies in one of the
// host's referee_dir directories. ManagedFile repeats the symlink check before every write.
Status validateManagedFile(const std::string& path, const hostconfig::HostConfig& host) {
    if (auto st = validatePath("config_file", path); !st)
        return st;
    const std::string where =
        host.source.empty()
            ? "the built-in default; " + std::string(hostconfig::kDefaultPath) + " is absent"
            : host.source;
    std::string parent = path.substr(0, path.rfind('/'));
    if (parent.empty())
        parent = "/";
    std::string realParent = realDir(parent);
    bool allowed = false;
    for (const auto& d : host.referee_dirs) {
        std::string real = realDir(d);
        if (!real.empty() && !realParent.empty() && within(realParent, real))
            allowed = true;
    }
    if (!allowed)
        return makeError(
            "referee config_file '" + path +
            "' is not inside an allowed directory (referee_dir = " + joinDirs(host.referee_dirs) +
            ", from " + where + "); put the file there or add its directory as referee_dir");
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (S_ISLNK(st.st_mode))
            return makeError("referee config_file '" + path +
                             "' is a symbolic link; pcloud only replaces a regular file "
                             "(point config_file at the real file)");
        if (!S_ISREG(st.st_mode))
            return makeError("referee config_file '" + path + "' is not a regular file");
    }
    return {};
}

} // namespace

Status validateBalancerName(const std::string& setting, const std::string& name) {
    if (name.empty())
        return makeError("referee " + setting + " is empty");
    if (name.size() > 64)
        return makeError("referee " + setting + " '" + utf8Excerpt(name, 64) +
                         "' is longer than 64 characters");
    for (char c : name) {
        if (!nameChar(c))
            return makeError("referee " + setting + " '" + utf8Excerpt(name, 64) +
                             "' may hold only letters, digits, '_', '-' and '.'");
    }
    return {};
}

Status validateConfig(const model::RefereeConfig& c, const hostconfig::HostConfig& host) {
    if (c.driver.empty() || c.driver == "log")
        return {};
    if (c.driver == "haproxy") {
        if (c.socket.empty())
            return makeError("referee driver haproxy needs socket= (the runtime API socket, "
                             "e.g. /run/haproxy/admin.sock)");
        if (c.backend.empty())
            return makeError("referee driver haproxy needs backend= (the backend pcloud owns)");
        if (auto st = validatePath("socket", c.socket); !st)
            return st;
        return validateBalancerName("backend", c.backend);
    }
    if (c.driver == "apache") {
        if (c.config_file.empty())
            return makeError("referee driver apache needs config_file= (the managed include "
                             "file)");
        if (c.cluster.empty())
            return makeError("referee driver apache needs cluster= (balancer://CLUSTER)");
        if (auto st = validateBalancerName("cluster", c.cluster); !st)
            return st;
        if (c.alias.empty() || c.alias[0] != '/' || c.alias.size() > 256)
            return makeError("referee alias '" + c.alias +
                             "' must start with '/' and be at most 256 characters");
        for (char ch : c.alias)
            if (!pathChar(ch))
                return makeError("referee alias '" + c.alias +
                                 "' may hold only letters, digits, '_', '-', '.' and '/'");
        if (hasDotDot(c.alias))
            return makeError("referee alias '" + c.alias + "' must not contain '..'");
        return validateManagedFile(c.config_file, host);
    }
    if (c.driver == "nginx") {
        if (c.config_file.empty())
            return makeError("referee driver nginx needs config_file= (the managed include "
                             "file holding the upstream block)");
        if (c.upstream.empty())
            return makeError("referee driver nginx needs upstream= (the upstream NAME that "
                             "proxy_pass http://NAME uses)");
        if (auto st = validateBalancerName("upstream", c.upstream); !st)
            return st;
        return validateManagedFile(c.config_file, host);
    }
    return makeError("unknown referee driver '" + c.driver +
                     "' (expected haproxy, apache, nginx, log, or empty for none)");
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
                                             const hostconfig::HostConfig& host,
                                             const Options& options) {
    if (config.driver.empty())
        return std::unique_ptr<Referee>{};
    if (auto st = validateConfig(config, host); !st)
        return st.error();
    if (config.driver == "log")
        return std::unique_ptr<Referee>(new LoggingReferee());
    if (config.driver == "haproxy")
        return std::unique_ptr<Referee>(
            new HaproxyReferee(config.socket, config.backend, options.io_timeout_ms));
    const std::string where = host.source.empty() ? "the built-in default" : host.source;
    if (config.driver == "apache") {
        if (splitCommandLine(host.apachectl).empty())
            return makeError("apachectl is empty in " + where);
        ApacheReferee::Settings s;
        s.config_file = config.config_file;
        s.cluster = config.cluster;
        s.alias = config.alias;
        s.apachectl = host.apachectl;
        s.command_timeout_ms = options.command_timeout_ms;
        return std::unique_ptr<Referee>(new ApacheReferee(std::move(s)));
    }
    // nginx (validateConfig refused anything else)
    if (splitCommandLine(host.nginx).empty())
        return makeError("nginx is empty in " + where);
    NginxReferee::Settings s;
    s.config_file = config.config_file;
    s.upstream = config.upstream;
    s.nginx = host.nginx;
    s.command_timeout_ms = options.command_timeout_ms;
    return std::unique_ptr<Referee>(new NginxReferee(std::move(s)));
}

} // namespace pcloud::referee
