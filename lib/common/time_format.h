#pragma once
#include "common/clock.h"
#include "common/result.h"

#include <string>
#include <string_view>

namespace pcloud {

// "2026-11-21T22:40:01.123Z"
std::string formatRfc3339(Millis epochMs);
// Parses the form formatRfc3339 writes (and without the millis, or with a +00:00 offset).
// Fields out of range (month 13, hour 24, a year that is not four digits) are errors.
Result<Millis> parseRfc3339(std::string_view text);
// The times RFC 3339 can write (four-digit years): 0000-01-01T00:00:00.000Z through
// 9999-12-31T23:59:59.999Z. formatRfc3339 outside them writes text nothing parses.
constexpr Millis kMinRfc3339Ms = -62'167'219'200'000;
constexpr Millis kMaxRfc3339Ms = 253'402'300'799'999;

// Durations as operators write them: "500ms", "30s", "5m", "2h", "1d", a bare number of
// seconds ("30"), or "INFINITY" (returned as kInfinite).
constexpr Millis kInfinite = -1;
constexpr Millis kMaxDurationMs = 100LL * 366 * 86'400'000; // about 100 years
Result<Millis> parseDuration(std::string_view text);
std::string formatDuration(Millis ms);

} // namespace pcloud
