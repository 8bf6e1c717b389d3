#include "node/node_service.h"

#include "common/fs.h"
#include "common/log.h"
#include "model/model.h"
#include "policy/epoch_fence.h"
#include "store/domain_check.h"
#include "virt/guest_xml.h"

#include <charconv>
#include <memory>
#include <utility>

namespace pcloud::node {

namespace nodep = virt::node;

Result<EpochFloor> EpochFloor::load(const std::string& path) {
    EpochFloor f;
    f.path_ = path;
    if (!fs::exists(path))
        return f;
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    std::string s = *text;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size())
        return makeError("the epoch file is damaged (expected one decimal number); the node "
                         "refuses to start rather than forget which leaders it has refused",
                         path, 1);
    f.floor_ = v;
    return f;
}

Status EpochFloor::admit(std::uint64_t epoch) {
    std::lock_guard lock(*mu_);
    auto c = policy::checkEpoch(floor_, epoch);
    if (c.verdict == policy::EpochVerdict::Stale)
        return makeError(policy::staleEpochMessage(epoch, floor_, "this node"));
    if (c.verdict == policy::EpochVerdict::Same)
        return {};
    if (!path_.empty())
        if (auto st = fs::writeAtomic(path_, std::to_string(c.floor) + "\n"); !st)
            return st;
    floor_ = c.floor;
    return {};
}

std::uint64_t EpochFloor::value() const {
    std::lock_guard lock(*mu_);
    return floor_;
}

NodeService::NodeService(NodeServiceConfig config, virt::Hypervisor& hv, JobRunner& jobs,
                         EpochFloor& epochs, HostProbe probe, Publish publish)
    : cfg_(std::move(config)), hv_(hv), jobs_(jobs), epochs_(epochs), probe_(std::move(probe)),
      publish_(std::move(publish)) {}

void NodeService::refuse(const std::string& id, const std::string& code, const std::string& message,
                         const Reply& reply) {
    {
        std::lock_guard lock(mu_);
        ++refused_;
        if (code == "stale-epoch")
            ++stale_;
    }
    PCLOUD_LOG(Warning, "Node request refused", {{"id", id}, {"code", code}, {"error", message}});
    nodep::Reply r;
    r.id = id;
    r.ok = false;
    r.code = code;
    r.message = message;
    r.epoch = epochs_.value();
    reply(nodep::encode(r));
}

void NodeService::handle(const std::string& body, Reply reply) {
    auto q = nodep::decodeRequest(body);
    if (!q) {
        refuse("", "bad-request", q.error().message, reply);
        return;
    }
    auto& req = *q;
    // Checks that need no libvirt, before the request is queued.
    if (!req.domain.empty() && !model::isValidName(req.domain)) {
        refuse(req.id, "bad-request", "\"domain\" is not a valid name: " + req.domain, reply);
        return;
    }
    if (req.op == nodep::Op::DefineAndStart || req.op == nodep::Op::CreateTransient) {
        auto name = virt::domainNameOf(req.xml);
        if (!name || !model::isValidName(*name)) {
            refuse(req.id, "bad-request", "the domain XML has no valid <name>", reply);
            return;
        }
        if (auto st = store::checkDomainXml(req.xml, cfg_.host); !st) {
            refuse(req.id, "refused",
                   "domain " + *name + ": " + st.error().describe() + " (host configuration " +
                       (cfg_.host.source.empty() ? std::string("defaults") : cfg_.host.source) +
                       ")",
                   reply);
            return;
        }
        req.domain = *name;
    }
    if (auto st = epochs_.admit(req.epoch); !st) {
        bool stale = st.error().message.rfind("stale epoch", 0) == 0;
        refuse(req.id, stale ? "stale-epoch" : "internal", st.error().describe(), reply);
        return;
    }
    std::string key = req.op == nodep::Op::Facts ? std::string("~facts") : req.domain;
    auto out = std::make_shared<std::string>();
    jobs_.run(
        key, [this, req, out] { *out = nodep::encode(run(req)); },
        [out, reply = std::move(reply)] { reply(*out); });
}

nodep::Reply NodeService::run(const nodep::Request& q) {
    nodep::Reply r;
    r.id = q.id;
    r.epoch = epochs_.value();
    auto fail = [&r](const Error& e, const char* code = "libvirt") {
        r.ok = false;
        r.code = code;
        r.message = e.describe();
        return r;
    };
    auto done = [&r](Status st) {
        if (!st) {
            r.ok = false;
            r.code = "libvirt";
            r.message = st.error().describe();
        } else {
            r.ok = true;
        }
        return r;
    };
    auto info = [&r, &fail](Result<virt::DomainInfo> d) {
        if (!d)
            return fail(d.error());
        r.ok = true;
        r.domain = std::move(*d);
        return r;
    };
    PCLOUD_LOG(Info, "Node request",
               {{"op", nodep::toString(q.op)},
                {"domain", q.domain},
                {"sender", q.sender},
                {"epoch", std::to_string(q.epoch)}});
    switch (q.op) {
    case nodep::Op::Lookup:
        return info(hv_.lookup(q.domain));
    case nodep::Op::DefineAndStart:
        return info(hv_.defineAndStart(q.xml));
    case nodep::Op::CreateTransient:
        return info(hv_.createTransient(q.xml));
    case nodep::Op::Start:
        return done(hv_.start(q.domain));
    case nodep::Op::Destroy:
        return done(hv_.destroy(q.domain));
    case nodep::Op::Shutdown:
        return done(hv_.shutdown(q.domain));
    case nodep::Op::Undefine:
        return done(hv_.undefine(q.domain));
    case nodep::Op::QemuPid: {
        auto pid = hv_.qemuPid(q.domain);
        if (!pid)
            return fail(pid.error());
        r.ok = true;
        r.pid = *pid;
        return r;
    }
    case nodep::Op::WatchPid: {
        // The pid to watch comes from libvirt, never from the request: the request's pid only
        // has to agree with it.
        auto pid = hv_.qemuPid(q.domain);
        if (!pid)
            return fail(pid.error());
        if (*pid != q.pid)
            return fail(makeError("pid " + std::to_string(q.pid) + " is not the qemu of " +
                                  q.domain + " (that is " + std::to_string(*pid) + ")"),
                        "refused");
        if (!watchPid)
            return fail(makeError("this node watches no pids"), "unsupported");
        if (auto st = watchPid(q.domain, *pid); !st)
            return fail(st.error(), "pidfd");
        r.ok = true;
        r.pid = *pid;
        return r;
    }
    case nodep::Op::UnwatchPid:
        if (unwatchPid)
            unwatchPid(q.domain);
        r.ok = true;
        return r;
    case nodep::Op::Facts:
        r.ok = true;
        r.facts = probe_.facts ? probe_.facts() : nodep::HostFacts{};
        return r;
    }
    return fail(makeError("unhandled op"), "internal");
}

void NodeService::publish(nodep::Event e) {
    {
        std::lock_guard lock(mu_);
        e.seq = ++seq_;
    }
    e.node = cfg_.name;
    e.boot = cfg_.boot;
    publish_(nodep::encode(e));
}

void NodeService::heartbeat() {
    nodep::Event e;
    e.kind = nodep::EventKind::Heartbeat;
    e.facts = probe_.facts ? probe_.facts() : nodep::HostFacts{};
    e.interval_ms = cfg_.heartbeat_ms;
    publish(std::move(e));
}

void NodeService::onPidExit(const virt::PidExit& exit) {
    nodep::Event e;
    e.kind = nodep::EventKind::PidExit;
    e.key = exit.key;
    e.pid = exit.pid;
    e.signal = exit.signal;
    publish(std::move(e));
}

void NodeService::onDomainEvent(const virt::DomainEvent& event) {
    nodep::Event e;
    e.kind = nodep::EventKind::Domain;
    e.domain = event;
    publish(std::move(e));
}

void NodeService::onInfrastructureDown(const std::string& reason) {
    nodep::Event e;
    e.kind = nodep::EventKind::InfraDown;
    e.reason = reason;
    publish(std::move(e));
}

void NodeService::onInfrastructureUp() {
    nodep::Event e;
    e.kind = nodep::EventKind::InfraUp;
    publish(std::move(e));
}

std::uint64_t NodeService::refused() const {
    std::lock_guard lock(mu_);
    return refused_;
}

std::uint64_t NodeService::staleEpochs() const {
    std::lock_guard lock(mu_);
    return stale_;
}

} // namespace pcloud::node
