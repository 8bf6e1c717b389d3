// The real pcloud-agent binary (process backend) talking AMQP to dped's ChannelPeer over a
// unix socket, with NO hub anywhere: its hello and heartbeats reach the real Reactor, the
// reactor's watch reaches the agent (it starts the resource), and the service report comes
// back. The agent speaks TCP and QEMU is not here, so a byte bridge stands in for QEMU
// (which is itself a byte pipe between the virtio port and the chardev socket): agent TCP
// <-> bridge <-> unix socket <-> ChannelPeer.
#include "dped/channel_peer.h"
#include "dped/inbox.h"
#include "dped/reactor.h"
#include "fakes.h"

#include "test_pki.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <atomic>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::dped::testfakes;
using namespace std::chrono_literals;

namespace {

int listenTcp(int& port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd, 4);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
}

int listenUnix(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd, 4);
    return fd;
}

// QEMU's part: accept dped on the unix socket and the agent on TCP, then copy bytes both
// ways until either side closes (then close both, as a dying qemu would).
class Bridge {
public:
    Bridge(int unixListen, int tcpListen) : ul_(unixListen), tl_(tcpListen) {
        thread_ = std::thread([this] { run(); });
    }
    ~Bridge() {
        stop_ = true;
        thread_.join();
        ::close(ul_);
        ::close(tl_);
    }
    std::atomic<std::uint64_t> bytes{0};

private:
    int acceptOne(int lfd) {
        while (!stop_) {
            pollfd p{lfd, POLLIN, 0};
            if (::poll(&p, 1, 50) == 1)
                return ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        }
        return -1;
    }
    void run() {
        int d = acceptOne(ul_);
        int a = acceptOne(tl_);
        char buf[16384];
        while (!stop_ && d >= 0 && a >= 0) {
            pollfd p[2] = {{d, POLLIN, 0}, {a, POLLIN, 0}};
            if (::poll(p, 2, 50) <= 0)
                continue;
            bool closed = false;
            for (int i = 0; i < 2; ++i) {
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t n = ::read(p[i].fd, buf, sizeof buf);
                if (n <= 0) {
                    closed = true;
                    break;
                }
                int to = i == 0 ? a : d;
                for (ssize_t off = 0; off < n;) {
                    ssize_t w =
                        ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
                    if (w <= 0) {
                        closed = true;
                        break;
                    }
                    off += w;
                }
                bytes += static_cast<std::uint64_t>(n);
            }
            if (closed)
                break;
        }
        if (d >= 0)
            ::close(d);
        if (a >= 0)
            ::close(a);
    }
    int ul_, tl_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// The reactor's Messenger as dped's runtime routes it: agent commands to the channel peer,
// everything else recorded (there is no bus).
class ChannelMessenger : public FakeBus {
public:
    dped::ChannelPeer* peer = nullptr;
    std::vector<std::string> agent_commands;
    Status send(const std::string& a, const std::string& b, const bus::Properties& p) override {
        if (a.rfind("pcloud.agent.", 0) == 0 && peer) {
            agent_commands.push_back(b);
            auto cid = p.find("correlation-id");
            return peer->send(b, cid == p.end() ? "" : cid->second);
        }
        return FakeBus::send(a, b, p);
    }
};

// Signed commands (docs/protocol/agent.md "Signed commands"): with `signer` the reactor
// signs what it sends, and with `caPath` the agent takes only commands signed by its
// deployable's dped. `refusedCode`: the agent must refuse the watch with this code instead.
struct Signing {
    std::shared_ptr<const envelope::Signer> signer;
    std::string caPath;
    std::string refusedCode;
};

void runChannelAgent(const std::string& tag, const Signing& signing = {}) {
    std::string dir = "/tmp/pcloud-chanagent-" + tag + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    int port = 0;
    int tl = listenTcp(port);
    std::string sock = dir + "/node01.sock";
    int ul = listenUnix(sock);
    ASSERT_GT(port, 0);
    Bridge bridge(ul, tl);

    // The model: one assembly whose resource is a process the agent does not know until
    // dped's watch names it.
    model::Model m;
    model::Deployable d;
    d.name = "web";
    d.assemblies = {"node01"};
    d.heartbeat_interval = 200;
    d.heartbeat_timeout = 3'000;
    m.deployables["web"] = d;
    model::Assembly a;
    a.name = "node01";
    a.domain_xml = "<domain type='qemu'><name>node01</name><devices/></domain>";
    model::Resource r;
    r.name = "svc";
    r.klass = model::ResourceClass::Process;
    r.unit = "/bin/sleep 1000";
    a.resources.push_back(r);
    m.assemblies["node01"] = a;

    SystemClock clock;
    FakeHv hv;
    hv.domains["node01"] = virt::DomainState::Running;
    ChannelMessenger messenger;
    FakeWatch watch;
    policy::ZeroJitter jitter;
    dped::Inbox inbox;
    dped::ReactorConfig rc{"web", dir, {}};
    rc.signer = signing.signer;
    dped::Reactor reactor(rc, m, clock, hv, messenger, watch, nullptr, jitter);

    dped::ChannelPeerOptions po;
    po.socket_path = sock;
    po.session.assembly = "node01";
    po.session.keys = {"node01"};
    dped::ChannelPeerCallbacks cb;
    dped::ChannelPeer* peerPtr = nullptr;
    cb.on_report = [&](std::string body) {
        inbox.post([&, body = std::move(body)] {
            reactor.onReport("node01", body, /*viaBus=*/false);
            peerPtr->reportDone(body.size());
        });
    };
    dped::ChannelPeer peer(po, cb);
    peerPtr = &peer;
    messenger.peer = &peer;
    ASSERT_TRUE(reactor.start().ok());
    ASSERT_TRUE(peer.start().ok());

    std::string conf = dir + "/agent.conf";
    std::ofstream(conf) << "connect = amqp://127.0.0.1:" << port
                        << "\nassembly = node01\nbackend = process\nheartbeat_interval = 200ms\n";
    if (!signing.caPath.empty())
        std::ofstream(conf, std::ios::app)
            << "ca = " << signing.caPath << "\ndeployable = web\nrun_dir = none\n";
    std::string log = dir + "/agent.log";
    pid_t agent = ::fork();
    if (agent == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execl(PCLOUD_AGENT_BIN, PCLOUD_AGENT_BIN, "--config", conf.c_str(), "--log-level", "info",
                static_cast<char*>(nullptr));
        _exit(127);
    }
    ASSERT_GT(agent, 0);

    // The reactor's loop, as runtime.cc runs it, until the condition holds or the deadline.
    auto runUntil = [&](auto cond, std::chrono::seconds timeout) {
        auto end = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < end) {
            bool stop = false;
            for (auto& f : inbox.wait(std::chrono::steady_clock::now() + 50ms, stop))
                f();
            reactor.step();
            if (cond())
                return true;
        }
        return false;
    };
    auto oa = [&]() -> const policy::ObservedAssembly& {
        return reactor.observed().assemblies.at("node01");
    };
    auto agentLog = [&] {
        std::ifstream in(log);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    // The first heartbeat, then three more (the agent beats every 200 ms, as watched), and
    // the resource the watch named running.
    ASSERT_TRUE(runUntil(
        [&] { return reactor.observed().assemblies.count("node01") && oa().heartbeat_seq > 0; },
        30s))
        << agentLog();
    std::uint64_t first = oa().heartbeat_seq;
    if (!signing.refusedCode.empty()) {
        // The agent refuses the watch: it is never told about svc, which never runs.
        bool refused = runUntil(
            [&] { return agentLog().find("code=" + signing.refusedCode) != std::string::npos; },
            30s);
        EXPECT_TRUE(refused) << agentLog();
        EXPECT_TRUE(oa().services.count("svc") == 0 ||
                    oa().services.at("svc").state != policy::ServiceState::Active);
        ::kill(agent, SIGTERM);
        ::waitpid(agent, nullptr, 0);
        if (!::testing::Test::HasFailure())
            std::filesystem::remove_all(dir);
        return;
    }
    bool ok = runUntil(
        [&] {
            return oa().heartbeat_seq >= first + 3 && oa().services.count("svc") > 0 &&
                   oa().services.at("svc").state == policy::ServiceState::Active;
        },
        30s);
    EXPECT_TRUE(ok) << "seq=" << oa().heartbeat_seq << " first=" << first << "\nagent log:\n"
                    << agentLog();
    // The watch went to the agent over the channel, and nothing went to any hub.
    ASSERT_FALSE(messenger.agent_commands.empty());
    EXPECT_NE(messenger.agent_commands[0].find("\"watch\""), std::string::npos);
    auto status = reactor.statusJson();
    EXPECT_EQ(status["assemblies"][0]["agent"], "connected");
    EXPECT_GT(bridge.bytes.load(), 0u);
    EXPECT_EQ(peer.stats().dropped_connections, 0u);

    if (signing.signer) {
        EXPECT_NE(messenger.agent_commands[0].find("\"type\":\"signed\""), std::string::npos);
        EXPECT_NE(agentLog().find("Signed command verified"), std::string::npos) << agentLog();
    }

    ::kill(agent, SIGTERM);
    ::waitpid(agent, nullptr, 0);
    if (!::testing::Test::HasFailure())
        std::filesystem::remove_all(dir);
}

TEST(ChannelAgent, RealAgentReachesTheReactorWithNoHub) {
    runChannelAgent("plain");
}

// The same over the guest channel with signed commands: the agent, configured with the CA,
// runs the watch dped:web signed; signed by another deployable's dped it refuses it.
TEST(ChannelAgent, SignedWatchFromItsDpedRunsAndAnotherDpedsIsRefused) {
    testpki::TestPki pki("channel");
    pki.issue("dped:web");
    pki.issue("dped:db");
    auto signer = [&](const std::string& id) {
        auto s = envelope::Signer::load(pki.keyPath(id), pki.certPath(id));
        EXPECT_TRUE(s) << s.error().describe();
        return std::make_shared<const envelope::Signer>(*s);
    };
    runChannelAgent("signed", Signing{signer("dped:web"), pki.caCert(), ""});
    runChannelAgent("foreign", Signing{signer("dped:db"), pki.caCert(), "not-authorized"});
}

} // namespace
