// The zone's model snapshot (cped/zone_model.h): what a leader writes to etcd reads back as
// the same model and desired state, and a snapshot that is not one is refused naming the key
// and what is wrong, down to the file and line the store names.
#include "cped/zone_model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace pcloud;
using namespace pcloud::cped;
using nlohmann::json;

namespace {

const std::string kWhere = "etcd /pcloud/model/snapshot";

model::Model webModel() {
    model::Model m;
    model::Assembly a;
    a.name = "n1";
    a.domain_xml = "<domain type='test'><name>n1</name></domain>";
    a.address = "10.0.0.5:80";
    m.assemblies["n1"] = a;
    model::Deployable d;
    d.name = "web";
    d.uri = "test:///default";
    d.assemblies = {"n1"};
    m.deployables["web"] = d;
    return m;
}

DesiredState started(const std::string& d) {
    DesiredState s;
    s.setStarted(d, true);
    return s;
}

TEST(ZoneModel, ASnapshotReadsBackAsTheSameModelAndDesiredState) {
    const auto files = zoneModelFiles(webModel(), started("web"));
    auto text = formatZoneModel(files, 7, 42, "h1");
    ASSERT_TRUE(text.ok()) << text.error().message;
    auto z = parseZoneModel(*text, kWhere);
    ASSERT_TRUE(z.ok()) << z.error().describe();
    EXPECT_EQ(z->generation, 7u);
    EXPECT_EQ(z->epoch, 42);
    EXPECT_EQ(z->writer, "h1");
    EXPECT_EQ(z->model, webModel());
    EXPECT_TRUE(z->desired.started("web"));
    EXPECT_EQ(zoneModelFiles(z->model, z->desired), files);
}

TEST(ZoneModel, TheFilesTextChangesWithTheContentOnly) {
    const auto a = zoneModelFiles(webModel(), started("web"));
    EXPECT_EQ(zoneModelFiles(webModel(), started("web")), a);
    EXPECT_NE(zoneModelFiles(webModel(), DesiredState{}), a);
    auto m = webModel();
    m.deployables["web"].uri = "qemu:///system";
    EXPECT_NE(zoneModelFiles(m, started("web")), a);
    // No host, no db_hosts.xml (as in a single host's state dir).
    EXPECT_FALSE(json::parse(a).contains("db_hosts.xml"));
}

TEST(ZoneModel, AModelTooLargeForOneEtcdValueIsAnError) {
    auto m = webModel();
    m.assemblies["n1"].domain_xml = "<domain>" + std::string(kZoneModelMaxBytes, 'x') + "</domain>";
    auto text = formatZoneModel(zoneModelFiles(m, {}), 1, 1, "h1");
    ASSERT_FALSE(text.ok());
    EXPECT_NE(text.error().message.find("more than the 1048576 a zone keeps"), std::string::npos)
        << text.error().message;
}

std::string withFiles(const json& files) {
    return json({{"v", 1}, {"generation", 1}, {"epoch", 2}, {"writer", "h1"}, {"files", files}})
        .dump();
}

TEST(ZoneModel, BadSnapshotsAreRefusedNamingTheKeyAndWhatIsWrong) {
    const std::string good = *formatZoneModel(zoneModelFiles(webModel(), {}), 1, 2, "h1");
    auto goodJson = json::parse(good);
    struct Case {
        std::string text;
        std::string expect;
    };
    auto without = [&](const char* k) {
        json j = goodJson;
        j.erase(k);
        return j.dump();
    };
    auto with = [&](const char* k, json v) {
        json j = goodJson;
        j[k] = std::move(v);
        return j.dump();
    };
    const std::vector<Case> cases = {
        {"", kWhere + ": not a JSON object"},
        {"[1,2]", kWhere + ": not a JSON object"},
        {with("v", 2), kWhere + ": unknown snapshot version 2"},
        {without("v"), kWhere + ": unknown snapshot version (none)"},
        {without("generation"), kWhere + ": \"generation\" is missing"},
        {with("epoch", -1), kWhere + ": \"epoch\" is missing or not a non-negative integer"},
        {with("writer", 5), kWhere + ": \"writer\" is missing or not a string"},
        {with("files", "x"), kWhere + ": \"files\" is missing or not an object"},
        {withFiles({{"passwd", "x"}}), kWhere + ": unknown file \"passwd\" in \"files\""},
        {withFiles({{"db_deployable.xml", 3}}), kWhere + ": \"db_deployable.xml\" is not a string"},
        {withFiles({{"desired.json", "[]"}}), kWhere + ": desired.json: not a JSON object"},
        // A deployable naming an assembly the snapshot does not hold: the store's own error,
        // with the file and line.
        {withFiles({{"db_deployable.xml",
                     "<deployables>\n<deployable name=\"web\">\n<assembly name=\"gone\"/>\n"
                     "</deployable>\n</deployables>\n"}}),
         kWhere + ": db_deployable.xml:3:"},
        {withFiles({{"db_assemblies.xml", "<assemblies><assembly"}}),
         kWhere + ": db_assemblies.xml:"},
    };
    for (const auto& c : cases) {
        auto z = parseZoneModel(c.text, kWhere);
        ASSERT_FALSE(z.ok()) << c.text;
        EXPECT_EQ(z.error().describe().rfind(c.expect, 0), 0u)
            << "got: " << z.error().describe() << "\nexpected it to start with: " << c.expect;
    }
}

} // namespace
