// The command handler over a real store in a temp dir, with a recording Runtime in place of
// the bus and the supervisor (those are exercised by the cped/pcloudsh tests).
#include "common/fs.h"
#include "cped/commands.h"
#include "store/domain_check.h"
#include "store/image_domain.h"
#include "store/store.h"
#include "store/templates.h"

#include <filesystem>
#include <gtest/gtest.h>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::cped;
using nlohmann::json;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-cmd-XXXXXX";
    return ::mkdtemp(tmpl);
}

const char* kDomain = "<domain type='qemu'><name>n1</name><memory>65536</memory></domain>";

struct RecordingRuntime : Runtime {
    std::vector<std::string> calls;
    std::vector<events::Event> emitted;
    bool dped_answers = true;
    void startDeployable(const std::string& d) override { calls.push_back("start " + d); }
    Result<json> stopDeployable(const std::string& d) override {
        calls.push_back("stop " + d);
        return json{{"exit", 0}};
    }
    Result<json> askDped(const std::string& d, const std::string& c, const json&) override {
        calls.push_back("ask " + d + " " + c);
        if (!dped_answers)
            return makeError("no reply from pcloud.dped." + d + " within 2000 ms");
        if (c == "status")
            return json{{"deployable", d}, {"state", "running"}, {"assemblies", json::array()}};
        return json::object();
    }
    json dpedProcess(const std::string&) override {
        return {{"state", "running"}, {"running", true}};
    }
    std::vector<PingResult> pingAgents(const std::vector<std::string>& as, Millis) override {
        std::vector<PingResult> out;
        for (const auto& a : as)
            out.push_back({a, a != "n2", 3, a == "n2" ? "no reply" : ""});
        return out;
    }
    void emit(events::Event e) override { emitted.push_back(std::move(e)); }
};

struct Env {
    std::string dir = tempDir();
    ManualClock clock;
    model::Model model;
    DesiredState desired;
    RecordingRuntime runtime;
    store::TemplateRegistry templates;
    std::unique_ptr<events::EventJournal> journal;
    Context ctx;
    int n = 0;

    Env() {
        store::Template t;
        t.name = "nginx";
        t.description = "nginx web server";
        t.resource.type = "nginx";
        t.resource.unit = "nginx.service";
        templates.add(t);
        journal = std::move(events::EventJournal::open(dir, {}, clock).value());
        ctx.state_dir = dir;
        ctx.clock = &clock;
        ctx.desired = &desired;
        ctx.journal = journal.get();
        ctx.templates = &templates;
        ctx.runtime = &runtime;
        // What this host allows: balancer files only under refereeDir.
        std::filesystem::create_directories(refereeDir);
        ctx.host.referee_dirs = {refereeDir};
    }
    std::string refereeDir = dir + "/referee";
    Response run(const std::string& cmd, json args = json::object()) {
        Request r;
        r.id = std::to_string(++n);
        r.command = cmd;
        r.args = std::move(args);
        return handle(r, model, ctx);
    }
    json ok(const std::string& cmd, json args = json::object()) {
        auto r = run(cmd, std::move(args));
        EXPECT_TRUE(r.ok) << cmd << ": " << r.error_code << ": " << r.error_message;
        return r.result;
    }
    std::string files() {
        std::string s;
        for (auto f : {"db_deployable.xml", "db_assemblies.xml", "db_hosts.xml", "desired.json"}) {
            auto t = fs::readFile(dir + "/" + f);
            s += std::string(f) + "=" + (t ? *t : "<none>") + "\n";
        }
        return s;
    }
    // Runs a command that must fail with `code` and leave memory and disk untouched.
    std::string rejected(const std::string& cmd, json args, const std::string& code) {
        auto before = files();
        auto modelBefore = model;
        auto desiredBefore = desired;
        auto r = run(cmd, std::move(args));
        EXPECT_FALSE(r.ok) << cmd;
        EXPECT_EQ(r.error_code, code) << cmd << ": " << r.error_message;
        EXPECT_EQ(files(), before) << cmd;
        EXPECT_TRUE(model == modelBefore) << cmd;
        EXPECT_TRUE(desired == desiredBefore) << cmd;
        return r.error_message;
    }
    void populate() {
        ok("deployable_create", {{"name", "web"}});
        ok("assembly_create",
           {{"name", "n1"}, {"domain_xml", kDomain}, {"address", "127.0.0.1:8080"}});
        ok("assembly_create", {{"name", "n2"}, {"image", "/var/lib/pcloud/n2.qcow2"}});
        ok("deployable_assembly_add", {{"deployable", "web"}, {"assembly", "n1"}});
    }
};

} // namespace

TEST(ParseRequest, AcceptsCommandAndRejectsGarbage) {
    Response rej;
    auto r =
        parseRequest(R"({"v":1,"type":"command","id":"7","command":"status","args":{}})", &rej);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->id, "7");
    EXPECT_EQ(r->command, "status");
    EXPECT_FALSE(parseRequest("not json", &rej).ok());
    EXPECT_EQ(rej.error_code, "bad-request");
    EXPECT_FALSE(parseRequest(R"({"v":2,"type":"command","id":"8","command":"x"})", &rej).ok());
    EXPECT_EQ(rej.id, "8");
    EXPECT_FALSE(parseRequest(R"({"v":1,"type":"command","id":"9"})", &rej).ok());
    EXPECT_FALSE(
        parseRequest(R"({"v":1,"type":"command","id":"9","command":"x","args":[1]})", &rej).ok());
    auto j = rej.toJson();
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["error"]["code"], "bad-request");
}

TEST(Commands, UnknownCommand) {
    Env e;
    auto m = e.rejected("frobnicate", json::object(), "unknown-command");
    EXPECT_NE(m.find("frobnicate"), std::string::npos);
}

TEST(Commands, DeployableLifecycle) {
    Env e;
    auto r = e.ok("deployable_create",
                  {{"name", "web"}, {"uri", "test:///default"}, {"monitor", "passive"}});
    EXPECT_EQ(r["uri"], "test:///default");
    EXPECT_EQ(r["monitor"], "passive");
    auto loaded = store::loadModel(e.dir);
    ASSERT_TRUE(loaded.ok());
    EXPECT_TRUE(loaded->findDeployable("web"));
    EXPECT_EQ(e.runtime.emitted.back().state, "created");

    e.rejected("deployable_create", {{"name", "web"}}, "exists");
    e.rejected("deployable_create", {{"name", "bad name"}}, "invalid-argument");
    e.rejected("deployable_create", {{"name", "x"}, {"monitor", "sometimes"}}, "invalid-argument");
    e.rejected("deployable_create", json::object(), "invalid-argument");
    e.rejected("deployable_create", {{"name", 5}}, "invalid-argument");

    auto list = e.ok("deployable_list");
    ASSERT_EQ(list["deployables"].size(), 1u);
    EXPECT_EQ(list["deployables"][0]["name"], "web");

    e.rejected("deployable_delete", {{"name", "nope"}}, "not-found");
    e.ok("deployable_delete", {{"name", "web"}});
    EXPECT_TRUE(store::loadModel(e.dir)->deployables.empty());
}

TEST(Commands, StartStopPersistDesiredState) {
    Env e;
    e.ok("deployable_create", {{"name", "empty"}});
    e.rejected("deployable_start", {{"name", "empty"}}, "conflict"); // no assemblies yet
    e.rejected("deployable_start", {{"name", "nope"}}, "not-found");
    e.populate();
    auto r = e.ok("deployable_start", {{"name", "web"}});
    EXPECT_EQ(r["already"], false);
    EXPECT_EQ(e.runtime.calls.back(), "start web");
    EXPECT_TRUE(DesiredState::load(e.dir)->started("web"));
    EXPECT_EQ(e.ok("deployable_start", {{"name", "web"}})["already"], true);
    // A started deployable cannot be deleted, nor lose its last assembly.
    e.rejected("deployable_delete", {{"name", "web"}}, "conflict");
    e.rejected("deployable_assembly_remove", {{"deployable", "web"}, {"assembly", "n1"}},
               "conflict");

    auto st = e.ok("deployable_status", {{"name", "web"}});
    EXPECT_EQ(st["desired"], "started");
    EXPECT_EQ(st["status"]["state"], "running");
    e.runtime.dped_answers = false;
    st = e.ok("deployable_status", {{"name", "web"}});
    EXPECT_NE(st["dped_error"].get<std::string>().find("dped not answering"), std::string::npos);
    e.rejected("deployable_status", {{"name", "nope"}}, "not-found");
    e.runtime.dped_answers = true;

    r = e.ok("deployable_stop", {{"name", "web"}});
    EXPECT_EQ(e.runtime.calls.back(), "stop web");
    EXPECT_FALSE(DesiredState::load(e.dir)->started("web"));
    EXPECT_EQ(e.ok("deployable_stop", {{"name", "web"}})["already"], true);
    e.rejected("deployable_stop", {{"name", "nope"}}, "not-found");
}

TEST(Commands, ReloadAsksTheDpedOnlyWhenStarted) {
    Env e;
    e.populate();
    EXPECT_EQ(e.ok("deployable_reload", {{"name", "web"}})["dped"], "not running");
    e.ok("deployable_start", {{"name", "web"}});
    EXPECT_EQ(e.ok("deployable_reload", {{"name", "web"}})["dped"], "reloaded");
    EXPECT_EQ(e.runtime.calls.back(), "ask web reload");
    e.runtime.dped_answers = false;
    auto r = e.ok("deployable_reload", {{"name", "web"}});
    EXPECT_NE(r["dped"].get<std::string>().find("not answering"), std::string::npos);
    e.rejected("deployable_reload", {{"name", "nope"}}, "not-found");
}

TEST(Commands, AssemblyMembership) {
    Env e;
    e.populate();
    e.ok("deployable_create", {{"name", "db"}});
    e.rejected("deployable_assembly_add", {{"deployable", "web"}, {"assembly", "n1"}}, "exists");
    e.rejected("deployable_assembly_add", {{"deployable", "db"}, {"assembly", "n1"}}, "conflict");
    e.rejected("deployable_assembly_add", {{"deployable", "web"}, {"assembly", "zz"}}, "not-found");
    e.rejected("deployable_assembly_add", {{"deployable", "zz"}, {"assembly", "n2"}}, "not-found");
    e.ok("deployable_assembly_add", {{"deployable", "web"}, {"assembly", "n2"}});
    auto l = e.ok("deployable_assembly_list", {{"deployable", "web"}});
    ASSERT_EQ(l["assemblies"].size(), 2u);
    EXPECT_EQ(l["assemblies"][0]["name"], "n1");
    e.rejected("deployable_assembly_list", {{"deployable", "zz"}}, "not-found");
    e.rejected("deployable_assembly_remove", {{"deployable", "db"}, {"assembly", "n2"}},
               "not-found");
    e.ok("deployable_assembly_remove", {{"deployable", "web"}, {"assembly", "n2"}});
    EXPECT_EQ(store::loadModel(e.dir)->deployables.at("web").assemblies,
              std::vector<std::string>{"n1"});
}

TEST(Commands, AssemblyCreateCloneDelete) {
    Env e;
    e.populate();
    e.rejected("assembly_create", {{"name", "n1"}, {"image", "x"}}, "exists");
    e.rejected("assembly_create", {{"name", "n3"}}, "invalid-argument"); // neither
    e.rejected("assembly_create", {{"name", "n3"}, {"image", "x"}, {"domain_xml", kDomain}},
               "invalid-argument"); // both
    auto m = e.rejected("assembly_create", {{"name", "n3"}, {"domain_xml", "<domain><name>"}},
                        "invalid-argument");
    EXPECT_NE(m.find("not well-formed"), std::string::npos) << m;
    e.rejected("assembly_create", {{"name", "n3"}, {"domain_xml", "<network/>"}},
               "invalid-argument");
    e.rejected("assembly_create", {{"name", "n3"}, {"image", "x"}, {"address", "nocolon"}},
               "invalid-argument");

    auto c = e.ok("assembly_clone", {{"source", "n1"}, {"name", "n1b"}});
    EXPECT_EQ(c["source"], "domain_xml");
    EXPECT_EQ(c["deployable"], "");
    EXPECT_EQ(e.model.assemblies.at("n1b").domain_xml, kDomain);
    e.rejected("assembly_clone", {{"source", "zz"}, {"name", "n4"}}, "not-found");
    e.rejected("assembly_clone", {{"source", "n1"}, {"name", "n2"}}, "exists");

    EXPECT_EQ(e.ok("assembly_list")["assemblies"].size(), 3u);
    e.rejected("assembly_delete", {{"name", "n1"}}, "conflict"); // member of web
    e.rejected("assembly_delete", {{"name", "zz"}}, "not-found");
    e.ok("assembly_delete", {{"name", "n1b"}});
    EXPECT_FALSE(store::loadModel(e.dir)->findAssembly("n1b"));
}

TEST(Commands, ResourcesFromTemplates) {
    Env e;
    e.populate();
    auto r = e.ok("assembly_resource_add",
                  {{"resource", "www"}, {"template", "nginx"}, {"assembly", "n1"}});
    EXPECT_EQ(r["type"], "nginx");
    EXPECT_EQ(r["unit"], "nginx.service");
    e.rejected("assembly_resource_add",
               {{"resource", "www"}, {"template", "nginx"}, {"assembly", "n1"}}, "exists");
    auto m =
        e.rejected("assembly_resource_add",
                   {{"resource", "db"}, {"template", "oracle"}, {"assembly", "n1"}}, "not-found");
    EXPECT_NE(m.find("oracle"), std::string::npos) << m;
    e.rejected("assembly_resource_add",
               {{"resource", "x"}, {"template", "nginx"}, {"assembly", "zz"}}, "not-found");
    auto l = e.ok("assembly_resource_list", {{"assembly", "n1"}});
    ASSERT_EQ(l["resources"].size(), 1u);
    EXPECT_EQ(l["resources"][0]["name"], "www");
    EXPECT_EQ(store::loadModel(e.dir)->assemblies.at("n1").resources.size(), 1u);
    e.rejected("assembly_resource_remove", {{"resource", "zz"}, {"assembly", "n1"}}, "not-found");
    e.ok("assembly_resource_remove", {{"resource", "www"}, {"assembly", "n1"}});
    EXPECT_TRUE(store::loadModel(e.dir)->assemblies.at("n1").resources.empty());
    auto t = e.ok("template_list");
    ASSERT_EQ(t["templates"].size(), 1u);
    EXPECT_EQ(t["templates"][0]["name"], "nginx");
}

TEST(Commands, Escalations) {
    Env e;
    e.populate();
    e.ok("assembly_resource_add", {{"resource", "www"}, {"template", "nginx"}, {"assembly", "n1"}});
    auto r =
        e.ok("escalation_assembly_set", {{"assembly", "n1"}, {"failures", 5}, {"period", "10m"}});
    EXPECT_EQ(r["escalation"]["failures"], "5");
    EXPECT_EQ(store::loadModel(e.dir)->assemblies.at("n1").escalation,
              (model::Escalation{5, 600'000}));
    e.ok("escalation_assembly_set",
         {{"assembly", "n1"}, {"failures", "INFINITY"}, {"period", "INFINITY"}});
    EXPECT_EQ(e.model.assemblies.at("n1").escalation,
              (model::Escalation{model::kUnlimitedFailures, model::kUnlimitedPeriod}));
    e.rejected("escalation_assembly_set",
               {{"assembly", "n1"}, {"failures", "three"}, {"period", "1m"}}, "invalid-argument");
    e.rejected("escalation_assembly_set", {{"assembly", "n1"}, {"failures", 0}, {"period", "1m"}},
               "invalid-argument");
    auto m = e.rejected("escalation_assembly_set",
                        {{"assembly", "n1"}, {"failures", 3}, {"period", "10 minutes"}},
                        "invalid-argument");
    EXPECT_NE(m.find("period"), std::string::npos) << m;
    e.rejected("escalation_assembly_set", {{"assembly", "n1"}, {"failures", 3}, {"period", "0s"}},
               "invalid-argument");
    // Longer than parseDuration reads back: it would be saved, then the db would not load.
    m = e.rejected("escalation_assembly_set",
                   {{"assembly", "n1"}, {"failures", 3}, {"period", 9'000'000'000'000'000'000LL}},
                   "invalid-argument");
    EXPECT_NE(m.find("longer than 100 years"), std::string::npos) << m;
    e.rejected("escalation_assembly_set", {{"assembly", "zz"}, {"failures", 3}, {"period", "1m"}},
               "not-found");

    e.ok("escalation_resource_set",
         {{"resource", "www"}, {"assembly", "n1"}, {"failures", "2"}, {"period", 30000}});
    EXPECT_EQ(e.model.assemblies.at("n1").resources[0].escalation, (model::Escalation{2, 30'000}));
    e.rejected("escalation_resource_set",
               {{"resource", "zz"}, {"assembly", "n1"}, {"failures", 2}, {"period", "1m"}},
               "not-found");

    r = e.ok(
        "escalation_deployable_set",
        {{"deployable", "web"}, {"failures", 2}, {"period", "1h"}, {"outcome", "stop-deployable"}});
    EXPECT_EQ(r["outcome"], "stop-deployable");
    EXPECT_EQ(store::loadModel(e.dir)->deployables.at("web").outcome,
              model::DeployableOutcome::StopDeployable);
    e.rejected("escalation_deployable_set",
               {{"deployable", "web"}, {"failures", 2}, {"period", "1h"}, {"outcome", "explode"}},
               "invalid-argument");
    e.rejected("escalation_deployable_set",
               {{"deployable", "zz"}, {"failures", 2}, {"period", "1h"}}, "not-found");
}

TEST(Commands, RefereeSet) {
    Env e;
    e.populate();
    e.ok("referee_set", {{"deployable", "web"},
                         {"driver", "haproxy"},
                         {"options", {{"socket", "/run/haproxy.sock"}, {"backend", "web"}}}});
    EXPECT_EQ(store::loadModel(e.dir)->deployables.at("web").referee.driver, "haproxy");
    e.rejected("referee_set", {{"deployable", "web"}, {"driver", "haproxy"}}, "invalid-argument");
    e.rejected("referee_set", {{"deployable", "web"}, {"driver", "traefik"}}, "invalid-argument");
    e.rejected("referee_set",
               {{"deployable", "web"}, {"driver", "log"}, {"options", {{"colour", "red"}}}},
               "invalid-argument");
    e.rejected("referee_set", {{"deployable", "zz"}, {"driver", "log"}}, "not-found");
    // A name over 64 bytes whose 64th byte is inside a character (found by fuzz_command_api):
    // the error quotes a prefix that is still UTF-8, so the reply serialises (cped sent
    // toJson().dump(), which threw and ended cped).
    std::string longName = std::string(62, 'e') + "\xE8\x8F\x9E" + "x";
    auto cut = e.rejected("referee_set",
                          {{"deployable", "web"},
                           {"driver", "haproxy"},
                           {"options", {{"socket", "/run/haproxy.sock"}, {"backend", longName}}}},
                          "invalid-argument");
    EXPECT_NE(cut.find("longer than 64"), std::string::npos) << cut;
    EXPECT_NO_THROW((void)json(cut).dump());
    // nginx: config_file and upstream are required, and the error names the missing one.
    const std::string managed = e.refereeDir + "/pcloud-web.conf";
    auto missing = e.rejected(
        "referee_set",
        {{"deployable", "web"}, {"driver", "nginx"}, {"options", {{"config_file", managed}}}},
        "invalid-argument");
    EXPECT_NE(missing.find("needs upstream="), std::string::npos) << missing;
    e.ok("referee_set", {{"deployable", "web"},
                         {"driver", "nginx"},
                         {"options", {{"config_file", managed}, {"upstream", "web"}}}});
    const auto rc = store::loadModel(e.dir)->deployables.at("web").referee;
    EXPECT_EQ(rc.driver, "nginx");
    EXPECT_EQ(rc.upstream, "web");
    e.rejected("referee_set",
               {{"deployable", "web"},
                {"driver", "nginx"},
                {"options", {{"config_file", managed}, {"upstream", "a b"}}}},
               "invalid-argument");
    e.ok("referee_set", {{"deployable", "web"}, {"driver", "none"}});
    EXPECT_EQ(e.model.deployables.at("web").referee.driver, "");
}

// issue 10 item 7: nothing from the bus becomes a host command, path or directive.
TEST(Commands, RefereeSetTakesNoCommandsAndOnlyPathsTheHostAllows) {
    Env e;
    e.populate();
    const std::string managed = e.refereeDir + "/pcloud-web.conf";
    auto apache = [&](json options) {
        return json{{"deployable", "web"}, {"driver", "apache"}, {"options", options}};
    };
    // Free-form commands that dped would exec as root.
    auto msg = e.rejected("referee_set",
                          apache({{"config_file", managed},
                                  {"cluster", "web"},
                                  {"apachectl", "sh -c 'touch /tmp/owned'"}}),
                          "invalid-argument");
    EXPECT_NE(msg.find("'apachectl' is not accepted over the bus"), std::string::npos) << msg;
    EXPECT_NE(msg.find("apachectl = ...' in the host configuration"), std::string::npos) << msg;
    msg = e.rejected(
        "referee_set",
        {{"deployable", "web"},
         {"driver", "nginx"},
         {"options", {{"config_file", managed}, {"upstream", "web"}, {"nginx", "/bin/sh"}}}},
        "invalid-argument");
    EXPECT_NE(msg.find("'nginx' is not accepted over the bus"), std::string::npos) << msg;
    // config_file: only inside referee_dir, never through a symlink or "..".
    msg = e.rejected("referee_set", apache({{"config_file", "/etc/shadow"}, {"cluster", "web"}}),
                     "invalid-argument");
    EXPECT_NE(msg.find("config_file '/etc/shadow' is not inside an allowed directory"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("referee_dir = " + e.refereeDir), std::string::npos) << msg;
    e.rejected("referee_set",
               apache({{"config_file", e.refereeDir + "/../escape.conf"}, {"cluster", "web"}}),
               "invalid-argument");
    const std::string link = e.refereeDir + "/link.conf";
    ASSERT_EQ(::symlink("/etc/passwd", link.c_str()), 0);
    msg = e.rejected("referee_set", apache({{"config_file", link}, {"cluster", "web"}}),
                     "invalid-argument");
    EXPECT_NE(msg.find("is a symbolic link"), std::string::npos) << msg;
    // A directory symlinked into referee_dir does not widen it: the real parent counts.
    const std::string dirLink = e.refereeDir + "/etc";
    ASSERT_EQ(::symlink("/etc", dirLink.c_str()), 0);
    msg = e.rejected("referee_set",
                     apache({{"config_file", dirLink + "/x.conf"}, {"cluster", "web"}}),
                     "invalid-argument");
    EXPECT_NE(msg.find("not inside an allowed directory"), std::string::npos) << msg;
    // Directive injection into the Apache file, command injection into the HAProxy socket.
    msg = e.rejected(
        "referee_set",
        apache({{"config_file", managed}, {"cluster", "web>\nProxyPass / http://evil/"}}),
        "invalid-argument");
    EXPECT_NE(msg.find("referee cluster"), std::string::npos) << msg;
    msg = e.rejected("referee_set",
                     apache({{"config_file", managed}, {"cluster", "web"}, {"alias", "/a b"}}),
                     "invalid-argument");
    EXPECT_NE(msg.find("referee alias"), std::string::npos) << msg;
    e.rejected("referee_set",
               apache({{"config_file", managed}, {"cluster", "web"}, {"alias", "/../x"}}),
               "invalid-argument");
    msg = e.rejected(
        "referee_set",
        {{"deployable", "web"},
         {"driver", "haproxy"},
         {"options", {{"socket", "/run/haproxy.sock"}, {"backend", "web\nshutdown sessions"}}}},
        "invalid-argument");
    EXPECT_NE(msg.find("referee backend"), std::string::npos) << msg;
    e.rejected("referee_set",
               {{"deployable", "web"},
                {"driver", "haproxy"},
                {"options", {{"socket", "/run/h.sock"}, {"backend", std::string(65, 'b')}}}},
               "invalid-argument");
    // And the good one passes.
    e.ok("referee_set",
         apache({{"config_file", managed}, {"cluster", "web"}, {"alias", "/app/v1"}}));
}

TEST(Commands, AssemblyCreateRefusesDomainPassthroughTheHostDoesNotAllow) {
    Env e;
    const std::string head = "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/"
                             "qemu/1.0'><name>x</name>";
    const std::string userNet = "<qemu:commandline><qemu:arg value='-netdev'/><qemu:arg "
                                "value='user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80'/>"
                                "<qemu:arg value='-device'/><qemu:arg "
                                "value='virtio-net-pci,netdev=n0,bus=pci.0,addr=0x1e'/>"
                                "</qemu:commandline>";
    auto create = [&](const std::string& name, const std::string& body) {
        return json{{"name", name}, {"domain_xml", head + body + "</domain>"}};
    };
    // The default host allows no qemu:commandline at all.
    auto msg = e.rejected("assembly_create", create("a1", userNet), "invalid-argument");
    EXPECT_NE(msg.find("<qemu:commandline>"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qemu_commandline = netdev-user"), std::string::npos) << msg;
    // Whatever the prefix: libvirt goes by the namespace.
    e.rejected("assembly_create",
               json{{"name", "a1"},
                    {"domain_xml", "<domain type='qemu' xmlns:q='http://libvirt.org/schemas/"
                                   "domain/qemu/1.0'><name>x</name><q:commandline><q:arg "
                                   "value='-S'/></q:commandline></domain>"}},
               "invalid-argument");
    e.ctx.host.qemu_commandline = hostconfig::QemuCommandline::NetdevUser;
    e.ok("assembly_create", create("a1", userNet));
    // Allowed means exactly user networking: not a host command, not a host directory.
    msg = e.rejected("assembly_create",
                     create("a2", "<qemu:commandline><qemu:arg value='-netdev'/><qemu:arg "
                                  "value='user,id=n0,guestfwd=tcp:10.0.2.9:1-cmd:/bin/sh'/>"
                                  "</qemu:commandline>"),
                     "invalid-argument");
    EXPECT_NE(msg.find("option 'guestfwd' is not allowed"), std::string::npos) << msg;
    msg = e.rejected("assembly_create",
                     create("a2", "<qemu:commandline><qemu:arg value='-chardev'/><qemu:arg "
                                  "value='file,id=c,path=/etc/shadow'/></qemu:commandline>"),
                     "invalid-argument");
    EXPECT_NE(msg.find("'-chardev file,id=c,path=/etc/shadow' is not allowed"), std::string::npos)
        << msg;
    e.rejected("assembly_create",
               create("a2", "<qemu:commandline><qemu:env name='LD_PRELOAD' value='/x.so'/>"
                            "</qemu:commandline>"),
               "invalid-argument");
    // Host devices and host programs.
    msg = e.rejected("assembly_create",
                     create("a2", "<devices><filesystem type='mount'><source dir='/'/><target "
                                  "dir='root'/></filesystem></devices>"),
                     "invalid-argument");
    EXPECT_NE(msg.find("<filesystem>"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allow_host_devices = yes"), std::string::npos) << msg;
    e.rejected("assembly_create",
               create("a2", "<devices><hostdev mode='subsystem' type='pci'/></devices>"),
               "invalid-argument");
    msg = e.rejected("assembly_create",
                     create("a2", "<devices><interface type='ethernet'><script "
                                  "path='/tmp/evil.sh'/></interface></devices>"),
                     "invalid-argument");
    EXPECT_NE(msg.find("host program"), std::string::npos) << msg;
    e.rejected("assembly_create", create("a2", "<devices><emulator>/bin/sh</emulator></devices>"),
               "invalid-argument");
    e.ctx.host.allow_host_devices = true;
    e.ok("assembly_create",
         create("a2", "<devices><hostdev mode='subsystem' type='pci'/></devices>"));
}

TEST(Commands, ParkAndUnpark) {
    Env e;
    e.populate();
    e.ok("deployable_start", {{"name", "web"}});
    auto r = e.ok("assembly_park", {{"assembly", "n1"}});
    EXPECT_EQ(r["dped"], "reloaded");
    EXPECT_TRUE(store::loadModel(e.dir)->assemblies.at("n1").parked);
    EXPECT_EQ(e.runtime.emitted.back().state, "parked");
    EXPECT_EQ(e.ok("assembly_park", {{"assembly", "n1"}})["already"], true);
    e.ok("assembly_unpark", {{"assembly", "n1"}});
    EXPECT_FALSE(store::loadModel(e.dir)->assemblies.at("n1").parked);
    e.rejected("assembly_park", {{"assembly", "zz"}}, "not-found");
}

// Regression (fuzz_command_api): park kept a pointer to the owning deployable across the
// commit that replaces the model, and read it freed for the event and the dped reload.
// Under ASan this was a heap-use-after-free; here the event and the reload must still name
// the owner, for park and unpark alike.
TEST(Commands, ParkNamesTheOwnerAfterTheCommit) {
    Env e;
    e.populate();
    e.ok("deployable_start", {{"name", "web"}});
    for (const char* cmd : {"assembly_park", "assembly_unpark"}) {
        e.runtime.calls.clear();
        auto r = e.ok(cmd, {{"assembly", "n1"}});
        EXPECT_EQ(r["dped"], "reloaded") << cmd;
        EXPECT_EQ(e.runtime.emitted.back().deployable, "web") << cmd;
        EXPECT_EQ(e.runtime.calls, std::vector<std::string>{"ask web reload"}) << cmd;
    }
}

TEST(Commands, FailedSaveRollsBack) {
    Env e;
    e.populate();
    e.ctx.save = [](const model::Model&) -> Status {
        return makeError("disk full", "/x/db_deployable.xml");
    };
    auto m = e.rejected("deployable_create", {{"name", "db"}}, "internal");
    EXPECT_NE(m.find("disk full"), std::string::npos);
    e.rejected("assembly_park", {{"assembly", "n1"}}, "internal");
    EXPECT_FALSE(e.model.assemblies.at("n1").parked);
}

TEST(Commands, StatusEventsPing) {
    Env e;
    e.populate();
    for (int i = 0; i < 5; ++i) {
        events::Event ev;
        ev.deployable = i % 2 ? "web" : "db";
        ev.state = "started";
        ASSERT_TRUE(e.journal->append(ev).ok());
        e.clock.advance(1000);
    }
    auto st = e.ok("status");
    EXPECT_EQ(st["deployables"].size(), 1u);
    EXPECT_EQ(st["last_seq"], 5);
    auto ev = e.ok("events", {{"since_seq", 2}});
    ASSERT_EQ(ev["events"].size(), 3u);
    EXPECT_EQ(ev["events"][0]["seq"], 3);
    EXPECT_EQ(e.ok("events", {{"deployable", "web"}})["events"].size(), 2u);
    EXPECT_EQ(e.ok("events", {{"limit", 2}})["events"][1]["seq"], 5);
    e.rejected("events", {{"since_time", "last tuesday"}}, "invalid-argument");
    e.rejected("events", {{"since_seq", "x"}}, "invalid-argument");

    auto p = e.ok("ping", {{"assemblies", {"n1", "n2"}}});
    ASSERT_EQ(p["pings"].size(), 2u);
    EXPECT_EQ(p["pings"][0]["ok"], true);
    EXPECT_EQ(p["pings"][1]["ok"], false);
    e.rejected("ping", {{"assemblies", {"zz"}}}, "not-found");
    EXPECT_EQ(e.ok("ping")["pings"].size(), 2u); // all assemblies
}

// ---- hosts (docs/hosts.md) ----------------------------------------------------------------

namespace {
// The test fence agent's directory stands in for /usr/sbin.
void allowTestAgents(Env& e) {
    e.ctx.host.fence_agents_dir = FENCE_AGENTS_DIR;
}
json fence(const std::string& agent, json params = json::object()) {
    return {{"agent", agent}, {"params", params}};
}
} // namespace

TEST(Hosts, AddListStatusRemove) {
    Env e;
    allowTestAgents(e);
    auto h = e.ok("host_add",
                  {{"name", "h1"},
                   {"node", "node:h1"},
                   {"fence", fence("fence_pcloud_test", {{"plug", "h1"}, {"password", "s3cret"}})},
                   {"capacity", {{"vcpus", 8}, {"mem", 16384}}}});
    EXPECT_EQ(h["state"], "up");
    EXPECT_EQ(h["capacity"]["mem_mib"], 16384);
    // Parameter names are shown, values (passwords) are not.
    EXPECT_EQ(h["fence"]["params"], (json{"password", "plug"}));
    EXPECT_EQ(h.dump().find("s3cret"), std::string::npos) << h.dump();
    e.ok("host_add", {{"name", "h2"}, {"node", "node:h2"}});

    auto back = store::loadModel(e.dir);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(back->hosts.at("h1").fence.params.at("password"), "s3cret");
    EXPECT_EQ(back->hosts.at("h1").capacity.vcpus, 8);
    EXPECT_EQ(e.ok("host_list")["hosts"].size(), 2u);

    // Events: one per state change, under the pseudo-deployable host:NAME.
    ASSERT_GE(e.runtime.emitted.size(), 2u);
    EXPECT_EQ(e.runtime.emitted[0].deployable, "host:h1");
    EXPECT_EQ(e.runtime.emitted[0].state, "up");

    e.ok("deployable_create", {{"name", "web"}});
    e.ok("assembly_create", {{"name", "a1"}, {"domain_xml", kDomain}, {"host", "h1"}});
    e.ok("assembly_create", {{"name", "a2"}, {"domain_xml", kDomain}, {"hosts", "h2,h1"}});
    e.ok("assembly_create", {{"name", "a3"}, {"domain_xml", kDomain}});
    auto st = e.ok("host_status", {{"name", "h1"}});
    EXPECT_EQ(st["pinned"], json{"a1"});
    EXPECT_EQ(st["allowed"], json{"a2"});
    EXPECT_EQ(st["any_host"], json{"a3"});

    auto m = e.rejected("host_remove", {{"name", "h1"}}, "conflict");
    EXPECT_NE(m.find("still has assemblies placed on it (a1, a2)"), std::string::npos) << m;
    e.ok("assembly_place", {{"assembly", "a1"}, {"host", "h2"}});
    auto p = e.ok("assembly_place", {{"assembly", "a2"}, {"hosts", json{"h2"}}});
    EXPECT_EQ(p["placement"], "hosts=h2");
    e.ok("host_remove", {{"name", "h1"}});
    EXPECT_FALSE(store::loadModel(e.dir)->findHost("h1"));
    EXPECT_EQ(e.runtime.emitted.back().state, "removed");
    e.rejected("host_remove", {{"name", "h1"}}, "not-found");
    // Back to any host.
    EXPECT_EQ(e.ok("assembly_place", {{"assembly", "a1"}})["placement"], "any");
}

TEST(Hosts, BadArgumentsAreRejectedAndChangeNothing) {
    Env e;
    allowTestAgents(e);
    e.ok("host_add", {{"name", "h1"}, {"node", "node:h1"}});
    e.rejected("host_add", {{"name", "h1"}, {"node", "node:x"}}, "exists");
    e.rejected("host_add", {{"name", "h2"}, {"node", "h2"}}, "invalid-argument");
    e.rejected("host_add", {{"name", "h2"}}, "invalid-argument");
    e.rejected("host_add", {{"name", "h2"}, {"node", "node:h1"}}, "conflict");
    e.rejected("host_add", {{"name", "bad name"}, {"node", "node:b"}}, "invalid-argument");
    // An agent from the bus never becomes a path (promise 2).
    for (const char* agent : {"/bin/sh", "../fence_x", "fence_../../bin/sh", "sh", "fence_"}) {
        SCOPED_TRACE(agent);
        auto m =
            e.rejected("host_add", {{"name", "h2"}, {"node", "node:h2"}, {"fence", fence(agent)}},
                       "invalid-argument");
        EXPECT_NE(m.find("never given as a path"), std::string::npos) << m;
    }
    auto m = e.rejected(
        "host_add", {{"name", "h2"}, {"node", "node:h2"}, {"fence", fence("fence_not_installed")}},
        "invalid-argument");
    EXPECT_NE(m.find(std::string(FENCE_AGENTS_DIR) + "/fence_not_installed"), std::string::npos)
        << m;
    e.rejected("host_add",
               {{"name", "h2"},
                {"node", "node:h2"},
                {"fence", fence("fence_pcloud_test", {{"action", "on"}})}},
               "invalid-argument");
    e.rejected("host_add",
               {{"name", "h2"},
                {"node", "node:h2"},
                {"fence", fence("fence_pcloud_test", {{"ip", "1.2.3.4\naction=on"}})}},
               "invalid-argument");
    e.rejected("host_add", {{"name", "h2"}, {"node", "node:h2"}, {"capacity", {{"cpus", 4}}}},
               "invalid-argument");
    // The host configuration can narrow the agents further.
    e.ctx.host.fence_agents = {"fence_virsh"};
    m = e.rejected("host_add",
                   {{"name", "h2"}, {"node", "node:h2"}, {"fence", fence("fence_pcloud_test")}},
                   "invalid-argument");
    EXPECT_NE(m.find("fence_agent = fence_pcloud_test"), std::string::npos) << m;
    // Placement must name defined hosts.
    e.rejected("assembly_create", {{"name", "a"}, {"domain_xml", kDomain}, {"host", "h9"}},
               "not-found");
    e.rejected("assembly_create",
               {{"name", "a"}, {"domain_xml", kDomain}, {"host", "h1"}, {"hosts", "h1"}},
               "invalid-argument");
    e.rejected("assembly_create", {{"name", "a"}, {"domain_xml", kDomain}, {"hosts", "h1,h1"}},
               "invalid-argument");
}

TEST(Hosts, MaintenanceIsAStateChangeWithEvents) {
    Env e;
    e.ok("host_add", {{"name", "h1"}, {"node", "node:h1"}});
    const size_t before = e.runtime.emitted.size();
    auto r = e.ok("host_maintenance", {{"name", "h1"}, {"mode", "on"}});
    EXPECT_EQ(r["state"], "maintenance");
    EXPECT_EQ(store::loadModel(e.dir)->hosts.at("h1").state, model::HostState::Maintenance);
    ASSERT_EQ(e.runtime.emitted.size(), before + 1);
    EXPECT_EQ(e.runtime.emitted.back().deployable, "host:h1");
    EXPECT_EQ(e.runtime.emitted.back().state, "maintenance");
    EXPECT_TRUE(e.ok("host_maintenance", {{"name", "h1"}, {"mode", "on"}})["already"]);
    EXPECT_EQ(e.runtime.emitted.size(), before + 1); // no change, no event
    e.rejected("host_maintenance", {{"name", "h1"}, {"mode", "maybe"}}, "invalid-argument");
    e.ok("host_maintenance", {{"name", "h1"}, {"mode", "off"}});
    EXPECT_EQ(e.runtime.emitted.back().state, "up");
    EXPECT_EQ(store::loadModel(e.dir)->hosts.at("h1").state, model::HostState::Up);
    // A host the host layer is fencing is not the operator's to put in maintenance.
    e.model.hosts["h1"].state = model::HostState::Fencing;
    ASSERT_TRUE(store::saveModel(e.dir, e.model).ok());
    auto m = e.rejected("host_maintenance", {{"name", "h1"}, {"mode", "on"}}, "conflict");
    EXPECT_NE(m.find("is fencing"), std::string::npos) << m;
    e.rejected("host_maintenance", {{"name", "h9"}, {"mode", "on"}}, "not-found");
}

TEST(Hosts, SpreadIsOnByDefaultAndCanBeTurnedOff) {
    Env e;
    auto d = e.ok("deployable_create", {{"name", "web"}});
    EXPECT_EQ(d["spread"], true);
    e.ok("deployable_spread", {{"deployable", "web"}, {"mode", "off"}});
    EXPECT_FALSE(store::loadModel(e.dir)->deployables.at("web").spread);
    e.rejected("deployable_spread", {{"deployable", "web"}, {"mode", "no"}}, "invalid-argument");
    EXPECT_FALSE(e.ok("deployable_create", {{"name", "db"}, {"spread", "off"}})["spread"]);
}

TEST(Hosts, AssemblyFromAnImageGetsItsDomainXmlGenerated) {
    Env e;
    auto a = e.ok("assembly_create", {{"name", "vm1"},
                                      {"image", "/var/lib/libvirt/images/vm1.qcow2"},
                                      {"memory", 1024},
                                      {"vcpus", 2},
                                      {"networks", "default"}});
    EXPECT_EQ(a["source"], "image");
    const auto& m = e.model.assemblies.at("vm1");
    EXPECT_EQ(m.memory_mib, 1024);
    EXPECT_EQ(m.vcpus, 2);
    EXPECT_EQ(m.networks, std::vector<std::string>{"default"});
    EXPECT_TRUE(m.domain_xml.empty()); // generated when it is defined, from these fields
    // Paths the host does not allow, and options that only shape a generated domain.
    auto msg = e.rejected("assembly_create", {{"name", "vm2"}, {"image", "/etc/shadow"}},
                          "invalid-argument");
    EXPECT_NE(msg.find("image_dir"), std::string::npos) << msg;
    e.rejected("assembly_create",
               {{"name", "vm2"}, {"image", "/var/lib/libvirt/images/../../../etc/shadow"}},
               "invalid-argument");
    e.rejected("assembly_create", {{"name", "vm2"}, {"image", "relative.qcow2"}},
               "invalid-argument");
    e.rejected("assembly_create", {{"name", "vm2"}, {"domain_xml", kDomain}, {"memory", 512}},
               "invalid-argument");
    e.rejected("assembly_create",
               {{"name", "vm2"}, {"image", "/var/lib/pcloud/x.img"}, {"memory", 1}},
               "invalid-argument");
    e.rejected("assembly_create",
               {{"name", "vm2"}, {"image", "/var/lib/pcloud/x.img"}, {"networks", "a b"}},
               "invalid-argument");
}

// Issue #11's "done when": a Pacemaker Cloud db_assemblies.xml whose assemblies have only
// image= takes hosts and placement, keeps its pcmkc-version, and every image assembly has
// a domain XML that passes the host rules (dped generates the same one when it starts it).
TEST(Hosts, PacemakerCloudFilesTakeHostsAndGenerateTheirDomains) {
    Env e;
    for (const char* f : {"db_deployable.xml", "db_assemblies.xml"}) {
        auto text = fs::readFile(std::string(PCMKC_DATA_DIR) + "/" + f);
        ASSERT_TRUE(text.ok());
        ASSERT_TRUE(fs::writeAtomic(e.dir + "/" + f, *text).ok());
    }
    auto loaded = store::loadModel(e.dir);
    ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
    e.model = *loaded;
    e.ok("host_add", {{"name", "h1"}, {"node", "node:h1"}});
    e.ok("assembly_place", {{"assembly", "F16-cluster-1"}, {"host", "h1"}});
    auto back = store::loadModel(e.dir);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(back->pcmkc_version_assemblies, "0.6.0");
    EXPECT_EQ(back->assemblies.at("F16-cluster-1").host, "h1");
    int images = 0;
    for (const auto& [n, a] : back->assemblies) {
        if (a.image.empty() || !a.domain_xml.empty())
            continue;
        ++images;
        ASSERT_TRUE(store::checkImagePath(a.image, e.ctx.host).ok()) << n;
        auto xml = store::imageDomainXml(a);
        ASSERT_TRUE(xml.ok()) << n;
        EXPECT_TRUE(store::checkDomainXml(*xml, e.ctx.host).ok()) << n << "\n" << *xml;
        EXPECT_NE(xml->find("<source file=\"" + a.image + "\""), std::string::npos);
    }
    EXPECT_GE(images, 1);
    // The image is missing here: the error names the host and the path.
    auto missing = store::imageExists(back->assemblies.at("F16-cluster-1").image, "h1");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find(
                  "image /var/lib/libvirt/images/F16-cluster-1.qcow2 is missing on host h1"),
              std::string::npos)
        << missing.error().message;
}

namespace {

// A coordinator whose zone is a fixed observation; records what the handler asks of etcd.
struct FakeZone : ZoneMembership {
    policy::ZoneView view;
    std::vector<std::string> calls;
    std::string refuse; // when set, add/remove fail with it
    Result<policy::ZoneView> observe() override { return view; }
    Result<Added> add(const std::string& peer, bool learner) override {
        calls.push_back(std::string(learner ? "add-learner " : "add ") + peer);
        if (!refuse.empty())
            return makeError(refuse);
        Added a;
        a.member.id = 0x99;
        a.member.peer_urls = {peer};
        a.members = view;
        a.members.members.push_back(a.member);
        return a;
    }
    Status remove(std::uint64_t id, const std::string& label) override {
        calls.push_back("remove " + policy::memberIdHex(id) + " " + label);
        if (!refuse.empty())
            return makeError(refuse);
        return Status::success();
    }
    Status promote(std::uint64_t id, const std::string& label) override {
        calls.push_back("promote " + policy::memberIdHex(id) + " " + label);
        if (!refuse.empty())
            return makeError(refuse);
        return Status::success();
    }
    std::string url = "etcd://127.0.0.1:2379"; // cped's --cluster
    bool tls_zone = false;                     // whether `url` is TLS
    std::string endpoints() const override { return url; }
    bool tls() const override { return tls_zone; }
};

struct FakeCoordinator : Coordinator {
    FakeZone fake;
    Status campaign() override { return Status::success(); }
    void resign() override {}
    LeadershipInfo leadership() override { return {true, 7, "a", "a", ""}; }
    Status put(const std::string&, const std::string&) override { return Status::success(); }
    Status erase(const std::string&) override { return Status::success(); }
    Result<std::optional<std::string>> get(const std::string&) override {
        return std::optional<std::string>{};
    }
    void onLeadershipChange(std::function<void(const LeadershipInfo&)>) override {}
    std::string describe() const override { return "fake"; }
    ZoneMembership* zone() override { return &fake; }
};

policy::ZoneMember up(std::uint64_t id, const std::string& name, bool healthy = true) {
    policy::ZoneMember m;
    m.id = id;
    m.name = name;
    m.peer_urls = {"http://127.0.0.1:" + std::to_string(2380 + id)};
    m.client_urls = {"http://127.0.0.1:" + std::to_string(3380 + id)};
    m.answered = healthy;
    m.leader = healthy ? 1 : 0;
    m.raft_applied_index = 10;
    if (!healthy)
        m.error = "connection refused";
    return m;
}

} // namespace

TEST(Commands, ClusterStatusOfASingleNodeSaysSoInsteadOfFailing) {
    Env e;
    auto dir = tempDir();
    auto local = makeLocalCoordinator(dir, "solo");
    ASSERT_TRUE(local.ok()) << local.error().describe();
    ASSERT_TRUE((*local)->campaign().ok());
    e.ctx.coordinator = local->get();
    auto r = e.ok("cluster_status");
    EXPECT_EQ(r["mode"], "single-node");
    EXPECT_EQ(r["etcd"], false);
    EXPECT_EQ(r["leader"]["node"], "solo");
    EXPECT_GT(r["leader"]["epoch"].get<int>(), 0);
    EXPECT_EQ(r["members"].size(), 1u);
    EXPECT_NE(r["note"].get<std::string>().find("members: this node only"), std::string::npos);
    auto msg = e.rejected("cluster_add", {{"name", "b"}, {"peer_url", "http://10.0.0.2:2380"}},
                          "conflict");
    EXPECT_NE(msg.find("this cped runs as a single node (no etcd"), std::string::npos) << msg;
    e.rejected("cluster_remove", {{"name", "b"}}, "conflict");
    EXPECT_TRUE(e.runtime.emitted.empty());
}

TEST(Commands, ClusterChangesAreCheckedFirstAndJournaled) {
    Env e;
    FakeCoordinator c;
    c.fake.view.members = {up(1, "m0"), up(2, "m1"), up(3, "m2", false)};
    e.ctx.coordinator = &c;
    auto st = e.ok("cluster_status");
    EXPECT_EQ(st["quorum"]["healthy"], 2);
    EXPECT_EQ(st["etcd_leader"], "m0");
    EXPECT_EQ(st["members"][2]["problem"], "connection refused");
    EXPECT_EQ(st["members"][1]["lag"], 0);

    // Refused before etcd is asked: a healthy member while another is down, an unknown
    // name, a bad name or URL.
    auto msg = e.rejected("cluster_remove", {{"name", "m1"}}, "conflict");
    EXPECT_NE(msg.find("refusing to remove 'm1'"), std::string::npos) << msg;
    e.rejected("cluster_remove", {{"name", "nope"}}, "not-found");
    e.rejected("cluster_remove", {{"name", "a b"}}, "invalid-argument");
    e.rejected("cluster_add", {{"name", "m3"}, {"peer_url", "10.0.0.4:2380"}}, "invalid-argument");
    e.rejected("cluster_add", {{"name", "m3"}, {"peer_url", "http://10.0.0.4:2380"}}, "conflict");
    EXPECT_TRUE(c.fake.calls.empty());
    EXPECT_TRUE(e.runtime.emitted.empty());

    // The member that is down may go; the event names it.
    auto r = e.ok("cluster_remove", {{"name", "m2"}});
    EXPECT_EQ(r["removed"], "m2");
    ASSERT_EQ(c.fake.calls.size(), 1u);
    EXPECT_EQ(c.fake.calls[0], "remove 0000000000000003 m2");
    ASSERT_EQ(e.runtime.emitted.size(), 1u);
    EXPECT_EQ(e.runtime.emitted[0].deployable, "zone:m2");
    EXPECT_EQ(e.runtime.emitted[0].state, "member-removed");

    // Add with every member healthy: the printed lines carry --initial-cluster.
    c.fake.view.members = {up(1, "m0"), up(2, "m1"), up(3, "m2")};
    r = e.ok("cluster_add", {{"name", "m3"}, {"peer_url", "http://10.0.0.4:2380"}});
    EXPECT_EQ(r["initial_cluster"], "m0=http://127.0.0.1:2381,m1=http://127.0.0.1:2382,"
                                    "m2=http://127.0.0.1:2383,m3=http://10.0.0.4:2380");
    EXPECT_NE(r["etcd_command"].get<std::string>().find("--initial-cluster-state existing"),
              std::string::npos);
    EXPECT_EQ(r["cped_command"],
              "cped --cluster etcd://127.0.0.1:2379,10.0.0.4:2379 --node-name m3");
    EXPECT_EQ(r["warnings"].size(), 1u);
    EXPECT_EQ(e.runtime.emitted.back().deployable, "zone:m3");
    EXPECT_EQ(e.runtime.emitted.back().state, "member-added");
    EXPECT_EQ(r["etcd_command"].get<std::string>().find("https://"), std::string::npos);

    // A zone on TLS (etcds://): the new member serves https:// and checks client
    // certificates, and the new cped speaks TLS too.
    c.fake.url = "etcds://127.0.0.1:2379";
    c.fake.tls_zone = true;
    r = e.ok("cluster_add", {{"name", "m4"}, {"peer_url", "http://10.0.0.5:2380"}});
    const std::string tlsCommand = r["etcd_command"];
    EXPECT_NE(tlsCommand.find("--advertise-client-urls https://10.0.0.5:2379 "
                              "--listen-client-urls https://10.0.0.5:2379"),
              std::string::npos)
        << tlsCommand;
    EXPECT_NE(tlsCommand.find("--client-cert-auth --trusted-ca-file CA.crt --cert-file m4.crt "
                              "--key-file m4.key"),
              std::string::npos)
        << tlsCommand;
    EXPECT_EQ(r["cped_command"],
              "cped --cluster etcds://127.0.0.1:2379,10.0.0.5:2379 --node-name m4");

    // etcd's refusal is passed on as it was put into words, and nothing is journaled.
    c.fake.refuse = "etcd refused to remove member 'm1' (id 0000000000000002): re-configuration "
                    "failed due to not enough started members";
    auto refused = e.rejected("cluster_remove", {{"name", "m1"}}, "unavailable");
    EXPECT_EQ(refused, c.fake.refuse);
    EXPECT_EQ(e.runtime.emitted.size(), 3u);
}
