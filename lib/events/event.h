#pragma once
// An event: one state change or decision, as cped journals and publishes it. Every daemon
// builds events; only cped assigns `seq` (it is the single writer of the journal).
//
// Wire form (one JSON object; a journal line is the same object on one line):
//   {"v":1,"type":"event","seq":42,"time":"2026-11-21T22:40:01.123Z","deployable":"web",
//    "assembly":"node01","service":"httpd","state":"failed","reason":"monitor failed",
//    "cause_id":"...","source":"dped-web-4242-1764000000000","source_seq":7}

#include "common/clock.h"
#include "common/result.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace pcloud::events {

struct Event {
    std::uint64_t seq = 0; // 0 = not assigned yet (a submission)
    Millis time = 0;       // wall-clock ms since the epoch
    std::string deployable;
    std::string assembly; // empty for deployable-level events
    std::optional<std::string> service;
    std::string state;    // e.g. "started", "failed", "stopped", "crashed"
    std::string reason;   // e.g. "monitor failed", "restarted"
    std::string cause_id; // links a recovery to the failure that caused it
    // Who submitted it and its number there: a dped instance numbers the events it submits,
    // so cped journals an event that dped resends (no reply came) only once. Empty for
    // cped's own events; omitted from the JSON then.
    std::string source;
    std::uint64_t source_seq = 0;
    bool operator==(const Event&) const = default;
};

nlohmann::json toJson(const Event& e);
// Accepts "time" as RFC 3339 text or as integer milliseconds. Requires deployable and state.
Result<Event> fromJson(const nlohmann::json& j);
// One journal line (without the newline) <-> event.
std::string toLine(const Event& e);
Result<Event> parseLine(std::string_view line);

// "2026-11-21T22:40:01.123Z dep01/node01/httpd failed: monitor failed"
std::string formatHuman(const Event& e);

} // namespace pcloud::events
