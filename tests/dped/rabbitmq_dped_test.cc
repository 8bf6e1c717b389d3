// The real dped on RabbitMQ 3.10 over mutual TLS (scripts/setup-rabbitmq.sh: TLS on
// 127.0.0.1:5683, SASL EXTERNAL, the users dped:web (assemblies n1 and its uuid), agent:n1 and
// agent:node01 made by scripts/rabbitmq-identity.sh). RabbitMQ cannot restrict who SENDS to
// pcloud.reports.n1 (an /amq/queue/ address reaches any queue), but it refuses a message whose
// AMQP user-id is not the sender's login; dped takes a report on pcloud.reports.K only with the
// user-id agent:K (docs/security.md "Senders"). A guest holding agent:node01 cannot get a
// report taken as n1's: with user-id agent:n1 RabbitMQ refuses it, without one dped drops it;
// n1's own agent still reports. libvirt's test:///default stands in for the hypervisor.
// Certificates come from lib/pki with the broker's test CA (root-only in
// /etc/rabbitmq/pcloud-test-pki). SKIPs when the broker is not there, unless
// PCLOUD_TEST_RABBITMQ=1 says it must be: then it FAILs.
#include "bus/client.h"
#include "common/fs.h"
#include "model/model.h"
#include "pki/pki.h"
#include "proto/agent_messages.h"
#include "store/store.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

bool required() {
    const char* v = std::getenv("PCLOUD_TEST_RABBITMQ");
    return v && std::string(v) == "1";
}
std::string envString(const char* name, const char* fallback) {
    const char* p = std::getenv(name);
    return p ? p : fallback;
}
// The uuid scripts/setup-rabbitmq.sh gives dped:web as its second assembly.
const char* kUuid = "0b5e1c57-1d2a-4c8e-9f00-5e1f00000001";

class RabbitMqDped : public ::testing::Test {
protected:
    void SetUp() override {
        port_ = std::atoi(envString("PCLOUD_RABBITMQ_TLS_PORT", "5683").c_str());
        const std::string brokerPki =
            envString("PCLOUD_RABBITMQ_PKI", "/etc/rabbitmq/pcloud-test-pki");
        int fd = connectLoopback(port_);
        if (fd < 0) {
            if (required())
                FAIL() << "PCLOUD_TEST_RABBITMQ=1 but nothing answers on 127.0.0.1:" << port_
                       << " (the TLS listener of scripts/setup-rabbitmq.sh)";
            GTEST_SKIP() << "RabbitMQ's TLS listener is not reachable on 127.0.0.1:" << port_
                         << " (run PCLOUD_TEST_RABBITMQ=1 scripts/setup-rabbitmq.sh)";
        }
        ::close(fd);
        char tmpl[] = "/tmp/pcloud-rmq-dped-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        pki_ = dir_ + "/pki";
        ASSERT_EQ(::mkdir(pki_.c_str(), 0700), 0);
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
        for (const char* id : {"dped:web", "cped:test", "agent:n1", "agent:node01"}) {
            auto parsed = pki::parseIdentity(id);
            ASSERT_TRUE(parsed) << id;
            auto r = pki::ensureIssued(pki_, *parsed, 1);
            ASSERT_TRUE(r) << r.error().describe();
        }
        model::Model m;
        model::Deployable d;
        d.name = "web";
        d.uri = "test:///default";
        d.assemblies = {"n1"};
        m.deployables["web"] = d;
        model::Assembly a;
        a.name = "n1";
        a.uuid = kUuid;
        m.assemblies["n1"] = a;
        ASSERT_TRUE(store::saveModel(dir_, m).ok());
    }
    void TearDown() override {
        clients_.clear();
        if (agent_ > 0) {
            ::kill(agent_, SIGTERM);
            ::waitpid(agent_, nullptr, 0);
        }
        if (HasFailure() && agent_ > 0)
            std::fprintf(stderr, "--- agent log\n%s\n", agentLog().c_str());
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (HasFailure())
            std::fprintf(stderr, "--- dped log\n%s\n", log().c_str());
        if (!dir_.empty())
            std::system(("rm -rf '" + dir_ + "'").c_str());
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(port_); }
    pki::ClientFiles files(const std::string& identity) const {
        return pki::clientFiles(pki_, *pki::parseIdentity(identity));
    }
    std::string log() const {
        auto t = fs::readFile(log_);
        return t ? *t : "";
    }
    void startDped() {
        log_ = dir_ + "/dped.log";
        auto f = files("dped:web");
        pid_ =
            spawnDped(PCLOUD_DPED_BIN, "web", dir_, url(), log_,
                      {"--bus-ca", f.ca, "--bus-cert", f.cert, "--bus-key", f.key,
                       "--address-prefix", "/queue/", "--config", writeTinyGuestHostConfig(dir_)});
        ASSERT_GT(pid_, 0);
    }
    // A client presenting `identity`, sending as `userId` (unset: its CN, the default).
    bus::Client& client(const std::string& identity, const std::string& prefix,
                        std::optional<std::string> userId = std::nullopt) {
        auto f = files(identity);
        bus::ClientOptions o;
        o.url = url();
        o.caFile = f.ca;
        o.certFile = f.cert;
        o.keyFile = f.key;
        o.addressPrefix = prefix;
        o.topicPrefix = "/topic/";
        o.userId = std::move(userId);
        clients_.push_back(std::make_unique<bus::Client>());
        EXPECT_TRUE(clients_.back()->connect(o).ok());
        EXPECT_TRUE(clients_.back()->waitConnected(10s)) << identity << " did not connect";
        return *clients_.back();
    }
    // n1 in dped's status (asked as cped asks: signed by cped:test).
    json n1(bus::Client& cped) {
        auto body = signForDped(files("cped:test"), "web",
                                R"({"v":1,"type":"command","id":"s","command":"status"})");
        if (!body)
            return json();
        auto r = cped.request("pcloud.dped.web", *body, 2s);
        auto j = r ? json::parse(r->body, nullptr, false) : json();
        if (!j.is_object() || !j.contains("result") || !j["result"].contains("assemblies"))
            return json();
        return j["result"]["assemblies"][0];
    }
    // The real pcloud-agent of n1 without ca=, on RabbitMQ over TLS with its own certificate.
    void startAgent() {
        auto f = files("agent:n1");
        ASSERT_TRUE(fs::writeAtomic(dir_ + "/agent.conf",
                                    "connect = " + url() +
                                        "\nassembly = n1\ndeployable = web\nbackend = process\n"
                                        "heartbeat_interval = 200ms\nrun_dir = none\n"
                                        "address_prefix = /queue/\nbus_ca = " +
                                        f.ca + "\nbus_cert = " + f.cert + "\nbus_key = " + f.key +
                                        "\n",
                                    {}, 0644));
        agent_ =
            spawnLogged(PCLOUD_AGENT_BIN,
                        {"pcloud-agent", "--config", dir_ + "/agent.conf", "--log-level", "info"},
                        dir_ + "/agent.log");
        ASSERT_GT(agent_, 0);
    }
    std::string agentLog() const {
        auto t = fs::readFile(dir_ + "/agent.log");
        return t ? *t : "";
    }
    static std::string heartbeat(std::uint64_t seq) {
        proto::Heartbeat h;
        h.seq = seq;
        h.boot_id = "rmq-test";
        h.uptime = 1000;
        h.sent_at = SystemClock().nowMs();
        return proto::encodeHeartbeat(h);
    }

    int port_ = 0;
    std::string dir_, pki_, log_;
    pid_t pid_ = 0;
    pid_t agent_ = 0;
    std::vector<std::unique_ptr<bus::Client>> clients_;
};

TEST_F(RabbitMqDped, OnlyTheAssemblysOwnAgentReportsAndAForgerIsRefusedOrDropped) {
    startDped();
    bus::Client& cped = client("cped:test", "/queue/");
    ASSERT_TRUE(waitFor([&] { return n1(cped).is_object() && !n1(cped).empty(); }, 30s)) << log();
    // n1's agent, as a real one sends (its CN is the user-id): taken.
    bus::Client& agent = client("agent:n1", "/queue/");
    const std::uint64_t base = static_cast<std::uint64_t>(::getpid()) * 10;
    ASSERT_TRUE(agent.send("pcloud.reports.n1", heartbeat(base + 1)).ok());
    ASSERT_TRUE(waitFor([&] { return n1(cped).value("heartbeat_seq", 0ull) == base + 1; }, 20s))
        << n1(cped).dump() << "\n"
        << log();
    EXPECT_EQ(n1(cped).value("agent", ""), "connected");

    // A guest with agent:node01's certificate, through an address that declares nothing.
    // Without a user-id RabbitMQ delivers it; dped drops it and says so.
    bus::Client& bare = client("agent:node01", "/amq/queue/", std::string());
    ASSERT_TRUE(bare.send("pcloud.reports.n1", heartbeat(base + 500)).ok());
    ASSERT_TRUE(bare.send("pcloud.reports." + std::string(kUuid), heartbeat(base + 501)).ok());
    ASSERT_TRUE(waitFor(
        [&] {
            return log().find("Dropped a message from a sender that may not send it") !=
                   std::string::npos;
        },
        20s))
        << log();
    // Both were dropped (the uuid's was queued behind the first): still the real agent's.
    ASSERT_TRUE(waitFor([&] { return bare.waitIdle(100ms); }, 5s));
    EXPECT_EQ(n1(cped).value("heartbeat_seq", 0ull), base + 1) << n1(cped).dump();
    std::string text = log();
    // Whichever of the two queues dped read first: the line names it and its agent.
    auto at = text.find("Dropped a message from a sender that may not send it");
    std::string line = text.substr(at, text.find('\n', at) - at);
    EXPECT_NE(line.find("what=\"agent report\""), std::string::npos) << line;
    EXPECT_NE(line.find("user_id=-"), std::string::npos) << line;
    EXPECT_TRUE(line.find("address=pcloud.reports.n1 user_id=- expected=agent:n1") !=
                    std::string::npos ||
                line.find("address=pcloud.reports." + std::string(kUuid) +
                          " user_id=- expected=agent:" + kUuid) != std::string::npos)
        << line;
    // Claiming to be agent:n1: RabbitMQ refuses it and ends the forger's session.
    bus::Client& forger = client("agent:node01", "/amq/queue/", std::string("agent:n1"));
    ASSERT_TRUE(forger.send("pcloud.reports.n1", heartbeat(base + 600)).ok());
    ASSERT_TRUE(waitFor([&] { return forger.stats().linksRefused >= 1; }, 10s));
    auto err = forger.stats().lastLinkError;
    EXPECT_NE(err.find("amqp:precondition-failed"), std::string::npos) << err;
    EXPECT_NE(err.find("user_id property set to 'agent:n1' but authenticated user was "
                       "'agent:node01'"),
              std::string::npos)
        << err;

    // The real agent goes on; none of the forged heartbeats was ever taken.
    ASSERT_TRUE(agent.send("pcloud.reports.n1", heartbeat(base + 2)).ok());
    ASSERT_TRUE(waitFor([&] { return n1(cped).value("heartbeat_seq", 0ull) == base + 2; }, 20s))
        << n1(cped).dump();
    text = log();
    EXPECT_EQ(text.find(std::to_string(base + 500)), std::string::npos) << text;
    EXPECT_EQ(text.find(std::to_string(base + 600)), std::string::npos) << text;
    // Once per sender: the second forged report (on the uuid's queue) was only counted.
    std::size_t lines = 0;
    for (auto at = text.find("Dropped a message from a sender"); at != std::string::npos;
         at = text.find("Dropped a message from a sender", at + 1))
        ++lines;
    EXPECT_EQ(lines, 1u) << text;
    EXPECT_EQ(::waitpid(pid_, nullptr, WNOHANG), 0); // still running
}

// The real agent's reports carry its user-id (agent:n1, its CN) and dped takes them. Without
// ca= the agent takes plain commands only from dped:web or a cped: a guest's agent:node01
// sending one straight to its queue is dropped.
TEST_F(RabbitMqDped, TheRealAgentReportsAndTakesPlainCommandsOnlyFromItsDpedOrCped) {
    startDped();
    bus::Client& cped = client("cped:test", "/queue/");
    ASSERT_TRUE(waitFor([&] { return !n1(cped).empty(); }, 30s)) << log();
    startAgent();
    ASSERT_TRUE(waitFor([&] { return n1(cped).value("agent", "") == "connected"; }, 30s))
        << n1(cped).dump() << "\n"
        << agentLog();
    ASSERT_TRUE(waitFor([&] { return n1(cped).value("heartbeat_seq", 0ull) >= 2; }, 20s))
        << n1(cped).dump();
    EXPECT_EQ(log().find("Dropped a message from a sender"), std::string::npos) << log();

    proto::Command ping;
    ping.id = "rmq-ping-" + std::to_string(::getpid());
    ASSERT_TRUE(cped.send("pcloud.agent.n1", proto::encodeCommand(ping)).ok());
    bus::Client& guest = client("agent:node01", "/amq/queue/", std::string());
    ping.id = "forged-ping-" + std::to_string(::getpid());
    ASSERT_TRUE(guest.send("pcloud.agent.n1", proto::encodeCommand(ping)).ok());
    ASSERT_TRUE(waitFor(
        [&] {
            return agentLog().find("Dropped a command from a sender that may not command this "
                                   "agent") != std::string::npos;
        },
        20s))
        << agentLog();
    const std::string text = agentLog();
    EXPECT_NE(text.find("user_id=- expected=\"dped:web or cped:*\""), std::string::npos) << text;
    EXPECT_EQ(text.find("user_id=cped:test"), std::string::npos) << text;
    EXPECT_EQ(::waitpid(agent_, nullptr, WNOHANG), 0); // still running
}

} // namespace
