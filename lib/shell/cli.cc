#include "shell/cli.h"

#include "common/fs.h"
#include "common/time_format.h"
#include "common/utf8.h"
#include "events/event.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

namespace pcloud::shell::cli {

using nlohmann::json;

namespace {
using K = ArgKind;
}

const std::vector<CommandSpec>& commands() {
    static const std::vector<CommandSpec> table = {
        {"deployable_create",
         "deployable_create NAME [--uri URI] [--monitor active|passive] [--spread on|off]",
         "create a deployable (a named group of assemblies)",
         {K::Other}},
        {"deployable_delete",
         "deployable_delete NAME",
         "delete a stopped deployable",
         {K::Deployable}},
        {"deployable_list", "deployable_list", "list deployables", {}},
        {"deployable_start",
         "deployable_start NAME",
         "start a deployable: cped runs a dped for it",
         {K::Deployable}},
        {"deployable_stop",
         "deployable_stop NAME",
         "stop a deployable: drain, stop its domains in order, stop its dped",
         {K::Deployable}},
        {"deployable_reload",
         "deployable_reload NAME",
         "make the deployable's dped re-read the model",
         {K::Deployable}},
        {"deployable_status",
         "deployable_status NAME",
         "per assembly: domain, agent, heartbeat, services, failures, backoff, referee",
         {K::Deployable}},
        {"deployable_assembly_add",
         "deployable_assembly_add DEPLOYABLE ASSEMBLY",
         "add an assembly to a deployable",
         {K::Deployable, K::Assembly}},
        {"deployable_assembly_remove",
         "deployable_assembly_remove DEPLOYABLE ASSEMBLY",
         "remove an assembly from a deployable",
         {K::Deployable, K::Assembly}},
        {"deployable_assembly_list",
         "deployable_assembly_list DEPLOYABLE",
         "list the assemblies of a deployable",
         {K::Deployable}},
        {"assembly_create",
         "assembly_create NAME (--domain-xml FILE | --image PATH [--memory MiB] [--vcpus N] "
         "[--network NET[,NET...]]) [--address IP:PORT] [--host H | --hosts H1,H2]",
         "create an assembly from a libvirt domain XML file, or from a disk image (the domain "
         "XML is generated)",
         {K::Other}},
        {"assembly_place",
         "assembly_place ASSEMBLY [--host H | --hosts H1,H2]",
         "where an assembly may run: pinned to one host, an allowed set, or (neither) any host",
         {K::Assembly}},
        {"deployable_spread",
         "deployable_spread DEPLOYABLE on|off",
         "spread the deployable's assemblies across hosts where possible (default on)",
         {K::Deployable, K::Other}},
        {"host_add",
         "host_add NAME --node node:NAME [--fence AGENT [KEY=VALUE...]] [--capacity "
         "vcpus=N,mem=MiB]",
         "add a hypervisor host: its pcloud-node identity, fence agent and capacity",
         {K::Other}},
        {"host_remove", "host_remove NAME", "remove a host no assembly is placed on", {K::Other}},
        {"host_list", "host_list", "list hosts with state, node, fence agent and capacity", {}},
        {"host_status",
         "host_status NAME",
         "one host: state, capacity, fence agent and the assemblies placed on it",
         {K::Other}},
        {"host_maintenance",
         "host_maintenance NAME on|off",
         "take a host out of placement (on) or put it back (off)",
         {K::Other, K::Other}},
        {"assembly_clone",
         "assembly_clone SOURCE NAME [--address IP:PORT]",
         "copy an assembly under a new name",
         {K::Assembly, K::Other}},
        {"assembly_delete",
         "assembly_delete NAME",
         "delete an assembly that is in no deployable",
         {K::Assembly}},
        {"assembly_list", "assembly_list", "list assemblies", {}},
        {"assembly_resource_add",
         "assembly_resource_add RESOURCE TEMPLATE ASSEMBLY",
         "add a resource (a service) made from a template",
         {K::Other, K::Template, K::Assembly}},
        {"assembly_resource_remove",
         "assembly_resource_remove RESOURCE ASSEMBLY",
         "remove a resource from an assembly",
         {K::Resource, K::Assembly}},
        {"assembly_resource_list",
         "assembly_resource_list ASSEMBLY",
         "list an assembly's resources",
         {K::Assembly}},
        {"escalation_assembly_set",
         "escalation_assembly_set ASSEMBLY FAILURES PERIOD",
         "assembly failure budget: FAILURES (or INFINITY) within PERIOD (e.g. 10m)",
         {K::Assembly, K::Number, K::Period}},
        {"escalation_resource_set",
         "escalation_resource_set RESOURCE ASSEMBLY FAILURES PERIOD",
         "resource failure budget before escalating to its assembly",
         {K::Resource, K::Assembly, K::Number, K::Period}},
        {"escalation_deployable_set",
         "escalation_deployable_set DEPLOYABLE FAILURES PERIOD [--outcome "
         "leave-stopped|stop-deployable]",
         "deployable failure budget and what happens when it is used up",
         {K::Deployable, K::Number, K::Period}},
        {"referee_set",
         "referee_set DEPLOYABLE none|log|haproxy|apache|nginx [KEY=VALUE...]",
         "choose the load balancer kept truthful (haproxy: socket backend; apache: "
         "config_file cluster alias; nginx: config_file upstream; the apachectl and nginx "
         "commands come from the host's /etc/pcloud/pcloud.conf)",
         {K::Deployable, K::Other}},
        {"assembly_park",
         "assembly_park ASSEMBLY",
         "drain an assembly from the referee and keep it out",
         {K::Assembly}},
        {"assembly_unpark",
         "assembly_unpark ASSEMBLY",
         "put a parked assembly back into the referee",
         {K::Assembly}},
        {"template_list", "template_list", "list resource templates", {}},
        {"status", "status", "every deployable at a glance", {}},
        {"events",
         "events [--follow] [--since SEQ|TIME] [--deployable D] [--limit N]",
         "show events from the journal; --follow keeps printing new ones",
         {}},
        {"ping",
         "ping [ASSEMBLY...]",
         "agent round trip per assembly, with min/avg/max",
         {K::Assembly, K::Assembly, K::Assembly, K::Assembly, K::Assembly, K::Assembly}},
        {"cluster_status",
         "cluster_status",
         "the zone: etcd members (health, raft index, lag), the leading cped and its epoch",
         {}},
        {"cluster_add",
         "cluster_add NAME PEER_URL [--learner]",
         "add an etcd member to the zone (quorum checked first); prints how to start it; a "
         "--learner replicates without voting until cluster_promote",
         {K::Other, K::Other}},
        {"cluster_remove",
         "cluster_remove NAME",
         "remove an etcd member from the zone, refused when the rest would lose quorum",
         {K::Other}},
        {"cluster_promote",
         "cluster_promote NAME",
         "make a started, healthy learner a voting member of the zone",
         {K::Other}},
        {"help", "help [COMMAND]", "list commands, or show one command's usage", {K::None}},
    };
    return table;
}

const CommandSpec* findCommand(const std::string& name) {
    for (const auto& c : commands())
        if (c.name == name)
            return &c;
    return nullptr;
}

Result<std::vector<std::string>> splitLine(const std::string& line) {
    std::vector<std::string> out;
    std::string cur;
    bool in = false;
    char quote = 0;
    for (char c : line) {
        if (quote) {
            if (c == quote)
                quote = 0;
            else
                cur += c;
            continue;
        }
        if (c == '\'' || c == '"') {
            quote = c;
            in = true;
        } else if (c == ' ' || c == '\t' || c == '\n') {
            if (in)
                out.push_back(cur);
            cur.clear();
            in = false;
        } else {
            cur += c;
            in = true;
        }
    }
    if (quote)
        return makeError(std::string("unterminated ") + quote + " quote");
    if (in)
        out.push_back(cur);
    return out;
}

namespace {

// Positional words and --options of one command line.
struct Words {
    std::vector<std::string> pos;
    std::map<std::string, std::string> opts; // value "" for flags
};

Result<Words> split(const std::vector<std::string>& words,
                    const std::vector<std::string>& withValue,
                    const std::vector<std::string>& flags, const std::string& usage) {
    Words w;
    for (size_t i = 1; i < words.size(); ++i) {
        const auto& a = words[i];
        if (a.rfind("--", 0) == 0 && a.size() > 2) {
            std::string key = a, val;
            auto eq = a.find('=');
            if (eq != std::string::npos) {
                key = a.substr(0, eq);
                val = a.substr(eq + 1);
            }
            if (std::find(flags.begin(), flags.end(), key) != flags.end()) {
                w.opts[key] = "";
                continue;
            }
            if (std::find(withValue.begin(), withValue.end(), key) == withValue.end())
                return makeError("unknown option " + key + "\nusage: " + usage);
            if (eq == std::string::npos) {
                if (i + 1 >= words.size())
                    return makeError("option " + key + " needs a value\nusage: " + usage);
                val = words[++i];
            }
            w.opts[key] = val;
        } else {
            w.pos.push_back(a);
        }
    }
    return w;
}

Status checkCount(const Words& w, size_t min, size_t max, const std::string& usage) {
    if (w.pos.size() < min || w.pos.size() > max) {
        std::string want =
            min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
        if (max > 100)
            want = "at least " + std::to_string(min);
        return makeError("wrong number of arguments: got " + std::to_string(w.pos.size()) +
                         ", want " + want + "\nusage: " + usage);
    }
    return {};
}

Result<json> failuresArg(const std::string& s) {
    if (s == "INFINITY" || s == "infinity")
        return json("INFINITY");
    if (s.empty() ||
        !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        s.size() > 7 || std::stol(s) < 1)
        return makeError("'" + s +
                         "' is not a number of failures (want a positive number or INFINITY)");
    return json(std::stol(s));
}

Result<json> periodArg(const std::string& s) {
    auto d = parseDuration(s);
    if (!d)
        return makeError("'" + s + "' is not a period: " + d.error().message);
    if (*d == 0)
        return makeError("the period must be longer than 0");
    return json(s);
}

} // namespace

Result<Invocation> parse(const std::vector<std::string>& words) {
    if (words.empty())
        return makeError("no command given; try `help`");
    // The request is JSON, which is UTF-8 only (found by fuzzing: a Latin-1 argument made
    // pcloudsh die on an exception when it serialised the request).
    for (size_t i = 0; i < words.size(); ++i)
        if (size_t at = invalidUtf8At(words[i]); at != std::string::npos)
            return makeError("word " + std::to_string(i + 1) + " is not valid UTF-8 (byte " +
                             std::to_string(at + 1) + "); pcloud names and values are UTF-8 text");
    const std::string& name = words[0];
    const CommandSpec* spec = findCommand(name);
    if (!spec || name == "help")
        return makeError("unknown command '" + name + "'; try `help`");
    const std::string& usage = spec->usage;
    Invocation inv;
    inv.command = name;
    json& a = inv.args;
    auto bad = [&](const std::string& msg) -> Result<Invocation> {
        return makeError(msg + "\nusage: " + usage);
    };
    auto parsed = split(words,
                        {"--uri", "--monitor", "--domain-xml", "--image", "--address", "--outcome",
                         "--since", "--deployable", "--limit", "--spread", "--memory", "--vcpus",
                         "--network", "--host", "--hosts", "--node", "--fence", "--capacity"},
                        {"--follow", "-f", "--learner"}, usage);
    if (!parsed)
        return parsed.error();
    Words& w = *parsed;
    // Options are only valid where the usage names them.
    for (const auto& [k, _] : w.opts)
        if (usage.find(k) == std::string::npos)
            return bad("unknown option " + k + " for " + name);

    auto count = [&](size_t mn, size_t mx) { return checkCount(w, mn, mx, usage); };
    const std::vector<std::string>& p = w.pos;
    auto need = [&](size_t n) -> Status { return count(n, n); };

    // --host H | --hosts H1,H2 (assembly_create, assembly_place); cped checks the names.
    auto placement = [&]() -> Status {
        if (w.opts.count("--host") && w.opts.count("--hosts"))
            return makeError(
                "give --host H (pinned) or --hosts H1,H2 (allowed), not both\nusage: " + usage);
        if (w.opts.count("--host"))
            a["host"] = w.opts["--host"];
        if (w.opts.count("--hosts"))
            a["hosts"] = w.opts["--hosts"];
        return {};
    };
    auto positive = [&](const std::string& opt, long max) -> Result<json> {
        const auto& s = w.opts[opt];
        if (s.empty() || s.size() > 9 ||
            !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            std::stol(s) < 1 || std::stol(s) > max)
            return makeError(opt + ": '" + s + "' is not a number from 1 to " +
                             std::to_string(max) + "\nusage: " + usage);
        return json(std::stol(s));
    };
    auto onOff = [&](const std::string& v, const std::string& what) -> Status {
        if (v != "on" && v != "off")
            return makeError(what + " must be on or off, not '" + v + "'\nusage: " + usage);
        return {};
    };

    if (name == "deployable_create") {
        if (auto st = need(1); !st)
            return st.error();
        a["name"] = p[0];
        if (w.opts.count("--spread")) {
            if (auto st = onOff(w.opts["--spread"], "--spread"); !st)
                return st.error();
            a["spread"] = w.opts["--spread"];
        }
        if (w.opts.count("--uri"))
            a["uri"] = w.opts["--uri"];
        if (w.opts.count("--monitor")) {
            const auto& m = w.opts["--monitor"];
            if (m != "active" && m != "passive")
                return bad("--monitor must be active or passive, not '" + m + "'");
            a["monitor"] = m;
        }
    } else if (name == "deployable_delete" || name == "deployable_start" ||
               name == "deployable_stop" || name == "deployable_reload" ||
               name == "deployable_status" || name == "assembly_delete") {
        if (auto st = need(1); !st)
            return st.error();
        a["name"] = p[0];
    } else if (name == "deployable_list" || name == "assembly_list" || name == "template_list" ||
               name == "status") {
        if (auto st = need(0); !st)
            return st.error();
    } else if (name == "deployable_assembly_add" || name == "deployable_assembly_remove") {
        if (auto st = need(2); !st)
            return st.error();
        a["deployable"] = p[0];
        a["assembly"] = p[1];
    } else if (name == "deployable_assembly_list") {
        if (auto st = need(1); !st)
            return st.error();
        a["deployable"] = p[0];
    } else if (name == "assembly_create") {
        if (auto st = need(1); !st)
            return st.error();
        a["name"] = p[0];
        bool xml = w.opts.count("--domain-xml"), img = w.opts.count("--image");
        if (xml == img)
            return bad("give exactly one of --domain-xml FILE or --image IMAGE");
        if (xml) {
            auto text = fs::readFile(w.opts["--domain-xml"]);
            if (!text)
                return makeError("cannot read the domain XML: " + text.error().describe());
            if (size_t at = invalidUtf8At(*text); at != std::string::npos)
                return makeError("the domain XML " + w.opts["--domain-xml"] +
                                 " is not valid UTF-8 (byte " + std::to_string(at + 1) +
                                 "); libvirt domain XML is UTF-8");
            a["domain_xml"] = *text;
        } else {
            a["image"] = w.opts["--image"];
        }
        if (xml &&
            (w.opts.count("--memory") || w.opts.count("--vcpus") || w.opts.count("--network")))
            return bad("--memory, --vcpus and --network shape the domain generated from --image; "
                       "they do not go with --domain-xml");
        if (w.opts.count("--memory")) {
            auto v = positive("--memory", 16 * 1024 * 1024);
            if (!v)
                return v.error();
            a["memory"] = *v;
        }
        if (w.opts.count("--vcpus")) {
            auto v = positive("--vcpus", 4096);
            if (!v)
                return v.error();
            a["vcpus"] = *v;
        }
        if (w.opts.count("--network"))
            a["networks"] = w.opts["--network"];
        if (auto st = placement(); !st)
            return st.error();
        if (w.opts.count("--address"))
            a["address"] = w.opts["--address"];
    } else if (name == "assembly_place") {
        if (auto st = need(1); !st)
            return st.error();
        a["assembly"] = p[0];
        if (auto st = placement(); !st)
            return st.error();
    } else if (name == "deployable_spread") {
        if (auto st = need(2); !st)
            return st.error();
        if (auto st = onOff(p[1], "the mode"); !st)
            return st.error();
        a["deployable"] = p[0];
        a["mode"] = p[1];
    } else if (name == "host_add") {
        if (auto st = count(1, 1000); !st)
            return st.error();
        a["name"] = p[0];
        if (!w.opts.count("--node"))
            return bad("--node node:NAME is required (the identity of the host's pcloud-node)");
        a["node"] = w.opts["--node"];
        if (p.size() > 1 && !w.opts.count("--fence"))
            return bad("KEY=VALUE parameters go after --fence AGENT");
        if (w.opts.count("--fence")) {
            json params = json::object();
            for (size_t i = 1; i < p.size(); ++i) {
                auto eq = p[i].find('=');
                if (eq == std::string::npos || eq == 0)
                    return bad("'" + p[i] + "' is not KEY=VALUE");
                const std::string k = p[i].substr(0, eq);
                if (params.contains(k))
                    return bad("fence parameter '" + k + "' is given twice");
                params[k] = p[i].substr(eq + 1);
            }
            a["fence"] = {{"agent", w.opts["--fence"]}, {"params", params}};
        }
        if (w.opts.count("--capacity")) {
            json cap = json::object();
            std::string s = w.opts["--capacity"], item;
            for (size_t i = 0; i <= s.size(); ++i) {
                if (i < s.size() && s[i] != ',') {
                    item += s[i];
                    continue;
                }
                auto eq = item.find('=');
                const std::string k = eq == std::string::npos ? item : item.substr(0, eq);
                const std::string v = eq == std::string::npos ? "" : item.substr(eq + 1);
                if (k != "vcpus" && k != "mem")
                    return bad("--capacity: '" + item + "' is not vcpus=N or mem=MiB");
                if (v.empty() || v.size() > 9 ||
                    !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
                    return bad("--capacity: " + k + "='" + v + "' is not a number");
                cap[k] = std::stol(v);
                item.clear();
            }
            a["capacity"] = cap;
        }
    } else if (name == "host_remove" || name == "host_status") {
        if (auto st = need(1); !st)
            return st.error();
        a["name"] = p[0];
    } else if (name == "host_list" || name == "cluster_status") {
        if (auto st = need(0); !st)
            return st.error();
    } else if (name == "cluster_add") {
        if (auto st = need(2); !st)
            return st.error();
        a["name"] = p[0];
        a["peer_url"] = p[1];
        if (w.opts.count("--learner"))
            a["learner"] = true;
    } else if (name == "cluster_remove" || name == "cluster_promote") {
        if (auto st = need(1); !st)
            return st.error();
        a["name"] = p[0];
    } else if (name == "host_maintenance") {
        if (auto st = need(2); !st)
            return st.error();
        if (auto st = onOff(p[1], "the mode"); !st)
            return st.error();
        a["name"] = p[0];
        a["mode"] = p[1];
    } else if (name == "assembly_clone") {
        if (auto st = need(2); !st)
            return st.error();
        a["source"] = p[0];
        a["name"] = p[1];
        if (w.opts.count("--address"))
            a["address"] = w.opts["--address"];
    } else if (name == "assembly_resource_add") {
        if (auto st = need(3); !st)
            return st.error();
        a["resource"] = p[0];
        a["template"] = p[1];
        a["assembly"] = p[2];
    } else if (name == "assembly_resource_remove") {
        if (auto st = need(2); !st)
            return st.error();
        a["resource"] = p[0];
        a["assembly"] = p[1];
    } else if (name == "assembly_resource_list" || name == "assembly_park" ||
               name == "assembly_unpark") {
        if (auto st = need(1); !st)
            return st.error();
        a["assembly"] = p[0];
    } else if (name == "escalation_assembly_set" || name == "escalation_resource_set" ||
               name == "escalation_deployable_set") {
        size_t base = name == "escalation_resource_set" ? 2 : 1;
        if (auto st = need(base + 2); !st)
            return st.error();
        if (name == "escalation_resource_set") {
            a["resource"] = p[0];
            a["assembly"] = p[1];
        } else if (name == "escalation_assembly_set") {
            a["assembly"] = p[0];
        } else {
            a["deployable"] = p[0];
            if (w.opts.count("--outcome")) {
                const auto& o = w.opts["--outcome"];
                if (o != "leave-stopped" && o != "stop-deployable")
                    return bad("--outcome must be leave-stopped or stop-deployable, not '" + o +
                               "'");
                a["outcome"] = o;
            }
        }
        auto f = failuresArg(p[base]);
        if (!f)
            return bad(f.error().message);
        auto per = periodArg(p[base + 1]);
        if (!per)
            return bad(per.error().message);
        a["failures"] = *f;
        a["period"] = *per;
    } else if (name == "referee_set") {
        if (auto st = count(2, 1000); !st)
            return st.error();
        a["deployable"] = p[0];
        a["driver"] = p[1];
        json opts = json::object();
        for (size_t i = 2; i < p.size(); ++i) {
            auto eq = p[i].find('=');
            if (eq == std::string::npos || eq == 0)
                return bad("'" + p[i] + "' is not KEY=VALUE");
            opts[p[i].substr(0, eq)] = p[i].substr(eq + 1);
        }
        if (!opts.empty())
            a["options"] = opts;
    } else if (name == "events") {
        if (auto st = need(0); !st)
            return st.error();
        inv.follow = w.opts.count("--follow") || w.opts.count("-f");
        if (w.opts.count("--since")) {
            const auto& s = w.opts["--since"];
            if (!s.empty() &&
                std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                if (s.size() > 18)
                    return bad("--since: '" + s + "' is too large");
                a["since_seq"] = std::stoull(s);
            } else {
                auto t = parseRfc3339(s);
                if (!t)
                    return bad("--since wants a seq number or an RFC 3339 time: " +
                               t.error().message);
                a["since_time"] = s;
            }
        }
        if (w.opts.count("--deployable"))
            a["deployable"] = w.opts["--deployable"];
        if (w.opts.count("--limit")) {
            const auto& s = w.opts["--limit"];
            if (s.empty() || s.size() > 9 ||
                !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return bad("--limit: '" + s + "' is not a number");
            a["limit"] = std::stoul(s);
        }
    } else if (name == "ping") {
        json list = json::array();
        for (const auto& x : p)
            list.push_back(x);
        if (!list.empty())
            a["assemblies"] = list;
    } else {
        return makeError("unknown command '" + name + "'; try `help`");
    }
    return inv;
}

namespace {

const char* kReset = "\033[0m";

std::string paint(const std::string& text, bool colour) {
    if (!colour)
        return text;
    static const std::map<std::string, const char*> colours = {
        {"running", "\033[32m"},     {"active", "\033[32m"},  {"connected", "\033[32m"},
        {"in", "\033[32m"},          {"started", "\033[32m"}, {"ok", "\033[32m"},
        {"failed", "\033[31m"},      {"crashed", "\033[31m"}, {"disconnected", "\033[31m"},
        {"out", "\033[31m"},         {"shutoff", "\033[31m"}, {"dped-failed", "\033[31m"},
        {"draining", "\033[33m"},    {"parked", "\033[33m"},  {"backoff", "\033[33m"},
        {"stopped", "\033[2m"},      {"up", "\033[32m"},      {"suspect", "\033[33m"},
        {"fencing", "\033[31m"},     {"fenced", "\033[31m"},  {"down", "\033[31m"},
        {"maintenance", "\033[33m"},
    };
    auto it = colours.find(text);
    if (it == colours.end())
        return text;
    return std::string(it->second) + text + kReset;
}

// Pads to `width` visible characters (colour codes do not count), cutting with '~'.
std::string cell(std::string text, size_t width, bool colour) {
    if (text.size() > width)
        text = text.substr(0, width - 1) + "~";
    std::string shown = paint(text, colour);
    return shown + std::string(width - text.size(), ' ');
}

std::string str(const json& j, const char* key, const std::string& dflt = "-") {
    auto it = j.find(key);
    if (it == j.end() || it->is_null())
        return dflt;
    if (it->is_string())
        return it->get<std::string>();
    return it->dump();
}

std::string ageText(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number())
        return "-";
    Millis ms = it->get<Millis>();
    if (ms < 10'000)
        return std::to_string(ms) + "ms";
    return formatDuration(ms / 1000 * 1000);
}

std::string table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> w(header.size());
    for (size_t i = 0; i < header.size(); ++i)
        w[i] = header[i].size();
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size() && i < w.size(); ++i)
            w[i] = std::max(w[i], r[i].size());
    std::ostringstream out;
    auto line = [&](const std::vector<std::string>& r) {
        std::string l;
        for (size_t i = 0; i < r.size(); ++i) {
            l += r[i];
            if (i + 1 < r.size())
                l += std::string(w[i] - r[i].size() + 2, ' ');
        }
        out << l << "\n";
    };
    line(header);
    for (const auto& r : rows)
        line(r);
    return out.str();
}

} // namespace

std::string formatStatusTable(const json& r, bool colour) {
    std::ostringstream out;
    std::string state = "-";
    if (r.contains("status") && r["status"].is_object())
        state = str(r["status"], "state");
    else if (r.contains("dped") && r["dped"].is_object())
        state = str(r["dped"], "state");
    out << "deployable " << str(r, "name") << ": desired " << paint(str(r, "desired"), colour)
        << ", " << paint(state, colour);
    if (r.contains("dped") && r["dped"].contains("pid"))
        out << " (dped pid " << str(r["dped"], "pid") << ")";
    out << "\n";
    if (r.contains("dped_error"))
        out << "  " << str(r, "dped_error") << "\n";
    if (r.contains("status") && r["status"].is_object() && r["status"].contains("fenced_by"))
        out << "  " << paint("fenced", colour) << " off by a newer leader's epoch "
            << str(r["status"], "fenced_by") << " (this dped's is " << str(r["status"], "epoch")
            << "): it acts on nothing until its cped leads again\n";
    // Widths sum to 98 with separators: readable at 100 columns.
    const std::vector<std::pair<const char*, size_t>> cols = {
        {"ASSEMBLY", 14}, {"DOMAIN", 9},    {"AGENT", 12},  {"HB AGE", 7},
        {"SERVICES", 22}, {"FAILURES", 11}, {"BACKOFF", 7}, {"REFEREE", 8}};
    std::string head;
    for (size_t i = 0; i < cols.size(); ++i)
        head += cell(cols[i].first, cols[i].second, false) + (i + 1 < cols.size() ? " " : "");
    while (!head.empty() && head.back() == ' ')
        head.pop_back();
    out << head << "\n";
    std::map<std::string, json> live;
    if (r.contains("status") && r["status"].is_object() && r["status"].contains("assemblies"))
        for (const auto& a : r["status"]["assemblies"])
            live[str(a, "name")] = a;
    std::vector<std::string> names;
    if (r.contains("model_assemblies"))
        for (const auto& a : r["model_assemblies"])
            names.push_back(str(a, "name"));
    for (const auto& [n, _] : live)
        if (std::find(names.begin(), names.end(), n) == names.end())
            names.push_back(n);
    for (const auto& n : names) {
        json a = live.count(n) ? live[n] : json::object();
        std::string services;
        if (a.contains("services"))
            for (const auto& s : a["services"]) {
                if (!services.empty())
                    services += ",";
                services += str(s, "name") + ":" + str(s, "state");
                if (s.contains("ready") && s["ready"].is_boolean() && !s["ready"].get<bool>())
                    services += "(not ready)";
            }
        if (services.empty())
            services = "-";
        std::string failures = "-";
        if (a.contains("failures") && a["failures"].is_object()) {
            const json& f = a["failures"];
            // An unlimited budget is -1 on the wire; the files and the operator say INFINITY.
            bool unlimited = f.contains("budget") && f["budget"].is_number_integer() &&
                             f["budget"].get<int>() < 0;
            failures = str(f, "used", "0") + "/" + (unlimited ? "INFINITY" : str(f, "budget", "?"));
        }
        std::string backoff = ageText(a, "backoff_remaining_ms");
        if (backoff == "0ms")
            backoff = "-";
        std::vector<std::pair<std::string, size_t>> row = {{n, 14},
                                                           {str(a, "domain"), 9},
                                                           {str(a, "agent"), 12},
                                                           {ageText(a, "heartbeat_age_ms"), 7},
                                                           {services, 22},
                                                           {failures, 11},
                                                           {backoff, 7},
                                                           {str(a, "referee"), 8}};
        std::string l;
        for (size_t i = 0; i < row.size(); ++i)
            l += cell(row[i].first, row[i].second, colour) + (i + 1 < row.size() ? " " : "");
        while (!l.empty() && l.back() == ' ')
            l.pop_back();
        out << l << "\n";
    }
    return out.str();
}

// No colour: the table pads by byte count (the status words stay readable without it).
std::string formatClusterStatus(const json& r, bool /*colour*/) {
    std::ostringstream out;
    const json& l = r.value("leader", json::object());
    if (!r.value("etcd", false)) {
        out << "zone: single node, no etcd (cped runs without --cluster)\n"
            << "members: this node only (" << str(l, "node") << ")\n"
            << "pcloud leader: " << str(l, "node") << ", epoch " << str(l, "epoch") << "\n";
        return out.str();
    }
    const json& q = r.value("quorum", json::object());
    out << "zone: etcd " << str(r, "endpoints") << "\n"
        << "pcloud leader: " << str(l, "node") << ", epoch " << str(l, "epoch") << "\n"
        << "etcd leader: " << (str(r, "etcd_leader", "").empty() ? "none" : str(r, "etcd_leader"))
        << "; quorum: " << str(q, "healthy") << " of " << str(q, "voters")
        << " voting members healthy, " << str(q, "needed") << " needed"
        << (q.value("ok", false) ? "" : " (NO QUORUM)") << "\n";
    if (const json& j = r.value("journal", json::object()); !j.empty()) {
        out << "journal: ";
        if (j.contains("error"))
            out << "cannot read the zone's: " << str(j, "error");
        else if (!j.contains("zone_last"))
            out << "none in etcd yet";
        else if (j.value("etcd_oldest", 0ull) > j.value("zone_last", 0ull))
            out << "zone's last seq " << str(j, "zone_last") << " (etcd holds no event yet)";
        else
            out << "zone's last seq " << str(j, "zone_last") << " (etcd keeps "
                << str(j, "etcd_oldest") << ".." << str(j, "zone_last") << ")";
        out << "; this node's copy: last seq " << str(j, "copy_last", "-") << "\n";
    }
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> problems;
    for (const auto& m : r.value("members", json::array())) {
        auto join = [](const json& list) {
            std::string s;
            for (const auto& x : list)
                s += (s.empty() ? "" : ",") + x.get<std::string>();
            return s.empty() ? std::string("-") : s;
        };
        const json& st = m.value("status", json::object());
        std::string role = m.value("is_leader", false) ? "leader" : "follower";
        if (m.value("learner", false))
            role = "learner";
        std::string health = m.value("healthy", false) ? "healthy" : "unhealthy";
        if (!m.value("started", false))
            health = "unstarted";
        auto db = [](const json& j) {
            if (!j.contains("db_size"))
                return std::string("-");
            return std::to_string(j.value("db_size", std::int64_t{0}) / 1024) + "K";
        };
        rows.push_back(
            {str(m, "label"), str(m, "id"), health, role, str(st, "version", "-"), db(st),
             st.contains("raft_index") ? str(st, "raft_index") + "/" + str(st, "raft_term") : "-",
             str(m, "lag", "-"), join(m.value("peer_urls", json::array())),
             join(m.value("client_urls", json::array()))});
        if (m.contains("problem"))
            problems.push_back(str(m, "label") + ": " + str(m, "problem"));
        else if (st.contains("errors") && !st["errors"].empty())
            problems.push_back(str(m, "label") + ": " + join(st["errors"]));
    }
    out << table({"NAME", "ID", "HEALTH", "ROLE", "VERSION", "DB", "INDEX/TERM", "LAG", "PEER URLS",
                  "CLIENT URLS"},
                 rows);
    for (const auto& p : problems)
        out << "  " << p << "\n";
    return out.str();
}

std::string formatPing(const json& r) {
    std::ostringstream out;
    std::vector<Millis> rtts;
    int failed = 0;
    for (const auto& p : r.value("pings", json::array())) {
        char buf[256];
        if (p.value("ok", false)) {
            Millis ms = p.value("rtt_ms", Millis(0));
            rtts.push_back(ms);
            std::snprintf(buf, sizeof buf, "%-30s time=%.2f ms\n", str(p, "assembly").c_str(),
                          double(ms));
        } else {
            ++failed;
            std::snprintf(buf, sizeof buf, "%-30s no reply: %s\n", str(p, "assembly").c_str(),
                          str(p, "error").c_str());
        }
        out << buf;
    }
    out << "\n---- ping statistics ----\n";
    if (rtts.empty()) {
        out << "No responses received";
        if (failed)
            out << " (" << failed << " without reply)";
        out << "\n";
        return out.str();
    }
    Millis mn = *std::min_element(rtts.begin(), rtts.end());
    Millis mx = *std::max_element(rtts.begin(), rtts.end());
    double avg = 0;
    for (auto v : rtts)
        avg += double(v);
    avg /= double(rtts.size());
    char buf[256];
    std::snprintf(buf, sizeof buf, "%zu replies max: %.2f min: %.2f avg: %.2f", rtts.size(),
                  double(mx), double(mn), avg);
    out << buf;
    if (failed)
        out << " (" << failed << " without reply)";
    out << "\n";
    return out.str();
}

std::string format(const std::string& command, const json& r, bool colour) {
    if (command == "deployable_status")
        return formatStatusTable(r, colour);
    if (command == "ping")
        return formatPing(r);
    if (command == "deployable_list") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& d : r["deployables"]) {
            std::string as;
            for (const auto& a : d["assemblies"])
                as += (as.empty() ? "" : ",") + a.get<std::string>();
            rows.push_back({str(d, "name"), d.value("started", false) ? "started" : "stopped",
                            str(d, "monitor"), str(d, "uri"), as.empty() ? "-" : as});
        }
        if (rows.empty())
            return "no deployables\n";
        return table({"NAME", "DESIRED", "MONITOR", "URI", "ASSEMBLIES"}, rows);
    }
    if (command == "assembly_list" || command == "deployable_assembly_list") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& a : r["assemblies"]) {
            std::string rs;
            for (const auto& x : a["resources"])
                rs += (rs.empty() ? "" : ",") + x.get<std::string>();
            rows.push_back({str(a, "name"),
                            str(a, "deployable", "-").empty() ? "-" : str(a, "deployable"),
                            str(a, "address").empty() ? "-" : str(a, "address"),
                            a.value("parked", false) ? "yes" : "no", rs.empty() ? "-" : rs});
        }
        if (rows.empty())
            return "no assemblies\n";
        return table({"NAME", "DEPLOYABLE", "ADDRESS", "PARKED", "RESOURCES"}, rows);
    }
    if (command == "assembly_resource_list") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& x : r["resources"])
            rows.push_back(
                {str(x, "name"), str(x, "type"), str(x, "class"), str(x, "unit"),
                 str(x, "monitor_interval"),
                 str(x["escalation"], "failures") + " in " + str(x["escalation"], "period")});
        if (rows.empty())
            return "no resources\n";
        return table({"NAME", "TEMPLATE", "CLASS", "UNIT", "MONITOR", "ESCALATION"}, rows);
    }
    if (command == "host_list") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& h : r["hosts"]) {
            const json& cap = h.value("capacity", json::object());
            std::string capText = std::to_string(cap.value("vcpus", 0)) + " vcpus, " +
                                  std::to_string(cap.value("mem_mib", 0)) + " MiB";
            if (cap.value("vcpus", 0) == 0 && cap.value("mem_mib", 0) == 0)
                capText = "-";
            const std::string agent = h.contains("fence") ? str(h["fence"], "agent", "") : "";
            rows.push_back({str(h, "name"), paint(str(h, "state"), colour), str(h, "node"),
                            agent.empty() ? "-" : agent, capText,
                            std::to_string(h.value("pinned", json::array()).size() +
                                           h.value("allowed", json::array()).size())});
        }
        if (rows.empty())
            return "no hosts\n";
        return table({"NAME", "STATE", "NODE", "FENCE", "CAPACITY", "ASSEMBLIES"}, rows);
    }
    if (command == "host_status") {
        std::ostringstream out;
        auto names = [](const json& list) {
            std::string s;
            for (const auto& x : list)
                s += (s.empty() ? "" : ",") + x.get<std::string>();
            return s.empty() ? std::string("-") : s;
        };
        out << "host " << str(r, "name") << ": " << paint(str(r, "state"), colour) << " (node "
            << str(r, "node") << ")\n";
        const json& f = r.value("fence", json::object());
        out << "  fence:    " << (str(f, "agent", "").empty() ? "none" : str(f, "agent"));
        if (f.contains("params") && !f["params"].empty())
            out << " (params " << names(f["params"]) << ")";
        out << "\n";
        const json& cap = r.value("capacity", json::object());
        out << "  capacity: " << cap.value("vcpus", 0) << " vcpus, " << cap.value("mem_mib", 0)
            << " MiB (0 = not declared)\n";
        out << "  pinned:   " << names(r.value("pinned", json::array())) << "\n";
        out << "  allowed:  " << names(r.value("allowed", json::array())) << "\n";
        out << "  any host: " << names(r.value("any_host", json::array())) << "\n";
        if (r.contains("observed"))
            out << "  observed: " << str(r, "observed") << "\n";
        return out.str();
    }
    if (command == "cluster_status")
        return formatClusterStatus(r, colour);
    if (command == "cluster_add" || command == "cluster_remove" || command == "cluster_promote") {
        std::ostringstream out;
        if (command == "cluster_promote") {
            out << "ok: etcd learner " << str(r, "promoted") << " (id " << str(r, "id")
                << ") promoted; the zone has " << str(r, "voters") << " voting members.\n";
        } else if (command == "cluster_add") {
            const bool learner = r.value("learner", false);
            out << "ok: etcd " << (learner ? "learner " : "member ") << str(r, "member")
                << " added (id " << str(r, "id") << ", peer URL " << str(r, "peer_url")
                << "); it is not started yet" << (learner ? " and does not vote" : "") << ".\n"
                << "On its host, start etcd with (choose its client URL and data dir):\n  "
                << str(r, "etcd_command") << "\n"
                << "  (--initial-cluster " << str(r, "initial_cluster")
                << " --initial-cluster-state existing are the parts that must be as shown)\n"
                << "then cped there:\n  " << str(r, "cped_command") << " --state-dir DIR\n";
            if (learner)
                out << "Once cluster_status shows it healthy and its lag near 0: cluster_promote "
                    << str(r, "member") << "\n";
        } else {
            out << "ok: etcd member " << str(r, "removed") << " (id " << str(r, "id")
                << ") removed; " << str(r, "members_left")
                << " members left. Stop etcd and cped on its host.\n";
        }
        for (const auto& w : r.value("warnings", json::array()))
            out << "warning: " << w.get<std::string>() << "\n";
        return out.str();
    }
    if (command == "template_list") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& t : r["templates"])
            rows.push_back(
                {str(t, "name"), str(t, "class"), str(t, "unit"), str(t, "description", "")});
        if (rows.empty())
            return "no templates\n";
        return table({"NAME", "CLASS", "UNIT", "DESCRIPTION"}, rows);
    }
    if (command == "status") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& d : r["deployables"]) {
            std::string state = "-";
            if (d.contains("status"))
                state = str(d["status"], "state");
            else if (d.contains("dped_error"))
                state = "dped not answering";
            else if (d.contains("dped"))
                state = str(d["dped"], "state");
            std::string detail;
            if (d.contains("status") && d["status"].contains("assemblies")) {
                int up = 0, n = 0;
                for (const auto& a : d["status"]["assemblies"]) {
                    ++n;
                    if (str(a, "domain") == "running")
                        ++up;
                }
                detail = std::to_string(up) + "/" + std::to_string(n) + " domains running";
            }
            rows.push_back({str(d, "name"), paint(str(d, "desired"), colour), paint(state, colour),
                            std::to_string(d.value("assemblies", 0)), detail});
        }
        std::string out =
            rows.empty() ? "no deployables\n"
                         : table({"DEPLOYABLE", "DESIRED", "STATE", "ASSEMBLIES", "DETAIL"}, rows);
        return out + "events: last seq " + str(r, "last_seq", "0") + "\n";
    }
    if (command == "events") {
        std::string out;
        for (const auto& e : r["events"]) {
            auto ev = events::fromJson(e);
            // (formatting lives with the event type)
            if (ev)
                out += events::formatHuman(*ev) + "\n";
        }
        return out;
    }
    // Mutations: a short confirmation.
    std::string out = "ok";
    for (const char* k :
         {"deployable", "assembly", "resource", "name", "host", "state", "placement", "deleted"})
        if (r.contains(k) && r[k].is_string() && !r[k].get<std::string>().empty()) {
            out += " " + std::string(k) + "=" + r[k].get<std::string>();
        }
    if (r.contains("already") && r["already"].is_boolean() && r["already"].get<bool>())
        out += " (already)";
    if (r.contains("dped") && r["dped"].is_string() && r["dped"] != "not running")
        out += "; dped: " + r["dped"].get<std::string>();
    return out + "\n";
}

std::string helpText() {
    std::ostringstream out;
    out << "Commands (pcloudsh COMMAND ARGS..., or type them at the pcloudsh> prompt):\n";
    for (const auto& c : commands()) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "  %-28s %s\n", c.name.c_str(), c.summary.c_str());
        out << buf;
    }
    out << "Options: --broker URL (default amqps://127.0.0.1:5671), --address-prefix P, --json,\n"
           "         --timeout SECONDS. `help COMMAND` shows a command's usage.\n";
    return out.str();
}

std::string helpText(const std::string& command) {
    const auto* c = findCommand(command);
    if (!c)
        return "";
    return "usage: " + c->usage + "\n  " + c->summary + "\n";
}

} // namespace pcloud::shell::cli
