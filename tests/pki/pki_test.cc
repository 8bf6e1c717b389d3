// lib/pki and pcloud-pki against real OpenSSL in temp dirs.
#include "pki/pki.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::pki;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-pki-test-XXXXXX";
    return ::mkdtemp(tmpl);
}

unsigned modeOf(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 0777;
}

Identity ident(const std::string& s, bool events = false) {
    auto id = parseIdentity(s);
    EXPECT_TRUE(id) << s;
    id->events = events;
    return *id;
}

struct Run {
    int rc;
    std::string out;
};
Run run(const std::string& args) {
    std::string cmd = std::string(PCLOUD_PKI_BIN) + " " + args + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

class Pki : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = tempDir();
        dir_ = root_ + "/pki";
        ASSERT_TRUE(initCa(dir_));
    }
    void TearDown() override { std::system(("rm -rf " + root_).c_str()); }
    std::string root_, dir_;
};

} // namespace

TEST_F(Pki, InitMakesAPrivateDirAndKey) {
    EXPECT_EQ(modeOf(dir_), 0700u);
    EXPECT_EQ(modeOf(dir_ + "/ca.key"), 0600u);
    EXPECT_EQ(modeOf(dir_ + "/ca.crt"), 0644u);
    auto again = initCa(dir_);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().file, dir_ + "/ca.crt");
    EXPECT_NE(again.error().message.find("never overwrites"), std::string::npos);
}

TEST_F(Pki, IssuedLeafCarriesTheIdentityAndVerifies) {
    auto issued = issue(dir_, ident("agent:node01"), 30);
    ASSERT_TRUE(issued) << issued.error().describe();
    EXPECT_EQ(issued->certPath, dir_ + "/agent.node01.crt");
    EXPECT_EQ(issued->keyPath, dir_ + "/agent.node01.key");
    EXPECT_EQ(modeOf(issued->keyPath), 0600u);
    auto subject = subjectLine(issued->certPath);
    ASSERT_TRUE(subject);
    EXPECT_NE(subject->find("CN=agent:node01"), std::string::npos) << *subject;
    EXPECT_NE(subject->find("serialNumber=" + issued->serial), std::string::npos) << *subject;
    auto info = verify(dir_ + "/ca.crt", issued->certPath);
    ASSERT_TRUE(info) << info.error().describe();
    EXPECT_EQ(info->identity.text(), "agent:node01");
    EXPECT_FALSE(info->identity.events);
    EXPECT_EQ(info->serial, issued->serial);
    EXPECT_EQ(info->serial.size(), 32u);
}

TEST_F(Pki, EventsRoleIsInTheSubject) {
    auto issued = issue(dir_, ident("operator:watcher", true));
    ASSERT_TRUE(issued);
    auto info = verify(dir_ + "/ca.crt", issued->certPath);
    ASSERT_TRUE(info) << info.error().describe();
    EXPECT_TRUE(info->identity.events);
}

TEST_F(Pki, IssueRefusesToOverwrite) {
    ASSERT_TRUE(issue(dir_, ident("dped:web")));
    auto again = issue(dir_, ident("dped:web"));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().file, dir_ + "/dped.web.crt");
}

TEST_F(Pki, IssueNamesAMissingCa) {
    auto r = issue(root_ + "/nothing", ident("dped:web"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().file, root_ + "/nothing/ca.crt");
    EXPECT_NE(r.error().message.find("pcloud-pki init"), std::string::npos);
}

TEST_F(Pki, IssueRefusesACaKeyOpenToOthers) {
    ASSERT_EQ(::chmod((dir_ + "/ca.key").c_str(), 0644), 0);
    auto r = issue(dir_, ident("dped:web"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().file, dir_ + "/ca.key");
    EXPECT_NE(r.error().message.find("chmod 600"), std::string::npos);
}

TEST_F(Pki, ACertificateFromAnotherCaFails) {
    std::string other = root_ + "/other";
    ASSERT_TRUE(initCa(other));
    auto foreign = issue(other, ident("operator:mallory"));
    ASSERT_TRUE(foreign);
    auto r = verify(dir_ + "/ca.crt", foreign->certPath);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().file, foreign->certPath);
    EXPECT_NE(r.error().message.find("does not verify"), std::string::npos);
}

TEST_F(Pki, RevokedIsReportedByListAndVerify) {
    auto a = issue(dir_, ident("agent:a"));
    auto b = issue(dir_, ident("agent:b"));
    ASSERT_TRUE(a && b);
    auto serial = revoke(dir_, "agent:a");
    ASSERT_TRUE(serial) << serial.error().describe();
    EXPECT_EQ(*serial, a->serial);
    auto twice = revoke(dir_, a->serial);
    ASSERT_TRUE(twice);
    auto denied = loadDenyList(dir_ + "/revoked");
    ASSERT_TRUE(denied);
    EXPECT_EQ(denied->size(), 1u);
    auto va = verify(dir_ + "/ca.crt", a->certPath, *denied);
    ASSERT_FALSE(va);
    EXPECT_NE(va.error().message.find("revoked"), std::string::npos);
    EXPECT_TRUE(verify(dir_ + "/ca.crt", b->certPath, *denied));
    auto all = list(dir_);
    ASSERT_TRUE(all) << all.error().describe();
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].identity.text(), "agent:a");
    EXPECT_TRUE((*all)[0].revoked);
    EXPECT_FALSE((*all)[1].revoked);
}

TEST_F(Pki, RevokeRefusesNonsense) {
    EXPECT_FALSE(revoke(dir_, "not-a-serial"));
    auto missing = revoke(dir_, "agent:ghost");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().file, dir_ + "/agent.ghost.crt");
}

TEST(PkiTool, OperatorSetupInThreeCommands) {
    std::string root = tempDir();
    std::string dir = root + "/pki";
    auto init = run("--dir " + dir + " init");
    EXPECT_EQ(init.rc, 0) << init.out;
    auto op = run("--dir " + dir + " issue --operator alice");
    EXPECT_EQ(op.rc, 0) << op.out;
    auto hub = run("--dir " + dir + " issue --cped host1");
    EXPECT_EQ(hub.rc, 0) << hub.out;
    auto ev = run("--dir " + dir + " issue --operator grafana --role events --days 10");
    EXPECT_EQ(ev.rc, 0) << ev.out;
    auto again = run("--dir " + dir + " issue --operator alice");
    EXPECT_NE(again.rc, 0);
    EXPECT_NE(again.out.find(dir + "/operator.alice.crt"), std::string::npos) << again.out;
    auto bad = run("--dir " + dir + " issue --wizard merlin");
    EXPECT_EQ(bad.rc, 2) << bad.out;
    auto rev = run("--dir " + dir + " revoke operator:alice");
    EXPECT_EQ(rev.rc, 0) << rev.out;
    auto ls = run("--dir " + dir + " list");
    EXPECT_EQ(ls.rc, 0) << ls.out;
    EXPECT_NE(ls.out.find("operator:alice\t-\t"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("revoked"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("operator:grafana\tevents"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("cped:host1"), std::string::npos) << ls.out;
    EXPECT_EQ(modeOf(dir + "/operator.alice.key"), 0600u);
    std::system(("rm -rf " + root).c_str());
}
