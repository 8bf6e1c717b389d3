// dped signs what it sends to agents when it has a key (ReactorConfig::signer): every
// command on pcloud.agent.<assembly> is an envelope that the agent's verifier accepts for
// agent:<assembly> and nothing else, with the command body inside unchanged.
#include "dped/reactor.h"
#include "fakes.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
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

// node01's agent says hello: the reactor answers with a watch, an agent command.
void helloFromNode01(FakeBus& bus, dped::Reactor& r) {
    proto::Hello h;
    h.assembly = "node01";
    h.backend = "process";
    bus.subs.at("pcloud.reports.node01")(
        bus::Message{"pcloud.reports.node01", proto::encodeHello(h)});
    r.step();
}

// Every command sent to node01's agent, each with its envelope as that agent verifies it
// (against `agent`, one replay cache for all, as the agent keeps).
struct SentCommand {
    std::string body;
    envelope::VerifyResult verdict;
};
std::vector<SentCommand> agentCommands(const FakeBus& bus, const envelope::Trust& agent, Millis now,
                                       envelope::ReplayCache& cache) {
    std::vector<SentCommand> out;
    for (const auto& [address, body] : bus.sent)
        if (address == "pcloud.agent.node01")
            out.push_back({body, envelope::verify(body, agent, now, cache)});
    return out;
}

// dped:web signing at epoch 7 over fake ports; make() builds the reactor from `rc` once the
// test has adjusted it, and starts it.
struct DpedSigned : ::testing::Test {
    testpki::TestPki pki{"dped-signed"}; // its own temp dir per test
    std::string dir = "/tmp/dped-signed-test-" + std::to_string(::getpid());
    ManualClock clock{SystemClock().nowMs()};
    FakeHv hv;
    FakeBus bus;
    FakeWatch watch;
    policy::ZeroJitter jitter;
    dped::ReactorConfig rc{"web", dir, {}, {}};
    std::shared_ptr<const envelope::Signer> signer;
    std::optional<envelope::CaStore> ca; // the test PKI's CA, what receivers verify against
    std::unique_ptr<dped::Reactor> reactor;

    void SetUp() override {
        pki.issue("dped:web");
        clock.set(SystemClock().nowMs()); // not before the certificate just issued
        auto s = envelope::Signer::load(pki.keyPath("dped:web"), pki.certPath("dped:web"));
        ASSERT_TRUE(s) << s.error().describe();
        signer = std::make_shared<const envelope::Signer>(std::move(*s));
        auto c = envelope::CaStore::loadFile(pki.caCert());
        ASSERT_TRUE(c) << c.error().describe();
        ca = std::move(*c);
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        rc.signer = signer;
        rc.epoch = 7;
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    void make() {
        reactor = std::make_unique<dped::Reactor>(rc, oneAssembly(), clock, hv, bus, watch, nullptr,
                                                  jitter);
        ASSERT_TRUE(reactor->start().ok());
    }
};

TEST_F(DpedSigned, EveryAgentCommandIsAnEnvelopeTheAgentVerifies) {
    ASSERT_NO_FATAL_FAILURE(make());
    auto& r = *reactor;
    helloFromNode01(bus, r);

    envelope::Trust agent{*ca, "agent:node01", "web"};
    envelope::ReplayCache cache;
    auto commands = agentCommands(bus, agent, clock.nowMs(), cache);
    for (const auto& [body, v] : commands) {
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
    EXPECT_GE(commands.size(), 1u); // at least the watch after the hello
}

json request(const json& args) {
    return {{"v", 1}, {"type", "command"}, {"id", "c1"}, {"command", "epoch"}, {"args", args}};
}

// cped's "epoch" request (docs/protocol/dped.md): a raise is taken at once and the next agent
// command carries it; a lower epoch is refused naming both numbers and changes nothing; a
// bad value is a bad-field. An agent that accepted the new epoch refuses a command that an
// older leader's dped (epoch 7) still sends.
TEST_F(DpedSigned, CpedRaisesTheEpochAndTheNextAgentCommandCarriesIt) {
    std::vector<std::uint64_t> told;
    rc.epoch_raised = [&](std::uint64_t e) { told.push_back(e); };
    ASSERT_NO_FATAL_FAILURE(make());
    auto& r = *reactor;
    EXPECT_EQ(r.statusJson()["epoch"], 7);

    auto raised = json::parse(r.onCommand(request({{"epoch", 9}}).dump()));
    ASSERT_TRUE(raised["ok"].get<bool>()) << raised;
    EXPECT_EQ(raised["result"]["epoch"], 9);
    EXPECT_EQ(raised["result"]["previous"], 7);
    EXPECT_EQ(told, std::vector<std::uint64_t>{9});
    EXPECT_EQ(r.statusJson()["epoch"], 9);

    auto lower = json::parse(r.onCommand(request({{"epoch", 8}}).dump()));
    EXPECT_FALSE(lower["ok"].get<bool>());
    EXPECT_EQ(lower["error"]["code"], "stale-epoch");
    EXPECT_EQ(lower["error"]["message"],
              "refused to lower the epoch: stale epoch 8: dped web has accepted epoch 9 (a newer "
              "leader has acted)");
    auto same = json::parse(r.onCommand(request({{"epoch", 9}}).dump()));
    EXPECT_TRUE(same["ok"].get<bool>()) << same;
    for (const json& bad :
         {json{{"epoch", 0}}, json{{"epoch", -3}}, json{{"epoch", 1.5}}, json{{"epoch", "10"}},
          json::object(), json{{"epoch", 9223372036854775808ULL}}}) {
        auto b = json::parse(r.onCommand(request(bad).dump()));
        EXPECT_FALSE(b["ok"].get<bool>()) << bad;
        EXPECT_EQ(b["error"]["code"], "bad-field") << bad;
        EXPECT_NE(b["error"]["message"].get<std::string>().find("args.epoch"), std::string::npos);
    }
    EXPECT_EQ(told, std::vector<std::uint64_t>{9}); // nothing but the one raise
    EXPECT_EQ(r.statusJson()["epoch"], 9);

    // The next agent command (the watch after a hello) is signed with epoch 9.
    helloFromNode01(bus, r);
    envelope::Trust agent{*ca, "agent:node01", "web"};
    envelope::ReplayCache cache;
    auto commands = agentCommands(bus, agent, clock.nowMs(), cache);
    for (const auto& [body, v] : commands) {
        ASSERT_TRUE(std::holds_alternative<envelope::Verified>(v))
            << std::get<envelope::Rejection>(v).message;
        EXPECT_EQ(std::get<envelope::Verified>(v).fields.epoch, 9u);
    }
    EXPECT_GE(commands.size(), 1u);

    // The old leader's dped, still at epoch 7, is refused by that agent.
    envelope::Fields old;
    old.target = "agent:node01";
    old.action = "watch";
    old.msgtime = clock.nowMs();
    old.epoch = 7;
    auto zombie = signer->sign(old, R"({"v":1,"type":"watch","id":"z1","units":[]})");
    ASSERT_TRUE(zombie);
    auto refused = envelope::verify(*zombie, agent, clock.nowMs(), cache);
    ASSERT_TRUE(std::holds_alternative<envelope::Rejection>(refused));
    EXPECT_EQ(std::get<envelope::Rejection>(refused).code, envelope::Reject::StaleEpoch);
}

// Requests on pcloud.dped.web (ReactorConfig::request_trust, what dped sets on a TLS bus):
// only a signed envelope for dped:web from cped:* or operator:* is run, once, and a cped's
// only at the dped's epoch or above. Each refusal is an error reply with the envelope
// verifier's code and the request's id, and changes nothing.
TEST_F(DpedSigned, RequestsRunOnlySignedByCpedOrAnOperatorAtTheEpoch) {
    for (const char* id : {"cped:test", "cped:old", "operator:alice", "agent:node01"})
        pki.issue(id);
    clock.set(SystemClock().nowMs()); // not before the certificates just issued
    rc.request_trust = std::make_shared<const envelope::Trust>(envelope::Trust{*ca, "dped:web"});
    ASSERT_NO_FATAL_FAILURE(make());
    auto& r = *reactor;

    auto command = [](const std::string& id, const std::string& cmd, const json& args = {}) {
        return json{{"v", 1},
                    {"type", "command"},
                    {"id", id},
                    {"command", cmd},
                    {"args", args.is_null() ? json::object() : args}}
            .dump();
    };
    auto sign = [&](const std::string& who, const std::string& body, std::uint64_t epoch,
                    const std::string& action, const std::string& target = "dped:web") {
        auto s = envelope::Signer::load(pki.keyPath(who), pki.certPath(who));
        EXPECT_TRUE(s) << s.error().describe();
        envelope::Fields f;
        f.target = target;
        f.action = action;
        f.msgtime = clock.nowMs();
        f.epoch = epoch;
        auto e = s->sign(f, body);
        EXPECT_TRUE(e) << e.error().describe();
        return e ? *e : std::string();
    };
    auto ask = [&](const std::string& bytes) {
        bus::Message m{"pcloud.dped.web", bytes};
        m.replyTo = "reply-queue";
        auto reply = r.onRequest(m);
        EXPECT_TRUE(reply.has_value());
        return json::parse(reply.value_or("{}"));
    };
    // The error code of a refusal that answers request `id`.
    auto refusedWith = [](const json& reply, const std::string& id) {
        EXPECT_FALSE(reply.value("ok", true)) << reply;
        EXPECT_EQ(reply.value("id", ""), id) << reply;
        return reply["error"].value("code", "");
    };

    // Plain, as before TLS: refused, naming why.
    auto plain = ask(command("p1", "stop"));
    EXPECT_EQ(refusedWith(plain, "p1"), "unsigned");
    // cped at the dped's epoch (7): runs.
    std::string status = sign("cped:test", command("s1", "status"), 7, "status");
    auto ok = ask(status);
    EXPECT_TRUE(ok.value("ok", false)) << ok;
    EXPECT_EQ(ok["result"]["epoch"], 7);
    // The same bytes again: replayed.
    EXPECT_EQ(refusedWith(ask(status), "s1"), "replayed");
    // A cped below the dped's epoch (a leader that has been replaced), never heard before:
    // refused, both numbers named. One heard at 7 that goes back to 6: refused too.
    auto stale = ask(sign("cped:old", command("s2", "stop"), 6, "stop"));
    EXPECT_EQ(refusedWith(stale, "s2"), "stale-epoch");
    EXPECT_EQ(stale["error"]["message"],
              "stale epoch 6: dped web has accepted epoch 7 (a newer leader has acted)");
    auto back = ask(sign("cped:test", command("s2b", "stop"), 6, "stop"));
    EXPECT_EQ(refusedWith(back, "s2b"), "stale-epoch");
    // The envelope says status, the request inside says stop: refused.
    auto swapped = ask(sign("cped:test", command("s3", "stop"), 7, "status"));
    EXPECT_EQ(refusedWith(swapped, "s3"), "bad-field");
    EXPECT_NE(swapped["error"]["message"].get<std::string>().find("'status'"), std::string::npos);
    // For another dped, or from an agent: refused.
    auto other = ask(sign("cped:test", command("s4", "stop"), 7, "stop", "dped:db"));
    EXPECT_EQ(refusedWith(other, "s4"), "wrong-target");
    auto agent = ask(sign("agent:node01", command("s5", "stop"), 7, "stop"));
    EXPECT_EQ(refusedWith(agent, "s5"), "not-authorized");
    // None of those stopped anything.
    EXPECT_EQ(r.statusJson()["state"], "running");

    // An operator (no epoch: not a leader) may ask; cped raises the epoch with a signed
    // request at the new epoch, after which epoch 7 is stale.
    auto byOperator = ask(sign("operator:alice", command("o1", "status"), 0, "status"));
    EXPECT_TRUE(byOperator.value("ok", false)) << byOperator;
    auto raise = ask(sign("cped:test", command("e1", "epoch", {{"epoch", 9}}), 9, "epoch"));
    EXPECT_TRUE(raise.value("ok", false)) << raise;
    EXPECT_EQ(r.statusJson()["epoch"], 9);
    auto late = ask(sign("cped:test", command("s6", "status"), 7, "status"));
    EXPECT_EQ(refusedWith(late, "s6"), "stale-epoch");
    auto current = ask(sign("cped:test", command("s7", "status"), 9, "status"));
    EXPECT_TRUE(current.value("ok", false)) << current;
}

// In a zone cped signs each command with a ttl that ends when a newer leader may act
// (docs/ha.md "Epoch fencing", 7). dped shares cped's host and clock, so it holds a cped's
// command to that ttl exactly, without the 30 s skew allowed for other hosts' clocks: a
// command an old leader signed just before it froze is not run when it arrives late.
// Operators' commands keep the usual window.
TEST_F(DpedSigned, ACpedCommandPastItsTtlIsRefusedOnThisHostsClock) {
    for (const char* id : {"cped:test", "operator:alice"})
        pki.issue(id);
    clock.set(SystemClock().nowMs());
    rc.request_trust = std::make_shared<const envelope::Trust>(envelope::Trust{*ca, "dped:web"});
    ASSERT_NO_FATAL_FAILURE(make());
    auto signedAt = [&](const std::string& who, const std::string& id, Millis ttl) {
        auto s = envelope::Signer::load(pki.keyPath(who), pki.certPath(who));
        EXPECT_TRUE(s) << s.error().describe();
        envelope::Fields f;
        f.target = "dped:web";
        f.action = "status";
        f.msgtime = clock.nowMs();
        f.ttl = ttl;
        f.epoch = who == "cped:test" ? 7 : 0;
        auto e = s->sign(
            f, json{{"v", 1}, {"type", "command"}, {"id", id}, {"command", "status"}}.dump());
        EXPECT_TRUE(e) << e.error().describe();
        bus::Message m{"pcloud.dped.web", e ? *e : std::string()};
        m.replyTo = "reply-queue";
        return m;
    };
    auto answer = [&](const bus::Message& m) {
        return json::parse(reactor->onRequest(m).value_or("{}"));
    };
    auto inTime = signedAt("cped:test", "t1", 1500);
    clock.advance(1500);
    EXPECT_TRUE(answer(inTime).value("ok", false));
    auto late = signedAt("cped:test", "t2", 1500);
    auto byOperator = signedAt("operator:alice", "t3", 1500);
    clock.advance(1501);
    auto refused = answer(late);
    EXPECT_FALSE(refused.value("ok", true)) << refused;
    EXPECT_EQ(refused["error"].value("code", ""), "expired");
    EXPECT_EQ(refused["error"].value("message", ""),
              "signed 1501 ms ago, past its ttl of 1500 ms: its sender's term may have ended and "
              "a newer leader acted");
    EXPECT_TRUE(answer(byOperator).value("ok", false)) << "an operator's keeps the skew";
}

} // namespace
