// The forger of bench/forgery against a real TLS hub with authz, without QEMU: agent:a floods
// forged, replayed, malformed and oversized messages, attaches to every address it may not
// use, and unauthenticated peers (plain TCP, TLS without a certificate) hammer the port.
// Stand-ins for dped:web, agent:b and cped hold the queues the forger aims at. Nothing may
// reach them except on a:'s own report address, the hub must keep serving a legitimate
// request/reply during the flood, and every refusal must be counted on both sides.
#include "../../bench/forgery/forger.h"
#include "bus_test_util.h"
#include "common/log.h"
#include "pki/pki.h"

#include <arpa/inet.h>
#include <atomic>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>

namespace pcloud::bus::test {
namespace {

class ForgeryFlood : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-forgery-test-XXXXXX";
        root_ = ::mkdtemp(tmpl);
        pki_ = root_ + "/pki";
        ASSERT_TRUE(pki::initCa(pki_));
        for (const char* id : {"cped:hub", "agent:a", "agent:b", "dped:web"}) {
            auto parsed = pki::parseIdentity(id);
            ASSERT_TRUE(parsed) << id;
            auto r = pki::issue(pki_, *parsed);
            ASSERT_TRUE(r) << r.error().describe();
        }
        saved_ = log::level();
        log::setLevel(log::Level::Error); // the hub logs the first refusals per connection
        HubOptions o;
        o.tls.caFile = pki_ + "/ca.crt";
        o.tls.certFile = pki_ + "/cped.hub.crt";
        o.tls.keyFile = pki_ + "/cped.hub.key";
        o.authz.ownsAssembly = [](const std::string& d, const std::string& a) {
            return d == "web" && (a == "a" || a == "b");
        };
        hub_ = std::make_unique<Hub>(o);
        auto st = hub_->start("amqps://127.0.0.1:0");
        ASSERT_TRUE(st) << st.error().describe();
    }
    void TearDown() override {
        clients_.clear();
        if (hub_)
            hub_->stop();
        log::setLevel(saved_);
        std::system(("rm -rf " + root_).c_str());
    }
    Client& client(const std::string& stem) {
        ClientOptions o;
        o.url = "amqps://127.0.0.1:" + std::to_string(hub_->boundPort());
        o.caFile = pki_ + "/ca.crt";
        o.certFile = pki_ + "/" + stem + ".crt";
        o.keyFile = pki_ + "/" + stem + ".key";
        clients_.push_back(std::make_unique<Client>());
        EXPECT_TRUE(clients_.back()->connect(o));
        EXPECT_TRUE(clients_.back()->waitConnected(kDeadline)) << stem;
        return *clients_.back();
    }

    std::string root_, pki_;
    std::unique_ptr<Hub> hub_;
    std::vector<std::unique_ptr<Client>> clients_;
    log::Level saved_{};
};

TEST_F(ForgeryFlood, NothingReachesAnotherIdentitysAddressesAndTheHubKeepsServing) {
    // The victims: what a forged message must never reach.
    std::atomic<int> toAgentB{0}, toDped{0}, toCped{0}, toJournal{0}, events{0}, reportsB{0};
    std::atomic<int> reportsA{0}, legitRequests{0};
    Client& dped = client("dped.web");
    Client& agentB = client("agent.b");
    Client& cped = client("cped.hub");
    std::vector<std::uint64_t> subs{
        dped.subscribe("pcloud.reports.a", [&](const Message&) { ++reportsA; }),
        dped.subscribe("pcloud.reports.b", [&](const Message&) { ++reportsB; }),
        dped.serve("pcloud.dped.web",
                   [&](const Message& m) -> std::optional<std::string> {
                       if (m.body == "legit-status") {
                           ++legitRequests;
                           return std::string("status-ok");
                       }
                       ++toDped;
                       return std::nullopt;
                   }),
    };
    auto subB = agentB.subscribe("pcloud.agent.b", [&](const Message&) { ++toAgentB; });
    auto subC = cped.subscribe("pcloud.cped", [&](const Message&) { ++toCped; });
    auto subJ = cped.subscribe("pcloud.journal", [&](const Message&) { ++toJournal; });
    auto subE = cped.subscribe("pcloud.events", [&](const Message&) { ++events; });
    for (auto id : subs)
        ASSERT_TRUE(dped.waitSubscribed(id, kDeadline));
    ASSERT_TRUE(agentB.waitSubscribed(subB, kDeadline));
    ASSERT_TRUE(cped.waitSubscribed(subC, kDeadline));
    ASSERT_TRUE(cped.waitSubscribed(subJ, kDeadline));
    ASSERT_TRUE(cped.waitSubscribed(subE, kDeadline));

    forgery::ForgerOptions fo;
    fo.port = hub_->boundPort();
    fo.caFile = pki_ + "/ca.crt";
    fo.certFile = pki_ + "/agent.a.crt";
    fo.keyFile = pki_ + "/agent.a.key";
    fo.wrongSignerKey = fo.keyFile; // agent:a may not command anyone
    fo.wrongSignerCert = fo.certFile;
    fo.self = "a";
    fo.victim = "b";
    fo.deployable = "web";
    fo.total = 20'000;
    fo.oversizedEvery = 500;
    log::setLevel(log::Level::Warning);
    StderrCapture hubLog;
    forgery::Forger forger(fo);
    forger.start();

    // Legitimate traffic during the flood: cped asks dped:web for its status.
    int answered = 0;
    for (int i = 0; i < 5; ++i) {
        auto r = cped.request("pcloud.dped.web", "legit-status", 10s);
        ASSERT_TRUE(r) << "request " << i << " during the flood: " << r.error().describe();
        EXPECT_EQ(r->body, "status-ok");
        ++answered;
    }
    ASSERT_TRUE(waitUntil([&] { return forger.done(); }, 120s))
        << "the forger did not finish: " << forger.stats().toJson();
    forger.stop();
    auto s = forger.stats();
    // Let anything still queued at the hub arrive before counting.
    ASSERT_TRUE(waitUntil([&] { return countersOf(*hub_, "pcloud.reports.a").depth == 0; }));

    SCOPED_TRACE(s.toJson());
    EXPECT_GE(s.total, fo.total);
    EXPECT_GT(s.sent, 1000u) << "the flood did not flow";
    EXPECT_GT(s.attaches, 100u);
    EXPECT_GT(s.rejected, 0u) << "no oversized message was rejected";
    EXPECT_GT(s.tcpAttempts + s.noCertAttempts, 0u);
    // The forger's side: nothing it may not do was let through.
    EXPECT_EQ(s.creditOnDenied, 0u);
    EXPECT_EQ(s.receivedOnDenied, 0u);
    EXPECT_EQ(s.stolen, 0u);
    EXPECT_EQ(s.tcpOpened, 0u);
    EXPECT_EQ(s.noCertOpened, 0u);
    EXPECT_EQ(s.refusedOther, 0u);
    // Every attach was refused as unauthorized, but those in flight when it stopped or when
    // the hub closed its connection.
    EXPECT_GE(s.refusedUnauthorized + s.lostWithConnection + fo.deniedInFlight, s.attaches);
    // A connection that keeps attaching where it may not is closed after 100 refusals, so
    // Proton never holds more than that many dead links for one connection.
    EXPECT_GT(hub_->security().closedForDenials, 0u);
    EXPECT_GT(s.closedByHub, 0u);
    EXPECT_LE(s.attaches, (s.reconnects + 1) * (100 + 2 * fo.deniedInFlight));
    // Its warnings are bounded per identity, however often it reconnects: refused links the
    // first 10 then every 1000th, closed connections the first 5 then every 100th.
    int refusedLines = 0, closedLines = 0;
    std::istringstream lines(hubLog.text());
    for (std::string line; std::getline(lines, line);) {
        refusedLines += line.find("Hub refused a link") != std::string::npos;
        closedLines += line.find("Hub closed a connection") != std::string::npos;
    }
    EXPECT_LE(refusedLines, 10 + static_cast<int>(s.attaches / 1000));
    EXPECT_GE(refusedLines, 10);
    EXPECT_LE(closedLines, 5 + static_cast<int>(s.reconnects / 100));
    EXPECT_GE(closedLines, std::min<int>(5, static_cast<int>(s.closedByHub)));
    // The victims' side.
    EXPECT_EQ(toAgentB, 0);
    EXPECT_EQ(toDped, 0);
    EXPECT_EQ(toCped, 0);
    EXPECT_EQ(toJournal, 0);
    EXPECT_EQ(events, 0);
    EXPECT_EQ(reportsB, 0);
    EXPECT_EQ(legitRequests, answered);
    EXPECT_GT(reportsA, 0); // a's own address: delivered, for dped to judge (and drop)
    // The hub's side: refusals counted, nothing accepted on a denied address.
    auto sec = hub_->security();
    EXPECT_GE(sec.deniedLinks, s.refusedUnauthorized);
    EXPECT_GE(sec.refusedConnections + 2, s.noCertAttempts);
    auto all = hub_->counters();
    for (const char* a : {"pcloud.agent.b", "pcloud.agent.a", "pcloud.reports.b", "pcloud.cped",
                          "pcloud.dped.web", "pcloud.journal", "pcloud.events"}) {
        auto it = all.find(a);
        std::uint64_t in = it == all.end() ? 0 : it->second.in;
        std::uint64_t expected =
            std::string(a) == "pcloud.dped.web" ? static_cast<std::uint64_t>(answered) : 0;
        EXPECT_EQ(in, expected) << a;
    }
    EXPECT_GT(all["pcloud.reports.a"].rejected, 0u);
}

// An unauthenticated peer pays one TCP connect per refused connection: the hub's warnings
// for them are bounded (the first 20, then every 1000th, each reason cut to 200 characters),
// and every one is still counted.
TEST_F(ForgeryFlood, RefusedConnectionsAreAllCountedButTheirWarningsAreBounded) {
    log::setLevel(log::Level::Warning);
    StderrCapture log;
    constexpr int kPeers = 300;
    for (int i = 0; i < kPeers; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(hub_->boundPort()));
        ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        std::string garbage(512, static_cast<char>(0x80 + i % 64)); // quoted by Proton
        ASSERT_EQ(::write(fd, garbage.data(), garbage.size()),
                  static_cast<ssize_t>(garbage.size()));
        char buf[512];
        while (::read(fd, buf, sizeof buf) > 0) {
        }
        ::close(fd);
    }
    ASSERT_TRUE(waitUntil([&] { return hub_->security().refusedConnections >= kPeers; }))
        << hub_->securityJson();
    int lines = 0;
    std::istringstream in(log.text());
    for (std::string line; std::getline(in, line);) {
        if (line.find("Hub refused a connection") == std::string::npos)
            continue;
        ++lines;
        EXPECT_LT(line.size(), 600u) << line;
        if (lines == 20)
            EXPECT_NE(line.find("logged every 1000th"), std::string::npos) << line;
    }
    EXPECT_EQ(lines, 20);
}

} // namespace
} // namespace pcloud::bus::test
