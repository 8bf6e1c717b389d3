#include "agent/agent_core.h"

#include "common/log.h"

#include <algorithm>

namespace pcloud::agent {

using nlohmann::json;

AgentCore::AgentCore(const AgentConfig& cfg, Identity id, UnitBackend& backend, ProbeRunner* probes,
                     const Clock& clock, std::function<Millis()> uptimeMs)
    : cfg_(cfg), id_(std::move(id)), backend_(backend), probes_(probes), clock_(clock),
      uptime_ms_(std::move(uptimeMs)), start_(clock.monotonicMs()),
      heartbeat_interval_(cfg.heartbeat_interval) {}

void AgentCore::push(std::string body, std::string correlation) {
    if (!link_up_)
        return; // nothing is queued while disconnected: hello resends state
    if (outbox_.size() >= kOutboxLimit) {
        // The hub is not taking messages. Keep replies, collapse state into one hello.
        std::deque<OutMessage> keep;
        for (auto& m : outbox_)
            if (!m.correlation_id.empty())
                keep.push_back(std::move(m));
        outbox_ = std::move(keep);
        reported_.clear();
        PCLOUD_LOG(Warning, "Outbox full; collapsing queued reports into one hello",
                   {{"limit", std::to_string(kOutboxLimit)}});
        queueHello();
        if (outbox_.size() >= kOutboxLimit)
            outbox_.pop_front();
    }
    outbox_.push_back(OutMessage{std::move(body), std::move(correlation)});
}

void AgentCore::queueHello() {
    proto::Hello h;
    h.assembly = id_.assembly;
    h.boot_id = id_.boot_id;
    h.backend = backend_.name();
    h.agent_version = id_.version;
    h.sent_at = clock_.nowMs();
    h.units = snapshot();
    for (const auto& u : h.units)
        reported_[u.unit] = u;
    outbox_.push_back(OutMessage{proto::encodeHello(h), {}});
}

std::vector<proto::UnitState> AgentCore::snapshot() const {
    std::vector<proto::UnitState> out;
    for (const auto& unit : backend_.watched()) {
        auto it = states_.find(unit);
        if (it != states_.end()) {
            out.push_back(it->second);
        } else if (auto s = backend_.state(unit)) {
            out.push_back(*s);
        } else {
            proto::UnitState u;
            u.unit = unit;
            u.load_state = "unknown";
            u.active_state = "unknown";
            u.sub_state = "unknown";
            out.push_back(u);
        }
    }
    return out;
}

void AgentCore::onLinkUp() {
    link_up_ = true;
    outbox_.clear();
    reported_.clear();
    queueHello();
    next_heartbeat_ = clock_.monotonicMs(); // first heartbeat right after hello
    PCLOUD_LOG(Notice, "Connected to the hub; sent hello",
               {{"assembly", id_.assembly}, {"units", std::to_string(backend_.watched().size())}});
}

void AgentCore::onLinkDown() {
    if (link_up_)
        PCLOUD_LOG(Notice, "Disconnected from the hub", {{"assembly", id_.assembly}});
    link_up_ = false;
    outbox_.clear();
    reported_.clear();
    next_heartbeat_ = kNever;
}

void AgentCore::queueService(const std::string& unit) {
    auto it = states_.find(unit);
    if (it == states_.end() || !link_up_)
        return;
    auto rep = reported_.find(unit);
    if (rep != reported_.end() && rep->second.sameAs(it->second))
        return;
    reported_[unit] = it->second;
    push(proto::encodeService(it->second));
}

void AgentCore::onUnitState(const proto::UnitState& incoming) {
    if (!isWatched(incoming.unit))
        return;
    proto::UnitState s = incoming;
    auto old = states_.find(s.unit);
    if (old != states_.end() && old->second.active_state != s.active_state)
        PCLOUD_LOG(Notice, "Unit changed state",
                   {{"unit", s.unit},
                    {"from", old->second.active_state},
                    {"to", s.active_state},
                    {"sub", s.sub_state},
                    {"result", s.result}});
    if (probes_) {
        in_unit_update_ = true;
        probes_->setActive(s.unit, s.active_state == "active");
        in_unit_update_ = false;
        s.ready = probes_->ready(s.unit);
    }
    states_[s.unit] = s;
    queueService(s.unit);
}

void AgentCore::onReady(const std::string& unit, std::optional<bool> ready) {
    if (in_unit_update_)
        return; // onUnitState merges it itself
    auto it = states_.find(unit);
    if (it == states_.end())
        return;
    if (it->second.ready == ready)
        return;
    it->second.ready = ready;
    it->second.changed_at = clock_.nowMs();
    queueService(unit);
}

void AgentCore::onResync() {
    // The backend re-read everything (e.g. after a D-Bus reconnect): send the full state.
    for (const auto& s : snapshot())
        states_[s.unit] = s;
    if (!link_up_)
        return;
    reported_.clear();
    queueHello();
}

bool AgentCore::adoptedProbePending() const {
    if (!probes_)
        return false;
    for (const auto& unit : backend_.watched()) {
        if (!backend_.adopted(unit) || !probes_->hasProbe(unit))
            continue;
        auto it = states_.find(unit);
        if (it == states_.end() || it->second.ready != true) // false = not proven yet
            return true;
    }
    return false;
}

bool AgentCore::readyToConnect(Millis now) const {
    if (!backend_.settled() && now < start_ + kSettleWait)
        return false;
    return now >= start_ + kAdoptedProbeWait || !adoptedProbePending();
}

Millis AgentCore::settleDeadline() const {
    Millis adoptedEnd = start_ + kAdoptedProbeWait;
    if (clock_.monotonicMs() < adoptedEnd && adoptedProbePending())
        return adoptedEnd;
    return start_ + kSettleWait;
}

bool AgentCore::isWatched(const std::string& unit) const {
    for (const auto& u : backend_.watched())
        if (u == unit)
            return true;
    return false;
}

void AgentCore::reply(const std::string& id, bool ok, json result, const char* code,
                      const std::string& message) {
    proto::Reply r;
    r.id = id;
    r.ok = ok;
    r.result = std::move(result);
    if (!ok)
        r.error = proto::ErrorInfo{code ? code : "error", message};
    push(proto::encodeReply(r), id.empty() ? std::string("-") : id);
}

void AgentCore::requireSignedCommands(
    envelope::Trust trust, envelope::ReplayCache cache,
    std::function<void(const envelope::ReplayCache&)> onAccepted) {
    trust_ = std::move(trust);
    replay_ = std::move(cache);
    on_accepted_ = std::move(onAccepted);
}

void AgentCore::onMessage(std::string_view body) {
    std::string inner;
    std::optional<envelope::Fields> signedBy;
    if (body.size() <= cfg_.max_message_size) {
        if (trust_) {
            auto v = envelope::verify(body, *trust_, clock_.nowMs(), replay_);
            if (auto* r = std::get_if<envelope::Rejection>(&v)) {
                std::string id = envelope::replyIdOf(body, *r, r->request_id);
                PCLOUD_LOG(Warning, "Refused a command that failed verification",
                           {{"id", id},
                            {"code", envelope::toString(r->code)},
                            {"sender", r->sender},
                            {"request_id", r->request_id},
                            {"reason", r->message},
                            {"bytes", std::to_string(body.size())}});
                reply(id, false, nullptr, envelope::toString(r->code), r->message);
                return;
            }
            auto& verified = std::get<envelope::Verified>(v);
            if (on_accepted_)
                on_accepted_(replay_); // before it runs: a crash must not allow a replay
            signedBy = verified.fields;
            inner = std::move(verified.body);
        } else if (auto p = envelope::parse(body); std::holds_alternative<envelope::Parsed>(p)) {
            // No CA: the envelope is only unwrapped (the start log warned about this).
            auto& parsed = std::get<envelope::Parsed>(p);
            signedBy = parsed.fields;
            inner = std::move(parsed.body);
        } else {
            inner = std::string(body); // a plain command (or garbage: decoded below)
        }
    } else {
        inner = std::string(body); // decodeCommand answers too-large
    }
    auto decoded = proto::decodeCommand(inner, cfg_.max_message_size, clock_.nowMs());
    if (auto* f = std::get_if<proto::DecodeFailure>(&decoded)) {
        PCLOUD_LOG(Warning, "Rejected a command",
                   {{"id", f->id},
                    {"code", f->code},
                    {"reason", f->message},
                    {"bytes", std::to_string(body.size())}});
        reply(f->id, false, nullptr, f->code.c_str(), f->message);
        return;
    }
    auto& cmd = std::get<proto::Command>(decoded);
    Status action = signedBy ? envelope::actionIsCommand(*signedBy, proto::toString(cmd.type))
                             : Status::success();
    if (!action) {
        const std::string why = action.error().message;
        PCLOUD_LOG(Warning, "Rejected a command",
                   {{"id", cmd.id}, {"code", proto::kErrBadField}, {"reason", why}});
        reply(cmd.id, false, nullptr, proto::kErrBadField, why);
        return;
    }
    if (signedBy && trust_)
        PCLOUD_LOG(Info, "Signed command verified",
                   {{"id", cmd.id},
                    {"sender", signedBy->sender},
                    {"request_id", signedBy->request_id},
                    {"epoch", std::to_string(signedBy->epoch)}});
    handle(std::move(cmd));
}

void AgentCore::handle(proto::Command cmd) {
    PCLOUD_LOG(Info, "Command received",
               {{"id", cmd.id}, {"type", proto::toString(cmd.type)}, {"unit", cmd.unit}});
    switch (cmd.type) {
    case proto::CommandType::Ping:
        reply(cmd.id, true,
              json{{"pong", true},
                   {"uptime", uptime_ms_ ? uptime_ms_() : 0},
                   {"assembly", id_.assembly}});
        return;
    case proto::CommandType::Status: {
        if (cmd.unit.empty()) {
            json units = json::array();
            for (const auto& s : snapshot())
                units.push_back(proto::unitStateToJson(s));
            reply(cmd.id, true, json{{"units", std::move(units)}});
            return;
        }
        if (!isWatched(cmd.unit)) {
            reply(cmd.id, false, nullptr, proto::kErrNotFound,
                  "unit '" + cmd.unit + "' is not watched");
            return;
        }
        for (const auto& s : snapshot())
            if (s.unit == cmd.unit)
                reply(cmd.id, true, proto::unitStateToJson(s));
        return;
    }
    case proto::CommandType::Watch: {
        if (backend_.name() == std::string("systemd") && !cmd.commands.empty()) {
            reply(cmd.id, false, nullptr, proto::kErrBadField,
                  "'commands' is only for the process backend; this agent runs systemd");
            return;
        }
        std::map<std::string, proto::UnitState> keep;
        for (const auto& u : cmd.units)
            if (auto it = states_.find(u); it != states_.end())
                keep.insert(*it);
        states_ = std::move(keep);
        if (probes_) {
            for (const auto& u : backend_.watched())
                if (!cmd.probes.count(u))
                    probes_->setProbe(u, std::nullopt);
            for (const auto& [u, p] : cmd.probes)
                probes_->setProbe(u, p);
        }
        backend_.setWatch(cmd.units, cmd.commands);
        if (cmd.heartbeat_interval && *cmd.heartbeat_interval != heartbeat_interval_) {
            PCLOUD_LOG(Notice, "Heartbeat period set by the controller",
                       {{"assembly", id_.assembly},
                        {"was_ms", std::to_string(heartbeat_interval_)},
                        {"now_ms", std::to_string(*cmd.heartbeat_interval)}});
            heartbeat_interval_ = *cmd.heartbeat_interval;
            // A shorter period takes effect now, not after the old one runs out.
            if (link_up_)
                next_heartbeat_ =
                    std::min(next_heartbeat_, clock_.monotonicMs() + heartbeat_interval_);
        }
        json units = json::array();
        for (const auto& s : snapshot())
            units.push_back(proto::unitStateToJson(s));
        reply(cmd.id, true,
              json{{"units", std::move(units)}, {"heartbeat_ms", heartbeat_interval_}});
        return;
    }
    case proto::CommandType::Probe: {
        if (!isWatched(cmd.unit)) {
            reply(cmd.id, false, nullptr, proto::kErrNotFound,
                  "unit '" + cmd.unit + "' is not watched");
            return;
        }
        if (!probes_) {
            reply(cmd.id, false, nullptr, proto::kErrBackend, "probes are not available");
            return;
        }
        probes_->setProbe(cmd.unit, cmd.probe);
        if (auto it = states_.find(cmd.unit); it != states_.end())
            probes_->setActive(cmd.unit, it->second.active_state == "active");
        reply(cmd.id, true, json{{"unit", cmd.unit}, {"probe", cmd.probe.has_value()}});
        return;
    }
    case proto::CommandType::Start:
        startJob(JobKind::Start, cmd);
        return;
    case proto::CommandType::Stop:
        startJob(JobKind::Stop, cmd);
        return;
    case proto::CommandType::Restart:
        startJob(JobKind::Restart, cmd);
        return;
    }
}

void AgentCore::startJob(JobKind kind, const proto::Command& cmd) {
    if (!isWatched(cmd.unit)) {
        reply(cmd.id, false, nullptr, proto::kErrNotFound,
              "unit '" + cmd.unit + "' is not watched; send a watch command first");
        return;
    }
    auto p = std::make_shared<Pending>();
    p->id = cmd.id;
    p->what = std::string(proto::toString(cmd.type)) + " " + cmd.unit;
    p->deadline = clock_.monotonicMs() + cmd.deadline;
    pending_.push_back(p);
    PCLOUD_LOG(Notice, "Running job", {{"id", cmd.id}, {"job", p->what}});
    std::string unit = cmd.unit;
    backend_.runJob(kind, unit, [this, p, unit](const JobResult& r) {
        if (p->done)
            return; // the deadline answered first
        p->done = true;
        json result{{"unit", unit}, {"job_result", r.job_result}};
        if (auto it = states_.find(unit); it != states_.end())
            result["state"] = proto::unitStateToJson(it->second);
        if (r.ok) {
            PCLOUD_LOG(Notice, "Job done", {{"id", p->id}, {"job", p->what}});
            reply(p->id, true, std::move(result));
        } else {
            PCLOUD_LOG(Warning, "Job failed",
                       {{"id", p->id}, {"job", p->what}, {"code", r.code}, {"reason", r.message}});
            reply(p->id, false, std::move(result), r.code.c_str(), r.message);
        }
    });
}

void AgentCore::prepare(PollSet& ps, Millis now) {
    if (link_up_)
        ps.wakeAt(next_heartbeat_);
    for (const auto& p : pending_)
        if (!p->done)
            ps.wakeAt(p->deadline);
}

void AgentCore::dispatch(const PollSet& ps, Millis now) {
    for (auto it = pending_.begin(); it != pending_.end();) {
        auto& p = *it;
        if (!p->done && now >= p->deadline) {
            p->done = true;
            PCLOUD_LOG(Warning, "Job passed its deadline", {{"id", p->id}, {"job", p->what}});
            reply(p->id, false, nullptr, proto::kErrTimeout,
                  p->what + " did not finish before the deadline");
        }
        if (p->done)
            it = pending_.erase(it);
        else
            ++it;
    }
    if (link_up_ && now >= next_heartbeat_) {
        proto::Heartbeat h;
        h.seq = id_.seq_base + heartbeats_;
        h.boot_id = id_.boot_id;
        h.uptime = uptime_ms_ ? uptime_ms_() : 0;
        h.sent_at = clock_.nowMs();
        ++heartbeats_;
        push(proto::encodeHeartbeat(h));
        // Fixed rate, but never a burst of catch-up beats after a stall.
        next_heartbeat_ += heartbeat_interval_;
        if (next_heartbeat_ <= now)
            next_heartbeat_ = now + heartbeat_interval_;
    }
}

} // namespace pcloud::agent
