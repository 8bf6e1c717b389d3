// pcloud-node: the node protocol's decoders, the epoch floor, the service in-process on
// libvirt's test driver, and the real pcloud-node process on the real hub driven by dped's
// RemoteNode (the Hypervisor dped uses with --node).
#include "bus/hub.h"
#include "common/fs.h"
#include "dped/reactor.h"
#include "dped/remote_node.h"
#include "node/node_main.h"
#include "node/node_service.h"
#include "pki/pki.h"
#include "store/store.h"
#include "support/test_support.h"
#include "virt/libvirt_hypervisor.h"
#include "virt/node_protocol.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <future>
#include <mutex>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;
namespace nodep = pcloud::virt::node;
using nlohmann::json;
using pcloud::testsupport::freePort;
using pcloud::testsupport::spawnLogged;
using pcloud::testsupport::waitFor;

namespace {

const std::string kBin = PCLOUD_BIN_DIR;

std::string tempDir(const std::string& tag) {
    std::string d = "/tmp/pcloud-node-test-" + tag + "-" + std::to_string(::getpid());
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

// A minimal domain for libvirt's test driver.
std::string testDomainXml(const std::string& name) {
    return "<domain type='test'><name>" + name +
           "</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>";
}

std::string request(nodep::Op op, const std::string& domain, std::uint64_t epoch = 0,
                    const std::string& xml = {}, std::int64_t pid = 0) {
    nodep::Request q;
    q.id = "r1";
    q.op = op;
    q.sender = "dped:web";
    q.epoch = epoch;
    q.domain = domain;
    q.xml = xml;
    q.pid = pid;
    return nodep::encode(q);
}

} // namespace

// --- the protocol -------------------------------------------------------------------------

TEST(NodeProtocol, RequestsRoundTrip) {
    nodep::Request q;
    q.id = "a-1";
    q.op = nodep::Op::WatchPid;
    q.sender = "dped:web";
    q.epoch = 42;
    q.domain = "web1";
    q.pid = 1234;
    auto d = nodep::decodeRequest(nodep::encode(q));
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->id, "a-1");
    EXPECT_EQ(d->op, nodep::Op::WatchPid);
    EXPECT_EQ(d->sender, "dped:web");
    EXPECT_EQ(d->epoch, 42u);
    EXPECT_EQ(d->domain, "web1");
    EXPECT_EQ(d->pid, 1234);
}

TEST(NodeProtocol, BadRequestsNameWhatIsWrong) {
    struct Case {
        std::string body, expect;
    };
    std::vector<Case> cases = {
        {"not json", "not a JSON object"},
        {R"({"v":2,"type":"node-request"})", "unsupported version"},
        {R"({"v":1,"type":"reply"})", "\"type\" must be \"node-request\""},
        {R"({"v":1,"type":"node-request","id":"x","op":"format-disk","sender":"s","epoch":0})",
         "unknown \"op\" \"format-disk\""},
        {R"({"v":1,"type":"node-request","id":"x","op":"destroy","sender":"s","epoch":0})",
         "missing \"domain\""},
        {R"({"v":1,"type":"node-request","id":"x","op":"destroy","sender":"s","epoch":-1,)"
         R"("domain":"d"})",
         "\"epoch\" must be an integer >= 0"},
        {R"({"v":1,"type":"node-request","id":"x","op":"watch-pid","sender":"s","epoch":0,)"
         R"("domain":"d"})",
         "missing \"pid\""},
        {R"({"v":1,"type":"node-request","id":"x","op":"define-and-start","sender":"s",)"
         R"("epoch":0})",
         "missing \"xml\""},
        {R"({"v":1,"type":"node-request","id":"x","op":"lookup","sender":"s","epoch":0,)"
         R"("domain":"a\u0001b"})",
         "control character"},
    };
    for (const auto& c : cases) {
        auto d = nodep::decodeRequest(c.body);
        ASSERT_FALSE(d.ok()) << c.body;
        EXPECT_NE(d.error().message.find(c.expect), std::string::npos)
            << c.body << " -> " << d.error().message;
    }
    std::string huge(300 * 1024, 'x');
    auto d = nodep::decodeRequest(request(nodep::Op::DefineAndStart, "", 0, huge));
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.error().message.find("\"xml\" is longer than"), std::string::npos);
}

TEST(NodeProtocol, EventsAndRepliesRoundTrip) {
    nodep::Event e;
    e.node = "h1";
    e.seq = 7;
    e.boot = "b";
    e.kind = nodep::EventKind::Heartbeat;
    e.interval_ms = 500;
    e.facts.cpus = 2;
    e.facts.running = {"a", "b"};
    auto d = nodep::decodeEvent(nodep::encode(e));
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->seq, 7u);
    EXPECT_EQ(d->facts.running, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(d->interval_ms, 500);

    e.kind = nodep::EventKind::Domain;
    e.domain.domain = "web1";
    e.domain.kind = virt::DomainEventKind::Stopped;
    e.domain.detail = "destroyed";
    d = nodep::decodeEvent(nodep::encode(e));
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->domain.domain, "web1");
    EXPECT_EQ(d->domain.kind, virt::DomainEventKind::Stopped);

    // A death heard as it began carries its signal; an out-of-range one is refused by name.
    e.kind = nodep::EventKind::PidExit;
    e.key = "web1";
    e.pid = 4242;
    e.signal = 9;
    std::string wire = nodep::encode(e);
    d = nodep::decodeEvent(wire);
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->signal, 9);
    EXPECT_EQ(d->pid, 4242);
    auto bogus = nodep::decodeEvent(wire.replace(wire.find("\"signal\":9"), 10, "\"signal\":99"));
    ASSERT_FALSE(bogus.ok());
    EXPECT_NE(bogus.error().describe().find("\"signal\" must be 0-64"), std::string::npos)
        << bogus.error().describe();

    nodep::Reply r;
    r.id = "x";
    r.ok = true;
    virt::DomainInfo info;
    info.name = "web1";
    info.state = virt::DomainState::Running;
    r.domain = info;
    auto rd = nodep::decodeReply(nodep::encode(r));
    ASSERT_TRUE(rd.ok()) << rd.error().describe();
    ASSERT_TRUE(rd->domain);
    EXPECT_EQ(rd->domain->state, virt::DomainState::Running);
    auto bad = nodep::decodeReply(R"({"v":1,"type":"node-reply","ok":false})");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("needs an \"error\" object"), std::string::npos);
}

// --- the command line ----------------------------------------------------------------------

namespace {
Result<node::Options> parseNode(std::vector<std::string> args) {
    args.insert(args.begin(), "pcloud-node");
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    return node::parseOptions(static_cast<int>(argv.size()), argv.data());
}
} // namespace

TEST(NodeOptions, BothSpellingsAndBadValuesNamed) {
    auto o = parseNode({"--name", "h1", "--heartbeat-ms=250", "--uri", "qemu:///system"});
    ASSERT_TRUE(o.ok()) << o.error().describe();
    EXPECT_EQ(o->name, "h1");
    EXPECT_EQ(o->heartbeat_ms, 250);
    EXPECT_EQ(o->uri, "qemu:///system");
    for (const std::string v : {"49", "60001", "1s", ""}) {
        auto bad = parseNode({"--name", "h1", "--heartbeat-ms=" + v});
        ASSERT_FALSE(bad.ok()) << v;
        EXPECT_NE(bad.error().message.find("--heartbeat-ms '" + v + "'"), std::string::npos)
            << bad.error().message;
    }
    auto unknown = parseNode({"--name", "h1", "--fence"});
    ASSERT_FALSE(unknown.ok());
    EXPECT_NE(unknown.error().message.find("unknown option '--fence'"), std::string::npos);
    auto noName = parseNode({});
    ASSERT_FALSE(noName.ok());
    EXPECT_NE(noName.error().message.find("--name HOST is required"), std::string::npos);
    auto badName = parseNode({"--name", "../h1"});
    ASSERT_FALSE(badName.ok());
    EXPECT_NE(badName.error().message.find("invalid host name"), std::string::npos);
    auto help = parseNode({"--help"});
    ASSERT_FALSE(help.ok());
    EXPECT_EQ(help.error().file, "help");
}

// --- the epoch floor ----------------------------------------------------------------------

TEST(EpochFloor, RefusesLowerEpochsAndRemembersAcrossRestarts) {
    auto dir = tempDir("epoch");
    const std::string path = dir + "/node-h1.epoch";
    {
        auto f = node::EpochFloor::load(path);
        ASSERT_TRUE(f.ok());
        EXPECT_EQ(f->value(), 0u);
        EXPECT_TRUE(f->admit(0).ok());
        EXPECT_TRUE(f->admit(5).ok());
        EXPECT_TRUE(f->admit(5).ok());
        auto st = f->admit(4);
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("stale epoch 4: this node has accepted epoch 5"),
                  std::string::npos)
            << st.error().message;
    }
    auto again = node::EpochFloor::load(path);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->value(), 5u);
    EXPECT_FALSE(again->admit(3).ok());
    // A damaged file stops the node, naming the file.
    ASSERT_TRUE(fs::writeAtomic(path, "5x\n").ok());
    auto damaged = node::EpochFloor::load(path);
    ASSERT_FALSE(damaged.ok());
    EXPECT_EQ(damaged.error().file, path);
    EXPECT_NE(damaged.error().message.find("damaged"), std::string::npos);
    std::filesystem::remove_all(dir);
}

// --- the service in-process, on libvirt's test driver --------------------------------------

class NodeServiceTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(hv_.open("test:///default").ok());
        dir_ = tempDir("svc");
        auto f = node::EpochFloor::load(dir_ + "/epoch");
        ASSERT_TRUE(f.ok());
        floor_.emplace(std::move(*f));
        node::HostProbe probe;
        probe.facts = [] {
            nodep::HostFacts f;
            f.cpus = 2;
            return f;
        };
        service_.emplace(node::NodeServiceConfig{"h1", "boot1", {}, 1000}, hv_, jobs_, *floor_,
                         probe, [this](const std::string& body) {
                             std::lock_guard lock(mu_);
                             published_.push_back(body);
                         });
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    nodep::Reply ask(const std::string& body) {
        std::string out;
        service_->handle(body, [&out](const std::string& b) { out = b; });
        auto r = nodep::decodeReply(out);
        EXPECT_TRUE(r.ok()) << out;
        return r.ok() ? *r : nodep::Reply{};
    }

    virt::LibvirtHypervisor hv_;
    InlineJobRunner jobs_;
    std::string dir_;
    std::optional<node::EpochFloor> floor_;
    std::optional<node::NodeService> service_;
    std::mutex mu_;
    std::vector<std::string> published_;
};

TEST_F(NodeServiceTest, DrivesTheHypervisor) {
    auto r = ask(request(nodep::Op::Lookup, "test"));
    ASSERT_TRUE(r.ok) << r.message;
    ASSERT_TRUE(r.domain);
    EXPECT_EQ(r.domain->state, virt::DomainState::Running);

    r = ask(request(nodep::Op::DefineAndStart, "", 0, testDomainXml("nodet1")));
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.domain->name, "nodet1");
    EXPECT_EQ(r.domain->state, virt::DomainState::Running);
    r = ask(request(nodep::Op::Destroy, "nodet1"));
    ASSERT_TRUE(r.ok) << r.message;
    r = ask(request(nodep::Op::Lookup, "nodet1"));
    EXPECT_EQ(r.domain->state, virt::DomainState::Shutoff);
    r = ask(request(nodep::Op::Undefine, "nodet1"));
    ASSERT_TRUE(r.ok) << r.message;
    r = ask(request(nodep::Op::Lookup, "nodet1"));
    EXPECT_EQ(r.domain->state, virt::DomainState::Missing);

    r = ask(request(nodep::Op::Facts, ""));
    ASSERT_TRUE(r.ok);
    ASSERT_TRUE(r.facts);
    EXPECT_EQ(r.facts->cpus, 2);
    EXPECT_EQ(service_->refused(), 0u);
}

TEST_F(NodeServiceTest, RefusesWhatTheHostDoesNotAllow) {
    // <qemu:commandline> is refused under the default host configuration (promise 2).
    std::string xml = "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
                      "<name>evil</name><memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                      "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline></domain>";
    auto r = ask(request(nodep::Op::DefineAndStart, "", 0, xml));
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.code, "refused");
    EXPECT_NE(r.message.find("domain evil"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("qemu_commandline"), std::string::npos) << r.message;
    EXPECT_EQ(ask(request(nodep::Op::Lookup, "evil")).domain->state, virt::DomainState::Missing);

    // A name outside the grammar never reaches libvirt.
    r = ask(request(nodep::Op::Destroy, "../etc"));
    EXPECT_EQ(r.code, "bad-request");
    // The pid to watch must be the domain's qemu: the test driver has none.
    r = ask(request(nodep::Op::WatchPid, "test", 0, {}, 1));
    EXPECT_FALSE(r.ok);
    // Unknown op, from the wire.
    std::string out;
    service_->handle(R"({"v":1,"type":"node-request","id":"z","op":"rm-rf","sender":"x",)"
                     R"("epoch":0})",
                     [&out](const std::string& b) { out = b; });
    auto bad = nodep::decodeReply(out);
    ASSERT_TRUE(bad.ok());
    EXPECT_EQ(bad->code, "bad-request");
    EXPECT_NE(bad->message.find("rm-rf"), std::string::npos);
    EXPECT_EQ(service_->refused(), 3u); // the watch reached libvirt, which has no pid
}

TEST_F(NodeServiceTest, AStaleEpochChangesNothing) {
    ASSERT_TRUE(ask(request(nodep::Op::Lookup, "test", 7)).ok);
    auto r = ask(request(nodep::Op::Destroy, "test", 6));
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.code, "stale-epoch");
    EXPECT_EQ(r.epoch, 7u);
    EXPECT_EQ(service_->staleEpochs(), 1u);
    EXPECT_EQ(ask(request(nodep::Op::Lookup, "test", 7)).domain->state, virt::DomainState::Running);
}

TEST_F(NodeServiceTest, PublishesNumberedEvents) {
    service_->heartbeat();
    virt::PidExit exit;
    exit.key = "web1";
    exit.pid = 99;
    exit.signal = 9;
    service_->onPidExit(exit);
    std::lock_guard lock(mu_);
    ASSERT_EQ(published_.size(), 2u);
    auto a = nodep::decodeEvent(published_[0]);
    auto b = nodep::decodeEvent(published_[1]);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->kind, nodep::EventKind::Heartbeat);
    EXPECT_EQ(a->facts.cpus, 2);
    EXPECT_EQ(b->kind, nodep::EventKind::PidExit);
    EXPECT_EQ(b->seq, a->seq + 1);
    EXPECT_EQ(b->boot, "boot1");
    EXPECT_EQ(b->pid, 99);
    EXPECT_EQ(b->signal, 9);
}

// --- the real pcloud-node process on the real hub, driven by RemoteNode ---------------------

namespace {

class Recorder final : public virt::HypervisorListener {
public:
    void onDomainEvent(const virt::DomainEvent& e) override {
        std::lock_guard lock(mu);
        events.push_back(e);
    }
    void onInfrastructureDown(const std::string& reason) override {
        std::lock_guard lock(mu);
        ++downs;
        last_down = reason;
    }
    void onInfrastructureUp() override {
        std::lock_guard lock(mu);
        ++ups;
    }
    bool saw(const std::string& domain, virt::DomainEventKind kind) {
        std::lock_guard lock(mu);
        for (const auto& e : events)
            if (e.domain == domain && e.kind == kind)
                return true;
        return false;
    }
    int upCount() {
        std::lock_guard lock(mu);
        return ups;
    }
    int downCount() {
        std::lock_guard lock(mu);
        return downs;
    }
    std::mutex mu;
    std::vector<virt::DomainEvent> events;
    int ups = 0, downs = 0;
    std::string last_down;
};

} // namespace

// Over mutual TLS, as cped runs it: the hub presents cped:hub, the test's client is
// dped:web and the node node:h1, and each may use only its own addresses (bus/authz.h).
class NodeProcessTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(std::filesystem::exists(kBin + "/pcloud-node")) << "build pcloud-node first";
        dir_ = tempDir("proc");
        pki_ = dir_ + "/pki";
        ASSERT_TRUE(pki::initCa(pki_).ok());
        for (const char* id : {"cped:hub", "dped:web", "node:h1", "agent:w1"})
            ASSERT_TRUE(pki::issue(pki_, *pki::parseIdentity(id)).ok()) << id;
        bus::HubOptions ho;
        ho.tls.caFile = pki_ + "/ca.crt";
        ho.tls.certFile = pki_ + "/cped.hub.crt";
        ho.tls.keyFile = pki_ + "/cped.hub.key";
        hub_.emplace(ho);
        ASSERT_TRUE(hub_->start("amqps://127.0.0.1:0").ok());
        ASSERT_TRUE(client_.connect(clientOptions("dped.web")).ok());
        ASSERT_TRUE(client_.waitConnected(10s));
    }
    void TearDown() override {
        stopNode(SIGKILL);
        client_.close();
        hub_->stop();
        if (!HasFailure())
            std::filesystem::remove_all(dir_);
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(hub_->boundPort()); }
    bus::ClientOptions clientOptions(const std::string& who) const {
        bus::ClientOptions o;
        o.url = url();
        o.caFile = pki_ + "/ca.crt";
        o.certFile = pki_ + "/" + who + ".crt";
        o.keyFile = pki_ + "/" + who + ".key";
        return o;
    }
    void startNode() {
        log_ = dir_ + "/node." + std::to_string(++runs_) + ".log";
        pid_ = spawnLogged(kBin + "/pcloud-node",
                           {"pcloud-node", "--name", "h1", "--uri", "test:///default", "--broker",
                            url(), "--bus-ca", pki_ + "/ca.crt", "--bus-cert",
                            pki_ + "/node.h1.crt", "--bus-key", pki_ + "/node.h1.key",
                            "--state-dir", dir_, "--heartbeat-ms", "100", "--log-level", "info"},
                           log_);
        ASSERT_GT(pid_, 0);
    }
    void stopNode(int sig) {
        if (pid_ <= 0)
            return;
        ::kill(pid_, sig);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    std::string nodeLog() {
        auto t = fs::readFile(log_);
        return t ? *t : std::string();
    }

    std::optional<bus::Hub> hub_;
    bus::Client client_;
    std::string dir_, pki_, log_;
    pid_t pid_ = -1;
    int runs_ = 0;
};

TEST_F(NodeProcessTest, RemoteNodeDrivesTheHostAndSeesItsEvents) {
    startNode();
    Recorder rec;
    dped::RemoteNodeOptions o;
    o.host = "h1";
    o.sender = "dped:web";
    o.silence_ms = 1000;
    dped::RemoteNode remote(client_, o);
    remote.setListener(&rec);
    remote.start();
    ASSERT_TRUE(waitFor([&] { return remote.nodeUp(); }, 20s)) << nodeLog();
    EXPECT_EQ(rec.upCount(), 1);
    EXPECT_GE(remote.facts().cpus, 1);
    EXPECT_EQ(remote.facts().libvirt_uri, "test:///default");

    // Each node process has its own test driver: it starts with the driver's "test" domain.
    auto info = remote.lookup("test");
    ASSERT_TRUE(info.ok()) << info.error().describe();
    EXPECT_EQ(info->state, virt::DomainState::Running);

    auto started = remote.defineAndStart(testDomainXml("remote1"));
    ASSERT_TRUE(started.ok()) << started.error().describe();
    EXPECT_EQ(started->state, virt::DomainState::Running);
    ASSERT_TRUE(waitFor([&] { return rec.saw("remote1", virt::DomainEventKind::Started); }, 10s));
    ASSERT_TRUE(remote.destroy("remote1").ok());
    ASSERT_TRUE(waitFor([&] { return rec.saw("remote1", virt::DomainEventKind::Stopped); }, 10s));
    EXPECT_EQ(remote.lookup("remote1")->state, virt::DomainState::Shutoff);
    ASSERT_TRUE(waitFor(
        [&] {
            auto f = remote.facts().running;
            return std::find(f.begin(), f.end(), "remote1") == f.end() &&
                   std::find(f.begin(), f.end(), "test") != f.end();
        },
        5s));

    // A refusal comes back as an error naming the node and the rule.
    auto refused = remote.defineAndStart(
        "<domain type='test' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>evil</name><memory unit='MiB'>64</memory><os><type>hvm</type></os>"
        "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline></domain>");
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("node h1 refused (refused)"), std::string::npos)
        << refused.error().message;
    EXPECT_EQ(remote.lookup("evil")->state, virt::DomainState::Missing);

    // kill -9 of the node: an infrastructure outage, and every call fails at once.
    stopNode(SIGKILL);
    ASSERT_TRUE(waitFor([&] { return !remote.nodeUp(); }, 5s));
    EXPECT_EQ(rec.downCount(), 1);
    auto t0 = std::chrono::steady_clock::now();
    auto down = remote.lookup("test");
    EXPECT_FALSE(down.ok());
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    EXPECT_NE(down.error().message.find("not answering"), std::string::npos);

    // A new node process is heard again: up once more.
    startNode();
    ASSERT_TRUE(waitFor([&] { return remote.nodeUp(); }, 20s)) << nodeLog();
    EXPECT_EQ(rec.upCount(), 2);
    EXPECT_TRUE(remote.lookup("test").ok());
}

TEST_F(NodeProcessTest, AControllerWithAnOldEpochIsRefusedAfterANewerOneActed) {
    startNode();
    dped::RemoteNodeOptions newer;
    newer.host = "h1";
    newer.sender = "dped:web";
    newer.epoch = 9;
    dped::RemoteNode leader(client_, newer);
    leader.start();
    ASSERT_TRUE(waitFor([&] { return leader.nodeUp(); }, 20s)) << nodeLog();
    ASSERT_TRUE(leader.lookup("test").ok());

    dped::RemoteNodeOptions older = newer;
    older.epoch = 8;
    dped::RemoteNode zombie(client_, older);
    zombie.start();
    ASSERT_TRUE(waitFor([&] { return zombie.nodeUp(); }, 20s));
    auto st = zombie.destroy("test");
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("stale-epoch"), std::string::npos) << st.error().message;
    EXPECT_EQ(leader.lookup("test")->state, virt::DomainState::Running);

    // The floor survives a restart of the node.
    stopNode(SIGTERM);
    startNode();
    // (Right after the restart the zombie may first see the node as down: "not answering".)
    std::string last;
    EXPECT_TRUE(waitFor(
        [&] {
            auto again = zombie.lookup("test");
            last = again.ok() ? "accepted" : again.error().message;
            return last.find("stale-epoch") != std::string::npos;
        },
        20s))
        << last;
    EXPECT_NE(nodeLog().find("epoch=9"), std::string::npos) << nodeLog();
}

// The real dped with --node and --epoch (docs/ha.md "Epoch fencing"): its requests carry
// the epoch to the real pcloud-node, which keeps it as its floor; a dped of an older leader
// (epoch 4) is then refused there, and says so in its log with both numbers.
TEST_F(NodeProcessTest, ADpedCarriesItsEpochToTheNodeAndAnOlderOneIsRefused) {
    ASSERT_TRUE(std::filesystem::exists(kBin + "/dped")) << "build dped first";
    startNode();
    const std::string state = dir_ + "/dped";
    std::filesystem::create_directories(state);
    model::Model m;
    model::Deployable d;
    d.name = "web";
    d.assemblies = {"n1"};
    m.deployables["web"] = d;
    model::Assembly a;
    a.name = "n1";
    a.domain_xml = testDomainXml("n1");
    m.assemblies["n1"] = a;
    ASSERT_TRUE(store::saveModel(state, m).ok());
    const std::string conf = dir_ + "/pcloud.conf";
    ASSERT_TRUE(fs::writeAtomic(conf, "pki_dir = " + pki_ + "\n").ok());
    auto dped = [&](const std::string& epoch, const std::string& log) {
        return spawnLogged(kBin + "/dped",
                           {"dped",
                            "--deployable",
                            "web",
                            "--state-dir",
                            state,
                            "--node",
                            "h1",
                            "--broker",
                            url(),
                            "--bus-ca",
                            pki_ + "/ca.crt",
                            "--bus-cert",
                            pki_ + "/dped.web.crt",
                            "--bus-key",
                            pki_ + "/dped.web.key",
                            "--config",
                            conf,
                            "--epoch",
                            epoch,
                            "--log-level",
                            "info"},
                           log);
    };
    auto stop = [](pid_t pid) {
        ::kill(pid, SIGTERM);
        int ws = 0;
        ::waitpid(pid, &ws, 0);
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    };
    auto text = [](const std::string& path) {
        auto t = fs::readFile(path);
        return t ? *t : std::string();
    };
    const std::string floorFile = dir_ + "/node-h1.epoch";

    const std::string log5 = dir_ + "/dped.5.log";
    pid_t leader = dped("5", log5);
    ASSERT_GT(leader, 0);
    ASSERT_TRUE(waitFor([&] { return text(floorFile) == "5\n"; }, 20s))
        << "floor '" << text(floorFile) << "'\n"
        << nodeLog() << text(log5);
    EXPECT_NE(nodeLog().find("sender=dped:web epoch=5"), std::string::npos) << nodeLog();
    EXPECT_NE(text(log5).find("epoch=5"), std::string::npos) << text(log5); // "dped running"
    EXPECT_EQ(stop(leader), 0) << text(log5);

    const std::string log4 = dir_ + "/dped.4.log";
    pid_t zombie = dped("4", log4);
    ASSERT_GT(zombie, 0);
    const std::string said = "The node refused this dped's epoch";
    ASSERT_TRUE(waitFor([&] { return text(log4).find(said) != std::string::npos; }, 20s))
        << text(log4) << nodeLog();
    std::string line = text(log4).substr(text(log4).find(said));
    line = line.substr(0, line.find('\n'));
    EXPECT_NE(line.find("node=h1"), std::string::npos) << line;
    EXPECT_NE(line.find("epoch=4"), std::string::npos) << line;
    EXPECT_NE(line.find("node_epoch=5"), std::string::npos) << line;
    EXPECT_NE(nodeLog().find("stale epoch 4: this node has accepted epoch 5"), std::string::npos)
        << nodeLog();
    EXPECT_EQ(text(floorFile), "5\n"); // refused: the floor stays
    // The refusal fenced the zombie off: it journals that and acts on nothing more.
    ASSERT_TRUE(waitFor([&] { return text(log4).find("state=fenced ") != std::string::npos; }, 20s))
        << text(log4);
    EXPECT_NE(text(log4).find("epoch 5 is above this dped's epoch 4"), std::string::npos)
        << text(log4);
    EXPECT_EQ(stop(zombie), 0) << text(log4);
    auto saved = json::parse(text(dped::escalationPath(state, "web")), nullptr, false);
    ASSERT_TRUE(saved.is_object()) << text(dped::escalationPath(state, "web"));
    EXPECT_EQ(saved["deployable"]["fenced_by"], 5) << saved.dump();

    // A dped of a newer leader (epoch 6) finds the fence in the saved state and lifts it: its
    // epoch is not below the one that fenced it. The node takes its commands.
    const std::string log6 = dir_ + "/dped.6.log";
    pid_t next = dped("6", log6);
    ASSERT_GT(next, 0);
    ASSERT_TRUE(waitFor([&] { return text(floorFile) == "6\n"; }, 20s))
        << "floor '" << text(floorFile) << "'\n"
        << nodeLog() << text(log6);
    EXPECT_NE(text(log6).find("state=fence-lifted"), std::string::npos) << text(log6);
    EXPECT_EQ(stop(next), 0) << text(log6);
}

TEST_F(NodeProcessTest, TheFirstRequestRightAfterTheFirstHeartbeatIsAnswered) {
    for (int round = 0; round < 5; ++round) {
        startNode();
        dped::RemoteNodeOptions o;
        o.host = "h1";
        o.sender = "dped:web";
        o.quick_timeout = 3s;
        dped::RemoteNode remote(client_, o);
        remote.start();
        ASSERT_TRUE(waitFor([&] { return remote.nodeUp(); }, 20s, 1ms)) << nodeLog();
        auto info = remote.lookup("test");
        ASSERT_TRUE(info.ok()) << "round " << round << ": " << info.error().describe() << nodeLog();
        stopNode(SIGKILL);
    }
}

// Promise 2 on the node's addresses: an agent (a guest) can neither send requests to its
// host's node nor publish events in the node's name; the hub refuses both links.
TEST_F(NodeProcessTest, AGuestCanNeitherCommandTheNodeNorForgeItsEvents) {
    startNode();
    dped::RemoteNodeOptions o;
    o.host = "h1";
    o.sender = "dped:web";
    dped::RemoteNode remote(client_, o);
    Recorder rec;
    remote.setListener(&rec);
    remote.start();
    ASSERT_TRUE(waitFor([&] { return remote.nodeUp(); }, 20s)) << nodeLog();

    bus::Client guest;
    ASSERT_TRUE(guest.connect(clientOptions("agent.w1")).ok());
    ASSERT_TRUE(guest.waitConnected(10s));
    auto r = guest.request("pcloud.node.h1", request(nodep::Op::Destroy, "test"), 2s);
    EXPECT_FALSE(r.ok());
    nodep::Event forged;
    forged.node = "h1";
    forged.seq = 1'000'000;
    forged.boot = "forged";
    forged.kind = nodep::EventKind::InfraDown;
    forged.reason = "forged by a guest";
    (void)guest.send("pcloud.nodes.h1", nodep::encode(forged));
    ASSERT_TRUE(waitFor([&] { return hub_->security().deniedLinks >= 2; }, 10s))
        << hub_->securityJson();
    EXPECT_EQ(rec.downCount(), 0); // the forged infra-down never arrived
    EXPECT_EQ(remote.lookup("test")->state, virt::DomainState::Running);
    EXPECT_EQ(nodeLog().find("op=destroy"), std::string::npos) << nodeLog();
    guest.close();
}
