// Pure parts of the referee (parsers, planners, diff, render) and the fast-failure paths,
// without any daemon.
#include "harness.h"
#include "referee/apache_referee.h"
#include "referee/command.h"
#include "referee/haproxy_referee.h"
#include "referee/logging_referee.h"
#include "referee/referee.h"
#include "referee/retry_backoff.h"
#include "referee/runtime_api.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::referee;

namespace {

const char* kServersState =
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port\n"
    "3 web 1 s1 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 28081 - 0 0 - - 0\n"
    "3 web 2 s2 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 28082 - 0 0 - - 0\n"
    "3 web 3 d1 ::1 0 1 1 1 0 1 0 0 0 0 0 0 - 28083 - 0 0 - - 0\n";

TEST(HaproxyParse, ServersStateMapsAdminBits) {
    auto m = parseServersState(kServersState, "web");
    ASSERT_TRUE(m.ok()) << m.error().describe();
    ASSERT_EQ(m->size(), 3u);
    EXPECT_EQ((*m)[0], (ActualMember{"d1", "[::1]:28083", MemberState::Out, "down"}));
    EXPECT_EQ((*m)[1], (ActualMember{"s1", "127.0.0.1:28081", MemberState::Drain, "up"}));
    // 0x04 alone: "disabled" in the config, later set ready: it is ready.
    EXPECT_EQ((*m)[2], (ActualMember{"s2", "127.0.0.1:28082", MemberState::Ready, "up"}));
}

TEST(HaproxyParse, UnknownBackendAndGarbageAreClearErrors) {
    auto m = parseServersState("Can't find backend.", "nosuch");
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.error().message.find("no backend 'nosuch'"), std::string::npos);
    auto g = parseServersState("Permission denied", "web");
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.error().message.find("Permission denied"), std::string::npos);
    auto short_ = parseServersState(std::string(kServersState) + "3 web 4 s4\n", "web");
    ASSERT_FALSE(short_.ok());
    EXPECT_NE(short_.error().message.find("line 6"), std::string::npos) << short_.error().message;
}

TEST(HaproxyParse, ShowInfo) {
    auto info = parseShowInfo("Name: HAProxy\nPid: 7372\nUptime_sec: 3\nStart_time_sec: 17953\n");
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->pid, 7372);
    EXPECT_EQ(info->start_time_sec, 17953);
    EXPECT_FALSE(parseShowInfo("Unknown command").ok());
}

TEST(HaproxyParse, ResponsesSplitOnEmptyLinesButDelServerHasNone) {
    // Exactly what HAProxy 2.6 sent for this batch.
    std::vector<std::string> cmds = {"set server web/c state maint", "del server web/c",
                                     "del server web/c", "add server web/d 127.0.0.1:1",
                                     "show servers state web"};
    auto r = splitRuntimeResponses(
        "\nServer deleted.\nNo such server.\nNew server registered.\n\n1\n# h\nrow\n\n", cmds);
    ASSERT_EQ(r.size(), 5u);
    EXPECT_EQ(r[0], "");
    EXPECT_EQ(r[1], "Server deleted.");
    EXPECT_EQ(r[2], "No such server.");
    EXPECT_EQ(r[3], "New server registered.");
    EXPECT_EQ(r[4], "1\n# h\nrow");
    // Cut short: only what arrived.
    EXPECT_EQ(splitRuntimeResponses("\n", cmds).size(), 1u);
}

TEST(HaproxyPlan, CommandsTurnActualIntoDesired) {
    std::vector<ActualMember> actual = {
        {"a", "127.0.0.1:1", MemberState::Ready, "up"},
        {"b", "127.0.0.1:2", MemberState::Ready, "up"},
        {"gone", "127.0.0.1:9", MemberState::Ready, "up"},
        {"old", "127.0.0.1:8", MemberState::Out, "down"},
    };
    std::vector<Member> desired = {
        {"a", "127.0.0.1:1", MemberState::Drain},
        {"b", "127.0.0.1:22", MemberState::Ready},
        {"new", "127.0.0.1:3", MemberState::Ready},
        {"parked", "", MemberState::Out},
    };
    auto cmds = planHaproxyCommands("web", desired, actual);
    std::vector<std::string> want = {
        "set server web/a state drain",
        "set server web/b addr 127.0.0.1 port 22",
        "add server web/new 127.0.0.1:3",
        "set server web/new state ready",
        "set server web/gone state maint",
        "del server web/gone",
        "del server web/old",
    };
    EXPECT_EQ(cmds, want);
    // Already there: nothing to send.
    std::vector<ActualMember> same = {{"a", "127.0.0.1:1", MemberState::Drain, "up"}};
    EXPECT_TRUE(
        planHaproxyCommands("web", {{"a", "127.0.0.1:1", MemberState::Drain}}, same).empty());
}

TEST(Diff, DescribesWhatWasWrong) {
    std::vector<ActualMember> actual = {
        {"node01", "10.0.0.1:80", MemberState::Ready, ""},
        {"node02", "10.0.0.2:80", MemberState::Ready, ""},
        {"node04", "10.0.0.4:80", MemberState::Ready, ""},
        {"node05", "10.0.0.5:80", MemberState::Out, ""},
    };
    std::vector<Member> desired = {
        {"node01", "10.0.0.1:80", MemberState::Ready},
        {"node02", "10.0.0.2:80", MemberState::Drain},
        {"node03", "10.0.0.3:80", MemberState::Ready},
        {"node06", "10.0.0.6:80", MemberState::Out}, // absent and out: fine
    };
    auto d = diffMembers(desired, actual);
    ASSERT_EQ(d.size(), 3u);
    EXPECT_EQ(d[0].describe(), "member node02 was ready, wanted drain");
    EXPECT_EQ(d[1].describe(), "member node03 was missing, wanted ready");
    EXPECT_EQ(d[2].describe(), "member node04 was ready, wanted removed");
    DriftReport r{d, true, "haproxy restarted or reloaded (pid 1 -> 2)"};
    EXPECT_EQ(r.describe(),
              "haproxy restarted or reloaded (pid 1 -> 2); member node02 was ready, wanted "
              "drain; member node03 was missing, wanted ready; member node04 was ready, "
              "wanted removed");
    EXPECT_EQ(DriftReport{}.describe(), "no drift");
}

TEST(Validate, NamesTheBadMember) {
    EXPECT_TRUE(validateMembers({{"a", "127.0.0.1:80"}, {"b", "[::1]:8080"}}).ok());
    auto bad = validateMembers({{"a", "127.0.0.1:80"}, {"b", "localhost:80"}});
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().message,
              "referee member 'b': address 'localhost:80' is not IP:PORT (set it with the "
              "assembly's address)");
    EXPECT_FALSE(validateMembers({{"a b", "127.0.0.1:80"}}).ok());
    EXPECT_FALSE(validateMembers({{"a", "127.0.0.1:80"}, {"a", "127.0.0.1:81"}}).ok());
    EXPECT_FALSE(validateMembers({{"a", "127.0.0.1:0"}}).ok());
    EXPECT_FALSE(validateMembers({{"a", "127.0.0.1:99999"}}).ok());
    EXPECT_TRUE(validateMembers({{"a", "", MemberState::Out}}).ok());
    EXPECT_FALSE(validateMembers({{"a", "", MemberState::Ready}}).ok());
}

TEST(Apache, RenderInCloudManagerFormat) {
    std::vector<Member> desired = {
        {"node02", "127.0.0.1:8082", MemberState::Drain},
        {"node01", "127.0.0.1:8081", MemberState::Ready},
        {"node03", "127.0.0.1:8083", MemberState::Out},
        {"node04", "", MemberState::Out},
    };
    EXPECT_EQ(renderApacheConfig("web", "/", desired),
              "# Managed by pcloud; every membership change rewrites this file.\n"
              "<Proxy balancer://web>\n"
              "    BalancerMember http://127.0.0.1:8081 route=node01\n"
              "    BalancerMember http://127.0.0.1:8082 route=node02 status=+N\n"
              "    BalancerMember http://127.0.0.1:8083 route=node03 status=+S\n"
              "</Proxy>\n"
              "ProxyPass / balancer://web/\n");
    EXPECT_NE(renderApacheConfig("web", "/app", desired).find("ProxyPass /app balancer://web\n"),
              std::string::npos);
    auto back = parseApacheConfig(renderApacheConfig("web", "/", desired), "f");
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(back->size(), 3u);
    EXPECT_EQ((*back)[1], (ActualMember{"node02", "127.0.0.1:8082", MemberState::Drain, ""}));
    EXPECT_TRUE(diffMembers(desired, *back).empty());
}

TEST(Apache, ParseHandEditedFile) {
    auto m = parseApacheConfig("<Proxy balancer://x>\n  BalancerMember http://10.0.0.1:80/ "
                               "status=+D\n  BalancerMember ajp://10.0.0.2:8009\n",
                               "/etc/apache2/x.conf");
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.error().describe(),
              "/etc/apache2/x.conf:3: BalancerMember 'ajp://10.0.0.2:8009' is not an http:// URL");
    auto ok = parseApacheConfig("BalancerMember http://10.0.0.1:80/ status=+D-N\n", "f");
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ((*ok)[0], (ActualMember{"10.0.0.1:80", "10.0.0.1:80", MemberState::Out, ""}));
}

TEST(Factory, PicksDriverAndNamesMissingSettings) {
    hostconfig::HostConfig host;
    host.referee_dirs = {"/tmp"};
    model::RefereeConfig none;
    auto r = makeReferee(none, host);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->get(), nullptr);
    model::RefereeConfig log;
    log.driver = "log";
    EXPECT_EQ((*makeReferee(log, host))->describe(), "log");
    model::RefereeConfig hx;
    hx.driver = "haproxy";
    hx.socket = "/run/haproxy/admin.sock";
    auto noBackend = makeReferee(hx, host);
    ASSERT_FALSE(noBackend.ok());
    EXPECT_NE(noBackend.error().message.find("backend="), std::string::npos);
    hx.backend = "web";
    EXPECT_EQ((*makeReferee(hx, host))->describe(),
              "haproxy socket=/run/haproxy/admin.sock backend=web");
    model::RefereeConfig ap;
    ap.driver = "apache";
    ap.config_file = "/tmp/pcloud-web.conf";
    EXPECT_FALSE(makeReferee(ap, host).ok());
    ap.cluster = "web cluster";
    EXPECT_FALSE(makeReferee(ap, host).ok());
    ap.cluster = "web";
    EXPECT_TRUE(makeReferee(ap, host).ok());
    model::RefereeConfig bad;
    bad.driver = "f5";
    auto e = makeReferee(bad, host);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().message,
              "unknown referee driver 'f5' (expected haproxy, apache, nginx, log, or empty for "
              "none)");
}

TEST(LoggingReferee, RemembersAndReconciles) {
    LoggingReferee r;
    std::vector<Member> desired = {{"a", "127.0.0.1:1", MemberState::Ready}};
    ASSERT_TRUE(r.apply(desired).ok());
    EXPECT_EQ(r.read()->size(), 1u);
    desired[0].desired = MemberState::Drain;
    auto report = r.reconcile(desired);
    ASSERT_TRUE(report.ok());
    ASSERT_EQ(report->drifts.size(), 1u);
    EXPECT_EQ(report->drifts[0].describe(), "member a was ready, wanted drain");
    EXPECT_TRUE(r.reconcile(desired)->clean());
    EXPECT_FALSE(r.apply({{"a", "nope"}}).ok());
}

TEST(RetryBackoff, DoublesUpToTheCeilingAndResets) {
    ManualClock clock;
    RetryBackoff b(clock, 1'000, 4'000);
    EXPECT_TRUE(b.due());
    b.recordFailure();
    EXPECT_FALSE(b.due());
    clock.advance(999);
    EXPECT_FALSE(b.due());
    clock.advance(1);
    EXPECT_TRUE(b.due());
    b.recordFailure();
    EXPECT_EQ(b.currentDelayMs(), 2'000);
    b.recordFailure();
    b.recordFailure();
    EXPECT_EQ(b.currentDelayMs(), 4'000);
    EXPECT_EQ(b.failures(), 4);
    b.recordSuccess();
    EXPECT_TRUE(b.due());
    EXPECT_EQ(b.failures(), 0);
}

TEST(BrokenHaproxy, MissingSocketIsAClearError) {
    HaproxyReferee r("/nonexistent/pcloud/admin.sock", "web", 1000);
    auto st = r.apply({{"a", "127.0.0.1:80"}});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().describe().find("/nonexistent/pcloud/admin.sock"), std::string::npos);
    EXPECT_NE(st.error().describe().find("No such file or directory"), std::string::npos)
        << st.error().describe();
    EXPECT_FALSE(r.read().ok());
    EXPECT_FALSE(r.reconcile({}).ok());
}

TEST(BrokenHaproxy, SilentSocketTimesOut) {
    // A socket that accepts (kernel backlog) but never answers: a wedged haproxy.
    auto dir = test::makeTempDir("silent");
    std::string path = dir + "/admin.sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
    HaproxyReferee r(path, "web", 200);
    auto st = r.apply({{"a", "127.0.0.1:80"}});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("did not answer within 200 ms"), std::string::npos)
        << st.error().describe();
    ::close(fd);
    test::removeTree(dir);
}

TEST(Command, OutputStatusAndTimeout) {
    auto ok = runCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, 5000);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(ok->exit_status, 3);
    EXPECT_EQ(ok->output, "out\nerr\n");
    auto slow = runCommand({"sleep", "10"}, 100);
    ASSERT_TRUE(slow.ok());
    EXPECT_TRUE(slow->timed_out);
    auto missing = runCommand({"/nonexistent/apachectl", "-t"}, 5000);
    ASSERT_TRUE(missing.ok());
    EXPECT_EQ(missing->exit_status, 127);
    EXPECT_EQ(splitCommandLine(" apache2  -f /x/h.conf -d /x "),
              (std::vector<std::string>{"apache2", "-f", "/x/h.conf", "-d", "/x"}));
}

} // namespace
