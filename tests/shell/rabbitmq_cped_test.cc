// The real cped on RabbitMQ 3.10 over mutual TLS (scripts/setup-rabbitmq.sh: TLS on
// 127.0.0.1:5683, SASL EXTERNAL, users made by scripts/rabbitmq-identity.sh), driven by the
// real pcloudsh. RabbitMQ cannot restrict who SENDS to pcloud.cped (an /amq/queue/ address
// reaches any queue: docs/security.md "RabbitMQ"), so cped on an external broker runs only
// requests signed by operator:* for target cped:api: pcloudsh signs its requests; a guest's
// agent:node01 sending to /amq/queue/pcloud.cped, plain or signed with its own key, is
// refused and changes nothing. Certificates are issued here with lib/pki from the broker's
// test CA (root-only in /etc/rabbitmq/pcloud-test-pki). SKIPs when the broker is not there,
// unless PCLOUD_TEST_RABBITMQ=1 says it must be: then it FAILs. The broker's pcloud.cped
// queue is shared: run one at a time, as ctest does by default.
#include "bus/client.h"
#include "common/fs.h"
#include "envelope/envelope.h"
#include "pki/pki.h"
#include "support/test_support.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;
using nlohmann::json;
using testsupport::runCommand;

namespace {

bool required() {
    const char* v = std::getenv("PCLOUD_TEST_RABBITMQ");
    return v && std::string(v) == "1";
}
std::string envString(const char* name, const char* fallback) {
    const char* p = std::getenv(name);
    return p ? p : fallback;
}

class RabbitMqCped : public ::testing::Test {
protected:
    void SetUp() override {
        port_ = std::atoi(envString("PCLOUD_RABBITMQ_TLS_PORT", "5683").c_str());
        const std::string brokerPki =
            envString("PCLOUD_RABBITMQ_PKI", "/etc/rabbitmq/pcloud-test-pki");
        int fd = testsupport::connectLoopback(port_);
        if (fd < 0) {
            if (required())
                FAIL() << "PCLOUD_TEST_RABBITMQ=1 but nothing answers on 127.0.0.1:" << port_
                       << " (the TLS listener of scripts/setup-rabbitmq.sh)";
            GTEST_SKIP() << "RabbitMQ's TLS listener is not reachable on 127.0.0.1:" << port_
                         << " (run PCLOUD_TEST_RABBITMQ=1 scripts/setup-rabbitmq.sh)";
        }
        ::close(fd);
        char tmpl[] = "/tmp/pcloud-rmq-cped-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        pki_ = dir_ + "/pki";
        conf_ = dir_ + "/pcloud.conf";
        ASSERT_EQ(::mkdir(pki_.c_str(), 0700), 0);
        // lib/pki issues from DIR/ca.crt and DIR/ca.key: a private copy of the broker's CA.
        for (const char* f : {"ca.crt", "ca.key"}) {
            auto text = fs::readFile(brokerPki + "/" + f);
            if (!text) {
                if (required())
                    FAIL() << text.error().describe()
                           << " (the test CA of scripts/setup-rabbitmq.sh is root-only: run the "
                              "test as root, as scripts/test.sh does)";
                GTEST_SKIP() << text.error().describe();
            }
            ASSERT_TRUE(fs::writeAtomic(pki_ + "/" + f, *text, {}, 0600));
        }
        // The broker's users (scripts/setup-rabbitmq.sh): cped:test, operator:alice,
        // agent:node01, dped:web.
        for (const char* id : {"cped:test", "operator:alice", "agent:node01", "dped:web"}) {
            auto parsed = pki::parseIdentity(id);
            ASSERT_TRUE(parsed) << id;
            auto r = pki::ensureIssued(pki_, *parsed, 1);
            ASSERT_TRUE(r) << r.error().describe();
        }
        ASSERT_TRUE(fs::writeAtomic(
            conf_, "pki_dir = " + pki_ + "\ncped_name = test\noperator = alice\n", {}, 0644));
    }
    void TearDown() override {
        agent_.close();
        dped_.close();
        forger_.close();
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::waitpid(pid_, nullptr, 0);
        }
        if (!dir_.empty())
            std::system(("rm -rf " + dir_).c_str());
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(port_); }
    void startCped() {
        log_ = dir_ + "/cped.log";
        pid_ = testsupport::spawnLogged(CPED_BIN,
                                        {"cped", "--broker", url(), "--address-prefix", "/queue/",
                                         "--state-dir", dir_ + "/state", "--config", conf_,
                                         "--dped-path", FAKE_DPED, "--log-level", "info"},
                                        log_);
        ASSERT_GT(pid_, 0);
    }
    testsupport::CommandResult sh(const std::string& args) {
        return runCommand(std::string(PCLOUDSH_BIN) + " --broker " + url() +
                          " --address-prefix /queue/ --config " + conf_ + " --timeout 5 " + args +
                          " 2>&1");
    }
    std::string log() const {
        auto t = fs::readFile(log_);
        return t ? *t : "";
    }
    // agent:node01 as a guest could: its own certificate, addresses that declare no queue.
    // `userId` unset: the certificate's CN, as every pcloud client sends.
    void connectAgent(std::optional<std::string> userId = std::nullopt) {
        connectAs(agent_, "agent:node01", "/amq/queue/", std::move(userId));
    }
    void connectAs(bus::Client& c, const std::string& identity, const std::string& prefix,
                   std::optional<std::string> userId = std::nullopt) {
        auto id = pki::parseIdentity(identity);
        auto f = pki::clientFiles(pki_, *id);
        bus::ClientOptions o;
        o.userId = std::move(userId);
        o.url = url();
        o.caFile = f.ca;
        o.certFile = f.cert;
        o.keyFile = f.key;
        o.addressPrefix = prefix;
        o.topicPrefix = "/topic/";
        ASSERT_TRUE(c.connect(o).ok());
        ASSERT_TRUE(c.waitConnected(10s)) << identity << " did not connect to " << url();
    }
    // A journal submission as dped sends it (events::toJson).
    static std::string event(const std::string& deployable, const std::string& reason) {
        return json{{"v", 1},          {"type", "event"},          {"seq", 0},
                    {"time", 1000},    {"deployable", deployable}, {"assembly", ""},
                    {"state", "note"}, {"reason", reason},         {"cause_id", ""}}
            .dump();
    }
    std::string journal() { return sh("--json events --limit 1000").out; }
    json agentAsks(const std::string& id, const std::string& bytes) {
        auto r = agent_.request("pcloud.cped", bytes, 10s, {}, id);
        EXPECT_TRUE(r.ok()) << r.error().describe() << "\n" << log();
        if (!r)
            return json::object();
        EXPECT_EQ(r->correlationId, id);
        auto j = json::parse(r->body, nullptr, false);
        EXPECT_TRUE(j.is_object()) << r->body;
        return j.is_object() ? j : json::object();
    }
    std::vector<std::string> deployables() {
        auto r = sh("--json deployable_list");
        EXPECT_EQ(r.rc, 0) << r.out;
        std::vector<std::string> out;
        auto j = json::parse(r.out, nullptr, false);
        EXPECT_TRUE(j.is_object()) << r.out;
        if (j.is_object()) // --json prints the reply's result
            for (const auto& d : j.value("deployables", json::array()))
                out.push_back(d.value("name", ""));
        return out;
    }

    int port_ = 0;
    std::string dir_, pki_, conf_, log_;
    pid_t pid_ = 0;
    bus::Client agent_;
    bus::Client dped_;
    bus::Client forger_;
};

TEST_F(RabbitMqCped, OnlyOperatorSignedRequestsRunAndAGuestChangesNothing) {
    startCped();
    // pcloudsh signs with operator:alice's key: the list, then a create, run.
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 30s))
        << sh("deployable_list").out << "\n"
        << log();
    auto created = sh("deployable_create web --uri test:///default");
    ASSERT_EQ(created.rc, 0) << created.out << "\n" << log();
    EXPECT_EQ(deployables(), std::vector<std::string>{"web"});
    EXPECT_NE(log().find("sender=operator:alice"), std::string::npos) << log();

    connectAgent();
    // The gap path: a plain request straight to the queue.
    const std::string plainId = "plain-" + std::to_string(::getpid());
    json plain = {{"v", 1},
                  {"type", "command"},
                  {"id", plainId},
                  {"command", "deployable_delete"},
                  {"args", {{"name", "web"}}}};
    auto r1 = agentAsks(plainId, plain.dump());
    EXPECT_EQ(r1.value("id", ""), plainId) << r1.dump();
    EXPECT_EQ(r1.value("ok", true), false) << r1.dump();
    EXPECT_EQ(r1.value("error", json::object()).value("code", ""), "unsigned") << r1.dump();
    // A flood is answered but logged once a minute per claimed sender.
    for (int i = 0; i < 3; ++i) {
        const std::string again = plainId + "-" + std::to_string(i);
        plain["id"] = again;
        auto r = agentAsks(again, plain.dump());
        EXPECT_EQ(r.value("error", json::object()).value("code", ""), "unsigned") << r.dump();
    }

    // Signed with the agent's own (valid, same-CA) key: not an operator.
    auto id = pki::parseIdentity("agent:node01");
    auto f = pki::clientFiles(pki_, *id);
    auto signer = envelope::Signer::load(f.key, f.cert);
    ASSERT_TRUE(signer) << signer.error().describe();
    const std::string signedId = "signed-" + std::to_string(::getpid());
    json create = {{"v", 1},
                   {"type", "command"},
                   {"id", signedId},
                   {"command", "deployable_create"},
                   {"args", {{"name", "evil"}, {"uri", "test:///default"}}}};
    envelope::Fields fields;
    fields.target = envelope::kCommandApi;
    fields.action = "deployable_create";
    fields.msgtime = SystemClock().nowMs();
    auto bytes = signer->sign(fields, create.dump());
    ASSERT_TRUE(bytes) << bytes.error().describe();
    auto r2 = agentAsks(signedId, *bytes);
    EXPECT_EQ(r2.value("id", ""), signedId) << r2.dump();
    EXPECT_EQ(r2.value("error", json::object()).value("code", ""), "not-authorized") << r2.dump();
    EXPECT_NE(r2.value("error", json::object()).value("message", "").find("operator:*"),
              std::string::npos)
        << r2.dump();

    // Nothing changed: web is still there, evil was not made. cped said why, once each.
    EXPECT_EQ(deployables(), std::vector<std::string>{"web"});
    EXPECT_NE(log().find("Refused a command API request id=" + plainId + " code=unsigned"),
              std::string::npos)
        << log();
    EXPECT_NE(log().find("code=not-authorized sender=agent:node01"), std::string::npos) << log();
    const std::string text = log();
    std::size_t unsignedLines = 0;
    for (auto at = text.find("code=unsigned"); at != std::string::npos;
         at = text.find("code=unsigned", at + 1))
        ++unsignedLines;
    EXPECT_EQ(unsignedLines, 1u) << text;
}

// RabbitMQ lets anyone who logs in send to pcloud.journal; cped journals a submission only
// when its user-id, which RabbitMQ checks against the login, is dped:<the event's deployable>.
TEST_F(RabbitMqCped, JournalSubmissionsOnlyFromTheDpedOfTheirDeployable) {
    startCped();
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 30s))
        << sh("deployable_list").out << "\n"
        << log();
    const std::string tag = std::to_string(::getpid());
    connectAs(dped_, "dped:web", "/queue/");
    ASSERT_TRUE(dped_.send("pcloud.journal", event("web", "real-" + tag)).ok());
    ASSERT_TRUE(testsupport::waitFor(
        [&] { return journal().find("real-" + tag) != std::string::npos; }, 20s))
        << journal() << "\n"
        << log();

    // A guest's agent:node01 without a user-id: delivered by RabbitMQ, dropped by cped.
    connectAgent(std::string());
    ASSERT_TRUE(agent_.send("pcloud.journal", event("web", "bare-" + tag)).ok());
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            return log().find("Dropped a message from a sender that may not send it") !=
                   std::string::npos;
        },
        20s))
        << log();
    EXPECT_NE(log().find("what=\"journal submission\" address=pcloud.journal user_id=-"),
              std::string::npos)
        << log();
    // Claiming to be dped:web: RabbitMQ refuses it and ends the forger's session.
    connectAs(forger_, "agent:node01", "/amq/queue/", std::string("dped:web"));
    ASSERT_TRUE(forger_.send("pcloud.journal", event("web", "forged-" + tag)).ok());
    ASSERT_TRUE(testsupport::waitFor([&] { return forger_.stats().linksRefused >= 1; }, 10s));
    auto err = forger_.stats().lastLinkError;
    EXPECT_NE(err.find("user_id property set to 'dped:web' but authenticated user was "
                       "'agent:node01'"),
              std::string::npos)
        << err;
    // dped:web for another deployable's event: dropped too.
    ASSERT_TRUE(dped_.send("pcloud.journal", event("db", "other-" + tag)).ok());
    ASSERT_TRUE(testsupport::waitFor(
        [&] { return log().find("user_id=dped:web expected=dped:db") != std::string::npos; }, 20s))
        << log();
    // The real one goes on; nothing forged is in the journal.
    ASSERT_TRUE(dped_.send("pcloud.journal", event("web", "again-" + tag)).ok());
    ASSERT_TRUE(testsupport::waitFor(
        [&] { return journal().find("again-" + tag) != std::string::npos; }, 20s));
    const std::string j = journal();
    EXPECT_EQ(j.find("bare-" + tag), std::string::npos) << j;
    EXPECT_EQ(j.find("forged-" + tag), std::string::npos) << j;
    EXPECT_EQ(j.find("other-" + tag), std::string::npos) << j;
}

} // namespace
