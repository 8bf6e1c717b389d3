#include "dped/runtime.h"

#include "bus/client.h"
#include "bus/sender.h"
#include "common/args.h"
#include "common/exit_codes.h"
#include "common/fs.h"
#include "common/job_runner.h"
#include "common/lock_file.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/utf8.h"
#include "dped/channel_peer.h"
#include "dped/inbox.h"
#include "dped/journal_gate.h"
#include "dped/pause_detector.h"
#include "dped/reactor.h"
#include "dped/reactor_loop.h"
#include "dped/remote_node.h"
#include "events/event.h"
#include "pki/pki.h"
#include "policy/epoch_fence.h"
#include "referee/referee.h"
#include "referee/retry_backoff.h"
#include "store/store.h"
#include "virt/libvirt_hypervisor.h"
#include "virt/pid_watcher.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

namespace pcloud::dped {

namespace {

// How long dped waits for cped's answer to a journal submission before it sends it again.
// A live cped journals in milliseconds (one fdatasync); past this it is paused or gone.
constexpr std::chrono::milliseconds kJournalAnswerTimeout{5'000};

std::string lowered(std::string s) {
    for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

class RealHostWatch;

// The reactor's Messenger. pcloud.agent.A goes to A's channel peer when an agent is attached
// there (dped is that agent's AMQP peer; the hub is not involved), else to the bus (agents
// that reach the hub over TCP). pcloud.journal goes through the JournalGate; the rest to the
// bus. Reports from channel agents do not come through subscribe(): the channel peer posts
// them straight to the reactor.
class RoutingMessenger final : public Messenger {
public:
    // `reportSenders`: on a TLS bus, a report on pcloud.reports.K is taken only from
    // agent:K (the broker's user-id; docs/security.md "Senders").
    RoutingMessenger(bus::Client& client, Inbox& inbox, JournalGate& journal, RealHostWatch& watch,
                     bus::SenderGate& reportSenders)
        : client_(client), inbox_(inbox), journal_(journal), watch_(watch),
          report_senders_(reportSenders) {}
    Status send(const std::string& address, const std::string& body,
                const bus::Properties& properties) override;
    Status reply(const std::string& replyTo, const std::string& correlationId,
                 const std::string& body) override {
        return client_.reply(replyTo, correlationId, body);
    }
    void subscribe(const std::string& address,
                   std::function<void(const bus::Message&)> callback) override;

private:
    bus::Client& client_;
    Inbox& inbox_;
    JournalGate& journal_;
    RealHostWatch& watch_;
    bus::SenderGate& report_senders_;
    std::mutex mu_;
    std::set<std::string> bus_agents_;  // report keys seen on the bus (agents over TCP)
    std::set<std::string> bus_refused_; // keys whose bus reports were dropped (logged once)
};

class RealHostWatch final : public HostWatch {
public:
    // With `remote`, the qemu processes are on that node's host: it watches them.
    RealHostWatch(Inbox& inbox, std::function<Reactor*()> reactor, std::string addressPrefix,
                  RemoteNode* remote = nullptr)
        : inbox_(inbox), reactor_(std::move(reactor)), prefix_(std::move(addressPrefix)),
          remote_(remote), pids_([this](const virt::PidExit& e) {
              inbox_.post([this, e] {
                  if (auto* r = reactor_())
                      r->onPidExit(e.key, e.monotonicUs, e.pid, e.signal);
              });
          }) {
        if (remote_)
            remote_->onPidExit([this](const std::string& key, pid_t pid, int signal) {
                std::int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(
                                      std::chrono::steady_clock::now().time_since_epoch())
                                      .count();
                inbox_.post([this, key, pid, us, signal] {
                    if (auto* r = reactor_())
                        r->onPidExit(key, us, pid, signal);
                });
            });
    }

    void watchPid(const std::string& assembly, pid_t pid) override {
        if (remote_) {
            remote_->watchPid(assembly, pid);
            return;
        }
        auto st = pids_.watch(assembly, pid);
        if (!st)
            PCLOUD_LOG(Warning, "Cannot watch the qemu pid; relying on libvirt events",
                       {{"assembly", assembly}, {"error", st.error().describe()}});
    }
    void unwatchPid(const std::string& assembly) override {
        if (remote_)
            remote_->unwatchPid(assembly);
        else
            pids_.unwatch(assembly);
    }
    // A remote host's /proc is not ours to read.
    std::optional<bool> processStopped(pid_t pid) override {
        if (remote_)
            return std::nullopt;
        return virt::processStopped(pid);
    }

    void ensureChannel(const std::string& assembly, const std::string& socketPath,
                       const std::vector<std::string>& keys) override {
        std::lock_guard lock(mu_);
        auto it = channels_.find(assembly);
        if (it != channels_.end() && it->second->options().socket_path == socketPath &&
            it->second->options().session.keys == keys) {
            it->second->reconnect();
            return;
        }
        ChannelPeerOptions o;
        o.socket_path = socketPath;
        o.session.assembly = assembly;
        o.session.keys = keys;
        o.session.address_prefix = prefix_;
        o.retry_ms = 1000;
        ChannelPeerCallbacks cb;
        cb.on_event = [this](const virt::ChannelEvent& e) {
            if (e.kind != virt::ChannelEventKind::Connected &&
                e.kind != virt::ChannelEventKind::Eof)
                return;
            bool up = e.kind == virt::ChannelEventKind::Connected;
            inbox_.post([this, e, up] {
                if (auto* r = reactor_())
                    r->onChannelEvent(e.key, up, e.detail, e.monotonicUs);
            });
        };
        // The peer outlives none of the closures it posts: they hold it weakly.
        auto slot = std::make_shared<std::weak_ptr<ChannelPeer>>();
        cb.on_report = [this, assembly, slot](std::string body) {
            inbox_.post([this, assembly, slot, body = std::move(body)] {
                if (auto* r = reactor_())
                    r->onReport(assembly, body, /*viaBus=*/false);
                if (auto p = slot->lock())
                    p->reportDone(body.size());
            });
        };
        auto peer = std::make_shared<ChannelPeer>(o, cb);
        *slot = peer;
        auto st = peer->start();
        if (!st) {
            PCLOUD_LOG(Warning, "Cannot start the guest channel peer",
                       {{"assembly", assembly}, {"error", st.error().describe()}});
            return;
        }
        channels_[assembly] = std::move(peer);
    }

    // The channel peer of `assembly` if an agent is attached to it.
    std::shared_ptr<ChannelPeer> attachedPeer(const std::string& assembly) {
        std::lock_guard lock(mu_);
        auto it = channels_.find(assembly);
        if (it == channels_.end() || !it->second->agentAttached())
            return nullptr;
        return it->second;
    }
    std::shared_ptr<ChannelPeer> peer(const std::string& assembly) {
        std::lock_guard lock(mu_);
        auto it = channels_.find(assembly);
        return it == channels_.end() ? nullptr : it->second;
    }
    // The peer whose agent may call itself `key` (name or uuid), if one is attached.
    std::shared_ptr<ChannelPeer> attachedPeerByKey(const std::string& key) {
        std::lock_guard lock(mu_);
        for (const auto& [name, p] : channels_) {
            const auto& keys = p->options().session.keys;
            for (const auto& k : keys)
                if (lowered(k) == key && p->agentAttached())
                    return p;
        }
        return nullptr;
    }

private:
    Inbox& inbox_;
    std::function<Reactor*()> reactor_;
    std::string prefix_;
    RemoteNode* remote_;
    virt::PidWatcher pids_;
    std::mutex mu_;
    std::map<std::string, std::shared_ptr<ChannelPeer>> channels_;
};

Status RoutingMessenger::send(const std::string& address, const std::string& body,
                              const bus::Properties& properties) {
    static const std::string kAgent = "pcloud.agent.";
    if (address == "pcloud.journal")
        return journal_.publish(body);
    if (address.rfind(kAgent, 0) == 0) {
        std::string assembly = address.substr(kAgent.size());
        if (auto peer = watch_.peer(assembly)) {
            auto cid = properties.find("correlation-id");
            std::string correlation = cid == properties.end() ? "" : cid->second;
            if (peer->agentAttached())
                return peer->send(body, correlation);
            // No agent on the channel. Only an agent that reports over the bus (TCP) would
            // read a command left on the hub; for a channel agent it would go stale there.
            bool overBus = false;
            {
                std::lock_guard lock(mu_);
                for (const auto& k : peer->options().session.keys)
                    overBus = overBus || bus_agents_.count(lowered(k)) > 0;
            }
            if (!overBus)
                return makeError("no agent is attached to the channel of " + assembly);
        }
    }
    return client_.send(address, body, properties);
}

void RoutingMessenger::subscribe(const std::string& address,
                                 std::function<void(const bus::Message&)> callback) {
    static const std::string kReports = "pcloud.reports.";
    auto cb = std::make_shared<std::function<void(const bus::Message&)>>(std::move(callback));
    std::string key =
        address.rfind(kReports, 0) == 0 ? lowered(address.substr(kReports.size())) : std::string();
    client_.subscribe(address, [this, cb, key](const bus::Message& m) {
        // RabbitMQ lets any identity send to any queue, but not under another's user-id.
        if (!key.empty() && !report_senders_.admitFrom(m, "agent:" + key))
            return;
        if (!key.empty()) {
            // While the assembly's own agent is attached to its channel, that channel is the
            // only source of its reports: a bus report claiming to be it is not the guest's.
            if (watch_.attachedPeerByKey(key)) {
                bool first;
                {
                    std::lock_guard lock(mu_);
                    first = bus_refused_.insert(key).second;
                }
                if (first)
                    PCLOUD_LOG(Warning,
                               "Dropping reports from the bus for an assembly whose agent is "
                               "attached to its channel (logged once)",
                               {{"key", key}});
                return;
            }
            std::lock_guard lock(mu_);
            bus_agents_.insert(key);
        }
        inbox_.post([cb, m] { (*cb)(m); });
    });
}

// Applies the desired referee membership on its own thread, retrying with backoff and
// reconciling every `reconcileMs` (10 s unless --referee-reconcile-ms), so a slow or broken
// balancer never holds up recovery. Retries are capped at 5 s: a balancer that is restarting is
// usually back within seconds, and every second it runs with a stale membership sends traffic to
// dead members.
class RefereeWorker final : public RefereeSink {
public:
    RefereeWorker(std::unique_ptr<referee::Referee> ref, JournalGate& journal, std::string dep,
                  Millis reconcileMs)
        : ref_(std::move(ref)), journal_(journal), dep_(std::move(dep)), reconcile_ms_(reconcileMs),
          backoff_(clock_, 500, 5'000), thread_([this] { run(); }) {}
    ~RefereeWorker() override {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    void setDesired(const std::vector<referee::Member>& members) override {
        {
            std::lock_guard lock(mu_);
            desired_ = members;
            dirty_ = true;
        }
        cv_.notify_one();
    }
    void hold() override {
        std::lock_guard lock(mu_);
        desired_.reset(); // nothing to apply or reconcile until the next setDesired()
        dirty_ = false;
    }
    std::optional<std::vector<referee::ActualMember>> current() override {
        std::lock_guard io(io_mu_);
        auto r = ref_->read();
        if (!r) {
            PCLOUD_LOG(Warning, "Cannot read the balancer",
                       {{"referee", ref_->describe()}, {"error", r.error().describe()}});
            return std::nullopt;
        }
        return std::move(*r);
    }

private:
    void event(const std::string& member, const std::string& state, const std::string& reason) {
        events::Event e;
        e.time = clock_.nowMs();
        e.deployable = dep_;
        e.assembly = member;
        e.state = state;
        e.reason = reason;
        (void)journal_.publish(events::toJson(e).dump());
    }
    void run() {
        Millis nextReconcile = clock_.monotonicMs() + reconcile_ms_;
        std::unique_lock lock(mu_);
        while (!stop_) {
            // While the referee is failing (dirty_ is then always set) only the backoff
            // schedule retries it: the periodic reconcile must not turn a down balancer
            // into a retry every reconcile interval.
            Millis now = clock_.monotonicMs();
            bool failing = backoff_.failures() > 0;
            Millis wakeAt = failing ? backoff_.nextAttemptMs() : nextReconcile;
            if (!dirty_ || !backoff_.due())
                cv_.wait_for(lock, std::chrono::milliseconds(std::max<Millis>(1, wakeAt - now)),
                             [&] { return stop_ || (dirty_ && backoff_.failures() == 0); });
            if (stop_)
                break;
            now = clock_.monotonicMs();
            bool reconcile = backoff_.failures() == 0 && now >= nextReconcile;
            if (!(dirty_ && backoff_.due()) && !reconcile)
                continue;
            if (!desired_) {
                nextReconcile = now + reconcile_ms_;
                continue;
            }
            auto members = *desired_;
            dirty_ = false;
            lock.unlock();
            std::string error;
            std::unique_lock io(io_mu_);
            if (reconcile) {
                auto r = ref_->reconcile(members);
                if (!r)
                    error = r.error().describe();
                else if (!r->clean()) {
                    PCLOUD_LOG(Warning, "Referee drift repaired", {{"drift", r->describe()}});
                    for (const auto& d : r->drifts)
                        event(d.member, "referee-drift", d.describe());
                }
            } else {
                auto st = ref_->apply(members);
                if (!st)
                    error = st.error().describe();
                else
                    PCLOUD_LOG(Notice, "Referee updated", {{"referee", ref_->describe()}});
            }
            io.unlock();
            lock.lock();
            if (reconcile)
                nextReconcile = clock_.monotonicMs() + reconcile_ms_;
            if (!error.empty()) {
                dirty_ = true;
                backoff_.recordFailure();
                PCLOUD_LOG(Warning, "Referee update failed; will retry",
                           {{"referee", ref_->describe()},
                            {"error", error},
                            {"retry_ms", std::to_string(backoff_.currentDelayMs())}});
                if (backoff_.failures() == 1)
                    event("", "referee-failed", error);
            } else {
                if (backoff_.failures() > 0)
                    event("", "referee-ok", "referee reachable again");
                backoff_.recordSuccess();
            }
        }
    }

    std::unique_ptr<referee::Referee> ref_;
    JournalGate& journal_;
    std::string dep_;
    Millis reconcile_ms_;
    SystemClock clock_;
    referee::RetryBackoff backoff_;
    std::mutex mu_;
    std::mutex io_mu_; // one exchange with the balancer at a time (worker thread, current())
    std::condition_variable cv_;
    std::optional<std::vector<referee::Member>> desired_;
    bool dirty_ = false;
    bool stop_ = false;
    std::thread thread_;
};

class Listener final : public virt::HypervisorListener {
public:
    Listener(Inbox& inbox, std::function<Reactor*()> reactor)
        : inbox_(inbox), reactor_(std::move(reactor)) {}
    void onDomainEvent(const virt::DomainEvent& e) override {
        inbox_.post([this, e] {
            if (auto* r = reactor_())
                r->onDomainEvent(e);
        });
    }
    void onInfrastructureDown(const std::string& reason) override {
        inbox_.post([this, reason] {
            if (auto* r = reactor_())
                r->onInfrastructureDown(reason);
        });
    }
    void onInfrastructureUp() override {
        inbox_.post([this] {
            if (auto* r = reactor_())
                r->onInfrastructureUp();
        });
    }

private:
    Inbox& inbox_;
    std::function<Reactor*()> reactor_;
};

} // namespace

std::string usage() {
    return "usage: dped --deployable NAME [--state-dir DIR] [--broker amqps://127.0.0.1:5671]\n"
           "            [--address-prefix P] [--uri LIBVIRT_URI] [--log-level LEVEL]\n"
           "            [--referee-reconcile-ms MS] [--config /etc/pcloud/pcloud.conf]\n"
           "            [--bus-ca CA.crt --bus-cert dped.NAME.crt --bus-key dped.NAME.key]\n"
           "            [--node HOST] [--key KEY.pem --cert CERT.pem | --pki-dir DIR]\n"
           "            [--epoch N]\n"
           "--node: drive the domains through that host's pcloud-node over the bus instead\n"
           "of opening libvirt here (docs/protocol/node.md).\n"
           "--epoch: the leadership epoch of the cped that starts this dped (a decimal > 0),\n"
           "sent with every command to agents and nodes (docs/ha.md).\n";
}

Result<Options> parseOptions(int argc, char** argv) {
    Options o;
    // No argument can hold a NUL: this value means "--epoch not given" ("--epoch=" gives "").
    const std::string unset(1, '\0');
    std::string epoch = unset;
    args::Table t;
    t.strings = {{"--deployable", &o.deployable},
                 {"--epoch", &epoch},
                 {"--state-dir", &o.state_dir},
                 {"--broker", &o.broker},
                 {"--address-prefix", &o.address_prefix},
                 {"--uri", &o.uri},
                 {"--log-level", &o.log_level},
                 {"--config", &o.config},
                 {"--node", &o.node},
                 {"--bus-ca", &o.bus_ca},
                 {"--bus-cert", &o.bus_cert},
                 {"--bus-key", &o.bus_key},
                 {"--key", &o.key},
                 {"--cert", &o.cert},
                 {"--pki-dir", &o.pki_dir}};
    t.millis = {{"--referee-reconcile-ms", {&o.referee_reconcile_ms, 100, 3'600'000}}};
    if (auto st = args::parseTable(argc, argv, t, usage()); !st)
        return st.error();
    if (o.deployable.empty())
        return makeError("--deployable NAME is required\n" + usage());
    if (epoch != unset) {
        auto e = policy::parseEpoch(epoch);
        if (!e)
            return makeError("option --epoch '" + epoch +
                             "' is not an epoch (a decimal from 1 to " +
                             std::to_string(policy::kMaxEpoch) + ")");
        o.epoch = *e;
    }
    if (!model::isValidName(o.deployable))
        return makeError("invalid deployable name '" + o.deployable + "'");
    if (!o.node.empty() && !model::isValidName(o.node))
        return makeError("invalid host name '" + o.node + "' for --node");
    if (!o.node.empty() && !o.uri.empty())
        return makeError("--node and --uri exclude each other: the node owns the libvirt URI");
    if (!o.pki_dir.empty()) {
        if (!o.key.empty() || !o.cert.empty())
            return makeError("--pki-dir names the key and certificate itself; give it or "
                             "--key/--cert, not both");
        o.key = o.pki_dir + "/dped." + o.deployable + ".key";
        o.cert = o.pki_dir + "/dped." + o.deployable + ".crt";
    }
    if (o.key.empty() != o.cert.empty())
        return makeError("--key and --cert go together (the signing key of dped:" + o.deployable +
                         " and its certificate)");
    return o;
}

int runDped(const Options& opt) {
    log::setIdent("dped[" + opt.deployable + "]");
    if (!log::setLevelOption("dped", opt.log_level))
        return toInt(ExitCode::Usage);
    // Signals are taken by a sigwait thread; block them before any thread starts.
    sigset_t sigs = signals::blockShutdownSignals();

    (void)fs::makePrivateDir(opt.state_dir);
    std::string lockPath = dpedLockPath(opt.state_dir, opt.deployable);
    std::optional<LockFile> lock;
    pid_t holder = 0;
    for (int attempt = 0; attempt < 20; ++attempt) {
        auto l = LockFile::acquire(lockPath, &holder);
        if (l) {
            lock.emplace(std::move(*l));
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!lock) {
        PCLOUD_LOG(Error, "Another dped runs this deployable; not starting a second one",
                   {{"deployable", opt.deployable},
                    {"lock", lockPath},
                    {"holder", std::to_string(holder)}});
        return toInt(ExitCode::Locked);
    }

    auto host = hostconfig::load(opt.config.empty() ? hostconfig::kDefaultPath : opt.config,
                                 !opt.config.empty());
    if (!host) {
        PCLOUD_LOG(Error, "Cannot load the host configuration; fix the file and start again",
                   {{"error", host.error().describe()}});
        return toInt(ExitCode::Config);
    }

    auto model = store::loadModel(opt.state_dir);
    if (!model) {
        PCLOUD_LOG(Error, "Cannot load the model; fix the file and start again",
                   {{"error", model.error().describe()}});
        return toInt(ExitCode::Config);
    }
    const auto* dep = model->findDeployable(opt.deployable);
    if (!dep) {
        PCLOUD_LOG(Error, "Unknown deployable",
                   {{"deployable", opt.deployable}, {"state_dir", opt.state_dir}});
        return toInt(ExitCode::Config);
    }
    std::string uri = opt.uri.empty() ? dep->uri : opt.uri;

    std::unique_ptr<referee::Referee> ref;
    if (!dep->referee.driver.empty()) {
        auto r = referee::makeReferee(dep->referee, *host);
        if (!r) {
            PCLOUD_LOG(Error, "Bad referee settings",
                       {{"deployable", opt.deployable}, {"error", r.error().describe()}});
            return toInt(ExitCode::Config);
        }
        ref = std::move(*r);
    }

    Inbox inbox;
    Reactor* reactorPtr = nullptr;
    std::mutex reactorMu;
    auto getReactor = [&]() -> Reactor* { return reactorPtr; }; // used on the reactor thread

    bus::Client client;
    // Every event is kept until cped answers that it journaled it (10 000 at most, oldest
    // dropped), and sent again when no answer came: journal_gate.h.
    SystemClock wallClock;
    JournalGate journal(
        [&client](const std::string& body, JournalGate::Done done) {
            client.requestAsync("pcloud.journal", body, kJournalAnswerTimeout,
                                [done = std::move(done)](Result<bus::Message> r) {
                                    if (!r)
                                        return done(JournalGate::Answer::NoAnswer,
                                                    r.error().describe());
                                    auto j = nlohmann::json::parse(r->body, nullptr, false);
                                    if (j.is_object() && j.value("ok", false))
                                        return done(JournalGate::Answer::Journaled, "");
                                    done(JournalGate::Answer::Refused, utf8Excerpt(r->body, 200));
                                });
        },
        opt.deployable,
        "dped-" + opt.deployable + "-" + std::to_string(::getpid()) + "-" +
            std::to_string(wallClock.nowMs()),
        wallClock, 10'000);
    bus::ClientOptions copt;
    copt.onConnectionChange = [&journal, &inbox, getReactor](bool up) {
        journal.setUp(up);
        inbox.post([getReactor, up] {
            if (auto* r = getReactor())
                up ? r->onBusUp() : r->onBusDown();
        });
    };
    copt.url = opt.broker;
    copt.addressPrefix = opt.address_prefix;
    {
        auto files =
            pki::clientFiles(host->pki_dir, pki::Identity{pki::Kind::Dped, opt.deployable});
        copt.caFile = opt.bus_ca.empty() ? files.ca : opt.bus_ca;
        copt.certFile = opt.bus_cert.empty() ? files.cert : opt.bus_cert;
        copt.keyFile = opt.bus_key.empty() ? files.key : opt.bus_key;
    }
    copt.containerId = "dped-" + opt.deployable + "-" + std::to_string(::getpid());
    // Replies (pcloud-node's) only from the node asked, by the user-id the broker checks.
    copt.checkReplySenders = opt.broker.rfind("amqps://", 0) == 0;
    // A hub that is stopped (not closed) must show up as a lost bus before the heartbeats
    // that cross it time out: AMQP idle timeout at half the heartbeat timeout.
    copt.idleTimeout =
        std::chrono::milliseconds(std::clamp<Millis>(dep->heartbeat_timeout / 2, 500, 10'000));
    if (auto st = client.connect(copt); !st) {
        PCLOUD_LOG(Error, "Bad broker URL", {{"error", st.error().describe()}});
        return toInt(ExitCode::Usage);
    }
    // dped does not need the hub to start: after a restart of both, the hub (in cped) may
    // come back later than dped. dped then supervises its channel agents and its domains
    // alone, holds its events and joins the hub as soon as it answers (the client keeps
    // reconnecting). A short wait only avoids a needless "bus down" at a normal start.
    if (!client.waitConnected(std::chrono::seconds(2)))
        PCLOUD_LOG(Warning,
                   "The message hub does not answer; starting without it and retrying in the "
                   "background",
                   {{"broker", opt.broker}});

    // The domains are driven either here, through libvirt, or through a host's pcloud-node.
    virt::LibvirtHypervisor local;
    std::unique_ptr<RemoteNode> remote;
    Listener listener(inbox, getReactor);
    if (opt.node.empty()) {
        if (auto st = local.open(uri); !st) {
            PCLOUD_LOG(Error, "Cannot open the hypervisor",
                       {{"uri", uri}, {"error", st.error().describe()}});
            return toInt(ExitCode::Unavailable);
        }
    } else {
        RemoteNodeOptions ro;
        ro.host = opt.node;
        ro.sender = "dped:" + opt.deployable;
        ro.silence_ms = std::max<Millis>(1000, dep->heartbeat_timeout);
        ro.epoch = opt.epoch;
        remote = std::make_unique<RemoteNode>(client, ro);
    }
    virt::Hypervisor& hv = remote ? static_cast<virt::Hypervisor&>(*remote) : local;

    RealHostWatch watch(inbox, getReactor, opt.address_prefix, remote.get());
    bus::SenderGate reportSenders(opt.broker.rfind("amqps://", 0) == 0, "agent report");
    RoutingMessenger messenger(client, inbox, journal, watch, reportSenders);
    std::unique_ptr<RefereeWorker> refWorker;
    if (ref)
        refWorker = std::make_unique<RefereeWorker>(std::move(ref), journal, opt.deployable,
                                                    opt.referee_reconcile_ms);
    policy::RandomJitter jitter(static_cast<std::uint64_t>(::getpid()) * 2654435761u ^
                                static_cast<std::uint64_t>(SystemClock().nowMs()));
    SystemClock clock;
    ReactorConfig rc{opt.deployable, opt.state_dir, {}, *host};
    rc.epoch = opt.epoch;
    if (remote)
        rc.epoch_raised = [node = remote.get()](std::uint64_t e) { node->setEpoch(e); };
    // One identity, one key: without --key/--cert, dped signs with the certificate it
    // presents on the bus (dped.D in the PKI dir, which cped issues for the dpeds it starts),
    // so a dped started by cped signs its commands too.
    std::string signKey = opt.key, signCert = opt.cert;
    const bool explicitKey = !signKey.empty();
    if (!explicitKey && ::access(copt.keyFile.c_str(), R_OK) == 0 &&
        ::access(copt.certFile.c_str(), R_OK) == 0) {
        signKey = copt.keyFile;
        signCert = copt.certFile;
    }
    if (!signKey.empty()) {
        auto signer = envelope::Signer::load(signKey, signCert);
        if (!signer && !explicitKey) {
            PCLOUD_LOG(Warning, "Cannot sign commands with the bus certificate; they go unsigned",
                       {{"cert", signCert}, {"error", signer.error().describe()}});
        } else if (!signer) {
            PCLOUD_LOG(Error, "Cannot load the command signing key; fix it and start again",
                       {{"error", signer.error().describe()}});
            return toInt(ExitCode::Config);
        } else if (signer->identity() != "dped:" + opt.deployable) {
            PCLOUD_LOG(Error, "The signing certificate is not this dped's; agents would refuse it",
                       {{"cert", signCert},
                        {"identity", signer->identity()},
                        {"want", "dped:" + opt.deployable}});
            return toInt(ExitCode::Config);
        } else {
            rc.signer = std::make_shared<const envelope::Signer>(std::move(*signer));
            PCLOUD_LOG(Notice, "Commands to agents are signed",
                       {{"identity", rc.signer->identity()},
                        {"cert", signCert},
                        {"ttl_ms", std::to_string(rc.command_ttl)}});
        }
    }
    // On a TLS bus, requests to this dped are signed too (by cped, or an operator), checked
    // against the bus CA. The hub already lets only cped:* and operator:* send here; the
    // signature also holds on a broker whose permissions are coarser (RabbitMQ), and the
    // epoch in it refuses a cped that no longer leads.
    if (opt.broker.rfind("amqps://", 0) == 0) {
        auto ca = envelope::CaStore::loadFile(copt.caFile);
        if (!ca) {
            PCLOUD_LOG(Error, "Cannot load the CA that requests to this dped are checked against",
                       {{"error", ca.error().describe()}});
            return toInt(ExitCode::Config);
        }
        envelope::Trust t{std::move(*ca), "dped:" + opt.deployable};
        rc.request_trust = std::make_shared<const envelope::Trust>(std::move(t));
        PCLOUD_LOG(Notice, "Requests to this dped must be signed",
                   {{"identity", "dped:" + opt.deployable}, {"ca", copt.caFile}});
    }
    // Declared after hv (its jobs call libvirt) and before the reactor (which holds it).
    ThreadJobRunner jobs([&inbox](std::function<void()> done) { inbox.post(std::move(done)); });
    Reactor reactor(rc, *model, clock, hv, messenger, watch, refWorker.get(), jitter, &jobs);
    reactorPtr = &reactor;
    // The connection callback only reports changes, so a hub that was never reached must be
    // told to the reactor here; a connection made since is queued in the inbox and follows.
    if (!client.connected())
        reactor.onBusDown();
    hv.setListener(&listener);
    if (remote) {
        // Until the node's first heartbeat its domains are unknown, not failed.
        reactor.onInfrastructureDown("node " + opt.node + " not heard yet");
        // A node that has accepted a newer leader's epoch fences this dped off (docs/ha.md).
        remote->onStaleEpoch([&inbox, getReactor](std::uint64_t nodeEpoch) {
            inbox.post([getReactor, nodeEpoch] {
                if (auto* r = getReactor())
                    r->onReceiverEpoch(nodeEpoch);
            });
        });
        remote->start();
    }
    if (auto st = reactor.start(); !st) {
        hv.setListener(nullptr);
        PCLOUD_LOG(Error, "Cannot start", {{"error", st.error().describe()}});
        return toInt(ExitCode::Config);
    }

    // cped -> dped requests. The handler runs on the bus thread and only hands the request
    // to the reactor thread, which replies itself: the bus thread never waits for the
    // reactor, because the reactor may be waiting for the bus (a pcloud-node call), and a
    // busy reactor then answers late rather than never. (The requester has its own timeout.)
    client.serve("pcloud.dped." + opt.deployable,
                 [&](const bus::Message& m) -> std::optional<std::string> {
                     inbox.post([&reactor, &client, m] {
                         // ping answers later (when the agent replies): onRequest then
                         // returns nullopt and the reactor sends the reply itself.
                         if (auto body = reactor.onRequest(m); body && !m.replyTo.empty())
                             (void)client.reply(m.replyTo, m.correlationId, *body);
                     });
                     return std::nullopt;
                 });

    std::atomic<bool> sigStop{false};
    std::thread sigThread([&] {
        int sig = 0;
        while (sigwait(&sigs, &sig) == 0) {
            if (sig == SIGHUP) {
                inbox.post([&reactor] { (void)reactor.onCommand(R"({"command":"reload"})"); });
                continue;
            }
            if (sig == 0)
                continue;
            sigStop = true;
            inbox.requestStop();
            return;
        }
    });

    PCLOUD_LOG(Notice, "dped running",
               {{"deployable", opt.deployable},
                {"uri", uri},
                {"broker", opt.broker},
                {"epoch", std::to_string(opt.epoch)},
                {"pid", std::to_string(::getpid())}});
    int rc_exit = toInt(ExitCode::Ok);
    // The loop runs at least once a second, so a pause of dped itself is noticed. A pause
    // shorter than a quarter of the heartbeat timeout cannot make a heartbeat look late, so
    // it is not reported.
    constexpr Millis kMaxWaitMs = 1000;
    PauseDetector pause(std::max<Millis>(200, dep->heartbeat_timeout / 4));
    ReactorLoop loop(reactor, inbox, clock, pause, [&](const PauseDetector::Gap& gap) {
        if (gap.clock_step)
            PCLOUD_LOG(Warning, "The wall clock jumped; heartbeat ages mean nothing across it",
                       {{"deployable", opt.deployable}, {"step_ms", std::to_string(gap.ms)}});
    });
    while (true) {
        auto pass = loop.runOnce(kMaxWaitMs);
        if (pass == ReactorLoop<Reactor>::Pass::Stopped)
            break;
        if (pass == ReactorLoop<Reactor>::Pass::Finished) {
            PCLOUD_LOG(Notice, "Planned stop complete; exiting", {{"deployable", opt.deployable}});
            (void)client.waitIdle(std::chrono::seconds(2));
            break;
        }
    }
    if (sigStop)
        PCLOUD_LOG(Notice, "Signal received; exiting and leaving the domains running", {});
    if (!sigStop) {
        // Wake the signal thread so it can be joined.
        ::kill(::getpid(), SIGTERM);
    }
    sigThread.join();
    hv.setListener(nullptr);
    reactorPtr = nullptr;
    (void)client.waitIdle(std::chrono::seconds(1));
    client.close();
    (void)reactorMu;
    return rc_exit;
}

int dpedMain(int argc, char** argv) {
    return args::runMain("dped", parseOptions(argc, argv),
                         [](const Options& o) { return runDped(o); });
}

} // namespace pcloud::dped
