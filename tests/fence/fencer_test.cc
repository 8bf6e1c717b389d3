// The fencer with a real agent process (tests/fence/agents/fence_pcloud_test): what the
// agent gets on stdin, exit statuses, retries with backoff (on a ManualClock: the waits are
// recorded, not slept), the timeout kill, and agent names that must never become paths.
#include "fence/fencer.h"

#include "common/fs.h"

#include <filesystem>
#include <gtest/gtest.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::fence;

namespace {

struct Env {
    std::string dir;
    std::string record;
    hostconfig::HostConfig host;
    ManualClock clock;
    std::vector<Millis> slept;
    ProcessRunner runner;

    Env() {
        char tmpl[] = "/tmp/pcloud-fence-XXXXXX";
        dir = ::mkdtemp(tmpl);
        record = dir + "/record";
        host.fence_agents_dir = FENCE_AGENTS_DIR;
    }
    ~Env() { std::filesystem::remove_all(dir); }
    Fencer fencer(RetryPolicy p = {}) {
        return Fencer(
            host, runner, clock,
            [this](Millis ms) {
                slept.push_back(ms);
                clock.advance(ms);
            },
            p);
    }
    model::Host target(std::map<std::string, std::string> extra = {}) {
        model::Host h;
        h.name = "h1";
        h.node = "node:h1";
        h.fence.agent = "fence_pcloud_test";
        h.fence.params = {{"record", record}, {"plug", "h1"}, {"password", "s3cret x=y"}};
        for (auto& [k, v] : extra)
            h.fence.params[k] = v;
        return h;
    }
    std::string recorded() {
        auto t = fs::readFile(record);
        return t ? *t : "<none>";
    }
};

} // namespace

TEST(Fencer, OffSendsActionAndParamsAsKeyValueLinesOnStdin) {
    Env e;
    auto f = e.fencer();
    auto out = f.run(e.target(), Action::Off);
    ASSERT_TRUE(out.ok) << out.error;
    EXPECT_EQ(out.attempts, 1);
    EXPECT_TRUE(e.slept.empty());
    // action first, then the parameters sorted by key; values as given (with '=' and blanks).
    EXPECT_EQ(e.recorded(),
              "action=off\npassword=s3cret x=y\nplug=h1\nrecord=" + e.record + "\n--\n");
}

TEST(Fencer, FailuresAreRetriedWithBackoffOnTheInjectedClock) {
    Env e;
    auto f = e.fencer({3, 1'000, 2.0, 30'000, 10'000});
    const Millis start = e.clock.nowMs();
    auto out = f.run(e.target({{"fail", "2"}}), Action::Off);
    ASSERT_TRUE(out.ok) << out.error;
    EXPECT_EQ(out.attempts, 3);
    EXPECT_EQ(e.slept, (std::vector<Millis>{1'000, 2'000}));
    EXPECT_EQ(out.finished_at, start + 3'000);
    ASSERT_EQ(out.tries.size(), 3u);
    EXPECT_NE(
        out.tries[0].find("exited with status 1: fence_pcloud_test: failing as told (call 1)"),
        std::string::npos)
        << out.tries[0];
    EXPECT_NE(out.tries[2].find("succeeded"), std::string::npos);
}

TEST(Fencer, GivesUpAfterTheAttemptsAndSaysWhy) {
    Env e;
    auto f = e.fencer({4, 500, 3.0, 2'000, 10'000});
    auto out = f.run(e.target({{"fail", "always"}}), Action::Off);
    EXPECT_FALSE(out.ok);
    EXPECT_EQ(out.attempts, 4);
    EXPECT_EQ(e.slept, (std::vector<Millis>{500, 1'500, 2'000})); // capped
    EXPECT_NE(out.error.find("failing as told (call 4)"), std::string::npos) << out.error;
    EXPECT_EQ(backoffBefore({4, 500, 3.0, 2'000, 1}, 1), 0);
}

TEST(Fencer, AnAgentPastItsTimeoutIsKilled) {
    Env e;
    auto f = e.fencer({1, 0, 1.0, 0, 300});
    const auto t0 = std::chrono::steady_clock::now();
    auto out = f.run(e.target({{"sleep", "30"}}), Action::Off);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_FALSE(out.ok);
    EXPECT_NE(out.error.find("timed out after 300ms (killed)"), std::string::npos) << out.error;
    EXPECT_LT(took, std::chrono::seconds(10)); // not the agent's 30s
    // The record was written before the sleep: the agent ran, and got killed in its sleep.
    EXPECT_NE(e.recorded().find("sleep=30"), std::string::npos);
}

TEST(Fencer, AnAgentThatExitsIsAnsweredEvenIfItsChildKeepsTheOutputOpen) {
    Env e;
    auto f = e.fencer({1, 0, 1.0, 0, 20'000});
    const auto t0 = std::chrono::steady_clock::now();
    auto out = f.run(e.target({{"linger", "30"}}), Action::Off);
    EXPECT_TRUE(out.ok) << out.error;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(Fencer, StatusSucceedsWithOnOrOff) {
    Env e;
    auto f = e.fencer();
    auto off = f.run(e.target(), Action::Status);
    EXPECT_TRUE(off.ok) << off.error;
    EXPECT_TRUE(off.powered_off);
    auto on = f.run(e.target({{"status", "on"}}), Action::Status);
    EXPECT_TRUE(on.ok) << on.error;
    EXPECT_FALSE(on.powered_off);
    EXPECT_NE(e.recorded().find("action=status\n"), std::string::npos);
    EXPECT_TRUE(f.run(e.target(), Action::Monitor).ok);
}

TEST(Fencer, AgentNamesNeverBecomePaths) {
    Env e;
    for (const char* bad :
         {"/bin/sh", "../../bin/sh", "fence_../../bin/sh", "sh", "fence_a b", "fence_x;rm"}) {
        SCOPED_TRACE(bad);
        auto r = resolveAgent(bad, e.host);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("never given as a path"), std::string::npos)
            << r.error().message;
    }
    auto missing = resolveAgent("fence_not_here", e.host);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find(std::string(FENCE_AGENTS_DIR) + "/fence_not_here"),
              std::string::npos);
    EXPECT_EQ(*resolveAgent("fence_pcloud_test", e.host),
              std::string(FENCE_AGENTS_DIR) + "/fence_pcloud_test");
    e.host.fence_agents = {"fence_virsh"};
    auto narrowed = resolveAgent("fence_pcloud_test", e.host);
    ASSERT_FALSE(narrowed.ok());
    EXPECT_NE(narrowed.error().message.find("fence_agent = fence_pcloud_test"), std::string::npos);

    // A failed resolve runs nothing and is not retried.
    auto f = e.fencer();
    auto out = f.run(e.target(), Action::Off);
    EXPECT_FALSE(out.ok);
    EXPECT_EQ(out.attempts, 0);
    EXPECT_EQ(e.recorded(), "<none>");
    model::Host none;
    none.name = "h2";
    EXPECT_NE(f.run(none).error.find("no fence agent is configured"), std::string::npos);
}

TEST(Fencer, ParametersAreRecheckedBeforeTheyReachStdin) {
    model::Host h;
    h.name = "h1";
    h.fence.agent = "fence_pcloud_test";
    h.fence.params = {{"ip", "192.0.2.1\naction=on"}};
    auto in = agentInput(h, Action::Off);
    ASSERT_FALSE(in.ok());
    EXPECT_NE(in.error().message.find("line break"), std::string::npos);
    h.fence.params = {{"action", "on"}};
    EXPECT_FALSE(agentInput(h, Action::Off).ok());
    h.fence.params = {{"ip", "192.0.2.1"}};
    EXPECT_EQ(*agentInput(h, Action::Reboot), "action=reboot\nip=192.0.2.1\n");
}
