// db_hosts.xml: hosts, assembly placement and the host-level assembly fields, through the
// real files in a temp dir (round trip, corrupt files, crash consistency).
#include "store/store.h"

#include "common/fs.h"

#include <gtest/gtest.h>
#include <string>
#include <vector>

using namespace pcloud;
using pcloud::model::Model;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-hosts-XXXXXX";
    return ::mkdtemp(tmpl);
}
std::string hostsPath(const std::string& dir) {
    return dir + "/" + store::kHostsFile;
}
std::string asmPath(const std::string& dir) {
    return dir + "/" + store::kAssembliesFile;
}
std::string readFile(const std::string& path) {
    auto r = fs::readFile(path);
    return r.ok() ? *r : std::string("<unreadable>");
}
void writeFile(const std::string& path, const std::string& text) {
    ASSERT_TRUE(fs::writeAtomic(path, text).ok()) << path;
}
bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}
bool exists(const std::string& path) {
    return fs::readFile(path).ok();
}

Model hostModel() {
    Model m;
    model::Host h1;
    h1.name = "h1";
    h1.node = "node:h1";
    h1.fence.agent = "fence_virsh";
    h1.fence.params = {{"ip", "192.0.2.10"},
                       {"plug", "h1"},
                       {"username", "root"},
                       {"password", "s3cret & <x> \"q\""}};
    h1.capacity = {16, 65'536};
    m.hosts["h1"] = h1;
    model::Host h2;
    h2.name = "h2";
    h2.node = "node:rack2-h2";
    h2.state = model::HostState::Maintenance;
    m.hosts["h2"] = h2;
    model::Host h3;
    h3.name = "h3";
    h3.node = "node:h3";
    m.hosts["h3"] = h3;

    model::Assembly a;
    a.name = "a";
    a.host = "h1";
    a.vcpus = 2;
    a.memory_mib = 1024;
    a.image = "/var/lib/libvirt/images/a.qcow2";
    a.networks = {"default", "br-lan"};
    a.outcome = model::AssemblyOutcome::Relocate;
    a.max_relocate = 3;
    a.relocate_period = 600'000;
    m.assemblies["a"] = a;
    model::Assembly b;
    b.name = "b";
    b.hosts = {"h2", "h1"}; // order kept
    b.outcome = model::AssemblyOutcome::Replace;
    m.assemblies["b"] = b;
    model::Assembly c; // any host
    c.name = "c";
    m.assemblies["c"] = c;
    model::Deployable d;
    d.name = "web";
    d.assemblies = {"a", "b", "c"};
    d.spread = false;
    m.deployables["web"] = d;
    return m;
}

} // namespace

TEST(HostsStore, RoundTripKeepsEveryField) {
    auto dir = tempDir();
    const Model m = hostModel();
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    std::vector<Error> warnings;
    auto back = store::loadModel(dir, &warnings);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    for (const auto& w : warnings)
        ADD_FAILURE() << w.describe();
    EXPECT_EQ(back->hosts, m.hosts);
    EXPECT_EQ(back->assemblies, m.assemblies);
    EXPECT_TRUE(*back == m);
    const std::string hosts = readFile(hostsPath(dir));
    EXPECT_TRUE(contains(hosts, "<host name=\"h2\" node=\"node:rack2-h2\" state=\"maintenance\""))
        << hosts;
    EXPECT_TRUE(contains(hosts, "<fence agent=\"fence_virsh\">")) << hosts;
    EXPECT_TRUE(contains(readFile(asmPath(dir)), "hosts=\"h2,h1\""));
    // Same bytes when saved again.
    ASSERT_TRUE(store::saveModel(dir, *back).ok());
    EXPECT_EQ(readFile(hostsPath(dir)), hosts);
}

TEST(HostsStore, NoHostsNoFileAndOldFilesUnchanged) {
    auto dir = tempDir();
    Model m = hostModel();
    m.hosts.clear();
    for (auto& [_, a] : m.assemblies) {
        a.host.clear();
        a.hosts.clear();
    }
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    EXPECT_FALSE(exists(hostsPath(dir)));
    // The default assembly writes none of the new attributes.
    Model plain;
    model::Assembly a;
    a.name = "x";
    plain.assemblies["x"] = a;
    const std::string as = store::formatAssemblies(plain);
    for (const char* attr : {"host=", "hosts=", "vcpus=", "memory_mib=", "outcome=",
                             "max_relocate=", "relocate_period="})
        EXPECT_FALSE(contains(as, attr)) << attr << " in " << as;
}

TEST(HostsStore, PlacementMustNameDefinedHosts) {
    auto dir = tempDir();
    writeFile(hostsPath(dir), "<hosts>\n  <host name=\"h1\"/>\n</hosts>\n");
    const std::string as = "<assemblies>\n  <assembly name=\"a\" host=\"h1\"/>\n"
                           "  <assembly name=\"b\"\n     hosts=\"h1,h9\"/>\n</assemblies>\n";
    writeFile(asmPath(dir), as);
    auto r = store::loadModel(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().file, asmPath(dir));
    EXPECT_EQ(r.error().line, 3) << r.error().describe();
    EXPECT_TRUE(contains(r.error().message, "\"h9\"")) << r.error().message;
    EXPECT_TRUE(contains(r.error().message, "host_add")) << r.error().message;
    EXPECT_EQ(readFile(asmPath(dir)), as);

    // A missing node defaults to node:NAME.
    writeFile(asmPath(dir), "<assemblies><assembly name=\"a\" host=\"h1\"/></assemblies>");
    auto ok = store::loadModel(dir);
    ASSERT_TRUE(ok.ok()) << ok.error().describe();
    EXPECT_EQ(ok->hosts.at("h1").node, "node:h1");
    EXPECT_EQ(ok->hosts.at("h1").state, model::HostState::Up);
}

TEST(HostsStore, CorruptOrInvalidHostFilesNameFileLineAndWhat) {
    struct Case {
        std::string what, text;
        int line;
        std::string mentions;
    };
    const std::vector<Case> cases = {
        {"not well-formed", "<hosts>\n  <host name=\"h1\">\n</hosts>\n", 3, "not well-formed"},
        {"empty file", "", 1, "no root element"},
        {"wrong root", "<assemblies/>\n", 1, "expected <hosts>"},
        {"bad state", "<hosts>\n  <host name=\"h1\"\n        state=\"dead\"/>\n</hosts>\n", 3,
         "state=\"dead\""},
        {"bad node", "<hosts>\n  <host name=\"h1\" node=\"h1\"/>\n</hosts>\n", 2, "node:NAME"},
        {"duplicate", "<hosts>\n<host name=\"h1\"/>\n<host name=\"h1\"/>\n</hosts>\n", 3,
         "defined twice (first at line 2)"},
        {"same node twice",
         "<hosts>\n<host name=\"h1\" node=\"node:x\"/>\n<host name=\"h2\" node=\"node:x\"/>\n"
         "</hosts>\n",
         3, "already the node of host \"h1\""},
        {"agent is a path",
         "<hosts>\n<host name=\"h1\">\n<fence agent=\"/tmp/evil\"/>\n</host>\n</hosts>\n", 2,
         "never a path"},
        {"fence without agent", "<hosts>\n<host name=\"h1\">\n<fence/>\n</host>\n</hosts>\n", 3,
         "agent"},
        {"action param",
         "<hosts>\n<host name=\"h1\">\n<fence agent=\"fence_virsh\">\n"
         "<param name=\"action\" value=\"on\"/>\n</fence>\n</host>\n</hosts>\n",
         2, "\"action\""},
        {"negative capacity", "<hosts>\n<host name=\"h1\" vcpus=\"-1\"/>\n</hosts>\n", 2,
         "vcpus=\"-1\""},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        auto dir = tempDir();
        writeFile(hostsPath(dir), c.text);
        auto r = store::loadModel(dir);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().file, hostsPath(dir)) << r.error().describe();
        EXPECT_EQ(r.error().line, c.line) << r.error().describe();
        EXPECT_TRUE(contains(r.error().message, c.mentions)) << r.error().describe();
        EXPECT_EQ(readFile(hostsPath(dir)), c.text); // loading never writes
        // And a save over a corrupt file is not attempted by loading; nothing lost.
    }
}

TEST(HostsStore, InvalidAssemblyHostFieldsNameTheLine) {
    auto dir = tempDir();
    writeFile(hostsPath(dir), "<hosts><host name=\"h1\"/></hosts>");
    for (const auto& [attr, mentions] : std::vector<std::pair<std::string, std::string>>{
             {"hosts=\"h1,,h2\"", "not a host name"},
             {"hosts=\"h1,h1\"", "listed twice"},
             {"host=\"h1\" hosts=\"h1\"", "not both"},
             {"outcome=\"teleport\"", "relocate"},
             {"max_relocate=\"-2\"", "max_relocate"},
             {"relocate_period=\"0\"", "relocate_period"}}) {
        SCOPED_TRACE(attr);
        const std::string text =
            "<assemblies>\n\n  <assembly name=\"a\" " + attr + "/>\n</assemblies>\n";
        writeFile(asmPath(dir), text);
        auto r = store::loadModel(dir);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().line, 3) << r.error().describe();
        EXPECT_TRUE(contains(r.error().message, mentions)) << r.error().describe();
    }
}

TEST(HostsStore, SaveRefusesDanglingHostReferencesAndWritesNothing) {
    auto dir = tempDir();
    Model m = hostModel();
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    const std::string before = readFile(hostsPath(dir));
    Model bad = m;
    bad.hosts.erase("h1"); // "a" is pinned to it
    auto st = store::saveModel(dir, bad);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(contains(st.error().message, "pinned to host \"h1\"")) << st.error().message;
    EXPECT_EQ(readFile(hostsPath(dir)), before);
}

TEST(HostsStore, MovingAnAssemblyAndRemovingItsHostIsCrashSafeAtEveryStep) {
    Model oldModel = hostModel();
    Model newModel = oldModel;
    newModel.assemblies["a"].host = "h3";
    newModel.assemblies["b"].hosts = {"h2"};
    newModel.hosts.erase("h1");
    for (int crashAt = 0; crashAt < 5; ++crashAt) {
        SCOPED_TRACE("crash before rename #" + std::to_string(crashAt));
        auto dir = tempDir();
        ASSERT_TRUE(store::saveModel(dir, oldModel).ok());
        int n = 0;
        store::SaveOptions crash;
        crash.beforeRename = [&](const std::string&) { return n++ != crashAt; };
        auto st = store::saveModel(dir, newModel, crash);
        auto back = store::loadModel(dir);
        ASSERT_TRUE(back.ok()) << back.error().describe();
        if (crashAt >= 4) {
            EXPECT_TRUE(st.ok());
            EXPECT_EQ(n, 4); // bridge hosts, assemblies, deployables, final hosts
            EXPECT_TRUE(*back == newModel);
        } else {
            EXPECT_FALSE(st.ok());
        }
    }
}

TEST(HostsStore, PcmkcVersionIsKnownAndWrittenBack) {
    auto dir = tempDir();
    writeFile(dir + "/" + store::kDeployablesFile,
              "<deployables pcmkc-version=\"0.6.0\"><deployable name=\"d\"/></deployables>");
    writeFile(asmPath(dir), "<assemblies pcmkc-version=\"0.6.1\"/>");
    std::vector<Error> warnings;
    auto r = store::loadModel(dir, &warnings);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_TRUE(warnings.empty()) << warnings[0].describe();
    EXPECT_EQ(r->pcmkc_version_deployables, "0.6.0");
    EXPECT_EQ(r->pcmkc_version_assemblies, "0.6.1");
    ASSERT_TRUE(store::saveModel(dir, *r).ok());
    EXPECT_TRUE(contains(readFile(dir + "/" + store::kDeployablesFile),
                         "<deployables pcmkc-version=\"0.6.0\">"));
    EXPECT_TRUE(contains(readFile(asmPath(dir)), "<assemblies pcmkc-version=\"0.6.1\""));
}
