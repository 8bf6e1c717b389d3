#include "referee/haproxy_referee.h"
#include "common/utf8.h"

#include "common/log.h"
#include "referee/runtime_api.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace pcloud::referee {
namespace {

// srv_admin_state bits (HAProxy src/server.h).
constexpr long kForcedMaint = 0x01, kInheritedMaint = 0x02, kForcedDrain = 0x08,
               kInheritedDrain = 0x10, kResolutionMaint = 0x20, kHostnameMaint = 0x40;
// 0x04 (CMAINT, "disabled" in the config) stays set after `state ready`: not a state.

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    std::string w;
    while (in >> w)
        out.push_back(w);
    return out;
}

const char* haproxyState(MemberState s) {
    switch (s) {
    case MemberState::Ready:
        return "ready";
    case MemberState::Drain:
        return "drain";
    case MemberState::Out:
        return "maint";
    }
    return "maint";
}

std::string formatAddress(const std::string& host, const std::string& port) {
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + port;
    return host + ":" + port;
}

bool startsWith(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

// Whether HAProxy's answer to `command` means it did it.
bool answerOk(const std::string& command, const std::string& answer) {
    if (startsWith(command, "add server"))
        return answer == "New server registered.";
    if (startsWith(command, "del server"))
        return answer == "Server deleted.";
    if (command.find(" addr ") != std::string::npos)
        return answer.find("changed") != std::string::npos ||
               answer.find("no need to change") != std::string::npos;
    return answer.empty(); // set server ... state: silent on success
}

} // namespace

Result<std::vector<ActualMember>> parseServersState(const std::string& text,
                                                    const std::string& backend) {
    std::istringstream in(text);
    std::string line;
    if (!std::getline(in, line))
        return makeError("haproxy sent an empty 'show servers state'");
    if (line != "1") {
        if (line.find("Can't find backend") != std::string::npos)
            return makeError("haproxy has no backend '" + backend +
                             "' (check the referee backend= setting against haproxy.cfg)");
        return makeError("haproxy 'show servers state " + backend +
                         "' answered something unexpected: " + line);
    }
    std::map<std::string, size_t> col;
    std::vector<ActualMember> out;
    int lineNo = 1;
    while (std::getline(in, line)) {
        ++lineNo;
        if (line.empty())
            continue;
        auto w = words(line);
        if (line[0] == '#') {
            for (size_t i = 1; i < w.size(); ++i)
                col[w[i]] = i - 1;
            continue;
        }
        for (const char* need :
             {"be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state", "srv_port"})
            if (!col.count(need))
                return makeError(std::string("haproxy 'show servers state' has no column ") + need);
        auto field = [&](const char* name) -> std::string {
            size_t i = col[name];
            return i < w.size() ? w[i] : std::string();
        };
        if (w.size() < col.size())
            return makeError("haproxy 'show servers state' line " + std::to_string(lineNo) +
                             " has " + std::to_string(w.size()) + " fields, expected " +
                             std::to_string(col.size()));
        if (field("be_name") != backend)
            continue;
        ActualMember m;
        m.name = field("srv_name");
        m.address = formatAddress(field("srv_addr"), field("srv_port"));
        long admin = std::strtol(field("srv_admin_state").c_str(), nullptr, 10);
        long op = std::strtol(field("srv_op_state").c_str(), nullptr, 10);
        if (admin & (kForcedMaint | kInheritedMaint | kResolutionMaint | kHostnameMaint))
            m.state = MemberState::Out;
        else if (admin & (kForcedDrain | kInheritedDrain))
            m.state = MemberState::Drain;
        else
            m.state = MemberState::Ready;
        m.health = op == 2 ? "up" : op == 0 ? "down" : op == 1 ? "starting" : "stopping";
        out.push_back(std::move(m));
    }
    std::sort(out.begin(), out.end(),
              [](const ActualMember& a, const ActualMember& b) { return a.name < b.name; });
    return out;
}

Result<HaproxyInfo> parseShowInfo(const std::string& text) {
    HaproxyInfo info;
    bool havePid = false;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto colon = line.find(": ");
        if (colon == std::string::npos)
            continue;
        std::string key = line.substr(0, colon), value = line.substr(colon + 2);
        if (key == "Pid") {
            info.pid = std::strtol(value.c_str(), nullptr, 10);
            havePid = true;
        } else if (key == "Start_time_sec") {
            info.start_time_sec = std::strtoll(value.c_str(), nullptr, 10);
        }
    }
    if (!havePid)
        return makeError("haproxy 'show info' has no Pid line");
    return info;
}

std::vector<std::string> planHaproxyCommands(const std::string& backend,
                                             const std::vector<Member>& desired,
                                             const std::vector<ActualMember>& actual) {
    std::map<std::string, const ActualMember*> byName;
    for (const auto& a : actual)
        byName[a.name] = &a;
    std::set<std::string> wanted;
    std::vector<std::string> cmds;
    for (const auto& d : desired) {
        wanted.insert(d.name);
        const std::string server = backend + "/" + d.name;
        auto it = byName.find(d.name);
        if (it == byName.end()) {
            if (d.desired == MemberState::Out)
                continue; // absent already gets no traffic
            cmds.push_back("add server " + server + " " + d.address);
            cmds.push_back("set server " + server + " state " + haproxyState(d.desired));
            continue;
        }
        const ActualMember& a = *it->second;
        if (d.desired != MemberState::Out && a.address != d.address) {
            std::string host;
            int port = 0;
            if (splitAddress(d.address, host, port))
                cmds.push_back("set server " + server + " addr " + host + " port " +
                               std::to_string(port));
        }
        if (a.state != d.desired)
            cmds.push_back("set server " + server + " state " + haproxyState(d.desired));
    }
    for (const auto& a : actual) {
        if (wanted.count(a.name))
            continue;
        if (a.state != MemberState::Out)
            cmds.push_back("set server " + backend + "/" + a.name + " state maint");
        cmds.push_back("del server " + backend + "/" + a.name);
    }
    return cmds;
}

HaproxyReferee::HaproxyReferee(std::string socketPath, std::string backend, Millis ioTimeoutMs)
    : socket_(std::move(socketPath)), backend_(std::move(backend)), io_timeout_ms_(ioTimeoutMs) {}

std::string HaproxyReferee::describe() const {
    return "haproxy socket=" + socket_ + " backend=" + backend_;
}

Result<std::vector<std::string>> HaproxyReferee::send(const std::vector<std::string>& commands) {
    std::string line;
    for (const auto& c : commands) {
        if (!line.empty())
            line += ';';
        line += c;
    }
    line += '\n';
    auto out = runtimeApiExchange(socket_, line, io_timeout_ms_);
    if (!out)
        return out.error();
    auto answers = splitRuntimeResponses(*out, commands);
    if (answers.size() < commands.size())
        return makeError("haproxy answered " + std::to_string(answers.size()) + " of " +
                             std::to_string(commands.size()) +
                             " commands (connection closed early?)",
                         socket_);
    return answers;
}

Result<HaproxyReferee::Snapshot> HaproxyReferee::snapshot() {
    auto answers = send({"show info", "show servers state " + backend_});
    if (!answers)
        return answers.error();
    auto info = parseShowInfo((*answers)[0]);
    if (!info) {
        // A socket without level admin, or not haproxy at all.
        return makeError(info.error().message + ": " + utf8Excerpt((*answers)[0], 200), socket_);
    }
    auto members = parseServersState((*answers)[1], backend_);
    if (!members)
        return makeError(members.error().message, socket_);
    return Snapshot{*info, std::move(*members)};
}

Status HaproxyReferee::converge(const std::vector<Member>& desired,
                                const std::vector<ActualMember>& actual) {
    auto cmds = planHaproxyCommands(backend_, desired, actual);
    if (cmds.empty())
        return {};
    const size_t changes = cmds.size();
    cmds.push_back("show servers state " + backend_);
    auto answers = send(cmds);
    if (!answers)
        return answers.error();
    std::string refused;
    for (size_t i = 0; i < changes; ++i) {
        const std::string& ans = (*answers)[i];
        if (answerOk(cmds[i], ans))
            continue;
        if (startsWith(cmds[i], "del server")) {
            // Still has connections: it is in maint, gets nothing; retried next time.
            PCLOUD_LOG(Info, "HAProxy kept a removed server for now",
                       {{"command", cmds[i]}, {"answer", ans}});
            continue;
        }
        if (!refused.empty())
            refused += "; ";
        refused += "'" + cmds[i] + "' -> '" + ans + "'";
    }
    auto after = parseServersState((*answers)[changes], backend_);
    if (!after)
        return makeError(after.error().message, socket_);
    auto left = diffMembers(desired, *after);
    if (left.empty() && refused.empty())
        return {};
    std::string text = "haproxy backend " + backend_ + " did not take every change";
    if (!left.empty()) {
        DriftReport r;
        r.drifts = left;
        text += " (still: " + r.describe() + ")";
    }
    if (!refused.empty())
        text += "; haproxy said: " + refused;
    return makeError(text, socket_);
}

Status HaproxyReferee::apply(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st;
    auto snap = snapshot();
    if (!snap)
        return snap.error();
    return converge(desired, snap->members);
}

Result<std::vector<ActualMember>> HaproxyReferee::read() {
    auto snap = snapshot();
    if (!snap)
        return snap.error();
    return std::move(snap->members);
}

Result<DriftReport> HaproxyReferee::reconcile(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st.error();
    auto snap = snapshot();
    if (!snap)
        return snap.error();
    DriftReport report;
    if (last_info_ && !(*last_info_ == snap->info)) {
        report.restarted = true;
        report.restart_note = "haproxy restarted or reloaded (pid " +
                              std::to_string(last_info_->pid) + " -> " +
                              std::to_string(snap->info.pid) + "), desired state re-applied";
    }
    report.drifts = diffMembers(desired, snap->members);
    if (auto st = converge(desired, snap->members); !st) {
        Error e = st.error();
        if (!report.clean())
            e.message = "found " + report.describe() + "; " + e.message;
        return e;
    }
    last_info_ = snap->info;
    return report;
}

} // namespace pcloud::referee
