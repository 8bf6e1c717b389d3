// A real pcloud-agent (process backend, `ca =`, over TLS as agent:b) on pcloud's TLS hub with
// authz, while bench/forgery's forger, holding agent:a's certificate, floods the hub with
// forged, replayed, malformed and oversized messages and tries every address it may not use
// (pcloud.agent.b among them, with unsigned and wrongly signed commands). No QEMU. The agent
// must run nothing and refuse nothing (no forged command even reaches it), its worker must
// keep its pid, and its own dped's signed commands must still be answered during the flood
// and still run after it.
#include "../../bench/forgery/forger.h"
#include "tls_hub_fixture.h"

#include "bus/client.h"
#include "bus/hub.h"
#include "common/clock.h"
#include "envelope/envelope.h"
#include "pki/pki.h"
#include "proto/agent_messages.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace pcloud;
using namespace std::chrono_literals;

namespace {

template <typename Pred> bool waitUntil(Pred p, std::chrono::milliseconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (p())
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return p();
}

int countOf(const std::string& text, const std::string& what) {
    int n = 0;
    for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
        ++n;
    return n;
}

class AgentForgery : public agenttest::TlsHubFixture {
protected:
    void SetUp() override {
        ASSERT_NO_FATAL_FAILURE(startHub("/tmp/pcloud-agent-forgery-XXXXXX", {"a", "b"}, "b"));
        auto s = envelope::Signer::load(pki_ + "/dped.web.key", pki_ + "/dped.web.crt");
        ASSERT_TRUE(s) << s.error().describe();
        signer_ = std::make_unique<envelope::Signer>(std::move(*s));

        worker_ = "/bin/sleep 5" + std::to_string(1000 + ::getpid() % 1000);
        std::ofstream conf(dir_ + "/agent.conf");
        conf << "connect = " << url_ << "\n"
             << "assembly = b\n"
             << "backend = process\n"
             << "run_dir = " << dir_ << "/run\n"
             << "watch = worker\n"
             << "process.worker = " << worker_ << "\n"
             << "ca = " << pki_ << "/ca.crt\n"
             << "deployable = web\n"
             << "bus_ca = " << pki_ << "/ca.crt\n"
             << "bus_cert = " << pki_ << "/agent.b.crt\n"
             << "bus_key = " << pki_ << "/agent.b.key\n";
        conf.close();
        agent_ = ::fork();
        if (agent_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = ::open((dir_ + "/agent.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::execl(PCLOUD_AGENT_BIN, PCLOUD_AGENT_BIN, "--config", (dir_ + "/agent.conf").c_str(),
                    "--log-level", "info", nullptr);
            _exit(127);
        }
        ASSERT_GT(agent_, 0);
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
    std::string agentLog() const {
        std::ifstream in(dir_ + "/agent.log");
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    // Sends dped:web's signed command and waits for the agent's reply to it.
    std::optional<proto::Reply> command(proto::CommandType t, const std::string& id,
                                        std::chrono::milliseconds limit = 20s) {
        proto::Command c;
        c.type = t;
        c.id = id;
        if (t != proto::CommandType::Status)
            c.unit = "worker";
        envelope::Fields f;
        f.target = "agent:b";
        f.action = proto::toString(c.type);
        f.msgtime = SystemClock().nowMs();
        auto bytes = signer_->sign(f, proto::encodeCommand(c));
        EXPECT_TRUE(bytes) << bytes.error().describe();
        EXPECT_TRUE(dped_.send("pcloud.agent.b", *bytes, {{"correlation-id", id}}));
        std::optional<proto::Reply> out;
        waitUntil(
            [&] {
                std::lock_guard lock(mu_);
                for (const auto& body : reports_) {
                    auto r = proto::decodeReport(body);
                    if (auto* p = r ? std::get_if<proto::Reply>(&r->body) : nullptr;
                        p && p->id == id) {
                        out = *p;
                        return true;
                    }
                }
                return false;
            },
            limit);
        return out;
    }
    pid_t workerPid(const std::string& id) {
        auto r = command(proto::CommandType::Status, id, 5s);
        if (!r || !r->ok)
            return -1;
        for (const auto& u : r->result["units"])
            if (u["unit"] == "worker" && u["active_state"] == "active")
                return u["main_pid"].get<pid_t>();
        return 0;
    }

    std::string worker_;
    std::unique_ptr<envelope::Signer> signer_;
    pid_t agent_ = -1;
};

TEST_F(AgentForgery, AFloodFromAnotherAgentsIdentityMakesTheAgentDoNothing) {
    pid_t first = 0;
    int n = 0;
    ASSERT_TRUE(
        waitUntil([&] { return (first = workerPid("st-" + std::to_string(n++))) > 0; }, 30s))
        << "the worker did not come up";
    const std::string before = agentLog();
    const int received0 = countOf(before, "Command received");

    forgery::ForgerOptions fo;
    fo.port = hub_->boundPort();
    fo.caFile = pki_ + "/ca.crt";
    fo.certFile = pki_ + "/agent.a.crt";
    fo.keyFile = pki_ + "/agent.a.key";
    fo.wrongSignerKey = fo.keyFile; // agent:a may command nobody
    fo.wrongSignerCert = fo.certFile;
    fo.self = "a";
    fo.victim = "b";
    fo.deployable = "web";
    fo.total = 20'000;
    fo.oversizedEvery = 500;
    forgery::Forger forger(fo);
    forger.start();
    // dped's own signed commands are answered during the flood.
    int legit = 0;
    for (int i = 0; i < 3 && !forger.done(); ++i, ++legit) {
        auto r = command(proto::CommandType::Status, "flood-st-" + std::to_string(i));
        ASSERT_TRUE(r) << "no reply during the flood";
        EXPECT_TRUE(r->ok);
    }
    ASSERT_TRUE(waitUntil([&] { return forger.done(); }, 120s)) << forger.stats().toJson();
    forger.stop();
    auto s = forger.stats();
    SCOPED_TRACE(s.toJson());
    EXPECT_GE(s.total, fo.total);
    EXPECT_GT(s.refusals["send pcloud.agent.b"], 0u);
    EXPECT_EQ(s.creditOnDenied + s.receivedOnDenied + s.stolen, 0u);

    // Nothing reached the agent: it refused nothing, received only dped's commands, ran no
    // job, and its worker is the same process.
    pid_t after = workerPid("after");
    EXPECT_EQ(after, first);
    const std::string log = agentLog().substr(before.size());
    EXPECT_EQ(countOf(log, "Refused a command"), 0) << log;
    EXPECT_EQ(countOf(log, "Rejected a command"), 0) << log;
    EXPECT_EQ(countOf(log, "Running job"), 0) << log;
    EXPECT_EQ(countOf(log, "forged"), 0) << log;
    EXPECT_EQ(countOf(agentLog(), "Command received") - received0, legit + 1) << log;
    {
        std::lock_guard lock(mu_);
        for (const auto& body : reports_)
            EXPECT_EQ(body.find("forged"), std::string::npos) << body;
    }
    // And dped's signed restart still runs: a new worker.
    auto r = command(proto::CommandType::Restart, "restart-after");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->ok) << (r->error ? r->error->message : "");
    pid_t restarted = 0;
    EXPECT_TRUE(waitUntil(
        [&] {
            restarted = workerPid("st2-" + std::to_string(n++));
            return restarted > 0 && restarted != first;
        },
        20s));
}

} // namespace
