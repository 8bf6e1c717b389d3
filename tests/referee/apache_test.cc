// The apache driver against a real Apache 2.4 (mod_proxy_balancer) on loopback, with its
// own ServerRoot in a temp dir, and real HTTP backends.
#include "common/fs.h"
#include "common/host_config.h"
#include "harness.h"
#include "referee/apache_referee.h"
#include "referee/referee.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <pwd.h>
#include <set>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::referee;
using namespace pcloud::referee::test;

namespace {

const char* kModules = "/usr/lib/apache2/modules";

class ApacheTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!haveProgram("apache2"))
            GTEST_SKIP() << "apache2 is not installed (scripts/install-deps.sh)";
        if (!fs::exists(std::string(kModules) + "/mod_proxy_balancer.so"))
            GTEST_SKIP() << "mod_proxy_balancer is missing from " << kModules;
        dir_ = makeTempDir("apache");
        port_ = freeLoopbackPort();
        a_ = std::make_unique<HttpBackend>("a");
        b_ = std::make_unique<HttpBackend>("b");
        managed_ = dir_ + "/pcloud-web.conf";
        std::filesystem::create_directories(dir_ + "/run");
        std::string user = ::getpwnam("www-data") ? "www-data" : "nobody";
        std::ofstream cfg(dir_ + "/httpd.conf");
        cfg << "ServerRoot " << dir_ << "\n"
            << "ServerName localhost\n"
            << "Listen 127.0.0.1:" << port_ << "\n"
            << "PidFile " << dir_ << "/httpd.pid\n"
            << "ErrorLog " << dir_ << "/error.log\n"
            << "LogLevel warn\n"
            << "DefaultRuntimeDir " << dir_ << "/run\n"
            << "User " << user << "\nGroup " << (user == "www-data" ? "www-data" : "nogroup")
            << "\n";
        for (const char* m : {"mpm_event", "authz_core", "slotmem_shm", "proxy", "proxy_http",
                              "proxy_balancer", "lbmethod_byrequests"})
            cfg << "LoadModule " << m << "_module " << kModules << "/mod_" << m << ".so\n";
        cfg << "StartServers 1\nServerLimit 2\nThreadsPerChild 8\nMaxRequestWorkers 16\n"
            << "IncludeOptional " << dir_ << "/extra*.conf\n"
            << "IncludeOptional " << managed_ << "\n";
        cfg.close();
        apachectl_ = "apache2 -f " + dir_ + "/httpd.conf -d " + dir_;
        ASSERT_TRUE(
            apache_.start({"apache2", "-f", dir_ + "/httpd.conf", "-d", dir_, "-DFOREGROUND"},
                          dir_ + "/stdout.log"));
        ASSERT_TRUE(waitUntil(
            [&] {
                int status = 0;
                httpGet(port_, "/", &status, 500);
                return status != 0;
            },
            10'000))
            << "apache did not start; see " << dir_ << "/error.log";
        // As dped builds it: the command and the writable directory from the host
        // configuration file, the rest from the deployable's settings.
        {
            std::ofstream conf(dir_ + "/pcloud.conf");
            conf << "# written by apache_test\napachectl = " << apachectl_
                 << "\nreferee_dir = " << dir_ << "\n";
        }
        auto host = hostconfig::load(dir_ + "/pcloud.conf", true);
        ASSERT_TRUE(host.ok()) << host.error().describe();
        model::RefereeConfig rc;
        rc.driver = "apache";
        rc.config_file = managed_;
        rc.cluster = "web";
        rc.alias = "/";
        auto made = makeReferee(rc, *host);
        ASSERT_TRUE(made.ok()) << made.error().describe();
        referee_ = std::move(*made);
    }
    void TearDown() override {
        apache_.stop();
        removeTree(dir_);
    }
    std::vector<Member> members(MemberState a, MemberState b) {
        return {{"a", a_->address(), a}, {"b", b_->address(), b}};
    }
    // After a graceful reload Apache switches over asynchronously: wait for n answers in a
    // row that satisfy `want`.
    bool serves(const std::function<bool(const std::string&)>& want, int n = 6) {
        return waitUntil(
            [&] {
                for (int i = 0; i < n; ++i)
                    if (!want(httpGet(port_)))
                        return false;
                return true;
            },
            15'000);
    }
    bool servesBoth() {
        return waitUntil(
            [&] {
                auto s = spread(port_, 6);
                return s["a"] > 0 && s["b"] > 0 && s[""] == 0;
            },
            15'000);
    }

    std::string dir_, managed_, apachectl_;
    int port_ = 0;
    std::unique_ptr<HttpBackend> a_, b_;
    Child apache_;
    std::unique_ptr<Referee> referee_;
};

TEST_F(ApacheTest, FailureRemovesMemberAndRecoveryAddsItBack) {
    auto st = referee_->apply(members(MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_TRUE(servesBoth());

    st = referee_->apply(members(MemberState::Out, MemberState::Ready));
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_TRUE(serves([](const std::string& body) { return body == "b"; }, 10));

    st = referee_->apply(members(MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_TRUE(servesBoth());
}

TEST_F(ApacheTest, ParkDrainAndUnpark) {
    auto parked = members(MemberState::Out, MemberState::Drain);
    ASSERT_TRUE(referee_->apply(parked).ok());
    auto read = referee_->read();
    ASSERT_TRUE(read.ok());
    ASSERT_EQ(read->size(), 2u);
    EXPECT_EQ((*read)[0].state, MemberState::Out);
    EXPECT_EQ((*read)[1].state, MemberState::Drain);
    auto before = std::filesystem::last_write_time(managed_);
    auto report = referee_->reconcile(parked);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_TRUE(report->clean()) << report->describe();
    EXPECT_EQ(std::filesystem::last_write_time(managed_), before) << "idempotent apply rewrote";

    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Out)).ok());
    EXPECT_TRUE(serves([](const std::string& body) { return body == "a"; }, 10));
}

TEST_F(ApacheTest, ConfigtestFailureRollsBackAndOldConfigStaysLive) {
    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Ready)).ok());
    ASSERT_TRUE(servesBoth());
    auto good = fs::readFile(managed_);
    ASSERT_TRUE(good.ok());
    std::set<std::string> filesBefore;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
        filesBefore.insert(e.path().filename());

    // Someone else breaks the server's configuration: pcloud must not reload it.
    { std::ofstream(dir_ + "/extra-broken.conf") << "ThisIsNotADirective on\n"; }
    filesBefore.insert("extra-broken.conf");
    auto st = referee_->apply(members(MemberState::Out, MemberState::Ready));
    ASSERT_FALSE(st.ok());
    const std::string msg = st.error().describe();
    EXPECT_NE(msg.find("configtest failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("restored the previous file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ThisIsNotADirective"), std::string::npos) << msg;
    EXPECT_NE(msg.find(managed_), std::string::npos) << msg;
    EXPECT_EQ(*fs::readFile(managed_), *good) << "the previous file was not restored byte for byte";
    std::set<std::string> filesAfter;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
        filesAfter.insert(e.path().filename());
    EXPECT_EQ(filesAfter, filesBefore) << "left something behind next to the managed file";
    // The old configuration is still live: both members serve, no errors.
    auto traffic = spread(port_, 10);
    EXPECT_EQ(traffic[""], 0);
    EXPECT_GT(traffic["a"], 0);

    // Once the config is fixed, the next reconcile gets there.
    std::filesystem::remove(dir_ + "/extra-broken.conf");
    auto report = referee_->reconcile(members(MemberState::Out, MemberState::Ready));
    ASSERT_TRUE(report.ok()) << report.error().describe();
    ASSERT_EQ(report->drifts.size(), 1u);
    EXPECT_EQ(report->drifts[0].describe(), "member a was ready, wanted out");
    EXPECT_TRUE(serves([](const std::string& body) { return body == "b"; }, 10));
}

TEST_F(ApacheTest, HandEditedFileIsDriftAndIsRewritten) {
    auto desired = members(MemberState::Ready, MemberState::Ready);
    ASSERT_TRUE(referee_->apply(desired).ok());
    auto text = *fs::readFile(managed_);
    auto pos = text.find("route=b");
    ASSERT_NE(pos, std::string::npos);
    text.insert(pos + 7, " status=+D");
    ASSERT_TRUE(fs::writeAtomic(managed_, text).ok());

    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    ASSERT_EQ(report->drifts.size(), 1u) << report->describe();
    EXPECT_EQ(report->drifts[0].describe(), "member b was out, wanted ready");
    EXPECT_EQ(fs::readFile(managed_)->find("status=+D"), std::string::npos);
    EXPECT_TRUE(servesBoth());
}

// A store file edited by hand, or a file swapped after referee_set was accepted: the
// managed file has become a symlink to something else. dped checks before every write.
TEST_F(ApacheTest, ASymlinkPlantedAsTheManagedFileIsNotWrittenThrough) {
    ASSERT_TRUE(referee_->apply(members(MemberState::Ready, MemberState::Ready)).ok());
    const std::string victim = dir_ + "/victim.conf";
    ASSERT_TRUE(fs::writeAtomic(victim, "# precious\n").ok());
    ASSERT_EQ(::unlink(managed_.c_str()), 0);
    ASSERT_EQ(::symlink(victim.c_str(), managed_.c_str()), 0);
    auto st = referee_->apply(members(MemberState::Ready, MemberState::Out));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("config_file is a symbolic link"), std::string::npos)
        << st.error().describe();
    EXPECT_EQ(*fs::readFile(victim), "# precious\n");
    // And makeReferee (dped start) refuses it up front, naming the setting.
    hostconfig::HostConfig host;
    host.referee_dirs = {dir_};
    model::RefereeConfig rc;
    rc.driver = "apache";
    rc.config_file = managed_;
    rc.cluster = "web";
    auto made = makeReferee(rc, host);
    ASSERT_FALSE(made.ok());
    EXPECT_NE(made.error().message.find("referee config_file"), std::string::npos);
}

TEST_F(ApacheTest, MissingApachectlIsAClearError) {
    ApacheReferee::Settings s;
    s.config_file = dir_ + "/other.conf";
    s.cluster = "other";
    s.apachectl = "/nonexistent/apachectl";
    ApacheReferee broken(s);
    auto st = broken.apply(members(MemberState::Ready, MemberState::Ready));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("exit 127"), std::string::npos) << st.error().describe();
    EXPECT_FALSE(fs::exists(dir_ + "/other.conf")) << "a file that did not exist must be removed";
}

} // namespace
