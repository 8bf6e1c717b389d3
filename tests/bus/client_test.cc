// The bus client: request/reply, timeouts, bounded sends and reconnect, against the real hub.
#include "bus_test_util.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <future>

namespace pcloud::bus::test {

namespace {

std::unique_ptr<Hub> startHub(const std::string& url = "amqp://127.0.0.1:0") {
    auto hub = std::make_unique<Hub>();
    Status s = hub->start(url);
    EXPECT_TRUE(s.ok()) << s.error().describe();
    return hub;
}

std::unique_ptr<Client> connectTo(const Hub& hub) {
    auto c = std::make_unique<Client>();
    EXPECT_TRUE(c->connect(hubUrl(hub)).ok());
    EXPECT_TRUE(c->waitConnected(kDeadline));
    return c;
}

// A cped-like server: replies {"v":1,"id":..,"ok":true,"echo":..}.
RequestHandler echoHandler() {
    return [](const Message& m) -> std::optional<std::string> {
        auto req = nlohmann::json::parse(m.body, nullptr, false);
        if (req.is_discarded())
            return nlohmann::json{{"v", 1}, {"ok", false},
                                  {"error", {{"code", "bad-request"}, {"message", "body is not JSON"}}}}
                .dump();
        return nlohmann::json{{"v", 1}, {"id", req.value("id", "")}, {"ok", true}, {"echo", req}}.dump();
    };
}

} // namespace

TEST(BusClient, RequestGetsTheReplyOnADynamicAddress) {
    auto hub = startHub();
    auto server = connectTo(*hub);
    ASSERT_TRUE(server->waitSubscribed(server->serve("pcloud.cped", echoHandler()), kDeadline));
    auto shell = connectTo(*hub);
    for (int i = 0; i < 5; ++i) {
        std::string id = "req-" + std::to_string(i);
        auto r = shell->request("pcloud.cped", R"({"v":1,"type":"status","id":")" + id + "\"}",
                                5s, {}, id);
        ASSERT_TRUE(r.ok()) << r.error().describe();
        EXPECT_EQ(r->correlationId, id);
        auto j = nlohmann::json::parse(r->body);
        EXPECT_EQ(j["id"], id);
        EXPECT_EQ(j["ok"], true);
    }
    // A non-JSON request gets a structured error, and the server keeps serving.
    auto bad = shell->request("pcloud.cped", "this is not json", 5s);
    ASSERT_TRUE(bad.ok()) << bad.error().describe();
    EXPECT_EQ(nlohmann::json::parse(bad->body)["error"]["code"], "bad-request");
    // Reply addresses come from the hub and go away with their link.
    bool sawReply = false;
    for (const auto& [address, c] : hub->counters())
        if (address.rfind("pcloud.reply.", 0) == 0) sawReply = true;
    EXPECT_TRUE(sawReply);
}

// A server that answers later (dped's ping): the handler keeps the request and sends no reply;
// reply() from another thread reaches the waiting requester with its correlation id.
TEST(BusClient, LateReplyThroughReplyReachesTheRequester) {
    auto hub = startHub();
    auto server = connectTo(*hub);
    std::promise<Message> held;
    auto heldFuture = held.get_future();
    ASSERT_TRUE(server->waitSubscribed(
        server->serve("pcloud.dped.web",
                      [&held](const Message& m) -> std::optional<std::string> {
                          held.set_value(m);
                          return std::nullopt;
                      }),
        kDeadline));
    auto shell = connectTo(*hub);
    std::promise<Result<Message>> got;
    shell->requestAsync("pcloud.dped.web", R"({"v":1,"id":"p1","command":"ping"})", 5s,
                        [&got](Result<Message> r) { got.set_value(std::move(r)); }, {}, "p1");
    ASSERT_EQ(heldFuture.wait_for(5s), std::future_status::ready);
    Message req = heldFuture.get();
    EXPECT_EQ(req.correlationId, "p1");
    ASSERT_FALSE(req.replyTo.empty());
    ASSERT_TRUE(server->reply(req.replyTo, req.correlationId, R"({"v":1,"id":"p1","ok":true})").ok());
    auto f = got.get_future();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->correlationId, "p1");
    EXPECT_EQ(nlohmann::json::parse(r->body)["ok"], true);
    EXPECT_FALSE(server->reply("", "p1", "{}").ok());  // no reply address: a clear error
}

TEST(BusClient, ConcurrentRequestsFromManyThreadsEachGetTheirOwnReply) {
    auto hub = startHub();
    auto server = connectTo(*hub);
    ASSERT_TRUE(server->waitSubscribed(server->serve("pcloud.cped", echoHandler()), kDeadline));
    auto shell = connectTo(*hub);
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 25; ++i) {
                std::string id = std::to_string(t) + "-" + std::to_string(i);
                auto r = shell->request("pcloud.cped", R"({"v":1,"id":")" + id + "\"}", 5s, {}, id);
                if (r.ok() && nlohmann::json::parse(r->body)["id"] == id) ++good;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(good.load(), 100);
}

TEST(BusClient, RequestWithoutServerTimesOutWithAClearError) {
    auto hub = startHub();
    auto shell = connectTo(*hub);
    auto r = shell->request("pcloud.dped.nobody", R"({"v":1,"id":"x"})", 200ms);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("no reply from pcloud.dped.nobody"), std::string::npos)
        << r.error().message;
}

TEST(BusClient, RequestOnTheClientThreadFailsInsteadOfDeadlocking) {
    auto hub = startHub();
    auto c = connectTo(*hub);
    std::promise<std::string> inner;
    auto id = c->subscribe("pcloud.t", [&](const Message&) {
        auto r = c->request("pcloud.cped", "{}", 100ms);
        inner.set_value(r.ok() ? "ok" : r.error().message);
    });
    ASSERT_TRUE(c->waitSubscribed(id, kDeadline));
    ASSERT_TRUE(c->send("pcloud.t", "{}").ok());
    auto f = inner.get_future();
    ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
    EXPECT_NE(f.get().find("deadlock"), std::string::npos);
}

TEST(BusClient, RequestAsyncRunsTheCallbackOnce) {
    auto hub = startHub();
    auto server = connectTo(*hub);
    ASSERT_TRUE(server->waitSubscribed(server->serve("pcloud.cped", echoHandler()), kDeadline));
    auto shell = connectTo(*hub);
    std::promise<Result<Message>> p;
    shell->requestAsync("pcloud.cped", R"({"v":1,"id":"a1"})", 5s,
                        [&](Result<Message> r) { p.set_value(std::move(r)); }, {}, "a1");
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->correlationId, "a1");
}

TEST(BusClient, OutgoingQueueIsBoundedWhileDisconnected) {
    Client c;
    ClientOptions o;
    o.url = "amqp://127.0.0.1:1"; // nothing listens there: the client keeps retrying
    o.maxPendingSends = 3;
    ASSERT_TRUE(c.connect(o).ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.send("pcloud.cped", numbered(i)).ok());
    Status full = c.send("pcloud.cped", numbered(3));
    ASSERT_FALSE(full.ok());
    EXPECT_NE(full.error().message.find("full"), std::string::npos);
    EXPECT_EQ(c.stats().pending, 3u);
    EXPECT_FALSE(c.connected());
}

TEST(BusClient, BadUrlIsRefusedUpFront) {
    Client c;
    Status s = c.connect("http://127.0.0.1:80");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("scheme"), std::string::npos);
}

TEST(BusClient, ReconnectsAfterHubRestartAndRestoresSubscriptions) {
    auto hub = startHub();
    int port = hub->boundPort();
    std::string url = hubUrl(*hub);
    auto server = connectTo(*hub);
    auto serveId = server->serve("pcloud.cped", echoHandler());
    Inbox events, queue;
    auto listener = connectTo(*hub);
    auto e = listener->subscribe("pcloud.events", events.callback());
    auto q = listener->subscribe("pcloud.agent.node01", queue.callback());
    ASSERT_TRUE(listener->waitSubscribed(e, kDeadline));
    ASSERT_TRUE(listener->waitSubscribed(q, kDeadline));
    ASSERT_TRUE(server->waitSubscribed(serveId, kDeadline));

    hub->stop();
    ASSERT_TRUE(waitUntil([&] { return !listener->connected() && !server->connected(); }));
    // Sent while the hub is down: waits in the client.
    auto sender = std::make_unique<Client>();
    ASSERT_TRUE(sender->connect(url).ok());
    ASSERT_TRUE(sender->send("pcloud.agent.node01", numbered(7)).ok());

    auto hub2 = std::make_unique<Hub>();
    ASSERT_TRUE(waitUntil([&] { return hub2->start(url).ok(); })) << "port " << port << " not free again";
    EXPECT_EQ(hub2->boundPort(), port);
    ASSERT_TRUE(listener->waitConnected(kDeadline));
    ASSERT_TRUE(listener->waitSubscribed(e, kDeadline));
    ASSERT_TRUE(listener->waitSubscribed(q, kDeadline));
    ASSERT_TRUE(server->waitSubscribed(serveId, kDeadline));
    EXPECT_GE(listener->stats().connects, 2u);

    ASSERT_TRUE(queue.waitFor(1));
    EXPECT_EQ(queue.bodies()[0], numbered(7));
    ASSERT_TRUE(sender->send("pcloud.events", numbered(8)).ok());
    ASSERT_TRUE(events.waitFor(1));
    auto shell = connectTo(*hub2);
    auto r = shell->request("pcloud.cped", R"({"v":1,"id":"after"})", 5s, {}, "after");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(nlohmann::json::parse(r->body)["id"], "after");
}

} // namespace pcloud::bus::test
