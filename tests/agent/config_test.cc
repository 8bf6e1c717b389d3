#include "agent/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::agent;

TEST(AgentConfig, ParsesTheDocumentedFile) {
    AgentConfig c;
    auto st = parseConfigText(c, R"(# comment
connect = virtio:org.pcloud.agent.0
assembly = node01
backend = process
heartbeat_interval = 1s
watch = httpd
process.httpd = /bin/busybox httpd -f -p 80 -h /www
probe.httpd = http 127.0.0.1 80 / 200
probe.db = tcp 127.0.0.1 5432 interval=500ms timeout=200ms threshold=2
)",
                              "agent.conf");
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_EQ(c.connect, "virtio:org.pcloud.agent.0");
    EXPECT_EQ(c.assembly, "node01");
    EXPECT_EQ(c.backend, BackendKind::Process);
    EXPECT_EQ(c.heartbeat_interval, 1000);
    EXPECT_EQ(c.watch, std::vector<std::string>{"httpd"});
    EXPECT_EQ(c.process_commands.at("httpd"), "/bin/busybox httpd -f -p 80 -h /www");
    EXPECT_EQ(c.probes.at("httpd").kind, model::ProbeKind::Http);
    EXPECT_EQ(c.probes.at("httpd").expect_status, 200);
    EXPECT_EQ(c.probes.at("db").kind, model::ProbeKind::Tcp);
    EXPECT_EQ(c.probes.at("db").interval, 500);
    EXPECT_EQ(c.probes.at("db").threshold, 2);
}

TEST(AgentConfig, BadLineNamesFileAndLine) {
    AgentConfig c;
    auto st =
        parseConfigText(c, "assembly = a\n\nheartbeat_interval = soon\n", "/etc/pcloud/agent.conf");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().file, "/etc/pcloud/agent.conf");
    EXPECT_EQ(st.error().line, 3);
    EXPECT_NE(st.error().describe().find("agent.conf:3:"), std::string::npos);
    EXPECT_FALSE(parseConfigText(c, "no equals sign\n", "f").ok());
    EXPECT_FALSE(parseConfigText(c, "colour = blue\n", "f").ok());
    EXPECT_FALSE(parseConfigText(c, "probe.x = http 127.0.0.1 notaport\n", "f").ok());
    EXPECT_FALSE(parseConfigText(c, "connect = http://x\n", "f").ok());
    EXPECT_FALSE(parseConfigText(c, "backend = upstart\n", "f").ok());
}

TEST(AgentConfig, CommandLineOverridesFile) {
    char path[] = "/tmp/pcloud-agent-conf-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << "assembly = fromfile\nwatch = a b\nheartbeat_interval = 5s\n";
    auto cl = parseCommandLine({"--config", path, "--watch", "x.service", "y",
                                "--heartbeat-interval=250ms", "--connect",
                                "amqp://guest:secret@127.0.0.1:5673"},
                               "");
    std::remove(path);
    ASSERT_TRUE(cl.ok()) << cl.error().describe();
    EXPECT_EQ(cl->config.assembly, "fromfile");
    EXPECT_EQ(cl->config.watch, (std::vector<std::string>{"x.service", "y"}));
    EXPECT_EQ(cl->config.heartbeat_interval, 250);
    auto ep = parseEndpoint(cl->config.connect);
    ASSERT_TRUE(ep.ok());
    EXPECT_EQ(ep->port, 5673);
    EXPECT_EQ(ep->user, "guest");
    EXPECT_EQ(ep->password, "secret");
    EXPECT_FALSE(parseCommandLine({"--bogus"}, "").ok());
    EXPECT_FALSE(parseCommandLine({"--assembly"}, "").ok());
    EXPECT_TRUE(parseCommandLine({"--help"}, "")->help);
}

TEST(AgentConfig, UsageDocumentsEveryOption) {
    std::string u = usageText();
    for (const char* opt : {"--connect", "--assembly", "--watch", "--backend", "--config",
                            "--address-prefix", "--heartbeat-interval", "--max-message-size",
                            "--log-level", "--run-dir", "--ca", "--deployable", "--clock-skew"})
        EXPECT_NE(u.find(opt), std::string::npos) << opt;
}

TEST(AgentConfig, RunDirIsAnAbsolutePathOrNone) {
    AgentConfig c;
    EXPECT_EQ(c.run_dir, "/run/pcloud-agent");
    ASSERT_TRUE(parseConfigText(c, "run_dir = /var/run/agent2\n", "f").ok());
    EXPECT_EQ(c.run_dir, "/var/run/agent2");
    ASSERT_TRUE(parseConfigText(c, "run_dir = none\n", "f").ok());
    EXPECT_EQ(c.run_dir, "");
    for (const char* bad : {"relative/dir", "/", "/run/../etc", "/run/..", "/run/x/"}) {
        auto st = parseConfigText(c, std::string("run_dir = ") + bad + "\n", "agent.conf");
        ASSERT_FALSE(st.ok()) << bad;
        EXPECT_NE(st.error().describe().find("agent.conf:1: run_dir must be"), std::string::npos)
            << st.error().describe();
    }
    auto cl = parseCommandLine({"--run-dir", "/tmp/x"}, "");
    ASSERT_TRUE(cl.ok()) << cl.error().describe();
    EXPECT_EQ(cl->config.run_dir, "/tmp/x");
}

TEST(AgentConfig, SignedCommandSettings) {
    AgentConfig c;
    EXPECT_EQ(c.ca, "");
    EXPECT_EQ(c.clock_skew, 30'000);
    ASSERT_TRUE(parseConfigText(c,
                                "ca = /etc/pcloud/pki/ca.crt\ndeployable = web\n"
                                "clock_skew = 5s\n",
                                "f")
                    .ok());
    EXPECT_EQ(c.ca, "/etc/pcloud/pki/ca.crt");
    EXPECT_EQ(c.deployable, "web");
    EXPECT_EQ(c.clock_skew, 5'000);
    ASSERT_TRUE(parseConfigText(c, "ca = none\n", "f").ok());
    EXPECT_EQ(c.ca, "");
    for (const char* bad :
         {"ca = pki/ca.crt", "deployable = a b", "clock_skew = 2h", "clock_skew = soon"}) {
        auto st = parseConfigText(c, std::string(bad) + "\n", "agent.conf");
        ASSERT_FALSE(st.ok()) << bad;
        EXPECT_NE(st.error().describe().find("agent.conf:1: "), std::string::npos);
    }
    auto cl =
        parseCommandLine({"--ca", "/x/ca.crt", "--deployable", "db", "--clock-skew", "1s"}, "");
    ASSERT_TRUE(cl.ok()) << cl.error().describe();
    EXPECT_EQ(cl->config.ca, "/x/ca.crt");
    EXPECT_EQ(cl->config.deployable, "db");
    EXPECT_EQ(cl->config.clock_skew, 1'000);
}
