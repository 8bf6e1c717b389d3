// dped's end of the guest channel: AgentSession (the AMQP server side, paired in memory
// with a client connection_driver) and ChannelPeer over a real unix socket standing in for
// QEMU's channel socket, fed a well-behaved agent, garbage, oversized frames and a flood.
#include "dped/channel_peer.h"
#include "dped/journal_gate.h"
#include "proto/agent_messages.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <proton/connection_options.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender_options.hpp>
#include <proton/target.hpp>
#include <proton/transport.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace pcloud;
using namespace pcloud::dped;
using namespace std::chrono_literals;

namespace {

// The agent's side in miniature: the same links AmqpLink opens.
struct FakeAgent : proton::messaging_handler {
    std::string reports_addr, commands_addr;
    proton::sender sender;
    bool sender_open = false, receiver_open = false;
    std::vector<std::string> commands;
    std::vector<std::string> errors;
    std::deque<std::string> to_send;

    void on_connection_open(proton::connection& c) override {
        sender = c.open_sender(reports_addr);
        c.open_receiver(commands_addr, proton::receiver_options().credit_window(16));
    }
    void on_sender_open(proton::sender&) override { sender_open = true; }
    void on_receiver_open(proton::receiver&) override { receiver_open = true; }
    void on_sendable(proton::sender&) override { flush(); }
    void flush() {
        while (sender_open && !to_send.empty() && sender.credit() > 0) {
            proton::message m;
            m.body(to_send.front());
            to_send.pop_front();
            sender.send(m);
        }
    }
    void on_message(proton::delivery&, proton::message& m) override {
        commands.push_back(proton::get<std::string>(m.body()));
    }
    void on_sender_error(proton::sender& s) override {
        errors.push_back(s.error().name());
        sender_open = false;
    }
    void on_receiver_error(proton::receiver& r) override { errors.push_back(r.error().name()); }
    void on_error(const proton::error_condition& e) override { errors.push_back(e.name()); }
};

// Moves bytes between two drivers until neither has anything to say.
void shuttle(proton::io::connection_driver& client, AgentSession& server, FakeAgent& agent) {
    for (int i = 0; i < 200; ++i) {
        bool moved = false;
        client.dispatch();
        agent.flush();
        auto wb = client.write_buffer();
        if (wb.size > 0) {
            auto rb = server.readBuffer();
            std::size_t n = std::min(wb.size, rb.size);
            std::memcpy(rb.data, wb.data, n);
            server.readDone(n);
            client.write_done(n);
            moved = moved || n > 0;
        }
        server.process();
        auto sb = server.writeBuffer();
        if (sb.size > 0) {
            auto rb = client.read_buffer();
            std::size_t n = std::min(sb.size, rb.size);
            std::memcpy(rb.data, sb.data, n);
            client.read_done(n);
            server.writeDone(n);
            moved = moved || n > 0;
        }
        if (!moved && !client.has_events())
            return;
    }
}

std::string hello(const std::string& assembly) {
    proto::Hello h;
    h.assembly = assembly;
    h.boot_id = "b1";
    h.backend = "process";
    h.agent_version = "test";
    return proto::encodeHello(h);
}
std::string heartbeat(std::uint64_t seq) {
    proto::Heartbeat h;
    h.seq = seq;
    h.boot_id = "b1";
    return proto::encodeHeartbeat(h);
}

AgentSessionOptions sessionOptions() {
    AgentSessionOptions o;
    o.assembly = "node01";
    o.keys = {"node01", "6F1C0D52-0000-4000-8000-000000000001"};
    return o;
}

struct Pair {
    FakeAgent agent;
    proton::io::connection_driver client{"agent"};
    std::vector<std::string> reports;
    std::vector<bool> attached;
    std::unique_ptr<AgentSession> server;

    explicit Pair(const std::string& key, AgentSessionOptions o = sessionOptions()) {
        agent.reports_addr = "pcloud.reports." + key;
        agent.commands_addr = "pcloud.agent." + key;
        AgentSession::Callbacks cb;
        cb.on_report = [this](std::string b) { reports.push_back(std::move(b)); };
        cb.on_attached = [this](bool up) { attached.push_back(up); };
        server = std::make_unique<AgentSession>(o, cb);
        proton::connection_options co;
        co.handler(agent);
        co.sasl_enabled(true);
        co.sasl_allowed_mechs("ANONYMOUS"); // what pcloud-agent uses without a user
        client.connect(co);
    }
    void run() { shuttle(client, *server, agent); }
};

TEST(AgentSession, AcceptsTheAgentsLinksCarriesReportsAndCommands) {
    Pair p("node01");
    p.run();
    ASSERT_TRUE(p.agent.sender_open);
    ASSERT_TRUE(p.agent.receiver_open);
    EXPECT_TRUE(p.server->attached());
    ASSERT_EQ(p.attached, std::vector<bool>{true});
    p.agent.to_send = {hello("node01"), heartbeat(1), heartbeat(2)};
    p.run();
    ASSERT_EQ(p.reports.size(), 3u);
    auto rep = proto::decodeReport(p.reports[2]);
    ASSERT_TRUE(rep);
    EXPECT_EQ(std::get<proto::Heartbeat>(rep->body).seq, 2u);
    EXPECT_TRUE(p.server->send(R"({"v":1,"type":"command","command":"ping","id":"x"})", "x"));
    p.run();
    ASSERT_EQ(p.agent.commands.size(), 1u);
    EXPECT_NE(p.agent.commands[0].find("\"ping\""), std::string::npos);
    EXPECT_TRUE(p.agent.errors.empty());
}

TEST(AgentSession, TheUuidIsAcceptedInAnyCase) {
    Pair p("6f1c0d52-0000-4000-8000-000000000001");
    p.run();
    EXPECT_TRUE(p.server->attached());
    p.agent.to_send = {hello("6f1c0d52-0000-4000-8000-000000000001")};
    p.run();
    EXPECT_EQ(p.reports.size(), 1u);
}

TEST(AgentSession, RefusesOtherAssembliesAddressesAsUnauthorized) {
    Pair p("node02");
    p.run();
    EXPECT_FALSE(p.server->attached());
    EXPECT_EQ(p.server->stats().refused_links, 2u);
    ASSERT_FALSE(p.agent.errors.empty());
    for (const auto& e : p.agent.errors)
        EXPECT_EQ(e, "amqp:unauthorized-access");
    EXPECT_FALSE(p.server->send("{}", ""));
}

TEST(AgentSession, DropsAHelloNamingAnotherAssembly) {
    Pair p("node01");
    p.run();
    p.agent.to_send = {hello("node02"), hello("node02"), heartbeat(1)};
    p.run();
    ASSERT_EQ(p.reports.size(), 1u); // only the heartbeat
    EXPECT_EQ(p.server->stats().mismatched_hellos, 2u);
}

TEST(AgentSession, AReportOverTheLimitEndsTheConnection) {
    auto o = sessionOptions();
    o.max_message = 1000;
    Pair p("node01", o);
    p.run();
    p.agent.to_send = {std::string(5000, 'x')};
    p.run();
    EXPECT_TRUE(p.reports.empty());
    EXPECT_TRUE(p.server->misbehaved());
    EXPECT_NE(p.server->error().find("larger than 1000"), std::string::npos) << p.server->error();
}

// The submissions a JournalGate made, answered by the test as cped would.
struct FakeJournal {
    struct Sent {
        nlohmann::json event;
        JournalGate::Done done;
    };
    std::vector<Sent> sent;
    JournalGate::Submit submit() {
        return [this](const std::string& body, JournalGate::Done done) {
            sent.push_back({nlohmann::json::parse(body), std::move(done)});
        };
    }
    std::vector<std::string> states(std::size_t from = 0) const {
        std::vector<std::string> out;
        for (std::size_t i = from; i < sent.size(); ++i)
            out.push_back(sent[i].event["state"]);
        return out;
    }
};

std::string eventBody(const std::string& state) {
    events::Event e;
    e.deployable = "web";
    e.state = state;
    return events::toJson(e).dump();
}

TEST(JournalGate, NumbersEachEventAndKeepsItUntilCpedJournaledIt) {
    ManualClock clock{1'700'000'000'000};
    FakeJournal cped;
    JournalGate gate(cped.submit(), "web", "dped-web-1", clock, 10);
    ASSERT_TRUE(gate.publish(eventBody("a")).ok());
    ASSERT_TRUE(gate.publish(eventBody("b")).ok());
    ASSERT_EQ(cped.sent.size(), 2u);
    EXPECT_EQ(cped.sent[0].event["source"], "dped-web-1");
    EXPECT_EQ(cped.sent[0].event["source_seq"], 1);
    EXPECT_EQ(cped.sent[1].event["source_seq"], 2);
    EXPECT_EQ(gate.held(), 2u);
    cped.sent[1].done(JournalGate::Answer::Journaled, "");
    EXPECT_EQ(gate.held(), 1u);
    // No answer for "a" (cped paused: the request timed out): sent again at once.
    cped.sent[0].done(JournalGate::Answer::NoAnswer, "timeout");
    ASSERT_EQ(cped.sent.size(), 3u);
    EXPECT_EQ(cped.sent[2].event["state"], "a");
    EXPECT_EQ(cped.sent[2].event["source_seq"], 1);
    cped.sent[2].done(JournalGate::Answer::Journaled, "");
    EXPECT_EQ(gate.held(), 0u);
    // A late answer to the first copy changes nothing.
    cped.sent[0].done(JournalGate::Answer::Journaled, "");
    EXPECT_EQ(gate.held(), 0u);
    EXPECT_EQ(cped.sent.size(), 3u);
}

TEST(JournalGate, EverythingUnansweredIsSentAgainAfterAReconnectAndOnlyThen) {
    ManualClock clock{1'700'000'000'000};
    FakeJournal cped;
    JournalGate gate(cped.submit(), "web", "dped-web-1", clock, 10);
    ASSERT_TRUE(gate.publish(eventBody("a")).ok()); // accepted by a hub that then died
    gate.setUp(false);
    ASSERT_TRUE(gate.publish(eventBody("b")).ok()); // never blocks, never fails
    EXPECT_EQ(cped.sent.size(), 1u) << "nothing is sent while the bus is down";
    // The lost connection fails the request to the old hub: no resend yet.
    cped.sent[0].done(JournalGate::Answer::NoAnswer, "connection lost");
    EXPECT_EQ(cped.sent.size(), 1u);
    gate.setUp(true);
    ASSERT_EQ(cped.states(1), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(cped.sent[1].event["source_seq"], 1);
    EXPECT_EQ(cped.sent[2].event["source_seq"], 2);
    // An answer to a send on the old connection does not send it a third time.
    cped.sent[0].done(JournalGate::Answer::NoAnswer, "timeout");
    EXPECT_EQ(cped.sent.size(), 3u);
    cped.sent[1].done(JournalGate::Answer::Journaled, "");
    cped.sent[2].done(JournalGate::Answer::Refused, "malformed");
    EXPECT_EQ(gate.held(), 0u) << "a refused event is forgotten, not resent forever";
}

TEST(JournalGate, BeyondCapacityTheOldestAreDroppedAndCountedInOneEvent) {
    ManualClock clock{1'700'000'000'000};
    FakeJournal cped;
    JournalGate gate(cped.submit(), "web", "dped-web-1", clock, 3);
    gate.setUp(false);
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(gate.publish(eventBody("e" + std::to_string(i))).ok());
    EXPECT_EQ(gate.held(), 3u);
    gate.setUp(true);
    ASSERT_EQ(cped.states(), (std::vector<std::string>{"events-dropped", "e2", "e3", "e4"}));
    const auto& dropped = cped.sent[0].event;
    EXPECT_EQ(dropped["deployable"], "web");
    EXPECT_NE(dropped["reason"].get<std::string>().find("2 events"), std::string::npos);
    EXPECT_EQ(dropped["source_seq"], 6) << "a number of its own";
    for (auto& s : cped.sent)
        s.done(JournalGate::Answer::Journaled, "");
    // A second outage without loss sends no events-dropped.
    gate.setUp(false);
    ASSERT_TRUE(gate.publish(eventBody("x")).ok());
    gate.setUp(true);
    EXPECT_EQ(cped.states(4), std::vector<std::string>{"x"});
}

TEST(JournalGate, AnAnswerInsideSubmitNeitherDeadlocksNorSpins) {
    ManualClock clock{1'700'000'000'000};
    int calls = 0;
    JournalGate gate(
        [&](const std::string&, JournalGate::Done done) {
            ++calls; // the client's queue is full: it fails at once, on this thread
            done(JournalGate::Answer::NoAnswer, "bus outgoing queue is full");
        },
        "web", "dped-web-1", clock, 10);
    ASSERT_TRUE(gate.publish(eventBody("a")).ok());
    EXPECT_EQ(calls, 1);
    ASSERT_TRUE(gate.publish(eventBody("b")).ok()); // tries "a" again first, stops there
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(gate.held(), 2u);
}

// ---- ChannelPeer over a unix socket -------------------------------------------------------

// Stands in for QEMU's chardev socket: listens, accepts dped's connection.
class FakeQemu {
public:
    FakeQemu() {
        dir_ = std::filesystem::temp_directory_path() /
               ("pcloud-chan-" + std::to_string(::getpid()) + "-" + std::to_string(++n_));
        std::filesystem::create_directories(dir_);
        path_ = (dir_ / "a.sock").string();
        lfd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
        EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(lfd_, 4), 0);
    }
    ~FakeQemu() {
        if (cfd_ >= 0)
            ::close(cfd_);
        ::close(lfd_);
        std::filesystem::remove_all(dir_);
    }
    const std::string& path() const { return path_; }
    // Accepts the next connection (blocking, with a deadline via poll).
    bool accept(std::chrono::milliseconds timeout = 5s) {
        pollfd p{lfd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
            return false;
        if (cfd_ >= 0)
            ::close(cfd_);
        cfd_ = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        return cfd_ >= 0;
    }
    int fd() const { return cfd_; }
    // Writes as much as the socket takes within `timeout`; returns the bytes written.
    std::size_t writeFor(const std::string& bytes, std::chrono::milliseconds timeout) {
        auto end = std::chrono::steady_clock::now() + timeout;
        std::size_t off = 0;
        while (off < bytes.size() && std::chrono::steady_clock::now() < end) {
            pollfd p{cfd_, POLLOUT, 0};
            if (::poll(&p, 1, 50) != 1)
                continue;
            ssize_t n =
                ::send(cfd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0)
                break;
            off += static_cast<std::size_t>(n);
        }
        return off;
    }
    // True once dped closed its end (read returns 0) within the timeout.
    bool peerClosed(std::chrono::milliseconds timeout) {
        auto end = std::chrono::steady_clock::now() + timeout;
        char buf[4096];
        while (std::chrono::steady_clock::now() < end) {
            pollfd p{cfd_, POLLIN, 0};
            if (::poll(&p, 1, 50) != 1)
                continue;
            ssize_t n = ::recv(cfd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno == ECONNRESET))
                return true;
        }
        return false;
    }

private:
    static inline int n_ = 0;
    std::filesystem::path dir_;
    std::string path_;
    int lfd_ = -1, cfd_ = -1;
};

// Captures this process's stderr (where PCLOUD_LOG writes) into a file while alive.
class StderrCapture {
public:
    StderrCapture() {
        path_ = std::filesystem::temp_directory_path() /
                ("pcloud-stderr-" + std::to_string(::getpid()));
        std::fflush(stderr);
        saved_ = ::dup(2);
        int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~StderrCapture() { restore(); }
    std::string text() {
        restore();
        std::ifstream in(path_);
        std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return s;
    }
    void restore() {
        if (saved_ < 0)
            return;
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        saved_ = -1;
        std::fprintf(stderr, "%s", ""); // keep stderr usable
    }
    static std::size_t count(const std::string& text, const std::string& what) {
        std::size_t n = 0;
        for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
            ++n;
        return n;
    }

private:
    std::filesystem::path path_;
    int saved_ = -1;
};

template <typename F> bool waitUntil(F f, std::chrono::milliseconds timeout = 5s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (f())
            return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

struct PeerFixture {
    FakeQemu qemu;
    std::mutex mu;
    std::vector<std::string> reports;
    std::vector<virt::ChannelEventKind> events;
    bool auto_done = true;
    std::unique_ptr<ChannelPeer> peer;

    explicit PeerFixture(ChannelPeerOptions o = {}) {
        o.socket_path = qemu.path();
        o.session = sessionOptions();
        o.quiet_burst_ms = 60'000;
        ChannelPeerCallbacks cb;
        cb.on_event = [this](const virt::ChannelEvent& e) {
            std::lock_guard lock(mu);
            events.push_back(e.kind);
        };
        cb.on_report = [this](std::string body) {
            std::size_t n = body.size();
            bool done;
            {
                std::lock_guard lock(mu);
                reports.push_back(std::move(body));
                done = auto_done;
            }
            if (done)
                peer->reportDone(n);
        };
        peer = std::make_unique<ChannelPeer>(o, cb);
    }
    std::size_t reportCount() {
        std::lock_guard lock(mu);
        return reports.size();
    }
};

// Drives a FakeAgent's connection_driver over the FakeQemu side of the socket.
class SocketAgent {
public:
    SocketAgent(int fd, const std::string& key) : fd_(fd) {
        agent.reports_addr = "pcloud.reports." + key;
        agent.commands_addr = "pcloud.agent." + key;
        proton::connection_options co;
        co.handler(agent);
        co.sasl_enabled(true);
        co.sasl_allowed_mechs("ANONYMOUS");
        driver.connect(co);
    }
    // One round of I/O, waiting up to `ms` for input.
    void pump(int ms = 10) {
        driver.dispatch();
        agent.flush();
        for (;;) {
            auto wb = driver.write_buffer();
            if (wb.size == 0)
                break;
            ssize_t n = ::send(fd_, wb.data, wb.size, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0)
                break;
            driver.write_done(static_cast<std::size_t>(n));
        }
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, ms) == 1) {
            auto rb = driver.read_buffer();
            ssize_t n = ::recv(fd_, rb.data, rb.size, MSG_DONTWAIT);
            if (n > 0)
                driver.read_done(static_cast<std::size_t>(n));
        }
        driver.dispatch();
    }
    template <typename F> bool pumpUntil(F f, std::chrono::milliseconds timeout = 5s) {
        auto end = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < end) {
            pump();
            if (f())
                return true;
        }
        return f();
    }
    FakeAgent agent;
    proton::io::connection_driver driver{"agent"};

private:
    int fd_;
};

TEST(ChannelPeer, AnAgentOnTheSocketReachesTheReportsAndTakesCommands) {
    PeerFixture f;
    ASSERT_TRUE(f.peer->start().ok());
    ASSERT_TRUE(f.qemu.accept());
    SocketAgent a(f.qemu.fd(), "node01");
    ASSERT_TRUE(a.pumpUntil([&] { return a.agent.sender_open && f.peer->agentAttached(); }));
    a.agent.to_send = {hello("node01"), heartbeat(1)};
    ASSERT_TRUE(a.pumpUntil([&] { return f.reportCount() == 2; }));
    ASSERT_TRUE(f.peer->send(R"({"v":1,"type":"command","command":"ping","id":"p1"})", "p1").ok());
    ASSERT_TRUE(a.pumpUntil([&] { return a.agent.commands.size() == 1; }));
    EXPECT_EQ(f.peer->stats().pending_reports, 0u);
}

// QEMU's socket stays connected when a killed agent's port closes, so the new agent's
// connection arrives in the old one's byte stream: between two frames, or after half a frame
// of the old agent. Either way it is answered on a new session at once, on the same socket:
// no drop, no reconnect, and its reports arrive.
TEST(ChannelPeer, ARestartedAgentsNewConnectionIsAnsweredOnTheSameSocket) {
    for (bool midFrame : {false, true}) {
        SCOPED_TRACE(midFrame ? "killed in the middle of a frame" : "killed between frames");
        PeerFixture f;
        ASSERT_TRUE(f.peer->start().ok());
        ASSERT_TRUE(f.qemu.accept());
        {
            SocketAgent old(f.qemu.fd(), "node01");
            ASSERT_TRUE(
                old.pumpUntil([&] { return old.agent.sender_open && f.peer->agentAttached(); }));
            old.agent.to_send = {hello("node01")};
            ASSERT_TRUE(old.pumpUntil([&] { return f.reportCount() == 1; }));
        }               // SIGKILL: the old agent's driver is gone without a word
        if (midFrame) { // a frame header announcing 200 bytes, and only 12 of them
            ASSERT_EQ(f.qemu.writeFor(std::string("\x00\x00\x00\xc8\x02\x00\x00\x00", 8) +
                                          std::string(12, 'x'),
                                      1s),
                      20u);
        }
        SocketAgent fresh(f.qemu.fd(), "node01");
        ASSERT_TRUE(
            fresh.pumpUntil([&] { return fresh.agent.sender_open && f.peer->agentAttached(); }));
        fresh.agent.to_send = {hello("node01"), heartbeat(1)};
        ASSERT_TRUE(fresh.pumpUntil([&] { return f.reportCount() == 3; }));
        auto st = f.peer->stats();
        EXPECT_EQ(st.restarted_sessions, 1u);
        EXPECT_EQ(st.dropped_connections, 0u);
        EXPECT_EQ(st.sessions, 2u);
        std::lock_guard lock(f.mu);
        EXPECT_EQ(f.events, std::vector<virt::ChannelEventKind>{virt::ChannelEventKind::Connected})
            << "one socket connection, never closed";
    }
}

TEST(ChannelPeer, GarbageDropsTheConnectionReconnectsAndIsLoggedOncePerBurst) {
    ChannelPeerOptions o;
    o.misbehave_ms = 50;
    PeerFixture f(o);
    StderrCapture cap;
    ASSERT_TRUE(f.peer->start().ok());
    for (int round = 0; round < 3; ++round) {
        ASSERT_TRUE(f.qemu.accept()) << "round " << round;
        f.qemu.writeFor("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + std::string(1000, 'z'), 1s);
        ASSERT_TRUE(f.qemu.peerClosed(5s)) << "round " << round;
    }
    ASSERT_TRUE(waitUntil([&] { return f.peer->stats().dropped_connections >= 3; }));
    std::string log = cap.text();
    EXPECT_EQ(StderrCapture::count(log, "Dropping the guest's channel connection"), 1u) << log;
    EXPECT_EQ(f.reportCount(), 0u);
    std::lock_guard lock(f.mu);
    // Our own drop is not a crash suspicion: no Eof event.
    for (auto k : f.events)
        EXPECT_NE(k, virt::ChannelEventKind::Eof);
}

TEST(ChannelPeer, AFrameOverTheMaxFrameSizeDropsTheConnection) {
    PeerFixture f;
    ASSERT_TRUE(f.peer->start().ok());
    ASSERT_TRUE(f.qemu.accept());
    // A valid AMQP header, then a frame header announcing 64 MiB.
    std::string bytes("AMQP\x00\x01\x00\x00", 8);
    bytes += std::string("\x04\x00\x00\x00\x02\x00\x00\x00", 8);
    bytes += std::string(256 * 1024, '\x00');
    f.qemu.writeFor(bytes, 2s);
    EXPECT_TRUE(f.qemu.peerClosed(5s));
    EXPECT_TRUE(waitUntil([&] { return f.peer->stats().dropped_connections >= 1; }));
}

TEST(ChannelPeer, AFloodIsThrottledAndPendingReportsStayCapped) {
    ChannelPeerOptions o;
    o.max_pending_reports = 16;
    PeerFixture f(o);
    f.auto_done = false; // the "reactor" is stuck: nothing is processed
    StderrCapture cap;
    ASSERT_TRUE(f.peer->start().ok());
    ASSERT_TRUE(f.qemu.accept());
    SocketAgent a(f.qemu.fd(), "node01");
    ASSERT_TRUE(a.pumpUntil([&] { return a.agent.sender_open && f.peer->agentAttached(); }));
    for (int i = 0; i < 2000; ++i)
        a.agent.to_send.push_back(heartbeat(static_cast<std::uint64_t>(i + 1)));
    a.pumpUntil([] { return false; }, 1500ms);
    auto st = f.peer->stats();
    // The cap, plus at most the credit window granted before reading stopped.
    EXPECT_LE(st.pending_reports, 16u + 32u);
    EXPECT_EQ(f.reportCount(), st.pending_reports);
    EXPECT_GE(st.throttles, 1u);
    // Processing resumes the flow.
    std::size_t before = f.reportCount();
    {
        std::lock_guard lock(f.mu);
        f.auto_done = true;
    }
    for (std::size_t i = 0; i < before; ++i)
        f.peer->reportDone(f.reports[i].size());
    ASSERT_TRUE(a.pumpUntil([&] { return f.reportCount() == 2000; }, 20s)) << f.reportCount();
    std::string log = cap.text();
    EXPECT_EQ(StderrCapture::count(log, "Guest channel floods dped"), 1u) << log;
}

TEST(ChannelPeer, QemuClosingTheSocketIsAnEofAndAReconnect) {
    ChannelPeerOptions o;
    o.retry_ms = 50;
    PeerFixture f(o);
    ASSERT_TRUE(f.peer->start().ok());
    ASSERT_TRUE(f.qemu.accept());
    ASSERT_TRUE(waitUntil([&] { return f.peer->connected(); }));
    ::shutdown(f.qemu.fd(), SHUT_RDWR);
    ASSERT_TRUE(waitUntil([&] {
        std::lock_guard lock(f.mu);
        return std::find(f.events.begin(), f.events.end(), virt::ChannelEventKind::Eof) !=
               f.events.end();
    }));
    EXPECT_TRUE(f.qemu.accept()); // dped comes back by itself
}

} // namespace
