// The same client against RabbitMQ 3.10 with its AMQP 1.0 plugin (scripts/setup-rabbitmq.sh,
// opt-in with PCLOUD_TEST_RABBITMQ=1). SKIPs when no broker answers on 127.0.0.1:5682
// (PCLOUD_RABBITMQ_PORT), unless PCLOUD_TEST_RABBITMQ=1 says it must be there.
#include "bus_test_util.h"
#include "rabbitmq_test_util.h"
#include "support/test_support.h"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

namespace pcloud::bus::test {

namespace {
// scripts/setup-rabbitmq.sh puts RabbitMQ on 5682, leaving 5672 to pcloud's embedded hub.
int rabbitPort() {
    const char* p = std::getenv("PCLOUD_RABBITMQ_PORT");
    return p ? std::atoi(p) : 5682;
}
} // namespace

TEST(BusRabbitMq, RequestReplyAndTopicThroughRabbitMq) {
    const int port = rabbitPort();
    const std::string rabbitUrl = "amqp://guest:guest@127.0.0.1:" + std::to_string(port);
    if (!portAnswers(port)) {
        if (required())
            FAIL() << "PCLOUD_TEST_RABBITMQ=1 but nothing answers on 127.0.0.1:" << port;
        GTEST_SKIP() << "RabbitMQ is not reachable on 127.0.0.1:" << port
                     << " (run PCLOUD_TEST_RABBITMQ=1 scripts/setup-rabbitmq.sh)";
    }
    // Unique names so reruns against a long-lived broker do not see old messages.
    std::string tag = std::to_string(std::random_device{}());
    std::string service = "pcloud.test.cped." + tag;
    std::string topic = "pcloud.events.test" + tag;

    Client server, shell;
    ClientOptions o;
    o.url = rabbitUrl;
    o.addressPrefix = "/queue/";
    ASSERT_TRUE(server.connect(o).ok());
    ASSERT_TRUE(shell.connect(o).ok());
    if (!server.waitConnected(10s) && required())
        FAIL() << "RabbitMQ answers but no AMQP 1.0 session came up (is rabbitmq_amqp1_0 enabled?)";
    if (!server.connected())
        GTEST_SKIP() << "RabbitMQ answers but no AMQP 1.0 session with a dynamic reply "
                        "address came up (is rabbitmq_amqp1_0 enabled?)";
    ASSERT_TRUE(shell.waitConnected(kDeadline));

    auto serveId = server.serve(service, [](const Message& m) -> std::optional<std::string> {
        auto j = nlohmann::json::parse(m.body, nullptr, false);
        return nlohmann::json{
            {"v", 1}, {"id", j.is_discarded() ? "" : j.value("id", "")}, {"ok", true}}
            .dump();
    });
    ASSERT_TRUE(server.waitSubscribed(serveId, kDeadline));
    auto r = shell.request(service, R"({"v":1,"type":"status","id":"rq1"})", 10s, {}, "rq1");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(nlohmann::json::parse(r->body)["id"], "rq1");
    EXPECT_EQ(r->correlationId, "rq1");

    Inbox a, b;
    auto ia = server.subscribe(topic, a.callback());
    auto ib = shell.subscribe(topic, b.callback());
    ASSERT_TRUE(server.waitSubscribed(ia, kDeadline));
    ASSERT_TRUE(shell.waitSubscribed(ib, kDeadline));
    for (int i = 0; i < 3; ++i)
        ASSERT_TRUE(shell.send(topic, numbered(i)).ok());
    ASSERT_TRUE(a.waitFor(3));
    ASSERT_TRUE(b.waitFor(3));
    EXPECT_EQ(a.bodies()[2], numbered(2));
}

} // namespace pcloud::bus::test
