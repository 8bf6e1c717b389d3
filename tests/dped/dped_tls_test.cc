// The real dped binary against an in-process amqps:// hub made with test_tls.h, the set-up
// the QEMU e2e tests use, proven here without QEMU: libvirt's test:///default driver stands in
// for the hypervisor. dped presents dped.web through --bus-ca/--bus-cert/--bus-key (what cped
// passes), the test's client stands in for cped with cped.test, and the hub authorizes every
// link with the assemblies the test's model gives each deployable (TestTls::setOwners), as
// cped's hub does with its model.
#include "bus/client.h"
#include "bus/hub.h"
#include "common/fs.h"
#include "model/model.h"
#include "store/store.h"
#include "support/journal_standin.h"
#include "support/test_support.h"
#include "support/test_tls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::testsupport;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

class DpedTls : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-dped-tls-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        tls_ = std::make_unique<TestTls>(dir_ + "/pki");
        auto st = tls_->setUp();
        ASSERT_TRUE(st.ok()) << st.error().describe();
        auto hub = tls_->startCpedHub(hub_, client_);
        ASSERT_TRUE(hub.ok()) << hub.error().describe();
        url_ = amqpsUrl(hub_->boundPort());
        auto sub = testsupport::serveJournal(client_, [this](const bus::Message& m) {
            std::lock_guard lock(mu_);
            journal_.push_back(m.body);
        });
        ASSERT_TRUE(client_.waitSubscribed(sub, 10s));

        model::Deployable d;
        d.name = "web";
        d.uri = "test:///default";
        d.assemblies = {"n1"};
        model_.deployables["web"] = d;
        model::Assembly a;
        a.name = "n1";
        a.uuid = "0b5e1c57-1d2a-4c8e-9f00-5e1f00000001";
        a.image = dir_ + "/n1.img"; // not allowed here: dped journals an error event for it
        model_.assemblies["n1"] = a;
        ASSERT_TRUE(store::saveModel(dir_, model_).ok());
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        client_.close();
        if (hub_)
            hub_->stop();
        if (HasFailure())
            std::fprintf(stderr, "--- dped log\n%s\n", fs::readFile(log_).value().c_str());
        std::system(("rm -rf '" + dir_ + "'").c_str());
    }
    void startDped() {
        log_ = dir_ + "/dped.log";
        auto bus = tls_->busArgs({pki::Kind::Dped, "web"});
        ASSERT_TRUE(bus.ok()) << bus.error().describe();
        std::vector<std::string> args = *bus;
        args.insert(args.end(), {"--config", writeTinyGuestHostConfig(dir_)});
        pid_ = spawnDped(PCLOUD_DPED_BIN, "web", dir_, url_, log_, args);
        ASSERT_GT(pid_, 0);
    }
    // A request as cped sends it: signed with cped:test's key. The whole reply.
    json ask(const std::string& body) {
        auto r = tls_->askDped(client_, "web", body, 2s);
        auto j = r ? json::parse(r->body, nullptr, false) : json();
        return j.is_discarded() ? json() : j;
    }
    json askRaw(const std::string& bytes) {
        auto r = client_.request("pcloud.dped.web", bytes, 2s);
        if (!r)
            return json();
        auto j = json::parse(r->body, nullptr, false);
        return j.is_discarded() ? json() : j;
    }
    json status() {
        return ask(R"({"v":1,"type":"command","id":"s","command":"status"})")
            .value("result", json());
    }
    bool journalHas(const std::string& text) {
        std::lock_guard lock(mu_);
        for (const auto& e : journal_)
            if (e.find(text) != std::string::npos)
                return true;
        return false;
    }
    std::size_t receivers(const std::string& address) {
        auto c = hub_->counters();
        auto it = c.find(address);
        return it == c.end() ? 0 : it->second.receivers;
    }

    std::string dir_, url_, log_;
    std::unique_ptr<TestTls> tls_;
    std::unique_ptr<bus::Hub> hub_;
    bus::Client client_;
    model::Model model_;
    std::mutex mu_;
    std::vector<std::string> journal_;
    pid_t pid_ = -1;
};

TEST_F(DpedTls, TheDpedOfTheDeployableServesAndJournalsOverTls) {
    tls_->setOwners(model_);
    startDped();
    json st;
    ASSERT_TRUE(waitFor(
        [&] {
            st = status();
            return st.is_object() && st.contains("assemblies");
        },
        20s))
        << st.dump();
    EXPECT_EQ(st["assemblies"][0].value("name", ""), "n1") << st.dump();
    ASSERT_TRUE(waitFor([&] { return journalHas("\"dped-started\""); }, 10s));
    ASSERT_TRUE(waitFor([&] { return journalHas("n1.img"); }, 10s));
    // It listens for n1's reports under both names, and nothing it asked for was refused.
    EXPECT_TRUE(waitFor(
        [&] {
            return receivers("pcloud.reports.n1") == 1 &&
                   receivers("pcloud.reports." + model_.assemblies["n1"].uuid) == 1;
        },
        10s));
    EXPECT_EQ(hub_->security().deniedLinks, 0u);
    EXPECT_EQ(hub_->security().refusedConnections, 0u);
    auto log = fs::readFile(log_);
    ASSERT_TRUE(log.ok());
    EXPECT_NE(log->find("Commands to agents are signed identity=dped:web"), std::string::npos)
        << *log;
}

// The hub's authorization is live, not a pass-through: with a model in which n1 belongs to
// another deployable, the same dped may not consume n1's reports (and still serves commands).
TEST_F(DpedTls, AnAssemblyOfAnotherDeployableIsRefused) {
    model::Model other = model_;
    other.deployables["web"].assemblies.clear();
    other.deployables["db"].name = "db";
    other.deployables["db"].assemblies = {"n1"};
    tls_->setOwners(other);
    startDped();
    ASSERT_TRUE(waitFor([&] { return hub_->security().deniedLinks >= 2; }, 20s))
        << hub_->securityJson();
    EXPECT_EQ(receivers("pcloud.reports.n1"), 0u);
    EXPECT_TRUE(waitFor([&] { return status().contains("assemblies"); }, 20s));
}

// On a TLS bus dped runs only requests signed by cped (or an operator): an unsigned one, or
// one signed with a key that may not command it, gets an error reply and changes nothing.
TEST_F(DpedTls, OnlySignedRequestsRun) {
    tls_->setOwners(model_);
    startDped();
    ASSERT_TRUE(waitFor([&] { return status().contains("assemblies"); }, 20s));
    auto plain = askRaw(R"({"v":1,"type":"command","id":"p1","command":"stop"})");
    EXPECT_FALSE(plain.value("ok", true)) << plain.dump();
    EXPECT_EQ(plain["error"].value("code", ""), "unsigned") << plain.dump();
    EXPECT_EQ(plain.value("id", ""), "p1");
    auto agentFiles = tls_->issue({pki::Kind::Agent, "n1"});
    ASSERT_TRUE(agentFiles.ok());
    auto byAgent = testsupport::signForDped(
        *agentFiles, "web", R"({"v":1,"type":"command","id":"a1","command":"stop"})");
    ASSERT_TRUE(byAgent.ok()) << byAgent.error().describe();
    auto refused = askRaw(*byAgent);
    EXPECT_EQ(refused["error"].value("code", ""), "not-authorized") << refused.dump();
    // Still running: neither stop ran.
    auto st = status();
    EXPECT_EQ(st.value("state", ""), "running") << st.dump();
    EXPECT_EQ(::waitpid(pid_, nullptr, WNOHANG), 0);
    auto log = fs::readFile(log_);
    ASSERT_TRUE(log.ok());
    EXPECT_NE(log->find("Requests to this dped must be signed identity=dped:web"),
              std::string::npos)
        << *log;
    EXPECT_NE(log->find("Refused a request that failed verification"), std::string::npos);
}

} // namespace
