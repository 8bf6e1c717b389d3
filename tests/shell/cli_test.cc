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

// A dped fenced off by a newer leader (docs/ha.md) says so above its table, with both epochs;
// an unfenced one says nothing about fencing.
TEST(Cli, StatusTableSaysWhenTheDpedIsFencedOff) {
    json r = json::parse(R"({"name":"web","desired":"started","dped":{"state":"running","pid":12},
      "model_assemblies":[{"name":"node01"}],
      "status":{"deployable":"web","state":"running","epoch":4,"fenced_by":5,"assemblies":[]}})");
    std::string t = formatStatusTable(r, false);
    EXPECT_NE(t.find("fenced off by a newer leader's epoch 5 (this dped's is 4): it acts on "
                     "nothing until its cped leads again"),
              std::string::npos)
        << t;
    r["status"].erase("fenced_by");
    EXPECT_EQ(formatStatusTable(r, false).find("fenced"), std::string::npos);
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

TEST(Cli, HostCommands) {
    auto r = parse({"host_add", "h1", "--node", "node:h1", "--fence", "fence_virsh", "ip=192.0.2.1",
                    "plug=h1", "--capacity", "vcpus=8,mem=16384"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->command, "host_add");
    EXPECT_EQ(r->args,
              (json{{"name", "h1"},
                    {"node", "node:h1"},
                    {"fence",
                     {{"agent", "fence_virsh"}, {"params", {{"ip", "192.0.2.1"}, {"plug", "h1"}}}}},
                    {"capacity", {{"vcpus", 8}, {"mem", 16384}}}}));
    r = parse({"host_add", "h2", "--node=node:h2"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_FALSE(r->args.contains("fence"));
    r = parse({"host_maintenance", "h1", "on"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args, (json{{"name", "h1"}, {"mode", "on"}}));
    r = parse({"assembly_place", "a1", "--hosts", "h1,h2"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args, (json{{"assembly", "a1"}, {"hosts", "h1,h2"}}));
    r = parse({"assembly_place", "a1"}); // any host
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args, (json{{"assembly", "a1"}}));
    r = parse({"assembly_create", "vm", "--image", "/var/lib/libvirt/images/vm.qcow2", "--memory",
               "1024", "--vcpus", "2", "--network", "default", "--host", "h1"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args, (json{{"name", "vm"},
                             {"image", "/var/lib/libvirt/images/vm.qcow2"},
                             {"memory", 1024},
                             {"vcpus", 2},
                             {"networks", "default"},
                             {"host", "h1"}}));
    r = parse({"deployable_create", "web", "--spread", "off"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args["spread"], "off");
    r = parse({"deployable_spread", "web", "on"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->args, (json{{"deployable", "web"}, {"mode", "on"}}));
}

TEST(Cli, HostUsageErrors) {
    auto msg = [](std::vector<std::string> words) {
        auto r = parse(words);
        return r.ok() ? std::string("<accepted>") : r.error().message;
    };
    EXPECT_NE(msg({"host_add", "h1"}).find("--node node:NAME is required"), std::string::npos);
    EXPECT_NE(msg({"host_add", "h1", "--node", "node:h1", "ip=1"}).find("go after --fence"),
              std::string::npos);
    EXPECT_NE(msg({"host_add", "h1", "--node", "node:h1", "--fence", "fence_x", "noequals"})
                  .find("'noequals' is not KEY=VALUE"),
              std::string::npos);
    EXPECT_NE(msg({"host_add", "h1", "--node", "node:h1", "--fence", "fence_x", "a=1", "a=2"})
                  .find("given twice"),
              std::string::npos);
    EXPECT_NE(msg({"host_add", "h1", "--node", "node:h1", "--capacity", "cpus=4"})
                  .find("'cpus=4' is not vcpus=N or mem=MiB"),
              std::string::npos);
    EXPECT_NE(msg({"host_add", "h1", "--node", "node:h1", "--capacity", "mem=lots"})
                  .find("is not a number"),
              std::string::npos);
    EXPECT_NE(msg({"host_maintenance", "h1", "yes"}).find("must be on or off"), std::string::npos);
    EXPECT_NE(msg({"assembly_place", "a", "--host", "h1", "--hosts", "h1,h2"}).find("not both"),
              std::string::npos);
    EXPECT_NE(msg({"assembly_create", "a", "--domain-xml", "/dev/null", "--memory", "512"})
                  .find("do not go with --domain-xml"),
              std::string::npos);
    EXPECT_NE(msg({"assembly_create", "a", "--image", "/x.qcow2", "--vcpus", "0"})
                  .find("not a number from 1 to 4096"),
              std::string::npos);
    EXPECT_NE(msg({"host_list", "--node", "node:x"}).find("unknown option --node"),
              std::string::npos);
}

TEST(Cli, HostOutput) {
    json list = {{"hosts",
                  {{{"name", "h1"},
                    {"state", "maintenance"},
                    {"node", "node:h1"},
                    {"fence", {{"agent", "fence_virsh"}, {"params", {"ip"}}}},
                    {"capacity", {{"vcpus", 8}, {"mem_mib", 16384}}},
                    {"pinned", {"a1"}},
                    {"allowed", {"a2"}}}}}};
    const std::string t = format("host_list", list, false);
    EXPECT_NE(t.find("NAME  STATE        NODE     FENCE        CAPACITY            ASSEMBLIES"),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("h1    maintenance  node:h1  fence_virsh  8 vcpus, 16384 MiB  2"),
              std::string::npos)
        << t;
    EXPECT_EQ(format("host_list", json{{"hosts", json::array()}}, false), "no hosts\n");
    json st = list["hosts"][0];
    st["any_host"] = json{"a3"};
    const std::string s = format("host_status", st, false);
    EXPECT_NE(s.find("host h1: maintenance (node node:h1)"), std::string::npos) << s;
    EXPECT_NE(s.find("fence:    fence_virsh (params ip)"), std::string::npos) << s;
    EXPECT_NE(s.find("any host: a3"), std::string::npos) << s;
    EXPECT_EQ(format("host_maintenance", json{{"host", "h1"}, {"state", "maintenance"}}, false),
              "ok host=h1 state=maintenance\n");
}

TEST(Cli, ClusterCommands) {
    auto r = parse({"cluster_add", "m3", "http://10.0.0.4:2380"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args, (json{{"name", "m3"}, {"peer_url", "http://10.0.0.4:2380"}}));
    r = parse({"cluster_add", "m3", "http://10.0.0.4:2380", "--learner"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args,
              (json{{"name", "m3"}, {"peer_url", "http://10.0.0.4:2380"}, {"learner", true}}));
    r = parse({"cluster_remove", "m3"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args, (json{{"name", "m3"}}));
    r = parse({"cluster_promote", "m3"});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->args, (json{{"name", "m3"}}));
    EXPECT_FALSE(parse({"cluster_remove", "m3", "--learner"}).ok()) << "only cluster_add has it";
    EXPECT_FALSE(parse({"cluster_promote"}).ok());
    EXPECT_FALSE(parse({"cluster_add", "m3"}).ok());
    EXPECT_FALSE(parse({"cluster_status", "x"}).ok());

    std::string single = format("cluster_status",
                                {{"mode", "single-node"},
                                 {"etcd", false},
                                 {"leader", {{"node", "solo"}, {"epoch", 4}}},
                                 {"members", {{{"name", "solo"}, {"self", true}}}}},
                                false);
    EXPECT_EQ(single, "zone: single node, no etcd (cped runs without --cluster)\n"
                      "members: this node only (solo)\n"
                      "pcloud leader: solo, epoch 4\n");
    json zone = {{"etcd", true},
                 {"endpoints", "etcd://127.0.0.1:2379"},
                 {"leader", {{"node", "a"}, {"epoch", 12}}},
                 {"etcd_leader", "m0"},
                 {"quorum", {{"voters", 2}, {"healthy", 1}, {"needed", 2}, {"ok", false}}},
                 {"members",
                  {{{"label", "m0"},
                    {"id", "00000000000000aa"},
                    {"healthy", true},
                    {"started", true},
                    {"is_leader", true},
                    {"lag", 0},
                    {"peer_urls", {"http://127.0.0.1:2380"}},
                    {"client_urls", {"http://127.0.0.1:2379"}},
                    {"status",
                     {{"version", "3.4.23"},
                      {"db_size", 20480},
                      {"raft_index", 9},
                      {"raft_term", 2},
                      {"errors", json::array()}}}},
                   {{"label", "m1"},
                    {"id", "00000000000000bb"},
                    {"healthy", false},
                    {"started", true},
                    {"peer_urls", {"http://127.0.0.1:2390"}},
                    {"client_urls", {"http://127.0.0.1:2389"}},
                    {"problem", "connection refused"}}}}};
    EXPECT_EQ(format("cluster_status", zone, false),
              "zone: etcd etcd://127.0.0.1:2379\n"
              "pcloud leader: a, epoch 12\n"
              "etcd leader: m0; quorum: 1 of 2 voting members healthy, 2 needed (NO QUORUM)\n"
              "NAME  ID                HEALTH     ROLE      VERSION  DB   INDEX/TERM  LAG  PEER "
              "URLS              CLIENT URLS\n"
              "m0    00000000000000aa  healthy    leader    3.4.23   20K  9/2         0    "
              "http://127.0.0.1:2380  http://127.0.0.1:2379\n"
              "m1    00000000000000bb  unhealthy  follower  -        -    -           -    "
              "http://127.0.0.1:2390  http://127.0.0.1:2389\n"
              "  m1: connection refused\n");
}
