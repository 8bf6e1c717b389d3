#include "node/node_main.h"

#include "bus/client.h"
#include "common/args.h"
#include "common/exit_codes.h"
#include "common/fs.h"
#include "common/host_config.h"
#include "common/lock_file.h"
#include "common/log.h"
#include "common/signals.h"
#include "model/model.h"
#include "node/node_service.h"
#include "pki/pki.h"
#include "virt/libvirt_hypervisor.h"
#include "virt/pid_watcher.h"

#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace pcloud::node {

namespace nodep = virt::node;

std::string usage() {
    return "usage: pcloud-node --name HOST [--uri qemu:///system] [--broker URL]\n"
           "                   [--address-prefix P] [--state-dir DIR] [--config FILE]\n"
           "                   [--heartbeat-ms 1000] [--log-level LEVEL]\n"
           "                   [--bus-ca CA.crt --bus-cert node.NAME.crt --bus-key node.NAME.key]\n"
           "Serves this host's hypervisor to dped over the bus (docs/protocol/node.md).\n";
}

Result<Options> parseOptions(int argc, char** argv) {
    Options o;
    args::Table t;
    t.strings = {{"--name", &o.name},           {"--uri", &o.uri},
                 {"--broker", &o.broker},       {"--address-prefix", &o.address_prefix},
                 {"--state-dir", &o.state_dir}, {"--config", &o.config},
                 {"--log-level", &o.log_level}, {"--bus-ca", &o.bus_ca},
                 {"--bus-cert", &o.bus_cert},   {"--bus-key", &o.bus_key}};
    t.millis = {{"--heartbeat-ms", {&o.heartbeat_ms, 50, 60'000}}};
    if (auto st = args::parseTable(argc, argv, t, usage()); !st)
        return st.error();
    if (o.name.empty())
        return makeError("--name HOST is required\n" + usage());
    if (!model::isValidName(o.name))
        return makeError("invalid host name '" + o.name + "'");
    return o;
}

namespace {

std::int64_t meminfoMiB(const std::string& field) {
    std::ifstream in("/proc/meminfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(field + ":", 0) == 0) {
            std::istringstream s(line.substr(field.size() + 1));
            std::int64_t kib = 0;
            s >> kib;
            return kib / 1024;
        }
    return 0;
}

std::string randomId() {
    std::random_device rd;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    return buf;
}

} // namespace

int runNode(const Options& opt) {
    log::setIdent("pcloud-node[" + opt.name + "]");
    if (!log::setLevelOption("pcloud-node", opt.log_level))
        return toInt(ExitCode::Usage);
    sigset_t sigs = signals::blockShutdownSignals();

    if (auto st = fs::makePrivateDir(opt.state_dir); !st) {
        PCLOUD_LOG(Error, "Cannot create the state directory", {{"error", st.error().describe()}});
        return toInt(ExitCode::Config);
    }
    pid_t holder = 0;
    auto lock = LockFile::acquire(opt.state_dir + "/node-" + opt.name + ".lock", &holder);
    if (!lock) {
        PCLOUD_LOG(Error, "Another pcloud-node serves this host",
                   {{"name", opt.name}, {"pid", std::to_string(holder)}});
        return toInt(ExitCode::Locked);
    }
    auto host = hostconfig::load(opt.config.empty() ? hostconfig::kDefaultPath : opt.config,
                                 !opt.config.empty());
    if (!host) {
        PCLOUD_LOG(Error, "Cannot load the host configuration; fix the file and start again",
                   {{"error", host.error().describe()}});
        return toInt(ExitCode::Config);
    }
    auto epochs = EpochFloor::load(opt.state_dir + "/node-" + opt.name + ".epoch");
    if (!epochs) {
        PCLOUD_LOG(Error, "Cannot read the epoch floor", {{"error", epochs.error().describe()}});
        return toInt(ExitCode::Config);
    }

    virt::LibvirtHypervisor hv;
    if (auto st = hv.open(opt.uri); !st) {
        PCLOUD_LOG(Error, "Cannot open the hypervisor",
                   {{"uri", opt.uri}, {"error", st.error().describe()}});
        return toInt(ExitCode::Unavailable);
    }

    bus::Client client;
    bus::ClientOptions copt;
    copt.url = opt.broker;
    copt.addressPrefix = opt.address_prefix;
    copt.containerId = "node-" + opt.name + "-" + std::to_string(::getpid());
    {
        auto files = pki::clientFiles(host->pki_dir, pki::Identity{pki::Kind::Node, opt.name});
        copt.caFile = opt.bus_ca.empty() ? files.ca : opt.bus_ca;
        copt.certFile = opt.bus_cert.empty() ? files.cert : opt.bus_cert;
        copt.keyFile = opt.bus_key.empty() ? files.key : opt.bus_key;
    }
    if (auto st = client.connect(copt); !st) {
        PCLOUD_LOG(Error, "Bad broker URL", {{"error", st.error().describe()}});
        return toInt(ExitCode::Usage);
    }
    if (!client.waitConnected(std::chrono::seconds(2)))
        PCLOUD_LOG(Warning,
                   "The message hub does not answer; starting without it and retrying in the "
                   "background",
                   {{"broker", opt.broker}});

    const std::string events = nodep::eventsAddress(opt.name);
    HostProbe probe;
    probe.facts = [&hv, &opt] {
        nodep::HostFacts f;
        f.cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
        f.memory_mib = meminfoMiB("MemTotal");
        f.memory_available_mib = meminfoMiB("MemAvailable");
        f.libvirt_uri = opt.uri;
        f.libvirt_ok = hv.connected();
        if (auto running = hv.runningDomains())
            f.running = std::move(*running);
        return f;
    };
    ThreadJobRunner jobs([](std::function<void()> done) { done(); });
    NodeServiceConfig cfg{opt.name, randomId(), *host, opt.heartbeat_ms};
    NodeService service(cfg, hv, jobs, *epochs, probe, [&client, events](const std::string& body) {
        (void)client.send(events, body);
    });
    virt::PidWatcher pids([&service](const virt::PidExit& e) { service.onPidExit(e); });
    service.watchPid = [&pids](const std::string& key, pid_t pid) { return pids.watch(key, pid); };
    service.unwatchPid = [&pids](const std::string& key) { pids.unwatch(key); };
    hv.setListener(&service);

    client.serve(nodep::requestAddress(opt.name),
                 [&client, &service](const bus::Message& m) -> std::optional<std::string> {
                     std::string replyTo = m.replyTo, cid = m.correlationId;
                     service.handle(m.body, [&client, replyTo, cid](const std::string& body) {
                         if (!replyTo.empty())
                             (void)client.reply(replyTo, cid, body);
                     });
                     return std::nullopt; // replied by handle(), maybe from a job lane
                 });

    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    std::thread sigThread([&] {
        int sig = 0;
        while (sigwait(&sigs, &sig) == 0) {
            if (sig == SIGHUP || sig == 0)
                continue;
            break;
        }
        std::lock_guard l(mu);
        stop = true;
        cv.notify_all();
    });

    PCLOUD_LOG(Notice, "pcloud-node running",
               {{"name", opt.name},
                {"uri", opt.uri},
                {"broker", opt.broker},
                {"epoch", std::to_string(epochs->value())},
                {"pid", std::to_string(::getpid())}});
    {
        std::unique_lock l(mu);
        while (!stop) {
            l.unlock();
            service.heartbeat();
            l.lock();
            cv.wait_for(l, std::chrono::milliseconds(opt.heartbeat_ms), [&] { return stop; });
        }
    }
    PCLOUD_LOG(Notice, "pcloud-node stopping; the domains keep running", {{"name", opt.name}});
    hv.setListener(nullptr);
    client.close();
    jobs.shutdown();
    sigThread.join();
    return toInt(ExitCode::Ok);
}

int nodeMain(int argc, char** argv) {
    return args::runMain("pcloud-node", parseOptions(argc, argv),
                         [](const Options& o) { return runNode(o); });
}

} // namespace pcloud::node
