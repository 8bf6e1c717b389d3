// The hub's amqps:// listener with real parts: a Hub with mutual TLS and SASL EXTERNAL, lib/bus
// clients (and a bare Proton peer where a client would refuse to try) holding certificates made
// by lib/pki in a temp dir. Authentication, revocation on reload, and authorization at attach.
#include "bus/proton_util.h"
#include "bus_test_util.h"
#include "common/log.h"
#include "pki/pki.h"

#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/ssl.hpp>
#include <proton/transport.hpp>

#include <atomic>
#include <cstdlib>
#include <future>
#include <mutex>
#include <optional>
#include <regex>

namespace pcloud::bus::test {
namespace {

class TlsHub : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pcloud-tls-test-XXXXXX";
        root_ = ::mkdtemp(tmpl);
        pki_ = root_ + "/pki";
        ASSERT_TRUE(pki::initCa(pki_));
        issue("cped:hub");
        savedLevel_ = log::level();
        log::setLevel(log::Level::Info);
    }
    void TearDown() override {
        clients_.clear();
        if (hub_)
            hub_->stop();
        log::setLevel(savedLevel_);
        std::system(("rm -rf " + root_).c_str());
    }

    void issue(const std::string& identity, bool events = false, const std::string& dir = {}) {
        auto id = pki::parseIdentity(identity);
        ASSERT_TRUE(id) << identity;
        id->events = events;
        auto r = pki::issue(dir.empty() ? pki_ : dir, *id);
        ASSERT_TRUE(r) << r.error().describe();
    }

    void startHub(std::size_t maxQueues = 1000) {
        HubOptions o;
        o.tls.caFile = pki_ + "/ca.crt";
        o.tls.certFile = pki_ + "/cped.hub.crt";
        o.tls.keyFile = pki_ + "/cped.hub.key";
        o.tls.denyListFile = pki_ + "/revoked";
        o.maxQueuesPerIdentity = maxQueues;
        o.authz.ownsAssembly = [](const std::string& d, const std::string& a) {
            return d == "web" && a == "a";
        };
        hub_ = std::make_unique<Hub>(o);
        auto st = hub_->start("amqps://127.0.0.1:0");
        ASSERT_TRUE(st) << st.error().describe();
    }
    std::string url() const { return "amqps://127.0.0.1:" + std::to_string(hub_->boundPort()); }

    // A lib/bus client presenting `stem`.crt from `dir` (default: this test's PKI), sending
    // as `userId` (unset: its certificate's CN).
    Client& client(const std::string& stem, const std::string& dir = {},
                   std::optional<std::string> userId = std::nullopt) {
        std::string d = dir.empty() ? pki_ : dir;
        ClientOptions o;
        o.url = url();
        o.caFile = pki_ + "/ca.crt";
        o.certFile = d + "/" + stem + ".crt";
        o.keyFile = d + "/" + stem + ".key";
        o.reconnectMin = 20ms;
        o.reconnectMax = 200ms;
        o.userId = std::move(userId);
        clients_.push_back(std::make_unique<Client>());
        auto st = clients_.back()->connect(o);
        EXPECT_TRUE(st) << st.error().describe();
        return *clients_.back();
    }
    Client& connected(const std::string& stem, std::optional<std::string> userId = std::nullopt) {
        Client& c = client(stem, {}, std::move(userId));
        EXPECT_TRUE(c.waitConnected(kDeadline)) << stem << " did not connect";
        return c;
    }
    bool waitRefusedLinks(Client& c, std::uint64_t n) {
        return waitUntil([&] { return c.stats().linksRefused >= n; });
    }
    bool waitRefusedConnections(std::uint64_t n) {
        return waitUntil([&] { return hub_->security().refusedConnections >= n; });
    }

    std::string root_, pki_;
    std::unique_ptr<Hub> hub_;
    std::vector<std::unique_ptr<Client>> clients_;
    log::Level savedLevel_{};
};

TEST(TlsHubStart, PlainAmqpNeedsTheExplicitFlag) {
    Hub plain;
    auto st = plain.start("amqp://127.0.0.1:0");
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("--insecure-listen"), std::string::npos)
        << st.error().message;
    HubOptions o;
    o.allowInsecure = true;
    Hub allowed(o);
    EXPECT_TRUE(allowed.start("amqp://127.0.0.1:0"));
}

TEST(TlsHubStart, AmqpsNeedsReadableCertificates) {
    Hub none;
    auto st = none.start("amqps://127.0.0.1:0");
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("certificate"), std::string::npos) << st.error().message;
    HubOptions o;
    o.tls = {"/nonexistent/ca.crt", "/nonexistent/hub.crt", "/nonexistent/hub.key", ""};
    Hub missing(o);
    auto st2 = missing.start("amqps://127.0.0.1:0");
    ASSERT_FALSE(st2);
    EXPECT_EQ(st2.error().file, "/nonexistent/ca.crt");
}

TEST(TlsHubStart, AVanishedTlsPeerIsNoProtocolError) {
    auto f = detail::classifyTransportFailure(
        "amqp:connection:framing-error",
        "SSL Failure: error:0A000126:SSL routines::unexpected eof while reading");
    EXPECT_FALSE(f.protocolError);
    EXPECT_EQ(f.reason, "the connection ended without a TLS or AMQP close");
    EXPECT_TRUE(detail::classifyTransportFailure("amqp:connection:framing-error",
                                                 "SSL Failure: error:0A000086:SSL "
                                                 "routines::certificate verify failed")
                    .protocolError);
}

TEST(TlsClient, AmqpsNeedsCertificatePaths) {
    Client c;
    auto st = c.connect("amqps://127.0.0.1:5671");
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("bus_cert"), std::string::npos) << st.error().message;
}

TEST_F(TlsHub, AValidCertificateConnectsAsItsIdentity) {
    issue("operator:alice");
    StderrCapture log;
    startHub();
    connected("operator.alice");
    auto line = log.waitForLine("Hub peer authenticated");
    EXPECT_NE(line.find("identity=operator:alice"), std::string::npos) << line;
    EXPECT_NE(line.find("peer=127.0.0.1:"), std::string::npos) << line;
    EXPECT_EQ(hub_->security().refusedConnections, 0u);
}

TEST_F(TlsHub, NoClientCertificateIsRefusedAndLoggedWithThePeer) {
    StderrCapture log;
    startHub();
    Probe probe(url(), proton::connection_options()
                           .ssl_client_options(proton::ssl_client_options(pki_ + "/ca.crt",
                                                                          proton::ssl::VERIFY_PEER))
                           .sasl_enabled(true)
                           .sasl_allowed_mechs("EXTERNAL"));
    probe.run();
    EXPECT_FALSE(probe.opened);
    EXPECT_FALSE(probe.error.empty());
    ASSERT_TRUE(waitRefusedConnections(1));
    auto line = log.waitForLine("Hub refused a connection");
    EXPECT_NE(line.find("peer=127.0.0.1:"), std::string::npos) << line;
}

TEST_F(TlsHub, PlainAmqpOnTheTlsPortIsRefused) {
    startHub();
    Probe probe("127.0.0.1:" + std::to_string(hub_->boundPort()), proton::connection_options());
    probe.run();
    EXPECT_FALSE(probe.opened);
    EXPECT_TRUE(waitRefusedConnections(1));
}

TEST_F(TlsHub, ACertificateFromAnotherCaIsRefused) {
    std::string other = root_ + "/other";
    ASSERT_TRUE(pki::initCa(other));
    issue("operator:mallory", false, other);
    StderrCapture log;
    startHub();
    Client& c = client("operator.mallory", other);
    ASSERT_TRUE(waitRefusedConnections(1));
    EXPECT_FALSE(c.connected());
    auto line = log.waitForLine("Hub refused a connection");
    EXPECT_NE(line.find("peer=127.0.0.1:"), std::string::npos) << line;
}

TEST_F(TlsHub, RevokedCertificateIsRefusedAfterReload) {
    issue("agent:a");
    issue("agent:b");
    startHub();
    Client& a = connected("agent.a");
    Client& b = connected("agent.b");
    auto serial = pki::revoke(pki_, "agent:a");
    ASSERT_TRUE(serial) << serial.error().describe();
    // Not in force before the reload...
    Client& early = connected("agent.a");
    EXPECT_EQ(hub_->security().refusedConnections, 0u);
    StderrCapture log;
    ASSERT_TRUE(hub_->reloadDenyList());
    // ...then the open connections are closed and every reconnect is refused.
    ASSERT_TRUE(waitUntil([&] { return !a.connected() && !early.connected(); }));
    Client& late = client("agent.a");
    ASSERT_TRUE(waitRefusedConnections(4));
    EXPECT_FALSE(late.connected());
    EXPECT_FALSE(a.connected());
    EXPECT_TRUE(b.connected());
    auto line = log.waitForLine("is revoked");
    EXPECT_NE(line.find(*serial), std::string::npos) << line;
    EXPECT_NE(line.find("peer=127.0.0.1:"), std::string::npos) << line;
}

TEST_F(TlsHub, ABadDenyListKeepsTheOldOne) {
    issue("agent:a");
    startHub();
    ASSERT_TRUE(pki::revoke(pki_, "agent:a"));
    std::FILE* f = std::fopen((pki_ + "/revoked").c_str(), "a");
    std::fputs("not-a-serial\n", f);
    std::fclose(f);
    auto st = hub_->reloadDenyList();
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().file, pki_ + "/revoked");
    EXPECT_TRUE(connected("agent.a").connected()); // the old (empty) list is still in force
}

TEST_F(TlsHub, AnAgentIsConfinedToItsOwnQueues) {
    issue("agent:a");
    issue("dped:web");
    startHub();
    Client& dped = connected("dped.web");
    Inbox reports;
    auto rs = dped.subscribe("pcloud.reports.a", reports.callback());
    ASSERT_TRUE(dped.waitSubscribed(rs, kDeadline));
    Client& agent = connected("agent.a");
    Inbox commands;
    auto cs = agent.subscribe("pcloud.agent.a", commands.callback());
    ASSERT_TRUE(agent.waitSubscribed(cs, kDeadline));
    ASSERT_TRUE(agent.send("pcloud.reports.a", numbered(1)));
    ASSERT_TRUE(reports.waitFor(1));
    ASSERT_TRUE(dped.send("pcloud.agent.a", numbered(2)));
    ASSERT_TRUE(commands.waitFor(1));
    EXPECT_EQ(hub_->security().deniedLinks, 0u);

    StderrCapture log;
    agent.subscribe("pcloud.agent.b", [](const Message&) {});
    ASSERT_TRUE(waitRefusedLinks(agent, 1));
    auto err = agent.stats().lastLinkError;
    EXPECT_NE(err.find("amqp:unauthorized-access"), std::string::npos) << err;
    EXPECT_NE(err.find("pcloud.agent.b"), std::string::npos) << err;
    ASSERT_TRUE(agent.send("pcloud.cped", numbered(3))); // queued; the link is refused
    ASSERT_TRUE(waitRefusedLinks(agent, 2));
    err = agent.stats().lastLinkError;
    EXPECT_NE(err.find("amqp:unauthorized-access"), std::string::npos) << err;
    EXPECT_NE(err.find("pcloud.cped"), std::string::npos) << err;
    EXPECT_EQ(hub_->security().deniedLinks, 2u);
    EXPECT_EQ(countersOf(*hub_, "pcloud.cped").in, 0u);
    auto line = log.waitForLine("Hub refused a link");
    EXPECT_NE(line.find("identity=agent:a"), std::string::npos) << line;
    EXPECT_NE(line.find("address=pcloud.agent.b"), std::string::npos) << line;
    EXPECT_TRUE(agent.connected()); // a refused link does not cost the connection
}

// As RabbitMQ does: every message carries its sender's identity as the AMQP user-id. The
// client sets its certificate's CN; one that sets none gets it stamped by the hub; one that
// claims another identity is rejected, counted and logged, and never delivered.
TEST_F(TlsHub, TheUserIdIsTheSendersIdentityStampedOrValidated) {
    issue("agent:a");
    issue("dped:web");
    startHub();
    Client& dped = connected("dped.web");
    Inbox reports;
    auto rs = dped.subscribe("pcloud.reports.a", reports.callback());
    ASSERT_TRUE(dped.waitSubscribed(rs, kDeadline));
    Client& agent = connected("agent.a");
    Client& bare = connected("agent.a", std::string());
    Client& forger = connected("agent.a", std::string("dped:web"));
    ASSERT_TRUE(agent.send("pcloud.reports.a", numbered(1)));
    ASSERT_TRUE(reports.waitFor(1));
    ASSERT_TRUE(bare.send("pcloud.reports.a", numbered(2)));
    ASSERT_TRUE(reports.waitFor(2));
    for (const auto& m : reports.messages())
        EXPECT_EQ(m.userId, "agent:a") << m.body;

    StderrCapture log;
    ASSERT_TRUE(forger.send("pcloud.reports.a", numbered(3)));
    ASSERT_TRUE(waitUntil([&] { return forger.stats().rejected >= 1; }));
    EXPECT_EQ(hub_->security().forgedUserIds, 1u);
    EXPECT_NE(hub_->securityJson().find("\"forged_user_ids\":1"), std::string::npos)
        << hub_->securityJson();
    auto line = log.waitForLine("Hub rejected a message whose user-id is not its sender");
    EXPECT_NE(line.find("identity=agent:a"), std::string::npos) << line;
    EXPECT_NE(line.find("user_id=dped:web"), std::string::npos) << line;
    EXPECT_NE(line.find("address=pcloud.reports.a"), std::string::npos) << line;
    // The connection keeps serving: its next message (with its own id) goes through.
    ASSERT_TRUE(agent.send("pcloud.reports.a", numbered(4)));
    ASSERT_TRUE(reports.waitFor(3));
    EXPECT_EQ(reports.bodies().back(), numbered(4));
    EXPECT_EQ(reports.size(), 3u);
    EXPECT_TRUE(forger.connected());
}

TEST_F(TlsHub, NobodyCompetesForAnotherIdentitysQueue) {
    issue("agent:a");
    issue("agent:b");
    issue("dped:db");
    issue("operator:alice");
    startHub();
    Client& a = connected("agent.a");
    Inbox mine;
    auto s = a.subscribe("pcloud.agent.a", mine.callback());
    ASSERT_TRUE(a.waitSubscribed(s, kDeadline));
    Client& b = connected("agent.b");
    b.subscribe("pcloud.agent.a", [](const Message&) {});
    ASSERT_TRUE(waitRefusedLinks(b, 1));
    Client& otherDped = connected("dped.db");
    otherDped.subscribe("pcloud.reports.a", [](const Message&) {});
    ASSERT_TRUE(waitRefusedLinks(otherDped, 1));
    Client& op = connected("operator.alice");
    op.subscribe("pcloud.cped", [](const Message&) {}); // competing with cped
    ASSERT_TRUE(waitRefusedLinks(op, 1));
    EXPECT_NE(op.stats().lastLinkError.find("pcloud.cped"), std::string::npos);
    EXPECT_EQ(countersOf(*hub_, "pcloud.agent.a").receivers, 1u);
    EXPECT_EQ(hub_->security().deniedLinks, 3u);
}

TEST_F(TlsHub, OperatorsUseTheCommandApi) {
    issue("operator:alice");
    issue("agent:a");
    startHub();
    Client& cped = connected("cped.hub");
    auto sv = cped.serve("pcloud.cped", [](const Message& m) {
        return std::optional<std::string>("{\"ok\":true,\"echo\":" + m.body + "}");
    });
    ASSERT_TRUE(cped.waitSubscribed(sv, kDeadline));
    Client& op = connected("operator.alice");
    auto reply = op.request("pcloud.cped", numbered(7), kDeadline);
    ASSERT_TRUE(reply) << reply.error().describe();
    EXPECT_NE(reply->body.find("\"n\":7"), std::string::npos) << reply->body;
    Client& agent = connected("agent.a");
    auto refused = agent.request("pcloud.cped", numbered(8), 500ms);
    EXPECT_FALSE(refused);
    EXPECT_TRUE(waitRefusedLinks(agent, 1));
}

// A waiting request's reply queue: its name carries 128 random bits, so guessing it by the
// counter finds nothing, and a guest's agent may not answer even when it knows the name.
// The operator's request gets only the real reply.
TEST_F(TlsHub, RepliesCannotBeForgedIntoAGuessedReplyQueue) {
    issue("operator:alice");
    issue("agent:a");
    issue("dped:web");
    startHub();
    Client& cped = connected("cped.hub");
    Client& agent = connected("agent.a");
    Client& dped = connected("dped.web");
    std::mutex mu;
    std::string replyTo;
    auto sv = cped.serve("pcloud.cped", [&](const Message& m) -> std::optional<std::string> {
        {
            std::lock_guard lock(mu);
            replyTo = m.replyTo;
        }
        // Forgeries first: the agent at the real name, a dped at the guessed names.
        (void)agent.reply(m.replyTo, m.correlationId, R"({"ok":true,"forged":"agent"})");
        for (int n = 1; n <= 4; ++n)
            (void)dped.reply("pcloud.reply." + std::to_string(n), m.correlationId,
                             R"({"ok":true,"forged":"dped"})");
        EXPECT_TRUE(waitRefusedLinks(agent, 1));
        return std::optional<std::string>(R"({"ok":true,"real":true})");
    });
    ASSERT_TRUE(cped.waitSubscribed(sv, kDeadline));
    Client& op = connected("operator.alice");
    auto reply = op.request("pcloud.cped", numbered(1), kDeadline);
    ASSERT_TRUE(reply) << reply.error().describe();
    EXPECT_EQ(reply->body, R"({"ok":true,"real":true})");
    {
        std::lock_guard lock(mu);
        EXPECT_TRUE(std::regex_match(replyTo, std::regex(R"(pcloud\.reply\.[0-9]+\.[0-9a-f]{32})")))
            << replyTo;
    }
    auto err = agent.stats().lastLinkError;
    EXPECT_NE(err.find("amqp:unauthorized-access"), std::string::npos) << err;
    EXPECT_NE(err.find("pcloud.reply."), std::string::npos) << err;
    // A second request on the same reply queue still gets only its real reply.
    auto again = op.request("pcloud.cped", numbered(2), kDeadline);
    ASSERT_TRUE(again) << again.error().describe();
    EXPECT_EQ(again->body, R"({"ok":true,"real":true})");
}

// Another service may put a reply in a reply queue it learns (the hub lets dpeds answer), but
// a requester that checks reply senders takes only the user-id of the server it asked: the
// forgery is dropped and counted, and the request goes on waiting for the real reply.
TEST_F(TlsHub, ARequesterTakesRepliesOnlyFromTheServerItAsked) {
    issue("dped:web");
    issue("dped:db");
    startHub();
    Client& web = connected("dped.web");
    Client& db = connected("dped.db");
    std::mutex mu;
    Message asked;
    auto sv = web.serve("pcloud.dped.web", [&](const Message& m) -> std::optional<std::string> {
        {
            std::lock_guard lock(mu);
            asked = m;
        }
        (void)db.reply(m.replyTo, m.correlationId, R"({"ok":true,"forged":"db"})");
        return std::nullopt; // answered below, once the forgery was seen
    });
    ASSERT_TRUE(web.waitSubscribed(sv, kDeadline));
    ClientOptions o;
    o.url = url();
    o.caFile = pki_ + "/ca.crt";
    o.certFile = pki_ + "/cped.hub.crt";
    o.keyFile = pki_ + "/cped.hub.key";
    o.checkReplySenders = true;
    Client cped;
    ASSERT_TRUE(cped.connect(o));
    ASSERT_TRUE(cped.waitConnected(kDeadline));
    StderrCapture log;
    std::promise<Result<Message>> got;
    cped.requestAsync("pcloud.dped.web", numbered(1), kDeadline,
                      [&](Result<Message> r) { got.set_value(std::move(r)); });
    ASSERT_TRUE(waitUntil([&] { return cped.stats().forgedReplies >= 1; }));
    auto line = log.waitForLine("Bus client dropped a reply from a sender it did not ask");
    EXPECT_NE(line.find("user_id=dped:db"), std::string::npos) << line;
    EXPECT_NE(line.find("expected=dped:web"), std::string::npos) << line;
    {
        std::lock_guard lock(mu);
        ASSERT_TRUE(web.reply(asked.replyTo, asked.correlationId, R"({"ok":true,"real":true})"));
    }
    auto fut = got.get_future();
    ASSERT_EQ(fut.wait_for(kDeadline), std::future_status::ready);
    auto reply = fut.get();
    ASSERT_TRUE(reply) << reply.error().describe();
    EXPECT_EQ(reply->body, R"({"ok":true,"real":true})");
    EXPECT_EQ(reply->userId, "dped:web");
    EXPECT_EQ(cped.stats().forgedReplies, 1u);
    cped.close();
}

TEST_F(TlsHub, EventsAreForOperatorsAndTheEventsRole) {
    issue("operator:alice");
    issue("node:grafana", true);
    issue("node:plain");
    startHub();
    Client& alice = connected("operator.alice");
    Client& grafana = connected("node.grafana");
    Client& plain = connected("node.plain");
    Inbox ia, ig;
    auto sa = alice.subscribe("pcloud.events", ia.callback());
    auto sg = grafana.subscribe("pcloud.events", ig.callback());
    ASSERT_TRUE(alice.waitSubscribed(sa, kDeadline));
    ASSERT_TRUE(grafana.waitSubscribed(sg, kDeadline));
    plain.subscribe("pcloud.events", [](const Message&) {});
    ASSERT_TRUE(waitRefusedLinks(plain, 1));
    Client& cped = connected("cped.hub");
    ASSERT_TRUE(cped.send("pcloud.events", numbered(1)));
    EXPECT_TRUE(ia.waitFor(1));
    EXPECT_TRUE(ig.waitFor(1));
    // Only cped publishes: a forged event from an operator is refused at attach.
    ASSERT_TRUE(alice.send("pcloud.events", numbered(2)));
    ASSERT_TRUE(waitRefusedLinks(alice, 1));
    EXPECT_EQ(countersOf(*hub_, "pcloud.events").in, 1u);
}

TEST_F(TlsHub, ADpedCommandsOnlyItsOwnAssemblies) {
    issue("dped:web");
    issue("dped:db");
    startHub();
    Client& web = connected("dped.web");
    ASSERT_TRUE(web.send("pcloud.agent.z", numbered(1)));
    ASSERT_TRUE(waitRefusedLinks(web, 1));
    EXPECT_NE(web.stats().lastLinkError.find("pcloud.agent.z"), std::string::npos);
    Client& db = connected("dped.db");
    ASSERT_TRUE(db.send("pcloud.dped.web", numbered(2))); // "stop" another deployable's dped
    ASSERT_TRUE(waitRefusedLinks(db, 1));
    EXPECT_EQ(countersOf(*hub_, "pcloud.dped.web").in, 0u);
}

TEST_F(TlsHub, TheQueueCapIsPerIdentity) {
    issue("operator:alice");
    startHub(2);
    Client& cped = connected("cped.hub"); // its reply queue is the first of two
    auto j = cped.subscribe("pcloud.journal", [](const Message&) {});
    ASSERT_TRUE(cped.waitSubscribed(j, kDeadline));
    cped.subscribe("pcloud.cped", [](const Message&) {});
    ASSERT_TRUE(waitRefusedLinks(cped, 1));
    auto err = cped.stats().lastLinkError;
    EXPECT_NE(err.find("amqp:resource-limit-exceeded"), std::string::npos) << err;
    EXPECT_EQ(hub_->security().queueCapRefusals, 1u);
    // Another identity has a cap of its own.
    Client& alice = connected("operator.alice");
    auto e = alice.subscribe("pcloud.events", [](const Message&) {});
    EXPECT_TRUE(alice.waitSubscribed(e, kDeadline));
    EXPECT_EQ(alice.stats().linksRefused, 0u);
}

} // namespace
} // namespace pcloud::bus::test
