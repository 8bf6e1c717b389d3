#pragma once
// AgentCore: the agent's protocol logic between the backend and the AMQP link. It turns
// backend state changes into service reports (latest state per unit, nothing new = nothing
// sent), answers every command exactly once, sends hello on every (re)connect and heartbeats
// on a timer. The clock is injected and the link is just an outbox, so the whole thing is
// unit-tested without sockets or sleeps.

#include "agent/backend.h"
#include "agent/config.h"
#include "agent/event_loop.h"
#include "agent/probe.h"
#include "envelope/envelope.h"
#include "proto/agent_messages.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>

namespace pcloud::agent {

struct OutMessage {
    std::string body;
    std::string correlation_id; // the command id for replies
};

struct Identity {
    std::string assembly;
    std::string boot_id;
    std::string version = "0.1.0";
    // Heartbeat seq starts here: CLOCK_BOOTTIME ms at agent start. A restarted agent starts
    // above every seq the previous one sent, as heartbeats are at least 1 ms apart, so seq
    // stays monotonic within a boot without persisting anything.
    std::uint64_t seq_base = 0;
};

class AgentCore : public UnitBackend::Listener, public Source {
public:
    // Outbox bound: beyond it, queued reports collapse into one fresh hello.
    static constexpr std::size_t kOutboxLimit = 512;

    AgentCore(const AgentConfig& cfg, Identity id, UnitBackend& backend, ProbeRunner* probes,
              const Clock& clock, std::function<Millis()> uptimeMs);

    // The AMQP link reports its state and incoming bodies here.
    void onLinkUp();
    void onLinkDown();
    bool linkUp() const { return link_up_; }
    void onMessage(std::string_view body);
    // From now on every command must be a signed envelope that envelope::verify accepts
    // with `trust` (its `self` is "agent:<assembly>"); anything else is answered with an
    // error reply (the envelope error code) and changes nothing. Without it commands are
    // taken unauthenticated: plain, or a signed envelope unwrapped without checking.
    // `cache` is the replay cache to start with (kept across an agent restart), and
    // `onAccepted` is called with it after each command that passed verification (the agent
    // writes it to RUN_DIR/replay.json).
    void
    requireSignedCommands(envelope::Trust trust,
                          envelope::ReplayCache cache = envelope::ReplayCache(),
                          std::function<void(const envelope::ReplayCache&)> onAccepted = nullptr);
    bool commandsSigned() const { return trust_.has_value(); }
    const envelope::ReplayCache& replayCache() const { return replay_; }
    // The link waits for this before its first connection, so the first hello carries the
    // backend's real view: until the backend has settled, or at most kSettleWait; and until
    // the probe of every adopted unit that has one succeeded once, or at most
    // kAdoptedProbeWait (an adopted service has served all along: a hello saying "not
    // proven ready yet" would drain it from the balancer until the next report).
    static constexpr Millis kSettleWait = 2'000;
    static constexpr Millis kAdoptedProbeWait = 300;
    bool readyToConnect(Millis now) const;
    // When readyToConnect may next change without an event.
    Millis settleDeadline() const;
    std::deque<OutMessage>& outbox() { return outbox_; }

    // Probe verdict changes (wired to ProbeRunner's callback).
    void onReady(const std::string& unit, std::optional<bool> ready);

    // UnitBackend::Listener
    void onUnitState(const proto::UnitState& state) override;
    void onResync() override;

    // Source: heartbeat timer and command deadlines.
    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet& ps, Millis now) override;

    // The last known state of every watched unit (ready merged in).
    std::vector<proto::UnitState> snapshot() const;
    std::uint64_t heartbeatsSent() const { return heartbeats_; }
    // The configured period until a watch sets another (kept across reconnects).
    Millis heartbeatInterval() const { return heartbeat_interval_; }
    std::size_t pendingCommands() const { return pending_.size(); }

private:
    struct Pending {
        std::string id;
        std::string what; // "restart nginx.service", for logs
        Millis deadline = 0;
        bool done = false;
    };

    void reply(const std::string& id, bool ok, nlohmann::json result = nullptr,
               const char* code = nullptr, const std::string& message = {});
    void push(std::string body, std::string correlation = {});
    void queueHello();
    void queueService(const std::string& unit);
    void handle(proto::Command cmd);
    void startJob(JobKind kind, const proto::Command& cmd);
    bool isWatched(const std::string& unit) const;
    bool adoptedProbePending() const;

    const AgentConfig& cfg_;
    Identity id_;
    UnitBackend& backend_;
    ProbeRunner* probes_;
    const Clock& clock_;
    std::function<Millis()> uptime_ms_;

    Millis start_ = 0;
    bool link_up_ = false;
    std::deque<OutMessage> outbox_;
    std::map<std::string, proto::UnitState> states_;   // latest, ready merged in
    std::map<std::string, proto::UnitState> reported_; // last sent on this connection
    bool in_unit_update_ = false;
    Millis next_heartbeat_ = kNever;
    Millis heartbeat_interval_;
    std::uint64_t heartbeats_ = 0;
    std::list<std::shared_ptr<Pending>> pending_;
    std::optional<envelope::Trust> trust_;
    envelope::ReplayCache replay_;
    std::function<void(const envelope::ReplayCache&)> on_accepted_;
};

} // namespace pcloud::agent
