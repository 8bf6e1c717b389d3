#pragma once
#include "common/clock.h"
#include "common/result.h"

#include <string>
#include <string_view>

namespace pcloud {

// "2026-11-21T22:40:01.123Z"
std::string formatRfc3339(Millis epochMs);
// Parses the form formatRfc3339 writes (and without the millis, or with a +00:00 offset).
Result<Millis> parseRfc3339(std::string_view text);

// Durations as operators write them: "500ms", "30s", "5m", "2h", "1d", a bare number of
// seconds ("30"), or "INFINITY" (returned as kInfinite).
constexpr Millis kInfinite = -1;
Result<Millis> parseDuration(std::string_view text);
std::string formatDuration(Millis ms);

} // namespace pcloud
