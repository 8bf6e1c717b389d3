// PidWatcher and ChannelConnection against real processes and real sockets (no QEMU).

#include "virt/channel.h"
#include "virt/pid_watcher.h"

#include "test_util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace pcloud::virt;
using namespace pcloud::virt::testing;
using namespace std::chrono_literals;

namespace {

pid_t spawnSleeper() {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sleep", "sleep", "60", static_cast<char*>(nullptr));
        _exit(127);
    }
    return pid;
}

// A unix socket server standing in for QEMU's side of the channel.
class FakeQemuSocket {
public:
    explicit FakeQemuSocket(std::string path) : path_(std::move(path)) {
        ::unlink(path_.c_str());
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::listen(fd_, 1);
    }
    ~FakeQemuSocket() {
        closeClient();
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    bool accept(std::chrono::milliseconds d) {
        if (!LoopbackServer::readable(fd_, d))
            return false;
        client_ = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        return client_ >= 0;
    }
    void closeClient() {
        if (client_ >= 0)
            ::close(client_);
        client_ = -1;
    }
    bool write(const std::string& s) {
        return ::write(client_, s.data(), s.size()) == (ssize_t)s.size();
    }
    std::string readUntil(const std::string& needle, std::chrono::milliseconds d) {
        auto end = std::chrono::steady_clock::now() + d;
        while (got_.find(needle) == std::string::npos) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !LoopbackServer::readable(client_, left))
                break;
            char buf[4096];
            ssize_t n = ::read(client_, buf, sizeof buf);
            if (n <= 0)
                break;
            got_.append(buf, static_cast<size_t>(n));
        }
        return got_;
    }
    bool waitEof(std::chrono::milliseconds d) {
        for (;;) {
            if (!LoopbackServer::readable(client_, d))
                return false;
            char buf[4096];
            ssize_t n = ::read(client_, buf, sizeof buf);
            if (n <= 0)
                return true;
        }
    }

private:
    std::string path_;
    int fd_ = -1;
    int client_ = -1;
    std::string got_;
};

// A child that looks like QEMU to the kernel: several threads and `mib` MiB of touched
// small pages (so that tearing it down takes a while). It writes a byte to `ready` once
// set up. With `thenExitNormally`, it instead runs one thread that ends normally, writes
// the byte, and exits with status 3 when `go` has a byte to read.
struct Child {
    pid_t pid = -1;
    int ready = -1; // read end
    int go = -1;    // write end: a byte lets the child exit
};

Child spawnBusyChild(std::size_t mib, bool thenExitNormally) {
    int ready[2], go[2];
    if (::pipe(ready) != 0 || ::pipe(go) != 0)
        return {};
    pid_t pid = fork();
    if (pid == 0) {
        ::close(ready[0]);
        ::close(go[1]);
        const std::size_t size = mib << 20;
        void* mem =
            ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            _exit(120);
        ::madvise(mem, size, MADV_NOHUGEPAGE);
        std::memset(mem, 1, size);
        if (thenExitNormally) {
            std::thread([] {}).join(); // a thread of a live process ends normally
            (void)!::write(ready[1], "t", 1);
            char c;
            (void)!::read(go[0], &c, 1);
            _exit(3);
        }
        for (int i = 0; i < 3; ++i)
            std::thread([] { ::pause(); }).detach();
        (void)!::write(ready[1], "r", 1);
        for (;;)
            ::pause();
    }
    ::close(ready[1]);
    ::close(go[0]);
    return {pid, ready[0], go[1]};
}

bool readByte(int fd) {
    char c;
    return ::read(fd, &c, 1) == 1;
}

std::string tempPath(const std::string& stem) {
    return "/tmp/pcloud-virt-" + std::to_string(getpid()) + "-" + stem;
}

auto kindIs(ChannelEventKind k) {
    return [k](const ChannelEvent& e) { return e.kind == k; };
}

} // namespace

TEST(PidWatcherTest, FiresWhenTheProcessIsKilled) {
    Recorder<PidExit> exits;
    PidWatcher watcher([&](const PidExit& e) { exits.add(e); });
    pid_t pid = spawnSleeper();
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(watcher.watch("dom-a", pid).ok());
    EXPECT_EQ(watcher.size(), 1u);
    EXPECT_FALSE(exits.waitFor([](const PidExit&) { return true; }, 50ms).has_value());
    ::kill(pid, SIGKILL);
    auto e = exits.waitFor([](const PidExit& x) { return x.key == "dom-a"; }, 5s);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->pid, pid);
    EXPECT_FALSE(e->alreadyGone);
    EXPECT_EQ(watcher.size(), 0u);
    ::waitpid(pid, nullptr, 0);
}

TEST(PidWatcherTest, AlreadyGoneProcessIsReported) {
    Recorder<PidExit> exits;
    PidWatcher watcher([&](const PidExit& e) { exits.add(e); });
    pid_t pid = spawnSleeper();
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0); // reaped: the pid no longer exists
    ASSERT_TRUE(watcher.watch("gone", pid).ok());
    auto e = exits.waitFor([](const PidExit& x) { return x.key == "gone"; }, 5s);
    ASSERT_TRUE(e.has_value());
    EXPECT_TRUE(e->alreadyGone);
}

TEST(PidWatcherTest, UnwatchedProcessDoesNotFire) {
    Recorder<PidExit> exits;
    PidWatcher watcher([&](const PidExit& e) { exits.add(e); });
    pid_t a = spawnSleeper(), b = spawnSleeper();
    ASSERT_TRUE(watcher.watch("a", a).ok());
    ASSERT_TRUE(watcher.watch("b", b).ok());
    watcher.unwatch("a");
    ::kill(a, SIGKILL);
    ::kill(b, SIGKILL);
    ASSERT_TRUE(exits.waitFor([](const PidExit& x) { return x.key == "b"; }, 5s).has_value());
    for (const auto& e : exits.snapshot())
        EXPECT_NE(e.key, "a");
    ::waitpid(a, nullptr, 0);
    ::waitpid(b, nullptr, 0);
}

// The kernel frees a killed QEMU's memory before its pidfd fires; the proc connector tells
// of the death as its first thread dies. The README test command runs as root in the host's
// pid namespace, where the connector must be there: its absence fails, it is not skipped.
TEST(PidWatcherTest, HearsASignalDeathBeforeTheTeardownEnds) {
    Child child = spawnBusyChild(512, false);
    ASSERT_GT(child.pid, 0);
    ASSERT_TRUE(readByte(child.ready));
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child.pid, 0));
    ASSERT_GE(pidfd, 0);
    std::atomic<int> pidfdReadyAtReport{-1};
    Recorder<PidExit> exits;
    PidWatcher watcher([&](const PidExit& e) {
        pollfd p{pidfd, POLLIN, 0};
        pidfdReadyAtReport = ::poll(&p, 1, 0);
        exits.add(e);
    });
    ASSERT_TRUE(watcher.hearsSignalDeaths())
        << "no proc connector: needs root (CAP_NET_ADMIN) in the host's pid namespace";
    ASSERT_TRUE(watcher.watch("dom-q", child.pid).ok());
    ::kill(child.pid, SIGKILL);
    auto e = exits.waitFor([](const PidExit& x) { return x.key == "dom-q"; }, 10s);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->signal, SIGKILL);
    EXPECT_EQ(e->pid, child.pid);
    EXPECT_EQ(pidfdReadyAtReport.load(), 0) << "reported only after the process was torn down";
    EXPECT_EQ(watcher.size(), 0u);
    // Reported once: the pidfd that fires later belongs to a watch that is gone.
    ::waitpid(child.pid, nullptr, 0);
    EXPECT_EQ(exits.snapshot().size(), 1u);
    ::close(pidfd);
    ::close(child.ready);
    ::close(child.go);
}

TEST(PidWatcherTest, AThreadEndingNormallyIsNoDeathAndANormalExitComesByThePidfd) {
    Child child = spawnBusyChild(8, true);
    ASSERT_GT(child.pid, 0);
    Recorder<PidExit> exits;
    PidWatcher watcher([&](const PidExit& e) { exits.add(e); });
    ASSERT_TRUE(watcher.hearsSignalDeaths());
    ASSERT_TRUE(watcher.watch("dom-n", child.pid).ok());
    ASSERT_TRUE(readByte(child.ready)); // its thread has ended
    EXPECT_FALSE(exits.waitFor([](const PidExit&) { return true; }, 200ms).has_value());
    ASSERT_EQ(::write(child.go, "x", 1), 1);
    auto e = exits.waitFor([](const PidExit& x) { return x.key == "dom-n"; }, 5s);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->signal, 0); // exit(3): not a signal, so the pidfd told
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    EXPECT_EQ(WEXITSTATUS(status), 3);
    ::close(child.ready);
    ::close(child.go);
}

TEST(ChannelConnectionTest, DataBothWaysThenEofOnPeerClose) {
    const std::string path = tempPath("chan1.sock");
    FakeQemuSocket qemu(path);
    Recorder<ChannelEvent> events;
    Recorder<std::string> data;
    ChannelConnection ch({.key = "dom1", .socket_path = path},
                         {.on_event = [&](const ChannelEvent& e) { events.add(e); },
                          .on_data = [&](std::string_view d) { data.add(std::string(d)); }});
    ASSERT_TRUE(ch.start().ok());
    ASSERT_TRUE(qemu.accept(5s));
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::Connected), 5s).has_value());
    EXPECT_TRUE(ch.connected());

    ASSERT_TRUE(qemu.write("hello from guest\n"));
    EXPECT_TRUE(data.waitFor(
        [](const std::string& s) { return s.find("hello") != std::string::npos; }, 5s));
    ASSERT_TRUE(ch.send("ping\n"));
    EXPECT_NE(qemu.readUntil("ping\n", 5s).find("ping\n"), std::string::npos);

    qemu.closeClient(); // QEMU died
    auto eof = events.waitFor(kindIs(ChannelEventKind::Eof), 5s);
    ASSERT_TRUE(eof.has_value());
    EXPECT_EQ(eof->key, "dom1");
    EXPECT_FALSE(ch.connected());
    EXPECT_FALSE(ch.send("dropped"));

    // The domain came back: reconnect() connects again.
    ch.reconnect();
    ASSERT_TRUE(qemu.accept(5s));
    EXPECT_TRUE(eventually([&] { return ch.connected(); }, 5s));
}

TEST(ChannelConnectionTest, ConnectFailureIsReportedOnceThenRetried) {
    const std::string path = tempPath("chan2.sock");
    ::unlink(path.c_str());
    Recorder<ChannelEvent> events;
    ChannelConnection ch({.key = "dom2", .socket_path = path, .retry_ms = 20},
                         {.on_event = [&](const ChannelEvent& e) { events.add(e); }});
    ASSERT_TRUE(ch.start().ok());
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::ConnectFailed), 5s).has_value());
    FakeQemuSocket qemu(path); // the domain starts: the retry timer finds it
    ASSERT_TRUE(qemu.accept(5s));
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::Connected), 5s).has_value());
    int failures = 0;
    for (const auto& e : events.snapshot())
        failures += e.kind == ChannelEventKind::ConnectFailed;
    EXPECT_EQ(failures, 1);
}

TEST(ChannelConnectionTest, RelaysBetweenGuestAndHub) {
    const std::string path = tempPath("chan3.sock");
    FakeQemuSocket qemu(path);
    LoopbackServer hub;
    Recorder<ChannelEvent> events;
    ChannelConnection ch(
        {.key = "dom3", .socket_path = path, .hub_port = hub.port(), .hub_retry_ms = 20},
        {.on_event = [&](const ChannelEvent& e) { events.add(e); }});
    ASSERT_TRUE(ch.start().ok());
    ASSERT_TRUE(qemu.accept(5s));
    ASSERT_TRUE(hub.accept(5s));
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::HubConnected), 5s).has_value());

    // Guest -> hub, a payload bigger than one read, then hub -> guest.
    std::string big(300 * 1024, 'x');
    big = "AMQP" + big + "END";
    ASSERT_TRUE(qemu.write(big));
    EXPECT_EQ(hub.readUntil("END", 10s).size(), big.size());
    ASSERT_TRUE(hub.write("AMQP-reply"));
    EXPECT_NE(qemu.readUntil("AMQP-reply", 5s).find("AMQP-reply"), std::string::npos);

    // The hub goes away: the guest side is closed too (so the agent starts afresh), then the
    // relay reconnects both.
    hub.closeClient();
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::HubClosed), 5s).has_value());
    EXPECT_TRUE(qemu.waitEof(5s));
    qemu.closeClient();
    ASSERT_TRUE(qemu.accept(5s));
    ASSERT_TRUE(hub.accept(5s));
    ASSERT_TRUE(qemu.write("again"));
    EXPECT_NE(hub.readUntil("again", 5s).find("again"), std::string::npos);

    // QEMU dies: EOF is reported and the hub connection is closed.
    qemu.closeClient();
    ASSERT_TRUE(events.waitFor(kindIs(ChannelEventKind::Eof), 5s).has_value());
    EXPECT_TRUE(hub.waitClientEof(5s));
}

// A process kept from running by the host's scheduler: pinned to one CPU at SCHED_IDLE next
// to a busy process at the normal policy, it is runnable all the time and gets almost no
// CPU, so its run-queue wait grows about as fast as the wall clock. That is what dped
// reads from a qemu to tell a starved guest from a hung one.
TEST(RunQueueWait, GrowsWhileTheHostStarvesAProcess) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    auto spinner = [&](bool idle) {
        pid_t p = ::fork();
        if (p == 0) {
            ::sched_setaffinity(0, sizeof one, &one);
            if (idle) {
                sched_param sp{};
                ::sched_setscheduler(0, SCHED_IDLE, &sp);
            }
            for (volatile unsigned long i = 0;; i = i + 1) {
            }
        }
        return p;
    };
    pid_t hog = spinner(false);
    pid_t starved = spinner(true);
    ASSERT_GT(hog, 0);
    ASSERT_GT(starved, 0);
    auto first = threadRunQueueWaits(starved);
    ASSERT_TRUE(first) << "no /proc/PID/task/*/schedstat (kernel without schedstats?)";
    ASSERT_EQ(first->size(), 1u);
    EXPECT_EQ(first->begin()->first, starved);
    std::int64_t grown = 0;
    bool reached = pcloud::testsupport::waitFor(
        [&] {
            auto now = threadRunQueueWaits(starved);
            grown = now ? maxWaitGrowthMs(*first, *now) : -1;
            return grown >= 300;
        },
        20s, 20ms);
    ::kill(hog, SIGKILL);
    ::kill(starved, SIGKILL);
    ::waitpid(hog, nullptr, 0);
    ::waitpid(starved, nullptr, 0);
    EXPECT_TRUE(reached) << "run-queue wait grew only " << grown << " ms";
    EXPECT_FALSE(threadRunQueueWaits(starved)) << "a reaped process has no threads";
}

TEST(RunQueueWait, GrowthIsTheMostStarvedThreadsAndIgnoresNewOnes) {
    std::map<pid_t, std::uint64_t> before{{10, 1'000'000'000}, {11, 0}};
    std::map<pid_t, std::uint64_t> after{
        {10, 1'400'000'000}, {11, 2'000'000'000}, {12, 9'000'000'000}};
    EXPECT_EQ(maxWaitGrowthMs(before, after), 2'000);
    EXPECT_EQ(maxWaitGrowthMs(after, before), 0); // never negative
    EXPECT_EQ(maxWaitGrowthMs({}, after), 0);
}
