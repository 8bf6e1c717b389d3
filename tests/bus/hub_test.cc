// The embedded hub's semantics, through real Proton connections on loopback.
#include "bus_test_util.h"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>

namespace pcloud::bus::test {

class HubTest : public ::testing::Test {
protected:
    void startHub(HubOptions options = {}) {
        hub_ = std::make_unique<Hub>(insecureOptions(std::move(options)));
        Status s = hub_->start("amqp://127.0.0.1:0");
        ASSERT_TRUE(s.ok()) << s.error().describe();
        ASSERT_GT(hub_->boundPort(), 0);
    }
    std::unique_ptr<Client> client(ClientOptions o = {}) {
        auto c = std::make_unique<Client>();
        o.url = hubUrl(*hub_);
        EXPECT_TRUE(c->connect(o).ok());
        EXPECT_TRUE(c->waitConnected(kDeadline));
        return c;
    }
    std::unique_ptr<Hub> hub_;
};

TEST_F(HubTest, ListenOnPortZeroReportsTheRealPortAndABusyPortIsAnError) {
    startHub();
    Hub second;
    Status s = second.start(hubUrl(*hub_));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find(std::to_string(hub_->boundPort())), std::string::npos)
        << s.error().message;
    EXPECT_FALSE(second.running());
}

// A restarted in-guest agent starts a new AMQP connection inside the byte stream of the old
// one (its virtio-serial relay keeps the hub connection). The hub must drop that connection
// at once, so the relay reconnects and the new agent gets through; it must not wait for the
// ~1 GiB frame that "AMQP" reads as.
TEST_F(HubTest, AProtocolHeaderInsideAConnectionClosesItAtOnce) {
    startHub();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(hub_->boundPort()));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    const char header[8] = {'A', 'M', 'Q', 'P', 0, 1, 0, 0};
    ASSERT_EQ(::write(fd, header, sizeof header), 8);
    char got[8];
    ASSERT_EQ(::recv(fd, got, sizeof got, MSG_WAITALL), 8);
    ASSERT_EQ(std::string(got, 4), "AMQP");
    // Next the hub reads frames. Send the header it answered with (the same kind of
    // connection start a new agent sends) where a frame is due.
    ASSERT_EQ(::write(fd, got, sizeof got), 8);
    auto until = std::chrono::steady_clock::now() + 3s;
    bool closed = false;
    while (!closed && std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
            char buf[4096];
            closed = ::read(fd, buf, sizeof buf) <= 0; // frames (open, close), then EOF
        }
    }
    ::close(fd);
    EXPECT_TRUE(closed) << "the hub kept a connection that restarted inside itself";
    // The hub itself is fine.
    auto c = client();
    EXPECT_TRUE(c->connected());
}

TEST_F(HubTest, QueueDeliversInOrder) {
    startHub();
    auto consumer = client();
    auto producer = client();
    Inbox inbox;
    auto id = consumer->subscribe("pcloud.reports.node01", inbox.callback());
    ASSERT_TRUE(consumer->waitSubscribed(id, kDeadline));
    for (int i = 0; i < 20; ++i)
        ASSERT_TRUE(producer->send("pcloud.reports.node01", numbered(i)).ok());
    ASSERT_TRUE(inbox.waitFor(20));
    auto bodies = inbox.bodies();
    for (int i = 0; i < 20; ++i)
        EXPECT_EQ(bodies[i], numbered(i));
    EXPECT_EQ(inbox.messages()[0].address, "pcloud.reports.node01");
    auto c = countersOf(*hub_, "pcloud.reports.node01");
    EXPECT_EQ(c.in, 20u);
    EXPECT_EQ(c.out, 20u);
    EXPECT_FALSE(c.topic);
}

TEST_F(HubTest, QueueRoundRobinsBetweenReceivers) {
    startHub();
    auto a = client();
    auto b = client();
    auto producer = client();
    Inbox ia, ib;
    ASSERT_TRUE(a->waitSubscribed(a->subscribe("pcloud.dped.web", ia.callback()), kDeadline));
    ASSERT_TRUE(b->waitSubscribed(b->subscribe("pcloud.dped.web", ib.callback()), kDeadline));
    for (int i = 0; i < 10; ++i)
        ASSERT_TRUE(producer->send("pcloud.dped.web", numbered(i)).ok());
    ASSERT_TRUE(waitUntil([&] { return ia.size() + ib.size() == 10; }));
    EXPECT_EQ(ia.size(), 5u);
    EXPECT_EQ(ib.size(), 5u);
}

TEST_F(HubTest, QueueKeepsMessagesUntilAReceiverAttaches) {
    startHub();
    auto producer = client();
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(producer->send("pcloud.agent.node02", numbered(i)).ok());
    ASSERT_TRUE(waitUntil([&] { return countersOf(*hub_, "pcloud.agent.node02").depth == 5; }));
    auto consumer = client();
    Inbox inbox;
    consumer->subscribe("pcloud.agent.node02", inbox.callback());
    ASSERT_TRUE(inbox.waitFor(5));
    EXPECT_EQ(inbox.bodies().front(), numbered(0));
    EXPECT_EQ(countersOf(*hub_, "pcloud.agent.node02").depth, 0u);
}

TEST_F(HubTest, TopicFansOutToEverySubscriberAndStoresNothing) {
    startHub();
    auto producer = client();
    // Sent before anyone subscribes: a topic keeps nothing.
    ASSERT_TRUE(producer->send("pcloud.events", numbered(-1)).ok());
    ASSERT_TRUE(waitUntil([&] { return countersOf(*hub_, "pcloud.events").in == 1; }));
    constexpr int kSubs = 4;
    std::vector<std::unique_ptr<Client>> subs;
    std::vector<Inbox> inboxes(kSubs);
    for (int i = 0; i < kSubs; ++i) {
        subs.push_back(client());
        ASSERT_TRUE(subs.back()->waitSubscribed(
            subs.back()->subscribe("pcloud.events", inboxes[i].callback()), kDeadline));
    }
    for (int i = 0; i < 10; ++i)
        ASSERT_TRUE(producer->send("pcloud.events", numbered(i)).ok());
    for (auto& in : inboxes) {
        ASSERT_TRUE(in.waitFor(10));
        EXPECT_EQ(in.bodies().front(), numbered(0));
    }
    auto c = countersOf(*hub_, "pcloud.events");
    EXPECT_TRUE(c.topic);
    EXPECT_EQ(c.in, 11u);
    EXPECT_EQ(c.out, 10u * kSubs);
    EXPECT_EQ(c.receivers, static_cast<std::size_t>(kSubs));
    // Sub-topics fan out too.
    EXPECT_TRUE(countersOf(*hub_, "pcloud.events").topic);
    Inbox sub;
    ASSERT_TRUE(subs[0]->waitSubscribed(subs[0]->subscribe("pcloud.events.web", sub.callback()),
                                        kDeadline));
    ASSERT_TRUE(producer->send("pcloud.events.web", numbered(1)).ok());
    ASSERT_TRUE(sub.waitFor(1));
    EXPECT_TRUE(countersOf(*hub_, "pcloud.events.web").topic);
}

TEST_F(HubTest, FullQueueStopsCreditSoTheProducerWaitsAndNothingIsLost) {
    HubOptions o;
    o.maxQueueDepth = 10;
    o.producerCreditWindow = 4;
    startHub(o);
    auto producer = client();
    for (int i = 0; i < 50; ++i)
        ASSERT_TRUE(producer->send("pcloud.cped", numbered(i)).ok());
    // The hub takes exactly as many as fit; the rest wait in the producer.
    ASSERT_TRUE(waitUntil([&] {
        return countersOf(*hub_, "pcloud.cped").in == 10 && producer->stats().pending == 40;
    })) << hub_->countersJson()
        << " pending=" << producer->stats().pending;
    EXPECT_EQ(countersOf(*hub_, "pcloud.cped").depth, 10u);
    auto consumer = client();
    Inbox inbox;
    consumer->subscribe("pcloud.cped", inbox.callback());
    ASSERT_TRUE(inbox.waitFor(50));
    auto bodies = inbox.bodies();
    ASSERT_EQ(bodies.size(), 50u);
    for (int i = 0; i < 50; ++i)
        EXPECT_EQ(bodies[i], numbered(i));
    auto c = countersOf(*hub_, "pcloud.cped");
    EXPECT_EQ(c.in, 50u);
    EXPECT_EQ(c.dropped, 0u);
    EXPECT_TRUE(producer->waitIdle(kDeadline));
}

TEST_F(HubTest, SlowTopicSubscriberLosesItsOldestEventsAndTheyAreCounted) {
    HubOptions o;
    o.maxSubscriberBuffer = 5;
    startHub(o);
    // The slow subscriber's callback blocks (on its own client thread) until released.
    ClientOptions slowOptions;
    slowOptions.receiverCredit = 1;
    auto slow = client(slowOptions);
    std::mutex m;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> entered{0};
    Inbox slowInbox;
    auto slowCb = slowInbox.callback();
    auto id = slow->subscribe("pcloud.events", [&](const Message& msg) {
        slowCb(msg);
        ++entered;
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return release; });
    });
    ASSERT_TRUE(slow->waitSubscribed(id, kDeadline));
    auto fast = client();
    Inbox fastInbox;
    ASSERT_TRUE(
        fast->waitSubscribed(fast->subscribe("pcloud.events", fastInbox.callback()), kDeadline));
    auto producer = client();
    for (int i = 0; i < 50; ++i)
        ASSERT_TRUE(producer->send("pcloud.events", numbered(i)).ok());
    ASSERT_TRUE(fastInbox.waitFor(50)); // the fast one misses nothing
    ASSERT_TRUE(waitUntil([&] {
        auto c = countersOf(*hub_, "pcloud.events");
        return c.in == 50 && c.depth == 5;
    })) << hub_->countersJson();
    auto c = countersOf(*hub_, "pcloud.events");
    std::uint64_t toSlow = c.out - 50; // what the slow subscriber was handed
    EXPECT_EQ(c.dropped, 50 - toSlow - 5);
    EXPECT_GT(c.dropped, 0u);
    {
        std::lock_guard lock(m);
        release = true;
    }
    cv.notify_all();
    ASSERT_TRUE(slowInbox.waitFor(toSlow + 5));
    auto bodies = slowInbox.bodies();
    // What survives in the buffer is the newest events.
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(bodies[bodies.size() - 5 + i], numbered(45 + i));
}

TEST_F(HubTest, CoalesceKeyReplacesTheOlderQueuedMessage) {
    startHub();
    auto producer = client();
    ASSERT_TRUE(producer->send("pcloud.reports.n1", "hb1", {{"coalesce-key", "hb.n1"}}).ok());
    ASSERT_TRUE(producer->send("pcloud.reports.n1", "hbB", {{"coalesce-key", "hb.n2"}}).ok());
    ASSERT_TRUE(producer->send("pcloud.reports.n1", "service-failed").ok());
    ASSERT_TRUE(producer->send("pcloud.reports.n1", "hb2", {{"coalesce-key", "hb.n1"}}).ok());
    ASSERT_TRUE(producer->send("pcloud.reports.n1", "hb3", {{"coalesce-key", "hb.n1"}}).ok());
    ASSERT_TRUE(waitUntil([&] { return countersOf(*hub_, "pcloud.reports.n1").in == 5; }));
    auto c = countersOf(*hub_, "pcloud.reports.n1");
    EXPECT_EQ(c.depth, 3u);
    EXPECT_EQ(c.coalesced, 2u);
    auto consumer = client();
    Inbox inbox;
    consumer->subscribe("pcloud.reports.n1", inbox.callback());
    ASSERT_TRUE(inbox.waitFor(3));
    EXPECT_EQ(inbox.bodies(), (std::vector<std::string>{"hb3", "hbB", "service-failed"}));
    EXPECT_EQ(inbox.messages()[0].properties.at("coalesce-key"), "hb.n1");
}

TEST_F(HubTest, MalformedAndOversizedMessagesDoNotHurtTheHub) {
    HubOptions o;
    o.maxMessageBytes = 1024;
    startHub(o);
    auto consumer = client();
    Inbox inbox;
    ASSERT_TRUE(
        consumer->waitSubscribed(consumer->subscribe("pcloud.cped", inbox.callback()), kDeadline));
    auto producer = client();
    ASSERT_TRUE(producer->send("pcloud.cped", "{not json at all").ok());
    ASSERT_TRUE(producer->send("pcloud.cped", std::string(4096, 'x')).ok());
    ASSERT_TRUE(producer->send("pcloud.cped", std::string("\xff\xfe\0binary", 9)).ok());
    ASSERT_TRUE(producer->send("pcloud.cped", numbered(1)).ok());
    ASSERT_TRUE(inbox.waitFor(3));
    // The hub does not parse bodies: non-JSON passes (the receiver reports it); the oversized
    // one is rejected back to its sender and counted.
    EXPECT_EQ(inbox.bodies(),
              (std::vector<std::string>{"{not json at all", std::string("\xff\xfe\0binary", 9),
                                        numbered(1)}));
    ASSERT_TRUE(waitUntil([&] { return producer->stats().rejected == 1; }));
    EXPECT_EQ(countersOf(*hub_, "pcloud.cped").rejected, 1u);
    // And it still serves everybody.
    ASSERT_TRUE(producer->send("pcloud.cped", numbered(2)).ok());
    ASSERT_TRUE(inbox.waitFor(4));
}

TEST_F(HubTest, CountersAreJsonForTheStatusCommand) {
    startHub();
    auto producer = client();
    ASSERT_TRUE(producer->send("pcloud.cped", numbered(1)).ok());
    ASSERT_TRUE(waitUntil([&] { return countersOf(*hub_, "pcloud.cped").in == 1; }));
    auto j = nlohmann::json::parse(hub_->countersJson());
    EXPECT_EQ(j["pcloud.cped"]["in"], 1);
    EXPECT_EQ(j["pcloud.cped"]["depth"], 1);
    EXPECT_EQ(j["pcloud.cped"]["topic"], false);
}

TEST_F(HubTest, RabbitMqStyleAddressesMapToTheSameNodes) {
    startHub();
    ClientOptions o;
    o.addressPrefix = "/queue/"; // topics then use "/topic/"
    auto rabbitStyle = client(o);
    auto plain = client();
    Inbox q, t;
    ASSERT_TRUE(plain->waitSubscribed(plain->subscribe("pcloud.cped", q.callback()), kDeadline));
    ASSERT_TRUE(plain->waitSubscribed(plain->subscribe("pcloud.events", t.callback()), kDeadline));
    ASSERT_TRUE(rabbitStyle->send("pcloud.cped", numbered(1)).ok());
    ASSERT_TRUE(rabbitStyle->send("pcloud.events", numbered(2)).ok());
    ASSERT_TRUE(q.waitFor(1));
    ASSERT_TRUE(t.waitFor(1));
    EXPECT_EQ(hub_->counters().count("/queue/pcloud.cped"), 0u);
}

} // namespace pcloud::bus::test
