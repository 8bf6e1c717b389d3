// What the hub logs when a connection ends: nothing for a clean AMQP close, an info line that
// names the peer for one that just went away, and a warning that names the peer for one that
// does not speak AMQP 1.0. Real sockets on loopback; the hub's log (stderr) goes to a file that
// the test reads, polling until the expected line is there.
#include "bus/proton_util.h"
#include "bus_test_util.h"
#include "common/log.h"
#include "support/test_support.h"

#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace pcloud::bus::test {

namespace {

// A plain TCP peer, to misbehave in ways a proper client never would.
class RawPeer {
public:
    explicit RawPeer(int port) {
        fd_ = testsupport::connectLoopback(port, &local_);
        EXPECT_GE(fd_, 0) << "connect to the hub on port " << port;
    }
    ~RawPeer() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    // How the hub's log names this peer.
    std::string peerField() const { return "peer=" + local_ + " "; }
    void send(const std::string& bytes) {
        ASSERT_EQ(::write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    }
    // Reads until `n` bytes came (or the deadline passed).
    std::string read(size_t n) {
        std::string got;
        waitUntil([&] {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 10) > 0) {
                char buf[512];
                ssize_t r = ::read(fd_, buf, sizeof buf);
                if (r > 0)
                    got.append(buf, static_cast<size_t>(r));
            }
            return got.size() >= n;
        });
        return got;
    }
    // Goes away with a FIN, as a process does when it exits without closing AMQP.
    void leave() {
        ::close(fd_);
        fd_ = -1;
    }
    // Goes away with a RST.
    void reset() {
        linger l{1, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        leave();
    }

private:
    int fd_ = -1;
    std::string local_;
};

const std::string kAmqpHeader("AMQP\x00\x01\x00\x00", 8);

class HubLog : public ::testing::Test {
protected:
    void SetUp() override {
        saved_ = log::level();
        log::setLevel(log::Level::Info); // before the hub's thread exists
        capture_ = std::make_unique<StderrCapture>();
        hub_ = std::make_unique<Hub>(insecureOptions());
        Status s = hub_->start("amqp://127.0.0.1:0");
        ASSERT_TRUE(s.ok()) << s.error().describe();
    }
    void TearDown() override {
        hub_.reset();
        capture_.reset();
        log::setLevel(saved_);
    }
    // A peer that sends garbage: its warning line, once it is there, also tells that the hub
    // has handled everything that happened before it.
    std::string garbageLine() {
        RawPeer garbage(hub_->boundPort());
        garbage.send("GET / HTTP/1.0\r\n\r\n");
        return capture_->waitForLine(garbage.peerField());
    }
    log::Level saved_{};
    std::unique_ptr<StderrCapture> capture_;
    std::unique_ptr<Hub> hub_;
};

} // namespace

TEST_F(HubLog, CleanCloseLogsNothing) {
    {
        Client c;
        ASSERT_TRUE(c.connect(hubUrl(*hub_)).ok());
        ASSERT_TRUE(c.waitConnected(kDeadline));
        auto id = c.subscribe("pcloud.events", [](const Message&) {});
        ASSERT_TRUE(c.waitSubscribed(id, kDeadline));
        c.close();
    }
    ASSERT_NE(garbageLine(), "");
    std::string log = capture_->text();
    EXPECT_EQ(log.find("disconnected"), std::string::npos) << log;
    EXPECT_EQ(log.find("connection aborted"), std::string::npos) << log;
}

TEST_F(HubLog, PeerThatGoesAwayIsAnInfoLineNamingIt) {
    // Gone after the protocol header (what a killed client looks like to the hub).
    RawPeer exited(hub_->boundPort());
    exited.send(kAmqpHeader);
    ASSERT_EQ(exited.read(8), kAmqpHeader); // nothing left unread: the close is a FIN
    std::string field = exited.peerField();
    exited.leave();
    std::string line = capture_->waitForLine(field);
    ASSERT_NE(line, "");
    EXPECT_NE(line.find(" info: Hub peer disconnected without closing its connection"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("the connection ended without an AMQP close"), std::string::npos) << line;
    EXPECT_EQ(line.find("framing"), std::string::npos) << line;

    // Reset by the peer.
    RawPeer reset(hub_->boundPort());
    reset.send(kAmqpHeader);
    ASSERT_EQ(reset.read(8), kAmqpHeader);
    field = reset.peerField();
    reset.reset();
    line = capture_->waitForLine(field);
    ASSERT_NE(line, "");
    EXPECT_NE(line.find(" info: Hub peer disconnected"), std::string::npos) << line;
    EXPECT_NE(line.find("reset"), std::string::npos) << line;

    // Connected and left without a byte (a port probe).
    RawPeer probe(hub_->boundPort());
    field = probe.peerField();
    probe.leave();
    line = capture_->waitForLine(field);
    ASSERT_NE(line, "");
    EXPECT_NE(line.find(" info: Hub peer disconnected"), std::string::npos) << line;
    EXPECT_NE(line.find("before sending anything"), std::string::npos) << line;
}

TEST_F(HubLog, GarbageIsAWarningNamingThePeerAndTheHubServesOn) {
    std::string line = garbageLine();
    ASSERT_NE(line, "");
    EXPECT_NE(line.find(" warning: Hub dropped a peer that broke the AMQP 1.0 protocol"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("Unknown protocol detected"), std::string::npos) << line;

    Client server, shell;
    ASSERT_TRUE(server.connect(hubUrl(*hub_)).ok());
    auto id = server.serve("pcloud.cped", [](const Message&) -> std::optional<std::string> {
        return std::string(R"({"v":1,"ok":true})");
    });
    ASSERT_TRUE(server.waitSubscribed(id, kDeadline));
    ASSERT_TRUE(shell.connect(hubUrl(*hub_)).ok());
    auto r = shell.request("pcloud.cped", R"({"v":1,"id":"after-garbage"})", 5s);
    ASSERT_TRUE(r.ok()) << r.error().describe();
}

TEST(HubTransportFailure, OnlyBrokenProtocolIsAProtocolError) {
    struct Case {
        const char* condition;
        const char* description;
        bool protocolError;
        const char* reason;
    };
    const Case cases[] = {
        {"amqp:connection:framing-error", "connection aborted", false,
         "the connection ended without an AMQP close"},
        {"amqp:connection:framing-error", "No protocol header found (connection aborted)", false,
         "the peer left before sending anything"},
        {"proton:io", "Connection reset by peer - disconnected :5672 (connection aborted)", false,
         "Connection reset by peer"},
        {"proton:io", "Broken pipe", false, "Broken pipe"},
        {"amqp:resource-limit-exceeded", "local-idle-timeout expired", false,
         "no heartbeat within the idle timeout"},
        {"amqp:connection:framing-error", "Unknown protocol detected: 'GET / HTTP/1.0'", true,
         "amqp:connection:framing-error: Unknown protocol detected: 'GET / HTTP/1.0'"},
        {"amqp:connection:framing-error",
         "End of input stream before protocol detection: 'AM' (connection aborted)", true,
         "amqp:connection:framing-error: End of input stream before protocol detection: 'AM' "
         "(connection aborted)"},
        {"amqp:decode-error", "", true, "amqp:decode-error"},
    };
    for (const auto& c : cases) {
        auto f = detail::classifyTransportFailure(c.condition, c.description);
        EXPECT_EQ(f.protocolError, c.protocolError) << c.condition << " " << c.description;
        EXPECT_EQ(f.reason, c.reason) << c.condition << " " << c.description;
    }
}

} // namespace pcloud::bus::test
