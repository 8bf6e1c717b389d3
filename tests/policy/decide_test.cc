// Properties of decide() that the golden cases cannot show well: it never throws on odd
// input, it is idempotent for unchanged input, and it handles an unknown deployable.

#include "model/model_json.h"
#include "policy/policy.h"
#include "policy/policy_json.h"

#include <gtest/gtest.h>

using namespace pcloud;
using namespace pcloud::policy;
using nlohmann::json;

static model::Model webModel() {
    auto m = model::modelFromJson(json::parse(R"({
      "deployables": {"web": {"assemblies": ["node01"], "referee": {"driver": "log"}}},
      "assemblies": {"node01": {"resources": [{"name": "httpd"}]}}})"));
    EXPECT_TRUE(m.ok());
    return *m;
}

TEST(Decide, UnknownDeployableIsAnEventNotACrash) {
    ZeroJitter j;
    auto d = decide(webModel(), "nope", Observed{}, EscalationState{}, 0, j);
    ASSERT_EQ(d.actions.size(), 1u);
    EXPECT_EQ(d.actions[0].state, "error");
}

TEST(Decide, SameInputTwiceIssuesActionsOnce) {
    ZeroJitter j;
    auto m = webModel();
    Observed o;
    o.assemblies["node01"].domain = DomainState::Shutoff;
    auto d1 = decide(m, "web", o, EscalationState{}, 1000, j);
    ASSERT_FALSE(d1.actions.empty());
    auto d2 = decide(m, "web", o, d1.state, 1000, j);
    for (const auto& a : d2.actions)
        EXPECT_EQ(a.kind, ActionKind::EmitEvent);
    EXPECT_TRUE(d2.actions.empty());
}

TEST(Decide, SurvivesEveryCombinationOfOddStates) {
    ZeroJitter j;
    auto m = webModel();
    EscalationState st;
    Millis now = 0;
    const char* svc[] = {"active", "failed", "inactive", "activating", "not-found", "", "\xff\xfe"};
    DomainState dom[] = {DomainState::Unknown, DomainState::Running, DomainState::Paused,
                         DomainState::Shutoff, DomainState::Crashed, DomainState::Missing};
    for (int round = 0; round < 3; ++round)
        for (auto d : dom)
            for (const char* s : svc)
                for (int flags = 0; flags < 8; ++flags) {
                    Observed o;
                    o.desired =
                        (flags & 4) && round == 1 ? DesiredState::Stopped : DesiredState::Running;
                    auto& a = o.assemblies["node01"];
                    a.domain = d;
                    a.suspect = flags & 1;
                    a.qemu_exited = flags & 2;
                    a.agent_connected = true;
                    a.last_heartbeat = now;
                    a.services["httpd"] =
                        ObservedService{parseServiceState(s), s, now, std::nullopt};
                    now += 700;
                    auto dec = decide(m, "web", o, st, now, j);
                    st = dec.state;
                    auto back = escalationStateFromJson(json::parse(toJson(st).dump()));
                    ASSERT_TRUE(back.ok());
                    ASSERT_EQ(*back, st);
                    if (dec.next_wake) {
                        ASSERT_GT(*dec.next_wake, now);
                    }
                }
}
