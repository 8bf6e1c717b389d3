#include "referee/nginx_referee.h"

#include "common/fs.h"
#include "common/log.h"
#include "referee/command.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace pcloud::referee {
namespace {

const char* kMemberMarker = "pcloud:member=";
const char* kDrainMarker = "pcloud:drain";
const char* kPlaceholderMarker = "pcloud:placeholder";

std::vector<std::string> words(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> out;
    std::string w;
    while (in >> w)
        out.push_back(w);
    return out;
}

} // namespace

std::string renderNginxConfig(const std::string& upstream, const std::vector<Member>& desired) {
    std::vector<Member> sorted = desired;
    std::sort(sorted.begin(), sorted.end(),
              [](const Member& a, const Member& b) { return a.name < b.name; });
    std::string out = "# Managed by pcloud; every membership change rewrites this file.\n";
    out += "upstream " + upstream + " {\n";
    bool any = false;
    for (const auto& m : sorted) {
        if (m.address.empty())
            continue; // Out and never had an address
        any = true;
        out += "    server " + m.address;
        if (m.desired != MemberState::Ready)
            out += " down";
        out += "; # " + std::string(kMemberMarker) + m.name;
        if (m.desired == MemberState::Drain)
            out += std::string(" ") + kDrainMarker;
        out += "\n";
    }
    if (!any) // nginx rejects an upstream without servers
        out += std::string("    server 127.0.0.1:1 down; # ") + kPlaceholderMarker + "\n";
    out += "}\n";
    return out;
}

Result<std::vector<ActualMember>>
parseNginxConfig(const std::string& text, const std::string& upstream, const std::string& file) {
    std::vector<ActualMember> out;
    std::istringstream in(text);
    std::string line;
    int lineNo = 0;
    enum { Before, Inside, After } where = Before;
    while (std::getline(in, line)) {
        ++lineNo;
        std::string statement = line, comment;
        if (auto hash = line.find('#'); hash != std::string::npos) {
            statement = line.substr(0, hash);
            comment = line.substr(hash + 1);
        }
        auto w = words(statement);
        if (w.empty())
            continue;
        if (where != Inside) {
            if (w[0] != "upstream")
                return makeError("'" + w[0] +
                                     "' outside the upstream block (pcloud's file holds "
                                     "only 'upstream " +
                                     upstream + " { ... }')",
                                 file, lineNo);
            if (where == After)
                return makeError("a second upstream block; pcloud's file holds exactly one", file,
                                 lineNo);
            std::string name = w.size() > 1 ? w[1] : "";
            bool brace = w.size() == 3 && w[2] == "{";
            if (w.size() == 2 && name.size() > 1 && name.back() == '{') {
                name.pop_back();
                brace = true;
            }
            if (!brace)
                return makeError("expected 'upstream " + upstream + " {' on one line", file,
                                 lineNo);
            if (name != upstream)
                return makeError("upstream '" + name + "' is not the one pcloud owns ('" +
                                     upstream + "')",
                                 file, lineNo);
            where = Inside;
            continue;
        }
        if (w.size() == 1 && w[0] == "}") {
            where = After;
            continue;
        }
        std::string& last = w.back();
        if (last == ";")
            w.pop_back();
        else if (last.back() == ';')
            last.pop_back();
        else
            return makeError("statement '" + oneLine(statement, 80) +
                                 "' does not end with ';' on its line",
                             file, lineNo);
        if (w.empty() || w[0] != "server")
            continue; // keepalive, least_conn, zone...: not membership
        if (w.size() < 2)
            return makeError("'server' without an address", file, lineNo);
        ActualMember m;
        m.address = w[1];
        bool down = std::find(w.begin() + 2, w.end(), "down") != w.end();
        bool drain = false, placeholder = false;
        for (const auto& c : words(comment)) {
            if (c.rfind(kMemberMarker, 0) == 0)
                m.name = c.substr(std::strlen(kMemberMarker));
            else if (c == kDrainMarker)
                drain = true;
            else if (c == kPlaceholderMarker)
                placeholder = true;
        }
        if (placeholder)
            continue;
        m.state = !down ? MemberState::Ready : drain ? MemberState::Drain : MemberState::Out;
        if (m.name.empty())
            m.name = m.address; // hand-written server without a marker
        out.push_back(std::move(m));
    }
    if (where == Before)
        return makeError("no 'upstream " + upstream + " { ... }' block", file, lineNo);
    if (where == Inside)
        return makeError("the upstream block is not closed with '}'", file, lineNo);
    std::sort(out.begin(), out.end(),
              [](const ActualMember& a, const ActualMember& b) { return a.name < b.name; });
    return out;
}

NginxReferee::NginxReferee(Settings settings)
    : settings_(std::move(settings)),
      file_(settings_.config_file, {.name = "nginx",
                                    .product = "nginx",
                                    .setting = "nginx",
                                    .command = settings_.nginx,
                                    .test_args = {"-t"},
                                    .test_what = "config test",
                                    .reload_args = {"-s", "reload"},
                                    .reload_what = "reload",
                                    .timeout_ms = settings_.command_timeout_ms}) {}

std::string NginxReferee::describe() const {
    return "nginx file=" + settings_.config_file + " upstream=" + settings_.upstream;
}

Status NginxReferee::apply(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st;
    auto reloaded = file_.install(renderNginxConfig(settings_.upstream, desired));
    if (!reloaded)
        return reloaded.error();
    if (*reloaded)
        PCLOUD_LOG(Info, "nginx upstream file rewritten and reloaded",
                   {{"file", settings_.config_file},
                    {"upstream", settings_.upstream},
                    {"members", std::to_string(desired.size())}});
    return {};
}

Result<std::vector<ActualMember>> NginxReferee::read() {
    auto text = file_.text();
    if (!text)
        return text.error();
    if (!*text)
        return std::vector<ActualMember>{};
    return parseNginxConfig(**text, settings_.upstream, settings_.config_file);
}

Result<DriftReport> NginxReferee::reconcile(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st.error();
    DriftReport report;
    auto actual = read();
    // A file we cannot parse is drift too: nginx-wise it holds none of our members, so
    // every wanted member counts as missing, and apply() rewrites it.
    if (actual) {
        report.drifts = diffMembers(desired, *actual);
    } else {
        PCLOUD_LOG(Warning, "nginx managed file unreadable; rewriting it",
                   {{"error", actual.error().describe()}});
        report.drifts = diffMembers(desired, {});
    }
    auto st = apply(desired); // no-op when the file is already exactly what we write
    if (!st) {
        Error e = st.error();
        if (!report.clean())
            e.message = "found " + report.describe() + "; " + e.message;
        return e;
    }
    return report;
}

} // namespace pcloud::referee
