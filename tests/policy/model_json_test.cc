#include "model/model_json.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::model;
using nlohmann::json;

static Model sample() {
    Model m;
    Assembly a;
    a.name = "node01";
    a.uuid = "u1";
    a.domain_xml = "<domain/>";
    a.escalation = {kUnlimitedFailures, kUnlimitedPeriod};
    Resource r;
    r.name = "httpd";
    r.type = "apache2";
    r.unit = "apache2.service";
    r.escalation = {5, 90'000};
    r.params["port"] = "80";
    Probe p;
    p.kind = ProbeKind::Tcp;
    p.port = 8080;
    r.probe = p;
    a.resources.push_back(r);
    a.parked = true;
    m.assemblies["node01"] = a;
    Deployable d;
    d.name = "web";
    d.assemblies = {"node01"};
    d.monitor = MonitorMode::Passive;
    d.outcome = DeployableOutcome::StopDeployable;
    d.backoff = {500, 1.5, 10'000, 30'000};
    d.referee.driver = "haproxy";
    d.referee.backend = "web";
    m.deployables["web"] = d;
    return m;
}

TEST(ModelJson, RoundTrips) {
    Model m = sample();
    auto back = modelFromJson(json::parse(toJson(m).dump()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, m);
}

TEST(ModelJson, WritesInfinity) {
    json j = toJson(Escalation{kUnlimitedFailures, kUnlimitedPeriod});
    EXPECT_EQ(j["failures"], "INFINITY");
    EXPECT_EQ(j["period"], "INFINITY");
}

TEST(ModelJson, DurationsAsStringsOrMilliseconds) {
    auto e = escalationFromJson(json{{"failures", 2}, {"period", 1500}});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->period, 1500);
    e = escalationFromJson(json{{"period", "2m"}});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->period, 120'000);
    EXPECT_EQ(e->failures, 3); // default kept
}

static std::string errorOf(const json& j) {
    auto m = modelFromJson(j);
    return m.ok() ? "" : m.error().message;
}

TEST(ModelJson, BadFailuresNamesThePath) {
    json j = {{"assemblies",
               {{"node01",
                 {{"resources", {{{"name", "httpd"}, {"escalation", {{"failures", "x"}}}}}}}}}}};
    EXPECT_EQ(
        errorOf(j),
        "assemblies.node01.resources[0].escalation.failures: expected an integer or INFINITY");
}

TEST(ModelJson, RejectsBadInput) {
    EXPECT_NE(errorOf(json::array()).find("expected an object"), std::string::npos);
    EXPECT_NE(errorOf(json{{"assemblies", {{"n", {{"escalation", {{"period", "5 parsecs"}}}}}}}})
                  .find("assemblies.n.escalation.period: expected a duration"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"assemblies", {{"n", {{"parkd", true}}}}}})
                  .find("assemblies.n.parkd: unknown key"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"assemblies", {"ghost"}}}}}}})
                  .find("deployables.web.assemblies[0]: unknown assembly 'ghost'"),
              std::string::npos);
    EXPECT_NE(
        errorOf(json{{"assemblies", {{"bad name", json::object()}}}}).find("invalid assembly name"),
        std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"monitor", "sometimes"}}}}}})
                  .find("deployables.web.monitor"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"heartbeat_timeout", "1s"}}}}}})
                  .find("single missed heartbeat"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"stop_timeout", "0s"}}}}}})
                  .find("deployables.web.stop_timeout: must be greater than 0"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"stop_timeout", "soon"}}}}}})
                  .find("deployables.web.stop_timeout"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"deployables", {{"web", {{"backoff", {{"factor", 0.5}}}}}}}})
                  .find("deployables.web.backoff.factor"),
              std::string::npos);
    EXPECT_NE(errorOf(json{{"assemblies", {{"n", {{"escalation", {{"failures", -2}}}}}}}})
                  .find("expected an integer or INFINITY"),
              std::string::npos);
    EXPECT_NE(
        errorOf(json{{"assemblies", {{"n", {{"resources", {{{"name", "a"}}, {{"name", "a"}}}}}}}}})
            .find("duplicate resource 'a'"),
        std::string::npos);
}

TEST(ModelJson, AssemblyInTwoDeployablesIsAnError) {
    json j = {{"assemblies", {{"n", json::object()}}},
              {"deployables", {{"a", {{"assemblies", {"n"}}}}, {"b", {{"assemblies", {"n"}}}}}}};
    EXPECT_NE(errorOf(j).find("already belongs to deployable 'a'"), std::string::npos);
}
