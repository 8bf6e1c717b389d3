#include "cped/commands.h"

#include "common/time_format.h"
#include "referee/referee.h"
#include "store/domain_check.h"
#include "store/image_domain.h"
#include "store/store.h"
#include "store/templates.h"

#include <algorithm>
#include <map>
#include <pugixml.hpp>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud::cped {

using nlohmann::json;

nlohmann::json Response::toJson() const {
    json j = {{"v", 1}, {"type", "reply"}, {"id", id}, {"ok", ok}};
    if (ok)
        j["result"] = result;
    else
        j["error"] = {{"code", error_code}, {"message", error_message}};
    return j;
}

Response Response::failure(std::string id, std::string code, std::string message) {
    Response r;
    r.id = std::move(id);
    r.ok = false;
    r.error_code = std::move(code);
    r.error_message = std::move(message);
    return r;
}

Result<Request> parseRequest(const std::string& body, Response* rejection) {
    auto reject = [&](std::string id, std::string msg) -> Result<Request> {
        if (rejection)
            *rejection = Response::failure(id, code::BadRequest, msg);
        return makeError(msg);
    };
    auto j = json::parse(body, nullptr, false);
    if (j.is_discarded())
        return reject("", "the request body is not JSON");
    if (!j.is_object())
        return reject("", "the request body is not a JSON object");
    Request r;
    if (auto it = j.find("id"); it != j.end()) {
        if (it->is_string())
            r.id = it->get<std::string>();
        else if (it->is_number_integer())
            r.id = std::to_string(it->get<long long>());
    }
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_integer() || v->get<int>() != 1)
        return reject(r.id, "unsupported protocol version (want \"v\": 1)");
    auto t = j.find("type");
    if (t == j.end() || *t != "command")
        return reject(r.id, "\"type\" must be \"command\"");
    auto c = j.find("command");
    if (c == j.end() || !c->is_string() || c->get<std::string>().empty())
        return reject(r.id, "\"command\" is missing or not a string");
    r.command = c->get<std::string>();
    if (auto a = j.find("args"); a != j.end() && !a->is_null()) {
        if (!a->is_object())
            return reject(r.id, "\"args\" must be a JSON object");
        r.args = *a;
    }
    return r;
}

std::variant<OpenedCommand, RefusedCommand>
openCommand(const std::string& bytes, const envelope::Trust* trust, Millis now,
            envelope::ReplayCache& cache, bool requireSigned, const std::string& fallbackId) {
    auto refused = [](std::string id, std::string code, std::string message, std::string sender) {
        return RefusedCommand{Response::failure(std::move(id), std::move(code), std::move(message)),
                              std::move(sender)};
    };
    // The request inside, or the bad-request reply (with the fallback id when none is read).
    auto parsed = [&](const std::string& text) -> std::variant<Request, RefusedCommand> {
        Response rejection;
        auto req = parseRequest(text, &rejection);
        if (req)
            return std::move(*req);
        if (rejection.id.empty())
            rejection.id = fallbackId;
        return RefusedCommand{std::move(rejection), ""};
    };
    std::string body = bytes, sender;
    if (envelope::isEnvelope(bytes)) {
        if (trust) {
            auto v = envelope::verify(bytes, *trust, now, cache);
            if (auto* r = std::get_if<envelope::Rejection>(&v))
                return refused(envelope::replyIdOf(bytes, *r, fallbackId),
                               envelope::toString(r->code), r->message, r->sender);
            auto& ok = std::get<envelope::Verified>(v);
            body = std::move(ok.body);
            sender = ok.fields.sender;
            auto p = parsed(body);
            if (auto* bad = std::get_if<RefusedCommand>(&p)) {
                bad->sender = sender;
                return std::move(*bad);
            }
            auto* req = &std::get<Request>(p);
            if (Status action = envelope::actionIsCommand(ok.fields, req->command); !action)
                return refused(req->id.empty() ? fallbackId : req->id, code::BadRequest,
                               action.error().message, sender);
            return OpenedCommand{std::move(*req), std::move(sender)};
        }
        auto p = envelope::parse(bytes);
        if (auto* r = std::get_if<envelope::Rejection>(&p))
            return refused(envelope::replyIdOf(bytes, *r, fallbackId), envelope::toString(r->code),
                           r->message, r->sender);
        body = std::move(std::get<envelope::Parsed>(p).body); // no CA: only unwrapped
    } else if (requireSigned) {
        envelope::Rejection r{envelope::Reject::Unsigned, "", "", ""};
        return refused(envelope::replyIdOf(bytes, r, fallbackId),
                       envelope::toString(envelope::Reject::Unsigned),
                       "this cped uses an external broker, which cannot tell who sent a request: "
                       "the command API takes only requests signed by an operator:* certificate "
                       "for target " +
                           std::string(envelope::kCommandApi) + " (pcloudsh over TLS signs them)",
                       "");
    }
    auto p = parsed(body);
    if (auto* bad = std::get_if<RefusedCommand>(&p)) {
        bad->sender = sender;
        return std::move(*bad);
    }
    return OpenedCommand{std::move(std::get<Request>(p)), std::move(sender)};
}

namespace {

// Why an exception here: ~30 commands each validate several arguments; a failure thrown
// from the argument readers keeps every command a straight line. It never leaves this file:
// handle() turns it into an error reply.
struct CommandError {
    std::string code;
    std::string message;
};

[[noreturn]] void fail(std::string c, std::string message) {
    throw CommandError{std::move(c), std::move(message)};
}

class Args {
public:
    explicit Args(const json& j) : j_(j) {}

    bool has(const char* key) const {
        auto it = j_.find(key);
        return it != j_.end() && !it->is_null();
    }
    std::string str(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null())
            fail(code::InvalidArgument, std::string("missing argument \"") + key + "\"");
        if (!it->is_string())
            fail(code::InvalidArgument, std::string("argument \"") + key + "\" must be a string");
        return it->get<std::string>();
    }
    std::string optStr(const char* key, std::string dflt = {}) const {
        return has(key) ? str(key) : dflt;
    }
    bool optBool(const char* key) const {
        if (!has(key))
            return false;
        const auto& v = j_.at(key);
        if (!v.is_boolean())
            fail(code::InvalidArgument, std::string("argument \"") + key + "\" must be a boolean");
        return v.get<bool>();
    }
    std::string name(const char* key) const {
        std::string n = str(key);
        if (!model::isValidName(n))
            fail(code::InvalidArgument,
                 std::string("argument \"") + key + "\": '" + n +
                     "' is not a valid name (1-64 of A-Z a-z 0-9 - _ ., not starting with - or .)");
        return n;
    }
    // A failure budget: a positive integer, or INFINITY.
    int failures(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null())
            fail(code::InvalidArgument, std::string("missing argument \"") + key + "\"");
        long long n = 0;
        if (it->is_number_integer()) {
            n = it->get<long long>();
        } else if (it->is_string()) {
            std::string s = it->get<std::string>();
            if (s == "INFINITY" || s == "infinity")
                return model::kUnlimitedFailures;
            size_t used = 0;
            try {
                n = std::stoll(s, &used);
            } catch (...) {
                used = 0;
            }
            if (used == 0 || used != s.size())
                fail(code::InvalidArgument,
                     std::string("argument \"") + key + "\": '" + s +
                         "' is not a number of failures (want e.g. 3 or INFINITY)");
        } else {
            fail(code::InvalidArgument, std::string("argument \"") + key + "\" must be a number");
        }
        if (n < 1 || n > 1'000'000)
            fail(code::InvalidArgument, std::string("argument \"") + key +
                                            "\": " + std::to_string(n) +
                                            " is out of range (1..1000000 or INFINITY)");
        return static_cast<int>(n);
    }
    // A window: milliseconds as a number, or text like "10m" / INFINITY.
    Millis period(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null())
            fail(code::InvalidArgument, std::string("missing argument \"") + key + "\"");
        Millis ms = 0;
        if (it->is_number_integer()) {
            ms = it->get<Millis>();
        } else if (it->is_string()) {
            auto d = parseDuration(it->get<std::string>());
            if (!d)
                fail(code::InvalidArgument,
                     std::string("argument \"") + key + "\": " + d.error().message);
            if (*d == kInfinite)
                return model::kUnlimitedPeriod;
            ms = *d;
        } else {
            fail(code::InvalidArgument, std::string("argument \"") + key + "\" must be a duration");
        }
        if (ms <= 0)
            fail(code::InvalidArgument,
                 std::string("argument \"") + key + "\" must be longer than 0");
        if (ms > kMaxDurationMs)
            fail(code::InvalidArgument,
                 std::string("argument \"") + key + "\" is longer than 100 years; use INFINITY");
        return ms;
    }
    std::uint64_t count(const char* key, std::uint64_t dflt) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null())
            return dflt;
        if (it->is_number_unsigned())
            return it->get<std::uint64_t>();
        if (it->is_number_integer() && it->get<long long>() >= 0)
            return it->get<std::uint64_t>();
        if (it->is_string()) {
            const std::string s = it->get<std::string>();
            if (!s.empty() &&
                std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                s.size() < 19)
                return std::stoull(s);
        }
        fail(code::InvalidArgument,
             std::string("argument \"") + key + "\" must be a non-negative integer");
    }
    const json& raw(const char* key) const { return j_.at(key); }

private:
    const json& j_;
};

model::Deployable& needDeployable(model::Model& m, const std::string& name) {
    auto it = m.deployables.find(name);
    if (it == m.deployables.end())
        fail(code::NotFound, "no deployable named '" + name + "'");
    return it->second;
}
model::Assembly& needAssembly(model::Model& m, const std::string& name) {
    auto it = m.assemblies.find(name);
    if (it == m.assemblies.end())
        fail(code::NotFound, "no assembly named '" + name + "'");
    return it->second;
}
const model::Resource& needResource(model::Model& m, const std::string& assembly,
                                    const std::string& resource) {
    const auto* r = needAssembly(m, assembly).findResource(resource);
    if (!r)
        fail(code::NotFound, "no resource '" + resource + "' in assembly '" + assembly + "'");
    return *r;
}

std::string failuresText(int f) {
    return f == model::kUnlimitedFailures ? "INFINITY" : std::to_string(f);
}
json escalationJson(const model::Escalation& e) {
    return {{"failures", failuresText(e.failures)},
            {"period", formatDuration(e.period == model::kUnlimitedPeriod ? kInfinite : e.period)},
            {"period_ms", e.period}};
}

json deployableJson(const model::Deployable& d, const DesiredState* desired) {
    return {{"name", d.name},
            {"uri", d.uri},
            {"monitor", model::toString(d.monitor)},
            {"assemblies", d.assemblies},
            {"started", desired && desired->started(d.name)},
            {"escalation", escalationJson(d.escalation)},
            {"outcome", model::toString(d.outcome)},
            {"stop_timeout", formatDuration(d.stop_timeout)},
            {"referee", d.referee.driver.empty() ? "none" : d.referee.driver},
            {"spread", d.spread}};
}

json resourceJson(const model::Resource& r) {
    return {{"name", r.name},
            {"type", r.type},
            {"class", model::toString(r.klass)},
            {"unit", r.unit},
            {"monitor_interval", formatDuration(r.monitor_interval)},
            {"escalation", escalationJson(r.escalation)}};
}

std::string placementText(const model::Assembly& a);

json assemblyJson(const model::Model& m, const model::Assembly& a) {
    const auto* owner = m.owner(a.name);
    json res = json::array();
    for (const auto& r : a.resources)
        res.push_back(r.name);
    return {{"name", a.name},
            {"deployable", owner ? owner->name : ""},
            {"source", a.domain_xml.empty() ? "image" : "domain_xml"},
            {"image", a.image},
            {"address", a.address},
            {"parked", a.parked},
            {"resources", res},
            {"escalation", escalationJson(a.escalation)},
            {"placement", placementText(a)},
            {"outcome", model::toString(a.outcome)}};
}

// The hosts an assembly may run on, as the operator wrote it: "host=H", "hosts=H1,H2", "any".
std::string placementText(const model::Assembly& a) {
    if (!a.host.empty())
        return "host=" + a.host;
    if (!a.hosts.empty()) {
        std::string s;
        for (const auto& h : a.hosts)
            s += (s.empty() ? "" : ",") + h;
        return "hosts=" + s;
    }
    return "any";
}

// Fence parameter values are not shown (they hold passwords); their names are.
json hostJson(const model::Model& m, const model::Host& h) {
    json keys = json::array();
    for (const auto& [k, _] : h.fence.params)
        keys.push_back(k);
    json pinned = json::array(), allowed = json::array();
    for (const auto& [n, a] : m.assemblies) {
        if (a.host == h.name)
            pinned.push_back(n);
        else if (std::find(a.hosts.begin(), a.hosts.end(), h.name) != a.hosts.end())
            allowed.push_back(n);
    }
    return {{"name", h.name},
            {"node", h.node},
            {"state", model::toString(h.state)},
            {"fence", {{"agent", h.fence.agent}, {"params", keys}}},
            {"capacity", {{"vcpus", h.capacity.vcpus}, {"mem_mib", h.capacity.mem_mib}}},
            {"pinned", pinned},
            {"allowed", allowed}};
}

class Handler {
public:
    Handler(const Request& req, model::Model& model, Context& ctx)
        : req_(req), model_(model), ctx_(ctx), args_(req.args) {}

    json run();

private:
    // Validates, saves, then swaps in. Nothing changes when any step fails.
    void commit(model::Model next) {
        if (auto st = store::validateModel(next); !st)
            fail(code::InvalidArgument, st.error().describe());
        Status saved = ctx_.save ? ctx_.save(next) : store::saveModel(ctx_.state_dir, next);
        if (!saved)
            fail(code::Internal,
                 "cannot save the model, nothing was changed: " + saved.error().describe());
        model_ = std::move(next);
    }
    void setStarted(const std::string& dep, bool on) {
        if (!ctx_.desired)
            return;
        DesiredState next = *ctx_.desired;
        next.setStarted(dep, on);
        if (auto st = next.save(ctx_.state_dir); !st)
            fail(code::Internal,
                 "cannot save the desired state, nothing was changed: " + st.error().describe());
        *ctx_.desired = std::move(next);
    }
    bool started(const std::string& dep) const {
        return ctx_.desired && ctx_.desired->started(dep);
    }
    void emit(const std::string& dep, const std::string& assy, const std::string& state,
              const std::string& reason) {
        if (!ctx_.runtime)
            return;
        events::Event e;
        e.deployable = dep;
        e.assembly = assy;
        e.state = state;
        e.reason = reason;
        e.cause_id = req_.id.empty() ? "" : "cmd:" + req_.id;
        ctx_.runtime->emit(std::move(e));
    }
    // Tells a running dped to re-read the db files. Best effort: the change is saved already.
    json reloadDped(const std::string& dep) {
        if (!started(dep) || !ctx_.runtime)
            return "not running";
        auto r = ctx_.runtime->askDped(dep, "reload", json::object());
        if (!r)
            return "dped not answering: " + r.error().message;
        return "reloaded";
    }
    // After a change to an assembly: reload the dped of the deployable it belongs to, if any,
    // and say what happened in the reply.
    void reloadOwnerOf(const std::string& assy, json& out) {
        if (const auto* owner = model_.owner(assy))
            out["dped"] = reloadDped(owner->name);
    }

    json deployableCreate();
    json deployableDelete();
    json deployableStart();
    json deployableStop();
    json deployableStatus();
    json assemblyAdd();
    json assemblyRemove();
    json assemblyCreate();
    json assemblyClone();
    json assemblyDelete();
    json resourceAdd();
    json resourceRemove();
    json escalationAssembly();
    json escalationResource();
    json escalationDeployable();
    json refereeSet();
    json park(bool on);
    json templateList();
    json status();
    json eventsCmd();
    json ping();
    json hostAdd();
    json hostRemove();
    json hostList();
    json hostStatus();
    json hostMaintenance();
    json assemblyPlace();
    json deployableSpread();
    json clusterStatus();
    json clusterAdd();
    json clusterRemove();
    json clusterPromote();
    ZoneMembership& needZone(const char* command) {
        ZoneMembership* z = ctx_.coordinator ? ctx_.coordinator->zone() : nullptr;
        if (!z)
            fail(code::Conflict,
                 std::string(command) +
                     ": this cped runs as a single node (no etcd, no zone to change); start "
                     "every cped with --cluster etcd://H1:2379,... --node-name NAME "
                     "(docs/ha.md)");
        return *z;
    }
    policy::ZoneView observeZone(ZoneMembership& z) {
        auto v = z.observe();
        if (!v)
            fail(code::Unavailable, v.error().message);
        return std::move(*v);
    }
    // Zone events go to the journal under the pseudo-deployable "zone:MEMBER", like hosts.
    void emitZone(const std::string& member, const std::string& state, const std::string& reason) {
        emit("zone:" + member, "", state, reason);
    }
    // Host events go to the journal under the pseudo-deployable "host:NAME" (':' cannot
    // be in a deployable name, so it never collides).
    void emitHost(const std::string& host, const std::string& state, const std::string& reason) {
        emit("host:" + host, "", state, reason);
    }
    model::Host& needHost(model::Model& m, const std::string& name) {
        auto it = m.hosts.find(name);
        if (it == m.hosts.end())
            fail(code::NotFound, "no host named '" + name + "'; host_list shows the hosts");
        return it->second;
    }
    std::vector<std::string> hostList(const char* key) const;
    std::uint64_t boundedCount(const char* key, std::uint64_t min, std::uint64_t max) const {
        const auto n = args_.count(key, 0);
        if (n < min || n > max)
            fail(code::InvalidArgument, std::string("argument \"") + key +
                                            "\": " + std::to_string(n) + " is out of range (" +
                                            std::to_string(min) + ".." + std::to_string(max) + ")");
        return n;
    }
    void readPlacement(model::Assembly& a, const model::Model& m) const;

    const Request& req_;
    model::Model& model_;
    Context& ctx_;
    Args args_;
};

std::vector<std::string> Handler::hostList(const char* key) const {
    std::vector<std::string> out;
    if (!args_.has(key))
        return out;
    const json& v = args_.raw(key);
    auto add = [&](const std::string& n) {
        if (!model::isValidName(n))
            fail(code::InvalidArgument,
                 std::string("argument \"") + key + "\": '" + n + "' is not a valid name");
        if (std::find(out.begin(), out.end(), n) != out.end())
            fail(code::InvalidArgument,
                 std::string("argument \"") + key + "\": '" + n + "' is listed twice");
        out.push_back(n);
    };
    if (v.is_string()) {
        std::string s = v.get<std::string>(), cur;
        for (size_t i = 0; i <= s.size(); ++i) {
            if (i == s.size() || s[i] == ',') {
                add(cur);
                cur.clear();
            } else {
                cur += s[i];
            }
        }
    } else if (v.is_array()) {
        for (const auto& x : v) {
            if (!x.is_string())
                fail(code::InvalidArgument,
                     std::string("argument \"") + key + "\" holds a non-string");
            add(x.get<std::string>());
        }
    } else {
        fail(code::InvalidArgument,
             std::string("argument \"") + key + "\" must be a list or \"A,B\" text");
    }
    return out;
}

// "host" (pinned) or "hosts" (allowed set); neither = any host. Names must be defined.
void Handler::readPlacement(model::Assembly& a, const model::Model& m) const {
    if (args_.has("host") && args_.has("hosts"))
        fail(code::InvalidArgument, "give \"host\" (pinned) or \"hosts\" (allowed set), not both");
    a.host.clear();
    a.hosts.clear();
    if (args_.has("host")) {
        a.host = args_.name("host");
        if (!m.hosts.count(a.host))
            fail(code::NotFound, "no host named '" + a.host + "'; host_add it first");
    }
    a.hosts = hostList("hosts");
    for (const auto& h : a.hosts)
        if (!m.hosts.count(h))
            fail(code::NotFound, "no host named '" + h + "'; host_add it first");
}

json Handler::hostAdd() {
    auto name = args_.name("name");
    if (model_.hosts.count(name))
        fail(code::Exists, "host '" + name + "' exists already");
    model::Host h;
    h.name = name;
    h.node = args_.str("node");
    if (!model::isValidNodeIdentity(h.node))
        fail(code::InvalidArgument,
             "argument \"node\": '" + h.node + "' is not a node identity; use node:NAME");
    for (const auto& [n, other] : model_.hosts)
        if (other.node == h.node)
            fail(code::Conflict, "host '" + n + "' already has node " + h.node +
                                     "; each host has its own pcloud-node");
    if (args_.has("fence")) {
        const json& f = args_.raw("fence");
        if (!f.is_object())
            fail(code::InvalidArgument,
                 "argument \"fence\" must be {\"agent\":..,\"params\":{..}}");
        Args fa(f);
        h.fence.agent = fa.str("agent");
        if (!model::isValidFenceAgentName(h.fence.agent))
            fail(code::InvalidArgument,
                 "fence agent '" + h.fence.agent +
                     "' is not a fence agent name (fence_ followed by letters, digits, '_' or "
                     "'-'); agents are named, never given as a path");
        const auto& allowed = ctx_.host.fence_agents;
        if (!allowed.empty() &&
            std::find(allowed.begin(), allowed.end(), h.fence.agent) == allowed.end())
            fail(code::InvalidArgument,
                 "fence agent '" + h.fence.agent +
                     "' is not allowed on this host; add "
                     "'fence_agent = " +
                     h.fence.agent + "' to " +
                     (ctx_.host.source.empty() ? std::string(hostconfig::kDefaultPath)
                                               : ctx_.host.source));
        const std::string path = ctx_.host.fence_agents_dir + "/" + h.fence.agent;
        if (::access(path.c_str(), X_OK) != 0)
            fail(code::InvalidArgument, "fence agent " + path +
                                            " is not an executable here (install fence-agents, "
                                            "or set fence_agents_dir in the host configuration)");
        if (fa.has("params")) {
            const json& p = f.at("params");
            if (!p.is_object())
                fail(code::InvalidArgument, "fence params must be an object of strings");
            for (const auto& [k, v] : p.items()) {
                if (!model::isValidFenceParamName(k))
                    fail(code::InvalidArgument,
                         "fence parameter '" + k +
                             "' is not valid (letters, digits, '_' and '-'; 'action' is set "
                             "by pcloud)");
                if (!v.is_string())
                    fail(code::InvalidArgument, "fence parameter '" + k + "' must be a string");
                const std::string s = v.get<std::string>();
                if (s.find_first_of("\r\n") != std::string::npos)
                    fail(code::InvalidArgument, "fence parameter '" + k +
                                                    "' holds a line break (they are sent as "
                                                    "key=value lines)");
                h.fence.params[k] = s;
            }
        }
    }
    if (args_.has("capacity")) {
        const json& c = args_.raw("capacity");
        if (!c.is_object())
            fail(code::InvalidArgument, "argument \"capacity\" must be {\"vcpus\":N,\"mem\":MiB}");
        for (const auto& [k, _] : c.items())
            if (k != "vcpus" && k != "mem")
                fail(code::InvalidArgument,
                     "unknown capacity '" + k + "' (known: vcpus, mem in MiB)");
        Args ca(c);
        h.capacity.vcpus = static_cast<int>(ca.count("vcpus", 0));
        h.capacity.mem_mib = static_cast<int>(ca.count("mem", 0));
        if (h.capacity.vcpus > (1 << 20) || h.capacity.mem_mib > (1 << 30))
            fail(code::InvalidArgument, "capacity out of range");
    }
    model::Model next = model_;
    next.hosts[name] = h;
    commit(std::move(next));
    emitHost(name, "up", "host added by operator (node " + h.node + ")");
    return hostJson(model_, model_.hosts.at(name));
}

json Handler::hostRemove() {
    auto name = args_.str("name");
    needHost(model_, name);
    std::vector<std::string> users;
    for (const auto& [n, a] : model_.assemblies)
        if (a.host == name || std::find(a.hosts.begin(), a.hosts.end(), name) != a.hosts.end())
            users.push_back(n);
    if (!users.empty()) {
        std::string list;
        for (const auto& u : users)
            list += (list.empty() ? "" : ", ") + u;
        fail(code::Conflict, "host '" + name + "' still has assemblies placed on it (" + list +
                                 "); move them with assembly_place first");
    }
    model::Model next = model_;
    next.hosts.erase(name);
    commit(std::move(next));
    emitHost(name, "removed", "host removed by operator");
    return {{"deleted", name}};
}

json Handler::hostList() {
    json out = json::array();
    for (const auto& [_, h] : model_.hosts)
        out.push_back(hostJson(model_, h));
    return {{"hosts", out}};
}

json Handler::hostStatus() {
    const auto& h = needHost(model_, args_.str("name"));
    json out = hostJson(model_, h);
    json any = json::array();
    for (const auto& [n, a] : model_.assemblies)
        if (a.host.empty() && a.hosts.empty())
            any.push_back(n);
    out["any_host"] = any;
    // Nothing observes hosts yet (pcloud-node is not built): say so rather than guess.
    out["observed"] = "no pcloud-node reports yet (docs/hosts.md)";
    return out;
}

json Handler::hostMaintenance() {
    auto name = args_.str("name");
    const auto& h = needHost(model_, name);
    const std::string mode = args_.str("mode");
    if (mode != "on" && mode != "off")
        fail(code::InvalidArgument, "argument \"mode\": '" + mode + "' is neither on nor off");
    const bool on = mode == "on";
    json out = {{"host", name}, {"maintenance", on}};
    if (on && h.state == model::HostState::Maintenance) {
        out["already"] = true;
        return out;
    }
    if (!on && h.state != model::HostState::Maintenance) {
        out["already"] = true;
        out["state"] = model::toString(h.state);
        return out;
    }
    // A host being fenced or fenced is the host layer's business: maintenance would hide
    // that its assemblies are down and must not be started twice.
    if (on && h.state != model::HostState::Up)
        fail(code::Conflict, "host '" + name + "' is " + model::toString(h.state) +
                                 "; maintenance can be turned on for a host that is up");
    model::Model next = model_;
    next.hosts[name].state = on ? model::HostState::Maintenance : model::HostState::Up;
    commit(std::move(next));
    emitHost(name, on ? "maintenance" : "up",
             on ? "maintenance on by operator: kept out of placement"
                : "maintenance off by operator: back in placement");
    out["state"] = model::toString(model_.hosts.at(name).state);
    return out;
}

json Handler::assemblyPlace() {
    auto assy = args_.str("assembly");
    needAssembly(model_, assy);
    model::Model next = model_;
    auto& a = next.assemblies[assy];
    readPlacement(a, model_);
    commit(std::move(next));
    json out = {{"assembly", assy}, {"placement", placementText(model_.assemblies.at(assy))}};
    reloadOwnerOf(assy, out);
    return out;
}

json Handler::deployableSpread() {
    auto dep = args_.str("deployable");
    needDeployable(model_, dep);
    const std::string mode = args_.str("mode");
    if (mode != "on" && mode != "off")
        fail(code::InvalidArgument, "argument \"mode\": '" + mode + "' is neither on nor off");
    model::Model next = model_;
    next.deployables[dep].spread = mode == "on";
    commit(std::move(next));
    return {{"deployable", dep}, {"spread", mode == "on"}, {"dped", reloadDped(dep)}};
}

namespace {

json memberJson(const policy::ZoneView& v, const policy::ZoneHealth& h,
                const policy::ZoneMember& m) {
    json j = {{"name", m.name},
              {"label", m.label()},
              {"id", policy::memberIdHex(m.id)},
              {"peer_urls", m.peer_urls},
              {"client_urls", m.client_urls},
              {"learner", m.learner},
              {"started", m.started()},
              {"healthy", m.healthy()},
              {"is_leader", h.leader != 0 && m.id == h.leader}};
    if (m.answered) {
        j["status"] = {{"version", m.version},
                       {"db_size", m.db_size},
                       {"db_size_in_use", m.db_size_in_use},
                       {"leader", m.leader ? policy::memberIdHex(m.leader) : ""},
                       {"raft_index", m.raft_index},
                       {"raft_term", m.raft_term},
                       {"raft_applied_index", m.raft_applied_index},
                       {"errors", m.errors}};
    }
    if (!m.healthy())
        j["problem"] = m.unhealthyReason();
    if (auto lag = policy::lagOf(v, m))
        j["lag"] = *lag;
    return j;
}

// "etcd://h1:2379,h2:2379" plus the new member's client address, for the printed cped line.
std::string withEndpoint(std::string url, bool tls, const std::string& endpoint) {
    if (url.rfind("etcd://", 0) != 0 && url.rfind("etcds://", 0) != 0)
        url = (tls ? "etcds://" : "etcd://") + url;
    return url + "," + endpoint;
}

// The host of "http://HOST:PORT".
std::string urlHost(const std::string& url) {
    auto start = url.find("://");
    std::string rest = start == std::string::npos ? url : url.substr(start + 3);
    return rest.substr(0, rest.rfind(':'));
}

} // namespace

json Handler::clusterStatus() {
    LeadershipInfo li;
    if (ctx_.coordinator)
        li = ctx_.coordinator->leadership();
    json leader = {{"node", li.node}, {"epoch", li.epoch}};
    ZoneMembership* z = ctx_.coordinator ? ctx_.coordinator->zone() : nullptr;
    if (!z)
        return {{"mode", "single-node"},
                {"etcd", false},
                {"leader", leader},
                {"note", "single node: no etcd (cped runs without --cluster); members: this "
                         "node only"},
                {"members", json::array({{{"name", li.node}, {"self", true}}})}};
    const auto v = observeZone(*z);
    const auto h = policy::zoneHealth(v);
    json members = json::array();
    for (const auto& m : v.members)
        members.push_back(memberJson(v, h, m));
    std::string etcdLeader;
    for (const auto& m : v.members)
        if (h.leader != 0 && m.id == h.leader)
            etcdLeader = m.label();
    // The zone's journal and this node's copy of it (docs/ha.md "The shared journal").
    json journal = json::object();
    if (ctx_.journal)
        journal["copy_last"] = ctx_.journal->lastSeq();
    if (ZoneJournalStore* zj = ctx_.coordinator->journal()) {
        auto head = zj->head();
        if (!head)
            journal["error"] = head.error().message;
        else if (*head) {
            journal["zone_last"] = (*head)->last;
            journal["etcd_oldest"] = (*head)->first;
        }
    }
    return {{"mode", "etcd"},
            {"journal", journal},
            {"etcd", true},
            {"endpoints", z->endpoints()},
            {"leader", leader},
            {"etcd_leader", etcdLeader},
            {"quorum",
             {{"voters", h.voters},
              {"healthy", h.healthy_voters},
              {"needed", h.quorum},
              {"ok", h.has_quorum}}},
            {"members", members}};
}

json Handler::clusterAdd() {
    const std::string name = args_.str("name");
    const std::string peer = args_.str("peer_url");
    if (auto st = policy::checkMemberName(name); !st)
        fail(code::InvalidArgument, st.error().message);
    if (auto st = policy::checkPeerUrl(peer); !st)
        fail(code::InvalidArgument, st.error().message);
    const bool learner = args_.optBool("learner");
    auto& z = needZone("cluster_add");
    const auto before = observeZone(z);
    auto verdict = policy::checkAdd(before, name, peer, learner);
    if (!verdict.allowed)
        fail(code::Conflict, "cluster_add " + name + ": refused: " + verdict.refusal);
    auto added = z.add(peer, learner);
    if (!added)
        fail(code::Unavailable, added.error().message);
    const std::string id = policy::memberIdHex(added->member.id);
    const std::string initial = policy::initialCluster(added->members, name, peer);
    const bool tls = z.tls();
    const std::string client = (tls ? "https://" : "http://") + urlHost(peer) + ":2379";
    emitZone(name, "member-added",
             std::string(learner ? "etcd learner" : "etcd member") + " added by operator (id " +
                 id + ", peer URL " + peer +
                 "); it joins once etcd starts there with --initial-cluster-state existing" +
                 (learner ? "; it votes once promoted (cluster_promote)" : ""));
    const std::string etcdCommand =
        "etcd --name " + name + " --data-dir /var/lib/etcd/" + name +
        " --initial-advertise-peer-urls " + peer + " --listen-peer-urls " + peer +
        " --advertise-client-urls " + client + " --listen-client-urls " + client +
        " --initial-cluster " + initial + " --initial-cluster-state existing" +
        (tls ? " --client-cert-auth --trusted-ca-file CA.crt --cert-file " + name +
                   ".crt --key-file " + name + ".key"
             : std::string());
    return {{"member", name},
            {"id", id},
            {"learner", learner},
            {"peer_url", peer},
            {"initial_cluster", initial},
            {"initial_cluster_state", "existing"},
            {"etcd_command", etcdCommand},
            {"cped_command", "cped --cluster " +
                                 withEndpoint(z.endpoints(), tls, urlHost(peer) + ":2379") +
                                 " --node-name " + name},
            {"warnings", verdict.warnings}};
}

// The member a cluster_remove or cluster_promote of `who` is allowed to change, or the
// refusal (an unknown member: not-found, or invalid-argument for a bad name; else conflict).
const policy::ZoneMember& allowedTarget(const std::string& command, const std::string& who,
                                        const policy::ZoneView& before,
                                        const policy::ZoneVerdict& verdict) {
    if (verdict.target < 0)
        fail(policy::checkMemberName(who) ? code::NotFound : code::InvalidArgument,
             command + " " + who + ": refused: " + verdict.refusal);
    if (!verdict.allowed)
        fail(code::Conflict, command + " " + who + ": refused: " + verdict.refusal);
    return before.members[static_cast<size_t>(verdict.target)];
}

json Handler::clusterRemove() {
    const std::string who = args_.str("name");
    auto& z = needZone("cluster_remove");
    const auto before = observeZone(z);
    auto verdict = policy::checkRemove(before, who);
    const auto& m = allowedTarget("cluster_remove", who, before, verdict);
    if (auto st = z.remove(m.id, m.label()); !st)
        fail(code::Unavailable, st.error().message);
    const std::string id = policy::memberIdHex(m.id);
    emitZone(m.name.empty() ? id : m.name, "member-removed",
             "etcd member removed by operator (id " + id + "); stop etcd and cped there");
    return {{"removed", m.label()},
            {"id", id},
            {"members_left", before.members.size() - 1},
            {"warnings", verdict.warnings}};
}

json Handler::clusterPromote() {
    const std::string who = args_.str("name");
    auto& z = needZone("cluster_promote");
    const auto before = observeZone(z);
    auto verdict = policy::checkPromote(before, who);
    const auto& m = allowedTarget("cluster_promote", who, before, verdict);
    if (auto st = z.promote(m.id, m.label()); !st)
        fail(code::Unavailable, st.error().message);
    const std::string id = policy::memberIdHex(m.id);
    emitZone(m.label(), "member-promoted",
             "etcd learner promoted to a voting member by operator (id " + id + ")");
    return {{"promoted", m.label()},
            {"id", id},
            {"voters", policy::zoneHealth(before).voters + 1},
            {"warnings", verdict.warnings}};
}

json Handler::deployableCreate() {
    auto name = args_.name("name");
    if (model_.deployables.count(name))
        fail(code::Exists, "deployable '" + name + "' exists already");
    model::Model next = model_;
    model::Deployable d;
    d.name = name;
    d.uri = args_.optStr("uri", d.uri);
    if (d.uri.empty())
        fail(code::InvalidArgument, "argument \"uri\" must not be empty");
    if (args_.has("spread")) {
        const std::string s = args_.str("spread");
        if (s != "on" && s != "off")
            fail(code::InvalidArgument, "argument \"spread\": '" + s + "' is neither on nor off");
        d.spread = s == "on";
    }
    if (args_.has("monitor") && !model::parseMonitorMode(args_.str("monitor"), d.monitor))
        fail(code::InvalidArgument,
             "argument \"monitor\": '" + args_.str("monitor") + "' is neither active nor passive");
    next.deployables[name] = d;
    commit(std::move(next));
    emit(name, "", "created", "deployable created");
    return deployableJson(model_.deployables.at(name), ctx_.desired);
}

json Handler::deployableDelete() {
    auto name = args_.str("name");
    needDeployable(model_, name);
    if (started(name))
        fail(code::Conflict, "deployable '" + name + "' is started; deployable_stop it first");
    model::Model next = model_;
    next.deployables.erase(name);
    commit(std::move(next));
    emit(name, "", "deleted", "deployable deleted");
    return {{"deleted", name}};
}

json Handler::deployableStart() {
    auto name = args_.str("name");
    const auto& d = needDeployable(model_, name);
    if (d.assemblies.empty())
        fail(code::Conflict, "deployable '" + name +
                                 "' has no assemblies; add one with deployable_assembly_add first");
    if (ctx_.coordinator && ctx_.coordinator->zone())
        if (auto why = policy::zoneDpedRefusal(d.uri); !why.empty())
            fail(code::Conflict, "deployable '" + name + "' cannot start in a zone: " + why);
    bool already = started(name);
    if (!already)
        setStarted(name, true);
    if (ctx_.runtime)
        ctx_.runtime->startDeployable(name);
    if (!already)
        emit(name, "", "starting", "start requested by operator");
    return {{"deployable", name}, {"started", true}, {"already", already}};
}

json Handler::deployableStop() {
    auto name = args_.str("name");
    needDeployable(model_, name);
    bool was = started(name);
    if (was)
        setStarted(name, false);
    json out = {{"deployable", name}, {"stopped", true}, {"already", !was}};
    if (ctx_.runtime) {
        auto r = ctx_.runtime->stopDeployable(name);
        if (!r)
            fail(code::Unavailable,
                 "deployable '" + name + "' is marked stopped, but: " + r.error().message);
        out["dped"] = *r;
    }
    if (was)
        emit(name, "", "stopped", "stopped by operator");
    return out;
}

json Handler::deployableStatus() {
    auto name = args_.str("name");
    const auto& d = needDeployable(model_, name);
    json out = deployableJson(d, ctx_.desired);
    json assys = json::array();
    for (const auto& a : d.assemblies)
        if (const auto* as = model_.findAssembly(a))
            assys.push_back(assemblyJson(model_, *as));
    out["model_assemblies"] = assys;
    out["desired"] = started(name) ? "started" : "stopped";
    if (ctx_.runtime) {
        out["dped"] = ctx_.runtime->dpedProcess(name);
        if (started(name)) {
            auto r = ctx_.runtime->askDped(name, "status", json::object());
            if (r)
                out["status"] = *r;
            else
                out["dped_error"] = "dped not answering: " + r.error().message;
        }
    }
    return out;
}

json Handler::assemblyAdd() {
    auto dep = args_.str("deployable");
    auto assy = args_.str("assembly");
    needDeployable(model_, dep);
    needAssembly(model_, assy);
    if (const auto* owner = model_.owner(assy)) {
        if (owner->name == dep)
            fail(code::Exists, "assembly '" + assy + "' is already in '" + dep + "'");
        fail(code::Conflict, "assembly '" + assy + "' belongs to deployable '" + owner->name +
                                 "'; remove it there first");
    }
    model::Model next = model_;
    next.deployables[dep].assemblies.push_back(assy);
    commit(std::move(next));
    return {{"deployable", dep}, {"assembly", assy}, {"dped", reloadDped(dep)}};
}

json Handler::assemblyRemove() {
    auto dep = args_.str("deployable");
    auto assy = args_.str("assembly");
    auto& d = needDeployable(model_, dep);
    if (std::find(d.assemblies.begin(), d.assemblies.end(), assy) == d.assemblies.end())
        fail(code::NotFound, "assembly '" + assy + "' is not in deployable '" + dep + "'");
    if (started(dep) && d.assemblies.size() == 1)
        fail(code::Conflict, "'" + assy + "' is the last assembly of started deployable '" + dep +
                                 "'; deployable_stop it first");
    model::Model next = model_;
    auto& list = next.deployables[dep].assemblies;
    list.erase(std::remove(list.begin(), list.end(), assy), list.end());
    commit(std::move(next));
    return {{"deployable", dep}, {"assembly", assy}, {"dped", reloadDped(dep)}};
}

json Handler::assemblyCreate() {
    auto name = args_.name("name");
    if (model_.assemblies.count(name))
        fail(code::Exists, "assembly '" + name + "' exists already");
    model::Assembly a;
    a.name = name;
    a.domain_xml = args_.optStr("domain_xml");
    a.image = args_.optStr("image");
    a.address = args_.optStr("address");
    if (a.domain_xml.empty() == a.image.empty())
        fail(code::InvalidArgument,
             "give exactly one of \"domain_xml\" (libvirt domain XML text) or \"image\"");
    if (!a.domain_xml.empty() &&
        (args_.has("memory") || args_.has("vcpus") || args_.has("networks")))
        fail(code::InvalidArgument, "\"memory\", \"vcpus\" and \"networks\" go with \"image\" "
                                    "(they shape the generated domain XML), not with domain_xml");
    if (args_.has("memory"))
        a.memory_mib = static_cast<int>(boundedCount("memory", 16, 16 * 1024 * 1024));
    if (args_.has("vcpus"))
        a.vcpus = static_cast<int>(boundedCount("vcpus", 1, 4096));
    a.networks = hostList("networks");
    readPlacement(a, model_);
    if (!a.image.empty()) {
        if (auto st = store::checkImagePath(a.image, ctx_.host); !st)
            fail(code::InvalidArgument, st.error().message);
        auto xml = store::imageDomainXml(a);
        if (!xml)
            fail(code::InvalidArgument, xml.error().message);
        if (auto st = store::checkDomainXml(*xml, ctx_.host); !st)
            fail(code::Internal,
                 "the generated domain XML breaks the host rules: " + st.error().message);
    }
    if (!a.domain_xml.empty()) {
        pugi::xml_document doc;
        auto parsed = doc.load_buffer(a.domain_xml.data(), a.domain_xml.size());
        if (!parsed)
            fail(code::InvalidArgument, std::string("domain_xml is not well-formed XML: ") +
                                            parsed.description() + " at byte " +
                                            std::to_string(parsed.offset));
        if (std::string(doc.document_element().name()) != "domain")
            fail(code::InvalidArgument, "domain_xml must be a libvirt <domain> element, not <" +
                                            std::string(doc.document_element().name()) + ">");
        if (auto st = store::checkDomainXml(a.domain_xml, ctx_.host); !st)
            fail(code::InvalidArgument, st.error().message);
    }
    if (!a.address.empty() && a.address.find(':') == std::string::npos)
        fail(code::InvalidArgument, "argument \"address\": '" + a.address + "' is not IP:PORT");
    model::Model next = model_;
    next.assemblies[name] = a;
    commit(std::move(next));
    return assemblyJson(model_, model_.assemblies.at(name));
}

json Handler::assemblyClone() {
    auto src = args_.str("source");
    auto name = args_.name("name");
    const auto& s = needAssembly(model_, src);
    if (model_.assemblies.count(name))
        fail(code::Exists, "assembly '" + name + "' exists already");
    model::Assembly a = s;
    a.name = name;
    a.uuid.clear();
    a.parked = false;
    a.address = args_.optStr("address");
    model::Model next = model_;
    next.assemblies[name] = a;
    commit(std::move(next));
    return assemblyJson(model_, model_.assemblies.at(name));
}

json Handler::assemblyDelete() {
    auto name = args_.str("name");
    needAssembly(model_, name);
    if (const auto* owner = model_.owner(name))
        fail(code::Conflict, "assembly '" + name + "' is in deployable '" + owner->name +
                                 "'; deployable_assembly_remove it first");
    model::Model next = model_;
    next.assemblies.erase(name);
    commit(std::move(next));
    return {{"deleted", name}};
}

json Handler::resourceAdd() {
    auto rsc = args_.name("resource");
    auto tmpl = args_.str("template");
    auto assy = args_.str("assembly");
    const auto& a = needAssembly(model_, assy);
    if (a.findResource(rsc))
        fail(code::Exists, "resource '" + rsc + "' exists already in '" + assy + "'");
    if (!ctx_.templates)
        fail(code::NotFound, "no resource templates are loaded");
    auto r = ctx_.templates->instantiate(tmpl, rsc);
    if (!r)
        fail(code::NotFound, r.error().describe());
    model::Model next = model_;
    next.assemblies[assy].resources.push_back(*r);
    commit(std::move(next));
    json out = resourceJson(*model_.assemblies.at(assy).findResource(rsc));
    out["assembly"] = assy;
    reloadOwnerOf(assy, out);
    return out;
}

json Handler::resourceRemove() {
    auto rsc = args_.str("resource");
    auto assy = args_.str("assembly");
    needResource(model_, assy, rsc);
    model::Model next = model_;
    auto& list = next.assemblies[assy].resources;
    list.erase(
        std::remove_if(list.begin(), list.end(), [&](const auto& r) { return r.name == rsc; }),
        list.end());
    commit(std::move(next));
    json out = {{"resource", rsc}, {"assembly", assy}};
    reloadOwnerOf(assy, out);
    return out;
}

json Handler::escalationAssembly() {
    auto assy = args_.str("assembly");
    needAssembly(model_, assy);
    model::Escalation e{args_.failures("failures"), args_.period("period")};
    model::Model next = model_;
    next.assemblies[assy].escalation = e;
    commit(std::move(next));
    json out = {{"assembly", assy}, {"escalation", escalationJson(e)}};
    reloadOwnerOf(assy, out);
    return out;
}

json Handler::escalationResource() {
    auto rsc = args_.str("resource");
    auto assy = args_.str("assembly");
    needResource(model_, assy, rsc);
    model::Escalation e{args_.failures("failures"), args_.period("period")};
    model::Model next = model_;
    for (auto& r : next.assemblies[assy].resources)
        if (r.name == rsc)
            r.escalation = e;
    commit(std::move(next));
    json out = {{"resource", rsc}, {"assembly", assy}, {"escalation", escalationJson(e)}};
    reloadOwnerOf(assy, out);
    return out;
}

json Handler::escalationDeployable() {
    auto dep = args_.str("deployable");
    needDeployable(model_, dep);
    model::Escalation e{args_.failures("failures"), args_.period("period")};
    model::Model next = model_;
    auto& d = next.deployables[dep];
    d.escalation = e;
    if (args_.has("outcome") && !model::parseDeployableOutcome(args_.str("outcome"), d.outcome))
        fail(code::InvalidArgument, "argument \"outcome\": '" + args_.str("outcome") +
                                        "' is neither leave-stopped nor stop-deployable");
    commit(std::move(next));
    return {{"deployable", dep},
            {"escalation", escalationJson(e)},
            {"outcome", model::toString(model_.deployables.at(dep).outcome)},
            {"dped", reloadDped(dep)}};
}

json Handler::refereeSet() {
    auto dep = args_.str("deployable");
    needDeployable(model_, dep);
    std::string driver = args_.str("driver");
    if (driver == "none")
        driver.clear();
    if (driver != "" && driver != "log" && driver != "haproxy" && driver != "apache" &&
        driver != "nginx")
        fail(code::InvalidArgument, "argument \"driver\": '" + driver +
                                        "' is not one of none, log, haproxy, apache, nginx");
    model::RefereeConfig rc;
    rc.driver = driver;
    if (args_.has("options")) {
        const json& o = args_.raw("options");
        if (!o.is_object())
            fail(code::InvalidArgument, "argument \"options\" must be an object");
        static const std::map<std::string, std::string model::RefereeConfig::*> fields = {
            {"socket", &model::RefereeConfig::socket},
            {"backend", &model::RefereeConfig::backend},
            {"config_file", &model::RefereeConfig::config_file},
            {"cluster", &model::RefereeConfig::cluster},
            {"alias", &model::RefereeConfig::alias},
            {"upstream", &model::RefereeConfig::upstream}};
        for (const auto& [k, v] : o.items()) {
            if (k == "apachectl" || k == "nginx")
                fail(code::InvalidArgument,
                     "referee option '" + k +
                         "' is not accepted over the bus: the command pcloud runs comes from '" +
                         k + " = ...' in the host configuration (" +
                         (ctx_.host.source.empty() ? std::string(hostconfig::kDefaultPath)
                                                   : ctx_.host.source) +
                         ", see docs/security.md)");
            auto f = fields.find(k);
            if (f == fields.end())
                fail(code::InvalidArgument,
                     "unknown referee option '" + k +
                         "' (known: socket backend config_file cluster alias upstream)");
            if (!v.is_string())
                fail(code::InvalidArgument, "referee option '" + k + "' must be a string");
            rc.*(f->second) = v.get<std::string>();
        }
    }
    if (auto st = referee::validateConfig(rc, ctx_.host); !st)
        fail(code::InvalidArgument, st.error().message);
    model::Model next = model_;
    next.deployables[dep].referee = rc;
    commit(std::move(next));
    return {{"deployable", dep},
            {"driver", driver.empty() ? "none" : driver},
            {"dped", reloadDped(dep)}};
}

json Handler::park(bool on) {
    auto assy = args_.str("assembly");
    const bool parked = needAssembly(model_, assy).parked;
    json out = {{"assembly", assy}, {"parked", on}};
    // A copy, not a pointer into model_: commit() replaces model_ (found by fuzzing, a
    // use-after-free when parking an assembly that belongs to a deployable).
    const auto* owner = model_.owner(assy);
    const std::string ownerName = owner ? owner->name : "";
    if (parked != on) {
        model::Model next = model_;
        next.assemblies[assy].parked = on;
        commit(std::move(next));
        emit(ownerName, assy, on ? "parked" : "unparked",
             on ? "parked by operator" : "unparked by operator");
    } else {
        out["already"] = true;
    }
    if (!ownerName.empty())
        out["dped"] = reloadDped(ownerName);
    return out;
}

json Handler::templateList() {
    json out = json::array();
    if (ctx_.templates)
        for (const auto* t : ctx_.templates->list())
            out.push_back({{"name", t->name},
                           {"description", t->description},
                           {"class", model::toString(t->resource.klass)},
                           {"unit", t->resource.unit},
                           {"source", t->source}});
    return {{"templates", out}};
}

json Handler::status() {
    json deps = json::array();
    for (const auto& [name, d] : model_.deployables) {
        json e = {{"name", name},
                  {"desired", started(name) ? "started" : "stopped"},
                  {"assemblies", d.assemblies.size()}};
        if (ctx_.runtime) {
            e["dped"] = ctx_.runtime->dpedProcess(name);
            if (started(name)) {
                auto r = ctx_.runtime->askDped(name, "status", json::object());
                if (r)
                    e["status"] = *r;
                else
                    e["dped_error"] = "dped not answering: " + r.error().message;
            }
        }
        deps.push_back(e);
    }
    json out = {{"deployables", deps}, {"assemblies", model_.assemblies.size()}};
    if (ctx_.journal)
        out["last_seq"] = ctx_.journal->lastSeq();
    if (ctx_.runtime) {
        if (auto bus = ctx_.runtime->busSecurity(); !bus.is_null())
            out["bus"] = bus;
    }
    return out;
}

json Handler::eventsCmd() {
    if (!ctx_.journal)
        fail(code::Unavailable, "the event journal is not open");
    events::ReplayQuery q;
    bool since = false;
    if (args_.has("since_seq")) {
        q.since_seq = args_.count("since_seq", 0);
        since = true;
    }
    if (args_.has("since_time")) {
        auto t = parseRfc3339(args_.str("since_time"));
        if (!t)
            fail(code::InvalidArgument, "argument \"since_time\": " + t.error().message);
        q.since_time = *t;
        since = true;
    }
    q.deployable = args_.optStr("deployable");
    q.limit = args_.count("limit", since ? 1000 : 20);
    q.newest = !since;
    auto r = ctx_.journal->replay(q);
    if (!r)
        fail(code::Internal, r.error().describe());
    json evs = json::array();
    for (const auto& e : r->events)
        evs.push_back(events::toJson(e));
    return {{"events", evs}, {"more", r->more}, {"last_seq", r->last_seq}};
}

json Handler::ping() {
    std::vector<std::string> targets;
    if (args_.has("assemblies")) {
        const json& a = args_.raw("assemblies");
        if (!a.is_array())
            fail(code::InvalidArgument, "argument \"assemblies\" must be a list");
        for (const auto& n : a) {
            if (!n.is_string())
                fail(code::InvalidArgument, "argument \"assemblies\" holds a non-string");
            needAssembly(model_, n.get<std::string>());
            targets.push_back(n.get<std::string>());
        }
    }
    if (targets.empty())
        for (const auto& [n, _] : model_.assemblies)
            targets.push_back(n);
    Millis timeout = ctx_.ping_timeout_ms;
    if (args_.has("timeout_ms"))
        timeout = static_cast<Millis>(args_.count("timeout_ms", 0));
    if (timeout <= 0 || timeout > 60'000)
        fail(code::InvalidArgument, "timeout_ms must be 1..60000");
    json out = json::array();
    if (ctx_.runtime && !targets.empty()) {
        for (const auto& p : ctx_.runtime->pingAgents(targets, timeout)) {
            json e = {{"assembly", p.assembly}, {"ok", p.ok}};
            if (p.ok)
                e["rtt_ms"] = p.rtt_ms;
            else
                e["error"] = p.error;
            out.push_back(e);
        }
    }
    return {{"pings", out}};
}

json Handler::run() {
    const std::string& c = req_.command;
    if (c == "deployable_create")
        return deployableCreate();
    if (c == "deployable_delete")
        return deployableDelete();
    if (c == "deployable_list") {
        json out = json::array();
        for (const auto& [_, d] : model_.deployables)
            out.push_back(deployableJson(d, ctx_.desired));
        return {{"deployables", out}};
    }
    if (c == "deployable_start")
        return deployableStart();
    if (c == "deployable_stop")
        return deployableStop();
    if (c == "deployable_reload") {
        auto name = args_.str("name");
        needDeployable(model_, name);
        return {{"deployable", name}, {"dped", reloadDped(name)}};
    }
    if (c == "deployable_status")
        return deployableStatus();
    if (c == "deployable_assembly_add")
        return assemblyAdd();
    if (c == "deployable_assembly_remove")
        return assemblyRemove();
    if (c == "deployable_assembly_list") {
        const auto& d = needDeployable(model_, args_.str("deployable"));
        json out = json::array();
        for (const auto& a : d.assemblies)
            if (const auto* as = model_.findAssembly(a))
                out.push_back(assemblyJson(model_, *as));
        return {{"deployable", d.name}, {"assemblies", out}};
    }
    if (c == "assembly_create")
        return assemblyCreate();
    if (c == "assembly_clone")
        return assemblyClone();
    if (c == "assembly_delete")
        return assemblyDelete();
    if (c == "assembly_list") {
        json out = json::array();
        for (const auto& [_, a] : model_.assemblies)
            out.push_back(assemblyJson(model_, a));
        return {{"assemblies", out}};
    }
    if (c == "assembly_resource_add")
        return resourceAdd();
    if (c == "assembly_resource_remove")
        return resourceRemove();
    if (c == "assembly_resource_list") {
        const auto& a = needAssembly(model_, args_.str("assembly"));
        json out = json::array();
        for (const auto& r : a.resources)
            out.push_back(resourceJson(r));
        return {{"assembly", a.name}, {"resources", out}};
    }
    if (c == "escalation_assembly_set")
        return escalationAssembly();
    if (c == "escalation_resource_set")
        return escalationResource();
    if (c == "escalation_deployable_set")
        return escalationDeployable();
    if (c == "referee_set")
        return refereeSet();
    if (c == "assembly_park")
        return park(true);
    if (c == "assembly_unpark")
        return park(false);
    if (c == "template_list")
        return templateList();
    if (c == "status")
        return status();
    if (c == "events")
        return eventsCmd();
    if (c == "ping")
        return ping();
    if (c == "host_add")
        return hostAdd();
    if (c == "host_remove")
        return hostRemove();
    if (c == "host_list")
        return hostList();
    if (c == "host_status")
        return hostStatus();
    if (c == "host_maintenance")
        return hostMaintenance();
    if (c == "assembly_place")
        return assemblyPlace();
    if (c == "deployable_spread")
        return deployableSpread();
    if (c == "cluster_status")
        return clusterStatus();
    if (c == "cluster_add")
        return clusterAdd();
    if (c == "cluster_remove")
        return clusterRemove();
    if (c == "cluster_promote")
        return clusterPromote();
    fail(code::UnknownCommand, "unknown command '" + c + "'");
}

} // namespace

const std::vector<std::string>& commandNames() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> n = {"deployable_create",
                                      "deployable_delete",
                                      "deployable_list",
                                      "deployable_start",
                                      "deployable_stop",
                                      "deployable_reload",
                                      "deployable_status",
                                      "deployable_assembly_add",
                                      "deployable_assembly_remove",
                                      "deployable_assembly_list",
                                      "assembly_create",
                                      "assembly_clone",
                                      "assembly_delete",
                                      "assembly_list",
                                      "assembly_resource_add",
                                      "assembly_resource_remove",
                                      "assembly_resource_list",
                                      "escalation_assembly_set",
                                      "escalation_resource_set",
                                      "escalation_deployable_set",
                                      "referee_set",
                                      "assembly_park",
                                      "assembly_unpark",
                                      "template_list",
                                      "status",
                                      "events",
                                      "ping",
                                      "host_add",
                                      "host_remove",
                                      "host_list",
                                      "host_status",
                                      "host_maintenance",
                                      "assembly_place",
                                      "deployable_spread",
                                      "cluster_status",
                                      "cluster_add",
                                      "cluster_remove",
                                      "cluster_promote"};
        std::sort(n.begin(), n.end());
        return n;
    }();
    return names;
}

Response handle(const Request& request, model::Model& model, Context& ctx) {
    Response r;
    r.id = request.id;
    try {
        Handler h(request, model, ctx);
        r.result = h.run();
    } catch (const CommandError& e) {
        return Response::failure(request.id, e.code, e.message);
    } catch (const std::exception& e) {
        return Response::failure(request.id, code::Internal,
                                 std::string("internal error: ") + e.what());
    }
    return r;
}

} // namespace pcloud::cped
