#include "dped/runtime.h"

#include "bus/client.h"
#include "common/args.h"
#include "common/exit_codes.h"
#include "common/fs.h"
#include "common/lock_file.h"
#include "common/log.h"
#include "common/signals.h"
#include "dped/inbox.h"
#include "dped/job_runner.h"
#include "dped/reactor.h"
#include "events/event.h"
#include "referee/referee.h"
#include "referee/retry_backoff.h"
#include "store/store.h"
#include "virt/channel.h"
#include "virt/libvirt_hypervisor.h"
#include "virt/pid_watcher.h"

#include <atomic>
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
#include <thread>
#include <unistd.h>

namespace pcloud::dped {

namespace {

class BusMessenger final : public Messenger {
public:
    BusMessenger(bus::Client& client, Inbox& inbox) : client_(client), inbox_(inbox) {}
    Status send(const std::string& address, const std::string& body,
                const bus::Properties& properties) override {
        return client_.send(address, body, properties);
    }
    Status reply(const std::string& replyTo, const std::string& correlationId,
                 const std::string& body) override {
        return client_.reply(replyTo, correlationId, body);
    }
    void subscribe(const std::string& address,
                   std::function<void(const bus::Message&)> callback) override {
        auto cb = std::make_shared<std::function<void(const bus::Message&)>>(std::move(callback));
        client_.subscribe(
            address, [this, cb](const bus::Message& m) { inbox_.post([cb, m] { (*cb)(m); }); });
    }

private:
    bus::Client& client_;
    Inbox& inbox_;
};

class RealHostWatch final : public HostWatch {
public:
    RealHostWatch(Inbox& inbox, std::function<Reactor*()> reactor, int hubPort)
        : inbox_(inbox), reactor_(std::move(reactor)), hub_port_(hubPort),
          pids_([this](const virt::PidExit& e) {
              inbox_.post([this, e] {
                  if (auto* r = reactor_())
                      r->onPidExit(e.key, e.monotonicUs, e.pid);
              });
          }) {}

    void watchPid(const std::string& assembly, pid_t pid) override {
        auto st = pids_.watch(assembly, pid);
        if (!st)
            PCLOUD_LOG(Warning, "Cannot watch the qemu pid; relying on libvirt events",
                       {{"assembly", assembly}, {"error", st.error().describe()}});
    }
    void unwatchPid(const std::string& assembly) override { pids_.unwatch(assembly); }

    void ensureChannel(const std::string& assembly, const std::string& socketPath) override {
        auto it = channels_.find(assembly);
        if (it != channels_.end() && it->second->options().socket_path == socketPath) {
            it->second->reconnect();
            return;
        }
        virt::ChannelOptions o;
        o.key = assembly;
        o.socket_path = socketPath;
        o.hub_port = hub_port_;
        o.retry_ms = 1000;
        virt::ChannelCallbacks cb;
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
        auto conn = std::make_unique<virt::ChannelConnection>(o, cb);
        auto st = conn->start();
        if (!st) {
            PCLOUD_LOG(Warning, "Cannot start the guest channel relay",
                       {{"assembly", assembly}, {"error", st.error().describe()}});
            return;
        }
        channels_[assembly] = std::move(conn);
    }

private:
    Inbox& inbox_;
    std::function<Reactor*()> reactor_;
    int hub_port_;
    virt::PidWatcher pids_;
    std::map<std::string, std::unique_ptr<virt::ChannelConnection>> channels_;
};

// Applies the desired referee membership on its own thread, retrying with backoff and
// reconciling every 10 s, so a slow or broken balancer never holds up recovery. Retries are
// capped at 5 s: a balancer that is restarting is usually back within seconds, and every
// second it runs with a stale membership sends traffic to dead members.
class RefereeWorker final : public RefereeSink {
public:
    RefereeWorker(std::unique_ptr<referee::Referee> ref, bus::Client& client, std::string dep)
        : ref_(std::move(ref)), client_(client), dep_(std::move(dep)), backoff_(clock_, 500, 5'000),
          thread_([this] { run(); }) {}
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

private:
    void event(const std::string& member, const std::string& state, const std::string& reason) {
        events::Event e;
        e.time = clock_.nowMs();
        e.deployable = dep_;
        e.assembly = member;
        e.state = state;
        e.reason = reason;
        (void)client_.send("pcloud.journal", events::toJson(e).dump());
    }
    void run() {
        Millis nextReconcile = clock_.monotonicMs() + 10'000;
        std::unique_lock lock(mu_);
        while (!stop_) {
            Millis now = clock_.monotonicMs();
            Millis wakeAt = nextReconcile;
            if (dirty_ && backoff_.failures() > 0)
                wakeAt = std::min(wakeAt, backoff_.nextAttemptMs());
            if (!dirty_ || !backoff_.due())
                cv_.wait_for(lock, std::chrono::milliseconds(std::max<Millis>(1, wakeAt - now)),
                             [&] { return stop_ || (dirty_ && backoff_.failures() == 0); });
            if (stop_)
                break;
            now = clock_.monotonicMs();
            bool reconcile = now >= nextReconcile;
            if (!(dirty_ && backoff_.due()) && !reconcile)
                continue;
            if (!desired_) {
                nextReconcile = now + 10'000;
                continue;
            }
            auto members = *desired_;
            dirty_ = false;
            lock.unlock();
            std::string error;
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
            lock.lock();
            if (reconcile)
                nextReconcile = clock_.monotonicMs() + 10'000;
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
    bus::Client& client_;
    std::string dep_;
    SystemClock clock_;
    referee::RetryBackoff backoff_;
    std::mutex mu_;
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

int portOf(const std::string& url) {
    auto colon = url.rfind(':');
    if (colon == std::string::npos)
        return 5672;
    try {
        return std::stoi(url.substr(colon + 1));
    } catch (...) {
        return 0;
    }
}

} // namespace

std::string usage() {
    return "usage: dped --deployable NAME [--state-dir DIR] [--broker amqp://127.0.0.1:5672]\n"
           "            [--address-prefix P] [--uri LIBVIRT_URI] [--log-level LEVEL]\n"
           "            [--config /etc/pcloud/pcloud.conf]\n";
}

Result<Options> parseOptions(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h")
            return makeError(usage(), "help");
        auto value = [&](std::string& out) { return args::optionValue(argc, argv, i, out); };
        std::string key = a.substr(0, a.find('='));
        std::string* target = key == "--deployable"       ? &o.deployable
                              : key == "--state-dir"      ? &o.state_dir
                              : key == "--broker"         ? &o.broker
                              : key == "--address-prefix" ? &o.address_prefix
                              : key == "--uri"            ? &o.uri
                              : key == "--log-level"      ? &o.log_level
                              : key == "--config"         ? &o.config
                                                          : nullptr;
        if (!target)
            return makeError("unknown option '" + a + "'\n" + usage());
        if (!value(*target))
            return makeError("option " + key + " needs a value");
    }
    if (o.deployable.empty())
        return makeError("--deployable NAME is required\n" + usage());
    if (!model::isValidName(o.deployable))
        return makeError("invalid deployable name '" + o.deployable + "'");
    return o;
}

int runDped(const Options& opt) {
    log::setIdent("dped[" + opt.deployable + "]");
    if (!opt.log_level.empty()) {
        log::Level l;
        if (!log::parseLevel(opt.log_level, l)) {
            std::fprintf(stderr, "dped: unknown log level '%s'\n", opt.log_level.c_str());
            return toInt(ExitCode::Usage);
        }
        log::setLevel(l);
    }
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
    bus::ClientOptions copt;
    copt.url = opt.broker;
    copt.addressPrefix = opt.address_prefix;
    copt.containerId = "dped-" + opt.deployable + "-" + std::to_string(::getpid());
    if (auto st = client.connect(copt); !st) {
        PCLOUD_LOG(Error, "Bad broker URL", {{"error", st.error().describe()}});
        return toInt(ExitCode::Usage);
    }
    if (!client.waitConnected(std::chrono::seconds(10))) {
        PCLOUD_LOG(Error, "Cannot reach the message hub", {{"broker", opt.broker}});
        return toInt(ExitCode::Unavailable);
    }

    virt::LibvirtHypervisor hv;
    Listener listener(inbox, getReactor);
    if (auto st = hv.open(uri); !st) {
        PCLOUD_LOG(Error, "Cannot open the hypervisor",
                   {{"uri", uri}, {"error", st.error().describe()}});
        return toInt(ExitCode::Unavailable);
    }

    BusMessenger messenger(client, inbox);
    RealHostWatch watch(inbox, getReactor, portOf(opt.broker));
    std::unique_ptr<RefereeWorker> refWorker;
    if (ref)
        refWorker = std::make_unique<RefereeWorker>(std::move(ref), client, opt.deployable);
    policy::RandomJitter jitter(static_cast<std::uint64_t>(::getpid()) * 2654435761u ^
                                static_cast<std::uint64_t>(SystemClock().nowMs()));
    SystemClock clock;
    ReactorConfig rc{opt.deployable, opt.state_dir, {}, *host};
    // Declared after hv (its jobs call libvirt) and before the reactor (which holds it).
    ThreadJobRunner jobs([&inbox](std::function<void()> done) { inbox.post(std::move(done)); });
    Reactor reactor(rc, *model, clock, hv, messenger, watch, refWorker.get(), jitter, &jobs);
    reactorPtr = &reactor;
    hv.setListener(&listener);
    if (auto st = reactor.start(); !st) {
        hv.setListener(nullptr);
        PCLOUD_LOG(Error, "Cannot start", {{"error", st.error().describe()}});
        return toInt(ExitCode::Config);
    }

    // cped -> dped requests. The handler runs on the bus thread; it asks the reactor thread
    // and waits a bounded time (the reactor never waits for the bus thread).
    client.serve(
        "pcloud.dped." + opt.deployable, [&](const bus::Message& m) -> std::optional<std::string> {
            auto p = std::make_shared<std::promise<std::optional<std::string>>>();
            auto f = p->get_future();
            std::string cid = m.correlationId;
            // ping answers later (when the agent replies): onRequest then returns
            // nullopt and the reactor sends the reply itself.
            inbox.post([&reactor, p, m] { p->set_value(reactor.onRequest(m)); });
            if (f.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
                return nlohmann::json{{"v", 1},
                                      {"type", "reply"},
                                      {"id", cid},
                                      {"ok", false},
                                      {"error", {{"code", "timeout"}, {"message", "dped busy"}}}}
                    .dump();
            return f.get();
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
                {"pid", std::to_string(::getpid())}});
    int rc_exit = toInt(ExitCode::Ok);
    while (true) {
        std::optional<std::chrono::steady_clock::time_point> deadline;
        if (auto w = reactor.nextWake()) {
            Millis delta = std::max<Millis>(0, *w - clock.nowMs());
            deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(delta);
        }
        bool stop = false;
        auto work = inbox.wait(deadline, stop);
        if (stop)
            break;
        for (auto& f : work)
            f();
        reactor.step();
        if (reactor.finished()) {
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
    auto opt = parseOptions(argc, argv);
    if (!opt) {
        if (opt.error().file == "help") {
            std::cout << opt.error().message;
            return toInt(ExitCode::Ok);
        }
        std::fprintf(stderr, "dped: %s\n", opt.error().message.c_str());
        return toInt(ExitCode::Usage);
    }
    return runDped(*opt);
}

} // namespace pcloud::dped
