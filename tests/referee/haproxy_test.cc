// The haproxy driver against a real HAProxy 2.6 on loopback, with real HTTP backends.
#include "harness.h"
#include "referee/haproxy_referee.h"
#include "referee/referee.h"

#include <gtest/gtest.h>

#include <fstream>
#include <memory>

using namespace pcloud;
using namespace pcloud::referee;
using namespace pcloud::referee::test;

namespace {

class HaproxyTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!haveProgram("haproxy"))
            GTEST_SKIP() << "haproxy is not installed (scripts/install-deps.sh)";
        dir_ = makeTempDir("haproxy");
        socket_ = dir_ + "/admin.sock";
        port_ = freeLoopbackPort();
        a_ = std::make_unique<HttpBackend>("a");
        b_ = std::make_unique<HttpBackend>("b");
        std::ofstream cfg(dir_ + "/haproxy.cfg");
        cfg << "global\n"
               "    stats socket "
            << socket_
            << " mode 600 level admin\n"
               "defaults\n"
               "    mode http\n"
               "    timeout connect 500ms\n"
               "    timeout client 5s\n"
               "    timeout server 5s\n"
               "frontend fe\n"
               "    bind 127.0.0.1:"
            << port_
            << "\n"
               "    default_backend web\n"
               "backend web\n"
               "    balance roundrobin\n"
               "    server a "
            << a_->address()
            << "\n"
               "    server b "
            << b_->address() << "\n";
        cfg.close();
        startHaproxy();
        referee_ = std::make_unique<HaproxyReferee>(socket_, "web", 1000);
    }
    void TearDown() override {
        haproxy_.stop();
        removeTree(dir_);
    }
    void startHaproxy() {
        ::unlink(socket_.c_str());
        ASSERT_TRUE(
            haproxy_.start({"haproxy", "-db", "-f", dir_ + "/haproxy.cfg"}, dir_ + "/haproxy.log"));
        ASSERT_TRUE(waitUntil(
            [&] { return rawSocket(socket_, "show info\n").find("Pid:") != std::string::npos; },
            10'000))
            << "haproxy did not open its socket; see " << dir_ << "/haproxy.log";
    }
    std::vector<Member> members(MemberState a, MemberState b) {
        return {{"a", a_->address(), a}, {"b", b_->address(), b}};
    }
    std::optional<ActualMember> actual(const std::string& name) {
        auto all = referee_->read();
        EXPECT_TRUE(all.ok()) << all.error().describe();
        if (!all)
            return std::nullopt;
        for (const auto& m : *all)
            if (m.name == name)
                return m;
        return std::nullopt;
    }

    std::string dir_, socket_;
    int port_ = 0;
    std::unique_ptr<HttpBackend> a_, b_;
    Child haproxy_;
    std::unique_ptr<HaproxyReferee> referee_;
};

TEST_F(HaproxyTest, FailureRemovesMemberAndRecoveryAddsItBack) {
    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Ready)).ok());
    auto both = spread(port_, 10);
    EXPECT_GT(both["a"], 0);
    EXPECT_GT(both["b"], 0);

    // The agent reports a's service failed: the policy engine wants it out.
    auto st = referee_->apply(members(MemberState::Out, MemberState::Ready));
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_EQ(actual("a")->state, MemberState::Out);
    auto onlyB = spread(port_, 10);
    EXPECT_EQ(onlyB["b"], 10) << "traffic still reached a after it was taken out";

    // Recovered and ready again: back in the rotation.
    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Ready)).ok());
    EXPECT_EQ(actual("a")->state, MemberState::Ready);
    auto again = spread(port_, 10);
    EXPECT_GT(again["a"], 0);
    EXPECT_EQ(again[""], 0);
}

TEST_F(HaproxyTest, ApplyIsIdempotentAndDrainIsVisible) {
    auto desired = members(MemberState::Drain, MemberState::Ready);
    ASSERT_TRUE(referee_->apply(desired).ok());
    ASSERT_TRUE(referee_->apply(desired).ok());
    EXPECT_EQ(actual("a")->state, MemberState::Drain);
    // Drain takes no new (non-sticky) requests.
    EXPECT_EQ(spread(port_, 10)["b"], 10);
    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_TRUE(report->clean()) << report->describe();
}

TEST_F(HaproxyTest, ParkedMemberStaysOutUntilUnparked) {
    auto parked = members(MemberState::Out, MemberState::Ready);
    ASSERT_TRUE(referee_->apply(parked).ok());
    for (int i = 0; i < 3; ++i) {
        auto report = referee_->reconcile(parked);
        ASSERT_TRUE(report.ok()) << report.error().describe();
        EXPECT_TRUE(report->clean()) << report->describe();
    }
    EXPECT_EQ(spread(port_, 6)["b"], 6);
    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Ready)).ok());
    EXPECT_GT(spread(port_, 10)["a"], 0);
}

TEST_F(HaproxyTest, MembersComeAndGoAsDynamicServers) {
    HttpBackend c("c");
    auto desired = members(MemberState::Ready, MemberState::Out);
    desired.push_back({"c", c.address(), MemberState::Ready});
    auto st = referee_->apply(desired);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    auto got = actual("c");
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->address, c.address());
    EXPECT_EQ(got->state, MemberState::Ready);
    auto traffic = spread(port_, 10);
    EXPECT_GT(traffic["c"], 0);
    EXPECT_EQ(traffic["b"], 0);

    // c goes away: maint, then deleted from the backend.
    st = referee_->apply(members(MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_FALSE(actual("c").has_value());
    EXPECT_EQ(spread(port_, 10)["c"], 0);
}

TEST_F(HaproxyTest, AddressChangeIsApplied) {
    HttpBackend a2("a2");
    std::vector<Member> desired = {{"a", a2.address(), MemberState::Ready},
                                   {"b", b_->address(), MemberState::Out}};
    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    ASSERT_EQ(report->drifts.size(), 2u) << report->describe();
    EXPECT_EQ(report->drifts[0].describe(),
              "member a had address " + a_->address() + ", wanted " + a2.address());
    EXPECT_EQ(spread(port_, 5)["a2"], 5);
}

TEST_F(HaproxyTest, RestartIsDetectedAndStateReapplied) {
    HttpBackend c("c");
    auto desired = members(MemberState::Out, MemberState::Ready);
    desired.push_back({"c", c.address(), MemberState::Ready});
    auto first = referee_->reconcile(desired);
    ASSERT_TRUE(first.ok()) << first.error().describe();
    EXPECT_FALSE(first->restarted);

    // HAProxy restarts from its config file: a is back in, c (dynamic) is gone.
    haproxy_.stop();
    startHaproxy();
    EXPECT_GT(spread(port_, 10)["a"], 0) << "after a restart haproxy should have forgotten";

    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_TRUE(report->restarted);
    EXPECT_NE(report->restart_note.find("restarted"), std::string::npos);
    ASSERT_EQ(report->drifts.size(), 2u) << report->describe();
    EXPECT_EQ(report->drifts[0].describe(), "member a was ready, wanted out");
    EXPECT_EQ(report->drifts[1].describe(), "member c was missing, wanted ready");
    auto traffic = spread(port_, 10);
    EXPECT_EQ(traffic["a"], 0);
    EXPECT_GT(traffic["c"], 0);

    auto quiet = referee_->reconcile(desired);
    ASSERT_TRUE(quiet.ok());
    EXPECT_TRUE(quiet->clean()) << quiet->describe();
}

TEST_F(HaproxyTest, DriftInjectedThroughTheSocketIsReportedAndFixed) {
    auto desired = members(MemberState::Ready, MemberState::Ready);
    ASSERT_TRUE(referee_->reconcile(desired).ok());
    // An operator (or a script) changes the runtime state behind pcloud's back.
    EXPECT_EQ(rawSocket(socket_, "set server web/b state maint;set server web/a state drain\n"),
              "\n\n");
    EXPECT_EQ(spread(port_, 4)[""], 4) << "both out: haproxy should answer 503";

    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_FALSE(report->restarted);
    ASSERT_EQ(report->drifts.size(), 2u) << report->describe();
    EXPECT_EQ(report->drifts[0].describe(), "member a was drain, wanted ready");
    EXPECT_EQ(report->drifts[1].describe(), "member b was out, wanted ready");
    auto traffic = spread(port_, 10);
    EXPECT_GT(traffic["a"], 0);
    EXPECT_GT(traffic["b"], 0);
    auto again = referee_->reconcile(desired);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->clean()) << again->describe();
}

TEST_F(HaproxyTest, UnknownBackendIsNamed) {
    HaproxyReferee wrong(socket_, "nosuch", 1000);
    auto st = wrong.apply(members(MemberState::Ready, MemberState::Ready));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("no backend 'nosuch'"), std::string::npos)
        << st.error().describe();
}

TEST_F(HaproxyTest, DownHaproxyFailsFastAndRecoversOnNextReconcile) {
    auto desired = members(MemberState::Out, MemberState::Ready);
    haproxy_.stop();
    auto st = referee_->apply(desired);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find(socket_), std::string::npos) << st.error().describe();
    startHaproxy();
    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_EQ(spread(port_, 6)["b"], 6);
}

} // namespace
