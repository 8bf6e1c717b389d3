#include "policy/policy_json.h"
#include "policy/simulation.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::policy;
using nlohmann::json;

TEST(ObservedJson, GarbageStatesMapToUnknown) {
    json j = {
        {"assemblies",
         {{"node01",
           {{"domain", "on fire"},
            {"services", {{"httpd", {{"state", "sort-of-ok"}}}, {"db", {{"state", 42}}}}}}}}}};
    auto o = observedFromJson(j);
    ASSERT_TRUE(o.ok()) << o.error().message;
    const auto& a = o->assemblies.at("node01");
    EXPECT_EQ(a.domain, DomainState::Unknown);
    EXPECT_EQ(a.services.at("httpd").state, ServiceState::Unknown);
    EXPECT_EQ(a.services.at("httpd").raw, "sort-of-ok");
    EXPECT_EQ(a.services.at("db").state, ServiceState::Unknown);
}

TEST(ObservedJson, RoundTrips) {
    Observed o;
    o.desired = DesiredState::Stopped;
    o.infra_ok = false;
    auto& a = o.assemblies["n"];
    a.domain = DomainState::Crashed;
    a.suspect = true;
    a.agent_connected = true;
    a.heartbeat_seq = 7;
    a.last_heartbeat = 1234;
    a.services["s"] = ObservedService{ServiceState::Failed, "failed", 99, false};
    a.agent_via_bus = true;
    a.hello_at = 1200;
    a.referee = Membership::Draining;
    o.bus_ok = false;
    o.observer_since = 1000;
    o.observer_resumed_at = 1500;
    o.observer_paused_ms = 400;
    o.epoch = 4;
    o.receiver_epoch = 9'223'372'036'854'775'807; // kMaxEpoch
    auto back = observedFromJson(json::parse(toJson(o).dump()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, o);
}

TEST(ObservedJson, BadTypesNameThePath) {
    auto o = observedFromJson(json{{"assemblies", {{"n", {{"suspect", "yes"}}}}}});
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.error().message, "assemblies.n.suspect: expected true or false, got string");
    o = observedFromJson(json{{"desired", "maybe"}});
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message.find("desired"), std::string::npos);
    o = observedFromJson(
        json{{"assemblies", {{"n", {{"services", {{"s", {{"changed_at", "soon"}}}}}}}}}});
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message.find("assemblies.n.services.s.changed_at"), std::string::npos);
    o = observedFromJson(json{{"assemblies", {{"n", {{"referee", "half-in"}}}}}});
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.error().message,
              "assemblies.n.referee: expected one of out, in, draining, parked, got 'half-in'");
    o = observedFromJson(json{{"observer_since", "soon"}});
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message.find("observer_since"), std::string::npos);
    o = observedFromJson(json{{"receiver_epoch", -1}});
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.error().message, "receiver_epoch: must be at least 0");
    o = observedFromJson(json{{"epoch", 9'223'372'036'854'775'808ull}});
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.error().message, "epoch: number too large");
}

TEST(EscalationStateJson, RoundTripsEverything) {
    EscalationState s;
    s.deployable.failures = {1, 2};
    s.deployable.outcome_applied = true;
    s.deployable.outcome_cause = "n@2";
    s.deployable.infra_down = true;
    s.deployable.infra_recovered_at = 77;
    s.deployable.observer_resumed_at = 88;
    s.deployable.bus_down = true;
    s.deployable.bus_recovered_at = 99;
    s.deployable.fenced_by = 5;
    s.deployable.fence_lifted_at = 111;
    s.deployable.reported = "failed";
    auto& a = s.assemblies["n"];
    a.phase = Phase::RestartPending;
    a.phase_since = 5;
    a.due = 10;
    a.cause_id = "n@5";
    a.seen_running = true;
    a.recovery = Recovery{{3, 4}, 2, 4, std::nullopt};
    a.membership = Membership::Draining;
    a.reported = "failed";
    auto& sv = a.services["httpd"];
    sv.phase = Phase::Restarting;
    sv.recovery.stable_since = 1;
    sv.cause_id = "n/httpd@3";
    auto back = escalationStateFromJson(json::parse(toJson(s).dump()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, s);
}

TEST(EscalationStateJson, RejectsBadInput) {
    auto r = escalationStateFromJson(json{{"assemblies", {{"n", {{"phase", "dancing"}}}}}});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("assemblies.n.phase: expected one of"), std::string::npos);
    r = escalationStateFromJson(json{{"v", 2}});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("unsupported state version"), std::string::npos);
    r = escalationStateFromJson(json{
        {"assemblies", {{"n", {{"services", {{"s", {{"recovery", {{"failures", {"x"}}}}}}}}}}}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message,
              "assemblies.n.services.s.recovery.failures[0]: expected integer milliseconds");
    r = escalationStateFromJson(json{{"deployable", {{"bogus", 1}}}});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("deployable.bogus: unknown key"), std::string::npos);
}

TEST(Scenario, SyntaxErrorGivesFileAndLine) {
    auto s = parseScenario("{\n \"model\": {},\n \"steps\": [\n  {\"at\": }\n ]\n}\n", "x.json");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().file, "x.json");
    EXPECT_EQ(s.error().line, 4);
}

// Regression (fuzz_scenario): nlohmann reports a number too large for a double as an
// out_of_range, which parseScenario did not catch, so pcloud-simulate died on it.
TEST(Scenario, NumberTooLargeIsAnErrorWithLine) {
    auto s = parseScenario("{\n \"model\": {},\n \"start\": 1e999\n}\n", "big.json");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().file, "big.json");
    EXPECT_EQ(s.error().line, 3);
    EXPECT_NE(s.error().message.find("number overflow parsing '1e999'"), std::string::npos)
        << s.error().message;
}

// Times and durations are bounded (years 0000-9999, 100 years), so the engine's
// time + duration sums cannot overflow whatever a scenario says.
TEST(Scenario, TimesAndDurationsAreBounded) {
    const std::string model = R"("model": {"deployables": {"web": {}}})";
    auto s = parseScenario(
        "{" + model + R"(, "start": 9223372036854775807, "steps": [{"at": "+0s"}]})", "a.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().describe().find("start: out of range"), std::string::npos)
        << s.error().describe();
    s = parseScenario("{" + model + R"(, "steps": [{"at": 253402300800000}]})", "b.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().describe().find("time out of range"), std::string::npos)
        << s.error().describe();
    s = parseScenario("{" + model + R"(, "jitter": 9223372036854775807, "steps": [{"at": "+0s"}]})",
                      "c.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().describe().find("more than 100 years"), std::string::npos)
        << s.error().describe();
    // Regression (fuzz_scenario): std::stoll threw on decimal seconds too long for it.
    s = parseScenario("{" + model +
                          R"(, "steps": [{"at": "+288888888888888888888888888888888888805.01s"}]})",
                      "e.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().describe().find("bad offset"), std::string::npos) << s.error().describe();
    s = parseScenario("{" + model + R"(, "steps": [{"at": "+1.5s"}]})", "f.json");
    ASSERT_TRUE(s.ok()) << s.error().describe();
    EXPECT_EQ(s->steps.at(0).at, 1500);
    s = parseScenario("{" + model + R"(, "start": 253402300799999, "steps": [{"at": "+0s"}]})",
                      "d.json");
    EXPECT_TRUE(s.ok()) << s.error().describe();
}

// Both layers read their steps with one reader: a step that goes back in time, a step that
// is not an object, and a bad first observation are refused the same way, naming the path.
TEST(Scenario, BothLayersRefuseBadStepsAlike) {
    const std::string model = R"("model": {"deployables": {"web": {}}})";
    for (const std::string layer : {"", R"("layer": "hosts", )"}) {
        auto s = parseScenario(
            "{" + layer + model + R"(, "steps": [{"at": "+5s"}, {"at": "+2s"}]})", "t.json");
        ASSERT_FALSE(s.ok()) << layer;
        EXPECT_EQ(s.error().file, "t.json");
        EXPECT_NE(s.error().describe().find(
                      "steps[1].at: steps must not go back in time (previous step at +5s)"),
                  std::string::npos)
            << layer << s.error().describe();
        s = parseScenario("{" + layer + model + R"(, "steps": [{"at": "+1s", "observe": 3}]})",
                          "t.json");
        ASSERT_FALSE(s.ok()) << layer;
        EXPECT_NE(s.error().describe().find("steps[0].observe: expected an object"),
                  std::string::npos)
            << layer << s.error().describe();
        s = parseScenario("{" + layer + model + R"(, "steps": []})", "t.json");
        ASSERT_FALSE(s.ok()) << layer;
        EXPECT_NE(s.error().describe().find("expected a non-empty array of steps"),
                  std::string::npos)
            << layer << s.error().describe();
        s = parseScenario("{" + layer + model +
                              R"(, "observe": {"bogus": 1}, "steps": [{"at": "+1s"}]})",
                          "t.json");
        ASSERT_FALSE(s.ok()) << layer;
        EXPECT_NE(s.error().describe().find("observe.bogus: unknown key"), std::string::npos)
            << layer << s.error().describe();
    }
}

TEST(Scenario, BadStepNamesThePath) {
    std::string text = R"({"model": {"deployables": {"web": {}}},
        "steps": [{"at": "+0s"}, {"at": "+5s", "observe": {"assemblies": {"n": {"last_heartbeat": "later"}}}}]})";
    auto s = parseScenario(text, "y.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().describe().find("y.json: steps[1].observe.assemblies.n.last_heartbeat"),
              std::string::npos)
        << s.error().describe();
    s = parseScenario(
        R"({"model": {"deployables": {"web": {}}}, "steps": [{"at": "+5s"}, {"at": "+1s"}]})",
        "z.json");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("back in time"), std::string::npos);
}

TEST(Scenario, RelativeTimes) {
    EXPECT_EQ(formatRelative(0), "+0s");
    EXPECT_EQ(formatRelative(1500), "+1.5s");
    EXPECT_EQ(formatRelative(120'001), "+120.001s");
    EXPECT_EQ(lineOfOffset("a\nb\nc", 4), 3);
}
