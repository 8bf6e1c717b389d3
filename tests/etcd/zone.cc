#include "etcd/zone.h"

#include "common/fs.h"
#include "common/lock_file.h"
#include "support/netns.h"
#include "support/test_tls.h"

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pcloud::etcdtest {

using testsupport::runAll;
using testsupport::runCommand;
using testsupport::waitFor;
using namespace std::chrono_literals;

std::int64_t wallMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string ZoneHost::log() const {
    return tail(dir + "/cped.log", 4'000'000);
}

Zone::Zone(ZoneOptions o) : o_(std::move(o)) {}

Zone::~Zone() {
    for (auto& h : hosts_) {
        if (h.cped > 0) {
            ::kill(h.cped, SIGCONT);
            ::kill(h.cped, SIGKILL);
            ::waitpid(h.cped, nullptr, 0);
        }
        if (auto d = LockFile::holder(h.dir + "/dped-web.lock"); d && *d > 0)
            ::kill(*d, SIGKILL);
    }
    etcd_.reset();
    for (const auto& h : hosts_)
        runCommand("ip netns del " + h.ns + " 2>/dev/null");
    for (const auto& ns : {sw_, client_})
        if (!ns.empty())
            runCommand("ip netns del " + ns + " 2>/dev/null");
    if (!root_.empty())
        runCommand("rm -rf '" + root_ + "'");
}

std::string Zone::start() {
    if (::geteuid() != 0)
        return "the zone harness needs root (network namespaces)";
    sw_ = testsupport::netnsName("zsw");
    client_ = testsupport::netnsName("zcl");
    std::vector<std::string> cmds = {"ip netns add " + sw_,
                                     "ip netns add " + client_,
                                     "ip -n " + sw_ + " link set lo up",
                                     "ip -n " + client_ + " link set lo up",
                                     "ip -n " + sw_ + " link add br0 type bridge",
                                     "ip -n " + sw_ + " link set br0 up"};
    char tmpl[] = "/tmp/pcloud-zone-XXXXXX";
    if (!::mkdtemp(tmpl))
        return "mkdtemp failed";
    root_ = tmpl;
    for (int i = 0; i < kHosts; ++i) {
        ZoneHost h;
        h.name = "h" + std::to_string(i + 1);
        h.ns = testsupport::netnsName("z" + h.name + "-");
        h.addr = "10.77.0." + std::to_string(i + 1);
        h.port = "v" + std::to_string(i);
        h.dir = root_ + "/" + h.name;
        if (::mkdir(h.dir.c_str(), 0700) != 0)
            return "mkdir " + h.dir + " failed";
        cmds.insert(cmds.end(), {"ip netns add " + h.ns, "ip -n " + h.ns + " link set lo up",
                                 "ip -n " + h.ns + " link add eth0 type veth peer name " + h.port +
                                     " netns " + sw_,
                                 "ip -n " + sw_ + " link set " + h.port + " master br0",
                                 "ip -n " + sw_ + " link set " + h.port + " up",
                                 "ip -n " + h.ns + " addr add " + h.addr + "/24 dev eth0",
                                 "ip -n " + h.ns + " link set eth0 up"});
        hosts_.push_back(h);
    }
    cmds.insert(cmds.end(),
                {"ip -n " + client_ + " link add eth0 type veth peer name vc netns " + sw_,
                 "ip -n " + sw_ + " link set vc master br0", "ip -n " + sw_ + " link set vc up",
                 "ip -n " + client_ + " addr add 10.77.0.9/24 dev eth0",
                 "ip -n " + client_ + " link set eth0 up"});
    if (auto e = runAll(cmds); !e.empty())
        return e;
    // Every link up (the bridge forwards at once: no STP) before etcd starts.
    if (!waitFor(
            [&] {
                for (const auto& h : hosts_)
                    if (testsupport::linkState(h.ns, "eth0") != "UP")
                        return false;
                return testsupport::linkState(client_, "eth0") == "UP";
            },
            10s, 20ms))
        return "the zone's links did not come up";

    // --pre-vote, as docs/ha.md tells operators: a member cut off and healed (the partition
    // case) then cannot force a raft election with the higher term it reached alone, which
    // would stop the renewals of the pcloud leader elected meanwhile.
    std::vector<std::string> etcdArgs = {"--pre-vote"};
    etcdArgs.insert(etcdArgs.end(), o_.etcd_args.begin(), o_.etcd_args.end());
    etcd_ = std::make_unique<EtcdCluster>(kHosts, etcdArgs);
    for (int i = 0; i < kHosts; ++i)
        etcd_->place(i, hosts_[i].ns, hosts_[i].addr);
    if (auto e = etcd_->start(); !e.empty())
        return e;

    tls_ = std::make_unique<testsupport::TestTls>(root_ + "/pki");
    if (auto st = tls_->setUp("h1"); !st)
        return st.error().describe();
    for (const auto& h : hosts_) {
        if (auto cert = tls_->issue({pki::Kind::Cped, h.name}); !cert)
            return cert.error().describe();
        if (auto st = fs::writeAtomic(h.dir + "/pcloud.conf",
                                      tls_->hostConfig(h.name) + "floating_ip = " + kFloating +
                                          "\nfloating_dev = eth0\n",
                                      {}, 0644);
            !st)
            return st.error().describe();
    }
    if (auto st = fs::writeAtomic(root_ + "/n1.xml",
                                  "<domain type='test'><name>n1</name><memory "
                                  "unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n",
                                  {}, 0644);
        !st)
        return st.error().describe();

    startCped(0);
    if (!waitFor([&] { return shell("deployable_list").rc == 0; }, 20s, 100ms))
        return "h1 never served: " + shell("deployable_list").out;
    for (const std::string& cmd :
         {std::string("deployable_create web --uri test:///default"),
          "assembly_create n1 --domain-xml " + root_ + "/n1.xml",
          std::string("deployable_assembly_add web n1"), std::string("deployable_start web")})
        if (auto r = shell(cmd); r.rc != 0)
            return cmd + ": " + r.out;
    if (!waitFor([&] { return dpedAnswers(); }, 20s))
        return "h1's dped never answered";
    // h2 and h3 start with empty state dirs: the model they lead with is the zone's, from
    // etcd (docs/ha.md "The shared model").
    for (int i = 1; i < kHosts; ++i)
        startCped(i);
    if (!waitFor(
            [&] {
                for (const auto& h : hosts_)
                    if (h.log().find("cped ready") == std::string::npos)
                        return false;
                return true;
            },
            20s, 100ms))
        return "not every cped became ready";
    return "";
}

void Zone::startCped(int i) {
    auto& h = hosts_[static_cast<size_t>(i)];
    std::string cluster = "etcd://" + etcd_->member(i).endpoint();
    for (int k = 0; k < kHosts; ++k)
        if (k != i)
            cluster += "," + etcd_->member(k).endpoint();
    std::vector<std::string> argv = {CPED_BIN,
                                     "--state-dir",
                                     h.dir,
                                     "--listen",
                                     "amqps://0.0.0.0:" + std::to_string(kHubPort),
                                     "--config",
                                     h.dir + "/pcloud.conf",
                                     "--dped-path",
                                     DPED_BIN,
                                     "--cluster",
                                     cluster,
                                     "--node-name",
                                     h.name,
                                     "--log-level",
                                     "info"};
    argv.insert(argv.end(), o_.cped_args.begin(), o_.cped_args.end());
    h.cped = testsupport::spawnInNetns(h.ns, argv, h.dir + "/cped.log");
}

void Zone::signalCped(int i, int sig) {
    auto& h = hosts_[static_cast<size_t>(i)];
    if (h.cped <= 0)
        return;
    ::kill(h.cped, sig);
    if (sig == SIGKILL) {
        ::waitpid(h.cped, nullptr, 0);
        h.cped = -1;
    }
}

std::string Zone::setLink(int i, bool up) {
    return runAll({"ip -n " + sw_ + " link set " + hosts_[static_cast<size_t>(i)].port +
                   (up ? " up" : " down")});
}

testsupport::CommandResult Zone::shell(const std::string& words, const std::string& addr) const {
    return runCommand("ip netns exec " + client_ + " " + PCLOUDSH_BIN + " --broker amqps://" +
                      addr + ":" + std::to_string(kHubPort) + " --config " + hosts_[0].dir +
                      "/pcloud.conf --timeout 2 " + words + " 2>&1");
}

pid_t Zone::follow(const std::string& path) const {
    return testsupport::spawnInNetns(
        client_,
        {PCLOUDSH_BIN, "--broker", "amqps://" + kFloatingIp + ":" + std::to_string(kHubPort),
         "--config", hosts_[0].dir + "/pcloud.conf", "--json", "events", "--follow"},
        path);
}

bool Zone::dpedAnswers() const {
    auto r = shell("deployable_status web");
    return r.rc == 0 && r.out.find("not answering") == std::string::npos;
}

int Zone::leader() const {
    auto r = shell("cluster_status");
    for (int i = 0; i < kHosts && r.rc == 0; ++i)
        if (r.out.find("pcloud leader: " + hosts_[static_cast<size_t>(i)].name + ",") !=
            std::string::npos)
            return i;
    return -1;
}

bool Zone::holds(int i) const {
    return testsupport::hasIpv4(hosts_[static_cast<size_t>(i)].ns, "eth0", kFloating);
}

std::string Zone::mac(int i) const {
    return testsupport::linkMac(hosts_[static_cast<size_t>(i)].ns, "eth0");
}

std::string Zone::clientArp() const {
    auto r = runCommand("ip -n " + client_ + " neigh show " + kFloatingIp + " 2>/dev/null");
    auto at = r.out.find("lladdr ");
    return at == std::string::npos ? "" : r.out.substr(at + 7, 17);
}

bool Zone::hubAnswers(std::chrono::milliseconds timeout) const {
    bool ok = false;
    testsupport::inNetns(client_, [&] {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return;
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(kHubPort);
        ::inet_pton(AF_INET, kFloatingIp.c_str(), &to.sin_addr);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {
            ok = true;
        } else if (errno == EINPROGRESS) {
            pollfd p{fd, POLLOUT, 0};
            int err = 0;
            socklen_t len = sizeof err;
            ok = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
                 ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
        }
        ::close(fd);
    });
    return ok;
}

} // namespace pcloud::etcdtest
