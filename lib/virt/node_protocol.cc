#include "virt/node_protocol.h"

#include <nlohmann/json.hpp>

#include <array>
#include <utility>

namespace pcloud::virt::node {

using nlohmann::json;

namespace {

constexpr int kVersion = 1;
constexpr std::size_t kMaxXmlBytes = 256 * 1024;
constexpr std::size_t kMaxNameBytes = 256;

constexpr std::array<std::pair<Op, const char*>, 11> kOps{{
    {Op::Lookup, "lookup"},
    {Op::DefineAndStart, "define-and-start"},
    {Op::CreateTransient, "create-transient"},
    {Op::Start, "start"},
    {Op::Destroy, "destroy"},
    {Op::Shutdown, "shutdown"},
    {Op::Undefine, "undefine"},
    {Op::QemuPid, "qemu-pid"},
    {Op::WatchPid, "watch-pid"},
    {Op::UnwatchPid, "unwatch-pid"},
    {Op::Facts, "facts"},
}};

constexpr std::array<std::pair<EventKind, const char*>, 5> kEventKinds{{
    {EventKind::Domain, "domain"},
    {EventKind::PidExit, "pid-exit"},
    {EventKind::InfraDown, "infra-down"},
    {EventKind::InfraUp, "infra-up"},
    {EventKind::Heartbeat, "heartbeat"},
}};

// Reads the fields of one JSON object, recording the first problem with the field's name.
class Reader {
public:
    Reader(const json& j, std::string what) : j_(j), what_(std::move(what)) {}
    std::string str(const char* key, bool required, std::size_t maxBytes = kMaxNameBytes) {
        auto it = j_.find(key);
        if (it == j_.end()) {
            if (required)
                fail(std::string("missing \"") + key + "\"");
            return {};
        }
        if (!it->is_string()) {
            fail(std::string("\"") + key + "\" must be a string");
            return {};
        }
        const auto& s = it->get_ref<const std::string&>();
        if (s.size() > maxBytes) {
            fail(std::string("\"") + key + "\" is longer than " + std::to_string(maxBytes) +
                 " bytes");
            return {};
        }
        for (unsigned char c : s)
            if (c < 0x20 && maxBytes == kMaxNameBytes) {
                fail(std::string("\"") + key + "\" holds a control character");
                return {};
            }
        return s;
    }
    std::int64_t integer(const char* key, bool required, std::int64_t min = 0) {
        auto it = j_.find(key);
        if (it == j_.end()) {
            if (required)
                fail(std::string("missing \"") + key + "\"");
            return 0;
        }
        if (!it->is_number_integer() || it->get<std::int64_t>() < min) {
            fail(std::string("\"") + key + "\" must be an integer >= " + std::to_string(min));
            return 0;
        }
        return it->get<std::int64_t>();
    }
    bool boolean(const char* key, bool fallback) {
        auto it = j_.find(key);
        if (it == j_.end())
            return fallback;
        if (!it->is_boolean()) {
            fail(std::string("\"") + key + "\" must be true or false");
            return fallback;
        }
        return it->get<bool>();
    }
    void fail(std::string problem) {
        if (error_.empty())
            error_ = what_ + ": " + std::move(problem);
    }
    bool ok() const { return error_.empty(); }
    Error error() const { return makeError(error_); }

private:
    const json& j_;
    std::string what_;
    std::string error_;
};

Result<json> parseObject(const std::string& body, const char* type, const std::string& what) {
    auto j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError(what + ": not a JSON object");
    if (j.value("v", 0) != kVersion)
        return makeError(what + ": unsupported version (\"v\" must be 1)");
    if (j.value("type", "") != type)
        return makeError(what + ": \"type\" must be \"" + type + "\"");
    return j;
}

json domainJson(const DomainInfo& d) {
    return {{"name", d.name},     {"uuid", d.uuid}, {"state", toString(d.state)},
            {"reason", d.reason}, {"id", d.id},     {"persistent", d.persistent}};
}

std::optional<DomainInfo> readDomain(const json& j, Reader& parent) {
    if (!j.is_object()) {
        parent.fail("\"domain\" must be an object");
        return std::nullopt;
    }
    Reader r(j, "domain");
    DomainInfo d;
    d.name = r.str("name", true);
    d.uuid = r.str("uuid", false);
    auto state = parseDomainState(r.str("state", true));
    d.reason = r.str("reason", false);
    d.id = static_cast<int>(r.integer("id", false, -1));
    d.persistent = r.boolean("persistent", false);
    if (!state)
        r.fail("unknown \"state\"");
    if (!r.ok()) {
        parent.fail(r.error().message);
        return std::nullopt;
    }
    d.state = *state;
    return d;
}

json factsJson(const HostFacts& f) {
    return {{"cpus", f.cpus},
            {"memory_mib", f.memory_mib},
            {"memory_available_mib", f.memory_available_mib},
            {"running", f.running},
            {"libvirt_uri", f.libvirt_uri},
            {"libvirt_ok", f.libvirt_ok}};
}

std::optional<HostFacts> readFacts(const json& j, Reader& parent) {
    if (!j.is_object()) {
        parent.fail("\"facts\" must be an object");
        return std::nullopt;
    }
    Reader r(j, "facts");
    HostFacts f;
    f.cpus = static_cast<int>(r.integer("cpus", false));
    f.memory_mib = r.integer("memory_mib", false);
    f.memory_available_mib = r.integer("memory_available_mib", false);
    f.libvirt_uri = r.str("libvirt_uri", false);
    f.libvirt_ok = r.boolean("libvirt_ok", true);
    if (auto it = j.find("running"); it != j.end()) {
        if (!it->is_array())
            r.fail("\"running\" must be a list of names");
        else
            for (const auto& n : *it) {
                if (!n.is_string() || n.get_ref<const std::string&>().size() > kMaxNameBytes) {
                    r.fail("\"running\" must be a list of names");
                    break;
                }
                f.running.push_back(n.get<std::string>());
            }
    }
    if (!r.ok()) {
        parent.fail(r.error().message);
        return std::nullopt;
    }
    return f;
}

bool needsDomain(Op op) {
    return op != Op::Facts && op != Op::DefineAndStart && op != Op::CreateTransient;
}

} // namespace

std::string requestAddress(const std::string& host) {
    return kRequestPrefix + host;
}
std::string eventsAddress(const std::string& host) {
    return kEventsPrefix + host;
}

const char* toString(Op op) {
    for (const auto& [o, name] : kOps)
        if (o == op)
            return name;
    return "unknown";
}

std::optional<Op> parseOp(const std::string& text) {
    for (const auto& [o, name] : kOps)
        if (text == name)
            return o;
    return std::nullopt;
}

const char* toString(EventKind kind) {
    for (const auto& [k, name] : kEventKinds)
        if (k == kind)
            return name;
    return "unknown";
}

std::optional<DomainState> parseDomainState(const std::string& text) {
    for (auto s : {DomainState::Missing, DomainState::Running, DomainState::Paused,
                   DomainState::ShuttingDown, DomainState::Shutoff, DomainState::Crashed,
                   DomainState::Unknown})
        if (text == toString(s))
            return s;
    return std::nullopt;
}

std::optional<DomainEventKind> parseDomainEventKind(const std::string& text) {
    for (auto k : {DomainEventKind::Defined, DomainEventKind::Undefined, DomainEventKind::Started,
                   DomainEventKind::Suspended, DomainEventKind::Resumed, DomainEventKind::Stopped,
                   DomainEventKind::Shutdown, DomainEventKind::PMSuspended,
                   DomainEventKind::Crashed, DomainEventKind::Reboot, DomainEventKind::Unknown})
        if (text == toString(k))
            return k;
    return std::nullopt;
}

std::string encode(const Request& q) {
    json j{{"v", kVersion},        {"type", "node-request"}, {"id", q.id},
           {"op", toString(q.op)}, {"sender", q.sender},     {"epoch", q.epoch}};
    if (!q.domain.empty())
        j["domain"] = q.domain;
    if (!q.xml.empty())
        j["xml"] = q.xml;
    if (q.op == Op::WatchPid)
        j["pid"] = q.pid;
    return j.dump();
}

Result<Request> decodeRequest(const std::string& body) {
    auto j = parseObject(body, "node-request", "node request");
    if (!j)
        return j.error();
    Reader r(*j, "node request");
    Request q;
    q.id = r.str("id", true);
    std::string op = r.str("op", true);
    q.sender = r.str("sender", true);
    q.epoch = static_cast<std::uint64_t>(r.integer("epoch", true));
    if (!r.ok())
        return r.error();
    auto parsed = parseOp(op);
    if (!parsed)
        return makeError("node request: unknown \"op\" \"" + op + "\"");
    q.op = *parsed;
    q.domain = r.str("domain", needsDomain(q.op));
    if (q.op == Op::DefineAndStart || q.op == Op::CreateTransient) {
        q.xml = r.str("xml", true, kMaxXmlBytes);
    }
    if (q.op == Op::WatchPid)
        q.pid = r.integer("pid", true, 1);
    if (!r.ok())
        return r.error();
    if (needsDomain(q.op) && q.domain.empty())
        return makeError("node request: \"domain\" must not be empty");
    return q;
}

std::string encode(const Reply& p) {
    json j{{"v", kVersion}, {"type", "node-reply"}, {"id", p.id}, {"ok", p.ok}, {"epoch", p.epoch}};
    if (!p.ok)
        j["error"] = {{"code", p.code}, {"message", p.message}};
    if (p.domain)
        j["domain"] = domainJson(*p.domain);
    if (p.pid)
        j["pid"] = *p.pid;
    if (p.facts)
        j["facts"] = factsJson(*p.facts);
    return j.dump();
}

Result<Reply> decodeReply(const std::string& body) {
    auto j = parseObject(body, "node-reply", "node reply");
    if (!j)
        return j.error();
    Reader r(*j, "node reply");
    Reply p;
    p.id = r.str("id", false);
    p.ok = r.boolean("ok", false);
    p.epoch = static_cast<std::uint64_t>(r.integer("epoch", false));
    if (!p.ok) {
        auto e = j->find("error");
        if (e == j->end() || !e->is_object())
            return makeError("node reply: an error reply needs an \"error\" object");
        Reader er(*e, "node reply error");
        p.code = er.str("code", true);
        p.message = er.str("message", false, 4096);
        if (!er.ok())
            return er.error();
    }
    if (auto d = j->find("domain"); d != j->end())
        p.domain = readDomain(*d, r);
    if (j->contains("pid"))
        p.pid = r.integer("pid", true);
    if (auto f = j->find("facts"); f != j->end())
        p.facts = readFacts(*f, r);
    if (!r.ok())
        return r.error();
    return p;
}

Error replyError(const Reply& reply, const std::string& host) {
    return makeError("node " + host + " refused (" + reply.code + "): " + reply.message);
}

std::string encode(const Event& e) {
    json j{{"v", kVersion}, {"type", "node-event"}, {"node", e.node},
           {"seq", e.seq},  {"boot", e.boot},       {"kind", toString(e.kind)}};
    switch (e.kind) {
    case EventKind::Domain:
        j["domain"] = {{"name", e.domain.domain},
                       {"uuid", e.domain.uuid},
                       {"event", toString(e.domain.kind)},
                       {"detail", e.domain.detail}};
        break;
    case EventKind::PidExit:
        j["key"] = e.key;
        j["pid"] = e.pid;
        if (e.signal)
            j["signal"] = e.signal;
        break;
    case EventKind::InfraDown:
        j["reason"] = e.reason;
        break;
    case EventKind::InfraUp:
        break;
    case EventKind::Heartbeat:
        j["facts"] = factsJson(e.facts);
        j["interval_ms"] = e.interval_ms;
        break;
    }
    return j.dump();
}

Result<Event> decodeEvent(const std::string& body) {
    auto j = parseObject(body, "node-event", "node event");
    if (!j)
        return j.error();
    Reader r(*j, "node event");
    Event e;
    e.node = r.str("node", true);
    e.seq = static_cast<std::uint64_t>(r.integer("seq", true));
    e.boot = r.str("boot", true);
    std::string kind = r.str("kind", true);
    if (!r.ok())
        return r.error();
    bool known = false;
    for (const auto& [k, name] : kEventKinds)
        if (kind == name) {
            e.kind = k;
            known = true;
        }
    if (!known)
        return makeError("node event: unknown \"kind\" \"" + kind + "\"");
    switch (e.kind) {
    case EventKind::Domain: {
        auto d = j->find("domain");
        if (d == j->end() || !d->is_object())
            return makeError("node event: a domain event needs a \"domain\" object");
        Reader dr(*d, "node event domain");
        e.domain.domain = dr.str("name", true);
        e.domain.uuid = dr.str("uuid", false);
        auto k = parseDomainEventKind(dr.str("event", true));
        e.domain.detail = dr.str("detail", false);
        if (!dr.ok())
            return dr.error();
        if (!k)
            return makeError("node event domain: unknown \"event\"");
        e.domain.kind = *k;
        break;
    }
    case EventKind::PidExit:
        e.key = r.str("key", true);
        e.pid = r.integer("pid", true);
        if (std::int64_t sig = r.integer("signal", false); sig <= 64)
            e.signal = static_cast<int>(sig);
        else
            return makeError("node event pid-exit: \"signal\" must be 0-64");
        break;
    case EventKind::InfraDown:
        e.reason = r.str("reason", false, 4096);
        break;
    case EventKind::InfraUp:
        break;
    case EventKind::Heartbeat:
        if (auto f = j->find("facts"); f != j->end()) {
            if (auto facts = readFacts(*f, r))
                e.facts = *facts;
        }
        e.interval_ms = r.integer("interval_ms", true, 1);
        break;
    }
    if (!r.ok())
        return r.error();
    return e;
}

} // namespace pcloud::virt::node
