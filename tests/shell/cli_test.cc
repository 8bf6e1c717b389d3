#include "shell/cli.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <unistd.h>

using namespace pcloud::shell::cli;
using nlohmann::json;

TEST(Cli, ParsesCommandsIntoRequests) {
    auto r = parse({"deployable_create", "web", "--uri", "test:///default", "--monitor=passive"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args, (json{{"name", "web"}, {"uri", "test:///default"}, {"monitor", "passive"}}));
    r = parse({"escalation_resource_set", "httpd", "n1", "INFINITY", "10m"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args["failures"], "INFINITY");
    EXPECT_EQ(r->args["period"], "10m");
    r = parse({"events", "--follow", "--since", "42", "--deployable", "web"});
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->follow);
    EXPECT_EQ(r->args["since_seq"], 42);
    r = parse({"events", "--since", "2026-11-21T22:40:01.123Z"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args["since_time"], "2026-11-21T22:40:01.123Z");
    r = parse({"referee_set", "web", "haproxy", "socket=/run/h.sock", "backend=web"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args["options"]["backend"], "web");
    auto words = splitLine("referee_set web nginx config_file=/etc/nginx/pcloud-web.conf "
                           "'upstream=web two'");
    ASSERT_TRUE(words.ok());
    r = parse(*words);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args["driver"], "nginx");
    // The shell only splits; cped checks the grammar (tests/cped).
    EXPECT_EQ(r->args["options"]["upstream"], "web two");
    const std::string help = helpText("referee_set");
    EXPECT_NE(help.find("none|log|haproxy|apache|nginx"), std::string::npos) << help;
    EXPECT_NE(help.find("nginx: config_file upstream;"), std::string::npos) << help;
}

TEST(Cli, UsageErrorsSayWhatAndHow) {
    auto r = parse({"frobnicate"});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("unknown command 'frobnicate'"), std::string::npos);
    r = parse({"deployable_start"});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("wrong number of arguments: got 0, want 1"),
              std::string::npos);
    EXPECT_NE(r.error().message.find("usage: deployable_start NAME"), std::string::npos);
    EXPECT_FALSE(parse({"escalation_assembly_set", "n1", "3x", "10m"}).ok());
    EXPECT_FALSE(parse({"escalation_assembly_set", "n1", "0", "10m"}).ok());
    r = parse({"escalation_assembly_set", "n1", "3", "10 parsecs"});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("not a period"), std::string::npos);
    EXPECT_FALSE(parse({"deployable_list", "--uri", "x"}).ok()); // option not in its usage
    EXPECT_FALSE(parse({"assembly_create", "n1"}).ok());         // neither xml nor image
    EXPECT_FALSE(parse({"assembly_create", "n1", "--domain-xml", "/nonexistent.xml"}).ok());
    EXPECT_FALSE(parse({"events", "--since", "yesterday"}).ok());
    EXPECT_FALSE(parse({"referee_set", "web", "log", "novalue"}).ok());
}

// Regression (fuzz_shell_cli): a word that is not UTF-8 went into the JSON request, and
// serialising it threw, so pcloudsh died instead of printing a usage error.
TEST(Cli, RejectsWordsThatAreNotUtf8) {
    auto r = parse({"events", "--deployable",
                    "\x80"
                    "eb"});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("word 3 is not valid UTF-8 (byte 1)"), std::string::npos)
        << r.error().message;
    EXPECT_FALSE(parse({"deployable_create", "w\xc3"}).ok());        // truncated sequence
    EXPECT_FALSE(parse({"deployable_create", "\xed\xa0\x80"}).ok()); // a surrogate
    EXPECT_FALSE(parse({"\xff"}).ok());
    auto ok = parse({"deployable_create", "web", "--uri", "qemu:///caf\xc3\xa9"});
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_EQ(ok->args["uri"], "qemu:///caf\xc3\xa9");
    EXPECT_NO_THROW((void)ok->args.dump());

    char path[] = "/tmp/pcloud-cli-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    const char latin1[] = "<domain type='qemu'><name>caf\xe9</name></domain>";
    ASSERT_EQ(::write(fd, latin1, sizeof latin1 - 1), (ssize_t)(sizeof latin1 - 1));
    ::close(fd);
    r = parse({"assembly_create", "n1", "--domain-xml", path});
    ::unlink(path);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("is not valid UTF-8 (byte 30)"), std::string::npos)
        << r.error().message;
}

TEST(Cli, SplitLineHonoursQuotes) {
    auto w = splitLine("assembly_create 'my x' \"a b\"  c");
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(*w, (std::vector<std::string>{"assembly_create", "my x", "a b", "c"}));
    EXPECT_FALSE(splitLine("x 'open").ok());
}

TEST(Cli, StatusTableFitsIn100Columns) {
    json r = json::parse(R"({"name":"web","desired":"started","dped":{"state":"running","pid":12},
      "model_assemblies":[{"name":"node01"},{"name":"node02-with-a-very-long-name"}],
      "status":{"deployable":"web","state":"running","assemblies":[{"name":"node01","domain":"running",
      "agent":"connected","heartbeat_age_ms":320,"services":[{"name":"httpd","state":"active",
      "ready":true},{"name":"memcached","state":"failed","ready":false}],
      "failures":{"used":1,"budget":3,"period_ms":600000},"backoff_remaining_ms":0,"referee":"in"}]}})");
    std::string t = formatStatusTable(r, false);
    size_t start = 0;
    while (start < t.size()) {
        size_t end = t.find('\n', start);
        EXPECT_LE(end - start, 100u) << t.substr(start, end - start);
        start = end + 1;
    }
    EXPECT_NE(t.find("node01"), std::string::npos);
    EXPECT_NE(t.find("connected"), std::string::npos);
    EXPECT_NE(t.find("320ms"), std::string::npos);
    EXPECT_NE(t.find("1/3"), std::string::npos);
    EXPECT_NE(t.find("httpd:active"), std::string::npos);
    EXPECT_EQ(t.find("\033["), std::string::npos); // no colour unless asked
    EXPECT_NE(formatStatusTable(r, true).find("\033[32m"), std::string::npos);
}

TEST(Cli, StatusTableSaysInfinityForAnUnlimitedBudget) {
    json r = json::parse(R"({"name":"web","desired":"started","dped":{"state":"running","pid":12},
      "model_assemblies":[{"name":"node01"}],
      "status":{"deployable":"web","state":"running","assemblies":[{"name":"node01",
      "domain":"running","agent":"connected","heartbeat_age_ms":320,"services":[],
      "failures":{"used":4,"budget":-1,"period_ms":-1},"referee":"in"}]}})");
    std::string t = formatStatusTable(r, false);
    EXPECT_NE(t.find("4/INFINITY"), std::string::npos) << t;
    EXPECT_EQ(t.find("/-1"), std::string::npos) << t;
}

TEST(Cli, PingLikeMco) {
    json r = {{"pings",
               {{{"assembly", "n1"}, {"ok", true}, {"rtt_ms", 3}},
                {{"assembly", "n2"}, {"ok", true}, {"rtt_ms", 5}},
                {{"assembly", "n3"}, {"ok", false}, {"error", "no reply"}}}}};
    std::string out = formatPing(r);
    EXPECT_NE(out.find("---- ping statistics ----"), std::string::npos);
    EXPECT_NE(out.find("2 replies max: 5.00 min: 3.00 avg: 4.00"), std::string::npos) << out;
    EXPECT_NE(out.find("n3"), std::string::npos);
}

TEST(Cli, HelpListsEveryCommand) {
    std::string h = helpText();
    for (const auto& c : commands())
        EXPECT_NE(h.find(c.name), std::string::npos) << c.name;
    EXPECT_NE(helpText("deployable_create").find("--monitor"), std::string::npos);
    EXPECT_EQ(helpText("nope"), "");
}
