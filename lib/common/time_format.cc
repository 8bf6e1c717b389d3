#include "common/time_format.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace pcloud {

std::string formatRfc3339(Millis epochMs) {
    std::time_t secs = static_cast<std::time_t>(epochMs / 1000);
    int ms = static_cast<int>(epochMs % 1000);
    if (ms < 0) {
        ms += 1000;
        --secs;
    }
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return buf;
}

Result<Millis> parseRfc3339(std::string_view text) {
    std::tm tm{};
    int ms = 0;
    std::string s(text);
    int y, mo, d, h, mi, sec;
    int consumed = 0;
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
                    &consumed) != 6)
        return makeError("not an RFC 3339 time (want 2026-11-21T22:40:01.123Z): '" + s + "'");
    std::string_view rest = std::string_view(s).substr(consumed);
    if (!rest.empty() && rest[0] == '.') {
        rest.remove_prefix(1);
        int digits = 0;
        while (!rest.empty() && rest[0] >= '0' && rest[0] <= '9') {
            if (digits < 3)
                ms = ms * 10 + (rest[0] - '0');
            ++digits;
            rest.remove_prefix(1);
        }
        for (; digits < 3; ++digits)
            ms *= 10;
    }
    if (rest != "Z" && rest != "z" && rest != "+00:00")
        return makeError("only UTC times (ending in Z) are accepted: '" + s + "'");
    if (y < 0 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || sec < 0 || sec > 60)
        return makeError("a field is out of range in '" + s +
                         "' (want year 0000-9999, month 01-12, day 01-31, hour 00-23, minute "
                         "00-59, second 00-60)");
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return static_cast<Millis>(timegm(&tm)) * 1000 + ms;
}

Result<Millis> parseDuration(std::string_view text) {
    if (text == "INFINITY" || text == "infinity" || text == "inf")
        return kInfinite;
    Millis n = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || p == text.data() || n < 0)
        return makeError("not a duration (want e.g. 500ms, 30s, 5m, 2h or INFINITY): '" +
                         std::string(text) + "'");
    std::string_view unit(p, text.data() + text.size() - p);
    Millis mult;
    if (unit.empty() || unit == "s")
        mult = 1000;
    else if (unit == "ms")
        mult = 1;
    else if (unit == "m" || unit == "min")
        mult = 60'000;
    else if (unit == "h")
        mult = 3'600'000;
    else if (unit == "d")
        mult = 86'400'000;
    else
        return makeError("unknown duration unit '" + std::string(unit) + "' in '" +
                         std::string(text) + "' (use ms, s, m, h or d)");
    // Bounded so that n * mult, and a clock reading plus the duration, cannot overflow
    // (found by fuzzing: "3644444444444444440" seconds overflowed the multiplication).
    if (n > kMaxDurationMs / mult)
        return makeError("duration '" + std::string(text) +
                         "' is longer than 100 years; use INFINITY for no limit");
    return n * mult;
}

std::string formatDuration(Millis ms) {
    if (ms == kInfinite)
        return "INFINITY";
    if (ms % 86'400'000 == 0 && ms != 0)
        return std::to_string(ms / 86'400'000) + "d";
    if (ms % 3'600'000 == 0 && ms != 0)
        return std::to_string(ms / 3'600'000) + "h";
    if (ms % 60'000 == 0 && ms != 0)
        return std::to_string(ms / 60'000) + "m";
    if (ms % 1000 == 0 && ms != 0)
        return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

} // namespace pcloud
