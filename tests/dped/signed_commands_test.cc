// dped signs what it sends to agents when it has a key (ReactorConfig::signer): every
// command on pcloud.agent.<assembly> is an envelope that the agent's verifier accepts for
// agent:<assembly> and nothing else, with the command body inside unchanged.
#include "dped/reactor.h"
#include "fakes.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <unistd.h>

using namespace pcloud;
using nlohmann::json;
using namespace pcloud::dped::testfakes;

namespace {

model::Model oneAssembly() {
    model::Model m;
    model::Deployable d;
    d.name = "web";
    d.assemblies = {"node01"};
    d.referee.driver = "log";
    m.deployables["web"] = d;
    model::Assembly a;
    a.name = "node01";
    a.domain_xml = "<domain type='qemu'><name>node01-dom</name><devices/></domain>";
    model::Resource r;
    r.name = "httpd";
    r.klass = model::ResourceClass::Process;
    r.unit = "/bin/busybox httpd -f -p 80";
    a.resources.push_back(r);
    m.assemblies["node01"] = a;
    return m;
}

TEST(DpedSigned, EveryAgentCommandIsAnEnvelopeTheAgentVerifies) {
    testpki::TestPki pki("dped");
    pki.issue("dped:web");
    auto signer = envelope::Signer::load(pki.keyPath("dped:web"), pki.certPath("dped:web"));
    ASSERT_TRUE(signer) << signer.error().describe();
    std::string dir = "/tmp/dped-signed-test-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);

    ManualClock clock{SystemClock().nowMs()};
    FakeHv hv;
    FakeBus bus;
    FakeWatch watch;
    policy::ZeroJitter jitter;
    dped::ReactorConfig rc{"web", dir, {}, {}};
    rc.signer = std::make_shared<const envelope::Signer>(*signer);
    rc.epoch = 7;
    dped::Reactor r(rc, oneAssembly(), clock, hv, bus, watch, nullptr, jitter);
    ASSERT_TRUE(r.start().ok());
    proto::Hello h;
    h.assembly = "node01";
    h.backend = "process";
    bus.subs.at("pcloud.reports.node01")(
        bus::Message{"pcloud.reports.node01", proto::encodeHello(h)});
    r.step();

    auto ca = envelope::CaStore::loadFile(pki.caCert());
    ASSERT_TRUE(ca);
    envelope::Trust agent{*ca, "agent:node01", "web"};
    envelope::ReplayCache cache;
    int commands = 0;
    for (const auto& [address, body] : bus.sent) {
        if (address != "pcloud.agent.node01")
            continue;
        ++commands;
        auto v = envelope::verify(body, agent, clock.nowMs(), cache);
        ASSERT_TRUE(std::holds_alternative<envelope::Verified>(v))
            << std::get<envelope::Rejection>(v).message;
        const auto& ok = std::get<envelope::Verified>(v);
        EXPECT_EQ(ok.fields.sender, "dped:web");
        EXPECT_EQ(ok.fields.epoch, 7u);
        EXPECT_EQ(ok.fields.ttl, rc.command_ttl);
        auto cmd = proto::decodeCommand(ok.body, 65536, clock.nowMs());
        ASSERT_TRUE(std::holds_alternative<proto::Command>(cmd)) << ok.body;
        EXPECT_EQ(ok.fields.action, proto::toString(std::get<proto::Command>(cmd).type));
        // Another agent refuses it.
        envelope::Trust other{*ca, "agent:node02", "web"};
        envelope::ReplayCache otherCache;
        auto wrong = envelope::verify(body, other, clock.nowMs(), otherCache);
        ASSERT_TRUE(std::holds_alternative<envelope::Rejection>(wrong));
        EXPECT_EQ(std::get<envelope::Rejection>(wrong).code, envelope::Reject::WrongTarget);
    }
    EXPECT_GE(commands, 1); // at least the watch after the hello
    std::filesystem::remove_all(dir);
}

} // namespace
