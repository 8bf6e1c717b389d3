// Crash detection latency on real libvirtd + QEMU with the tiny guest: SIGKILL the qemu
// process N times and time three signals side by side: the pidfd (proof qemu is gone), EOF
// on the guest channel socket (suspicion), and libvirt's lifecycle STOPPED event.
// Prints median / p99 / max; asserts nothing. Usage: virt_crash_bench [N=15]

#include "guest_fixture.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <vector>

using namespace pcloud::virt;
using namespace pcloud::virt::testing;
using namespace std::chrono_literals;

namespace {

struct Stats {
    double median, p99, max;
};

Stats stats(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    };
    return {at(0.5), at(0.99), v.back()};
}

} // namespace

int main(int argc, char** argv) {
    const int n = argc > 1 ? std::max(1, std::atoi(argv[1])) : 15;
    GuestEnv env;
    if (!env.ready()) {
        std::fprintf(stderr, "virt_crash_bench: %s\n", env.skipReason().c_str());
        return 69;
    }
    auto img = env.image("none");
    if (!img.ok()) {
        std::fprintf(stderr, "virt_crash_bench: %s\n", img.error().message.c_str());
        return 69;
    }
    RecordingListener listener;
    env.hv().setListener(&listener);
    Recorder<PidExit> exits;
    PidWatcher pids([&](const PidExit& e) { exits.add(e); });
    Recorder<ChannelEvent> chEvents;

    TinyDomain dom(env, *img, "bench");
    if (!dom.start()) {
        std::fprintf(stderr, "virt_crash_bench: %s\n", dom.error().c_str());
        return 1;
    }
    ChannelConnection ch({.key = dom.name(), .socket_path = dom.channelSocket(), .retry_ms = 50},
                         {.on_event = [&](const ChannelEvent& e) { chEvents.add(e); }});
    if (!ch.start().ok())
        return 1;

    std::vector<double> pidfd, eof, stopped;
    std::printf("%-4s %12s %12s %16s\n", "kill", "pidfd_ms", "chan_eof_ms", "libvirt_stop_ms");
    for (int i = 0; i < n; ++i) {
        // Running, with the channel connected and the pidfd held.
        if (!eventually([&] { return ch.connected(); }, 30s)) {
            std::fprintf(stderr, "channel never connected\n");
            return 1;
        }
        auto pid = env.hv().qemuPid(dom.name());
        if (!pid.ok() || !pids.watch(dom.name(), *pid).ok()) {
            std::fprintf(stderr, "no qemu pid\n");
            return 1;
        }
        exits.clear();
        chEvents.clear();
        listener.events.clear();
        const std::int64_t t0 = monoUs();
        ::kill(*pid, SIGKILL);
        auto e1 = exits.waitFor([](const PidExit&) { return true; }, 10s);
        auto e2 = chEvents.waitFor(
            [](const ChannelEvent& e) { return e.kind == ChannelEventKind::Eof; }, 10s);
        auto e3 = listener.events.waitFor(
            [&](const DomainEvent& e) {
                return e.domain == dom.name() && e.kind == DomainEventKind::Stopped;
            },
            30s);
        if (!e1 || !e2 || !e3) {
            std::fprintf(stderr, "kill %d: a signal did not arrive (pidfd=%d eof=%d stopped=%d)\n",
                         i, e1.has_value(), e2.has_value(), e3.has_value());
            return 1;
        }
        pidfd.push_back((e1->monotonicUs - t0) / 1000.0);
        eof.push_back((e2->monotonicUs - t0) / 1000.0);
        stopped.push_back((e3->monotonicUs - t0) / 1000.0);
        std::printf("%-4d %12.2f %12.2f %16.1f\n", i + 1, pidfd.back(), eof.back(), stopped.back());
        if (!env.hv().start(dom.name()).ok()) {
            std::fprintf(stderr, "restart failed\n");
            return 1;
        }
        ch.reconnect();
    }
    Stats a = stats(pidfd), b = stats(eof), c = stats(stopped);
    std::printf("\nSIGKILL of qemu -> signal, n=%d (TCG tiny guest, %s)\n", n, "qemu:///system");
    std::printf("%-22s %10s %10s %10s\n", "signal", "median_ms", "p99_ms", "max_ms");
    std::printf("%-22s %10.2f %10.2f %10.2f\n", "pidfd exit", a.median, a.p99, a.max);
    std::printf("%-22s %10.2f %10.2f %10.2f\n", "channel EOF", b.median, b.p99, b.max);
    std::printf("%-22s %10.2f %10.2f %10.2f\n", "libvirt STOPPED event", c.median, c.p99, c.max);
    env.hv().setListener(nullptr);
    return 0;
}
