#include "store/model_xml.h"

#include "common/time_format.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <sstream>

namespace pcloud::store::detail {
namespace {

std::string q(const std::string& s) {
    return "\"" + s + "\"";
}

std::string formatNumber(double d) {
    char buf[64];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
    if (ec != std::errc())
        return "0";
    return std::string(buf, p);
}

void setIfNotEmpty(pugi::xml_node n, const char* attr, const std::string& v) {
    if (!v.empty())
        n.append_attribute(attr).set_value(v.c_str());
}
void set(pugi::xml_node n, const char* attr, const std::string& v) {
    n.append_attribute(attr).set_value(v.c_str());
}

// Re-anchors a validate* message on the element being parsed, so it gets file and line.
Status atElement(const Element& e, const Status& st) {
    if (st)
        return st;
    return e.error(e.label() + ": " + st.error().message);
}

} // namespace

std::string formatFailures(int failures) {
    if (failures == model::kUnlimitedFailures)
        return "INFINITY";
    return std::to_string(failures);
}

// ---- parsing ---------------------------------------------------------------------------

Status parseEscalation(Element& e, model::Escalation& out) {
    if (auto st = e.failures("escalation_failures", out.failures); !st)
        return st;
    if (auto st = e.duration("escalation_period", out.period, /*allowInfinite=*/true,
                             /*allowZero=*/false);
        !st)
        return st;
    return {};
}

Status parseDeployableAttributes(Element& e, model::Deployable& d) {
    Status st;
    if (!(st = e.string("uuid", d.uuid)))
        return st;
    if (!(st = e.string("infrastructure", d.infrastructure)))
        return st;
    if (!(st = e.string("username", d.username)))
        return st;
    if (auto v = e.text("monitor"); v && !model::parseMonitorMode(*v, d.monitor))
        return e.invalid("monitor",
                         "use monitor=\"active\" (act on failures) or monitor=\"passive\" "
                         "(observe and report only)");
    if (!(st = e.string("uri", d.uri)))
        return st;
    if (!(st = parseEscalation(e, d.escalation)))
        return st;
    if (auto v = e.text("outcome"); v && !model::parseDeployableOutcome(*v, d.outcome))
        return e.invalid("outcome", "use outcome=\"leave-stopped\" or outcome=\"stop-deployable\"");
    if (!(st = e.duration("heartbeat_interval", d.heartbeat_interval, false, false)))
        return st;
    if (!(st = e.duration("heartbeat_timeout", d.heartbeat_timeout, false, false)))
        return st;
    if (!(st = e.duration("stop_timeout", d.stop_timeout, false, false)))
        return st;
    if (!(st = e.boolean("spread", d.spread)))
        return st;
    return {};
}

Status parseBackoff(Element& e, model::Backoff& b) {
    Status st;
    if (!(st = e.duration("base", b.base, false, true)))
        return st;
    if (!(st = e.number("factor", b.factor, 1.0)))
        return st;
    if (!(st = e.duration("cap", b.cap, false, true)))
        return st;
    if (!(st = e.duration("reset_after", b.reset_after, false, true)))
        return st;
    return {};
}

Status parseReferee(Element& e, model::RefereeConfig& r, std::vector<Error>& warnings) {
    for (auto [attr, field] : {std::pair<const char*, std::string*>{"socket", &r.socket},
                               {"backend", &r.backend},
                               {"config_file", &r.config_file},
                               {"cluster", &r.cluster},
                               {"alias", &r.alias},
                               {"upstream", &r.upstream}})
        if (auto st = e.string(attr, *field); !st)
            return st;
    // Older files held the balancer command here; it now comes only from the host
    // configuration, so a store file (or whoever can write one) cannot pick what runs.
    for (const char* attr : {"apachectl", "nginx"})
        if (auto v = e.text(attr)) {
            e.ignore(attr);
            warnings.push_back(e.error(e.label() + ": " + attr + "=\"" + *v +
                                       "\" is ignored: the command comes from '" + attr +
                                       " = ...' in the host configuration "
                                       "(/etc/pcloud/pcloud.conf, docs/security.md); it will "
                                       "not be saved back"));
        }
    if (auto v = e.text("driver")) {
        r.driver = *v;
        if (!(r.driver.empty() || r.driver == "log" || r.driver == "haproxy" ||
              r.driver == "apache" || r.driver == "nginx"))
            return e.invalid("driver", "use driver=\"haproxy\", \"apache\", \"nginx\", "
                                       "\"log\" or \"\" (none)");
    }
    return {};
}

Status parseProbe(Element& e, model::Probe& p) {
    Status st;
    if (auto v = e.text("kind"); v && !model::parseProbeKind(*v, p.kind))
        return e.invalid("kind", "use kind=\"http\" or kind=\"tcp\"");
    if (!(st = e.string("host", p.host)))
        return st;
    if (!(st = e.integer("port", p.port, 1, 65535)))
        return st;
    if (!(st = e.string("path", p.path)))
        return st;
    if (!(st = e.integer("expect_status", p.expect_status, 100, 599)))
        return st;
    if (!(st = e.duration("interval", p.interval, false, false)))
        return st;
    if (!(st = e.duration("timeout", p.timeout, false, false)))
        return st;
    if (!(st = e.integer("threshold", p.threshold, 1, 1000)))
        return st;
    return atElement(e, validateProbe(p));
}

Status parseResourceBody(const XmlFile& f, Element& e, model::Resource& r,
                         std::vector<Error>& warnings) {
    Status st;
    if (!(st = e.string("type", r.type)))
        return st;
    if (auto v = e.text("class"); v && !model::parseResourceClass(*v, r.klass))
        return e.invalid("class", "use class=\"systemd\", \"lsb\" or \"process\"");
    if (!(st = e.string("provider", r.provider)))
        return st;
    if (auto v = e.text("unit")) {
        r.unit = *v;
    } else {
        // Pacemaker Cloud files name the service by type only ("httpd", class lsb).
        const std::string base = r.type.empty() ? r.name : r.type;
        if (r.klass == model::ResourceClass::Systemd)
            r.unit = base + ".service";
        else if (r.klass == model::ResourceClass::Lsb)
            r.unit = base;
    }
    if (!(st = e.duration("monitor_interval", r.monitor_interval, false, false)))
        return st;
    if (!(st = parseEscalation(e, r.escalation)))
        return st;

    for (pugi::xml_node c : e.node().children()) {
        if (c.type() != pugi::node_element)
            continue;
        const std::string cname = c.name();
        if (cname == "param") {
            Element p(f, c, e.label() + ", <param>");
            auto name = p.text("name");
            if (!name || name->empty())
                return p.error(p.label() + ": a <param> needs a non-empty name=\"...\"");
            std::string value;
            if (!(st = p.string("value", value)))
                return st;
            if (r.params.count(*name))
                return p.error(e.label() + ": <param name=" + q(*name) +
                               "> is given twice; keep one");
            r.params[*name] = value;
            p.unknownAttributes(warnings);
        } else if (cname == "probe") {
            if (r.probe)
                return f.error(c, e.label() + ": more than one <probe>; keep one");
            Element p(f, c, e.label() + ", <probe>");
            model::Probe probe;
            if (!(st = parseProbe(p, probe)))
                return st;
            p.unknownAttributes(warnings);
            r.probe = probe;
        } else {
            warnings.push_back(f.error(c, e.label() + ": unknown element " + describeNode(c) +
                                              " ignored (it will not be saved back)"));
        }
    }
    return {};
}

Status parseAssembly(const XmlFile& f, Element& e, model::Assembly& a,
                     std::vector<Error>& warnings) {
    Status st;
    if (!(st = e.string("uuid", a.uuid)))
        return st;
    if (!(st = parseEscalation(e, a.escalation)))
        return st;
    if (!(st = e.string("image", a.image)))
        return st;
    if (!(st = e.string("address", a.address)))
        return st;
    if (!(st = e.boolean("parked", a.parked)))
        return st;
    if (auto v = e.text("host")) {
        if (!model::isValidName(*v))
            return e.invalid("host", "name a host defined in db_hosts.xml (host_add)");
        a.host = *v;
    }
    if (auto v = e.text("hosts")) {
        auto list = splitHostList(*v);
        if (!list)
            return e.invalid("hosts", list.error().message);
        a.hosts = *list;
    }
    if (auto v = e.text("networks")) {
        auto list = splitHostList(*v);
        if (!list)
            return e.invalid("networks", "libvirt network names separated by commas, e.g. "
                                         "networks=\"default\"");
        a.networks = *list;
    }
    if (!(st = e.integer("vcpus", a.vcpus, 0, 4096)))
        return st;
    if (!(st = e.integer("memory_mib", a.memory_mib, 0, 1 << 30)))
        return st;
    if (auto v = e.text("outcome"); v && !model::parseAssemblyOutcome(*v, a.outcome))
        return e.invalid("outcome", "use outcome=\"escalate\", \"relocate\" or \"replace\"");
    if (!(st = e.integer("max_relocate", a.max_relocate, 0, 1000)))
        return st;
    if (!(st = e.duration("relocate_period", a.relocate_period, false, false)))
        return st;
    // Written by Pacemaker Cloud's pcloudsh; pcloud keeps the deployable link in
    // db_deployable.xml only.
    for (const char* legacy : {"jeos_name", "infrastructure", "username", "deployment"})
        e.ignore(legacy);
    e.unknownAttributes(warnings);

    bool haveDomain = false, haveResources = false;
    for (pugi::xml_node c : e.node().children()) {
        if (c.type() != pugi::node_element)
            continue;
        const std::string cname = c.name();
        if (cname == "domain") {
            if (haveDomain)
                return f.error(c, e.label() + ": more than one <domain>; keep one");
            haveDomain = true;
            Element d(f, c, e.label() + ", <domain>");
            d.unknownAttributes(warnings);
            // Written as CDATA (split by the writer where the text holds "]]>"); a domain
            // pasted in as an element is accepted too.
            for (pugi::xml_node t : c.children()) {
                if (t.type() == pugi::node_cdata || t.type() == pugi::node_pcdata) {
                    a.domain_xml += t.value();
                } else if (t.type() == pugi::node_element) {
                    std::ostringstream os;
                    t.print(os, "", pugi::format_raw);
                    a.domain_xml += os.str();
                }
            }
        } else if (cname == "resources") {
            if (haveResources)
                return f.error(c, e.label() + ": more than one <resources>; merge them");
            haveResources = true;
            std::map<std::string, int> firstLine;
            for (pugi::xml_node rn : c.children()) {
                if (rn.type() != pugi::node_element)
                    continue;
                if (std::string(rn.name()) != "resource") {
                    warnings.push_back(f.error(rn, e.label() + ": unknown element " +
                                                       describeNode(rn) +
                                                       " in <resources> ignored"));
                    continue;
                }
                Element re(f, rn,
                           "resource " + q(rn.attribute("name").value()) + " in assembly " +
                               q(a.name));
                model::Resource r;
                if (!(st = re.name("name", r.name)))
                    return st;
                if (auto it = firstLine.find(r.name); it != firstLine.end())
                    return re.error(re.label() + " is defined twice (first at line " +
                                    std::to_string(it->second) + "); remove or rename one");
                firstLine[r.name] = f.lineOf(rn);
                if (!(st = parseResourceBody(f, re, r, warnings)))
                    return st;
                re.unknownAttributes(warnings);
                if (!(st = atElement(re, validateResource(r))))
                    return st;
                a.resources.push_back(std::move(r));
            }
        } else {
            warnings.push_back(f.error(c, e.label() + ": unknown element " + describeNode(c) +
                                              " ignored (it will not be saved back)"));
        }
    }
    return atElement(e, validateAssembly(a));
}

Result<std::vector<std::string>> splitHostList(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (size_t i = 0; i <= text.size(); ++i) {
        if (i == text.size() || text[i] == ',') {
            if (!model::isValidName(cur))
                return makeError("'" + cur +
                                 "' is not a host name; give names separated by "
                                 "commas, e.g. hosts=\"h1,h2\"");
            if (std::find(out.begin(), out.end(), cur) != out.end())
                return makeError("host '" + cur + "' is listed twice");
            out.push_back(cur);
            cur.clear();
        } else {
            cur += text[i];
        }
    }
    return out;
}

std::string joinHostList(const std::vector<std::string>& hosts) {
    std::string s;
    for (const auto& h : hosts)
        s += (s.empty() ? "" : ",") + h;
    return s;
}

Status parseHost(const XmlFile& f, Element& e, model::Host& h, std::vector<Error>& warnings) {
    Status st;
    if (auto v = e.text("node")) {
        if (!model::isValidNodeIdentity(*v))
            return e.invalid("node", "use node=\"node:NAME\", the identity of the host's "
                                     "pcloud-node on the bus");
        h.node = *v;
    } else {
        h.node = "node:" + h.name;
    }
    if (auto v = e.text("state"); v && !model::parseHostState(*v, h.state))
        return e.invalid("state", "use up, suspect, fencing, fenced, down or maintenance");
    if (!(st = e.integer("vcpus", h.capacity.vcpus, 0, 1 << 20)))
        return st;
    if (!(st = e.integer("memory_mib", h.capacity.mem_mib, 0, 1 << 30)))
        return st;
    e.unknownAttributes(warnings);
    bool haveFence = false;
    for (pugi::xml_node c : e.node().children()) {
        if (c.type() != pugi::node_element)
            continue;
        if (std::string(c.name()) != "fence") {
            warnings.push_back(f.error(c, e.label() + ": unknown element " + describeNode(c) +
                                              " ignored (it will not be saved back)"));
            continue;
        }
        if (haveFence)
            return f.error(c, e.label() + ": more than one <fence>; keep one");
        haveFence = true;
        Element fe(f, c, e.label() + ", <fence>");
        auto agent = fe.text("agent");
        if (!agent || agent->empty())
            return fe.error(fe.label() + ": the required attribute agent is missing; add "
                                         "agent=\"fence_NAME\"");
        h.fence.agent = *agent;
        fe.unknownAttributes(warnings);
        for (pugi::xml_node pn : c.children()) {
            if (pn.type() != pugi::node_element)
                continue;
            if (std::string(pn.name()) != "param") {
                warnings.push_back(
                    f.error(pn, fe.label() + ": unknown element " + describeNode(pn) + " ignored"));
                continue;
            }
            Element p(f, pn, fe.label() + ", <param>");
            auto name = p.text("name");
            if (!name || name->empty())
                return p.error(p.label() + ": a <param> needs a non-empty name=\"...\"");
            std::string value;
            if (!(st = p.string("value", value)))
                return st;
            if (h.fence.params.count(*name))
                return p.error(fe.label() + ": <param name=" + q(*name) +
                               "> is given twice; keep one");
            h.fence.params[*name] = value;
            p.unknownAttributes(warnings);
        }
    }
    return atElement(e, validateHost(h));
}

// ---- writing ---------------------------------------------------------------------------

void writeHost(pugi::xml_node parent, const model::Host& h) {
    pugi::xml_node n = parent.append_child("host");
    set(n, "name", h.name);
    set(n, "node", h.node);
    set(n, "state", model::toString(h.state));
    if (h.capacity.vcpus)
        set(n, "vcpus", std::to_string(h.capacity.vcpus));
    if (h.capacity.mem_mib)
        set(n, "memory_mib", std::to_string(h.capacity.mem_mib));
    if (!h.fence.agent.empty()) {
        pugi::xml_node fn = n.append_child("fence");
        set(fn, "agent", h.fence.agent);
        for (const auto& [k, v] : h.fence.params) {
            pugi::xml_node p = fn.append_child("param");
            set(p, "name", k);
            set(p, "value", v);
        }
    }
}

void writeDeployable(pugi::xml_node parent, const model::Deployable& d) {
    pugi::xml_node n = parent.append_child("deployable");
    set(n, "name", d.name);
    setIfNotEmpty(n, "uuid", d.uuid);
    setIfNotEmpty(n, "infrastructure", d.infrastructure);
    setIfNotEmpty(n, "username", d.username);
    set(n, "monitor", model::toString(d.monitor));
    set(n, "uri", d.uri);
    set(n, "escalation_failures", formatFailures(d.escalation.failures));
    set(n, "escalation_period", formatDuration(d.escalation.period));
    set(n, "outcome", model::toString(d.outcome));
    set(n, "heartbeat_interval", formatDuration(d.heartbeat_interval));
    set(n, "heartbeat_timeout", formatDuration(d.heartbeat_timeout));
    set(n, "stop_timeout", formatDuration(d.stop_timeout));
    if (!d.spread)
        set(n, "spread", "false");
    for (const auto& a : d.assemblies)
        set(n.append_child("assembly"), "name", a);
    pugi::xml_node b = n.append_child("backoff");
    set(b, "base", formatDuration(d.backoff.base));
    set(b, "factor", formatNumber(d.backoff.factor));
    set(b, "cap", formatDuration(d.backoff.cap));
    set(b, "reset_after", formatDuration(d.backoff.reset_after));
    if (!(d.referee == model::RefereeConfig{})) {
        pugi::xml_node r = n.append_child("referee");
        set(r, "driver", d.referee.driver);
        set(r, "socket", d.referee.socket);
        set(r, "backend", d.referee.backend);
        set(r, "config_file", d.referee.config_file);
        set(r, "cluster", d.referee.cluster);
        set(r, "alias", d.referee.alias);
        // Written only when set, so files of deployables without nginx stay as they were.
        setIfNotEmpty(r, "upstream", d.referee.upstream);
    }
}

void writeResourceBody(pugi::xml_node n, const model::Resource& r) {
    setIfNotEmpty(n, "type", r.type);
    set(n, "class", model::toString(r.klass));
    setIfNotEmpty(n, "provider", r.provider);
    set(n, "unit", r.unit);
    set(n, "monitor_interval", formatDuration(r.monitor_interval));
    set(n, "escalation_failures", formatFailures(r.escalation.failures));
    set(n, "escalation_period", formatDuration(r.escalation.period));
    for (const auto& [k, v] : r.params) {
        pugi::xml_node p = n.append_child("param");
        set(p, "name", k);
        set(p, "value", v);
    }
    if (r.probe) {
        const auto& p = *r.probe;
        pugi::xml_node pn = n.append_child("probe");
        set(pn, "kind", model::toString(p.kind));
        set(pn, "host", p.host);
        set(pn, "port", std::to_string(p.port));
        set(pn, "path", p.path);
        set(pn, "expect_status", std::to_string(p.expect_status));
        set(pn, "interval", formatDuration(p.interval));
        set(pn, "timeout", formatDuration(p.timeout));
        set(pn, "threshold", std::to_string(p.threshold));
    }
}

void writeAssembly(pugi::xml_node parent, const model::Assembly& a) {
    pugi::xml_node n = parent.append_child("assembly");
    set(n, "name", a.name);
    setIfNotEmpty(n, "uuid", a.uuid);
    set(n, "escalation_failures", formatFailures(a.escalation.failures));
    set(n, "escalation_period", formatDuration(a.escalation.period));
    setIfNotEmpty(n, "image", a.image);
    setIfNotEmpty(n, "address", a.address);
    if (a.parked)
        set(n, "parked", "true");
    // The host-level fields only when set, so files without hosts stay as they were.
    const model::Assembly dflt;
    setIfNotEmpty(n, "host", a.host);
    setIfNotEmpty(n, "hosts", joinHostList(a.hosts));
    setIfNotEmpty(n, "networks", joinHostList(a.networks));
    if (a.vcpus != dflt.vcpus)
        set(n, "vcpus", std::to_string(a.vcpus));
    if (a.memory_mib != dflt.memory_mib)
        set(n, "memory_mib", std::to_string(a.memory_mib));
    if (a.outcome != dflt.outcome)
        set(n, "outcome", model::toString(a.outcome));
    if (a.max_relocate != dflt.max_relocate)
        set(n, "max_relocate", std::to_string(a.max_relocate));
    if (a.relocate_period != dflt.relocate_period)
        set(n, "relocate_period", formatDuration(a.relocate_period));
    if (!a.domain_xml.empty())
        n.append_child("domain").append_child(pugi::node_cdata).set_value(a.domain_xml.c_str());
    pugi::xml_node rs = n.append_child("resources");
    for (const auto& r : a.resources) {
        pugi::xml_node rn = rs.append_child("resource");
        set(rn, "name", r.name);
        writeResourceBody(rn, r);
    }
}

// ---- validation ------------------------------------------------------------------------

Status validateEscalation(const model::Escalation& e) {
    if (e.failures < 0 && e.failures != model::kUnlimitedFailures)
        return makeError("escalation_failures=" + std::to_string(e.failures) +
                         " is negative; use a number >= 0 or INFINITY");
    if (e.period <= 0 && e.period != model::kUnlimitedPeriod)
        return makeError("escalation_period must be longer than zero (or INFINITY)");
    // What parseDuration reads back: a longer period would be saved and then not load.
    if (e.period > kMaxDurationMs)
        return makeError("escalation_period is longer than 100 years; use INFINITY for no limit");
    return {};
}

Status validateProbe(const model::Probe& p) {
    if (p.port < 1 || p.port > 65535)
        return makeError("probe port must be 1-65535");
    if (p.host.empty())
        return makeError("probe host is empty; use e.g. host=\"127.0.0.1\"");
    if (p.kind == model::ProbeKind::Http && (p.path.empty() || p.path[0] != '/'))
        return makeError("probe path=" + q(p.path) + " must start with '/'");
    if (p.expect_status < 100 || p.expect_status > 599)
        return makeError("probe expect_status must be an HTTP status, 100-599");
    if (p.interval <= 0 || p.timeout <= 0)
        return makeError("probe interval and timeout must be longer than zero");
    if (p.threshold < 1)
        return makeError("probe threshold must be at least 1");
    return {};
}

Status validateResource(const model::Resource& r) {
    if (!model::isValidName(r.name))
        return makeError("resource name " + q(r.name) + " is not a valid name");
    if (r.monitor_interval <= 0)
        return makeError("monitor_interval must be longer than zero");
    if (auto st = validateEscalation(r.escalation); !st)
        return st;
    if (r.unit.empty() && r.klass == model::ResourceClass::Process)
        return makeError("class=\"process\" needs unit=\"COMMAND\" (the command line to run)");
    for (const auto& [k, _] : r.params)
        if (k.empty())
            return makeError("a param has an empty name");
    if (r.probe)
        if (auto st = validateProbe(*r.probe); !st)
            return st;
    return {};
}

Status validateHost(const model::Host& h) {
    if (!model::isValidName(h.name))
        return makeError("host name " + q(h.name) + " is not a valid name");
    if (!model::isValidNodeIdentity(h.node))
        return makeError("node " + q(h.node) + " is not a node identity; use \"node:NAME\"");
    if (!h.fence.agent.empty() && !model::isValidFenceAgentName(h.fence.agent))
        return makeError("fence agent " + q(h.fence.agent) +
                         " is not a fence agent name (fence_ followed by letters, digits, '_' "
                         "or '-'; never a path)");
    for (const auto& [k, v] : h.fence.params) {
        if (!model::isValidFenceParamName(k))
            return makeError("fence parameter " + q(k) +
                             " is not valid (letters, digits, '_' and '-'; not action, which "
                             "pcloud sets)");
        if (v.find('\n') != std::string::npos || v.find('\r') != std::string::npos)
            return makeError("fence parameter " + q(k) +
                             " holds a line break: values are sent as key=value lines");
    }
    if (h.capacity.vcpus < 0 || h.capacity.mem_mib < 0)
        return makeError("host capacity must not be negative");
    return {};
}

Status validateAssembly(const model::Assembly& a) {
    if (!model::isValidName(a.name))
        return makeError("assembly name " + q(a.name) + " is not a valid name");
    if (!a.host.empty() && !model::isValidName(a.host))
        return makeError("host " + q(a.host) + " is not a valid host name");
    if (!a.host.empty() && !a.hosts.empty())
        return makeError("give either host (pinned) or hosts (allowed set), not both");
    {
        std::set<std::string> hs;
        for (const auto& h : a.hosts) {
            if (!model::isValidName(h))
                return makeError("host " + q(h) + " in hosts is not a valid host name");
            if (!hs.insert(h).second)
                return makeError("host " + q(h) + " is listed twice in hosts");
        }
    }
    for (const auto& n : a.networks)
        if (!model::isValidName(n))
            return makeError("network " + q(n) + " is not a valid libvirt network name");
    if (a.vcpus < 0 || a.memory_mib < 0)
        return makeError("vcpus and memory_mib must not be negative");
    if (a.max_relocate < 0)
        return makeError("max_relocate must not be negative");
    if (a.relocate_period <= 0 || a.relocate_period > kMaxDurationMs)
        return makeError("relocate_period must be longer than zero and at most 100 years");
    if (auto st = validateEscalation(a.escalation); !st)
        return st;
    std::set<std::string> seen;
    for (const auto& r : a.resources) {
        if (!seen.insert(r.name).second)
            return makeError("resource " + q(r.name) + " is listed twice");
        if (auto st = validateResource(r); !st)
            return makeError("resource " + q(r.name) + ": " + st.error().message);
    }
    return {};
}

Status validateDeployable(const model::Deployable& d) {
    if (!model::isValidName(d.name))
        return makeError("deployable name " + q(d.name) + " is not a valid name");
    if (d.uri.empty())
        return makeError("uri is empty; use e.g. uri=\"qemu:///system\"");
    if (auto st = validateEscalation(d.escalation); !st)
        return st;
    if (d.heartbeat_interval <= 0)
        return makeError("heartbeat_interval must be longer than zero");
    if (d.heartbeat_timeout < d.heartbeat_interval)
        return makeError("heartbeat_timeout (" + formatDuration(d.heartbeat_timeout) +
                         ") is shorter than heartbeat_interval (" +
                         formatDuration(d.heartbeat_interval) +
                         "); make it several intervals so one late beat is not a failure");
    const auto& b = d.backoff;
    if (b.base < 0 || b.cap < 0 || b.reset_after < 0)
        return makeError("backoff durations must not be negative");
    if (!(b.factor >= 1.0))
        return makeError("backoff factor must be >= 1");
    if (b.cap < b.base)
        return makeError("backoff cap (" + formatDuration(b.cap) + ") is below its base (" +
                         formatDuration(b.base) + "); raise the cap");
    const auto& drv = d.referee.driver;
    if (!(drv.empty() || drv == "log" || drv == "haproxy" || drv == "apache" || drv == "nginx"))
        return makeError("referee driver " + q(drv) +
                         " is unknown; use haproxy, apache, nginx, log or \"\"");
    std::set<std::string> seen;
    for (const auto& a : d.assemblies) {
        if (!model::isValidName(a))
            return makeError("assembly name " + q(a) + " is not a valid name");
        if (!seen.insert(a).second)
            return makeError("assembly " + q(a) + " is listed twice");
    }
    return {};
}

} // namespace pcloud::store::detail
