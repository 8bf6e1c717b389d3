// TLS to etcd (docs/ha.md "TLS to etcd"): a real etcd serving its clients over TLS with
// --client-cert-auth, certificates made for the test by the openssl command (a CA, the
// member's server certificate for 127.0.0.1, a client certificate). The etcd client and the
// real cped talk to it; plain text, a certificate of another CA, no client certificate and
// bad files are each refused with an error that says so.
#include "common/fs.h"
#include "etcd/client.h"
#include "etcd/etcd_fixture.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::etcd;
using namespace pcloud::testsupport;
using pcloud::etcdtest::EtcdCluster;
using pcloud::etcdtest::TlsPki;
using namespace std::chrono_literals;

namespace {

class EtcdTls : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-etcdtls-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        ASSERT_EQ(etcdtest::makeTlsPki(dir_ + "/pki", pki_), "");
        etcd_.useTls(pki_);
        ASSERT_EQ(etcd_.start(), "");
    }
    void TearDown() override { runCommand("rm -rf '" + dir_ + "'"); }

    Result<std::unique_ptr<Client>> client(std::optional<TlsFiles> tls) {
        ClientOptions o{etcd_.endpoints(), 2000, 1000};
        o.tls = std::move(tls);
        return Client::create(std::move(o));
    }
    TlsFiles good() const { return {pki_.ca, pki_.client_cert, pki_.client_key}; }
    // A put with `tls` must fail; returns why.
    std::string refusedPut(std::optional<TlsFiles> tls) {
        auto c = client(std::move(tls));
        if (!c)
            return "create failed: " + c.error().message;
        auto r = (*c)->put("/pcloud/test/k", "v");
        EXPECT_FALSE(r.ok()) << "a put went through";
        return r ? std::string() : r.error().message;
    }

    std::string dir_;
    TlsPki pki_;
    EtcdCluster etcd_{1};
};

TEST_F(EtcdTls, AClientWithTheCaAndItsCertificateReadsWritesAndAsksStatus) {
    auto c = client(good());
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto put = (*c)->put("/pcloud/test/k", "over tls");
    ASSERT_TRUE(put.ok()) << put.error().message;
    auto got = (*c)->range("/pcloud/test/k");
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_EQ(got->kvs.size(), 1u);
    EXPECT_EQ(got->kvs[0].value, "over tls");
    // cluster_status asks each member by its advertised client URL, https:// here.
    auto st = (*c)->memberStatus("https://" + etcd_.member(0).endpoint());
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_FALSE(st->version.empty());
    auto plainUrl = (*c)->memberStatus("http://" + etcd_.member(0).endpoint());
    ASSERT_FALSE(plainUrl.ok());
    EXPECT_NE(plainUrl.error().message.find("the member serves plain text; this client speaks TLS"),
              std::string::npos)
        << plainUrl.error().message;
}

// Each of these must not reach etcd: the errors name the endpoint and the call.
TEST_F(EtcdTls, PlainTextAnotherCaAndNoClientCertificateAreRefused) {
    TlsPki other;
    ASSERT_EQ(etcdtest::makeTlsPki(dir_ + "/other", other), "");
    const std::string where = "etcd " + etcd_.member(0).endpoint() + ": Put:";
    for (const auto& [what, tls] : std::vector<std::pair<std::string, std::optional<TlsFiles>>>{
             {"plain text", std::nullopt},
             {"the server's certificate checked against another CA",
              TlsFiles{other.ca, pki_.client_cert, pki_.client_key}},
             {"no client certificate", TlsFiles{pki_.ca, "", ""}},
             {"a client certificate of another CA",
              TlsFiles{pki_.ca, other.client_cert, other.client_key}}}) {
        auto why = refusedPut(tls);
        EXPECT_NE(why.find(where), std::string::npos) << what << ": " << why;
    }
    // The plain client that cluster_status would use on an https:// member says why.
    auto plain = client(std::nullopt);
    ASSERT_TRUE(plain.ok());
    auto st = (*plain)->memberStatus("https://" + etcd_.member(0).endpoint());
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("the member serves TLS; this client is plain text"),
              std::string::npos)
        << st.error().message;
}

TEST(EtcdTlsFiles, MissingNotPemOrHalfAPairAreErrorsNamingTheFile) {
    char tmpl[] = "/tmp/pcloud-etcdtlsf-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    ASSERT_TRUE(fs::writeAtomic(dir + "/junk.crt", "not a certificate\n", {}, 0644).ok());
    TlsPki pki;
    ASSERT_EQ(etcdtest::makeTlsPki(dir + "/pki", pki), "");
    struct Case {
        TlsFiles tls;
        std::string says;
    };
    const std::vector<Case> cases = {
        {{dir + "/missing.crt", "", ""},
         "etcd TLS: cannot read the CA certificate " + dir + "/missing.crt"},
        {{dir + "/junk.crt", "", ""},
         "etcd TLS: the CA certificate " + dir + "/junk.crt is not PEM"},
        {{pki.ca, dir + "/junk.crt", pki.client_key},
         "the client certificate " + dir + "/junk.crt is not PEM"},
        {{pki.ca, pki.client_cert, ""}, "a client certificate needs its key"},
        {{"", pki.client_cert, pki.client_key}, "etcd TLS: no CA certificate given"},
    };
    for (const auto& c : cases) {
        ClientOptions o{{"127.0.0.1:1"}, 1000, 500};
        o.tls = c.tls;
        auto r = Client::create(std::move(o));
        ASSERT_FALSE(r.ok()) << c.says;
        EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
    }
    runCommand("rm -rf '" + dir + "'");
}

// The real cped: with etcds:// and the files in pcloud.conf it campaigns and leads; an
// etcds:// URL without etcd_ca, or a plain URL with TLS files configured, is a usage error
// that says which, before cped listens or campaigns.
TEST_F(EtcdTls, CpedLeadsOverTlsAndRefusesAMissingCaOrAPlainUrlWithTlsFiles) {
    auto runCped = [&](const std::string& name, const std::string& conf, const std::string& url,
                       pid_t& pid) {
        const std::string cdir = dir_ + "/" + name;
        EXPECT_EQ(runCommand("mkdir -p " + cdir + "/state").rc, 0);
        EXPECT_TRUE(fs::writeAtomic(cdir + "/pcloud.conf", conf, {}, 0644).ok());
        pid = spawnLogged(CPED_BIN,
                          {"cped", "--state-dir", cdir + "/state", "--listen",
                           "amqp://127.0.0.1:" + std::to_string(freePort()), "--insecure-listen",
                           "--config", cdir + "/pcloud.conf", "--dped-path", FAKE_DPED, "--cluster",
                           url, "--node-name", name, "--log-level", "info"},
                          cdir + "/cped.log");
        return cdir + "/cped.log";
    };
    auto exitOf = [](pid_t pid) {
        int ws = 0;
        ::waitpid(pid, &ws, 0);
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    };
    const std::string files = "etcd_ca = " + pki_.ca + "\netcd_cert = " + pki_.client_cert +
                              "\netcd_key = " + pki_.client_key + "\n";
    pid_t a = -1;
    const std::string aLog = runCped("a", files, etcd_.url(), a);
    ASSERT_GT(a, 0);
    ASSERT_TRUE(waitFor(
        [&] {
            auto t = fs::readFile(aLog);
            return t && t->find("Leadership acquired node=a epoch=") != std::string::npos;
        },
        15s, 50ms))
        << etcdtest::tail(aLog, 3000);
    ::kill(a, SIGTERM);
    EXPECT_EQ(exitOf(a), 0) << etcdtest::tail(aLog, 3000);

    pid_t b = -1;
    const std::string bLog = runCped("b", "", etcd_.url(), b);
    EXPECT_EQ(exitOf(b), 2) << etcdtest::tail(bLog, 3000);
    EXPECT_NE(etcdtest::tail(bLog, 3000).find(" is TLS: set etcd_ca in pcloud.conf"),
              std::string::npos)
        << etcdtest::tail(bLog, 3000);

    pid_t c = -1;
    std::string plain = etcd_.url();
    plain.replace(0, std::string("etcds://").size(), "etcd://");
    const std::string cLog = runCped("c", files, plain, c);
    EXPECT_EQ(exitOf(c), 2) << etcdtest::tail(cLog, 3000);
    EXPECT_NE(etcdtest::tail(cLog, 3000)
                  .find("is plain text but pcloud.conf names etcd TLS files (etcd_ca, etcd_cert, "
                        "etcd_key): use etcds://, or remove them"),
              std::string::npos)
        << etcdtest::tail(cLog, 3000);
}

} // namespace
