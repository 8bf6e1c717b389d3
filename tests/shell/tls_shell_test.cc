// cped's amqps:// hub with the real pcloud-pki, cped and pcloudsh (dped is the fake script):
// the operator setup in three commands, pcloudsh presenting the operator certificate from
// pcloud.conf, a non-operator certificate refused at the command API, cped issuing the
// dped certificate of the dped it starts, and plain AMQP only with --insecure-listen.
#include "bus/client.h"
#include "common/fs.h"
#include "envelope/envelope.h"
#include "pki/pki.h"
#include "support/test_support.h"

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace std::chrono_literals;
using testsupport::runCommand;

namespace {

class TlsCped : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-tls-cped-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        pki_ = dir_ + "/pki";
        conf_ = dir_ + "/pcloud.conf";
        port_ = testsupport::freePort();
        ASSERT_TRUE(fs::writeAtomic(conf_, "pki_dir = " + pki_ + "\ncped_name = test\n", {}, 0644));
    }
    void TearDown() override {
        stop();
        std::system(("rm -rf " + dir_).c_str());
    }
    int pki(const std::string& args) {
        auto r = runCommand(std::string(PKI_BIN) + " --dir " + pki_ + " " + args + " 2>&1");
        EXPECT_EQ(r.rc, 0) << args << ": " << r.out;
        return r.rc;
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(port_); }
    void start(std::vector<std::string> extra = {}) {
        log_ = dir_ + "/cped.log";
        pid_ = ::fork();
        if (pid_ == 0) {
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<std::string> argv = {
                CPED_BIN, "--state-dir", dir_ + "/state", "--listen",    url(), "--config",
                conf_,    "--dped-path", FAKE_DPED,       "--log-level", "info"};
            argv.insert(argv.end(), extra.begin(), extra.end());
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(CPED_BIN, args.data());
            ::_exit(127);
        }
    }
    void stop() {
        if (pid_ <= 0)
            return;
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, nullptr, 0);
        pid_ = 0;
    }
    testsupport::CommandResult sh(const std::string& args) {
        return runCommand(std::string(PCLOUDSH_BIN) + " --broker " + url() + " --config " + conf_ +
                          " --timeout 3 " + args + " 2>&1");
    }
    std::string log() const { return fs::readFile(log_).value(); }

    std::string dir_, pki_, conf_, log_;
    int port_ = 0;
    pid_t pid_ = 0;
};

TEST_F(TlsCped, OperatorSetupInThreeCommandsThenPcloudshUsesIt) {
    ASSERT_EQ(pki("init"), 0);
    ASSERT_EQ(pki("issue --cped test"), 0);
    ASSERT_EQ(pki("issue --operator alice"), 0);
    start();
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 20s))
        << sh("deployable_list").out << "\n"
        << log();
    EXPECT_NE(log().find("identity=operator:alice"), std::string::npos) << log();
    // pcloudsh signed it (target cped:api) and cped verified the signer.
    EXPECT_NE(log().find("Command handled command=deployable_list"), std::string::npos) << log();
    EXPECT_NE(log().find("sender=operator:alice"), std::string::npos) << log();
}

// On the embedded hub only operator:* may attach to pcloud.cped, so a plain (unsigned)
// request from an operator's client still runs; one signed by the operator for another
// target is refused with the verifier's code.
TEST_F(TlsCped, OnTheHubPlainOperatorRequestsStillRunAndEnvelopesAreVerified) {
    ASSERT_EQ(pki("init"), 0);
    ASSERT_EQ(pki("issue --cped test"), 0);
    ASSERT_EQ(pki("issue --operator alice"), 0);
    start();
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 20s)) << log();
    bus::ClientOptions o;
    o.url = url();
    o.caFile = pki_ + "/ca.crt";
    o.certFile = pki_ + "/operator.alice.crt";
    o.keyFile = pki_ + "/operator.alice.key";
    bus::Client c;
    ASSERT_TRUE(c.connect(o).ok());
    ASSERT_TRUE(c.waitConnected(10s));
    std::string plain = R"({"v":1,"type":"command","id":"p1","command":"deployable_create",)"
                        R"("args":{"name":"web","uri":"test:///default"}})";
    auto r = c.request("pcloud.cped", plain, 10s, {}, "p1");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_NE(r->body.find("\"ok\":true"), std::string::npos) << r->body;

    auto signer = envelope::Signer::load(o.keyFile, o.certFile);
    ASSERT_TRUE(signer) << signer.error().describe();
    envelope::Fields f;
    f.target = "dped:web"; // not the command API
    f.action = "deployable_delete";
    f.msgtime = SystemClock().nowMs();
    auto bytes = signer->sign(
        f,
        R"({"v":1,"type":"command","id":"s1","command":"deployable_delete","args":{"name":"web"}})");
    ASSERT_TRUE(bytes) << bytes.error().describe();
    auto r2 = c.request("pcloud.cped", *bytes, 10s, {}, "s1");
    ASSERT_TRUE(r2.ok()) << r2.error().describe();
    EXPECT_NE(r2->body.find("\"code\":\"wrong-target\""), std::string::npos) << r2->body;
    EXPECT_NE(r2->body.find("\"id\":\"s1\""), std::string::npos) << r2->body;
    c.close();
    auto list = sh("deployable_list");
    EXPECT_EQ(list.rc, 0) << list.out;
    EXPECT_NE(list.out.find("web"), std::string::npos) << list.out; // not deleted
}

TEST_F(TlsCped, ANonOperatorCertificateIsRefusedAtTheCommandApi) {
    ASSERT_EQ(pki("init"), 0);
    ASSERT_EQ(pki("issue --cped test"), 0);
    ASSERT_EQ(pki("issue --operator alice"), 0);
    ASSERT_EQ(pki("issue --agent a"), 0);
    start();
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 20s)) << log();
    auto r = sh("--bus-cert " + pki_ + "/agent.a.crt --bus-key " + pki_ +
                "/agent.a.key deployable_list");
    EXPECT_NE(r.rc, 0) << r.out;
    ASSERT_TRUE(testsupport::waitFor(
        [&] { return log().find("Hub refused a link identity=agent:a") != std::string::npos; },
        10s))
        << log();
    EXPECT_NE(log().find("address=pcloud.cped"), std::string::npos) << log();
    auto st = sh("--json status");
    ASSERT_EQ(st.rc, 0) << st.out;
    EXPECT_NE(st.out.find("\"denied_links\":1"), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("\"tls\":true"), std::string::npos) << st.out;
}

TEST_F(TlsCped, CpedIssuesTheCertificateOfTheDpedItStarts) {
    ASSERT_EQ(pki("init"), 0);
    ASSERT_EQ(pki("issue --cped test"), 0);
    ASSERT_EQ(pki("issue --operator alice"), 0);
    start();
    ASSERT_TRUE(testsupport::waitFor([&] { return sh("deployable_list").rc == 0; }, 20s)) << log();
    for (auto cmd :
         {"deployable_create web --uri test:///default",
          "assembly_create n1 --image /var/lib/pcloud/n1.img", "deployable_assembly_add web n1"}) {
        auto c = sh(cmd);
        ASSERT_EQ(c.rc, 0) << cmd << ": " << c.out;
    }
    auto s = sh("deployable_start web");
    ASSERT_EQ(s.rc, 0) << s.out;
    std::string args;
    ASSERT_TRUE(testsupport::waitFor(
        [&] {
            auto a = fs::readFile(dir_ + "/state/fake-dped-web.args");
            args = a ? *a : "";
            return !args.empty();
        },
        10s))
        << log();
    EXPECT_NE(args.find("--bus-cert " + pki_ + "/dped.web.crt"), std::string::npos) << args;
    EXPECT_NE(args.find("--bus-key " + pki_ + "/dped.web.key"), std::string::npos) << args;
    EXPECT_NE(args.find("--broker amqps://127.0.0.1:"), std::string::npos) << args;
    auto info = pki::verify(pki_ + "/ca.crt", pki_ + "/dped.web.crt");
    ASSERT_TRUE(info) << info.error().describe();
    EXPECT_EQ(info->identity.text(), "dped:web");
    struct stat st {};
    ASSERT_EQ(::stat((pki_ + "/dped.web.key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TlsCped, WithoutCertificatesCpedSaysHowToMakeThem) {
    auto r = runCommand(std::string(CPED_BIN) + " --state-dir " + dir_ + "/state --listen " +
                        url() + " --config " + conf_ + " --dped-path " + FAKE_DPED + " 2>&1");
    EXPECT_EQ(r.rc, 78) << r.out;
    EXPECT_NE(r.out.find(pki_ + "/ca.crt"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("pcloud-pki init"), std::string::npos) << r.out;
}

TEST_F(TlsCped, PlainAmqpNeedsInsecureListen) {
    std::string plain = "amqp://127.0.0.1:" + std::to_string(port_);
    auto r = runCommand(std::string(CPED_BIN) + " --state-dir " + dir_ + "/state --listen " +
                        plain + " --config " + conf_ + " --dped-path " + FAKE_DPED + " 2>&1");
    EXPECT_EQ(r.rc, 78) << r.out;
    EXPECT_NE(r.out.find("--insecure-listen"), std::string::npos) << r.out;
}

} // namespace
