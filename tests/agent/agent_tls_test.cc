// The agent's TCP link over amqps:// to a real TLS hub (lib/bus Hub), with certificates made
// by lib/pki: an agent presenting agent:A reports on pcloud.reports.A to its dped; one whose
// certificate names another assembly is refused at attach, so it cannot forge A's reports.
#include "tls_hub_fixture.h"

#include "bus/client.h"
#include "bus/hub.h"
#include "pki/pki.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;

namespace {

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

class AgentTls : public agenttest::TlsHubFixture {
protected:
    void SetUp() override {
        ASSERT_NO_FATAL_FAILURE(
            startHub("/tmp/pcloud-agent-tls-XXXXXX", {"proc01", "other"}, "proc01"));
    }
    void TearDown() override {
        if (agent_ > 0) {
            ::kill(agent_, SIGTERM);
            ::waitpid(agent_, nullptr, 0);
        }
        if (HasFailure())
            std::cerr << "---- agent log ----\n" << agentLog() << "\n";
        stopHub();
    }
    void startAgent(const std::string& certStem) {
        std::ofstream conf(dir_ + "/agent.conf");
        conf << "connect = " << url_ << "\n"
             << "assembly = proc01\n"
             << "backend = process\n"
             << "heartbeat_interval = 200ms\n"
             << "run_dir = none\n"
             << "bus_ca = " << pki_ << "/ca.crt\n"
             << "bus_cert = " << pki_ << "/" << certStem << ".crt\n"
             << "bus_key = " << pki_ << "/" << certStem << ".key\n";
        conf.close();
        agent_ = ::fork();
        if (agent_ == 0) {
            int fd = ::open((dir_ + "/agent.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::execl(PCLOUD_AGENT_BIN, PCLOUD_AGENT_BIN, "--config", (dir_ + "/agent.conf").c_str(),
                    "--log-level", "info", nullptr);
            _exit(127);
        }
    }
    std::string agentLog() const {
        std::ifstream in(dir_ + "/agent.log");
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    std::size_t reports() {
        std::lock_guard lock(mu_);
        return reports_.size();
    }

    pid_t agent_ = 0;
};

TEST_F(AgentTls, AnAgentWithItsOwnCertificateReportsToItsDped) {
    startAgent("agent.proc01");
    ASSERT_TRUE(eventually([&] { return reports() >= 2; }, 15s));
    std::lock_guard lock(mu_);
    EXPECT_NE(reports_.front().find("\"hello\""), std::string::npos) << reports_.front();
    EXPECT_EQ(hub_->security().deniedLinks, 0u);
    EXPECT_EQ(hub_->security().refusedConnections, 0u);
}

TEST_F(AgentTls, AnotherAssemblysCertificateCannotReportForIt) {
    startAgent("agent.other");
    ASSERT_TRUE(eventually([&] { return hub_->security().deniedLinks >= 2; }, 15s))
        << hub_->securityJson();
    EXPECT_EQ(reports(), 0u);
}

} // namespace
