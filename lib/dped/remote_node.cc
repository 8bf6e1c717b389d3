#include "dped/remote_node.h"

#include "common/log.h"
#include "virt/guest_xml.h"

#include <utility>

namespace pcloud::dped {

namespace nodep = virt::node;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t nowUs() {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
        .count();
}

} // namespace

RemoteNode::RemoteNode(bus::Client& client, RemoteNodeOptions options)
    : client_(client), opt_(std::move(options)), epoch_(opt_.epoch),
      address_(nodep::requestAddress(opt_.host)) {}

RemoteNode::~RemoteNode() {
    {
        std::lock_guard g(guard_->mu); // waits for a callback in progress
        guard_->self = nullptr;
    }
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable())
        watchdog_.join();
    if (subscription_)
        client_.unsubscribe(subscription_);
}

void RemoteNode::start() {
    guard_->self = this;
    subscription_ =
        client_.subscribe(nodep::eventsAddress(opt_.host), [guard = guard_](const bus::Message& m) {
            std::lock_guard g(guard->mu);
            if (guard->self)
                guard->self->onEvent(m);
        });
    watchdog_ = std::thread([this] { watchdog(); });
}

bool RemoteNode::nodeUp() const {
    std::lock_guard lock(mu_);
    return up_;
}

nodep::HostFacts RemoteNode::facts() const {
    std::lock_guard lock(mu_);
    return facts_;
}

void RemoteNode::setListener(virt::HypervisorListener* listener) {
    std::lock_guard lock(mu_);
    listener_ = listener;
}

void RemoteNode::onPidExit(PidExit callback) {
    std::lock_guard lock(mu_);
    on_pid_exit_ = std::move(callback);
}

void RemoteNode::onStaleEpoch(std::function<void(std::uint64_t)> callback) {
    on_stale_epoch_ = std::move(callback); // before start(): calls only read it
}

void RemoteNode::setUp(bool up, const std::string& reason) {
    virt::HypervisorListener* l = nullptr;
    {
        std::lock_guard lock(mu_);
        if (up_ == up)
            return;
        up_ = up;
        l = listener_;
    }
    if (up)
        PCLOUD_LOG(Notice, "Node heard; re-reading its domains", {{"node", opt_.host}});
    else
        PCLOUD_LOG(Warning, "Node lost: its domains are not judged until it is back",
                   {{"node", opt_.host}, {"reason", reason}});
    if (l) {
        if (up)
            l->onInfrastructureUp();
        else
            l->onInfrastructureDown("node " + opt_.host + ": " + reason);
    }
}

void RemoteNode::watchdog() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
        cv_.wait_for(lock, std::chrono::milliseconds(std::max<Millis>(20, opt_.silence_ms / 10)));
        if (stopping_ || !up_)
            continue;
        auto silent =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_heard_)
                .count();
        if (silent > opt_.silence_ms) {
            lock.unlock();
            setUp(false, "no heartbeat for " + std::to_string(silent) + " ms");
            lock.lock();
        }
    }
}

void RemoteNode::onEvent(const bus::Message& m) {
    auto e = nodep::decodeEvent(m.body);
    if (!e) {
        PCLOUD_LOG(Warning, "Dropping an undecodable node event",
                   {{"node", opt_.host}, {"error", e.error().describe()}});
        return;
    }
    if (e->node != opt_.host) {
        PCLOUD_LOG(Warning, "Dropping a node event that names another node",
                   {{"node", opt_.host}, {"claims", e->node}});
        return;
    }
    bool restarted = false;
    virt::HypervisorListener* l = nullptr;
    PidExit pidExit;
    {
        std::lock_guard lock(mu_);
        if (!boot_.empty() && e->boot != boot_)
            restarted = true;
        else if (e->seq <= last_seq_ && !boot_.empty())
            return; // a repeat (the topic delivers at most once; this guards a replayed one)
        boot_ = e->boot;
        last_seq_ = e->seq;
        last_heard_ = Clock::now();
        if (e->kind == nodep::EventKind::Heartbeat)
            facts_ = e->facts;
        l = listener_;
        pidExit = on_pid_exit_;
    }
    if (restarted) {
        // A new node process lost its pid watches: going down and up makes the reactor
        // look at every domain again and watch each qemu anew.
        PCLOUD_LOG(Notice, "Node restarted", {{"node", opt_.host}, {"boot", e->boot}});
        setUp(false, "node process restarted");
    }
    switch (e->kind) {
    case nodep::EventKind::Heartbeat:
        setUp(true, "");
        break;
    case nodep::EventKind::Domain:
        if (l) {
            virt::DomainEvent d = e->domain;
            // The node's steady clock is not ours: the time we heard it is the observation.
            d.monotonicUs = nowUs();
            d.monotonicMs = d.monotonicUs / 1000;
            l->onDomainEvent(d);
        }
        break;
    case nodep::EventKind::PidExit:
        if (pidExit)
            pidExit(e->key, static_cast<pid_t>(e->pid), e->signal);
        break;
    case nodep::EventKind::InfraDown:
        if (l)
            l->onInfrastructureDown("node " + opt_.host + ": " + e->reason);
        break;
    case nodep::EventKind::InfraUp:
        if (l)
            l->onInfrastructureUp();
        break;
    }
}

nodep::Request RemoteNode::stamped(nodep::Request q) {
    {
        std::lock_guard lock(mu_);
        q.id = opt_.sender + "-" + std::to_string(++next_id_);
    }
    q.sender = opt_.sender;
    q.epoch = epoch_;
    return q;
}

Result<nodep::Reply> RemoteNode::call(nodep::Request q, std::chrono::milliseconds timeout) {
    if (!nodeUp())
        return makeError("node " + opt_.host + " is not answering (no heartbeat)");
    q = stamped(std::move(q));
    auto r = client_.request(address_, nodep::encode(q), timeout);
    if (!r)
        return makeError("node " + opt_.host + ": " + nodep::toString(q.op) +
                         " failed: " + r.error().describe());
    auto reply = nodep::decodeReply(r->body);
    if (!reply)
        return makeError("node " + opt_.host + ": " + reply.error().describe());
    if (!reply->ok) {
        // A newer leader's dped has commanded this node: this dped is fenced off it. Said
        // as an error once per epoch the node holds; every further refusal at info level.
        if (reply->code == "stale-epoch") {
            auto level = fenced_logged_.exchange(reply->epoch) == reply->epoch ? log::Level::Info
                                                                               : log::Level::Error;
            if (level <= log::level())
                log::write(level,
                           "The node refused this dped's epoch: a newer leader has acted there; "
                           "this dped must not act on its domains",
                           {{"node", opt_.host},
                            {"op", nodep::toString(q.op)},
                            {"domain", q.domain},
                            {"epoch", std::to_string(q.epoch)},
                            {"node_epoch", std::to_string(reply->epoch)}});
            if (on_stale_epoch_)
                on_stale_epoch_(reply->epoch);
        }
        return nodep::replyError(*reply, opt_.host);
    }
    return reply;
}

Result<virt::DomainInfo> RemoteNode::domainCall(nodep::Request q,
                                                std::chrono::milliseconds timeout) {
    auto r = call(std::move(q), timeout);
    if (!r)
        return r.error();
    if (!r->domain)
        return makeError("node " + opt_.host + " sent no domain in its reply");
    return *r->domain;
}

Status RemoteNode::plainCall(nodep::Request q, std::chrono::milliseconds timeout) {
    auto r = call(std::move(q), timeout);
    if (!r)
        return r.error();
    return {};
}

nodep::Request RemoteNode::requestFor(nodep::Op op, const std::string& domain,
                                      const std::string& xml) {
    nodep::Request q;
    q.op = op;
    q.domain = domain;
    q.xml = xml;
    return q;
}

Result<virt::DomainInfo> RemoteNode::lookup(const std::string& name) {
    return domainCall(requestFor(nodep::Op::Lookup, name), opt_.quick_timeout);
}

Result<virt::DomainInfo> RemoteNode::defineAndStart(const std::string& xml) {
    return domainCall(requestFor(nodep::Op::DefineAndStart, {}, xml), opt_.call_timeout);
}

Result<virt::DomainInfo> RemoteNode::createTransient(const std::string& xml) {
    return domainCall(requestFor(nodep::Op::CreateTransient, {}, xml), opt_.call_timeout);
}

Status RemoteNode::start(const std::string& name) {
    return plainCall(requestFor(nodep::Op::Start, name), opt_.call_timeout);
}

Status RemoteNode::destroy(const std::string& name) {
    return plainCall(requestFor(nodep::Op::Destroy, name), opt_.call_timeout);
}

Status RemoteNode::shutdown(const std::string& name) {
    return plainCall(requestFor(nodep::Op::Shutdown, name), opt_.call_timeout);
}

Status RemoteNode::undefine(const std::string& name) {
    return plainCall(requestFor(nodep::Op::Undefine, name), opt_.call_timeout);
}

Result<pid_t> RemoteNode::qemuPid(const std::string& name) {
    auto r = call(requestFor(nodep::Op::QemuPid, name), opt_.quick_timeout);
    if (!r)
        return r.error();
    if (!r->pid)
        return makeError("node " + opt_.host + " sent no pid for " + name);
    return static_cast<pid_t>(*r->pid);
}

void RemoteNode::watchPid(const std::string& domain, pid_t pid) {
    if (!nodeUp())
        return; // renewed when the node is heard again (refreshAll)
    nodep::Request q = stamped(requestFor(nodep::Op::WatchPid, domain));
    q.pid = pid;
    std::string host = opt_.host;
    client_.requestAsync(address_, nodep::encode(q), opt_.quick_timeout,
                         [host, domain](Result<bus::Message> r) {
                             std::string error;
                             if (!r)
                                 error = r.error().describe();
                             else if (auto p = nodep::decodeReply(r->body); !p)
                                 error = p.error().describe();
                             else if (!p->ok)
                                 error = nodep::replyError(*p, host).describe();
                             if (!error.empty())
                                 PCLOUD_LOG(Warning,
                                            "The node cannot watch the qemu pid; relying on "
                                            "libvirt events",
                                            {{"node", host}, {"domain", domain}, {"error", error}});
                         });
}

void RemoteNode::unwatchPid(const std::string& domain) {
    if (!nodeUp())
        return;
    nodep::Request q = stamped(requestFor(nodep::Op::UnwatchPid, domain));
    client_.requestAsync(address_, nodep::encode(q), opt_.quick_timeout,
                         [](Result<bus::Message>) {});
}

} // namespace pcloud::dped
