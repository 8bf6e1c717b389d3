// AgentCore with signed commands: a dped-style signer (envelope::Signer with a real key and
// certificate from the openssl CLI) -> the agent's verifier, with a fake backend and an
// injected clock. A refused command gets an error reply with the envelope's code and runs
// nothing.
#include "agent/agent_core.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace pcloud;
using namespace pcloud::agent;
using nlohmann::json;

namespace {

class JobBackend : public UnitBackend {
public:
    const char* name() const override { return "process"; }
    void setWatch(const std::vector<std::string>& units,
                  const std::map<std::string, std::string>&) override {
        units_ = units;
    }
    std::vector<std::string> watched() const override { return units_; }
    std::optional<proto::UnitState> state(const std::string&) const override {
        return std::nullopt;
    }
    void runJob(JobKind kind, const std::string& unit, JobCallback) override {
        jobs.push_back(unit);
    }
    bool adopted(const std::string&) const override { return false; }
    void prepare(PollSet&, Millis) override {}
    void dispatch(const PollSet&, Millis) override {}
    std::vector<std::string> jobs;

private:
    std::vector<std::string> units_;
};

class SignedCore : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        pki_ = new testpki::TestPki("agent");
        pki_->issue("dped:web");
        pki_->issue("dped:db");
    }
    static void TearDownTestSuite() { delete pki_; }

    void SetUp() override {
        cfg.max_message_size = 8192;
        Identity id;
        id.assembly = "node01";
        core = std::make_unique<AgentCore>(cfg, id, backend, nullptr, clock, nullptr);
        backend.setListener(core.get());
        backend.setWatch({"web"}, {});
        core->onLinkUp();
        core->outbox().clear();
    }

    void requireSigned() {
        auto ca = envelope::CaStore::loadFile(pki_->caCert());
        ASSERT_TRUE(ca) << ca.error().describe();
        core->requireSignedCommands(envelope::Trust{*ca, "agent:node01", "web"});
    }

    // What dped sends: the command body inside an envelope signed by `who`.
    std::string dpedSends(const proto::Command& c, const std::string& who = "dped:web",
                          const std::string& target = "agent:node01", std::uint64_t epoch = 0) {
        auto s = envelope::Signer::load(pki_->keyPath(who), pki_->certPath(who));
        EXPECT_TRUE(s) << s.error().describe();
        envelope::Fields f;
        f.target = target;
        f.action = proto::toString(c.type);
        f.msgtime = clock.nowMs();
        f.epoch = epoch;
        auto bytes = s->sign(f, proto::encodeCommand(c));
        EXPECT_TRUE(bytes) << bytes.error().describe();
        return *bytes;
    }

    proto::Reply reply() {
        EXPECT_EQ(core->outbox().size(), 1u);
        if (core->outbox().empty())
            return {};
        auto r = proto::decodeReport(core->outbox().back().body);
        core->outbox().clear();
        EXPECT_TRUE(r && r->type == "reply");
        return r && r->type == "reply" ? std::get<proto::Reply>(r->body) : proto::Reply{};
    }

    static proto::Command restart(const std::string& id) {
        proto::Command c;
        c.type = proto::CommandType::Restart;
        c.id = id;
        c.unit = "web";
        return c;
    }

    static testpki::TestPki* pki_;
    ManualClock clock{SystemClock().nowMs()};
    AgentConfig cfg;
    JobBackend backend;
    std::unique_ptr<AgentCore> core;
};
testpki::TestPki* SignedCore::pki_ = nullptr;

TEST_F(SignedCore, ACommandSignedByItsDpedRunsAndEverythingElseIsRefusedWithTheReason) {
    requireSigned();
    ASSERT_TRUE(core->commandsSigned());
    core->onMessage(dpedSends(restart("c-1")));
    ASSERT_EQ(backend.jobs.size(), 1u);
    EXPECT_TRUE(core->outbox().empty()); // the reply comes when the job ends

    std::string good = dpedSends(restart("c-2"));
    struct Case {
        std::string what, bytes, code, id;
    };
    std::vector<Case> cases = {
        {"unsigned", proto::encodeCommand(restart("c-3")), "unsigned", "c-3"},
        {"forged body",
         [&] {
             json j = json::parse(good);
             j["body"] = proto::encodeCommand(restart("c-9"));
             return j.dump();
         }(),
         "bad-signature", "c-9"},
        {"another deployable's dped", dpedSends(restart("c-4"), "dped:db"), "not-authorized",
         "c-4"},
        {"another agent", dpedSends(restart("c-5"), "dped:web", "agent:node02"), "wrong-target",
         "c-5"},
    };
    for (const auto& c : cases) {
        core->onMessage(c.bytes);
        auto r = reply();
        EXPECT_FALSE(r.ok) << c.what;
        ASSERT_TRUE(r.error) << c.what;
        EXPECT_EQ(r.error->code, c.code) << c.what << ": " << r.error->message;
        EXPECT_EQ(r.id, c.id) << c.what;
    }
    EXPECT_EQ(backend.jobs.size(), 1u); // none of them ran

    core->onMessage(good);
    EXPECT_EQ(backend.jobs.size(), 2u);
    core->onMessage(good); // the same envelope again
    EXPECT_EQ(reply().error->code, "replayed");
    std::string late = dpedSends(restart("c-6"));
    clock.advance(30'000 + envelope::kDefaultSkew + 1);
    core->onMessage(late);
    EXPECT_EQ(reply().error->code, "expired");
    EXPECT_EQ(backend.jobs.size(), 2u);
}

TEST_F(SignedCore, TheEnvelopesActionMustBeTheCommandsType) {
    requireSigned();
    auto s = envelope::Signer::load(pki_->keyPath("dped:web"), pki_->certPath("dped:web"));
    ASSERT_TRUE(s);
    envelope::Fields f;
    f.target = "agent:node01";
    f.action = "ping"; // signed as a ping, but the body is a restart
    f.msgtime = clock.nowMs();
    core->onMessage(*s->sign(f, proto::encodeCommand(restart("c-1"))));
    auto r = reply();
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->code, "bad-field");
    EXPECT_NE(r.error->message.find("'ping'"), std::string::npos);
    EXPECT_TRUE(backend.jobs.empty());
}

TEST_F(SignedCore, SignedPingIsAnswered) {
    requireSigned();
    proto::Command ping;
    ping.type = proto::CommandType::Ping;
    ping.id = "p-1";
    core->onMessage(dpedSends(ping));
    auto r = reply();
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.id, "p-1");
    EXPECT_EQ(core->replayCache().size(), 1u);
}

TEST_F(SignedCore, WithoutACaPlainAndSignedCommandsBothRun) {
    EXPECT_FALSE(core->commandsSigned());
    core->onMessage(proto::encodeCommand(restart("c-1")));
    core->onMessage(dpedSends(restart("c-2"), "dped:db", "agent:node02")); // not checked
    EXPECT_EQ(backend.jobs.size(), 2u);
    core->onMessage(R"({"v":1,"type":"signed"})"); // a broken envelope is still an error
    auto r = reply();
    EXPECT_FALSE(r.ok);
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->code, "unknown-type");
}

// The epoch floor (docs/ha.md "Epoch fencing"): once a command of epoch 5 ran, a dped of an
// older leader (epoch 4, or the unfenced 0) is refused with both numbers, and the floor is
// in the replay cache the agent saves before it runs a command, so a restarted agent keeps it.
TEST_F(SignedCore, AnOlderLeadersEpochIsRefusedOnceANewerOneRanAndTheFloorSurvivesARestart) {
    auto ca = envelope::CaStore::loadFile(pki_->caCert());
    ASSERT_TRUE(ca) << ca.error().describe();
    std::string saved;
    core->requireSignedCommands(
        envelope::Trust{*ca, "agent:node01", "web"}, envelope::ReplayCache(),
        [&](const envelope::ReplayCache& c) { saved = c.toJson(clock.nowMs()); });
    auto send = [&](const std::string& id, std::uint64_t epoch) {
        core->onMessage(dpedSends(restart(id), "dped:web", "agent:node01", epoch));
    };
    send("e0", 0); // unfenced single node: accepted while nothing higher was seen
    send("e5", 5);
    ASSERT_EQ(backend.jobs.size(), 2u);
    EXPECT_TRUE(core->outbox().empty());
    for (auto [id, epoch] : {std::pair{"e4", 4}, std::pair{"e0-again", 0}}) {
        send(id, epoch);
        auto r = reply();
        EXPECT_FALSE(r.ok) << id;
        ASSERT_TRUE(r.error) << id;
        EXPECT_EQ(r.error->code, "stale-epoch") << id;
        EXPECT_NE(r.error->message.find("stale epoch " + std::to_string(epoch) +
                                        ": this receiver has accepted epoch 5"),
                  std::string::npos)
            << r.error->message;
        EXPECT_EQ(r.id, id);
    }
    EXPECT_EQ(backend.jobs.size(), 2u); // neither ran
    send("e5-again", 5);                // the same leader goes on
    EXPECT_EQ(backend.jobs.size(), 3u);

    // The agent restarts with the cache it saved: the floor is still 5.
    ASSERT_FALSE(saved.empty());
    auto restored = envelope::ReplayCache::fromJson(saved, clock.nowMs());
    ASSERT_TRUE(restored) << restored.error().describe();
    EXPECT_EQ(restored->highestEpoch("dped:web"), 5u);
    Identity id;
    id.assembly = "node01";
    core = std::make_unique<AgentCore>(cfg, id, backend, nullptr, clock, nullptr);
    backend.setListener(core.get());
    core->onLinkUp();
    core->outbox().clear();
    core->requireSignedCommands(envelope::Trust{*ca, "agent:node01", "web"}, std::move(*restored));
    send("after-restart-4", 4);
    EXPECT_EQ(reply().error->code, "stale-epoch");
    send("after-restart-6", 6);
    EXPECT_EQ(backend.jobs.size(), 4u);
}

} // namespace
