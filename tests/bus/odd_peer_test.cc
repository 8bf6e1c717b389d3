// Messages our own client never sends, from a foreign AMQP stack (python3-qpid-proton):
// an application property whose value is a list (legal AMQP, not a valid property) used to
// throw inside the hub's and the client's message handler and end their thread; list and
// map bodies used to skip the size cap (only string and binary bodies were measured). Each
// is now rejected and counted, and the hub or client keeps serving.
#include "bus/proton_util.h"
#include "bus_test_util.h"

#include "support/test_support.h"

#include <csignal>
#include <cstdio>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <proton/message.hpp>

namespace pcloud::bus::test {

namespace {

const std::string kOddPeer = "/usr/bin/python3 " PCLOUD_BUS_TEST_DIR "/odd_peer.py";

std::string run(const std::string& cmd, int& status) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) {
        status = -1;
        return out;
    }
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    status = pclose(p);
    return out;
}

void requirePythonProton() {
    int status = 0;
    run("/usr/bin/python3 -c 'import proton' 2>&1", status);
    ASSERT_EQ(status, 0) << "python3-qpid-proton is missing (scripts/install-deps.sh installs it)";
}

} // namespace

proton::message decodeHex(const std::string& hex) {
    std::vector<char> bytes;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    proton::message m;
    m.decode(bytes);
    return m;
}

proton::message encoded(const std::string& kind) {
    int status = 0;
    std::string hex = run(kOddPeer + " encode " + kind, status);
    EXPECT_EQ(status, 0) << hex;
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == ' '))
        hex.pop_back();
    return decodeHex(hex);
}

// The helpers the hub and the client use, on exactly the bytes a foreign peer sends.
TEST(BusOddPeer, SizeIsMeasuredForEveryBodyTypeAndBadPropertiesAreNamed) {
    requirePythonProton();
    for (const char* kind : {"big-list", "big-map"}) {
        auto m = encoded(kind);
        auto size = detail::messageSize(m);
        ASSERT_TRUE(size.has_value()) << kind;
        EXPECT_GT(*size, 1u << 20) << kind; // bodySize() used to say 0 for these
        EXPECT_EQ(detail::undecodableReason(m), "") << kind;
    }
    auto bad = encoded("list-property");
    // Re-encoding it (the hub's send) throws: what used to end the hub's thread.
    EXPECT_NE(detail::undecodableReason(bad), "");
    EXPECT_FALSE(detail::messageSize(bad).has_value());
    EXPECT_EQ(detail::stringProperty(bad, "coalesce-key"), ""); // never throws
    auto good = encoded("good-1");
    EXPECT_EQ(detail::undecodableReason(good), "");
    ASSERT_TRUE(detail::messageSize(good).has_value());
    EXPECT_LT(*detail::messageSize(good), 100u);
}

TEST(BusOddPeer, HubRejectsMalformedPropertiesAndBigListOrMapBodiesAndKeepsServing) {
    requirePythonProton();
    Hub hub(insecureOptions()); // default cap: 1 MiB
    ASSERT_TRUE(hub.start("amqp://127.0.0.1:0").ok());
    Client consumer;
    ASSERT_TRUE(consumer.connect(hubUrl(hub)).ok());
    Inbox inbox;
    ASSERT_TRUE(
        consumer.waitSubscribed(consumer.subscribe("pcloud.cped", inbox.callback()), kDeadline));

    int status = 0;
    std::string out =
        run("timeout 30 " + kOddPeer + " send 127.0.0.1:" + std::to_string(hub.boundPort()) +
                " pcloud.cped list-property big-list big-map good-1 2>&1",
            status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_NE(out.find("list-property rejected"), std::string::npos) << out;
    EXPECT_NE(out.find("big-list rejected"), std::string::npos) << out;
    EXPECT_NE(out.find("big-map rejected"), std::string::npos) << out;
    EXPECT_NE(out.find("good-1 accepted"), std::string::npos) << out;
    EXPECT_EQ(countersOf(hub, "pcloud.cped").rejected, 3u);

    // Only the good one reached the consumer, and the hub still serves everybody.
    ASSERT_TRUE(inbox.waitFor(1));
    Client producer;
    ASSERT_TRUE(producer.connect(hubUrl(hub)).ok());
    ASSERT_TRUE(producer.send("pcloud.cped", "after").ok());
    ASSERT_TRUE(inbox.waitFor(2));
    EXPECT_EQ(inbox.bodies(), (std::vector<std::string>{"good-1", "after"}));
    EXPECT_TRUE(hub.running());
}

TEST(BusOddPeer, ClientRefusesMalformedAndOversizedMessagesAndKeepsReceiving) {
    requirePythonProton();
    // The client talks straight to the Python peer, so nothing filters for it.
    int port = pcloud::testsupport::freePort();
    std::string log = "/tmp/pcloud-odd-peer-" + std::to_string(::getpid()) + ".log";
    pid_t peer = ::fork();
    if (peer == 0) {
        std::string cmd = "exec " + kOddPeer + " serve " + std::to_string(port) +
                          " list-property big-list big-map good-2 >" + log + " 2>&1";
        ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    Client client;
    ASSERT_TRUE(client.connect("amqp://127.0.0.1:" + std::to_string(port)).ok());
    Inbox inbox;
    client.subscribe("pcloud.odd", inbox.callback());
    bool got = inbox.waitFor(1, 20s);
    auto stats = client.stats();
    ::kill(peer, SIGTERM);
    ::waitpid(peer, nullptr, 0);
    int st = 0;
    std::string peerLog = run("cat " + log, st);
    ::unlink(log.c_str());
    ASSERT_TRUE(got) << peerLog;
    // The three bad ones came first; the client's thread survived them and took the good one.
    EXPECT_EQ(inbox.bodies(), (std::vector<std::string>{"good-2"}));
    EXPECT_EQ(stats.refused, 3u) << peerLog;
}

} // namespace pcloud::bus::test
