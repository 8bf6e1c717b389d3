#include "agent/process_state.h"

#include "common/fs.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <limits>

namespace pcloud::agent {

using nlohmann::json;

std::string encodeProcessState(const ProcessState& s) {
    json units = json::object();
    for (const auto& [unit, p] : s.units)
        units[unit] = {
            {"pid", p.pid}, {"pgid", p.pgid}, {"start_time", p.start_time}, {"command", p.command}};
    json j = {{"v", 1}, {"boot_id", s.boot_id}, {"units", units}};
    return j.dump() + "\n";
}

Result<ProcessState> decodeProcessState(std::string_view text, const std::string& file) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("not a JSON object", file);
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_integer() || v->get<long long>() != 1)
        return makeError("unsupported version (expected \"v\": 1)", file);
    ProcessState s;
    auto boot = j.find("boot_id");
    if (boot == j.end() || !boot->is_string())
        return makeError("\"boot_id\" must be a string", file);
    s.boot_id = boot->get<std::string>();
    auto units = j.find("units");
    if (units == j.end() || !units->is_object())
        return makeError("\"units\" must be an object", file);
    constexpr long long kMaxPid = std::numeric_limits<pid_t>::max();
    for (const auto& [unit, e] : units->items()) {
        auto where = "unit '" + unit + "': ";
        if (!e.is_object())
            return makeError(where + "expected an object", file);
        RecordedProcess p;
        for (const char* k : {"pid", "pgid"}) {
            auto it = e.find(k);
            if (it == e.end() || !it->is_number_integer() || it->get<long long>() <= 0 ||
                it->get<long long>() > kMaxPid)
                return makeError(where + "\"" + k + "\" must be a positive process id", file);
            (std::string_view(k) == "pid" ? p.pid : p.pgid) =
                static_cast<pid_t>(it->get<long long>());
        }
        auto st = e.find("start_time");
        if (st == e.end() || !st->is_number_unsigned())
            return makeError(where + "\"start_time\" must be a non-negative integer", file);
        p.start_time = st->get<std::uint64_t>();
        auto cmd = e.find("command");
        if (cmd == e.end() || !cmd->is_string() || cmd->get<std::string>().empty())
            return makeError(where + "\"command\" must be a non-empty string", file);
        p.command = cmd->get<std::string>();
        s.units[unit] = std::move(p);
    }
    return s;
}

Result<ProcStat> parseProcStat(std::string_view text) {
    auto close = text.rfind(')');
    if (close == std::string_view::npos)
        return makeError("no ')' after the command name");
    // Fields from 3 (state) on, space separated.
    std::vector<std::string_view> f;
    std::size_t i = close + 1;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\n'))
            ++i;
        std::size_t j = i;
        while (j < text.size() && text[j] != ' ' && text[j] != '\n')
            ++j;
        if (j > i)
            f.push_back(text.substr(i, j - i));
        i = j;
    }
    // f[0] is field 3 (state), f[2] field 5 (pgrp), f[19] field 22 (starttime).
    if (f.size() < 20 || f[0].size() != 1)
        return makeError("too few fields");
    ProcStat s;
    s.state = f[0][0];
    long long pg = 0;
    auto r1 = std::from_chars(f[2].data(), f[2].data() + f[2].size(), pg);
    auto r2 = std::from_chars(f[19].data(), f[19].data() + f[19].size(), s.start_time);
    if (r1.ec != std::errc() || r1.ptr != f[2].data() + f[2].size() || r2.ec != std::errc() ||
        r2.ptr != f[19].data() + f[19].size())
        return makeError("pgrp or starttime is not a number");
    s.pgid = static_cast<pid_t>(pg);
    return s;
}

std::optional<ProcStat> readProcStat(pid_t pid) {
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/stat");
    if (!text)
        return std::nullopt;
    auto s = parseProcStat(*text);
    if (!s)
        return std::nullopt;
    return *s;
}

std::optional<std::vector<std::string>> readCmdline(pid_t pid) {
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/cmdline");
    if (!text)
        return std::nullopt;
    std::vector<std::string> words;
    std::size_t b = 0;
    const std::string& t = *text;
    while (b < t.size()) {
        auto e = t.find('\0', b);
        if (e == std::string::npos)
            e = t.size();
        words.push_back(t.substr(b, e - b));
        b = e + 1;
    }
    return words;
}

} // namespace pcloud::agent
