#include "model/model_json.h"

#include "common/time_format.h"

#include <algorithm>
#include <climits>
#include <set>

namespace pcloud::model {

using nlohmann::json;

std::string jsonPath(const std::string& base, const std::string& key) {
    return base.empty() ? key : base + "." + key;
}
std::string jsonIndex(const std::string& base, size_t index) {
    return base + "[" + std::to_string(index) + "]";
}

static std::string orRoot(const std::string& path) {
    return path.empty() ? "(document)" : path;
}

Result<Millis> durationFromJson(const json& v, const std::string& where, bool allowInfinite) {
    const char* want =
        allowInfinite ? "expected a duration (e.g. \"30s\", \"500ms\", integer milliseconds) "
                        "or \"INFINITY\""
                      : "expected a duration (e.g. \"30s\", \"500ms\" or integer milliseconds)";
    if (v.is_number_integer()) {
        auto ms = v.get<std::int64_t>();
        if (ms < 0)
            return makeError(where + ": " + want + ", got a negative number");
        if (ms > kMaxDurationMs)
            return makeError(where + ": " + want + ", got more than 100 years");
        return ms;
    }
    if (v.is_string()) {
        auto r = parseDuration(v.get<std::string>());
        if (!r)
            return makeError(where + ": " + want + ", got '" + v.get<std::string>() + "'");
        if (*r == kInfinite && !allowInfinite)
            return makeError(where + ": INFINITY is not allowed here; " + want);
        return *r;
    }
    return makeError(where + ": " + want + ", got " + v.type_name());
}

JsonReader::JsonReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object())
        fail(orRoot(path_), std::string("expected an object, got ") + j_.type_name());
}

std::string JsonReader::at(const std::string& key) const {
    return jsonPath(path_, key);
}

void JsonReader::fail(const std::string& where, const std::string& what) {
    if (!error_)
        error_ = makeError(where + ": " + what);
}

void JsonReader::fail(const Error& nested) {
    if (!error_)
        error_ = nested;
}

const json* JsonReader::get(const char* key) {
    known_.emplace_back(key);
    if (!j_.is_object())
        return nullptr;
    auto it = j_.find(key);
    if (it == j_.end())
        return nullptr;
    return &*it;
}

void JsonReader::str(const char* key, std::string& out) {
    if (auto* v = get(key)) {
        if (v->is_string())
            out = v->get<std::string>();
        else
            fail(at(key), std::string("expected a string, got ") + v->type_name());
    }
}

void JsonReader::boolean(const char* key, bool& out) {
    if (auto* v = get(key)) {
        if (v->is_boolean())
            out = v->get<bool>();
        else
            fail(at(key), std::string("expected true or false, got ") + v->type_name());
    }
}

void JsonReader::integer(const char* key, int& out, int min) {
    std::int64_t v64 = out;
    integer64(key, v64, min);
    if (ok()) {
        if (v64 > INT32_MAX)
            fail(at(key), "number too large");
        else
            out = static_cast<int>(v64);
    }
}

void JsonReader::integer64(const char* key, std::int64_t& out, std::int64_t min) {
    if (auto* v = get(key)) {
        if (!v->is_number_integer()) {
            fail(at(key), std::string("expected an integer, got ") + v->type_name());
            return;
        }
        if (v->is_number_unsigned() && v->get<std::uint64_t>() > INT64_MAX) {
            fail(at(key), "number too large");
            return;
        }
        auto n = v->get<std::int64_t>();
        if (n < min)
            fail(at(key), "must be at least " + std::to_string(min));
        else
            out = n;
    }
}

void JsonReader::number(const char* key, double& out, double min) {
    if (auto* v = get(key)) {
        if (!v->is_number()) {
            fail(at(key), std::string("expected a number, got ") + v->type_name());
            return;
        }
        double d = v->get<double>();
        if (!(d >= min))
            fail(at(key), "must be at least " + std::to_string(min));
        else
            out = d;
    }
}

void JsonReader::duration(const char* key, Millis& out, bool allowInfinite) {
    if (auto* v = get(key)) {
        auto r = durationFromJson(*v, at(key), allowInfinite);
        if (!r) {
            if (!error_)
                error_ = r.error();
        } else {
            out = *r;
        }
    }
}

void JsonReader::failures(const char* key, int& out) {
    if (auto* v = get(key)) {
        if (v->is_string() &&
            (v->get<std::string>() == "INFINITY" || v->get<std::string>() == "infinity")) {
            out = kUnlimitedFailures;
        } else if (v->is_number_integer() && v->get<std::int64_t>() >= 0 &&
                   v->get<std::int64_t>() <= INT32_MAX) {
            out = v->get<int>();
        } else {
            fail(at(key), "expected an integer or INFINITY");
        }
    }
}

void JsonReader::rejectUnknown(std::initializer_list<const char*> alsoAllowed) {
    if (!j_.is_object() || error_)
        return;
    for (const auto& [k, _] : j_.items()) {
        bool known = std::find(known_.begin(), known_.end(), k) != known_.end();
        for (const char* a : alsoAllowed)
            if (k == a)
                known = true;
        if (!known) {
            std::string list;
            for (const auto& n : known_)
                list += (list.empty() ? "" : ", ") + n;
            fail(at(k), "unknown key (known keys: " + list + ")");
            return;
        }
    }
}

// ---- toJson ---------------------------------------------------------------------------------

static json failuresJson(int f) {
    return f == kUnlimitedFailures ? json("INFINITY") : json(f);
}

json toJson(const Escalation& e) {
    return {{"failures", failuresJson(e.failures)}, {"period", formatDuration(e.period)}};
}

json toJson(const Backoff& b) {
    return {{"base", formatDuration(b.base)},
            {"factor", b.factor},
            {"cap", formatDuration(b.cap)},
            {"reset_after", formatDuration(b.reset_after)}};
}

json toJson(const Probe& p) {
    return {{"kind", toString(p.kind)},
            {"host", p.host},
            {"port", p.port},
            {"path", p.path},
            {"expect_status", p.expect_status},
            {"interval", formatDuration(p.interval)},
            {"timeout", formatDuration(p.timeout)},
            {"threshold", p.threshold}};
}

json toJson(const Resource& r) {
    json j = {{"name", r.name},
              {"type", r.type},
              {"class", toString(r.klass)},
              {"provider", r.provider},
              {"unit", r.unit},
              {"monitor_interval", formatDuration(r.monitor_interval)},
              {"escalation", toJson(r.escalation)},
              {"params", r.params}};
    if (r.probe)
        j["probe"] = toJson(*r.probe);
    return j;
}

json toJson(const Assembly& a) {
    json res = json::array();
    for (const auto& r : a.resources)
        res.push_back(toJson(r));
    json j = {{"uuid", a.uuid},    {"domain_xml", a.domain_xml},
              {"image", a.image},  {"escalation", toJson(a.escalation)},
              {"resources", res},  {"address", a.address},
              {"parked", a.parked}};
    // Placement and the host-level outcome only when set, so models without hosts look as
    // they did before hosts existed.
    const Assembly dflt;
    if (!a.host.empty())
        j["host"] = a.host;
    if (!a.hosts.empty())
        j["hosts"] = a.hosts;
    if (!a.networks.empty())
        j["networks"] = a.networks;
    if (a.vcpus != dflt.vcpus)
        j["vcpus"] = a.vcpus;
    if (a.memory_mib != dflt.memory_mib)
        j["memory_mib"] = a.memory_mib;
    if (a.outcome != dflt.outcome)
        j["outcome"] = toString(a.outcome);
    if (a.max_relocate != dflt.max_relocate)
        j["max_relocate"] = a.max_relocate;
    if (a.relocate_period != dflt.relocate_period)
        j["relocate_period"] = formatDuration(a.relocate_period);
    return j;
}

json toJson(const Host& h) {
    json j = {{"node", h.node}, {"state", toString(h.state)}};
    if (!h.fence.agent.empty())
        j["fence"] = {{"agent", h.fence.agent}, {"params", h.fence.params}};
    if (h.capacity.vcpus || h.capacity.mem_mib)
        j["capacity"] = {{"vcpus", h.capacity.vcpus}, {"mem_mib", h.capacity.mem_mib}};
    return j;
}

json toJson(const RefereeConfig& r) {
    return {{"driver", r.driver},           {"socket", r.socket},   {"backend", r.backend},
            {"config_file", r.config_file}, {"cluster", r.cluster}, {"alias", r.alias},
            {"upstream", r.upstream}};
}

json toJson(const Deployable& d) {
    json j = {{"uuid", d.uuid},
              {"uri", d.uri},
              {"monitor", toString(d.monitor)},
              {"infrastructure", d.infrastructure},
              {"username", d.username},
              {"assemblies", d.assemblies},
              {"escalation", toJson(d.escalation)},
              {"outcome", toString(d.outcome)},
              {"backoff", toJson(d.backoff)},
              {"heartbeat_interval", formatDuration(d.heartbeat_interval)},
              {"heartbeat_timeout", formatDuration(d.heartbeat_timeout)},
              {"stop_timeout", formatDuration(d.stop_timeout)},
              {"referee", toJson(d.referee)}};
    if (!d.spread)
        j["spread"] = false;
    return j;
}

json toJson(const Model& m) {
    json deps = json::object();
    for (const auto& [n, d] : m.deployables)
        deps[n] = toJson(d);
    json asms = json::object();
    for (const auto& [n, a] : m.assemblies)
        asms[n] = toJson(a);
    json j = {{"deployables", deps}, {"assemblies", asms}};
    if (!m.hosts.empty()) {
        json hs = json::object();
        for (const auto& [n, h] : m.hosts)
            hs[n] = toJson(h);
        j["hosts"] = hs;
    }
    if (!m.pcmkc_version_deployables.empty() || !m.pcmkc_version_assemblies.empty())
        j["pcmkc_version"] = {{"deployables", m.pcmkc_version_deployables},
                              {"assemblies", m.pcmkc_version_assemblies}};
    return j;
}

// ---- fromJson -------------------------------------------------------------------------------

template <typename T> static Result<T> finish(JsonReader& r, T value) {
    r.rejectUnknown();
    if (!r.ok())
        return *r.takeError();
    return value;
}

Result<Escalation> escalationFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Escalation e;
    r.failures("failures", e.failures);
    r.duration("period", e.period, true);
    if (r.ok() && e.period == 0)
        r.fail(r.at("period"), "must be greater than 0 (or INFINITY)");
    return finish(r, e);
}

Result<Backoff> backoffFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Backoff b;
    r.duration("base", b.base);
    r.number("factor", b.factor, 1.0);
    r.duration("cap", b.cap);
    r.duration("reset_after", b.reset_after);
    if (r.ok() && b.cap < b.base)
        r.fail(r.at("cap"), "must not be smaller than base");
    return finish(r, b);
}

Result<Probe> probeFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Probe p;
    std::string kind = toString(p.kind);
    r.str("kind", kind);
    if (r.ok() && !parseProbeKind(kind, p.kind))
        r.fail(r.at("kind"), "expected \"http\" or \"tcp\", got '" + kind + "'");
    r.str("host", p.host);
    r.integer("port", p.port, 1);
    if (r.ok() && p.port > 65535)
        r.fail(r.at("port"), "must be at most 65535");
    r.str("path", p.path);
    r.integer("expect_status", p.expect_status, 100);
    r.duration("interval", p.interval);
    r.duration("timeout", p.timeout);
    r.integer("threshold", p.threshold, 1);
    return finish(r, p);
}

Result<Resource> resourceFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Resource res;
    r.str("name", res.name);
    if (r.ok() && !isValidName(res.name))
        r.fail(r.at("name"), "missing or invalid resource name '" + res.name +
                                 "' (letters, digits, '-', '_', '.')");
    r.str("type", res.type);
    std::string klass = toString(res.klass);
    r.str("class", klass);
    if (r.ok() && !parseResourceClass(klass, res.klass))
        r.fail(r.at("class"), "expected systemd, lsb or process, got '" + klass + "'");
    r.str("provider", res.provider);
    r.str("unit", res.unit);
    r.duration("monitor_interval", res.monitor_interval);
    if (auto* v = r.get("escalation"); v && r.ok()) {
        auto e = escalationFromJson(*v, r.at("escalation"));
        if (!e)
            return e.error();
        res.escalation = *e;
    }
    if (auto* v = r.get("params"); v && r.ok()) {
        if (!v->is_object()) {
            r.fail(r.at("params"), "expected an object of strings");
        } else {
            for (const auto& [k, pv] : v->items()) {
                if (!pv.is_string()) {
                    r.fail(jsonPath(r.at("params"), k), "expected a string");
                    break;
                }
                res.params[k] = pv.get<std::string>();
            }
        }
    }
    if (auto* v = r.get("probe"); v && r.ok() && !v->is_null()) {
        auto p = probeFromJson(*v, r.at("probe"));
        if (!p)
            return p.error();
        res.probe = *p;
    }
    return finish(r, res);
}

Result<Assembly> assemblyFromJson(const json& j, const std::string& name, const std::string& path) {
    JsonReader r(j, path);
    Assembly a;
    a.name = name;
    std::string given;
    r.str("name", given);
    if (r.ok() && !given.empty() && given != name)
        r.fail(r.at("name"), "'" + given + "' differs from its key '" + name + "'");
    r.str("uuid", a.uuid);
    r.str("domain_xml", a.domain_xml);
    r.str("image", a.image);
    if (auto* v = r.get("escalation"); v && r.ok()) {
        auto e = escalationFromJson(*v, r.at("escalation"));
        if (!e)
            return e.error();
        a.escalation = *e;
    }
    if (auto* v = r.get("resources"); v && r.ok()) {
        if (!v->is_array()) {
            r.fail(r.at("resources"), std::string("expected an array, got ") + v->type_name());
        } else {
            std::set<std::string> seen;
            for (size_t i = 0; i < v->size(); ++i) {
                auto res = resourceFromJson((*v)[i], jsonIndex(r.at("resources"), i));
                if (!res)
                    return res.error();
                if (!seen.insert(res->name).second)
                    return makeError(jsonIndex(r.at("resources"), i) +
                                     ".name: duplicate resource '" + res->name + "'");
                a.resources.push_back(std::move(*res));
            }
        }
    }
    r.str("address", a.address);
    r.boolean("parked", a.parked);
    r.str("host", a.host);
    if (auto* v = r.get("hosts"); v && r.ok()) {
        if (!v->is_array()) {
            r.fail(r.at("hosts"), "expected an array of host names");
        } else {
            for (size_t i = 0; i < v->size(); ++i) {
                if (!(*v)[i].is_string() || !isValidName((*v)[i].get<std::string>())) {
                    r.fail(jsonIndex(r.at("hosts"), i), "expected a host name");
                    break;
                }
                a.hosts.push_back((*v)[i].get<std::string>());
            }
        }
    }
    if (r.ok() && !a.host.empty() && !isValidName(a.host))
        r.fail(r.at("host"), "'" + a.host + "' is not a valid host name");
    if (auto* v = r.get("networks"); v && r.ok()) {
        if (!v->is_array()) {
            r.fail(r.at("networks"), "expected an array of libvirt network names");
        } else {
            for (size_t i = 0; i < v->size(); ++i) {
                if (!(*v)[i].is_string() || !isValidName((*v)[i].get<std::string>())) {
                    r.fail(jsonIndex(r.at("networks"), i), "expected a network name");
                    break;
                }
                a.networks.push_back((*v)[i].get<std::string>());
            }
        }
    }
    r.integer("vcpus", a.vcpus, 0);
    r.integer("memory_mib", a.memory_mib, 0);
    std::string outcome = toString(a.outcome);
    r.str("outcome", outcome);
    if (r.ok() && !parseAssemblyOutcome(outcome, a.outcome))
        r.fail(r.at("outcome"),
               "expected \"escalate\", \"relocate\" or \"replace\", got '" + outcome + "'");
    r.integer("max_relocate", a.max_relocate, 0);
    r.duration("relocate_period", a.relocate_period);
    if (r.ok() && a.relocate_period <= 0)
        r.fail(r.at("relocate_period"), "must be greater than 0");
    return finish(r, a);
}

Result<Host> hostFromJson(const json& j, const std::string& name, const std::string& path) {
    JsonReader r(j, path);
    Host h;
    h.name = name;
    r.str("node", h.node);
    if (r.ok() && h.node.empty())
        h.node = "node:" + name;
    if (r.ok() && !isValidNodeIdentity(h.node))
        r.fail(r.at("node"), "expected \"node:NAME\", got '" + h.node + "'");
    std::string state = toString(h.state);
    r.str("state", state);
    if (r.ok() && !parseHostState(state, h.state))
        r.fail(r.at("state"),
               "expected up, suspect, fencing, fenced, down or maintenance, got '" + state + "'");
    if (auto* v = r.get("fence"); v && r.ok()) {
        JsonReader f(*v, r.at("fence"));
        f.str("agent", h.fence.agent);
        if (auto* p = f.get("params"); p && f.ok()) {
            if (!p->is_object())
                f.fail(f.at("params"), "expected an object of strings");
            else
                for (const auto& [k, pv] : p->items()) {
                    if (!pv.is_string()) {
                        f.fail(jsonPath(f.at("params"), k), "expected a string");
                        break;
                    }
                    h.fence.params[k] = pv.get<std::string>();
                }
        }
        f.rejectUnknown();
        if (!f.ok())
            return *f.takeError();
    }
    if (auto* v = r.get("capacity"); v && r.ok()) {
        JsonReader c(*v, r.at("capacity"));
        c.integer("vcpus", h.capacity.vcpus, 0);
        c.integer("mem_mib", h.capacity.mem_mib, 0);
        c.rejectUnknown();
        if (!c.ok())
            return *c.takeError();
    }
    return finish(r, h);
}

Result<RefereeConfig> refereeFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    RefereeConfig c;
    r.str("driver", c.driver);
    if (r.ok() && !(c.driver.empty() || c.driver == "log" || c.driver == "haproxy" ||
                    c.driver == "apache" || c.driver == "nginx"))
        r.fail(r.at("driver"),
               "expected \"\", \"log\", \"haproxy\", \"apache\" or \"nginx\", got '" + c.driver +
                   "'");
    r.str("socket", c.socket);
    r.str("backend", c.backend);
    r.str("config_file", c.config_file);
    r.str("cluster", c.cluster);
    r.str("alias", c.alias);
    r.str("upstream", c.upstream);
    return finish(r, c);
}

Result<Deployable> deployableFromJson(const json& j, const std::string& name,
                                      const std::string& path) {
    JsonReader r(j, path);
    Deployable d;
    d.name = name;
    std::string given;
    r.str("name", given);
    if (r.ok() && !given.empty() && given != name)
        r.fail(r.at("name"), "'" + given + "' differs from its key '" + name + "'");
    r.str("uuid", d.uuid);
    r.str("uri", d.uri);
    std::string monitor = toString(d.monitor);
    r.str("monitor", monitor);
    if (r.ok() && !parseMonitorMode(monitor, d.monitor))
        r.fail(r.at("monitor"), "expected \"active\" or \"passive\", got '" + monitor + "'");
    r.str("infrastructure", d.infrastructure);
    r.str("username", d.username);
    if (auto* v = r.get("assemblies"); v && r.ok()) {
        if (!v->is_array()) {
            r.fail(r.at("assemblies"), "expected an array of assembly names");
        } else {
            for (size_t i = 0; i < v->size(); ++i) {
                if (!(*v)[i].is_string()) {
                    r.fail(jsonIndex(r.at("assemblies"), i), "expected an assembly name");
                    break;
                }
                d.assemblies.push_back((*v)[i].get<std::string>());
            }
        }
    }
    if (auto* v = r.get("escalation"); v && r.ok()) {
        auto e = escalationFromJson(*v, r.at("escalation"));
        if (!e)
            return e.error();
        d.escalation = *e;
    }
    std::string outcome = toString(d.outcome);
    r.str("outcome", outcome);
    if (r.ok() && !parseDeployableOutcome(outcome, d.outcome))
        r.fail(r.at("outcome"),
               "expected \"leave-stopped\" or \"stop-deployable\", got '" + outcome + "'");
    if (auto* v = r.get("backoff"); v && r.ok()) {
        auto b = backoffFromJson(*v, r.at("backoff"));
        if (!b)
            return b.error();
        d.backoff = *b;
    }
    r.duration("heartbeat_interval", d.heartbeat_interval);
    r.duration("heartbeat_timeout", d.heartbeat_timeout);
    if (r.ok() && d.heartbeat_interval <= 0)
        r.fail(r.at("heartbeat_interval"), "must be greater than 0");
    if (r.ok() && d.heartbeat_timeout < 2 * d.heartbeat_interval)
        r.fail(r.at("heartbeat_timeout"),
               "must be at least twice heartbeat_interval (" +
                   formatDuration(d.heartbeat_interval) +
                   "): a single missed heartbeat must never count as a failure");
    r.boolean("spread", d.spread);
    r.duration("stop_timeout", d.stop_timeout);
    if (r.ok() && d.stop_timeout <= 0)
        r.fail(r.at("stop_timeout"),
               "must be greater than 0: the guest needs time to shut down before it is destroyed");
    if (auto* v = r.get("referee"); v && r.ok()) {
        auto c = refereeFromJson(*v, r.at("referee"));
        if (!c)
            return c.error();
        d.referee = *c;
    }
    return finish(r, d);
}

Result<Model> modelFromJson(const json& j, const std::string& path) {
    JsonReader r(j, path);
    Model m;
    if (auto* v = r.get("hosts"); v && r.ok()) {
        if (!v->is_object()) {
            r.fail(r.at("hosts"), "expected an object keyed by host name");
        } else {
            for (const auto& [n, hv] : v->items()) {
                std::string where = jsonPath(r.at("hosts"), n);
                if (!isValidName(n))
                    return makeError(where + ": invalid host name (letters, digits, '-', "
                                             "'_', '.'; at most 64)");
                auto h = hostFromJson(hv, n, where);
                if (!h)
                    return h.error();
                m.hosts[n] = std::move(*h);
            }
        }
    }
    if (auto* v = r.get("pcmkc_version"); v && r.ok()) {
        JsonReader p(*v, r.at("pcmkc_version"));
        p.str("deployables", m.pcmkc_version_deployables);
        p.str("assemblies", m.pcmkc_version_assemblies);
        p.rejectUnknown();
        if (!p.ok())
            return *p.takeError();
    }
    if (auto* v = r.get("assemblies"); v && r.ok()) {
        if (!v->is_object()) {
            r.fail(r.at("assemblies"), "expected an object keyed by assembly name");
        } else {
            for (const auto& [n, av] : v->items()) {
                std::string where = jsonPath(r.at("assemblies"), n);
                if (!isValidName(n))
                    return makeError(where + ": invalid assembly name (letters, digits, '-', "
                                             "'_', '.'; at most 64)");
                auto a = assemblyFromJson(av, n, where);
                if (!a)
                    return a.error();
                m.assemblies[n] = std::move(*a);
            }
        }
    }
    if (auto* v = r.get("deployables"); v && r.ok()) {
        if (!v->is_object()) {
            r.fail(r.at("deployables"), "expected an object keyed by deployable name");
        } else {
            std::map<std::string, std::string> ownerOf;
            for (const auto& [n, dv] : v->items()) {
                std::string where = jsonPath(r.at("deployables"), n);
                if (!isValidName(n))
                    return makeError(where + ": invalid deployable name (letters, digits, '-', "
                                             "'_', '.'; at most 64)");
                auto d = deployableFromJson(dv, n, where);
                if (!d)
                    return d.error();
                for (size_t i = 0; i < d->assemblies.size(); ++i) {
                    const auto& an = d->assemblies[i];
                    std::string aw = jsonIndex(jsonPath(where, "assemblies"), i);
                    if (!m.assemblies.count(an))
                        return makeError(aw + ": unknown assembly '" + an +
                                         "' (define it under \"assemblies\")");
                    auto [it, inserted] = ownerOf.emplace(an, n);
                    if (!inserted)
                        return makeError(aw + ": assembly '" + an +
                                         "' already belongs to deployable '" + it->second + "'");
                }
                m.deployables[n] = std::move(*d);
            }
        }
    }
    for (const auto& [n, a] : m.assemblies) {
        std::vector<std::string> refs = a.hosts;
        if (!a.host.empty())
            refs.push_back(a.host);
        for (const auto& h : refs)
            if (!m.hosts.count(h))
                return makeError(jsonPath(jsonPath(r.at("assemblies"), n), "host") +
                                 ": unknown host '" + h + "' (define it under \"hosts\")");
    }
    return finish(r, m);
}

} // namespace pcloud::model
