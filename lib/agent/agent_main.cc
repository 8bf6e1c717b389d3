#include "agent/agent_main.h"

#include "agent/agent_core.h"
#include "agent/amqp_link.h"
#include "agent/config.h"
#include "agent/event_loop.h"
#include "agent/heap_trim.h"
#include "agent/probe.h"
#include "agent/process_backend.h"
#include "agent/process_state.h"
#include "agent/systemd_backend.h"
#include "common/exit_codes.h"
#include "common/fs.h"
#include "common/log.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace pcloud::agent {
namespace {

Millis boottimeMs() {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<Millis>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// From the fork of this process (its start time in /proc/self/stat) to now: how long exec,
// the dynamic loader and the setup took, the bulk of a restart on a slow (TCG) guest.
Millis startupMs() {
    auto st = readProcStat(::getpid());
    long hz = ::sysconf(_SC_CLK_TCK);
    if (!st || hz <= 0)
        return -1;
    return boottimeMs() - static_cast<Millis>(st->start_time) * 1000 / hz;
}

std::string firstLine(const std::string& path) {
    auto text = fs::readFile(path);
    if (!text)
        return {};
    std::string s = *text;
    auto nl = s.find('\n');
    if (nl != std::string::npos)
        s.resize(nl);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.pop_back();
    return s;
}

// RUN_DIR/replay.json of this boot, or nullopt (none, another boot, unreadable: said why).
std::optional<envelope::ReplayCache> loadReplayCache(const std::string& path,
                                                     const std::string& bootId, Millis now) {
    if (path.empty() || !fs::exists(path))
        return std::nullopt;
    auto text = fs::readFile(path);
    auto j = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    if (!j.is_object() || !j.contains("cache")) {
        PCLOUD_LOG(Warning, "Ignoring an unreadable replay cache file", {{"file", path}});
        return std::nullopt;
    }
    auto boot = j.find("boot_id");
    if (boot == j.end() || !boot->is_string() || boot->get<std::string>() != bootId)
        return std::nullopt; // another boot: its commands are long expired or refused
    auto c = envelope::ReplayCache::fromJson(j["cache"].dump(), now);
    if (!c) {
        PCLOUD_LOG(Warning, "Ignoring an unreadable replay cache file",
                   {{"file", path}, {"error", c.error().message}});
        return std::nullopt;
    }
    return std::move(*c);
}

// SIGTERM/SIGINT end the loop; read through a signalfd so they arrive inside poll().
class SignalSource : public Source {
public:
    SignalSource(EventLoop& loop) : loop_(loop) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGHUP);
        ::sigprocmask(SIG_BLOCK, &set, nullptr);
        fd_ = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    }
    ~SignalSource() override {
        if (fd_ >= 0)
            ::close(fd_);
    }
    void prepare(PollSet& ps, Millis) override {
        if (fd_ >= 0)
            idx_ = ps.add(fd_, POLLIN);
    }
    void dispatch(const PollSet& ps, Millis) override {
        if (fd_ < 0 || !(ps.revents(idx_) & POLLIN))
            return;
        signalfd_siginfo si{};
        while (::read(fd_, &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGHUP) {
                PCLOUD_LOG(Info, "SIGHUP ignored; restart the agent to reread its config");
                continue;
            }
            PCLOUD_LOG(Notice, "Stopping on signal", {{"signal", std::to_string(si.ssi_signo)}});
            loop_.stop();
        }
    }

private:
    EventLoop& loop_;
    int fd_ = -1;
    std::size_t idx_ = 0;
};

} // namespace

int runAgent(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    auto parsed = parseCommandLine(args);
    if (!parsed) {
        std::fprintf(stderr, "pcloud-agent: %s\n", parsed.error().describe().c_str());
        return toInt(ExitCode::Usage);
    }
    if (parsed->help) {
        std::cout << usageText();
        return toInt(ExitCode::Ok);
    }
    if (parsed->version) {
        std::cout << "pcloud-agent 0.1.0\n";
        return toInt(ExitCode::Ok);
    }
    AgentConfig cfg = parsed->config;
    log::Level level;
    if (log::parseLevel(cfg.log_level, level))
        log::setLevel(level);
    if (cfg.assembly.empty()) {
        std::string uuid = firstLine("/sys/class/dmi/id/product_uuid");
        for (auto& c : uuid)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (uuid.empty() || !model::isValidName(uuid)) {
            std::fprintf(stderr, "pcloud-agent: no --assembly given and "
                                 "/sys/class/dmi/id/product_uuid is not readable\n");
            return toInt(ExitCode::Usage);
        }
        cfg.assembly = uuid;
    }
    log::setIdent("pcloud-agent[" + cfg.assembly + "]");
    auto ep = parseEndpoint(cfg.connect);
    if (!ep) {
        std::fprintf(stderr, "pcloud-agent: %s\n", ep.error().describe().c_str());
        return toInt(ExitCode::Usage);
    }
    if (ep->tls) {
        ep->ca = cfg.bus_ca;
        ep->cert = cfg.bus_cert;
        ep->key = cfg.bus_key;
        for (const auto* f : {&ep->ca, &ep->cert, &ep->key}) {
            if (f->empty()) {
                std::fprintf(stderr,
                             "pcloud-agent: connect = %s needs bus_ca, bus_cert and "
                             "bus_key (the CA and this agent's agent:%s certificate)\n",
                             cfg.connect.c_str(), cfg.assembly.c_str());
                return toInt(ExitCode::Usage);
            }
            if (::access(f->c_str(), R_OK) != 0) {
                std::fprintf(stderr, "pcloud-agent: %s: cannot read it: %s\n", f->c_str(),
                             std::strerror(errno));
                return toInt(ExitCode::Config);
            }
        }
    }
    ::signal(SIGPIPE, SIG_IGN);

    SystemClock clock;
    EventLoop loop(clock);
    SignalSource signals(loop);

    std::string bootId = firstLine("/proc/sys/kernel/random/boot_id");
    std::unique_ptr<UnitBackend> backend;
    ProcessBackend* processBackend = nullptr;
    if (cfg.backend == BackendKind::Process) {
        auto pb =
            std::make_unique<ProcessBackend>(clock, cfg.process_commands, cfg.run_dir, bootId);
        processBackend = pb.get();
        backend = std::move(pb);
    } else {
        backend = std::make_unique<SystemdBackend>(clock);
    }

    Identity id;
    id.assembly = cfg.assembly;
    id.boot_id = bootId;
    id.seq_base = static_cast<std::uint64_t>(boottimeMs());

    AgentCore* corePtr = nullptr;
    ProbeRunner probes(clock, [&corePtr](const std::string& unit, std::optional<bool> ready) {
        if (corePtr)
            corePtr->onReady(unit, ready);
    });
    AgentCore core(cfg, id, *backend, &probes, clock, boottimeMs);
    corePtr = &core;
    if (!cfg.ca.empty()) {
        auto ca = envelope::CaStore::loadFile(cfg.ca);
        if (!ca) {
            std::fprintf(stderr, "pcloud-agent: %s\n", ca.error().describe().c_str());
            return toInt(ExitCode::Usage);
        }
        envelope::Trust trust{*ca, "agent:" + cfg.assembly, cfg.deployable, cfg.clock_skew};
        // The replay cache survives an agent restart in RUN_DIR (tmpfs: not a reboot). When
        // there is none from this boot, nothing signed before this start is accepted.
        std::string replayPath = cfg.run_dir.empty() ? "" : cfg.run_dir + "/replay.json";
        auto restored = loadReplayCache(replayPath, bootId, clock.nowMs());
        if (!restored)
            trust.not_before = clock.nowMs() - cfg.clock_skew;
        std::function<void(const envelope::ReplayCache&)> save;
        if (!replayPath.empty())
            save = [replayPath, bootId, &clock, dir = cfg.run_dir](const envelope::ReplayCache& c) {
                (void)fs::makePrivateDir(dir);
                nlohmann::json j{{"boot_id", bootId},
                                 {"cache", nlohmann::json::parse(c.toJson(clock.nowMs()))}};
                if (auto st = fs::writeAtomic(replayPath, j.dump()); !st)
                    PCLOUD_LOG(Warning, "Cannot save the replay cache",
                               {{"file", replayPath}, {"error", st.error().describe()}});
            };
        PCLOUD_LOG(Notice, restored ? "Replay cache restored" : "No replay cache from before",
                   {{"file", replayPath.empty() ? std::string("none") : replayPath},
                    {"entries", std::to_string(restored ? restored->size() : 0)},
                    {"not_before", std::to_string(trust.not_before)}});
        core.requireSignedCommands(std::move(trust),
                                   restored ? std::move(*restored) : envelope::ReplayCache(),
                                   std::move(save));
        PCLOUD_LOG(Notice, "Commands must be signed",
                   {{"ca", cfg.ca},
                    {"identity", "agent:" + cfg.assembly},
                    {"accepts", cfg.deployable.empty() ? std::string("operator:*")
                                                       : "operator:*, dped:" + cfg.deployable},
                    {"clock_skew_ms", std::to_string(cfg.clock_skew)}});
    } else {
        PCLOUD_LOG(Warning,
                   "No CA configured (ca=): commands are not authenticated; anyone who can "
                   "send to this agent's command address can command it",
                   {{"assembly", cfg.assembly}});
    }
    backend->setListener(&core);
    for (const auto& [unit, p] : cfg.probes)
        probes.setProbe(unit, p);
    backend->setWatch(cfg.watch, cfg.process_commands);
    if (processBackend)
        processBackend->startAll();

    std::string prefix = cfg.address_prefix;
    AmqpLink link(*ep, prefix + "pcloud.reports." + cfg.assembly,
                  prefix + "pcloud.agent." + cfg.assembly, "pcloud-agent-" + cfg.assembly,
                  cfg.max_message_size, core, clock);
    // On a TLS bus the broker vouches for the sender's user-id (RabbitMQ refuses another's;
    // so does the hub): reports carry ours, and without ca= only this agent's dped (any
    // dped's without deployable=) or a cped may command it (docs/security.md "Senders").
    if (ep->tls || !ep->user.empty())
        link.sendAs(ep->tls && ep->user.empty() ? "agent:" + cfg.assembly : ep->user);
    if (ep->tls && cfg.ca.empty()) {
        std::string dped = cfg.deployable.empty() ? std::string("dped:") : "dped:" + cfg.deployable;
        link.acceptCommandsFrom(
            [dped, exact = !cfg.deployable.empty()](const std::string& uid) {
                return (exact ? uid == dped : uid.rfind(dped, 0) == 0) ||
                       uid.rfind("cped:", 0) == 0;
            },
            (cfg.deployable.empty() ? "dped:*" : dped) + " or cped:*");
    }

    loop.add(&signals);
    loop.add(backend.get());
    loop.add(&probes);
    loop.add(&core);
    loop.add(&link);
    HeapTrimmer trimmer(clock.monotonicMs());
    loop.add(&trimmer);
    PCLOUD_LOG(Notice, "pcloud-agent started",
               {{"assembly", cfg.assembly},
                {"backend", backend->name()},
                {"connect", cfg.connect},
                {"units", std::to_string(cfg.watch.size())},
                {"startup_ms", std::to_string(startupMs())}});
    loop.run();
    backend->shutdown();
    PCLOUD_LOG(Notice, "pcloud-agent stopped", {{"assembly", cfg.assembly}});
    return toInt(ExitCode::Ok);
}

} // namespace pcloud::agent
