// Real libvirtd + QEMU (TCG) with the tiny test guest (docs/guest.md). Skips with a reason
// when libvirtd does not answer on qemu:///system or no guest image can be built.
//
// Uses the stand-in image (AGENT_BINARY=none: httpd + an echo on the channel). When
// build/bin/pcloud-agent exists, AgentImageSpeaksAmqpThroughRelay also boots the real agent.

#include "guest_fixture.h"

#include <gtest/gtest.h>

using namespace pcloud::virt;
using namespace pcloud::virt::testing;
using namespace std::chrono_literals;

TEST(QemuGuestTest, BootsWithChannelNetworkAndEarlyCrashSignals) {
    GuestEnv env;
    if (!env.ready())
        GTEST_SKIP() << env.skipReason();
    auto img = env.image("none");
    if (!img.ok())
        GTEST_SKIP() << img.error().message;

    RecordingListener listener;
    env.hv().setListener(&listener);
    Recorder<PidExit> exits;
    PidWatcher pids([&](const PidExit& e) { exits.add(e); });
    Recorder<ChannelEvent> chEvents;
    Recorder<std::string> chData;

    TinyDomain dom(env, *img, "boot");
    ASSERT_TRUE(dom.start()) << dom.error();
    ASSERT_TRUE(listener.events.waitFor(
        [&](const DomainEvent& e) {
            return e.domain == dom.name() && e.kind == DomainEventKind::Started;
        },
        30s));
    auto pid = env.hv().qemuPid(dom.name());
    ASSERT_TRUE(pid.ok()) << pid.error().describe();
    ASSERT_TRUE(pids.watch(dom.name(), *pid).ok());

    // 1. The channel: the guest greets and echoes (the stand-in init's loop).
    {
        ChannelConnection ch(
            {.key = dom.name(), .socket_path = dom.channelSocket(), .retry_ms = 100},
            {.on_event = [&](const ChannelEvent& e) { chEvents.add(e); },
             .on_data = [&](std::string_view d) { chData.add(std::string(d)); }});
        ASSERT_TRUE(ch.start().ok());
        ASSERT_TRUE(chEvents.waitFor(
            [](const ChannelEvent& e) { return e.kind == ChannelEventKind::Connected; }, 30s));
        // The guest may drop bytes sent before its echo loop has the port open, so resend.
        bool echoed = eventually(
            [&] {
                ch.send("ping-42\n");
                std::string all;
                for (const auto& s : chData.snapshot())
                    all += s;
                return all.find("ping-42") != std::string::npos;
            },
            60s, 250ms);
        std::string all;
        for (const auto& s : chData.snapshot())
            all += s;
        ASSERT_TRUE(echoed) << "no echo over the channel; got: " << all << "\nconsole:\n"
                            << dom.console();
    }

    // 2. The network forward: 127.0.0.1:PORT -> guest httpd :80.
    std::string page;
    ASSERT_TRUE(eventually(
        [&] {
            page = httpGet(dom.httpPort());
            return page.find("pcloud tiny guest " + dom.name()) != std::string::npos;
        },
        60s, 200ms))
        << "page: " << page << "\nconsole:\n"
        << dom.console();

    // 3. The relay: guest <-> channel <-> TCP "hub". The guest greets again on reconnect.
    LoopbackServer hub;
    chEvents.clear();
    ChannelConnection relay({.key = dom.name(),
                             .socket_path = dom.channelSocket(),
                             .hub_port = hub.port(),
                             .retry_ms = 0},
                            {.on_event = [&](const ChannelEvent& e) { chEvents.add(e); }});
    ASSERT_TRUE(relay.start().ok());
    ASSERT_TRUE(hub.accept(30s));
    // The guest greets on every new host connection, but when the host side reconnects
    // faster than the guest notices the hang-up, the echo session from part 1 simply goes
    // on (and may still be echoing its queued "ping-42"s). Asking "hello?" works either way.
    const std::string greeting = "pcloud-guest hello assembly=" + dom.name();
    EXPECT_TRUE(eventually(
        [&] {
            hub.write("hello?\n");
            return hub.readUntil(greeting, 250ms).find(greeting) != std::string::npos;
        },
        30s, 50ms))
        << "hub got: " << hub.received();
    ASSERT_TRUE(eventually(
        [&] {
            hub.write("relay-ping\n");
            return hub.readUntil("relay-ping", 250ms).find("relay-ping") != std::string::npos;
        },
        30s, 50ms))
        << "hub got: " << hub.received();

    // 4. SIGKILL qemu: the watcher reports the death, the channel sees EOF; libvirt's STOPPED
    // event arrives later.
    listener.events.clear();
    const std::int64_t killedAt = monoUs();
    ASSERT_EQ(::kill(*pid, SIGKILL), 0);
    auto exitSeen = exits.waitFor([&](const PidExit& e) { return e.key == dom.name(); }, 10s);
    ASSERT_TRUE(exitSeen.has_value()) << "the death of qemu was not reported";
    // Heard as the qemu's first thread died (the proc connector), not at the end of the
    // teardown: only that path knows the signal.
    EXPECT_EQ(exitSeen->signal, SIGKILL);
    auto eof = chEvents.waitFor(
        [](const ChannelEvent& e) { return e.kind == ChannelEventKind::Eof; }, 10s);
    ASSERT_TRUE(eof.has_value()) << "channel EOF not seen";
    EXPECT_TRUE(hub.waitClientEof(10s)) << "relay did not close the hub side";
    auto stopped = listener.events.waitFor(
        [&](const DomainEvent& e) {
            return e.domain == dom.name() && e.kind == DomainEventKind::Stopped;
        },
        30s);
    ASSERT_TRUE(stopped.has_value()) << "libvirt STOPPED event never arrived";
    EXPECT_EQ(stopped->detail, "failed"); // how libvirt reports an externally killed qemu
    std::printf("kill -> death heard %.1f ms, channel EOF %.1f ms, libvirt STOPPED %.1f ms "
                "(informational)\n",
                (exitSeen->monotonicUs - killedAt) / 1000.0, (eof->monotonicUs - killedAt) / 1000.0,
                (stopped->monotonicUs - killedAt) / 1000.0);
    auto info = env.hv().lookup(dom.name());
    ASSERT_TRUE(info.ok());
    EXPECT_NE(info->state, DomainState::Running);

    // 5. The domain comes back: reconnect() finds the new QEMU's socket and the hub again.
    chEvents.clear();
    ASSERT_TRUE(env.hv().start(dom.name()).ok());
    relay.reconnect();
    ASSERT_TRUE(chEvents.waitFor(
        [](const ChannelEvent& e) { return e.kind == ChannelEventKind::Connected; }, 30s));
    ASSERT_TRUE(hub.accept(30s));
    EXPECT_TRUE(eventually(
        [&] {
            hub.write("hello?\n");
            return hub.readUntil(greeting, 250ms).find(greeting) != std::string::npos;
        },
        60s, 100ms))
        << "hub got: " << hub.received();
    env.hv().setListener(nullptr);
}

TEST(QemuGuestTest, AgentImageSpeaksAmqpThroughRelay) {
    GuestEnv env;
    if (!env.ready())
        GTEST_SKIP() << env.skipReason();
    const std::string agent = std::string(PCLOUD_BIN_DIR) + "/pcloud-agent";
    if (::access(agent.c_str(), X_OK) != 0)
        GTEST_SKIP() << agent << " is not built yet";
    auto img = env.image(agent);
    if (!img.ok())
        GTEST_SKIP() << img.error().message;

    TinyDomain dom(env, *img, "agent");
    ASSERT_TRUE(dom.start()) << dom.error();
    LoopbackServer hub;
    ChannelConnection relay({.key = dom.name(),
                             .socket_path = dom.channelSocket(),
                             .hub_port = hub.port(),
                             .retry_ms = 100},
                            {});
    ASSERT_TRUE(relay.start().ok());
    ASSERT_TRUE(hub.accept(60s));
    // An AMQP 1.0 client starts with its protocol header ("AMQP" then id, 1, 0, 0).
    std::string got = hub.readUntil("AMQP", 90s);
    EXPECT_NE(got.find("AMQP"), std::string::npos) << "hub got: " << got << "\nconsole:\n"
                                                   << dom.console();
    // The agent's process backend runs httpd.
    std::string page;
    EXPECT_TRUE(eventually(
        [&] {
            page = httpGet(dom.httpPort());
            return page.find("pcloud tiny guest") != std::string::npos;
        },
        60s, 200ms))
        << "page: " << page << "\nconsole:\n"
        << dom.console();
}
