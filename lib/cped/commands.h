#pragma once
// The command API (docs/protocol/commands.md) as a handler over the model:
//   Response handle(const Request&, Model&, Context&)
// Every mutation works on a copy of the model, validates it, saves it with
// store::saveModel, and only then replaces the caller's model: a rejected command or a
// failed save changes nothing in memory or on disk. Effects outside the model (starting a
// dped, asking it for status, pinging an agent, journaling an event) go through the
// Runtime interface, so tests drive the handler with a recording fake and cped with the
// real bus and supervisor.

#include "common/clock.h"
#include "common/host_config.h"
#include "common/result.h"
#include "cped/coordinator.h"
#include "cped/desired_state.h"
#include "envelope/envelope.h"
#include "events/event.h"
#include "events/journal.h"
#include "model/model.h"

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace pcloud::store {
class TemplateRegistry;
}

namespace pcloud::cped {

// Error codes of the command API.
namespace code {
inline constexpr const char* BadRequest = "bad-request"; // body is not a command
inline constexpr const char* UnknownCommand = "unknown-command";
inline constexpr const char* InvalidArgument = "invalid-argument";
inline constexpr const char* NotFound = "not-found";
inline constexpr const char* Exists = "exists";
inline constexpr const char* Conflict = "conflict";       // e.g. delete a started deployable
inline constexpr const char* Unavailable = "unavailable"; // a dped or agent did not answer
inline constexpr const char* Internal = "internal";       // e.g. the save failed
inline constexpr const char* NotLeader = "not-leader";    // cped --cluster: another node leads
} // namespace code

struct Request {
    std::string id;
    std::string command;
    nlohmann::json args = nlohmann::json::object();
};

struct Response {
    std::string id;
    bool ok = true;
    nlohmann::json result = nlohmann::json::object();
    std::string error_code;
    std::string error_message;

    nlohmann::json toJson() const;
    static Response failure(std::string id, std::string code, std::string message);
};

// {"v":1,"type":"command","id":"..","command":"..","args":{..}}. On failure the Response is
// the bad-request reply to send (with the id, when one could be read).
Result<Request> parseRequest(const std::string& body, Response* rejection);

// A request as cped received it on pcloud.cped, opened (docs/security.md "Signed commands"):
// a signed envelope for target envelope::kCommandApi ("cped:api") is verified against
// `trust` (chain to the bus CA, signature, mayCommand: operator:* only, time window,
// replay in `cache`) and its action must be the request's command; a plain request is
// accepted only when `requireSigned` is false (the embedded hub, whose attach authorization
// lets only operator:* send to pcloud.cped). Without `trust` (a plain bus: no CA) an envelope
// is only unwrapped, as a dped without a CA does. `fallbackId` (the message's correlation
// id) is the reply id when none can be read from the bytes.
struct OpenedCommand {
    Request request;
    std::string sender; // the verified signer; "" for a plain request or without `trust`
};
struct RefusedCommand {
    Response reply;     // the error reply to send: code envelope::toString(..) or bad-request
    std::string sender; // as claimed (unverified); "" when unreadable or plain
};
std::variant<OpenedCommand, RefusedCommand>
openCommand(const std::string& bytes, const envelope::Trust* trust, Millis now,
            envelope::ReplayCache& cache, bool requireSigned, const std::string& fallbackId);

// What the handler needs from the world outside the model.
class Runtime {
public:
    virtual ~Runtime() = default;
    // The deployable is now desired started: make sure its dped runs.
    virtual void startDeployable(const std::string& deployable) = 0;
    // Desired stopped: tell its dped to stop the deployable and wait for it to exit.
    // Returns a short description of what happened, or an error.
    virtual Result<nlohmann::json> stopDeployable(const std::string& deployable) = 0;
    // Sends {"type":"command","command":...} to the deployable's dped and returns its
    // "result" object; an Error when it does not answer in time or refuses.
    virtual Result<nlohmann::json> askDped(const std::string& deployable,
                                           const std::string& command,
                                           const nlohmann::json& args) = 0;
    // Supervision facts about the deployable's dped: {"running":bool,"pid":N,"restarts":N,...}
    virtual nlohmann::json dpedProcess(const std::string& deployable) = 0;
    struct PingResult {
        std::string assembly;
        bool ok = false;
        Millis rtt_ms = 0;
        std::string error;
    };
    // Round trip to each assembly's agent, in parallel, each bounded by `timeout`.
    virtual std::vector<PingResult> pingAgents(const std::vector<std::string>& assemblies,
                                               Millis timeout) = 0;
    // Journals and publishes one of cped's own events.
    virtual void emit(events::Event event) = 0;
    // The embedded hub's security counters for `status` ({"tls":bool,"refused_connections":N,
    // "denied_links":N,"queue_cap_refusals":N,"closed_for_denials":N,"forged_user_ids":N});
    // null without an embedded hub.
    virtual nlohmann::json busSecurity() { return nullptr; }
};

struct Context {
    std::string state_dir;
    const Clock* clock = nullptr;
    DesiredState* desired = nullptr;
    events::EventJournal* journal = nullptr;            // for "events"; null = unavailable
    const store::TemplateRegistry* templates = nullptr; // for resources; null = none
    Runtime* runtime = nullptr;
    // Persists the model; default (unset) is store::saveModel(state_dir, model).
    std::function<Status(const model::Model&)> save;
    Millis ping_timeout_ms = 2000;
    // What this host allows (balancer files, domain passthrough); the default is the safe
    // built-in one, as with no /etc/pcloud/pcloud.conf.
    hostconfig::HostConfig host;
    // Leadership and zone membership (cluster_status, cluster_add, cluster_remove); null =
    // a single node without a coordinator (tests).
    Coordinator* coordinator = nullptr;
};

Response handle(const Request& request, model::Model& model, Context& ctx);

// The command names handle() knows, sorted (for completion and `help`).
const std::vector<std::string>& commandNames();

} // namespace pcloud::cped
