// The host layer's pure parts that golden cases do not pin down on their own: placement
// ranking, and the codecs (model JSON with hosts, HostLayerState through JSON).
#include "model/model_json.h"
#include "policy/hosts.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::policy::hosts;
using model::HostState;
using nlohmann::json;

namespace {

model::Model threeHosts() {
    model::Model m;
    for (const char* n : {"h1", "h2", "h3"}) {
        model::Host h;
        h.name = n;
        h.node = std::string("node:") + n;
        h.capacity = {4, 4096};
        m.hosts[n] = h;
    }
    model::Deployable d;
    d.name = "web";
    for (const char* n : {"a", "b", "c"}) {
        model::Assembly a;
        a.name = n;
        a.vcpus = 2;
        a.memory_mib = 1024;
        m.assemblies[n] = a;
        d.assemblies.push_back(n);
    }
    m.deployables["web"] = d;
    model::Assembly other; // another deployable's
    other.name = "x";
    m.assemblies["x"] = other;
    return m;
}

} // namespace

TEST(HostPlacement, SpreadsTheDeployableThenFewestThenName) {
    auto m = threeHosts();
    std::map<std::string, HostState> up;
    // h1 has a (same deployable); h2 has x (another one): spread prefers h2 and h3,
    // h3 has fewer assemblies than h2.
    auto r = placeAssembly(m, "b", {{"a", "h1"}, {"x", "h2"}}, up);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, "h3");
    // Spread off: fewest assemblies, then name: h3 again (0), and with x on h3 it is h2.
    m.deployables["web"].spread = false;
    EXPECT_EQ(*placeAssembly(m, "b", {{"a", "h1"}, {"x", "h3"}}, up), "h2");
    m.deployables["web"].spread = true;
    // Capacity: h1 full (2 x 2 vcpus), h2, h3 not up.
    up = {{"h2", HostState::Maintenance}, {"h3", HostState::Fenced}};
    auto none = placeAssembly(m, "c", {{"a", "h1"}, {"b", "h1"}}, up);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().message,
              "no host can take c: h1 has no room (4+2 of 4 vcpus); h2 is in maintenance; h3 is "
              "fenced");
    // Pinned and allowed sets.
    up.clear();
    m.assemblies["c"].host = "h2";
    EXPECT_EQ(*placeAssembly(m, "c", {}, up), "h2");
    EXPECT_FALSE(placeAssembly(m, "c", {}, up, {"h2"}).ok());
    m.assemblies["c"].host.clear();
    m.assemblies["c"].hosts = {"h3", "h1"};
    EXPECT_EQ(*placeAssembly(m, "c", {{"a", "h3"}}, up), "h1");
}

TEST(HostPlacement, MaintenanceInTheModelWinsOverTheRememberedState) {
    auto m = threeHosts();
    m.hosts["h2"].state = HostState::Maintenance;
    HostLayerState s;
    s.hosts["h3"].state = HostState::Fencing;
    auto e = effectiveStates(m, s);
    EXPECT_EQ(e["h1"], HostState::Up);
    EXPECT_EQ(e["h2"], HostState::Maintenance);
    EXPECT_EQ(e["h3"], HostState::Fencing);
}

TEST(HostCodecs, ModelWithHostsRoundTripsThroughJson) {
    auto m = threeHosts();
    m.hosts["h1"].fence.agent = "fence_virsh";
    m.hosts["h1"].fence.params = {{"plug", "h1"}};
    m.hosts["h2"].state = HostState::Maintenance;
    m.assemblies["a"].host = "h1";
    m.assemblies["b"].hosts = {"h2", "h3"};
    m.assemblies["b"].outcome = model::AssemblyOutcome::Relocate;
    m.assemblies["b"].max_relocate = 4;
    m.assemblies["c"].networks = {"default"};
    m.deployables["web"].spread = false;
    m.pcmkc_version_assemblies = "0.6.0";
    auto back = model::modelFromJson(json::parse(model::toJson(m).dump()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_TRUE(*back == m);
    // A placement naming an unknown host is an error naming the path.
    json j = model::toJson(m);
    j["assemblies"]["a"]["host"] = "h9";
    auto bad = model::modelFromJson(j);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("assemblies.a.host: unknown host 'h9'"), std::string::npos)
        << bad.error().message;
    // Models without hosts look as before.
    model::Model plain;
    EXPECT_FALSE(model::toJson(plain).contains("hosts"));
}

TEST(HostCodecs, StateRoundTripsAndRejectsGarbage) {
    HostLayerState s;
    auto& h = s.hosts["h1"];
    h.state = HostState::Fencing;
    h.since = 5;
    h.cause_id = "host:h1@5";
    h.fence_attempts = 2;
    h.fence_due = 99;
    s.assemblies["a"].relocations = {1, 2};
    s.assemblies["a"].moving_to = "h2";
    s.assemblies["a"].moving_since = 7;
    s.bus_recovered_at = 3;
    auto back = hostLayerStateFromJson(json::parse(toJson(s).dump()), "state");
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_TRUE(*back == s);
    auto bad = hostLayerStateFromJson(json{{"hosts", {{"h1", {{"state", "zombie"}}}}}}, "state");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("state.hosts.h1.state"), std::string::npos)
        << bad.error().message;
}

TEST(HostDecide, SameInputTwiceIssuesTheFenceOnce) {
    auto m = threeHosts();
    HostObserved o;
    o.observer_since = 0;
    o.placement = {{"a", "h1"}};
    o.hosts["h2"].node_heartbeat = 20'000;
    o.hosts["h3"].node_heartbeat = 20'000;
    auto d1 = decideHosts(m, o, {}, 20'000); // suspect
    EXPECT_EQ(d1.state.hosts.at("h1").state, HostState::Suspect);
    auto d2 = decideHosts(m, o, d1.state, 25'000); // every signal lost for 5s: fence
    auto d3 = decideHosts(m, o, d2.state, 25'000);
    int fences = 0;
    for (const auto* d : {&d1, &d2, &d3})
        for (const auto& a : d->actions)
            fences += a.kind == HostActionKind::Fence;
    EXPECT_EQ(fences, 1);
    EXPECT_EQ(d3.state.hosts.at("h1").state, HostState::Fencing);
    EXPECT_TRUE(d3.actions.empty());
}
