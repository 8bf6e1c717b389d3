// The nginx driver: rendering and parsing of the managed file (pure), and the driver
// against a real nginx (own prefix dir in /tmp, loopback port) in front of real HTTP
// backends.
#include "common/fs.h"
#include "common/host_config.h"
#include "harness.h"
#include "referee/nginx_referee.h"
#include "referee/referee.h"

#include <atomic>
#include <gtest/gtest.h>
#include <mutex>
#include <thread>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <memory>
#include <pwd.h>
#include <set>
#include <sstream>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::referee;
using namespace pcloud::referee::test;

namespace {

// ---- pure: render / parse ----------------------------------------------------------------

TEST(NginxConfig, RendersOneUpstreamWithMarkers) {
    std::vector<Member> desired = {{"node03", "10.0.0.13:80", MemberState::Out},
                                   {"node01", "10.0.0.11:80", MemberState::Ready},
                                   {"node02", "10.0.0.12:80", MemberState::Drain},
                                   {"node04", "", MemberState::Out}};
    EXPECT_EQ(renderNginxConfig("web", desired),
              "# Managed by pcloud; every membership change rewrites this file.\n"
              "upstream web {\n"
              "    server 10.0.0.11:80; # pcloud:member=node01\n"
              "    server 10.0.0.12:80 down; # pcloud:member=node02 pcloud:drain\n"
              "    server 10.0.0.13:80 down; # pcloud:member=node03\n"
              "}\n");
}

TEST(NginxConfig, RoundTripsEveryState) {
    std::vector<Member> desired = {{"a", "127.0.0.1:8001", MemberState::Ready},
                                   {"b", "[::1]:8002", MemberState::Drain},
                                   {"c", "127.0.0.1:8003", MemberState::Out}};
    auto parsed = parseNginxConfig(renderNginxConfig("web", desired), "web", "f.conf");
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    std::vector<ActualMember> want = {{"a", "127.0.0.1:8001", MemberState::Ready, ""},
                                      {"b", "[::1]:8002", MemberState::Drain, ""},
                                      {"c", "127.0.0.1:8003", MemberState::Out, ""}};
    EXPECT_EQ(*parsed, want);
    EXPECT_TRUE(diffMembers(desired, *parsed).empty());
}

TEST(NginxConfig, NoServersGivesADownPlaceholder) {
    for (const auto& desired :
         {std::vector<Member>{}, std::vector<Member>{{"a", "", MemberState::Out}}}) {
        std::string text = renderNginxConfig("web", desired);
        EXPECT_NE(text.find("    server 127.0.0.1:1 down; # pcloud:placeholder\n"),
                  std::string::npos)
            << text;
        auto parsed = parseNginxConfig(text, "web", "f.conf");
        ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
        EXPECT_TRUE(parsed->empty()) << "the placeholder is not a member";
    }
}

TEST(NginxConfig, AllOutStillListsTheServersDown) {
    std::string text = renderNginxConfig("web", {{"a", "127.0.0.1:8001", MemberState::Out},
                                                 {"b", "127.0.0.1:8002", MemberState::Out}});
    EXPECT_EQ(text.find("placeholder"), std::string::npos) << text;
    EXPECT_NE(text.find("server 127.0.0.1:8001 down; # pcloud:member=a\n"), std::string::npos);
    EXPECT_NE(text.find("server 127.0.0.1:8002 down; # pcloud:member=b\n"), std::string::npos);
}

TEST(NginxConfig, ReadsHandEditedLines) {
    const std::string text = "upstream web{\n"
                             "  # a comment\n"
                             "  least_conn;\n"
                             "  server 10.0.0.1:80 weight=2 ;\n"
                             "  server 10.0.0.2:80 max_fails=3 down; # pcloud:member=n2\n"
                             "  server 10.0.0.3:80; # pcloud:member=n3 pcloud:drain\n"
                             "}\n";
    auto parsed = parseNginxConfig(text, "web", "f.conf");
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    std::vector<ActualMember> want = {{"10.0.0.1:80", "10.0.0.1:80", MemberState::Ready, ""},
                                      {"n2", "10.0.0.2:80", MemberState::Out, ""},
                                      // drain marker without down: it gets traffic
                                      {"n3", "10.0.0.3:80", MemberState::Ready, ""}};
    EXPECT_EQ(*parsed, want);
}

TEST(NginxConfig, UnparseableFileNamesFileAndLine) {
    struct Case {
        std::string text;
        int line;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"upstream web {\n    server 10.0.0.1:80\n}\n", 2, "does not end with ';'"},
        {"upstream shop {\n}\n", 1, "upstream 'shop' is not the one pcloud owns ('web')"},
        {"upstream web {\n    server 10.0.0.1:80;\n", 2, "not closed"},
        {"server { listen 80; }\n", 1, "outside the upstream block"},
        {"upstream web {\n}\nupstream web {\n}\n", 3, "a second upstream block"},
        {"# only a comment\n", 1, "no 'upstream web { ... }' block"},
        {"upstream web {\n    server ;\n}\n", 2, "'server' without an address"},
    };
    for (const auto& c : cases) {
        auto parsed = parseNginxConfig(c.text, "web", "/etc/nginx/pcloud-web.conf");
        ASSERT_FALSE(parsed.ok()) << c.text;
        EXPECT_EQ(parsed.error().file, "/etc/nginx/pcloud-web.conf");
        EXPECT_EQ(parsed.error().line, c.line) << c.text;
        EXPECT_NE(parsed.error().describe().find(c.says), std::string::npos)
            << parsed.error().describe();
    }
}

TEST(NginxConfig, MakeRefereeNamesTheMissingSetting) {
    hostconfig::HostConfig host;
    host.referee_dirs = {"/tmp"};
    model::RefereeConfig c;
    c.driver = "nginx";
    auto r = makeReferee(c, host);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("config_file="), std::string::npos) << r.error().message;
    c.config_file = "/tmp/pcloud-web.conf";
    r = makeReferee(c, host);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("upstream="), std::string::npos) << r.error().message;
    c.upstream = "web server";
    r = makeReferee(c, host);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("upstream 'web server'"), std::string::npos);
    c.upstream = "web";
    // The command comes from the host configuration only.
    host.nginx = " ";
    r = makeReferee(c, host);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("nginx is empty"), std::string::npos) << r.error().message;
    host.nginx = "nginx -c /srv/web/nginx.conf";
    r = makeReferee(c, host);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ((*r)->describe(), "nginx file=/tmp/pcloud-web.conf upstream=web");
    // Outside referee_dir: refused (dped re-checks what a store file says).
    c.config_file = "/etc/nginx/pcloud-web.conf";
    r = makeReferee(c, host);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("not inside an allowed directory"), std::string::npos)
        << r.error().message;
}

// ---- real nginx ---------------------------------------------------------------------------

// nginx's absolute path ("" when not installed): Debian puts it in /usr/sbin, which a
// non-login PATH may lack.
std::string findNginx() {
    const char* env = std::getenv("PATH");
    std::istringstream dirs(std::string(env ? env : "") + ":/usr/sbin:/sbin");
    std::string dir;
    while (std::getline(dirs, dir, ':'))
        if (!dir.empty() && ::access((dir + "/nginx").c_str(), X_OK) == 0)
            return dir + "/nginx";
    return "";
}

class NginxTest : public ::testing::Test {
protected:
    void SetUp() override {
        const std::string nginx = findNginx();
        if (nginx.empty())
            GTEST_SKIP() << "nginx is not installed (scripts/install-deps.sh)";
        dir_ = makeTempDir("nginx");
        port_ = freeLoopbackPort();
        for (const char* name : {"a", "b", "c"})
            backends_[name] = std::make_unique<HttpBackend>(name);
        managed_ = dir_ + "/pcloud-web.conf";
        std::filesystem::create_directories(dir_ + "/tmp");
        std::ofstream cfg(dir_ + "/nginx.conf");
        if (::getuid() == 0) {
            bool www = ::getpwnam("www-data") && ::getgrnam("www-data");
            cfg << (www ? "user www-data www-data;\n" : "user nobody nogroup;\n");
        }
        cfg << "worker_processes 1;\n"
            << "master_process on;\n"
            << "daemon off;\n" // a child of the test, stopped (group and all) in TearDown
            << "pid " << dir_ << "/nginx.pid;\n"
            << "error_log " << dir_ << "/error.log warn;\n"
            << "events { worker_connections 64; }\n"
            << "http {\n"
            << "    access_log off;\n";
        for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
            cfg << "    " << t << "_temp_path " << dir_ << "/tmp/" << t << ";\n";
        cfg << "    include " << dir_ << "/extra*.conf;\n"
            << "    include " << managed_ << ";\n"
            << "    server {\n"
            << "        listen 127.0.0.1:" << port_ << ";\n"
            << "        location / { proxy_pass http://web; }\n"
            << "    }\n"
            << "}\n";
        cfg.close();
        // nginx will not start with a missing include: start from the placeholder.
        ASSERT_TRUE(fs::writeAtomic(managed_, renderNginxConfig("web", {})).ok());
        std::vector<std::string> argv = {
            nginx, "-p", dir_, "-c", dir_ + "/nginx.conf", "-e", dir_ + "/error.log"};
        nginx_cmd_ =
            nginx + " -p " + dir_ + " -c " + dir_ + "/nginx.conf -e " + dir_ + "/error.log";
        ASSERT_TRUE(nginx_.start(argv, dir_ + "/stdout.log"));
        ASSERT_TRUE(waitUntil(
            [&] {
                int status = 0;
                httpGet(port_, "/", &status, 500);
                return status != 0 && fs::exists(dir_ + "/nginx.pid") && workers().size() == 1;
            },
            10'000))
            << "nginx did not start; see " << dir_ << "/error.log";
        // As dped builds it: the command and the writable directory from the host
        // configuration file, the rest from the deployable's settings.
        {
            std::ofstream conf(dir_ + "/pcloud.conf");
            conf << "nginx = " << nginx_cmd_ << "\nreferee_dir = " << dir_ << "\n";
        }
        auto host = hostconfig::load(dir_ + "/pcloud.conf", true);
        ASSERT_TRUE(host.ok()) << host.error().describe();
        model::RefereeConfig rc;
        rc.driver = "nginx";
        rc.config_file = managed_;
        rc.upstream = "web";
        auto made = makeReferee(rc, *host);
        ASSERT_TRUE(made.ok()) << made.error().describe();
        referee_ = std::move(*made);
    }
    void TearDown() override {
        nginx_.stop();
        if (!dir_.empty())
            removeTree(dir_);
    }
    std::vector<Member> members(MemberState a, MemberState b, MemberState c) {
        return {{"a", backends_["a"]->address(), a},
                {"b", backends_["b"]->address(), b},
                {"c", backends_["c"]->address(), c}};
    }
    // A reload switches workers over asynchronously: wait until n answers in a row all
    // come from `want` (and at least one from each of them).
    bool servesExactly(const std::set<std::string>& want, int n = 12) {
        return waitUntil(
            [&] {
                auto s = spread(port_, n);
                for (const auto& [body, count] : s)
                    if (want.count(body) == 0)
                        return false;
                for (const auto& w : want)
                    if (s[w] == 0)
                        return false;
                return true;
            },
            15'000);
    }
    // The master's worker processes: pid -> whether it is an old one shutting down.
    std::map<int, bool> workers() {
        std::map<int, bool> out;
        for (const auto& e : std::filesystem::directory_iterator("/proc")) {
            const std::string pid = e.path().filename();
            if (pid.find_first_not_of("0123456789") != std::string::npos)
                continue;
            auto stat = fs::readFile(e.path().string() + "/stat");
            if (!stat)
                continue; // gone meanwhile
            // "PID (COMM) S PPID ...": the comm may hold blanks, so parse after the ')'.
            auto close = stat->rfind(')');
            if (close == std::string::npos)
                continue;
            std::istringstream rest(stat->substr(close + 1));
            std::string state;
            int ppid = 0;
            rest >> state >> ppid;
            if (ppid != nginx_.pid())
                continue;
            auto cmdline = fs::readFile(e.path().string() + "/cmdline");
            out[std::stoi(pid)] = !cmdline || cmdline->find("shutting down") != std::string::npos;
        }
        return out;
    }
    // `nginx -s reload` only signals the master: wait until the old workers are gone and
    // exactly one new worker (started from the new file) serves.
    ::testing::AssertionResult reloaded(const std::map<int, bool>& before) {
        bool ok = waitUntil(
            [&] {
                auto now = workers();
                return now.size() == 1 && before.count(now.begin()->first) == 0 &&
                       !now.begin()->second;
            },
            15'000);
        if (ok)
            return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure()
               << "nginx did not switch to new workers; see " << dir_ << "/error.log";
    }
    void expectApplied(const std::vector<Member>& desired) {
        auto before = workers();
        auto st = referee_->apply(desired);
        ASSERT_TRUE(st.ok()) << st.error().describe();
        ASSERT_TRUE(reloaded(before));
    }
    Result<DriftReport> reconcileAndReload(const std::vector<Member>& desired) {
        auto before = workers();
        auto report = referee_->reconcile(desired);
        EXPECT_TRUE(reloaded(before));
        return report;
    }

    std::string dir_, managed_, nginx_cmd_;
    int port_ = 0;
    std::map<std::string, std::unique_ptr<HttpBackend>> backends_;
    Child nginx_;
    std::unique_ptr<Referee> referee_;
};

TEST_F(NginxTest, OutMemberGetsNoTrafficAndComesBack) {
    expectApplied(members(MemberState::Ready, MemberState::Ready, MemberState::Ready));
    EXPECT_TRUE(servesExactly({"a", "b", "c"}));

    expectApplied(members(MemberState::Out, MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(servesExactly({"b", "c"}));
    // Once switched over, not one request reaches a.
    int before = backends_["a"]->served();
    auto traffic = spread(port_, 30);
    EXPECT_EQ(backends_["a"]->served(), before);
    EXPECT_EQ(traffic["a"], 0);
    EXPECT_EQ(traffic[""], 0);
    auto read = referee_->read();
    ASSERT_TRUE(read.ok()) << read.error().describe();
    ASSERT_EQ(read->size(), 3u);
    EXPECT_EQ((*read)[0].state, MemberState::Out);

    expectApplied(members(MemberState::Ready, MemberState::Ready, MemberState::Ready));
    EXPECT_TRUE(servesExactly({"a", "b", "c"}));
}

// Promise 1: a balancer reload never fails a client request. dped may apply several
// membership changes within a few ms (one assembly drained, another added back), so each
// reload lands while the previous one's workers are still switching over. A client sends
// requests back to back through it all; every one must be answered by a member.
TEST_F(NginxTest, BackToBackReloadsFailNoClientRequest) {
    expectApplied(members(MemberState::Ready, MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(servesExactly({"a", "b", "c"}));
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::mutex mu;
    std::vector<std::string> failures;
    std::thread client([&] {
        while (!stop) {
            std::string why;
            std::string body = httpGet(port_, "/", nullptr, 3000, &why);
            if (body == "a" || body == "b" || body == "c") {
                answered++;
            } else {
                std::lock_guard lock(mu);
                failures.push_back(why.empty() ? "body '" + body + "'" : why);
            }
        }
    });
    const MemberState R = MemberState::Ready, O = MemberState::Out, D = MemberState::Drain;
    const std::vector<std::vector<Member>> cycle = {members(O, R, R), members(R, R, R),
                                                    members(R, D, O), members(R, R, R),
                                                    members(O, O, R), members(R, O, R)};
    int applied = 0;
    for (int round = 0; round < 5; ++round)
        for (const auto& m : cycle) {
            auto st = referee_->apply(m);
            EXPECT_TRUE(st.ok()) << st.error().describe();
            ++applied;
        }
    expectApplied(members(R, R, R));
    ASSERT_TRUE(servesExactly({"a", "b", "c"}));
    stop = true;
    client.join();
    std::string reasons;
    for (std::size_t i = 0; i < failures.size() && i < 10; ++i)
        reasons += "\n  " + failures[i];
    std::fprintf(stderr, "%d reloads, %d requests answered, %zu failed\n", applied + 1,
                 answered.load(), failures.size());
    EXPECT_GT(answered.load(), applied) << "the client hardly ran";
    EXPECT_TRUE(failures.empty()) << failures.size() << " of " << answered + failures.size()
                                  << " requests failed across " << applied + 1
                                  << " reloads:" << reasons << "\nsee " << dir_ << "/error.log";
}

TEST_F(NginxTest, DrainIsDownWithAMarkerAndReadsBackAsDrain) {
    auto desired = members(MemberState::Drain, MemberState::Ready, MemberState::Out);
    expectApplied(desired);
    EXPECT_TRUE(servesExactly({"b"}));
    auto read = referee_->read();
    ASSERT_TRUE(read.ok()) << read.error().describe();
    ASSERT_EQ(read->size(), 3u);
    EXPECT_EQ((*read)[0].state, MemberState::Drain);
    EXPECT_EQ((*read)[1].state, MemberState::Ready);
    EXPECT_EQ((*read)[2].state, MemberState::Out);
    auto before = std::filesystem::last_write_time(managed_);
    auto report = referee_->reconcile(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_TRUE(report->clean()) << report->describe();
    EXPECT_EQ(std::filesystem::last_write_time(managed_), before) << "idempotent apply rewrote";
}

TEST_F(NginxTest, EveryMemberOutOrNoneAtAllIsStillAValidConfig) {
    expectApplied(members(MemberState::Out, MemberState::Out, MemberState::Out));
    int status = 0;
    EXPECT_TRUE(waitUntil(
        [&] {
            httpGet(port_, "/", &status, 1000);
            return status == 502;
        },
        15'000))
        << "last status " << status;
    expectApplied({});
    EXPECT_NE(fs::readFile(managed_)->find("pcloud:placeholder"), std::string::npos);
    expectApplied(members(MemberState::Ready, MemberState::Out, MemberState::Out));
    EXPECT_TRUE(servesExactly({"a"}));
}

TEST_F(NginxTest, HandEditedFileIsDriftAndIsRewritten) {
    auto desired = members(MemberState::Ready, MemberState::Ready, MemberState::Ready);
    expectApplied(desired);
    auto text = *fs::readFile(managed_);
    const std::string line = backends_["b"]->address() + ";";
    auto pos = text.find(line);
    ASSERT_NE(pos, std::string::npos) << text;
    text.replace(pos, line.size(), backends_["b"]->address() + " down;");
    ASSERT_TRUE(fs::writeAtomic(managed_, text).ok());

    auto report = reconcileAndReload(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    ASSERT_EQ(report->drifts.size(), 1u) << report->describe();
    EXPECT_EQ(report->drifts[0].describe(), "member b was out, wanted ready");
    EXPECT_EQ(*fs::readFile(managed_), renderNginxConfig("web", desired));
    EXPECT_TRUE(servesExactly({"a", "b", "c"}));
}

TEST_F(NginxTest, CorruptFileIsAnErrorOnReadAndRewrittenByReconcile) {
    auto desired = members(MemberState::Ready, MemberState::Out, MemberState::Ready);
    expectApplied(desired);
    auto text = *fs::readFile(managed_);
    auto pos = text.find("; # pcloud:member=c");
    ASSERT_NE(pos, std::string::npos);
    text.erase(pos, 1); // drop c's ';'
    ASSERT_TRUE(fs::writeAtomic(managed_, text).ok());
    auto read = referee_->read();
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.error().file, managed_);
    EXPECT_EQ(read.error().line, 5) << read.error().describe();

    auto report = reconcileAndReload(desired);
    ASSERT_TRUE(report.ok()) << report.error().describe();
    EXPECT_FALSE(report->clean());
    EXPECT_EQ(*fs::readFile(managed_), renderNginxConfig("web", desired));
    EXPECT_TRUE(servesExactly({"a", "c"}));
}

TEST_F(NginxTest, ConfigTestFailureRestoresTheFileAndOldConfigStaysLive) {
    expectApplied(members(MemberState::Ready, MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(servesExactly({"a", "b", "c"}));
    auto good = fs::readFile(managed_);
    ASSERT_TRUE(good.ok());
    std::set<std::string> filesBefore;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
        filesBefore.insert(e.path().filename());

    // Someone else breaks nginx's configuration: pcloud must not reload it.
    { std::ofstream(dir_ + "/extra-broken.conf") << "this_is_not_a_directive on;\n"; }
    filesBefore.insert("extra-broken.conf");
    auto st = referee_->apply(members(MemberState::Out, MemberState::Ready, MemberState::Ready));
    ASSERT_FALSE(st.ok());
    const std::string msg = st.error().describe();
    EXPECT_NE(msg.find("config test failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("restored the previous file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("this_is_not_a_directive"), std::string::npos) << msg;
    EXPECT_NE(msg.find(managed_), std::string::npos) << msg;
    EXPECT_EQ(*fs::readFile(managed_), *good) << "the previous file was not restored byte for byte";
    std::set<std::string> filesAfter;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
        filesAfter.insert(e.path().filename());
    EXPECT_EQ(filesAfter, filesBefore) << "left something behind next to the managed file";
    // The old configuration is still live: every member serves, no errors.
    auto traffic = spread(port_, 12);
    EXPECT_EQ(traffic[""], 0);
    EXPECT_GT(traffic["a"], 0);

    // Once the config is fixed, the next reconcile gets there.
    std::filesystem::remove(dir_ + "/extra-broken.conf");
    auto report =
        reconcileAndReload(members(MemberState::Out, MemberState::Ready, MemberState::Ready));
    ASSERT_TRUE(report.ok()) << report.error().describe();
    ASSERT_EQ(report->drifts.size(), 1u);
    EXPECT_EQ(report->drifts[0].describe(), "member a was ready, wanted out");
    EXPECT_TRUE(servesExactly({"b", "c"}));
}

TEST_F(NginxTest, MissingNginxIsAClearError) {
    NginxReferee::Settings s;
    s.config_file = dir_ + "/other.conf";
    s.upstream = "other";
    s.nginx = "/nonexistent/nginx";
    NginxReferee broken(s);
    auto st = broken.apply(members(MemberState::Ready, MemberState::Ready, MemberState::Ready));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("exit 127"), std::string::npos) << st.error().describe();
    EXPECT_FALSE(fs::exists(dir_ + "/other.conf")) << "a file that did not exist must be removed";
}

} // namespace
