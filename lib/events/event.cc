#include "events/event.h"

#include "common/time_format.h"

namespace pcloud::events {

nlohmann::json toJson(const Event& e) {
    nlohmann::json j = {{"v", 1},
                        {"type", "event"},
                        {"seq", e.seq},
                        {"time", formatRfc3339(e.time)},
                        {"deployable", e.deployable},
                        {"assembly", e.assembly}};
    if (e.service)
        j["service"] = *e.service;
    j["state"] = e.state;
    j["reason"] = e.reason;
    j["cause_id"] = e.cause_id;
    if (!e.source.empty()) {
        j["source"] = e.source;
        j["source_seq"] = e.source_seq;
    }
    return j;
}

namespace {

Result<std::string> optString(const nlohmann::json& j, const char* key, bool required) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        if (required)
            return makeError(std::string("event has no \"") + key + "\" field");
        return std::string();
    }
    if (!it->is_string())
        return makeError(std::string("event field \"") + key + "\" is not a string");
    return it->get<std::string>();
}

} // namespace

Result<Event> fromJson(const nlohmann::json& j) {
    if (!j.is_object())
        return makeError("event is not a JSON object");
    Event e;
    if (auto it = j.find("seq"); it != j.end() && !it->is_null()) {
        if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<long long>() >= 0))
            return makeError("event field \"seq\" is not a non-negative integer");
        e.seq = it->get<std::uint64_t>();
    }
    if (auto it = j.find("time"); it != j.end() && !it->is_null()) {
        if (it->is_string()) {
            auto t = parseRfc3339(it->get<std::string>());
            if (!t)
                return makeError("event field \"time\": " + t.error().message);
            e.time = *t;
        } else if (it->is_number_integer()) {
            // Only times the journal can write back as RFC 3339 and read again (found by
            // fuzzing: a huge integer time became a journal line open() rejected).
            if (it->is_number_unsigned() && it->get<std::uint64_t>() > kMaxRfc3339Ms)
                return makeError("event field \"time\" is out of range (want milliseconds "
                                 "from year 0000 to 9999)");
            e.time = it->get<Millis>();
            if (e.time < kMinRfc3339Ms || e.time > kMaxRfc3339Ms)
                return makeError("event field \"time\" is out of range (want milliseconds "
                                 "from year 0000 to 9999)");
        } else {
            return makeError("event field \"time\" is neither RFC 3339 text nor milliseconds");
        }
    }
    auto dep = optString(j, "deployable", true);
    if (!dep)
        return dep.error();
    e.deployable = *dep;
    auto st = optString(j, "state", true);
    if (!st)
        return st.error();
    e.state = *st;
    auto as = optString(j, "assembly", false);
    if (!as)
        return as.error();
    e.assembly = *as;
    auto re = optString(j, "reason", false);
    if (!re)
        return re.error();
    e.reason = *re;
    auto ca = optString(j, "cause_id", false);
    if (!ca)
        return ca.error();
    e.cause_id = *ca;
    auto so = optString(j, "source", false);
    if (!so)
        return so.error();
    e.source = *so;
    if (auto it = j.find("source_seq"); it != j.end() && !it->is_null()) {
        if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<long long>() >= 0))
            return makeError("event field \"source_seq\" is not a non-negative integer");
        e.source_seq = it->get<std::uint64_t>();
    }
    if (auto it = j.find("service"); it != j.end() && !it->is_null()) {
        if (!it->is_string())
            return makeError("event field \"service\" is not a string");
        if (!it->get<std::string>().empty())
            e.service = it->get<std::string>();
    }
    return e;
}

std::string toLine(const Event& e) {
    return toJson(e).dump();
}

Result<Event> parseLine(std::string_view line) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
        return makeError("not a JSON line");
    return fromJson(j);
}

std::string formatHuman(const Event& e) {
    std::string out = formatRfc3339(e.time) + " " + e.deployable;
    if (!e.assembly.empty())
        out += "/" + e.assembly;
    if (e.service)
        out += "/" + *e.service;
    out += " " + e.state;
    if (!e.reason.empty())
        out += ": " + e.reason;
    return out;
}

} // namespace pcloud::events
