#include "store/store.h"

#include "common/fs.h"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <vector>

using namespace pcloud;
using pcloud::model::Model;

namespace {

std::string tempDir() {
    char tmpl[] = "/tmp/pcloud-store-XXXXXX";
    return ::mkdtemp(tmpl);
}

std::string depPath(const std::string& dir) {
    return dir + "/" + store::kDeployablesFile;
}
std::string asmPath(const std::string& dir) {
    return dir + "/" + store::kAssembliesFile;
}

void writeFile(const std::string& path, const std::string& text) {
    ASSERT_TRUE(fs::writeAtomic(path, text).ok()) << path;
}
// Without fsync: for loops that write thousands of small files.
void writeFast(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}
std::string readFile(const std::string& path) {
    auto r = fs::readFile(path);
    return r.ok() ? *r : std::string("<unreadable>");
}
bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

// A model that uses every field, with values away from the defaults.
Model richModel() {
    Model m;
    model::Assembly web;
    web.name = "web1";
    web.uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    web.domain_xml = "<domain type='qemu'>\r\n  <name>web1</name>\n  <!-- a & b < c > d \"q\" -->\n"
                     "  <description>]]> inside CDATA, twice ]]>]]></description>\n"
                     "  <title>caf\xc3\xa9 \xe2\x9c\x93</title>\n</domain>\n";
    web.escalation = {model::kUnlimitedFailures, model::kUnlimitedPeriod};
    web.address = "127.0.0.1:18080";
    web.parked = true;
    model::Resource httpd;
    httpd.name = "httpd";
    httpd.type = "apache2";
    httpd.unit = "apache2.service";
    httpd.monitor_interval = 1'500;
    httpd.escalation = {5, 120'000};
    httpd.params = {{"DocumentRoot", "/srv/www & more <x> \"quoted\" 'single'"},
                    {"multi", "line one\nline two\ttab\r\nend"},
                    {"empty", ""}};
    model::Probe hp;
    hp.port = 8080;
    hp.path = "/healthz?x=1&y=2";
    hp.expect_status = 204;
    hp.interval = 2'000;
    hp.timeout = 500;
    hp.threshold = 2;
    httpd.probe = hp;
    model::Resource db;
    db.name = "db";
    db.type = "";
    db.klass = model::ResourceClass::Lsb;
    db.provider = "pacemaker";
    db.unit = ""; // explicitly empty must stay empty
    db.escalation = {model::kUnlimitedFailures, 60'000};
    model::Probe tp;
    tp.kind = model::ProbeKind::Tcp;
    tp.host = "::1";
    tp.port = 5432;
    db.probe = tp;
    model::Resource sleeper;
    sleeper.name = "sleeper";
    sleeper.type = "dummy";
    sleeper.klass = model::ResourceClass::Process;
    sleeper.unit = "sleep infinity";
    sleeper.escalation = {0, 1};
    web.resources = {httpd, db, sleeper};
    m.assemblies[web.name] = web;

    model::Assembly img;
    img.name = "img.2";
    img.image = "/var/lib/pcloud/images/img2.qcow2";
    m.assemblies[img.name] = img;
    model::Assembly orphan; // in no deployable
    orphan.name = "spare_3";
    m.assemblies[orphan.name] = orphan;

    model::Deployable d;
    d.name = "shop";
    d.uuid = "shop-uuid";
    d.uri = "test:///default";
    d.monitor = model::MonitorMode::Passive;
    d.infrastructure = "libvirt";
    d.username = "ops";
    d.assemblies = {"web1", "img.2"}; // order kept, not sorted
    d.escalation = {model::kUnlimitedFailures, model::kUnlimitedPeriod};
    d.outcome = model::DeployableOutcome::StopDeployable;
    d.backoff = {250, 1.5, 90'000, 600'000};
    d.heartbeat_interval = 500;
    d.heartbeat_timeout = 2'500;
    d.stop_timeout = 90'000;
    d.referee.driver = "haproxy";
    d.referee.socket = "/run/haproxy/admin.sock";
    d.referee.backend = "shop_back";
    d.referee.alias = "";
    m.deployables[d.name] = d;

    model::Deployable plain;
    plain.name = "plain";
    m.deployables[plain.name] = plain;
    return m;
}

Model smallModel(std::vector<std::string> assemblies) {
    Model m;
    model::Deployable d;
    d.name = "dep";
    for (const auto& a : assemblies) {
        model::Assembly as;
        as.name = a;
        model::Resource r;
        r.name = "svc";
        r.unit = a + ".service";
        as.resources.push_back(r);
        m.assemblies[a] = as;
        d.assemblies.push_back(a);
    }
    m.deployables[d.name] = d;
    return m;
}

} // namespace

TEST(Store, RoundTripKeepsEveryField) {
    auto dir = tempDir();
    Model m = richModel();
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    std::vector<Error> warnings;
    auto back = store::loadModel(dir, &warnings);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_TRUE(warnings.empty());
    EXPECT_EQ(back->assemblies.at("web1").domain_xml, m.assemblies.at("web1").domain_xml);
    EXPECT_EQ(back->assemblies.at("web1").resources, m.assemblies.at("web1").resources);
    EXPECT_EQ(back->deployables.at("shop"), m.deployables.at("shop"));
    EXPECT_TRUE(*back == m);

    // Saving what was loaded gives the same bytes (stable, deterministic output).
    const std::string dep1 = readFile(depPath(dir)), asm1 = readFile(asmPath(dir));
    ASSERT_TRUE(store::saveModel(dir, *back).ok());
    EXPECT_EQ(readFile(depPath(dir)), dep1);
    EXPECT_EQ(readFile(asmPath(dir)), asm1);
}

TEST(Store, UnlimitedIsWrittenAsInfinity) {
    Model m = richModel();
    const std::string dep = store::formatDeployables(m);
    const std::string as = store::formatAssemblies(m);
    EXPECT_TRUE(contains(dep, "escalation_failures=\"INFINITY\" escalation_period=\"INFINITY\""));
    EXPECT_TRUE(contains(as, "escalation_failures=\"INFINITY\" escalation_period=\"INFINITY\""));
    EXPECT_TRUE(contains(as, "<![CDATA[<domain type='qemu'>"));
    EXPECT_TRUE(contains(dep, "<assembly name=\"web1\" />") ||
                contains(dep, "<assembly name=\"web1\"/>"));
}

TEST(Store, MissingStateDirOrFilesReadAsEmpty) {
    auto missing = store::loadModel("/nonexistent/pcloud/state");
    ASSERT_TRUE(missing.ok()) << missing.error().describe();
    EXPECT_TRUE(missing->deployables.empty());
    EXPECT_TRUE(missing->assemblies.empty());

    auto dir = tempDir();
    writeFile(asmPath(dir), "<assemblies><assembly name=\"a\"/></assemblies>");
    auto onlyAssemblies = store::loadModel(dir);
    ASSERT_TRUE(onlyAssemblies.ok()) << onlyAssemblies.error().describe();
    EXPECT_EQ(onlyAssemblies->assemblies.size(), 1u);
    EXPECT_TRUE(onlyAssemblies->deployables.empty());
}

TEST(Store, SaveCreatesTheStateDir) {
    auto dir = tempDir() + "/a/b/state";
    ASSERT_TRUE(store::saveModel(dir, smallModel({"x"})).ok());
    auto back = store::loadModel(dir);
    ASSERT_TRUE(back.ok());
    EXPECT_TRUE(*back == smallModel({"x"}));
}

TEST(Store, CrashBeforeFirstRenameLeavesOldFilesIntact) {
    auto dir = tempDir();
    Model oldModel = smallModel({"a", "b"});
    ASSERT_TRUE(store::saveModel(dir, oldModel).ok());
    const std::string dep = readFile(depPath(dir)), as = readFile(asmPath(dir));

    store::SaveOptions crash;
    crash.beforeRename = [](const std::string&) { return false; };
    EXPECT_FALSE(store::saveModel(dir, richModel(), crash).ok());
    EXPECT_EQ(readFile(depPath(dir)), dep);
    EXPECT_EQ(readFile(asmPath(dir)), as);
    auto back = store::loadModel(dir);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_TRUE(*back == oldModel);
}

TEST(Store, CrashBetweenTheTwoFilesStillLoads) {
    auto dir = tempDir();
    ASSERT_TRUE(store::saveModel(dir, smallModel({"a"})).ok());
    Model next = smallModel({"a", "b"});
    next.assemblies["a"].escalation.failures = 9;

    std::vector<std::string> renames;
    store::SaveOptions crash;
    crash.beforeRename = [&](const std::string& path) {
        renames.push_back(path);
        return path != depPath(dir); // die before the deployables file is replaced
    };
    EXPECT_FALSE(store::saveModel(dir, next, crash).ok());
    ASSERT_EQ(renames.size(), 2u);
    EXPECT_EQ(renames[0], asmPath(dir)); // assemblies first

    auto back = store::loadModel(dir);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    // Old deployables, new assemblies: "b" exists but is not in the deployable yet.
    EXPECT_EQ(back->deployables.at("dep").assemblies, std::vector<std::string>{"a"});
    EXPECT_EQ(back->assemblies.at("a").escalation.failures, 9);
    EXPECT_TRUE(back->assemblies.count("b"));
}

TEST(Store, RemovingAnAssemblyIsCrashSafeAtEveryStep) {
    const Model oldModel = smallModel({"a", "b"});
    const Model newModel = smallModel({"a"});
    for (int crashAt = 0; crashAt < 4; ++crashAt) {
        SCOPED_TRACE("crash before rename #" + std::to_string(crashAt));
        auto dir = tempDir();
        ASSERT_TRUE(store::saveModel(dir, oldModel).ok());
        int n = 0;
        store::SaveOptions crash;
        crash.beforeRename = [&](const std::string&) { return n++ != crashAt; };
        auto st = store::saveModel(dir, newModel, crash);
        auto back = store::loadModel(dir);
        ASSERT_TRUE(back.ok()) << back.error().describe();
        if (crashAt >= 3) {
            EXPECT_TRUE(st.ok());
            EXPECT_EQ(n, 3); // bridge assemblies, deployables, final assemblies
            EXPECT_TRUE(*back == newModel);
            EXPECT_FALSE(contains(readFile(asmPath(dir)), "name=\"b\""));
        } else {
            EXPECT_FALSE(st.ok());
        }
    }
}

TEST(Store, NotWellFormedFileIsRejectedWithLineAndLeftAlone) {
    auto dir = tempDir();
    const std::string bad = "<?xml version=\"1.0\"?>\n"
                            "<assemblies>\n"
                            "  <assembly name=\"a\">\n"
                            "    <resources>\n"
                            "  </assembly>\n"
                            "</assemblies>\n";
    writeFile(asmPath(dir), bad);
    auto r = store::loadModel(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().file, asmPath(dir));
    EXPECT_EQ(r.error().line, 5);
    EXPECT_TRUE(contains(r.error().describe(), asmPath(dir) + ":5:")) << r.error().describe();
    EXPECT_TRUE(contains(r.error().message, "not well-formed")) << r.error().message;
    EXPECT_EQ(readFile(asmPath(dir)), bad);
}

// Regression (fuzz_store_xml): a byte that is not UTF-8 loaded into the model as is, and
// cped threw when it put the string into a JSON reply. Now the load fails naming the line;
// a file that declares Latin-1 is converted and loads.
TEST(Store, BytesThatAreNotUtf8AreRejectedWithLine) {
    auto bad = store::parseModel(
        "<deployables>\n  <deployable name=\"d\" uri=\"qemu:///caf\xe9\"/>\n</deployables>\n",
        "/s/db_deployable.xml", std::nullopt, "/s/db_assemblies.xml");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().file, "/s/db_deployable.xml");
    EXPECT_EQ(bad.error().line, 2);
    EXPECT_TRUE(contains(bad.error().message, "not valid UTF-8 (byte 54)")) << bad.error().message;

    auto latin1 = store::parseModel("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n"
                                    "<deployables><deployable name=\"d\" uri=\"qemu:///caf\xe9\"/>"
                                    "</deployables>\n",
                                    "d.xml", std::nullopt, "a.xml");
    ASSERT_TRUE(latin1.ok()) << latin1.error().describe();
    EXPECT_EQ(latin1->deployables.at("d").uri, "qemu:///caf\xc3\xa9");
}

TEST(Store, EmptyFileIsAnErrorNotAnEmptyModel) {
    auto dir = tempDir();
    writeFile(depPath(dir), "");
    auto r = store::loadModel(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().file, depPath(dir));
    EXPECT_TRUE(contains(r.error().message, "truncated")) << r.error().message;
    EXPECT_EQ(readFile(depPath(dir)), "");
}

namespace {

struct InvalidCase {
    const char* what;
    bool inDeployables; // which file holds the mistake
    std::string deployables;
    std::string assemblies;
    int line;
    std::string mentions; // the attribute/value the message must name
};

const std::string kAsmOk = "<assemblies>\n  <assembly name=\"a\"/>\n</assemblies>\n";
const std::string kDepOk =
    "<deployables>\n  <deployable name=\"d\"><assembly name=\"a\"/></deployable>\n</deployables>\n";

std::vector<InvalidCase> invalidCases() {
    return {
        {"unknown monitor", true,
         "<deployables>\n  <deployable name=\"d\" monitor=\"actve\"/>\n</deployables>\n", kAsmOk, 2,
         "monitor=\"actve\""},
        {"negative failures", false, kDepOk,
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n"
         "      <resource name=\"r\" escalation_failures=\"-2\"/>\n    </resources>\n  "
         "</assembly>\n</assemblies>\n",
         4, "escalation_failures=\"-2\""},
        {"unknown assembly", true,
         "<deployables>\n  <deployable name=\"d\">\n    <assembly name=\"ghost\"/>\n  "
         "</deployable>\n</deployables>\n",
         kAsmOk, 3, "\"ghost\""},
        {"duplicate deployable", true,
         "<deployables>\n  <deployable name=\"d\"/>\n  <deployable name=\"d\"/>\n</deployables>\n",
         kAsmOk, 3, "defined twice"},
        {"duplicate assembly", false, "",
         "<assemblies>\n  <assembly name=\"a\"/>\n\n  <assembly name=\"a\"/>\n</assemblies>\n", 4,
         "first at line 2"},
        {"duplicate resource", false, "",
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n      <resource name=\"r\"/>\n"
         "      <resource name=\"r\"/>\n    </resources>\n  </assembly>\n</assemblies>\n",
         5, "resource \"r\""},
        {"invalid name", false, "",
         "<assemblies>\n  <assembly name=\"bad name\"/>\n</assemblies>\n", 2, "name=\"bad name\""},
        {"bad duration", false, "",
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n"
         "      <resource name=\"r\" monitor_interval=\"10 parsecs\"/>\n    </resources>\n  "
         "</assembly>\n</assemblies>\n",
         4, "monitor_interval=\"10 parsecs\""},
        {"attribute on a later line of a multi-line element", false, "",
         "<assemblies>\n  <assembly name=\"a\"\n            uuid=\"u\"\n            "
         "escalation_period=\"soon\"/>\n</assemblies>\n",
         4, "escalation_period=\"soon\""},
        {"unknown class", false, "",
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n"
         "      <resource name=\"r\" type=\"x\" class=\"ocf\"/>\n    </resources>\n  "
         "</assembly>\n</assemblies>\n",
         4, "class=\"ocf\""},
        {"heartbeat timeout below interval", true,
         "<deployables>\n  <deployable name=\"d\" heartbeat_interval=\"5s\" "
         "heartbeat_timeout=\"1s\"/>\n</deployables>\n",
         kAsmOk, 2, "heartbeat_timeout"},
        {"zero stop timeout", true,
         "<deployables>\n  <deployable name=\"d\"\n              stop_timeout=\"0s\"/>\n"
         "</deployables>\n",
         kAsmOk, 3, "stop_timeout=\"0s\""},
        {"bad stop timeout", true,
         "<deployables>\n  <deployable name=\"d\" stop_timeout=\"INFINITY\"/>\n</deployables>\n",
         kAsmOk, 2, "stop_timeout=\"INFINITY\""},
        {"assembly in two deployables", true,
         "<deployables>\n  <deployable name=\"d\"><assembly name=\"a\"/></deployable>\n"
         "  <deployable name=\"e\">\n    <assembly name=\"a\"/>\n  </deployable>\n</deployables>\n",
         kAsmOk, 4, "already belongs to deployable \"d\""},
        {"probe port out of range", false, "",
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n      <resource name=\"r\">\n"
         "        <probe kind=\"tcp\" port=\"70000\"/>\n      </resource>\n    </resources>\n  "
         "</assembly>\n</assemblies>\n",
         5, "port=\"70000\""},
        {"wrong root element", true, "<assemblies/>\n", kAsmOk, 1, "expected <deployables>"},
        {"INFINITY where not allowed", false, "",
         "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n"
         "      <resource name=\"r\" monitor_interval=\"INFINITY\"/>\n    </resources>\n  "
         "</assembly>\n</assemblies>\n",
         4, "monitor_interval=\"INFINITY\""},
    };
}

} // namespace

TEST(Store, InvalidFilesNameFileLineAndAttributeAndAreLeftAlone) {
    for (const auto& c : invalidCases()) {
        SCOPED_TRACE(c.what);
        auto dir = tempDir();
        if (!c.deployables.empty())
            writeFile(depPath(dir), c.deployables);
        if (!c.assemblies.empty())
            writeFile(asmPath(dir), c.assemblies);
        auto r = store::loadModel(dir);
        ASSERT_FALSE(r.ok());
        const std::string file = c.inDeployables ? depPath(dir) : asmPath(dir);
        const std::string d = r.error().describe();
        EXPECT_EQ(r.error().file, file) << d;
        EXPECT_EQ(r.error().line, c.line) << d;
        EXPECT_TRUE(contains(d, file + ":" + std::to_string(c.line) + ": ")) << d;
        EXPECT_TRUE(contains(d, c.mentions)) << d;
        if (!c.deployables.empty()) {
            EXPECT_EQ(readFile(depPath(dir)), c.deployables);
        }
        if (!c.assemblies.empty()) {
            EXPECT_EQ(readFile(asmPath(dir)), c.assemblies);
        }
    }
}

TEST(Store, ErrorsSuggestAFix) {
    auto dir = tempDir();
    writeFile(depPath(dir),
              "<deployables>\n  <deployable name=\"d\" monitor=\"actve\"/>\n</deployables>\n");
    auto r = store::loadModel(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error().message, "monitor=\"active\"")) << r.error().message;
    EXPECT_TRUE(contains(r.error().message, "passive")) << r.error().message;
}

TEST(Store, UnknownAttributesAreWarningsWithFileAndLine) {
    auto dir = tempDir();
    writeFile(asmPath(dir), "<assemblies>\n  <assembly name=\"a\">\n    <resources>\n"
                            "      <resource name=\"r\"\n                colour=\"red\"/>\n"
                            "    </resources>\n    <sidecar/>\n  </assembly>\n</assemblies>\n");
    std::vector<Error> warnings;
    auto r = store::loadModel(dir, &warnings);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    ASSERT_EQ(warnings.size(), 2u);
    EXPECT_EQ(warnings[0].file, asmPath(dir));
    EXPECT_EQ(warnings[0].line, 5);
    EXPECT_TRUE(contains(warnings[0].message, "colour=\"red\""));
    EXPECT_EQ(warnings[1].line, 7);
    EXPECT_TRUE(contains(warnings[1].message, "<sidecar>"));
}

TEST(Store, PacemakerCloud2012FilesLoad) {
    const std::string dir = std::string(PCLOUD_STORE_TEST_DATA) + "/pcmkcloud";
    const std::string depBefore = readFile(depPath(dir)), asmBefore = readFile(asmPath(dir));
    std::vector<Error> warnings;
    auto r = store::loadModel(dir, &warnings);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    for (const auto& w : warnings)
        ADD_FAILURE() << "unexpected warning: " << w.describe();

    ASSERT_EQ(r->deployables.size(), 2u);
    const auto& dep1 = r->deployables.at("dep1");
    EXPECT_EQ(dep1.infrastructure, "aeolus");
    EXPECT_EQ(dep1.username, "root");
    EXPECT_EQ(dep1.monitor, model::MonitorMode::Active);
    EXPECT_EQ(dep1.uri, "qemu:///system"); // pcloud default for a field 2012 did not have
    EXPECT_EQ(dep1.assemblies, (std::vector<std::string>{"F16-cluster-1", "F16-cluster-2"}));
    EXPECT_EQ(r->deployables.at("dep2").monitor, model::MonitorMode::Passive);
    EXPECT_EQ(r->deployables.at("dep2").username, "sdake");

    ASSERT_EQ(r->assemblies.size(), 3u);
    const auto& a1 = r->assemblies.at("F16-cluster-1");
    EXPECT_EQ(a1.uuid, "5d1f0c2e9a7b4c1f8e6d3b2a19081726");
    EXPECT_EQ(a1.image, "/var/lib/libvirt/images/F16-cluster-1.qcow2");
    EXPECT_EQ(a1.escalation.failures, model::kUnlimitedFailures);
    EXPECT_EQ(a1.escalation.period, model::kUnlimitedPeriod);
    ASSERT_EQ(a1.resources.size(), 1u);
    const auto& web = a1.resources[0];
    EXPECT_EQ(web.name, "web");
    EXPECT_EQ(web.type, "httpd");
    EXPECT_EQ(web.klass, model::ResourceClass::Lsb);
    EXPECT_EQ(web.provider, "pacemaker");
    EXPECT_EQ(web.unit, "httpd"); // an lsb script named by type
    EXPECT_EQ(web.monitor_interval, 65'000);
    EXPECT_EQ(web.escalation, (model::Escalation{3, 3'600'000})); // bare seconds

    const auto& a2 = r->assemblies.at("F16-cluster-2");
    EXPECT_EQ(a2.escalation, (model::Escalation{5, 120'000}));
    ASSERT_EQ(a2.resources.size(), 2u);
    EXPECT_EQ(a2.resources[0].monitor_interval, 30'000);
    EXPECT_EQ(a2.resources[0].escalation.failures, model::kUnlimitedFailures);
    EXPECT_EQ(a2.resources[0].escalation.period, 60'000);
    EXPECT_EQ(a2.resources[1].unit, "sshd.service"); // systemd unit derived from type
    EXPECT_EQ(a2.resources[1].escalation, model::Escalation{});
    EXPECT_TRUE(r->assemblies.at("U10-spare").resources.empty());
    EXPECT_EQ(r->pcmkc_version_deployables, "0.6.0"); // known, not an unknown attribute
    EXPECT_EQ(r->pcmkc_version_assemblies, "0.6.0");

    // Loading never writes; saving the upgraded model elsewhere reads back the same.
    EXPECT_EQ(readFile(depPath(dir)), depBefore);
    EXPECT_EQ(readFile(asmPath(dir)), asmBefore);
    auto out = tempDir();
    ASSERT_TRUE(store::saveModel(out, *r).ok());
    auto again = store::loadModel(out);
    ASSERT_TRUE(again.ok()) << again.error().describe();
    EXPECT_TRUE(*again == *r);
}

TEST(Store, TruncatedFilesAlwaysFailWithTheFileName) {
    Model m = richModel();
    const std::string full[2] = {store::formatDeployables(m), store::formatAssemblies(m)};
    const char* closing[2] = {"</deployables>", "</assemblies>"};
    auto dir = tempDir();
    for (int which = 0; which < 2; ++which) {
        const std::string& text = full[which];
        const std::string path = which == 0 ? depPath(dir) : asmPath(dir);
        const std::string other = which == 0 ? asmPath(dir) : depPath(dir);
        const size_t end = text.rfind(closing[which]);
        ASSERT_NE(end, std::string::npos);
        writeFile(other, full[1 - which]);
        int failures = 0;
        // Every prefix that stops before the root element is closed.
        for (size_t len = 0; len < end + std::string(closing[which]).size(); ++len) {
            const std::string prefix = text.substr(0, len);
            writeFast(path, prefix);
            auto r = store::loadModel(dir);
            if (r.ok()) {
                ADD_FAILURE() << "prefix of " << len << " bytes loaded";
                continue;
            }
            ++failures;
            if (!contains(r.error().describe(), path))
                ADD_FAILURE() << r.error().describe();
        }
        EXPECT_GT(failures, 100);
        writeFile(path, text);
    }
    auto whole = store::loadModel(dir);
    ASSERT_TRUE(whole.ok()) << whole.error().describe();
    EXPECT_TRUE(*whole == m);
}

TEST(Store, SaveRefusesAnInvalidModelAndWritesNothing) {
    auto dir = tempDir();
    Model good = smallModel({"a"});
    ASSERT_TRUE(store::saveModel(dir, good).ok());
    const std::string dep = readFile(depPath(dir)), as = readFile(asmPath(dir));

    Model badRef = good;
    badRef.deployables["dep"].assemblies.push_back("ghost");
    auto st = store::saveModel(dir, badRef);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(contains(st.error().message, "ghost")) << st.error().message;

    Model badName = good;
    badName.assemblies["a"].resources[0].name = "no spaces";
    EXPECT_FALSE(store::saveModel(dir, badName).ok());

    Model nul = good;
    nul.assemblies["a"].domain_xml = std::string("<domain>\0</domain>", 18);
    st = store::saveModel(dir, nul);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(contains(st.error().message, "faithfully")) << st.error().message;

    Model control = good;
    control.assemblies["a"].resources[0].params["x"] = "bell\x07";
    EXPECT_FALSE(store::saveModel(dir, control).ok());

    EXPECT_EQ(readFile(depPath(dir)), dep);
    EXPECT_EQ(readFile(asmPath(dir)), as);
}

TEST(Store, DomainMayBePastedAsAnElement) {
    auto dir = tempDir();
    writeFile(asmPath(dir),
              "<assemblies>\n  <assembly name=\"a\">\n    <domain><domain type=\"qemu\">"
              "<name>a</name></domain></domain>\n  </assembly>\n</assemblies>\n");
    auto r = store::loadModel(dir);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->assemblies.at("a").domain_xml, "<domain type=\"qemu\"><name>a</name></domain>");
}

TEST(Store, NginxRefereeSettingsRoundTrip) {
    auto dir = tempDir();
    Model m = smallModel({"x"});
    auto& r = m.deployables.at("dep").referee;
    r.driver = "nginx";
    r.config_file = "/etc/nginx/pcloud-web.conf";
    r.upstream = "web";
    ASSERT_TRUE(store::saveModel(dir, m).ok());
    const std::string dep = readFile(depPath(dir));
    EXPECT_TRUE(contains(dep, "upstream=\"web\"")) << dep;
    EXPECT_FALSE(contains(dep, "nginx=")) << dep; // the command is host configuration
    std::vector<Error> warnings;
    auto back = store::loadModel(dir, &warnings);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_TRUE(warnings.empty());
    EXPECT_EQ(back->deployables.at("dep").referee, r);
}

// issue 10 item 7: files from before the host configuration held the balancer command.
// They still load, with a warning per setting naming it, and the command is ignored (it
// now comes only from pcloud.conf) and not saved back.
TEST(Store, OldFreeFormCommandSettingsLoadWithAWarningAndAreIgnored) {
    auto dir = tempDir();
    writeFile(depPath(dir),
              "<deployables>\n  <deployable name=\"web\">\n"
              "    <referee driver=\"apache\" socket=\"\" backend=\"\" "
              "config_file=\"/etc/apache2/pcloud-web.conf\" cluster=\"web\" alias=\"/\" "
              "apachectl=\"sh -c 'touch /tmp/owned'\"/>\n  </deployable>\n"
              "  <deployable name=\"shop\">\n"
              "    <referee driver=\"nginx\" config_file=\"/etc/nginx/pcloud-shop.conf\" "
              "upstream=\"shop\" nginx=\"nginx -c /srv/shop/nginx.conf\"/>\n"
              "  </deployable>\n</deployables>\n");
    std::vector<Error> warnings;
    auto back = store::loadModel(dir, &warnings);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    ASSERT_EQ(warnings.size(), 2u);
    EXPECT_EQ(warnings[0].line, 3);
    EXPECT_NE(warnings[0].describe().find("apachectl=\"sh -c 'touch /tmp/owned'\" is ignored"),
              std::string::npos)
        << warnings[0].describe();
    EXPECT_NE(warnings[0].describe().find("host configuration (/etc/pcloud/pcloud.conf"),
              std::string::npos)
        << warnings[0].describe();
    EXPECT_EQ(warnings[1].line, 6);
    EXPECT_NE(warnings[1].describe().find("nginx=\"nginx -c /srv/shop/nginx.conf\" is ignored"),
              std::string::npos)
        << warnings[1].describe();
    EXPECT_EQ(back->deployables.at("web").referee.driver, "apache");
    EXPECT_EQ(back->deployables.at("shop").referee.upstream, "shop");
    // Saving drops them: the next load is clean.
    ASSERT_TRUE(store::saveModel(dir, *back).ok());
    EXPECT_FALSE(contains(readFile(depPath(dir)), "apachectl="));
    EXPECT_FALSE(contains(readFile(depPath(dir)), "nginx="));
    warnings.clear();
    ASSERT_TRUE(store::loadModel(dir, &warnings).ok());
    EXPECT_TRUE(warnings.empty());
}
