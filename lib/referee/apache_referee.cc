#include "referee/apache_referee.h"

#include "common/fs.h"
#include "common/log.h"
#include "referee/command.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace pcloud::referee {
namespace {

std::string proxyTarget(const std::string& cluster, const std::string& alias) {
    // Apache wants the slashes of the path and the target to match.
    return "balancer://" + cluster + (!alias.empty() && alias.back() == '/' ? "/" : "");
}

Status validateAlias(const std::string& alias) {
    if (alias.empty() || alias[0] != '/')
        return makeError("referee alias '" + alias + "' must start with '/'");
    for (char c : alias)
        if (c == ' ' || c == '\t' || c == '\n' || c == '"')
            return makeError("referee alias '" + alias + "' may not hold blanks or quotes");
    return {};
}

} // namespace

std::string renderApacheConfig(const std::string& cluster, const std::string& alias,
                               const std::vector<Member>& desired) {
    std::vector<Member> sorted = desired;
    std::sort(sorted.begin(), sorted.end(),
              [](const Member& a, const Member& b) { return a.name < b.name; });
    std::string out = "# Managed by pcloud; every membership change rewrites this file.\n";
    out += "<Proxy balancer://" + cluster + ">\n";
    for (const auto& m : sorted) {
        if (m.address.empty())
            continue; // Out and never had an address
        out += "    BalancerMember http://" + m.address + " route=" + m.name;
        if (m.desired == MemberState::Drain)
            out += " status=+N";
        if (m.desired == MemberState::Out)
            out += " status=+S";
        out += "\n";
    }
    out += "</Proxy>\n";
    out += "ProxyPass " + alias + " " + proxyTarget(cluster, alias) + "\n";
    return out;
}

Result<std::vector<ActualMember>> parseApacheConfig(const std::string& text,
                                                    const std::string& file) {
    std::vector<ActualMember> out;
    std::istringstream in(text);
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        std::istringstream words(line);
        std::string directive;
        words >> directive;
        if (directive != "BalancerMember")
            continue;
        std::string url;
        words >> url;
        const std::string scheme = "http://";
        if (url.compare(0, scheme.size(), scheme) != 0)
            return makeError("BalancerMember '" + url + "' is not an http:// URL", file, lineNo);
        ActualMember m;
        m.address = url.substr(scheme.size());
        if (!m.address.empty() && m.address.back() == '/')
            m.address.pop_back();
        std::string word;
        while (words >> word) {
            if (word.rfind("route=", 0) == 0)
                m.name = word.substr(6);
            if (word.rfind("status=", 0) == 0) {
                // Flags set with '+' count; S(topped), D(isabled), E(rror) mean no traffic.
                std::string flags = word.substr(7);
                bool on = true;
                for (char c : flags) {
                    if (c == '+')
                        on = true;
                    else if (c == '-')
                        on = false;
                    else if (on &&
                             (c == 'S' || c == 's' || c == 'D' || c == 'd' || c == 'E' || c == 'e'))
                        m.state = MemberState::Out;
                    else if (on && (c == 'N' || c == 'n') && m.state != MemberState::Out)
                        m.state = MemberState::Drain;
                }
            }
        }
        if (m.name.empty())
            m.name = m.address; // hand-written member without a route
        out.push_back(std::move(m));
    }
    std::sort(out.begin(), out.end(),
              [](const ActualMember& a, const ActualMember& b) { return a.name < b.name; });
    return out;
}

ApacheReferee::ApacheReferee(Settings settings)
    : settings_(std::move(settings)),
      file_(settings_.config_file, {.name = "apache",
                                    .product = "Apache",
                                    .setting = "apachectl",
                                    .command = settings_.apachectl,
                                    .test_args = {"-t"},
                                    .test_what = "configtest",
                                    .reload_args = {"-k", "graceful"},
                                    .reload_what = "graceful reload",
                                    .timeout_ms = settings_.command_timeout_ms}) {
    if (settings_.alias.empty())
        settings_.alias = "/";
}

std::string ApacheReferee::describe() const {
    return "apache file=" + settings_.config_file + " cluster=" + settings_.cluster;
}

Status ApacheReferee::apply(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st;
    if (auto st = validateAlias(settings_.alias); !st)
        return st;
    auto reloaded = file_.install(renderApacheConfig(settings_.cluster, settings_.alias, desired));
    if (!reloaded)
        return reloaded.error();
    if (*reloaded)
        PCLOUD_LOG(Info, "Apache balancer file rewritten and reloaded",
                   {{"file", settings_.config_file},
                    {"cluster", settings_.cluster},
                    {"members", std::to_string(desired.size())}});
    return {};
}

Result<std::vector<ActualMember>> ApacheReferee::read() {
    auto text = file_.text();
    if (!text)
        return text.error();
    if (!*text)
        return std::vector<ActualMember>{};
    return parseApacheConfig(**text, settings_.config_file);
}

Result<DriftReport> ApacheReferee::reconcile(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st.error();
    DriftReport report;
    auto actual = read();
    // A file we cannot parse is drift too: rewrite it.
    if (actual)
        report.drifts = diffMembers(desired, *actual);
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
