#include "proto/agent_messages.h"

#include "common/time_format.h"

namespace pcloud::proto {
namespace {

using nlohmann::json;

json base(const char* type) {
    json j = json::object();
    j["v"] = kVersion;
    j["type"] = type;
    return j;
}

std::string dump(const json& j) {
    // Replace invalid UTF-8 (a unit name from a garbage command) instead of throwing.
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Field readers: they return false (and say why) instead of throwing on a wrong type.
bool getString(const json& j, const char* key, std::string& out, std::string& why,
               bool required = true) {
    auto it = j.find(key);
    if (it == j.end()) {
        if (required)
            why = std::string("missing field '") + key + "'";
        return !required;
    }
    if (!it->is_string()) {
        why = std::string("field '") + key + "' must be a string";
        return false;
    }
    out = it->get<std::string>();
    return true;
}

template <typename Int>
bool getInt(const json& j, const char* key, Int& out, std::string& why, bool required = true) {
    auto it = j.find(key);
    if (it == j.end()) {
        if (required)
            why = std::string("missing field '") + key + "'";
        return !required;
    }
    if (!it->is_number_integer()) {
        why = std::string("field '") + key + "' must be an integer";
        return false;
    }
    out = it->get<Int>();
    return true;
}

bool getTime(const json& j, const char* key, Millis& out, std::string& why, bool required = true) {
    std::string text;
    if (!getString(j, key, text, why, required))
        return false;
    if (text.empty() && !required)
        return true;
    auto t = parseRfc3339(text);
    if (!t) {
        why = std::string("field '") + key + "' is not an RFC 3339 time: " + t.error().message;
        return false;
    }
    out = *t;
    return true;
}

bool validUnitName(const std::string& s) {
    if (s.empty() || s.size() > 256)
        return false;
    for (unsigned char c : s)
        if (c <= ' ' || c == '/' || c == 0x7f)
            return false;
    return true;
}

} // namespace

const char* toString(CommandType t) {
    switch (t) {
    case CommandType::Start:
        return "start";
    case CommandType::Stop:
        return "stop";
    case CommandType::Restart:
        return "restart";
    case CommandType::Status:
        return "status";
    case CommandType::Watch:
        return "watch";
    case CommandType::Probe:
        return "probe";
    case CommandType::Ping:
        return "ping";
    }
    return "?";
}

json probeToJson(const model::Probe& p) {
    json j = {
        {"kind", model::toString(p.kind)}, {"host", p.host},          {"port", p.port},
        {"interval_ms", p.interval},       {"timeout_ms", p.timeout}, {"threshold", p.threshold}};
    if (p.kind == model::ProbeKind::Http) {
        j["path"] = p.path;
        j["expect"] = p.expect_status;
    }
    return j;
}

Result<model::Probe> probeFromJson(const json& j) {
    if (!j.is_object())
        return makeError("probe must be an object");
    model::Probe p;
    std::string why, kind;
    if (!getString(j, "kind", kind, why))
        return makeError("probe: " + why);
    if (!model::parseProbeKind(kind, p.kind))
        return makeError("probe: kind must be 'http' or 'tcp', not '" + kind + "'");
    if (!getString(j, "host", p.host, why, false) || !getInt(j, "port", p.port, why) ||
        !getString(j, "path", p.path, why, false) ||
        !getInt(j, "expect", p.expect_status, why, false) ||
        !getInt(j, "interval_ms", p.interval, why, false) ||
        !getInt(j, "timeout_ms", p.timeout, why, false) ||
        !getInt(j, "threshold", p.threshold, why, false))
        return makeError("probe: " + why);
    if (p.port <= 0 || p.port > 65535)
        return makeError("probe: port out of range");
    if (p.interval < 10 || p.timeout < 1 || p.threshold < 1)
        return makeError("probe: interval_ms >= 10, timeout_ms >= 1 and threshold >= 1 needed");
    if (p.path.empty() || p.path[0] != '/')
        return makeError("probe: path must start with '/'");
    return p;
}

json unitStateToJson(const UnitState& s) {
    json j = {{"unit", s.unit},
              {"load_state", s.load_state},
              {"active_state", s.active_state},
              {"sub_state", s.sub_state},
              {"result", s.result},
              {"main_pid", s.main_pid},
              {"exit_code", s.exit_code},
              {"changed_at", formatRfc3339(s.changed_at)}};
    if (s.ready)
        j["ready"] = *s.ready;
    return j;
}

Result<UnitState> unitStateFromJson(const json& j) {
    if (!j.is_object())
        return makeError("unit state must be an object");
    UnitState s;
    std::string why;
    if (!getString(j, "unit", s.unit, why) ||
        !getString(j, "load_state", s.load_state, why, false) ||
        !getString(j, "active_state", s.active_state, why) ||
        !getString(j, "sub_state", s.sub_state, why, false) ||
        !getString(j, "result", s.result, why, false) ||
        !getInt(j, "main_pid", s.main_pid, why, false) ||
        !getInt(j, "exit_code", s.exit_code, why, false) ||
        !getTime(j, "changed_at", s.changed_at, why, false))
        return makeError(why);
    if (auto it = j.find("ready"); it != j.end()) {
        if (!it->is_boolean())
            return makeError("field 'ready' must be a boolean");
        s.ready = it->get<bool>();
    }
    return s;
}

std::string encodeHeartbeat(const Heartbeat& h) {
    json j = base("heartbeat");
    j["seq"] = h.seq;
    j["boot_id"] = h.boot_id;
    j["uptime"] = h.uptime;
    j["sent_at"] = formatRfc3339(h.sent_at);
    return dump(j);
}

std::string encodeService(const UnitState& s) {
    json j = base("service");
    j.update(unitStateToJson(s));
    return dump(j);
}

std::string encodeHello(const Hello& h) {
    json j = base("hello");
    j["assembly"] = h.assembly;
    j["boot_id"] = h.boot_id;
    j["backend"] = h.backend;
    j["agent_version"] = h.agent_version;
    j["sent_at"] = formatRfc3339(h.sent_at);
    json units = json::array();
    for (const auto& u : h.units)
        units.push_back(unitStateToJson(u));
    j["units"] = std::move(units);
    return dump(j);
}

std::string encodeReply(const Reply& r) {
    json j = base("reply");
    j["id"] = r.id;
    j["ok"] = r.ok;
    if (r.error)
        j["error"] = {{"code", r.error->code}, {"message", r.error->message}};
    if (!r.result.is_null())
        j["result"] = r.result;
    return dump(j);
}

std::string encodeCommand(const Command& c) {
    json j = base(toString(c.type));
    j["id"] = c.id;
    j["deadline"] = c.deadline;
    switch (c.type) {
    case CommandType::Start:
    case CommandType::Stop:
    case CommandType::Restart:
        j["unit"] = c.unit;
        break;
    case CommandType::Status:
        if (!c.unit.empty())
            j["unit"] = c.unit;
        break;
    case CommandType::Watch: {
        j["units"] = c.units;
        if (!c.commands.empty())
            j["commands"] = c.commands;
        if (!c.probes.empty()) {
            json p = json::object();
            for (const auto& [unit, probe] : c.probes)
                p[unit] = probeToJson(probe);
            j["probes"] = std::move(p);
        }
        if (c.heartbeat_interval)
            j["heartbeat_ms"] = *c.heartbeat_interval;
        break;
    }
    case CommandType::Probe:
        j["unit"] = c.unit;
        j["probe"] = c.probe ? probeToJson(*c.probe) : json(nullptr);
        break;
    case CommandType::Ping:
        break;
    }
    return dump(j);
}

CommandOrFailure decodeCommand(std::string_view body, std::size_t maxSize, Millis nowMs) {
    if (body.size() > maxSize)
        return DecodeFailure{"", kErrTooLarge,
                             "message of " + std::to_string(body.size()) +
                                 " bytes is larger than the limit of " + std::to_string(maxSize)};
    json j = json::parse(body.begin(), body.end(), nullptr, false);
    if (j.is_discarded())
        return DecodeFailure{"", kErrMalformed, "body is not valid JSON"};
    if (!j.is_object())
        return DecodeFailure{"", kErrMalformed, "body is not a JSON object"};

    Command c;
    std::string why;
    // The id first, so that every later failure can be correlated.
    if (auto it = j.find("id"); it != j.end() && it->is_string())
        c.id = it->get<std::string>();
    auto fail = [&](const char* code, std::string message) -> CommandOrFailure {
        return DecodeFailure{c.id, code, std::move(message)};
    };
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_integer())
        return fail(kErrMalformed, "missing protocol version field 'v'");
    if (v->get<std::int64_t>() != kVersion)
        return fail(kErrVersion, "protocol version " + v->dump() + " is not supported (want 1)");
    std::string type;
    if (!getString(j, "type", type, why))
        return fail(kErrMalformed, why);
    if (type == "start")
        c.type = CommandType::Start;
    else if (type == "stop")
        c.type = CommandType::Stop;
    else if (type == "restart")
        c.type = CommandType::Restart;
    else if (type == "status")
        c.type = CommandType::Status;
    else if (type == "watch")
        c.type = CommandType::Watch;
    else if (type == "probe")
        c.type = CommandType::Probe;
    else if (type == "ping")
        c.type = CommandType::Ping;
    else
        return fail(kErrUnknownType, "unknown command type '" + type + "'");
    if (c.id.empty())
        return fail(kErrBadField, "missing or empty string field 'id'");

    if (auto d = j.find("deadline"); d != j.end()) {
        if (d->is_number_integer()) {
            c.deadline = d->get<Millis>();
        } else if (d->is_string()) {
            auto t = parseRfc3339(d->get<std::string>());
            if (!t)
                return fail(kErrBadField, "field 'deadline': " + t.error().message);
            c.deadline = *t - nowMs;
        } else {
            return fail(kErrBadField, "field 'deadline' must be milliseconds or an RFC 3339 time");
        }
        if (c.deadline <= 0)
            return fail(kErrTimeout, "the deadline has already passed");
    }

    auto needUnit = [&](bool required) -> bool {
        if (!getString(j, "unit", c.unit, why, required))
            return false;
        if ((required || !c.unit.empty()) && !validUnitName(c.unit)) {
            why = "field 'unit' is not a valid unit name";
            return false;
        }
        return true;
    };
    switch (c.type) {
    case CommandType::Start:
    case CommandType::Stop:
    case CommandType::Restart:
        if (!needUnit(true))
            return fail(kErrBadField, why);
        break;
    case CommandType::Status:
        if (!needUnit(false))
            return fail(kErrBadField, why);
        break;
    case CommandType::Watch: {
        auto u = j.find("units");
        if (u == j.end() || !u->is_array())
            return fail(kErrBadField, "field 'units' must be an array of unit names");
        for (const auto& e : *u) {
            if (!e.is_string() || !validUnitName(e.get<std::string>()))
                return fail(kErrBadField, "field 'units' holds a value that is not a unit name");
            c.units.push_back(e.get<std::string>());
        }
        if (auto cm = j.find("commands"); cm != j.end()) {
            if (!cm->is_object())
                return fail(kErrBadField, "field 'commands' must be an object");
            for (auto it = cm->begin(); it != cm->end(); ++it) {
                if (!it.value().is_string() || it.value().get<std::string>().empty())
                    return fail(kErrBadField, "commands." + it.key() + " must be a command line");
                c.commands[it.key()] = it.value().get<std::string>();
            }
        }
        if (auto pr = j.find("probes"); pr != j.end()) {
            if (!pr->is_object())
                return fail(kErrBadField, "field 'probes' must be an object");
            for (auto it = pr->begin(); it != pr->end(); ++it) {
                auto p = probeFromJson(it.value());
                if (!p)
                    return fail(kErrBadField, "probes." + it.key() + ": " + p.error().message);
                c.probes[it.key()] = *p;
            }
        }
        if (auto hb = j.find("heartbeat_ms"); hb != j.end()) {
            if (!hb->is_number_integer() || hb->get<std::int64_t>() < kMinHeartbeatMs ||
                hb->get<std::int64_t>() > kMaxHeartbeatMs)
                return fail(kErrBadField, "field 'heartbeat_ms' must be an integer from " +
                                              std::to_string(kMinHeartbeatMs) + " to " +
                                              std::to_string(kMaxHeartbeatMs));
            c.heartbeat_interval = hb->get<Millis>();
        }
        break;
    }
    case CommandType::Probe: {
        if (!needUnit(true))
            return fail(kErrBadField, why);
        auto p = j.find("probe");
        if (p != j.end() && !p->is_null()) {
            auto probe = probeFromJson(*p);
            if (!probe)
                return fail(kErrBadField, probe.error().message);
            c.probe = *probe;
        }
        break;
    }
    case CommandType::Ping:
        break;
    }
    return c;
}

Result<Report> decodeReport(std::string_view body) {
    json j = json::parse(body.begin(), body.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("report is not a JSON object");
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_integer() || v->get<std::int64_t>() != kVersion)
        return makeError("report has no supported protocol version 'v'");
    Report r;
    std::string why;
    if (!getString(j, "type", r.type, why))
        return makeError(why);
    if (r.type == "heartbeat") {
        Heartbeat h;
        if (!getInt(j, "seq", h.seq, why) || !getString(j, "boot_id", h.boot_id, why) ||
            !getInt(j, "uptime", h.uptime, why) || !getTime(j, "sent_at", h.sent_at, why))
            return makeError("heartbeat: " + why);
        r.body = h;
    } else if (r.type == "service") {
        auto s = unitStateFromJson(j);
        if (!s)
            return makeError("service: " + s.error().message);
        r.body = *s;
    } else if (r.type == "hello") {
        Hello h;
        if (!getString(j, "assembly", h.assembly, why) ||
            !getString(j, "boot_id", h.boot_id, why, false) ||
            !getString(j, "backend", h.backend, why, false) ||
            !getString(j, "agent_version", h.agent_version, why, false) ||
            !getTime(j, "sent_at", h.sent_at, why, false))
            return makeError("hello: " + why);
        auto u = j.find("units");
        if (u == j.end() || !u->is_array())
            return makeError("hello: field 'units' must be an array");
        for (const auto& e : *u) {
            auto s = unitStateFromJson(e);
            if (!s)
                return makeError("hello: " + s.error().message);
            h.units.push_back(*s);
        }
        r.body = h;
    } else if (r.type == "reply") {
        Reply rep;
        if (!getString(j, "id", rep.id, why))
            return makeError("reply: " + why);
        auto ok = j.find("ok");
        if (ok == j.end() || !ok->is_boolean())
            return makeError("reply: field 'ok' must be a boolean");
        rep.ok = ok->get<bool>();
        if (auto e = j.find("error"); e != j.end() && e->is_object()) {
            ErrorInfo info;
            if (!getString(*e, "code", info.code, why) ||
                !getString(*e, "message", info.message, why))
                return makeError("reply: error: " + why);
            rep.error = info;
        }
        if (auto res = j.find("result"); res != j.end())
            rep.result = *res;
        r.body = rep;
    } else {
        return makeError("unknown report type '" + r.type + "'");
    }
    return r;
}

} // namespace pcloud::proto
