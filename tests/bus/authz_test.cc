// authz::authorize, the one decision the hub takes at every link attach: a table of cases.
#include "bus/authz.h"

#include <gtest/gtest.h>

namespace pcloud::bus::authz {
namespace {

Peer peer(const std::string& identity, bool events = false) {
    auto id = pki::parseIdentity(identity);
    EXPECT_TRUE(id) << identity;
    id->events = events;
    return Peer{*id, false};
}

Context ctx() {
    Context c;
    c.ownsAssembly = [](const std::string& d, const std::string& a) {
        return d == "web" && (a == "w1" || a == "0b9c-uuid");
    };
    return c;
}

bool may(const Peer& p, Direction d, const std::string& address, bool dynamic = false) {
    return authorize(p, d, address, dynamic, ctx()).allow;
}

constexpr auto S = Direction::Send;
constexpr auto R = Direction::Receive;

TEST(Authz, AgentUsesOnlyItsOwnTwoQueues) {
    auto a = peer("agent:w1");
    EXPECT_TRUE(may(a, S, "pcloud.reports.w1"));
    EXPECT_TRUE(may(a, R, "pcloud.agent.w1"));
    EXPECT_FALSE(may(a, R, "pcloud.reports.w1")); // its dped's queue
    EXPECT_FALSE(may(a, S, "pcloud.agent.w1"));   // commanding itself
    EXPECT_FALSE(may(a, R, "pcloud.agent.w2"));
    EXPECT_FALSE(may(a, S, "pcloud.reports.w2")); // a forged report
    EXPECT_FALSE(may(a, S, "pcloud.cped"));
    EXPECT_FALSE(may(a, S, "pcloud.dped.web"));
    EXPECT_FALSE(may(a, S, "pcloud.journal"));
    EXPECT_FALSE(may(a, R, "pcloud.events"));
    EXPECT_FALSE(may(a, R, "pcloud.agent.w1x")); // no prefix matching
    auto d = authorize(a, S, "pcloud.cped", false, ctx());
    EXPECT_NE(d.reason.find("pcloud.reports.w1"), std::string::npos) << d.reason;
}

TEST(Authz, DpedUsesItsDeployablesAddressesAndTheJournal) {
    auto d = peer("dped:web");
    EXPECT_TRUE(may(d, R, "pcloud.dped.web"));
    EXPECT_TRUE(may(d, S, "pcloud.journal"));
    EXPECT_TRUE(may(d, S, "pcloud.agent.w1"));
    EXPECT_TRUE(may(d, R, "pcloud.reports.w1"));
    EXPECT_TRUE(may(d, R, "pcloud.reports.0b9c-uuid")); // reports keyed by uuid
    EXPECT_FALSE(may(d, R, "pcloud.agent.w1"));         // the agent's queue
    EXPECT_FALSE(may(d, S, "pcloud.agent.db1"));        // another deployable's
    EXPECT_FALSE(may(d, R, "pcloud.reports.db1"));
    EXPECT_FALSE(may(d, R, "pcloud.dped.db"));
    EXPECT_FALSE(may(d, S, "pcloud.dped.db")); // stopping another deployable's dped
    EXPECT_FALSE(may(d, R, "pcloud.journal"));
    EXPECT_FALSE(may(d, S, "pcloud.cped"));
    EXPECT_FALSE(may(d, S, "pcloud.events"));
    auto other = peer("dped:db");
    EXPECT_FALSE(may(other, S, "pcloud.agent.w1"));
}

TEST(Authz, DpedWithoutAModelMayNotUseAgentAddresses) {
    auto d = peer("dped:web");
    EXPECT_FALSE(authorize(d, S, "pcloud.agent.w1", false, Context{}).allow);
    EXPECT_TRUE(authorize(d, R, "pcloud.dped.web", false, Context{}).allow);
}

TEST(Authz, OnlyOperatorsUseTheCommandApiAndOnlyCpedServesIt) {
    EXPECT_TRUE(may(peer("operator:alice"), S, "pcloud.cped"));
    EXPECT_FALSE(may(peer("operator:alice"), R, "pcloud.cped")); // competing with cped
    EXPECT_TRUE(may(peer("cped:host1"), R, "pcloud.cped"));
    for (auto who : {"agent:w1", "dped:web", "node:host2"})
        EXPECT_FALSE(may(peer(who), S, "pcloud.cped")) << who;
    EXPECT_FALSE(may(peer("operator:alice"), S, "pcloud.agent.w1"));
    EXPECT_FALSE(may(peer("operator:alice"), S, "pcloud.dped.web"));
}

// A dped's request queue carries cped's commands to it (stop, reload, the leader's epoch
// raise): nobody else may send there, not even the dped itself.
TEST(Authz, OnlyCpedSendsToADpedsQueue) {
    for (auto who : {"operator:alice", "agent:w1", "dped:web", "dped:db", "node:h1"})
        EXPECT_FALSE(may(peer(who), S, "pcloud.dped.web")) << who;
    EXPECT_TRUE(may(peer("cped:host1"), S, "pcloud.dped.web"));
}

TEST(Authz, EventsAreForOperatorsAndTheEventsRole) {
    EXPECT_TRUE(may(peer("operator:alice"), R, "pcloud.events"));
    EXPECT_TRUE(may(peer("operator:alice"), R, "pcloud.events.web"));
    EXPECT_TRUE(may(peer("node:host2", true), R, "pcloud.events"));
    EXPECT_TRUE(may(peer("agent:w1", true), R, "pcloud.events.web"));
    EXPECT_FALSE(may(peer("node:host2"), R, "pcloud.events"));
    EXPECT_FALSE(may(peer("dped:web"), R, "pcloud.events"));
    EXPECT_FALSE(may(peer("operator:alice"), S, "pcloud.events")); // forged events
    EXPECT_TRUE(may(peer("cped:host1"), S, "pcloud.events"));
    EXPECT_FALSE(may(peer("operator:alice"), R, "pcloud.eventsx"));
}

TEST(Authz, RepliesAreForEveryoneButOnlyTheirOwner) {
    for (auto who : {"operator:alice", "agent:w1", "dped:web", "node:h", "cped:h"}) {
        EXPECT_TRUE(may(peer(who), R, "", true)) << who;
        EXPECT_FALSE(may(peer(who), R, "pcloud.reply.7")) << who; // someone else's replies
        EXPECT_FALSE(may(peer(who), S, "", true)) << who;
    }
}

// Who serves requests may answer them: cped (the command API), dpeds (cped's requests),
// nodes (dpeds' requests). A guest's agent or an operator never answers, so neither can put
// a forged reply in a waiting client's queue.
TEST(Authz, OnlyServicesAnswerRequests) {
    for (auto who : {"dped:web", "node:h", "cped:h"})
        EXPECT_TRUE(may(peer(who), S, "pcloud.reply.7.0123456789abcdef0123456789abcdef")) << who;
    for (auto who : {"operator:alice", "agent:w1"}) {
        EXPECT_FALSE(may(peer(who), S, "pcloud.reply.7")) << who;
        EXPECT_FALSE(may(peer(who), S, "pcloud.reply.7.0123456789abcdef0123456789abcdef")) << who;
    }
    EXPECT_TRUE(may(peer("agent:w1", true), R, "pcloud.events")); // the events role is apart
}

TEST(Authz, CpedSendsAnywhereButConsumesOnlyItsOwnQueues) {
    auto c = peer("cped:host1");
    EXPECT_TRUE(may(c, S, "pcloud.dped.web"));
    EXPECT_TRUE(may(c, S, "pcloud.agent.w1"));
    EXPECT_TRUE(may(c, R, "pcloud.journal"));
    EXPECT_FALSE(may(c, R, "pcloud.agent.w1"));
    EXPECT_FALSE(may(c, R, "pcloud.dped.web"));
    EXPECT_FALSE(may(c, R, "pcloud.reports.w1"));
}

TEST(Authz, NodesServeTheirOwnQueueAndDpedsDriveThem) {
    auto n = peer("node:h1");
    EXPECT_TRUE(may(n, R, "pcloud.node.h1"));
    EXPECT_TRUE(may(n, S, "pcloud.nodes.h1"));
    EXPECT_FALSE(may(n, R, "pcloud.node.h2"));  // another node's requests
    EXPECT_FALSE(may(n, S, "pcloud.nodes.h2")); // forged events of another node
    EXPECT_FALSE(may(n, S, "pcloud.cped"));
    EXPECT_FALSE(may(n, S, "pcloud.agent.w1"));
    auto d = peer("dped:web");
    EXPECT_TRUE(may(d, S, "pcloud.node.h1"));
    EXPECT_TRUE(may(d, R, "pcloud.nodes.h1"));
    EXPECT_FALSE(may(d, R, "pcloud.node.h1"));  // competing with the node
    EXPECT_FALSE(may(d, S, "pcloud.nodes.h1")); // forged node events
    EXPECT_FALSE(may(peer("agent:w1"), S, "pcloud.node.h1"));
    EXPECT_FALSE(may(peer("operator:alice"), S, "pcloud.node.h1"));
}

TEST(Authz, InsecurePeersAreUnrestricted) {
    Peer p;
    p.insecure = true;
    EXPECT_TRUE(authorize(p, R, "pcloud.agent.w1", false, ctx()).allow);
    EXPECT_TRUE(authorize(p, S, "pcloud.cped", false, ctx()).allow);
}

} // namespace
} // namespace pcloud::bus::authz
