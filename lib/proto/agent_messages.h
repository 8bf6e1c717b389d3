#pragma once
// The agent protocol (docs/protocol/agent.md): JSON bodies exchanged between pcloud-agent
// and its controller. Pure: encode to and decode from strings, no I/O, no clock. Decoders
// never throw; a bad body becomes a DecodeFailure that names what is wrong, so the agent can
// answer it with an error reply instead of crashing.

#include "common/clock.h"
#include "common/result.h"
#include "model/model.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pcloud::proto {

constexpr int kVersion = 1;

// Error codes carried in replies (error.code).
inline constexpr const char* kErrMalformed = "malformed"; // not JSON / not an object
inline constexpr const char* kErrVersion = "unsupported-version";
inline constexpr const char* kErrUnknownType = "unknown-type";
inline constexpr const char* kErrBadField = "bad-field";   // missing or mistyped field
inline constexpr const char* kErrTooLarge = "too-large";   // over --max-message-size
inline constexpr const char* kErrNotFound = "not-found";   // unit not known/not watched
inline constexpr const char* kErrJobFailed = "job-failed"; // the start/stop job failed
inline constexpr const char* kErrTimeout = "timeout";      // deadline passed first
inline constexpr const char* kErrBackend = "backend";      // D-Bus / fork failure
inline constexpr const char* kErrBusy = "busy";            // another job on that unit

// The observed state of one watched unit (systemd unit or process-backend resource).
// active_state is systemd's ActiveState (active, reloading, inactive, failed, activating,
// deactivating) or "not-found" when the unit does not exist (load_state says why).
struct UnitState {
    std::string unit;
    std::string load_state = "loaded"; // loaded | not-found | error | masked | ...
    std::string active_state = "inactive";
    std::string sub_state = "dead";
    std::string result = "success"; // systemd's Service.Result (success, signal, ...)
    std::int64_t main_pid = 0;
    int exit_code = 0;         // exit status, or 128+signal when killed
    Millis changed_at = 0;     // wall clock of the last change
    std::optional<bool> ready; // probe verdict; absent when there is no probe

    // Equal apart from changed_at: used to drop reports that would say nothing new.
    bool sameAs(const UnitState& o) const {
        return unit == o.unit && load_state == o.load_state && active_state == o.active_state &&
               sub_state == o.sub_state && result == o.result && main_pid == o.main_pid &&
               exit_code == o.exit_code && ready == o.ready;
    }
};

struct Heartbeat {
    std::uint64_t seq = 0; // strictly increasing within one boot of the guest
    std::string boot_id;
    Millis uptime = 0; // guest uptime (CLOCK_BOOTTIME), milliseconds
    Millis sent_at = 0;
};

struct Hello {
    std::string assembly;
    std::string boot_id;
    std::string backend; // systemd | process
    std::string agent_version;
    Millis sent_at = 0;
    std::vector<UnitState> units;
};

struct ErrorInfo {
    std::string code;
    std::string message;
};

struct Reply {
    std::string id;
    bool ok = true;
    std::optional<ErrorInfo> error;
    nlohmann::json result; // null when there is nothing to say
};

enum class CommandType { Start, Stop, Restart, Status, Watch, Probe, Ping };
const char* toString(CommandType t);

struct Command {
    CommandType type = CommandType::Ping;
    std::string id;
    Millis deadline = 30'000;       // budget in ms from receipt (see agent.md)
    std::string unit;               // start/stop/restart/probe; status: empty = all units
    std::vector<std::string> units; // watch
    std::map<std::string, std::string> commands; // watch, process backend only
    std::map<std::string, model::Probe> probes;  // watch: optional probe per unit
    std::optional<model::Probe> probe;           // probe: absent = remove the probe
    // watch: the heartbeat period the controller wants ("heartbeat_ms"), so its heartbeat
    // timeout and the agent's period come from one place, the deployable. Absent: keep.
    std::optional<Millis> heartbeat_interval;
};

// The heartbeat periods a watch may ask for (ms), inclusive.
inline constexpr Millis kMinHeartbeatMs = 100;
inline constexpr Millis kMaxHeartbeatMs = 600'000;

// Why a command body was rejected. id is filled when the body had a readable one, so the
// error reply can still be correlated.
struct DecodeFailure {
    std::string id;
    std::string code;
    std::string message;
};

using CommandOrFailure = std::variant<Command, DecodeFailure>;

// Decodes a controller -> agent body. Bodies larger than maxSize are refused unparsed.
// nowMs is only used to turn an absolute RFC 3339 deadline into a budget.
CommandOrFailure decodeCommand(std::string_view body, std::size_t maxSize, Millis nowMs);
std::string encodeCommand(const Command& c);

std::string encodeHeartbeat(const Heartbeat& h);
std::string encodeService(const UnitState& s);
std::string encodeHello(const Hello& h);
std::string encodeReply(const Reply& r);

nlohmann::json unitStateToJson(const UnitState& s);
Result<UnitState> unitStateFromJson(const nlohmann::json& j);
nlohmann::json probeToJson(const model::Probe& p);
Result<model::Probe> probeFromJson(const nlohmann::json& j);

// agent -> controller bodies, decoded (for controllers and tests).
struct Report {
    std::string type; // heartbeat | service | hello | reply
    std::variant<std::monostate, Heartbeat, UnitState, Hello, Reply> body;
};
Result<Report> decodeReport(std::string_view body);

} // namespace pcloud::proto
