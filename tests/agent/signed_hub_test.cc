// Real parts, no QEMU: pcloud's hub (lib/bus Hub) on loopback, a real pcloud-agent process
// (process backend) over TCP configured with a CA certificate, and a bus client in the
// role of dped that signs with keys and certificates made by the openssl CLI. A correctly
// signed restart runs (the worker gets a new pid); forged, unsigned, replayed, expired,
// wrong-target and wrong-signer commands each get an error reply naming the reason, and
// change nothing (the worker keeps its pid).
#include "bus/client.h"
#include "bus/hub.h"
#include "envelope/envelope.h"
#include "proto/agent_messages.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace pcloud;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr auto kDeadline = 20s;

std::string readAll(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool alive(pid_t pid) {
    return pid > 0 && ::kill(pid, 0) == 0;
}

class SignedAgentOverHub : public ::testing::Test {
protected:
    void SetUp() override {
        pki_ = std::make_unique<testpki::TestPki>("hub");
        other_ = std::make_unique<testpki::TestPki>("rogue");
        pki_->issue("dped:web");
        pki_->issue("dped:db");
        other_->issue("dped:web");
        ASSERT_TRUE(hub_.start("amqp://127.0.0.1:0").ok());
        std::string port = std::to_string(hub_.boundPort());

        conf_ = pki_->dir() + "/agent.conf";
        log_ = pki_->dir() + "/agent.log";
        // A unique argv, so the worker is this test's process and nobody else's.
        worker_ = "/bin/sleep 4" + std::to_string(1000 + ::getpid() % 1000);
        std::ofstream(conf_) << "connect = amqp://127.0.0.1:" << port << "\n"
                             << "assembly = proc01\n"
                             << "backend = process\n"
                             << "run_dir = " << pki_->dir() << "/run\n"
                             << "watch = worker\n"
                             << "process.worker = " << worker_ << "\n"
                             << "ca = " << pki_->caCert() << "\n"
                             << "deployable = web\n";
        spawnAgent();

        ASSERT_TRUE(client_.connect("amqp://127.0.0.1:" + port).ok());
        auto sub = client_.subscribe("pcloud.reports.proc01", [this](const bus::Message& m) {
            std::lock_guard<std::mutex> l(mu_);
            reports_.push_back(m.body);
            cv_.notify_all();
        });
        ASSERT_TRUE(client_.waitSubscribed(sub, kDeadline));
        ASSERT_TRUE(waitReport([](const proto::Report& r) { return r.type == "hello"; }))
            << readAll(log_);
    }

    void spawnAgent() {
        agent_ = ::fork();
        if (agent_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::execl(PCLOUD_AGENT_BIN, PCLOUD_AGENT_BIN, "--config", conf_.c_str(), "--log-level",
                    "info", nullptr);
            _exit(127);
        }
        ASSERT_GT(agent_, 0);
    }

    void TearDown() override {
        client_.close();
        if (agent_ > 0) {
            ::kill(agent_, SIGTERM);
            ::waitpid(agent_, nullptr, 0);
        }
        hub_.stop();
    }

    bool waitReport(const std::function<bool(const proto::Report&)>& pred,
                    proto::Report* out = nullptr) {
        std::unique_lock<std::mutex> l(mu_);
        auto end = std::chrono::steady_clock::now() + kDeadline;
        while (true) {
            for (; seen_ < reports_.size(); ++seen_) {
                auto r = proto::decodeReport(reports_[seen_]);
                if (r && pred(*r)) {
                    if (out)
                        *out = *r;
                    ++seen_;
                    return true;
                }
            }
            if (cv_.wait_until(l, end) == std::cv_status::timeout && seen_ >= reports_.size())
                return false;
        }
    }

    std::optional<proto::Reply> replyTo(const std::string& id) {
        proto::Report r;
        if (!waitReport(
                [&](const proto::Report& rep) {
                    auto* p = std::get_if<proto::Reply>(&rep.body);
                    return p && p->id == id;
                },
                &r))
            return std::nullopt;
        return std::get<proto::Reply>(r.body);
    }

    std::string signedBy(const testpki::TestPki& pki, const std::string& who,
                         const proto::Command& c, const std::string& target = "agent:proc01",
                         Millis msgtime = 0) {
        auto s = envelope::Signer::load(pki.keyPath(who), pki.certPath(who));
        EXPECT_TRUE(s) << s.error().describe();
        envelope::Fields f;
        f.target = target;
        f.action = proto::toString(c.type);
        f.msgtime = msgtime ? msgtime : SystemClock().nowMs();
        auto bytes = s->sign(f, proto::encodeCommand(c));
        EXPECT_TRUE(bytes) << bytes.error().describe();
        return *bytes;
    }

    void send(const std::string& body, const std::string& id) {
        ASSERT_TRUE(client_.send("pcloud.agent.proc01", body, {{"correlation-id", id}}).ok());
    }

    static proto::Command cmd(proto::CommandType t, const std::string& id) {
        proto::Command c;
        c.type = t;
        c.id = id;
        if (t != proto::CommandType::Status)
            c.unit = "worker";
        return c;
    }

    // The worker's pid as the agent reports it (a signed status), checked against /proc.
    pid_t workerPid(const std::string& id) {
        send(signedBy(*pki_, "dped:web", cmd(proto::CommandType::Status, id)), id);
        auto r = replyTo(id);
        if (!r || !r->ok)
            return -1;
        for (const auto& u : r->result["units"])
            if (u["unit"] == "worker" && u["active_state"] == "active")
                return u["main_pid"].get<pid_t>();
        return 0;
    }

    std::unique_ptr<testpki::TestPki> pki_, other_;
    bus::Hub hub_{bus::insecureHubOptions()}; // plain amqp://: the envelope is the point
    bus::Client client_;
    pid_t agent_ = -1;
    std::string conf_, log_, worker_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> reports_;
    std::size_t seen_ = 0;
};

TEST_F(SignedAgentOverHub, OnlyACorrectlySignedFreshCommandForThisAgentRuns) {
    // The worker runs (started by the agent at start).
    pid_t first = 0;
    auto end = std::chrono::steady_clock::now() + kDeadline;
    for (int i = 0; (first = workerPid("st-" + std::to_string(i))) <= 0 &&
                    std::chrono::steady_clock::now() < end;
         ++i)
        std::this_thread::sleep_for(100ms);
    ASSERT_GT(first, 0) << readAll(log_);
    ASSERT_TRUE(alive(first));
    EXPECT_NE(readAll(log_).find("Commands must be signed"), std::string::npos);

    std::string good = signedBy(*pki_, "dped:web", cmd(proto::CommandType::Restart, "r-ok"));
    json forged = json::parse(good);
    forged["body"] = proto::encodeCommand(cmd(proto::CommandType::Restart, "r-forged"));
    struct Attempt {
        std::string what, id, bytes, code;
    };
    const Millis now = SystemClock().nowMs();
    std::vector<Attempt> attempts = {
        {"forged", "r-forged", forged.dump(), "bad-signature"},
        {"unsigned", "r-plain", proto::encodeCommand(cmd(proto::CommandType::Restart, "r-plain")),
         "unsigned"},
        {"expired", "r-old",
         signedBy(*pki_, "dped:web", cmd(proto::CommandType::Restart, "r-old"), "agent:proc01",
                  now - 120'000),
         "expired"},
        {"wrong target", "r-other",
         signedBy(*pki_, "dped:web", cmd(proto::CommandType::Restart, "r-other"), "agent:proc02"),
         "wrong-target"},
        {"another deployable's dped", "r-db",
         signedBy(*pki_, "dped:db", cmd(proto::CommandType::Restart, "r-db")), "not-authorized"},
        {"a certificate of another CA", "r-rogue",
         signedBy(*other_, "dped:web", cmd(proto::CommandType::Restart, "r-rogue")),
         "untrusted-signer"},
    };
    for (const auto& a : attempts) {
        send(a.bytes, a.id);
        auto r = replyTo(a.id);
        ASSERT_TRUE(r) << a.what << ": no reply\n" << readAll(log_);
        EXPECT_FALSE(r->ok) << a.what;
        ASSERT_TRUE(r->error) << a.what;
        EXPECT_EQ(r->error->code, a.code) << a.what << ": " << r->error->message;
    }
    // Nothing ran: the same worker process, and the agent logged each refusal.
    EXPECT_EQ(workerPid("st-after-refused"), first);
    EXPECT_TRUE(alive(first));
    std::string log = readAll(log_);
    for (const auto& a : attempts)
        EXPECT_NE(log.find("code=" + a.code), std::string::npos) << a.code << "\n" << log;

    // The correctly signed restart runs: a new worker process.
    send(good, "r-ok");
    auto ok = replyTo("r-ok");
    ASSERT_TRUE(ok) << readAll(log_);
    EXPECT_TRUE(ok->ok) << (ok->error ? ok->error->message : "");
    pid_t second = workerPid("st-after-restart");
    EXPECT_GT(second, 0);
    EXPECT_NE(second, first);

    // Its replay is refused and restarts nothing.
    send(good, "r-ok");
    auto replay = replyTo("r-ok");
    ASSERT_TRUE(replay);
    EXPECT_FALSE(replay->ok);
    ASSERT_TRUE(replay->error);
    EXPECT_EQ(replay->error->code, "replayed");
    EXPECT_EQ(workerPid("st-after-replay"), second);
    EXPECT_TRUE(alive(second));

    // A killed agent comes back with its replay cache (RUN_DIR/replay.json): the replay is
    // still refused, and the adopted worker keeps its pid.
    ::kill(agent_, SIGKILL);
    ::waitpid(agent_, nullptr, 0);
    spawnAgent();
    ASSERT_TRUE(waitReport([](const proto::Report& r) { return r.type == "hello"; }))
        << readAll(log_);
    EXPECT_NE(readAll(log_).find("Replay cache restored"), std::string::npos) << readAll(log_);
    send(good, "r-ok");
    auto afterRestart = replyTo("r-ok");
    ASSERT_TRUE(afterRestart) << readAll(log_);
    ASSERT_TRUE(afterRestart->error);
    EXPECT_EQ(afterRestart->error->code, "replayed");
    EXPECT_EQ(workerPid("st-after-agent-restart"), second);
}

TEST(SignedAgentStart, ACaFileThatDoesNotLoadStopsTheAgentAtStart) {
    testpki::TestPki pki("bad");
    std::string bogus = pki.dir() + "/bogus.crt";
    std::ofstream(bogus) << "not a certificate\n";
    for (const std::string& ca : {bogus, pki.dir() + "/missing.crt"}) {
        std::string cmd = std::string(PCLOUD_AGENT_BIN) +
                          " --connect amqp://127.0.0.1:1 --assembly a1 --backend process "
                          "--run-dir none --ca " +
                          ca + " 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        ASSERT_NE(p, nullptr);
        std::string out;
        char buf[512];
        while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
            out.append(buf, n);
        int rc = ::pclose(p);
        EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 2) << rc << " " << out;
        EXPECT_NE(out.find(ca), std::string::npos) << out; // the error names the file
    }
}

} // namespace
